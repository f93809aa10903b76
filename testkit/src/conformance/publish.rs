//! Publishing: payloads and attributes arrive exactly as sent, batches of any size arrive
//! once each, and failed publishes say why and hand the message back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use wharf_core::{Backend, ErrorKind, Message};

use super::support::{
    ARRIVAL, Fixture, ack, expect_nothing, numbered, payload_set, publish, receive_and_ack,
    receive_one,
};

/// A non-UTF-8 payload (every byte value, NULs included) arrives byte for byte.
pub async fn binary_payload_round_trips(backend: &dyn Backend) {
    let payload: Vec<u8> = (0..=255u8).rev().chain([0, 0xff, 0xc3, 0x28]).collect();

    round_trip(backend, "binary", Message::new(payload)).await;
}

/// An empty payload arrives empty.
pub async fn empty_payload_round_trips(backend: &dyn Backend) {
    round_trip(backend, "empty", Message::new(Vec::new())).await;
}

/// A Unicode payload and attributes with Unicode values arrive unchanged.
pub async fn unicode_payload_and_attributes_round_trip(backend: &dyn Backend) {
    let message = Message::new("commande n° 42 — 東京 🚢")
        .with_attribute("city", "Zürich")
        .with_attribute("greeting", "こんにちは 👋")
        .with_attribute("plain", "ascii");

    round_trip(backend, "unicode", message).await;
}

async fn round_trip(backend: &dyn Backend, case: &str, message: Message) {
    let fx = Fixture::new(backend, case);
    fx.run(async {
        let queue = fx.queue().await;

        publish(&queue.publisher, message.clone()).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        assert_eq!(
            delivery.payload(),
            message.payload(),
            "payload changed in transit"
        );
        assert_eq!(
            delivery.attributes(),
            message.attributes(),
            "attributes changed in transit"
        );
        assert_eq!(delivery.attempt(), 1, "first delivery must be attempt 1");
        ack(delivery).await;
    })
    .await;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    sku: String,
    lines: Vec<u32>,
}

/// A message built with `Message::json` decodes back into the same value and carries
/// its content type.
pub async fn json_message_round_trips(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "json");
    fx.run(async {
        let queue = fx.queue().await;
        let order = Order {
            id: 7,
            sku: "kayak-ø".into(),
            lines: vec![1, 2, 3],
        };

        publish(
            &queue.publisher,
            Message::json(&order).expect("serialisable"),
        )
        .await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        let decoded: Order = delivery.json().expect("payload decodes as the order");
        assert_eq!(decoded, order);
        assert_eq!(delivery.attribute("content-type"), Some("application/json"));
        ack(delivery).await;
    })
    .await;
}

/// `published_at` lies between just before the publish call and just after it, give
/// or take a second of clock difference with the broker.
pub async fn published_at_is_the_publish_time(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "published-at");
    fx.run(async {
        let queue = fx.queue().await;
        let skew = Duration::from_secs(1);

        let before = SystemTime::now() - skew;
        publish(&queue.publisher, Message::new("when")).await;
        let after = SystemTime::now() + skew;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

        let at = delivery.published_at();
        assert!(
            before <= at && at <= after,
            "published_at {at:?} is outside the publish call's window {before:?}..{after:?}"
        );
        ack(delivery).await;
    })
    .await;
}

/// A batch of 1,000 messages is accepted whole, and each message arrives once.
pub async fn batch_of_a_thousand_arrives_once_each(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "batch-1000");
    fx.run(async {
        let queue = fx.queue().await;

        super::support::publish_numbered(&queue.publisher, 1_000).await;
        let received = receive_and_ack(&queue.subscriber, 1_000, ARRIVAL * 3).await;

        assert_eq!(
            payload_set(&received),
            numbered(1_000),
            "some messages differ"
        );
        assert_eq!(received.len(), 1_000, "some messages arrived twice");
        expect_nothing(&queue.subscriber, Duration::from_secs(1), "all were acked").await;
    })
    .await;
}

