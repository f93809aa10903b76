//! The one error type every wharf operation returns.
//!
//! Backends differ in how they fail, but an application only needs to know what kind of
//! failure it was and whether trying again can help. [`Error`] carries a provider-neutral
//! [`ErrorKind`], a message for people, and the provider's own error as
//! [`source`](std::error::Error::source). Failures that give something back, a publish that
//! returns its message or a settlement that returns its delivery, wrap an [`Error`] in
//! [`PublishError`] and [`SettleError`].

use std::error::Error as StdError;
use std::fmt;

use crate::delivery::Delivery;
use crate::message::Message;

/// Shorthand for results whose error is a wharf [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, independent of the backend.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The topic, subscription or queue does not exist.
    NotFound,
    /// The topic, subscription or queue already exists with other settings.
    AlreadyExists,
    /// The credentials were refused or lack a permission.
    PermissionDenied,
    /// A value, name or option is malformed or out of range.
    InvalidArgument,
    /// A message is larger than the backend accepts.
    PayloadTooLarge,
    /// A count limit (attributes, batch entries) was exceeded.
    LimitExceeded,
    /// The backend asked the client to slow down.
    Throttled,
    /// The operation did not finish in time.
    Timeout,
    /// The backend could not be reached or is temporarily failing.
    Unavailable,
    /// The publisher, subscriber or connection was closed.
    Closed,
    /// The backend does not offer this feature.
    Unsupported,
    /// The delivery's lease ran out, so the backend may already have handed it to
    /// another consumer; settling it now has no effect.
    LeaseExpired,
    /// A payload could not be decoded into the requested type.
    Decode,
    /// Configuration is missing or malformed.
    Config,
    /// The backend reported a failure wharf cannot classify.
    Internal,
}

impl ErrorKind {
    /// Whether an operation that failed with this kind may succeed if tried again later.
    pub fn is_retryable(self) -> bool {
        // No wildcard arm: a new kind must decide here.
        match self {
            ErrorKind::Throttled | ErrorKind::Timeout | ErrorKind::Unavailable => true,
            ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::PermissionDenied
            | ErrorKind::InvalidArgument
            | ErrorKind::PayloadTooLarge
            | ErrorKind::LimitExceeded
            | ErrorKind::Closed
            | ErrorKind::Unsupported
            | ErrorKind::LeaseExpired
            | ErrorKind::Decode
            | ErrorKind::Config
            | ErrorKind::Internal => false,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Closed => "closed",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::LeaseExpired => "lease expired",
            ErrorKind::Decode => "decode",
            ErrorKind::Config => "configuration",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A failed wharf operation.
///
/// `Display` names the kind and says what happened and, where it helps, what to do next.
/// The backend's own error, when there is one, is the [`source`](StdError::source).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// Creates an error of `kind` with a message for people.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error, kept reachable through [`StdError::source`].
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A message of `size` bytes exceeds the backend's `limit`.
    pub fn payload_too_large(backend: &str, size: usize, limit: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "message is {size} bytes (payload plus attributes); \
                 the {backend} backend accepts at most {limit} bytes"
            ),
        )
    }

    /// `what` has `count` entries where the backend allows at most `limit`.
    pub fn limit_exceeded(backend: &str, what: &str, count: usize, limit: usize) -> Self {
        Self::new(
            ErrorKind::LimitExceeded,
            format!("{what}: {count} given; the {backend} backend allows at most {limit}"),
        )
    }

    /// The backend does not offer `feature`.
    pub fn unsupported(backend: &str, feature: &str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("the {backend} backend does not support {feature}"),
        )
    }

    /// An argument is out of range or malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// The publisher, subscriber or connection has been closed.
    pub fn closed(what: &str) -> Self {
        Self::new(ErrorKind::Closed, format!("{what} is closed"))
    }

    /// The delivery's lease has run out.
    pub fn lease_expired(delivery_id: &str) -> Self {
        Self::new(
            ErrorKind::LeaseExpired,
            format!(
                "the lease of delivery {delivery_id} has expired; the backend will redeliver \
                 it, so make the handler finish sooner or extend the lease while it runs"
            ),
        )
    }

    /// The provider-neutral kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The message for people, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A publish that failed, with the message handed back so nothing is lost.
#[derive(Debug, thiserror::Error)]
#[error("publish failed: {error}")]
pub struct PublishError {
    /// Why the publish failed.
    #[source]
    pub error: Error,
    /// The message that was not published.
    pub message: Box<Message>,
}

impl PublishError {
    /// Pairs a failure with the message it concerns.
    pub fn new(error: Error, message: Message) -> Self {
        Self {
            error,
            message: Box::new(message),
        }
    }

    /// Whether publishing the returned message again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }

    /// Takes the message back, to retry or store elsewhere.
    pub fn into_message(self) -> Message {
        *self.message
    }
}

/// A settlement (ack, nack, dead-letter) that failed, with the delivery handed back.
///
/// Dropping the returned delivery releases it for redelivery, as with any unsettled
/// delivery.
#[derive(Debug, thiserror::Error)]
#[error("settling delivery failed: {error}")]
pub struct SettleError {
    /// Why the settlement failed.
    #[source]
    pub error: Error,
    /// The delivery, still unsettled.
    pub delivery: Box<Delivery>,
}

impl SettleError {
    /// Whether settling the returned delivery again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }

    /// Takes the unsettled delivery back.
    pub fn into_delivery(self) -> Delivery {
        *self.delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds_are_retryable_and_the_rest_are_not() {
        assert!(ErrorKind::Throttled.is_retryable());
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(ErrorKind::Timeout.is_retryable());
        assert!(!ErrorKind::PayloadTooLarge.is_retryable());
        assert!(!ErrorKind::LeaseExpired.is_retryable());
    }

    #[test]
    fn size_errors_name_the_size_and_the_limit() {
        let error = Error::payload_too_large("sqs", 300_000, 262_144);

        let text = error.to_string();
        assert!(text.contains("300000"), "{text}");
        assert!(text.contains("262144"), "{text}");
        assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn the_provider_error_stays_reachable_as_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::new(ErrorKind::Unavailable, "broker down").with_source(io);

        let source = error.source().expect("source kept");
        assert_eq!(source.to_string(), "refused");
    }
}
