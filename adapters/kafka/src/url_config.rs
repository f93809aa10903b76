//! Reading a [`KafkaConfig`] from a `kafka://` URL, the form `wharf::connect` takes.
//!
//! `kafka://[user:password@]host[:port][,host[:port]...][/][?option=value&...]`. The
//! broker list is split by hand before anything else: a comma-separated authority is
//! not a URL host that the `url` crate would accept. The query is then read option by
//! option; wharf's own options (see [`wharf_core::url_options`]) are skipped, anything
//! else unknown is refused, and no error ever repeats the password.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use wharf_core::url_options::is_wharf_option;
use wharf_core::{Error, ErrorKind, Result};

use crate::admin::check_topic_name;
use crate::config::KafkaConfig;

/// The URL scheme of Kafka backends.
pub const SCHEME: &str = "kafka";

/// The port used when a broker in the URL names none: Kafka's usual one.
pub const DEFAULT_PORT: u16 = 9092;

/// The prefix of options passed to librdkafka as they are, without it.
pub const PASS_THROUGH_PREFIX: &str = "librdkafka.";

/// The options a `kafka://` URL accepts (besides `librdkafka.*` and wharf's own).
const OPTIONS: [&str; 12] = [
    "partitions",
    "replication_factor",
    "session_timeout",
    "commit_interval",
    "idle_timeout",
    "receive_buffer",
    "operation_timeout",
    "registry_topic",
    "client_id",
    "security_protocol",
    "sasl_mechanism",
    "ssl_ca_location",
];

/// `security.protocol` values librdkafka knows.
const SECURITY_PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

/// `sasl.mechanism` values this build supports (GSSAPI needs rdkafka's `gssapi`).
const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// The parts of a Kafka URL before its options.
struct Parts<'a> {
    credentials: Option<(String, String)>,
    brokers: String,
    query: &'a str,
}

impl KafkaConfig {
    /// Reads a configuration from a `kafka://` URL; the crate documentation's `# URL`
    /// section lists the options.
    ///
    /// ```
    /// use wharf_kafka::KafkaConfig;
    ///
    /// let config = KafkaConfig::from_url(
    ///     "kafka://orders:s3cret@b1:9093,b2:9093?sasl_mechanism=SCRAM-SHA-512&partitions=6",
    /// )?;
    /// assert_eq!(config.brokers(), "b1:9093,b2:9093");
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// # Ok::<(), wharf_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for another scheme, a malformed broker list, an
    /// unknown option (naming it and listing the accepted ones), a value an option does
    /// not accept (naming the option and what it accepts), or a librdkafka property that
    /// wharf manages itself. No error repeats the password.
    pub fn from_url(url: &str) -> Result<Self> {
        let parts = split(url)?;
        let mut config = Self::new(parts.brokers);
        let mut protocol = None;
        let mut mechanism = None;

        for (name, value) in url::form_urlencoded::parse(parts.query.as_bytes()) {
            match &*name {
                "security_protocol" => protocol = Some(security_protocol(&value)?),
                "sasl_mechanism" => mechanism = Some(sasl_mechanism(&value)?),
                _ => config = apply(config, &name, &value)?,
            }
        }
        config = with_security(config, parts.credentials, protocol, mechanism)?;

        config.validate()?;
        Ok(config)
    }
}

/// Splits `url` into credentials, the broker list and the query.
fn split(url: &str) -> Result<Parts<'_>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(config_error(
            "a Kafka URL looks like kafka://host:port[,host:port...]",
        ));
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(config_error(format!(
            "a Kafka URL starts with {SCHEME}://, not {scheme}://"
        )));
    }
    if rest.contains('#') || misplaced_at(rest) {
        // Most likely a password with an unencoded `/`, `?` or `#`: say so without
        // echoing any part of the URL, which might be part of that password.
        return Err(config_error(
            "the Kafka URL is malformed: percent-encode `/`, `?`, `#` and `@` in a user \
             name or password (as %2F, %3F, %23 and %40); a Kafka URL has no fragment",
        ));
    }
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = location.split_once('/').unwrap_or((location, ""));
    if !path.is_empty() {
        return Err(config_error(
            "a Kafka URL has no path: put options after `?`",
        ));
    }

    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(credentials(userinfo)?), hosts),
        None => (None, authority),
    };
    Ok(Parts {
        credentials,
        brokers: brokers(hosts)?,
        query,
    })
}

