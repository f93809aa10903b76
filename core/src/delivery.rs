//! What a subscriber receives: [`Delivery`], settled exactly once, and its read-only
//! view [`Received`].
//!
//! Settling (`ack`, `nack`, `dead_letter`) consumes the delivery, so settling twice does
//! not compile. A delivery dropped unsettled is released for redelivery and a warning is
//! logged, because a silently forgotten message is the failure wharf exists to prevent.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug_span, warn};

use crate::capabilities::Capabilities;
use crate::dead_letter::DeadLetter;
use crate::driver::{AckId, RawDelivery, SubscriptionDriver};
use crate::error::{Error, ErrorKind, Result, SettleError};
use crate::message::{Attributes, Message};
use crate::telemetry::{self, Instruments};

/// The contents of a delivery, cheap to clone and safe to hand to a handler.
#[derive(Clone)]
pub struct Received(Arc<Contents>);

struct Contents {
    id: String,
    payload: Bytes,
    attributes: Attributes,
    ordering_key: Option<String>,
    attempt: u32,
    published_at: SystemTime,
    first_failure: Option<SystemTime>,
    source: Arc<str>,
}

impl Received {
    /// The contents of `raw` as a delivery from `source`, without a way to settle it:
    /// for a backend's [`peek_dead_letters`](crate::Backend::peek_dead_letters).
    pub fn from_raw(raw: RawDelivery, source: &str) -> Self {
        Self::split(raw, source.into()).0
    }

    /// The contents of `raw`, and apart from them what settles it.
    fn split(raw: RawDelivery, source: Arc<str>) -> (Self, AckId) {
        let contents = Contents {
            id: raw.id,
            payload: raw.payload,
            attributes: raw.attributes,
            ordering_key: raw.ordering_key,
            attempt: raw.attempt.max(1),
            published_at: raw.published_at,
            first_failure: raw.first_failure,
            source,
        };
        (Self(Arc::new(contents)), raw.ack_id)
    }

    /// `message` as if it had just been delivered from `source`, on its first attempt:
    /// for tests of handlers and filters.
    pub fn detached(message: &Message, source: &str) -> Self {
        Self(Arc::new(Contents {
            id: String::new(),
            payload: message.payload().clone(),
            attributes: message.attributes().clone(),
            ordering_key: message.ordering_key().map(str::to_owned),
            attempt: 1,
            published_at: SystemTime::now(),
            first_failure: None,
            source: source.into(),
        }))
    }

    /// The backend's id for the message.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The payload, exactly as published.
    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    /// The attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.0.attributes
    }

    /// One attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.0.attributes.get(key).map(String::as_str)
    }

    /// The ordering key, if the message had one.
    pub fn ordering_key(&self) -> Option<&str> {
        self.0.ordering_key.as_deref()
    }

    /// Which delivery of this message this is: 1 the first time, counted by the backend.
    pub fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// When the message was first published.
    pub fn published_at(&self) -> SystemTime {
        self.0.published_at
    }

    /// When an earlier delivery of this message first failed, where the backend keeps it.
    pub fn first_failure(&self) -> Option<SystemTime> {
        self.0.first_failure
    }

    /// The subscription it came from.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Decodes the payload as JSON.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`], which a [`Worker`](crate::Worker) treats as a permanent
    /// failure: the message goes to the dead-letter destination at once.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.0.payload).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("payload of {} is not the expected JSON", self.id()),
            )
            .with_source(e)
        })
    }

    /// The W3C trace context the publisher wrote into the message's attributes; an
    /// empty context when it carries none. See [`telemetry`](mod@crate::telemetry).
    pub fn trace_context(&self) -> opentelemetry::Context {
        telemetry::extract(&self.0.attributes)
    }

    /// The message as it was published: payload, attributes and ordering key.
    pub fn to_message(&self) -> Message {
        let mut message =
            Message::new(self.0.payload.clone()).with_attributes(self.0.attributes.clone());
        if let Some(key) = &self.0.ordering_key {
            message = message.with_ordering_key(key.clone());
        }
        message
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("id", &self.0.id)
            .field("payload_bytes", &self.0.payload.len())
            .field(
                "attribute_keys",
                &self.0.attributes.keys().collect::<Vec<_>>(),
            )
            .field("attempt", &self.0.attempt)
            .finish()
    }
}

