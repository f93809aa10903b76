//! [`RabbitMq`]: wharf's [`Backend`] on one RabbitMQ virtual host.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lapin::{Channel, Connection};
use wharf_core::{
    Backend, Capabilities, Error, Expectations, Figure, Finding, Publisher, Received, Result,
    Subscriber, SubscriptionSpec, SubscriptionStats,
};

use crate::config::{QueueType, RabbitMqConfig};
use crate::limits::capabilities;
use crate::link::Link;
use crate::operations::Management;
use crate::publish::RabbitMqPublisher;
use crate::subscribe::{RabbitMqSubscriber, Source};
use crate::topology::{self, check_name};

/// The RabbitMQ backend: one shared connection, re-established after failures, on
/// which every publisher, subscriber and topology call opens its own channel.
///
/// Cheap to clone; clones share the connection.
///
/// ```no_run
/// # async fn example() -> wharf_core::Result<()> {
/// use wharf_core::{Backend, Message, SubscriptionSpec};
/// use wharf_rabbitmq::RabbitMq;
///
/// let backend = RabbitMq::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// backend.create_topic("orders").await?;
/// backend.create_subscription(&SubscriptionSpec::new("orders", "billing")).await?;
/// let publisher = backend.publisher("orders").await?;
/// publisher.publish(Message::new("order #1")).await.map_err(|e| e.error)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMq {
    inner: Arc<Inner>,
}

struct Inner {
    link: Arc<Link>,
    caps: Capabilities,
    /// What the specs of subscriptions this process created say, by subscription.
    created: Mutex<HashMap<String, Created>>,
    /// The management plugin's HTTP API, for figures and checks AMQP cannot give.
    management: Management,
}

/// What a dead-letter subscriber needs from the spec its subscription was created with.
#[derive(Clone)]
pub(crate) struct Created {
    /// The dead-letter queue's name.
    pub(crate) dead_letters: String,
    /// The spec's `max_delivery_attempts`, which the queue's delivery limit enforces.
    pub(crate) max_attempts: Option<u32>,
}

impl RabbitMq {
    /// Connects to the broker at `url` with the default configuration.
    ///
    /// # Errors
    ///
    /// [`Config`](wharf_core::ErrorKind::Config) for a malformed URL;
    /// [`Unavailable`](wharf_core::ErrorKind::Unavailable) or
    /// [`PermissionDenied`](wharf_core::ErrorKind::PermissionDenied) if the broker cannot
    /// be reached or refuses the credentials.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RabbitMqConfig::new(url)).await
    }

    /// Connects as an `amqp://` or `amqps://` URL with query options says; see
    /// [`RabbitMqConfig::from_url`] and the crate's [URL section](crate#url).
    ///
    /// ```no_run
    /// # async fn example() -> wharf_core::Result<()> {
    /// use wharf_rabbitmq::RabbitMq;
    ///
    /// let url = "amqp://guest:guest@127.0.0.1:5672/%2f?prefetch=32&queue_type=quorum";
    /// let backend = RabbitMq::from_url(url).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Config`](wharf_core::ErrorKind::Config) for a malformed URL, an unknown option
    /// or a bad value; otherwise as [`connect`](Self::connect).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::with_config(RabbitMqConfig::from_url(url)?).await
    }

    /// Connects with `config`, failing fast if the broker cannot be reached now.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Config`](wharf_core::ErrorKind::Config) for
    /// a setting out of range.
    pub async fn with_config(config: RabbitMqConfig) -> Result<Self> {
        config.validate()?;
        let caps = capabilities(config.queue_type);
        let management = Management::new(&config);
        let link = Arc::new(Link::new(config));

        link.connection().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                link,
                caps,
                created: Mutex::default(),
                management,
            }),
        })
    }

    /// The configuration this backend runs with.
    pub fn config(&self) -> &RabbitMqConfig {
        self.inner.link.config()
    }

    /// The underlying lapin connection, reconnecting first if it died, for what wharf
    /// does not cover (exchange-to-exchange bindings, policies, streams).
    ///
    /// # Errors
    ///
    /// [`Unavailable`](wharf_core::ErrorKind::Unavailable) while the broker is
    /// unreachable.
    pub async fn connection(&self) -> Result<Arc<Connection>> {
        self.inner.link.connection().await
    }

    /// A new lapin channel on the shared connection; closing it is up to the caller.
    ///
    /// # Errors
    ///
    /// As [`connection`](Self::connection).
    pub async fn channel(&self) -> Result<Channel> {
        self.inner.link.channel().await
    }

    /// Closes the shared connection. Publishers and subscribers opened from this
    /// backend fail with [`Closed`](wharf_core::ErrorKind::Closed) afterwards.
    ///
    /// # Errors
    ///
    /// The broker's error if the connection could not be closed cleanly.
    pub async fn close(&self) -> Result<()> {
        self.inner.link.close().await
    }

    fn queue_type(&self) -> QueueType {
        self.config().queue_type
    }

    /// What `subscription` was created with: by this process, or else the defaults.
    pub(crate) fn created(&self, subscription: &str) -> Created {
        let created = self.created_lock().get(subscription).cloned();
        created.unwrap_or_else(|| Created {
            dead_letters: SubscriptionSpec::new("", subscription).dead_letter_name(),
            max_attempts: None,
        })
    }

    /// The shared connection, for drivers the operations create.
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.inner.link
    }

    /// The management API of the broker, in the backend's virtual host.
    pub(crate) fn management(&self) -> &Management {
        &self.inner.management
    }

    fn created_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Created>> {
        self.inner.created.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_spec(&self, spec: &SubscriptionSpec) -> Result<()> {
        check_name("topic", &spec.topic)?;
        check_name("subscription", &spec.name)?;
        check_name("dead-letter queue", &spec.dead_letter_name())?;

        if spec.max_delivery_attempts == Some(0) {
            return Err(Error::invalid(
                "max_delivery_attempts is 0; it must be at least 1",
            ));
        }
        if spec.max_delivery_attempts.is_some() && self.queue_type() == QueueType::Classic {
            return Err(Error::unsupported(
                "rabbitmq",
                "delivery limits on classic queues (use quorum queues)",
            ));
        }
        if spec.ordered {
            return Err(Error::unsupported("rabbitmq", "ordered subscriptions"));
        }
        Ok(())
    }

    fn source(&self, queue: String, dead_letter_exchange: Option<String>) -> Source {
        Source {
            queue,
            dead_letter_exchange,
            counted: self.queue_type() == QueueType::Quorum,
            delivery_limit: None,
        }
    }

    fn subscriber_on(&self, source: Source) -> Subscriber {
        let driver =
            RabbitMqSubscriber::start(source, self.inner.caps.clone(), self.inner.link.clone());
        Subscriber::new(driver)
    }
}

