//! [`SubscriptionStats`]: a snapshot of one subscription's backlog, figure by figure.

use std::fmt;
use std::time::Duration;

/// One figure of a snapshot: known, or unknown with the reason the broker cannot
/// report it.
///
/// Brokers expose different things (SQS has no age of the oldest message outside
/// CloudWatch, Kafka does not know what a consumer holds in flight, the Pub/Sub emulator
/// has no metrics at all), so every figure says which it is rather than pretending to be
/// zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Figure<T> {
    /// The broker reported this value.
    Known(T),
    /// The broker cannot report it, and why.
    Unknown(String),
}

impl<T> Figure<T> {
    /// An unknown figure with the reason.
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self::Unknown(reason.into())
    }

    /// The value, if known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Unknown(_) => None,
        }
    }

    /// The reason, if unknown.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Known(_) => None,
            Self::Unknown(reason) => Some(reason),
        }
    }

    /// Applies `f` to a known value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Figure<U> {
        match self {
            Self::Known(value) => Figure::Known(f(value)),
            Self::Unknown(reason) => Figure::Unknown(reason),
        }
    }

    /// Combines two figures; unknown if either is, with the first reason.
    pub fn zip<U>(self, other: Figure<U>) -> Figure<(T, U)> {
        match (self, other) {
            (Self::Known(a), Figure::Known(b)) => Figure::Known((a, b)),
            (Self::Unknown(reason), _) | (_, Figure::Unknown(reason)) => Figure::Unknown(reason),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Figure<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(value) => value.fmt(f),
            Self::Unknown(_) => f.write_str("unknown"),
        }
    }
}

/// How many messages a subscription holds, in which state, and how old the oldest is.
///
/// From [`Backend::stats`](crate::Backend::stats). Counts are the broker's: on SQS they
/// are approximate, as SQS says of its own `ApproximateNumberOf*` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// The subscription these figures describe.
    pub subscription: String,
    /// Visible now, waiting for a receiver.
    pub ready: Figure<u64>,
    /// Delivered and not yet settled.
    pub in_flight: Figure<u64>,
    /// Hidden until a publish delay or a nack delay ends.
    pub delayed: Figure<u64>,
    /// Messages in the subscription's dead-letter destination.
    pub dead_lettered: Figure<u64>,
    /// How long ago the oldest message not yet settled was published; known `None` when
    /// there is none.
    pub oldest_age: Figure<Option<Duration>>,
    /// On a log (Kafka): records between the group's committed offsets and the end of
    /// the log, which counts both ready and in-flight records.
    pub consumer_lag: Figure<u64>,
}

impl SubscriptionStats {
    /// A snapshot of `subscription` with every figure unknown for `reason`, for a
    /// backend to fill in what its broker reports.
    pub fn unknown(subscription: impl Into<String>, reason: &str) -> Self {
        Self {
            subscription: subscription.into(),
            ready: Figure::unknown(reason),
            in_flight: Figure::unknown(reason),
            delayed: Figure::unknown(reason),
            dead_lettered: Figure::unknown(reason),
            oldest_age: Figure::unknown(reason),
            consumer_lag: Figure::unknown(reason),
        }
    }

    /// Every message not yet settled: ready + in flight + delayed, or on a log the
    /// consumer lag + delayed.
    pub fn backlog(&self) -> Figure<u64> {
        let undelivered = match &self.consumer_lag {
            Figure::Known(lag) => Figure::Known(*lag),
            Figure::Unknown(_) => self
                .ready
                .clone()
                .zip(self.in_flight.clone())
                .map(|(ready, in_flight)| ready + in_flight),
        };
        undelivered
            .zip(self.delayed.clone())
            .map(|(undelivered, delayed)| undelivered + delayed)
    }

    /// Each unknown figure's name and reason, for reports.
    pub fn unknown_figures(&self) -> Vec<(&'static str, &str)> {
        let reasons = [
            ("ready", self.ready.reason()),
            ("in_flight", self.in_flight.reason()),
            ("delayed", self.delayed.reason()),
            ("dead_lettered", self.dead_lettered.reason()),
            ("oldest_age", self.oldest_age.reason()),
            ("consumer_lag", self.consumer_lag.reason()),
        ];
        reasons
            .into_iter()
            .filter_map(|(name, reason)| reason.map(|reason| (name, reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ready: u64, in_flight: u64, delayed: u64) -> SubscriptionStats {
        SubscriptionStats {
            ready: Figure::Known(ready),
            in_flight: Figure::Known(in_flight),
            delayed: Figure::Known(delayed),
            consumer_lag: Figure::unknown("not a log"),
            ..SubscriptionStats::unknown("billing", "not measured")
        }
    }

    #[test]
    fn backlog_of_a_queue_adds_its_states() {
        assert_eq!(queue(3, 2, 1).backlog(), Figure::Known(6));
    }

    #[test]
    fn backlog_of_a_log_is_its_lag_plus_delayed() {
        let stats = SubscriptionStats {
            consumer_lag: Figure::Known(40),
            delayed: Figure::Known(2),
            ..SubscriptionStats::unknown("billing", "no in-flight count")
        };

        assert_eq!(stats.backlog(), Figure::Known(42));
    }

    #[test]
    fn backlog_is_unknown_when_a_part_is() {
        let stats = SubscriptionStats {
            in_flight: Figure::unknown("broker keeps no count"),
            ..queue(3, 0, 0)
        };

        assert_eq!(
            stats.backlog(),
            Figure::unknown("broker keeps no count"),
            "the reason of the missing part is kept"
        );
        assert_eq!(
            stats.unknown_figures(),
            vec![
                ("in_flight", "broker keeps no count"),
                ("dead_lettered", "not measured"),
                ("oldest_age", "not measured"),
                ("consumer_lag", "not a log"),
            ]
        );
    }
}
