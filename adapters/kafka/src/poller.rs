//! The poll thread: one per subscriber, polling its consumer whatever handlers do.
//!
//! librdkafka removes a member from its group when the application stops calling poll
//! for `max.poll.interval.ms` (5 minutes by default). Handlers never run on this thread,
//! so a slow handler cannot cause that: the thread keeps polling, and when `receive`
//! falls behind it pauses the partitions instead of stopping. It also commits settled
//! offsets, and runs the rebalance callbacks, which librdkafka calls from inside poll.
//!
//! Every record passes this one thread, so it does as little per record as it can: it
//! finds the record's assignment in its own copy of the assignment ([`Routes`]), copies
//! what `receive` needs out of librdkafka (the small payloads of a handoff into one
//! allocation) and queues up to [`HANDOFF`] records under one lock. The `receive` call
//! that takes them makes the deliveries, on its own thread.
//!
//! A consumer that has lost every broker (see [`crate::watchdog`]) is replaced by a new
//! one with the same settings. Its partitions are forgotten as on a revocation, without
//! a commit (there is no broker to take one): the group hands them out again from their
//! committed offsets, which never passed an unsettled record, so nothing is skipped and
//! what was settled since the last commit is delivered again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::{debug, error, trace, warn};
use wharf_core::ErrorKind;

use crate::error::from_kafka;
use crate::headers;
use crate::producer::log_librdkafka;
use crate::state::{AssignmentId, PartitionKey, Pending, Routes, Shared, State};

/// Longest single wait in poll, so stop requests and due retries are noticed quickly.
const POLL_TICK: Duration = Duration::from_millis(100);

/// Records taken in one round of the poll loop, between its other duties.
const BURST: usize = 500;

/// Records handed to receivers at once: early enough that a receiver works on the first
/// ones while this thread copies the rest, rarely enough that the lock and the wake-up
/// cost little per record.
const HANDOFF: usize = 100;

/// Largest payload that shares its allocation with the others of its handoff (see
/// [`Payloads`]); at most [`HANDOFF`] of them do, so a delivery kept long after the
/// others of its handoff keeps at most that much memory alive.
const SHARED_PAYLOAD_LIMIT: usize = 1024;

/// Retried records held in memory before the retry partitions are paused.
const HELD_LIMIT: usize = 10_000;

/// The consumer context: logs, commits on revocation, tracks assignments, and watches
/// whether the consumer still knows a broker.
pub(crate) struct PollContext {
    pub(crate) shared: Arc<Shared>,
    /// The consumer was replaced: its callbacks must no longer touch the shared state,
    /// which belongs to its successor now.
    retired: AtomicBool,
}

impl PollContext {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            retired: AtomicBool::new(false),
        }
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

impl ClientContext for PollContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "librdkafka reported an error");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if !self.is_retired() {
            self.shared.watch.observe(statistics);
        }
    }
}

impl ConsumerContext for PollContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        if self.is_retired() {
            return;
        }
        let partitions = partitions_of(list);
        let points = self.shared.revoke(&partitions);
        debug!(partitions = partitions.len(), "partitions revoked");

        // Lost partitions (the session expired) already belong to someone else, and the
        // broker refuses commits from a member it has dropped.
        if consumer.assignment_lost() {
            warn!("partitions were lost to a session timeout; their new owner redelivers");
            return;
        }
        commit(consumer, &points, CommitMode::Sync);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.is_retired() {
            return;
        }
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                debug!(partitions = partitions.len(), "partitions assigned");
                self.shared.assign(partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => warn!(%error, "consumer group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if self.is_retired() {
            return;
        }
        if let Err(error) = result {
            warn!(%error, "committing offsets failed; retrying at the next commit");
            self.shared.lock().commit_failed = true;
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<PartitionKey> {
    list.elements()
        .iter()
        .map(|element| (Arc::from(element.topic()), element.partition()))
        .collect()
}

/// Commits `points`, logging failures: the next round or the next owner picks up.
fn commit(consumer: &BaseConsumer<PollContext>, points: &[(PartitionKey, i64)], mode: CommitMode) {
    if points.is_empty() {
        return;
    }

    let mut list = TopicPartitionList::with_capacity(points.len());
    for ((topic, partition), offset) in points {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            warn!(%error, %topic, partition, "cannot describe an offset to commit");
        }
    }

    match consumer.commit(&list, mode) {
        Ok(()) => trace!(partitions = points.len(), "offsets committed"),
        Err(error) => {
            warn!(%error, "committing offsets failed; retrying at the next commit");
            consumer.context().shared.lock().commit_failed = true;
        }
    }
}

/// What the poll loop needs besides the consumer.
pub(crate) struct PollSettings {
    pub(crate) capacity: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) retry_topic: String,
    /// The topics the group reads.
    pub(crate) topics: Vec<String>,
    /// How long without `receive` before the subscriber leaves its group.
    pub(crate) idle_timeout: Duration,
    /// The consumer's settings, to build a replacement from.
    pub(crate) config: ClientConfig,
}

