//! Checking a broker's setup against the application's policy.
//!
//! [`Expectations`] say what the application will do: which subscription it reads, how
//! many attempts its retry policy makes, how long a handler may run, where dead letters
//! go. A backend's [`doctor`](crate::Backend::doctor) reads the broker's actual setup
//! and returns a [`Finding`] for each mismatch, with the fix in the broker's own terms.
//! The comparisons every backend makes the same way are the functions here.

use std::fmt;
use std::time::Duration;

use crate::driver::SubscriptionSpec;
use crate::retry::RetryPolicy;
use crate::worker::WorkerOptions;

/// What the application expects of one subscription's setup.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectations {
    /// The subscription as the application would create it: name, topic, lease,
    /// delivery limit and dead-letter destination.
    pub spec: SubscriptionSpec,
    /// Deliveries the retry policy makes before dead-lettering.
    pub max_attempts: u32,
    /// Longest a handler may run.
    pub handler_timeout: Duration,
}

impl Expectations {
    /// The expectations of a worker with `options` reading the subscription `spec`.
    pub fn new(spec: SubscriptionSpec, options: &WorkerOptions) -> Self {
        Self::from_policy(spec, &options.retry, options.handler_timeout)
    }

    /// The expectations of a consumer retrying by `policy` with handlers that run up to
    /// `handler_timeout`.
    pub fn from_policy(
        spec: SubscriptionSpec,
        policy: &RetryPolicy,
        handler_timeout: Duration,
    ) -> Self {
        Self {
            spec,
            max_attempts: policy.attempts(),
            handler_timeout,
        }
    }

    /// The subscription's name.
    pub fn subscription(&self) -> &str {
        &self.spec.name
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Works, but is fragile or wasteful.
    Warning,
    /// Messages will be lost, stuck, or dead-lettered against the policy.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One mismatch between the broker's setup and the application's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What it is about: a queue, subscription or topic, named as the broker names it.
    pub subject: String,
    /// What is wrong and what it causes.
    pub problem: String,
    /// What to change, in the broker's terms.
    pub fix: String,
}

impl Finding {
    /// An error about `subject`.
    pub fn error(
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, subject, problem, fix)
    }

    /// A warning about `subject`.
    pub fn warning(
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, subject, problem, fix)
    }

    fn new(
        severity: Severity,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            subject: subject.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}; fix: {}",
            self.severity, self.subject, self.problem, self.fix
        )
    }
}

/// The subscription does not exist: nothing else can be checked.
pub fn missing(subject: &str, what: &str, fix: impl Into<String>) -> Finding {
    Finding::error(subject, format!("{what} `{subject}` does not exist"), fix)
}

/// The broker's own delivery limit must leave room for every attempt of the retry
/// policy, or the broker dead-letters a message before wharf has tried it as often as
/// the policy says.
///
/// `limit` is the broker's setting (`None`: no limit); `setting` names it, as in
/// `"the redrive policy's maxReceiveCount"`.
pub fn delivery_limit(
    subject: &str,
    limit: Option<u32>,
    expected: &Expectations,
    setting: &str,
) -> Option<Finding> {
    let limit = limit?;
    let attempts = expected.max_attempts;
    (limit < attempts).then(|| {
        Finding::error(
            subject,
            format!(
                "{setting} is {limit}, below the retry policy's {attempts} attempts: the \
                 broker dead-letters messages before wharf has retried them"
            ),
            format!("raise {setting} to at least {attempts}, or lower the retry attempts"),
        )
    })
}

/// A lease shorter than the handler timeout depends on wharf's keep-alive for every
/// long handler; if a consumer cannot extend it, the message goes to another consumer
/// while the first still works on it.
///
/// `setting` names the broker's lease, as in `"the visibility timeout"`.
pub fn lease_covers_handler(
    subject: &str,
    lease: Duration,
    expected: &Expectations,
    setting: &str,
) -> Option<Finding> {
    let timeout = expected.handler_timeout;
    (lease < timeout).then(|| {
        Finding::warning(
            subject,
            format!(
                "{setting} of {} is shorter than the handler timeout of {}: a handler that \
                 runs long relies on lease extensions, and the message is handed to another \
                 consumer if one fails",
                human(lease),
                human(timeout)
            ),
            format!(
                "set {setting} to at least {}, or shorten the handler timeout",
                human(timeout)
            ),
        )
    })
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(attempts: u32, handler_timeout: Duration) -> Expectations {
        let policy = RetryPolicy::default().max_attempts(attempts);
        Expectations::from_policy(
            SubscriptionSpec::new("orders", "billing"),
            &policy,
            handler_timeout,
        )
    }

    #[test]
    fn a_delivery_limit_below_the_attempts_is_an_error() {
        let expected = expected(5, Duration::from_secs(30));

        let finding = delivery_limit("billing", Some(3), &expected, "maxReceiveCount")
            .expect("3 < 5 is a mismatch");

        assert_eq!(finding.severity, Severity::Error);
        assert!(
            finding.problem.contains("maxReceiveCount is 3"),
            "{finding}"
        );
        assert!(finding.fix.contains("at least 5"), "{finding}");
        assert_eq!(delivery_limit("billing", Some(5), &expected, "limit"), None);
        assert_eq!(delivery_limit("billing", None, &expected, "limit"), None);
    }

    #[test]
    fn a_lease_shorter_than_the_handler_timeout_is_a_warning() {
        let expected = expected(5, Duration::from_secs(60));

        let finding =
            lease_covers_handler("billing", Duration::from_secs(30), &expected, "the lease")
                .expect("30 s < 60 s is a mismatch");

        assert_eq!(finding.severity, Severity::Warning);
        assert!(finding.fix.contains("at least 1m"), "{finding}");
        let long = Duration::from_secs(60);
        assert_eq!(
            lease_covers_handler("billing", long, &expected, "lease"),
            None
        );
    }
}
