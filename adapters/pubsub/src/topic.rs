//! [`PubSubTopic`]: the topic driver, publishing through Google's `Publisher`.
//!
//! Google's publisher batches in the background, one batch actor per ordering key, and
//! pauses an ordering key after a publish on it fails so that later messages cannot
//! overtake the failed one. wharf hands it a whole batch, asks it to send at once, and
//! waits for every message's result.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::future::join_all;
use google_cloud_pubsub::client::Publisher as NativePublisher;
use google_cloud_pubsub::model::Message as NativeMessage;
use wharf_core::{Capabilities, Error, Message, Result, TopicDriver};

use crate::capabilities::{
    MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_ORDERING_KEY_BYTES, capabilities,
};
use crate::error::from_publish;

/// The attribute that stands in for an empty message. Pub/Sub refuses a message with
/// neither data nor attributes ("Some messages are empty"), so a message with an empty
/// payload and no attributes travels with this one attribute, and the subscriber removes
/// it again.
pub(crate) const EMPTY_MARKER: &str = "wharf-empty";

/// Publishes to one topic.
pub(crate) struct PubSubTopic {
    topic: String,
    publisher: NativePublisher,
    capabilities: Capabilities,
}

impl PubSubTopic {
    pub(crate) fn new(topic: String, publisher: NativePublisher) -> Self {
        Self {
            topic,
            publisher,
            capabilities: capabilities(),
        }
    }
}

#[async_trait]
impl TopicDriver for PubSubTopic {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        send(&self.publisher, &self.topic, batch).await
    }

    async fn close(&self) -> Result<()> {
        self.publisher.flush().await;
        Ok(())
    }
}

/// Publishes `batch` through `publisher` and waits for each message's result, in order.
pub(crate) async fn send(
    publisher: &NativePublisher,
    topic: &str,
    batch: &[Message],
) -> Vec<Result<()>> {
    let pending: Vec<_> = batch
        .iter()
        .map(|message| {
            let publish = check_message(message).map(|()| publisher.publish(to_native(message)));
            async move {
                let key = message.ordering_key();
                match publish {
                    Ok(future) => future
                        .await
                        .map(drop)
                        .map_err(|error| from_publish(error, topic, key)),
                    Err(error) => Err(error),
                }
            }
        })
        .collect();

    // Everything is queued now: send it without waiting for the batching delay.
    let (results, ()) = futures::join!(join_all(pending), publisher.flush());
    results
}

/// Pub/Sub's per-attribute and ordering-key limits, which core's checks do not cover.
fn check_message(message: &Message) -> Result<()> {
    for (key, value) in message.attributes() {
        check_len("attribute key", key, MAX_ATTRIBUTE_KEY_BYTES)?;
        check_len(
            &format!("value of attribute `{key}`"),
            value,
            MAX_ATTRIBUTE_VALUE_BYTES,
        )?;
        if key.starts_with("goog") {
            return Err(Error::invalid(format!(
                "attribute key `{key}` is reserved: Pub/Sub refuses keys starting with `goog`"
            )));
        }
    }
    if let Some(key) = message.ordering_key() {
        check_len("ordering key", key, MAX_ORDERING_KEY_BYTES)?;
    }
    Ok(())
}

fn check_len(what: &str, text: &str, limit: usize) -> Result<()> {
    if text.len() > limit {
        return Err(Error::invalid(format!(
            "{what} is {} bytes; Pub/Sub accepts at most {limit}",
            text.len()
        )));
    }
    Ok(())
}

/// The Pub/Sub message for `message`: payload bytes unchanged (no copy), attributes as
/// native attributes, ordering key as the native ordering key. An empty message gets
/// [`EMPTY_MARKER`].
pub(crate) fn to_native(message: &Message) -> NativeMessage {
    let mut attributes: HashMap<&str, &str> = message
        .attributes()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if message.payload().is_empty() && attributes.is_empty() {
        attributes.insert(EMPTY_MARKER, "1");
    }

    NativeMessage::new()
        .set_data(message.payload().clone())
        .set_attributes(attributes)
        .set_ordering_key(message.ordering_key().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::ErrorKind;

    #[test]
    fn long_attribute_values_are_refused_naming_the_limit() {
        let message = Message::new("x").with_attribute("k", "v".repeat(1_025));

        let error = check_message(&message).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("1025 bytes"), "{error}");
        assert!(error.to_string().contains("1024"), "{error}");
    }

    #[test]
    fn reserved_attribute_keys_are_refused() {
        let message = Message::new("x").with_attribute("googclient_x", "v");

        assert!(check_message(&message).is_err());
    }

    #[test]
    fn the_native_message_keeps_bytes_attributes_and_key() {
        let message = Message::new(&b"\x00\xff"[..])
            .with_attribute("a", "1")
            .with_ordering_key("k");

        let native = to_native(&message);

        assert_eq!(&native.data[..], b"\x00\xff");
        assert_eq!(native.attributes["a"], "1");
        assert_eq!(native.ordering_key, "k");
    }

    #[test]
    fn an_empty_message_is_marked_and_others_are_not() {
        let empty = to_native(&Message::new(Vec::new()));
        let with_attribute = to_native(&Message::new(Vec::new()).with_attribute("a", "1"));

        assert_eq!(empty.attributes[EMPTY_MARKER], "1");
        assert!(!with_attribute.attributes.contains_key(EMPTY_MARKER));
    }
}
