//! Producing: [`KafkaTopic`] (the topic driver behind a `Publisher`) and the sender it
//! shares with subscriptions, which re-publish to retry and dead-letter topics.
//!
//! The producer is idempotent with `acks=all`, so a record is confirmed only once every
//! in-sync replica has it and librdkafka's own retries never duplicate or reorder it.
//! Records of a batch are all enqueued before any confirmation is awaited, so `linger.ms`
//! packs them into few requests.
//!
//! A producer that has lost every broker (see [`crate::watchdog`]) is replaced: a thread
//! looks at its watch every second, swaps in a new producer built from the same settings,
//! and purges the old one, whose unconfirmed records then fail as `Unavailable` for their
//! callers to publish again. Confirmed records are on the broker already and stay there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use tracing::{debug, trace, warn};
use wharf_core::{Capabilities, Error, ErrorKind, Message, Result, TopicDriver};

use crate::error::from_kafka;
use crate::headers;
use crate::watchdog::{self, BrokerWatch};

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

/// The context of wharf's producer: logs as [`LogContext`] does, and passes librdkafka's
/// statistics to the watch that tells whether the producer still knows a broker.
#[derive(Debug, Clone, Default)]
pub struct WatchContext {
    watch: Arc<BrokerWatch>,
}

impl ClientContext for WatchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "librdkafka reported an error");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.watch.observe(statistics);
    }
}

/// The producer every publisher and subscription of one backend shares; replaced by a
/// new one when it has lost every broker. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedProducer {
    cell: Arc<ProducerCell>,
}

struct ProducerCell {
    config: ClientConfig,
    current: RwLock<Current>,
}

/// The producer in use and the watch its context feeds.
struct Current {
    producer: FutureProducer<WatchContext>,
    watch: Arc<BrokerWatch>,
}

impl Current {
    fn build(config: &ClientConfig) -> KafkaResult<Self> {
        let context = WatchContext::default();
        let watch = context.watch.clone();
        let producer = config.create_with_context(context)?;
        Ok(Self { producer, watch })
    }
}

impl SharedProducer {
    /// Builds the producer and starts the thread that replaces it if it gets stranded.
    pub(crate) fn new(config: ClientConfig) -> Result<Self> {
        let current =
            Current::build(&config).map_err(|error| from_kafka(error, "creating the producer"))?;
        let cell = Arc::new(ProducerCell {
            config,
            current: RwLock::new(current),
        });

        let watched = Arc::downgrade(&cell);
        std::thread::Builder::new()
            .name("wharf-kafka-watchdog".to_owned())
            .spawn(move || watch_producer(&watched))
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "cannot start the producer watchdog").with_source(e)
            })?;
        Ok(Self { cell })
    }

    /// The producer in use now. A replacement does not change a handle taken before it.
    pub(crate) fn current(&self) -> FutureProducer<WatchContext> {
        self.cell.read().producer.clone()
    }

    /// The producer in use, locked against replacement while the guard lives. Enqueueing
    /// under the guard never blocks, and a replacement then cannot slip between choosing
    /// the producer and enqueueing to it: every record lands in the new producer or is
    /// purged with the old one. Never hold it across an `.await`.
    fn in_use(&self) -> RwLockReadGuard<'_, Current> {
        self.cell.read()
    }
}

impl ProducerCell {
    fn read(&self) -> RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the producer if it has known no broker for too long.
    fn replace_if_stranded(&self) {
        let now = Instant::now();
        let watch = self.read().watch.clone();
        if !watch.is_stranded(now) {
            return;
        }

        let fresh = match Current::build(&self.config) {
            Ok(fresh) => fresh,
            Err(error) => {
                warn!(%error, "cannot build a producer to replace one without brokers");
                watch.postpone(now);
                return;
            }
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *current, fresh);
        drop(current);

        warn!("the Kafka producer lost every broker; replaced it, failing what it had not sent");
        // Unconfirmed records of the old producer can never be sent; purging fails them
        // now, with `Unavailable`, instead of after `message.timeout.ms`.
        old.producer
            .purge(PurgeConfig::default().queue().inflight());
    }
}

/// Looks at the producer's watch every [`watchdog::CHECK_INTERVAL`] until the backend and
/// everything holding its producer are gone.
fn watch_producer(cell: &Weak<ProducerCell>) {
    loop {
        std::thread::sleep(watchdog::CHECK_INTERVAL);
        let Some(cell) = cell.upgrade() else {
            return;
        };
        cell.replace_if_stranded();
    }
}

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
        // The guard is dropped at the end of this statement, before any wait below.
        let sent = producer.in_use().producer.send_result(future_record);
        match sent {
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

    /// The rdkafka producer in use now, shared by every publisher and subscription of
    /// the backend. After the producer was replaced (it had lost every broker), a handle
    /// taken before no longer reaches the broker: take a new one.
    pub fn native(&self) -> FutureProducer<WatchContext> {
        self.producer.current()
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
        let producer = self.producer.current();
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

#[cfg(test)]
mod tests {
    use wharf_core::Backend;

    use super::*;
    use crate::{KafkaBackend, KafkaConfig};

    fn record<'a>(topic: &'a str, payload: &'a [u8]) -> Record<'a> {
        Record {
            topic,
            key: None,
            payload: Some(payload),
            headers: OwnedHeaders::new(),
        }
    }

    fn same(a: &FutureProducer<WatchContext>, b: &FutureProducer<WatchContext>) -> bool {
        a.client().native_ptr() == b.client().native_ptr()
    }

    #[tokio::test]
    async fn a_replaced_producer_fails_what_it_held_as_retryable_unavailable() {
        // Nothing listens on port 1, so the record waits in the producer's queue.
        let producer = SharedProducer::new(KafkaConfig::new("127.0.0.1:1").producer()).unwrap();
        let held = enqueue(
            &producer,
            record("nowhere", b"held"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let before = producer.current();

        producer.cell.read().watch.strand();
        producer.cell.replace_if_stranded();

        let error = confirmed(held).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert!(error.is_retryable());
        assert!(!same(&before, &producer.current()));
    }

    #[tokio::test]
    async fn a_producer_its_watch_does_not_flag_is_kept() {
        let producer = SharedProducer::new(KafkaConfig::new("127.0.0.1:1").producer()).unwrap();
        let before = producer.current();

        producer.cell.replace_if_stranded();

        assert!(same(&before, &producer.current()));
    }

    #[tokio::test]
    async fn publishing_goes_on_through_the_replacement() {
        let config = KafkaConfig::from_env();
        let backend = KafkaBackend::connect(config.clone())
            .await
            .expect("broker up");
        let topic = format!("kafka-replaced-producer-{}", uuid::Uuid::new_v4().simple());
        backend.create_topic(&topic).await.unwrap();
        let producer = SharedProducer::new(config.producer()).unwrap();
        let patience = Duration::from_secs(10);
        produce(&producer, record(&topic, b"before"), patience)
            .await
            .unwrap();

        producer.cell.read().watch.strand();
        producer.cell.replace_if_stranded();
        let after = produce(&producer, record(&topic, b"after"), patience).await;

        assert!(after.is_ok(), "{after:?}");
        backend.delete_topic(&topic).await.unwrap();
    }
}
