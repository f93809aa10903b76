//! Operating SQS queues: the doctor against setups made by hand through the SDK, and
//! the backlog figures only SQS reports this way (in flight, delayed, dead-lettered).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use common::TestQueue;
use futures::FutureExt;
use wharf_core::{
    Backend, Delivery, ErrorKind, Expectations, Figure, Finding, Message, RetryPolicy, Severity,
    SubscriptionSpec, SubscriptionStats,
};

const ARRIVAL: Duration = Duration::from_secs(10);

/// How long SQS's approximate counts may take to catch up.
const SETTLE: Duration = Duration::from_secs(20);

/// Queues created through the SDK for one test, deleted afterwards even if it panics.
struct HandMade {
    client: Client,
    urls: Vec<String>,
}

impl HandMade {
    async fn new() -> Self {
        Self {
            client: common::raw_client().await,
            urls: Vec::new(),
        }
    }

    /// Creates queue `name` with `attributes`, returning its ARN.
    async fn queue(&mut self, name: &str, attributes: &[(QueueAttributeName, String)]) -> String {
        let attributes: HashMap<_, _> = attributes.iter().cloned().collect();
        let url = self
            .client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"))
            .queue_url()
            .expect("a queue URL")
            .to_owned();
        self.urls.push(url.clone());
        self.arn(&url).await
    }

    async fn arn(&self, url: &str) -> String {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        output.attributes().expect("attributes")[&QueueAttributeName::QueueArn].clone()
    }

    /// Runs `body`, then deletes every queue made, also when `body` panicked.
    async fn run(self, body: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        for url in &self.urls {
            // A queue the test deleted itself is already gone.
            let _ = self.client.delete_queue().queue_url(url).send().await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

fn redrive_policy(dead_letter_arn: &str, max_receive_count: u32) -> (QueueAttributeName, String) {
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{dead_letter_arn}","maxReceiveCount":{max_receive_count}}}"#
    );
    (QueueAttributeName::RedrivePolicy, policy)
}

/// What a worker retrying `attempts` times with 30 s handlers expects of queue `name`.
fn expecting(spec: SubscriptionSpec, attempts: u32) -> Expectations {
    let policy = RetryPolicy::default().max_attempts(attempts);
    Expectations::from_policy(spec, &policy, Duration::from_secs(30))
}

fn spec(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::new(name, name).max_delivery_attempts(5)
}

async fn doctor(expected: &Expectations) -> Vec<Finding> {
    let backend = common::backend().await;
    let findings = backend.doctor(expected).await.expect("doctor");
    for finding in &findings {
        println!("doctor: {finding}");
    }
    findings
}

/// The one finding whose fix names `setting`.
fn naming<'a>(findings: &'a [Finding], setting: &str) -> &'a Finding {
    let matching: Vec<_> = findings
        .iter()
        .filter(|f| f.fix.contains(setting))
        .collect();
    match matching[..] {
        [finding] => finding,
        _ => panic!("expected one finding whose fix names {setting}, got {findings:?}"),
    }
}

#[tokio::test]
async fn doctor_reports_a_max_receive_count_below_the_retry_attempts() {
    let name = common::unique("doc-limit");
    let mut made = HandMade::new().await;
    let dead_letter_arn = made.queue(&format!("{name}-dlq"), &[]).await;
    made.queue(&name, &[redrive_policy(&dead_letter_arn, 2)])
        .await;

    made.run(async {
        let findings = doctor(&expecting(spec(&name), 5)).await;

        let finding = naming(&findings, "maxReceiveCount");
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.subject, name);
        assert!(finding.problem.contains("is 2"), "{finding}");
        assert!(finding.fix.contains("at least 5"), "{finding}");
        let errors = findings.iter().filter(|f| f.severity == Severity::Error);
        assert_eq!(errors.count(), 1, "only the limit is wrong: {findings:?}");
    })
    .await;
}

#[tokio::test]
async fn doctor_reports_a_queue_without_a_redrive_policy() {
    let name = common::unique("doc-no-policy");
    let mut made = HandMade::new().await;
    made.queue(&format!("{name}-dlq"), &[]).await;
    made.queue(&name, &[]).await;

    made.run(async {
        let limited = doctor(&expecting(spec(&name), 5)).await;
        let unlimited = doctor(&expecting(SubscriptionSpec::new(&name, &name), 5)).await;

        let finding = naming(&limited, "RedrivePolicy");
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.subject, name);
        assert!(finding.problem.contains("no RedrivePolicy"), "{finding}");
        assert!(finding.fix.contains("maxReceiveCount of 5"), "{finding}");
        let finding = naming(&unlimited, "RedrivePolicy");
        assert_eq!(
            finding.severity,
            Severity::Warning,
            "without max_delivery_attempts no policy is expected, but it is still fragile"
        );
    })
    .await;
}

