//! Settings that choose and tune a backend, loaded from a TOML file, the environment and
//! the backend URL's query string.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `WHARF_*` environment
//! variables, then query parameters of the URL. So an operator can override a file that
//! ships with the application without editing it.
//!
//! | Key (TOML) | Environment | Query parameter | Default | Meaning |
//! |---|---|---|---|---|
//! | `url` | `WHARF_URL` | — | `mem://default` | the backend, see [`connect`](crate::connect()) |
//! | `topic` | `WHARF_TOPIC` | `topic` (or the path of `pubsub://PROJECT/TOPIC`) | none | topic to publish to |
//! | `subscription` | `WHARF_SUBSCRIPTION` | `subscription` | none | subscription to consume |
//! | `dead_letter` | `WHARF_DEAD_LETTER` | `dead_letter` | `<subscription>-dlq` | dead-letter destination |
//! | `create_if_missing` | `WHARF_CREATE_IF_MISSING` | `create_if_missing` | `false` | create topic and subscription on open |
//! | `concurrency` | `WHARF_CONCURRENCY` | `concurrency` | `16` | handlers at once (prefetch follows it) |
//! | `lease` | `WHARF_LEASE` | `lease` | `30s` | lease kept alive while a handler runs |
//! | `retry.max_attempts` | `WHARF_RETRY__MAX_ATTEMPTS` | `max_attempts` | `5` | deliveries before dead-lettering |
//! | `retry.initial_backoff` | `WHARF_RETRY__INITIAL_BACKOFF` | `initial_backoff` | `1s` | first retry delay |
//! | `retry.max_backoff` | `WHARF_RETRY__MAX_BACKOFF` | `max_backoff` | `5m` | longest retry delay |
//! | `retry.multiplier` | `WHARF_RETRY__MULTIPLIER` | `multiplier` | `2.0` | backoff growth |
//! | `retry.jitter` | `WHARF_RETRY__JITTER` | `jitter` | `0.2` | backoff spread, 0.0–1.0 |
//!
//! Durations are written like `250ms`, `30s`, `5m`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use wharf_core::{Error, ErrorKind, Result, RetryPolicy, WorkerOptions};

/// Environment variables read by [`Settings::load`], without the `WHARF_` prefix.
const ENV_KEYS: [&str; 8] = [
    "url",
    "topic",
    "subscription",
    "dead_letter",
    "create_if_missing",
    "concurrency",
    "lease",
    "retry",
];

/// Everything needed to open a backend and run workers on it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The backend URL.
    pub url: String,
    /// Topic to publish to.
    pub topic: Option<String>,
    /// Subscription to consume.
    pub subscription: Option<String>,
    /// Dead-letter destination; `<subscription>-dlq` when unset.
    pub dead_letter: Option<String>,
    /// Create the topic and subscription when opening them.
    pub create_if_missing: bool,
    /// Handlers running at once; backends that prefetch use it as their prefetch.
    pub concurrency: usize,
    /// Lease kept alive while a handler runs.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Retries of failed deliveries.
    pub retry: RetrySettings,
}

/// The retry part of [`Settings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Deliveries tried before dead-lettering.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
    /// Random spread of each wait, 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: "mem://default".to_owned(),
            topic: None,
            subscription: None,
            dead_letter: None,
            create_if_missing: false,
            concurrency: 16,
            lease: Duration::from_secs(30),
            retry: RetrySettings::default(),
        }
    }
}

impl Settings {
    /// Loads settings from the defaults, then `file` (if given and present), then the
    /// `WHARF_*` environment, then the URL's query parameters.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) naming the key and what was wrong with it: a
    /// malformed file, a value of the wrong type, an unknown key, or an out-of-range
    /// setting.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("WHARF_").split("__").filter(is_wharf_key));

