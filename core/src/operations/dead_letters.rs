//! Working with dead letters: [`redrive`] them back to their subscription, and the
//! receive-based [`peek_by_receiving`] that queue-like backends build their
//! [`Backend::peek_dead_letters`] from.
//!
//! A redriven message is a new publish of the dead letter's payload, ordering key and
//! original attributes (the envelope that said why it failed is removed), with
//! [`REDRIVE_COUNT`] one higher than before, so a message that keeps coming back is easy
//! to spot. It starts again at attempt 1. The dead letter is removed only after the
//! broker confirmed the new publish, so a redrive that fails half-way loses nothing: at
//! worst a message is both redriven and still in the dead-letter destination.

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::dead_letter::{Envelope, REASON, SOURCE};
use crate::delivery::{Delivery, Received};
use crate::driver::Backend;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// How many times a message was redriven from a dead-letter destination.
pub const REDRIVE_COUNT: &str = "wharf-redrive-count";

/// Most dead letters one receive of a redrive asks for.
const BATCH: usize = 100;

/// Most error messages a [`RedriveReport`] keeps.
const KEPT_ERRORS: usize = 10;

type Predicate = Arc<dyn Fn(&Received) -> bool + Send + Sync>;

/// Which dead letters to redrive, how many and how fast.
///
/// ```
/// use std::num::NonZeroU32;
/// use wharf_core::operations::RedriveOptions;
///
/// let options = RedriveOptions::default()
///     .with_attribute("tenant", "acme")
///     .reason_contains("timeout")
///     .rate(NonZeroU32::new(50).unwrap())
///     .limit(1_000);
/// ```
#[derive(Clone)]
pub struct RedriveOptions {
    filters: Vec<Predicate>,
    any_source: bool,
    rate: Option<NonZeroU32>,
    limit: Option<u64>,
    idle: Duration,
}

impl Default for RedriveOptions {
    /// Every dead letter, as fast as the broker takes them, until none arrives for 2 s.
    fn default() -> Self {
        Self {
            filters: Vec::new(),
            any_source: false,
            rate: None,
            limit: None,
            idle: Duration::from_secs(2),
        }
    }
}

impl RedriveOptions {
    /// Redrives only dead letters for which `keep` returns `true`; the others stay.
    #[must_use]
    pub fn only(mut self, keep: impl Fn(&Received) -> bool + Send + Sync + 'static) -> Self {
        self.filters.push(Arc::new(keep));
        self
    }

    /// Redrives only dead letters whose attribute `key` is `value`.
    #[must_use]
    pub fn with_attribute(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.only(move |received| received.attribute(&key) == Some(value.as_str()))
    }

    /// Redrives only dead letters whose dead-letter reason contains `text`.
    #[must_use]
    pub fn reason_contains(self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.only(move |received| {
            received
                .attribute(REASON)
                .is_some_and(|reason| reason.contains(&text))
        })
    }

    /// Also redrives dead letters that another subscription sharing the dead-letter
    /// destination put there. By default only those whose `wharf-source` names this
    /// subscription, or that carry no source (dead-lettered by the broker itself), go.
    #[must_use]
    pub fn any_source(mut self) -> Self {
        self.any_source = true;
        self
    }

    /// Redrives at most `per_second` messages a second.
    #[must_use]
    pub fn rate(mut self, per_second: NonZeroU32) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Stops after redriving `count` messages.
    #[must_use]
    pub fn limit(mut self, count: u64) -> Self {
        self.limit = Some(count);
        self
    }

    /// Ends the redrive once no dead letter arrived for `idle`.
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    fn matches(&self, received: &Received) -> bool {
        self.filters.iter().all(|keep| keep(received))
    }

    fn belongs_elsewhere(&self, received: &Received, subscription: &str) -> bool {
        !self.any_source
            && received
                .attribute(SOURCE)
                .is_some_and(|s| s != subscription)
    }

