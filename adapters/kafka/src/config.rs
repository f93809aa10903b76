//! [`KafkaConfig`]: where the brokers are, how topics are created, and librdkafka
//! properties passed through untouched (TLS, SASL, tuning).
//!
//! Properties that carry wharf's delivery guarantees (group id, offset commits,
//! idempotence, acks) are set by the adapter and refused here, so a stray override
//! cannot silently turn at-least-once into at-most-once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use wharf_core::{Error, ErrorKind, Result};

use crate::watchdog::STATISTICS_INTERVAL_MS;

/// The environment variable naming the bootstrap brokers, read by [`KafkaConfig::from_env`].
pub const BROKERS_ENV: &str = "WHARF_KAFKA_BROKERS";

/// Brokers used when [`BROKERS_ENV`] is unset: a local single-node cluster.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Partitions of each topic wharf creates, unless configured otherwise.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// Kafka's own default session timeout is 45 s; wharf's poll loop never stalls, so a
/// short one only makes a crashed consumer's partitions move sooner. 6 s is the broker's
/// smallest accepted value (`group.min.session.timeout.ms`).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// How long a subscriber stays in its consumer group while nobody calls `receive` and it
/// has no delivery awaiting settlement. Kafka's own bound is `max.poll.interval.ms`
/// (5 minutes); wharf's poll thread keeps polling whatever the application does, so it
/// applies this shorter one to what the application does instead.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often settled offsets are committed while consuming.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// Deliveries buffered ahead of `receive` before the consumer pauses its partitions.
/// Pausing and resuming costs a fetch round trip (up to `fetch.wait.max.ms`) during which
/// nothing new arrives, so the buffer is large enough to hide that from a fast consumer.
pub const DEFAULT_RECEIVE_BUFFER: usize = 10_000;

/// Payload bytes buffered ahead of `receive` before the consumer pauses its partitions,
/// whatever `receive_buffer` says: wharf's bound on a subscriber's buffer memory.
pub const RECEIVE_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// How long admin and metadata requests may take.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The compacted topic holding each subscription's settings.
pub const DEFAULT_REGISTRY_TOPIC: &str = "wharf-subscriptions";

/// librdkafka's `fetch.wait.max.ms` for consumers, unless a consumer property overrides it.
const FETCH_WAIT_MS: &str = "100";

/// Properties wharf sets itself; overriding them would break its guarantees.
const MANAGED: [&str; 9] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.partition.eof",
];

/// Substrings of property names whose values are secrets and never shown.
const SECRET_MARKERS: [&str; 6] = [
    "password",
    "secret",
    "sasl.jaas",
    "oauthbearer",
    "key",
    "token",
];

/// How to reach a Kafka cluster and how wharf lays out its topics there.
///
/// ```
/// use wharf_kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("broker-1:9093,broker-2:9093")
///     .property("security.protocol", "SASL_SSL")
///     .property("sasl.mechanism", "SCRAM-SHA-512")
///     .property("sasl.username", "orders")
///     .property("sasl.password", "not-shown-in-debug")
///     .partitions(6);
/// assert!(!format!("{config:?}").contains("not-shown-in-debug"));
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) brokers: String,
    pub(crate) common: BTreeMap<String, String>,
    pub(crate) producer: BTreeMap<String, String>,
    pub(crate) consumer: BTreeMap<String, String>,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i32,
    pub(crate) session_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) receive_buffer: usize,
    pub(crate) operation_timeout: Duration,
    pub(crate) registry_topic: String,
}

