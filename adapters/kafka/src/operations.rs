//! The operations side of [`KafkaBackend`]: backlog figures from committed offsets and
//! watermarks, dead letters read by position, purging with `DeleteRecords`, redriving
//! into the retry topic, and setup checks.
//!
//! Everything here looks at a consumer group from outside. An [`Inspector`] carries the
//! group's id only to read its committed offsets: it assigns partitions itself and never
//! subscribes, so it never joins the group (the subscription's members see no
//! rebalance), and with auto-commit off it never moves the group's offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::admin::{AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};
use wharf_core::operations::doctor::missing;
use wharf_core::{
    AckId, Backend, Error, ErrorKind, Expectations, Figure, Finding, Publisher, RawDelivery,
    Received, Result, SubscriptionStats,
};

use crate::admin::check_topic_name;
use crate::backend::KafkaBackend;
use crate::config::KafkaConfig;
use crate::error::{from_code, from_kafka};
use crate::headers;
use crate::producer::LogContext;
use crate::registry::Registration;
use crate::state::record_id;

/// Why `ready` and `in_flight` are unknown.
const NO_IN_FLIGHT: &str = "Kafka does not know which records a consumer holds in flight: \
                            consumer_lag counts ready and in-flight records together";

/// Longest single wait in an inspector's poll, so a deadline is noticed quickly.
const POLL_TICK: Duration = Duration::from_millis(100);

/// What to check when looking at the cluster fails.
const LOOKING_HINT: &str = "check that the Kafka brokers are reachable and that this client may \
                            describe the topic and read its consumer group's offsets, then \
                            try again";

/// Records still wanted from each partition being read, and the partition's end.
type Wanted = HashMap<(String, i32), (usize, i64)>;

impl KafkaBackend {
    /// The subscription's figures: lag of the main topic, of the retry topic (delayed)
    /// and of the dead-letter topic for the dead-letter subscriber's group.
    pub(crate) async fn subscription_stats(
        &self,
        subscription: &str,
        registration: &Registration,
        retry: &str,
    ) -> Result<SubscriptionStats> {
        let config = self.config().clone();
        let names = Names::new(subscription, registration, retry);

        blocking(move || snapshot(&config, &names)).await?
    }

    /// Up to `max` records of the dead-letter topic from where the dead-letter group
    /// would resume, oldest first by record timestamp.
    pub(crate) async fn peek(
        &self,
        registration: &Registration,
        max: usize,
    ) -> Result<Vec<Received>> {
        let config = self.config().clone();
        let topic = registration.dead_letter.clone();

        blocking(move || peek_blocking(&config, &topic, max)).await?
    }

    /// Deletes the dead-letter topic's records up to its current end, returning how many
    /// of them the dead-letter group had not consumed yet.
    pub(crate) async fn purge(
        &self,
        subscription: &str,
        registration: &Registration,
    ) -> Result<Figure<u64>> {
        let config = self.config().clone();
        let topic = registration.dead_letter.clone();
        let spans = blocking(move || dead_letter_spans(&config, &topic)).await??;
        let topic = &registration.dead_letter;
        let count: u64 = spans.iter().map(Span::pending).sum();

        let ends = ends_of(&spans)?;
        if ends.count() > 0 {
            self.delete_records(topic, &ends).await?;
            self.commit_ends(topic, ends).await;
        }
        info!(
            subscription,
            dead_letter_topic = %topic,
            purged = count,
            "dead letters purged"
        );
        Ok(Figure::Known(count))
    }

