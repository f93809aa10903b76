//! What the poll thread and the subscription driver share: assigned partitions with their
//! offset trackers, deliveries ready for `receive`, and retried records not yet due.
//!
//! Every assignment of a partition gets a new generation number. A delivery remembers
//! the generation it came from, so once its partition is revoked (and perhaps assigned
//! back), settling it is refused instead of moving the new assignment's offsets.
//!
//! Assigned partitions sit in numbered slots, and a delivery carries its slot along with
//! the generation ([`AssignmentId`]): settling, which happens once per delivery, goes
//! straight to the partition's tracker instead of hashing the topic name. A slot freed by
//! a revocation is reused only by a later assignment, which has a newer generation.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use wharf_core::{AckId, Attributes, Error, ErrorKind, RawDelivery, Result};

use crate::headers::Decoded;
use crate::offsets::OffsetTracker;
use crate::producer::Key;
use crate::watchdog::BrokerWatch;

/// A partition of a topic.
pub(crate) type PartitionKey = (Arc<str>, i32);

/// One assignment of one partition: where it sits in [`State`] and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssignmentId {
    slot: usize,
    generation: u64,
}

/// What settling one delivery needs, and what re-publishing it to a retry or dead-letter
/// topic keeps: the original key, payload and attributes.
#[derive(Debug)]
pub(crate) struct KafkaAck {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) assignment: AssignmentId,
    pub(crate) key: Key,
    pub(crate) payload: Bytes,
    pub(crate) attributes: Attributes,
    pub(crate) attempt: u32,
    pub(crate) published_at: SystemTime,
    pub(crate) failed_first: Option<SystemTime>,
    /// The delivery id of an earlier attempt, carried by a retried record; `None` for a
    /// first delivery, whose id is its own position (see [`record_id`]).
    pub(crate) origin: Option<String>,
}

impl KafkaAck {
    /// The delivery id, the same on every attempt.
    pub(crate) fn origin(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| record_id(&self.topic, self.partition, self.offset))
    }
}

/// The id of a record that carries none from an earlier attempt: `topic/partition/offset`.
/// Built once per record received, so it writes the digits itself rather than go
/// through `format!`.
pub(crate) fn record_id(topic: &str, partition: i32, offset: i64) -> String {
    // Room for the longest partition and offset numbers, so pushing never reallocates.
    let mut id = String::with_capacity(topic.len() + 32);
    id.push_str(topic);
    id.push('/');
    push_decimal(&mut id, i64::from(partition));
    id.push('/');
    push_decimal(&mut id, offset);
    id
}

fn push_decimal(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut left = value.unsigned_abs();
    let mut start = digits.len();
    loop {
        start -= 1;
        // A digit is below ten, so the cast keeps it.
        digits[start] = b'0' + (left % 10) as u8;
        left /= 10;
        if left == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// Where the records of one partition go: its assignment, and the topic name to share.
#[derive(Debug)]
struct Route {
    topic: Arc<str>,
    partition: i32,
    assignment: AssignmentId,
}

/// The poll thread's copy of the assignment, so that routing a polled record to its
/// assignment takes no lock. The assignment changes only on the poll thread (in
/// rebalance callbacks, which run inside poll, and when it replaces its consumer), and
/// every change bumps [`Shared::epoch`], after which the copy is taken again.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    epoch: u64,
    routes: Vec<Route>,
    /// The route found last: consecutive records mostly share a partition.
    last: usize,
}

impl Routes {
    /// The assignment of `topic`/`partition` and its shared topic name, if assigned.
    pub(crate) fn find(
        &mut self,
        shared: &Shared,
        topic: &str,
        partition: i32,
    ) -> Option<(AssignmentId, Arc<str>)> {
        let epoch = shared.epoch.load(Ordering::Acquire);
        if epoch != self.epoch {
            self.routes = shared.lock().routes();
            self.epoch = epoch;
        }

        let is = |route: &Route| route.partition == partition && *route.topic == *topic;
        let index = match self.routes.get(self.last) {
            Some(route) if is(route) => self.last,
            _ => self.routes.iter().position(is)?,
        };
        self.last = index;
        let route = &self.routes[index];
        Some((route.assignment, route.topic.clone()))
    }
}

/// One assignment of a partition.
#[derive(Debug)]
struct Assigned {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    tracker: OffsetTracker,
}

impl Assigned {
    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && *self.topic == *topic
    }
}

