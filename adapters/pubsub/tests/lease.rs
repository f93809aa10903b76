//! Lease extension past the subscription's ack deadline, and a nack with a delay.

mod common;

use std::time::{Duration, Instant};

use common::{ARRIVAL, LEASE, backend, clean_up, receive_n, unique};
use wharf_core::{Backend, ErrorKind, Message, SubscriptionSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_the_lease_keeps_a_message_past_the_ack_deadline() {
    let backend = backend().await;
    let (topic, name) = (unique("extend", "t"), unique("extend", "s"));
    backend.create_topic(&topic).await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new(&topic, &name).lease(LEASE))
        .await
        .unwrap();
    backend
        .publisher(&topic)
        .await
        .unwrap()
        .publish(Message::new("long job"))
        .await
        .unwrap();
    let subscriber = backend.subscriber(&name).await.unwrap();
    let other = backend.subscriber(&name).await.unwrap();
    let delivery = receive_n(&subscriber, 1, ARRIVAL).await.pop().unwrap();
    let received_at = Instant::now();

    // Hold it for two and a half ack deadlines, renewing at half the lease.
    while received_at.elapsed() < LEASE * 5 / 2 {
        tokio::time::sleep(LEASE / 2).await;
        delivery.extend_lease(LEASE).await.expect("extend_lease");
        let seen = other.receive(1, Duration::from_millis(10)).await.unwrap();
        assert!(
            seen.is_empty(),
            "redelivered after {:?}",
            received_at.elapsed()
        );
    }
    delivery
        .ack()
        .await
        .expect("ack after holding it past the ack deadline");

    let after = other
        .receive(1, LEASE + Duration::from_secs(2))
        .await
        .unwrap();
    assert!(after.is_empty(), "an acked message must not come back");
    clean_up(&backend, &[&name], &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_a_delay_returns_the_message_after_the_delay() {
    let backend = backend().await;
    let (topic, name) = (unique("delay", "t"), unique("delay", "s"));
    backend.create_topic(&topic).await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new(&topic, &name).lease(LEASE))
        .await
        .unwrap();
    backend
        .publisher(&topic)
        .await
        .unwrap()
        .publish(Message::new("retry me"))
        .await
        .unwrap();
    let subscriber = backend.subscriber(&name).await.unwrap();
    let delay = Duration::from_secs(4);

    let first = receive_n(&subscriber, 1, ARRIVAL).await.pop().unwrap();
    let nacked_at = Instant::now();
    first.nack(delay).await.expect("nack with delay");
    let again = receive_n(&subscriber, 1, delay + ARRIVAL)
        .await
        .pop()
        .unwrap();
    let waited = nacked_at.elapsed();

    assert!(
        waited >= delay - Duration::from_millis(100),
        "back after {waited:?}"
    );
    assert_eq!(again.attempt(), 2);
    assert_eq!(&again.payload()[..], b"retry me");
    again.ack().await.expect("ack");
    clean_up(&backend, &[&name], &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_delay_beyond_one_ack_deadline_is_refused() {
    let backend = backend().await;
    let (topic, name) = (unique("longdelay", "t"), unique("longdelay", "s"));
    backend.create_topic(&topic).await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new(&topic, &name).lease(LEASE))
        .await
        .unwrap();
    backend
        .publisher(&topic)
        .await
        .unwrap()
        .publish(Message::new("x"))
        .await
        .unwrap();
    let subscriber = backend.subscriber(&name).await.unwrap();
    let delivery = receive_n(&subscriber, 1, ARRIVAL).await.pop().unwrap();

    let refused = delivery.nack(Duration::from_secs(601)).await.unwrap_err();

    assert_eq!(refused.error.kind(), ErrorKind::InvalidArgument);
    assert!(
        refused.error.to_string().contains("10m"),
        "{}",
        refused.error
    );
    refused
        .into_delivery()
        .ack()
        .await
        .expect("the handed-back delivery still acks");
    clean_up(&backend, &[&name], &topic).await;
}
