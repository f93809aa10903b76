//! [`KafkaBackend`]: creates topics and subscriptions and opens publishers and
//! subscribers on one Kafka cluster.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::producer::FutureProducer;
use tracing::{debug, warn};
use wharf_core::{
    Backend, Capabilities, Error, ErrorKind, Expectations, Figure, Finding, Publisher, Received,
    Result, Subscriber, SubscriptionSpec, SubscriptionStats,
};

use crate::admin::{Admin, TopicSpec, check_topic_name};
use crate::config::KafkaConfig;
use crate::producer::{KafkaTopic, LogContext, SharedProducer, WatchContext};
use crate::registry::{Registration, Registry};
use crate::subscription::{KafkaSubscription, Layout};

/// The suffix of a subscription's retry topic.
const RETRY_SUFFIX: &str = "-retry";

/// One Kafka cluster as a wharf backend. Cheap to clone; clones share the producer and
/// admin client.
#[derive(Clone)]
pub struct KafkaBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    producer: SharedProducer,
    admin: Admin,
    registry: Registry,
}

impl KafkaBackend {
    /// Builds the clients and checks that the brokers answer.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a property librdkafka or wharf refuses (naming
    /// the key, never the value), [`Unavailable`](ErrorKind::Unavailable) if no broker
    /// answers within the operation timeout.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let producer = SharedProducer::new(config.producer())?;
        let admin = Admin::new(&config)?;

        admin.ping().await?;
        debug!(brokers = %config.brokers, "connected to Kafka");
        let registry = Registry::new(&config);
        let inner = Inner {
            config,
            producer,
            admin,
            registry,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Connects with the configuration a `kafka://` URL describes; see
    /// [`KafkaConfig::from_url`] and the crate's `# URL` section.
    ///
    /// # Errors
    ///
    /// As [`KafkaConfig::from_url`], then as [`connect`](Self::connect).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }

    /// The configuration this backend was built from.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The rdkafka producer every publisher and subscription of this backend shares, as
    /// it is now: a producer that lost every broker is replaced, and a handle taken before
    /// that no longer reaches the broker.
    pub fn producer(&self) -> FutureProducer<WatchContext> {
        self.inner.producer.current()
    }

    /// The rdkafka admin client.
    pub fn admin(&self) -> &AdminClient<LogContext> {
        self.inner.admin.native()
    }

    /// Opens the subscription driver itself, for access beyond a `Subscriber`.
    ///
    /// # Errors
    ///
    /// As [`Backend::subscriber`].
    pub async fn subscription(&self, subscription: &str) -> Result<KafkaSubscription> {
        let registration = self.registration(subscription).await?;
        let layout = Layout {
            name: subscription.to_owned(),
            group: subscription.to_owned(),
            topics: vec![registration.topic, retry_topic(subscription)],
            retry_topic: retry_topic(subscription),
            dead_letter_topic: Some(registration.dead_letter),
        };
        KafkaSubscription::start(&self.inner.config, self.inner.producer.clone(), layout)
    }

    async fn registration(&self, subscription: &str) -> Result<Registration> {
        check_topic_name(subscription)?;
        self.inner.registry.get(subscription).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("Kafka subscription `{subscription}` does not exist; create it first"),
            )
        })
    }
}

fn retry_topic(subscription: &str) -> String {
    format!("{subscription}{RETRY_SUFFIX}")
}

fn retry_spec(subscription: &str) -> TopicSpec {
    let retention = crate::RETRY_RETENTION.as_millis().to_string();
    TopicSpec {
        name: retry_topic(subscription),
        partitions: None,
        config: vec![("retention.ms", retention)],
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn capabilities(&self) -> Capabilities {
        crate::capabilities()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        check_topic_name(topic)?;

        self.inner
            .admin
            .create_topics(&[TopicSpec::plain(topic)])
            .await
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let dead_letter = spec.dead_letter_name();
        for name in [&spec.topic, &retry_topic(&spec.name), &dead_letter] {
            check_topic_name(name)?;
        }
        self.inner.admin.partitions(&spec.topic).await?;

        let topics = [retry_spec(&spec.name), TopicSpec::plain(&dead_letter)];
        self.inner.admin.create_topics(&topics).await?;
        let registration = Registration {
            topic: spec.topic.clone(),
            dead_letter,
            max_delivery_attempts: spec.max_delivery_attempts,
        };
        let inner = &self.inner;
        inner
            .registry
            .put(&inner.admin, &inner.producer, &spec.name, &registration)
            .await?;
        inner
            .admin
            .start_group_at_end(&spec.name, &spec.topic)
            .await
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        check_topic_name(topic)?;
        self.inner.admin.partitions(topic).await?;

        let patience = self.inner.config.operation_timeout;
        let driver = KafkaTopic::new(self.inner.producer.clone(), topic, patience);
        Ok(Publisher::new(driver))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        Ok(Subscriber::new(self.subscription(subscription).await?))
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let dead_letter = self.registration(subscription).await?.dead_letter;
        let layout = Layout {
            name: dead_letter.clone(),
            group: dead_letter.clone(),
            topics: vec![dead_letter.clone()],
            retry_topic: dead_letter.clone(),
            dead_letter_topic: None,
        };
        let driver =
            KafkaSubscription::start(&self.inner.config, self.inner.producer.clone(), layout)?;
        Ok(Subscriber::new(driver))
    }

    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        check_topic_name(subscription)?;
        let registered = self.inner.registry.get(subscription).await?;
        let dead_letter = registered.map_or_else(
            || SubscriptionSpec::new("", subscription).dead_letter_name(),
            |registration| registration.dead_letter,
        );

        let retry = retry_topic(subscription);
        self.inner
            .admin
            .delete_topics(&[&retry, &dead_letter])
            .await?;
        // A group with live members cannot be deleted; its offsets then expire with the
        // broker's `offsets.retention.minutes`, which loses nothing.
        if let Err(error) = self
            .inner
            .admin
            .delete_groups(&[subscription, &dead_letter])
            .await
        {
            warn!(%error, subscription, "consumer groups of a deleted subscription remain");
        }
        self.inner
            .registry
            .remove(&self.inner.producer, subscription)
            .await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_topic_name(topic)?;

        self.inner.admin.delete_topics(&[topic]).await
    }

    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        let registration = self.registration(subscription).await?;
        let retry = retry_topic(subscription);
        self.subscription_stats(subscription, &registration, &retry)
            .await
    }

    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        let registration = self.registration(subscription).await?;
        self.peek(&registration, max).await
    }

    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        let registration = self.registration(subscription).await?;
        self.purge(subscription, &registration).await
    }

    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        self.registration(subscription).await?;
        self.retry_publisher(subscription, &retry_topic(subscription))
            .await
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        let name = expected.subscription();
        let registered = self.inner.registry.get(name).await?;
        self.check(expected, registered, &retry_topic(name)).await
    }
}

impl fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}
