//! Opening a backend from a URL, so the broker is a matter of configuration.
//!
//! | Scheme | Backend | Cargo feature |
//! |---|---|---|
//! | `mem://NAME` | in-memory broker shared by every `connect` with the same `NAME` | `memory` |
//! | `amqp://`, `amqps://` | RabbitMQ | `rabbitmq` |
//! | `kafka://HOST:PORT[,HOST:PORT...]` | Apache Kafka | `kafka` |
//! | `sqs://` | Amazon SQS | `sqs` |
//! | `pubsub://PROJECT` | Google Cloud Pub/Sub | `pubsub` |

use std::sync::Arc;

use wharf_core::{Backend, Error, ErrorKind, Result};

/// A backend wharf knows, and whether this build includes it.
struct Scheme {
    schemes: &'static [&'static str],
    backend: &'static str,
    feature: &'static str,
    compiled: bool,
}

const SCHEMES: &[Scheme] = &[
    Scheme {
        schemes: &["mem"],
        backend: "memory",
        feature: "memory",
        compiled: cfg!(feature = "memory"),
    },
    Scheme {
        schemes: &["amqp", "amqps"],
        backend: "RabbitMQ",
        feature: "rabbitmq",
        compiled: cfg!(feature = "rabbitmq"),
    },
    Scheme {
        schemes: &["kafka"],
        backend: "Kafka",
        feature: "kafka",
        compiled: cfg!(feature = "kafka"),
    },
    Scheme {
        schemes: &["sqs"],
        backend: "SQS",
        feature: "sqs",
        compiled: cfg!(feature = "sqs"),
    },
    Scheme {
        schemes: &["pubsub"],
        backend: "Pub/Sub",
        feature: "pubsub",
        compiled: cfg!(feature = "pubsub"),
    },
];

/// Opens the backend `url` names.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio_test_block(async {
/// let backend = wharf::connect("mem://orders").await?;
/// assert_eq!(backend.capabilities().backend, "memory");
/// # Ok::<(), wharf::Error>(())
/// # });
/// # #[cfg(feature = "memory")]
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f)
/// # }
/// ```
///
/// # Errors
///
/// [`Config`](ErrorKind::Config) for a malformed URL, for an unknown scheme (naming the
/// backends this build includes), or for a known backend whose cargo feature is off
/// (naming the feature to turn on); the backend's own error if it cannot connect.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    let scheme = find_scheme(scheme_of(url)?)?;
    if !scheme.compiled {
        return Err(missing_feature(scheme));
    }
    open(scheme.schemes[0], url).await
}

/// The scheme of `url`, read without parsing the rest: a Kafka URL lists several
/// brokers (`kafka://a:9092,b:9092`), which is not a valid URL authority.
fn scheme_of(url: &str) -> Result<&str> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if is_scheme(scheme) => Ok(scheme),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "backend URL `{}` is malformed: it has no `scheme://`; expected e.g. \
                 mem://orders, amqp://HOST:5672/%2f, kafka://HOST:9092, sqs://REGION, \
                 pubsub://PROJECT",
                redact(url)
            ),
        )),
    }
}

fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn find_scheme(name: &str) -> Result<&'static Scheme> {
    SCHEMES
        .iter()
        .find(|s| s.schemes.contains(&name))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("unknown backend URL scheme `{name}://`; {}", compiled_in()),
            )
        })
}

fn missing_feature(scheme: &Scheme) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the {} backend is not compiled in; enable the `{}` feature of the `wharf` \
             crate; {}",
            scheme.backend,
            scheme.feature,
            compiled_in()
        ),
    )
}

fn compiled_in() -> String {
    let names: Vec<String> = SCHEMES
        .iter()
        .filter(|s| s.compiled)
        .map(|s| format!("{}:// ({})", s.schemes[0], s.backend))
        .collect();
    if names.is_empty() {
        return "this build includes no backend: enable one of the features memory, rabbitmq, \
                kafka, sqs, pubsub"
            .to_owned();
    }
    format!("this build includes {}", names.join(", "))
}

