//! Settings, layered with figment: built-in defaults, then `order-processing.toml` (if
//! present, or the file `--config` names), then `ORDERS_*` environment variables, then
//! command-line flags. Each later layer overrides the earlier ones.
//!
//! The backend is a URL opened with `wharf::connect`, so moving the system to another
//! broker changes one setting and no code.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The configuration file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "order-processing.toml";
/// Prefix of the environment variables that override settings (`ORDERS_BACKEND`, ...).
pub const ENV_PREFIX: &str = "ORDERS_";

/// Most worker slots one process may run.
const MAX_CONCURRENCY: usize = 4096;
/// Most delivery attempts a retry policy may allow.
const MAX_ATTEMPTS: u32 = 100;
/// Longest queue-name prefix: leaves room for suffixes within every broker's name limit.
const MAX_PREFIX_BYTES: usize = 40;

/// Which command the settings are for; each has its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A long-running service: retries back off over seconds.
    Serve,
    /// A demo run: short backoff so a run takes seconds, and more workers.
    Demo,
}

/// Everything the system reads from configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The message backend, as a URL for `wharf::connect` (`mem://orders`, ...).
    pub backend: String,
    /// The SQLite database: `sqlite::memory:` or a file such as `sqlite://orders.db`.
    pub database: String,
    /// Where `serve` listens for HTTP.
    pub listen: SocketAddr,
    /// Prefix of the topic and subscription names.
    pub prefix: String,
    /// Orders processed at once by the fulfilment workers.
    pub concurrency: usize,
    /// Deliveries of one order before it is dead-lettered, counting the first.
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubles with each retry.
    pub backoff_initial_ms: u64,
    /// Longest wait between retries, in milliseconds.
    pub backoff_max_ms: u64,
    /// Chance that one payment authorisation fails transiently, 0.0 to 1.0.
    pub payment_failure_rate: f64,
    /// Seed of the payment provider's failures and of the demo's orders.
    pub seed: u64,
    /// How long a delivery stays hidden from other workers, in seconds; kept alive while
    /// its handler runs.
    pub lease_secs: u64,
}

impl Settings {
    /// The built-in defaults for `mode`.
    pub fn defaults(mode: Mode) -> Self {
        let serve = Self {
            backend: "mem://orders".to_owned(),
            database: "sqlite::memory:".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            prefix: "orders".to_owned(),
            concurrency: 16,
            max_attempts: 6,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            payment_failure_rate: 0.1,
            seed: 42,
            lease_secs: 30,
        };
        match mode {
            Mode::Serve => serve,
            Mode::Demo => Self {
                concurrency: 64,
                backoff_initial_ms: 5,
                backoff_max_ms: 200,
                ..serve
            },
        }
    }

    /// Loads the layered settings for `mode`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an unreadable or malformed file or variable, an unknown key,
    /// or a value out of range (naming the setting, the value and the range).
    pub fn load(
        mode: Mode,
        config_file: Option<&Path>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::defaults(mode)));

        if let Some(path) = config_path(config_file) {
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment
            .merge(Env::prefixed(ENV_PREFIX))
            .merge(Serialized::defaults(flags));

        Self::from_figment(&figment)
    }

    /// Extracts and checks settings from an assembled figment.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;

        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value is in range.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            "concurrency",
            self.concurrency,
            format!("it must be between 1 and {MAX_CONCURRENCY}"),
        )?;
        check(
            (1..=MAX_ATTEMPTS).contains(&self.max_attempts),
            "max_attempts",
            self.max_attempts,
            format!("it must be between 1 and {MAX_ATTEMPTS}"),
        )?;
        check(
            self.backoff_initial_ms <= self.backoff_max_ms,
            "backoff_initial_ms",
            self.backoff_initial_ms,
            format!(
                "it must not exceed backoff_max_ms ({})",
                self.backoff_max_ms
            ),
        )?;
        check(
            (0.0..=1.0).contains(&self.payment_failure_rate),
            "payment_failure_rate",
            self.payment_failure_rate,
            "it must be between 0.0 and 1.0".to_owned(),
        )?;
        check(
            self.lease_secs >= 1,
            "lease_secs",
            self.lease_secs,
            "it must be at least 1".to_owned(),
        )?;
        check_prefix(&self.prefix)
    }

    /// The wait before the first retry.
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }

    /// The longest wait between retries.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    /// The delivery lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// Hand-written so a password in the backend URL never reaches a log.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("backend", &wharf::redact(&self.backend))
            .field("database", &self.database)
            .field("listen", &self.listen)
            .field("prefix", &self.prefix)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("payment_failure_rate", &self.payment_failure_rate)
            .field("seed", &self.seed)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

