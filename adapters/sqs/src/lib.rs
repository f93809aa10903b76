//! The wharf contract on Amazon SQS, through the official `aws-sdk-sqs`.
//!
//! [`SqsBackend`] implements [`wharf_core::Backend`]; applications use the
//! [`Publisher`](wharf_core::Publisher), [`Subscriber`](wharf_core::Subscriber) and
//! [`Worker`](wharf_core::Worker) it opens, exactly as on any other backend. The same
//! code runs against AWS and against LocalStack; only the [`SqsConfig`] differs.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wharf_core::{Backend, Message, SubscriptionSpec};
//! use wharf_sqs::{SqsBackend, SqsConfig};
//!
//! let config = SqsConfig::new()
//!     .endpoint("http://127.0.0.1:4566")
//!     .region("us-east-1")
//!     .static_credentials("test", "test");
//! let backend = SqsBackend::connect(&config).await;
//!
//! backend.create_topic("orders").await?;
//! let spec = SubscriptionSpec::new("orders", "orders").max_delivery_attempts(5);
//! backend.create_subscription(&spec).await?;
//!
//! backend.publisher("orders").await?.publish(Message::new("order #1")).await?;
//! let subscriber = backend.subscriber("orders").await?;
//! if let Some(delivery) = subscriber.receive_one(Duration::from_secs(5)).await? {
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Delivery semantics
//!
//! At least once. A topic and its subscription are one queue (SQS has no fan-out
//! without SNS): a subscription must carry its topic's name, or creating it is
//! [`Unsupported`](wharf_core::ErrorKind::Unsupported). A received message is hidden
//! for the lease (the queue's visibility timeout, set from
//! [`SubscriptionSpec::lease`](wharf_core::SubscriptionSpec::lease)) and comes back
//! when the lease runs out unsettled. The attempt number is SQS's
//! `ApproximateReceiveCount`; the publish time is its `SentTimestamp`. Standard queues
//! may deliver out of order and, rarely, twice. Queues whose name ends in `.fifo` are
//! FIFO queues: the ordering key is the message group id, so messages with one key
//! arrive in order; messages without a key get a group of their own and are not
//! ordered. A message's deduplication id is sent as SQS's; without one, a queue with
//! content-based deduplication derives it, and otherwise wharf makes a unique one so
//! equal messages are all delivered.
//!
//! Payloads are any bytes. UTF-8 text made of XML characters (what SQS accepts in a
//! body) is the body as is. Anything else travels as raw bytes in a `Binary` message
//! attribute named `wharf`, with a placeholder body (`-`), so binary payloads are not
//! inflated by base64 and get the same size limit as text; an empty payload is marked
//! there too. Attributes are native `String` message attributes. What SQS cannot carry
//! natively (an empty value, a name it refuses, the dead-letter envelope) travels in
//! that same `wharf` attribute as JSON, removed again on receive, so other SQS clients
//! read wharf's plain text messages unchanged and wharf reads theirs (`Number`
//! attributes as their text, `Binary` ones as base64).
//!
//! # Limits
//!
//! Each is a named constant in [`limits`].
//!
//! - Message size: 256 KiB less 256 bytes, SQS's quota less room for wharf's attribute
//!   and the data type names SQS counts per attribute.
//! - The encoded message is checked against SQS's quota before sending: attribute
//!   values packed into wharf's JSON (those with control characters, say) can grow
//!   past it, which is `PayloadTooLarge` with the encoded size.
//! - Attributes: 9 of SQS's 10; one is kept for wharf's bookkeeping.
//! - Batch: 10 messages and 256 KiB a `SendMessageBatch`; larger batches are split.
//! - Publish delay: 15 minutes (`DelaySeconds`), standard queues only. Longer delays are
//!   `InvalidArgument`; wharf does not chain delays.
//! - Nack delay and lease: up to 12 hours (the visibility timeout), also 12 hours in
//!   total from one receive.
//! - Receive: 10 messages a call, long polls of up to 20 s, repeated until the caller's
//!   timeout.
//! - Delivery limit: 1 to 1000 (`maxReceiveCount` of the redrive policy).
//!
//! Durations are rounded up to whole seconds, so nothing is delivered early. SQS keeps
//! no first-failure time, so [`Received::first_failure`](wharf_core::Received::first_failure)
//! is always `None`.
//!
//! # Nack / delay / dead-letter mapping
//!
//! - ack: `DeleteMessage`, or `DeleteMessageBatch` for several acks at once.
//! - nack with a delay: `ChangeMessageVisibility` to the delay; the message returns
//!   then with its receive count one higher.
//! - lease extension: `ChangeMessageVisibility` to the new lease.
//! - delayed publish: `DelaySeconds`. FIFO queues have no per-message delay, so a delay
//!   there is `Unsupported`.
//! - dead-letter: `create_subscription` creates the dead-letter queue
//!   (`<name>-dlq`, or `<base>-dlq.fifo` for a FIFO queue, kept 14 days) and, when the
//!   spec sets `max_delivery_attempts`, a redrive policy with that `maxReceiveCount`, so
//!   SQS moves a message that keeps failing by itself. An explicit `dead_letter` sends
//!   the message with its failure envelope to that queue, then deletes the original; if
//!   the delete fails the original comes back and may be dead-lettered twice. The
//!   dead-letter queue of a queue wharf did not create is its redrive target.
//! - settling after the lease ran out is `LeaseExpired`. SQS does not reliably say so
//!   (AWS accepts a delete with an outdated receipt handle without deleting), so wharf
//!   tracks each lease's end itself, measured from before the receive was sent, and
//!   maps SQS's `ReceiptHandleIsInvalid` and `MessageNotInflight` the same way.
//!
//! # Operating queues
//!
//! The [`Backend`](wharf_core::Backend) operations work on the subscription's queue
//! (which is its topic's queue) and on its dead-letter queue: the target of the redrive
//! policy, else the queue's `wharf-dead-letter` tag, else `<name>-dlq`.
//!
//! [`stats`](wharf_core::Backend::stats) reads `GetQueueAttributes`. Every count is
//! approximate, as SQS says of its `ApproximateNumberOf*` attributes: it samples its
//! servers, and a change can take a moment (up to a minute on AWS) to show.
//!
//! - `ready`: `ApproximateNumberOfMessages`.
//! - `in_flight`: `ApproximateNumberOfMessagesNotVisible`. A nack delay is a visibility
//!   change on SQS, so a message waiting out a nack delay counts here, not as delayed.
//! - `delayed`: `ApproximateNumberOfMessagesDelayed`: publish delays (`DelaySeconds`)
//!   and the queue's `DelaySeconds` default.
//! - `dead_lettered`: those three added up on the dead-letter queue; unknown, with the
//!   queue's name, if the dead-letter queue does not exist.
//! - `oldest_age`: unknown. SQS reports it only as the CloudWatch metric
//!   `ApproximateAgeOfOldestMessage`, which wharf does not read; no queue attribute or
//!   receive tells it without taking messages away from consumers.
//! - `consumer_lag`: unknown. A queue has no offsets to lag behind.
//!
//! [`peek_dead_letters`](wharf_core::Backend::peek_dead_letters) receives from the
//! dead-letter queue, with one-second long polls so every SQS server is asked, keeps a
//! copy of each message and releases it at once with a visibility timeout of 0. SQS
//! has no read-only look at messages, so a peek is a receive: it raises each dead
//! letter's `ApproximateReceiveCount` (the attempt a later peek shows), hides the
//! messages from other consumers of the dead-letter queue while it runs, and on a FIFO
//! dead-letter queue may show only the first dead letters of an ordering key, since SQS
//! hands out no more of a message group while some of it are held. A dead-letter queue
//! with a redrive policy of its own moves dead letters on after that many peeks; the
//! doctor warns of one.
//!
//! [`purge_dead_letters`](wharf_core::Backend::purge_dead_letters) calls `PurgeQueue`
//! on the dead-letter queue rather than receiving and deleting. `PurgeQueue` removes
//! every message, in flight and delayed ones too, with one call however many there are,
//! where receiving and deleting takes a call per ten messages and misses those another
//! consumer holds. In exchange it does not say how many it removed, so the count is
//! unknown (`stats` just before gives an approximate one). SQS allows one purge per
//! queue every 60 seconds and refuses another sooner with `PurgeQueueInProgress`, which
//! is [`Throttled`](wharf_core::ErrorKind::Throttled) saying to wait 60 s. On AWS a
//! purge can take up to 60 seconds to finish, and a dead letter arriving meanwhile may
//! be deleted with the rest; LocalStack purges at once.
//!
//! [`redrive`](wharf_core::operations::redrive) publishes dead letters back through
//! [`redrive_publisher`](wharf_core::Backend::redrive_publisher), a publisher on the
//! queue itself, and deletes each from the dead-letter queue once SQS accepted its copy.
//! The copy is a new SQS message: attempt 1, `SentTimestamp` of the redrive, the
//! original attributes and ordering key (message group), `wharf-redrive-count` one
//! higher, the failure envelope removed. wharf does not use SQS's own redrive
//! (`StartMessageMoveTask`): that moves messages as they are, failure envelope and
//! all, adds no redrive count, cannot filter, and starts only from a queue some redrive
//! policy names as its dead-letter queue, which that of a queue without
//! `max_delivery_attempts` is not. It remains available on [`SqsBackend::client`].
//!
//! [`doctor`](wharf_core::Backend::doctor) reads the queue's and the dead-letter queue's
//! attributes and reports:
//!
//! - errors: a missing queue; a subscription named apart from its topic; ordered
//!   delivery expected of a standard queue; a redrive policy whose `maxReceiveCount` is
//!   below the retry policy's attempts; no redrive policy where the application sets
//!   `max_delivery_attempts` (a warning where it does not: a message that crashes its
//!   consumer then comes back until its retention ends); a `deadLetterTargetArn` (or,
//!   without a policy, a `wharf-dead-letter` tag) naming another queue than the
//!   application expects, a queue that does not exist, or a queue of that name in
//!   another account or region; an unreadable redrive policy.
//! - warnings: a `VisibilityTimeout` shorter than the handler timeout; a standard
//!   dead-letter queue whose `MessageRetentionPeriod` is shorter than its source's (SQS
//!   keeps a message's enqueue time when its redrive policy moves it, so old dead
//!   letters expire at once); a dead-letter queue with a redrive policy of its own.
//!
//! # Configuration and credentials
//!
//! [`SqsConfig`] sets an endpoint, a region and, for emulators, static credentials;
//! everything unset comes from the standard AWS chain (environment, shared files, SSO,
//! web identity, container and instance metadata), or the shared-file profile
//! [`SqsConfig::profile`] names. [`SqsConfig::from_url`] reads `sqs://` URLs (see
//! [URL](#url)). Credentials are never logged, and `Debug` of the configuration hides
//! the secret key. The SDK's own retry policy (standard mode, three attempts) handles
//! transient failures of whole calls; wharf adds none on top. The one retry wharf makes
//! is of single `SendMessageBatch` entries SQS failed on its side, which the SDK never
//! retries, twice at most.
//!
//! # URL
//!
//! [`SqsBackend::from_url`] (and so `wharf::connect`) and [`SqsConfig::from_url`] read
//! `sqs://[KEY:SECRET@][HOST[:PORT]][?option=value&...]`. No host, or the host `aws`,
//! means AWS itself with the standard credential chain; any other host is an emulator
//! reached at `http://HOST:PORT`, such as LocalStack at
//! `sqs://test:test@127.0.0.1:4566?region=us-east-1`. A percent-encoded `KEY:SECRET`
//! becomes static credentials; the secret never appears in errors, logs or `Debug`.
//! wharf's own options ([`wharf_core::url_options`], such as `subscription` or `lease`)
//! are skipped; any other option not in this table is refused with
//! [`Config`](wharf_core::ErrorKind::Config), naming it and listing [`URL_OPTIONS`], and
//! so is an option given twice. FIFO is not an option: a queue is FIFO when its name
//! ends in `.fifo`.
//!
//! | Option | Meaning | Default |
//! |---|---|---|
//! | `region` | the AWS region, such as `eu-west-1` | `AWS_REGION` or the profile's |
//! | `endpoint` | an `http(s)://` endpoint replacing AWS's; not with a host | host, else AWS |
//! | `tls` | `true` reaches the host over `https`; only with a host | `false` |
//! | `profile` | the profile of the shared AWS configuration files | `AWS_PROFILE`, `default` |
//! | `content_based_deduplication` | FIFO queues wharf creates dedupe by body | `false` |
//!
//! # Reaching the native client
//!
//! [`SqsBackend::client`] returns the `aws_sdk_sqs::Client`, and
//! [`SqsBackend::from_client`] builds a backend on one you configured yourself.
//! [`SqsBackend::queue_url`] gives a queue's URL; [`SqsBackend::topic`] and
//! [`SqsBackend::subscription`] return the drivers with their queue URLs.
//!
//! # Error mapping
//!
//! Mapped in one place, from SQS's error codes (in either spelling, such as
//! `QueueDoesNotExist` and `AWS.SimpleQueueService.NonExistentQueue`):
//!
//! - `NotFound`: `QueueDoesNotExist`.
//! - `AlreadyExists`: `QueueAlreadyExists`.
//! - `PermissionDenied`: `AccessDenied`, `InvalidClientTokenId`, `SignatureDoesNotMatch`,
//!   `ExpiredToken`, KMS access errors, HTTP 401 and 403.
//! - `Throttled`: `ThrottlingException`, `RequestThrottled`, `OverLimit`,
//!   `PurgeQueueInProgress`, HTTP 429.
//! - `Unavailable`: `ServiceUnavailable`, `InternalError`, `QueueDeletedRecently`,
//!   HTTP 5xx, connection failures.
//! - `Timeout`: the SDK's timeouts.
//! - `LeaseExpired`: `ReceiptHandleIsInvalid`, `MessageNotInflight`, and an invalid
//!   receipt handle in a settlement.
//! - `InvalidArgument`: `InvalidParameterValue`, `InvalidAttributeName`,
//!   `InvalidMessageContents` and the other malformed-request codes.
//! - `PayloadTooLarge`: `BatchRequestTooLong`, `MessageTooLong`.
//! - `LimitExceeded`: `TooManyEntriesInBatchRequest`.
//!
//! The SDK's error is kept as the [`source`](std::error::Error::source) of every wharf
//! error.

mod backend;
mod config;
mod error;
pub mod limits;
mod operations;
mod queue;
mod subscription;
mod topic;
mod url_config;
mod wire;

pub use backend::SqsBackend;
pub use config::{SqsConfig, StaticCredentials};
pub use subscription::SqsSubscription;
pub use topic::SqsTopic;
pub use url_config::{SCHEME, URL_OPTIONS};
pub use wire::BOOKKEEPING;

/// The SDK this adapter is built on, for callers who need its types.
pub use aws_sdk_sqs;
