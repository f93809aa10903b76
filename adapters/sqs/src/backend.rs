//! [`SqsBackend`]: creates queues and opens publishers and subscribers on them.
//!
//! SQS has no fan-out of its own, so a topic and its one subscription are the same
//! queue: `create_topic("orders")` creates queue `orders`, and
//! `create_subscription` on it must be named `orders` too. The subscription's settings
//! become the queue's: the lease its visibility timeout, the delivery limit its redrive
//! policy to the dead-letter queue, which is created alongside.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::debug;
use wharf_core::{
    Backend, Capabilities, Error, Expectations, Figure, Finding, Publisher, Received, Result,
    Subscriber, SubscriptionSpec, SubscriptionStats,
};

use crate::config::SqsConfig;
use crate::limits::{self, MAX_RECEIVE_COUNT, MAX_RETENTION};
use crate::queue::{self, Queues, is_fifo};
use crate::subscription::SqsSubscription;
use crate::topic::{SqsTopic, whole_seconds};

/// The SQS backend.
///
/// Cheap to clone; clones share the SDK client and the queue URL cache.
///
/// ```no_run
/// # async fn example() -> wharf_core::Result<()> {
/// use wharf_core::{Backend, Message, SubscriptionSpec};
/// use wharf_sqs::{SqsBackend, SqsConfig};
///
/// let backend = SqsBackend::connect(&SqsConfig::new().region("eu-west-1")).await;
/// backend.create_topic("orders").await?;
/// backend
///     .create_subscription(&SubscriptionSpec::new("orders", "orders").max_delivery_attempts(5))
///     .await?;
/// backend.publisher("orders").await?.publish(Message::new("order #1")).await.ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqsBackend {
    queues: Queues,
    content_based_deduplication: bool,
}

impl SqsBackend {
    /// A backend configured by `config` over the standard AWS chain. Nothing is sent
    /// until the first operation.
    pub async fn connect(config: &SqsConfig) -> Self {
        let sdk = config.load().await;
        Self::from_client(Client::new(&sdk))
            .content_based_deduplication(config.content_based_deduplication)
    }

    /// A backend configured by an `sqs://` URL; see [`SqsConfig::from_url`].
    ///
    /// # Errors
    ///
    /// [`Config`](wharf_core::ErrorKind::Config) for a malformed URL, an unknown option or
    /// a value an option does not take.
    pub async fn from_url(url: &str) -> Result<Self> {
        Ok(Self::connect(&SqsConfig::from_url(url)?).await)
    }

    /// A backend on an SDK client you built yourself.
    pub fn from_client(client: Client) -> Self {
        Self {
            queues: Queues::new(client),
            content_based_deduplication: false,
        }
    }

    /// Makes the FIFO queues this backend creates derive deduplication ids from the
    /// message body (SQS's `ContentBasedDeduplication`); see
    /// [`SqsConfig::content_based_deduplication`].
    #[must_use]
    pub fn content_based_deduplication(mut self, on: bool) -> Self {
        self.content_based_deduplication = on;
        self
    }

    /// The SDK client, for what wharf does not cover (purging, queue policies, tags,
    /// message move tasks).
    pub fn client(&self) -> &Client {
        self.queues.client()
    }

    /// The URL of queue `name`, resolved once and cached.
    ///
    /// # Errors
    ///
    /// [`NotFound`](wharf_core::ErrorKind::NotFound) if the queue does not exist.
    pub async fn queue_url(&self, name: &str) -> Result<String> {
        Ok(self.queues.url(name).await?.to_string())
    }

    /// A publisher's driver, for callers who want SQS-specific accessors.
    ///
    /// # Errors
    ///
    /// As [`Backend::publisher`].
    pub async fn topic(&self, queue: &str) -> Result<SqsTopic> {
        let url = self.queues.url(queue).await?;
        let content_deduplication = if is_fifo(queue) {
            let wanted = [QueueAttributeName::ContentBasedDeduplication];
            let attributes = self.queues.attributes(&url, &wanted).await?;
            attributes
                .get(&QueueAttributeName::ContentBasedDeduplication)
                .is_some_and(|value| value == "true")
        } else {
            false
        };

        Ok(SqsTopic::new(
            self.client().clone(),
            queue,
            url,
            content_deduplication,
        ))
    }

    /// A subscriber's driver, for callers who want SQS-specific accessors.
    ///
    /// # Errors
    ///
    /// As [`Backend::subscriber`].
    pub async fn subscription(&self, queue: &str) -> Result<SqsSubscription> {
        let settings = self.queues.settings(queue).await?;
        let url = self.queues.url(queue).await?;

        debug!(
            queue,
            lease_s = settings.visibility.as_secs(),
            dead_letter = %settings.dead_letter,
            "subscriber opened"
        );
        Ok(SqsSubscription::new(
            self.queues.clone(),
            queue,
            url,
            settings.visibility,
            settings.dead_letter,
        ))
    }

