//! Apache Kafka backend for wharf, through [`rdkafka`] (librdkafka).
//!
//! [`KafkaBackend`] implements [`wharf_core::Backend`]: a wharf topic is a Kafka topic,
//! a subscription is a consumer group of its own (so every subscription of a topic gets
//! every message), and the things Kafka lacks, per-message acks, delayed redelivery and
//! dead-lettering, are built from offsets and extra topics as described below.
//!
//! ```no_run
//! # async fn example() -> wharf_core::Result<()> {
//! use wharf_core::{Backend, Message, SubscriptionSpec};
//! use wharf_kafka::{KafkaBackend, KafkaConfig};
//!
//! let kafka = KafkaBackend::connect(KafkaConfig::from_env()).await?;
//! kafka.create_topic("orders").await?;
//! kafka.create_subscription(&SubscriptionSpec::new("orders", "billing")).await?;
//!
//! let publisher = kafka.publisher("orders").await?;
//! let message = Message::new("order 42").with_ordering_key("customer-7");
//! // A failed publish hands the message back along with the error.
//! publisher.publish(message).await.map_err(|failed| failed.error)?;
//! # Ok(()) }
//! ```
//!
//! # Delivery semantics
//!
//! At least once. `publish` returns once the broker confirmed the record with
//! `acks=all` from an idempotent producer, so librdkafka's internal retries neither
//! duplicate nor reorder it. Records of one `publish_batch` are all enqueued before any
//! confirmation is awaited, so `linger.ms` (5 ms) packs many into each request.
//!
//! On the consuming side each subscriber runs a poll thread that reads the group's
//! partitions into a buffer that `receive` drains. An ack marks the record's offset
//! settled; every `commit_interval` (500 ms) wharf commits, per partition, the lowest
//! offset not yet settled. Acks may come in any order, and a commit never passes an
//! unsettled record, so a consumer that stops (or crashes) loses nothing: the next owner
//! of the partition starts at that offset, and records settled after it are delivered
//! again. On a rebalance the revoked partitions' settled offsets are committed at once,
//! their buffered records are dropped for the new owner to read, and settling a record
//! from a revoked partition fails with `LeaseExpired` instead of moving the new owner's
//! offsets. Closing a subscriber commits what was settled and leaves the group.
//!
//! The ordering key is the Kafka record key, so records with one key share a partition
//! and arrive in order on their first delivery; a nacked record comes back later through
//! the retry topic, after records behind it.
//!
//! Long handlers are safe: the poll thread keeps calling poll whatever handlers do, so
//! `max.poll.interval.ms` (librdkafka's default of 5 minutes) is never exceeded and the
//! consumer stays in its group. When `receive` falls `receive_buffer` deliveries (10,000)
//! or [`RECEIVE_BUFFER_BYTES`] (64 MiB of payload) behind, the thread pauses the
//! partitions rather than stop polling, and resumes them at half. Resuming waits for the
//! fetch in flight (`fetch.wait.max.ms`, which wharf sets to 100 ms), a pause a large
//! buffer hides from all but the fastest consumers. Kafka has no per-message
//! lease: a record stays with its consumer for as long as its partition is assigned, so
//! `lease_expiry` is false and [`extend_lease`](wharf_core::Delivery::extend_lease)
//! returns `Unsupported`; the worker's keep-alive skips it. The subscription's `lease`
//! setting has no Kafka counterpart and is not used.
//!
//! A consumer group hands each partition to one member, so a subscriber that stays in
//! the group while nobody receives from it would keep its partitions, and the records
//! it buffered, from the other members. A subscriber therefore leaves its group once no
//! `receive` call has run for `idle_timeout` (10 s) and none of its deliveries awaits
//! settlement (a running handler keeps it in); its partitions and buffered records then
//! go to the other members, and its next `receive` joins again. This is Kafka's own
//! `max.poll.interval.ms` rule, applied to `receive` rather than to librdkafka's poll.
//!
//! A newly created subscription starts at the end of its topic: it receives what is
//! published after `create_subscription`, as on the other backends, not the topic's
//! history. Joining a consumer group takes time: the first member of a group waits for
//! the broker's `group.initial.rebalance.delay.ms` (3 s by default; wharf's test broker
//! sets 0 and then joins in well under a second), and a member joining a group that
//! already has members waits for them to learn of the rebalance at their next heartbeat
//! (every 2 s, a third of the 6 s `session.timeout.ms`). The first delivery of a fresh
//! subscriber may therefore take a few seconds.
//!
//! Broker restarts: librdkafka reconnects by itself. Publishes issued meanwhile wait for
//! the broker (up to `message.timeout.ms`, 5 minutes by default) and confirmed ones are
//! kept; receive returns nothing until the broker is back; commits that fail are sent
//! again.
//!
//! A restart can also leave a client with no broker at all. librdkafka (2.10 and later;
//! the bundled one is 2.12) forgets every broker a metadata answer leaves out, and a
//! broker that is shutting down may answer with an empty list. A client that knew only
//! that broker, as on a single-broker cluster, then has nothing to connect to and never
//! goes back to `bootstrap.servers` (about one restart in seven here). wharf watches for
//! that state: the producer and every consumer emit librdkafka statistics each second,
//! and a client whose statistics list no broker for 5 s is replaced by a new one with the
//! same settings.
//!
//! - The old producer's unconfirmed records fail with `Unavailable`, which is retryable,
//!   for their callers to publish again, instead of waiting out `message.timeout.ms`;
//!   confirmed ones are on the broker already. A record that reached the broker just
//!   before the client lost it may be stored and still fail here, so its publish again
//!   is a duplicate: at least once, as everywhere. Later publishes use the new producer,
//!   and [`KafkaBackend::producer`] returns the producer in use when it is called.
//! - A consumer's partitions are forgotten as on a revocation, without a commit (there
//!   is no broker to take one), and its successor joins the group: the group hands the
//!   partitions out again from their committed offsets, which never passed an unsettled
//!   record, so nothing is skipped. What was settled since the last commit is delivered
//!   again, and settling a delivery from before the replacement fails with
//!   `LeaseExpired`.
//! - A broker that is down but known stays in the statistics, so an outage alone never
//!   replaces a client. `statistics.interval.ms=0` (a producer or consumer property)
//!   turns the watch off.
//! - The admin client is not watched: should it end up without brokers, the calls that
//!   need it (creating and deleting, opening publishers, the operations below) time out
//!   until the backend is connected again. It asks for metadata far less often than the
//!   producer and consumers, so it rarely meets a broker that is shutting down.
//!
//! Why a watchdog rather than another librdkafka: no rdkafka release bundles one that
//! re-bootstraps a client left without brokers (rdkafka 0.39, the newest, bundles 2.12.1;
//! 0.38 bundles 2.10.0, which forgets brokers the same way), and the newest bundle from
//! before 2.10 is librdkafka 2.3.0, in rdkafka 0.37. Pinning that would hold the whole
//! workspace (the service smoke tests and benchmarks too) two years of librdkafka fixes
//! back, and the stall would return with the next upgrade. The watch catches a client
//! without brokers however it got there, with any librdkafka, for one statistics
//! snapshot a second per client. It can go once librdkafka re-bootstraps such a client
//! by itself; `tests/broker_restart.rs`, which `scripts/test` runs, restarts the broker
//! under load and logs each replacement with `RUST_LOG=wharf_kafka=warn`.
//!
//! # Limits
//!
//! - A message may be [`MAX_MESSAGE_BYTES`] (1,000,000) counting payload, attribute keys
//!   and values, and the key; larger ones fail with `PayloadTooLarge` naming both sizes
//!   before anything is sent. The broker's default `message.max.bytes` is 1,048,588 for a
//!   whole record batch; the rest is left for header framing and batch overhead. A
//!   cluster with a higher limit still gets at most this from wharf.
//! - No delayed publish (`max_publish_delay` is `None`): Kafka has no such thing.
//! - Nack delays up to [`MAX_NACK_DELAY`] (one day). A retried record holds back the
//!   committed offset of its retry partition until it is settled, so after a restart the
//!   retries settled behind a long delay are delivered again.
//! - No deduplication ids (the idempotent producer only removes its own retries).
//! - Topic and subscription names follow Kafka's topic rules: ASCII letters, digits, `.`,
//!   `_`, `-`, at most 249 characters including the `-retry` / `-dlq` suffixes.
//!
//! # Nack / delay / dead-letter mapping
//!
//! `create_subscription` creates, next to the topic, `<subscription>-retry` and the
//! dead-letter topic (`<subscription>-dlq` unless named), each with the configured number
//! of partitions (3 by default), and stores the subscription's topic in the compacted
//! registry topic `wharf-subscriptions`.
//!
//! - **nack(delay)** publishes the record to `<subscription>-retry` with its key, payload
//!   and headers plus bookkeeping headers `wharf-attempt` (the next attempt number),
//!   `wharf-not-before` (milliseconds since the epoch), `wharf-failed-first`,
//!   `wharf-published-at` and `wharf-origin` (the delivery id, unchanged across
//!   attempts), and settles the original once that record is confirmed. The group reads
//!   the retry topic along with the main topic; a retried record that is not yet due
//!   waits in memory (the retry partitions are paused beyond 10,000 waiting), so neither
//!   the main topic nor other partitions wait for it, and it comes back in the same
//!   process. Bookkeeping headers are removed from the attributes handlers see.
//! - **dead_letter** publishes the record with its original key, payload and headers
//!   plus the wharf envelope headers (`wharf-dead-letter-reason`, `wharf-attempts`, ...)
//!   to the dead-letter topic, then settles it.
//! - The dead-letter subscriber is the consumer group `<dead-letter topic>` on that
//!   topic; nacking there re-appends the record to the dead-letter topic with a
//!   not-before time, and dead-lettering there is `Unsupported`.
//! - Kafka keeps no delivery count, so `max_delivery_attempts` is stored but not
//!   enforced by the broker (`native_dead_letter` is false); the worker's retry policy
//!   dead-letters by attempt. A record redelivered after a consumer crash keeps its
//!   attempt number.
//!
//! # Operating queues
//!
//! The five operations of [`Backend`](wharf_core::Backend) look at a subscription's
//! consumer groups from outside, with a short-lived consumer that carries the group's id
//! only to read its committed offsets: it assigns partitions itself and never
//! subscribes, so it neither joins the group (its members see no rebalance) nor commits.
//!
//! [`stats`](wharf_core::Backend::stats) counts, per partition, the high watermark less
//! where the group resumes: its committed offset, or the low watermark where it has none
//! (or one outside the log), as `auto.offset.reset=earliest` would.
//!
//! - `consumer_lag`: that count over the main topic for the subscription's group. It
//!   holds ready and in-flight records alike, and a settled record until the next commit
//!   (`commit_interval`) passes it, which waits for every record before it on its
//!   partition.
//! - `delayed`: the same count for `<subscription>-retry`: every nacked record not yet
//!   committed, whether its delay has run out or not; Kafka cannot tell without reading
//!   each record.
//! - `dead_lettered`: the same count on the dead-letter topic for the dead-letter
//!   subscriber's group (named after that topic): what its next reader gets. Peek leaves
//!   it alone; redrive and purge bring it down.
//! - `oldest_age`: the record at each partition's resume offset on the main and retry
//!   topics is read, and the oldest publish time wins; a retried record counts from its
//!   original publish (its `wharf-published-at` header). Known `None` when nothing lags.
//! - `ready` and `in_flight` are unknown: Kafka does not know which records a consumer
//!   holds in flight, and `consumer_lag` counts both.
//! - A missing topic makes its figure unknown with a reason naming it; `doctor` says how
//!   to create it.
//!
//! `backlog()` is `consumer_lag + delayed`.
//!
//! [`peek_dead_letters`](wharf_core::Backend::peek_dead_letters) reads up to `max`
//! records of each dead-letter partition from where the dead-letter group resumes, with a
//! consumer that never commits, and returns the oldest `max` by record timestamp, with
//! the ids, attributes and envelope the dead-letter subscriber would deliver. Nothing
//! moves. (Receiving and nacking instead would not do: a nack on the dead-letter
//! subscriber appends a copy to the dead-letter topic.)
//!
//! [`purge_dead_letters`](wharf_core::Backend::purge_dead_letters) deletes the
//! dead-letter topic's records up to the high watermarks it saw first (Kafka's
//! `DeleteRecords`, which needs the DELETE permission on the topic), and returns how many
//! of them the dead-letter group had not consumed: the `dead_lettered` figure it cleared.
//! It then commits the group at those ends so Kafka's own tools show no lag either; a
//! group with running members refuses a commit from outside, which is harmless, as they
//! commit for themselves. Deleting rather than only committing works while a dead-letter
//! subscriber runs, and frees the disk. Caveats: it cannot be undone, it removes the
//! records for every reader of the topic (not only wharf's group), dead letters written
//! after it started stay, and a running dead-letter subscriber may still deliver records
//! it had buffered.
//!
//! [`redrive_publisher`](wharf_core::Backend::redrive_publisher) publishes into
//! `<subscription>-retry`, which only this subscription's group reads, so other
//! subscriptions of the topic do not see redriven messages. A redriven record carries no
//! `wharf-attempt` or `wharf-not-before` header: it is due at once and starts again at
//! attempt 1, with its retry-topic position as its id. The redrive reads through a
//! dead-letter subscriber, a member of the dead-letter group; a fresh member of an empty
//! group gets its first records within about 100 ms here, but if another dead-letter
//! subscriber of the subscription is running, it keeps its partitions until a rebalance
//! and the redrive's first receive may come back empty within its idle time, ending it
//! early: close other dead-letter readers first. A filtered redrive returns the dead
//! letters it skips with the dead-letter subscriber's nack, which appends them again at
//! the end of the dead-letter topic (same id, new offset) and commits the originals.
//!
//! [`doctor`](wharf_core::Backend::doctor) reports as errors: a subscription missing from
//! the registry topic; a registration reading another topic or writing dead letters to
//! another topic than the application expects; a missing main, retry or dead-letter
//! topic (the fix names the topic, its partitions and, for the retry topic,
//! `retention.ms`); partitions without a leader; and `cleanup.policy=compact` on the
//! retry or dead-letter topic. It warns of a retry topic whose `retention.ms` is below
//! [`MAX_NACK_DELAY`], one with fewer partitions than the main topic (retries then reach
//! only as many members), and a group with no committed offset on the main topic (its
//! next subscriber reads the topic from its earliest record). The lease has no Kafka
//! counterpart and Kafka has no delivery limit (`native_dead_letter` is false), so
//! neither is checked.
//!
//! # Configuration and credentials
//!
//! [`KafkaConfig`] takes the bootstrap brokers (`WHARF_KAFKA_BROKERS`, default
//! `127.0.0.1:9092`) and passes librdkafka properties through untouched: TLS
//! (`security.protocol=SSL`, `ssl.ca.location`, ...) and SASL PLAIN, SCRAM and
//! OAUTHBEARER (`sasl.mechanism`, `sasl.username`, `sasl.password`). Kerberos (GSSAPI)
//! needs rdkafka's `gssapi` feature, which this build does not turn on. The properties
//! that carry wharf's guarantees (`group.id`, `enable.auto.commit`,
//! `enable.auto.offset.store`, `enable.idempotence`, `acks`) are refused with a `Config`
//! error. `Debug` of the configuration hides values of keys that hold secrets, and
//! configuration errors name the key but never the value.
//!
//! # URL
//!
//! [`KafkaBackend::from_url`] (and so `wharf::connect`) takes
//! `kafka://[user:password@]host[:port][,host[:port]...][?option=value&...]`, for
//! example `kafka://b1:9092,b2:9092?partitions=6`. A broker without a port gets 9092.
//! Credentials in the URL (percent-encoded) become `sasl.username` and `sasl.password`
//! and turn on SASL over TLS; they never appear in errors, logs or `Debug`. wharf's own
//! options (`subscription`, `max_attempts`, ... see [`wharf_core::url_options`]) are left
//! to the `wharf` crate; any other unknown option is a `Config` error naming it.
//! Durations are written like `500ms`, `6s` or `2m`.
//!
//! | Option | Meaning | Default |
//! |---|---|---|
//! | `partitions` | partitions of the topics wharf creates (main, retry, dead-letter) | 3 |
//! | `replication_factor` | their replication factor; -1 asks the broker | -1 |
//! | `session_timeout` | consumer group session timeout | 6s |
//! | `commit_interval` | how often settled offsets are committed | 500ms |
//! | `idle_timeout` | how long a subscriber nobody receives from stays in its group | 10s |
//! | `receive_buffer` | deliveries buffered ahead of `receive` (at most 64 MiB) | 10000 |
//! | `operation_timeout` | admin and metadata requests | 30s |
//! | `registry_topic` | compacted topic holding subscription settings | `wharf-subscriptions` |
//! | `client_id` | librdkafka `client.id` | `rdkafka` |
//! | `security_protocol` | `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl` | see below |
//! | `sasl_mechanism` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` | `PLAIN` |
//! | `ssl_ca_location` | CA certificate file for TLS | the system's |
//! | `librdkafka.<property>` | any librdkafka property, passed through as is | none |
//!
//! `security_protocol` defaults to `plaintext`, or to `sasl_ssl` when the URL carries
//! credentials or a `sasl_mechanism`; `sasl_mechanism` applies only under SASL. The
//! properties that carry wharf's guarantees (`group.id`, `enable.auto.commit`, ...) are
//! refused through `librdkafka.*` as they are through [`KafkaConfig::property`].
//!
//! librdkafka is compiled from the source bundled with `rdkafka-sys` (the `cmake-build`
//! feature, needing `cmake`, the curl, OpenSSL and zlib headers at build time) rather
//! than linked from Debian's `librdkafka-dev`: Debian 12 ships librdkafka 2.0, older
//! than the 2.12 that rdkafka 0.39 is written and tested against, and a bundled build
//! behaves the same on every machine whatever its distribution ships.
//!
//! # Reaching the native client
//!
//! [`KafkaBackend::producer`] and [`KafkaBackend::admin`] return the rdkafka producer
//! and admin client; [`KafkaTopic::native`] the producer behind a publisher. Messages
//! are ordinary Kafka records (payload bytes unchanged, attributes as UTF-8 headers, the
//! ordering key as the record key), so any Kafka client reads what wharf publishes, and
//! wharf reads what they publish: non-UTF-8 header values are replaced (with a warning),
//! and a repeated header keeps its last value.
//!
//! # Error mapping
//!
//! All in one place (`error.rs`): unknown topics or groups → `NotFound`; topic exists →
//! `AlreadyExists`; authorisation, SASL and TLS failures → `PermissionDenied`; record
//! too large → `PayloadTooLarge`; timeouts → `Timeout`; a full local queue or a broker
//! quota → `Throttled`; unreachable brokers, missing leaders, coordinator moves and the
//! unsent records of a replaced producer → `Unavailable`; invalid topic settings →
//! `InvalidArgument`; bad properties → `Config`; anything else → `Internal`. The rdkafka
//! error stays reachable as `source()`.

