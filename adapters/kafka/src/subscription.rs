//! [`KafkaSubscription`]: the subscription driver behind a `Subscriber`.
//!
//! Receiving drains the buffer the poll thread fills. Acks only mark offsets settled;
//! the poll thread commits the lowest unsettled offset of each partition. A nack
//! re-publishes the record to the subscription's retry topic with its next attempt and
//! not-before time, and a dead letter publishes it to the dead-letter topic; either
//! settles the original only once Kafka has confirmed the copy.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::debug;
use wharf_core::{
    AckId, Capabilities, DeadLetter, Error, ErrorKind, RawDelivery, Result, SubscriptionDriver,
};

use crate::config::KafkaConfig;
use crate::error::from_kafka;
use crate::headers::{self, Bookkeeping};
use crate::poller::{self, PollContext, PollSettings};
use crate::producer::{Record, SharedProducer, produce};
use crate::state::{KafkaAck, Pending, Shared};

/// The topics one subscriber reads and writes.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The subscription's name, used in logs and dead-letter envelopes.
    pub(crate) name: String,
    /// The consumer group.
    pub(crate) group: String,
    /// Topics the group reads.
    pub(crate) topics: Vec<String>,
    /// Where nacked records go.
    pub(crate) retry_topic: String,
    /// Where dead letters go; `None` on a dead-letter subscriber itself.
    pub(crate) dead_letter_topic: Option<String>,
}

/// Receives and settles the records of one subscription (one consumer group).
pub struct KafkaSubscription {
    shared: Arc<Shared>,
    producer: SharedProducer,
    layout: Layout,
    capabilities: Capabilities,
    patience: Duration,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl KafkaSubscription {
    /// Joins the group and starts the poll thread.
    pub(crate) fn start(
        config: &KafkaConfig,
        producer: SharedProducer,
        layout: Layout,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let consumer_config = config.consumer(&layout.group);
        let consumer: BaseConsumer<PollContext> = consumer_config
            .create_with_context(PollContext::new(shared.clone()))
            .map_err(|error| from_kafka(error, "creating a consumer"))?;
        let topics: Vec<&str> = layout.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|error| from_kafka(error, "subscribing"))?;

        let settings = PollSettings {
            capacity: config.receive_buffer,
            commit_interval: config.commit_interval,
            retry_topic: layout.retry_topic.clone(),
            topics: layout.topics.clone(),
            idle_timeout: config.idle_timeout,
            config: consumer_config,
        };
        let poller = std::thread::Builder::new()
            .name(format!("wharf-kafka-{}", layout.name))
            .spawn(move || poller::run(consumer, settings))
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "cannot start the poll thread").with_source(e)
            })?;

        debug!(subscription = %layout.name, group = %layout.group, "consumer started");
        Ok(Self {
            shared,
            producer,
            layout,
            capabilities: crate::capabilities(),
            patience: config.operation_timeout,
            poller: Mutex::new(Some(poller)),
        })
    }

    /// Takes up to `max` ready deliveries, or the consumer's fatal error.
    fn take(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let mut state = self.shared.lock();
        if let Some(failure) = state.failure.take() {
            return Err(failure);
        }
        if state.closed {
            return Err(Error::closed("the Kafka subscription"));
        }
        let taken = state.take(max);
        drop(state);
        // Made into deliveries outside the lock, which the poll thread needs meanwhile.
        Ok(taken.into_iter().map(Pending::into_delivery).collect())
    }

    fn check_current(&self, ack: &KafkaAck) -> Result<()> {
        self.shared.lock().check_current(ack)
    }

    /// Publishes a copy of `ack`'s record, then settles the original.
    async fn replace(&self, ack: &KafkaAck, record: Record<'_>) -> Result<()> {
        self.check_current(ack)?;

        produce(&self.producer, record, self.patience).await?;
        self.shared.lock().settle_after_copy(ack)
    }
}

