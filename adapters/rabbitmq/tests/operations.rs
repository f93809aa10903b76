//! Operating queues on a real RabbitMQ: figures only this broker reports (in flight,
//! delayed in wharf's delay queues, dead-lettered, the age of a classic queue's head),
//! what happens without the management API, peeking in order, redrives that reach one
//! subscription only, and setup mistakes made by hand with lapin that the doctor finds.

mod common;

use std::time::{Duration, Instant};

use wharf_core::operations::{Expectations, RedriveOptions, redrive};
use wharf_core::{
    Backend, Delivery, Envelope, Figure, Finding, Message, Received, RetryPolicy, Severity,
    SubscriptionSpec, SubscriptionStats,
};
use wharf_rabbitmq::lapin::options::{QueueBindOptions, QueueDeclareOptions};
use wharf_rabbitmq::lapin::types::{AMQPValue, FieldTable, LongString};
use wharf_rabbitmq::lapin::{Channel, Connection, ConnectionProperties};
use wharf_rabbitmq::{QueueType, RabbitMq, RabbitMqConfig};

use common::{ARRIVAL, backend, connect, unique, url};

/// How long the management plugin may take to show a change: it samples every 5 s,
/// and a quorum queue reports on its own tick on top of that.
const SETTLE: Duration = Duration::from_secs(30);

/// A topic with one subscription on `backend`, for a test to use and then remove.
struct Fixture {
    backend: RabbitMq,
    topic: String,
    spec: SubscriptionSpec,
}

impl Fixture {
    async fn new(backend: RabbitMq, case: &str) -> Self {
        Self::with(backend, case, |spec| spec).await
    }

