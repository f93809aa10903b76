//! Producing: [`KafkaTopic`] (the topic driver behind a `Publisher`) and the sender it
//! shares with subscriptions, which re-publish to retry and dead-letter topics.
//!
//! The producer is idempotent with `acks=all`, so a record is confirmed only once every
//! in-sync replica has it and librdkafka's own retries never duplicate or reorder it.
//! Records of a batch are all enqueued before any confirmation is awaited, so `linger.ms`
//! packs them into few requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tracing::{debug, trace, warn};
use wharf_core::{Capabilities, Error, ErrorKind, Message, Result, TopicDriver};

use crate::error::from_kafka;
use crate::headers;

/// How long to wait between tries while librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Routes librdkafka's log lines and client errors to `tracing`.
///
/// librdkafka reports a broker it cannot reach as an error and reconnects by itself, so
/// its errors are warnings here: nothing has stopped and nothing was dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "librdkafka reported an error");
    }
}

/// Writes one librdkafka log line at the matching `tracing` level.
pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, line: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => warn!(facility, "{line}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => debug!(facility, "{line}"),
        RDKafkaLogLevel::Debug => trace!(facility, "{line}"),
    }
}

/// The producer every publisher and subscription of one backend shares.
pub(crate) type SharedProducer = FutureProducer<LogContext>;

/// One record to produce.
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    /// `None` writes a tombstone.
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: OwnedHeaders,
}

/// Hands `record` to librdkafka, waiting while its local queue is full.
///
/// # Errors
///
/// [`Throttled`](ErrorKind::Throttled) if the queue stays full for `patience`; the
/// mapped librdkafka error if the record is refused outright.
pub(crate) async fn enqueue(
    producer: &SharedProducer,
    record: Record<'_>,
    patience: Duration,
) -> Result<DeliveryFuture> {
    let started = Instant::now();
    let mut future_record = FutureRecord::<[u8], [u8]>::to(record.topic).headers(record.headers);
    if let Some(payload) = record.payload {
        future_record = future_record.payload(payload);
    }
    if let Some(key) = record.key {
        future_record = future_record.key(key);
    }

    loop {
        match producer.send_result(future_record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if started.elapsed() < patience =>
            {
                future_record = back;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((error, _)) => return Err(from_kafka(error, "enqueueing a record")),
        }
    }
}

/// Waits for the broker's verdict on one enqueued record.
///
/// # Errors
///
/// The mapped delivery error, or [`Closed`](ErrorKind::Closed) if the producer was
/// destroyed first.
pub(crate) async fn confirmed(delivery: DeliveryFuture) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(from_kafka(error, "producing a record")),
        Err(_) => Err(Error::closed("the Kafka producer")),
    }
}

/// Enqueues one record and waits for it to be confirmed.
///
/// # Errors
///
/// As [`enqueue`] and [`confirmed`].
pub(crate) async fn produce(
    producer: &SharedProducer,
    record: Record<'_>,
    patience: Duration,
) -> Result<()> {
    confirmed(enqueue(producer, record, patience).await?).await
}

/// Sends messages to one Kafka topic: the driver behind a `Publisher`.
pub struct KafkaTopic {
    producer: SharedProducer,
    topic: String,
    capabilities: Capabilities,
    patience: Duration,
    closed: AtomicBool,
}

impl KafkaTopic {
    pub(crate) fn new(producer: SharedProducer, topic: &str, patience: Duration) -> Self {
        Self {
            producer,
            topic: topic.to_owned(),
            capabilities: crate::capabilities(),
            patience,
            closed: AtomicBool::new(false),
        }
    }

    /// The rdkafka producer, shared by every publisher and subscription of the backend.
    pub fn native(&self) -> &FutureProducer<LogContext> {
        &self.producer
    }

    async fn enqueue_one(&self, message: &Message) -> Result<DeliveryFuture> {
        check_key_fits(message)?;
        let record = Record {
            topic: &self.topic,
            key: message.ordering_key().map(str::as_bytes),
            payload: Some(message.payload()),
            headers: headers::encode(message.attributes()),
        };
        enqueue(&self.producer, record, self.patience).await
    }
}

/// Kafka counts the key against the record size too; core's check does not know keys.
fn check_key_fits(message: &Message) -> Result<()> {
    let key = message.ordering_key().map_or(0, str::len);
    let size = message.size() + key;
    if size > crate::MAX_MESSAGE_BYTES {
        return Err(Error::payload_too_large(
            crate::BACKEND,
            size,
            crate::MAX_MESSAGE_BYTES,
        ));
    }
    Ok(())
}

#[async_trait]
impl TopicDriver for KafkaTopic {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch
                .iter()
                .map(|_| Err(Error::closed("the publisher")))
                .collect();
        }

        // Enqueue everything first: confirmations then arrive for whole batches.
        let mut pending = Vec::with_capacity(batch.len());
        for message in batch {
            pending.push(self.enqueue_one(message).await);
        }

        let mut results = Vec::with_capacity(batch.len());
        for enqueued in pending {
            results.push(match enqueued {
                Ok(delivery) => confirmed(delivery).await,
                Err(error) => Err(error),
            });
        }
        results
    }

    async fn close(&self) -> Result<()> {
        // The producer is shared with other publishers and subscriptions: closing one
        // publisher flushes it but leaves it running for them.
        self.closed.store(true, Ordering::Release);
        let producer = self.producer.clone();
        let patience = self.patience;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(patience)).await;

        match flushed {
            Ok(result) => result.map_err(|error| from_kafka(error, "flushing the producer")),
            Err(_) => Err(Error::new(ErrorKind::Internal, "the flush task panicked")),
        }
    }
}

impl std::fmt::Debug for KafkaTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTopic")
            .field("topic", &self.topic)
            .finish()
    }
}

/// An owned key, kept with a delivery so a retry or dead letter re-publishes it as is.
pub(crate) type Key = Option<Bytes>;
