//! The operations side of [`SqsBackend`]: backlog figures from the queue attributes,
//! dead-letter peek and purge, and checks of a queue's setup against the application's
//! policy.
//!
//! On SQS a subscription is its topic's queue, so every figure and check is about that
//! one queue and the dead-letter queue it points at: the target of its redrive policy,
//! else the queue's `wharf-dead-letter` tag, else `<name>-dlq`, exactly as the
//! subscriber finds it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::{debug, info};
use wharf_core::operations::dead_letters::peek_by_receiving;
use wharf_core::operations::doctor::{delivery_limit, lease_covers_handler, missing};
use wharf_core::{
    Backend, Error, ErrorKind, Expectations, Figure, Finding, Received, Result, Subscriber,
    SubscriptionStats,
};

use crate::backend::SqsBackend;
use crate::error;
use crate::limits::DEFAULT_VISIBILITY;
use crate::queue::{self, is_fifo, name_of_arn};

type Attributes = HashMap<QueueAttributeName, String>;

/// How long each receive of a peek waits. A long poll, even of one second, asks every
/// SQS server holding part of the queue; a short poll samples some and can miss
/// messages that are there.
const PEEK_WAIT: Duration = Duration::from_secs(1);

/// Why the age of the oldest message is unknown.
const OLDEST_AGE: &str = "SQS reports the age of a queue's oldest message only as the \
    CloudWatch metric ApproximateAgeOfOldestMessage (namespace AWS/SQS), which wharf does \
    not read; the queue attributes have no such figure";

/// Why the consumer lag is unknown.
const CONSUMER_LAG: &str = "an SQS queue is a queue, not a log: it has no offsets a \
    consumer could lag behind; ready plus in_flight is its backlog";

/// Why the number of purged dead letters is unknown.
const PURGED: &str = "SQS's PurgeQueue does not say how many messages it deleted; \
    dead_lettered from stats() just before the purge is an approximate count";

/// What the backlog figures are read from.
const COUNTS: [QueueAttributeName; 3] = [
    QueueAttributeName::ApproximateNumberOfMessages,
    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
];

/// The settings of a queue the doctor compares with the expectations.
const QUEUE_SETTINGS: [QueueAttributeName; 4] = [
    QueueAttributeName::VisibilityTimeout,
    QueueAttributeName::RedrivePolicy,
    QueueAttributeName::QueueArn,
    QueueAttributeName::MessageRetentionPeriod,
];

/// The settings of a dead-letter queue the doctor looks at.
const DEAD_LETTER_SETTINGS: [QueueAttributeName; 3] = [
    QueueAttributeName::QueueArn,
    QueueAttributeName::MessageRetentionPeriod,
    QueueAttributeName::RedrivePolicy,
];

/// How the redrive policy is named in findings.
const MAX_RECEIVE_COUNT: &str = "the redrive policy's maxReceiveCount";

/// How the lease is named in findings.
const VISIBILITY: &str = "the queue's VisibilityTimeout";

/// One queue's messages by state, from its `ApproximateNumberOf*` attributes.
struct Counts {
    ready: Figure<u64>,
    in_flight: Figure<u64>,
    delayed: Figure<u64>,
}

impl Counts {
    fn of(attributes: &Attributes, queue: &str) -> Self {
        let count = |name: QueueAttributeName| {
            let value = attributes.get(&name).and_then(|v| v.parse().ok());
            value.map_or_else(
                || Figure::unknown(format!("SQS reported no {} for `{queue}`", name.as_str())),
                Figure::Known,
            )
        };
        Self {
            ready: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        }
    }

    /// Every message of the queue, whatever its state.
    fn total(self) -> Figure<u64> {
        self.ready
            .zip(self.in_flight)
            .zip(self.delayed)
            .map(|((ready, in_flight), delayed)| ready + in_flight + delayed)
    }
}

/// A queue's `RedrivePolicy`: `{"deadLetterTargetArn": "...", "maxReceiveCount": 5}`.
struct RedrivePolicy {
    target_arn: String,
    max_receive_count: u32,
}

impl RedrivePolicy {
    /// The policy in `text`. SQS writes `maxReceiveCount` as a number or, from older
    /// clients, as a string; both are read.
    fn parse(text: &str) -> Option<Self> {
        let policy: serde_json::Value = serde_json::from_str(text).ok()?;
        let target_arn = policy.get("deadLetterTargetArn")?.as_str()?.to_owned();
        let count = policy.get("maxReceiveCount")?;
        let max_receive_count = match count.as_u64() {
            Some(count) => u32::try_from(count).ok()?,
            None => count.as_str()?.parse().ok()?,
        };
        Some(Self {
            target_arn,
            max_receive_count,
        })
    }

