//! The operations side of [`PubSubBackend`]: backlog figures, dead-letter peek, purge
//! and redrive, and setup checks.
//!
//! The Pub/Sub API itself says little about a backlog: its counts and ages are Cloud
//! Monitoring metrics, so [`stats`](wharf_core::Backend::stats) confirms the subscription
//! exists and names, figure by figure, the metric that holds what it cannot report.
//! Dead letters sit in the dead-letter topic's subscription that `create_subscription`
//! makes: peeking receives and releases them, purging seeks that subscription past
//! them, and redriving publishes to the subscription's topic, the only thing Pub/Sub
//! lets a client publish to. The doctor compares the subscription, its dead-letter
//! policy, its dead-letter topic and that topic's subscription with the application's
//! expectations.

use std::time::{Duration, SystemTime};

use gcloud_pubsub::subscription::SeekTo;
use google_cloud_pubsub::model::{DeadLetterPolicy, Subscription as NativeSubscription};
use tracing::{debug, info, warn};
use wharf_core::operations::dead_letters::peek_by_receiving;
use wharf_core::operations::doctor::{delivery_limit, lease_covers_handler, missing};
use wharf_core::{
    Backend, Error, ErrorKind, Expectations, Figure, Finding, Publisher, Received, Result,
    Subscriber, SubscriptionStats,
};

use crate::backend::{PubSubBackend, dead_letter_of};
use crate::capabilities::MIN_DELIVERY_ATTEMPTS;
use crate::error::{Operation, from_native, from_status};
use crate::names::{short_id, topic_path};

/// How long a peek waits for the next dead letter before it takes the dead-letter
/// subscription to hold no more: a fresh streaming pull hands over what is waiting
/// within a second on the emulator, and seldom much later on the service.
const PEEK_WAIT: Duration = Duration::from_secs(2);

/// How far past this machine's clock a purge seeks. Seek compares the service's
/// publish times with the time given, so a local clock that runs behind would leave
/// the newest dead letters in place. Seeking into the future is how Google's
/// documentation says to purge ("Replay and purge messages with seek"); messages
/// published after the seek are not affected.
const PURGE_CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// The topic a subscription names once its topic was deleted. Source:
/// `Subscription.topic` in the v1 API reference.
const DELETED_TOPIC: &str = "_deleted-topic_";

/// What the service uses when a dead-letter policy's `max_delivery_attempts` is 0.
/// Source: `DeadLetterPolicy.max_delivery_attempts` in the v1 API reference.
const DEFAULT_POLICY_ATTEMPTS: u32 = MIN_DELIVERY_ATTEMPTS;

/// Where Pub/Sub keeps the figures its API does not return.
const MONITORING: &str = "Cloud Monitoring, which wharf does not read and the Pub/Sub \
    emulator does not serve";

/// The setting names the doctor's findings use, as the Pub/Sub API spells them.
const ACK_DEADLINE: &str = "the ack deadline (ack_deadline_seconds)";
const POLICY_LIMIT: &str = "the dead_letter_policy's max_delivery_attempts";

impl PubSubBackend {
    pub(crate) async fn subscription_stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        let found = self.existing(subscription).await?;

