//! Attributes ↔ AMQP message properties and headers.
//!
//! A wharf message is an ordinary AMQP message: the payload is the body, byte for byte;
//! each attribute is a string header (`longstr`), except `content-type`, which becomes
//! the standard `content_type` property. wharf adds a message id, a timestamp, the
//! persistent delivery mode, and a few bookkeeping headers prefixed `wharf-`, which it
//! strips again on receipt, together with the broker's own dead-letter headers.
//!
//! Headers written by other clients are read whatever their AMQP type: numbers and
//! booleans as their text, byte strings as UTF-8 (invalid bytes replaced), arrays and
//! tables as JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use wharf_core::dead_letter::{self, millis, parse_millis};
use wharf_core::message::CONTENT_TYPE;
use wharf_core::{AckId, Attributes, Error, Message, RawDelivery, Result};

use crate::subscribe::Source;

/// When the message was first published, in milliseconds; the AMQP timestamp property
/// only holds whole seconds.
pub(crate) const PUBLISHED_AT: &str = "wharf-published-at";
/// Deliveries made before this copy was republished by a delayed nack.
pub(crate) const PRIOR_ATTEMPTS: &str = "wharf-prior-attempts";
/// When the first delivery failed, in milliseconds, kept across republished retries.
pub(crate) const FIRST_FAILURE: &str = "wharf-retry-first-failure";
/// The quorum queue's count of earlier deliveries that were returned.
const DELIVERY_COUNT: &str = "x-delivery-count";
/// The broker's record of dead-lettering, newest first.
const DEATHS: &str = "x-death";

/// Headers that are bookkeeping, never the user's attributes.
const BOOKKEEPING: [&str; 10] = [
    PUBLISHED_AT,
    PRIOR_ATTEMPTS,
    FIRST_FAILURE,
    DELIVERY_COUNT,
    DEATHS,
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
];

/// Longest header name AMQP can carry (a `shortstr`).
pub(crate) const MAX_KEY_BYTES: usize = 255;
/// Attribute bytes one message may carry: the content header must fit in one frame of
/// RabbitMQ's default `frame_max` (128 KiB), less room for the other properties.
pub(crate) const MAX_HEADER_BYTES: usize = 120 * 1024;
/// The AMQP delivery mode that makes the broker write the message to disk.
const PERSISTENT: u8 = 2;

/// Bookkeeping carried from one copy of a message to the next.
#[derive(Debug, Clone, Default)]
pub(crate) struct Carry {
    /// The message id to keep, if this is a republished copy.
    pub(crate) id: Option<String>,
    /// When the original was published.
    pub(crate) published_at: Option<SystemTime>,
    /// Deliveries made before this copy.
    pub(crate) prior_attempts: u32,
    /// When the first delivery failed.
    pub(crate) first_failure: Option<SystemTime>,
}

/// Checks what the AMQP encoding limits beyond [`wharf_core::Capabilities`].
pub(crate) fn check(message: &Message) -> Result<()> {
    if let Some(key) = message
        .attributes()
        .keys()
        .find(|k| k.len() > MAX_KEY_BYTES)
    {
        return Err(Error::invalid(format!(
            "attribute key of {} bytes is longer than the {MAX_KEY_BYTES} bytes an AMQP \
             header name can hold",
            key.len()
        )));
    }

    let bytes = wharf_core::message::attributes_size(message.attributes());
    if bytes > MAX_HEADER_BYTES {
        return Err(Error::limit_exceeded(
            "rabbitmq",
            "attribute bytes",
            bytes,
            MAX_HEADER_BYTES,
        ));
    }
    Ok(())
}

/// The AMQP properties of `message`; call [`check`] first.
pub(crate) fn properties(message: &Message, carry: &Carry) -> BasicProperties {
    let now = SystemTime::now();
    let published_at = carry.published_at.unwrap_or(now);
    let id = carry
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());

    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(short(id))
        .with_timestamp(seconds(published_at))
        .with_headers(headers(message.attributes(), carry, published_at));

    if let Some(content_type) = message.attributes().get(CONTENT_TYPE)
        && let Ok(value) = ShortString::try_new(content_type.clone())
    {
        properties = properties.with_content_type(value);
    }
    properties
}