    fn target(&self) -> &str {
        name_of_arn(&self.target_arn).unwrap_or(&self.target_arn)
    }
}

impl SqsBackend {
    pub(crate) async fn queue_stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        let dead_letter = self.dead_letter_of(subscription).await?;

        let (counts, dead) = futures::join!(self.counts(subscription), self.counts(&dead_letter));
        let counts = counts?;
        let dead_lettered = match dead {
            Ok(dead) => dead.total(),
            Err(e) if e.kind() == ErrorKind::NotFound => Figure::unknown(format!(
                "dead-letter queue `{dead_letter}` of `{subscription}` does not exist; \
                 create_subscription creates it"
            )),
            Err(e) => return Err(e),
        };

        debug!(subscription, %dead_letter, "queue stats read");
        Ok(SubscriptionStats {
            subscription: subscription.to_owned(),
            ready: counts.ready,
            in_flight: counts.in_flight,
            delayed: counts.delayed,
            dead_lettered,
            oldest_age: Figure::unknown(OLDEST_AGE),
            consumer_lag: Figure::unknown(CONSUMER_LAG),
        })
    }

    pub(crate) async fn peek(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        let dead_letters = self.dead_letters(subscription).await?;

        let peeked = peek_by_receiving(&dead_letters, max, PEEK_WAIT).await;

        if let Err(error) = dead_letters.close().await {
            debug!(subscription, %error, "closing the dead-letter subscriber failed");
        }
        peeked
    }

    pub(crate) async fn purge(&self, subscription: &str) -> Result<Figure<u64>> {
        let dead_letter = self.dead_letter_of(subscription).await?;
        let url = self
            .queue_url(&dead_letter)
            .await
            .map_err(|e| missing_dead_letter_queue(e, subscription, &dead_letter))?;

        let purged = self.client().purge_queue().queue_url(url).send().await;
        purged.map_err(|e| {
            let in_progress = e.code().is_some_and(is_purge_in_progress);
            let what = format!("purging dead-letter queue `{dead_letter}`");
            purge_refused(error::from_sdk(e, &what), in_progress, &dead_letter)
        })?;

        info!(subscription, %dead_letter, "dead-letter queue purged");
        Ok(Figure::unknown(PURGED))
    }

    pub(crate) async fn check(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        let mut findings = naming(expected);
        if queue::check_name(name).is_err() {
            return Ok(findings);
        }

        let Some(settings) = self.inspect(name, &QUEUE_SETTINGS).await? else {
            let fix = "create it with create_topic and create_subscription, or start the \
                       worker with create_if_missing";
            findings.push(missing(name, "SQS queue", fix));
            return Ok(findings);
        };

        let visibility = seconds(&settings, QueueAttributeName::VisibilityTimeout);
        let lease = visibility.unwrap_or(DEFAULT_VISIBILITY);
        findings.extend(lease_covers_handler(name, lease, expected, VISIBILITY));
        findings.extend(self.check_dead_letters(&settings, expected).await?);
        Ok(findings)
    }

    /// The redrive policy and the dead-letter queue it (or the tag) points at.
    async fn check_dead_letters(
        &self,
        settings: &Attributes,
        expected: &Expectations,
    ) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        let text = settings.get(&QueueAttributeName::RedrivePolicy);
        let policy = text.and_then(|text| RedrivePolicy::parse(text));
        if let (Some(text), None) = (text, &policy) {
            return Ok(vec![unreadable_policy(name, text, expected)]);
        }

        let mut findings = Vec::new();
        let target = match &policy {
            Some(policy) => {
                let limit = Some(policy.max_receive_count);
                findings.extend(delivery_limit(name, limit, expected, MAX_RECEIVE_COUNT));
                policy.target().to_owned()
            }
            None => {
                findings.push(no_redrive_policy(expected));
                self.dead_letter_of(name).await?
            }
        };
        findings.extend(target_mismatch(&target, policy.is_some(), expected));

        let Some(dead_letters) = self.inspect(&target, &DEAD_LETTER_SETTINGS).await? else {
            findings.push(missing_target(&target, policy.is_some(), expected));
            return Ok(findings);
        };
        if let Some(policy) = &policy {
            findings.extend(foreign_target(policy, &dead_letters, expected));
            findings.extend(short_retention(&target, settings, &dead_letters, expected));
        }
        findings.extend(onward_redrive(&target, &dead_letters));
        Ok(findings)
    }

    /// The name of the dead-letter queue of `subscription`, as its subscriber finds it.
    async fn dead_letter_of(&self, subscription: &str) -> Result<String> {
        let driver = self.subscription(subscription).await?;
        Ok(driver.dead_letter_queue().to_owned())
    }

    /// A subscriber on the dead-letter queue, whose absence is explained.
    async fn dead_letters(&self, subscription: &str) -> Result<Subscriber> {
        let dead_letter = self.dead_letter_of(subscription).await?;

        self.subscriber(&dead_letter)
            .await
            .map_err(|e| missing_dead_letter_queue(e, subscription, &dead_letter))
    }

    async fn counts(&self, queue: &str) -> Result<Counts> {
        let url = self.queue_url(queue).await?;

        let attributes = self.attributes_at(&url, &COUNTS, queue).await?;
        Ok(Counts::of(&attributes, queue))
    }

    /// `names` of queue `queue`, or `None` if it does not exist.
    async fn inspect(
        &self,
        queue: &str,
        names: &[QueueAttributeName],
    ) -> Result<Option<Attributes>> {
        let found = match self.queue_url(queue).await {
            Ok(url) => self.attributes_at(&url, names, queue).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(attributes) => Ok(Some(attributes)),
            // Also when the URL was cached but the queue has been deleted since.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn attributes_at(
        &self,
        url: &str,
        names: &[QueueAttributeName],
        queue: &str,
    ) -> Result<Attributes> {
        let output = self
            .client()
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("reading the attributes of `{queue}`")))?;

        Ok(output.attributes().cloned().unwrap_or_default())
    }
}

