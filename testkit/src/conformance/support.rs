//! The fixture and helpers every conformance case uses: unique names, resource cleanup,
//! capability skips and bounded receiving.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use wharf_core::{
    Backend, Capabilities, Delivery, ErrorKind, Publisher, Received, Subscriber, SubscriptionSpec,
};

/// The longest a published message may take to reach a subscriber. Generous, because
/// some brokers need seconds for a consumer to join (Kafka's group rebalance).
pub const ARRIVAL: Duration = Duration::from_secs(20);

/// How long one receive call waits inside the helpers' loops.
const POLL: Duration = Duration::from_millis(500);

/// Margin added to a lease before expecting the backend to have acted on it: timers
/// and clocks of real brokers are not exact.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// One test's view of the backend: unique names, the resources it created, and cleanup.
pub struct Fixture<'a> {
    backend: &'a dyn Backend,
    caps: Capabilities,
    prefix: String,
    counter: AtomicUsize,
    topics: Mutex<Vec<String>>,
    subscriptions: Mutex<Vec<String>>,
}

impl<'a> Fixture<'a> {
    /// A fixture for the case `case` (a few lowercase words joined by hyphens).
    pub fn new(backend: &'a dyn Backend, case: &str) -> Self {
        let suffix: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(6)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();

        Self {
            backend,
            caps: backend.capabilities(),
            prefix: format!("wharf-{case}-{suffix}"),
            counter: AtomicUsize::new(0),
            topics: Mutex::default(),
            subscriptions: Mutex::default(),
        }
    }

    /// The backend under test.
    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// The backend's capabilities.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// `true` if the backend has `capability`; otherwise prints why the case is skipped
    /// and returns `false`.
    pub fn has(&self, present: bool, capability: &str) -> bool {
        if !present {
            println!("skipped: {} lacks {capability}", self.caps.backend);
        }
        present
    }

    /// A fresh name under this case's prefix, such as `wharf-ack-x1y2z3-t1`.
    pub fn name(&self, kind: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{kind}{n}", self.prefix)
    }

    /// The lease this case's subscriptions use: two seconds, or the backend's shortest
    /// lease if that is longer, within its longest.
    pub fn lease(&self) -> Duration {
        let lease = self.caps.min_lease.max(Duration::from_secs(2));
        self.caps.max_lease.map_or(lease, |max| lease.min(max))
    }

    /// Creates a topic with a fresh name and returns the name.
    pub async fn topic(&self) -> String {
        let topic = self.name("t");
        self.backend
            .create_topic(&topic)
            .await
            .unwrap_or_else(|e| panic!("create_topic({topic}) failed: {e}"));
        self.topics
            .lock()
            .expect("fixture lock")
            .push(topic.clone());
        topic
    }

    /// A subscription spec on `topic` with a fresh name and this case's lease. On a
    /// backend without fan-out the subscription is the topic's queue, so it takes the
    /// topic's name.
    pub fn spec(&self, topic: &str) -> SubscriptionSpec {
        let wanted = self.name("s");
        let name = self.caps.subscription_name(topic, &wanted);
        SubscriptionSpec::new(topic, name).lease(self.lease())
    }

    /// Creates the subscription described by `spec` and opens a subscriber on it.
    pub async fn subscribe(&self, spec: &SubscriptionSpec) -> Subscriber {
        self.backend
            .create_subscription(spec)
            .await
            .unwrap_or_else(|e| panic!("create_subscription({}) failed: {e}", spec.name));
        self.subscriptions
            .lock()
            .expect("fixture lock")
            .push(spec.name.clone());
        self.subscriber(&spec.name).await
    }

    /// Opens another subscriber on an existing subscription.
    pub async fn subscriber(&self, subscription: &str) -> Subscriber {
        self.backend
            .subscriber(subscription)
            .await
            .unwrap_or_else(|e| panic!("subscriber({subscription}) failed: {e}"))
    }

