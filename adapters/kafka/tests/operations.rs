//! Operating Kafka subscriptions against the real broker: figures that follow the
//! group's offsets on the main, retry and dead-letter topics, redrive through the
//! retry topic, and setup checks that find topics broken by hand with rdkafka's own
//! admin client.

mod common;

use std::time::{Duration, Instant};

use common::{Queue, brokers, committed, position, read_topic};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use wharf_core::operations::{RedriveOptions, redrive};
use wharf_core::{
    Backend, ErrorKind, Expectations, Figure, Finding, Message, RetryPolicy, Severity,
    SubscriptionSpec, SubscriptionStats,
};
use wharf_kafka::KafkaBackend;
use wharf_testkit::conformance::support::{ARRIVAL, expect_nothing, receive_all, receive_one};

/// How long the broker may take before the figures or the metadata show a change.
const SETTLE: Duration = Duration::from_secs(20);

/// A plain rdkafka admin client, to break what wharf created the way an operator might.
fn native_admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("plain rdkafka admin client")
}

fn expectations(queue: &Queue) -> Expectations {
    let spec = SubscriptionSpec::new(&queue.topic, &queue.subscription);
    Expectations::from_policy(spec, &RetryPolicy::default(), Duration::from_secs(30))
}

/// Polls `stats` until `done` holds, returning that snapshot.
async fn stats_until(
    backend: &KafkaBackend,
    subscription: &str,
    what: &str,
    done: impl Fn(&SubscriptionStats) -> bool,
) -> SubscriptionStats {
    let deadline = Instant::now() + SETTLE;
    loop {
        let stats = backend.stats(subscription).await.expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats did not show {what} within {SETTLE:?}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the doctor until a finding about `subject` shows up.
async fn finding_about(backend: &KafkaBackend, expected: &Expectations, subject: &str) -> Finding {
    let deadline = Instant::now() + SETTLE;
    loop {
        let findings = backend.doctor(expected).await.expect("doctor");
        if let Some(found) = findings.into_iter().find(|f| f.subject == subject) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the doctor found nothing about `{subject}` within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_deleted_retry_topic_with_the_partitions_to_create() {
    let queue = Queue::new("doctor-retry").await;
    queue.subscriber.close().await.expect("close");
    let retry = queue.retry_topic();
    let expected = expectations(&queue);

    let deleted = native_admin()
        .delete_topics(&[&retry], &AdminOptions::new())
        .await
        .expect("delete the retry topic");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let finding = finding_about(&queue.backend, &expected, &retry).await;

    assert_eq!(finding.severity, Severity::Error, "{finding}");
    assert!(finding.problem.contains(&queue.subscription), "{finding}");
    assert!(finding.fix.contains("--partitions 3"), "{finding}");
    assert!(finding.fix.contains("retention.ms="), "{finding}");
    let stats = queue
        .backend
        .stats(&queue.subscription)
        .await
        .expect("stats");
    let reason = stats
        .delayed
        .reason()
        .expect("delayed is unknown without the topic");
    assert!(reason.contains(&retry), "{reason}");
    let refused = queue
        .backend
        .redrive_publisher(&queue.subscription)
        .await
        .expect_err("no redrive without the retry topic");
    assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");
    assert!(
        refused.to_string().contains("create_subscription"),
        "{refused}"
    );

    // The fix the doctor names works: creating the subscription again restores it.
    let spec = SubscriptionSpec::new(&queue.topic, &queue.subscription);
    queue
        .backend
        .create_subscription(&spec)
        .await
        .expect("recreate");
    let after = queue.backend.doctor(&expected).await.expect("doctor");
    assert!(errors(&after).is_empty(), "{after:?}");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_compacted_dead_letter_topic_and_a_short_retry_retention() {
    let queue = Queue::new("doctor-settings").await;
    queue.subscriber.close().await.expect("close");
    let (retry, dead_letter) = (queue.retry_topic(), queue.dead_letter_topic());
    let expected = expectations(&queue);

    let changes = [
        AlterConfig::new(ResourceSpecifier::Topic(&dead_letter)).set("cleanup.policy", "compact"),
        AlterConfig::new(ResourceSpecifier::Topic(&retry)).set("retention.ms", "60000"),
    ];
    let altered = native_admin()
        .alter_configs(&changes, &AdminOptions::new())
        .await
        .expect("alter topic settings");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    let compacted = finding_about(&queue.backend, &expected, &dead_letter).await;
    let short = finding_about(&queue.backend, &expected, &retry).await;

    assert_eq!(compacted.severity, Severity::Error, "{compacted}");
    assert!(
        compacted.problem.contains("cleanup.policy=compact"),
        "{compacted}"
    );
    assert!(
        compacted.fix.contains("cleanup.policy=delete"),
        "{compacted}"
    );
    assert_eq!(short.severity, Severity::Warning, "{short}");
    assert!(short.problem.contains("retention.ms=60000"), "{short}");
    assert!(short.fix.contains("retention.ms=604800000"), "{short}");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_group_without_committed_offsets() {
    let queue = Queue::new("doctor-group").await;
    queue.subscriber.close().await.expect("close");
    let expected = expectations(&queue);

    let deleted = native_admin()
        .delete_groups(&[&queue.subscription], &AdminOptions::new())
        .await
        .expect("delete the consumer group");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let finding = finding_about(&queue.backend, &expected, &queue.subscription).await;

    assert_eq!(finding.severity, Severity::Warning, "{finding}");
    assert!(
        finding.problem.contains("no committed offsets"),
        "{finding}"
    );
    assert!(
        finding.fix.contains("--reset-offsets --to-latest"),
        "{finding}"
    );
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_lag_retries_and_dead_letters_apart_and_follow_peek_and_purge() {
    let queue = Queue::new("stats").await;
    let (backend, name) = (&queue.backend, queue.subscription.as_str());
    let fresh = backend.stats(name).await.expect("stats");
    assert_eq!(
        (&fresh.consumer_lag, &fresh.delayed, &fresh.dead_lettered),
        (&Figure::Known(0), &Figure::Known(0), &Figure::Known(0))
    );
    assert_eq!(fresh.oldest_age, Figure::Known(None));
    for unknown in [&fresh.ready, &fresh.in_flight] {
        assert!(
            unknown.reason().is_some_and(|r| r.contains("in flight")),
            "{fresh:?}"
        );
    }

    let published = Instant::now();
    for payload in ["retry", "dead", "done"] {
        let message = Message::new(payload).with_ordering_key(payload);
        queue.publisher.publish(message).await.expect("publish");
    }
    stats_until(backend, name, "a lag of 3", |s| {
        s.consumer_lag == Figure::Known(3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for delivery in receive_all(&queue.subscriber, 3, ARRIVAL).await {
        let settled = match &delivery.payload()[..] {
            b"retry" => delivery.nack(Duration::from_secs(60)).await,
            b"dead" => delivery.dead_letter("out of stock").await,
            _ => delivery.ack().await,
        };
        settled.expect("settle");
    }
    let split = stats_until(backend, name, "1 delayed, 1 dead-lettered", |s| {
        (&s.consumer_lag, &s.delayed, &s.dead_lettered)
            == (&Figure::Known(0), &Figure::Known(1), &Figure::Known(1))
    })
    .await;

    assert_eq!(split.backlog(), Figure::Known(1), "{split:?}");
    let age = split
        .oldest_age
        .known()
        .copied()
        .flatten()
        .expect("an oldest record");
    assert!(
        age >= Duration::from_secs(2) && age <= published.elapsed(),
        "the retried record counts from its original publish: {age:?}"
    );
    let peeked = backend.peek_dead_letters(name, 10).await.expect("peek");
    assert_eq!(peeked.len(), 1);
    let after_peek = backend.stats(name).await.expect("stats");
    assert_eq!(
        after_peek.dead_lettered,
        Figure::Known(1),
        "peek moved nothing"
    );

    let purged = backend.purge_dead_letters(name).await.expect("purge");
    assert_eq!(purged, Figure::Known(1));
    let after_purge = backend.stats(name).await.expect("stats");
    assert_eq!(after_purge.dead_lettered, Figure::Known(0));
    let (partition, offset) = position(peeked[0].id());
    let dead_letter = queue.dead_letter_topic();
    let group_offset = committed(&dead_letter, &dead_letter, partition).await;
    assert_eq!(
        group_offset,
        Some(offset + 1),
        "the dead-letter group moved too"
    );
    let reader = backend.dead_letter_subscriber(name).await.expect("reader");
    expect_nothing(
        &reader,
        Duration::from_secs(3),
        "the dead letters were purged",
    )
    .await;
    reader.close().await.expect("close");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_goes_through_the_retry_topic_to_this_subscription_only() {
    let queue = Queue::new("redrive").await;
    let other_name = format!("{}-other", queue.topic);
    let other_spec = SubscriptionSpec::new(&queue.topic, &other_name);
    queue
        .backend
        .create_subscription(&other_spec)
        .await
        .expect("other");
    let other = queue
        .backend
        .subscriber(&other_name)
        .await
        .expect("other subscriber");
    queue
        .publisher
        .publish(Message::new("poison").with_attribute("tenant", "acme"))
        .await
        .expect("publish");
    receive_one(&other, ARRIVAL)
        .await
        .ack()
        .await
        .expect("ack on the other");
    let first = receive_one(&queue.subscriber, ARRIVAL).await;
    first.nack(Duration::ZERO).await.expect("nack");
    let second = receive_one(&queue.subscriber, ARRIVAL).await;
    assert_eq!(second.attempt(), 2);
    second.dead_letter("bad total").await.expect("dead letter");

    let options = RedriveOptions::default().idle(Duration::from_secs(3));
    let report = redrive(&queue.backend, &queue.subscription, &options, |_| {})
        .await
        .expect("redrive");

    assert_eq!((report.redriven, report.failed), (1, 0), "{report:?}");
    let back = receive_one(&queue.subscriber, ARRIVAL).await;
    assert_eq!(back.attempt(), 1, "a redriven record starts again");
    assert_eq!(back.attribute("tenant"), Some("acme"));
    assert!(back.id().starts_with(&queue.retry_topic()), "{}", back.id());
    back.ack().await.expect("ack");
    expect_nothing(
        &other,
        Duration::from_secs(2),
        "the redrive was for one subscription",
    )
    .await;
    let retried = read_topic(&queue.retry_topic()).await;
    let redriven = retried
        .iter()
        .find(|r| r.header("wharf-redrive-count").as_deref() == Some("1"))
        .expect("the redriven record is in the retry topic");
    assert!(
        redriven.header("wharf-attempt").is_none(),
        "due now, at attempt 1"
    );
    other.close().await.expect("close");
    queue
        .backend
        .delete_subscription(&other_name)
        .await
        .expect("delete other");
    queue.delete().await;
}
