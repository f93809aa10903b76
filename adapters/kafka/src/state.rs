//! What the poll thread and the subscription driver share: assigned partitions with their
//! offset trackers, deliveries ready for `receive`, and retried records not yet due.
//!
//! Every assignment of a partition gets a new generation number. A delivery remembers
//! the generation it came from, so once its partition is revoked (and perhaps assigned
//! back), settling it is refused instead of moving the new assignment's offsets.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use wharf_core::{Attributes, Error, ErrorKind, RawDelivery, Result};

use crate::offsets::OffsetTracker;
use crate::producer::Key;

/// A partition of a topic.
pub(crate) type PartitionKey = (Arc<str>, i32);

/// What settling one delivery needs, and what re-publishing it to a retry or dead-letter
/// topic keeps: the original key, payload and attributes.
#[derive(Debug)]
pub(crate) struct KafkaAck {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) generation: u64,
    pub(crate) key: Key,
    pub(crate) payload: Bytes,
    pub(crate) attributes: Attributes,
    pub(crate) attempt: u32,
    pub(crate) published_at: SystemTime,
    pub(crate) failed_first: Option<SystemTime>,
    /// The delivery id, the same on every attempt.
    pub(crate) origin: String,
}

impl KafkaAck {
    fn partition_key(&self) -> PartitionKey {
        (self.topic.clone(), self.partition)
    }
}

/// One assignment of a partition.
#[derive(Debug)]
pub(crate) struct Assigned {
    pub(crate) generation: u64,
    pub(crate) tracker: OffsetTracker,
}

/// A delivery taken from Kafka and not yet handed to `receive`.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) raw: RawDelivery,
    pub(crate) partition: PartitionKey,
    pub(crate) generation: u64,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.raw.payload.len()
    }
}

/// A retried delivery waiting for its not-before time.
#[derive(Debug)]
struct Held {
    due: SystemTime,
    sequence: u64,
    pending: Pending,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed, so that `BinaryHeap` pops the earliest due first; ties keep their
    /// arrival order.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) assigned: HashMap<PartitionKey, Assigned>,
    next_generation: u64,
    ready: VecDeque<Pending>,
    /// Payload bytes of the deliveries in `ready`.
    ready_bytes: usize,
    held: BinaryHeap<Held>,
    held_sequence: u64,
    /// An asynchronous commit failed: send every commit point again.
    pub(crate) commit_failed: bool,
    /// New partitions arrived while paused: pause them too.
    pub(crate) reapply_pause: bool,
    /// An error the consumer cannot recover from, reported by the next `receive`.
    pub(crate) failure: Option<Error>,
    /// The subscription is closed: no more receiving or settling.
    pub(crate) closed: bool,
    /// `receive` calls in progress.
    receiving: usize,
    /// When a `receive` call last started or ended (or the subscriber started).
    last_receive: Option<Instant>,
}

impl State {
    /// Starts tracking newly assigned partitions under a fresh generation.
    pub(crate) fn assign(&mut self, partitions: Vec<PartitionKey>) {
        self.next_generation += 1;
        for partition in partitions {
            let assigned = Assigned {
                generation: self.next_generation,
                tracker: OffsetTracker::default(),
            };
            self.assigned.insert(partition, assigned);
        }
        self.reapply_pause = true;
    }

    /// Stops tracking revoked partitions, drops their deliveries not yet handed out (the
    /// next owner reads them again) and returns the offsets to commit for them.
    pub(crate) fn revoke(&mut self, partitions: &[PartitionKey]) -> Vec<(PartitionKey, i64)> {
        let mut points = Vec::new();
        for partition in partitions {
            if let Some(assigned) = self.assigned.remove(partition)
                && let Some(point) = assigned.tracker.commit_point()
            {
                points.push((partition.clone(), point));
            }
        }

        self.ready
            .retain(|pending| !partitions.contains(&pending.partition));
        self.ready_bytes = self.ready.iter().map(Pending::bytes).sum();
        self.held
            .retain(|held| !partitions.contains(&held.pending.partition));
        points
    }

    /// The current generation of `partition`, recording `offset` as handed out.
    pub(crate) fn delivered(&mut self, partition: &PartitionKey, offset: i64) -> Option<u64> {
        let assigned = self.assigned.get_mut(partition)?;
        assigned.tracker.delivered(offset);
        Some(assigned.generation)
    }

    /// Queues a delivery for `receive`, or holds it until `due`.
    pub(crate) fn accept(&mut self, pending: Pending, due: Option<SystemTime>) {
        match due {
            Some(due) if due > SystemTime::now() => {
                self.held_sequence += 1;
                let sequence = self.held_sequence;
                self.held.push(Held {
                    due,
                    sequence,
                    pending,
                });
            }
            _ => self.push_ready(pending),
        }
    }

