//! Publish → receive → ack throughput of the memory backend through the public
//! `Publisher` / `Subscriber` API, next to raw `tokio::sync::mpsc` moving the same
//! messages. The goal is at least half of mpsc's rate.
//!
//! Both sides run on one current-thread runtime and move batches of the same messages
//! (64-byte payload, one attribute): mpsc sends them into a channel and takes them out;
//! wharf publishes them as one batch, receives them, and acks each delivery.
//!
//! `cargo bench -p wharf-memory` measures; `cargo bench -p wharf-memory -- --quick`
//! is the smoke run for CI.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Builder;
use tokio::sync::mpsc;
use wharf_core::{Backend, Message, Publisher, Subscriber, SubscriptionSpec};
use wharf_memory::MemoryBackend;

const BATCHES: [usize; 2] = [100, 1_000];
const PAYLOAD: &[u8] = &[7; 64];

fn messages(count: usize) -> Vec<Message> {
    (0..count)
        .map(|_| Message::new(Bytes::from_static(PAYLOAD)).with_attribute("kind", "bench"))
        .collect()
}

async fn open() -> (Publisher, Subscriber) {
    let backend = MemoryBackend::new();
    let spec = SubscriptionSpec::new("bench", "bench").lease(Duration::from_secs(60));
    backend.create_topic("bench").await.expect("topic");
    backend
        .create_subscription(&spec)
        .await
        .expect("subscription");

    let publisher = backend.publisher("bench").await.expect("publisher");
    let subscriber = backend.subscriber("bench").await.expect("subscriber");
    (publisher, subscriber)
}

async fn wharf_round_trip(publisher: &Publisher, subscriber: &Subscriber, batch: Vec<Message>) {
    let count = batch.len();
    for result in publisher.publish_batch(batch).await {
        result.expect("published");
    }

    let mut acked = 0;
    while acked < count {
        let deliveries = subscriber
            .receive(count, Duration::ZERO)
            .await
            .expect("received");
        for delivery in deliveries {
            delivery.ack().await.expect("acked");
            acked += 1;
        }
    }
}

async fn mpsc_round_trip(batch: Vec<Message>) {
    let count = batch.len();
    let (sender, mut receiver) = mpsc::channel(count);
    for message in batch {
        sender.send(message).await.expect("sent");
    }

    let mut taken = Vec::with_capacity(count);
    while taken.len() < count {
        receiver.recv_many(&mut taken, count).await;
    }
    std::hint::black_box(taken);
}

fn throughput(c: &mut Criterion) {
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (publisher, subscriber) = runtime.block_on(open());
    let mut group = c.benchmark_group("publish_receive_ack");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    for size in BATCHES {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("wharf_memory/{size}"), |b| {
            b.to_async(&runtime).iter_batched(
                || messages(size),
                |batch| wharf_round_trip(&publisher, &subscriber, batch),
                BatchSize::SmallInput,
            );
        });
        group.bench_function(format!("tokio_mpsc/{size}"), |b| {
            b.to_async(&runtime).iter_batched(
                || messages(size),
                mpsc_round_trip,
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
