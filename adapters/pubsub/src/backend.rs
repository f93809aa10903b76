//! [`PubSubBackend`]: creates topics and subscriptions and opens publishers and
//! subscribers on them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gcloud_gax::conn::Environment;
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::client::{Client as PullClient, ClientConfig as PullConfig};
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{
    BasePublisher, Publisher as NativePublisher, SubscriptionAdmin, TopicAdmin,
};
use google_cloud_pubsub::model::{
    DeadLetterPolicy, ExpirationPolicy, Subscription as NativeSubscription,
};
use tracing::debug;
use wharf_core::{
    Backend, Capabilities, Error, ErrorKind, Expectations, Figure, Finding, Publisher, Received,
    Result, Subscriber, SubscriptionSpec, SubscriptionStats,
};

use crate::attempts::AttemptCounter;
use crate::capabilities::{
    BACKEND, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_DELIVERY_ATTEMPTS, MIN_DELIVERY_ATTEMPTS,
    MIN_LEASE, capabilities,
};
use crate::config::PubSubConfig;
use crate::error::{Operation, from_native};
use crate::names::{check_id, short_id, subscription_path, topic_path};
use crate::on_demand::OnDemandStream;
use crate::stream::{StreamSettings, whole_seconds};
use crate::subscription::{DeadLetterTopic, PubSubSubscription};
use crate::topic::PubSubTopic;

/// Points one of Google's client builders at the emulator with anonymous credentials,
/// or leaves the service's endpoint and application-default credentials.
macro_rules! reach {
    ($builder:expr, $config:expr) => {
        match $config.endpoint() {
            Some(endpoint) => $builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build()),
            None => $builder,
        }
    };
}

/// The subscription label that records a dead-letter destination chosen by name, for
/// subscriptions without a dead-letter policy to record it.
pub const DEAD_LETTER_LABEL: &str = "wharf-dead-letter";

/// Longest label value. Source: Pub/Sub resource labels, "values can be up to 63
/// characters".
const MAX_LABEL_CHARS: usize = 63;

/// The Pub/Sub backend: Google's client for administration and publishing, a streaming
/// pull per subscriber for receiving.
///
/// Cheap to clone; clones share connections, publishers and attempt counts.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use wharf_core::{Backend, Message, SubscriptionSpec};
/// use wharf_pubsub::{PubSubBackend, PubSubConfig};
///
/// let backend = PubSubBackend::connect(PubSubConfig::new("my-project")).await?;
/// backend.create_topic("orders").await?;
/// backend
///     .create_subscription(&SubscriptionSpec::new("orders", "billing").max_delivery_attempts(5))
///     .await?;
/// backend.publisher("orders").await?.publish(Message::new("order #1")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PubSubBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: PubSubConfig,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    base_publisher: BasePublisher,
    pull: PullClient,
    streams: Arc<ConnectionManager>,
    publishers: Mutex<HashMap<String, NativePublisher>>,
    attempts: Mutex<HashMap<String, Arc<AttemptCounter>>>,
}