    /// Opens a publisher on an existing topic.
    pub async fn publisher(&self, topic: &str) -> Publisher {
        self.backend
            .publisher(topic)
            .await
            .unwrap_or_else(|e| panic!("publisher({topic}) failed: {e}"))
    }

    /// Opens a subscriber on the subscription's dead-letter destination.
    pub async fn dead_letters(&self, subscription: &str) -> Subscriber {
        self.backend
            .dead_letter_subscriber(subscription)
            .await
            .unwrap_or_else(|e| panic!("dead_letter_subscriber({subscription}) failed: {e}"))
    }

    /// The usual arrangement: a topic, one subscription with `spec` adjusted by
    /// `configure`, a publisher and a subscriber.
    pub async fn queue_with(
        &self,
        configure: impl FnOnce(SubscriptionSpec) -> SubscriptionSpec,
    ) -> Queue {
        let topic = self.topic().await;
        let spec = configure(self.spec(&topic));
        let subscriber = self.subscribe(&spec).await;
        let publisher = self.publisher(&topic).await;

        Queue {
            publisher,
            subscriber,
            spec,
        }
    }

    /// [`queue_with`](Self::queue_with) with the default spec.
    pub async fn queue(&self) -> Queue {
        self.queue_with(|spec| spec).await
    }

    /// Runs the case's body, then deletes every subscription and topic the fixture
    /// created, also when the body panicked; the panic is then resumed.
    pub async fn run(&self, body: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;

        self.cleanup().await;

        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn cleanup(&self) {
        let subscriptions = std::mem::take(&mut *self.subscriptions.lock().expect("lock"));
        for name in subscriptions {
            report_cleanup(
                "subscription",
                &name,
                self.backend.delete_subscription(&name).await,
            );
        }

        let topics = std::mem::take(&mut *self.topics.lock().expect("lock"));
        for name in topics {
            report_cleanup("topic", &name, self.backend.delete_topic(&name).await);
        }
    }
}

fn report_cleanup(what: &str, name: &str, result: wharf_core::Result<()>) {
    match result {
        // A backend without fan-out deletes the topic's queue with its subscription.
        Err(error) if error.kind() != ErrorKind::NotFound => {
            eprintln!("cleanup: deleting {what} {name} failed: {error}");
        }
        _ => {}
    }
}

/// A topic with one subscription, ready to use.
pub struct Queue {
    /// Publishes to the topic.
    pub publisher: Publisher,
    /// Reads the subscription.
    pub subscriber: Subscriber,
    /// How the subscription was created.
    pub spec: SubscriptionSpec,
}

/// Publishes `message`, panicking with the error if the backend refuses it.
pub async fn publish(publisher: &Publisher, message: wharf_core::Message) {
    if let Err(error) = publisher.publish(message).await {
        panic!("publish to {} failed: {}", publisher.topic(), error.error);
    }
}

/// Publishes `count` messages whose payloads are `"0"`, `"1"`, ... in one batch,
/// panicking on the first failure.
pub async fn publish_numbered(publisher: &Publisher, count: usize) {
    let messages = (0..count)
        .map(|i| wharf_core::Message::new(i.to_string()))
        .collect();

    for (i, result) in publisher
        .publish_batch(messages)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(error) = result {
            panic!("publishing message {i} of {count} failed: {}", error.error);
        }
    }
}

/// Receives until `count` deliveries arrived, leaving them unsettled.
///
/// # Panics
///
/// If fewer arrive within `within`, saying how many were expected and how many came.
pub async fn receive_all(subscriber: &Subscriber, count: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut received = Vec::with_capacity(count);

    while received.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "expected {count} deliveries from {} within {within:?}, got {}",
            subscriber.subscription(),
            received.len()
        );
        let batch = receive(subscriber, count - received.len(), left.min(POLL)).await;
        received.extend(batch);
    }
    received
}