    async fn delete_records(&self, topic: &str, ends: &TopicPartitionList) -> Result<()> {
        let deleted = self
            .admin()
            .delete_records(ends, &self.admin_options())
            .await
            .map_err(|error| from_kafka(error, "deleting dead letters"))?;

        for element in deleted.elements() {
            if let Err(error) = element.error() {
                let what = format!("deleting the records of partition {}", element.partition());
                return Err(with_hint(
                    from_kafka(error, &what),
                    &format!(
                        "check that this client may delete records of `{topic}` (DELETE on it)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Moves the dead-letter group's offsets to the purged ends, so Kafka's own tools
    /// show no lag for it either. The broker refuses a commit from outside a group with
    /// members (a dead-letter subscriber is running); those members commit on their own,
    /// and wharf's figures count from the low watermark anyway, so a refusal is harmless.
    async fn commit_ends(&self, topic: &str, ends: TopicPartitionList) {
        let config = self.config().clone();
        let group = topic.to_owned();
        let committed = blocking(move || {
            let inspector = Inspector::new(&config, &group)?;
            inspector
                .consumer
                .commit(&ends, CommitMode::Sync)
                .map_err(|error| from_kafka(error, "committing the purged offsets"))
        })
        .await;

        if let Err(error) = committed.and_then(|result| result) {
            debug!(group = %topic, %error, "dead-letter group offsets left to its members");
        }
    }

    /// A publisher on the subscription's retry topic, which only this subscription's
    /// group reads.
    pub(crate) async fn retry_publisher(
        &self,
        subscription: &str,
        retry: &str,
    ) -> Result<Publisher> {
        self.publisher(retry)
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::NotFound => with_hint(
                    error,
                    &format!(
                        "redriving into subscription `{subscription}` needs its retry \
                         topic `{retry}`; call create_subscription again to create it"
                    ),
                ),
                _ => error,
            })
    }

    /// Compares the cluster's setup of the subscription with `expected`.
    pub(crate) async fn check(
        &self,
        expected: &Expectations,
        registered: Option<Registration>,
        retry: &str,
    ) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        if let Err(invalid) = check_topic_name(name) {
            let fix = "name the subscription with ASCII letters, digits, '.', '_' and '-'";
            return Ok(vec![Finding::error(name, invalid.to_string(), fix)]);
        }
        let Some(registration) = registered else {
            return Ok(vec![missing(name, "subscription", self.create_fix())]);
        };

        let mut findings = registration_mismatch(name, &registration, expected);
        let config = self.config().clone();
        let names = Names::new(name, &registration, retry);
        let setup = blocking(move || Setup::read(&config, names)).await??;
        findings.extend(setup.findings(self.config()));

        let present = setup.names.bookkeeping_present(&setup);
        findings.extend(self.config_findings(&present).await?);
        Ok(findings)
    }

    fn create_fix(&self) -> String {
        format!(
            "create it with create_subscription: wharf creates its retry and dead-letter \
             topics and records the subscription in the registry topic `{}`, which is \
             where a subscriber looks it up",
            self.config().registry_topic
        )
    }

    /// Findings about the retry and dead-letter topics' settings.
    async fn config_findings(&self, topics: &[(&str, Role)]) -> Result<Vec<Finding>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let specifiers: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|(topic, _)| ResourceSpecifier::Topic(topic))
            .collect();
        let described = self
            .admin()
            .describe_configs(&specifiers, &self.admin_options())
            .await
            .map_err(|error| {
                let hint = "check that this client may describe topic configs (DescribeConfigs)";
                with_hint(from_kafka(error, "reading topic settings"), hint)
            })?;

        let listed: Vec<&str> = topics.iter().map(|(topic, _)| *topic).collect();
        let listed = listed.join("`, `");
        let mut findings = Vec::new();
        for result in described {
            let resource =
                result.map_err(|code| from_code(code, "reading the settings of", &listed))?;
            let OwnedResourceSpecifier::Topic(topic) = &resource.specifier else {
                continue;
            };
            let Some((_, role)) = topics.iter().find(|(name, _)| name == topic) else {
                continue;
            };
            let setting = |key: &str| resource.get(key).and_then(|entry| entry.value.clone());
            findings.extend(compaction(topic, *role, setting("cleanup.policy")));
            if *role == Role::Retry {
                findings.extend(retry_retention(topic, setting("retention.ms")));
            }
        }
        Ok(findings)
    }

    fn admin_options(&self) -> AdminOptions {
        let timeout = self.config().operation_timeout;
        AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout))
    }
}

/// The names one subscription's figures and checks are about.
#[derive(Debug, Clone)]
struct Names {
    subscription: String,
    topic: String,
    retry: String,
    dead_letter: String,
}

