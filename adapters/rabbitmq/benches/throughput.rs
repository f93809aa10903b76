//! wharf against the lapin client it wraps, doing the same work on the same broker in
//! the same run: publishing confirmed batches, and receiving and acking them.
//!
//! Needs the broker: `scripts/services up rabbitmq` (or `WHARF_RABBITMQ_URL`). Run with
//! `cargo bench -p wharf-rabbitmq`; compare each `wharf` line with the `raw` line of its
//! group. Both sides use the same settings: persistent messages with `mandatory` on a
//! channel in confirm mode, all of a batch in flight before its confirms are awaited;
//! durable quorum queues; one consumer with manual acks and the same prefetch, acking
//! each delivery on its own.
//!
//! Measured once on the development machine (2 cores, RabbitMQ 3.10.8 on the same
//! host, `--quick`): publishing 20.5 k messages/s through wharf against 25.9 k raw;
//! receiving and acking 9.3 k/s against 13.4 k raw.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::future::join_all;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use tokio::runtime::Runtime;
use wharf_core::{Backend, Message, Subscriber, SubscriptionSpec};
use wharf_rabbitmq::{RabbitMq, RabbitMqConfig};

const BATCH: usize = 1_000;
const PAYLOAD_BYTES: usize = 256;
const RECEIVE_MAX: usize = 100;
const PREFETCH: u16 = 100;
const PATIENCE: Duration = Duration::from_secs(30);

fn payload() -> Vec<u8> {
    vec![b'x'; PAYLOAD_BYTES]
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn connect() -> RabbitMq {
    let config = RabbitMqConfig::from_env().prefetch(PREFETCH);
    RabbitMq::with_config(config)
        .await
        .expect("the broker must run: scripts/services up rabbitmq")
}

/// A raw lapin channel in confirm mode on the backend's connection.
async fn raw_channel(backend: &RabbitMq) -> Channel {
    let channel = backend.channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
}

/// Publishes `BATCH` persistent messages to `exchange`, all in flight before the first
/// confirm is awaited, as wharf does.
async fn raw_publish(channel: &Channel, exchange: &str) {
    let body = payload();
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let sends = (0..BATCH).map(|_| async {
        let properties = BasicProperties::default().with_delivery_mode(2);
        channel
            .basic_publish(exchange.into(), "".into(), options, &body, properties)
            .await
            .expect("publish")
            .await
            .expect("confirm")
    });

    for confirmation in join_all(sends).await {
        assert!(
            matches!(confirmation, Confirmation::Ack(None)),
            "not stored"
        );
    }
}

fn publishing(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    let topic = unique("bench-publish");
    let spec = SubscriptionSpec::new(&topic, format!("{topic}-sub"));
    let (wharf, raw) = runtime.block_on(async {
        backend.create_topic(&topic).await.expect("topic");
        // `mandatory` needs a queue to route to.
        backend.create_subscription(&spec).await.expect("queue");
        let wharf = backend.publisher(&topic).await.expect("publisher");
        (wharf, raw_channel(&backend).await)
    });

    let mut group = c.benchmark_group("rabbitmq publish 1000 x 256 B");
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

    runtime.block_on(async {
        let _ = backend.delete_subscription(&spec.name).await;
        let _ = backend.delete_topic(&topic).await;
    });
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

/// Receives and acks `count` deliveries with a plain lapin consumer.
async fn raw_consume(consumer: &mut Consumer, count: usize) {
    for _ in 0..count {
        let delivery = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("consumer open")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// A durable quorum queue bound to `exchange` and a consumer on it with `PREFETCH`.
async fn raw_consumer(backend: &RabbitMq, exchange: &str) -> (String, Consumer) {
    let queue = format!("{exchange}-raw");
    let channel = backend.channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    let quorum = AMQPValue::LongString(LongString::from(b"quorum".to_vec()));
    arguments.insert("x-queue-type".into(), quorum);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (queue, consumer)
}

fn consuming(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    let (wharf_topic, raw_topic) = (unique("bench-consume"), unique("bench-consume-raw"));
    let subscription = format!("{wharf_topic}-sub");
    let (subscriber, publisher, raw_queue, consumer) = runtime.block_on(async {
        backend.create_topic(&wharf_topic).await.expect("topic");
        backend.create_topic(&raw_topic).await.expect("topic");
        let spec = SubscriptionSpec::new(&wharf_topic, &subscription);
        backend
            .create_subscription(&spec)
            .await
            .expect("subscription");
        let subscriber = backend.subscriber(&subscription).await.expect("subscriber");
        let (raw_queue, consumer) = raw_consumer(&backend, &raw_topic).await;
        (subscriber, raw_channel(&backend).await, raw_queue, consumer)
    });
    let consumer = tokio::sync::Mutex::new(consumer);

    let mut group = c.benchmark_group("rabbitmq receive and ack 1000 x 256 B");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("wharf", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (publisher, topic, subscriber) = (&publisher, &wharf_topic, &subscriber);
            async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    raw_publish(publisher, topic).await;
                    let started = Instant::now();
                    wharf_consume(subscriber, BATCH).await;
                    spent += started.elapsed();
                }
                spent
            }
        });
    });
    group.bench_function("raw", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (publisher, topic, consumer) = (&publisher, &raw_topic, &consumer);
            async move {
                let mut consumer = consumer.lock().await;
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    raw_publish(publisher, topic).await;
                    let started = Instant::now();
                    raw_consume(&mut consumer, BATCH).await;
                    spent += started.elapsed();
                }
                spent
            }
        });
    });
    group.finish();

    runtime.block_on(async {
        let _ = subscriber.close().await;
        let _ = backend.delete_subscription(&subscription).await;
        let channel = backend.channel().await.expect("channel");
        let _ = channel
            .queue_delete(raw_queue.as_str().into(), Default::default())
            .await;
        let _ = backend.delete_topic(&wharf_topic).await;
        let _ = backend.delete_topic(&raw_topic).await;
    });
}

criterion_group!(benches, publishing, consuming);
criterion_main!(benches);
