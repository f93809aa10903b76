//! [`PubSubConfig`]: which project, which endpoint, and how the subscriber's flow
//! control and the publisher's batching are tuned.

use std::fmt;
use std::time::Duration;

use wharf_core::{Error, ErrorKind, Result};

/// The environment variable Google's clients read to reach the emulator instead of the
/// service: `HOST:PORT`.
pub const EMULATOR_HOST_VAR: &str = "PUBSUB_EMULATOR_HOST";

/// Default for [`PubSubConfig::max_outstanding_messages`]: Google's clients use 1,000.
const DEFAULT_MAX_OUTSTANDING_MESSAGES: usize = 1_000;

/// Default for [`PubSubConfig::max_outstanding_bytes`]: 100 MiB, as Google's clients.
const DEFAULT_MAX_OUTSTANDING_BYTES: usize = 100 * 1024 * 1024;

/// Default for [`PubSubConfig::publish_delay`]: Google's client waits 10 ms to fill a
/// batch; wharf sends each batch as soon as it is handed over, so this only groups
/// messages that concurrent publishers hand over together.
const DEFAULT_PUBLISH_DELAY: Duration = Duration::from_millis(10);

/// Default for [`PubSubConfig::idle_release`], as the RabbitMQ adapter's.
const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(5);

/// How to reach Pub/Sub.
///
/// ```
/// use wharf_pubsub::PubSubConfig;
///
/// // Google Cloud with application-default credentials, unless PUBSUB_EMULATOR_HOST
/// // is set, as with Google's own clients.
/// let cloud = PubSubConfig::new("my-project");
///
/// // The emulator, whatever the environment says.
/// let local = PubSubConfig::new("wharf-test").with_emulator("127.0.0.1:8085");
/// assert_eq!(local.emulator(), Some("127.0.0.1:8085"));
/// ```
#[derive(Clone)]
pub struct PubSubConfig {
    pub(crate) project: String,
    pub(crate) emulator: Option<String>,
    pub(crate) max_outstanding_messages: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) publish_delay: Duration,
    pub(crate) idle_release: Duration,
}

impl PubSubConfig {
    /// The service in `project`, or the emulator named by `PUBSUB_EMULATOR_HOST` if
    /// that variable is set and not empty.
    pub fn new(project: impl Into<String>) -> Self {
        let emulator = std::env::var(EMULATOR_HOST_VAR)
            .ok()
            .filter(|host| !host.trim().is_empty());

        Self {
            project: project.into(),
            emulator,
            max_outstanding_messages: DEFAULT_MAX_OUTSTANDING_MESSAGES,
            max_outstanding_bytes: DEFAULT_MAX_OUTSTANDING_BYTES,
            publish_delay: DEFAULT_PUBLISH_DELAY,
            idle_release: DEFAULT_IDLE_RELEASE,
        }
    }

    /// The configuration a `pubsub://PROJECT[/TOPIC][?option=value&...]` URL describes;
    /// the crate docs list the options.
    ///
    /// ```
    /// use wharf_pubsub::PubSubConfig;
    ///
    /// let config = PubSubConfig::from_url("pubsub://wharf-test?emulator=127.0.0.1:8085")?;
    /// assert_eq!(config.project(), "wharf-test");
    /// # Ok::<(), wharf_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a malformed URL, an unknown or repeated option,
    /// or a value an option does not take, naming the option and what it accepts.
    pub fn from_url(url: &str) -> Result<Self> {
        crate::url_config::parse(url)
    }

    /// Talks to the emulator at `host` (`HOST:PORT`, no scheme) without credentials.
    #[must_use]
    pub fn with_emulator(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Talks to the Google Cloud service with application-default credentials, even if
    /// `PUBSUB_EMULATOR_HOST` is set.
    #[must_use]
    pub fn without_emulator(mut self) -> Self {
        self.emulator = None;
        self
    }

    /// Flow control: the service stops sending a subscriber more messages while this
    /// many are delivered and not yet settled. Also the size of the subscriber's buffer.
    #[must_use]
    pub fn max_outstanding_messages(mut self, count: usize) -> Self {
        self.max_outstanding_messages = count;
        self
    }

    /// Flow control: as [`max_outstanding_messages`](Self::max_outstanding_messages),
    /// counted in bytes.
    #[must_use]
    pub fn max_outstanding_bytes(mut self, bytes: usize) -> Self {
        self.max_outstanding_bytes = bytes;
        self
    }

    /// How long Google's publisher waits to fill a batch from concurrent publishes.
    #[must_use]
    pub fn publish_delay(mut self, delay: Duration) -> Self {
        self.publish_delay = delay;
        self
    }

    /// How long a subscriber may go without a receive before it closes its streaming
    /// pull and hands the messages it buffered back to the service for other consumers
    /// (5 s by default). The next receive opens a new stream.
    #[must_use]
    pub fn idle_release(mut self, idle: Duration) -> Self {
        self.idle_release = idle;
        self
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The emulator's `HOST:PORT`, if the emulator is used.
    pub fn emulator(&self) -> Option<&str> {
        self.emulator.as_deref()
    }

    /// The endpoint Google's client is given: the emulator over plain HTTP/2, or `None`
    /// for the service's default endpoint.
    pub(crate) fn endpoint(&self) -> Option<String> {
        self.emulator.as_ref().map(|host| format!("http://{host}"))
    }

    /// Checks the values before any connection is made.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.project.trim().is_empty() {
            return Err(config_error("the Pub/Sub project must not be empty"));
        }
        if let Some(host) = &self.emulator
            && host.contains("://")
        {
            return Err(config_error(format!(
                "the emulator host `{host}` must be HOST:PORT without a scheme"
            )));
        }
        if self.idle_release.is_zero() {
            return Err(config_error(
                "idle_release must be longer than zero, e.g. 5s",
            ));
        }
        if self.max_outstanding_messages == 0 {
            return Err(config_error("max_outstanding_messages must be at least 1"));
        }
        Ok(())
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Hand-written to match the other adapters; the config holds no secret, since
/// credentials come from the environment.
impl fmt::Debug for PubSubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubConfig")
            .field("project", &self.project)
            .field("emulator", &self.emulator)
            .field("max_outstanding_messages", &self.max_outstanding_messages)
            .field("max_outstanding_bytes", &self.max_outstanding_bytes)
            .field("publish_delay", &self.publish_delay)
            .field("idle_release", &self.idle_release)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_project_is_a_config_error() {
        let error = PubSubConfig::new(" ").validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
    }

    #[test]
    fn emulator_host_with_a_scheme_is_refused_naming_it() {
        let config = PubSubConfig::new("p").with_emulator("http://127.0.0.1:8085");

        let error = config.validate().unwrap_err();

        assert!(
            error.to_string().contains("http://127.0.0.1:8085"),
            "{error}"
        );
    }

    #[test]
    fn the_emulator_is_reached_over_plain_http() {
        let config = PubSubConfig::new("p").with_emulator("127.0.0.1:8085");

        assert_eq!(config.endpoint().as_deref(), Some("http://127.0.0.1:8085"));
    }
}