/// Closes a channel used for one topology call. A channel a failed call already closed
/// has nothing left to release.
pub(crate) async fn done(channel: Channel) {
    let _ = channel.close(200, "done".into()).await;
}

#[async_trait]
impl Backend for RabbitMq {
    fn capabilities(&self) -> Capabilities {
        self.inner.caps.clone()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        check_name("topic", topic)?;
        let channel = self.channel().await?;

        let declared = topology::declare_topic(&channel, topic, self.config().topic_kind).await;
        done(channel).await;
        declared
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.check_spec(spec)?;
        let channel = self.channel().await?;

        let declared = async {
            topology::check_topic(&channel, &spec.topic).await?;
            let config = self.config();
            topology::declare_subscription(&channel, spec, config.queue_type, config.topic_kind)
                .await
        }
        .await;
        done(channel).await;

        declared?;
        let created = Created {
            dead_letters: spec.dead_letter_name(),
            max_attempts: spec.max_delivery_attempts,
        };
        self.created_lock().insert(spec.name.clone(), created);
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        check_name("topic", topic)?;
        let channel = self.channel().await?;

        let found = topology::check_topic(&channel, topic).await;
        done(channel).await;
        found?;

        let driver = RabbitMqPublisher::new(
            topic.to_owned(),
            self.inner.caps.clone(),
            self.inner.link.clone(),
        );
        Ok(Publisher::new(driver))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        check_name("subscription", subscription)?;
        let channel = self.channel().await?;

        let found = topology::check_queue(&channel, subscription).await;
        done(channel).await;
        found?;

        let dlx = topology::dead_letter_exchange(subscription);
        Ok(self.subscriber_on(self.source(subscription.to_owned(), Some(dlx))))
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        check_name("subscription", subscription)?;
        let created = self.created(subscription);
        let channel = self.channel().await?;

        let found = topology::check_queue(&channel, &created.dead_letters).await;
        done(channel).await;
        found?;

        let source = Source {
            delivery_limit: created.max_attempts,
            ..self.source(created.dead_letters, None)
        };
        Ok(self.subscriber_on(source))
    }

    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        check_name("subscription", subscription)?;
        let dead_letters = self.created(subscription).dead_letters;
        let channel = self.channel().await?;

        let deleted = async {
            topology::delete_queue(&channel, subscription).await?;
            topology::delete_queue(&channel, &dead_letters).await?;
            topology::delete_exchange(&channel, &topology::dead_letter_exchange(subscription)).await
        }
        .await;
        done(channel).await;

        deleted?;
        self.created_lock().remove(subscription);
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_name("topic", topic)?;
        let channel = self.channel().await?;

        let deleted = topology::delete_exchange(&channel, topic).await;
        done(channel).await;
        deleted
    }

    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        self.subscription_stats(subscription).await
    }

    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        self.peek(subscription, max).await
    }

    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        self.purge(subscription).await
    }

    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        self.queue_publisher(subscription).await
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        self.check(expected).await
    }
}

impl fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMq")
            .field("config", self.config())
            .finish_non_exhaustive()
    }
}
