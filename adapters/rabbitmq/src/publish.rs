//! Confirmed publishing: [`RabbitMqPublisher`], wharf's [`TopicDriver`] for an exchange,
//! and the confirm channel and delay queues it shares with the subscriber's retries.
//!
//! A batch is written to the channel back to back and its publisher confirms are
//! awaited together, so many messages are in flight at once and throughput is not one
//! round trip per message. Each message's result is the broker's verdict on it: ack,
//! nack, or returned as unroutable (`mandatory`). If the connection drops while messages
//! are in flight, their confirms fail and each comes back as a retryable
//! [`Unavailable`](wharf_core::ErrorKind::Unavailable) error: none is reported as sent
//! unless the broker confirmed it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, trace};
use wharf_core::{Capabilities, Error, ErrorKind, Message, Result, TopicDriver};

use crate::error::map;
use crate::headers::{self, Carry};
use crate::link::Link;
use crate::topology::{self, name};

/// One AMQP message on its way out.
#[derive(Clone)]
pub(crate) struct Outgoing {
    /// The exchange; empty for the default exchange, which routes by queue name.
    pub(crate) exchange: String,
    /// The routing key.
    pub(crate) routing_key: String,
    /// The body.
    pub(crate) payload: Bytes,
    /// Properties and headers.
    pub(crate) properties: BasicProperties,
}

/// A channel in confirm mode, reopened after the connection or channel died.
pub(crate) struct ConfirmChannel {
    link: Arc<Link>,
    channel: Mutex<Option<Channel>>,
}

impl ConfirmChannel {
    /// A confirm channel opened on first use.
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Self {
            link,
            channel: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }

        let channel = self.link.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| map("turning on publisher confirms", e))?;
        debug!(channel = channel.id(), "opened a confirm channel");
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes every message and waits for each one's confirm, returning one result
    /// per message in order.
    pub(crate) async fn publish_all(&self, batch: Vec<Outgoing>) -> Vec<Result<()>> {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(error) => return batch.iter().map(|_| Err(copy(&error))).collect(),
        };
        let config = self.link.config();
        let options = BasicPublishOptions {
            mandatory: config.mandatory,
            ..BasicPublishOptions::default()
        };
        let timeout = config.confirm_timeout;

        // Joined, the publishes are polled in order, so their frames are queued in
        // order and all of them are in flight before the first confirm is awaited.
        let sends = batch
            .iter()
            .map(|out| send(&channel, out, options, timeout));
        join_all(sends).await
    }

    /// Closes the channel, if open.
    pub(crate) async fn close(&self) {
        if let Some(channel) = self.channel.lock().await.take() {
            // Closing a channel that already died has nothing left to release.
            let _ = channel.close(200, "wharf closing".into()).await;
        }
    }
}

async fn send(
    channel: &Channel,
    out: &Outgoing,
    options: BasicPublishOptions,
    timeout: Duration,
) -> Result<()> {
    let exchange = name(&out.exchange)?;
    let routing_key = name(&out.routing_key)?;
    let publish = channel.basic_publish(
        exchange,
        routing_key,
        options,
        &out.payload,
        out.properties.clone(),
    );
    let confirm = publish
        .await
        .map_err(|e| map(&format!("publishing to {}", target(out)), e))?;

    let confirmation = tokio::time::timeout(timeout, confirm)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "RabbitMQ did not confirm a publish to {} within {timeout:?}; it may or \
                     may not have been stored",
                    target(out)
                ),
            )
        })?
        .map_err(|e| map(&format!("confirming a publish to {}", target(out)), e))?;
    verdict(out, confirmation)
}

fn verdict(out: &Outgoing, confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => {
            trace!(exchange = %out.exchange, "publish confirmed");
            Ok(())
        }
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "RabbitMQ returned the message as unroutable ({} {}): no queue is bound \
                     to {}",
                returned.reply_code,
                returned.reply_text,
                target(out)
            ),
        )),
        Confirmation::Nack(None) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("RabbitMQ refused to store a message for {}", target(out)),
        )),
        Confirmation::NotRequested => Err(Error::new(
            ErrorKind::Internal,
            "the channel was not in confirm mode",
        )),
    }
}

fn target(out: &Outgoing) -> String {
    if out.exchange.is_empty() {
        format!("queue {}", out.routing_key)
    } else {
        format!("exchange {}", out.exchange)
    }
}

/// A second error with the same kind and message, for every message of a failed batch.
pub(crate) fn copy(error: &Error) -> Error {
    Error::new(error.kind(), error.message().to_owned())
}