/// Which partitions the loop has paused.
#[derive(Debug, Default)]
struct Flow {
    all: bool,
    retry: bool,
}

/// Polls until told to stop, then commits what was settled and leaves the group.
pub(crate) fn run(mut consumer: BaseConsumer<PollContext>, settings: PollSettings) {
    let shared = consumer.context().shared.clone();
    let mut flow = Flow::default();
    let mut last_commit = Instant::now();
    let mut member = true;
    let mut routes = Routes::default();

    while !shared.stop.load(Ordering::Acquire) {
        if shared.watch.is_stranded(Instant::now()) {
            consumer = replace(consumer, &settings, &mut member, &mut flow);
        }
        keep_membership(&consumer, &settings, &mut member);
        poll_burst(&consumer, &shared, &mut routes);
        if shared.lock().release_due(SystemTime::now()) {
            shared.ready.notify_waiters();
        }

        control_flow(&consumer, &settings, &mut flow);
        if last_commit.elapsed() >= settings.commit_interval {
            commit_settled(&consumer, CommitMode::Async);
            last_commit = Instant::now();
        }
    }

    shutdown(consumer, &shared);
}

/// Leaves the group while nobody receives from this subscriber, and joins it again once
/// someone does (see [`State::wants_membership`]). Leaving revokes every partition,
/// which commits what was settled and hands buffered records back to the group.
fn keep_membership(
    consumer: &BaseConsumer<PollContext>,
    settings: &PollSettings,
    member: &mut bool,
) {
    let wanted = consumer
        .context()
        .shared
        .lock()
        .wants_membership(settings.idle_timeout, Instant::now());
    if wanted == *member {
        return;
    }

    let changed = if wanted {
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)
    } else {
        consumer.unsubscribe();
        Ok(())
    };
    match changed {
        Ok(()) => {
            let idle_timeout = settings.idle_timeout;
            debug!(joined = wanted, ?idle_timeout, "group membership changed");
            *member = wanted;
        }
        Err(error) => warn!(%error, "joining the consumer group again failed; retrying"),
    }
}

/// Replaces a consumer that has lost every broker with a new one, or returns it if the
/// new one cannot be built (trying again after another stranded period).
fn replace(
    stranded: BaseConsumer<PollContext>,
    settings: &PollSettings,
    member: &mut bool,
    flow: &mut Flow,
) -> BaseConsumer<PollContext> {
    let context = stranded.context();
    let shared = context.shared.clone();
    let fresh: BaseConsumer<PollContext> = match settings
        .config
        .create_with_context(PollContext::new(shared.clone()))
    {
        Ok(fresh) => fresh,
        Err(error) => {
            warn!(%error, "cannot build a consumer to replace one without brokers");
            shared.watch.postpone(Instant::now());
            return stranded;
        }
    };

    context.retired.store(true, Ordering::Release);
    shared.watch.reset();
    let forgotten = shared.forget_assignment();
    warn!(
        partitions = forgotten,
        "the Kafka consumer lost every broker; replaced it, and the group redelivers \
         its partitions from their committed offsets"
    );
    retire(stranded);

    // The new consumer joins the group only if the old one was in it; otherwise the
    // next `receive` makes it join, as usual.
    if *member {
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        if let Err(error) = fresh.subscribe(&topics) {
            warn!(%error, "joining the consumer group failed; retrying");
            *member = false;
        }
    }
    *flow = Flow::default();
    fresh
}