    /// How many to ask for next, given how many were redriven so far.
    fn room(&self, redriven: u64) -> usize {
        let by_rate = self.rate.map_or(BATCH, |rate| rate.get() as usize);
        let by_limit = self
            .limit
            .map_or(u64::MAX, |limit| limit.saturating_sub(redriven));
        BATCH
            .min(by_rate)
            .min(usize::try_from(by_limit).unwrap_or(usize::MAX))
    }
}

impl fmt::Debug for RedriveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriveOptions")
            .field("filters", &self.filters.len())
            .field("any_source", &self.any_source)
            .field("rate", &self.rate)
            .field("limit", &self.limit)
            .field("idle", &self.idle)
            .finish()
    }
}

/// What a [`redrive`] did, also handed to its progress callback after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Dead letters looked at.
    pub examined: u64,
    /// Published back to the subscription and removed from the dead-letter destination.
    pub redriven: u64,
    /// Left in the dead-letter destination because the filter did not match.
    pub skipped: u64,
    /// Left in the dead-letter destination because they came from another subscription
    /// sharing it (their `wharf-source` names it), unless
    /// [`any_source`](RedriveOptions::any_source) was set.
    pub other_source: u64,
    /// Could not be published back, and stay in the dead-letter destination.
    pub failed: u64,
    /// Published back, but removing them from the dead-letter destination failed: they
    /// are now in both places. Redriving again would publish them a second time; purge
    /// or inspect them instead.
    pub not_removed: u64,
    /// Dead letters the redrive did not get to look at, as the backend counted after
    /// it ended; `None` where it cannot count. A consumer can hold only so many
    /// unsettled messages (RabbitMQ's prefetch, Pub/Sub's outstanding limit), and the
    /// ones a filter skips are held, so a filtered redrive of a large dead-letter
    /// destination can end before it saw every letter: run it again.
    pub unexamined: Option<u64>,
    /// The first few failures' messages.
    pub errors: Vec<String>,
}

impl RedriveReport {
    fn failure(&mut self, error: &Error) {
        self.failed += 1;
        self.keep(error);
    }

    fn not_removed(&mut self, error: &Error) {
        self.not_removed += 1;
        self.keep(error);
    }

    fn keep(&mut self, error: &Error) {
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error.to_string());
        }
    }
}

/// Moves the dead letters of `subscription` back onto it, calling `progress` after each
/// batch.
///
/// Messages go through the backend's
/// [`redrive_publisher`](Backend::redrive_publisher), so they reach this subscription
/// (on Pub/Sub, whose subscriptions cannot be published to, its topic). Dead letters the
/// filter skips are held until the redrive ends, so each is looked at once, and then
/// returned to the dead-letter destination, and so are those another subscription
/// sharing the destination put there (see [`RedriveOptions::any_source`]). The redrive
/// ends when no dead letter arrives for the idle time, or when a receive brings only
/// dead letters already looked at (a held one whose lease ran out);
/// [`RedriveReport::unexamined`] then says whether any were left unseen.
///
/// # Errors
///
/// The backend's error when the dead-letter destination or the subscription cannot be
/// opened, or a receive fails; what was redriven before stays redriven, and the error
/// says how many.
pub async fn redrive(
    backend: &dyn Backend,
    subscription: &str,
    options: &RedriveOptions,
    mut progress: impl FnMut(&RedriveReport) + Send,
) -> Result<RedriveReport> {
    let source = backend.dead_letter_subscriber(subscription).await?;
    let target = backend.redrive_publisher(subscription).await?;

    let result = redrive_between(subscription, &source, &target, options, &mut progress).await;

    for closed in [source.close().await, target.close().await] {
        if let Err(error) = closed {
            warn!(subscription, %error, "closing after a redrive failed");
        }
    }
    let mut report = result?;
    report.unexamined = unexamined(backend, subscription, &report).await;
    info!(
        subscription,
        redriven = report.redriven,
        skipped = report.skipped,
        failed = report.failed,
        "redrive finished"
    );
    Ok(report)
}

