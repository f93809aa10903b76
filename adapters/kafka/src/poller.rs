//! The poll thread: one per subscriber, polling its consumer whatever handlers do.
//!
//! librdkafka removes a member from its group when the application stops calling poll
//! for `max.poll.interval.ms` (5 minutes by default). Handlers never run on this thread,
//! so a slow handler cannot cause that: the thread keeps polling, and when `receive`
//! falls behind it pauses the partitions instead of stopping. It also commits settled
//! offsets, and runs the rebalance callbacks, which librdkafka calls from inside poll.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, trace, warn};
use wharf_core::{AckId, ErrorKind, RawDelivery};

use crate::error::from_kafka;
use crate::headers::{self, Decoded};
use crate::producer::log_librdkafka;
use crate::state::{KafkaAck, PartitionKey, Pending, Shared, State};

/// Longest single wait in poll, so stop requests and due retries are noticed quickly.
const POLL_TICK: Duration = Duration::from_millis(100);

/// Records taken in one burst before waking receivers.
const BURST: usize = 500;

/// Retried records held in memory before the retry partitions are paused.
const HELD_LIMIT: usize = 10_000;

/// The consumer context: logs, commits on revocation, tracks assignments.
pub(crate) struct PollContext {
    pub(crate) shared: Arc<Shared>,
}

impl ClientContext for PollContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "librdkafka reported an error");
    }
}

impl ConsumerContext for PollContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list);
        let points = self.shared.lock().revoke(&partitions);
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
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                debug!(partitions = partitions.len(), "partitions assigned");
                self.shared.lock().assign(partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => warn!(%error, "consumer group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
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
}

/// Which partitions the loop has paused.
#[derive(Debug, Default)]
struct Flow {
    all: bool,
    retry: bool,
}

/// Polls until told to stop, then commits what was settled and leaves the group.
pub(crate) fn run(consumer: BaseConsumer<PollContext>, settings: PollSettings) {
    let shared = consumer.context().shared.clone();
    let mut flow = Flow::default();
    let mut last_commit = Instant::now();
    let mut member = true;

    while !shared.stop.load(Ordering::Acquire) {
        keep_membership(&consumer, &settings, &mut member);
        let taken = poll_burst(&consumer, &shared);
        let released = shared.lock().release_due(SystemTime::now());
        if taken > 0 || released {
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
/// already fetched, up to a burst. Returns how many records were taken.
fn poll_burst(consumer: &BaseConsumer<PollContext>, shared: &Shared) -> usize {
    let mut taken = 0;
    let mut wait = poll_wait(&shared.lock());
    while taken < BURST {
        match consumer.poll(wait) {
            Some(Ok(record)) => {
                accept(&record, shared);
                taken += 1;
            }
            Some(Err(error)) => consumer_error(error, shared),
            None => break,
        }
        wait = Duration::ZERO;
    }
    taken
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

/// Tracks a polled record and queues it for `receive` (or holds it until due).
fn accept(record: &BorrowedMessage<'_>, shared: &Shared) {
    let partition: PartitionKey = (Arc::from(record.topic()), record.partition());
    let decoded = headers::decode(record.headers());
    let due = decoded.not_before;

    let mut state = shared.lock();
    let Some(generation) = state.delivered(&partition, record.offset()) else {
        // Not assigned (any more): the partition's owner reads it from the committed
        // offset, so skipping it here loses nothing.
        debug!(
            topic = record.topic(),
            partition = record.partition(),
            "record of an unassigned partition"
        );
        return;
    };
    let raw = delivery(record, decoded, partition.clone(), generation);
    state.accept(
        Pending {
            raw,
            partition,
            generation,
        },
        due,
    );
}

fn delivery(
    record: &BorrowedMessage<'_>,
    decoded: Decoded,
    partition: PartitionKey,
    generation: u64,
) -> RawDelivery {
    let payload = Bytes::copy_from_slice(record.payload().unwrap_or_default());
    let key = record.key().map(Bytes::copy_from_slice);
    let origin = decoded.origin.unwrap_or_else(|| {
        format!(
            "{}/{}/{}",
            record.topic(),
            record.partition(),
            record.offset()
        )
    });
    let published_at = decoded
        .published_at
        .or_else(|| headers::from_millis(record.timestamp().to_millis()))
        .unwrap_or_else(SystemTime::now);
    let attempt = decoded.attempt.unwrap_or(1).max(1);

    let ack = KafkaAck {
        topic: partition.0,
        partition: partition.1,
        offset: record.offset(),
        generation,
        key: key.clone(),
        payload: payload.clone(),
        attributes: decoded.attributes.clone(),
        attempt,
        published_at,
        failed_first: decoded.failed_first,
        origin: origin.clone(),
    };
    RawDelivery {
        id: origin,
        payload,
        attributes: decoded.attributes,
        ordering_key: key.map(|key| String::from_utf8_lossy(&key).into_owned()),
        attempt,
        published_at,
        first_failure: decoded.failed_first,
        ack_id: AckId::new(ack),
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
