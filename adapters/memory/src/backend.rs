//! [`MemoryBackend`]: the registry of topics, subscriptions and dead-letter queues, and
//! the [`Backend`] implementation that opens publishers and subscribers on them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tracing::debug;
use wharf_core::{
    Backend, Capabilities, Error, ErrorKind, Expectations, Figure, Finding, Publisher, Received,
    Result, Subscriber, SubscriptionSpec, SubscriptionStats,
};

use crate::counts::StateCounts;
use crate::driver::{MemoryPublisher, MemorySubscription};
use crate::options::MemoryOptions;
use crate::queue::{Queue, QueueConfig};
use crate::topic::Topic;

/// An in-process message broker with the semantics of a cloud queue.
///
/// Cheap to clone: clones share every topic and subscription, so a publisher made from
/// one clone feeds subscribers made from another. See the [crate docs](crate) for what
/// it guarantees.
#[derive(Clone)]
pub struct MemoryBackend {
    broker: Arc<Broker>,
}

struct Broker {
    options: MemoryOptions,
    capabilities: Capabilities,
    registry: Mutex<Registry>,
    /// Numbers queues, so a receipt can tell which queue issued it.
    queue_ids: AtomicU64,
    /// Numbers messages backend-wide; the number is the message id.
    message_ids: Arc<AtomicU64>,
}

#[derive(Default)]
struct Registry {
    topics: HashMap<String, Arc<Topic>>,
    subscriptions: HashMap<String, Subscription>,
    dead_letters: HashMap<String, Arc<Queue>>,
}

struct Subscription {
    spec: SubscriptionSpec,
    topic: Arc<Topic>,
    queue: Arc<Queue>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty broker with the default [`MemoryOptions`].
    pub fn new() -> Self {
        Self::build(MemoryOptions::default())
    }

    /// An empty broker with `options`.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](ErrorKind::InvalidArgument) if an option is out of range.
    pub fn with_options(options: MemoryOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self::build(options))
    }

    fn build(options: MemoryOptions) -> Self {
        let broker = Broker {
            capabilities: options.capabilities(),
            options,
            registry: Mutex::default(),
            queue_ids: AtomicU64::new(0),
            message_ids: Arc::new(AtomicU64::new(1)),
        };
        Self {
            broker: Arc::new(broker),
        }
    }

    /// Counts the messages of `subscription` by state, with its dead-letter queue's size
    /// and the age of its oldest message. Also accepts a dead-letter queue's name.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) if no such subscription exists.
    pub fn counts(&self, subscription: &str) -> Result<StateCounts> {
        let queue = self.broker.queue(subscription)?;

        let mut stats = queue.stats();
        stats.dead_lettered = queue.dead_letter_queue().map_or(0, |dlq| dlq.len());
        Ok(stats)
    }

    /// The settings and queue of `subscription`.
    pub(crate) fn registered(&self, subscription: &str) -> Result<(SubscriptionSpec, Arc<Queue>)> {
        let registry = self.broker.registry();
        let found = registry.subscriptions.get(subscription);
        let found = found.ok_or_else(|| missing_subscription(subscription))?;
        Ok((found.spec.clone(), found.queue.clone()))
    }

    /// A publisher that feeds `queue` alone, through a topic of its own.
    pub(crate) fn publisher_into(&self, queue: Arc<Queue>) -> Publisher {
        let window = self.broker.options.deduplication_window;
        let ids = self.broker.message_ids.clone();
        let feed = Arc::new(Topic::new(queue.name().to_owned(), window, ids));
        feed.attach(queue);

        Publisher::new(MemoryPublisher::new(feed, self.broker.capabilities.clone()))
    }

    fn next_queue_id(&self) -> u64 {
        self.broker.queue_ids.fetch_add(1, Ordering::Relaxed)
    }

    fn subscriber_on(&self, queue: Arc<Queue>) -> Subscriber {
        let driver = MemorySubscription::new(queue, self.broker.capabilities.clone());
        Subscriber::new(driver)
    }
}

impl Broker {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // No code path panics while holding the lock, so a poisoned registry is whole.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue of a subscription, or a dead-letter queue, by name.
    fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        let registry = self.registry();
        if let Some(subscription) = registry.subscriptions.get(name) {
            return Ok(subscription.queue.clone());
        }
        registry
            .dead_letters
            .get(name)
            .cloned()
            .ok_or_else(|| missing_subscription(name))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        self.broker.capabilities.clone()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        check_name("topic", topic)?;
        let mut registry = self.broker.registry();

        if !registry.topics.contains_key(topic) {
            let window = self.broker.options.deduplication_window;
            let ids = self.broker.message_ids.clone();
            let created = Topic::new(topic.to_owned(), window, ids);
            registry.topics.insert(topic.to_owned(), Arc::new(created));
            debug!(destination = topic, "topic created");
        }
        Ok(())
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.check_spec(spec)?;
        let mut registry = self.broker.registry();

        if let Some(existing) = registry.subscriptions.get(&spec.name) {
            return same_settings(&existing.spec, spec);
        }
        check_free_names(&registry, spec)?;
        let topic = registry
            .topics
            .get(&spec.topic)
            .cloned()
            .ok_or_else(|| missing_topic(&spec.topic))?;

