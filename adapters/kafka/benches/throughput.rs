//! wharf against the rdkafka client it wraps, doing the same work on the same broker in
//! the same run: publishing batches, and receiving and acking them.
//!
//! Needs the broker: `scripts/services up kafka` (or `WHARF_KAFKA_BROKERS`). Run with
//! `cargo bench -p wharf-kafka`; compare each `wharf` line with the `raw` line of its
//! group. Both sides use the same producer settings (idempotent, `acks=all`,
//! `linger.ms=5`); the raw consumer stores and commits offsets as wharf does, but
//! without per-record settlement tracking.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::runtime::Runtime;
use wharf_core::{Backend, Message, Subscriber, SubscriptionSpec};
use wharf_kafka::{KafkaBackend, KafkaConfig};

const BATCH: usize = 1_000;
const PAYLOAD_BYTES: usize = 256;
const RECEIVE_MAX: usize = 100;
const PATIENCE: Duration = Duration::from_secs(30);

fn payload() -> Vec<u8> {
    vec![b'x'; PAYLOAD_BYTES]
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn connect() -> KafkaBackend {
    KafkaBackend::connect(KafkaConfig::from_env())
        .await
        .expect("the broker must run: scripts/services up kafka")
}

/// A producer configured as wharf configures its own.
fn raw_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("raw producer")
}

/// Enqueues `BATCH` records, then awaits every confirmation.
async fn raw_publish(producer: &FutureProducer, topic: &str) {
    let body = payload();
    let mut pending = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        let record = FutureRecord::<(), [u8]>::to(topic).payload(&body);
        pending.push(producer.send_result(record).expect("enqueue"));
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("confirmed");
    }
}

fn publishing(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    let topic = unique("bench-publish");
    runtime
        .block_on(backend.create_topic(&topic))
        .expect("create topic");
    let wharf = runtime
        .block_on(backend.publisher(&topic))
        .expect("publisher");
    let raw = raw_producer(backend.config().brokers());

    let mut group = c.benchmark_group("publish 1000 x 256 B");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("wharf", |b| {
        b.to_async(&runtime).iter(|| async {
            let messages = (0..BATCH).map(|_| Message::new(payload())).collect();
            for result in wharf.publish_batch(messages).await {
                result.expect("publish");
            }
        });
    });
    group.bench_function("raw", |b| {
        b.to_async(&runtime).iter(|| raw_publish(&raw, &topic));
    });
    group.finish();

    runtime
        .block_on(backend.delete_topic(&topic))
        .expect("delete topic");
}

/// Receives and acks `count` deliveries through wharf.
async fn wharf_consume(subscriber: &Subscriber, count: usize) {
    let mut left = count;
    while left > 0 {
        let batch = subscriber
            .receive(left.min(RECEIVE_MAX), PATIENCE)
            .await
            .expect("receive");
        assert!(!batch.is_empty(), "nothing arrived within {PATIENCE:?}");
        left -= batch.len();
        for delivery in batch {
            delivery.ack().await.map_err(|f| f.error).expect("ack");
        }
    }
}

/// Polls `count` records with a plain group consumer and commits past them.
fn raw_consume(consumer: &BaseConsumer, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut ends = TopicPartitionList::new();
    for _ in 0..count {
        let record = loop {
            assert!(
                Instant::now() < deadline,
                "nothing arrived within {PATIENCE:?}"
            );
            if let Some(polled) = consumer.poll(Duration::from_millis(100)) {
                break polled.expect("consume");
            }
        };
        let next = Offset::Offset(record.offset() + 1);
        ends.add_partition_offset(record.topic(), record.partition(), next)
            .expect("offset");
    }
    consumer.commit(&ends, CommitMode::Async).expect("commit");
}

fn raw_consumer(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-raw"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn consuming(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    let brokers = backend.config().brokers().to_owned();
    let producer = raw_producer(&brokers);
    let (wharf_topic, raw_topic) = (unique("bench-consume"), unique("bench-consume-raw"));
    let subscription = format!("{wharf_topic}-sub");
    let subscriber = runtime.block_on(async {
        backend.create_topic(&wharf_topic).await.expect("topic");
        backend.create_topic(&raw_topic).await.expect("topic");
        let spec = SubscriptionSpec::new(&wharf_topic, &subscription);
        backend
            .create_subscription(&spec)
            .await
            .expect("subscription");
        backend.subscriber(&subscription).await.expect("subscriber")
    });
    let consumer = raw_consumer(&brokers, &raw_topic);

    let mut group = c.benchmark_group("receive and ack 1000 x 256 B");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("wharf", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (producer, topic, subscriber) = (&producer, &wharf_topic, &subscriber);
            async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    raw_publish(producer, topic).await;
                    let started = Instant::now();
                    wharf_consume(subscriber, BATCH).await;
                    spent += started.elapsed();
                }
                spent
            }
        });
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                runtime.block_on(raw_publish(&producer, &raw_topic));
                let started = Instant::now();
                raw_consume(&consumer, BATCH);
                spent += started.elapsed();
            }
            spent
        });
    });
    group.finish();

    runtime.block_on(async {
        let _ = subscriber.close().await;
        let _ = backend.delete_subscription(&subscription).await;
        let _ = backend.delete_topic(&wharf_topic).await;
        let _ = backend.delete_topic(&raw_topic).await;
    });
}

criterion_group!(benches, publishing, consuming);
criterion_main!(benches);
