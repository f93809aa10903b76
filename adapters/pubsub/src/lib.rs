//! Google Cloud Pub/Sub backend for wharf.
//!
//! [`PubSubBackend`] maps the wharf contract onto Pub/Sub topics and subscriptions. It
//! works the same against Google Cloud and against Google's Pub/Sub emulator; only the
//! endpoint and the credentials differ ([`PubSubConfig`]).
//!
//! Two clients do the work. Google's official `google-cloud-pubsub` creates and deletes
//! topics and subscriptions and publishes. Receiving and settling go through the
//! community `gcloud-pubsub` client, because the official one (1.7) cannot do what wharf
//! promises there:
//!
//! - its `Handler` offers only `ack()` and `nack()`; there is no way to set one
//!   message's ack deadline, so neither a nack with a delay nor an explicit lease
//!   extension can be expressed, and the ack id that a `ModifyAckDeadline` call needs
//!   is private;
//! - on subscriptions without exactly-once delivery its `ack()` returns nothing, so an
//!   ack the service did not apply could not be reported;
//! - the data-plane RPCs (`Acknowledge`, `ModifyAckDeadline`, `StreamingPull`) are not
//!   public, and its lease management extends every held message by itself up to a
//!   maximum, which would hide the lease expiry wharf must report.
//!
//! `gcloud-pubsub` exposes the streaming pull, `Acknowledge` and `ModifyAckDeadline`
//! with their results, which is all the subscriber needs.
//!
//! # Delivery semantics
//!
//! At least once. Each [`Subscriber`](wharf_core::Subscriber) holds one long-lived
//! streaming pull, opened by its first receive and reopened with backoff after transient
//! failures. After [`PubSubConfig::idle_release`] without a receive (5 s by default) it
//! closes the stream and hands what it buffered back to the service, so a subscriber
//! that stopped receiving does not sit on messages other consumers could handle. Flow control ([`PubSubConfig::max_outstanding_messages`] and `_bytes`) caps
//! how many messages the service hands over unsettled, and the subscriber's buffer holds
//! no more than that; a receive takes from the buffer and returns within its timeout.
//! Messages of one ordering key arrive in publish order on subscriptions created with
//! [`SubscriptionSpec::ordered`](wharf_core::SubscriptionSpec::ordered).
//!
//! **Attempt count.** On subscriptions with a dead-letter policy (created with
//! `max_delivery_attempts`), the attempt is the service's `delivery_attempt`, which
//! survives restarts. Pub/Sub counts deliveries nowhere else, and a redelivered message
//! cannot carry a header of wharf's. On other subscriptions the backend counts the
//! deliveries of each message id itself, shared by every subscriber one
//! [`PubSubBackend`] opens on the subscription: the count survives closing and reopening
//! subscribers, but starts again at 1 in a new process or for a message first delivered
//! to another process.
//!
//! **Publishing** waits until the service has stored every message. Messages with an
//! ordering key are published in order per key; after a publish on a key fails, that key
//! refuses further publishes with a [`Closed`](wharf_core::ErrorKind::Closed) error whose
//! source is [`OrderingKeyPaused`], until [`PubSubBackend::resume_publish`] is called.
//! Other keys are not affected.
//!
//! # Limits
//!
//! From Pub/Sub's quotas, as constants in [`capabilities`]: 1,000 messages and 10 MB per
//! publish request (the publisher splits larger batches); 10 MB per message less 64 KiB
//! for the request's own framing; 100 attributes, keys of at most 256 bytes (not
//! starting with `goog`) and values of at most 1,024 bytes; ordering keys of at most
//! 1,024 bytes. Leases (ack deadlines) from 10 s to 600 s. No delayed publish and no
//! deduplication ids: messages carrying them are refused with
//! [`Unsupported`](wharf_core::ErrorKind::Unsupported). Topic and subscription ids have
//! 3 to 255 characters, start with a letter, and use letters, digits and `- _ . ~ + %`.
//!
//! # Nack / delay / dead-letter mapping
//!
//! - **ack**: `Acknowledge`; the call's result is the ack's result.
//! - **nack**: `ModifyAckDeadline` to 0; the service redelivers at once.
//! - **nack with a delay**: `ModifyAckDeadline` to the delay, rounded up to whole seconds.
//!   One deadline is at most 600 s, so longer delays are refused with
//!   [`InvalidArgument`](wharf_core::ErrorKind::InvalidArgument) (`max_nack_delay`).
//! - **lease extension**: `ModifyAckDeadline` to the new lease (10 s to 600 s); a
//!   [`Worker`](wharf_core::Worker) renews it while its handler runs.
//! - **lease expiry**: each delivery knows when its lease ends (from its arrival and the
//!   subscription's ack deadline, moved by each extension). Settling after that, less one
//!   second for the service's head start, fails with
//!   [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired): the service may already have
//!   redelivered the message, and outside exactly-once subscriptions it does not report
//!   whether a late ack was applied. A late ack is still sent, to spare a duplicate when
//!   it can. Buffered messages whose lease ran out are skipped; the service redelivers
//!   them.
//! - **dead-letter**: `create_subscription` creates the dead-letter topic
//!   ([`SubscriptionSpec::dead_letter_name`](wharf_core::SubscriptionSpec::dead_letter_name),
//!   `<name>-dlq` by default) and a subscription of the same name on it. With
//!   `max_delivery_attempts` (Pub/Sub accepts 5 to 100) the subscription gets a
//!   dead-letter policy and the service moves a message there by itself after that many
//!   deliveries, keeping its attributes but without wharf's envelope. An explicit
//!   `dead_letter` publishes the envelope ([`wharf_core::DeadLetter::to_message`]) to the
//!   dead-letter topic, then acks the original; if that ack fails the error is returned
//!   and the message may reach the dead-letter topic twice. A dead-letter name other than
//!   the default is kept in the subscription's `wharf-dead-letter` label when there is no
//!   policy, so it must be a valid label value. On Google Cloud the policy also needs the
//!   Pub/Sub service account to publish to the dead-letter topic and subscribe to the
//!   subscription (IAM), as Google's documentation on dead-letter topics describes.
//!
//! # Configuration and credentials
//!
//! [`PubSubConfig::new`] takes the project. If `PUBSUB_EMULATOR_HOST` (`HOST:PORT`) is set,
//! as with Google's own clients, or [`PubSubConfig::with_emulator`] is called, both
//! clients talk plain HTTP/2 to the emulator without credentials. Otherwise they reach
//! `pubsub.googleapis.com` with application-default credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud CLI's login, or the metadata server).
//! Nothing secret is stored in the config or logged.
//!
//! `wharf::connect` takes the same settings as a URL, read by
//! [`PubSubConfig::from_url`]: `pubsub://PROJECT[/TOPIC][?option=value&...]`.
//!
//! | Option | Takes | Default |
//! |---|---|---|
//! | `emulator` | `HOST:PORT` of the emulator, overriding `PUBSUB_EMULATOR_HOST` | the variable, else Google Cloud |
//! | `max_outstanding_messages` | flow control, messages held unsettled | 1000 |
//! | `max_outstanding_bytes` | flow control, bytes held unsettled | 104857600 (100 MiB) |
//! | `publish_delay` | how long the publisher waits to fill a batch | `10ms` |
//! | `idle_release` | idle time after which a subscriber hands its buffer back | `5s` |
//!
//! The path names the topic the application publishes to; wharf's own options
//! (`subscription`, `max_attempts`, `lease`, ...) are read by the `wharf` crate.
//!
//! The emulator differs from the service in ways the capabilities do not need to show:
//! it stores subscription filters without applying them, and has no exactly-once
//! delivery (not offered by wharf either).
//!
//! # Reaching the native client
//!
//! [`PubSubBackend::native_publisher`] returns Google's `Publisher` for a topic, the same
//! instance wharf publishes through; [`PubSubBackend::topic_admin`] and
//! [`PubSubBackend::subscription_admin`] return Google's admin clients (for snapshots,
//! seek, schemas, IAM); [`PubSubBackend::pull_client`] returns the `gcloud-pubsub` client.
//! Messages are ordinary Pub/Sub messages: payload bytes unchanged, attributes as
//! attributes, ordering key as ordering key, so services using any Pub/Sub client
//! exchange messages with wharf as they are.
//!
//! # Operating queues
//!
//! **Stats.** The Pub/Sub API has no call that counts a subscription's messages: its
//! backlog figures are Cloud Monitoring metrics, which wharf does not read and the
//! emulator does not serve, so [`Capabilities::backlog_stats`](wharf_core::Capabilities)
//! is `false`. [`stats`](wharf_core::Backend::stats) still checks that the subscription
//! exists ([`NotFound`](wharf_core::ErrorKind::NotFound) if not) and returns every
//! figure as [`Unknown`](wharf_core::Figure::Unknown), each reason naming where the
//! figure lives:
//!
//! - `ready`, `in_flight`, `delayed`: one number for all three,
//!   `subscription/num_undelivered_messages` (leased and nack-delayed messages are
//!   unacknowledged like the rest);
//! - `dead_lettered`: `subscription/num_undelivered_messages` of the dead-letter
//!   subscription;
//! - `oldest_age`: `subscription/oldest_unacked_message_age`;
//! - `consumer_lag`: nowhere, a subscription is not a log.
//!
//! Counting dead letters by receiving them was left out on purpose: it would lease
//! every one for the duration, miss those another reader holds, and raise their
//! delivery attempts, all to report one number.
//!
//! **Peek** receives from the dead-letter subscription through a fresh streaming pull,
//! copies what arrives, and releases it (ack deadline 0), stopping once nothing new
//! arrives for 2 s. Pub/Sub counts each release as a delivery, which matters only if
//! the dead-letter subscription has a dead-letter policy of its own (the doctor warns
//! about that); messages another reader holds at the time are not shown, and there is
//! no order to the result.
//!
//! **Purge** seeks the dead-letter subscription to 5 s past this machine's clock, the
//! way Google's documentation says to purge: seek compares the service's publish times
//! with the time given, and the margin covers a local clock that runs behind. One call
//! marks every dead letter acknowledged, those another reader holds included; messages
//! published after the seek stay. The emulator supports seek too. A seek counts
//! nothing, so the count is [`Unknown`](wharf_core::Figure::Unknown).
//!
//! **Redrive** ([`wharf_core::operations::redrive`]) reads the dead-letter subscription
//! and publishes through [`redrive_publisher`](wharf_core::Backend::redrive_publisher),
//! which is a publisher on the subscription's *topic*: Pub/Sub cannot publish to one
//! subscription, so **every subscription of that topic receives the redriven
//! messages**, not only the one whose dead letters they were. They carry
//! `wharf-redrive-count`, so the others can recognise them. Where that is wrong, give
//! each consumer a topic of its own, or give the other subscriptions a filter that
//! leaves out messages with the `wharf-redrive-count` attribute (filters are fixed at
//! creation; the emulator stores them without applying them). A subscription whose
//! topic was deleted, or which reads a topic of another project, cannot be redriven
//! into.
//!
//! Dead letters live only as long as the dead-letter subscription keeps messages: its
//! `message_retention_duration`, 7 days unless changed (at most 31).
//!
//! **Doctor** ([`doctor`](wharf_core::Backend::doctor)) reads the subscription, its
//! dead-letter topic and that topic's subscription, and reports:
//!
//! - errors: a missing subscription; one whose topic was deleted, that is detached, or
//!   that reads another topic than expected; no `dead_letter_policy` where the
//!   application expects Pub/Sub to dead-letter (`max_delivery_attempts` set); a
//!   policy's `max_delivery_attempts` (0 counts as Pub/Sub's default, 5) below the retry
//!   policy's attempts; no `enable_message_ordering` where ordering is expected; dead
//!   letters going elsewhere than expected; a dead-letter topic that does not exist;
//!   no subscription on it (Pub/Sub drops messages of a topic without subscriptions),
//!   or one that reads another topic;
//! - warnings: an `ack_deadline_seconds` shorter than the handler timeout; a
//!   dead-letter subscription with a `dead_letter_policy` of its own (peeks count as
//!   deliveries) or with an `expiration_policy` that deletes it after a time without
//!   readers.
//!
//! A subscription wharf created passes without errors. Not checked: the IAM
//! permissions the Pub/Sub service account needs for a dead-letter policy on Google
//! Cloud (the emulator has no IAM).
//!
//! # Error mapping
//!
//! One table of gRPC status codes, for both clients:
//!
//! | gRPC code | wharf kind |
//! |---|---|
//! | `NOT_FOUND` | `NotFound` |
//! | `ALREADY_EXISTS` | `AlreadyExists` (ignored by `create_*`) |
//! | `PERMISSION_DENIED`, `UNAUTHENTICATED` | `PermissionDenied` |
//! | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` | `InvalidArgument` |
//! | `INVALID_ARGUMENT`, `FAILED_PRECONDITION` on ack, nack or extension | `LeaseExpired` |
//! | `RESOURCE_EXHAUSTED` | `Throttled` |
//! | `DEADLINE_EXCEEDED` | `Timeout` |
//! | `UNAVAILABLE`, `INTERNAL`, `ABORTED`, `CANCELLED` | `Unavailable` |
//! | `UNIMPLEMENTED` | `Unsupported` |
//! | `UNKNOWN`, `DATA_LOSS` | `Internal` |
//!
//! Connection failures are `Unavailable`, credential failures `PermissionDenied` or, when
//! none are found at start, `Config`. A paused ordering key is `Closed` with an
//! [`OrderingKeyPaused`] source. The provider's error is always the
//! [`source`](std::error::Error::source).

mod attempts;
mod backend;
pub mod capabilities;
mod config;
mod error;
mod names;
mod on_demand;
mod operations;
mod stream;
mod subscription;
mod topic;
mod url_config;

pub use backend::{DEAD_LETTER_LABEL, PubSubBackend};
pub use config::{EMULATOR_HOST_VAR, PubSubConfig};
pub use error::OrderingKeyPaused;
pub use url_config::{SCHEME, URL_OPTIONS};