#[async_trait]
impl SubscriptionDriver for KafkaSubscription {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn subscription(&self) -> &str {
        &self.layout.name
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        let deadline = Instant::now() + wait;
        let _receiving = Receiving::start(&self.shared);
        loop {
            // Registered before looking, so a wake-up between the two is not missed.
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let batch = self.take(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        let mut state = self.shared.lock();
        ids.iter()
            .map(|id| id.expect::<KafkaAck>().and_then(|ack| state.settle(ack)))
            .collect()
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        let ack = id.expect::<KafkaAck>()?;
        let now = SystemTime::now();
        let history = Bookkeeping {
            attempt: ack.attempt.saturating_add(1),
            not_before: now + delay,
            failed_first: ack.failed_first.unwrap_or(now),
            published_at: ack.published_at,
            origin: ack.origin(),
        };

        let record = Record {
            topic: &self.layout.retry_topic,
            key: ack.key.as_deref(),
            payload: Some(&ack.payload),
            headers: headers::encode_retry(&ack.attributes, &history),
        };
        self.replace(ack, record).await
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        let ack = id.expect::<KafkaAck>()?;
        let Some(topic) = &self.layout.dead_letter_topic else {
            return Err(Error::unsupported(
                crate::BACKEND,
                "dead-lettering from a dead-letter subscription; ack the record or \
                 publish it again to its topic",
            ));
        };
        let message = letter.to_message();

        let record = Record {
            topic,
            key: ack.key.as_deref(),
            payload: Some(message.payload()),
            headers: headers::encode(message.attributes()),
        };
        self.replace(ack, record).await
    }

    async fn extend_lease(&self, _id: &AckId, _lease: Duration) -> Result<()> {
        Err(Error::unsupported(
            crate::BACKEND,
            "lease extension: a Kafka delivery stays with this consumer for as long as its \
             partition is assigned, however long the handler runs",
        ))
    }

    async fn close(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let poller = self
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(poller) = poller else {
            return Ok(());
        };

        match tokio::task::spawn_blocking(move || poller.join()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Internal,
                "the Kafka poll thread panicked",
            )),
        }
    }
}

/// Marks a `receive` call in progress for as long as it lives, also when the call is
/// cancelled, so the poll thread keeps (or rejoins) the group meanwhile.
struct Receiving<'a>(&'a Shared);

impl<'a> Receiving<'a> {
    fn start(shared: &'a Shared) -> Self {
        shared.lock().receive_started();
        Self(shared)
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.lock().receive_ended();
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The poll thread commits what was settled and leaves the group on its own.
        self.shared.stop.store(true, Ordering::Release);
        if self.poller.get_mut().is_ok_and(|poller| poller.is_some()) {
            debug!(subscription = %self.layout.name, "subscription dropped without close");
        }
    }
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("subscription", &self.layout.name)
            .field("group", &self.layout.group)
            .field("topics", &self.layout.topics)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use wharf_core::{Backend, Message, SubscriptionSpec};

    use super::*;
    use crate::{KafkaBackend, KafkaConfig};

    const PATIENCE: Duration = Duration::from_secs(30);

    async fn receive_until(
        subscription: &KafkaSubscription,
        wanted: &[&str],
    ) -> Vec<(String, AckId)> {
        let deadline = Instant::now() + PATIENCE;
        let mut received = Vec::new();
        let mut missing: BTreeSet<&str> = wanted.iter().copied().collect();
        while !missing.is_empty() {
            assert!(Instant::now() < deadline, "{missing:?} not received");
            for raw in subscription
                .receive_batch(10, Duration::from_secs(1))
                .await
                .unwrap()
            {
                let payload = String::from_utf8_lossy(&raw.payload).into_owned();
                missing.remove(payload.as_str());
                received.push((payload, raw.ack_id));
            }
        }
        received
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_without_brokers_is_replaced_and_the_group_redelivers() {
        let backend = KafkaBackend::connect(KafkaConfig::from_env())
            .await
            .expect("broker up");
        let topic = format!("kafka-replaced-consumer-{}", uuid::Uuid::new_v4().simple());
        let name = format!("{topic}-sub");
        backend.create_topic(&topic).await.unwrap();
        let spec = SubscriptionSpec::new(&topic, &name);
        backend.create_subscription(&spec).await.unwrap();
        let publisher = backend.publisher(&topic).await.unwrap();
        let subscription = backend.subscription(&name).await.unwrap();
        for payload in ["held", "other"] {
            publisher.publish(Message::new(payload)).await.unwrap();
        }
        let first = receive_until(&subscription, &["held", "other"]).await;

        subscription.shared.watch.strand();
        let (_, held) = first.iter().find(|(payload, _)| payload == "held").unwrap();
        let deadline = Instant::now() + PATIENCE;
        let held = held.expect::<KafkaAck>().unwrap();
        let refused = loop {
            match subscription.check_current(held) {
                Err(error) => break error,
                Ok(()) => {
                    assert!(Instant::now() < deadline, "the consumer was not replaced");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        publisher.publish(Message::new("later")).await.unwrap();
        let again = receive_until(&subscription, &["held", "later"]).await;

        assert_eq!(refused.kind(), ErrorKind::LeaseExpired, "{refused}");
        assert!(again.iter().any(|(payload, _)| payload == "held"));
        subscription.close().await.unwrap();
        backend.delete_subscription(&name).await.unwrap();
        backend.delete_topic(&topic).await.unwrap();
    }
}
