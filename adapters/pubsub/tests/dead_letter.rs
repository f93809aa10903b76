//! Dead letters through the service's own dead-letter policy.

mod common;

use std::time::Duration;

use common::{ARRIVAL, LEASE, backend, clean_up, receive_n, unique};
use wharf_core::{Backend, ErrorKind, Message, SubscriptionSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_counts_attempts_and_dead_letters_after_the_limit() {
    let backend = backend().await;
    let (topic, name) = (unique("policy", "t"), unique("policy", "s"));
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, &name)
        .lease(LEASE)
        .max_delivery_attempts(5);
    backend.create_subscription(&spec).await.unwrap();
    backend
        .publisher(&topic)
        .await
        .unwrap()
        .publish(Message::new("poison").with_attribute("order", "17"))
        .await
        .unwrap();
    let subscriber = backend.subscriber(&name).await.unwrap();

    let mut attempts = Vec::new();
    for _ in 0..5 {
        let delivery = receive_n(&subscriber, 1, ARRIVAL).await.pop().unwrap();
        attempts.push(delivery.attempt());
        delivery.nack(Duration::ZERO).await.expect("nack");
    }
    let dead_letters = backend.dead_letter_subscriber(&name).await.unwrap();
    let dead = receive_n(&dead_letters, 1, ARRIVAL).await.pop().unwrap();

    assert_eq!(attempts, [1, 2, 3, 4, 5], "the service's delivery attempt");
    assert_eq!(&dead.payload()[..], b"poison");
    assert_eq!(dead.attribute("order"), Some("17"));
    dead.ack().await.expect("ack");
    let nothing = subscriber.receive(1, Duration::from_secs(2)).await.unwrap();
    assert!(nothing.is_empty(), "the message left the subscription");
    clean_up(&backend, &[&name], &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limits_outside_pubsubs_range_are_refused() {
    let backend = backend().await;
    let spec = SubscriptionSpec::new("wharf-range-t", "wharf-range-s").max_delivery_attempts(3);

    let error = backend.create_subscription(&spec).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(error.to_string().contains("5 to 100"), "{error}");
}
