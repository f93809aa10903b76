//! The core driver traits over topics and queues: [`MemoryPublisher`] sends batches to a
//! topic, [`MemorySubscription`] receives from and settles on a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use wharf_core::{
    AckId, Capabilities, DeadLetter, Error, Message, RawDelivery, Result, SubscriptionDriver,
    TopicDriver,
};

use crate::queue::{Found, Queue, Receipt, Taken, later};
use crate::topic::Topic;

/// Sends batches to one topic.
pub(crate) struct MemoryPublisher {
    topic: Arc<Topic>,
    capabilities: Capabilities,
    closed: AtomicBool,
}

impl MemoryPublisher {
    pub(crate) fn new(topic: Arc<Topic>, capabilities: Capabilities) -> Self {
        Self {
            topic,
            capabilities,
            closed: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl TopicDriver for MemoryPublisher {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn topic(&self) -> &str {
        self.topic.name()
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        let outcome = match self.closed.load(Ordering::Acquire) {
            true => Err(Error::closed("publisher")),
            false => self.topic.publish(batch),
        };

        match outcome {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(error) => batch.iter().map(|_| Err(copy(&error))).collect(),
        }
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Receives from and settles on one queue: a subscription or a dead-letter queue.
pub(crate) struct MemorySubscription {
    queue: Arc<Queue>,
    capabilities: Capabilities,
    closed: AtomicBool,
}

impl MemorySubscription {
    pub(crate) fn new(queue: Arc<Queue>, capabilities: Capabilities) -> Self {
        Self {
            queue,
            capabilities,
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<()> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(Error::closed("subscriber")),
            false => Ok(()),
        }
    }

    fn receipt<'a>(&self, id: &'a AckId) -> Result<&'a Receipt> {
        self.check_open()?;
        id.expect::<Receipt>()
    }
}

#[async_trait]
impl SubscriptionDriver for MemorySubscription {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn subscription(&self) -> &str {
        self.queue.name()
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        let deadline = later(Instant::now(), wait);
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let changed = self.queue.changed();
            self.check_open()?;

            let next_due = match self.queue.receive(max)? {
                Found::Messages(taken) => return Ok(taken.into_iter().map(raw).collect()),
                Found::Nothing { next_due } => next_due,
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }

            let until = next_due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        self.queue.ack(ids.iter().map(|id| self.receipt(id)))
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        self.queue.nack(self.receipt(&id)?, delay)
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        self.queue.dead_letter(self.receipt(&id)?, &letter)
    }

    async fn extend_lease(&self, id: &AckId, lease: Duration) -> Result<()> {
        self.queue.extend(self.receipt(id)?, lease)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        // Receivers waiting on this subscriber return `Closed` at once.
        self.queue.wake();
        Ok(())
    }
}

fn raw(taken: Taken) -> RawDelivery {
    let message = &taken.message;
    RawDelivery {
        id: message.id.to_string(),
        payload: message.payload.clone(),
        attributes: message.attributes.clone(),
        ordering_key: message.ordering_key.clone(),
        attempt: taken.attempt,
        published_at: message.published_at,
        first_failure: taken.first_failure,
        ack_id: AckId::new(taken.receipt),
    }
}

/// The same failure again, for each message of a batch that failed as a whole.
fn copy(error: &Error) -> Error {
    Error::new(error.kind(), error.message())
}