/// Closes a replaced consumer on a thread of its own: closing waits for librdkafka to
/// wind the consumer down, which must not hold up the poll loop of its successor.
fn retire(consumer: BaseConsumer<PollContext>) {
    let closing = std::thread::Builder::new()
        .name("wharf-kafka-retire".to_owned())
        .spawn(move || {
            drop(consumer);
            debug!("replaced consumer closed");
        });
    if let Err(error) = closing {
        warn!(%error, "cannot close the replaced consumer on its own thread");
    }
}

fn shutdown(consumer: BaseConsumer<PollContext>, shared: &Shared) {
    shared.lock().closed = true;
    shared.ready.notify_waiters();

    commit_settled(&consumer, CommitMode::Sync);
    // Dropping the consumer leaves the group; the revoke callback commits once more.
    drop(consumer);
    debug!("consumer closed");
}

fn commit_settled(consumer: &BaseConsumer<PollContext>, mode: CommitMode) {
    let points = consumer.context().shared.lock().pending_commits();
    commit(consumer, &points, mode);
}

/// Polls one record (waiting up to the next tick or due retry), then whatever else is
/// already fetched, up to a burst, and queues them for `receive` [`HANDOFF`] at a time.
/// Returns how many records were queued.
fn poll_burst(consumer: &BaseConsumer<PollContext>, shared: &Shared, routes: &mut Routes) -> usize {
    let mut taken = 0;
    let mut polled = Vec::with_capacity(HANDOFF);
    let mut wait = poll_wait(&shared.lock());
    while taken < BURST {
        match consumer.poll(wait) {
            Some(Ok(record)) => polled.extend(route(record, shared, routes)),
            Some(Err(error)) => consumer_error(error, shared),
            None => break,
        }
        wait = Duration::ZERO;

        if polled.len() >= HANDOFF {
            taken += hand_off(shared, &mut polled);
        }
    }
    taken + hand_off(shared, &mut polled)
}

/// A polled record of an assigned partition, waiting to be handed over.
struct Polled<'a> {
    record: BorrowedMessage<'a>,
    assignment: AssignmentId,
    topic: Arc<str>,
}

/// Finds the assignment of a polled record; `None` for a partition no longer assigned.
fn route<'a>(
    record: BorrowedMessage<'a>,
    shared: &Shared,
    routes: &mut Routes,
) -> Option<Polled<'a>> {
    let Some((assignment, topic)) = routes.find(shared, record.topic(), record.partition()) else {
        // Not assigned (any more): the partition's owner reads it from the committed
        // offset, so skipping it here loses nothing.
        debug!(
            topic = record.topic(),
            partition = record.partition(),
            "record of an unassigned partition"
        );
        return None;
    };
    Some(Polled {
        record,
        assignment,
        topic,
    })
}

/// Copies `polled` out of librdkafka, queues the copies for `receive` under one lock and
/// wakes receivers.
fn hand_off(shared: &Shared, polled: &mut Vec<Polled<'_>>) -> usize {
    let count = polled.len();
    if count == 0 {
        return 0;
    }

    let mut payloads = Payloads::copy(polled.iter().map(|p| p.record.payload()));
    let batch: Vec<_> = polled
        .drain(..)
        .map(|polled| {
            let payload = payloads.take(polled.record.payload());
            copy_out(&polled, payload)
        })
        .collect();
    // A revocation since these were polled (from inside a later poll) already removed
    // its partitions, and `accept_all` drops their records.
    shared.lock().accept_all(batch);
    shared.ready.notify_waiters();
    count
}

/// Payloads of up to [`SHARED_PAYLOAD_LIMIT`] bytes of one handoff, copied into one
/// allocation that their deliveries share; larger ones get their own. Copying each into
/// its own buffer would cost two allocations per record (the buffer, then the count
/// that lets the delivery and its ack share it), and records are dropped on another
/// thread than the one that allocated them, where each free is dearer still.
struct Payloads {
    shared: Bytes,
    /// Where the next small payload starts in `shared`.
    at: usize,
}

