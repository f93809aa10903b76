//! Request / reply over any backend: a [`Requester`] sends a request and awaits the
//! matching reply on a private reply topic; a [`Responder`] answers a received request.
//!
//! Replies are matched to requests by a correlation id carried in the
//! [`CORRELATION_ID`] attribute; the request names its reply topic in [`REPLY_TO`]. Each
//! requester owns one reply topic and subscription, created when it opens and deleted
//! when it closes, so replies never reach another client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::delivery::Received;
use crate::driver::{Backend, SubscriptionSpec};
use crate::error::{Error, ErrorKind, PublishError, Result};
use crate::message::Message;
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// The attribute naming the topic a reply goes to.
pub const REPLY_TO: &str = "wharf-reply-to";
/// The attribute pairing a reply with its request.
pub const CORRELATION_ID: &str = "wharf-correlation-id";

/// How long the reply listener waits in one receive call.
const LISTEN_WAIT: Duration = Duration::from_secs(1);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Received>>>>;

/// Sends requests to a topic and awaits their replies.
///
/// ```no_run
/// # async fn example(backend: std::sync::Arc<dyn wharf_core::Backend>) -> wharf_core::Result<()> {
/// use std::time::Duration;
/// use wharf_core::{Message, reply::Requester};
///
/// let requester = Requester::open(backend, "quotes").await?;
/// let reply = requester.request(Message::new("price of tea?"), Duration::from_secs(5)).await?;
/// println!("{} bytes back", reply.payload().len());
/// requester.close().await?;
/// # Ok(()) }
/// ```
pub struct Requester {
    backend: Arc<dyn Backend>,
    publisher: Publisher,
    reply_topic: String,
    reply_subscription: String,
    pending: Pending,
    stop: CancellationToken,
    closed: bool,
}

impl Requester {
    /// Creates a private reply topic and subscription and starts listening on them.
    ///
    /// # Errors
    ///
    /// The backend's error if the request topic does not exist or the reply topic
    /// cannot be created.
    pub async fn open(backend: Arc<dyn Backend>, request_topic: &str) -> Result<Self> {
        let publisher = backend.publisher(request_topic).await?;
        let (reply_topic, reply_subscription) = reply_names(&*backend);

        backend.create_topic(&reply_topic).await?;
        let spec = SubscriptionSpec::new(&reply_topic, &reply_subscription);
        backend.create_subscription(&spec).await?;
        let subscriber = backend.subscriber(&reply_subscription).await?;

        let pending = Pending::default();
        let stop = CancellationToken::new();
        tokio::spawn(listen(subscriber, pending.clone(), stop.clone()));
        debug!(reply_topic, "requester open");

        Ok(Self {
            backend,
            publisher,
            reply_topic,
            reply_subscription,
            pending,
            stop,
            closed: false,
        })
    }

    /// The topic replies to this requester go to.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Publishes `request` and waits up to `timeout` for its reply.
    ///
    /// # Errors
    ///
    /// The publish error if the request could not be sent, or
    /// [`Timeout`](ErrorKind::Timeout) if no reply came in time (a late reply is
    /// acknowledged and dropped with a debug log).
    pub async fn request(&self, request: Message, timeout: Duration) -> Result<Received> {
        let correlation = new_id();
        let request = request
            .with_attribute(REPLY_TO, &self.reply_topic)
            .with_attribute(CORRELATION_ID, &correlation);
        let (sender, receiver) = oneshot::channel();
        lock(&self.pending).insert(correlation.clone(), sender);

        if let Err(failed) = self.publisher.publish(request).await {
            lock(&self.pending).remove(&correlation);
            return Err(failed.error);
        }

        let reply = tokio::time::timeout(timeout, receiver).await;
        lock(&self.pending).remove(&correlation);
        match reply {
            Ok(Ok(received)) => Ok(received),
            Ok(Err(_)) => Err(Error::closed("requester")),
            Err(_) => Err(no_reply(&correlation, timeout)),
        }
    }