impl Names {
    fn new(subscription: &str, registration: &Registration, retry: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            topic: registration.topic.clone(),
            retry: retry.to_owned(),
            dead_letter: registration.dead_letter.clone(),
        }
    }

    /// The retry and dead-letter topics that exist, for a look at their settings.
    fn bookkeeping_present<'a>(&'a self, setup: &Setup) -> Vec<(&'a str, Role)> {
        let mut present = Vec::new();
        if setup.retry.is_some() {
            present.push((self.retry.as_str(), Role::Retry));
        }
        if setup.dead_letter.is_some() {
            present.push((self.dead_letter.as_str(), Role::DeadLetter));
        }
        present
    }
}

/// What a topic is to its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Retry,
    DeadLetter,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Self::Main => "topic",
            Self::Retry => "retry topic",
            Self::DeadLetter => "dead-letter topic",
        }
    }

    /// What stops working without the topic.
    fn consequence(self) -> &'static str {
        match self {
            Self::Main => "nothing can be published to or received from it",
            Self::Retry => "every nack fails to publish its retry, so no message is retried",
            Self::DeadLetter => "every dead_letter fails, so failed messages stay unsettled",
        }
    }
}

/// One partition seen from one consumer group.
#[derive(Debug, Clone)]
struct Span {
    topic: String,
    partition: i32,
    /// The low watermark: the first offset still in the log.
    low: i64,
    /// Where the group resumes: its committed offset, or where `auto.offset.reset`
    /// (`earliest`) sends it when it has none or the offset is out of range.
    start: i64,
    /// The high watermark: one past the last record.
    end: i64,
}

impl Span {
    /// Records the group has not consumed yet.
    fn pending(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

/// A topic's partitions, as the cluster metadata lists them.
#[derive(Debug, Clone)]
struct Shape {
    partitions: Vec<i32>,
    leaderless: Vec<i32>,
}

/// A consumer that reads one group's committed offsets and fetches records by position;
/// see the module documentation. Dropped on a blocking thread: closing it waits for
/// librdkafka.
struct Inspector {
    consumer: BaseConsumer<LogContext>,
    timeout: Duration,
}

impl Inspector {
    fn new(config: &KafkaConfig, group: &str) -> Result<Self> {
        let mut client = config.client();
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer = client
            .create_with_context(LogContext)
            .map_err(|error| looking(error, "creating a consumer to inspect a group"))?;

        Ok(Self {
            consumer,
            timeout: config.operation_timeout,
        })
    }

    /// The partitions of `topic`, or `None` if it does not exist.
    fn shape(&self, topic: &str) -> Result<Option<Shape>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|error| looking(error, "reading topic metadata"))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if let Some(code) = found.error() {
            let code = RDKafkaErrorCode::from(code);
            return match crate::error::code_kind(code) {
                ErrorKind::NotFound => Ok(None),
                _ => Err(from_code(code, "reading metadata of topic", topic)),
            };
        }

        let partitions = found.partitions();
        Ok(Some(Shape {
            partitions: partitions.iter().map(|p| p.id()).collect(),
            leaderless: partitions
                .iter()
                .filter(|p| p.leader() < 0)
                .map(|p| p.id())
                .collect(),
        }))
    }

    /// Every partition of `topic` as the group sees it, or `None` if it does not exist.
    fn spans(&self, topic: &str) -> Result<Option<Vec<Span>>> {
        let Some(shape) = self.shape(topic)? else {
            return Ok(None);
        };
        if !shape.leaderless.is_empty() {
            return Err(leaderless(topic, &shape.leaderless));
        }
        let committed = self.committed(topic, &shape.partitions)?;

        let mut spans = Vec::with_capacity(shape.partitions.len());
        for partition in shape.partitions {
            let (low, end) = self
                .consumer
                .fetch_watermarks(topic, partition, self.timeout)
                .map_err(|error| looking(error, "reading partition watermarks"))?;
            let committed = committed.get(&partition).copied();
            let start = committed.filter(|c| (low..=end).contains(c)).unwrap_or(low);
            spans.push(Span {
                topic: topic.to_owned(),
                partition,
                low,
                start,
                end,
            });
        }
        Ok(Some(spans))
    }