fn seconds(attributes: &Attributes, name: QueueAttributeName) -> Option<Duration> {
    let value = attributes.get(&name)?.parse().ok()?;
    Some(Duration::from_secs(value))
}

fn missing_dead_letter_queue(error: Error, subscription: &str, dead_letter: &str) -> Error {
    if error.kind() != ErrorKind::NotFound {
        return error;
    }
    Error::new(
        ErrorKind::NotFound,
        format!(
            "dead-letter queue `{dead_letter}` of `{subscription}` does not exist; \
             create_subscription creates it, or point the queue's redrive policy at an \
             existing queue"
        ),
    )
    .with_source(error)
}

/// Whether an SQS error code, in either spelling, says a purge is still running.
fn is_purge_in_progress(code: &str) -> bool {
    code.rsplit('.').next() == Some("PurgeQueueInProgress")
}

/// SQS takes one `PurgeQueue` per queue every 60 seconds and refuses the next with
/// `PurgeQueueInProgress`; the caller can only wait.
fn purge_refused(error: Error, in_progress: bool, dead_letter: &str) -> Error {
    if !in_progress {
        return error;
    }
    Error::new(
        ErrorKind::Throttled,
        format!(
            "dead-letter queue `{dead_letter}` is still being purged: SQS allows one \
             PurgeQueue per queue every 60 seconds; wait 60 s and purge again"
        ),
    )
    .with_source(error)
}

/// What is wrong with the expectations themselves on SQS, before any queue is read.
fn naming(expected: &Expectations) -> Vec<Finding> {
    let spec = &expected.spec;
    let name = expected.subscription();
    let mut findings = Vec::new();

    if let Err(e) = queue::check_name(name) {
        let fix = "rename the subscription and its topic";
        findings.push(Finding::error(name, e.message(), fix));
        return findings;
    }
    if spec.topic != spec.name {
        findings.push(Finding::error(
            name,
            format!(
                "SQS has no fan-out, so a subscription is its topic's queue: `{name}` is \
                 not the queue that publishes to `{}` reach",
                spec.topic
            ),
            format!("name the subscription like its topic, `{}`", spec.topic),
        ));
    }
    if spec.ordered && !is_fifo(name) {
        findings.push(Finding::error(
            name,
            "the application expects ordered delivery, but a standard SQS queue delivers \
             in any order",
            format!(
                "use a FIFO queue: its name ends in `{}`",
                queue::FIFO_SUFFIX
            ),
        ));
    }
    if let Err(e) = queue::dead_letter_name(spec) {
        let fix = "name a dead-letter queue SQS accepts, FIFO exactly when the queue is";
        findings.push(Finding::error(name, e.message(), fix));
    }
    findings
}

