//! The one place lapin's errors become wharf [`Error`]s.
//!
//! The lapin error stays reachable as [`source`](std::error::Error::source). Broken
//! connections and channels are [`Unavailable`](ErrorKind::Unavailable), so callers retry
//! once wharf has reconnected; the broker's AMQP reply codes map onto the matching kinds.

use lapin::ErrorKind as Lapin;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use wharf_core::{Error, ErrorKind};

/// Maps a lapin error raised while doing `what` (for example "declaring queue orders").
pub(crate) fn map(what: &str, error: lapin::Error) -> Error {
    let kind = kind_of(&error);
    Error::new(kind, format!("RabbitMQ failed {what}: {error}")).with_source(error)
}

/// The wharf kind of a lapin error. Written without a catch-all where lapin's own
/// enums allow it, so a new variant forces a decision.
pub(crate) fn kind_of(error: &lapin::Error) -> ErrorKind {
    match error.kind() {
        Lapin::IOError(_)
        | Lapin::InvalidChannel(_)
        | Lapin::InvalidChannelState(..)
        | Lapin::InvalidConnectionState(_)
        | Lapin::MissingHeartbeatError
        | Lapin::ChannelsLimitReached => ErrorKind::Unavailable,
        Lapin::RuntimeShutdownError(_) => ErrorKind::Closed,
        Lapin::AuthProviderError(_) => ErrorKind::PermissionDenied,
        Lapin::ProtocolError(amqp) => protocol_kind(amqp.kind()),
        Lapin::InvalidProtocolVersion(_)
        | Lapin::ParsingError(_)
        | Lapin::SerialisationError(_)
        | Lapin::FutureCompleted
        | Lapin::NoDefaultRuntime => ErrorKind::Internal,
        _ => ErrorKind::Internal,
    }
}

fn protocol_kind(kind: &AMQPErrorKind) -> ErrorKind {
    match kind {
        AMQPErrorKind::Soft(soft) => soft_kind(soft),
        AMQPErrorKind::Hard(hard) => hard_kind(hard),
    }
}

fn soft_kind(soft: &AMQPSoftError) -> ErrorKind {
    match soft {
        AMQPSoftError::NOTFOUND => ErrorKind::NotFound,
        AMQPSoftError::ACCESSREFUSED => ErrorKind::PermissionDenied,
        // A redeclaration with other arguments: the queue or exchange exists, differently.
        AMQPSoftError::PRECONDITIONFAILED => ErrorKind::AlreadyExists,
        AMQPSoftError::CONTENTTOOLARGE => ErrorKind::PayloadTooLarge,
        AMQPSoftError::NOROUTE | AMQPSoftError::NOCONSUMERS => ErrorKind::NotFound,
        // An exclusive queue held by another connection, which may let go of it.
        AMQPSoftError::RESOURCELOCKED => ErrorKind::Unavailable,
    }
}

fn hard_kind(hard: &AMQPHardError) -> ErrorKind {
    match hard {
        // The broker is shutting down or an operator closed the connection.
        AMQPHardError::CONNECTIONFORCED => ErrorKind::Unavailable,
        // Memory or disk alarm, or too many channels.
        AMQPHardError::RESOURCEERROR => ErrorKind::Throttled,
        AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH => ErrorKind::PermissionDenied,
        AMQPHardError::FRAMEERROR
        | AMQPHardError::SYNTAXERROR
        | AMQPHardError::COMMANDINVALID
        | AMQPHardError::CHANNELERROR
        | AMQPHardError::UNEXPECTEDFRAME
        | AMQPHardError::NOTIMPLEMENTED
        | AMQPHardError::INTERNALERROR => ErrorKind::Internal,
    }
}

/// The broker is not reachable right now; wharf is reconnecting.
pub(crate) fn unavailable(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unavailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    fn protocol(kind: AMQPErrorKind) -> lapin::Error {
        lapin::Error::from(Lapin::ProtocolError(AMQPError::new(kind, "test".into())))
    }

    #[test]
    fn broken_connections_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let error = map("publishing", lapin::Error::from(io));

        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.is_retryable());
    }

    #[test]
    fn reply_codes_map_to_matching_kinds() {
        let missing = protocol(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
        let refused = protocol(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED));
        let differs = protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED));

        assert_eq!(kind_of(&missing), ErrorKind::NotFound);
        assert_eq!(kind_of(&refused), ErrorKind::PermissionDenied);
        assert_eq!(kind_of(&differs), ErrorKind::AlreadyExists);
    }
}