    /// The group's committed offsets of `topic`, by partition; partitions without one
    /// are left out.
    fn committed(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for partition in partitions {
            list.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(list, self.timeout)
            .map_err(|error| looking(error, "reading committed offsets"))?;

        Ok(committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect())
    }

    /// Up to `per_partition` records of each span, from its start to its end as it was
    /// when the span was taken.
    ///
    /// # Errors
    ///
    /// [`Timeout`](ErrorKind::Timeout) if the records do not arrive within the
    /// operation timeout.
    fn read(&self, spans: &[Span], per_partition: usize) -> Result<Vec<OwnedMessage>> {
        let mut left: Wanted = spans
            .iter()
            .filter(|span| span.pending() > 0 && per_partition > 0)
            .map(|span| {
                let wanted =
                    per_partition.min(usize::try_from(span.pending()).unwrap_or(usize::MAX));
                ((span.topic.clone(), span.partition), (wanted, span.end))
            })
            .collect();
        if left.is_empty() {
            return Ok(Vec::new());
        }
        self.assign(spans)?;

        let deadline = Instant::now() + self.timeout;
        let mut records = Vec::new();
        while !left.is_empty() {
            match self.consumer.poll(POLL_TICK) {
                Some(Ok(record)) => take(&mut left, &mut records, record.detach()),
                Some(Err(error)) => debug!(%error, "inspecting consumer: fetch failed; retrying"),
                None if Instant::now() >= deadline => return Err(self.read_timeout(&left)),
                None => self.skip_gaps(&mut left),
            }
        }
        Ok(records)
    }

    fn assign(&self, spans: &[Span]) -> Result<()> {
        let mut list = TopicPartitionList::with_capacity(spans.len());
        for span in spans.iter().filter(|span| span.pending() > 0) {
            list.add_partition_offset(&span.topic, span.partition, Offset::Offset(span.start))
                .map_err(|error| from_kafka(error, "describing offsets to read"))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|error| looking(error, "assigning partitions to read"))
    }

    /// Drops partitions whose fetch position passed their end without a record: the
    /// offsets left were transaction markers or compacted away.
    fn skip_gaps(&self, left: &mut Wanted) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let key = (element.topic().to_owned(), element.partition());
            let passed = match (element.offset(), left.get(&key)) {
                (Offset::Offset(position), Some((_, end))) => position >= *end,
                _ => false,
            };
            if passed {
                left.remove(&key);
            }
        }
    }

    fn read_timeout(&self, left: &Wanted) -> Error {
        let mut partitions: Vec<String> = left
            .keys()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        partitions.sort();
        Error::new(
            ErrorKind::Timeout,
            format!(
                "reading records of {} timed out after {:?}; check that their leaders are \
                 reachable and try again",
                partitions.join(", "),
                self.timeout
            ),
        )
    }
}

/// Keeps `record` if its partition still wants records below its end.
fn take(left: &mut Wanted, records: &mut Vec<OwnedMessage>, record: OwnedMessage) {
    let key = (record.topic().to_owned(), record.partition());
    let Some((wanted, end)) = left.get_mut(&key) else {
        return;
    };
    let last = record.offset() + 1 >= *end;
    if record.offset() < *end {
        records.push(record);
        *wanted -= 1;
    }
    if last || *wanted == 0 {
        left.remove(&key);
    }
}

fn snapshot(config: &KafkaConfig, names: &Names) -> Result<SubscriptionStats> {
    let group = Inspector::new(config, &names.subscription)?;
    let main = group.spans(&names.topic)?;
    let retries = group.spans(&names.retry)?;
    let dead = Inspector::new(config, &names.dead_letter)?.spans(&names.dead_letter)?;

    let oldest_age = match (&main, &retries) {
        (Some(main), Some(retries)) => {
            let unsettled: Vec<Span> = main.iter().chain(retries).cloned().collect();
            oldest_age(&group, &unsettled)
        }
        _ => Figure::unknown(format!(
            "the topic `{}` or its retry topic `{}` does not exist; run doctor",
            names.topic, names.retry
        )),
    };
    Ok(SubscriptionStats {
        subscription: names.subscription.clone(),
        ready: Figure::unknown(NO_IN_FLIGHT),
        in_flight: Figure::unknown(NO_IN_FLIGHT),
        delayed: pending(retries.as_deref(), &names.retry),
        dead_lettered: pending(dead.as_deref(), &names.dead_letter),
        oldest_age,
        consumer_lag: pending(main.as_deref(), &names.topic),
    })
}