#[tokio::test]
async fn doctor_reports_a_redrive_target_that_does_not_exist() {
    let name = common::unique("doc-gone");
    let mut made = HandMade::new().await;
    let dead_letter = format!("{name}-dlq");
    let dead_letter_arn = made.queue(&dead_letter, &[]).await;
    made.queue(&name, &[redrive_policy(&dead_letter_arn, 5)])
        .await;

    made.run(async {
        let client = common::raw_client().await;
        let url = client
            .get_queue_url()
            .queue_name(&dead_letter)
            .send()
            .await
            .expect("dead-letter queue URL");
        let url = url.queue_url().expect("a URL");
        client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .expect("deleted");

        let findings = doctor(&expecting(spec(&name), 5)).await;

        let finding = naming(&findings, "deadLetterTargetArn");
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.subject, name);
        assert!(finding.problem.contains(&dead_letter), "{finding}");
        assert!(finding.problem.contains("does not exist"), "{finding}");
    })
    .await;
}

#[tokio::test]
async fn doctor_reports_dead_letters_sent_elsewhere_than_expected() {
    let name = common::unique("doc-elsewhere");
    let mut made = HandMade::new().await;
    let other = format!("{name}-failed");
    let other_arn = made.queue(&other, &[]).await;
    made.queue(&name, &[redrive_policy(&other_arn, 5)]).await;

    made.run(async {
        let findings = doctor(&expecting(spec(&name), 5)).await;

        let finding = naming(&findings, "deadLetterTargetArn");
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.subject, name);
        assert!(finding.problem.contains(&other), "{finding}");
        assert!(finding.fix.contains(&format!("{name}-dlq")), "{finding}");
    })
    .await;
}

#[tokio::test]
async fn doctor_warns_of_a_dead_letter_queue_keeping_less_than_its_source() {
    let name = common::unique("doc-retention");
    let mut made = HandMade::new().await;
    let dead_letter = format!("{name}-dlq");
    let hour = (
        QueueAttributeName::MessageRetentionPeriod,
        "3600".to_owned(),
    );
    let dead_letter_arn = made.queue(&dead_letter, &[hour]).await;
    made.queue(&name, &[redrive_policy(&dead_letter_arn, 5)])
        .await;

    made.run(async {
        let findings = doctor(&expecting(spec(&name), 5)).await;

        let finding = naming(&findings, "MessageRetentionPeriod");
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(finding.subject, dead_letter);
        assert!(finding.problem.contains("1 hour,"), "{finding}");
        assert!(finding.fix.contains("345600 seconds"), "{finding}");
    })
    .await;
}

#[tokio::test]
async fn doctor_warns_of_a_visibility_timeout_shorter_than_the_handler() {
    let queue = TestQueue::with("doc-lease", "", Duration::from_secs(10), |s| {
        s.max_delivery_attempts(5)
    })
    .await;
    let policy = RetryPolicy::default().max_attempts(5);
    let spec = spec(&queue.name).lease(Duration::from_secs(10));
    let expected = Expectations::from_policy(spec, &policy, Duration::from_secs(60));

    let findings = doctor(&expected).await;

    let finding = naming(&findings, "VisibilityTimeout");
    assert_eq!(finding.severity, Severity::Warning);
    assert_eq!(finding.subject, queue.name);
    assert!(finding.fix.contains("at least 1m"), "{finding}");
    assert_eq!(findings.len(), 1, "nothing else is wrong: {findings:?}");
    queue.delete().await;
}