/// Whether an `@` follows the point where the authority ends, outside option values:
/// the mark of credentials cut short by an unencoded delimiter.
fn misplaced_at(rest: &str) -> bool {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let names = after
        .split('&')
        .map(|pair| pair.split('=').next().unwrap_or(pair));
    !authority.contains('@') && names.into_iter().any(|name| name.contains('@'))
}

/// The SASL user name and password of `user:password`, percent-decoded.
fn credentials(userinfo: &str) -> Result<(String, String)> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let user = decode(user, "the user name")?;
    let password = decode(password, "the password")?;
    if user.is_empty() {
        return Err(config_error(
            "the Kafka URL has credentials without a user name",
        ));
    }
    Ok((user, password))
}

fn decode(text: &str, what: &str) -> Result<String> {
    let decoded = percent_decode_str(text).decode_utf8().map_err(|_| {
        config_error(format!(
            "{what} in the Kafka URL is not UTF-8 once percent-decoded"
        ))
    })?;
    Ok(decoded.into_owned())
}

/// `host[:port],...` as librdkafka's `bootstrap.servers`, with the default port added.
fn brokers(hosts: &str) -> Result<String> {
    let mut brokers = Vec::new();
    for host in hosts.split(',') {
        brokers.push(broker(host.trim())?);
    }
    Ok(brokers.join(","))
}

fn broker(entry: &str) -> Result<String> {
    if entry.is_empty() {
        return Err(config_error(
            "the Kafka URL names no broker, or has an empty entry in its broker list",
        ));
    }
    // `[v6-address]:port`: the port follows the closing bracket.
    let split_at = match entry.rfind(']') {
        Some(bracket) => entry[bracket..].find(':').map(|colon| bracket + colon),
        None => entry.rfind(':'),
    };
    let (host, port) = match split_at {
        Some(colon) => (&entry[..colon], port(entry, &entry[colon + 1..])?),
        None => (entry, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(config_error(format!(
            "broker `{entry}` in the Kafka URL is not host:port"
        )));
    }
    Ok(format!("{host}:{port}"))
}

fn port(entry: &str, text: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(config_error(format!(
            "broker `{entry}` in the Kafka URL has port `{text}`; a port is 1 to 65535"
        ))),
    }
}

/// Applies one option other than the security ones.
fn apply(config: KafkaConfig, name: &str, value: &str) -> Result<KafkaConfig> {
    Ok(match name {
        "partitions" => config.partitions(number(name, value, 1, "a whole number from 1")?),
        "replication_factor" => config.replication_factor(replication(value)?),
        "session_timeout" => config.session_timeout(duration(name, value)?),
        "commit_interval" => config.commit_interval(duration(name, value)?),
        "idle_timeout" => config.idle_timeout(duration(name, value)?),
        "operation_timeout" => config.operation_timeout(duration(name, value)?),
        "receive_buffer" => config.receive_buffer(number(name, value, 1, "a whole number from 1")?),
        "registry_topic" => {
            check_topic_name(value).map_err(|error| bad_value(name, &error.to_string()))?;
            config.registry_topic(value)
        }
        "client_id" => config.property("client.id", value),
        "ssl_ca_location" => config.property("ssl.ca.location", value),
        _ => match name.strip_prefix(PASS_THROUGH_PREFIX) {
            Some(property) if !property.is_empty() => config.property(property, value),
            _ if is_wharf_option(name) => config,
            _ => return Err(unknown(name)),
        },
    })
}