/// A record taken from Kafka and not yet handed to `receive`: what the poll thread
/// copied out of librdkafka. The `receive` call that takes it makes the delivery
/// ([`Pending::into_delivery`]), so that its id and settlement data are allocated, and
/// later freed, on the receiving thread, and the poll thread, which every record passes,
/// does no more per record than it must.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) assignment: AssignmentId,
    pub(crate) key: Key,
    pub(crate) payload: Bytes,
    pub(crate) headers: Decoded,
    /// The record's timestamp, the publish time of records without wharf's headers.
    pub(crate) timestamp: Option<SystemTime>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.payload.len()
    }

    /// The delivery `receive` hands out.
    pub(crate) fn into_delivery(self) -> RawDelivery {
        let Self {
            topic,
            partition,
            offset,
            assignment,
            key,
            payload,
            headers,
            timestamp,
        } = self;
        let id = match &headers.origin {
            Some(origin) => origin.clone(),
            None => record_id(&topic, partition, offset),
        };
        let published_at = headers
            .published_at
            .or(timestamp)
            .unwrap_or_else(SystemTime::now);
        let attempt = headers.attempt.unwrap_or(1).max(1);

        let ack = KafkaAck {
            topic,
            partition,
            offset,
            assignment,
            key: key.clone(),
            payload: payload.clone(),
            attributes: headers.attributes.clone(),
            attempt,
            published_at,
            failed_first: headers.failed_first,
            origin: headers.origin,
        };
        RawDelivery {
            id,
            payload,
            attributes: headers.attributes,
            ordering_key: key.map(|key| String::from_utf8_lossy(&key).into_owned()),
            attempt,
            published_at,
            first_failure: headers.failed_first,
            ack_id: AckId::new(ack),
        }
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
    /// Assigned partitions by slot; `None` for a slot free for the next assignment.
    slots: Vec<Option<Assigned>>,
    next_generation: u64,
    /// Deliveries for `receive`, all of currently assigned partitions: a revocation
    /// removes those of the partitions it takes.
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
    fn assign(&mut self, partitions: Vec<PartitionKey>) {
        self.next_generation += 1;
        for (topic, partition) in partitions {
            // Assigned again without a revocation in between: start it over, as the
            // consumer does.
            if self.find(&topic, partition).is_some() {
                self.revoke(&[(topic.clone(), partition)]);
            }
            let assigned = Assigned {
                topic,
                partition,
                generation: self.next_generation,
                tracker: OffsetTracker::default(),
            };
            match self.slots.iter().position(Option::is_none) {
                Some(free) => self.slots[free] = Some(assigned),
                None => self.slots.push(Some(assigned)),
            }
        }
        self.reapply_pause = true;
    }

    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.slots.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|assigned| assigned.is(topic, partition))
        })
    }

    /// Stops tracking revoked partitions, drops their deliveries not yet handed out (the
    /// next owner reads them again) and returns the offsets to commit for them.
    fn revoke(&mut self, partitions: &[PartitionKey]) -> Vec<(PartitionKey, i64)> {
        let mut points = Vec::new();
        let mut gone = Vec::new();
        for (topic, partition) in partitions {
            let Some(slot) = self.find(topic, *partition) else {
                continue;
            };
            let Some(assigned) = self.slots[slot].take() else {
                continue;
            };
            gone.push(AssignmentId {
                slot,
                generation: assigned.generation,
            });
            if let Some(point) = assigned.tracker.commit_point() {
                points.push(((topic.clone(), *partition), point));
            }
        }
        if gone.is_empty() {
            return points;
        }

        self.ready
            .retain(|pending| !gone.contains(&pending.assignment));
        self.ready_bytes = self.ready.iter().map(Pending::bytes).sum();
        self.held
            .retain(|held| !gone.contains(&held.pending.assignment));
        points
    }

    /// Forgets every assignment, as a revocation does, without commit points (for a
    /// consumer replaced because it has no broker to commit to). Returns how many
    /// partitions were forgotten.
    fn forget_assignment(&mut self) -> usize {
        let partitions: Vec<PartitionKey> = self
            .slots
            .iter()
            .flatten()
            .map(|assigned| (assigned.topic.clone(), assigned.partition))
            .collect();
        self.revoke(&partitions);
        partitions.len()
    }

    /// Every assigned partition with its assignment, for the poll thread's [`Routes`].
    fn routes(&self) -> Vec<Route> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, assigned)| {
                let assigned = assigned.as_ref()?;
                Some(Route {
                    topic: assigned.topic.clone(),
                    partition: assigned.partition,
                    assignment: AssignmentId {
                        slot,
                        generation: assigned.generation,
                    },
                })
            })
            .collect()
    }

    /// Queues deliveries taken in one burst, in order, recording their offsets as handed
    /// out; drops those whose partition was revoked since they were taken (its next
    /// owner reads them again from the committed offset, which a revocation computes
    /// without them, so no commit passes them).
    pub(crate) fn accept_all(&mut self, burst: Vec<Pending>) {
        for pending in burst {
            let AssignmentId { slot, generation } = pending.assignment;
            let Some(Some(assigned)) = self.slots.get_mut(slot) else {
                continue;
            };
            if assigned.generation != generation {
                continue;
            }
            assigned.tracker.delivered(pending.offset);
            self.accept(pending);
        }
    }

    /// Queues a record whose offset is tracked already for `receive`, or holds it until
    /// its not-before time if it is a retry.
    fn accept(&mut self, pending: Pending) {
        match pending.headers.not_before {
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

    /// Up to `max` ready deliveries. All are of assigned partitions: a revocation takes
    /// its partitions' deliveries out of the queue.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Pending> {
        let count = max.min(self.ready.len());
        let taken: Vec<Pending> = self.ready.drain(..count).collect();
        let bytes: usize = taken.iter().map(Pending::bytes).sum();
        self.ready_bytes = self.ready_bytes.saturating_sub(bytes);
        taken
    }

    fn is_current(&self, assignment: AssignmentId) -> bool {
        self.assigned(assignment).is_some()
    }

    fn assigned(&self, assignment: AssignmentId) -> Option<&Assigned> {
        let assigned = self.slots.get(assignment.slot)?.as_ref()?;
        (assigned.generation == assignment.generation).then_some(assigned)
    }

    /// Fails unless `ack`'s partition is still assigned as it was when delivered.
    pub(crate) fn check_current(&self, ack: &KafkaAck) -> Result<()> {
        if self.closed {
            return Err(Error::closed("the Kafka subscription"));
        }
        if !self.is_current(ack.assignment) {
            return Err(reassigned(&ack.origin()));
        }
        Ok(())
    }

    /// Marks `ack` settled, so the commit point may pass it.
    pub(crate) fn settle(&mut self, ack: &KafkaAck) -> Result<()> {
        self.check_current(ack)?;
        if let Some(Some(assigned)) = self.slots.get_mut(ack.assignment.slot) {
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
            .slots
            .iter()
            .flatten()
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
        let forget = std::mem::take(&mut self.commit_failed);
        let mut points = Vec::new();
        for assigned in self.slots.iter_mut().flatten() {
            if forget {
                assigned.tracker.forget_commit();
            }
            if let Some(point) = assigned.tracker.pending_commit() {
                assigned.tracker.committed(point);
                let partition = (assigned.topic.clone(), assigned.partition);
                points.push((partition, point));
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
    /// Whether the consumer in use still knows a broker; the poll thread replaces it
    /// when not.
    pub(crate) watch: BrokerWatch,
    /// Bumped by every change of the assignment, for the poll thread's [`Routes`].
    epoch: AtomicU64,
}

impl Shared {
    /// Locks the state. A panic while it was held cannot leave it inconsistent in a way
    /// that loses messages (at worst a commit lags), so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`State::assign`], announced to the poll thread's routes.
    pub(crate) fn assign(&self, partitions: Vec<PartitionKey>) {
        self.lock().assign(partitions);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// [`State::revoke`], announced to the poll thread's routes.
    pub(crate) fn revoke(&self, partitions: &[PartitionKey]) -> Vec<(PartitionKey, i64)> {
        let points = self.lock().revoke(partitions);
        self.epoch.fetch_add(1, Ordering::Release);
        points
    }

    /// [`State::forget_assignment`], announced to the poll thread's routes.
    pub(crate) fn forget_assignment(&self) -> usize {
        let forgotten = self.lock().forget_assignment();
        self.epoch.fetch_add(1, Ordering::Release);
        forgotten
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
    use super::*;

    fn partition() -> PartitionKey {
        (Arc::from("orders"), 0)
    }

    fn ack(offset: i64, assignment: AssignmentId) -> KafkaAck {
        KafkaAck {
            topic: Arc::from("orders"),
            partition: 0,
            offset,
            assignment,
            key: None,
            payload: Bytes::new(),
            attributes: Attributes::new(),
            attempt: 1,
            published_at: SystemTime::UNIX_EPOCH,
            failed_first: None,
            origin: None,
        }
    }

    fn pending(offset: i64, assignment: AssignmentId) -> Pending {
        Pending {
            topic: Arc::from("orders"),
            partition: 0,
            offset,
            assignment,
            key: None,
            payload: Bytes::new(),
            headers: Decoded::default(),
            timestamp: Some(SystemTime::UNIX_EPOCH),
        }
    }

    /// The current assignment of `topic`/0, as the poll thread's routes see it.
    fn current(shared: &Shared, topic: &str) -> AssignmentId {
        let mut routes = Routes::default();
        routes.find(shared, topic, 0).expect("assigned").0
    }

    /// Takes `offset` of the test partition as the poll thread does.
    fn take_in(shared: &Shared, offset: i64, due: Option<SystemTime>) -> AssignmentId {
        let assignment = current(shared, "orders");
        let mut taken = pending(offset, assignment);
        taken.headers.not_before = due;
        shared.lock().accept_all(vec![taken]);
        assignment
    }

    fn assigned() -> Shared {
        let shared = Shared::default();
        shared.assign(vec![partition()]);
        shared
    }

    #[test]
    fn record_ids_name_topic_partition_and_offset() {
        assert_eq!(record_id("orders", 2, 41), "orders/2/41");
        assert_eq!(record_id("t", 0, 0), "t/0/0");
        assert_eq!(record_id("t", -1, i64::MAX), format!("t/-1/{}", i64::MAX));
        assert_eq!(record_id("t", 7, i64::MIN), format!("t/7/{}", i64::MIN));
    }

    #[test]
    fn a_delivery_keeps_what_a_retry_needs_and_an_id_of_its_position() {
        let shared = assigned();
        let mut taken = pending(9, current(&shared, "orders"));
        taken.key = Some(Bytes::from_static(b"customer-7"));
        taken.payload = Bytes::from_static(b"order 42");

        let delivery = taken.into_delivery();

        assert_eq!(delivery.id, "orders/0/9");
        assert_eq!(delivery.ordering_key.as_deref(), Some("customer-7"));
        assert_eq!(delivery.attempt, 1);
        assert_eq!(delivery.published_at, SystemTime::UNIX_EPOCH);
        let ack = delivery.ack_id.expect::<KafkaAck>().unwrap();
        assert_eq!(&ack.payload[..], b"order 42");
        assert_eq!(ack.origin(), "orders/0/9");
    }

    #[test]
    fn settling_after_a_revocation_is_refused_as_lease_expired() {
        let shared = assigned();
        let assignment = take_in(&shared, 5, None);
        shared.lock().take(1);

        shared.revoke(&[partition()]);
        shared.assign(vec![partition()]);

        let error = shared.lock().settle(&ack(5, assignment)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::LeaseExpired);
    }

    #[test]
    fn revoking_commits_the_lowest_unsettled_offset_and_drops_undelivered_work() {
        let shared = assigned();
        let assignment = (0..3).map(|offset| take_in(&shared, offset, None)).last();
        let handed_out = shared.lock().take(2);
        shared.lock().settle(&ack(1, assignment.unwrap())).unwrap();

        let points = shared.revoke(&[partition()]);

        assert_eq!(handed_out.len(), 2);
        assert_eq!(points, vec![(partition(), 0)]);
        assert!(shared.lock().take(10).is_empty());
    }

    #[test]
    fn held_deliveries_wait_for_their_due_time_in_due_order() {
        let shared = assigned();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let sooner = now + Duration::from_secs(30);
        take_in(&shared, 0, Some(later));
        take_in(&shared, 1, Some(sooner));
        let mut state = shared.lock();

        assert!(!state.release_due(now));
        assert_eq!(state.next_due(), Some(sooner));
        assert!(state.release_due(later));

        let taken = state.take(10).into_iter();
        let ids: Vec<_> = taken.map(|pending| pending.into_delivery().id).collect();
        assert_eq!(ids, ["orders/0/1", "orders/0/0"]);
    }

    #[test]
    fn an_idle_subscriber_leaves_unless_a_delivery_awaits_settlement() {
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        let shared = assigned();
        assert!(shared.lock().wants_membership(idle, start));

        let assignment = take_in(&shared, 0, None);
        let handed_out = shared.lock().take(1);
        assert!(shared.lock().wants_membership(idle, start + idle * 2));

        shared.lock().settle(&ack(0, assignment)).unwrap();
        assert_eq!(handed_out.len(), 1);
        assert!(!shared.lock().wants_membership(idle, start + idle * 2));
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
        let shared = assigned();
        shared.lock().wants_membership(idle, start);

        take_in(&shared, 0, None);

        assert!(!shared.lock().wants_membership(idle, start + idle * 2));
    }

    #[test]
    fn ready_bytes_follow_what_is_buffered() {
        let shared = assigned();
        let assignment = current(&shared, "orders");
        let burst = [(0, 100), (1, 30)].map(|(offset, size)| {
            let mut buffered = pending(offset, assignment);
            buffered.payload = Bytes::from(vec![0; size]);
            buffered
        });
        shared.lock().accept_all(burst.into());
        assert_eq!(shared.lock().ready_bytes(), 130);

        shared.lock().take(1);
        assert_eq!(shared.lock().ready_bytes(), 30);
        shared.revoke(&[partition()]);
        assert_eq!(shared.lock().ready_bytes(), 0);
    }

    #[test]
    fn a_burst_drops_what_a_revocation_took_meanwhile() {
        let shared = assigned();
        let before = current(&shared, "orders");
        let burst = vec![pending(0, before)];

        shared.revoke(&[partition()]);
        shared.assign(vec![partition()]);
        shared.lock().accept_all(burst);

        assert!(shared.lock().take(10).is_empty());
        let after = current(&shared, "orders");
        assert_eq!(shared.lock().pending_commits(), vec![]);
        assert_ne!(before, after);
    }

    #[test]
    fn routes_follow_every_change_of_the_assignment() {
        let shared = assigned();
        let mut routes = Routes::default();
        let first = routes.find(&shared, "orders", 0);

        shared.revoke(&[partition()]);
        assert!(routes.find(&shared, "orders", 0).is_none());
        shared.assign(vec![partition()]);
        let second = routes.find(&shared, "orders", 0);

        assert!(first.is_some() && second.is_some());
        assert_ne!(first.map(|(id, _)| id), second.map(|(id, _)| id));
        assert!(routes.find(&shared, "invoices", 0).is_none());
    }

    #[test]
    fn a_freed_slot_reused_by_another_partition_refuses_old_settlements() {
        let shared = assigned();
        let old = take_in(&shared, 7, None);
        shared.lock().take(1);

        shared.revoke(&[partition()]);
        shared.assign(vec![(Arc::from("invoices"), 0)]);
        let reused = current(&shared, "invoices");

        assert_eq!(reused.slot, old.slot);
        let error = shared.lock().settle(&ack(7, old)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::LeaseExpired);
    }

    #[test]
    fn forgetting_the_assignment_drops_everything_and_commits_nothing() {
        let shared = assigned();
        shared.assign(vec![(Arc::from("orders"), 1)]);
        take_in(&shared, 0, None);

        assert_eq!(shared.forget_assignment(), 2);

        assert!(shared.lock().take(10).is_empty());
        assert!(shared.lock().pending_commits().is_empty());
        assert!(Routes::default().find(&shared, "orders", 0).is_none());
    }
}
