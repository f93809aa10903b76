//! The narrow interface an adapter implements. Applications never call it directly.
//!
//! An adapter maps three small traits onto its broker: [`TopicDriver`] sends batches that
//! already fit the limits, [`SubscriptionDriver`] receives and settles, and [`Backend`]
//! creates topics and subscriptions and opens the other two. Validation, batching,
//! retry and backoff, dead-letter routing, lease keep-alive and tracing are written once in
//! core, around these traits.
//!
//! # The contract for implementers
//!
//! - Methods may be called concurrently from many tasks; none may block the thread.
//! - Do not retry on top of the provider SDK's own retries: return the error with the
//!   right [`ErrorKind`](crate::ErrorKind) and let the caller decide.
//! - Map provider errors in one place per adapter, keeping the provider error as
//!   `source`.
//! - `send_batch` returns only once the broker has durably accepted each message, and one
//!   result per message, in order.
//! - `receive_batch` returns within `wait` (plus one network round trip), possibly with no
//!   deliveries; it never returns more than `max`.
//! - Settling an [`AckId`] twice is a programming error core prevents; settling one whose
//!   lease has run out returns [`LeaseExpired`](crate::ErrorKind::LeaseExpired) where the
//!   broker can tell, never a silent success.
//! - A feature the broker lacks is an [`Unsupported`](crate::ErrorKind::Unsupported)
//!   error, never a silent no-op.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::capabilities::Capabilities;
use crate::dead_letter::DeadLetter;
use crate::delivery::Received;
use crate::error::{Error, Result};
use crate::message::{Attributes, Message};
use crate::operations::{Expectations, Figure, Finding, SubscriptionStats};
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// The adapter's handle on one received message, opaque to core.
///
/// Holds whatever the broker needs to settle the message: a receipt handle, a delivery
/// tag, a partition and offset. Cheap to clone so lease keep-alive can share it.
#[derive(Clone)]
pub struct AckId(Arc<dyn Any + Send + Sync>);

impl AckId {
    /// Wraps the adapter's own settlement data.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// The adapter's data, if it is of type `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The adapter's data as `T`, or an internal error naming the mismatch.
    ///
    /// # Errors
    ///
    /// [`Internal`](crate::ErrorKind::Internal) if the id came from another adapter.
    pub fn expect<T: Any>(&self) -> Result<&T> {
        self.get().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Internal,
                "delivery belongs to a different backend than the one settling it",
            )
        })
    }
}

impl fmt::Debug for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckId(..)")
    }
}

/// One message as an adapter received it.
#[derive(Debug)]
pub struct RawDelivery {
    /// The broker's id for the message (message id, or topic/partition/offset).
    pub id: String,
    /// The payload, exactly as published.
    pub payload: Bytes,
    /// The user's attributes, without the adapter's own bookkeeping headers.
    pub attributes: Attributes,
    /// The ordering key, if the message had one.
    pub ordering_key: Option<String>,
    /// Which delivery this is, starting at 1, as counted by the broker so that it
    /// survives consumer restarts.
    pub attempt: u32,
    /// When the message was first published.
    pub published_at: SystemTime,
    /// When its first delivery failed, where the broker keeps that.
    pub first_failure: Option<SystemTime>,
    /// What the adapter needs to settle it.
    pub ack_id: AckId,
}

/// Sends messages to one topic.
#[async_trait]
pub trait TopicDriver: Send + Sync + 'static {
    /// What the backend offers; core validates against it before calling `send_batch`.
    fn capabilities(&self) -> &Capabilities;

    /// The topic (or queue) name, for logs and errors.
    fn topic(&self) -> &str;

    /// Sends one batch that already fits [`Capabilities`], returning one result per
    /// message in order. Returns only once the broker has durably accepted each message.
    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>>;

    /// Flushes and releases resources. Later sends fail with
    /// [`Closed`](crate::ErrorKind::Closed).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Receives and settles messages of one subscription.
#[async_trait]
pub trait SubscriptionDriver: Send + Sync + 'static {
    /// What the backend offers.
    fn capabilities(&self) -> &Capabilities;

    /// The subscription (or queue) name, for logs, errors and dead-letter envelopes.
    fn subscription(&self) -> &str;

    /// Receives up to `max` messages, waiting at most `wait` for the first.
    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>>;

    /// Acknowledges messages so they are never delivered again, one result per id.
    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>>;

    /// Returns a message for redelivery after `delay` (zero: as soon as possible). The
    /// next delivery's attempt is one higher.
    async fn nack(&self, id: AckId, delay: Duration) -> Result<()>;

    /// Moves a message to the subscription's dead-letter destination with its envelope,
    /// and removes it from the subscription.
    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()>;

    /// Keeps the message hidden from other consumers for `lease` from now.
    async fn extend_lease(&self, id: &AckId, lease: Duration) -> Result<()>;

    /// Stops receiving and releases resources.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// How a subscription is set up when wharf creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The topic it reads.
    pub topic: String,
    /// The subscription's own name. Backends without fan-out use the topic's name.
    pub name: String,
    /// How long a delivery stays hidden from other consumers before it is redelivered.
    /// Must lie within the backend's [`Capabilities::min_lease`] and `max_lease`.
    pub lease: Duration,
    /// After this many deliveries the backend dead-letters the message by itself, as a
    /// safety net for messages that crash the consumer. `None`: never.
    pub max_delivery_attempts: Option<u32>,
    /// Where dead letters go; see [`SubscriptionSpec::dead_letter_name`].
    pub dead_letter: Option<String>,
    /// Deliver messages with one ordering key in order, where the backend can.
    pub ordered: bool,
}

