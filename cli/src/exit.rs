//! Exit codes and failures: every way the command can end, each with a code a script
//! can test and, for failures, a message that says what to do next.

use std::fmt;
use std::process::ExitCode;

use wharf::{Error, ErrorKind};

/// How the command ended. The numbers are part of the command's interface: scripts test
/// them, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// The broker refused the operation, or some messages of it failed.
    Failed = 1,
    /// Bad arguments or configuration: nothing was sent to the broker that could fail.
    Usage = 2,
    /// `doctor` found at least one error.
    Findings = 3,
    /// The topic or subscription does not exist.
    NotFound = 4,
    /// The broker could not be reached, timed out or asked to slow down: trying again
    /// later may work.
    Unavailable = 5,
    /// The backend cannot do this, or cannot report the figure asked for.
    Unsupported = 6,
}

impl Exit {
    /// The exit code for a wharf error of `kind`.
    pub(crate) fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Throttled => Self::Unavailable,
            ErrorKind::Config | ErrorKind::InvalidArgument => Self::Usage,
            ErrorKind::Unsupported => Self::Unsupported,
            // New kinds are failures of the operation until they earn a code of their own.
            _ => Self::Failed,
        }
    }

    /// A stable name for JSON output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Usage => "usage",
            Self::Findings => "findings",
            Self::NotFound => "not_found",
            Self::Unavailable => "unavailable",
            Self::Unsupported => "unsupported",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A command that could not finish: what went wrong and what to do about it.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The exit code.
    pub(crate) exit: Exit,
    /// What went wrong, naming the topic or subscription concerned.
    pub(crate) message: String,
    /// What to do next.
    pub(crate) hint: String,
}

impl Failure {
    /// A failure with its own message and hint.
    pub(crate) fn new(exit: Exit, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A usage error: the arguments or the configuration must change.
    pub(crate) fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message, hint)
    }

    /// A wharf error met while `doing` something, with the hint its kind calls for.
    pub(crate) fn wharf(doing: impl fmt::Display, error: &Error) -> Self {
        Self::new(
            Exit::of(error.kind()),
            format!("{doing}: {error}"),
            hint(error.kind()),
        )
    }

    /// A closure turning a wharf error into a failure while `doing` something, for
    /// `map_err`.
    pub(crate) fn during(doing: impl fmt::Display) -> impl FnOnce(Error) -> Self {
        move |error| Self::wharf(doing, &error)
    }

    /// Local input or output failed (a file, standard input, the terminal).
    pub(crate) fn io(doing: impl fmt::Display, error: &std::io::Error) -> Self {
        Self::new(
            Exit::Failed,
            format!("{doing}: {error}"),
            "check that the path exists and is readable, or pipe the input through `-`",
        )
    }
}

/// What to do next after an error of `kind`.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => {
            "check the topic or subscription name (names are case-sensitive; on a backend \
             without fan-out the subscription is the topic's queue); `wharf doctor \
             --subscription NAME` reports what is missing"
        }
        ErrorKind::Unavailable | ErrorKind::Timeout => {
            "check that the broker in --url (or WHARF_URL) is running and reachable from \
             here, then run the command again"
        }
        ErrorKind::Throttled => {
            "the broker asked to slow down: wait a moment and run the command again (a \
             redrive takes --rate N/s)"
        }
        ErrorKind::PermissionDenied => {
            "check the credentials in the URL or the environment, and that they allow this \
             operation on this topic or subscription"
        }
        ErrorKind::Config | ErrorKind::InvalidArgument => {
            "fix the value named above; `wharf --help` lists the options and where \
             settings come from"
        }
        ErrorKind::Unsupported => {
            "this backend cannot do it; its crate docs (section `Operating queues`) say what \
             it offers instead"
        }
        ErrorKind::PayloadTooLarge | ErrorKind::LimitExceeded => {
            "make the message smaller or give it fewer attributes; the backend's limits are \
             in its capabilities"
        }
        _ => "run the command again with WHARF_LOG=debug to see what the backend reported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_to_the_documented_codes() {
        assert_eq!(Exit::of(ErrorKind::NotFound) as u8, 4);
        assert_eq!(Exit::of(ErrorKind::Unavailable) as u8, 5);
        assert_eq!(Exit::of(ErrorKind::Timeout) as u8, 5);
        assert_eq!(Exit::of(ErrorKind::Config) as u8, 2);
        assert_eq!(Exit::of(ErrorKind::Unsupported) as u8, 6);
        assert_eq!(Exit::of(ErrorKind::PermissionDenied) as u8, 1);
    }

    #[test]
    fn a_wharf_failure_says_what_was_being_done_and_what_next() {
        let error = Error::new(ErrorKind::NotFound, "queue `billing` does not exist");

        let failure = Failure::wharf("stats of `billing`", &error);

        assert_eq!(failure.exit, Exit::NotFound);
        assert!(failure.message.starts_with("stats of `billing`: not found"));
        assert!(failure.hint.contains("wharf doctor"), "{}", failure.hint);
    }
}