    async fn with(
        backend: RabbitMq,
        case: &str,
        shape: impl FnOnce(SubscriptionSpec) -> SubscriptionSpec,
    ) -> Self {
        let topic = unique(case);
        backend.create_topic(&topic).await.unwrap();
        let spec = shape(SubscriptionSpec::new(&topic, unique(&format!("{case}-s"))));
        backend.create_subscription(&spec).await.unwrap();
        Self {
            backend,
            topic,
            spec,
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn publish(&self, messages: Vec<Message>) {
        let publisher = self.backend.publisher(&self.topic).await.unwrap();
        for result in publisher.publish_batch(messages).await {
            result.unwrap_or_else(|failed| panic!("publish failed: {}", failed.error));
        }
        publisher.close().await.unwrap();
    }

    /// Polls `stats` until `done` holds, returning that snapshot.
    async fn stats_until(
        &self,
        what: &str,
        done: impl Fn(&SubscriptionStats) -> bool,
    ) -> SubscriptionStats {
        let deadline = Instant::now() + SETTLE;
        loop {
            let stats = self.backend.stats(self.name()).await.expect("stats");
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "stats did not show {what} within {SETTLE:?}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn remove(self) {
        self.backend
            .delete_subscription(&self.spec.name)
            .await
            .unwrap();
        self.backend.delete_topic(&self.topic).await.unwrap();
    }
}

fn numbered(count: usize) -> Vec<Message> {
    (0..count)
        .map(|i| Message::new(format!("order-{i}")).with_attribute("order", i.to_string()))
        .collect()
}

fn known(figure: &Figure<u64>) -> Option<u64> {
    figure.known().copied()
}

async fn raw_channel() -> (Connection, Channel) {
    let connection = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("raw lapin connects; run `scripts/services up rabbitmq`");
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

fn expectations(spec: SubscriptionSpec, attempts: u32) -> Expectations {
    let policy = RetryPolicy::default().max_attempts(attempts);
    Expectations::from_policy(spec, &policy, Duration::from_secs(30))
}

fn find<'a>(findings: &'a [Finding], subject: &str, problem: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.subject == subject && f.problem.contains(problem))
        .unwrap_or_else(|| panic!("no finding on `{subject}` about `{problem}`: {findings:#?}"))
}

#[tokio::test]
async fn stats_count_deliveries_in_flight_and_dead_letters() {
    // A prefetch of 3 and no idle release: the subscriber holds exactly three.
    let config = RabbitMqConfig::from_env()
        .prefetch(3)
        .idle_release(Duration::from_secs(600));
    let fx = Fixture::new(connect(config).await, "stats-flight").await;
    let subscriber = fx.backend.subscriber(fx.name()).await.unwrap();
    fx.publish(numbered(5)).await;

    let mut held = Vec::new();
    while held.len() < 3 {
        held.extend(subscriber.receive(3 - held.len(), ARRIVAL).await.unwrap());
    }
    let holding = fx
        .stats_until("3 in flight and 2 ready", |s| {
            known(&s.in_flight) == Some(3) && known(&s.ready) == Some(2)
        })
        .await;

    assert_eq!(holding.dead_lettered, Figure::Known(0));
    assert_eq!(holding.delayed, Figure::Known(0));
    assert_eq!(holding.backlog(), Figure::Known(5));
    assert!(
        holding
            .consumer_lag
            .reason()
            .is_some_and(|r| r.contains("not a log"))
    );
    let first = held.remove(0);
    first.dead_letter("out of stock").await.unwrap();
    Delivery::ack_all(held).await;
    let after = fx
        .stats_until("1 dead letter and a backlog of 2", |s| {
            known(&s.dead_lettered) == Some(1) && s.backlog() == Figure::Known(2)
        })
        .await;
    assert_eq!(after.dead_lettered, Figure::Known(1));

    subscriber.close().await.unwrap();
    fx.remove().await;
}

#[tokio::test]
async fn stats_count_messages_waiting_in_delay_queues() {
    let fx = Fixture::new(backend().await, "stats-delay").await;
    let subscriber = fx.backend.subscriber(fx.name()).await.unwrap();
    let delay = Duration::from_secs(120);
    let later = Message::new("later").with_delay(delay);
    fx.publish(vec![later, Message::new("now")]).await;

    let now = subscriber
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("a delivery");
    assert_eq!(&now.payload()[..], b"now");
    now.nack(delay).await.unwrap();
    let stats = fx
        .stats_until("2 delayed and nothing else", |s| {
            known(&s.delayed) == Some(2)
                && known(&s.ready) == Some(0)
                && known(&s.in_flight) == Some(0)
        })
        .await;

    assert_eq!(stats.backlog(), Figure::Known(2));
    subscriber.close().await.unwrap();
    // Delay queues expire by themselves only minutes after their last use.
    let (connection, channel) = raw_channel().await;
    for queue in [
        format!("{}.delay.120000", fx.name()),
        format!("{}.publish-delay.120000", fx.topic),
    ] {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    connection.close(200, "bye".into()).await.unwrap();
    fx.remove().await;
}

#[tokio::test]
async fn stats_report_the_age_of_a_classic_queues_oldest_message() {
    let config = RabbitMqConfig::from_env().queue_type(QueueType::Classic);
    let fx = Fixture::new(connect(config).await, "stats-age").await;
    fx.publish(numbered(2)).await;

    let first = fx
        .stats_until("the age of the oldest message", |s| {
            matches!(s.oldest_age, Figure::Known(Some(_)))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = fx.backend.stats(fx.name()).await.unwrap();

    assert_eq!(first.ready, Figure::Known(2));
    let (Figure::Known(Some(before)), Figure::Known(Some(after))) =
        (&first.oldest_age, &later.oldest_age)
    else {
        panic!("the age went unknown: {later:?}");
    };
    assert!(
        *after >= *before + Duration::from_secs(1),
        "{before:?} then {after:?}"
    );
    assert!(*after < Duration::from_secs(60), "{after:?}");
    fx.remove().await;
}

#[tokio::test]
async fn without_the_management_api_figures_say_why_and_nothing_fails() {
    let config = RabbitMqConfig::from_env().management_url("http://monitor:s3cret@127.0.0.1:9/");
    assert!(!format!("{config:?}").contains("s3cret"));
    let fx = Fixture::new(connect(config).await, "no-management").await;
    fx.publish(numbered(2)).await;

    let stats = fx
        .backend
        .stats(fx.name())
        .await
        .expect("stats without the API");
    let findings = fx
        .backend
        .doctor(&expectations(fx.spec.clone(), 3))
        .await
        .expect("doctor without the API");

    assert_eq!(stats.ready, Figure::Known(2), "ready comes over AMQP");
    assert_eq!(
        stats.dead_lettered,
        Figure::Known(0),
        "so does the dead-letter count"
    );
    for (figure, reason) in stats.unknown_figures() {
        if figure == "consumer_lag" {
            continue;
        }
        assert!(reason.contains("rabbitmq_management"), "{figure}: {reason}");
        assert!(reason.contains("management_url"), "{figure}: {reason}");
        assert!(!reason.contains("s3cret"), "{figure}: {reason}");
    }
    assert!(stats.in_flight.reason().is_some(), "{stats:?}");
    let unchecked = find(&findings, fx.name(), "unchecked");
    assert_eq!(unchecked.severity, Severity::Warning);
    assert!(unchecked.fix.contains("rabbitmq_management"), "{unchecked}");
    assert!(
        findings.iter().all(|f| f.severity == Severity::Warning),
        "{findings:#?}"
    );
    fx.remove().await;
}

/// Dead-letters `count` numbered orders through a subscriber of `fx`.
async fn dead_letter_numbered(fx: &Fixture, count: usize) {
    let subscriber = fx.backend.subscriber(fx.name()).await.unwrap();
    fx.publish(numbered(count)).await;
    for _ in 0..count {
        let delivery = subscriber
            .receive_one(ARRIVAL)
            .await
            .unwrap()
            .expect("a delivery");
        delivery.dead_letter("out of stock").await.unwrap();
    }
    subscriber.close().await.unwrap();
}

fn orders(peeked: &[Received]) -> Vec<String> {
    peeked
        .iter()
        .map(|r| r.attribute("order").unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn peek_of_a_classic_dead_letter_queue_keeps_its_order() {
    let config = RabbitMqConfig::from_env().queue_type(QueueType::Classic);
    let fx = Fixture::new(connect(config).await, "peek-classic").await;
    dead_letter_numbered(&fx, 5).await;

    let first = fx.backend.peek_dead_letters(fx.name(), 3).await.unwrap();
    let all = fx.backend.peek_dead_letters(fx.name(), 10).await.unwrap();

    assert_eq!(orders(&first), ["0", "1", "2"]);
    assert_eq!(
        orders(&all),
        ["0", "1", "2", "3", "4"],
        "returned to their places"
    );
    let stats = fx.backend.stats(fx.name()).await.unwrap();
    assert_eq!(
        stats.dead_lettered,
        Figure::Known(5),
        "peeking removed nothing"
    );
    let purged = fx.backend.purge_dead_letters(fx.name()).await.unwrap();
    assert_eq!(purged, Figure::Known(5));
    fx.remove().await;
}

#[tokio::test]
async fn peek_of_a_quorum_dead_letter_queue_counts_no_delivery() {
    let fx = Fixture::new(backend().await, "peek-quorum").await;
    dead_letter_numbered(&fx, 3).await;

    let mut peeks = Vec::new();
    for _ in 0..4 {
        peeks.push(fx.backend.peek_dead_letters(fx.name(), 10).await.unwrap());
    }

    for peeked in &peeks {
        assert_eq!(
            orders(peeked),
            ["0", "1", "2"],
            "a whole peek keeps the order"
        );
        for letter in peeked {
            assert_eq!(letter.attempt(), 1, "a peek is not a delivery: {letter:?}");
            let envelope = Envelope::from_attributes(letter.attributes()).expect("envelope");
            assert_eq!(envelope.reason, "out of stock");
        }
        let ids: Vec<_> = peeked.iter().map(Received::id).collect();
        let first: Vec<_> = peeks[0].iter().map(Received::id).collect();
        assert_eq!(ids, first, "the copies keep their message ids");
    }
    let stats = fx.backend.stats(fx.name()).await.unwrap();
    assert_eq!(
        stats.dead_lettered,
        Figure::Known(3),
        "no copy is left over"
    );
    fx.remove().await;
}

#[tokio::test]
async fn peek_keeps_the_envelope_of_what_the_broker_dead_lettered() {
    let fx = Fixture::with(backend().await, "peek-limit", |s| {
        s.max_delivery_attempts(2)
    })
    .await;
    let subscriber = fx.backend.subscriber(fx.name()).await.unwrap();
    fx.publish(numbered(1)).await;
    for _ in 0..2 {
        let delivery = subscriber
            .receive_one(ARRIVAL)
            .await
            .unwrap()
            .expect("a delivery");
        delivery.nack(Duration::ZERO).await.unwrap();
    }
    subscriber.close().await.unwrap();

    let mut peeks = Vec::new();
    while peeks.len() < 3 {
        let peeked = fx.backend.peek_dead_letters(fx.name(), 10).await.unwrap();
        if !peeked.is_empty() {
            peeks.extend(peeked);
        }
    }
    let dead_letters = fx.backend.dead_letter_subscriber(fx.name()).await.unwrap();
    let read = dead_letters
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("the dead letter");

    for letter in peeks.iter().chain([read.received()]) {
        let envelope = Envelope::from_attributes(letter.attributes()).expect("envelope");
        assert!(envelope.reason.contains("delivery_limit"), "{envelope:?}");
        assert_eq!(envelope.source, fx.spec.name);
        assert_eq!(
            letter.attribute(wharf_core::dead_letter::ATTEMPTS),
            Some("2")
        );
        assert_eq!(letter.attempt(), 1, "peeks count no delivery");
    }
    read.ack().await.unwrap();
    dead_letters.close().await.unwrap();
    fx.remove().await;
}

#[tokio::test]
async fn doctor_accepts_what_wharf_created_on_classic_queues() {
    let config = RabbitMqConfig::from_env().queue_type(QueueType::Classic);
    let fx = Fixture::new(connect(config).await, "doctor-classic").await;

    let findings = fx
        .backend
        .doctor(&expectations(fx.spec.clone(), 5))
        .await
        .unwrap();

    assert!(findings.is_empty(), "{findings:#?}");
    fx.remove().await;
}

#[tokio::test]
async fn redrive_reaches_only_the_subscription_it_came_from() {
    let fx = Fixture::new(backend().await, "redrive-one").await;
    let other = SubscriptionSpec::new(&fx.topic, unique("redrive-other"));
    fx.backend.create_subscription(&other).await.unwrap();
    let subscriber = fx.backend.subscriber(fx.name()).await.unwrap();
    let bystander = fx.backend.subscriber(&other.name).await.unwrap();
    fx.publish(numbered(1)).await;
    let seen = bystander
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("fan-out");
    seen.ack().await.unwrap();
    let delivery = subscriber
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("a delivery");
    delivery.dead_letter("out of stock").await.unwrap();

    let options = RedriveOptions::default().idle(Duration::from_secs(2));
    let report = redrive(&fx.backend, fx.name(), &options, |_| {})
        .await
        .unwrap();

    assert_eq!(report.redriven, 1, "{report:?}");
    let back = subscriber
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("redriven");
    assert_eq!(back.attribute("order"), Some("0"));
    back.ack().await.unwrap();
    let nothing = bystander.receive_one(Duration::from_secs(2)).await.unwrap();
    assert!(
        nothing.is_none(),
        "the other subscription got the redrive too"
    );
    subscriber.close().await.unwrap();
    bystander.close().await.unwrap();
    fx.backend.delete_subscription(&other.name).await.unwrap();
    fx.remove().await;
}

#[tokio::test]
async fn doctor_finds_a_limited_queue_declared_without_its_dead_letter_exchange() {
    let backend = backend().await;
    let topic = unique("doctor-dlx");
    backend.create_topic(&topic).await.unwrap();
    let queue = unique("doctor-dlx-s");
    // Made by hand as a client might: a delivery limit, but nowhere for the broker to
    // send what reaches it, and no dead-letter exchange or queue of wharf's.
    let (connection, channel) = raw_channel().await;
    let mut arguments = FieldTable::default();
    let quorum = AMQPValue::LongString(LongString::from(b"quorum".to_vec()));
    arguments.insert("x-queue-type".into(), quorum);
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(4));
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, arguments)
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            topic.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let spec = SubscriptionSpec::new(&topic, &queue).max_delivery_attempts(5);
    let findings = backend
        .doctor(&expectations(spec.clone(), 5))
        .await
        .unwrap();

    let dropped = find(&findings, &queue, "no dead-letter exchange");
    assert_eq!(dropped.severity, Severity::Error);
    assert!(dropped.problem.contains("dropped"), "{dropped}");
    assert!(dropped.fix.contains("x-dead-letter-exchange"), "{dropped}");
    assert!(dropped.fix.contains("dead-letter-exchange"), "{dropped}");
    let no_queue = find(&findings, &spec.dead_letter_name(), "does not exist");
    assert_eq!(no_queue.severity, Severity::Error);
    assert!(
        findings
            .iter()
            .all(|f| !f.problem.contains("x-delivery-limit is")),
        "a limit of 4 returns allows the 5 attempts: {findings:#?}"
    );
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.unwrap();
    backend.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn doctor_finds_a_queue_unbound_from_its_topic() {
    let fx = Fixture::new(backend().await, "doctor-unbound").await;
    let (connection, channel) = raw_channel().await;
    channel
        .queue_unbind(
            fx.name().into(),
            fx.topic.as_str().into(),
            "".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let findings = fx
        .backend
        .doctor(&expectations(fx.spec.clone(), 3))
        .await
        .unwrap();

    let unbound = find(&findings, fx.name(), "not bound");
    assert_eq!(unbound.severity, Severity::Error);
    assert!(unbound.problem.contains(&fx.topic), "{unbound}");
    assert!(unbound.fix.contains("queue.bind"), "{unbound}");
    connection.close(200, "bye".into()).await.unwrap();
    fx.remove().await;
}
