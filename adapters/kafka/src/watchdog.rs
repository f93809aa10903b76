//! Noticing a librdkafka client that has lost every broker, so that wharf can replace it.
//!
//! librdkafka (2.10 and later) forgets the brokers a metadata answer leaves out, the
//! bootstrap ones included. A broker that is shutting down may answer with an empty
//! broker list; a client that knew only that broker then has none left, and as
//! librdkafka goes back to `bootstrap.servers` only when connections to known brokers
//! fail, a client without any never connects again, however long the cluster is back.
//! Nothing in librdkafka's API reports that state, but its statistics show it: they list
//! no broker but librdkafka's internal ones.
//!
//! So the producer and every group consumer wharf builds emit statistics every second
//! ([`STATISTICS_INTERVAL_MS`]), a [`BrokerWatch`] reads from each snapshot whether a real
//! broker (from `bootstrap.servers` or learned from metadata) is left, and a client with
//! none for [`STRANDED_LIMIT`] is replaced by a new one built from the same settings: the
//! producer by its owner in `producer.rs`, a consumer by its poll thread. A broker that is
//! merely down stays on the list, so an outage alone never replaces a client.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::debug;

/// librdkafka's `statistics.interval.ms` for the producer and group consumers: how often
/// the watch learns whether a client still knows a broker.
pub(crate) const STATISTICS_INTERVAL_MS: &str = "1000";

/// How long a client may know no broker at all before it is replaced. librdkafka passes
/// through that state only for an instant when it re-bootstraps; a few statistics
/// snapshots in a row without a broker mean it will not get out by itself.
pub(crate) const STRANDED_LIMIT: Duration = Duration::from_secs(5);

/// How often a producer's owner looks at its watch.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the statistics of one client say about its brokers.
#[derive(Debug, Default)]
pub(crate) struct BrokerWatch {
    /// Since when the client has known no broker, if it knows none now.
    stranded_since: Mutex<Option<Instant>>,
}

impl BrokerWatch {
    /// Reads one statistics snapshot (librdkafka's JSON).
    pub(crate) fn observe(&self, statistics: &[u8]) {
        let Some(brokers) = real_brokers(statistics) else {
            return;
        };

        let mut since = self.since();
        match (brokers, *since) {
            (0, None) => {
                debug!("librdkafka client knows no broker");
                *since = Some(Instant::now());
            }
            (0, Some(_)) => {}
            (_, _) => *since = None,
        }
    }

    /// Whether the client has known no broker for at least [`STRANDED_LIMIT`] at `now`.
    pub(crate) fn is_stranded(&self, now: Instant) -> bool {
        self.since()
            .is_some_and(|since| now.saturating_duration_since(since) >= STRANDED_LIMIT)
    }

    /// Starts the wait again, so that a replacement that could not be built is tried
    /// again after another [`STRANDED_LIMIT`] rather than at once.
    pub(crate) fn postpone(&self, now: Instant) {
        let mut since = self.since();
        if since.is_some() {
            *since = Some(now);
        }
    }

    /// Forgets what earlier snapshots said, for a client that was just replaced.
    pub(crate) fn reset(&self) {
        *self.since() = None;
    }

    /// Makes the watch report its client as stranded, as if it had known no broker for
    /// [`STRANDED_LIMIT`].
    #[cfg(test)]
    pub(crate) fn strand(&self) {
        let past = Instant::now().checked_sub(STRANDED_LIMIT);
        *self.since() = Some(past.expect("a clock past the limit"));
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.stranded_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The part of a statistics snapshot the watch reads.
#[derive(Deserialize)]
struct Statistics {
    brokers: HashMap<String, Broker>,
}

#[derive(Deserialize)]
struct Broker {
    /// `configured` (from `bootstrap.servers`), `learned` (from metadata), `internal` or
    /// `logical` (librdkafka's own placeholders, such as the group coordinator's).
    source: String,
}

/// How many brokers from `bootstrap.servers` or metadata the client knows; `None` if the
/// snapshot cannot be read, which never counts as stranded.
fn real_brokers(statistics: &[u8]) -> Option<usize> {
    let parsed: Statistics = serde_json::from_slice(statistics).ok()?;
    let real = parsed
        .brokers
        .values()
        .filter(|broker| matches!(broker.source.as_str(), "configured" | "learned"))
        .count();
    Some(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(sources: &[&str]) -> Vec<u8> {
        let brokers: Vec<String> = sources
            .iter()
            .enumerate()
            .map(|(n, source)| format!(r#""b{n}": {{"name": "b{n}", "source": "{source}"}}"#))
            .collect();
        format!(
            r#"{{"name": "rdkafka#producer-1", "brokers": {{{}}}}}"#,
            brokers.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn only_brokers_from_configuration_or_metadata_count() {
        assert_eq!(real_brokers(&snapshot(&["internal", "logical"])), Some(0));
        assert_eq!(
            real_brokers(&snapshot(&["configured", "internal"])),
            Some(1)
        );
        assert_eq!(real_brokers(&snapshot(&["learned", "learned"])), Some(2));
        assert_eq!(real_brokers(b"not json"), None);
    }

    #[test]
    fn a_client_is_stranded_only_after_the_limit_without_a_broker() {
        let watch = BrokerWatch::default();
        let start = Instant::now();

        watch.observe(&snapshot(&["internal"]));

        assert!(!watch.is_stranded(start));
        assert!(watch.is_stranded(start + STRANDED_LIMIT * 2));
        watch.postpone(start + STRANDED_LIMIT * 2);
        assert!(!watch.is_stranded(start + STRANDED_LIMIT * 2));
    }

    #[test]
    fn a_broker_seen_again_clears_the_watch() {
        let watch = BrokerWatch::default();
        watch.observe(&snapshot(&["internal"]));

        watch.observe(&snapshot(&["learned", "internal"]));

        assert!(!watch.is_stranded(Instant::now() + STRANDED_LIMIT * 2));
    }

    #[test]
    fn an_unreadable_snapshot_changes_nothing() {
        let watch = BrokerWatch::default();
        watch.observe(&snapshot(&["internal"]));

        watch.observe(b"{}");

        assert!(watch.is_stranded(Instant::now() + STRANDED_LIMIT * 2));
    }
}