/// Polls `stats` until `settled` holds of it, returning that snapshot.
async fn stats_until(
    queue: &TestQueue,
    what: &str,
    settled: impl Fn(&SubscriptionStats) -> bool,
) -> SubscriptionStats {
    let deadline = Instant::now() + SETTLE;
    loop {
        let stats = queue.backend.stats(&queue.name).await.expect("stats");
        if settled(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats did not show {what} within {SETTLE:?}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn figures(stats: &SubscriptionStats) -> [Option<u64>; 4] {
    [
        stats.ready.known().copied(),
        stats.in_flight.known().copied(),
        stats.delayed.known().copied(),
        stats.dead_lettered.known().copied(),
    ]
}

async fn publish(queue: &TestQueue, messages: impl IntoIterator<Item = Message>) {
    for message in messages {
        queue.publisher.publish(message).await.expect("published");
    }
}

#[tokio::test]
async fn received_messages_count_as_in_flight_until_acked() {
    let queue = TestQueue::standard("stats-flight").await;
    publish(&queue, (0..3).map(|i| Message::new(format!("m{i}")))).await;

    let held = queue.receive(2, ARRIVAL).await;
    assert_eq!(held.len(), 2);
    let holding = stats_until(&queue, "2 in flight, 1 ready", |s| {
        figures(s) == [Some(1), Some(2), Some(0), Some(0)]
    })
    .await;
    Delivery::ack_all(held).await;
    stats_until(&queue, "nothing in flight", |s| {
        figures(s) == [Some(1), Some(0), Some(0), Some(0)]
    })
    .await;

    let oldest = holding.oldest_age.reason().expect("oldest age is unknown");
    assert!(oldest.contains("ApproximateAgeOfOldestMessage"), "{oldest}");
    assert!(
        holding.consumer_lag.reason().is_some(),
        "a queue has no lag"
    );
    assert_eq!(holding.backlog(), Figure::Known(3));
    queue.delete().await;
}

#[tokio::test]
async fn a_publish_delay_counts_as_delayed() {
    let queue = TestQueue::standard("stats-delay").await;
    let later = Message::new("later").with_delay(Duration::from_secs(60));
    publish(&queue, [later, Message::new("now")]).await;

    let stats = stats_until(&queue, "1 delayed, 1 ready", |s| {
        figures(s) == [Some(1), Some(0), Some(1), Some(0)]
    })
    .await;

    assert_eq!(stats.backlog(), Figure::Known(2));
    queue.delete().await;
}

#[tokio::test]
async fn a_nack_delay_counts_as_in_flight_not_delayed() {
    let queue = TestQueue::standard("stats-nack").await;
    publish(&queue, [Message::new("retry me")]).await;

    let delivery = queue.receive(1, ARRIVAL).await.pop().expect("a delivery");
    delivery
        .nack(Duration::from_secs(60))
        .await
        .expect("nacked");

    // A nack delay is a visibility change on SQS, which counts the message as not
    // visible rather than delayed.
    stats_until(&queue, "1 in flight", |s| {
        figures(s) == [Some(0), Some(1), Some(0), Some(0)]
    })
    .await;
    queue.delete().await;
}

#[tokio::test]
async fn dead_letters_are_counted_peeked_without_loss_and_purged() {
    let queue = TestQueue::standard("stats-dead").await;
    publish(&queue, (0..2).map(|i| Message::new(format!("m{i}")))).await;
    for delivery in queue.receive(2, ARRIVAL).await {
        delivery
            .dead_letter("out of stock")
            .await
            .expect("dead-lettered");
    }
    stats_until(&queue, "2 dead-lettered", |s| {
        figures(s) == [Some(0), Some(0), Some(0), Some(2)]
    })
    .await;

    let first = queue.backend.peek_dead_letters(&queue.name, 10).await;
    let second = queue.backend.peek_dead_letters(&queue.name, 10).await;
    let (first, second) = (first.expect("peek"), second.expect("peek"));
    assert_eq!((first.len(), second.len()), (2, 2));
    // Each peek is a receive of the dead-letter queue, and SQS counts it.
    assert!(
        second.iter().all(|letter| letter.attempt() == 2),
        "{second:?}"
    );
    stats_until(&queue, "the peeked dead letters back", |s| {
        s.dead_lettered == Figure::Known(2)
    })
    .await;

    let purged = queue.backend.purge_dead_letters(&queue.name).await;
    let reason = purged.expect("purged");
    assert!(
        reason.reason().is_some_and(|r| r.contains("PurgeQueue")),
        "{reason:?}"
    );
    stats_until(&queue, "no dead letters", |s| {
        s.dead_lettered == Figure::Known(0)
    })
    .await;
    queue.delete().await;
}

#[tokio::test]
async fn a_missing_dead_letter_queue_is_explained() {
    let name = common::unique("stats-no-dlq");
    let mut made = HandMade::new().await;
    made.queue(&name, &[]).await;

    made.run(async {
        let backend = common::backend().await;

        let stats = backend
            .stats(&name)
            .await
            .expect("stats of the queue itself");
        let purged = backend.purge_dead_letters(&name).await;

        assert_eq!(stats.ready, Figure::Known(0));
        let reason = stats.dead_lettered.reason().expect("no dead-letter count");
        assert!(reason.contains(&format!("{name}-dlq")), "{reason}");
        let error = purged.expect_err("no dead-letter queue to purge");
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(error.to_string().contains("create_subscription"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn stats_of_a_missing_queue_is_not_found() {
    let backend = common::backend().await;
    let name = common::unique("stats-missing");

    let error = backend.stats(&name).await.expect_err("no such queue");

    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert!(error.to_string().contains("create_topic"), "{error}");
}