impl PubSubBackend {
    /// Connects to the emulator named in `config`, or to Google Cloud with
    /// application-default credentials.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid config or missing credentials,
    /// [`Unavailable`](ErrorKind::Unavailable) if the endpoint cannot be reached.
    pub async fn connect(config: PubSubConfig) -> Result<Self> {
        config.validate()?;

        let topics = reach!(TopicAdmin::builder(), config).build().await;
        let topics = topics.map_err(|e| client_error("topic admin", e))?;
        let subscriptions = reach!(SubscriptionAdmin::builder(), config).build().await;
        let subscriptions = subscriptions.map_err(|e| client_error("subscription admin", e))?;
        let base_publisher = reach!(BasePublisher::builder(), config).build().await;
        let base_publisher = base_publisher.map_err(|e| client_error("publisher", e))?;
        let (pull, streams) = pull_client(&config).await?;

        debug!(project = %config.project, emulator = ?config.emulator, "connected");
        let inner = Inner {
            config,
            topics,
            subscriptions,
            base_publisher,
            pull,
            streams: Arc::new(streams),
            publishers: Mutex::default(),
            attempts: Mutex::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// A backend configured by a `pubsub://` URL; see [`PubSubConfig::from_url`].
    ///
    /// # Errors
    ///
    /// As [`PubSubConfig::from_url`] and [`PubSubBackend::connect`].
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(PubSubConfig::from_url(url)?).await
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &PubSubConfig {
        &self.inner.config
    }

    /// Lets publishes on `ordering_key` to `topic` through again after a failed
    /// publish paused the key (they fail with [`OrderingKeyPaused`](crate::OrderingKeyPaused)
    /// as source until then). Does nothing if the key is not paused.
    ///
    /// A paused key keeps later messages from overtaking the one that failed: resume it
    /// once that message has been published again or given up.
    pub fn resume_publish(&self, topic: &str, ordering_key: &str) {
        let publishers = self
            .inner
            .publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(publisher) = publishers.get(topic) {
            publisher.resume_publish(ordering_key);
        }
    }

    /// Google's publisher for `topic`, the same one wharf's publishers on the topic use
    /// (so pausing and resuming ordering keys is shared).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](ErrorKind::InvalidArgument) for an invalid topic id.
    pub fn native_publisher(&self, topic: &str) -> Result<NativePublisher> {
        check_id("topic", topic)?;
        let mut publishers = self
            .inner
            .publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner());

        let publisher = publishers.entry(topic.to_owned()).or_insert_with(|| {
            self.inner
                .base_publisher
                .publisher(topic_path(&self.inner.config.project, topic))
                .set_message_count_threshold(MAX_BATCH_MESSAGES as u32)
                .set_byte_threshold(MAX_BATCH_BYTES as u32)
                .set_delay_threshold(self.inner.config.publish_delay)
                .build()
        });
        Ok(publisher.clone())
    }

    /// Google's topic administration client.
    pub fn topic_admin(&self) -> &TopicAdmin {
        &self.inner.topics
    }

    /// Google's subscription administration client.
    pub fn subscription_admin(&self) -> &SubscriptionAdmin {
        &self.inner.subscriptions
    }

    /// The `gcloud-pubsub` client that runs the streaming pulls and settles messages.
    pub fn pull_client(&self) -> &PullClient {
        &self.inner.pull
    }

    fn project(&self) -> &str {
        &self.inner.config.project
    }

    fn attempts(&self, subscription: &str) -> Arc<AttemptCounter> {
        let mut counters = self
            .inner
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counters.entry(subscription.to_owned()).or_default().clone()
    }

    async fn create_topic_if_missing(&self, topic: &str) -> Result<()> {
        check_id("topic", topic)?;
        let created = self
            .inner
            .topics
            .create_topic()
            .set_name(topic_path(self.project(), topic))
            .send()
            .await;

        ignore_existing(created.map(drop), &format!("creating topic {topic}"))
    }

    async fn create_subscription_if_missing(
        &self,
        spec: &SubscriptionSpec,
        name: &str,
        topic: &str,
        with_policy: bool,
    ) -> Result<()> {
        let dead_letter = spec.dead_letter_name();
        let mut request = self
            .inner
            .subscriptions
            .create_subscription()
            .set_name(subscription_path(self.project(), name))
            .set_topic(topic_path(self.project(), topic))
            .set_ack_deadline_seconds(whole_seconds(spec.lease))
            .set_enable_message_ordering(spec.ordered)
            // Pub/Sub deletes a subscription after 31 days without a reader by default,
            // and its messages with it: a queue, and above all a dead-letter one, must
            // not vanish while nobody looks. No ttl means never.
            .set_expiration_policy(ExpirationPolicy::new());

        if with_policy && let Some(attempts) = spec.max_delivery_attempts {
            let policy = DeadLetterPolicy::new()
                .set_dead_letter_topic(topic_path(self.project(), &dead_letter))
                .set_max_delivery_attempts(attempts as i32);
            request = request.set_dead_letter_policy(policy);
        }
        if with_policy && dead_letter != default_dead_letter(name) {
            request = request.set_labels([(DEAD_LETTER_LABEL, dead_letter.as_str())]);
        }

        ignore_existing(
            request.send().await.map(drop),
            &format!("creating subscription {name}"),
        )
    }

    pub(crate) async fn get_subscription(&self, subscription: &str) -> Result<NativeSubscription> {
        check_id("subscription", subscription)?;
        self.inner
            .subscriptions
            .get_subscription()
            .set_subscription(subscription_path(self.project(), subscription))
            .send()
            .await
            .map_err(|e| from_native(e, Operation::Admin, &format!("reading {subscription}")))
    }

    async fn open_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let found = self.get_subscription(subscription).await?;
        let dead_letter = dead_letter_of(&found, subscription);
        let path = subscription_path(self.project(), subscription);

        let client = self.inner.pull.subscription(subscription).get_client();
        let settings = StreamSettings {
            subscription_path: path.clone(),
            lease: Duration::from_secs(u64::try_from(found.ack_deadline_seconds).unwrap_or(0))
                .max(MIN_LEASE),
            max_outstanding_messages: self.inner.config.max_outstanding_messages,
            max_outstanding_bytes: self.inner.config.max_outstanding_bytes,
            client_id: uuid::Uuid::new_v4().to_string(),
        };
        let stream = OnDemandStream::new(
            self.inner.streams.clone(),
            client.clone(),
            settings,
            self.inner.config.idle_release,
        );
        let dead_letters = DeadLetterTopic {
            publisher: self.native_publisher(&dead_letter)?,
            topic: dead_letter,
        };

        let driver = PubSubSubscription::new(
            subscription.to_owned(),
            path,
            client,
            stream,
            self.attempts(subscription),
            dead_letters,
        );
        Ok(Subscriber::new(driver))
    }

