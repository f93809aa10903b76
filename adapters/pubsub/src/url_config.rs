//! Reading a [`PubSubConfig`] from a `pubsub://` URL, the form `wharf::connect` takes.
//!
//! `pubsub://PROJECT[/TOPIC][?option=value&...]`. The host is the Google Cloud project;
//! an optional single path segment names the topic, which the `wharf` crate's settings
//! read (the backend itself serves every topic of the project, so it only checks the
//! path's shape here). Wharf's own query
//! options (see [`wharf_core::url_options`]) are skipped; anything else unknown is
//! refused, so a misspelt option is an error rather than silently ignored.

use std::time::Duration;

use url::Url;
use wharf_core::url_options::{backend_options, unknown_option};
use wharf_core::{Error, ErrorKind, Result};

use crate::config::PubSubConfig;

/// The URL scheme of Pub/Sub backends.
pub const SCHEME: &str = "pubsub";

/// The options a `pubsub://` URL accepts, besides wharf's own.
pub const URL_OPTIONS: [&str; 5] = [
    "emulator",
    "max_outstanding_messages",
    "max_outstanding_bytes",
    "publish_delay",
    "idle_release",
];

/// Reads `url` into a configuration; see [`PubSubConfig::from_url`].
pub(crate) fn parse(url: &str) -> Result<PubSubConfig> {
    let parsed =
        Url::parse(url).map_err(|e| config_error(format!("malformed Pub/Sub URL: {e}")))?;
    check_shape(&parsed)?;

    let mut config = PubSubConfig::new(project(&parsed)?);
    for (name, value) in backend_options("Pub/Sub", parsed.query_pairs())? {
        config = apply(config, &name, &value)?;
    }
    Ok(config)
}

fn check_shape(parsed: &Url) -> Result<()> {
    if parsed.scheme() != SCHEME {
        return Err(config_error(format!(
            "a Pub/Sub URL starts with {SCHEME}://, not {}://",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
        return Err(config_error(
            "a pubsub:// URL names a project, not a server: credentials come from \
             application-default credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud), \
             and an emulator is given as `?emulator=HOST:PORT` or PUBSUB_EMULATOR_HOST"
                .to_owned(),
        ));
    }
    if parsed.path().trim_matches('/').contains('/') {
        return Err(config_error(
            "a pubsub:// URL has at most one path segment, the topic: \
             pubsub://PROJECT/TOPIC"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The project id: Google's rules are 6 to 30 lowercase letters, digits and hyphens,
/// but older projects and the emulator accept more, so only emptiness and characters a
/// project id never has are refused here; the service judges the rest.
fn project(parsed: &Url) -> Result<String> {
    let project = parsed.host_str().unwrap_or_default();
    let valid = !project.is_empty()
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
    if valid {
        return Ok(project.to_owned());
    }
    Err(config_error(format!(
        "a pubsub:// URL names its Google Cloud project as the host, such as \
         pubsub://my-project; got `{project}`"
    )))
}

fn apply(config: PubSubConfig, name: &str, value: &str) -> Result<PubSubConfig> {
    Ok(match name {
        "emulator" => config.with_emulator(emulator(value)?),
        "max_outstanding_messages" => config.max_outstanding_messages(count(name, value)?),
        "max_outstanding_bytes" => config.max_outstanding_bytes(count(name, value)?),
        "publish_delay" => config.publish_delay(duration(name, value)?),
        "idle_release" => config.idle_release(duration(name, value)?),
        other => return Err(unknown_option("Pub/Sub", other, &URL_OPTIONS)),
    })
}

fn emulator(value: &str) -> Result<String> {
    let valid = !value.contains('/')
        && value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        return Ok(value.to_owned());
    }
    Err(config_error(format!(
        "Pub/Sub URL option `emulator` takes HOST:PORT without a scheme, such as \
         127.0.0.1:8085; got `{value}`"
    )))
}

fn count(option: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(config_error(format!(
            "Pub/Sub URL option `{option}` takes a whole number of at least 1; got `{value}`"
        ))),
    }
}

fn duration(option: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value).map_err(|_| {
        config_error(format!(
            "Pub/Sub URL option `{option}` takes a duration such as 10ms or 1s; got `{value}`"
        ))
    })
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Error {
        let error = parse(url).expect_err(url);
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        error
    }

    #[test]
    fn the_host_is_the_project_and_options_tune_the_clients() {
        let config = parse(
            "pubsub://wharf-test/orders?emulator=127.0.0.1:8085&max_outstanding_messages=64\
             &max_outstanding_bytes=1048576&publish_delay=5ms&idle_release=2s",
        )
        .unwrap();

        assert_eq!(config.project(), "wharf-test");
        assert_eq!(config.emulator(), Some("127.0.0.1:8085"));
        assert_eq!(config.max_outstanding_messages, 64);
        assert_eq!(config.max_outstanding_bytes, 1_048_576);
        assert_eq!(config.publish_delay, Duration::from_millis(5));
        assert_eq!(config.idle_release, Duration::from_secs(2));
    }

    #[test]
    fn wharf_options_are_left_to_wharf() {
        let config = parse("pubsub://p/t?subscription=billing&lease=30s&max_attempts=5").unwrap();

        assert_eq!(config.project(), "p");
    }

    #[test]
    fn an_unknown_option_is_named_with_the_accepted_ones() {
        let error = refused("pubsub://p?emulater=127.0.0.1:8085");

        let text = error.to_string();
        assert!(text.contains("`emulater`"), "{text}");
        for option in URL_OPTIONS {
            assert!(text.contains(option), "{text} lacks {option}");
        }
    }

    #[test]
    fn a_bad_value_names_the_option_and_what_it_takes() {
        for (url, option) in [
            ("pubsub://p?emulator=http://127.0.0.1:8085", "emulator"),
            ("pubsub://p?emulator=localhost", "emulator"),
            (
                "pubsub://p?max_outstanding_messages=0",
                "max_outstanding_messages",
            ),
            (
                "pubsub://p?max_outstanding_bytes=lots",
                "max_outstanding_bytes",
            ),
            ("pubsub://p?publish_delay=soon", "publish_delay"),
        ] {
            let error = refused(url);
            assert!(
                error.to_string().contains(&format!("`{option}`")),
                "{error}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        refused("pubsub://");
        refused("pubsub://p/a/b");
        refused("pubsub://user:secret@p");
        refused("pubsub://p:8085");
        refused("pubsub://p?emulator=127.0.0.1:1&emulator=127.0.0.1:2");
        refused("amqp://p");
    }
}
