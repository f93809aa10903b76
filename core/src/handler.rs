//! [`Handler`]: the application's code that a [`Worker`](crate::Worker) runs for each
//! delivery, and [`HandlerError`], how it says whether a failure is worth retrying.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::delivery::Received;
use crate::error::Error;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Processes one delivery. Returning `Ok` acks it; an error retries or dead-letters it
/// according to the worker's [`RetryPolicy`](crate::RetryPolicy).
///
/// Implemented for every `Fn(Received) -> impl Future<Output = Result<(), HandlerError>>`,
/// so an async closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    fn handle(&self, delivery: Received) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Received) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, delivery: Received) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(delivery)
    }
}

/// Why a handler failed, and whether trying again can help.
///
/// Any error converts with `?`: a wharf [`Error`] keeps its own
/// [`is_retryable`](Error::is_retryable) verdict (so an undecodable payload is
/// permanent), every other error is transient.
pub struct HandlerError {
    permanent: bool,
    retry_after: Option<Duration>,
    source: BoxError,
}

impl HandlerError {
    /// A failure that may pass on a later attempt (a timeout, a busy dependency).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self {
            permanent: false,
            retry_after: None,
            source: error.into(),
        }
    }

    /// A failure no retry can fix (an invalid order): dead-letter at once.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self {
            permanent: true,
            retry_after: None,
            source: error.into(),
        }
    }

    /// Asks for the next attempt after `delay` instead of the policy's backoff.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Whether the message should go to the dead-letter destination without retrying.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The delay the handler asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let boxed: BoxError = Box::new(error);
        let permanent = boxed
            .downcast_ref::<Error>()
            .is_some_and(|e| !e.is_retryable());
        Self {
            permanent,
            retry_after: None,
            source: boxed,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.permanent {
            "permanent"
        } else {
            "transient"
        };
        write!(f, "{kind} failure: {}", self.source)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("permanent", &self.permanent)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn wharf_errors_keep_their_retry_verdict() {
        let decode: HandlerError = Error::new(ErrorKind::Decode, "bad json").into();
        let busy: HandlerError = Error::new(ErrorKind::Throttled, "slow down").into();

        assert!(decode.is_permanent());
        assert!(!busy.is_permanent());
    }

    #[test]
    fn other_errors_are_transient() {
        let io = std::io::Error::other("connection reset");

        let error: HandlerError = io.into();

        assert!(!error.is_permanent());
        assert!(error.to_string().contains("connection reset"));
    }
}