/// How many dead letters are left beyond those the redrive looked at and left.
async fn unexamined(
    backend: &dyn Backend,
    subscription: &str,
    report: &RedriveReport,
) -> Option<u64> {
    let stats = backend.stats(subscription).await.ok()?;
    let left = *stats.dead_lettered.known()?;
    let looked_at_and_left = report.skipped + report.other_source + report.failed;
    Some(left.saturating_sub(looked_at_and_left))
}

async fn redrive_between(
    subscription: &str,
    source: &Subscriber,
    target: &Publisher,
    options: &RedriveOptions,
    progress: &mut (impl FnMut(&RedriveReport) + Send),
) -> Result<RedriveReport> {
    let mut report = RedriveReport::default();
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let started = Instant::now();

    let outcome = loop {
        let room = options.room(report.redriven);
        if room == 0 {
            break Ok(());
        }
        let batch = match source.receive(room, options.idle).await {
            Ok(batch) if batch.is_empty() => break Ok(()),
            Ok(batch) => batch,
            Err(error) => break Err(error),
        };

        // A skipped dead letter whose lease ran out while held comes back: once a
        // batch holds nothing new, everything left has been looked at.
        let (new, seen_before): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|delivery| seen.insert(delivery.id().to_owned()));
        held.extend(seen_before);
        if new.is_empty() {
            break Ok(());
        }

        report.examined += new.len() as u64;
        let (elsewhere, ours): (Vec<_>, Vec<_>) = new
            .into_iter()
            .partition(|delivery| options.belongs_elsewhere(delivery.received(), subscription));
        let (matching, other): (Vec<_>, Vec<_>) = ours
            .into_iter()
            .partition(|delivery| options.matches(delivery.received()));
        report.other_source += elsewhere.len() as u64;
        report.skipped += other.len() as u64;
        held.extend(elsewhere);
        held.extend(other);

        redrive_batch(target, matching, &mut report).await;
        progress(&report);
        pace(options.rate, started, report.redriven).await;
    };

    release(held).await;
    outcome.map(|()| report.clone()).map_err(|error| {
        let redriven = report.redriven;
        Error::new(
            error.kind(),
            format!("redrive stopped after {redriven} messages: {error}"),
        )
        .with_source(error)
    })
}

async fn redrive_batch(target: &Publisher, matching: Vec<Delivery>, report: &mut RedriveReport) {
    let deduplicating = target.capabilities().deduplication;
    let messages = matching
        .iter()
        .map(|delivery| {
            let message = redriven_message(delivery.received());
            // A deduplicating queue (SQS FIFO with content-based deduplication) would
            // take a copy of a recent message for a repeat and drop it; a redrive is a
            // new message, so it gets an id of its own.
            match deduplicating {
                true => with_redrive_id(message, delivery.received()),
                false => message,
            }
        })
        .collect();
    let published = target.publish_batch(messages).await;

    let mut confirmed = Vec::with_capacity(matching.len());
    let mut refused = Vec::new();
    for (delivery, result) in matching.into_iter().zip(published) {
        match result {
            Ok(()) => confirmed.push(delivery),
            Err(failed) => {
                report.failure(&failed.error);
                refused.push(delivery);
            }
        }
    }
    release(refused).await;

    for removed in Delivery::ack_all(confirmed).await {
        match removed {
            Ok(()) => report.redriven += 1,
            Err(failed) => report.not_removed(&failed.error),
        }
    }
}

/// The message a dead letter becomes when redriven: its original payload, ordering key
/// and attributes, with [`REDRIVE_COUNT`] one higher.
pub fn redriven_message(dead: &Received) -> Message {
    let mut attributes = Envelope::strip(dead.attributes());
    let count = attributes
        .get(REDRIVE_COUNT)
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    attributes.insert(REDRIVE_COUNT.to_owned(), (count + 1).to_string());

    let message = Message::new(dead.payload().clone()).with_attributes(attributes);
    match dead.ordering_key() {
        Some(key) => message.with_ordering_key(key),
        None => message,
    }
}

fn with_redrive_id(message: Message, dead: &Received) -> Message {
    let count = message
        .attributes()
        .get(REDRIVE_COUNT)
        .cloned()
        .unwrap_or_default();
    message.with_deduplication_id(format!("{}-redrive-{count}", dead.id()))
}