mod admin;
mod backend;
mod config;
mod error;
mod headers;
mod offsets;
mod operations;
mod poller;
mod producer;
mod registry;
mod state;
mod subscription;
mod url_config;
mod watchdog;

use std::time::Duration;

use wharf_core::Capabilities;

pub use backend::KafkaBackend;
pub use config::{
    BROKERS_ENV, DEFAULT_BROKERS, DEFAULT_COMMIT_INTERVAL, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_PARTITIONS, DEFAULT_RECEIVE_BUFFER, DEFAULT_REGISTRY_TOPIC,
    DEFAULT_SESSION_TIMEOUT, KafkaConfig, RECEIVE_BUFFER_BYTES,
};
pub use producer::{KafkaTopic, LogContext, WatchContext};
pub use rdkafka;
pub use subscription::KafkaSubscription;
pub use url_config::{DEFAULT_PORT, PASS_THROUGH_PREFIX, SCHEME};

/// The backend's name in errors and logs.
pub const BACKEND: &str = "kafka";

/// Largest message: the broker's default `message.max.bytes` (1,048,588, Kafka's
/// `server.properties` reference) less room for header framing and batch overhead.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Most messages per send: wharf's bound, well under librdkafka's local queue of 100,000
/// (`queue.buffering.max.messages`).
pub const MAX_BATCH_MESSAGES: usize = 10_000;

/// Most bytes per send: wharf's bound, so one send holds at most 16 MiB of records in
/// librdkafka's local queue (1 GiB, `queue.buffering.max.kbytes`) while it waits for their
/// confirmations; larger batches are split and sent one part after another.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Longest nack delay: wharf's bound, so retried records wait in memory for at most a
/// day and the retry topic's 7-day retention ([`RETRY_RETENTION`]) always covers them.
pub const MAX_NACK_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Retention of retry topics: wharf's choice, well beyond the longest nack delay.
pub const RETRY_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What the Kafka backend offers.
pub fn capabilities() -> Capabilities {
    Capabilities {
        backend: BACKEND,
        max_message_bytes: MAX_MESSAGE_BYTES,
        max_batch_messages: MAX_BATCH_MESSAGES,
        max_batch_bytes: MAX_BATCH_BYTES,
        max_attributes: None,
        max_publish_delay: None,
        max_nack_delay: MAX_NACK_DELAY,
        min_lease: Duration::ZERO,
        max_lease: None,
        native_delay: false,
        native_dead_letter: false,
        ordering: true,
        fan_out: true,
        deduplication: false,
        lease_expiry: false,
        backlog_stats: true,
    }
}
