//! The in-memory wharf backend: a message broker inside the process, with the semantics
//! applications get from SQS or Pub/Sub.
//!
//! [`MemoryBackend`] is a product, not a test double: it runs the order-processing demo
//! with no broker installed, backs unit tests of handlers, and behaves like the cloud
//! backends on every point of the wharf contract, so code that works here works there.
//! Nothing leaves the process and nothing survives it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wharf_core::{Backend, Message, SubscriptionSpec};
//! use wharf_memory::MemoryBackend;
//!
//! let backend = MemoryBackend::new();
//! backend.create_topic("orders").await?;
//! backend.create_subscription(&SubscriptionSpec::new("orders", "billing")).await?;
//!
//! let publisher = backend.publisher("orders").await?;
//! publisher.publish(Message::new("order #1").with_attribute("priority", "high")).await?;
//!
//! let subscriber = backend.subscriber("billing").await?;
//! let delivery = subscriber.receive_one(Duration::from_secs(1)).await?.expect("published");
//! assert_eq!(delivery.attribute("priority"), Some("high"));
//! assert_eq!(delivery.attempt(), 1);
//! delivery.ack().await?;
//!
//! assert_eq!(backend.counts("billing")?.ready, 0);
//! # Ok(()) }
//! ```
//!
//! # Delivery semantics
//!
//! At least once, with real leases. A topic copies each message to every subscription on
//! it (fan-out); the subscribers of one subscription compete for its messages. A topic
//! with no subscription keeps nothing: its messages are accepted and gone, as on
//! Pub/Sub (logged at debug level). Subscriptions see messages published after they
//! were created.
//!
//! A received message is in flight until it is acked, nacked or dead-lettered, or until
//! its lease (the subscription's [`lease`](wharf_core::SubscriptionSpec::lease),
//! renewable with `extend_lease`) runs out; then it is delivered again with its attempt
//! one higher. Attempt counts and the time of the first failure are kept by the backend,
//! so they survive a new subscriber. Settling a delivery whose lease ran out, or that was
//! delivered again since, fails with [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired):
//! each delivery carries its own receipt, and a stale one never succeeds silently.
//!
//! On a subscription created with [`ordered`](wharf_core::SubscriptionSpec::ordered),
//! messages sharing an ordering key are delivered in publish order, one at a time: while
//! one of them is in flight or waiting out a nack delay, the rest of that key wait (as
//! SQS FIFO message groups do); other keys go on. A delayed publish delays the messages
//! behind it on its key too. On other subscriptions ordering keys are carried but impose
//! no order.
//!
//! A second publish with the same deduplication id to the same topic within the
//! deduplication window (5 minutes by default, as SQS FIFO) is accepted but not stored
//! again.
//!
//! A receive returns as soon as anything is visible, otherwise sleeps until a publish,
//! a nack or the next delay or lease end, up to its wait; no task runs per message.
//! Closing a publisher or subscriber makes its later calls fail with
//! [`Closed`](wharf_core::ErrorKind::Closed); deliveries it left unsettled return when
//! their lease ends.
//!
//! # Limits
//!
//! Named constants in this crate, exposed through
//! [`Backend::capabilities`](wharf_core::Backend::capabilities):
//! messages up to [`DEFAULT_MAX_MESSAGE_BYTES`] (1 MiB, configurable through
//! [`MemoryOptions::max_message_bytes`]), [`MAX_ATTRIBUTES`] attributes,
//! [`MAX_BATCH_MESSAGES`] messages and [`MAX_BATCH_BYTES`] per publish request, publish
//! and nack delays up to [`MAX_PUBLISH_DELAY`] (a day), leases from [`MIN_LEASE`] to
//! [`MAX_LEASE`] (12 hours). Memory is the only limit on how many messages a
//! subscription holds.
//!
//! # Nack / delay / dead-letter mapping
//!
//! All native. `nack(delay)` hides the message until `delay` from now; a delayed
//! publish until its delay from the publish. Neither ever arrives early. Each
//! subscription has a dead-letter queue, named by
//! [`SubscriptionSpec::dead_letter_name`](wharf_core::SubscriptionSpec::dead_letter_name)
//! and read with [`Backend::dead_letter_subscriber`](wharf_core::Backend::dead_letter_subscriber)
//! (or [`Backend::subscriber`](wharf_core::Backend::subscriber) with its name); several
//! subscriptions may share one by naming it, and it is deleted with the last of them.
//! `dead_letter(reason)` moves the message there with the envelope attributes of
//! [`DeadLetter`](wharf_core::DeadLetter), keeping its id and publish time. With
//! [`max_delivery_attempts`](wharf_core::SubscriptionSpec::max_delivery_attempts) set to
//! `n`, a message about to be delivered for the `n + 1`th time goes to the dead-letter
//! queue instead, with the reason `delivery limit of n reached`. Dead-letter queues have
//! no dead-letter queue of their own: dead-lettering from one is
//! [`Unsupported`](wharf_core::ErrorKind::Unsupported).
//!
//! # Configuration and credentials
//!
//! No credentials. [`MemoryBackend::new`] uses the defaults; [`MemoryBackend::with_options`]
//! takes [`MemoryOptions`] (largest message, deduplication window), checked when the
//! backend is built. The umbrella crate opens one with `wharf::connect("mem://NAME")`.
//!
//! # Reaching the native client
//!
//! There is none: the broker is this crate. [`MemoryBackend::counts`] shows a
//! subscription's ready, in-flight, delayed, blocked and dead-lettered counts and the age
//! of its oldest message.
//!
//! # Error mapping
//!
//! A missing topic or subscription is [`NotFound`](wharf_core::ErrorKind::NotFound) naming
//! it and saying how to create it, also for publishers and subscribers whose topic or
//! subscription was deleted since. Creating a subscription again with other settings, or
//! giving a subscription the name of a dead-letter queue, is
//! [`AlreadyExists`](wharf_core::ErrorKind::AlreadyExists). Out-of-range options and
//! leases are [`InvalidArgument`](wharf_core::ErrorKind::InvalidArgument). Stale receipts
//! are [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired); calls after close are
//! [`Closed`](wharf_core::ErrorKind::Closed). Nothing here is retryable: the backend is
//! never unavailable.

mod backend;
mod counts;
mod driver;
mod operations;
mod options;
mod queue;
mod topic;

pub use backend::MemoryBackend;
pub use counts::StateCounts;
pub use options::{
    DEFAULT_DEDUPLICATION_WINDOW, DEFAULT_MAX_MESSAGE_BYTES, MAX_ATTRIBUTES, MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES, MAX_LEASE, MAX_NACK_DELAY, MAX_PUBLISH_DELAY, MIN_LEASE, MemoryOptions,
};