fn unreadable_policy(name: &str, text: &str, expected: &Expectations) -> Finding {
    Finding::error(
        name,
        format!(
            "the queue's RedrivePolicy `{text}` lacks a deadLetterTargetArn or a \
             maxReceiveCount wharf can read"
        ),
        format!(
            "set RedrivePolicy to {{\"deadLetterTargetArn\": \"<ARN of the dead-letter \
             queue>\", \"maxReceiveCount\": {}}}",
            expected.max_attempts
        ),
    )
}

/// Without a redrive policy SQS never dead-letters by itself, so a message that crashes
/// its consumer before wharf can dead-letter it comes back until it expires.
fn no_redrive_policy(expected: &Expectations) -> Finding {
    let name = expected.subscription();
    let crash = "a message that crashes its consumer is received again and again until \
                 the queue's MessageRetentionPeriod deletes it";
    let fix = |count: u32| {
        format!(
            "set the queue's RedrivePolicy to a deadLetterTargetArn of the dead-letter \
             queue and a maxReceiveCount of {count} (create_subscription does so when \
             max_delivery_attempts is set)"
        )
    };

    match expected.spec.max_delivery_attempts {
        Some(count) => Finding::error(
            name,
            format!(
                "the queue has no RedrivePolicy, though the application expects SQS to \
                 dead-letter after {count} receives: {crash}"
            ),
            fix(count),
        ),
        None => Finding::warning(
            name,
            format!("the queue has no RedrivePolicy: {crash}"),
            fix(expected.max_attempts),
        ),
    }
}

fn target_mismatch(target: &str, by_policy: bool, expected: &Expectations) -> Option<Finding> {
    let wanted = queue::dead_letter_name(&expected.spec).ok()?;
    if wanted == target {
        return None;
    }

    let (setting, fix) = if by_policy {
        let setting = "the redrive policy's deadLetterTargetArn";
        (
            setting,
            format!("point {setting} at the ARN of queue `{wanted}`"),
        )
    } else {
        let setting = "the queue's wharf-dead-letter tag";
        (setting, format!("set {setting} to `{wanted}`"))
    };
    Some(Finding::error(
        expected.subscription(),
        format!(
            "dead letters go to `{target}` ({setting}), but the application expects them in \
             `{wanted}`"
        ),
        format!("{fix}; create_subscription with the expected spec does so"),
    ))
}

fn missing_target(target: &str, by_policy: bool, expected: &Expectations) -> Finding {
    let name = expected.subscription();
    let (problem, fix) = if by_policy {
        (
            format!(
                "the redrive policy's deadLetterTargetArn names queue `{target}`, which does \
                 not exist: SQS cannot move messages past maxReceiveCount, and wharf cannot \
                 dead-letter"
            ),
            format!(
                "create queue `{target}` (create_subscription does), or point \
                 deadLetterTargetArn at an existing queue"
            ),
        )
    } else {
        (
            format!(
                "dead letters go to queue `{target}`, which does not exist: dead-lettering \
                 fails and the message comes back"
            ),
            format!("create queue `{target}` with create_subscription"),
        )
    };
    Finding::error(name, problem, fix)
}

/// SQS looks the target up by ARN: a queue of the same name in another account or
/// region is not the one wharf reads.
fn foreign_target(
    policy: &RedrivePolicy,
    dead_letters: &Attributes,
    expected: &Expectations,
) -> Option<Finding> {
    let arn = dead_letters.get(&QueueAttributeName::QueueArn)?;
    (*arn != policy.target_arn).then(|| {
        Finding::error(
            expected.subscription(),
            format!(
                "the redrive policy's deadLetterTargetArn is `{}`, but queue `{}` here is \
                 `{arn}`: SQS moves dead letters to a queue wharf does not read",
                policy.target_arn,
                policy.target()
            ),
            format!("point the redrive policy's deadLetterTargetArn at `{arn}`"),
        )
    })
}

/// SQS keeps a standard message's enqueue time when its redrive policy moves it, so a
/// dead-letter queue that keeps messages for less time than its source deletes old
/// dead letters at once.
fn short_retention(
    target: &str,
    settings: &Attributes,
    dead_letters: &Attributes,
    expected: &Expectations,
) -> Option<Finding> {
    if is_fifo(target) {
        return None;
    }
    let retention = QueueAttributeName::MessageRetentionPeriod;
    let source = seconds(settings, retention.clone())?;
    let kept = seconds(dead_letters, retention)?;

    (kept < source).then(|| {
        Finding::warning(
            target,
            format!(
                "the dead-letter queue keeps messages for {}, less than `{}` keeps them \
                 ({}): SQS keeps a message's enqueue time when its redrive policy moves it, \
                 so an old dead letter expires at once",
                humanized(kept),
                expected.subscription(),
                humanized(source)
            ),
            format!(
                "raise the MessageRetentionPeriod of `{target}` to at least {} seconds \
                 (wharf creates dead-letter queues with 14 days)",
                source.as_secs()
            ),
        )
    })
}

