//! Operating queues: backlog stats that follow what happens, dead letters that can be
//! looked at, redriven intact and purged, and setup checks that find what is wrong.

use std::time::{Duration, Instant};

use wharf_core::operations::dead_letters::REDRIVE_COUNT;
use wharf_core::operations::{Expectations, RedriveOptions, Severity, SubscriptionStats, redrive};
use wharf_core::{Backend, Envelope, Figure, Message, Received, RetryPolicy};

use super::support::{ARRIVAL, Fixture, Queue, publish_numbered, receive_all, receive_and_ack};

/// How long a broker may take before its figures show a change: some count
/// asynchronously (SQS's approximate counts, Kafka's committed offsets).
const SETTLE: Duration = Duration::from_secs(20);

/// Quiet period after which a redrive in these cases ends.
const IDLE: Duration = Duration::from_secs(3);

/// `stats` follows a backlog as it grows while a consumer falls behind, counts the age
/// of the oldest message up, and shows the backlog shrink to nothing once drained.
pub async fn stats_follow_a_growing_then_draining_backlog(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "stats-backlog");
    if !fx.has(fx.caps().backlog_stats, "backlog stats") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let name = &queue.spec.name;

        publish_numbered(&queue.publisher, 10).await;
        receive_and_ack(&queue.subscriber, 2, ARRIVAL).await;
        let behind = backlog_reaches(backend, name, 8).await;

        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish_numbered(&queue.publisher, 10).await;
        let grown = backlog_reaches(backend, name, 18).await;
        if let (Some(Some(before)), Some(Some(after))) =
            (behind.oldest_age.known(), grown.oldest_age.known())
        {
            assert!(
                *after >= *before + Duration::from_secs(1),
                "the oldest message was {before:?} old, and {after:?} 1.5 s later"
            );
        } else {
            println!("oldest age not reported: {:?}", grown.oldest_age);
        }

        receive_and_ack(&queue.subscriber, 18, ARRIVAL).await;
        let drained = backlog_reaches(backend, name, 0).await;
        if let Figure::Known(age) = &drained.oldest_age {
            assert_eq!(*age, None, "a drained subscription has no oldest message");
        }
    })
    .await;
}

