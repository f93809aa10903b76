//! Showing received messages: as a block of text for people, as a JSON object, or as
//! their payload bytes alone (`--raw`).
//!
//! A payload is shown as text when it is UTF-8 without control characters (other than
//! tabs and line breaks); anything else is binary and shown as base64 or hex, so a
//! terminal never receives stray escape sequences.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::ValueEnum;
use serde::Serialize;
use wharf::{Envelope, Received};

use crate::exit::Failure;
use crate::output::{Output, human};

/// How binary payloads are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Binary {
    /// Standard base64 with padding.
    Base64,
    /// Lowercase hexadecimal, two digits a byte.
    Hex,
}

/// How to show messages, shared by `tail` and `dlq peek`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ShowArgs {
    /// Write each payload's bytes exactly as received, with nothing around or between
    /// them (use --count 1 to extract one payload); not with --json.
    #[arg(long)]
    pub(crate) raw: bool,

    /// How to write payloads that are not text.
    #[arg(long, value_enum, default_value = "base64", value_name = "ENCODING")]
    pub(crate) binary: Binary,
}

/// One message as JSON. Field names are stable.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView {
    id: String,
    attempt: u32,
    published_at: String,
    ordering_key: Option<String>,
    attributes: BTreeMap<String, String>,
    payload_bytes: usize,
    /// `utf8`, `base64` or `hex`.
    payload_encoding: &'static str,
    payload: String,
    /// The dead-letter envelope, for a message of a dead-letter destination.
    dead_letter: Option<DeadLetterView>,
    #[serde(skip)]
    published: SystemTime,
}

/// Why a message was dead-lettered, read from its envelope attributes.
#[derive(Debug, Serialize)]
struct DeadLetterView {
    reason: String,
    attempts: u32,
    source: String,
    first_failure: Option<String>,
    last_failure: Option<String>,
}

impl MessageView {
    /// The view of `received`, writing binary payloads as `binary` says.
    pub(crate) fn new(received: &Received, binary: Binary) -> Self {
        let (payload_encoding, payload) = encode(received.payload(), binary);
        Self {
            id: received.id().to_owned(),
            attempt: received.attempt(),
            published_at: timestamp(received.published_at()),
            ordering_key: received.ordering_key().map(str::to_owned),
            attributes: received.attributes().clone(),
            payload_bytes: received.payload().len(),
            payload_encoding,
            payload,
            published: received.published_at(),
            dead_letter: Envelope::from_attributes(received.attributes()).map(|envelope| {
                DeadLetterView {
                    reason: envelope.reason,
                    attempts: envelope.attempts,
                    source: envelope.source,
                    first_failure: envelope.first_failure.map(timestamp),
                    last_failure: envelope.last_failure.map(timestamp),
                }
            }),
        }
    }

    /// The message as a block of text for people; `number` counts from 1.
    pub(crate) fn text(&self, number: usize) -> String {
        let mut text = format!(
            "message {number}: id {}, attempt {}, published {} ({})\n",
            self.id,
            self.attempt,
            self.published_at,
            ago(self.published)
        );
        if let Some(key) = &self.ordering_key {
            let _ = writeln!(text, "  ordering key: {key}");
        }
        if let Some(letter) = &self.dead_letter {
            let _ = writeln!(
                text,
                "  dead-lettered from {} after {} attempts: {}",
                letter.source, letter.attempts, letter.reason
            );
        }
        for (key, value) in &self.attributes {
            let _ = writeln!(text, "  attribute {key} = {value}");
        }
        let _ = writeln!(
            text,
            "  payload: {} bytes, {}",
            self.payload_bytes, self.payload_encoding
        );
        for line in self.payload.lines() {
            let _ = writeln!(text, "    {line}");
        }
        text
    }
}

/// Writes `messages` as `show` asks: raw payload bytes, or text blocks.
pub(crate) fn print_text(
    out: &Output,
    messages: &[Received],
    first_number: usize,
    show: &ShowArgs,
) -> Result<(), Failure> {
    for (i, received) in messages.iter().enumerate() {
        if show.raw {
            out.raw(received.payload())?;
        } else {
            out.result(&MessageView::new(received, show.binary).text(first_number + i))?;
        }
    }
    Ok(())
}

/// The payload as text if it is printable UTF-8, otherwise encoded as `binary`.
fn encode(payload: &[u8], binary: Binary) -> (&'static str, String) {
    if let Ok(text) = std::str::from_utf8(payload)
        && !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return ("utf8", text.to_owned());
    }
    match binary {
        Binary::Base64 => ("base64", STANDARD.encode(payload)),
        Binary::Hex => ("hex", payload.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// A point in time as RFC 3339, in UTC, to the millisecond.
fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// How long ago `time` was, for people.
fn ago(time: SystemTime) -> String {
    SystemTime::now().duration_since(time).map_or_else(
        |_| "just now".to_owned(),
        |age| format!("{} ago", human(age)),
    )
}

#[cfg(test)]
mod tests {
    use wharf::Message;

    use super::*;

    #[test]
    fn text_payloads_stay_text_and_binary_is_encoded() {
        assert_eq!(encode(b"line 1\nline 2", Binary::Base64).0, "utf8");
        assert_eq!(
            encode(&[0, 255], Binary::Base64),
            ("base64", "AP8=".to_owned())
        );
        assert_eq!(encode(&[0, 255], Binary::Hex), ("hex", "00ff".to_owned()));
        assert_eq!(
            encode(b"\x1b[31mred", Binary::Hex).0,
            "hex",
            "no escapes reach a terminal"
        );
    }

    #[test]
    fn a_dead_letter_shows_its_envelope() {
        let message = Message::new("order")
            .with_attribute("tenant", "acme")
            .with_attribute(wharf::dead_letter::REASON, "out of stock")
            .with_attribute(wharf::dead_letter::ATTEMPTS, "5")
            .with_attribute(wharf::dead_letter::SOURCE, "billing");

        let view = MessageView::new(&Received::detached(&message, "billing-dlq"), Binary::Hex);

        let letter = view.dead_letter.as_ref().expect("an envelope");
        assert_eq!(
            (letter.reason.as_str(), letter.attempts),
            ("out of stock", 5)
        );
        let text = view.text(1);
        assert!(text.contains("after 5 attempts: out of stock"), "{text}");
        assert!(text.contains("attribute tenant = acme"), "{text}");
        assert!(text.contains("    order"), "{text}");
    }
}