/// Settings given as command-line flags; only those given override the other layers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, clap::Args)]
pub struct Overrides {
    /// Message backend URL, e.g. mem://orders [env: ORDERS_BACKEND]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// SQLite database URL, e.g. sqlite::memory: or sqlite://orders.db
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Address `serve` listens on, e.g. 127.0.0.1:8080
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Prefix of topic and subscription names
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Orders processed at once
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Deliveries of one order before it is dead-lettered
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Chance that a payment authorisation fails transiently (0.0 to 1.0)
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_failure_rate: Option<f64>,
    /// Seed of payment failures and demo orders
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read or has the wrong shape.
    #[error("invalid configuration: {0}")]
    Load(#[source] Box<figment::Error>),
    /// A value is out of range.
    #[error("setting `{setting}` is {value}; {expected}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
}

fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    // A file named on the command line must exist; the default one is optional.
    match given {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
    }
}

fn check(
    ok: bool,
    setting: &'static str,
    value: impl fmt::Display,
    expected: String,
) -> Result<(), ConfigError> {
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        setting,
        value: value.to_string(),
        expected,
    })
}

/// Queue names must be valid on every broker: a letter first, then letters, digits and
/// hyphens (Pub/Sub and SQS accept no more than that in common).
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let starts_with_letter = prefix
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic());
    let plain = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-');

    check(
        starts_with_letter && plain && prefix.len() <= MAX_PREFIX_BYTES,
        "prefix",
        format!("`{prefix}`"),
        format!(
            "it must start with a letter, hold only letters, digits and hyphens, \
                 and be at most {MAX_PREFIX_BYTES} bytes"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layered(toml: &str, flags: &Overrides) -> Result<Settings, ConfigError> {
        let figment = Figment::from(Serialized::defaults(Settings::defaults(Mode::Serve)))
            .merge(Toml::string(toml))
            .merge(Serialized::defaults(flags));
        Settings::from_figment(&figment)
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let flags = Overrides {
            concurrency: Some(3),
            ..Overrides::default()
        };

        let settings = layered("backend = \"mem://x\"\nconcurrency = 9", &flags).unwrap();

        assert_eq!(settings.backend, "mem://x");
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.database, "sqlite::memory:");
    }

    #[test]
    fn an_out_of_range_value_names_the_setting_and_the_range() {
        let error = layered("payment_failure_rate = 1.5", &Overrides::default()).unwrap_err();

        let text = error.to_string();
        assert!(text.contains("payment_failure_rate"), "{text}");
        assert!(text.contains("1.5"), "{text}");
        assert!(text.contains("0.0 and 1.0"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_refused_not_ignored() {
        let error = layered("concurency = 4", &Overrides::default()).unwrap_err();

        assert!(error.to_string().contains("concurency"), "{error}");
    }

    #[test]
    fn a_prefix_with_dots_is_refused() {
        let error = layered("prefix = \"my.orders\"", &Overrides::default()).unwrap_err();

        assert!(error.to_string().contains("my.orders"), "{error}");
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let missing = Path::new("/nonexistent/order-processing.toml");

        let error = Settings::load(Mode::Serve, Some(missing), &Overrides::default());

        assert!(error.is_err());
    }

    #[test]
    fn debug_hides_the_backend_password() {
        let mut settings = Settings::defaults(Mode::Demo);
        settings.backend = "amqp://user:hunter2@broker:5672/%2f".to_owned();

        let shown = format!("{settings:?}");

        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
