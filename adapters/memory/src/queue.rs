//! One queue: a subscription's copy of its topic's messages, or a dead-letter queue, and
//! the rules that move each message between ready, delayed, leased and blocked.
//!
//! Everything a queue holds sits behind one mutex, taken once per operation or batch and
//! never held across an `.await`. There is no task per message: the times at which
//! something must happen (a delay ends, a lease runs out) wait in a min-heap and are
//! applied by whichever operation next takes the lock. A receiver that finds nothing
//! sleeps until the earliest of those times, or until a change wakes it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use slab::Slab;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::{debug, trace, warn};
use wharf_core::{Attributes, DeadLetter, Error, ErrorKind, Message, Result};

use crate::counts::StateCounts;

/// A published message, shared by every subscription that holds a copy of it.
pub(crate) struct Stored {
    /// Unique within the backend; the delivery id is its decimal text.
    pub(crate) id: u64,
    pub(crate) payload: Bytes,
    pub(crate) attributes: Attributes,
    pub(crate) ordering_key: Option<String>,
    pub(crate) published_at: SystemTime,
}

impl Stored {
    fn to_message(&self) -> Message {
        let message = Message::new(self.payload.clone()).with_attributes(self.attributes.clone());
        match &self.ordering_key {
            Some(key) => message.with_ordering_key(key.clone()),
            None => message,
        }
    }
}

/// How a queue treats its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueConfig {
    /// How long a delivery stays hidden before it is redelivered.
    pub(crate) lease: Duration,
    /// Deliveries after which the queue moves a message to its dead-letter queue.
    pub(crate) max_deliveries: Option<u32>,
    /// Whether messages sharing an ordering key are delivered one at a time, in order.
    pub(crate) ordered: bool,
}

/// What settles one delivery. It goes stale once the message is delivered again or
/// settled, because each delivery gets a fresh lease number.
pub(crate) struct Receipt {
    queue: u64,
    slot: usize,
    lease: u64,
    message: Arc<Stored>,
}

/// One message handed to a consumer.
pub(crate) struct Taken {
    pub(crate) message: Arc<Stored>,
    pub(crate) attempt: u32,
    pub(crate) first_failure: Option<SystemTime>,
    pub(crate) receipt: Receipt,
}

/// A message looked at by [`Queue::peek`].
pub(crate) struct Peeked {
    pub(crate) message: Arc<Stored>,
    pub(crate) deliveries: u32,
    pub(crate) first_failure: Option<SystemTime>,
}

/// What a receive found.
pub(crate) enum Found {
    /// At least one message, now leased to the caller.
    Messages(Vec<Taken>),
    /// Nothing yet; something may become visible at `next_due`.
    Nothing { next_due: Option<Instant> },
}

/// A subscription's queue or a dead-letter queue.
pub(crate) struct Queue {
    id: u64,
    name: String,
    config: QueueConfig,
    dead_letter: Option<Arc<Queue>>,
    state: Mutex<State>,
    changed: Notify,
    deleted: AtomicBool,
}

impl Queue {
    /// An empty queue; `dead_letter` receives what fails here.
    pub(crate) fn new(
        id: u64,
        name: String,
        config: QueueConfig,
        dead_letter: Option<Arc<Queue>>,
    ) -> Self {
        Self {
            id,
            name,
            config,
            dead_letter,
            state: Mutex::default(),
            changed: Notify::new(),
            deleted: AtomicBool::new(false),
        }
    }

    /// The queue's name, for logs, errors and dead-letter envelopes.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The dead-letter queue, if this queue has one.
    pub(crate) fn dead_letter_queue(&self) -> Option<&Arc<Queue>> {
        self.dead_letter.as_ref()
    }

    /// Completes at the next change that might let a waiting receiver find something.
    ///
    /// Take it before looking: a change made between looking and awaiting still wakes it.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Wakes every waiting receiver, so it looks again.
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// Marks the queue deleted; waiting and later operations fail with `NotFound`.
    pub(crate) fn delete(&self) {
        self.deleted.store(true, Ordering::Release);
        self.wake();
    }