fn number<T: std::str::FromStr + PartialOrd>(
    name: &str,
    value: &str,
    least: T,
    accepted: &str,
) -> Result<T> {
    match value.parse::<T>() {
        Ok(number) if number >= least => Ok(number),
        _ => Err(bad_value(name, &format!("`{value}` is not {accepted}"))),
    }
}

fn replication(value: &str) -> Result<i32> {
    match value.parse::<i32>() {
        Ok(factor) if factor == -1 || factor >= 1 => Ok(factor),
        _ => Err(bad_value(
            "replication_factor",
            &format!("`{value}` is not -1 (the broker's default) or a whole number from 1"),
        )),
    }
}

fn duration(name: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value).map_err(|_| {
        bad_value(
            name,
            &format!("`{value}` is not a duration such as 500ms, 6s or 2m"),
        )
    })
}

fn security_protocol(value: &str) -> Result<String> {
    let lower = value.to_ascii_lowercase();
    if SECURITY_PROTOCOLS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    Err(bad_value(
        "security_protocol",
        &format!("`{value}` is not one of {}", SECURITY_PROTOCOLS.join(", ")),
    ))
}

fn sasl_mechanism(value: &str) -> Result<String> {
    let upper = value.to_ascii_uppercase();
    if SASL_MECHANISMS.contains(&upper.as_str()) {
        return Ok(upper);
    }
    Err(bad_value(
        "sasl_mechanism",
        &format!("`{value}` is not one of {}", SASL_MECHANISMS.join(", ")),
    ))
}

/// Sets the security protocol, SASL mechanism and credentials. Credentials in the URL
/// mean SASL: over TLS (`sasl_ssl`) with `PLAIN` unless the options say otherwise, so a
/// password is never sent in clear text unless `security_protocol=sasl_plaintext` asks.
fn with_security(
    mut config: KafkaConfig,
    credentials: Option<(String, String)>,
    protocol: Option<String>,
    mechanism: Option<String>,
) -> Result<KafkaConfig> {
    let sasl_default = credentials.is_some() || mechanism.is_some();
    let protocol = protocol.or_else(|| sasl_default.then(|| "sasl_ssl".to_owned()));
    let is_sasl = protocol.as_deref().is_some_and(|p| p.starts_with("sasl_"));
    if sasl_default && !is_sasl {
        return Err(bad_value(
            "security_protocol",
            "credentials or sasl_mechanism need sasl_plaintext or sasl_ssl",
        ));
    }

    if let Some(protocol) = protocol {
        config = config.property("security.protocol", protocol);
    }
    if is_sasl {
        let mechanism = mechanism.unwrap_or_else(|| "PLAIN".to_owned());
        config = config.property("sasl.mechanism", mechanism);
    }
    if let Some((user, password)) = credentials {
        config = config
            .property("sasl.username", user)
            .property("sasl.password", password);
    }
    Ok(config)
}

fn unknown(name: &str) -> Error {
    config_error(format!(
        "unknown Kafka URL option `{name}`; accepted: {}, {PASS_THROUGH_PREFIX}<property>, \
         and wharf's own options",
        OPTIONS.join(", ")
    ))
}

