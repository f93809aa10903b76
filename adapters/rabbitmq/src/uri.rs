//! Reading a [`RabbitMqConfig`] from an `amqp://` or `amqps://` URL and its query options.
//!
//! The URL's query mixes three kinds of options: wharf's own (see
//! [`wharf_core::url_options`]), which are skipped here; this adapter's (`prefetch`,
//! `queue_type`, ...), which set the configuration and are removed from the URL; and
//! lapin's connection tuning (`heartbeat`, `frame_max`, `channel_max`,
//! `auth_mechanism`), which are checked here and left in the URL for lapin. Anything
//! else is refused, so a misspelt option is an error rather than silently ignored.
//! Errors name the option and its accepted values, never the URL: it may hold a
//! password.

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::SASLMechanism;
use url::Url;
use wharf_core::url_options::is_wharf_option;
use wharf_core::{Error, ErrorKind, Result};

use crate::config::{QueueType, RabbitMqConfig, TopicKind};

/// The query options a RabbitMQ URL may carry besides wharf's own
/// ([`WHARF_URL_OPTIONS`](wharf_core::url_options::WHARF_URL_OPTIONS)).
pub const URL_OPTIONS: [&str; 16] = [
    "prefetch",
    "queue_type",
    "topic_kind",
    "mandatory",
    "connect_timeout",
    "connection_timeout",
    "confirm_timeout",
    "reconnect_min",
    "reconnect_max",
    "idle_release",
    "connection_name",
    "management_url",
    "heartbeat",
    "frame_max",
    "channel_max",
    "auth_mechanism",
];

/// Options lapin reads from the URL itself.
const LAPIN_OPTIONS: [&str; 4] = ["heartbeat", "frame_max", "channel_max", "auth_mechanism"];

/// Parses `url` into a configuration; see [`RabbitMqConfig::from_url`].
pub(crate) fn parse(url: &str) -> Result<RabbitMqConfig> {
    let mut parsed = Url::parse(url).map_err(|e| invalid(format!("the URL is malformed: {e}")))?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(invalid(format!(
            "a RabbitMQ URL starts with amqp:// or amqps://, not {}://",
            parsed.scheme()
        )));
    }

    let mut config = RabbitMqConfig::new(String::new());
    let mut kept = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if is_wharf_option(&name) {
            continue;
        }
        if LAPIN_OPTIONS.contains(&&*name) {
            check_lapin_option(&name, &value)?;
            kept.push((name.into_owned(), value.into_owned()));
            continue;
        }
        config = apply(config, &name, &value)?;
    }

    keep_only(&mut parsed, &kept);
    config.url = parsed.into();
    config.validate()?;
    Ok(config)
}

/// Sets the adapter option `name` to `value`.
fn apply(config: RabbitMqConfig, name: &str, value: &str) -> Result<RabbitMqConfig> {
    Ok(match name {
        "prefetch" => config.prefetch(number(name, value, 1, u16::MAX)?),
        "queue_type" => config.queue_type(queue_type(value)?),
        "topic_kind" => config.topic_kind(topic_kind(value)?),
        "mandatory" => config.mandatory(boolean(name, value)?),
        "connect_timeout" => config.connect_timeout(duration(name, value)?),
        "connection_timeout" => {
            let millis = number(name, value, 1, u64::MAX)?;
            config.connect_timeout(Duration::from_millis(millis))
        }
        "confirm_timeout" => config.confirm_timeout(duration(name, value)?),
        "reconnect_min" => {
            let longest = config.reconnect_max;
            config.reconnect_backoff(duration(name, value)?, longest)
        }
        "reconnect_max" => {
            let first = config.reconnect_min;
            config.reconnect_backoff(first, duration(name, value)?)
        }
        "idle_release" => config.idle_release(duration(name, value)?),
        "connection_name" => config.connection_name(value),
        "management_url" => config.management_url(value),
        unknown => return Err(unknown_option(unknown)),
    })
}

/// Checks an option lapin will read, so that its error names the option too.
fn check_lapin_option(name: &str, value: &str) -> Result<()> {
    match name {
        "heartbeat" => number(name, value, 0, u16::MAX).map(drop),
        "channel_max" => number(name, value, 0, u16::MAX).map(drop),
        "frame_max" => number(name, value, 0, u32::MAX).map(drop),
        _ => SASLMechanism::from_str(&value.to_ascii_lowercase())
            .map(drop)
            .map_err(|_| {
                bad_value(
                    name,
                    value,
                    "plain, amqplain, external, anonymous or rabbit-cr-demo",
                )
            }),
    }
}

/// Leaves only `kept` in the URL's query, dropping the query if nothing is left.
fn keep_only(url: &mut Url, kept: &[(String, String)]) {
    if kept.is_empty() {
        url.set_query(None);
        return;
    }
    url.query_pairs_mut().clear().extend_pairs(kept);
}

fn number<T>(name: &str, value: &str, min: T, max: T) -> Result<T>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    value
        .parse::<T>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| bad_value(name, value, &format!("a whole number from {min} to {max}")))
}

fn boolean(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_value(name, value, "true or false")),
    }
}

fn duration(name: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value)
        .map_err(|_| bad_value(name, value, "a duration such as 250ms, 30s or 5m"))
}

fn queue_type(value: &str) -> Result<QueueType> {
    match value {
        "quorum" => Ok(QueueType::Quorum),
        "classic" => Ok(QueueType::Classic),
        _ => Err(bad_value("queue_type", value, "quorum or classic")),
    }
}