impl SubscriptionSpec {
    /// A subscription named `name` on `topic` with a 30 s lease and a dead-letter
    /// destination named `<name>-dlq`.
    pub fn new(topic: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            name: name.into(),
            lease: Duration::from_secs(30),
            max_delivery_attempts: None,
            dead_letter: None,
            ordered: false,
        }
    }

    /// Sets the lease.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the backend's own delivery limit.
    #[must_use]
    pub fn max_delivery_attempts(mut self, attempts: u32) -> Self {
        self.max_delivery_attempts = Some(attempts);
        self
    }

    /// Names the dead-letter destination.
    #[must_use]
    pub fn dead_letter(mut self, name: impl Into<String>) -> Self {
        self.dead_letter = Some(name.into());
        self
    }

    /// Asks for ordered delivery per ordering key.
    #[must_use]
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// The dead-letter destination's name: the one set, or `<name>-dlq`.
    pub fn dead_letter_name(&self) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}-dlq", self.name))
    }
}

/// Opens topics and subscriptions on one backend.
///
/// This is how tests, tools and configuration-driven applications reach any backend the
/// same way.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What the backend offers.
    fn capabilities(&self) -> Capabilities;

    /// Creates `topic` if it does not exist.
    async fn create_topic(&self, topic: &str) -> Result<()>;

    /// Creates the subscription and its dead-letter destination if they do not exist.
    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()>;

    /// A publisher on an existing topic.
    async fn publisher(&self, topic: &str) -> Result<Publisher>;

    /// A subscriber on an existing subscription.
    async fn subscriber(&self, subscription: &str) -> Result<Subscriber>;

    /// A subscriber on the subscription's dead-letter destination, to inspect or
    /// redrive what failed.
    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber>;

    /// Deletes the subscription and its dead-letter destination.
    async fn delete_subscription(&self, subscription: &str) -> Result<()>;

    /// Deletes the topic.
    async fn delete_topic(&self, topic: &str) -> Result<()>;

    /// The subscription's backlog: ready, in flight, delayed, dead-lettered, the age of
    /// the oldest message and, on a log, the consumer lag; each figure the broker cannot
    /// report says so.
    ///
    /// # Errors
    ///
    /// [`NotFound`](crate::ErrorKind::NotFound) for an unknown subscription;
    /// [`Unsupported`](crate::ErrorKind::Unsupported) from a backend without stats.
    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        let _ = subscription;
        Err(Error::unsupported(
            self.capabilities().backend,
            "backlog stats",
        ))
    }

    /// Up to `max` messages of the subscription's dead-letter destination, oldest first
    /// where the broker keeps an order, left where they are.
    ///
    /// # Errors
    ///
    /// [`NotFound`](crate::ErrorKind::NotFound) for an unknown subscription;
    /// [`Unsupported`](crate::ErrorKind::Unsupported) from a backend without it.
    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        let _ = (subscription, max);
        Err(Error::unsupported(
            self.capabilities().backend,
            "peeking at dead letters",
        ))
    }

    /// Removes every message of the subscription's dead-letter destination, returning
    /// how many where the broker says.
    ///
    /// # Errors
    ///
    /// [`NotFound`](crate::ErrorKind::NotFound) for an unknown subscription;
    /// [`Unsupported`](crate::ErrorKind::Unsupported) from a backend without it.
    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        let _ = subscription;
        Err(Error::unsupported(
            self.capabilities().backend,
            "purging dead letters",
        ))
    }

    /// A publisher whose messages reach this subscription, for
    /// [`redrive`](crate::operations::redrive): the subscription's own queue where the
    /// broker has one, otherwise the narrowest destination that feeds it (documented per
    /// backend).
    ///
    /// # Errors
    ///
    /// [`NotFound`](crate::ErrorKind::NotFound) for an unknown subscription;
    /// [`Unsupported`](crate::ErrorKind::Unsupported) from a backend without it.
    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        let _ = subscription;
        Err(Error::unsupported(
            self.capabilities().backend,
            "redriving dead letters",
        ))
    }

    /// Compares the broker's setup of `expected.spec` with what the application
    /// expects and reports each mismatch with its fix; an empty list means none found.
    ///
    /// # Errors
    ///
    /// The broker's error when its setup cannot be read (a missing subscription is a
    /// finding, not an error); [`Unsupported`](crate::ErrorKind::Unsupported) from a
    /// backend without checks.
    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        let _ = expected;
        Err(Error::unsupported(
            self.capabilities().backend,
            "setup checks",
        ))
    }
}