    /// The attributes that make a queue FIFO, for names ending in `.fifo`, with
    /// content-based deduplication if this backend is configured so.
    fn kind_attributes(&self, name: &str) -> HashMap<QueueAttributeName, String> {
        let mut attributes = HashMap::new();
        if !is_fifo(name) {
            return attributes;
        }
        attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        // Only asked for when wanted: CreateQueue on an existing queue fails when an
        // attribute it names differs, and off is SQS's default anyway.
        if self.content_based_deduplication {
            let name = QueueAttributeName::ContentBasedDeduplication;
            attributes.insert(name, "true".to_owned());
        }
        attributes
    }

    async fn create_dead_letter_queue(&self, name: &str) -> Result<String> {
        let url = self.queues.create(name, self.kind_attributes(name)).await?;
        let retention = HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            MAX_RETENTION.as_secs().to_string(),
        )]);
        self.queues.set_attributes(&url, retention).await?;

        let wanted = [QueueAttributeName::QueueArn];
        let attributes = self.queues.attributes(&url, &wanted).await?;
        Ok(attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl Backend for SqsBackend {
    /// What a standard queue offers. A FIFO queue (a name ending in `.fifo`) adds
    /// ordering and deduplication and drops delayed publish; its publishers and
    /// subscribers report that in their own capabilities.
    fn capabilities(&self) -> Capabilities {
        limits::standard()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        self.queues
            .create(topic, self.kind_attributes(topic))
            .await?;
        Ok(())
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        check_spec(spec)?;
        let dead_letter = queue::dead_letter_name(spec)?;

        let dead_letter_arn = self.create_dead_letter_queue(&dead_letter).await?;
        let url = self
            .queues
            .create(&spec.name, self.kind_attributes(&spec.name))
            .await?;

        let mut attributes = HashMap::from([(
            QueueAttributeName::VisibilityTimeout,
            whole_seconds(spec.lease).to_string(),
        )]);
        if let Some(attempts) = spec.max_delivery_attempts {
            let policy = queue::redrive_policy(&dead_letter_arn, attempts);
            attributes.insert(QueueAttributeName::RedrivePolicy, policy);
        }
        self.queues.set_attributes(&url, attributes).await?;
        self.queues.tag_dead_letter(&url, &dead_letter).await?;

        debug!(
            queue = %spec.name,
            %dead_letter,
            max_receives = ?spec.max_delivery_attempts,
            "subscription configured"
        );
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        Ok(Publisher::new(self.topic(topic).await?))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        Ok(Subscriber::new(self.subscription(subscription).await?))
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let settings = self.queues.settings(subscription).await?;

        self.subscriber(&settings.dead_letter).await
    }

    /// Deletes the queue and its dead-letter queue; queues already gone count as
    /// deleted.
    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        let dead_letter = match self.queues.settings(subscription).await {
            Ok(settings) => settings.dead_letter,
            Err(e) if e.kind() == wharf_core::ErrorKind::NotFound => {
                queue::default_dead_letter_name(subscription)
            }
            Err(e) => return Err(e),
        };

        self.queues.delete(&dead_letter).await?;
        self.queues.delete(subscription).await
    }

    /// Deletes the queue; a queue already gone counts as deleted.
    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.queues.delete(topic).await
    }

    /// Approximate counts from the queue attributes; see the crate's
    /// [operating queues](crate#operating-queues) notes.
    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        self.queue_stats(subscription).await
    }

    /// Receives and releases dead letters, which raises their receive count.
    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        self.peek(subscription, max).await
    }

    /// `PurgeQueue` on the dead-letter queue, which does not say how many it deleted.
    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        self.purge(subscription).await
    }

    /// A publisher on the subscription's queue, which is its topic's queue.
    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        self.publisher(subscription).await
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        self.check(expected).await
    }
}

fn check_spec(spec: &SubscriptionSpec) -> Result<()> {
    if spec.name != spec.topic {
        return Err(Error::unsupported(
            "sqs",
            "subscriptions named apart from their topic: an SQS queue is both, so name the \
             subscription like the topic's queue",
        ));
    }
    if spec.ordered && !is_fifo(&spec.name) {
        return Err(Error::unsupported(
            "sqs",
            "ordered delivery on a standard queue; use a FIFO queue, whose name ends in .fifo",
        ));
    }

    limits::standard().check_lease(spec.lease)?;
    match spec.max_delivery_attempts {
        Some(attempts) if !(1..=MAX_RECEIVE_COUNT).contains(&attempts) => {
            Err(Error::invalid(format!(
                "max_delivery_attempts of {attempts} is outside SQS's redrive range of 1 to \
                 {MAX_RECEIVE_COUNT}"
            )))
        }
        _ => Ok(()),
    }
}

impl fmt::Debug for SqsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.client().config();
        f.debug_struct("SqsBackend")
            .field("region", &config.region().map(|r| r.as_ref()))
            .field(
                "content_based_deduplication",
                &self.content_based_deduplication,
            )
            .finish_non_exhaustive()
    }
}
