//! Where a subscription's settings live between processes: a compacted topic keyed by
//! subscription name.
//!
//! Kafka has no subscription object: a consumer group only exists while it has members or
//! committed offsets, and does not record which topic it reads. So `create_subscription`
//! writes the topic and dead-letter topic under the subscription's name, and any process
//! opening a subscriber reads them back, as Kafka Connect does with its config topic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::warn;
use wharf_core::{Error, ErrorKind, Result};

use crate::admin::{Admin, TopicSpec};
use crate::config::KafkaConfig;
use crate::error::from_kafka;
use crate::headers;
use crate::producer::{LogContext, Record, SharedProducer, produce};

/// The settings stored for one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    /// The topic the subscription reads.
    pub(crate) topic: String,
    /// Its dead-letter topic.
    pub(crate) dead_letter: String,
    /// The delivery limit asked for at creation (Kafka keeps no delivery count).
    pub(crate) max_delivery_attempts: Option<u32>,
}

/// Reads and writes registrations, caching this process's own.
pub(crate) struct Registry {
    topic: String,
    config: KafkaConfig,
    cache: Mutex<HashMap<String, Registration>>,
}

impl Registry {
    pub(crate) fn new(config: &KafkaConfig) -> Self {
        Self {
            topic: config.registry_topic.clone(),
            config: config.clone(),
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `registration` under `name`, creating the registry topic if needed.
    pub(crate) async fn put(
        &self,
        admin: &Admin,
        producer: &SharedProducer,
        name: &str,
        registration: &Registration,
    ) -> Result<()> {
        let compacted = TopicSpec {
            name: self.topic.clone(),
            // One partition: a reader then sees every registration in write order.
            partitions: Some(1),
            config: vec![("cleanup.policy", "compact".to_owned())],
        };
        admin.create_topics(&[compacted]).await?;
        let value = serde_json::to_vec(registration).map_err(|e| {
            Error::new(ErrorKind::Internal, "cannot encode a registration").with_source(e)
        })?;

        self.write(producer, name, Some(&value)).await?;
        self.cache().insert(name.to_owned(), registration.clone());
        Ok(())
    }

    /// Removes `name`'s registration (a tombstone, which compaction later drops).
    pub(crate) async fn remove(&self, producer: &SharedProducer, name: &str) -> Result<()> {
        self.cache().remove(name);
        self.write(producer, name, None).await
    }

    async fn write(
        &self,
        producer: &SharedProducer,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let record = Record {
            topic: &self.topic,
            key: Some(name.as_bytes()),
            payload: value,
            headers: headers::encode(&Default::default()),
        };
        produce(producer, record, self.config.operation_timeout).await
    }

    /// The registration of `name`, if there is one.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Registration>> {
        if let Some(found) = self.cache().get(name) {
            return Ok(Some(found.clone()));
        }

        let config = self.config.clone();
        let topic = self.topic.clone();
        let all = tokio::task::spawn_blocking(move || read_all(&config, &topic))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "the registry read panicked").with_source(e)
            })??;
        Ok(all.get(name).cloned())
    }
}

/// Reads the registry topic from its start to its current end.
fn read_all(config: &KafkaConfig, topic: &str) -> Result<HashMap<String, Registration>> {
    let timeout = config.operation_timeout;
    let mut client = config.client();
    client
        .set("group.id", "wharf-registry-reader")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<LogContext> = client
        .create_with_context(LogContext)
        .map_err(|error| from_kafka(error, "creating the registry reader"))?;

    let (low, high) = match consumer.fetch_watermarks(topic, 0, timeout) {
        Ok(marks) => marks,
        Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition))
        | Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            return Ok(HashMap::new());
        }
        Err(error) => return Err(from_kafka(error, "reading the subscription registry")),
    };
    if high <= low {
        return Ok(HashMap::new());
    }

    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(low))
        .map_err(|error| from_kafka(error, "reading the subscription registry"))?;
    consumer
        .assign(&list)
        .map_err(|error| from_kafka(error, "reading the subscription registry"))?;
    collect(&consumer, high, timeout)
}

fn collect(
    consumer: &BaseConsumer<LogContext>,
    high: i64,
    timeout: Duration,
) -> Result<HashMap<String, Registration>> {
    let deadline = Instant::now() + timeout;
    let mut all = HashMap::new();
    let mut next = 0;

    while next < high {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "reading the subscription registry timed out",
                ));
            }
            continue;
        };
        let record =
            polled.map_err(|error| from_kafka(error, "reading the subscription registry"))?;
        next = record.offset() + 1;

        let Some(name) = record
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
        else {
            continue;
        };
        match record.payload().map(serde_json::from_slice::<Registration>) {
            Some(Ok(registration)) => {
                all.insert(name, registration);
            }
            Some(Err(_)) => warn!(subscription = %name, "unreadable registration skipped"),
            None => {
                all.remove(&name);
            }
        }
    }
    Ok(all)
}