/// Receives one delivery, panicking if none arrives within `within`.
pub async fn receive_one(subscriber: &Subscriber, within: Duration) -> Delivery {
    receive_all(subscriber, 1, within)
        .await
        .pop()
        .expect("receive_all returns what it was asked for")
}

/// Receives and acks until `count` deliveries arrived, returning their contents.
///
/// Acking as they come keeps large batches within their lease.
///
/// # Panics
///
/// If fewer arrive within `within`, or an ack fails.
pub async fn receive_and_ack(
    subscriber: &Subscriber,
    count: usize,
    within: Duration,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut received = Vec::with_capacity(count);

    while received.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "expected {count} deliveries from {} within {within:?}, got {}",
            subscriber.subscription(),
            received.len()
        );
        let max = (count - received.len()).min(100);
        for delivery in receive(subscriber, max, left.min(POLL)).await {
            received.push(ack(delivery).await);
        }
    }
    received
}

/// Acks `delivery`, panicking if the backend refuses, and returns its contents.
pub async fn ack(delivery: Delivery) -> Received {
    let received = delivery.received().clone();
    if let Err(failed) = delivery.ack().await {
        panic!("ack of {} failed: {}", received.id(), failed.error);
    }
    received
}

/// One receive call that panics on error.
pub async fn receive(subscriber: &Subscriber, max: usize, wait: Duration) -> Vec<Delivery> {
    subscriber
        .receive(max, wait)
        .await
        .unwrap_or_else(|e| panic!("receive from {} failed: {e}", subscriber.subscription()))
}

/// Receives from every subscriber at once until one delivery arrives; the others keep
/// nothing, since a receive cut short releases what it had taken.
///
/// # Panics
///
/// If nothing arrives within `within`.
pub async fn receive_one_of(subscribers: &[&Subscriber], within: Duration) -> Delivery {
    let deadline = Instant::now() + within;

    loop {
        for subscriber in subscribers {
            if let Some(delivery) = receive(subscriber, 1, POLL / 5).await.pop() {
                return delivery;
            }
        }
        let names: Vec<&str> = subscribers.iter().map(|s| s.subscription()).collect();
        assert!(
            Instant::now() < deadline,
            "expected a delivery from one of {names:?} within {within:?}, got none"
        );
    }
}

/// [`expect_nothing`] on every subscriber at once.
pub async fn expect_nothing_on(subscribers: &[&Subscriber], period: Duration, why: &str) {
    let deadline = Instant::now() + period;

    while Instant::now() < deadline {
        for subscriber in subscribers {
            expect_nothing(subscriber, POLL / 5, why).await;
        }
    }
}

/// Receives for `period` and panics if anything arrives: `why` says what should have
/// kept it away.
pub async fn expect_nothing(subscriber: &Subscriber, period: Duration, why: &str) {
    let deadline = Instant::now() + period;

    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Some(delivery) = receive(subscriber, 1, left.min(POLL)).await.pop() {
            panic!(
                "expected no delivery from {} for {period:?} ({why}), got message {} \
                 (attempt {}, payload {:?})",
                subscriber.subscription(),
                delivery.id(),
                delivery.attempt(),
                text(delivery.payload()),
            );
        }
    }
}

/// Waits until `done` holds, checking every 20 ms.
///
/// # Panics
///
/// If it does not hold within `within`; `what` says what was awaited.
pub async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payloads of `received` as text, sorted, for comparing sets of numbered messages.
pub fn payload_set<'r>(received: impl IntoIterator<Item = &'r Received>) -> BTreeSet<String> {
    received.into_iter().map(|r| text(r.payload())).collect()
}

/// The payloads `"0"` to `count - 1` as a set.
pub fn numbered(count: usize) -> BTreeSet<String> {
    (0..count).map(|i| i.to_string()).collect()
}

/// A payload as text for messages, lossy for bytes that are not UTF-8. Only the
/// suite's own test payloads pass through here.
pub fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