    /// Stops listening and deletes the reply subscription and topic.
    ///
    /// # Errors
    ///
    /// The backend's error if they could not be deleted.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        self.stop.cancel();
        delete_reply_path(&*self.backend, &self.reply_topic, &self.reply_subscription).await
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.closed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(reply_topic = %self.reply_topic, "requester dropped outside a runtime; \
                its reply topic is left behind");
            return;
        };
        let backend = self.backend.clone();
        let (topic, subscription) = (self.reply_topic.clone(), self.reply_subscription.clone());
        runtime.spawn(async move {
            if let Err(error) = delete_reply_path(&*backend, &topic, &subscription).await {
                warn!(reply_topic = %topic, %error, "could not delete a dropped requester's reply topic");
            }
        });
    }
}

async fn delete_reply_path(backend: &dyn Backend, topic: &str, subscription: &str) -> Result<()> {
    backend.delete_subscription(subscription).await?;
    if subscription != topic {
        backend.delete_topic(topic).await?;
    }
    Ok(())
}

/// Routes replies to the requests waiting for them until stopped.
async fn listen(subscriber: Subscriber, pending: Pending, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let batch = tokio::select! {
            () = stop.cancelled() => return,
            batch = subscriber.receive(32, LISTEN_WAIT) => batch,
        };
        match batch {
            Ok(deliveries) => {
                for delivery in deliveries {
                    route(&pending, delivery).await;
                }
            }
            Err(error) if error.is_retryable() => {
                warn!(%error, "reply listener could not receive; retrying");
                tokio::time::sleep(LISTEN_WAIT).await;
            }
            Err(error) => {
                warn!(%error, "reply listener stopped; pending requests will time out");
                return;
            }
        }
    }
}

async fn route(pending: &Pending, delivery: crate::Delivery) {
    let received = delivery.received().clone();
    if let Err(failed) = delivery.ack().await {
        warn!(error = %failed.error, "could not ack a reply; it may arrive twice");
    }

    let Some(correlation) = received.attribute(CORRELATION_ID) else {
        debug!(delivery = %received.id(), "reply without a correlation id dropped");
        return;
    };
    match lock(pending).remove(correlation) {
        Some(waiter) => drop(waiter.send(received)),
        None => debug!(correlation, "late or unknown reply dropped"),
    }
}

/// Answers requests that carry a [`REPLY_TO`] attribute.
pub struct Responder {
    backend: Arc<dyn Backend>,
    publishers: tokio::sync::Mutex<HashMap<String, Publisher>>,
}

impl Responder {
    /// A responder publishing replies through `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            publishers: tokio::sync::Mutex::default(),
        }
    }

    /// Sends `reply` to the requester of `request`, tagged with its correlation id.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](ErrorKind::InvalidArgument) if `request` names no reply topic;
    /// the publish error otherwise, holding the reply.
    pub async fn reply(&self, request: &Received, reply: Message) -> Result<(), PublishError> {
        let (Some(topic), Some(correlation)) = (
            request.attribute(REPLY_TO),
            request.attribute(CORRELATION_ID),
        ) else {
            let error = Error::invalid(format!("request {} carries no {REPLY_TO}", request.id()));
            return Err(PublishError::new(error, reply));
        };
        let reply = reply.with_attribute(CORRELATION_ID, correlation);

        let publisher = match self.publisher(topic).await {
            Ok(publisher) => publisher,
            Err(error) => return Err(PublishError::new(error, reply)),
        };
        publisher.publish(reply).await
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        let mut publishers = self.publishers.lock().await;
        if let Some(publisher) = publishers.get(topic) {
            return Ok(publisher.clone());
        }
        let publisher = self.backend.publisher(topic).await?;
        publishers.insert(topic.to_owned(), publisher.clone());
        Ok(publisher)
    }
}

/// A reply topic and subscription name unique to one requester. Backends without fan-out
/// read a queue directly, so there the subscription is the topic.
fn reply_names(backend: &dyn Backend) -> (String, String) {
    let topic = format!("wharf-reply-{}", &new_id()[..12]);
    let subscription = if backend.capabilities().fan_out {
        format!("{topic}-sub")
    } else {
        topic.clone()
    };
    (topic, subscription)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn no_reply(correlation: &str, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "no reply to request {correlation} within {}; is a responder running?",
            humantime::format_duration(timeout)
        ),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