fn headers(attributes: &Attributes, carry: &Carry, published_at: SystemTime) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in attributes {
        if key == CONTENT_TYPE && value.len() <= MAX_KEY_BYTES {
            continue;
        }
        // `check` has rejected longer keys.
        if let Ok(key) = ShortString::try_new(key.clone()) {
            table.insert(key, text(value));
        }
    }

    table.insert(PUBLISHED_AT.into(), text(&millis(published_at).to_string()));
    if carry.prior_attempts > 0 {
        let prior = carry.prior_attempts.to_string();
        table.insert(PRIOR_ATTEMPTS.into(), text(&prior));
    }
    if let Some(first) = carry.first_failure {
        table.insert(FIRST_FAILURE.into(), text(&millis(first).to_string()));
    }
    table
}

/// The properties of a copy of a delivered message that goes back into its queue in
/// place of the original: everything as delivered, without the broker's delivery count
/// (the copy's deliveries are counted afresh), and with wharf's envelope written out
/// where only the broker's `x-death` record carried it, so that it survives brokers
/// that no longer read `x-death` from what clients publish (RabbitMQ 3.13 and later).
pub(crate) fn requeued(properties: &BasicProperties, attributes: &Attributes) -> BasicProperties {
    let table = properties.headers().clone().unwrap_or_default();
    let mut kept: std::collections::BTreeMap<ShortString, AMQPValue> = table
        .inner()
        .iter()
        .filter(|(key, _)| key.as_str() != DELIVERY_COUNT)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();

    for key in [
        dead_letter::REASON,
        dead_letter::SOURCE,
        dead_letter::ATTEMPTS,
    ] {
        if let Some(value) = attributes.get(key)
            && !kept.contains_key(key)
        {
            kept.insert(key.into(), text(value));
        }
    }
    properties.clone().with_headers(FieldTable::from(kept))
}

/// What wharf reads from one AMQP delivery.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) id: String,
    pub(crate) payload: Bytes,
    pub(crate) attributes: Attributes,
    pub(crate) attempt: u32,
    pub(crate) carry: Carry,
}

impl Incoming {
    /// The delivery as core sees it, settled through `ack_id`.
    pub(crate) fn into_raw(self, ack_id: AckId) -> RawDelivery {
        RawDelivery {
            id: self.id,
            payload: self.payload,
            attributes: self.attributes,
            ordering_key: None,
            attempt: self.attempt,
            published_at: self.carry.published_at.unwrap_or_else(SystemTime::now),
            first_failure: self.carry.first_failure,
            ack_id,
        }
    }
}

/// Reads a delivery from `source`. Where the queue keeps no `x-delivery-count`, a
/// redelivered message counts as one earlier attempt.
pub(crate) fn incoming(delivery: Delivery, source: &Source) -> Incoming {
    let table = delivery.properties.headers().clone().unwrap_or_default();
    let table = table.inner();
    let number = |key: &str| table.get(key).and_then(as_u64);

    let returned = match number(DELIVERY_COUNT) {
        Some(count) => count,
        None if !source.counted && delivery.redelivered => 1,
        None => 0,
    };
    let prior = number(PRIOR_ATTEMPTS).unwrap_or(0);
    let attempt = u32::try_from(prior + returned + 1).unwrap_or(u32::MAX);

    let published_at = number(PUBLISHED_AT)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        .or_else(|| property_time(&delivery.properties));
    let first_failure = table
        .get(FIRST_FAILURE)
        .and_then(|v| parse_millis(&to_text(v)));
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());

    Incoming {
        id: id
            .clone()
            .unwrap_or_else(|| format!("rabbitmq-{}", uuid::Uuid::now_v7())),
        attributes: attributes(table, &delivery.properties, prior, source.delivery_limit),
        payload: Bytes::from(delivery.data),
        attempt,
        carry: Carry {
            id,
            published_at,
            prior_attempts: attempt,
            first_failure,
        },
    }
}

fn attributes(
    table: &std::collections::BTreeMap<ShortString, AMQPValue>,
    properties: &BasicProperties,
    prior: u64,
    delivery_limit: Option<u32>,
) -> Attributes {
    let mut attributes: Attributes = table
        .iter()
        .filter(|(key, _)| !BOOKKEEPING.contains(&key.as_str()))
        .map(|(key, value)| (key.to_string(), to_text(value)))
        .collect();

    if let Some(content_type) = properties.content_type() {
        attributes
            .entry(CONTENT_TYPE.to_owned())
            .or_insert_with(|| content_type.to_string());
    }
    if !attributes.contains_key(dead_letter::REASON) {
        add_broker_envelope(table, &mut attributes, prior, delivery_limit);
    }
    attributes
}

