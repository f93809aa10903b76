//! [`RabbitMqConfig`]: where the broker is, how to log in, and how wharf lays out its
//! queues.
//!
//! The URL carries host, port, virtual host, TLS (`amqps://`) and, optionally, the
//! credentials; [`RabbitMqConfig::credentials`] overrides the URL's. The password never
//! reaches a log: `Debug` is written by hand and errors name the URL with it masked.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};
use wharf_core::{Error, ErrorKind, Result};

/// The URL tests and examples use when `WHARF_RABBITMQ_URL` is not set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The environment variable [`RabbitMqConfig::from_env`] reads.
pub const URL_VARIABLE: &str = "WHARF_RABBITMQ_URL";

/// Which kind of queue backs a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueType {
    /// Replicated, durable, with a broker-side delivery counter and delivery limit.
    /// RabbitMQ's recommendation for anything that must not be lost.
    #[default]
    Quorum,
    /// A single-node queue: lighter, but without a delivery counter, so attempts are
    /// counted only through wharf's own header and delivery limits are refused.
    Classic,
}

impl QueueType {
    /// The value of the `x-queue-type` argument.
    pub(crate) fn argument(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Which kind of exchange backs a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TopicKind {
    /// Every bound queue gets every message, whatever its routing key.
    #[default]
    Fanout,
    /// Queues bind with `#`, so they still get every message, and services that publish
    /// with their own routing keys through the same exchange keep working.
    Topic,
}

/// How wharf connects to RabbitMQ and lays out its topology.
///
/// ```
/// use std::time::Duration;
/// use wharf_rabbitmq::{QueueType, RabbitMqConfig};
///
/// let config = RabbitMqConfig::new("amqps://rabbit.internal:5671/orders")
///     .credentials("billing", "s3cret")
///     .queue_type(QueueType::Quorum)
///     .prefetch(32);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RabbitMqConfig {
    pub(crate) url: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) queue_type: QueueType,
    pub(crate) topic_kind: TopicKind,
    pub(crate) prefetch: u16,
    pub(crate) mandatory: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) confirm_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) idle_release: Duration,
    pub(crate) connection_name: String,
}

impl RabbitMqConfig {
    /// A configuration for the broker at `url`, for example
    /// `amqp://user:password@host:5672/vhost` or `amqps://host/vhost` for TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials: None,
            queue_type: QueueType::default(),
            topic_kind: TopicKind::default(),
            prefetch: 16,
            mandatory: true,
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            idle_release: Duration::from_secs(5),
            connection_name: "wharf".to_owned(),
        }
    }

    /// A configuration read from an `amqp://` or `amqps://` URL and its query options,
    /// for example `amqp://app:secret@rabbit:5672/orders?prefetch=32&queue_type=quorum`.
    /// The options are listed in the crate's [URL section](crate#url); wharf's own
    /// options ([`wharf_core::url_options`]) are skipped.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a malformed URL, another scheme, an unknown
    /// option (listing the accepted ones) or a value out of range (naming the option
    /// and the accepted values). The message never repeats the password.
    pub fn from_url(url: &str) -> Result<Self> {
        crate::uri::parse(url)
    }

    /// The URL in `WHARF_RABBITMQ_URL`, or [`DEFAULT_URL`] when it is unset.
    pub fn from_env() -> Self {
        Self::new(std::env::var(URL_VARIABLE).unwrap_or_else(|_| DEFAULT_URL.to_owned()))
    }

    /// Logs in as `username` with `password` instead of the URL's credentials.
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// The queue type of subscriptions wharf creates (quorum by default).
    #[must_use]
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// The exchange type of topics wharf creates (fanout by default).
    #[must_use]
    pub fn topic_kind(mut self, kind: TopicKind) -> Self {
        self.topic_kind = kind;
        self
    }

    /// Most unacked deliveries the broker pushes to one subscriber (`basic.qos`), 16 by
    /// default. Set it to the [`Worker`](wharf_core::Worker)'s concurrency so the broker
    /// never hands over more than can be processed; at least 1.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Whether a publish that reaches no queue fails (`mandatory`, the default) instead
    /// of being dropped by the broker.
    #[must_use]
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// How long one connection attempt may take (5 s by default).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a publish waits for the broker's confirm before failing with a
    /// retryable [`Timeout`](ErrorKind::Timeout) (30 s by default).
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The pause after the first failed reconnect and the longest pause between
    /// attempts (100 ms and 5 s by default); pauses double in between.
    #[must_use]
    pub fn reconnect_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.reconnect_min = first;
        self.reconnect_max = longest;
        self
    }

    /// How long a subscriber may go without a receive before it pauses its consumer
    /// and hands the deliveries it buffered back to the queue for other consumers
    /// (5 s by default). Handed-back copies keep their attempt count.
    #[must_use]
    pub fn idle_release(mut self, idle: Duration) -> Self {
        self.idle_release = idle;
        self
    }

    /// The name the connection shows in the management UI (`wharf` by default).
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// The parsed URI with the configured credentials applied.
    pub(crate) fn uri(&self) -> Result<AMQPUri> {
        let mut uri = parse_uri(&self.url).map_err(|reason| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "RabbitMQ URL `{}` is malformed: {reason}",
                    self.redacted_url()
                ),
            )
        })?;

        if let Some((username, password)) = &self.credentials {
            uri.authority.userinfo.username = username.clone();
            uri.authority.userinfo.password = password.clone();
        }
        Ok(uri)
    }

    /// Checks every setting, naming the one out of range.
    pub(crate) fn validate(&self) -> Result<()> {
        self.uri()?;

        if self.prefetch == 0 {
            return Err(config_error(
                "prefetch is 0, which RabbitMQ reads as unlimited; it must be 1 to 65535",
            ));
        }
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("confirm_timeout", self.confirm_timeout),
            ("idle_release", self.idle_release),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(config_error(&format!(
                "{name} is zero; it must be longer than zero"
            )));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(config_error(
                "reconnect backoff needs 0 < first pause <= longest pause",
            ));
        }
        Ok(())
    }

    /// The URL with any password masked, for logs and errors.
    pub fn redacted_url(&self) -> String {
        match parse_uri(&self.url) {
            Ok(uri) => {
                let scheme = match uri.scheme {
                    AMQPScheme::AMQP => "amqp",
                    AMQPScheme::AMQPS => "amqps",
                };
                let user = &uri.authority.userinfo.username;
                let host = if uri.authority.host.contains(':') {
                    format!("[{}]", uri.authority.host)
                } else {
                    uri.authority.host.clone()
                };
                let port = uri.authority.port;
                format!("{scheme}://{user}:****@{host}:{port}/{}", uri.vhost)
            }
            Err(_) => "<malformed URL>".to_owned(),
        }
    }
}

