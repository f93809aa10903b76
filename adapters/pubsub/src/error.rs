//! Every Pub/Sub failure becomes a wharf [`Error`] here, and nowhere else.
//!
//! Both clients wharf uses speak gRPC, so the mapping is one table from gRPC status
//! codes to [`ErrorKind`]s ([`kind_for`]). The provider's error is kept as the
//! [`source`](std::error::Error::source) of the wharf error.

use std::fmt;

use gcloud_gax::grpc::{Code, Status};
use google_cloud_pubsub::error::PublishError as NativePublishError;
use wharf_core::{Error, ErrorKind};

/// A publish on an ordering key that is paused because an earlier publish on the same
/// key failed.
///
/// Carried as the [`source`](std::error::Error::source) of the wharf error (kind
/// [`Closed`](ErrorKind::Closed)), so an application can tell it apart:
///
/// ```
/// use wharf_pubsub::OrderingKeyPaused;
///
/// fn paused_key(error: &wharf_core::Error) -> Option<&str> {
///     let source = std::error::Error::source(error)?;
///     source.downcast_ref::<OrderingKeyPaused>().map(OrderingKeyPaused::key)
/// }
/// ```
///
/// Publishing on the key works again after
/// [`PubSubBackend::resume_publish`](crate::PubSubBackend::resume_publish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderingKeyPaused {
    key: String,
}

impl OrderingKeyPaused {
    /// The paused ordering key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for OrderingKeyPaused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "publishing on ordering key `{}` is paused", self.key)
    }
}

impl std::error::Error for OrderingKeyPaused {}

/// What was being done when a call failed; settlements read some codes differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Creating, reading or deleting topics and subscriptions.
    Admin,
    /// Publishing.
    Publish,
    /// Receiving through the streaming pull.
    Receive,
    /// Ack, nack or a new ack deadline for delivered messages.
    Settle,
}

/// The wharf kind for a gRPC status code met during `operation`.
///
/// No wildcard arm: a code the table forgets does not compile.
pub(crate) fn kind_for(code: Code, operation: Operation) -> ErrorKind {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition if operation == Operation::Settle => {
            // Exactly-once subscriptions refuse ack ids whose lease has ended this way.
            ErrorKind::LeaseExpired
        }
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            ErrorKind::InvalidArgument
        }
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::PermissionDenied | Code::Unauthenticated => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::Throttled,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        // Google's clients retry INTERNAL and ABORTED from Pub/Sub: they are transient.
        Code::Unavailable | Code::Cancelled | Code::Aborted | Code::Internal => {
            ErrorKind::Unavailable
        }
        Code::Unimplemented => ErrorKind::Unsupported,
        Code::Ok | Code::Unknown | Code::DataLoss => ErrorKind::Internal,
    }
}

/// A failure of the community client (streaming pull, ack, ack deadlines).
pub(crate) fn from_status(status: Status, operation: Operation, what: &str) -> Error {
    let kind = kind_for(status.code(), operation);
    let message = format!("{what}: {} ({:?})", status.message(), status.code());

    Error::new(kind, message).with_source(status)
}

/// A failure of Google's client (administration and publishing).
pub(crate) fn from_native(
    error: google_cloud_pubsub::Error,
    operation: Operation,
    what: &str,
) -> Error {
    let kind = native_kind(&error, operation);

    Error::new(kind, format!("{what}: {error}")).with_source(error)
}

fn native_kind(error: &google_cloud_pubsub::Error, operation: Operation) -> ErrorKind {
    if let Some(status) = error.status() {
        return kind_for(Code::from(status.code as i32), operation);
    }

    if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_authentication() {
        ErrorKind::PermissionDenied
    } else if error.is_connect() || error.is_io() || error.is_transport() || error.is_exhausted() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    }
}

/// A failed publish through Google's client, for `topic`.
pub(crate) fn from_publish(error: NativePublishError, topic: &str, key: Option<&str>) -> Error {
    let what = format!("publish to {topic}");
    match error {
        NativePublishError::Rpc(rpc) => {
            let kind = native_kind(&rpc, Operation::Publish);
            Error::new(kind, format!("{what}: {rpc}")).with_source(NativeRpc(rpc))
        }
        NativePublishError::OrderingKeyPaused => paused(topic, key.unwrap_or_default()),
        NativePublishError::Shutdown => Error::closed(&format!("the publisher of {topic}")),
        other => Error::new(ErrorKind::Internal, format!("{what}: {other}")).with_source(other),
    }
}

fn paused(topic: &str, key: &str) -> Error {
    let message = format!(
        "publishing to {topic} on ordering key `{key}` is paused because an earlier \
         publish on it failed; call PubSubBackend::resume_publish(\"{topic}\", \"{key}\") \
         once the cause is fixed"
    );
    let source = OrderingKeyPaused {
        key: key.to_owned(),
    };

    Error::new(ErrorKind::Closed, message).with_source(source)
}

/// Google's client shares one RPC error between the messages of a batch; this keeps it
/// reachable as a source without cloning it.
#[derive(Debug)]
struct NativeRpc(std::sync::Arc<google_cloud_pubsub::Error>);

impl fmt::Display for NativeRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NativeRpc {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_ack_ids_are_expired_leases_only_when_settling() {
        assert_eq!(
            kind_for(Code::InvalidArgument, Operation::Settle),
            ErrorKind::LeaseExpired
        );
        assert_eq!(
            kind_for(Code::InvalidArgument, Operation::Admin),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn transient_codes_are_retryable() {
        for code in [Code::Unavailable, Code::Internal, Code::ResourceExhausted] {
            assert!(
                kind_for(code, Operation::Publish).is_retryable(),
                "{code:?}"
            );
        }
        assert!(!kind_for(Code::NotFound, Operation::Publish).is_retryable());
    }

    #[test]
    fn a_paused_key_is_a_typed_closed_error_naming_the_key() {
        let error = from_publish(
            NativePublishError::OrderingKeyPaused,
            "orders",
            Some("c-42"),
        );

        let source = std::error::Error::source(&error).expect("source");
        let paused = source
            .downcast_ref::<OrderingKeyPaused>()
            .expect("typed source");
        assert_eq!(paused.key(), "c-42");
        assert_eq!(error.kind(), ErrorKind::Closed);
        assert!(error.to_string().contains("resume_publish"), "{error}");
    }
}