/// A message the broker itself dead-lettered (delivery limit, rejection, queue length)
/// gets the same envelope wharf writes, built from the newest `x-death` entry.
///
/// The attempts are known only for the delivery limit, and only with the limit: the
/// broker does not carry the source queue's delivery count over (an `x-delivery-count`
/// here is the dead-letter queue's own), so they are the limit's deliveries plus those
/// of earlier copies (`prior`).
fn add_broker_envelope(
    table: &std::collections::BTreeMap<ShortString, AMQPValue>,
    attributes: &mut Attributes,
    prior: u64,
    delivery_limit: Option<u32>,
) {
    let Some(AMQPValue::FieldArray(deaths)) = table.get(DEATHS) else {
        return;
    };
    let Some(AMQPValue::FieldTable(newest)) = deaths.as_slice().first() else {
        return;
    };
    let field = |key: &str| newest.inner().get(key).map(to_text);
    let Some(reason) = field("reason") else {
        return;
    };
    // Expiry is how wharf's delay queues hand messages back; it is not a failure.
    if reason == "expired" {
        return;
    }

    attributes.insert(
        dead_letter::REASON.to_owned(),
        format!("RabbitMQ dead-lettered the message: {reason}"),
    );
    if let Some(queue) = field("queue") {
        attributes.insert(dead_letter::SOURCE.to_owned(), queue);
    }
    if reason == "delivery_limit"
        && let Some(limit) = delivery_limit
    {
        let attempts = prior + u64::from(limit);
        attributes.insert(dead_letter::ATTEMPTS.to_owned(), attempts.to_string());
    }
}

/// A header value as text, whatever its AMQP type.
pub(crate) fn to_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Void => String::new(),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => to_json(value).to_string(),
        scalar => match to_json(scalar) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        },
    }
}

fn to_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::FieldArray(items) => Value::Array(array_json(items)),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
        text => Value::String(to_text(text)),
    }
}

fn array_json(items: &FieldArray) -> Vec<serde_json::Value> {
    items.as_slice().iter().map(to_json).collect()
}

fn as_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        other => to_text(other).trim().parse().ok(),
    }
}

fn property_time(properties: &BasicProperties) -> Option<SystemTime> {
    properties
        .timestamp()
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

fn seconds(time: SystemTime) -> u64 {
    millis(time) / 1000
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// A `shortstr` from text wharf generated itself, which is always short enough.
fn short(value: String) -> ShortString {
    ShortString::try_new(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::DecimalValue;

    #[test]
    fn foreign_header_types_read_as_text() {
        let array = FieldArray::from(vec![AMQPValue::LongInt(1), text("a")]);

        assert_eq!(to_text(&AMQPValue::LongLongInt(-42)), "-42");
        assert_eq!(to_text(&AMQPValue::Boolean(true)), "true");
        assert_eq!(to_text(&AMQPValue::Double(1.5)), "1.5");
        assert_eq!(to_text(&AMQPValue::FieldArray(array)), r#"[1,"a"]"#);
        let decimal = DecimalValue {
            scale: 2,
            value: 1234,
        };
        assert_eq!(to_text(&AMQPValue::DecimalValue(decimal)), "12.34");
    }

    #[test]
    fn overlong_attribute_key_is_refused_with_its_length() {
        let message = Message::new("x").with_attribute("k".repeat(256), "v");

        let error = check(&message).unwrap_err();

        assert!(error.to_string().contains("256 bytes"), "{error}");
    }

    #[test]
    fn content_type_becomes_the_property_not_a_header() {
        let message = Message::new("{}").with_attribute(CONTENT_TYPE, "application/json");

        let properties = properties(&message, &Carry::default());

        let content_type = properties.content_type().as_ref().map(|c| c.to_string());
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let headers = properties.headers().clone().unwrap_or_default();
        assert!(!headers.contains_key(CONTENT_TYPE));
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
    }
}