    async fn delete_one_subscription(&self, subscription: &str) -> Result<()> {
        let deleted = self
            .inner
            .subscriptions
            .delete_subscription()
            .set_subscription(subscription_path(self.project(), subscription))
            .send()
            .await;

        deleted.map_err(|e| from_native(e, Operation::Admin, &format!("deleting {subscription}")))
    }

    async fn delete_one_topic(&self, topic: &str) -> Result<()> {
        let deleted = self
            .inner
            .topics
            .delete_topic()
            .set_topic(topic_path(self.project(), topic))
            .send()
            .await;

        // The topic's publisher stays cached: its paused ordering keys stay paused until
        // resumed, also if a topic of the same name is created again.
        deleted.map_err(|e| from_native(e, Operation::Admin, &format!("deleting topic {topic}")))
    }
}

#[async_trait]
impl Backend for PubSubBackend {
    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        self.create_topic_if_missing(topic).await
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        check_spec(spec)?;
        let dead_letter = spec.dead_letter_name();

        // The dead-letter topic must exist before a policy can name it.
        self.create_topic_if_missing(&dead_letter).await?;
        let dead_letter_spec = SubscriptionSpec::new(&dead_letter, &dead_letter).lease(spec.lease);
        self.create_subscription_if_missing(&dead_letter_spec, &dead_letter, &dead_letter, false)
            .await?;

        self.create_subscription_if_missing(spec, &spec.name, &spec.topic, true)
            .await
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        check_id("topic", topic)?;
        // Fail here rather than on the first publish if the topic is missing.
        self.inner
            .topics
            .get_topic()
            .set_topic(topic_path(self.project(), topic))
            .send()
            .await
            .map_err(|e| from_native(e, Operation::Admin, &format!("opening topic {topic}")))?;

        let native = self.native_publisher(topic)?;
        Ok(Publisher::new(PubSubTopic::new(topic.to_owned(), native)))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        self.open_subscriber(subscription).await
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let found = self.get_subscription(subscription).await?;

        self.open_subscriber(&dead_letter_of(&found, subscription))
            .await
    }

    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        let found = self.get_subscription(subscription).await?;
        let dead_letter = dead_letter_of(&found, subscription);

        self.delete_one_subscription(subscription).await?;
        ignore_missing(self.delete_one_subscription(&dead_letter).await)?;
        ignore_missing(self.delete_one_topic(&dead_letter).await)
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_id("topic", topic)?;
        self.delete_one_topic(topic).await
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
        self.redrive_target(subscription).await
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        self.check(expected).await
    }
}