/// Records not yet consumed across `spans`, or why they cannot be counted.
fn pending(spans: Option<&[Span]>, topic: &str) -> Figure<u64> {
    match spans {
        Some(spans) => Figure::Known(spans.iter().map(Span::pending).sum()),
        None => Figure::unknown(format!(
            "topic `{topic}` does not exist; run doctor for how to create it"
        )),
    }
}

/// How long ago the oldest record not yet committed was published: the first pending
/// record of each partition is read, and a retried record counts from the original
/// publish its bookkeeping headers carry.
fn oldest_age(inspector: &Inspector, spans: &[Span]) -> Figure<Option<Duration>> {
    let firsts = match inspector.read(spans, 1) {
        Ok(firsts) => firsts,
        Err(error) => {
            return Figure::unknown(format!(
                "the oldest unsettled record is unreadable: {error}"
            ));
        }
    };

    let oldest = firsts.iter().map(published_at).min();
    let now = SystemTime::now();
    Figure::Known(oldest.map(|at| now.duration_since(at).unwrap_or(Duration::ZERO)))
}

/// When the message behind `record` was first published, as a subscriber reports it.
fn published_at(record: &OwnedMessage) -> SystemTime {
    headers::decode(record.headers())
        .published_at
        .or_else(|| headers::from_millis(record.timestamp().to_millis()))
        .unwrap_or_else(SystemTime::now)
}

fn peek_blocking(config: &KafkaConfig, topic: &str, max: usize) -> Result<Vec<Received>> {
    // The dead-letter subscriber's group is named after its topic.
    let inspector = Inspector::new(config, topic)?;
    let spans = inspector
        .spans(topic)?
        .ok_or_else(|| missing_dead_letter_topic(topic))?;

    // Each partition is in order; reading `max` of each and merging by timestamp gives
    // the oldest `max` overall.
    let mut records = inspector.read(&spans, max)?;
    records.sort_by_key(|r| (r.timestamp().to_millis(), r.partition(), r.offset()));
    records.truncate(max);
    Ok(records.iter().map(|r| peeked(r, topic)).collect())
}

/// A dead-letter record as the dead-letter subscriber would deliver it, without a way to
/// settle it.
fn peeked(record: &OwnedMessage, topic: &str) -> Received {
    let decoded = headers::decode(record.headers());
    let id = decoded
        .origin
        .clone()
        .unwrap_or_else(|| record_id(record.topic(), record.partition(), record.offset()));
    let raw = RawDelivery {
        id,
        payload: bytes::Bytes::copy_from_slice(record.payload().unwrap_or_default()),
        attributes: decoded.attributes,
        ordering_key: record
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        attempt: decoded.attempt.unwrap_or(1),
        published_at: published_at(record),
        first_failure: decoded.failed_first,
        ack_id: AckId::new(()),
    };
    Received::from_raw(raw, topic)
}

fn dead_letter_spans(config: &KafkaConfig, topic: &str) -> Result<Vec<Span>> {
    Inspector::new(config, topic)?
        .spans(topic)?
        .ok_or_else(|| missing_dead_letter_topic(topic))
}

/// Each partition's end, for the partitions that hold any record.
fn ends_of(spans: &[Span]) -> Result<TopicPartitionList> {
    let mut ends = TopicPartitionList::with_capacity(spans.len());
    for span in spans.iter().filter(|span| span.end > span.low) {
        ends.add_partition_offset(&span.topic, span.partition, Offset::Offset(span.end))
            .map_err(|error| from_kafka(error, "describing offsets to delete up to"))?;
    }
    Ok(ends)
}

/// What the cluster holds of one subscription, for the doctor.
struct Setup {
    names: Names,
    main: Option<Shape>,
    retry: Option<Shape>,
    dead_letter: Option<Shape>,
    /// Whether the group has committed an offset on some partition of the main topic.
    main_committed: bool,
}

