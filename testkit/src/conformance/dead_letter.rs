//! Dead letters: a dead-lettered message keeps its payload and attributes and carries an
//! envelope saying why, after how many attempts, and from where.

use std::time::Duration;

use wharf_core::{Backend, Envelope, Message};

use super::support::{ARRIVAL, Fixture, LEASE_MARGIN, ack, expect_nothing, publish, receive_one};

/// `dead_letter(reason)` moves the message to the dead-letter destination with its
/// payload, its attributes, the reason, attempt 1 and the source subscription, and
/// removes it from the subscription.
pub async fn dead_letter_keeps_payload_attributes_and_reason(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dead-letter");
    fx.run(async {
        let queue = fx.queue().await;
        let message = Message::new(vec![0u8, 1, 254, 255])
            .with_attribute("order", "A-17")
            .with_attribute("note", "café ☕");
        publish(&queue.publisher, message.clone()).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        delivery
            .dead_letter("unknown product")
            .await
            .expect("dead_letter");

        let dead = receive_one(&fx.dead_letters(&queue.spec.name).await, ARRIVAL).await;
        let envelope = Envelope::from_attributes(dead.attributes())
            .expect("a dead letter carries the wharf envelope");
        assert_eq!(dead.payload(), message.payload(), "payload kept");
        assert_eq!(
            &Envelope::strip(dead.attributes()),
            message.attributes(),
            "attributes kept"
        );
        assert_eq!(envelope.reason, "unknown product");
        assert_eq!(envelope.attempts, 1);
        assert_eq!(envelope.source, queue.spec.name);
        assert!(
            envelope.last_failure.is_some(),
            "last failure time recorded"
        );
        ack(dead).await;
        let quiet = queue.spec.lease + LEASE_MARGIN;
        expect_nothing(&queue.subscriber, quiet, "it was dead-lettered").await;
    })
    .await;
}

/// A message dead-lettered on its second delivery says 2 attempts, with its first
/// failure no later than its last.
pub async fn dead_letter_counts_earlier_attempts(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dead-letter-attempts");
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("twice")).await;
        let first = receive_one(&queue.subscriber, ARRIVAL).await;
        first.nack(Duration::ZERO).await.expect("nack");
        let second = receive_one(&queue.subscriber, ARRIVAL).await;

        second
            .dead_letter("still broken")
            .await
            .expect("dead_letter");

        let dead = receive_one(&fx.dead_letters(&queue.spec.name).await, ARRIVAL).await;
        let envelope = Envelope::from_attributes(dead.attributes()).expect("envelope");
        assert_eq!(envelope.attempts, 2);
        assert_eq!(envelope.reason, "still broken");
        let (first_failure, last_failure) = (envelope.first_failure, envelope.last_failure);
        assert!(
            first_failure.is_some() && first_failure <= last_failure,
            "first failure {first_failure:?} must be set and not after {last_failure:?}"
        );
        ack(dead).await;
    })
    .await;
}