fn topic_kind(value: &str) -> Result<TopicKind> {
    match value {
        "fanout" => Ok(TopicKind::Fanout),
        "topic" => Ok(TopicKind::Topic),
        _ => Err(bad_value("topic_kind", value, "fanout or topic")),
    }
}

fn bad_value(name: &str, value: &str, accepted: &str) -> Error {
    invalid(format!(
        "option {name}={value:?} is not valid; expected {accepted}"
    ))
}

fn unknown_option(name: &str) -> Error {
    invalid(format!(
        "unknown option `{name}`; accepted: {}, and wharf's own: {}",
        URL_OPTIONS.join(", "),
        wharf_core::url_options::WHARF_URL_OPTIONS.join(", ")
    ))
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Config, format!("RabbitMQ URL: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_sets_every_option() {
        let config = parse(
            "amqps://app:s3cret@rabbit.internal:5671/orders?prefetch=64&queue_type=classic\
             &topic_kind=topic&mandatory=false&connect_timeout=2s&confirm_timeout=1m\
             &reconnect_min=50ms&reconnect_max=10s&idle_release=30s&connection_name=billing\
             &heartbeat=30",
        )
        .unwrap();

        assert_eq!(config.prefetch, 64);
        assert_eq!(config.queue_type, QueueType::Classic);
        assert_eq!(config.topic_kind, TopicKind::Topic);
        assert!(!config.mandatory);
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.confirm_timeout, Duration::from_secs(60));
        assert_eq!(config.reconnect_min, Duration::from_millis(50));
        assert_eq!(config.reconnect_max, Duration::from_secs(10));
        assert_eq!(config.idle_release, Duration::from_secs(30));
        assert_eq!(config.connection_name, "billing");
        let uri = config.uri().unwrap();
        assert_eq!(uri.authority.userinfo.password, "s3cret");
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(uri.vhost, "orders");
        assert_eq!(uri.query.heartbeat, Some(30));
    }

    #[test]
    fn a_bare_url_keeps_the_defaults() {
        let config = parse("amqp://127.0.0.1").unwrap();

        assert_eq!(config.prefetch, 16);
        assert_eq!(config.queue_type, QueueType::Quorum);
        assert!(config.mandatory);
        assert_eq!(config.uri().unwrap().authority.port, 5672);
    }

    #[test]
    fn wharf_options_are_skipped_and_removed_from_the_url() {
        let config =
            parse("amqp://127.0.0.1:5672/%2f?subscription=billing&concurrency=8&prefetch=8")
                .unwrap();

        assert_eq!(config.prefetch, 8);
        assert!(!config.url.contains('?'), "{}", config.redacted_url());
    }

    #[test]
    fn an_unknown_option_is_named_with_the_accepted_ones() {
        let error = parse("amqp://127.0.0.1/%2f?prefech=8").unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        let text = error.to_string();
        assert!(text.contains("`prefech`"), "{text}");
        assert!(text.contains("prefetch, queue_type"), "{text}");
        assert!(text.contains("subscription"), "{text}");
    }

    #[test]
    fn a_bad_value_names_the_option_and_the_accepted_values() {
        let cases = [
            ("queue_type=stream", "quorum or classic"),
            ("prefetch=0", "from 1 to 65535"),
            ("prefetch=lots", "from 1 to 65535"),
            ("mandatory=yes", "true or false"),
            ("confirm_timeout=soon", "250ms"),
            ("idle_release=0s", "longer than zero"),
            ("heartbeat=-1", "from 0 to 65535"),
            ("auth_mechanism=kerberos", "plain, amqplain"),
        ];

        for (query, accepted) in cases {
            let error = parse(&format!("amqp://127.0.0.1/%2f?{query}")).unwrap_err();

            assert_eq!(error.kind(), ErrorKind::Config, "{query}");
            let text = error.to_string();
            let name = query.split('=').next().unwrap();
            assert!(text.contains(name), "{query}: {text}");
            assert!(text.contains(accepted), "{query}: {text}");
        }
    }

    #[test]
    fn the_password_never_appears_in_errors_or_debug() {
        let url = "amqp://app:hunter2@127.0.0.1/%2f";

        let unknown = parse(&format!("{url}?bogus=1")).unwrap_err();
        let bad = parse(&format!("{url}?prefetch=x")).unwrap_err();
        let scheme = parse("http://app:hunter2@127.0.0.1/").unwrap_err();
        let shown = format!("{:?}", parse(url).unwrap());

        for text in [
            unknown.to_string(),
            bad.to_string(),
            scheme.to_string(),
            shown,
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn another_scheme_is_refused() {
        let error = parse("kafka://127.0.0.1:9092").unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("amqp://"), "{error}");
    }

    #[test]
    fn management_url_is_an_encoded_option() {
        let config =
            parse("amqp://127.0.0.1/%2f?management_url=https%3A%2F%2Fmgmt%3A15671%2F").unwrap();

        assert_eq!(
            config.management_url.as_deref(),
            Some("https://mgmt:15671/")
        );
        assert!(!config.url.contains("management_url"));
    }

    #[test]
    fn connection_timeout_in_milliseconds_sets_the_connect_timeout() {
        let config = parse("amqp://127.0.0.1/%2f?connection_timeout=1500").unwrap();

        assert_eq!(config.connect_timeout, Duration::from_millis(1500));
        assert!(!config.url.contains("connection_timeout"));
    }
}