impl Setup {
    fn read(config: &KafkaConfig, names: Names) -> Result<Self> {
        let group = Inspector::new(config, &names.subscription)?;
        let main = group.shape(&names.topic)?;
        let main_committed = match &main {
            Some(shape) => !group.committed(&names.topic, &shape.partitions)?.is_empty(),
            None => false,
        };

        Ok(Self {
            retry: group.shape(&names.retry)?,
            dead_letter: group.shape(&names.dead_letter)?,
            main,
            main_committed,
            names,
        })
    }

    fn findings(&self, config: &KafkaConfig) -> Vec<Finding> {
        let names = &self.names;
        let topics = [
            (&names.topic, &self.main, Role::Main),
            (&names.retry, &self.retry, Role::Retry),
            (&names.dead_letter, &self.dead_letter, Role::DeadLetter),
        ];
        let mut findings = Vec::new();
        for (topic, shape, role) in topics {
            match shape {
                None => findings.push(self.missing_topic(topic, role, config)),
                Some(shape) if !shape.leaderless.is_empty() => {
                    findings.push(leaderless_finding(topic, &shape.leaderless));
                }
                Some(_) => {}
            }
        }
        findings.extend(self.fewer_retry_partitions());
        findings.extend(self.uncommitted_group(config));
        findings
    }

    fn missing_topic(&self, topic: &str, role: Role, config: &KafkaConfig) -> Finding {
        let subscription = &self.names.subscription;
        let partitions = config.partitions;
        let create = format!("kafka-topics.sh --create --topic {topic} --partitions {partitions}");
        let fix = match role {
            Role::Main => format!("create the topic with create_topic (or `{create}`)"),
            Role::Retry => format!(
                "create topic `{topic}` with {partitions} partitions (`{create} --config \
                 retention.ms={}`), or call create_subscription again, which creates the \
                 topics that are missing",
                crate::RETRY_RETENTION.as_millis()
            ),
            Role::DeadLetter => format!(
                "create topic `{topic}` with {partitions} partitions (`{create}`), or call \
                 create_subscription again, which creates the topics that are missing"
            ),
        };
        Finding::error(
            topic,
            format!(
                "the {} `{topic}` of subscription `{subscription}` does not exist: {}",
                role.describe(),
                role.consequence()
            ),
            fix,
        )
    }

    /// Retries spread over the group by the retry topic's partitions: with fewer of them
    /// than the main topic has, some members never take a retry.
    fn fewer_retry_partitions(&self) -> Option<Finding> {
        let (main, retry) = (self.main.as_ref()?, self.retry.as_ref()?);
        let (main_count, retry_count) = (main.partitions.len(), retry.partitions.len());
        (retry_count < main_count).then(|| {
            let retry_topic = &self.names.retry;
            Finding::warning(
                retry_topic,
                format!(
                    "the retry topic has {retry_count} partitions and `{}` has {main_count}: \
                     retries are handled by at most {retry_count} of the group's members",
                    self.names.topic
                ),
                format!(
                    "raise the partitions of `{retry_topic}` to {main_count} \
                     (`kafka-topics.sh --alter --topic {retry_topic} --partitions \
                     {main_count}`)"
                ),
            )
        })
    }

    /// wharf commits the main topic's end offsets when it creates a subscription; a group
    /// without any (they expired, or the group was deleted) starts over at the earliest
    /// retained record.
    fn uncommitted_group(&self, config: &KafkaConfig) -> Option<Finding> {
        if self.main.is_none() || self.main_committed {
            return None;
        }
        let Names {
            subscription,
            topic,
            ..
        } = &self.names;
        Some(Finding::warning(
            subscription,
            format!(
                "consumer group `{subscription}` has no committed offsets on `{topic}`: its \
                 next subscriber reads the topic from its earliest retained record \
                 (auto.offset.reset=earliest), not from where the subscription left off"
            ),
            format!(
                "if it should start at the end, reset the group while no subscriber runs \
                 (`kafka-consumer-groups.sh --bootstrap-server {} --group {subscription} \
                 --topic {topic} --reset-offsets --to-latest --execute`); the offsets of an \
                 idle group expire after the broker's offsets.retention.minutes",
                config.brokers()
            ),
        ))
    }
}

