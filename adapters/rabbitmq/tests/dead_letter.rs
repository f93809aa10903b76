//! Dead letters the broker makes by itself: a quorum queue's delivery limit moves a
//! message to the dead-letter queue, and wharf reads RabbitMQ's `x-death` record as
//! its own envelope.

mod common;

use std::time::Duration;

use wharf_core::dead_letter::{ATTEMPTS, REASON, SOURCE};
use wharf_core::{Backend, Message, SubscriptionSpec};

use common::{ARRIVAL, backend, unique};

#[tokio::test]
async fn the_delivery_limit_dead_letters_with_wharfs_envelope() {
    let backend = backend().await;
    let topic = unique("limit");
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, unique("limit-s")).max_delivery_attempts(2);
    backend.create_subscription(&spec).await.unwrap();
    let publisher = backend.publisher(&topic).await.unwrap();
    let subscriber = backend.subscriber(&spec.name).await.unwrap();
    let dead_letters = backend.dead_letter_subscriber(&spec.name).await.unwrap();
    let message = Message::new("doomed").with_attribute("order", "7");
    publisher.publish(message).await.unwrap();

    for attempt in 1..=2 {
        let delivery = subscriber
            .receive_one(ARRIVAL)
            .await
            .unwrap()
            .expect("a delivery");
        assert_eq!(delivery.attempt(), attempt);
        delivery.nack(Duration::ZERO).await.unwrap();
    }
    let dead = dead_letters
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("a dead letter");

    assert_eq!(&dead.payload()[..], b"doomed");
    assert_eq!(dead.attribute("order"), Some("7"));
    let reason = dead.attribute(REASON).unwrap_or_default();
    assert!(reason.contains("delivery_limit"), "reason: {reason}");
    assert_eq!(dead.attribute(SOURCE), Some(spec.name.as_str()));
    assert_eq!(dead.attribute(ATTEMPTS), Some("2"));
    let nothing = subscriber
        .receive_one(Duration::from_secs(1))
        .await
        .unwrap();
    assert!(nothing.is_none(), "the message left the work queue");
    dead.ack().await.unwrap();
    subscriber.close().await.unwrap();
    dead_letters.close().await.unwrap();
    backend.delete_subscription(&spec.name).await.unwrap();
    backend.delete_topic(&topic).await.unwrap();
}