        let dead_letter = dead_letter_of(&found, subscription);
        Ok(monitoring_only(subscription, &dead_letter))
    }

    pub(crate) async fn peek(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        let (dead_letter, reader) = self.dead_letter_reader(subscription).await?;

        let peeked = peek_by_receiving(&reader, max, PEEK_WAIT).await;
        close(&reader, &dead_letter).await;

        let peeked = peeked?;
        debug!(subscription, dead_letter = %dead_letter, peeked = peeked.len(), "peeked");
        Ok(peeked)
    }

    pub(crate) async fn purge(&self, subscription: &str) -> Result<Figure<u64>> {
        let found = self.existing(subscription).await?;
        let dead_letter = dead_letter_of(&found, subscription);

        let to = SystemTime::now() + PURGE_CLOCK_MARGIN;
        let target = self.pull_client().subscription(&dead_letter);
        target
            .seek(SeekTo::Timestamp(to), None)
            .await
            .map_err(|status| {
                let what = format!("purging {dead_letter} by seeking it past its messages");
                let error = from_status(status, Operation::Admin, &what);
                missing_dead_letters(error, subscription, &dead_letter)
            })?;

        info!(subscription, dead_letter = %dead_letter, "dead letters purged");
        Ok(Figure::unknown(format!(
            "a seek marks messages acknowledged without counting them; how many `{dead_letter}` \
             held is its subscription/num_undelivered_messages in {MONITORING}"
        )))
    }

    pub(crate) async fn redrive_target(&self, subscription: &str) -> Result<Publisher> {
        let found = self.existing(subscription).await?;
        let topic = own_topic(&found, subscription, &self.config().project)?;

        // Pub/Sub has no way to publish to one subscription: every subscription of
        // the topic receives what is redriven.
        debug!(subscription, topic = %topic, "redriving through the subscription's topic");
        self.publisher(topic).await
    }

    pub(crate) async fn check(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        let found = match self.get_subscription(name).await {
            Ok(found) => found,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                return Ok(vec![missing(name, "subscription", create_fix(expected))]);
            }
            Err(error) => return Err(error),
        };

        let mut findings = Vec::new();
        findings.extend(topic_link(&found, expected, &self.config().project));
        findings.extend(policy_findings(&found, expected));
        findings.extend(lease_covers_handler(
            name,
            ack_deadline(&found),
            expected,
            ACK_DEADLINE,
        ));
        findings.extend(ordering(&found, expected));
        findings.extend(self.dead_letter_findings(&found, expected).await?);
        Ok(findings)
    }

    /// The subscription, or a [`NotFound`](ErrorKind::NotFound) error saying how to
    /// create it.
    async fn existing(&self, subscription: &str) -> Result<NativeSubscription> {
        let found = self.get_subscription(subscription).await;

        found.map_err(|error| match error.kind() {
            ErrorKind::NotFound => Error::new(
                ErrorKind::NotFound,
                format!(
                    "Pub/Sub subscription `{subscription}` does not exist in project `{}`: \
                     check the name and the project, or create it with create_subscription",
                    self.config().project
                ),
            )
            .with_source(error),
            _ => error,
        })
    }

    /// A subscriber on the subscription's dead-letter subscription, and its name.
    async fn dead_letter_reader(&self, subscription: &str) -> Result<(String, Subscriber)> {
        let found = self.existing(subscription).await?;
        let dead_letter = dead_letter_of(&found, subscription);

        let reader = self.subscriber(&dead_letter).await;
        let reader = reader.map_err(|e| missing_dead_letters(e, subscription, &dead_letter))?;
        Ok((dead_letter, reader))
    }

    /// The dead-letter topic must exist and have a subscription, since Pub/Sub keeps a
    /// topic's messages only for its subscriptions.
    async fn dead_letter_findings(
        &self,
        found: &NativeSubscription,
        expected: &Expectations,
    ) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        let dead_letter = dead_letter_of(found, name);
        let mut findings: Vec<_> = destination_mismatch(found, &dead_letter, expected)
            .into_iter()
            .collect();

        if !self.topic_exists(&dead_letter).await? {
            findings.push(missing_topic(found, &dead_letter));
            return Ok(findings);
        }
        match self.get_subscription(&dead_letter).await {
            Ok(reader) => findings.extend(reader_findings(
                &reader,
                &dead_letter,
                &self.config().project,
            )),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                findings.push(unread_topic(name, &dead_letter));
            }
            Err(error) => return Err(error),
        }
        Ok(findings)
    }

    async fn topic_exists(&self, topic: &str) -> Result<bool> {
        let read = self
            .topic_admin()
            .get_topic()
            .set_topic(topic_path(&self.config().project, topic))
            .send()
            .await;

        match read.map_err(|e| from_native(e, Operation::Admin, &format!("reading topic {topic}")))
        {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// Every figure unknown, each naming the Cloud Monitoring metric that holds it.
fn monitoring_only(subscription: &str, dead_letter: &str) -> SubscriptionStats {
    let undelivered = "subscription/num_undelivered_messages";
    SubscriptionStats {
        subscription: subscription.to_owned(),
        ready: Figure::unknown(format!(
            "Pub/Sub reports a subscription's unacknowledged messages only as the metric \
             {undelivered} in {MONITORING}"
        )),
        in_flight: Figure::unknown(format!(
            "Pub/Sub does not count messages leased to subscribers apart from the others; \
             {undelivered} in {MONITORING} includes them"
        )),
        delayed: Figure::unknown(format!(
            "a nack with a delay only moves the message's ack deadline, and Pub/Sub counts \
             such messages with the rest in {undelivered} in {MONITORING}"
        )),
        dead_lettered: Figure::unknown(format!(
            "the dead-letter subscription `{dead_letter}` reports its messages only as \
             {undelivered} in {MONITORING}; peek_dead_letters shows them"
        )),
        oldest_age: Figure::unknown(format!(
            "Pub/Sub reports it only as the metric subscription/oldest_unacked_message_age \
             in {MONITORING}"
        )),
        consumer_lag: Figure::unknown(
            "a Pub/Sub subscription is a queue of messages, not a log with offsets",
        ),
    }
}

/// A missing dead-letter subscription, named as such rather than as the subscription
/// the caller asked about.
fn missing_dead_letters(error: Error, subscription: &str, dead_letter: &str) -> Error {
    if error.kind() != ErrorKind::NotFound {
        return error;
    }
    Error::new(
        ErrorKind::NotFound,
        format!(
            "the dead-letter subscription `{dead_letter}` of `{subscription}` does not exist: \
             create a subscription `{dead_letter}` on the topic `{dead_letter}` \
             (create_subscription does both); until then dead letters are dropped"
        ),
    )
    .with_source(error)
}

/// The id of the topic `found` reads, if redriven messages can be published to it.
fn own_topic<'a>(found: &'a NativeSubscription, name: &str, project: &str) -> Result<&'a str> {
    if found.topic == DELETED_TOPIC {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "the topic of subscription `{name}` was deleted, so nothing published reaches \
                 it any more: redrive into a new subscription on a live topic instead"
            ),
        ));
    }
    let topic = short_id(&found.topic);
    if found.topic != topic_path(project, topic) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "subscription `{name}` reads `{}`, a topic of another project, and this \
                 backend publishes in `{project}` only: redrive with a backend connected to \
                 that project",
                found.topic
            ),
        ));
    }
    Ok(topic)
}

