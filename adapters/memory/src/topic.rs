//! A topic: takes published batches, drops deduplicated repeats and copies the rest to
//! every subscription attached to it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, trace};
use wharf_core::{Error, ErrorKind, Message, Result};

use crate::queue::{Queue, Stored, later};

/// One topic and the subscriptions it feeds.
pub(crate) struct Topic {
    name: String,
    subscriptions: RwLock<Vec<Arc<Queue>>>,
    recent: Mutex<RecentIds>,
    message_ids: Arc<AtomicU64>,
    deleted: AtomicBool,
}

impl Topic {
    /// A topic without subscriptions. `message_ids` numbers messages backend-wide.
    pub(crate) fn new(name: String, window: Duration, message_ids: Arc<AtomicU64>) -> Self {
        Self {
            name,
            subscriptions: RwLock::default(),
            recent: Mutex::new(RecentIds::new(window)),
            message_ids,
            deleted: AtomicBool::new(false),
        }
    }

    /// The topic's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Starts copying messages published from now on to `queue`.
    pub(crate) fn attach(&self, queue: Arc<Queue>) {
        self.write_subscriptions().push(queue);
    }

    /// Stops copying messages to `queue`.
    pub(crate) fn detach(&self, queue: &Arc<Queue>) {
        self.write_subscriptions()
            .retain(|attached| !Arc::ptr_eq(attached, queue));
    }

    /// Marks the topic deleted; later publishes fail with `NotFound`.
    pub(crate) fn delete(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Stores one copy of each message in every attached subscription.
    ///
    /// A topic without subscriptions keeps nothing, as on Pub/Sub: the messages are
    /// accepted and gone.
    ///
    /// # Errors
    ///
    /// `NotFound` if the topic was deleted.
    pub(crate) fn publish(&self, batch: &[Message]) -> Result<()> {
        self.check_live()?;
        let now = Instant::now();

        let accepted = self.accept(batch, now);
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();

        if subscriptions.is_empty() {
            debug!(destination = %self.name, batch_size = accepted.len(),
                "topic has no subscriptions; the messages are kept nowhere");
        }
        for queue in &subscriptions {
            queue.push(&accepted);
        }
        Ok(())
    }

    /// Numbers the messages and drops repeats of a recent deduplication id.
    fn accept(&self, batch: &[Message], now: Instant) -> Vec<(Arc<Stored>, Instant)> {
        let published_at = SystemTime::now();
        let mut recent = batch
            .iter()
            .any(|m| m.deduplication_id().is_some())
            .then(|| self.recent.lock().unwrap_or_else(PoisonError::into_inner));

        let mut accepted = Vec::with_capacity(batch.len());
        for message in batch {
            if let (Some(id), Some(recent)) = (message.deduplication_id(), recent.as_mut())
                && !recent.first_sighting(id, now)
            {
                trace!(destination = %self.name, deduplication_id = id,
                    "repeated deduplication id; message accepted but not stored again");
                continue;
            }
            let stored = self.store(message, published_at);
            trace!(destination = %self.name, delivery = %stored.id, "message stored");
            accepted.push((stored, later(now, message.delay().unwrap_or_default())));
        }
        accepted
    }

    fn store(&self, message: &Message, published_at: SystemTime) -> Arc<Stored> {
        Arc::new(Stored {
            id: self.message_ids.fetch_add(1, Ordering::Relaxed),
            payload: message.payload().clone(),
            attributes: message.attributes().clone(),
            ordering_key: message.ordering_key().map(str::to_owned),
            published_at,
        })
    }

    fn check_live(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "topic `{}` was deleted; create it again with create_topic",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn write_subscriptions(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Queue>>> {
        self.subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Deduplication ids seen within the window, with when each was first seen.
struct RecentIds {
    window: Duration,
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl RecentIds {
    fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `id` is new within the window; remembers it if so.
    fn first_sighting(&mut self, id: &str, now: Instant) -> bool {
        self.forget_expired(now);
        if self.seen.contains_key(id) {
            return false;
        }

        self.seen.insert(id.to_owned(), now);
        self.order.push_back((now, id.to_owned()));
        true
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some((seen_at, _)) = self.order.front() {
            if later(*seen_at, self.window) > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_repeat_within_the_window_and_new_after_it() {
        let mut recent = RecentIds::new(Duration::from_secs(300));
        let start = Instant::now();

        let first = recent.first_sighting("order-1", start);
        let repeat = recent.first_sighting("order-1", start + Duration::from_secs(299));
        let after = recent.first_sighting("order-1", start + Duration::from_secs(300));

        assert!(first);
        assert!(!repeat);
        assert!(after);
    }
}
