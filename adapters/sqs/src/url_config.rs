//! Reading an [`SqsConfig`] from an `sqs://` URL, the form `wharf::connect` takes.
//!
//! `sqs://[KEY:SECRET@][HOST[:PORT]][?option=value&...]`: no host (or the host `aws`)
//! means AWS itself, any other host an emulator such as LocalStack. The query is read
//! option by option; wharf's own options (see [`wharf_core::url_options`]) are skipped,
//! anything else unknown is refused, and no error ever repeats the secret key.

use percent_encoding::percent_decode_str;
use url::Url;
use wharf_core::url_options::{backend_options, unknown_option};
use wharf_core::{Error, ErrorKind, Result};

use crate::config::{SqsConfig, StaticCredentials};

/// The URL scheme of SQS backends.
pub const SCHEME: &str = "sqs";

/// The host that stands for AWS itself, as does no host at all.
pub(crate) const AWS_HOST: &str = "aws";

/// The options an `sqs://` URL accepts, besides wharf's own.
pub const URL_OPTIONS: [&str; 5] = [
    "region",
    "endpoint",
    "tls",
    "profile",
    "content_based_deduplication",
];

/// What the query sets, before it is checked against the rest of the URL.
#[derive(Default)]
struct Options {
    region: Option<String>,
    endpoint: Option<String>,
    tls: Option<bool>,
    profile: Option<String>,
    content_based_deduplication: Option<bool>,
}

/// Reads `url` into a configuration; see [`SqsConfig::from_url`].
pub(crate) fn parse(url: &str) -> Result<SqsConfig> {
    let parsed = Url::parse(url).map_err(|e| config_error(format!("malformed SQS URL: {e}")))?;
    if parsed.scheme() != SCHEME {
        return Err(config_error(format!(
            "an SQS URL starts with {SCHEME}://, not {}://",
            parsed.scheme()
        )));
    }
    if !matches!(parsed.path(), "" | "/") {
        return Err(config_error(
            "an sqs:// URL has no path: queues are named by the topic and subscription, \
             not by the URL"
                .to_owned(),
        ));
    }

    let options = read_options(&parsed)?;
    let mut config = SqsConfig::new();
    config.endpoint = endpoint(&parsed, &options)?;
    config.region = options.region;
    config.profile = options.profile;
    config.content_based_deduplication = options.content_based_deduplication.unwrap_or(false);
    config.credentials = credentials(&parsed)?;
    Ok(config)
}

fn read_options(parsed: &Url) -> Result<Options> {
    let mut options = Options::default();

    for (name, value) in backend_options("SQS", parsed.query_pairs())? {
        match &*name {
            "region" => options.region = Some(region(&value)?),
            "endpoint" => options.endpoint = Some(endpoint_option(&value)?),
            "tls" => options.tls = Some(boolean("tls", &value)?),
            "profile" => options.profile = Some(profile(&value)?),
            "content_based_deduplication" => {
                let on = boolean("content_based_deduplication", &value)?;
                options.content_based_deduplication = Some(on);
            }
            other => return Err(unknown_option("SQS", other, &URL_OPTIONS)),
        }
    }
    Ok(options)
}

/// The endpoint: the `endpoint` option, or the URL's host unless it means AWS.
fn endpoint(parsed: &Url, options: &Options) -> Result<Option<String>> {
    let host = parsed.host_str().unwrap_or_default();
    let is_aws = host.is_empty() || host == AWS_HOST;

    match (&options.endpoint, is_aws, options.tls) {
        (Some(_), false, _) => Err(config_error(
            "SQS URL gives an endpoint twice, as its host and as `endpoint`; keep one".to_owned(),
        )),
        (Some(_), true, Some(_)) | (None, true, Some(_)) => Err(config_error(
            "SQS URL option `tls` applies to an emulator host only: AWS is always reached \
             over https, and an `endpoint` option names its own scheme"
                .to_owned(),
        )),
        (Some(endpoint), true, None) => Ok(Some(endpoint.clone())),
        (None, true, None) => Ok(None),
        (None, false, tls) => {
            let scheme = if tls.unwrap_or(false) {
                "https"
            } else {
                "http"
            };
            Ok(Some(match parsed.port() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }))
        }
    }
}

/// Static credentials from the URL's user info, percent-decoded.
fn credentials(parsed: &Url) -> Result<Option<StaticCredentials>> {
    let key = parsed.username();
    let secret = parsed.password();
    match (key.is_empty(), secret) {
        (true, None) => Ok(None),
        (false, Some(secret)) if !secret.is_empty() => Ok(Some(StaticCredentials {
            access_key_id: decoded(key, "access key id")?,
            secret_access_key: decoded(secret, "secret access key")?,
        })),
        _ => Err(config_error(
            "SQS URL credentials need both parts, KEY:SECRET@, or none at all".to_owned(),
        )),
    }
}

fn decoded(text: &str, what: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            config_error(format!(
                "the {what} in the SQS URL is not percent-encoded UTF-8"
            ))
        })
}

/// An AWS region name: lowercase letters, digits and hyphens, such as `eu-west-1`.
fn region(value: &str) -> Result<String> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        return Ok(value.to_owned());
    }
    Err(config_error(format!(
        "SQS URL option `region` takes an AWS region name of lowercase letters, digits \
         and hyphens, such as `us-east-1`; got `{value}`"
    )))
}

