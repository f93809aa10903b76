//! Operating Pub/Sub subscriptions: the doctor against setups made by hand with Google's
//! admin client, what stats can and cannot say, purging by seek, and redrive through
//! the topic.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{ARRIVAL, LEASE, PROJECT, backend, receive_n, unique};
use futures::FutureExt;
use google_cloud_pubsub::model::DeadLetterPolicy;
use wharf_core::operations::dead_letters::REDRIVE_COUNT;
use wharf_core::operations::{RedriveOptions, redrive};
use wharf_core::{
    Backend, ErrorKind, Expectations, Finding, Message, RetryPolicy, Severity, SubscriptionSpec,
};
use wharf_pubsub::PubSubBackend;

/// Quiet period after which a redrive in these tests ends.
const IDLE: Duration = Duration::from_secs(3);

fn topic_path(topic: &str) -> String {
    format!("projects/{PROJECT}/topics/{topic}")
}

fn subscription_path(subscription: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{subscription}")
}

/// Creates a topic with Google's admin client, as an operator's script would.
async fn create_topic_by_hand(backend: &PubSubBackend, topic: &str) {
    backend
        .topic_admin()
        .create_topic()
        .set_name(topic_path(topic))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating topic {topic}: {e}"));
}

/// Creates a subscription with a 10 s ack deadline and `policy`, with Google's admin
/// client and nothing of wharf's.
async fn create_subscription_by_hand(
    backend: &PubSubBackend,
    name: &str,
    topic: &str,
    policy: Option<DeadLetterPolicy>,
) {
    let mut request = backend
        .subscription_admin()
        .create_subscription()
        .set_name(subscription_path(name))
        .set_topic(topic_path(topic))
        .set_ack_deadline_seconds(10);
    if let Some(policy) = policy {
        request = request.set_dead_letter_policy(policy);
    }

    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating subscription {name}: {e}"));
}

/// Runs `body`, then deletes the subscriptions and topics with the admin client, also
/// when the body panicked. Missing ones are fine: not every test creates them all.
async fn cleaned_up(
    backend: &PubSubBackend,
    subscriptions: &[&str],
    topics: &[&str],
    body: impl Future<Output = ()>,
) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;

    for name in subscriptions {
        let deleted = backend
            .subscription_admin()
            .delete_subscription()
            .set_subscription(subscription_path(name))
            .send()
            .await;
        if let Err(error) = deleted {
            eprintln!("cleanup of subscription {name}: {error}");
        }
    }
    for name in topics {
        let deleted = backend
            .topic_admin()
            .delete_topic()
            .set_topic(topic_path(name))
            .send()
            .await;
        if let Err(error) = deleted {
            eprintln!("cleanup of topic {name}: {error}");
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn expectations(spec: SubscriptionSpec, attempts: u32, handler_timeout: Duration) -> Expectations {
    let policy = RetryPolicy::default().max_attempts(attempts);
    Expectations::from_policy(spec, &policy, handler_timeout)
}

/// The one finding of `severity` about `subject` whose problem mentions `topic`.
fn finding<'a>(
    findings: &'a [Finding],
    severity: Severity,
    subject: &str,
    topic: &str,
) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.severity == severity && f.subject == subject && f.problem.contains(topic))
        .unwrap_or_else(|| {
            panic!("expected a {severity} about {subject} mentioning `{topic}`, got {findings:#?}")
        })
}