async fn close(reader: &Subscriber, dead_letter: &str) {
    if let Err(error) = reader.close().await {
        warn!(
            subscription = dead_letter,
            %error,
            "closing the peek's subscriber failed; what it held returns when its ack \
             deadline ends"
        );
    }
}

fn create_fix(expected: &Expectations) -> String {
    let spec = &expected.spec;
    format!(
        "create it with create_subscription, or `gcloud pubsub subscriptions create {} \
         --topic={}`",
        spec.name, spec.topic
    )
}

/// The subscription must still read the topic the application publishes to.
fn topic_link(
    found: &NativeSubscription,
    expected: &Expectations,
    project: &str,
) -> Option<Finding> {
    let name = expected.subscription();
    let topic = &expected.spec.topic;
    let renew = format!(
        "create a new subscription on `{topic}` (a subscription's topic cannot be changed)"
    );

    if found.topic == DELETED_TOPIC {
        let problem = format!("its topic was deleted: `{name}` receives nothing any more");
        return Some(Finding::error(name, problem, renew));
    }
    if found.detached {
        let problem = "it is detached from its topic: it receives nothing and every pull \
                       fails";
        return Some(Finding::error(name, problem, renew));
    }
    (found.topic != topic_path(project, topic)).then(|| {
        let problem = format!(
            "it reads `{}`, but the application publishes to `{topic}`",
            found.topic
        );
        Finding::error(name, problem, renew)
    })
}