impl fmt::Debug for PubSubBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubBackend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn check_spec(spec: &SubscriptionSpec) -> Result<()> {
    check_id("topic", &spec.topic)?;
    check_id("subscription", &spec.name)?;
    check_id("dead-letter topic", &spec.dead_letter_name())?;
    capabilities().check_lease(spec.lease)?;

    if let Some(attempts) = spec.max_delivery_attempts
        && !(MIN_DELIVERY_ATTEMPTS..=MAX_DELIVERY_ATTEMPTS).contains(&attempts)
    {
        return Err(Error::invalid(format!(
            "max_delivery_attempts of {attempts} is outside Pub/Sub's range of \
             {MIN_DELIVERY_ATTEMPTS} to {MAX_DELIVERY_ATTEMPTS}"
        )));
    }

    let dead_letter = spec.dead_letter_name();
    if dead_letter != default_dead_letter(&spec.name) && !label_safe(&dead_letter) {
        return Err(Error::invalid(format!(
            "dead-letter name `{dead_letter}` cannot be recorded on the subscription: \
             use lowercase letters, digits, - and _ (at most {MAX_LABEL_CHARS}), or the \
             default `{}`",
            default_dead_letter(&spec.name)
        )));
    }
    Ok(())
}

/// The dead-letter topic of a subscription: its dead-letter policy's topic, else the
/// name recorded in its label, else `<subscription>-dlq`. The dead-letter subscription
/// has the topic's name.
pub(crate) fn dead_letter_of(found: &NativeSubscription, subscription: &str) -> String {
    if let Some(policy) = &found.dead_letter_policy
        && !policy.dead_letter_topic.is_empty()
    {
        return short_id(&policy.dead_letter_topic).to_owned();
    }
    found
        .labels
        .get(DEAD_LETTER_LABEL)
        .cloned()
        .unwrap_or_else(|| default_dead_letter(subscription))
}

fn default_dead_letter(subscription: &str) -> String {
    SubscriptionSpec::new("", subscription).dead_letter_name()
}

/// Label values: lowercase letters, digits, `-` and `_`. Source: Pub/Sub resource labels.
fn label_safe(value: &str) -> bool {
    value.len() <= MAX_LABEL_CHARS
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn ignore_existing(result: google_cloud_pubsub::Result<()>, what: &str) -> Result<()> {
    match result.map_err(|e| from_native(e, Operation::Admin, what)) {
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn ignore_missing(result: Result<()>) -> Result<()> {
    match result {
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Where Google's clients look for application-default credentials, named when
/// building a client fails without them.
const CREDENTIAL_SOURCES: &str = "GOOGLE_APPLICATION_CREDENTIALS (a key or credentials \
    file), gcloud's ~/.config/gcloud/application_default_credentials.json (written by \
    `gcloud auth application-default login`), then the metadata server of Google Cloud; \
    for the emulator set PUBSUB_EMULATOR_HOST or ?emulator=HOST:PORT instead";

fn client_error(which: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "could not build the Pub/Sub {which} client: {error}; credentials are looked \
             for in {CREDENTIAL_SOURCES}"
        ),
    )
    .with_source(error)
}

/// The `gcloud-pubsub` client, and the connections the streaming pulls run on. The
/// streams get their own connections, as in that client, so that a full stream never
/// holds up an ack.
async fn pull_client(config: &PubSubConfig) -> Result<(PullClient, ConnectionManager)> {
    let mut pull_config = PullConfig {
        project_id: Some(config.project.clone()),
        ..PullConfig::default()
    };
    match &config.emulator {
        Some(host) => pull_config.environment = Environment::Emulator(host.clone()),
        None => {
            pull_config = pull_config.with_auth().await.map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "no application-default credentials for Pub/Sub: {e}; looked in \
                         {CREDENTIAL_SOURCES}"
                    ),
                )
                .with_source(e)
            })?;
        }
    }

    let streams = ConnectionManager::new(
        pull_config.pool_size,
        &pull_config.endpoint,
        &pull_config.environment,
        &pull_config.connection_option,
    )
    .await
    .map_err(unreachable)?;
    let client = PullClient::new(pull_config).await.map_err(unreachable)?;
    Ok((client, streams))
}

fn unreachable(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("cannot reach Pub/Sub for {BACKEND}: {error}"),
    )
    .with_source(error)
}
