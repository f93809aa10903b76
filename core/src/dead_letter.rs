//! The failure envelope a dead-lettered message carries, the same on every backend.
//!
//! A dead-lettered message keeps its payload and attributes. wharf adds a few attributes
//! that say why it failed, so a person can inspect it later and a redrive can strip them
//! again. The keys are plain ASCII with hyphens, which every backend accepts as an
//! attribute or header name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::{Attributes, Message};

/// Why the message was dead-lettered.
pub const REASON: &str = "wharf-dead-letter-reason";
/// How many deliveries were attempted.
pub const ATTEMPTS: &str = "wharf-attempts";
/// The subscription or queue the message was taken from.
pub const SOURCE: &str = "wharf-source";
/// When the first delivery failed, in milliseconds since the Unix epoch.
pub const FIRST_FAILURE: &str = "wharf-first-failure";
/// When the last delivery failed, in milliseconds since the Unix epoch.
pub const LAST_FAILURE: &str = "wharf-last-failure";

/// The attributes wharf adds when it dead-letters a message.
pub const ENVELOPE_KEYS: [&str; 5] = [REASON, ATTEMPTS, SOURCE, FIRST_FAILURE, LAST_FAILURE];

/// A message on its way to the dead-letter destination, with why it failed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The original message: payload, attributes and ordering key.
    pub message: Message,
    /// Why it was dead-lettered, as the handler or the retry policy said.
    pub reason: String,
    /// The delivery attempt that failed last.
    pub attempts: u32,
    /// The subscription or queue it was taken from.
    pub source: String,
    /// When the first delivery failed, where the backend could tell.
    pub first_failure: Option<SystemTime>,
    /// When the last delivery failed.
    pub last_failure: SystemTime,
}

impl DeadLetter {
    /// The message to store in the dead-letter destination: the original payload and
    /// attributes plus the envelope attributes.
    pub fn to_message(&self) -> Message {
        let mut message = self.message.clone();
        let attributes = message.attributes_mut();
        attributes.insert(REASON.to_owned(), self.reason.clone());
        attributes.insert(ATTEMPTS.to_owned(), self.attempts.to_string());
        attributes.insert(SOURCE.to_owned(), self.source.clone());
        let first = self.first_failure.unwrap_or(self.last_failure);
        attributes.insert(FIRST_FAILURE.to_owned(), millis(first).to_string());
        attributes.insert(
            LAST_FAILURE.to_owned(),
            millis(self.last_failure).to_string(),
        );
        message
    }
}

/// Reads the envelope back from a dead-lettered delivery's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Why it was dead-lettered.
    pub reason: String,
    /// The delivery attempt that failed last.
    pub attempts: u32,
    /// The subscription or queue it was taken from.
    pub source: String,
    /// When the first delivery failed.
    pub first_failure: Option<SystemTime>,
    /// When the last delivery failed.
    pub last_failure: Option<SystemTime>,
}

impl Envelope {
    /// The envelope in `attributes`, or `None` if they carry no dead-letter reason.
    pub fn from_attributes(attributes: &Attributes) -> Option<Self> {
        let reason = attributes.get(REASON)?.clone();
        let attempts = attributes
            .get(ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let source = attributes.get(SOURCE).cloned().unwrap_or_default();
        let time = |key: &str| attributes.get(key).and_then(|v| parse_millis(v));

        Some(Self {
            reason,
            attempts,
            source,
            first_failure: time(FIRST_FAILURE),
            last_failure: time(LAST_FAILURE),
        })
    }

    /// `attributes` without the envelope keys: what the message carried originally.
    pub fn strip(attributes: &Attributes) -> Attributes {
        attributes
            .iter()
            .filter(|(k, _)| !ENVELOPE_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Milliseconds since the Unix epoch, the encoding wharf uses for times in attributes.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses [`millis`] text back into a time.
pub fn parse_millis(text: &str) -> Option<SystemTime> {
    text.parse::<u64>()
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_attributes() {
        let failed = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let letter = DeadLetter {
            message: Message::new("p").with_attribute("user", "kept"),
            reason: "unknown product".into(),
            attempts: 3,
            source: "orders".into(),
            first_failure: Some(failed),
            last_failure: failed,
        };

        let stored = letter.to_message();
        let envelope = Envelope::from_attributes(stored.attributes()).unwrap();

        assert_eq!(envelope.reason, "unknown product");
        assert_eq!(envelope.attempts, 3);
        assert_eq!(envelope.first_failure, Some(failed));
        assert_eq!(Envelope::strip(stored.attributes()).len(), 1);
    }
}