        Self::extract(figment)?.with_query()
    }

    /// Settings from a TOML document (with defaults), then the URL's query parameters.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn from_toml(text: &str) -> Result<Self> {
        let figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(text));

        Self::extract(figment)?.with_query()
    }

    /// Settings for `url` with defaults, then its query parameters.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn from_url(url: &str) -> Result<Self> {
        Settings {
            url: url.to_owned(),
            ..Settings::default()
        }
        .with_query()
    }

    /// These settings with another backend URL, whose query parameters then override
    /// them: how a command-line `--url` takes precedence over the file and environment.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`], for the new URL's query parameters.
    pub fn with_url(self, url: &str) -> Result<Self> {
        Settings {
            url: url.to_owned(),
            ..self
        }
        .with_query()
    }

    fn extract(figment: Figment) -> Result<Self> {
        figment.extract().map_err(|error| {
            let text = error.to_string();
            Error::new(ErrorKind::Config, format!("invalid wharf settings: {text}"))
                .with_source(error)
        })
    }

    /// Applies the URL's wharf query parameters, then validates.
    fn with_query(mut self) -> Result<Self> {
        for (key, value) in query_pairs(&self.url)? {
            self.apply(&key, &value)?;
        }
        if self.topic.is_none() {
            self.topic = topic_in_path(&self.url);
        }
        self.validate()?;
        Ok(self)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "topic" => self.topic = Some(value.to_owned()),
            "subscription" => self.subscription = Some(value.to_owned()),
            "dead_letter" => self.dead_letter = Some(value.to_owned()),
            "create_if_missing" => self.create_if_missing = parse(key, value, "true or false")?,
            "concurrency" => self.concurrency = parse(key, value, "a whole number ≥ 1")?,
            "lease" => self.lease = duration(key, value)?,
            "max_attempts" => self.retry.max_attempts = parse(key, value, "a whole number ≥ 1")?,
            "initial_backoff" => self.retry.initial_backoff = duration(key, value)?,
            "max_backoff" => self.retry.max_backoff = duration(key, value)?,
            "multiplier" => self.retry.multiplier = parse(key, value, "a number ≥ 1.0")?,
            "jitter" => self.retry.jitter = parse(key, value, "a number from 0.0 to 1.0")?,
            _ => {} // The backend's own option; the adapter reads and checks it.
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(config("concurrency is 0; it must be at least 1"));
        }
        if self.lease.is_zero() {
            return Err(config("lease is 0; it must be longer than zero, e.g. 30s"));
        }
        self.retry_policy()
            .validate()
            .map_err(|e| Error::new(ErrorKind::Config, e.message().to_owned()))
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(self.retry.max_attempts)
            .initial_delay(self.retry.initial_backoff)
            .max_delay(self.retry.max_backoff)
            .multiplier(self.retry.multiplier)
            .jitter(self.retry.jitter)
    }

    /// Worker options for these settings.
    pub fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            concurrency: self.concurrency,
            retry: self.retry_policy(),
            lease: self.lease,
            ..WorkerOptions::default()
        }
    }

    /// Query parameters of the URL that wharf does not read itself: the backend's own
    /// options.
    pub fn backend_options(&self) -> Vec<(String, String)> {
        let Ok(pairs) = query_pairs(&self.url) else {
            return Vec::new();
        };
        pairs
            .into_iter()
            .filter(|(k, _)| !wharf_core::url_options::is_wharf_option(k))
            .collect()
    }
}

/// Hand-written so a password in the URL never reaches a log.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &crate::redact(&self.url))
            .field("topic", &self.topic)
            .field("subscription", &self.subscription)
            .field("dead_letter", &self.dead_letter)
            .field("create_if_missing", &self.create_if_missing)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Whether an environment key (prefix stripped, `__` already turned into `.`) is one of
/// wharf's settings; other `WHARF_*` variables belong to tools and tests.
fn is_wharf_key(key: &figment::value::UncasedStr) -> bool {
    let key = key.as_str();
    let top = key.split(['.']).next().unwrap_or(key);
    let top = top.split("__").next().unwrap_or(top);
    ENV_KEYS.iter().any(|known| top.eq_ignore_ascii_case(known))
}

/// The query parameters of a backend URL. Read without parsing the whole URL, because a
/// Kafka URL's broker list (`kafka://a:9092,b:9092`) is not a valid URL authority.
fn query_pairs(url: &str) -> Result<Vec<(String, String)>> {
    if !url.contains("://") {
        return Err(config(format!(
            "backend URL `{}` is malformed: it has no `scheme://`; expected e.g. mem://NAME, \
             amqp://HOST:5672/%2f, kafka://HOST:9092, sqs://REGION, pubsub://PROJECT",
            crate::redact(url)
        )));
    }
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    Ok(url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// The topic a `pubsub://PROJECT/TOPIC` URL names in its path; the other schemes use
/// their path for something else (a RabbitMQ virtual host) or not at all.
fn topic_in_path(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.scheme() != "pubsub" {
        return None;
    }
    let topic = parsed.path().trim_matches('/');
    (!topic.is_empty() && !topic.contains('/')).then(|| topic.to_owned())
}

fn parse<T: std::str::FromStr>(key: &str, value: &str, accepted: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| config(format!("option {key}={value:?} is invalid; use {accepted}")))
}

fn duration(key: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value).map_err(|_| {
        config(format!(
            "option {key}={value:?} is not a duration; use e.g. 250ms, 30s or 5m"
        ))
    })
}

