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

/// The environment variable [`RabbitMqConfig::from_env`] reads the management API's
/// URL from, when set.
pub const MANAGEMENT_URL_VARIABLE: &str = "WHARF_RABBITMQ_MANAGEMENT_URL";

/// The management plugin's HTTP port, and its TLS port, as RabbitMQ ships them.
const MANAGEMENT_PORTS: (u16, u16) = (15672, 15671);

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
    pub(crate) management_url: Option<String>,
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
            management_url: None,
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

    /// The URL in `WHARF_RABBITMQ_URL`, or [`DEFAULT_URL`] when it is unset, and the
    /// management API's URL in `WHARF_RABBITMQ_MANAGEMENT_URL` when that is set.
    pub fn from_env() -> Self {
        let config =
            Self::new(std::env::var(URL_VARIABLE).unwrap_or_else(|_| DEFAULT_URL.to_owned()));
        match std::env::var(MANAGEMENT_URL_VARIABLE) {
            Ok(url) if !url.is_empty() => config.management_url(url),
            _ => config,
        }
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

    /// Where the management plugin's HTTP API is, for the figures and checks AMQP
    /// cannot give (see the crate's [operating queues](crate#operating-queues)
    /// section): `http://host:15672`, or `https://` for TLS, optionally with
    /// credentials and the plugin's path prefix (`http://host:15672/rabbitmq`).
    ///
    /// By default it is derived from the AMQP URL: the same host, port 15672
    /// (`amqp://`) or 15671 (`amqps://`, over HTTPS), and the same credentials.
    #[must_use]
    pub fn management_url(mut self, url: impl Into<String>) -> Self {
        self.management_url = Some(url.into());
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
        self.management().map(drop)
    }

    /// Where the management API is and how to log in to it: the configured URL, or
    /// one derived from the AMQP URL.
    pub(crate) fn management(&self) -> Result<ManagementEndpoint> {
        let uri = self.uri()?;
        let amqp_user = &uri.authority.userinfo;
        let Some(configured) = &self.management_url else {
            let (scheme, port) = match uri.scheme {
                AMQPScheme::AMQP => ("http", MANAGEMENT_PORTS.0),
                AMQPScheme::AMQPS => ("https", MANAGEMENT_PORTS.1),
            };
            let host = bracketed(&uri.authority.host);
            let base = url::Url::parse(&format!("{scheme}://{host}:{port}/")).map_err(|e| {
                config_error(&format!("no management URL derives from {host}: {e}"))
            })?;
            return Ok(ManagementEndpoint {
                base,
                username: amqp_user.username.clone(),
                password: amqp_user.password.clone(),
                vhost: uri.vhost,
            });
        };

        let mut base = url::Url::parse(configured)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                config_error(&format!(
                    "management_url `{}` is not an http:// or https:// URL",
                    redact_http(configured)
                ))
            })?;
        let (username, password) = if base.username().is_empty() {
            (amqp_user.username.clone(), amqp_user.password.clone())
        } else {
            let password = base.password().unwrap_or_default();
            (percent_decode(base.username()), percent_decode(password))
        };
        // Credentials travel in a header, so that no error or log shows them.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(ManagementEndpoint {
            base,
            username,
            password,
            vhost: uri.vhost,
        })
    }

    /// The management API's URL with any password masked, for logs and errors.
    pub fn redacted_management_url(&self) -> String {
        match self.management() {
            Ok(endpoint) => endpoint.base.to_string(),
            Err(_) => self
                .management_url
                .as_deref()
                .map_or_else(|| "<malformed URL>".to_owned(), redact_http),
        }
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
                let host = bracketed(&uri.authority.host);
                let port = uri.authority.port;
                format!("{scheme}://{user}:****@{host}:{port}/{}", uri.vhost)
            }
            Err(_) => "<malformed URL>".to_owned(),
        }
    }
}

/// Where the management API answers, and as whom wharf logs in to it.
#[derive(Clone)]
pub(crate) struct ManagementEndpoint {
    /// The API's base URL, ending in `/`, without credentials.
    pub(crate) base: url::Url,
    /// The user to log in as.
    pub(crate) username: String,
    /// The user's password.
    pub(crate) password: String,
    /// The virtual host wharf works in, as AMQP names it (`/`, not `%2f`).
    pub(crate) vhost: String,
}

/// An IPv6 address in brackets, as URLs need it.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// An HTTP URL with its password masked, or a placeholder if it does not parse.
fn redact_http(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("****"));
            }
            parsed.to_string()
        }
        Err(_) => "<malformed URL>".to_owned(),
    }
}

/// Percent-decoded URL user info; undecodable bytes are kept as they are.
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| text.to_owned(), |(_, value)| value.into_owned())
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
            .field("management_url", &self.redacted_management_url())
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
    fn the_management_api_is_derived_from_the_amqp_url() {
        let plain = RabbitMqConfig::new("amqp://app:pw@rabbit.internal:5673/orders");
        let tls = RabbitMqConfig::new("amqps://rabbit.internal/%2f").credentials("ops", "pw2");

        let plain = plain.management().unwrap();
        let tls = tls.management().unwrap();

        assert_eq!(plain.base.as_str(), "http://rabbit.internal:15672/");
        assert_eq!(
            (plain.username.as_str(), plain.password.as_str()),
            ("app", "pw")
        );
        assert_eq!(plain.vhost, "orders");
        assert_eq!(tls.base.as_str(), "https://rabbit.internal:15671/");
        assert_eq!((tls.username.as_str(), tls.vhost.as_str()), ("ops", "/"));
    }

    #[test]
    fn a_configured_management_url_keeps_its_credentials_out_of_sight() {
        let config = RabbitMqConfig::new("amqp://app:pw@rabbit/%2f")
            .management_url("http://monitor:p%40ss@mgmt.internal:8080/rabbitmq");

        let endpoint = config.management().unwrap();

        assert_eq!(
            endpoint.base.as_str(),
            "http://mgmt.internal:8080/rabbitmq/"
        );
        assert_eq!(endpoint.username, "monitor");
        assert_eq!(endpoint.password, "p@ss");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss"),
            "{shown}"
        );
    }

    #[test]
    fn a_management_url_of_another_scheme_is_a_config_error() {
        let error = RabbitMqConfig::new(DEFAULT_URL)
            .management_url("amqp://user:secret@rabbit:15672")
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("management_url"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
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
