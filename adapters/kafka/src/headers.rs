//! Attributes as Kafka record headers, and the few bookkeeping headers wharf adds to
//! records it re-publishes to a retry topic.
//!
//! A user's attributes travel as ordinary UTF-8 headers, so any Kafka client reads them.
//! Bookkeeping headers use the `wharf-` prefix and are removed again on receipt; the
//! dead-letter envelope headers (see [`wharf_core::dead_letter`]) are not bookkeeping and
//! stay visible to whoever reads the dead-letter topic.

use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing::warn;
use wharf_core::Attributes;
use wharf_core::dead_letter::{millis, parse_millis};

/// Which delivery the retried record will be (1 is the first).
pub(crate) const ATTEMPT: &str = "wharf-attempt";
/// Milliseconds since the Unix epoch before which a retried record must not be handed
/// to a handler.
pub(crate) const NOT_BEFORE: &str = "wharf-not-before";
/// When the record's first delivery failed, in milliseconds since the Unix epoch.
pub(crate) const FAILED_FIRST: &str = "wharf-failed-first";
/// When the original record was published, in milliseconds since the Unix epoch.
pub(crate) const PUBLISHED_AT: &str = "wharf-published-at";
/// The delivery id of the original record, kept the same on every attempt.
pub(crate) const ORIGIN: &str = "wharf-origin";

/// A retried record's history, written as bookkeeping headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bookkeeping {
    pub(crate) attempt: u32,
    pub(crate) not_before: SystemTime,
    pub(crate) failed_first: SystemTime,
    pub(crate) published_at: SystemTime,
    pub(crate) origin: String,
}

/// What a received record's headers say.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// The user's attributes, without bookkeeping.
    pub(crate) attributes: Attributes,
    pub(crate) attempt: Option<u32>,
    pub(crate) not_before: Option<SystemTime>,
    pub(crate) failed_first: Option<SystemTime>,
    pub(crate) published_at: Option<SystemTime>,
    pub(crate) origin: Option<String>,
}

/// The user's attributes as headers, in key order.
pub(crate) fn encode(attributes: &Attributes) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(attributes.len());
    for (key, value) in attributes {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// The user's attributes plus a retried record's bookkeeping.
pub(crate) fn encode_retry(attributes: &Attributes, history: &Bookkeeping) -> OwnedHeaders {
    let times = [
        (NOT_BEFORE, history.not_before),
        (FAILED_FIRST, history.failed_first),
        (PUBLISHED_AT, history.published_at),
    ];
    let mut headers = encode(attributes).insert(Header {
        key: ATTEMPT,
        value: Some(history.attempt.to_string().as_bytes()),
    });
    for (key, time) in times {
        headers = headers.insert(Header {
            key,
            value: Some(millis(time).to_string().as_bytes()),
        });
    }
    headers.insert(Header {
        key: ORIGIN,
        value: Some(history.origin.as_bytes()),
    })
}

/// Splits received headers into the user's attributes and wharf's bookkeeping.
///
/// Kafka headers are bytes and may repeat a key; wharf attributes are unique UTF-8
/// strings, so a repeated key keeps its last value (as Kafka's own clients do for
/// `lastHeader`) and bytes that are not UTF-8 are replaced, with a warning naming the key.
pub(crate) fn decode<H: Headers>(headers: Option<&H>) -> Decoded {
    let mut decoded = Decoded::default();
    let Some(headers) = headers else {
        return decoded;
    };

    for header in headers.iter() {
        let value = text(header.key, header.value.unwrap_or_default());
        match header.key {
            ATTEMPT => decoded.attempt = value.parse().ok(),
            NOT_BEFORE => decoded.not_before = parse_millis(&value),
            FAILED_FIRST => decoded.failed_first = parse_millis(&value),
            PUBLISHED_AT => decoded.published_at = parse_millis(&value),
            ORIGIN => decoded.origin = Some(value),
            key => {
                decoded.attributes.insert(key.to_owned(), value);
            }
        }
    }
    decoded
}

fn text(key: &str, bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            warn!(
                header = key,
                bytes = bytes.len(),
                "header value is not UTF-8; replacing bytes"
            );
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// A Kafka timestamp in milliseconds as a time, if it is set.
pub(crate) fn from_millis(ms: Option<i64>) -> Option<SystemTime> {
    let ms = u64::try_from(ms?).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Bookkeeping {
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        Bookkeeping {
            attempt: 3,
            not_before: at(1_700_000_005_000),
            failed_first: at(1_700_000_001_000),
            published_at: at(1_700_000_000_000),
            origin: "orders/2/41".into(),
        }
    }

    #[test]
    fn bookkeeping_round_trips_and_is_stripped_from_attributes() {
        let attributes = Attributes::from([("tenant".to_owned(), "acme".to_owned())]);

        let headers = encode_retry(&attributes, &history());
        let decoded = decode(Some(&headers));

        assert_eq!(decoded.attributes, attributes);
        assert_eq!(decoded.attempt, Some(3));
        assert_eq!(decoded.not_before, Some(history().not_before));
        assert_eq!(decoded.failed_first, Some(history().failed_first));
        assert_eq!(decoded.published_at, Some(history().published_at));
        assert_eq!(decoded.origin.as_deref(), Some("orders/2/41"));
    }

    #[test]
    fn foreign_headers_become_attributes_with_the_last_value_winning() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "k",
                value: Some(&b"first"[..]),
            })
            .insert(Header {
                key: "k",
                value: Some(&b"second"[..]),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            })
            .insert(Header {
                key: "bin",
                value: Some(&[0xff, b'a'][..]),
            });

        let decoded = decode(Some(&headers));

        assert_eq!(decoded.attributes["k"], "second");
        assert_eq!(decoded.attributes["empty"], "");
        assert_eq!(decoded.attributes["bin"], "\u{fffd}a");
        assert_eq!(decoded.attempt, None);
    }
}
