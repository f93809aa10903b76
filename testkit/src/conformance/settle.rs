//! Settling: an ack ends a message, a nack or a dropped delivery brings it back one
//! attempt higher (after the nack's delay), and the attempt count lives in the backend.

use std::time::{Duration, Instant};

use wharf_core::{Backend, Delivery, Message};

use super::support::{
    ARRIVAL, Fixture, LEASE_MARGIN, ack, expect_nothing, publish, publish_numbered, receive_all,
    receive_one,
};

/// Timers of real brokers fire a little early or late; a delay is "honoured" if the
/// message does not arrive more than this much before it ends.
const TIMER_SLACK: Duration = Duration::from_millis(50);

/// After an ack the message is never delivered again, not even after its lease.
pub async fn ack_stops_redelivery(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "ack");
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("once")).await;

        ack(receive_one(&queue.subscriber, ARRIVAL).await).await;

        let quiet = fx.lease() + LEASE_MARGIN;
        expect_nothing(&queue.subscriber, quiet, "it was acked").await;
    })
    .await;
}

/// Acking a whole batch at once ends every message in it, with one result each.
pub async fn ack_all_stops_redelivery_of_a_batch(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "ack-all");
    fx.run(async {
        let queue = fx.queue().await;
        // Held unsettled all at once, so fewer than a prefetching backend hands out
        // before acks (RabbitMQ's default prefetch is 16).
        publish_numbered(&queue.publisher, 10).await;
        let received = receive_all(&queue.subscriber, 10, ARRIVAL).await;

        let results = Delivery::ack_all(received).await;

        assert_eq!(results.len(), 10, "one result per delivery");
        for result in results {
            if let Err(failed) = result {
                panic!("ack of {} failed: {}", failed.delivery.id(), failed.error);
            }
        }
        let quiet = fx.lease() + LEASE_MARGIN;
        expect_nothing(&queue.subscriber, quiet, "the whole batch was acked").await;
    })
    .await;
}

/// A nacked message comes back with the same payload and its attempt one higher.
pub async fn nack_redelivers_with_the_next_attempt(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "nack");
    fx.run(async {
        let queue = fx.queue().await;
        publish(
            &queue.publisher,
            Message::new("again").with_attribute("k", "v"),
        )
        .await;
        let first = receive_one(&queue.subscriber, ARRIVAL).await;
        assert_eq!(first.attempt(), 1);

        first.nack(Duration::ZERO).await.expect("nack");
        let second = receive_one(&queue.subscriber, ARRIVAL).await;

        assert_eq!(
            second.attempt(),
            2,
            "a nacked message returns one attempt higher"
        );
        assert_eq!(&second.payload()[..], b"again");
        assert_eq!(second.attribute("k"), Some("v"));
        ack(second).await;
    })
    .await;
}

/// A message nacked with a delay does not come back before the delay ends, and does
/// come back after it.
pub async fn nack_delay_is_honoured(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "nack-delay");
    let delay = fx.caps().max_nack_delay.min(Duration::from_secs(3));
    if !fx.has(!delay.is_zero(), "nack delays") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("later")).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        let nacked_at = Instant::now();
        delivery.nack(delay).await.expect("nack with delay");
        let again = receive_one(&queue.subscriber, delay + ARRIVAL).await;
        let waited = nacked_at.elapsed();

        assert!(
            waited + TIMER_SLACK >= delay,
            "nacked for {delay:?} but redelivered after {waited:?}"
        );
        assert_eq!(again.attempt(), 2);
        ack(again).await;
    })
    .await;
}

/// A delivery dropped without being settled is released and delivered again, one
/// attempt higher, without waiting for its lease.
pub async fn dropped_delivery_is_redelivered(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dropped");
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("forgotten")).await;

        drop(receive_one(&queue.subscriber, ARRIVAL).await);
        let again = receive_one(&queue.subscriber, ARRIVAL).await;

        assert_eq!(&again.payload()[..], b"forgotten");
        assert_eq!(
            again.attempt(),
            2,
            "a released message returns one attempt higher"
        );
        ack(again).await;
    })
    .await;
}

/// The attempt count is kept by the backend: subscribers opened one after another
/// (as after a crash and restart) see attempts 1, 2, 3.
pub async fn attempt_count_survives_a_consumer_restart(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "restart");
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("persistent")).await;
        let mut subscriber = queue.subscriber;

        for expected in 1..=3 {
            let delivery = receive_one(&subscriber, ARRIVAL).await;
            assert_eq!(
                delivery.attempt(),
                expected,
                "attempt after {} restarts",
                expected - 1
            );
            if expected == 3 {
                ack(delivery).await;
                break;
            }
            delivery.nack(Duration::ZERO).await.expect("nack");
            subscriber.close().await.expect("close subscriber");
            drop(subscriber);
            subscriber = fx.subscriber(&queue.spec.name).await;
        }
    })
    .await;
}