        let dead_letter = self.dead_letter_queue(&mut registry, spec);
        let config = QueueConfig {
            lease: spec.lease,
            max_deliveries: spec.max_delivery_attempts,
            ordered: spec.ordered,
        };
        let queue = Queue::new(
            self.next_queue_id(),
            spec.name.clone(),
            config,
            Some(dead_letter),
        );
        let queue = Arc::new(queue);
        topic.attach(queue.clone());

        debug!(source = %spec.name, destination = %spec.topic, "subscription created");
        let subscription = Subscription {
            spec: spec.clone(),
            topic,
            queue,
        };
        registry
            .subscriptions
            .insert(spec.name.clone(), subscription);
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        let found = self.broker.registry().topics.get(topic).cloned();
        let topic = found.ok_or_else(|| missing_topic(topic))?;

        let driver = MemoryPublisher::new(topic, self.broker.capabilities.clone());
        Ok(Publisher::new(driver))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let queue = self.broker.queue(subscription)?;

        Ok(self.subscriber_on(queue))
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let found = self
            .broker
            .registry()
            .subscriptions
            .get(subscription)
            .and_then(|s| s.queue.dead_letter_queue().cloned());
        let queue = found.ok_or_else(|| missing_subscription(subscription))?;

        Ok(self.subscriber_on(queue))
    }

    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        let mut registry = self.broker.registry();
        let removed = registry.subscriptions.remove(subscription);
        let removed = removed.ok_or_else(|| missing_subscription(subscription))?;

        removed.topic.detach(&removed.queue);
        removed.queue.delete();

        // A dead-letter queue may be shared; it goes with the last subscription using it.
        let dead_letter = removed.spec.dead_letter_name();
        let still_used = registry
            .subscriptions
            .values()
            .any(|s| s.spec.dead_letter_name() == dead_letter);
        if !still_used && let Some(queue) = registry.dead_letters.remove(&dead_letter) {
            queue.delete();
        }
        debug!(source = subscription, "subscription deleted");
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let removed = self.broker.registry().topics.remove(topic);
        let removed = removed.ok_or_else(|| missing_topic(topic))?;

        // Its subscriptions stay readable but receive nothing new, as on Pub/Sub.
        removed.delete();
        debug!(destination = topic, "topic deleted");
        Ok(())
    }

    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        self.subscription_stats(subscription)
    }

    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        self.peek(subscription, max)
    }

    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        self.purge(subscription)
    }

    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        let (_, queue) = self.registered(subscription)?;
        Ok(self.publisher_into(queue))
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        Ok(self.check(expected))
    }
}

impl MemoryBackend {
    fn check_spec(&self, spec: &SubscriptionSpec) -> Result<()> {
        check_name("topic", &spec.topic)?;
        check_name("subscription", &spec.name)?;
        if let Some(name) = &spec.dead_letter {
            check_name("dead-letter queue", name)?;
        }

        self.broker.capabilities.check_lease(spec.lease)?;
        if spec.max_delivery_attempts == Some(0) {
            return Err(Error::invalid(format!(
                "max_delivery_attempts of subscription `{}` is 0; it must be at least 1",
                spec.name
            )));
        }
        Ok(())
    }

    /// The dead-letter queue `spec` names, created if no other subscription shares it.
    fn dead_letter_queue(&self, registry: &mut Registry, spec: &SubscriptionSpec) -> Arc<Queue> {
        let name = spec.dead_letter_name();
        if let Some(queue) = registry.dead_letters.get(&name) {
            return queue.clone();
        }

        let config = QueueConfig {
            lease: spec.lease,
            max_deliveries: None,
            ordered: false,
        };
        let queue = Arc::new(Queue::new(self.next_queue_id(), name.clone(), config, None));
        registry.dead_letters.insert(name, queue.clone());
        queue
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.broker.registry();
        f.debug_struct("MemoryBackend")
            .field("options", &self.broker.options)
            .field("topics", &registry.topics.len())
            .field("subscriptions", &registry.subscriptions.len())
            .finish()
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name must not be empty")));
    }
    Ok(())
}

/// A subscription or dead-letter queue name may stand for only one queue.
fn check_free_names(registry: &Registry, spec: &SubscriptionSpec) -> Result<()> {
    let dead_letter = spec.dead_letter_name();
    let clash = if registry.dead_letters.contains_key(&spec.name) {
        Some(&spec.name)
    } else if registry.subscriptions.contains_key(&dead_letter) || dead_letter == spec.name {
        Some(&dead_letter)
    } else {
        None
    };

    match clash {
        Some(name) => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "`{name}` cannot be both a subscription and a dead-letter queue; choose \
                 another name for subscription `{}` or its dead-letter queue",
                spec.name
            ),
        )),
        None => Ok(()),
    }
}

fn same_settings(existing: &SubscriptionSpec, wanted: &SubscriptionSpec) -> Result<()> {
    if existing == wanted {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "subscription `{}` already exists with other settings ({existing:?}); delete it \
             first or use the same settings",
            wanted.name
        ),
    ))
}

fn missing_topic(topic: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("topic `{topic}` does not exist; create it with create_topic first"),
    )
}

pub(crate) fn missing_subscription(subscription: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "subscription `{subscription}` does not exist; create it with create_subscription \
             first"
        ),
    )
}
