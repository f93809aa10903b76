//! The RabbitMQ backend for wharf, through [lapin](https://docs.rs/lapin).
//!
//! [`RabbitMq`] implements [`wharf_core::Backend`]: topics are exchanges, subscriptions
//! are durable queues bound to them, and everything a RabbitMQ user expects is on by
//! default: publisher confirms, persistent messages, quorum queues, manual acks with a
//! prefetch, dead-letter exchanges. Delays need no plugin.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wharf_core::{Backend, Message, SubscriptionSpec};
//! use wharf_rabbitmq::{RabbitMq, RabbitMqConfig};
//!
//! let config = RabbitMqConfig::from_env().prefetch(8);
//! let backend = RabbitMq::with_config(config).await?;
//! backend.create_topic("orders").await?;
//! let spec = SubscriptionSpec::new("orders", "billing").max_delivery_attempts(5);
//! backend.create_subscription(&spec).await?;
//!
//! backend.publisher("orders").await?.publish(Message::new("order #1")).await?;
//! let subscriber = backend.subscriber("billing").await?;
//! if let Some(delivery) = subscriber.receive_one(Duration::from_secs(5)).await? {
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Delivery semantics
//!
//! At least once. A publish returns only after the broker's publisher confirm, which
//! for a persistent message on a quorum queue means a majority of nodes wrote it to
//! disk. Publishes are pipelined: a batch is written back to back and its confirms are
//! awaited together. A message that reaches no queue is returned by the broker
//! (`mandatory`) and the publish fails with [`NotFound`](wharf_core::ErrorKind::NotFound),
//! handing the message back; a broker nack fails with
//! [`Unavailable`](wharf_core::ErrorKind::Unavailable).
//!
//! Each subscriber runs one consumer with manual acks and `basic.qos` set to
//! [`RabbitMqConfig::prefetch`], which should equal the worker's concurrency so the
//! broker never pushes more than can be processed. Deliveries wait in a buffer of that
//! size until `receive` takes them.
//!
//! A subscriber holds that buffer only while it is used. When it is closed or dropped,
//! and after [`RabbitMqConfig::idle_release`] without a receive (5 s by default), it
//! cancels its consumer and hands the buffered deliveries, which its caller never saw,
//! back to the queue, so a stopped worker whose subscriber is still open does not sit
//! on messages another consumer could take. They go back as confirmed copies that keep
//! their attempt number, because a plain return counts as a failed delivery on a quorum
//! queue. The next receive starts consuming again.
//!
//! The attempt number is `x-delivery-count + 1` on quorum queues, where the broker
//! counts every return (nack, consumer crash, disconnect), so it survives consumer
//! restarts. Retries that are republished (delayed nacks, and every nack on a classic
//! queue) carry the attempts so far in the `wharf-prior-attempts` header, which is
//! added on top. Classic queues have no counter: a redelivery there counts one
//! earlier attempt, however many there were. **Shortcoming:** for a copy handed back
//! by an idle or closing subscriber, or republished by a delayed nack, the broker's
//! counter starts again from zero, and with it the `x-delivery-limit` of
//! [`max_delivery_attempts`](wharf_core::SubscriptionSpec): the attempt number wharf
//! reports and the [`Worker`](wharf_core::Worker)'s retry policy stay exact, but the
//! broker alone would allow that many more returns. It would take the limit being
//! known to the subscriber (or a broker-side counter that survives a republish) to lift
//! this.
//!
//! When the connection drops, in-flight publishes fail with a retryable
//! [`Unavailable`](wharf_core::ErrorKind::Unavailable) error (never reported as sent
//! unless confirmed), deliveries not yet acked return to the queue, and their later
//! settlement fails with [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired). The next
//! call reconnects, with a doubling pause between failed attempts
//! ([`RabbitMqConfig::reconnect_backoff`]); consumers reconnect by themselves and log
//! at `warn` while degraded. A receive returns within its wait, and once its buffer is
//! empty reports the fault instead of hanging on a dead channel.
//!
//! **Leases.** RabbitMQ holds an unacked delivery for its consumer until it is settled
//! or the consumer's channel closes; there is no visibility timeout to extend. So
//! [`Capabilities::lease_expiry`](wharf_core::Capabilities::lease_expiry) is `false`,
//! `max_lease` is `None` and `extend_lease` is
//! [`Unsupported`](wharf_core::ErrorKind::Unsupported); a worker's handler may run as
//! long as it needs. The one bound is the broker's `consumer_timeout` (30 minutes by
//! default since 3.8.15): a delivery unacked for longer makes the broker close the
//! channel, the delivery is redelivered, and settling it then fails with
//! [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired). Raise it in `rabbitmq.conf`
//! for longer handlers. [`SubscriptionSpec::lease`](wharf_core::SubscriptionSpec) is
//! not used.
//!
//! # Limits
//!
//! See [`limits`]: 16 MiB per message ([`limits::MAX_MESSAGE_BYTES`]), up to 120 KiB
//! of attributes (the headers must fit one frame), header names of at most 255 bytes,
//! topic and subscription names of at most 229 bytes (255 less room for wharf's
//! suffixes) not starting with `amq.`, delays up to a week ([`limits::MAX_DELAY`]).
//! No ordering keys, no deduplication ids, no ordered subscriptions: they are refused
//! with [`Unsupported`](wharf_core::ErrorKind::Unsupported).
//!
//! # Nack / delay / dead-letter mapping
//!
//! | wharf | RabbitMQ |
//! |---|---|
//! | topic `T` | durable exchange `T`, fanout ([`TopicKind`]) |
//! | subscription `S` | durable quorum queue `S` ([`QueueType`]) bound to `T` |
//! | `ack` | `basic.ack` |
//! | `nack(0)` on a quorum queue | `basic.nack` with requeue; the broker counts it |
//! | `nack(0)` on a classic queue | republish to `S` with `wharf-prior-attempts`, then ack |
//! | `nack(d)` | republish to delay queue `S.delay.<ms>`, then ack |
//! | delayed publish | publish to delay queue `T.publish-delay.<ms>` |
//! | `dead_letter(reason)` | publish with the envelope headers to exchange `S.dlx`, then ack |
//! | `max_delivery_attempts = n` | `x-delivery-limit = n - 1` on the quorum queue |
//! | dead-letter queue | `S-dlq` (or the spec's name), bound to `S.dlx` |
//!
//! Delays use only RabbitMQ's own features: a classic queue per delay bucket holds the
//! message for exactly its `x-message-ttl`, then dead-letters it through the default
//! exchange back to the work queue (or into the topic's exchange). Delays are rounded up
//! to whole milliseconds and, above 100 ms, to two significant digits, so a message is
//! never early and at most 10 % late. Each delay queue has an `x-expires` of twice its
//! delay plus a minute and is re-declared on use, so idle ones disappear and none
//! disappears while it still holds a message. The delayed-message plugin is not used.
//! Dead-lettering out of a classic delay queue is not covered by publisher confirms:
//! a node crash at that instant can lose the message (RabbitMQ's own caveat).
//!
//! A message the broker dead-letters by itself (delivery limit, or a rejection by
//! another client) arrives in the dead-letter queue with its `x-death` record turned
//! into wharf's envelope attributes (`wharf-dead-letter-reason`, `wharf-source`), so
//! [`wharf_core::Envelope`] reads it like an explicit one. `wharf-attempts` is there
//! for the delivery limit when the backend created the subscription itself: the broker
//! does not carry the work queue's delivery count over, so the attempts come from the
//! spec's `max_delivery_attempts`. A subscription created elsewhere, or a rejection by
//! another client, leaves the attempts out.
//!
//! # Configuration and credentials
//!
//! [`RabbitMqConfig`] takes an AMQP URL: `amqp://user:password@host:5672/vhost`, or
//! `amqps://` for TLS, verified against the platform's trusted roots. Credentials come
//! from the URL or from [`RabbitMqConfig::credentials`]; they never reach a log or an
//! error, and `Debug` masks them. [`RabbitMqConfig::from_env`] reads
//! `WHARF_RABBITMQ_URL`, and `WHARF_RABBITMQ_MANAGEMENT_URL` if set. Other settings:
//! queue type, exchange type, prefetch, `mandatory`, connect and confirm timeouts,
//! reconnect backoff, idle release, connection name and the management API's URL
//! ([operating queues](#operating-queues)), each also a URL option (see [URL](#url)).
//!
//! # URL
//!
//! [`RabbitMq::from_url`] (and [`RabbitMqConfig::from_url`]) read
//! `amqp://[user:password@]host[:port][/vhost][?options]`, or `amqps://` for TLS (port
//! 5671 by default). The vhost is percent-encoded: `%2f` is `/`. wharf's own options
//! ([`wharf_core::url_options`], such as `subscription` or `concurrency`) are skipped;
//! any other option not in this table is refused with
//! [`Config`](wharf_core::ErrorKind::Config), naming it and listing
//! [`URL_OPTIONS`]. Durations read as `250ms`, `30s`, `5m`.
//!
//! | Option | Meaning | Default |
//! |---|---|---|
//! | `prefetch` | unacked deliveries one subscriber may hold, 1 to 65535 | `16` |
//! | `queue_type` | `quorum` or `classic` queues for subscriptions ([`QueueType`]) | `quorum` |
//! | `topic_kind` | `fanout` or `topic` exchanges for topics ([`TopicKind`]) | `fanout` |
//! | `mandatory` | `true`: a publish reaching no queue fails; `false`: dropped | `true` |
//! | `connect_timeout` | longest one connection attempt may take | `5s` |
//! | `connection_timeout` | the same in milliseconds, as in RabbitMQ's URI spec | — |
//! | `confirm_timeout` | longest a publish waits for the broker's confirm | `30s` |
//! | `reconnect_min` | pause after the first failed reconnect; pauses double | `100ms` |
//! | `reconnect_max` | longest pause between reconnects | `5s` |
//! | `idle_release` | idle time after which a subscriber hands its buffer back | `5s` |
//! | `connection_name` | the connection's name in the management UI and `rabbitmqctl` | `wharf` |
//! | `management_url` | the management API's URL, percent-encoded | AMQP host, port 15672 |
//! | `heartbeat` | heartbeat in seconds, `0` for none (for lapin) | the server's (60) |
//! | `frame_max` | largest frame in bytes (for lapin) | the server's |
//! | `channel_max` | most channels on the connection (for lapin) | the server's |
//! | `auth_mechanism` | `plain`, `amqplain`, `external`, `anonymous` (for lapin) | `plain` |
//!
//! ```
//! use wharf_rabbitmq::{QueueType, RabbitMqConfig};
//!
//! let url = "amqps://billing:s3cret@rabbit.internal/orders?prefetch=32&queue_type=classic";
//! let config = RabbitMqConfig::from_url(url)?;
//! assert!(!format!("{config:?}").contains("s3cret"));
//!
//! let error = RabbitMqConfig::from_url("amqp://rabbit/%2f?prefech=32").unwrap_err();
//! assert!(error.to_string().contains("prefech"));
//! # Ok::<(), wharf_core::Error>(())
//! ```
//!
//! # Operating queues
//!
//! [`stats`](wharf_core::Backend::stats),
//! [`peek_dead_letters`](wharf_core::Backend::peek_dead_letters),
//! [`purge_dead_letters`](wharf_core::Backend::purge_dead_letters),
//! [`redrive_publisher`](wharf_core::Backend::redrive_publisher) and
//! [`doctor`](wharf_core::Backend::doctor) read two sources: AMQP itself, and the HTTP
//! API of the management plugin (`rabbitmq-plugins enable rabbitmq_management`). The
//! API is found at [`RabbitMqConfig::management_url`]: by default the AMQP host on
//! port 15672 (15671 over HTTPS for `amqps://`), logged in to with the AMQP
//! credentials, whose user needs the `monitoring` tag (or `management`, or
//! `administrator`). Where the API cannot be reached, what only it knows is
//! [`Figure::Unknown`](wharf_core::Figure) with the reason and the fix, and nothing
//! else fails.
//!
//! Where each figure of [`SubscriptionStats`](wharf_core::SubscriptionStats) comes from:
//!
//! - `ready`: the API's sample of `messages_ready`; without the API, a passive
//!   `queue.declare` (live).
//! - `in_flight`: the API's sample of `messages_unacknowledged`, every unacked
//!   delivery, including those a subscriber has prefetched into its buffer. Unknown
//!   without the API.
//! - `delayed`: the messages in the subscription's nack delay queues `S.delay.<ms>`
//!   and in the publish-delay queues `T.publish-delay.<ms>` of each topic `T` it is
//!   bound to, listed through the API and counted live over AMQP. Unknown without
//!   the API.
//! - `dead_lettered`: the dead-letter queue's ready messages, over AMQP (live).
//!   Unknown if that queue does not exist.
//! - `oldest_age`: known to be none when nothing waits. Otherwise known only for a
//!   classic queue with nothing in flight, from the `timestamp` property (whole
//!   seconds) of the head message of the queue and of each delay queue. Unknown on
//!   quorum queues, which do not report `head_message_timestamp`, and while
//!   deliveries are in flight, since the head is then not the oldest message.
//! - `consumer_lag`: always unknown: a queue, not a log.
//!
//! The API's samples lag: the plugin collects every `collect_statistics_interval`
//! (5 s by default) and quorum queues report on their own 5 s tick on top, so `ready`
//! and `in_flight` may be ten seconds old, while `delayed` and `dead_lettered` are
//! live; a message moving between them is counted twice, or not at all, for that
//! long. A queue created moments ago has no sample yet: `stats` waits for its first,
//! up to 15 s. [`Capabilities::backlog_stats`](wharf_core::Capabilities) is `true`,
//! but without the management plugin the backlog is unknown.
//!
//! **Peek** takes up to `max` messages from the head of the dead-letter queue with
//! `basic.get`, holding each unacked, and gives them back according to the queue's
//! type (from the API; otherwise the configured [`QueueType`]). A classic queue gets
//! them back with one `basic.nack` (multiple, requeue): in their places, nothing
//! counted. A quorum queue counts every return in `x-delivery-count` toward its
//! delivery limit (RabbitMQ 4 gives every quorum queue one, 20 by default, past which
//! a dead-letter queue with no dead-letter exchange of its own drops the message), so
//! each peeked message is replaced by a confirmed copy (the same body and properties,
//! without `x-delivery-count`, with wharf's envelope written out next to `x-death`)
//! and then acked. Caveats: a quorum queue puts the copies at its back (as it does
//! with any returned message on RabbitMQ 3.x), so a peek of fewer than all dead
//! letters moves those it showed behind the others, while a peek of all keeps the
//! order; if the connection drops between a copy's confirm and the original's ack,
//! the dead letter is there twice, never lost; and messages a dead-letter consumer
//! holds unacked at that moment are not seen.
//!
//! **Purge** is `queue.purge` on the dead-letter queue, and returns the count the
//! broker reports. Messages a consumer holds unacked (a running redrive) are not
//! purged and return to the queue once released.
//!
//! **Redrive**: [`redrive_publisher`](wharf_core::Backend::redrive_publisher)
//! publishes straight into the subscription's queue through the default exchange
//! (routing key: the queue's name), confirmed and `mandatory`, so the topic's other
//! subscriptions do not get the messages again; a delayed message waits in the
//! subscription's nack delay queue. [`redrive`](wharf_core::operations::redrive) reads
//! through the dead-letter subscriber, which gives back the dead letters a filter
//! skips with a plain `basic.nack`: on a quorum dead-letter queue that counts a
//! delivery. The skipped ones are held until the redrive ends, and a channel holds at
//! most `prefetch` (16 by default) unacked, so a filtered redrive looks at that many
//! non-matching letters per run; the report's `unexamined` then says how many it did
//! not reach. Run it again, or raise `?prefetch=` in the URL for a large dead-letter
//! queue.
//!
//! **Doctor.** Over AMQP it checks that the topic's exchange, the subscription's
//! queue, its `S.dlx` exchange and its dead-letter queue exist. With the API it also
//! reads the queue's arguments, the policies in effect (`effective_policy_definition`,
//! which takes a few seconds to follow a policy change) and the bindings, and reports:
//! a queue that is not durable, or auto-delete, or exclusive; a queue not bound to its
//! topic's exchange, or bound to a topic exchange without `#`; a delivery limit
//! (`x-delivery-limit` or the policy's `delivery-limit`, the lower one applying, and
//! RabbitMQ 4's default of 20) that allows fewer deliveries than the retry policy's
//! attempts, or none where the spec asks for one (classic queues have none); no
//! dead-letter exchange (`x-dead-letter-exchange` or the policy's
//! `dead-letter-exchange`), an error where a delivery limit drops messages for want of
//! one; a dead-letter exchange that does not exist or does not reach the dead-letter
//! queue; `S.dlx` missing or not bound to the dead-letter queue; a TTL, an expiry or a
//! length limit on the queue, or on the dead-letter queue; RabbitMQ 4's default
//! delivery limit on a quorum dead-letter queue; and an `x-consumer-timeout` (or the
//! policy's `consumer-timeout`) shorter than the handler timeout. The broker-wide
//! `consumer_timeout` cannot be read over AMQP or the API: a handler timeout above its
//! 30-minute default is reported as a warning to check it. Without the API, one
//! warning says what went unchecked and why.
//!
//! # Reaching the native client
//!
//! [`RabbitMq::connection`] returns the shared [`lapin::Connection`] and
//! [`RabbitMq::channel`] opens a new [`lapin::Channel`] on it, for anything wharf does
//! not cover. The crate re-exports [`lapin`].
//!
//! # Error mapping
//!
//! In one place, the private `error` module: I/O errors, dead channels and
//! connections, missed heartbeats → `Unavailable`; `NOT_FOUND` → `NotFound`;
//! `ACCESS_REFUSED`, `NOT_ALLOWED` → `PermissionDenied`; `PRECONDITION_FAILED` (a
//! queue or exchange redeclared with other arguments) → `AlreadyExists`;
//! `CONTENT_TOO_LARGE` → `PayloadTooLarge`; `RESOURCE_ERROR` (memory or disk alarm) →
//! `Throttled`; an unconfirmed publish after [`RabbitMqConfig::confirm_timeout`] →
//! `Timeout`; a settlement on a channel that died → `LeaseExpired`; protocol and
//! parsing faults → `Internal`. The lapin error is kept as the `source`.

mod backend;
pub mod config;
mod error;
mod headers;
pub mod limits;
mod link;
mod operations;
mod publish;
mod subscribe;
mod topology;
mod uri;

pub use backend::RabbitMq;
pub use config::{QueueType, RabbitMqConfig, TopicKind};
pub use publish::RabbitMqPublisher;
pub use subscribe::RabbitMqSubscriber;
pub use uri::URL_OPTIONS;

pub use lapin;