/// A received message that must be settled exactly once.
///
/// Reads like [`Received`] through `Deref`.
///
/// ```
/// # async fn example(delivery: wharf_core::Delivery) -> Result<(), wharf_core::SettleError> {
/// use std::time::Duration;
///
/// if delivery.payload().is_empty() {
///     delivery.dead_letter("empty order").await?;
/// } else if delivery.attempt() < 3 {
///     delivery.nack(Duration::from_secs(10)).await?;
/// } else {
///     delivery.ack().await?;
/// }
/// # Ok(()) }
/// ```
pub struct Delivery {
    received: Received,
    ack_id: Option<AckId>,
    driver: Arc<dyn SubscriptionDriver>,
    instruments: Arc<Instruments>,
}

impl Delivery {
    pub(crate) fn new(
        raw: RawDelivery,
        driver: Arc<dyn SubscriptionDriver>,
        source: Arc<str>,
        instruments: Arc<Instruments>,
    ) -> Self {
        let (received, ack_id) = Received::split(raw, source);
        Self {
            received,
            ack_id: Some(ack_id),
            driver,
            instruments,
        }
    }

    /// What the backend this delivery came from offers.
    pub fn capabilities(&self) -> &Capabilities {
        self.driver.capabilities()
    }

    /// The read-only contents, cheap to clone.
    pub fn received(&self) -> &Received {
        &self.received
    }

    pub(crate) fn instruments(&self) -> &Instruments {
        &self.instruments
    }

