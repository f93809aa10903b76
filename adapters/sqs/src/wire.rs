//! How a wharf [`Message`] looks on SQS, and back.
//!
//! An SQS body is text of XML characters, and an attribute needs a name SQS accepts and a
//! non-empty value. wharf sends what fits as is, so another SQS client reads a wharf
//! message unchanged: a UTF-8 payload becomes the body, attributes become `String`
//! message attributes. What does not fit is carried in one attribute of wharf's own,
//! [`BOOKKEEPING`], whose value starts with JSON:
//!
//! - `"body": "attribute"` when the payload is not XML text: the attribute is then of
//!   type `Binary`, its value the JSON, a newline and the payload's raw bytes, and the
//!   body is a placeholder (`-`). SQS counts a binary value by its bytes, so binary
//!   payloads get the whole size limit, where base64 in the body would cost a third;
//! - `"body": "empty"` for an empty payload, which SQS refuses (the body is then `-`);
//! - `"attributes"`: attributes SQS cannot carry natively (a name it refuses, an empty
//!   value, a value with non-XML characters) and the dead-letter envelope, whose five
//!   keys would otherwise eat half of the ten-attribute budget.
//!
//! A plain message has no bookkeeping attribute at all. On receive, the bookkeeping is
//! undone and removed, so the user sees exactly the payload and attributes published.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message as SqsMessage, MessageAttributeValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wharf_core::dead_letter::ENVELOPE_KEYS;
use wharf_core::{Attributes, Error, Message};

use crate::limits::{MAX_ATTRIBUTE_NAME, MAX_MESSAGE_BYTES, MAX_NATIVE_ATTRIBUTES};

/// The name of wharf's own message attribute.
pub const BOOKKEEPING: &str = "wharf";

/// The data type of the attributes wharf sends, except a bookkeeping attribute that
/// carries the payload.
const STRING: &str = "String";

/// The data type of a bookkeeping attribute that carries the payload.
const BINARY: &str = "Binary";

/// Separates the JSON from the payload in a `Binary` bookkeeping attribute. Compact JSON
/// never holds a raw newline, so the first one ends it.
const SEPARATOR: u8 = b'\n';

/// The body sent when the body does not hold the payload: an empty payload, which SQS
/// does not accept as a body, or one carried in the bookkeeping attribute.
const PLACEHOLDER_BODY: &str = "-";

/// wharf's bookkeeping, as the JSON value of the [`BOOKKEEPING`] attribute.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Bookkeeping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<BodyEncoding>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<String, String>,
}

/// How the body encodes the payload, when it is not the payload itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BodyEncoding {
    /// The payload follows the JSON in the bookkeeping attribute.
    Attribute,
    /// The payload is empty.
    Empty,
}

/// A message ready for `SendMessage`: its body, its attributes, and the bytes SQS
/// counts against its size limit.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
    pub(crate) wire_bytes: usize,
}

/// What a received SQS message holds for wharf.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) payload: Bytes,
    pub(crate) attributes: Attributes,
}

/// Encodes `message` for SQS.
///
/// # Errors
///
/// [`PayloadTooLarge`](wharf_core::ErrorKind::PayloadTooLarge) when the encoded message
/// (with wharf's bookkeeping and the data type names SQS counts) exceeds SQS's size
/// limit, and
/// [`LimitExceeded`](wharf_core::ErrorKind::LimitExceeded) when more attributes would
/// reach SQS than it accepts.
pub(crate) fn encode(message: &Message) -> Result<Outgoing, Error> {
    let mut bookkeeping = Bookkeeping::default();
    let (body, carried) = encode_body(message.payload(), &mut bookkeeping);

    let mut native = HashMap::new();
    for (key, value) in message.attributes() {
        if fits_natively(key, value) {
            native.insert(key.clone(), string_value(value));
        } else {
            bookkeeping.attributes.insert(key.clone(), value.clone());
        }
    }
    if let Some(payload) = carried {
        native.insert(BOOKKEEPING.to_owned(), carrier_value(&bookkeeping, payload));
    } else if bookkeeping.body.is_some() || !bookkeeping.attributes.is_empty() {
        native.insert(BOOKKEEPING.to_owned(), string_value(&to_json(&bookkeeping)));
    }

    check_limits(Outgoing {
        wire_bytes: wire_bytes(&body, &native),
        body,
        attributes: native,
    })
}

