//! [`Connection`]: a backend opened from [`Settings`], with the topic, subscription and
//! worker settings they name, so an application reads all of it from configuration.

use std::sync::Arc;

use wharf_core::{
    Backend, Capabilities, Error, ErrorKind, Publisher, Result, Subscriber, SubscriptionSpec,
    Worker,
};

use crate::Settings;

/// A backend opened from [`Settings`].
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use wharf::{Connection, Message, Settings};
///
/// let settings = Settings::from_url(
///     "mem://docs?topic=orders&subscription=billing&create_if_missing=true&max_attempts=3",
/// )?;
/// let connection = Connection::open(settings).await?;
///
/// connection.publisher().await?.publish(Message::new("order #1")).await?;
/// let delivery = connection.subscriber().await?.receive_one(Duration::from_secs(1)).await?;
/// assert_eq!(delivery.expect("a delivery").payload().as_ref(), b"order #1");
///
/// // Or run a worker with the settings' concurrency, lease and retry policy:
/// let _worker = connection.worker().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Connection {
    backend: Arc<dyn Backend>,
    settings: Settings,
}

impl Connection {
    /// Connects to the backend the settings' URL names and, with `create_if_missing`,
    /// creates the topic and the subscription (with its dead-letter destination).
    ///
    /// # Errors
    ///
    /// As [`connect`](crate::connect()); with `create_if_missing`, the backend's error
    /// if the topic or subscription cannot be created, and
    /// [`Config`](ErrorKind::Config) if the settings name no topic.
    pub async fn open(settings: Settings) -> Result<Self> {
        let backend = crate::connect(&settings.url).await?;
        let connection = Self { backend, settings };

        if connection.settings.create_if_missing {
            connection.create().await?;
        }
        Ok(connection)
    }

    /// The backend, for anything the settings do not name.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// What the opened backend offers.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// The settings this connection was opened with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A publisher on the settings' topic.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) if the settings name no topic; the backend's error
    /// (such as [`NotFound`](ErrorKind::NotFound)) if it cannot be opened.
    pub async fn publisher(&self) -> Result<Publisher> {
        self.backend.publisher(self.topic()?).await
    }

    /// A subscriber on the settings' subscription.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) if the settings name no subscription; the backend's
    /// error if it cannot be opened.
    pub async fn subscriber(&self) -> Result<Subscriber> {
        self.backend.subscriber(self.subscription()?).await
    }

    /// A worker on the settings' subscription with their concurrency, lease and retry
    /// policy.
    ///
    /// # Errors
    ///
    /// As [`Connection::subscriber`].
    pub async fn worker(&self) -> Result<Worker> {
        let subscriber = self.subscriber().await?;

        Ok(Worker::new(subscriber).options(self.settings.worker_options()))
    }

    /// The subscription as the settings describe it: topic, name, lease and
    /// dead-letter destination.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) if the settings name no topic or no subscription.
    pub fn subscription_spec(&self) -> Result<SubscriptionSpec> {
        let mut spec =
            SubscriptionSpec::new(self.topic()?, self.subscription()?).lease(self.settings.lease);
        spec.dead_letter = self.settings.dead_letter.clone();
        Ok(spec)
    }

    async fn create(&self) -> Result<()> {
        self.backend.create_topic(self.topic()?).await?;

        if self.settings.subscription.is_some() {
            self.backend
                .create_subscription(&self.subscription_spec()?)
                .await?;
        }
        Ok(())
    }

    fn topic(&self) -> Result<&str> {
        self.settings
            .topic
            .as_deref()
            .ok_or_else(|| missing("topic", "WHARF_TOPIC", "topic"))
    }

    /// The subscription: the one named, or on a backend without fan-out (where a
    /// subscription is its topic's queue) the topic, whatever name was asked for.
    fn subscription(&self) -> Result<&str> {
        let caps = self.capabilities();
        match (&self.settings.subscription, self.topic()) {
            (Some(wanted), Ok(topic)) => Ok(caps.subscription_name(topic, wanted)),
            (Some(wanted), Err(_)) => Ok(wanted),
            (None, topic) if !caps.fan_out => topic,
            (None, _) => Err(missing(
                "subscription",
                "WHARF_SUBSCRIPTION",
                "subscription",
            )),
        }
    }
}

fn missing(key: &str, variable: &str, query: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the wharf settings name no {key}: set `{key}` in the TOML file, {variable} in \
             the environment, or `?{query}=NAME` on the backend URL"
        ),
    )
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use wharf_core::Message;

    use super::*;

    #[tokio::test]
    async fn settings_create_the_queues_and_shape_the_worker() {
        let settings = Settings::from_url(
            "mem://open-tests?topic=orders&subscription=billing&create_if_missing=true\
             &concurrency=3&lease=45s&max_attempts=4&dead_letter=billing-failed",
        )
        .unwrap();

        let connection = Connection::open(settings).await.unwrap();
        connection
            .publisher()
            .await
            .unwrap()
            .publish(Message::new("m"))
            .await
            .unwrap();
        let subscriber = connection.subscriber().await.unwrap();
        let delivery = subscriber
            .receive_one(Duration::from_secs(1))
            .await
            .unwrap();

        assert!(
            delivery.is_some(),
            "the subscription was created on the topic"
        );
        let spec = connection.subscription_spec().unwrap();
        assert_eq!(spec.lease, Duration::from_secs(45));
        assert_eq!(spec.dead_letter_name(), "billing-failed");
        let options = connection.settings().worker_options();
        assert_eq!((options.concurrency, options.retry.attempts()), (3, 4));
    }

    #[tokio::test]
    async fn a_missing_name_says_where_to_set_it() {
        let settings = Settings::from_url("mem://open-tests-missing?topic=orders").unwrap();
        let connection = Connection::open(settings).await.unwrap();

        let error = connection
            .subscriber()
            .await
            .expect_err("no subscription named");

        assert_eq!(error.kind(), ErrorKind::Config);
        for place in ["`subscription`", "WHARF_SUBSCRIPTION", "?subscription="] {
            assert!(error.to_string().contains(place), "{error} lacks {place}");
        }
    }

    #[tokio::test]
    async fn without_create_if_missing_nothing_is_created() {
        let settings = Settings::from_url("mem://open-tests-none?topic=orders").unwrap();
        let connection = Connection::open(settings).await.unwrap();

        let error = connection.publisher().await.expect_err("no topic created");

        assert_eq!(error.kind(), ErrorKind::NotFound);
    }
}