/// The dead-letter policy: present where the application expects Pub/Sub to
/// dead-letter by itself, and never below the retry policy's attempts.
fn policy_findings(found: &NativeSubscription, expected: &Expectations) -> Option<Finding> {
    let name = expected.subscription();
    match (
        &found.dead_letter_policy,
        expected.spec.max_delivery_attempts,
    ) {
        (Some(policy), _) => {
            delivery_limit(name, Some(policy_limit(policy)), expected, POLICY_LIMIT)
        }
        (None, Some(attempts)) => {
            let dead_letter = expected.spec.dead_letter_name();
            Some(Finding::error(
                name,
                format!(
                    "it has no dead_letter_policy, but the application expects Pub/Sub to \
                     dead-letter a message after {attempts} deliveries: a message that \
                     crashes its consumer every time is redelivered forever"
                ),
                format!(
                    "set the subscription's dead_letter_policy to dead_letter_topic \
                     `{dead_letter}` and max_delivery_attempts {attempts} (`gcloud pubsub \
                     subscriptions update {name} --dead-letter-topic={dead_letter} \
                     --max-delivery-attempts={attempts}`)"
                ),
            ))
        }
        (None, None) => None,
    }
}

fn policy_limit(policy: &DeadLetterPolicy) -> u32 {
    match u32::try_from(policy.max_delivery_attempts) {
        Ok(0) | Err(_) => DEFAULT_POLICY_ATTEMPTS,
        Ok(limit) => limit,
    }
}

fn ack_deadline(found: &NativeSubscription) -> Duration {
    Duration::from_secs(u64::try_from(found.ack_deadline_seconds).unwrap_or(0))
}

/// Ordering is fixed when a subscription is created.
fn ordering(found: &NativeSubscription, expected: &Expectations) -> Option<Finding> {
    let name = expected.subscription();
    (expected.spec.ordered && !found.enable_message_ordering).then(|| {
        Finding::error(
            name,
            "it delivers the messages of one ordering key in any order, but the application \
             expects them in order",
            format!(
                "create a new subscription on `{}` with enable_message_ordering (it cannot \
                 be turned on later)",
                expected.spec.topic
            ),
        )
    })
}

/// Dead letters go where the subscription says, which must be where the application
/// looks for them.
fn destination_mismatch(
    found: &NativeSubscription,
    actual: &str,
    expected: &Expectations,
) -> Option<Finding> {
    let name = expected.subscription();
    let wanted = expected.spec.dead_letter_name();
    (actual != wanted).then(|| {
        let fix = if found.dead_letter_policy.is_some() {
            format!("point the dead_letter_policy's dead_letter_topic at `{wanted}`")
        } else {
            format!(
                "create the subscription again with dead_letter(\"{wanted}\"), which records \
                 it in the `{}` label",
                crate::DEAD_LETTER_LABEL
            )
        };
        let problem = format!(
            "dead letters go to `{actual}`, but the application expects them in `{wanted}`"
        );
        Finding::error(name, problem, fix)
    })
}

fn missing_topic(found: &NativeSubscription, dead_letter: &str) -> Finding {
    let consequence = if found.dead_letter_policy.is_some() {
        "Pub/Sub cannot forward messages past the dead_letter_policy's limit, and wharf's \
         own dead letters fail to publish"
    } else {
        "wharf's dead letters fail to publish and the messages stay on the subscription"
    };
    Finding::error(
        dead_letter,
        format!("the dead-letter topic `{dead_letter}` does not exist: {consequence}"),
        format!(
            "create the topic `{dead_letter}` and a subscription `{dead_letter}` on it \
             (create_subscription does both, or `gcloud pubsub topics create {dead_letter}`)"
        ),
    )
}

fn unread_topic(subscription: &str, dead_letter: &str) -> Finding {
    Finding::error(
        dead_letter,
        format!(
            "no subscription `{dead_letter}` reads the dead-letter topic of `{subscription}`: \
             Pub/Sub keeps a topic's messages only for its subscriptions, so dead letters are \
             dropped, and none can be peeked at, redriven or purged"
        ),
        format!(
            "create the subscription `{dead_letter}` on the topic `{dead_letter}` (`gcloud \
             pubsub subscriptions create {dead_letter} --topic={dead_letter}`)"
        ),
    )
}

