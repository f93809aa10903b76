//! Optional features, each tested only where the backend's capabilities declare it:
//! fan-out, ordering keys, deduplication and delayed publish.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wharf_core::{Backend, Message};

use super::support::{
    ARRIVAL, Fixture, ack, expect_nothing, numbered, payload_set, publish, publish_numbered,
    receive, receive_and_ack, receive_one, text,
};

/// Two subscriptions on one topic each receive every message.
pub async fn fan_out_delivers_every_message_to_every_subscription(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "fan-out");
    if !fx.has(fx.caps().fan_out, "fan-out") {
        return;
    }
    fx.run(async {
        let topic = fx.topic().await;
        let first = fx.subscribe(&fx.spec(&topic)).await;
        let second = fx.subscribe(&fx.spec(&topic)).await;
        let publisher = fx.publisher(&topic).await;

        publish_numbered(&publisher, 10).await;
        let (a, b) = tokio::join!(
            receive_and_ack(&first, 10, ARRIVAL),
            receive_and_ack(&second, 10, ARRIVAL),
        );

        assert_eq!(payload_set(&a), numbered(10), "first subscription");
        assert_eq!(payload_set(&b), numbered(10), "second subscription");
    })
    .await;
}

/// On an ordered subscription, messages sharing an ordering key arrive in the order
/// they were published, even when keys are interleaved.
pub async fn ordering_key_keeps_order(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "ordering");
    if !fx.has(fx.caps().ordering, "ordering keys") {
        return;
    }
    fx.run(async {
        let queue = fx.queue_with(|spec| spec.ordered(true)).await;
        let (keys, per_key) = (3usize, 8usize);
        let messages = (0..per_key)
            .flat_map(|seq| (0..keys).map(move |key| (key, seq)))
            .map(|(key, seq)| Message::new(seq.to_string()).with_ordering_key(format!("k{key}")))
            .collect();
        for result in queue.publisher.publish_batch(messages).await {
            result.unwrap_or_else(|e| panic!("publish failed: {}", e.error));
        }

        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let deadline = Instant::now() + ARRIVAL;
        while by_key.values().map(Vec::len).sum::<usize>() < keys * per_key {
            assert!(Instant::now() < deadline, "only got {by_key:?}");
            for delivery in receive(&queue.subscriber, 10, Duration::from_millis(500)).await {
                let key = delivery
                    .ordering_key()
                    .expect("ordering key kept")
                    .to_owned();
                let seq = text(delivery.payload()).parse().expect("numbered payload");
                ack(delivery).await;
                by_key.entry(key).or_default().push(seq);
            }
        }

        let in_order: Vec<usize> = (0..per_key).collect();
        for (key, seqs) in &by_key {
            assert_eq!(seqs, &in_order, "messages with key {key} out of order");
        }
    })
    .await;
}

/// Two publishes with one deduplication id are delivered once; another id is not
/// affected.
pub async fn duplicate_publish_is_delivered_once(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "dedup");
    if !fx.has(fx.caps().deduplication, "deduplication") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let first = Message::new("charge card").with_deduplication_id("payment-1");
        let other = Message::new("ship order").with_deduplication_id("shipment-1");

        publish(&queue.publisher, first.clone()).await;
        publish(&queue.publisher, first).await;
        publish(&queue.publisher, other).await;
        let received = receive_and_ack(&queue.subscriber, 2, ARRIVAL).await;

        let payloads = payload_set(&received);
        assert!(payloads.contains("charge card") && payloads.contains("ship order"));
        expect_nothing(
            &queue.subscriber,
            Duration::from_secs(2),
            "it was a duplicate",
        )
        .await;
    })
    .await;
}

/// A message published with a delay is not delivered before the delay ends, and is
/// delivered after it.
pub async fn delayed_publish_is_not_delivered_early(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "delayed");
    let Some(max) = fx.caps().max_publish_delay else {
        fx.has(false, "delayed publish");
        return;
    };
    fx.run(async {
        let queue = fx.queue().await;
        let delay = max.min(Duration::from_secs(3));

        let published_at = Instant::now();
        publish(&queue.publisher, Message::new("later").with_delay(delay)).await;
        let delivery = receive_one(&queue.subscriber, delay + ARRIVAL).await;
        let waited = published_at.elapsed();

        assert!(
            waited + Duration::from_millis(50) >= delay,
            "published with a {delay:?} delay but delivered after {waited:?}"
        );
        ack(delivery).await;
    })
    .await;
}
