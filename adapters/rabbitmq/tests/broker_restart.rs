//! What the RabbitMQ adapter promises when the broker itself goes away: a restart of
//! the broker in the middle of a stream of confirmed publishes and consumes loses no
//! confirmed message. Every confirmed message is received at least once; duplicates
//! (redeliveries of messages whose ack was lost, or publishes retried after a confirm
//! that never came) are allowed and counted.
//!
//! The test restarts the shared broker with the service harness
//! (`scripts/services restart rabbitmq`), which would break any other test running
//! against it at the same time, so it is ignored by default and run on its own:
//!
//! ```text
//! cargo test -p wharf-rabbitmq --test broker_restart -- --ignored --nocapture
//! ```

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::time::MissedTickBehavior;
use wharf_core::{Backend, ErrorKind, Message, Publisher, Subscriber, SubscriptionSpec};
use wharf_rabbitmq::{QueueType, RabbitMq, RabbitMqConfig};

use common::{connect, unique};

/// Messages in the stream, with payloads `"0"` to `"9999"`.
const MESSAGES: usize = 10_000;

/// Confirmed publishes after which the broker is restarted.
const RESTART_AFTER: usize = 2_000;

/// Publishes in flight at once, and deliveries taken and acked at once.
const BATCH: usize = 200;

/// Time between two batches of publishes. The stream runs at 1,000 messages a second
/// for ten seconds, so it is still running when the broker goes down, a few seconds
/// after the restart began, however fast the broker confirms.
const PUBLISH_PACE: Duration = Duration::from_millis(200);

/// Time between two receives: the consumer takes at most 500 messages a second, half
/// the publishing rate, so confirmed messages are waiting in the queue when the broker
/// goes down and have to outlive the restart.
const RECEIVE_PACE: Duration = Duration::from_millis(400);

/// Longest the whole stream may take, restart included.
const DEADLINE: Duration = Duration::from_secs(180);

/// What the publisher and the consumer have seen so far, shared while both run.
#[derive(Default)]
struct Progress {
    confirmed: Mutex<HashSet<String>>,
    received: Mutex<HashMap<String, u32>>,
    published: AtomicBool,
    /// Confirmed messages not yet received when the first publish failed.
    backlog: OnceLock<usize>,
}

impl Progress {
    fn confirmed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.confirmed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn received(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Confirmed payloads not received yet.
    fn missing(&self) -> Vec<String> {
        let received = self.received();
        let mut missing: Vec<String> = self
            .confirmed()
            .iter()
            .filter(|payload| !received.contains_key(*payload))
            .cloned()
            .collect();
        missing.sort_by_key(|payload| payload.parse::<usize>().unwrap_or(usize::MAX));
        missing
    }

    /// Notes the backlog the first time a publish fails, as the broker goes down.
    fn note_backlog(&self) {
        self.backlog.get_or_init(|| {
            let received = self.received().len();
            self.confirmed().len().saturating_sub(received)
        });
    }

    /// Whether everything is published and every confirmed payload was received.
    fn complete(&self) -> bool {
        self.published.load(Ordering::SeqCst) && self.missing().is_empty()
    }
}

/// A topic with one (quorum, so durable) subscription on `backend`.
async fn arrange(backend: &RabbitMq) -> SubscriptionSpec {
    let topic = unique("restart");
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, unique("restart-s"));
    backend.create_subscription(&spec).await.unwrap();
    spec
}

async fn clean_up(backend: &RabbitMq, spec: &SubscriptionSpec) {
    backend.delete_subscription(&spec.name).await.unwrap();
    backend.delete_topic(&spec.topic).await.unwrap();
}

/// Publishes every payload until the broker confirms it, one batch per [`PUBLISH_PACE`],
/// retrying the ones that fail, which must fail retryably. Returns how many publishes
/// were retried.
async fn publish_stream(publisher: &Publisher, progress: &Progress, deadline: Instant) -> usize {
    let mut pending: Vec<String> = (0..MESSAGES).rev().map(|i| i.to_string()).collect();
    let mut retries = 0;
    let mut pace = tokio::time::interval(PUBLISH_PACE);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);

    while !pending.is_empty() {
        pace.tick().await;
        let take = pending.len().min(BATCH);
        let batch = pending.split_off(pending.len() - take);
        let messages = batch.iter().map(|payload| Message::new(payload.clone()));
        let results = publisher.publish_batch(messages.collect()).await;

        for (payload, result) in batch.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    progress.confirmed().insert(payload);
                }
                Err(error) => {
                    assert!(
                        error.is_retryable(),
                        "a publish failed for good: {}",
                        error.error
                    );
                    assert!(
                        Instant::now() < deadline,
                        "never reconnected: {}",
                        error.error
                    );
                    progress.note_backlog();
                    pending.push(payload);
                    retries += 1;
                }
            }
        }
    }

    progress.published.store(true, Ordering::SeqCst);
    retries
}