/// Opens the backend for `scheme` (the first name of a compiled-in [`Scheme`]).
#[allow(unused_variables)]
async fn open(scheme: &str, url: &str) -> Result<Arc<dyn Backend>> {
    match scheme {
        #[cfg(feature = "memory")]
        "mem" => Ok(Arc::new(open_memory(url)?)),
        #[cfg(feature = "rabbitmq")]
        "amqp" => Ok(Arc::new(wharf_rabbitmq::RabbitMq::from_url(url).await?)),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Arc::new(wharf_kafka::KafkaBackend::from_url(url).await?)),
        #[cfg(feature = "sqs")]
        "sqs" => Ok(Arc::new(wharf_sqs::SqsBackend::from_url(url).await?)),
        #[cfg(feature = "pubsub")]
        "pubsub" => Ok(Arc::new(wharf_pubsub::PubSubBackend::from_url(url).await?)),
        other => Err(Error::new(
            ErrorKind::Internal,
            format!("the {other}:// backend is compiled in but has no opener"),
        )),
    }
}

/// `mem://NAME`: the in-memory broker called `NAME`, which takes no options of its own.
#[cfg(feature = "memory")]
fn open_memory(url: &str) -> Result<wharf_memory::MemoryBackend> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("backend URL `{}` is malformed: {e}", redact(url)),
        )
    })?;
    if let Some((option, _)) = parsed
        .query_pairs()
        .find(|(name, _)| !wharf_core::url_options::is_wharf_option(name))
    {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "option `{option}` is not known to the memory backend; it accepts only \
                 wharf's own options: {}",
                wharf_core::url_options::WHARF_URL_OPTIONS.join(", ")
            ),
        ));
    }
    Ok(named_memory_backend(parsed.host_str().unwrap_or_default()))
}

/// In-memory brokers by name, so two `connect("mem://orders")` calls in one process
/// reach the same queues.
#[cfg(feature = "memory")]
fn named_memory_backend(name: &str) -> wharf_memory::MemoryBackend {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    static BROKERS: OnceLock<Mutex<HashMap<String, wharf_memory::MemoryBackend>>> = OnceLock::new();
    let mut brokers = BROKERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    brokers.entry(name.to_owned()).or_default().clone()
}

/// `url` with any password replaced, safe for errors and logs.
///
/// Works on URLs the `url` crate cannot parse too (a Kafka broker list): whatever sits
/// between `://` and the last `@` of the authority is reduced to the user name.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let tail = redact_query(tail);
            format!("{scheme}://{user}:****@{hosts}{tail}")
        }
        None => format!("{scheme}://{authority}{}", redact_query(tail)),
    }
}

/// Query parameters whose values are secrets in some backend's URL; [`redact`] hides
/// them, and so should anything else that prints a URL.
pub const SECRET_OPTIONS: [&str; 5] = [
    "password",
    "sasl_password",
    "secret_access_key",
    "ssl_key_password",
    "token",
];

fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_OPTIONS.contains(&name) => format!("{name}=****"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_names_what_is_compiled_in() {
        let error = connect("nats://localhost")
            .await
            .err()
            .expect("unknown scheme refused");

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("nats://"), "{error}");
        assert!(error.to_string().contains("this build"), "{error}");
    }

    #[tokio::test]
    async fn malformed_url_is_a_config_error() {
        let error = connect("not a url")
            .await
            .err()
            .expect("malformed URL refused");

        assert_eq!(error.kind(), ErrorKind::Config);
    }

    #[test]
    fn broker_lists_and_secret_options_are_redacted() {
        let shown = redact("kafka://app:pw@a:9092,b:9092?sasl_password=pw2&partitions=3");

        assert_eq!(
            shown,
            "kafka://app:****@a:9092,b:9092?sasl_password=****&partitions=3"
        );
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn the_same_memory_name_reaches_the_same_broker() {
        let first = connect("mem://shared-by-name").await.expect("opens");
        first.create_topic("t").await.expect("creates");

        let second = connect("mem://shared-by-name?concurrency=3")
            .await
            .expect("opens");

        second.publisher("t").await.expect("the topic is there");
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn unknown_memory_option_is_named() {
        let error = connect("mem://x?prefetch=3").await.err().expect("refused");

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("prefetch"), "{error}");
    }

    #[test]
    fn a_backend_left_out_of_the_build_names_its_feature() {
        let kafka = find_scheme("kafka").expect("a known scheme");

        let error = missing_feature(kafka);

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("`kafka` feature"), "{error}");
        assert!(error.to_string().contains("this build"), "{error}");
    }

    #[test]
    fn amqps_is_the_rabbitmq_backend() {
        let scheme = find_scheme("amqps").expect("a known scheme");

        assert_eq!(scheme.backend, "RabbitMQ");
        assert_eq!(scheme.schemes[0], "amqp");
    }

    #[test]
    fn passwords_are_redacted() {
        let shown = redact("amqp://user:hunter2@localhost:5672/%2f");

        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("****"), "{shown}");
    }
}