/// Publishes one message per payload and dead-letters each through wharf.
async fn dead_letter_each(
    backend: &PubSubBackend,
    topic: &str,
    subscription: &str,
    payloads: &[&str],
) {
    let publisher = backend.publisher(topic).await.expect("publisher");
    for payload in payloads {
        publisher
            .publish(Message::new(payload.to_string()).with_attribute("order", *payload))
            .await
            .expect("publish");
    }

    let subscriber = backend.subscriber(subscription).await.expect("subscriber");
    for delivery in receive_n(&subscriber, payloads.len(), ARRIVAL).await {
        delivery
            .dead_letter("out of stock")
            .await
            .unwrap_or_else(|failed| panic!("dead_letter: {}", failed.error));
    }
    subscriber.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_hand_made_subscription_without_a_dead_letter_policy() {
    let backend = backend().await;
    let (topic, name) = (unique("nopolicy", "t"), unique("nopolicy", "s"));
    let dead_letter = format!("{name}-dlq");
    create_topic_by_hand(&backend, &topic).await;
    create_subscription_by_hand(&backend, &name, &topic, None).await;

    cleaned_up(&backend, &[&name], &[&topic], async {
        let spec = SubscriptionSpec::new(&topic, &name).max_delivery_attempts(10);
        let expected = expectations(spec, 5, Duration::from_secs(60));

        let findings = backend.doctor(&expected).await.expect("doctor");

        let policy = finding(&findings, Severity::Error, &name, "dead_letter_policy");
        assert!(policy.fix.contains("max_delivery_attempts 10"), "{policy}");
        assert!(policy.fix.contains(&dead_letter), "{policy}");
        let topic_missing = finding(&findings, Severity::Error, &dead_letter, "does not exist");
        assert!(
            topic_missing.fix.contains("gcloud pubsub topics create"),
            "{topic_missing}"
        );
        let deadline = finding(&findings, Severity::Warning, &name, "ack deadline");
        assert!(deadline.fix.contains("ack_deadline_seconds"), "{deadline}");
        assert!(deadline.fix.contains("at least 1m"), "{deadline}");
        assert_eq!(findings.len(), 3, "{findings:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_hand_made_policy_below_the_retries_and_an_unread_dead_letter_topic() {
    let backend = backend().await;
    let (topic, name) = (unique("lowlimit", "t"), unique("lowlimit", "s"));
    let dead_letter = format!("{name}-dlq");
    create_topic_by_hand(&backend, &topic).await;
    create_topic_by_hand(&backend, &dead_letter).await;
    let policy = DeadLetterPolicy::new()
        .set_dead_letter_topic(topic_path(&dead_letter))
        .set_max_delivery_attempts(5);
    create_subscription_by_hand(&backend, &name, &topic, Some(policy)).await;

    cleaned_up(&backend, &[&name], &[&topic, &dead_letter], async {
        let spec = SubscriptionSpec::new(&topic, &name).max_delivery_attempts(8);
        let expected = expectations(spec, 8, LEASE);

        let findings = backend.doctor(&expected).await.expect("doctor");

        let limit = finding(
            &findings,
            Severity::Error,
            &name,
            "max_delivery_attempts is 5",
        );
        assert!(limit.fix.contains("dead_letter_policy"), "{limit}");
        assert!(limit.fix.contains("at least 8"), "{limit}");
        let unread = finding(&findings, Severity::Error, &dead_letter, "no subscription");
        assert!(
            unread.fix.contains("gcloud pubsub subscriptions create"),
            "{unread}"
        );
        assert_eq!(findings.len(), 2, "{findings:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_accepts_an_ordered_subscription_wharf_created_with_a_policy() {
    let backend = backend().await;
    let (topic, name) = (unique("policyok", "t"), unique("policyok", "s"));
    let dead_letter = format!("{name}-dlq");
    backend.create_topic(&topic).await.expect("create_topic");
    let spec = SubscriptionSpec::new(&topic, &name)
        .lease(LEASE)
        .max_delivery_attempts(5)
        .ordered(true);
    backend
        .create_subscription(&spec)
        .await
        .expect("create_subscription");

    cleaned_up(
        &backend,
        &[&name, &dead_letter],
        &[&topic, &dead_letter],
        async {
            let expected = expectations(spec.clone(), 5, LEASE);

            let findings = backend.doctor(&expected).await.expect("doctor");

            assert!(findings.is_empty(), "{findings:#?}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_name_the_cloud_monitoring_metric_behind_every_figure() {
    let backend = backend().await;
    let (topic, name) = (unique("stats", "t"), unique("stats", "s"));
    let dead_letter = format!("{name}-dlq");
    backend.create_topic(&topic).await.expect("create_topic");
    let spec = SubscriptionSpec::new(&topic, &name).lease(LEASE);
    backend
        .create_subscription(&spec)
        .await
        .expect("create_subscription");

    cleaned_up(
        &backend,
        &[&name, &dead_letter],
        &[&topic, &dead_letter],
        async {
            dead_letter_then_backlog(&backend, &topic, &name).await;

            let stats = backend.stats(&name).await.expect("stats");

            assert_eq!(stats.subscription, name);
            let ready = stats.ready.reason().expect("no made-up ready count");
            assert!(
                ready.contains("subscription/num_undelivered_messages"),
                "{ready}"
            );
            let dead = stats
                .dead_lettered
                .reason()
                .expect("no made-up dead-letter count");
            assert!(dead.contains(&format!("`{dead_letter}`")), "{dead}");
            let age = stats.oldest_age.reason().expect("no made-up age");
            assert!(
                age.contains("subscription/oldest_unacked_message_age"),
                "{age}"
            );
            assert_eq!(stats.unknown_figures().len(), 6, "{stats:?}");
            assert!(stats.backlog().known().is_none(), "{stats:?}");
        },
    )
    .await;
}

/// One dead letter and two messages waiting, so a made-up zero would be wrong.
async fn dead_letter_then_backlog(backend: &PubSubBackend, topic: &str, name: &str) {
    dead_letter_each(backend, topic, name, &["a"]).await;
    let publisher = backend.publisher(topic).await.expect("publisher");
    for payload in ["b", "c"] {
        publisher
            .publish(Message::new(payload))
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_missing_subscription_is_not_found_and_says_what_to_do() {
    let backend = backend().await;
    let name = unique("nostats", "s");

    let error = backend.stats(&name).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
    assert!(error.to_string().contains("create_subscription"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_seeks_past_the_dead_letters_and_keeps_later_ones() {
    let backend = backend().await;
    let (topic, name) = (unique("seek", "t"), unique("seek", "s"));
    let dead_letter = format!("{name}-dlq");
    backend.create_topic(&topic).await.expect("create_topic");
    let spec = SubscriptionSpec::new(&topic, &name).lease(LEASE);
    backend
        .create_subscription(&spec)
        .await
        .expect("create_subscription");

    cleaned_up(
        &backend,
        &[&name, &dead_letter],
        &[&topic, &dead_letter],
        async {
            dead_letter_each(&backend, &topic, &name, &["a", "b", "c"]).await;
            let before = backend.peek_dead_letters(&name, 10).await.expect("peek");
            assert_eq!(before.len(), 3, "{before:?}");

            let purged = backend.purge_dead_letters(&name).await.expect("purge");
            let later = backend.publisher(&dead_letter).await.expect("publisher");
            later.publish(Message::new("later")).await.expect("publish");

            let reason = purged.reason().expect("a seek counts nothing");
            assert!(reason.contains("num_undelivered_messages"), "{reason}");
            let left = backend.peek_dead_letters(&name, 10).await.expect("peek");
            let payloads: Vec<_> = left.iter().map(|r| r.payload().to_vec()).collect();
            assert_eq!(
                payloads,
                [b"later".to_vec()],
                "only the later message stays"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_reaches_every_subscription_of_the_topic() {
    let backend = backend().await;
    let topic = unique("redrive", "t");
    let (failed, other) = (unique("redrive", "s1"), unique("redrive", "s2"));
    let dead_letters = [format!("{failed}-dlq"), format!("{other}-dlq")];
    backend.create_topic(&topic).await.expect("create_topic");
    for name in [&failed, &other] {
        let spec = SubscriptionSpec::new(&topic, name).lease(LEASE);
        backend
            .create_subscription(&spec)
            .await
            .expect("create_subscription");
    }
    let subscriptions = [&failed, &other, &dead_letters[0], &dead_letters[1]].map(String::as_str);
    let topics = [&topic, &dead_letters[0], &dead_letters[1]].map(String::as_str);

    cleaned_up(&backend, &subscriptions, &topics, async {
        dead_letter_each(&backend, &topic, &failed, &["a"]).await;
        let other_reader = backend.subscriber(&other).await.expect("subscriber");
        for original in receive_n(&other_reader, 1, ARRIVAL).await {
            original.ack().await.expect("ack");
        }

        let options = RedriveOptions::default().idle(IDLE);
        let report = redrive(&backend, &failed, &options, |_| {})
            .await
            .expect("redrive");

        assert_eq!(report.redriven, 1, "{report:?}");
        let failed_reader = backend.subscriber(&failed).await.expect("subscriber");
        for reader in [&failed_reader, &other_reader] {
            let back = receive_n(reader, 1, ARRIVAL)
                .await
                .pop()
                .expect("one message");
            assert_eq!(back.attribute(REDRIVE_COUNT), Some("1"));
            assert_eq!(back.attribute("order"), Some("a"));
            back.ack().await.expect("ack");
        }
        failed_reader.close().await.expect("close");
        other_reader.close().await.expect("close");
    })
    .await;
}
