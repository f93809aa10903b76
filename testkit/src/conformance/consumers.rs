//! Several consumers at once: competing subscribers share a subscription's messages
//! without duplicates in normal operation, and concurrent publishers and consumers lose
//! nothing.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::join_all;
use wharf_core::{Backend, Message, Subscriber};

use super::support::{ARRIVAL, Fixture, ack, numbered, publish, publish_numbered, receive, text};

/// Receives and acks until `total` payloads are in `seen` (shared by every consumer),
/// returning the payloads this consumer got, duplicates included.
async fn consume(
    subscriber: &Subscriber,
    seen: &Mutex<BTreeSet<String>>,
    total: usize,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut mine = Vec::new();

    while seen.lock().expect("lock").len() < total && Instant::now() < deadline {
        for delivery in receive(subscriber, 5, Duration::from_millis(300)).await {
            let received = ack(delivery).await;
            let payload = text(received.payload());
            seen.lock().expect("lock").insert(payload.clone());
            mine.push(payload);
        }
    }
    mine
}

/// Two subscribers on one subscription, receiving at the same time, together get every
/// message, and no message reaches both.
pub async fn competing_consumers_see_each_message_once(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "competing");
    fx.run(async {
        let queue = fx.queue().await;
        let second = fx.subscriber(&queue.spec.name).await;
        publish_numbered(&queue.publisher, 30).await;
        let seen = Mutex::new(BTreeSet::new());

        let (a, b) = tokio::join!(
            consume(&queue.subscriber, &seen, 30, ARRIVAL),
            consume(&second, &seen, 30, ARRIVAL),
        );

        let all: Vec<String> = a.into_iter().chain(b).collect();
        assert_eq!(
            seen.into_inner().expect("lock"),
            numbered(30),
            "every message arrives"
        );
        assert_eq!(all.len(), 30, "no message was delivered twice: {all:?}");
    })
    .await;
}

/// Four publishers and three consumers working at once: every message arrives.
pub async fn concurrent_publishers_and_consumers_lose_nothing(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "interleaved");
    fx.run(async {
        let queue = fx.queue().await;
        let mut consumers = vec![queue.subscriber.clone()];
        for _ in 0..2 {
            consumers.push(fx.subscriber(&queue.spec.name).await);
        }
        let seen = Mutex::new(BTreeSet::new());
        let (publishers, per_publisher) = (4usize, 25usize);
        let total = publishers * per_publisher;

        let publishing = join_all((0..publishers).map(|p| {
            let publisher = queue.publisher.clone();
            async move {
                for i in 0..per_publisher {
                    publish(
                        &publisher,
                        Message::new((p * per_publisher + i).to_string()),
                    )
                    .await;
                }
            }
        }));
        let consuming = join_all(
            consumers
                .iter()
                .map(|subscriber| consume(subscriber, &seen, total, ARRIVAL * 2)),
        );
        tokio::join!(publishing, consuming);

        assert_eq!(
            seen.into_inner().expect("lock"),
            numbered(total),
            "messages lost"
        );
    })
    .await;
}