/// Parses an AMQP URI, keeping an IP address as the host: lapin's parser takes only
/// domain names from the URL and connects to `localhost` for `amqp://10.0.0.5`.
fn parse_uri(url: &str) -> std::result::Result<AMQPUri, String> {
    let mut uri = AMQPUri::from_str(url)?;
    let host = url::Url::parse(url)
        .ok()
        .and_then(|parsed| match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.to_string()),
            Some(url::Host::Ipv6(ip)) => Some(ip.to_string()),
            _ => None,
        });

    if let Some(host) = host {
        uri.authority.host = host;
    }
    Ok(uri)
}

/// Hand-written so that neither the URL's password nor the configured one is shown.
impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let username = self.credentials.as_ref().map(|(user, _)| user.as_str());
        f.debug_struct("RabbitMqConfig")
            .field("url", &self.redacted_url())
            .field("username", &username)
            .field("queue_type", &self.queue_type)
            .field("topic_kind", &self.topic_kind)
            .field("prefetch", &self.prefetch)
            .field("mandatory", &self.mandatory)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("idle_release", &self.idle_release)
            .field("connection_name", &self.connection_name)
            .finish_non_exhaustive()
    }
}

fn config_error(message: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("RabbitMQ configuration: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_passwords_from_url_and_config() {
        let config = RabbitMqConfig::new("amqp://app:url-secret@host:5672/%2f")
            .credentials("other", "config-secret");

        let shown = format!("{config:?}");

        assert!(!shown.contains("url-secret"), "{shown}");
        assert!(!shown.contains("config-secret"), "{shown}");
        assert!(shown.contains("app:****@host"), "{shown}");
    }

    #[test]
    fn configured_credentials_replace_the_urls() {
        let config = RabbitMqConfig::new("amqp://app:old@host/%2f").credentials("new", "pw");

        let uri = config.uri().unwrap();

        assert_eq!(uri.authority.userinfo.username, "new");
        assert_eq!(uri.authority.userinfo.password, "pw");
    }

    #[test]
    fn zero_prefetch_is_a_config_error_naming_the_setting() {
        let error = RabbitMqConfig::new(DEFAULT_URL)
            .prefetch(0)
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("prefetch"), "{error}");
    }

    #[test]
    fn an_ip_address_stays_the_host() {
        let v4 = RabbitMqConfig::new("amqp://10.1.2.3:5673/%2f");
        let v6 = RabbitMqConfig::new("amqp://[::1]:5672/%2f");

        assert_eq!(v4.uri().unwrap().authority.host, "10.1.2.3");
        assert_eq!(v6.uri().unwrap().authority.host, "::1");
        assert!(
            v6.redacted_url().contains("@[::1]:5672"),
            "{}",
            v6.redacted_url()
        );
    }

    #[test]
    fn malformed_url_is_a_config_error_without_the_password() {
        let error = RabbitMqConfig::new("http://user:pw@host")
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(!error.to_string().contains("pw@"), "{error}");
    }
}