impl Payloads {
    /// Copies the small ones of `payloads`, each of which must then be taken, in the
    /// same order, with [`Payloads::take`].
    fn copy<'a>(payloads: impl Iterator<Item = Option<&'a [u8]>> + Clone) -> Self {
        let small = |payload: &&[u8]| payload.len() <= SHARED_PAYLOAD_LIMIT;
        let total = payloads
            .clone()
            .flatten()
            .filter(small)
            .map(<[u8]>::len)
            .sum();
        let mut shared = BytesMut::with_capacity(total);
        for payload in payloads.flatten().filter(small) {
            shared.extend_from_slice(payload);
        }
        Self {
            shared: shared.freeze(),
            at: 0,
        }
    }

    /// The delivery's copy of the next payload.
    fn take(&mut self, payload: Option<&[u8]>) -> Bytes {
        match payload {
            None => Bytes::new(),
            Some(large) if large.len() > SHARED_PAYLOAD_LIMIT => Bytes::copy_from_slice(large),
            Some(small) => {
                let start = self.at;
                self.at += small.len();
                self.shared.slice(start..self.at)
            }
        }
    }
}

fn poll_wait(state: &State) -> Duration {
    let until_due = state.next_due().map(|due| {
        due.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    });
    until_due.map_or(POLL_TICK, |until| until.min(POLL_TICK))
}

fn consumer_error(error: KafkaError, shared: &Shared) {
    let fatal = matches!(error, KafkaError::MessageConsumptionFatal(_));
    let mapped = from_kafka(error, "consuming");

    if fatal || mapped.kind() == ErrorKind::PermissionDenied {
        error!(error = %mapped, "the Kafka consumer cannot continue");
        shared.lock().failure = Some(mapped);
    } else {
        warn!(error = %mapped, error.kind = %mapped.kind(), "consuming failed; retrying");
    }
}

/// What `receive` needs of a polled record, copied out of librdkafka's memory.
fn copy_out(polled: &Polled<'_>, payload: Bytes) -> Pending {
    let record = &polled.record;
    Pending {
        topic: polled.topic.clone(),
        partition: record.partition(),
        offset: record.offset(),
        assignment: polled.assignment,
        key: record.key().map(Bytes::copy_from_slice),
        payload,
        headers: headers::decode(record.headers()),
        timestamp: headers::from_millis(record.timestamp().to_millis()),
    }
}

/// Pauses every partition while `receive` is a full buffer behind, and the retry
/// partitions while too many retries wait for their time; resumes at half.
fn control_flow(consumer: &BaseConsumer<PollContext>, settings: &PollSettings, flow: &mut Flow) {
    let (ready, bytes, held, reapply) = {
        let mut state = consumer.context().shared.lock();
        let reapply = std::mem::take(&mut state.reapply_pause);
        (
            state.ready_len(),
            state.ready_bytes(),
            state.held_len(),
            reapply,
        )
    };
    let all = hysteresis(flow.all, ready, settings.capacity)
        || hysteresis(flow.all, bytes, crate::config::RECEIVE_BUFFER_BYTES);
    let retry = hysteresis(flow.retry, held, HELD_LIMIT);
    let changed = all != flow.all || retry != flow.retry;
    if !changed && !(reapply && (all || retry)) {
        return;
    }

    if let Err(error) = apply_pause(consumer, &settings.retry_topic, all, retry) {
        warn!(%error, "pausing or resuming partitions failed; trying again");
        return;
    }
    debug!(
        paused_all = all,
        paused_retry = retry,
        ready,
        bytes,
        held,
        "flow control changed"
    );
    *flow = Flow { all, retry };
}

fn hysteresis(on: bool, level: usize, limit: usize) -> bool {
    if on {
        level > limit / 2
    } else {
        level >= limit
    }
}

fn apply_pause(
    consumer: &BaseConsumer<PollContext>,
    retry_topic: &str,
    all: bool,
    retry: bool,
) -> KafkaResult<()> {
    let assignment = consumer.assignment()?;
    consumer.resume(&assignment)?;

    if all {
        return consumer.pause(&assignment);
    }
    if retry {
        let mut retries = TopicPartitionList::new();
        for element in assignment.elements_for_topic(retry_topic) {
            retries.add_partition(element.topic(), element.partition());
        }
        return consumer.pause(&retries);
    }
    Ok(())
}
