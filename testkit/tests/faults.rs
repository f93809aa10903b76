//! Each fault of `FaultyBackend` happens, against the real in-memory backend, and
//! without faults the wrapper passes the conformance suite unchanged.

use std::time::{Duration, Instant};

use wharf_core::{Backend, ErrorKind, Message, Publisher, Subscriber, SubscriptionSpec};
use wharf_memory::MemoryBackend;
use wharf_testkit::{FaultyBackend, Times};

const LEASE: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(2);

/// A topic `t` with subscription `s` (lease 300 ms) on `backend`.
async fn queue(backend: &impl Backend) -> (Publisher, Subscriber) {
    queue_with_lease(backend, LEASE).await
}

async fn queue_with_lease(backend: &impl Backend, lease: Duration) -> (Publisher, Subscriber) {
    backend.create_topic("t").await.expect("create_topic");
    let spec = SubscriptionSpec::new("t", "s").lease(lease);
    backend
        .create_subscription(&spec)
        .await
        .expect("create_subscription");

    let publisher = backend.publisher("t").await.expect("publisher");
    let subscriber = backend.subscriber("s").await.expect("subscriber");
    (publisher, subscriber)
}

#[tokio::test]
async fn failed_publishes_are_refused_as_retryable_and_handed_back() {
    let backend = FaultyBackend::new(MemoryBackend::new()).fail_publishes(2);
    let (publisher, subscriber) = queue(&backend).await;

    let results = publisher
        .publish_batch(vec![
            Message::new("a"),
            Message::new("b"),
            Message::new("c"),
        ])
        .await;

    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|e| e.error.kind() == ErrorKind::Unavailable)
    );
    assert!(failed.iter().all(|e| e.is_retryable()));
    assert_eq!(
        &failed[0].message.payload()[..],
        b"a",
        "message handed back"
    );
    assert!(results[2].is_ok(), "faults stop after the first two");
    let got = subscriber.receive(10, WAIT).await.expect("receive");
    assert_eq!(got.len(), 1, "only the third message was sent");
    assert_eq!(backend.report().publishes_failed, 2);
}

#[tokio::test]
async fn failed_receives_return_unavailable() {
    let backend = FaultyBackend::new(MemoryBackend::new()).fail_receives(1);
    let (publisher, subscriber) = queue(&backend).await;
    publisher.publish(Message::new("x")).await.expect("publish");

    let first = subscriber.receive(1, WAIT).await;
    let second = subscriber.receive(1, WAIT).await.expect("second receive");

    assert_eq!(first.expect_err("injected").kind(), ErrorKind::Unavailable);
    assert_eq!(second.len(), 1);
    assert_eq!(backend.report().receives_failed, 1);
}

#[tokio::test]
async fn dropped_ack_reports_success_but_the_message_returns() {
    let backend = FaultyBackend::new(MemoryBackend::new()).drop_acks(1);
    let (publisher, subscriber) = queue(&backend).await;
    publisher.publish(Message::new("x")).await.expect("publish");

    let first = subscriber
        .receive_one(WAIT)
        .await
        .expect("receive")
        .expect("delivery");
    first
        .ack()
        .await
        .expect("a dropped ack still reports success");
    let again = subscriber.receive_one(WAIT).await.expect("receive");

    let again = again.expect("the message returns after its lease");
    assert_eq!(again.attempt(), 2);
    again.ack().await.expect("second ack goes through");
    assert!(
        subscriber
            .receive_one(LEASE * 2)
            .await
            .expect("receive")
            .is_none()
    );
    assert_eq!(backend.report().acks_dropped, 1);
}

#[tokio::test]
async fn failed_ack_hands_the_delivery_back_for_another_try() {
    let backend = FaultyBackend::new(MemoryBackend::new()).fail_acks(1);
    let (publisher, subscriber) = queue(&backend).await;
    publisher.publish(Message::new("x")).await.expect("publish");
    let delivery = subscriber
        .receive_one(WAIT)
        .await
        .expect("receive")
        .expect("delivery");

    let failed = delivery.ack().await.expect_err("first ack fails");
    assert_eq!(failed.error.kind(), ErrorKind::Unavailable);
    failed
        .into_delivery()
        .ack()
        .await
        .expect("retried ack succeeds");

    assert!(
        subscriber
            .receive_one(LEASE * 2)
            .await
            .expect("receive")
            .is_none()
    );
    assert_eq!(backend.report().acks_failed, 1);
}