/// Delay queues already declared, and when, so each is re-declared often enough to
/// outlive the messages published into it (see [`topology::delay_queue_refresh`]).
#[derive(Default)]
pub(crate) struct DelayQueues {
    declared: std::sync::Mutex<HashMap<String, Instant>>,
}

impl DelayQueues {
    /// Makes sure `queue` exists, delaying by `delay` and then dead-lettering to
    /// `exchange` with `routing_key`.
    pub(crate) async fn ensure(
        &self,
        link: &Link,
        queue: &str,
        delay: Duration,
        exchange: &str,
        routing_key: &str,
    ) -> Result<()> {
        if self.fresh(queue, delay) {
            return Ok(());
        }

        let channel = link.channel().await?;
        let declared =
            topology::declare_delay_queue(&channel, queue, delay, exchange, routing_key).await;
        // The channel served one declaration; a failed one has closed it already.
        let _ = channel.close(200, "declared".into()).await;
        declared?;

        self.lock().insert(queue.to_owned(), Instant::now());
        Ok(())
    }

    /// Forgets `queue`, so the next use declares it again.
    pub(crate) fn forget(&self, queue: &str) {
        self.lock().remove(queue);
    }

    fn fresh(&self, queue: &str, delay: Duration) -> bool {
        let refresh = topology::delay_queue_refresh(delay);
        self.lock()
            .get(queue)
            .is_some_and(|at| at.elapsed() < refresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// wharf's [`TopicDriver`] for one RabbitMQ exchange, or for one queue.
pub struct RabbitMqPublisher {
    topic: String,
    route: Route,
    caps: Capabilities,
    link: Arc<Link>,
    confirms: ConfirmChannel,
    delays: DelayQueues,
}

/// Where a publisher's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// To the topic's exchange, and so to every queue bound to it.
    Exchange,
    /// Straight into one queue, through the default exchange.
    Queue,
}

impl RabbitMqPublisher {
    pub(crate) fn new(topic: String, caps: Capabilities, link: Arc<Link>) -> Self {
        Self::routed(topic, Route::Exchange, caps, link)
    }

    /// A publisher into `queue` alone, past the exchange its topic fans out through:
    /// for redriving one subscription's dead letters without repeating them to every
    /// other subscription of the topic. Delayed messages wait in the queue's nack
    /// delay queues.
    pub(crate) fn into_queue(queue: String, caps: Capabilities, link: Arc<Link>) -> Self {
        Self::routed(queue, Route::Queue, caps, link)
    }

    fn routed(topic: String, route: Route, caps: Capabilities, link: Arc<Link>) -> Self {
        Self {
            topic,
            route,
            caps,
            confirms: ConfirmChannel::new(link.clone()),
            link,
            delays: DelayQueues::default(),
        }
    }

    async fn outgoing(&self, message: &Message) -> Result<Outgoing> {
        headers::check(message)?;
        let properties = headers::properties(message, &Carry::default());
        let payload = message.payload().clone();

        let Some(delay) = message.delay().filter(|d| !d.is_zero()) else {
            let (exchange, routing_key) = match self.route {
                Route::Exchange => (self.topic.clone(), String::new()),
                Route::Queue => (String::new(), self.topic.clone()),
            };
            return Ok(Outgoing {
                exchange,
                routing_key,
                payload,
                properties,
            });
        };
        let queue = self.delay_queue(delay).await?;
        Ok(Outgoing {
            exchange: String::new(),
            routing_key: queue,
            payload,
            properties,
        })
    }

    /// The delay queue for `delay`, declared: it dead-letters into the topic's
    /// exchange, or through the default exchange into the queue.
    async fn delay_queue(&self, delay: Duration) -> Result<String> {
        let (queue, exchange, routing_key) = match self.route {
            Route::Exchange => {
                let queue = topology::publish_delay_queue(&self.topic, delay);
                (queue, self.topic.as_str(), "")
            }
            Route::Queue => {
                let queue = topology::nack_delay_queue(&self.topic, delay);
                (queue, "", self.topic.as_str())
            }
        };
        self.delays
            .ensure(&self.link, &queue, delay, exchange, routing_key)
            .await?;
        Ok(queue)
    }
}

#[async_trait]
impl TopicDriver for RabbitMqPublisher {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(batch.len());
        let mut ready = Vec::with_capacity(batch.len());
        for message in batch {
            match self.outgoing(message).await {
                Ok(out) => {
                    ready.push(out);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }

        let sent = self.confirms.publish_all(ready).await;
        let mut sent = sent.into_iter();
        results
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    sent.next().unwrap_or_else(|| {
                        Err(Error::new(
                            ErrorKind::Internal,
                            "a publish result went missing",
                        ))
                    })
                })
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.confirms.close().await;
        Ok(())
    }
}