/// The registration says something else than the application expects.
fn registration_mismatch(
    name: &str,
    registration: &Registration,
    expected: &Expectations,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let (actual, wanted) = (&registration.topic, &expected.spec.topic);
    if actual != wanted {
        findings.push(Finding::error(
            name,
            format!(
                "subscription `{name}` reads topic `{actual}`, but the application expects \
                 `{wanted}`"
            ),
            format!(
                "delete the subscription and create it again on `{wanted}`, or point the \
                 application at `{actual}`"
            ),
        ));
    }
    let (actual, wanted) = (&registration.dead_letter, expected.spec.dead_letter_name());
    if *actual != wanted {
        findings.push(Finding::error(
            name,
            format!(
                "dead letters of `{name}` go to topic `{actual}`, but the application reads \
                 them from `{wanted}`"
            ),
            format!("create the subscription again with dead_letter(\"{wanted}\")"),
        ));
    }
    findings
}

/// Compaction keeps only the latest record of each key and refuses records without
/// one: retries and dead letters sharing an ordering key would vanish, keyless ones
/// would fail.
fn compaction(topic: &str, role: Role, policy: Option<String>) -> Option<Finding> {
    let policy = policy?;
    policy.contains("compact").then(|| {
        Finding::error(
            topic,
            format!(
                "the {} has cleanup.policy={policy}: compaction keeps only the latest record \
                 of each key, so records sharing an ordering key are lost, and the broker \
                 refuses records without a key",
                role.describe()
            ),
            format!(
                "set cleanup.policy=delete on `{topic}` (`kafka-configs.sh --alter \
                 --entity-type topics --entity-name {topic} --add-config \
                 cleanup.policy=delete`)"
            ),
        )
    })
}

/// A retried record the consumer group has not committed yet is read again from the
/// retry topic after a restart; deleted by retention first, it is lost.
fn retry_retention(topic: &str, retention: Option<String>) -> Option<Finding> {
    let retention: i64 = retention?.parse().ok()?;
    let longest = crate::MAX_NACK_DELAY.as_millis();
    let short = u128::try_from(retention).is_ok_and(|ms| ms < longest);
    short.then(|| {
        Finding::warning(
            topic,
            format!(
                "the retry topic keeps records for retention.ms={retention}, less than the \
                 longest nack delay ({longest} ms): a retry still waiting when its consumer \
                 restarts can be deleted before it is delivered"
            ),
            format!(
                "set retention.ms on `{topic}` to at least {longest} (wharf creates it with \
                 {}): `kafka-configs.sh --alter --entity-type topics --entity-name {topic} \
                 --add-config retention.ms={}`",
                crate::RETRY_RETENTION.as_millis(),
                crate::RETRY_RETENTION.as_millis()
            ),
        )
    })
}

fn leaderless_finding(topic: &str, partitions: &[i32]) -> Finding {
    Finding::error(
        topic,
        format!(
            "partitions {partitions:?} of `{topic}` have no leader: publishing to and \
             consuming from them stalls"
        ),
        "bring back the brokers that host them; `kafka-topics.sh --describe \
         --unavailable-partitions` lists them",
    )
}

fn leaderless(topic: &str, partitions: &[i32]) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "partitions {partitions:?} of Kafka topic `{topic}` have no leader; bring back \
             the brokers that host them and try again"
        ),
    )
}

fn missing_dead_letter_topic(topic: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "the dead-letter topic `{topic}` does not exist; call create_subscription again \
             to create it (doctor lists what else is missing)"
        ),
    )
}

/// A failed look at the cluster, with what to check.
fn looking(error: KafkaError, what: &str) -> Error {
    with_hint(from_kafka(error, what), LOOKING_HINT)
}

/// `error` with what to do next appended to its message; the original stays the source.
fn with_hint(error: Error, hint: &str) -> Error {
    Error::new(error.kind(), format!("{error}; {hint}")).with_source(error)
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(call).await.map_err(|e| {
        Error::new(ErrorKind::Internal, "a blocking Kafka call panicked").with_source(e)
    })
}
