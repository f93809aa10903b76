//! What the Kafka integration tests share: a backend on the broker that
//! `scripts/services up kafka` starts, unique names, a queue with cleanup, and plain
//! rdkafka clients that look at topics and groups without wharf in between.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use wharf_core::{Backend, Publisher, Subscriber, SubscriptionSpec};
use wharf_kafka::{KafkaBackend, KafkaConfig};

/// How long the plain clients wait for the broker.
const PATIENCE: Duration = Duration::from_secs(20);

/// A backend on the test broker, or a panic saying how to start it.
pub async fn backend() -> KafkaBackend {
    let config = KafkaConfig::from_env().operation_timeout(Duration::from_secs(10));
    let brokers = config.brokers().to_owned();

    match KafkaBackend::connect(config).await {
        Ok(backend) => backend,
        Err(error) => panic!(
            "cannot reach Kafka at {brokers} ({error}); start it with \
             `scripts/services up kafka` or set WHARF_KAFKA_BROKERS"
        ),
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The brokers the tests use.
pub fn brokers() -> String {
    KafkaConfig::from_env().brokers().to_owned()
}

/// A topic with one subscription, a publisher and a subscriber.
pub struct Queue {
    pub backend: KafkaBackend,
    pub topic: String,
    pub subscription: String,
    pub publisher: Publisher,
    pub subscriber: Subscriber,
}

impl Queue {
    /// Creates a fresh topic and subscription named after `case`.
    pub async fn new(case: &str) -> Self {
        let backend = backend().await;
        let topic = unique(&format!("kafka-{case}"));
        let subscription = format!("{topic}-sub");
        backend.create_topic(&topic).await.expect("create topic");
        let spec = SubscriptionSpec::new(&topic, &subscription);
        backend
            .create_subscription(&spec)
            .await
            .expect("create subscription");

        let publisher = backend.publisher(&topic).await.expect("publisher");
        let subscriber = backend.subscriber(&subscription).await.expect("subscriber");
        Self {
            backend,
            topic,
            subscription,
            publisher,
            subscriber,
        }
    }

    /// The subscription's retry topic.
    pub fn retry_topic(&self) -> String {
        format!("{}-retry", self.subscription)
    }

    /// The subscription's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}-dlq", self.subscription)
    }

    /// Deletes what `new` created; failures are reported, not fatal.
    pub async fn delete(self) {
        let _ = self.subscriber.close().await;
        if let Err(error) = self.backend.delete_subscription(&self.subscription).await {
            eprintln!("cleanup: {error}");
        }
        if let Err(error) = self.backend.delete_topic(&self.topic).await {
            eprintln!("cleanup: {error}");
        }
    }
}

/// One record as a plain Kafka client sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Headers by key; a repeated key keeps its last value.
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Record {
    /// A header's value as text, if present.
    pub fn header(&self, key: &str) -> Option<String> {
        let value = self.headers.get(key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }
}

/// A plain consumer in no group, for reading partitions and committed offsets.
fn plain_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("plain rdkafka consumer")
}

/// Every record of `topic`, read with a plain rdkafka consumer from the start of each
/// partition to its current end.
pub async fn read_topic(topic: &str) -> Vec<Record> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&topic))
        .await
        .expect("reader thread")
}

fn read_topic_blocking(topic: &str) -> Vec<Record> {
    let consumer = plain_consumer(&unique("plain-reader"));
    let metadata = consumer
        .fetch_metadata(Some(topic), PATIENCE)
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();

    let mut list = TopicPartitionList::new();
    let mut expected = 0;
    for partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, PATIENCE)
            .expect("watermarks");
        expected += usize::try_from(high - low).expect("watermarks in order");
        list.add_partition_offset(topic, *partition, Offset::Offset(low))
            .expect("partition offset");
    }
    consumer.assign(&list).expect("assign");

    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        assert!(
            Instant::now() < deadline,
            "read {} of {expected} records of {topic} within {PATIENCE:?}",
            records.len()
        );
        if let Some(polled) = consumer.poll(Duration::from_millis(200)) {
            records.push(record(&polled.expect("consume")));
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let mut headers = BTreeMap::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            let value = header.value.unwrap_or_default().to_vec();
            headers.insert(header.key.to_owned(), value);
        }
    }
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

/// The offset consumer group `group` has committed for one partition, if any.
pub async fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer = plain_consumer(&group);
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        let committed = consumer
            .committed_offsets(list, PATIENCE)
            .expect("committed offsets");
        match committed.elements()[0].offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }
    })
    .await
    .expect("committed-offsets thread")
}

/// The partition and offset a wharf delivery id (`topic/partition/offset`) names.
pub fn position(id: &str) -> (i32, i64) {
    let mut parts = id.rsplit('/');
    let offset = parts.next().and_then(|o| o.parse().ok());
    let partition = parts.next().and_then(|p| p.parse().ok());
    match (partition, offset) {
        (Some(partition), Some(offset)) => (partition, offset),
        _ => panic!("delivery id {id} is not topic/partition/offset"),
    }
}