    /// Moves held deliveries that are due to the ready queue; true if any moved.
    pub(crate) fn release_due(&mut self, now: SystemTime) -> bool {
        let mut moved = false;
        while self.held.peek().is_some_and(|held| held.due <= now) {
            if let Some(held) = self.held.pop() {
                self.push_ready(held.pending);
                moved = true;
            }
        }
        moved
    }

    /// When the next held delivery is due.
    pub(crate) fn next_due(&self) -> Option<SystemTime> {
        self.held.peek().map(|held| held.due)
    }

    /// Deliveries ready for `receive`.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Payload bytes of the deliveries ready for `receive`.
    pub(crate) fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    fn push_ready(&mut self, pending: Pending) {
        self.ready_bytes += pending.bytes();
        self.ready.push_back(pending);
    }

    /// Retried deliveries waiting to be due.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Up to `max` ready deliveries whose partition is still assigned to this consumer.
    pub(crate) fn take(&mut self, max: usize) -> Vec<RawDelivery> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(pending) = self.ready.pop_front() else {
                break;
            };
            self.ready_bytes = self.ready_bytes.saturating_sub(pending.bytes());
            if self.is_current(&pending.partition, pending.generation) {
                taken.push(pending.raw);
            }
        }
        taken
    }

    fn is_current(&self, partition: &PartitionKey, generation: u64) -> bool {
        self.assigned
            .get(partition)
            .is_some_and(|assigned| assigned.generation == generation)
    }

    /// Fails unless `ack`'s partition is still assigned as it was when delivered.
    pub(crate) fn check_current(&self, ack: &KafkaAck) -> Result<()> {
        if self.closed {
            return Err(Error::closed("the Kafka subscription"));
        }
        if !self.is_current(&ack.partition_key(), ack.generation) {
            return Err(reassigned(&ack.origin));
        }
        Ok(())
    }

    /// Marks `ack` settled, so the commit point may pass it.
    pub(crate) fn settle(&mut self, ack: &KafkaAck) -> Result<()> {
        self.check_current(ack)?;
        if let Some(assigned) = self.assigned.get_mut(&ack.partition_key()) {
            assigned.tracker.settle(ack.offset);
        }
        Ok(())
    }

    /// Marks `ack` settled after a copy of it was re-published. If its partition moved
    /// meanwhile, the copy stands and the next owner also delivers the original: a
    /// duplicate, which at-least-once allows, rather than a loss.
    pub(crate) fn settle_after_copy(&mut self, ack: &KafkaAck) -> Result<()> {
        match self.settle(ack) {
            Err(error) if error.kind() == ErrorKind::LeaseExpired => Ok(()),
            other => other,
        }
    }

    /// Records that a `receive` call starts.
    pub(crate) fn receive_started(&mut self) {
        self.receiving += 1;
        self.last_receive = Some(Instant::now());
    }

    /// Records that a `receive` call ended.
    pub(crate) fn receive_ended(&mut self) {
        self.receiving = self.receiving.saturating_sub(1);
        self.last_receive = Some(Instant::now());
    }

    /// Deliveries handed to `receive` and not settled yet.
    fn outstanding(&self) -> usize {
        let unsettled: usize = self
            .assigned
            .values()
            .map(|assigned| assigned.tracker.unsettled())
            .sum();
        unsettled.saturating_sub(self.ready.len() + self.held.len())
    }

    /// Whether this subscriber should stay in its consumer group: while a `receive` call
    /// runs, a handed-out delivery awaits settlement, or `receive` was called within
    /// `idle`. A member that nobody receives from would otherwise keep its partitions,
    /// and their records, from the group's other members for as long as it lives.
    pub(crate) fn wants_membership(&mut self, idle: Duration, now: Instant) -> bool {
        // Before the first `receive` the subscriber counts as just started.
        let last = *self.last_receive.get_or_insert(now);
        let recent = now.saturating_duration_since(last) < idle;
        self.receiving > 0 || recent || self.outstanding() > 0
    }

    /// Commit points that moved since the last commit, recorded as committed.
    pub(crate) fn pending_commits(&mut self) -> Vec<(PartitionKey, i64)> {
        if std::mem::take(&mut self.commit_failed) {
            for assigned in self.assigned.values_mut() {
                assigned.tracker.forget_commit();
            }
        }

        let mut points = Vec::new();
        for (partition, assigned) in &mut self.assigned {
            if let Some(point) = assigned.tracker.pending_commit() {
                assigned.tracker.committed(point);
                points.push((partition.clone(), point));
            }
        }
        points
    }
}

/// The state shared by the poll thread and the driver.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken when deliveries become ready.
    pub(crate) ready: Notify,
    /// Tells the poll thread to commit, leave the group and end.
    pub(crate) stop: AtomicBool,
}

impl Shared {
    /// Locks the state. A panic while it was held cannot leave it inconsistent in a way
    /// that loses messages (at worst a commit lags), so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn reassigned(delivery: &str) -> Error {
    Error::new(
        ErrorKind::LeaseExpired,
        format!(
            "the partition of delivery {delivery} was reassigned in a consumer group \
             rebalance; its new owner delivers it again from the last committed offset"
        ),
    )
}