/// The body for `payload`, and the payload again when it must travel in the bookkeeping
/// attribute instead.
fn encode_body<'a>(
    payload: &'a Bytes,
    bookkeeping: &mut Bookkeeping,
) -> (String, Option<&'a Bytes>) {
    if payload.is_empty() {
        bookkeeping.body = Some(BodyEncoding::Empty);
        return (PLACEHOLDER_BODY.to_owned(), None);
    }

    match std::str::from_utf8(payload) {
        Ok(text) if is_xml_text(text) => (text.to_owned(), None),
        _ => {
            bookkeeping.body = Some(BodyEncoding::Attribute);
            (PLACEHOLDER_BODY.to_owned(), Some(payload))
        }
    }
}

/// The `Binary` bookkeeping attribute carrying `payload` after the JSON.
fn carrier_value(bookkeeping: &Bookkeeping, payload: &Bytes) -> MessageAttributeValue {
    let json = to_json(bookkeeping);
    let mut value = Vec::with_capacity(json.len() + 1 + payload.len());
    value.extend_from_slice(json.as_bytes());
    value.push(SEPARATOR);
    value.extend_from_slice(payload);

    MessageAttributeValue::builder()
        .data_type(BINARY)
        .binary_value(Blob::new(value))
        .build()
        .unwrap_or_else(|_| unreachable!("the data type is set"))
}

fn check_limits(outgoing: Outgoing) -> Result<Outgoing, Error> {
    if outgoing.wire_bytes > MAX_MESSAGE_BYTES {
        return Err(
            Error::payload_too_large("sqs", outgoing.wire_bytes, MAX_MESSAGE_BYTES)
                .with_source(EncodedSize),
        );
    }

    let count = outgoing.attributes.len();
    if count > MAX_NATIVE_ATTRIBUTES {
        return Err(Error::limit_exceeded(
            "sqs",
            "message attributes, wharf's own included",
            count,
            MAX_NATIVE_ATTRIBUTES,
        ));
    }
    Ok(outgoing)
}

/// Explains a size error about the encoded form rather than the message as given.
#[derive(Debug)]
struct EncodedSize;

impl std::error::Error for EncodedSize {}

impl std::fmt::Display for EncodedSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "SQS counts the message as sent: a payload that is not XML text is base64 \
             encoded, a third larger, and each attribute's data type counts too",
        )
    }
}

/// Bytes SQS counts for a message: the body, and each attribute's name, data type and
/// value.
fn wire_bytes(body: &str, attributes: &HashMap<String, MessageAttributeValue>) -> usize {
    let attributes: usize = attributes
        .iter()
        .map(|(name, value)| {
            let bytes = match (value.string_value(), value.binary_value()) {
                (Some(text), _) => text.len(),
                (None, Some(blob)) => blob.as_ref().len(),
                (None, None) => 0,
            };
            name.len() + value.data_type().len() + bytes
        })
        .sum();
    body.len() + attributes
}

fn string_value(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(STRING)
        .string_value(value)
        .build()
        .unwrap_or_else(|_| unreachable!("the data type is set"))
}

fn to_json(bookkeeping: &Bookkeeping) -> String {
    serde_json::to_string(bookkeeping)
        .unwrap_or_else(|_| unreachable!("a struct of strings always serialises"))
}

/// Whether SQS accepts `key = value` as a native `String` attribute. The dead-letter
/// envelope is always packed, and so is a user attribute that happens to share wharf's
/// own attribute name.
fn fits_natively(key: &str, value: &str) -> bool {
    key != BOOKKEEPING
        && !ENVELOPE_KEYS.contains(&key)
        && is_attribute_name(key)
        && !value.is_empty()
        && is_xml_text(value)
}