/// Polls `stats` until the backlog is `count`, returning that snapshot.
async fn backlog_reaches(
    backend: &dyn Backend,
    subscription: &str,
    count: u64,
) -> SubscriptionStats {
    let deadline = Instant::now() + SETTLE;
    loop {
        let stats = backend
            .stats(subscription)
            .await
            .unwrap_or_else(|e| panic!("stats({subscription}) failed: {e}"));
        match stats.backlog() {
            Figure::Known(backlog) if backlog == count => return stats,
            Figure::Unknown(reason) => {
                panic!("a backend with backlog stats reported no backlog: {reason}")
            }
            Figure::Known(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Figure::Known(backlog) => {
                panic!(
                    "expected a backlog of {count} within {SETTLE:?}, stats say {backlog}: \
                     {stats:?}"
                )
            }
        }
    }
}

/// Peeking shows dead letters with payload, attributes and envelope, twice over,
/// because it takes nothing away.
pub async fn peek_leaves_dead_letters_in_place(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dlq-peek");
    fx.run(async {
        let queue = fx.queue().await;
        let sent = dead_letter_orders(&queue, &["a", "b", "c"]).await;

        let first = peek_until(backend, &queue.spec.name, sent.len()).await;
        let again = peek_until(backend, &queue.spec.name, sent.len()).await;

        for peeked in [&first, &again] {
            assert_same_orders(peeked, &sent, "peeked");
            for letter in peeked.iter() {
                let envelope = Envelope::from_attributes(letter.attributes())
                    .expect("a peeked dead letter carries its envelope");
                assert_eq!(envelope.reason, "out of stock");
                assert_eq!(envelope.source, queue.spec.name);
            }
        }
        let still_there = receive_all(&fx.dead_letters(&queue.spec.name).await, 3, ARRIVAL).await;
        assert_eq!(still_there.len(), 3, "peeking removed nothing");
        wharf_core::Delivery::ack_all(still_there).await;
    })
    .await;
}

/// Redriving puts every dead letter back on its subscription with its payload,
/// ordering key and attributes, no envelope, a redrive count of 1 and a fresh attempt
/// count, and leaves the dead-letter destination empty.
pub async fn redrive_returns_dead_letters_intact(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dlq-redrive");
    fx.run(async {
        let queue = fx.queue().await;
        let name = &queue.spec.name;
        let sent = dead_letter_orders(&queue, &["a", "b", "c"]).await;
        peek_until(backend, name, sent.len()).await;

        let options = RedriveOptions::default().idle(IDLE);
        let report = redrive(backend, name, &options, |_| {})
            .await
            .expect("redrive");

        assert_eq!((report.redriven, report.failed), (3, 0), "{report:?}");
        let back = receive_and_ack(&queue.subscriber, 3, ARRIVAL).await;
        for received in &back {
            assert_eq!(received.attempt(), 1, "a redriven message starts again");
            assert_eq!(received.attribute(REDRIVE_COUNT), Some("1"));
            assert!(
                Envelope::from_attributes(received.attributes()).is_none(),
                "the envelope is removed on redrive"
            );
        }
        assert_same_orders(&back, &sent, "redriven");
        let left = peek(backend, name, 10).await;
        assert!(
            left.is_empty(),
            "the dead-letter destination still holds {left:?}"
        );
    })
    .await;
}

/// A filtered redrive moves only the dead letters that match and leaves the others in
/// the dead-letter destination.
pub async fn filtered_redrive_leaves_the_rest(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dlq-filter");
    fx.run(async {
        let queue = fx.queue().await;
        let name = &queue.spec.name;
        let sent = dead_letter_orders(&queue, &["a", "b", "c", "d"]).await;
        peek_until(backend, name, sent.len()).await;

        let options = RedriveOptions::default()
            .with_attribute("tenant", "acme")
            .idle(IDLE);
        let report = redrive(backend, name, &options, |_| {})
            .await
            .expect("redrive");

        assert_eq!((report.redriven, report.skipped), (2, 2), "{report:?}");
        let back = receive_and_ack(&queue.subscriber, 2, ARRIVAL).await;
        let acme: Vec<_> = sent
            .iter()
            .filter(|m| is_acme(m.attributes()))
            .cloned()
            .collect();
        assert_same_orders(&back, &acme, "redriven");
        let left = peek_until(backend, name, 2).await;
        let others: Vec<_> = sent
            .iter()
            .filter(|m| !is_acme(m.attributes()))
            .cloned()
            .collect();
        assert_same_orders(&left, &others, "left in the dead-letter destination");
    })
    .await;
}

/// A filtered redrive of more dead letters than one consumer may hold at once never
/// ends silently short: it redrives the match behind two dozen skipped letters, or says
/// how many it did not get to look at.
pub async fn large_filtered_redrive_never_ends_silently(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dlq-filter-many");
    fx.run(async {
        let queue = fx.queue().await;
        let name = &queue.spec.name;
        let mut ids: Vec<String> = (0..24).map(|i| format!("other{i}")).collect();
        ids.push("wanted".to_owned());
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        dead_letter_orders(&queue, &ids).await;
        peek_until(backend, name, ids.len()).await;

        let options = RedriveOptions::default()
            .with_attribute("order", "wanted")
            .idle(IDLE);
        let report = redrive(backend, name, &options, |_| {})
            .await
            .expect("redrive");

        match report.unexamined {
            Some(left) if left > 0 => {
                println!("redrive left {left} unexamined and said so: {report:?}");
                assert_eq!(report.redriven + report.skipped + left, 25, "{report:?}");
            }
            _ => {
                assert_eq!((report.redriven, report.skipped), (1, 24), "{report:?}");
                let back = receive_and_ack(&queue.subscriber, 1, ARRIVAL).await;
                assert_eq!(back[0].attribute("order"), Some("wanted"));
            }
        }
    })
    .await;
}

/// Purging empties the dead-letter destination, and says how many it removed where the
/// broker tells.
pub async fn purge_empties_the_dead_letters(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dlq-purge");
    fx.run(async {
        let queue = fx.queue().await;
        let name = &queue.spec.name;
        let sent = dead_letter_orders(&queue, &["a", "b", "c"]).await;
        peek_until(backend, name, sent.len()).await;

        let purged = backend.purge_dead_letters(name).await.expect("purge");

        match purged {
            Figure::Known(count) => assert_eq!(count, 3, "purge counts what it removed"),
            Figure::Unknown(reason) => println!("purge count not reported: {reason}"),
        }
        let deadline = Instant::now() + SETTLE;
        while !peek(backend, name, 10).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "dead letters still there {SETTLE:?} after a purge"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
}

/// The doctor finds nothing wrong with a subscription wharf created for the same
/// policy it is checked against.
pub async fn doctor_accepts_what_wharf_created(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "doctor-ok");
    fx.run(async {
        let queue = fx.queue().await;
        let expected = expectations(&queue, 5);

        let findings = backend.doctor(&expected).await.expect("doctor");

        for finding in &findings {
            println!("doctor: {finding}");
        }
        let errors: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(
            errors.is_empty(),
            "wharf's own setup reported as broken: {errors:?}"
        );
    })
    .await;
}

/// The doctor reports a subscription that does not exist, by name.
pub async fn doctor_reports_a_missing_subscription(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "doctor-missing");
    fx.run(async {
        let topic = fx.name("t");
        let spec = fx.spec(&topic);
        let expected = Expectations::from_policy(spec, &RetryPolicy::default(), fx.lease());

        let findings = backend.doctor(&expected).await.expect("doctor");

        let name = expected.subscription();
        assert!(
            findings
                .iter()
                .any(|f| f.severity == Severity::Error && f.problem.contains(name)),
            "expected an error naming the missing `{name}`, got {findings:?}"
        );
    })
    .await;
}

/// The doctor reports a broker delivery limit below the retry policy's attempts: the
/// broker would dead-letter messages before wharf retried them as the policy says.
pub async fn doctor_reports_a_delivery_limit_below_the_retries(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "doctor-limit");
    if !fx.has(fx.caps().native_dead_letter, "a native delivery limit") {
        return;
    }
    fx.run(async {
        // Pub/Sub accepts no limit below 5.
        let limit = 5;
        let queue = fx
            .queue_with(|spec| spec.max_delivery_attempts(limit))
            .await;
        let expected = expectations(&queue, limit + 3);

        let findings = backend.doctor(&expected).await.expect("doctor");

        assert!(
            findings.iter().any(|f| f.severity == Severity::Error
                && f.problem.contains(&limit.to_string())
                && f.fix.contains(&(limit + 3).to_string())),
            "expected an error about the delivery limit of {limit}, got {findings:?}"
        );
    })
    .await;
}

