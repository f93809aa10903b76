//! [`Publisher`]: what applications use to send messages to a topic.

use std::fmt;
use std::sync::Arc;

use tracing::{Instrument, debug_span, trace};

use crate::capabilities::Capabilities;
use crate::driver::TopicDriver;
use crate::error::{Error, PublishError, Result};
use crate::message::Message;
use crate::telemetry::{self, Instruments};

/// Sends messages to one topic of any backend.
///
/// Cheap to clone; clones share the connection. Every message is checked against the
/// backend's [`Capabilities`] before anything is sent, and a publish returns only once the
/// backend has durably accepted the message.
///
/// ```
/// # async fn example(publisher: wharf_core::Publisher) -> Result<(), wharf_core::PublishError> {
/// use wharf_core::Message;
///
/// publisher.publish(Message::new("hello").with_attribute("kind", "greeting")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    driver: Arc<dyn TopicDriver>,
    instruments: Arc<Instruments>,
}

impl Publisher {
    /// Wraps an adapter's topic driver.
    pub fn new(driver: impl TopicDriver) -> Self {
        Self::from_arc(Arc::new(driver))
    }

    /// Wraps a shared topic driver.
    pub fn from_arc(driver: Arc<dyn TopicDriver>) -> Self {
        let instruments = Instruments::new(driver.capabilities().backend, driver.topic());
        Self {
            driver,
            instruments,
        }
    }

    /// The adapter's driver behind this publisher, for wrappers such as fault injection
    /// that decorate a backend without knowing its concrete type.
    pub fn driver(&self) -> &Arc<dyn TopicDriver> {
        &self.driver
    }

    /// The topic this publisher sends to.
    pub fn topic(&self) -> &str {
        self.driver.topic()
    }

    /// What the backend offers and its limits.
    pub fn capabilities(&self) -> &Capabilities {
        self.driver.capabilities()
    }

    /// Publishes one message and waits until the backend has durably accepted it.
    ///
    /// # Errors
    ///
    /// A [`PublishError`] holding the message: a validation error
    /// ([`PayloadTooLarge`](crate::ErrorKind::PayloadTooLarge),
    /// [`Unsupported`](crate::ErrorKind::Unsupported), ...) before any network call, or
    /// the backend's refusal. Check [`PublishError::is_retryable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: if the future is dropped, the message may or may not have been
    /// published.
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        let mut results = self.publish_batch(vec![message]).await;

        results.pop().unwrap_or(Ok(()))
    }

    /// Publishes many messages, split into requests that fit the backend's count and byte
    /// limits, and reports one result per message, in order.
    ///
    /// Requests are sent one after another, so messages sharing an ordering key keep
    /// their order.
    pub async fn publish_batch(&self, messages: Vec<Message>) -> Vec<Result<(), PublishError>> {
        let caps = self.capabilities().clone();
        let mut results: Vec<Option<Result<(), PublishError>>> = Vec::with_capacity(messages.len());
        let mut chunk = Chunk::default();

        for mut message in messages {
            let index = results.len();
            results.push(None);
            telemetry::inject_current(&mut message, &caps);

            if let Err(error) = caps.check_message(&message) {
                results[index] = Some(Err(PublishError::new(error, message)));
                continue;
            }
            if !chunk.fits(&caps, &message) {
                self.send_chunk(std::mem::take(&mut chunk), &mut results)
                    .await;
            }
            chunk.push(index, message);
        }
        self.send_chunk(chunk, &mut results).await;

        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    async fn send_chunk(&self, chunk: Chunk, results: &mut [Option<Result<(), PublishError>>]) {
        if chunk.messages.is_empty() {
            return;
        }

        let span = debug_span!(
            "publish",
            destination = %self.topic(),
            backend = self.capabilities().backend,
            batch_size = chunk.messages.len(),
            bytes = chunk.bytes,
        );
        let outcome = self
            .driver
            .send_batch(&chunk.messages)
            .instrument(span)
            .await;

        let expected = chunk.messages.len();
        let accepted = outcome.iter().filter(|result| result.is_ok()).count();
        self.instruments.published(accepted as u64);
        let mut outcome = outcome.into_iter();
        for (index, message) in chunk.indices.into_iter().zip(chunk.messages) {
            let result = outcome
                .next()
                .unwrap_or_else(|| Err(missing_result(expected)));
            if let Err(error) = &result {
                trace!(destination = %self.topic(), error.kind = %error.kind(), "publish failed");
            }
            results[index] = Some(result.map_err(|error| PublishError::new(error, message)));
        }
    }

    /// Flushes and closes the publisher; later publishes fail with
    /// [`Closed`](crate::ErrorKind::Closed).
    ///
    /// # Errors
    ///
    /// The backend's error if buffered messages could not be flushed.
    pub async fn close(&self) -> Result<()> {
        self.driver.close().await
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic())
            .field("backend", &self.capabilities().backend)
            .finish()
    }
}

fn missing_result(expected: usize) -> Error {
    Error::new(
        crate::ErrorKind::Internal,
        format!("the backend returned fewer results than the {expected} messages sent"),
    )
}

/// Messages collected for one publish request.
#[derive(Default)]
struct Chunk {
    indices: Vec<usize>,
    messages: Vec<Message>,
    bytes: usize,
}

impl Chunk {
    fn fits(&self, caps: &Capabilities, message: &Message) -> bool {
        self.messages.len() < caps.max_batch_messages
            && self.bytes + message.size() <= caps.max_batch_bytes
    }

    fn push(&mut self, index: usize, message: Message) {
        self.bytes += message.size();
        self.indices.push(index);
        self.messages.push(message);
    }
}