    /// Acknowledges the delivery: it is done and will not be delivered again.
    ///
    /// # Errors
    ///
    /// A [`SettleError`] holding the delivery, for example
    /// [`LeaseExpired`](ErrorKind::LeaseExpired) when the lease ran out first.
    pub async fn ack(mut self) -> Result<(), SettleError> {
        let id = self.take_ack_id();
        let span = self.span("ack");

        let result = self
            .driver
            .ack_batch(vec![id.clone()])
            .instrument(span)
            .await
            .pop();
        let result =
            result.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "no ack result")));
        if result.is_ok() {
            self.instruments.acked();
        }
        self.settled(id, result)
    }

    /// Acknowledges many deliveries with as few calls as the backend allows: those of
    /// one subscriber go to it together (SQS sends `DeleteMessageBatch` of ten, Pub/Sub
    /// one `Acknowledge` call), instead of one call per delivery as [`Delivery::ack`].
    ///
    /// Returns one result per delivery, in order; a failed one holds its delivery, as
    /// with [`Delivery::ack`].
    ///
    /// ```
    /// # async fn example(subscriber: wharf_core::Subscriber) -> wharf_core::Result<()> {
    /// use std::time::Duration;
    /// use wharf_core::Delivery;
    ///
    /// let batch = subscriber.receive(10, Duration::from_secs(5)).await?;
    /// for failed in Delivery::ack_all(batch).await.into_iter().filter_map(Result::err) {
    ///     eprintln!("ack of {} failed: {}", failed.delivery.id(), failed.error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Vec<Result<(), SettleError>> {
        let mut results = Vec::with_capacity(deliveries.len());
        let mut group: Vec<Delivery> = Vec::new();

        for delivery in deliveries {
            let same = group
                .first()
                .is_none_or(|first| Arc::ptr_eq(&first.driver, &delivery.driver));
            if !same {
                results.extend(Self::ack_group(std::mem::take(&mut group)).await);
            }
            group.push(delivery);
        }
        if !group.is_empty() {
            results.extend(Self::ack_group(group).await);
        }
        results
    }

    /// Acks deliveries of one driver in one `ack_batch` call.
    async fn ack_group(mut group: Vec<Delivery>) -> Vec<Result<(), SettleError>> {
        let driver = group[0].driver.clone();
        let ids: Vec<AckId> = group.iter_mut().map(Delivery::take_ack_id).collect();
        let span = debug_span!(
            "settle",
            operation = "ack",
            source = %group[0].source(),
            backend = driver.capabilities().backend,
            batch = group.len(),
        );

        let mut outcomes = driver
            .ack_batch(ids.clone())
            .instrument(span)
            .await
            .into_iter();
        group
            .into_iter()
            .zip(ids)
            .map(|(delivery, id)| {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "no ack result")));
                if outcome.is_ok() {
                    delivery.instruments.acked();
                }
                delivery.settled(id, outcome)
            })
            .collect()
    }

    /// Returns the delivery for redelivery after `delay`; its next attempt is one higher.
    ///
    /// # Errors
    ///
    /// A [`SettleError`] holding the delivery: [`InvalidArgument`](ErrorKind::InvalidArgument)
    /// if `delay` is above the backend's maximum, or the backend's error.
    pub async fn nack(mut self, delay: Duration) -> Result<(), SettleError> {
        if let Err(error) = self.driver.capabilities().check_nack_delay(delay) {
            return Err(SettleError {
                error,
                delivery: Box::new(self),
            });
        }
        let id = self.take_ack_id();
        let span = self.span("nack");

        let result = self.driver.nack(id.clone(), delay).instrument(span).await;
        if result.is_ok() {
            self.instruments.nacked();
        }
        self.settled(id, result)
    }

    /// Moves the delivery to the subscription's dead-letter destination with `reason`,
    /// keeping its payload and attributes.
    ///
    /// # Errors
    ///
    /// A [`SettleError`] holding the delivery if the backend could not store it.
    pub async fn dead_letter(mut self, reason: impl Into<String>) -> Result<(), SettleError> {
        let letter = self.letter(reason.into());
        let id = self.take_ack_id();
        let span = self.span("dead_letter");

        let result = self
            .driver
            .dead_letter(id.clone(), letter)
            .instrument(span)
            .await;
        if result.is_ok() {
            self.instruments.dead_lettered();
        }
        self.settled(id, result)
    }

    /// Keeps the delivery hidden from other consumers for `lease` from now.
    ///
    /// A [`Worker`](crate::Worker) does this by itself while a handler runs.
    ///
    /// # Errors
    ///
    /// [`Unsupported`](ErrorKind::Unsupported) where leases cannot be extended,
    /// [`InvalidArgument`](ErrorKind::InvalidArgument) outside the backend's range,
    /// [`LeaseExpired`](ErrorKind::LeaseExpired) if it already ran out.
    pub async fn extend_lease(&self, lease: Duration) -> Result<()> {
        self.driver.capabilities().check_lease(lease)?;
        let Some(id) = &self.ack_id else {
            return Err(Error::new(ErrorKind::Internal, "delivery already settled"));
        };

        self.driver
            .extend_lease(id, lease)
            .instrument(self.span("extend_lease"))
            .await
    }

    fn letter(&self, reason: String) -> DeadLetter {
        let now = SystemTime::now();
        let first_failure = self
            .first_failure()
            .or((self.attempt() == 1).then_some(now));
        DeadLetter {
            message: self.received.to_message(),
            reason,
            attempts: self.attempt(),
            source: self.source().to_owned(),
            first_failure,
            last_failure: now,
        }
    }

    fn take_ack_id(&mut self) -> AckId {
        // Every settling method consumes `self`, and a failed one hands back a fresh
        // `Delivery` with its id restored, so the id is always present here.
        self.ack_id
            .take()
            .unwrap_or_else(|| unreachable!("a delivery is settled only once"))
    }

    fn settled(mut self, id: AckId, result: Result<()>) -> Result<(), SettleError> {
        result.map_err(|error| {
            self.ack_id = Some(id);
            SettleError {
                error,
                delivery: Box::new(self),
            }
        })
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        debug_span!(
            "settle",
            operation,
            source = %self.source(),
            backend = self.driver.capabilities().backend,
            delivery = %self.id(),
            attempt = self.attempt(),
        )
    }
}

impl Deref for Delivery {
    type Target = Received;

    fn deref(&self) -> &Received {
        &self.received
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("received", &self.received)
            .field("settled", &self.ack_id.is_none())
            .finish()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(id) = self.ack_id.take() else { return };
        warn!(
            source = %self.source(),
            delivery = %self.id(),
            attempt = self.attempt(),
            "delivery dropped without ack, nack or dead_letter; releasing it for redelivery"
        );

        // Without a runtime the release cannot run; the lease expiring returns it instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let driver = self.driver.clone();
        let delivery = self.id().to_owned();
        runtime.spawn(async move {
            if let Err(error) = driver.nack(id, Duration::ZERO).await {
                warn!(%delivery, error.kind = %error.kind(), %error,
                    "could not release a dropped delivery; it returns when its lease expires");
            }
        });
    }
}