/// Sleeps until `done` messages are no more than `rate` allows since `started`.
async fn pace(rate: Option<NonZeroU32>, started: Instant, done: u64) {
    if let Some(rate) = rate {
        let due = started + Duration::from_secs_f64(done as f64 / f64::from(rate.get()));
        tokio::time::sleep_until(due).await;
    }
}

/// Up to `max` messages of `subscriber`, oldest first where the broker keeps an order,
/// left in place: each is received, copied and released again with a zero-delay nack.
///
/// For backends whose dead letters are a queue: peeking counts as a delivery there (SQS
/// raises the receive count, Pub/Sub the delivery attempt), which matters only if the
/// dead-letter destination has a delivery limit of its own.
///
/// # Errors
///
/// The backend's error if a receive fails; what was received by then is released.
pub async fn peek_by_receiving(
    subscriber: &Subscriber,
    max: usize,
    wait: Duration,
) -> Result<Vec<Received>> {
    let mut held: Vec<Delivery> = Vec::new();
    let mut seen = HashSet::new();

    let outcome = loop {
        if held.len() >= max {
            break Ok(());
        }
        match subscriber.receive(max - held.len(), wait).await {
            Ok(batch) if batch.is_empty() => break Ok(()),
            Ok(batch) => {
                // A message whose lease ran out while held comes back: keep one copy,
                // and stop once nothing new arrives.
                let before = held.len();
                let (new, again): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|d| seen.insert(d.id().to_owned()));
                held.extend(new);
                release(again).await;
                if held.len() == before {
                    break Ok(());
                }
            }
            Err(error) => break Err(error),
        }
    };

    let peeked = held.iter().map(|d| d.received().clone()).collect();
    release(held).await;
    outcome.map(|()| peeked)
}

/// Returns held deliveries at once. One whose lease already ran out is back anyway.
async fn release(held: Vec<Delivery>) {
    let results = join_all(held.into_iter().map(|d| d.nack(Duration::ZERO))).await;
    for failed in results.into_iter().filter_map(Result::err) {
        debug!(error = %failed.error, "releasing a held message failed; its lease returns it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::ATTEMPTS;

    #[test]
    fn room_follows_rate_and_limit() {
        let rate = NonZeroU32::new(20).unwrap();

        assert_eq!(RedriveOptions::default().room(0), BATCH);
        assert_eq!(RedriveOptions::default().rate(rate).room(0), 20);
        assert_eq!(RedriveOptions::default().limit(150).room(120), 30);
        assert_eq!(RedriveOptions::default().limit(150).room(150), 0);
    }

    #[test]
    fn filters_must_all_match() {
        let options = RedriveOptions::default()
            .with_attribute("tenant", "acme")
            .reason_contains("timeout");
        let received = |tenant: &str, reason: &str| {
            let message = Message::new("x")
                .with_attribute("tenant", tenant)
                .with_attribute(REASON, reason);
            Received::detached(&message, "billing")
        };

        assert!(options.matches(&received("acme", "handler timeout after 30s")));
        assert!(!options.matches(&received("acme", "unknown product")));
        assert!(!options.matches(&received("globex", "handler timeout after 30s")));
    }

    #[test]
    fn redriven_message_drops_the_envelope_and_counts() {
        let dead = Message::new("order")
            .with_attribute("tenant", "acme")
            .with_attribute(REASON, "boom")
            .with_attribute(ATTEMPTS, "5")
            .with_attribute(SOURCE, "billing")
            .with_attribute(REDRIVE_COUNT, "2")
            .with_ordering_key("customer-7");

        let message = redriven_message(&Received::detached(&dead, "billing-dlq"));

        assert_eq!(message.payload(), &bytes::Bytes::from("order"));
        assert_eq!(message.ordering_key(), Some("customer-7"));
        let keys: Vec<_> = message.attributes().keys().map(String::as_str).collect();
        assert_eq!(keys, ["tenant", REDRIVE_COUNT]);
        assert_eq!(message.attributes()[REDRIVE_COUNT], "3");
    }
}
