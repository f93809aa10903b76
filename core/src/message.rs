//! What a publisher sends: [`Message`] and its [`Attributes`].
//!
//! A message is opaque bytes plus string attributes. Everything else on it (ordering key,
//! deduplication id, delivery delay) is a request the backend honours or refuses with an
//! [`Unsupported`](crate::ErrorKind::Unsupported) error; nothing is silently dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

/// String attributes (headers) of a message, ordered by key.
pub type Attributes = BTreeMap<String, String>;

/// A message to publish.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::Message;
///
/// let message = Message::new(&b"\x00\xffraw bytes"[..])
///     .with_attribute("content-type", "application/octet-stream")
///     .with_ordering_key("customer-42")
///     .with_delay(Duration::from_secs(5));
/// assert_eq!(message.payload().len(), 11);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    payload: Bytes,
    attributes: Attributes,
    ordering_key: Option<String>,
    deduplication_id: Option<String>,
    delay: Option<Duration>,
}

impl Message {
    /// A message carrying `payload`, which may be any bytes, including none.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            attributes: Attributes::new(),
            ordering_key: None,
            deduplication_id: None,
            delay: None,
        }
    }

    /// A message whose payload is `value` as JSON, with `content-type: application/json`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] if `value` cannot be serialised.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                "value cannot be written as JSON",
            )
            .with_source(e)
        })?;

        Ok(Self::new(payload).with_attribute(CONTENT_TYPE, JSON))
    }

    /// Adds or replaces one attribute.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Replaces all attributes.
    #[must_use]
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Messages with the same key are delivered in publish order, where the backend
    /// supports ordering; on Kafka the key also chooses the partition.
    #[must_use]
    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Lets backends that deduplicate drop a second publish with the same id.
    #[must_use]
    pub fn with_deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.deduplication_id = Some(id.into());
        self
    }

    /// Keeps the message from consumers until `delay` after it is published.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// Mutable access to the attributes, for adapters and middleware.
    pub fn attributes_mut(&mut self) -> &mut Attributes {
        &mut self.attributes
    }

    /// The ordering key, if any.
    pub fn ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref()
    }

    /// The deduplication id, if any.
    pub fn deduplication_id(&self) -> Option<&str> {
        self.deduplication_id.as_deref()
    }

    /// The delivery delay, if any.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// Bytes this message counts against a backend's size limit: the payload plus every
    /// attribute key and value. This is how SQS and Pub/Sub count; others count less.
    pub fn size(&self) -> usize {
        self.payload.len() + attributes_size(&self.attributes)
    }
}

/// Bytes the keys and values of `attributes` take.
pub fn attributes_size(attributes: &Attributes) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Hand-written so that payloads, which may hold personal data, never reach a log.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("payload_bytes", &self.payload.len())
            .field(
                "attribute_keys",
                &self.attributes.keys().collect::<Vec<_>>(),
            )
            .field("ordering_key", &self.ordering_key)
            .field("deduplication_id", &self.deduplication_id)
            .field("delay", &self.delay)
            .finish()
    }
}

/// The attribute that names the payload's media type.
pub const CONTENT_TYPE: &str = "content-type";
const JSON: &str = "application/json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_counts_payload_and_attribute_text() {
        let message = Message::new(vec![0u8; 10]).with_attribute("ab", "cde");

        assert_eq!(message.size(), 15);
    }

    #[test]
    fn json_sets_the_content_type() {
        let message = Message::json(&serde_json::json!({"id": 7})).unwrap();

        assert_eq!(message.attributes()[CONTENT_TYPE], "application/json");
        assert_eq!(&message.payload()[..], br#"{"id":7}"#);
    }

    #[test]
    fn debug_never_shows_the_payload() {
        let message = Message::new("secret-card-number").with_attribute("k", "v");

        let shown = format!("{message:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("payload_bytes: 18"), "{shown}");
    }
}