impl KafkaConfig {
    /// A configuration for the comma-separated bootstrap `brokers` (`host:port,...`).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            common: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            partitions: DEFAULT_PARTITIONS,
            // -1 asks the broker for its `default.replication.factor`.
            replication_factor: -1,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            registry_topic: DEFAULT_REGISTRY_TOPIC.to_owned(),
        }
    }

    /// Brokers from `WHARF_KAFKA_BROKERS`, or `127.0.0.1:9092` if it is unset.
    pub fn from_env() -> Self {
        let brokers = std::env::var(BROKERS_ENV).unwrap_or_else(|_| DEFAULT_BROKERS.to_owned());
        Self::new(brokers)
    }

    /// Sets a librdkafka property on every client (producer, consumers, admin): TLS
    /// (`security.protocol`, `ssl.ca.location`, ...), SASL (`sasl.mechanism`,
    /// `sasl.username`, `sasl.password`), `client.id` and the like.
    #[must_use]
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.common.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property on producers only (`linger.ms`, `compression.type`,
    /// `message.timeout.ms`, ...).
    #[must_use]
    pub fn producer_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property on consumers only (`fetch.max.bytes`,
    /// `max.poll.interval.ms`, ...).
    #[must_use]
    pub fn consumer_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer.insert(key.into(), value.into());
        self
    }

    /// Partitions of the topics wharf creates (main, retry and dead-letter topics).
    #[must_use]
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Replication factor of the topics wharf creates; -1 (the default) uses the
    /// broker's `default.replication.factor`.
    #[must_use]
    pub fn replication_factor(mut self, factor: i32) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Consumer group session timeout: how soon a crashed consumer's partitions move.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How often settled offsets are committed while consuming.
    #[must_use]
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How long a subscriber nobody receives from, with no delivery awaiting settlement,
    /// stays in its consumer group. Past it the subscriber leaves, so the group's other
    /// members take over its partitions and the records it had buffered; the next
    /// `receive` joins again, which takes a few seconds.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Deliveries buffered ahead of `receive` before partitions are paused.
    #[must_use]
    pub fn receive_buffer(mut self, deliveries: usize) -> Self {
        self.receive_buffer = deliveries;
        self
    }

    /// How long admin and metadata requests may take.
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The compacted topic holding subscription settings (default `wharf-subscriptions`).
    #[must_use]
    pub fn registry_topic(mut self, topic: impl Into<String>) -> Self {
        self.registry_topic = topic.into();
        self
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Checks values before any client is built.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(config_error("the Kafka broker list is empty"));
        }
        if self.partitions < 1 {
            return Err(Error::invalid(format!(
                "partitions is {}; Kafka topics need at least 1",
                self.partitions
            )));
        }
        if self.receive_buffer == 0 {
            return Err(Error::invalid("receive_buffer is 0; it must be at least 1"));
        }

        let all = self.common.keys().chain(self.producer.keys());
        match all.chain(self.consumer.keys()).find(|key| is_managed(key)) {
            Some(key) => Err(config_error(format!(
                "librdkafka property `{key}` is set by wharf itself to keep its delivery \
                 guarantees and cannot be overridden"
            ))),
            None => Ok(()),
        }
    }

    /// Settings shared by every client.
    pub(crate) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.common {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer waiting for every in-sync replica.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // The broker's default `message.max.bytes` (1 MiB plus 12 bytes of batch
            // framing); wharf's own limit sits below it, see `MAX_MESSAGE_BYTES`.
            .set("message.max.bytes", "1048588")
            // The watch that replaces a producer without brokers reads these.
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
    }

    /// A group member whose offsets only wharf commits.
    pub(crate) fn consumer(&self, group: &str) -> ClientConfig {
        let session = self.session_timeout.as_millis().to_string();
        let heartbeat = (self.session_timeout / 3).as_millis().to_string();
        let mut config = self.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session)
            .set("heartbeat.interval.ms", heartbeat)
            // librdkafka sends one fetch at a time per broker, and the broker holds an
            // empty one for up to this long. Resuming paused partitions waits for that
            // fetch to return, so the 500 ms default stalls a consumer that catches up
            // on a backlog; 100 ms keeps the stall short for a few idle fetches a second.
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            // The watch that replaces a consumer without brokers reads these.
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self::from_env()
    }
}

fn is_managed(key: &str) -> bool {
    MANAGED.contains(&key)
}

/// Whether a property's value must never be shown.
pub(crate) fn is_secret(key: &str) -> bool {
    SECRET_MARKERS.iter().any(|marker| key.contains(marker))
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Property values shown in `Debug`, with secrets replaced.
struct Redacted<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.iter().map(|(key, value)| {
            let value = if is_secret(key) {
                "<redacted>"
            } else {
                value.as_str()
            };
            (key, value)
        });
        f.debug_map().entries(shown).finish()
    }
}

/// Hand-written so that passwords, keys and tokens never reach a log.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &Redacted(&self.common))
            .field("producer_properties", &Redacted(&self.producer))
            .field("consumer_properties", &Redacted(&self.consumer))
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("session_timeout", &self.session_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("receive_buffer", &self.receive_buffer)
            .field("registry_topic", &self.registry_topic)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret_values_but_names_their_keys() {
        let config = KafkaConfig::new("b:9092")
            .property("sasl.password", "hunter2")
            .property("ssl.key.pem", "PRIVATE")
            .consumer_property("sasl.oauthbearer.client.secret", "s3cr3t")
            .property("sasl.username", "orders");

        let shown = format!("{config:?}");

        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(shown.contains("orders"), "{shown}");
    }

    #[test]
    fn overriding_a_guarantee_property_is_a_config_error_naming_it() {
        let config = KafkaConfig::new("b:9092").consumer_property("enable.auto.commit", "true");

        let error = config.validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("enable.auto.commit"), "{error}");
    }

    #[test]
    fn zero_partitions_is_refused() {
        let error = KafkaConfig::new("b:9092")
            .partitions(0)
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("partitions is 0"), "{error}");
    }
}