    /// Adds published messages, each visible from its instant on.
    pub(crate) fn push(&self, batch: &[(Arc<Stored>, Instant)]) {
        let now = Instant::now();

        let mut state = self.lock();
        for (message, visible_at) in batch {
            state.insert(message.clone(), *visible_at, now, self.config.ordered);
        }
        self.unlock(state);
    }

    /// Leases up to `max` visible messages to the caller.
    ///
    /// # Errors
    ///
    /// `NotFound` if the queue was deleted.
    pub(crate) fn receive(&self, max: usize) -> Result<Found> {
        self.check_live()?;
        let now = Instant::now();
        let limit = self.dead_letter.as_ref().and(self.config.max_deliveries);

        let mut state = self.lock();
        state.promote_due(now, &self.name);
        let (taken, exhausted) = state.take(max, now, &self.config, limit, self.id);
        let next_due = taken.is_empty().then(|| state.next_due()).flatten();
        self.unlock(state);

        self.dead_letter_exhausted(exhausted, limit.unwrap_or_default());
        Ok(match taken.is_empty() {
            true => Found::Nothing { next_due },
            false => Found::Messages(taken),
        })
    }

    /// Removes delivered messages for good, one result per receipt; receipts that
    /// could not be read fail as they are.
    pub(crate) fn ack<'a>(
        &self,
        receipts: impl Iterator<Item = Result<&'a Receipt>>,
    ) -> Vec<Result<()>> {
        if let Err(error) = self.check_live() {
            return receipts.map(|_| Err(clone_error(&error))).collect();
        }
        let now = Instant::now();

        let mut state = self.lock();
        let results = receipts
            .map(|receipt| {
                let receipt = receipt?;
                self.own(receipt)?;
                state.remove_leased(receipt, now, &self.name).map(drop)
            })
            .collect();
        self.unlock(state);
        results
    }

    /// Returns a delivered message for redelivery after `delay`.
    ///
    /// # Errors
    ///
    /// `LeaseExpired` if the receipt is stale, `NotFound` if the queue was deleted.
    pub(crate) fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.check_live()?;
        self.own(receipt)?;
        let now = Instant::now();

        let mut state = self.lock();
        let outcome = state.release(receipt, now, delay, &self.name);
        self.unlock(state);
        outcome
    }

    /// Keeps a delivered message hidden for `lease` from now.
    ///
    /// # Errors
    ///
    /// `LeaseExpired` if the receipt is stale, `NotFound` if the queue was deleted.
    pub(crate) fn extend(&self, receipt: &Receipt, lease: Duration) -> Result<()> {
        self.check_live()?;
        self.own(receipt)?;
        let now = Instant::now();

        let mut state = self.lock();
        let outcome = state.extend(receipt, now, lease, &self.name);
        self.unlock(state);
        outcome
    }

    /// Moves a delivered message to the dead-letter queue with `letter`'s envelope.
    ///
    /// # Errors
    ///
    /// `Unsupported` on a queue without a dead-letter queue (a dead-letter queue itself),
    /// `LeaseExpired` if the receipt is stale, `NotFound` if the queue was deleted.
    pub(crate) fn dead_letter(&self, receipt: &Receipt, letter: &DeadLetter) -> Result<()> {
        self.check_live()?;
        self.own(receipt)?;
        let Some(target) = &self.dead_letter else {
            return Err(Error::unsupported(
                crate::options::BACKEND,
                "dead-lettering from a dead-letter queue; ack or nack its deliveries",
            ));
        };
        let now = Instant::now();

        let mut state = self.lock();
        let removed = state.remove_leased(receipt, now, &self.name);
        self.unlock(state);

        let entry = removed?;
        target.push(&[(envelope(&entry, letter.to_message()), now)]);
        Ok(())
    }

    /// Counts the queue's messages by phase; `dead_lettered` is left at zero.
    pub(crate) fn stats(&self) -> StateCounts {
        let now = Instant::now();

        let mut state = self.lock();
        state.promote_due(now, &self.name);
        let stats = state.stats();
        self.unlock(state);
        stats
    }

    /// How many messages the queue holds in any phase.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Up to `max` of the queue's messages in any phase, oldest first, with how many
    /// times each was delivered; nothing about them changes.
    pub(crate) fn peek(&self, max: usize) -> Vec<Peeked> {
        let state = self.lock();
        let mut found: Vec<Peeked> = state
            .entries
            .iter()
            .map(|(_, entry)| Peeked {
                message: entry.message.clone(),
                deliveries: entry.deliveries,
                first_failure: entry.first_failure,
            })
            .collect();
        drop(state);

        found.sort_by_key(|peeked| peeked.message.id);
        found.truncate(max);
        found
    }

    /// Removes every message, returning how many there were. Receipts of messages in
    /// flight go stale.
    pub(crate) fn purge(&self) -> usize {
        let mut state = self.lock();
        let removed = state.entries.len();
        *state = State {
            next_lease: state.next_lease,
            wake: true,
            ..State::default()
        };
        self.unlock(state);
        removed
    }

    fn dead_letter_exhausted(&self, exhausted: Vec<Entry>, limit: u32) {
        let Some(target) = &self.dead_letter else {
            return;
        };
        if exhausted.is_empty() {
            return;
        }

        let now = Instant::now();
        let batch: Vec<_> = exhausted
            .iter()
            .map(|entry| {
                warn!(source = %self.name, delivery = %entry.message.id, attempt = entry.deliveries,
                    limit, "delivery limit reached; moving the message to the dead-letter queue");
                let letter = DeadLetter {
                    message: entry.message.to_message(),
                    reason: format!("delivery limit of {limit} reached"),
                    attempts: entry.deliveries,
                    source: self.name.clone(),
                    first_failure: entry.first_failure,
                    last_failure: SystemTime::now(),
                };
                (envelope(entry, letter.to_message()), now)
            })
            .collect();
        target.push(&batch);
    }

    fn check_live(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "queue `{}` was deleted; create the subscription again with \
                     create_subscription",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn own(&self, receipt: &Receipt) -> Result<()> {
        if receipt.queue != self.id {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "delivery settled through `{}`, which did not deliver it",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, so a poisoned state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the lock, then wakes receivers if the operation made anything visible
    /// or moved the earliest due time forward.
    fn unlock(&self, mut state: MutexGuard<'_, State>) {
        let wake = std::mem::take(&mut state.wake);
        drop(state);

        if wake {
            self.wake();
        }
    }
}

/// The dead-letter copy of `entry`: same id and publish time, `message`'s contents.
fn envelope(entry: &Entry, message: Message) -> Arc<Stored> {
    Arc::new(Stored {
        id: entry.message.id,
        payload: message.payload().clone(),
        attributes: message.attributes().clone(),
        ordering_key: message.ordering_key().map(str::to_owned),
        published_at: entry.message.published_at,
    })
}

fn expired(receipt: &Receipt) -> Error {
    Error::lease_expired(&receipt.message.id.to_string())
}

fn clone_error(error: &Error) -> Error {
    Error::new(error.kind(), error.message())
}

/// `now + duration`, or a time too far away to matter if that overflows.
pub(crate) fn later(now: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

    now.checked_add(duration)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the ready line, to be handed to the next receiver.
    Ready,
    /// Waiting behind an earlier message with its ordering key; becomes visible at
    /// `visible_at` at the earliest.
    Blocked { visible_at: Instant },
    /// Hidden until `until` (delayed publish or nack with delay).
    Delayed { until: Instant },
    /// Handed to a consumer until `until`, under lease number `lease`.
    Leased { until: Instant, lease: u64 },
}

struct Entry {
    message: Arc<Stored>,
    deliveries: u32,
    first_failure: Option<SystemTime>,
    phase: Phase,
}

/// Everything behind a queue's lock.
#[derive(Default)]
struct State {
    /// Every message not yet acked or dead-lettered. Slots are reused, so receipts are
    /// checked by lease number, which is never reused.
    entries: Slab<Entry>,
    /// Slots of `Ready` messages, oldest first.
    ready: VecDeque<usize>,
    /// When `Delayed` and `Leased` messages are due, earliest first. A timer is live only
    /// while its slot's message waits for exactly that time; dead ones are skipped when
    /// they surface and swept out when they pile up.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Ordered queues only: slots of unsettled messages per ordering key, the one that
    /// may be delivered first in front.
    keys: HashMap<String, VecDeque<usize>>,
    /// Numbers every delivery, so a receipt from an earlier one is recognised as stale.
    next_lease: u64,
    /// Set when receivers should look again.
    wake: bool,
}

impl State {
    fn insert(&mut self, message: Arc<Stored>, visible_at: Instant, now: Instant, ordered: bool) {
        let key = message.ordering_key.as_ref().filter(|_| ordered).cloned();
        let entry = Entry {
            message,
            deliveries: 0,
            first_failure: None,
            phase: Phase::Blocked { visible_at },
        };
        let slot = self.entries.insert(entry);

        let blocked = key.is_some_and(|key| {
            let line = self.keys.entry(key).or_default();
            line.push_back(slot);
            line.len() > 1
        });

        if !blocked {
            self.activate(slot, visible_at, now);
        }
    }

    /// Makes a message ready, or delayed if `visible_at` is still ahead.
    fn activate(&mut self, slot: usize, visible_at: Instant, now: Instant) {
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };

        if visible_at > now {
            entry.phase = Phase::Delayed { until: visible_at };
            self.schedule(visible_at, slot);
        } else {
            entry.phase = Phase::Ready;
            self.ready.push_back(slot);
            self.wake = true;
        }
    }

    fn schedule(&mut self, at: Instant, slot: usize) {
        let earliest = self.timers.peek().is_none_or(|Reverse((top, _))| at < *top);
        self.timers.push(Reverse((at, slot)));
        if earliest {
            self.wake = true;
        }

        // Each message has at most one live timer; sweep when the dead ones dominate.
        if self.timers.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.timers
                .retain(|Reverse((at, slot))| is_due_at(entries, *slot, *at));
        }
    }

    /// Applies every timer that is due: delays end, expired leases return messages.
    fn promote_due(&mut self, now: Instant, queue: &str) {
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.entries.get_mut(slot) else {
                continue;
            };

            match entry.phase {
                Phase::Delayed { until } if until == at => {}
                Phase::Leased { until, .. } if until == at => {
                    entry.first_failure.get_or_insert_with(SystemTime::now);
                    debug!(source = queue, delivery = %entry.message.id,
                        attempt = entry.deliveries, "lease expired; message visible again");
                }
                _ => continue,
            }
            entry.phase = Phase::Ready;
            self.ready.push_back(slot);
            self.wake = true;
        }
    }

    /// The earliest live timer, dropping dead ones from the top on the way.
    fn next_due(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if is_due_at(&self.entries, slot, at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Leases up to `max` ready messages. Messages already delivered `limit` times are
    /// removed instead and returned second, for the dead-letter queue.
    fn take(
        &mut self,
        max: usize,
        now: Instant,
        config: &QueueConfig,
        limit: Option<u32>,
        queue: u64,
    ) -> (Vec<Taken>, Vec<Entry>) {
        let mut taken = Vec::with_capacity(max.min(self.ready.len()));
        let mut exhausted = Vec::new();
        let until = later(now, config.lease);

        while taken.len() < max {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(slot) else {
                continue;
            };
            if limit.is_some_and(|limit| entry.deliveries >= limit) {
                exhausted.extend(self.finish(slot, now));
                continue;
            }

            let lease = self.next_lease;
            self.next_lease += 1;
            entry.deliveries += 1;
            entry.phase = Phase::Leased { until, lease };
            taken.push(Taken {
                message: entry.message.clone(),
                attempt: entry.deliveries,
                first_failure: entry.first_failure,
                receipt: Receipt {
                    queue,
                    slot,
                    lease,
                    message: entry.message.clone(),
                },
            });
            self.schedule(until, slot);
        }
        (taken, exhausted)
    }

    /// The entry `receipt` settles, if its lease is still the current one and running.
    fn leased(&mut self, receipt: &Receipt, now: Instant, queue: &str) -> Result<&mut Entry> {
        // Expire first, so a lease that ran out a moment ago counts as expired even if
        // no receiver has looked since.
        self.promote_due(now, queue);

        match self.entries.get_mut(receipt.slot) {
            Some(entry) if entry.phase_is_lease(receipt.lease) => Ok(entry),
            _ => {
                trace!(source = queue, delivery = %receipt.message.id, "stale receipt");
                Err(expired(receipt))
            }
        }
    }

    /// Removes the message `receipt` settles, if its lease is still current.
    fn remove_leased(&mut self, receipt: &Receipt, now: Instant, queue: &str) -> Result<Entry> {
        self.leased(receipt, now, queue)?;

        self.finish(receipt.slot, now)
            .ok_or_else(|| expired(receipt))
    }

    fn release(&mut self, receipt: &Receipt, now: Instant, delay: Duration, q: &str) -> Result<()> {
        let entry = self.leased(receipt, now, q)?;
        entry.first_failure.get_or_insert_with(SystemTime::now);

        self.activate(receipt.slot, later(now, delay), now);
        Ok(())
    }

    fn extend(&mut self, receipt: &Receipt, now: Instant, lease: Duration, q: &str) -> Result<()> {
        let entry = self.leased(receipt, now, q)?;
        let until = later(now, lease);
        entry.phase = Phase::Leased {
            until,
            lease: receipt.lease,
        };

        debug!(source = q, delivery = %receipt.message.id, lease_ms = lease.as_millis() as u64,
            "lease extended");
        self.schedule(until, receipt.slot);
        Ok(())
    }

    /// Removes a message for good and lets the next one with its ordering key move up.
    fn finish(&mut self, slot: usize, now: Instant) -> Option<Entry> {
        let entry = self.entries.try_remove(slot)?;

        let Some(key) = &entry.message.ordering_key else {
            return Some(entry);
        };
        let Some(line) = self.keys.get_mut(key) else {
            return Some(entry);
        };
        if line.front() == Some(&slot) {
            line.pop_front();
        } else {
            line.retain(|queued| *queued != slot);
        }
        match line.front().copied() {
            Some(next) => self.unblock(next, now),
            None => {
                self.keys.remove(key);
            }
        }
        Some(entry)
    }

    fn unblock(&mut self, slot: usize, now: Instant) {
        let Some(entry) = self.entries.get(slot) else {
            return;
        };
        if let Phase::Blocked { visible_at } = entry.phase {
            self.activate(slot, visible_at, now);
        }
    }

    fn stats(&self) -> StateCounts {
        let mut stats = StateCounts::default();
        let mut oldest: Option<SystemTime> = None;

        for (_, entry) in &self.entries {
            match entry.phase {
                Phase::Ready => stats.ready += 1,
                Phase::Blocked { .. } => stats.blocked += 1,
                Phase::Delayed { .. } => stats.delayed += 1,
                Phase::Leased { .. } => stats.in_flight += 1,
            }
            let published = entry.message.published_at;
            oldest = Some(oldest.map_or(published, |o| o.min(published)));
        }

        stats.oldest_age = oldest.map(|t| t.elapsed().unwrap_or_default());
        stats
    }
}

impl Entry {
    fn phase_is_lease(&self, receipt: u64) -> bool {
        matches!(self.phase, Phase::Leased { lease, .. } if lease == receipt)
    }
}

/// Whether the timer `(at, slot)` is still the one its message waits for.
fn is_due_at(entries: &Slab<Entry>, slot: usize, at: Instant) -> bool {
    entries.get(slot).is_some_and(|entry| match entry.phase {
        Phase::Delayed { until } | Phase::Leased { until, .. } => until == at,
        Phase::Ready | Phase::Blocked { .. } => false,
    })
}