fn expectations(queue: &Queue, attempts: u32) -> Expectations {
    let policy = RetryPolicy::default().max_attempts(attempts);
    Expectations::from_policy(queue.spec.clone(), &policy, queue.spec.lease)
}

/// Publishes one order per id, half of them for tenant `acme`, with a binary payload
/// and an ordering key where the backend has them, and dead-letters each.
async fn dead_letter_orders(queue: &Queue, ids: &[&str]) -> Vec<Message> {
    let ordering = queue.publisher.capabilities().ordering;
    let sent: Vec<Message> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let mut payload = format!("order-{id}").into_bytes();
            payload.extend([0u8, 255]);
            let message = Message::new(payload)
                .with_attribute("order", *id)
                .with_attribute("tenant", tenant);
            if ordering {
                message.with_ordering_key(format!("customer-{id}"))
            } else {
                message
            }
        })
        .collect();
    for (i, result) in queue
        .publisher
        .publish_batch(sent.clone())
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|failed| panic!("publish {i} failed: {}", failed.error));
    }

    // A few at a time: a broker's prefetch may hold fewer than all of them.
    let mut dead = 0;
    while dead < sent.len() {
        let batch = receive_all(&queue.subscriber, (sent.len() - dead).min(8), ARRIVAL).await;
        for delivery in batch {
            let id = delivery.id().to_owned();
            if let Err(failed) = delivery.dead_letter("out of stock").await {
                panic!("dead_letter of {id} failed: {}", failed.error);
            }
            dead += 1;
        }
    }
    sent
}

async fn peek(backend: &dyn Backend, subscription: &str, max: usize) -> Vec<Received> {
    backend
        .peek_dead_letters(subscription, max)
        .await
        .unwrap_or_else(|e| panic!("peek_dead_letters({subscription}) failed: {e}"))
}

/// Peeks until `count` dead letters show (dead-lettering may take a moment to land).
async fn peek_until(backend: &dyn Backend, subscription: &str, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let peeked = peek(backend, subscription, count + 5).await;
        if peeked.len() == count {
            return peeked;
        }
        assert!(
            peeked.len() < count && Instant::now() < deadline,
            "expected {count} dead letters of {subscription} within {SETTLE:?}, peek shows {}",
            peeked.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_acme(attributes: &wharf_core::Attributes) -> bool {
    attributes.get("tenant").map(String::as_str) == Some("acme")
}

/// `received` holds exactly the messages of `sent` (in any order) with payload,
/// ordering key and original attributes, ignoring wharf's envelope and redrive count.
fn assert_same_orders(received: &[Received], sent: &[Message], what: &str) {
    let mut got: Vec<_> = received
        .iter()
        .map(|r| order_of(r.payload(), r.attributes(), r.ordering_key()))
        .collect();
    let mut want: Vec<_> = sent
        .iter()
        .map(|m| order_of(m.payload(), m.attributes(), m.ordering_key()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what} messages differ from those published");
}

type Order = (Vec<u8>, Vec<(String, String)>, Option<String>);

fn order_of(payload: &[u8], attributes: &wharf_core::Attributes, key: Option<&str>) -> Order {
    let mut original = Envelope::strip(attributes);
    original.remove(REDRIVE_COUNT);
    (
        payload.to_vec(),
        original.into_iter().collect(),
        key.map(str::to_owned),
    )
}