/// More messages than one request may carry are split into several requests; each
/// message gets its own result, an invalid one among them fails alone, and the valid
/// ones all arrive.
pub async fn batch_split_by_count_reports_each_message(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "batch-count");
    let limit = fx.caps().max_batch_messages;
    if !fx.has(limit <= 10_000, "a batch count limit to split by") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let count = limit + 1 + limit.min(10);
        let bad = count / 2;
        let oversized = Message::new(vec![0u8; fx.caps().max_message_bytes + 1]);
        let messages = (0..count)
            .map(|i| match i == bad {
                true => oversized.clone(),
                false => Message::new(i.to_string()),
            })
            .collect();

        let results = queue.publisher.publish_batch(messages).await;

        assert_eq!(results.len(), count, "one result per message");
        for (i, result) in results.iter().enumerate() {
            match (i == bad, result) {
                (true, Err(e)) => assert_eq!(e.error.kind(), ErrorKind::PayloadTooLarge),
                (true, Ok(())) => panic!("oversized message {i} was accepted"),
                (false, Err(e)) => panic!("message {i} of {count} failed: {}", e.error),
                (false, Ok(())) => {}
            }
        }
        let received = receive_and_ack(&queue.subscriber, count - 1, ARRIVAL * 2).await;
        let mut expected = numbered(count);
        expected.remove(&bad.to_string());
        assert_eq!(payload_set(&received), expected);
    })
    .await;
}

/// Messages that together exceed one request's byte limit are split into several
/// requests and all arrive intact.
pub async fn batch_split_by_bytes_delivers_every_message(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "batch-bytes");
    let caps = fx.caps().clone();
    let size = caps
        .max_message_bytes
        .min(caps.max_batch_bytes)
        .saturating_sub(64)
        .max(1);
    let count = caps.max_batch_bytes / size + 2;
    if !fx.has(count * size <= 64 << 20, "a batch byte limit under 64 MiB") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let messages: Vec<Message> = (0..count)
            .map(|i| Message::new(vec![i as u8; size]).with_attribute("n", i.to_string()))
            .collect();

        let results = queue.publisher.publish_batch(messages.clone()).await;

        for (i, result) in results.iter().enumerate() {
            if let Err(e) = result {
                panic!("message {i} of {count} ({size} bytes) failed: {}", e.error);
            }
        }
        let received = receive_and_ack(&queue.subscriber, count, ARRIVAL * 2).await;
        let by_number: BTreeMap<&str, _> = received
            .iter()
            .map(|r| (r.attribute("n").expect("attribute n kept"), r))
            .collect();
        assert_eq!(by_number.len(), count, "every message arrives once");
        for (i, message) in messages.iter().enumerate() {
            let got = by_number[i.to_string().as_str()];
            assert!(got.payload() == message.payload(), "payload {i} changed");
        }
    })
    .await;
}

/// Publishing to a topic that does not exist fails with `NotFound`, either when the
/// publisher is opened or when the message is sent, and the message is handed back.
pub async fn publish_to_missing_topic_is_not_found(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "missing-topic");
    fx.run(async {
        let topic = fx.name("t");
        let message = Message::new("lost?").with_attribute("k", "v");

        let publisher = match backend.publisher(&topic).await {
            Ok(publisher) => publisher,
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
                return;
            }
        };
        let failed = publisher
            .publish(message.clone())
            .await
            .expect_err("publishing to a missing topic must fail");

        assert_eq!(failed.error.kind(), ErrorKind::NotFound, "{}", failed.error);
        assert_eq!(failed.into_message(), message, "the message is handed back");
    })
    .await;
}

/// A publish the backend refuses, here because the topic was deleted after the
/// publisher was opened, hands the message back unchanged.
pub async fn failed_publish_hands_the_message_back(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "publish-fails");
    fx.run(async {
        let topic = fx.topic().await;
        let publisher = fx.publisher(&topic).await;
        let message = Message::new(vec![0u8, 159, 146, 150]).with_attribute("keep", "me");
        backend.delete_topic(&topic).await.expect("delete_topic");

        let failed = publisher
            .publish(message.clone())
            .await
            .expect_err("publishing to a deleted topic must fail");

        assert_eq!(failed.into_message(), message, "the message is handed back");
    })
    .await;
}