fn config(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_url_keeps_the_settings_and_applies_its_query() {
        let file = Settings::from_toml("url = \"mem://file\"\ntopic = \"orders\"").unwrap();

        let settings = file.with_url("mem://cli?max_attempts=9").unwrap();

        assert_eq!(settings.url, "mem://cli?max_attempts=9");
        assert_eq!(
            settings.topic.as_deref(),
            Some("orders"),
            "the file's topic stays"
        );
        assert_eq!(
            settings.retry.max_attempts, 9,
            "the new URL's query applies"
        );
    }

    #[test]
    fn query_parameters_override_the_file() {
        let toml = r#"
            url = "mem://shop?concurrency=4&max_attempts=7&lease=45s"
            concurrency = 2
            [retry]
            max_attempts = 3
        "#;

        let settings = Settings::from_toml(toml).unwrap();

        assert_eq!(settings.concurrency, 4);
        assert_eq!(settings.retry.max_attempts, 7);
        assert_eq!(settings.lease, Duration::from_secs(45));
    }

    #[test]
    fn file_values_apply_over_defaults() {
        let settings =
            Settings::from_toml("url = \"mem://x\"\n[retry]\ninitial_backoff = \"250ms\"").unwrap();

        assert_eq!(settings.retry.initial_backoff, Duration::from_millis(250));
        assert_eq!(settings.retry.max_attempts, 5);
    }

    #[test]
    fn a_bad_option_names_the_option_and_the_accepted_values() {
        let error = Settings::from_url("mem://x?concurrency=lots").unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("concurrency"), "{error}");
        assert!(error.to_string().contains("whole number"), "{error}");
    }

    #[test]
    fn zero_attempts_is_refused() {
        let error = Settings::from_url("mem://x?max_attempts=0").unwrap_err();

        assert!(error.to_string().contains("max_attempts"), "{error}");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let error = Settings::from_toml("url = \"mem://x\"\nconcurency = 3").unwrap_err();

        assert!(error.to_string().contains("concurency"), "{error}");
    }

    #[test]
    fn backend_options_exclude_wharf_keys() {
        let settings = Settings::from_url("sqs://us-east-1?fifo=true&concurrency=3").unwrap();

        assert_eq!(
            settings.backend_options(),
            vec![("fifo".to_owned(), "true".to_owned())]
        );
    }

    #[test]
    fn a_pubsub_path_names_the_topic_unless_the_query_does() {
        let from_path = Settings::from_url("pubsub://proj/orders?subscription=billing").unwrap();
        let from_query = Settings::from_url("pubsub://proj/orders?topic=refunds").unwrap();
        let vhost = Settings::from_url("amqp://localhost:5672/orders").unwrap();

        assert_eq!(from_path.topic.as_deref(), Some("orders"));
        assert_eq!(from_path.subscription.as_deref(), Some("billing"));
        assert_eq!(from_query.topic.as_deref(), Some("refunds"));
        assert_eq!(vhost.topic, None);
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = Settings::from_url("amqp://app:s3cret@localhost:5672/%2f").unwrap();

        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error type, in a test
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("wharf.toml", "url = \"mem://file\"\nconcurrency = 2")?;
            jail.set_env("WHARF_CONCURRENCY", "9");
            jail.set_env("WHARF_RETRY__MAX_ATTEMPTS", "4");
            jail.set_env("WHARF_RABBITMQ_URL", "amqp://ignored");

            let settings = Settings::load(Some(Path::new("wharf.toml"))).expect("loads");

            assert_eq!(settings.url, "mem://file");
            assert_eq!(settings.concurrency, 9);
            assert_eq!(settings.retry.max_attempts, 4);
            Ok(())
        });
    }
}