/// SQS's rules for attribute names: up to 256 of `A-Za-z0-9_-.`, no leading or trailing
/// period, no two periods in a row, no `AWS.` or `Amazon.` prefix (any case).
fn is_attribute_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
}

/// Whether every character is one SQS accepts in a body or attribute value: the XML 1.0
/// character range.
fn is_xml_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c,
            '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// Reads a received SQS message back into a payload and the user's attributes.
///
/// A message another client published is taken as it is. A bookkeeping attribute that
/// does not parse is left in place as an ordinary attribute rather than guessed at.
pub(crate) fn decode(message: &SqsMessage) -> Incoming {
    let body = message.body().unwrap_or_default();
    let mut attributes = native_attributes(message);
    let as_sent = |attributes| Incoming {
        payload: Bytes::copy_from_slice(body.as_bytes()),
        attributes,
    };

    let Some((bookkeeping, carried)) = read_bookkeeping(message) else {
        return as_sent(attributes);
    };
    let payload = match (bookkeeping.body, carried) {
        (None, _) => Bytes::copy_from_slice(body.as_bytes()),
        (Some(BodyEncoding::Empty), _) => Bytes::new(),
        (Some(BodyEncoding::Attribute), Some(payload)) => payload,
        (Some(BodyEncoding::Attribute), None) => return as_sent(attributes),
    };

    attributes.remove(BOOKKEEPING);
    attributes.extend(bookkeeping.attributes);
    Incoming {
        payload,
        attributes,
    }
}

/// The bookkeeping of a received message, and the payload when its attribute carries
/// one; `None` if there is none or it does not parse.
fn read_bookkeeping(message: &SqsMessage) -> Option<(Bookkeeping, Option<Bytes>)> {
    let value = message.message_attributes()?.get(BOOKKEEPING)?;

    if let Some(json) = value.string_value() {
        return Some((serde_json::from_str(json).ok()?, None));
    }
    let bytes = value.binary_value()?.as_ref();
    let end = bytes.iter().position(|&b| b == SEPARATOR)?;
    let bookkeeping = serde_json::from_slice(&bytes[..end]).ok()?;
    Some((bookkeeping, Some(Bytes::copy_from_slice(&bytes[end + 1..]))))
}