/// Receives and acks, one batch per [`RECEIVE_PACE`], until every confirmed payload
/// has arrived or `deadline` passes, tolerating the faults of a broker that is down.
async fn consume_stream(subscriber: &Subscriber, progress: &Progress, deadline: Instant) {
    let mut pace = tokio::time::interval(RECEIVE_PACE);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);

    while !progress.complete() && Instant::now() < deadline {
        pace.tick().await;
        let deliveries = match subscriber.receive(BATCH, Duration::from_millis(500)).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                assert!(error.is_retryable(), "consumer fault: {error}");
                continue;
            }
        };

        for delivery in &deliveries {
            let payload = String::from_utf8_lossy(delivery.payload()).into_owned();
            *progress.received().entry(payload).or_default() += 1;
        }
        for acked in join_all(deliveries.into_iter().map(|d| d.ack())).await {
            // An ack on a connection that dropped is lost: the message comes back.
            if let Err(failed) = acked {
                let lost = failed.is_retryable() || failed.error.kind() == ErrorKind::LeaseExpired;
                assert!(lost, "an ack failed for good: {}", failed.error);
            }
        }
    }
}

/// `scripts/services`, the harness that runs the broker, from the repository root.
fn services() -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new(root.join("scripts/services"));
    command.current_dir(root);
    command
}

/// Restarts the broker once `RESTART_AFTER` publishes are confirmed; returns how long
/// the restart took.
async fn restart_midway(progress: &Progress) -> Duration {
    while progress.confirmed().len() < RESTART_AFTER {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let restart = tokio::task::spawn_blocking(|| services().args(["restart", "rabbitmq"]).output());
    let output = restart
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run scripts/services ({e})"));

    assert!(
        output.status.success(),
        "scripts/services restart rabbitmq failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ broker: scripts/test runs it alone, after the other tests"]
async fn every_confirmed_message_arrives_after_the_broker_restarts_midstream() {
    // The adapter's default, pinned so the URL cannot change it: a confirm means the
    // message is on disk in a quorum queue, which outlives the broker's restart.
    let config = RabbitMqConfig::from_env()
        .queue_type(QueueType::Quorum)
        .prefetch(BATCH as u16)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let backend = connect(config).await;
    let spec = arrange(&backend).await;
    let publisher = backend.publisher(&spec.topic).await.unwrap();
    let subscriber = backend.subscriber(&spec.name).await.unwrap();
    let progress = Progress::default();
    let deadline = Instant::now() + DEADLINE;

    let (retries, (), restart) = tokio::join!(
        publish_stream(&publisher, &progress, deadline),
        consume_stream(&subscriber, &progress, deadline),
        restart_midway(&progress),
    );

    let missing = progress.missing();
    let examples: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages never arrived within {DEADLINE:?}, such as {examples:?}",
        missing.len()
    );
    let confirmed = progress.confirmed().len();
    let backlog = progress.backlog.get().copied().unwrap_or_default();
    let received = progress.received.into_inner().unwrap();
    let published: HashSet<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    let strangers = received.keys().filter(|p| !published.contains(*p)).count();
    assert_eq!(strangers, 0, "received messages that were never published");
    assert!(retries > 0, "the restart did not interrupt the stream");
    assert!(
        backlog > 0,
        "no confirmed message was waiting when the broker went down"
    );

    let deliveries: u32 = received.values().sum();
    let duplicates = deliveries as usize - received.len();
    println!(
        "broker restart: {confirmed} confirmed, {} received distinct, {duplicates} duplicates, \
         {retries} publish retries, {backlog} waiting when it went down, restart took \
         {restart:.1?}",
        received.len(),
    );
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
    clean_up(&backend, &spec).await;
}