/// The subscription that holds the dead letters: on the dead-letter topic, not
/// forwarding them further, and not expiring while nobody reads it.
fn reader_findings(reader: &NativeSubscription, dead_letter: &str, project: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    if reader.topic != topic_path(project, dead_letter) {
        findings.push(Finding::error(
            dead_letter,
            format!(
                "the dead-letter subscription reads `{}`, not the dead-letter topic \
                 `{dead_letter}`: dead letters are dropped unless another subscription keeps them",
                reader.topic
            ),
            format!(
                "delete it and create `{dead_letter}` on the topic `{dead_letter}` \
                 (create_subscription does)"
            ),
        ));
    }
    if let Some(policy) = &reader.dead_letter_policy {
        findings.push(Finding::warning(
            dead_letter,
            format!(
                "the dead-letter subscription has a dead_letter_policy of its own: every peek \
                 counts as a delivery, so after {} peeks dead letters move on to `{}`",
                policy_limit(policy),
                short_id(&policy.dead_letter_topic)
            ),
            format!("remove the dead_letter_policy of `{dead_letter}`"),
        ));
    }
    if let Some(ttl) = reader
        .expiration_policy
        .as_ref()
        .and_then(|p| p.ttl.as_ref())
    {
        let days = ttl.seconds() / 86_400;
        findings.push(Finding::warning(
            dead_letter,
            format!(
                "the dead-letter subscription expires after {days} days without a reader, \
                 and the dead letters with it"
            ),
            format!(
                "clear the expiration_policy's ttl of `{dead_letter}` (`gcloud pubsub \
                 subscriptions update {dead_letter} --expiration-period=never`)"
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_pubsub::model::DeadLetterPolicy;
    use wharf_core::{RetryPolicy, Severity, SubscriptionSpec};

    const PROJECT: &str = "wharf-test";

    fn expected(spec: SubscriptionSpec, attempts: u32) -> Expectations {
        let policy = RetryPolicy::default().max_attempts(attempts);
        Expectations::from_policy(spec, &policy, Duration::from_secs(10))
    }

    fn subscription(topic: &str) -> NativeSubscription {
        NativeSubscription::new()
            .set_topic(topic_path(PROJECT, topic))
            .set_ack_deadline_seconds(10)
    }

    #[test]
    fn every_unknown_figure_names_where_pubsub_keeps_it() {
        let stats = monitoring_only("billing", "billing-dlq");

        assert!(
            stats
                .ready
                .reason()
                .unwrap()
                .contains("num_undelivered_messages")
        );
        assert!(
            stats
                .oldest_age
                .reason()
                .unwrap()
                .contains("oldest_unacked_message_age")
        );
        assert!(
            stats
                .dead_lettered
                .reason()
                .unwrap()
                .contains("`billing-dlq`")
        );
        assert_eq!(stats.unknown_figures().len(), 6, "no figure is made up");
    }

    #[test]
    fn a_missing_policy_is_an_error_only_where_one_is_expected() {
        let found = subscription("orders");
        let spec = SubscriptionSpec::new("orders", "billing");

        assert_eq!(policy_findings(&found, &expected(spec.clone(), 5)), None);
        let finding = policy_findings(&found, &expected(spec.max_delivery_attempts(7), 5))
            .expect("a policy of 7 attempts was expected");
        assert_eq!(finding.severity, Severity::Error);
        assert!(
            finding.fix.contains("--max-delivery-attempts=7"),
            "{finding}"
        );
    }

    #[test]
    fn a_policy_limit_of_zero_means_five() {
        let policy = DeadLetterPolicy::new().set_max_delivery_attempts(0);
        let found = subscription("orders").set_dead_letter_policy(policy);
        let spec = SubscriptionSpec::new("orders", "billing");

        let finding = policy_findings(&found, &expected(spec, 6)).expect("5 < 6");

        assert!(finding.problem.contains("is 5"), "{finding}");
    }

    #[test]
    fn a_deleted_topic_is_reported_and_refused_for_redrive() {
        let found = NativeSubscription::new().set_topic(DELETED_TOPIC);
        let spec = SubscriptionSpec::new("orders", "billing");

        let finding = topic_link(&found, &expected(spec, 5), PROJECT).expect("deleted topic");

        assert!(finding.problem.contains("deleted"), "{finding}");
        let error = own_topic(&found, "billing", PROJECT).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn redrive_refuses_a_topic_of_another_project() {
        let found = NativeSubscription::new().set_topic("projects/other/topics/orders");

        let error = own_topic(&found, "billing", PROJECT).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Unsupported);
        assert!(
            error.to_string().contains("projects/other/topics/orders"),
            "{error}"
        );
    }
}
