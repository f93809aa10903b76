//! [`Subscriber`]: what applications use to receive deliveries from a subscription.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, debug_span};

use crate::capabilities::Capabilities;
use crate::delivery::Delivery;
use crate::driver::SubscriptionDriver;
use crate::error::{Error, ErrorKind, Result};
use crate::telemetry::Instruments;

/// The longest one receive may wait. Far beyond any broker's long poll, and short
/// enough that no deadline computed from it overflows.
pub const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Slack given to a backend's receive beyond the caller's timeout: one network round trip.
const RECEIVE_SLACK: Duration = Duration::from_secs(2);

/// Receives deliveries from one subscription of any backend.
///
/// Cheap to clone; clones compete for the same messages. For a handler loop with retries,
/// dead-lettering and graceful shutdown, use a [`Worker`](crate::Worker).
///
/// ```
/// # async fn example(subscriber: wharf_core::Subscriber) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// for delivery in subscriber.receive(10, Duration::from_secs(5)).await? {
///     println!("attempt {} of {}", delivery.attempt(), delivery.id());
///     delivery.ack().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Subscriber {
    driver: Arc<dyn SubscriptionDriver>,
    // Shared by every delivery, so receiving does not copy the name per message.
    source: Arc<str>,
    instruments: Arc<Instruments>,
}

impl Subscriber {
    /// Wraps an adapter's subscription driver.
    pub fn new(driver: impl SubscriptionDriver) -> Self {
        Self::from_arc(Arc::new(driver))
    }

    /// Wraps a shared subscription driver.
    pub fn from_arc(driver: Arc<dyn SubscriptionDriver>) -> Self {
        let source = Arc::from(driver.subscription());
        let instruments = Instruments::new(driver.capabilities().backend, driver.subscription());
        Self {
            driver,
            source,
            instruments,
        }
    }

    /// The adapter's driver behind this subscriber, for wrappers such as fault injection
    /// that decorate a backend without knowing its concrete type.
    pub fn driver(&self) -> &Arc<dyn SubscriptionDriver> {
        &self.driver
    }

    /// The subscription this subscriber reads.
    pub fn subscription(&self) -> &str {
        self.driver.subscription()
    }

    /// What the backend offers and its limits.
    pub fn capabilities(&self) -> &Capabilities {
        self.driver.capabilities()
    }

    /// Receives up to `max` deliveries, waiting at most `timeout` for the first.
    ///
    /// Returns an empty list when nothing arrived in time.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](ErrorKind::InvalidArgument) if `max` is zero or `timeout` is
    /// above [`MAX_RECEIVE_WAIT`]; the backend's
    /// error otherwise, with [`Error::is_retryable`] telling whether to keep polling.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that nothing is lost: messages the backend handed over
    /// before cancellation return after their lease.
    pub async fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Err(Error::invalid(
                "receive needs a maximum of at least one delivery",
            ));
        }
        if timeout > MAX_RECEIVE_WAIT {
            return Err(Error::invalid(format!(
                "a receive waits at most {}; call it again to wait longer",
                humantime::format_duration(MAX_RECEIVE_WAIT)
            )));
        }

        let span = debug_span!(
            "receive",
            source = %self.subscription(),
            backend = self.capabilities().backend,
            max,
        );
        let call = self.driver.receive_batch(max, timeout);
        let raw = tokio::time::timeout(timeout + RECEIVE_SLACK, call)
            .instrument(span)
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, receive_overran(timeout)))??;

        Ok(raw
            .into_iter()
            .map(|raw| {
                let (driver, source) = (self.driver.clone(), self.source.clone());
                Delivery::new(raw, driver, source, self.instruments.clone())
            })
            .collect())
    }

    /// Receives one delivery, or `None` if nothing arrived within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive).
    pub async fn receive_one(&self, timeout: Duration) -> Result<Option<Delivery>> {
        Ok(self.receive(1, timeout).await?.pop())
    }

    /// Stops receiving and releases resources.
    ///
    /// # Errors
    ///
    /// The backend's error if closing failed.
    pub async fn close(&self) -> Result<()> {
        self.driver.close().await
    }
}

fn receive_overran(timeout: Duration) -> String {
    format!(
        "the backend did not answer a receive within {} plus {}s of slack",
        humantime::format_duration(timeout),
        RECEIVE_SLACK.as_secs()
    )
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("subscription", &self.subscription())
            .field("backend", &self.capabilities().backend)
            .finish()
    }
}