#[cfg(test)]
mod tests {
    use wharf_core::AckId;

    use super::*;

    fn partition() -> PartitionKey {
        (Arc::from("orders"), 0)
    }

    fn ack(offset: i64, generation: u64) -> KafkaAck {
        KafkaAck {
            topic: Arc::from("orders"),
            partition: 0,
            offset,
            generation,
            key: None,
            payload: Bytes::new(),
            attributes: Attributes::new(),
            attempt: 1,
            published_at: SystemTime::UNIX_EPOCH,
            failed_first: None,
            origin: format!("orders/0/{offset}"),
        }
    }

    fn pending(offset: i64, generation: u64) -> Pending {
        let raw = RawDelivery {
            id: format!("orders/0/{offset}"),
            payload: Bytes::new(),
            attributes: Attributes::new(),
            ordering_key: None,
            attempt: 1,
            published_at: SystemTime::UNIX_EPOCH,
            first_failure: None,
            ack_id: AckId::new(ack(offset, generation)),
        };
        Pending {
            raw,
            partition: partition(),
            generation,
        }
    }

    #[test]
    fn settling_after_a_revocation_is_refused_as_lease_expired() {
        let mut state = State::default();
        state.assign(vec![partition()]);
        let generation = state.delivered(&partition(), 5).unwrap();

        state.revoke(&[partition()]);
        state.assign(vec![partition()]);

        let error = state.settle(&ack(5, generation)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::LeaseExpired);
    }

    #[test]
    fn revoking_commits_the_lowest_unsettled_offset_and_drops_undelivered_work() {
        let mut state = State::default();
        state.assign(vec![partition()]);
        for offset in 0..3 {
            let generation = state.delivered(&partition(), offset).unwrap();
            state.accept(pending(offset, generation), None);
        }
        let handed_out = state.take(2);
        state.settle(&ack(1, 1)).unwrap();

        let points = state.revoke(&[partition()]);

        assert_eq!(handed_out.len(), 2);
        assert_eq!(points, vec![(partition(), 0)]);
        assert!(state.take(10).is_empty());
    }

    #[test]
    fn held_deliveries_wait_for_their_due_time_in_due_order() {
        let mut state = State::default();
        state.assign(vec![partition()]);
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let sooner = now + Duration::from_secs(30);
        state.accept(pending(0, 1), Some(later));
        state.accept(pending(1, 1), Some(sooner));

        assert!(!state.release_due(now));
        assert_eq!(state.next_due(), Some(sooner));
        assert!(state.release_due(later));

        let ids: Vec<_> = state.take(10).into_iter().map(|raw| raw.id).collect();
        assert_eq!(ids, ["orders/0/1", "orders/0/0"]);
    }

    #[test]
    fn an_idle_subscriber_leaves_unless_a_delivery_awaits_settlement() {
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        let mut state = State::default();
        state.assign(vec![partition()]);
        assert!(state.wants_membership(idle, start));

        let generation = state.delivered(&partition(), 0).unwrap();
        state.accept(pending(0, generation), None);
        let handed_out = state.take(1);
        assert!(state.wants_membership(idle, start + idle * 2));

        state.settle(&ack(0, generation)).unwrap();
        assert_eq!(handed_out.len(), 1);
        assert!(!state.wants_membership(idle, start + idle * 2));
    }

    #[test]
    fn a_receive_in_progress_keeps_the_subscriber_in_its_group() {
        let idle = Duration::from_secs(10);
        let mut state = State::default();
        state.receive_started();
        let later = Instant::now() + idle * 2;

        assert!(state.wants_membership(idle, later));
        state.receive_ended();
        assert!(state.wants_membership(idle, Instant::now()));
        assert!(!state.wants_membership(idle, Instant::now() + idle * 2));
    }

    #[test]
    fn buffered_records_not_handed_out_do_not_keep_the_subscriber() {
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        let mut state = State::default();
        state.assign(vec![partition()]);
        state.wants_membership(idle, start);

        let generation = state.delivered(&partition(), 0).unwrap();
        state.accept(pending(0, generation), None);

        assert!(!state.wants_membership(idle, start + idle * 2));
    }

    #[test]
    fn ready_bytes_follow_what_is_buffered() {
        let mut state = State::default();
        state.assign(vec![partition()]);
        for (offset, size) in [(0, 100), (1, 30)] {
            let generation = state.delivered(&partition(), offset).unwrap();
            let mut buffered = pending(offset, generation);
            buffered.raw.payload = Bytes::from(vec![0; size]);
            state.accept(buffered, None);
        }
        assert_eq!(state.ready_bytes(), 130);

        state.take(1);
        assert_eq!(state.ready_bytes(), 30);
        state.revoke(&[partition()]);
        assert_eq!(state.ready_bytes(), 0);
    }
}
