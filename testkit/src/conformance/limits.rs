//! Limits and bad input: every value out of the backend's range is refused with a typed
//! error before anything is sent, and whatever was refused is handed back.

use std::time::{Duration, Instant};

use wharf_core::{Backend, ErrorKind, Message};

use super::support::{
    ARRIVAL, Fixture, ack, expect_nothing, publish, publish_numbered, receive, receive_one,
};

/// Caps above which a backend is taken to have no practical payload size limit to test.
const LARGEST_TESTED_PAYLOAD: usize = 256 << 20;

/// A message one byte over the backend's size limit fails with `PayloadTooLarge`
/// naming the size and the limit, is handed back, and never reaches a subscriber.
pub async fn oversized_payload_is_refused_before_sending(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "oversized");
    let limit = fx.caps().max_message_bytes;
    if !fx.has(limit < LARGEST_TESTED_PAYLOAD, "a payload size limit") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let message = Message::new(vec![7u8; limit + 1]);

        let failed = queue
            .publisher
            .publish(message.clone())
            .await
            .expect_err("an oversized message must be refused");

        assert_eq!(failed.error.kind(), ErrorKind::PayloadTooLarge);
        let text = failed.error.to_string();
        assert!(
            text.contains(&(limit + 1).to_string()),
            "size not named: {text}"
        );
        assert!(text.contains(&limit.to_string()), "limit not named: {text}");
        assert_eq!(failed.into_message(), message, "the message is handed back");
        expect_nothing(&queue.subscriber, Duration::from_secs(1), "it was refused").await;
    })
    .await;
}

/// A message with one attribute more than the backend allows fails with
/// `LimitExceeded` and is handed back.
pub async fn too_many_attributes_is_a_limit_error(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "attributes");
    let Some(limit) = fx.caps().max_attributes else {
        fx.has(false, "an attribute count limit");
        return;
    };
    fx.run(async {
        let queue = fx.queue().await;
        let message = (0..=limit).fold(Message::new("x"), |m, i| {
            m.with_attribute(format!("a{i}"), "v")
        });

        let failed = queue
            .publisher
            .publish(message.clone())
            .await
            .expect_err("too many attributes must be refused");

        assert_eq!(
            failed.error.kind(),
            ErrorKind::LimitExceeded,
            "{}",
            failed.error
        );
        assert_eq!(failed.into_message(), message, "the message is handed back");
    })
    .await;
}

/// A publish delay longer than the backend's maximum fails with `InvalidArgument` and
/// the message is handed back.
pub async fn publish_delay_beyond_maximum_is_invalid(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "delay-too-long");
    let Some(max) = fx.caps().max_publish_delay else {
        fx.has(false, "delayed publish");
        return;
    };
    fx.run(async {
        let queue = fx.queue().await;
        let message = Message::new("later").with_delay(max + Duration::from_secs(1));

        let failed = queue
            .publisher
            .publish(message.clone())
            .await
            .expect_err("a delay beyond the maximum must be refused");

        assert_eq!(
            failed.error.kind(),
            ErrorKind::InvalidArgument,
            "{}",
            failed.error
        );
        assert_eq!(failed.into_message(), message, "the message is handed back");
    })
    .await;
}

/// A nack delay longer than the backend's maximum fails with `InvalidArgument`, hands
/// the delivery back still unsettled, and the delivery can then be acked.
pub async fn nack_delay_beyond_maximum_is_refused_and_handed_back(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "nack-too-long");
    fx.run(async {
        let queue = fx.queue().await;
        let too_long = fx.caps().max_nack_delay + Duration::from_secs(1);
        publish(&queue.publisher, Message::new("n")).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        let failed = delivery
            .nack(too_long)
            .await
            .expect_err("a nack delay beyond the maximum must be refused");

        assert_eq!(
            failed.error.kind(),
            ErrorKind::InvalidArgument,
            "{}",
            failed.error
        );
        ack(failed.into_delivery()).await;
        let quiet = fx.lease() + super::support::LEASE_MARGIN;
        expect_nothing(
            &queue.subscriber,
            quiet,
            "the handed-back delivery was acked",
        )
        .await;
    })
    .await;
}

/// Extending a lease beyond the backend's longest lease fails with `InvalidArgument`;
/// the delivery stays usable.
pub async fn lease_beyond_maximum_is_invalid(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "lease-too-long");
    let Some(max) = fx.caps().max_lease else {
        fx.has(false, "lease extension");
        return;
    };
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("l")).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        let error = delivery
            .extend_lease(max + Duration::from_secs(1))
            .await
            .expect_err("a lease beyond the maximum must be refused");

        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        ack(delivery).await;
    })
    .await;
}

/// Asking to receive zero deliveries fails with `InvalidArgument`.
pub async fn receive_of_zero_is_invalid(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "receive-zero");
    fx.run(async {
        let queue = fx.queue().await;

        let error = queue
            .subscriber
            .receive(0, Duration::from_secs(1))
            .await
            .expect_err("receive(0) must be refused");

        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
    })
    .await;
}

/// On an empty subscription, receive returns an empty list once its timeout has passed
/// (plus the one network round trip the contract allows), not later.
pub async fn receive_returns_within_its_timeout_when_empty(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "receive-timeout");
    fx.run(async {
        let queue = fx.queue().await;
        let timeout = Duration::from_secs(2);
        let allowed = timeout + Duration::from_secs(2);

        let started = Instant::now();
        let received = receive(&queue.subscriber, 10, timeout).await;
        let took = started.elapsed();

        assert!(received.is_empty(), "got {} deliveries", received.len());
        assert!(took <= allowed, "receive({timeout:?}) took {took:?}");
    })
    .await;
}

/// A receive never returns more deliveries than asked for.
pub async fn receive_never_returns_more_than_max(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "receive-max");
    fx.run(async {
        let queue = fx.queue().await;
        publish_numbered(&queue.publisher, 6).await;

        let mut taken = 0;
        while taken < 6 {
            let batch = receive(&queue.subscriber, 2, ARRIVAL).await;
            assert!(!batch.is_empty(), "messages {taken}..6 did not arrive");
            assert!(batch.len() <= 2, "receive(2) returned {}", batch.len());
            taken += batch.len();
            for delivery in batch {
                ack(delivery).await;
            }
        }
    })
    .await;
}