/// The message's attributes as strings. Other clients may send `Number` attributes
/// (their text is kept) and `Binary` ones (given as base64 text), so nothing they sent
/// is dropped.
fn native_attributes(message: &SqsMessage) -> Attributes {
    let Some(native) = message.message_attributes() else {
        return Attributes::new();
    };

    native
        .iter()
        .map(|(name, value)| {
            let text = match (value.string_value(), value.binary_value()) {
                (Some(text), _) => text.to_owned(),
                (None, Some(blob)) => BASE64.encode(blob.as_ref()),
                (None, None) => String::new(),
            };
            (name.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(outgoing: &Outgoing) -> SqsMessage {
        SqsMessage::builder()
            .body(&outgoing.body)
            .set_message_attributes(Some(outgoing.attributes.clone()))
            .build()
    }

    fn round_trip(message: &Message) -> Incoming {
        decode(&received(&encode(message).unwrap()))
    }

    #[test]
    fn text_payloads_and_plain_attributes_go_as_they_are() {
        let message = Message::new("héllo <xml> & ünïcode").with_attribute("kind", "greeting");

        let outgoing = encode(&message).unwrap();

        assert_eq!(outgoing.body, "héllo <xml> & ünïcode");
        assert_eq!(outgoing.attributes.len(), 1);
        assert!(!outgoing.attributes.contains_key(BOOKKEEPING));
    }

    #[test]
    fn binary_payloads_travel_as_raw_bytes_and_round_trip() {
        let payload: Vec<u8> = (0..=255).collect();
        let message = Message::new(payload.clone()).with_attribute("k", "v");

        let outgoing = encode(&message).unwrap();
        let incoming = decode(&received(&outgoing));

        assert_eq!(outgoing.body, PLACEHOLDER_BODY);
        assert_eq!(outgoing.attributes[BOOKKEEPING].data_type(), BINARY);
        assert_eq!(&incoming.payload[..], &payload[..]);
        assert_eq!(&incoming.attributes, message.attributes());
    }

    #[test]
    fn a_binary_payload_gets_the_whole_size_limit() {
        let message = Message::new(vec![0u8; MAX_MESSAGE_BYTES - 64]);

        let outgoing = encode(&message).unwrap();

        assert!(
            outgoing.wire_bytes <= MAX_MESSAGE_BYTES,
            "{}",
            outgoing.wire_bytes
        );
    }

    #[test]
    fn non_xml_text_and_empty_payloads_round_trip() {
        for payload in ["bell\u{7}", "nul\0", "cr\r\nlf", "\u{FFFE}", ""] {
            let incoming = round_trip(&Message::new(payload));

            assert_eq!(&incoming.payload[..], payload.as_bytes(), "{payload:?}");
        }
    }

    #[test]
    fn attributes_sqs_refuses_natively_are_packed_and_restored() {
        let message = Message::new("x")
            .with_attribute("has space", "v")
            .with_attribute("empty", "")
            .with_attribute("AWS.reserved", "v")
            .with_attribute(BOOKKEEPING, "user's own")
            .with_attribute("ok", "fine");

        let outgoing = encode(&message).unwrap();
        let incoming = decode(&received(&outgoing));

        assert_eq!(outgoing.attributes.len(), 2, "ok + bookkeeping");
        assert_eq!(&incoming.attributes, message.attributes());
    }

    #[test]
    fn the_dead_letter_envelope_takes_one_attribute() {
        let mut message = Message::new("x");
        for i in 0..9 {
            message = message.with_attribute(format!("user-{i}"), "v");
        }
        for key in ENVELOPE_KEYS {
            message = message.with_attribute(key, "1");
        }

        let outgoing = encode(&message).unwrap();
        let incoming = decode(&received(&outgoing));

        assert_eq!(outgoing.attributes.len(), MAX_NATIVE_ATTRIBUTES);
        assert_eq!(&incoming.attributes, message.attributes());
    }

    #[test]
    fn wire_size_counts_names_types_and_values() {
        let outgoing = encode(&Message::new("abc").with_attribute("k", "vv")).unwrap();

        assert_eq!(outgoing.wire_bytes, 3 + 1 + "String".len() + 2);
    }

    #[test]
    fn a_message_whose_encoding_outgrows_the_limit_is_refused_before_sending() {
        // Control characters are not XML text, so the value is packed into JSON, where
        // each one takes six bytes (`\u0001`).
        let message = Message::new("x").with_attribute("k", "\u{1}".repeat(50 * 1024));

        let error = encode(&message).unwrap_err();

        assert_eq!(error.kind(), wharf_core::ErrorKind::PayloadTooLarge);
        assert!(error.to_string().contains("262144"), "{error}");
    }

    #[test]
    fn a_foreign_attribute_named_like_the_bookkeeping_is_left_alone() {
        let foreign = SqsMessage::builder()
            .body("hi")
            .message_attributes(BOOKKEEPING, string_value("not json"))
            .build();

        let incoming = decode(&foreign);

        assert_eq!(&incoming.payload[..], b"hi");
        assert_eq!(incoming.attributes[BOOKKEEPING], "not json");
    }

    #[test]
    fn attribute_names_follow_the_sqs_rules() {
        assert!(is_attribute_name("order.id-2_x"));
        assert!(!is_attribute_name(".lead"));
        assert!(!is_attribute_name("two..dots"));
        assert!(!is_attribute_name("amazon.thing"));
        assert!(!is_attribute_name("colon:name"));
    }
}