fn bad_value(name: &str, problem: &str) -> Error {
    config_error(format!("Kafka URL option `{name}`: {problem}"))
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        let error = KafkaConfig::from_url(url).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        error.to_string()
    }

    #[test]
    fn a_full_url_sets_brokers_and_options() {
        let config = KafkaConfig::from_url(
            "kafka://b1:9093,b2,[::1]:9094/?partitions=6&replication_factor=3\
             &session_timeout=10s&commit_interval=250ms&idle_timeout=1m\
             &receive_buffer=50&operation_timeout=5s&registry_topic=subs\
             &client_id=billing&librdkafka.fetch.wait.max.ms=100&subscription=billing",
        )
        .unwrap();

        assert_eq!(config.brokers, "b1:9093,b2:9092,[::1]:9094");
        assert_eq!(config.partitions, 6);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.session_timeout, Duration::from_secs(10));
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.receive_buffer, 50);
        assert_eq!(config.operation_timeout, Duration::from_secs(5));
        assert_eq!(config.registry_topic, "subs");
        assert_eq!(config.common["client.id"], "billing");
        assert_eq!(config.common["fetch.wait.max.ms"], "100");
        assert!(!config.common.contains_key("security.protocol"));
    }

    #[test]
    fn credentials_mean_sasl_over_tls_and_stay_out_of_debug() {
        let config = KafkaConfig::from_url("kafka://orders:p%40ss%3Aw0rd@b1:9093").unwrap();

        assert_eq!(config.common["security.protocol"], "sasl_ssl");
        assert_eq!(config.common["sasl.mechanism"], "PLAIN");
        assert_eq!(config.common["sasl.username"], "orders");
        assert_eq!(config.common["sasl.password"], "p@ss:w0rd");
        let shown = format!("{config:?}");
        assert!(!shown.contains("p@ss"), "{shown}");
        assert!(!shown.contains("w0rd"), "{shown}");
    }

    #[test]
    fn security_options_are_normalised() {
        let config = KafkaConfig::from_url(
            "kafka://u:pw@b1?security_protocol=SASL_PLAINTEXT&sasl_mechanism=scram-sha-512\
             &ssl_ca_location=/etc/ca.pem",
        )
        .unwrap();

        assert_eq!(config.common["security.protocol"], "sasl_plaintext");
        assert_eq!(config.common["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(config.common["ssl.ca.location"], "/etc/ca.pem");
    }

    #[test]
    fn unknown_option_is_named_with_the_accepted_ones() {
        let message = refused("kafka://b1:9092?partitons=3");

        assert!(message.contains("`partitons`"), "{message}");
        assert!(message.contains("partitions"), "{message}");
        assert!(message.contains("security_protocol"), "{message}");
        assert!(message.contains("librdkafka.<property>"), "{message}");
    }

    #[test]
    fn bad_values_name_the_option_and_what_it_accepts() {
        let message = refused("kafka://b1?partitions=0");
        assert!(message.contains("`partitions`"), "{message}");
        assert!(message.contains("from 1"), "{message}");

        let message = refused("kafka://b1?session_timeout=soon");
        assert!(message.contains("`session_timeout`"), "{message}");
        assert!(message.contains("500ms"), "{message}");

        let message = refused("kafka://b1?security_protocol=tls");
        assert!(message.contains("sasl_ssl"), "{message}");

        let message = refused("kafka://b1?replication_factor=0");
        assert!(message.contains("-1"), "{message}");
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for url in [
            "kafka://u:hunter2@b1?partitons=3",
            "kafka://u:hunter2@b1?security_protocol=ssl",
            "kafka://u:hunter2@b1:notaport",
            "kafka://u:hunter2@b1?librdkafka.enable.auto.commit=true",
            "kafka://u:hun?ter2@b1",
            "kafka://u:hun#ter2@b1",
            "kafka://u:hun/ter2@b1",
            "amqp://u:hunter2@b1",
        ] {
            let message = refused(url);
            assert!(!message.contains("hunter2"), "{url}: {message}");
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert!(refused("amqp://b1:9092").contains("kafka://"));
        assert!(refused("b1:9092").contains("kafka://"));
        assert!(refused("kafka://").contains("no broker"));
        assert!(refused("kafka://b1,,b2").contains("empty entry"));
        assert!(refused("kafka://b1:99999").contains("65535"));
        assert!(refused("kafka://b1/topic").contains("no path"));
    }

    #[test]
    fn managed_properties_cannot_be_passed_through() {
        let message = refused("kafka://b1?librdkafka.group.id=other");

        assert!(message.contains("group.id"), "{message}");
    }
}