/// A profile name of the shared AWS configuration files.
fn profile(value: &str) -> Result<String> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(config_error(
            "SQS URL option `profile` takes the name of a profile of the shared AWS \
             configuration files, such as `default`"
                .to_owned(),
        ));
    }
    Ok(value.to_owned())
}

/// An `http://` or `https://` URL without credentials. The value is not repeated in the
/// error: a mistyped one might hold something secret.
fn endpoint_option(value: &str) -> Result<String> {
    let bad = || {
        config_error(
            "SQS URL option `endpoint` takes an http:// or https:// URL without user \
             info, such as `https://sqs.eu-west-1.amazonaws.com`; credentials go in \
             the sqs:// URL itself (sqs://KEY:SECRET@...)"
                .to_owned(),
        )
    };
    let endpoint = Url::parse(value).map_err(|_| bad())?;
    let usable = matches!(endpoint.scheme(), "http" | "https")
        && endpoint.has_host()
        && endpoint.username().is_empty()
        && endpoint.password().is_none();
    if !usable {
        return Err(bad());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn boolean(option: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(config_error(format!(
            "SQS URL option `{option}` takes `true` or `false`; got `{other}`"
        ))),
    }
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
    fn an_emulator_url_sets_endpoint_region_and_credentials() {
        let config = parse("sqs://test:s3cret@127.0.0.1:4566?region=us-east-1").unwrap();

        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        let credentials = config.credentials.as_ref().unwrap();
        assert_eq!(credentials.access_key_id, "test");
        assert_eq!(credentials.secret_access_key, "s3cret");
    }

    #[test]
    fn a_bare_url_means_aws_and_the_standard_chain() {
        for url in ["sqs://", "sqs://aws", "sqs://aws/?region=eu-west-1"] {
            let config = parse(url).unwrap();

            assert_eq!(config.endpoint, None, "{url}");
            assert!(config.credentials.is_none(), "{url}");
            assert!(!config.content_based_deduplication, "{url}");
        }
    }

    #[test]
    fn every_option_is_read() {
        let config = parse(
            "sqs://aws?region=eu-west-1&endpoint=https://sqs.eu-west-1.amazonaws.com/\
             &profile=billing&content_based_deduplication=true",
        )
        .unwrap();

        assert_eq!(config.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.endpoint.as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com")
        );
        assert_eq!(config.profile.as_deref(), Some("billing"));
        assert!(config.content_based_deduplication);
    }

    #[test]
    fn tls_reaches_the_host_over_https() {
        let config = parse("sqs://sqs.internal:8443?tls=true").unwrap();

        assert_eq!(
            config.endpoint.as_deref(),
            Some("https://sqs.internal:8443")
        );
    }

    #[test]
    fn wharf_options_are_left_to_wharf() {
        let config =
            parse("sqs://127.0.0.1:4566?subscription=billing&lease=30s&max_attempts=5").unwrap();

        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    }

    #[test]
    fn an_unknown_option_is_named_with_the_accepted_ones() {
        let error = refused("sqs://aws?regoin=eu-west-1");

        let text = error.to_string();
        assert!(text.contains("`regoin`"), "{text}");
        for option in URL_OPTIONS {
            assert!(text.contains(option), "{text} lacks {option}");
        }
    }

    #[test]
    fn a_bad_value_names_the_option_and_what_it_takes() {
        let error = refused("sqs://127.0.0.1:4566?tls=yes");
        assert!(
            error.to_string().contains("`tls` takes `true` or `false`"),
            "{error}"
        );

        let error = refused("sqs://aws?content_based_deduplication=1");
        assert!(
            error.to_string().contains("content_based_deduplication"),
            "{error}"
        );

        let error = refused("sqs://aws?region=EU%20West");
        assert!(error.to_string().contains("`region`"), "{error}");

        let error = refused("sqs://aws?endpoint=ftp://example.com");
        assert!(error.to_string().contains("`endpoint`"), "{error}");
    }

    #[test]
    fn conflicting_or_repeated_settings_are_refused() {
        refused("sqs://127.0.0.1:4566?endpoint=http://127.0.0.1:4567");
        refused("sqs://aws?tls=true");
        refused("sqs://aws?region=us-east-1&region=eu-west-1");
        refused("sqs://127.0.0.1:4566/queue/orders");
        refused("amqp://127.0.0.1:4566");
    }

    #[test]
    fn the_secret_never_appears_in_errors_or_debug() {
        let config = parse("sqs://AKIDEXAMPLE:s3cr%2Ft@127.0.0.1:4566").unwrap();
        let credentials = config.credentials.as_ref().unwrap();
        assert_eq!(credentials.secret_access_key, "s3cr/t", "percent-decoded");
        assert!(!format!("{config:?}").contains("s3cr"), "{config:?}");

        for url in [
            "sqs://key:s3cret@127.0.0.1:4566?tls=maybe",
            "sqs://key:s3cret@127.0.0.1:4566?nope=1",
            "sqs://key:s3cret@aws?endpoint=http://key:s3cret@host",
            "sqs://key:s3cret@[bad",
        ] {
            let error = refused(url);
            assert!(
                !format!("{error} {error:?}").contains("s3cret"),
                "{error:?}"
            );
        }
    }

    #[test]
    fn half_credentials_are_refused() {
        refused("sqs://keyonly@127.0.0.1:4566");
        refused("sqs://:secretonly@127.0.0.1:4566");
    }
}