#[tokio::test]
async fn duplicated_delivery_arrives_twice_and_one_ack_settles_both() {
    let backend = FaultyBackend::new(MemoryBackend::new()).duplicate_deliveries(1);
    let (publisher, subscriber) = queue(&backend).await;
    publisher.publish(Message::new("x")).await.expect("publish");

    let copies = subscriber.receive(10, WAIT).await.expect("receive");

    assert_eq!(copies.len(), 2, "the delivery is handed out twice");
    assert_eq!(copies[0].id(), copies[1].id());
    for copy in copies {
        copy.ack().await.expect("both copies ack");
    }
    assert!(
        subscriber
            .receive_one(LEASE * 2)
            .await
            .expect("receive")
            .is_none()
    );
    assert_eq!(backend.report().deliveries_duplicated, 1);
}

#[tokio::test]
async fn delayed_delivery_is_held_back_then_handed_out() {
    let delay = Duration::from_millis(400);
    let backend = FaultyBackend::new(MemoryBackend::new()).delay_deliveries(delay, Times::always());
    // The lease outlasts the delay, or the held delivery would expire before it is seen.
    let (publisher, subscriber) = queue_with_lease(&backend, Duration::from_secs(5)).await;

    let started = Instant::now();
    publisher.publish(Message::new("x")).await.expect("publish");
    let delivery = subscriber
        .receive_one(WAIT)
        .await
        .expect("receive")
        .expect("delivery");

    assert!(
        started.elapsed() >= delay,
        "handed out after {:?}",
        started.elapsed()
    );
    delivery.ack().await.expect("ack");
    assert_eq!(backend.report().deliveries_delayed, 1);
}

#[tokio::test]
async fn closing_a_subscriber_releases_held_deliveries() {
    let backend = FaultyBackend::new(MemoryBackend::new())
        .delay_deliveries(Duration::from_secs(60), Times::always());
    // A lease far longer than the test, so only the release can bring the message back.
    let (publisher, subscriber) = queue_with_lease(&backend, Duration::from_secs(60)).await;
    publisher.publish(Message::new("x")).await.expect("publish");
    let none = subscriber
        .receive(1, Duration::from_millis(200))
        .await
        .expect("receive");
    assert!(none.is_empty(), "held back for a minute");

    subscriber.close().await.expect("close");

    let plain = backend.inner().subscriber("s").await.expect("subscriber");
    let released = plain.receive_one(WAIT).await.expect("receive");
    assert!(
        released.is_some(),
        "the held delivery was released on close"
    );
}

#[test]
fn times_clamps_ratios_and_treats_nan_as_never() {
    assert_eq!(Times::ratio(1.5), Times::Ratio(1.0));
    assert_eq!(Times::ratio(-1.0), Times::Ratio(0.0));
    assert_eq!(Times::ratio(f64::NAN), Times::Never);
    assert_eq!(Times::from(3), Times::First(3));
}

/// Without faults configured, the wrapper is transparent.
mod transparent {
    use super::*;

    async fn faultless() -> FaultyBackend<MemoryBackend> {
        FaultyBackend::new(MemoryBackend::new())
    }

    wharf_testkit::conformance_suite!(faultless);
}

/// The suite fails a backend that breaks the contract: each case below must panic
/// against a backend whose faults break exactly what the case checks.
mod suite_catches {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;

    use super::*;
    use wharf_testkit::conformance::{consumers, publish, settle};

    async fn fails<F: std::future::Future<Output = ()>>(case: F) -> bool {
        AssertUnwindSafe(case).catch_unwind().await.is_err()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_acks() {
        let backend = FaultyBackend::new(MemoryBackend::new()).drop_acks(Times::always());

        assert!(fails(settle::ack_stops_redelivery(&backend)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicate_deliveries() {
        let backend =
            FaultyBackend::new(MemoryBackend::new()).duplicate_deliveries(Times::always());

        assert!(
            fails(consumers::competing_consumers_see_each_message_once(
                &backend
            ))
            .await
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_publishes() {
        let backend = FaultyBackend::new(MemoryBackend::new()).fail_publishes(1);

        assert!(fails(publish::binary_payload_round_trips(&backend)).await);
    }
}
