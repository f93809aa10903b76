//! What every command starts from: the settings (file, environment, `--url`), the
//! backend they name, and the topic or subscription a command works on when its own
//! options do not name one.

use std::path::Path;
use std::sync::Arc;

use tracing::debug;
use wharf::{Backend, Connection, Settings};

use crate::exit::Failure;
use crate::output::Output;
use crate::secrets::Secrets;

/// Where settings can name the subscription, for errors that ask for one.
const SUBSCRIPTION_PLACES: &str = "pass --subscription NAME, or set `subscription` in the \
     --config file, WHARF_SUBSCRIPTION in the environment, or ?subscription=NAME on the URL";

/// Where settings can name the topic, for errors that ask for one.
const TOPIC_PLACES: &str = "pass --topic NAME, or set `topic` in the --config file, \
     WHARF_TOPIC in the environment, or ?topic=NAME on the URL";

/// Settings and the backend they open.
pub(crate) struct Context {
    /// The settings, after the file, the environment and `--url`.
    pub(crate) settings: Settings,
    /// The backend the settings' URL names.
    pub(crate) backend: Arc<dyn Backend>,
    /// How results are written.
    pub(crate) out: Output,
}

impl Context {
    /// Connects to the backend `settings` name, creating the topic and subscription they
    /// name if they say `create_if_missing`.
    pub(crate) async fn connect(settings: Settings, out: Output) -> Result<Self, Failure> {
        let shown = wharf::redact(&settings.url);
        if settings.url.starts_with("mem://") {
            out.note(
                "note: a mem:// broker lives inside this one wharf process: it starts empty \
                 and is gone when the command ends",
            );
        }
        debug!(url = %shown, "connecting");

        // Through `Connection`, so `create_if_missing` creates the settings' topic and
        // subscription as it does for the application.
        let connection = Connection::open(settings.clone())
            .await
            .map_err(Failure::during(format!("connecting to {shown}")))?;
        Ok(Self {
            settings,
            backend: connection.backend().clone(),
            out,
        })
    }

    /// The subscription to work on: `explicit`, or the settings' (which on a backend
    /// without fan-out is the topic's queue).
    pub(crate) fn subscription(&self, explicit: Option<&str>) -> Result<String, Failure> {
        if let Some(name) = explicit {
            return Ok(name.to_owned());
        }
        let caps = self.backend.capabilities();
        match (&self.settings.subscription, &self.settings.topic) {
            (Some(wanted), Some(topic)) => Ok(caps.subscription_name(topic, wanted).to_owned()),
            (Some(wanted), None) => Ok(wanted.clone()),
            (None, Some(topic)) if !caps.fan_out => Ok(topic.clone()),
            _ => Err(no_subscription()),
        }
    }

    /// The subscriptions to work on: those given, or the settings' one.
    pub(crate) fn subscriptions(&self, explicit: &[String]) -> Result<Vec<String>, Failure> {
        if explicit.is_empty() {
            return Ok(vec![self.subscription(None)?]);
        }
        Ok(explicit.to_vec())
    }

    /// The topic to work on: `explicit`, or the settings'.
    pub(crate) fn topic(&self, explicit: Option<&str>) -> Result<String, Failure> {
        explicit
            .map(str::to_owned)
            .or_else(|| self.settings.topic.clone())
            .ok_or_else(no_topic)
    }
}

/// Loads the settings: defaults, then the `--config` file, then `WHARF_*` variables,
/// then `--url` (with its query options), as the `wharf` crate orders them.
pub(crate) fn load_settings(
    config: Option<&Path>,
    url: Option<&str>,
    secrets: &mut Secrets,
) -> Result<Settings, Failure> {
    let settings = Settings::load(config).map_err(|error| {
        let place = config.map_or_else(
            || "the WHARF_* environment".to_owned(),
            |path| format!("{} and the WHARF_* environment", path.display()),
        );
        Failure::wharf(format!("loading the settings from {place}"), &error)
    })?;
    secrets.add_url(&settings.url);

    let settings = match url {
        Some(url) => with_url(settings, url)?,
        None if settings.url == Settings::default().url => return Err(no_url()),
        None => settings,
    };
    Ok(settings)
}

/// `settings` with the `--url`, whose query options then apply over them.
fn with_url(settings: Settings, url: &str) -> Result<Settings, Failure> {
    settings
        .with_url(url)
        .map_err(Failure::during("reading --url"))
}

/// Fails early, before connecting, when nothing names a subscription.
pub(crate) fn require_subscription(
    settings: &Settings,
    explicit: Option<&str>,
) -> Result<(), Failure> {
    let named = explicit.is_some() || settings.subscription.is_some() || settings.topic.is_some();
    if named {
        Ok(())
    } else {
        Err(no_subscription())
    }
}

fn no_subscription() -> Failure {
    Failure::usage("no subscription given", SUBSCRIPTION_PLACES)
}

fn no_topic() -> Failure {
    Failure::usage("no topic given", TOPIC_PLACES)
}

fn no_url() -> Failure {
    Failure::usage(
        "no backend URL given",
        "pass --url (e.g. amqp://USER:PASS@HOST:5672/%2f, kafka://HOST:9092, \
         sqs://KEY:SECRET@HOST:4566?region=us-east-1, pubsub://PROJECT), or set WHARF_URL, \
         or `url` in the --config file",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn the_url_replaces_the_settings_url_and_its_options_apply() {
        let settings = Settings::from_toml("url = \"mem://file\"\ntopic = \"orders\"").unwrap();

        let settings = with_url(settings, "mem://flag?max_attempts=7").unwrap();

        assert_eq!(settings.url, "mem://flag?max_attempts=7");
        assert_eq!(
            settings.topic.as_deref(),
            Some("orders"),
            "the file still counts"
        );
        assert_eq!(settings.retry.max_attempts, 7);
    }

    #[test]
    fn a_bad_url_option_is_a_usage_error() {
        let failure = with_url(Settings::default(), "mem://x?max_attempts=none").unwrap_err();

        assert_eq!(failure.exit, Exit::Usage);
        assert!(
            failure.message.contains("max_attempts"),
            "{}",
            failure.message
        );
    }
}