/// Peeking receives dead letters, which raises their receive count: a dead-letter queue
/// with a redrive policy of its own moves what was peeked at too often.
fn onward_redrive(target: &str, dead_letters: &Attributes) -> Option<Finding> {
    let text = dead_letters.get(&QueueAttributeName::RedrivePolicy)?;
    let policy = RedrivePolicy::parse(text)?;

    Some(Finding::warning(
        target,
        format!(
            "the dead-letter queue has a RedrivePolicy of its own (maxReceiveCount {}): \
             every peek counts as a receive, so SQS moves dead letters on to `{}` after {} \
             peeks or skipped redrives",
            policy.max_receive_count,
            policy.target(),
            policy.max_receive_count
        ),
        format!("remove the RedrivePolicy of `{target}`"),
    ))
}

fn humanized(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (count, unit) = match secs {
        _ if secs > 0 && secs % 86_400 == 0 => (secs / 86_400, "day"),
        _ if secs > 0 && secs % 3_600 == 0 => (secs / 3_600, "hour"),
        _ => (secs, "second"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

#[cfg(test)]
mod tests {
    use wharf_core::{RetryPolicy, Severity, SubscriptionSpec};

    use super::*;

    fn expected(spec: SubscriptionSpec, attempts: u32) -> Expectations {
        let policy = RetryPolicy::default().max_attempts(attempts);
        Expectations::from_policy(spec, &policy, Duration::from_secs(30))
    }

    #[test]
    fn redrive_policies_are_read_with_either_count_type() {
        let arn = "arn:aws:sqs:us-east-1:000000000000:orders-dlq";
        let number = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":5}}"#);
        let text = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"7"}}"#);

        let number = RedrivePolicy::parse(&number).expect("a number");
        let text = RedrivePolicy::parse(&text).expect("a string");

        assert_eq!(
            (number.target(), number.max_receive_count),
            ("orders-dlq", 5)
        );
        assert_eq!(text.max_receive_count, 7);
        assert!(RedrivePolicy::parse(r#"{"maxReceiveCount":5}"#).is_none());
    }

    #[test]
    fn a_purge_in_progress_says_to_wait_a_minute() {
        let code = "AWS.SimpleQueueService.PurgeQueueInProgress";
        let sqs = error::from_entry(code, Some("Only one PurgeQueue operation"), "purging");

        let error = purge_refused(sqs, is_purge_in_progress(code), "orders-dlq");

        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert!(error.to_string().contains("wait 60 s"), "{error}");
        assert!(is_purge_in_progress("PurgeQueueInProgress"));
        assert!(!is_purge_in_progress("QueueDoesNotExist"));
    }

    #[test]
    fn a_subscription_apart_from_its_topic_is_an_error() {
        let spec = SubscriptionSpec::new("orders", "billing");

        let findings = naming(&expected(spec, 5));

        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Error);
        assert!(findings[0].fix.contains("`orders`"), "{}", findings[0]);
    }

    #[test]
    fn ordered_delivery_needs_a_fifo_queue() {
        let standard = SubscriptionSpec::new("orders", "orders").ordered(true);
        let fifo = SubscriptionSpec::new("orders.fifo", "orders.fifo").ordered(true);

        assert_eq!(naming(&expected(standard, 5)).len(), 1);
        assert!(naming(&expected(fifo, 5)).is_empty());
    }

    #[test]
    fn a_missing_redrive_policy_is_an_error_only_where_one_is_expected() {
        let plain = SubscriptionSpec::new("orders", "orders");
        let limited = plain.clone().max_delivery_attempts(5);

        let warning = no_redrive_policy(&expected(plain, 5));
        let error = no_redrive_policy(&expected(limited, 5));

        assert_eq!(warning.severity, Severity::Warning);
        assert_eq!(error.severity, Severity::Error);
        assert!(error.fix.contains("RedrivePolicy"), "{error}");
    }

    #[test]
    fn retention_is_shown_in_the_largest_whole_unit() {
        assert_eq!(humanized(Duration::from_secs(4 * 86_400)), "4 days");
        assert_eq!(humanized(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(humanized(Duration::from_secs(90)), "90 seconds");
    }
}
