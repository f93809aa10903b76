//! Consuming: [`RabbitMqSubscriber`], wharf's [`SubscriptionDriver`] for one queue.
//!
//! Each subscriber runs one long-lived consumer (`basic.consume` with manual acks and
//! `basic.qos` set to the configured prefetch) in a background task that feeds a bounded
//! buffer; `receive_batch` drains that buffer within its wait. When the channel or the
//! connection dies, the task logs a warning, reconnects with backoff and consumes again,
//! while `receive_batch` keeps returning within its wait and reports the fault once the
//! buffer is empty, so a caller never hangs on a dead channel. Deliveries of a dead
//! channel still in the buffer are dropped: the broker has already put them back.

use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Consumer};
use tokio::sync::{Mutex, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, warn};
use wharf_core::{
    AckId, Attributes, Capabilities, DeadLetter, Error, ErrorKind, Message, RawDelivery, Result,
    SubscriptionDriver,
};

use crate::error::map;
use crate::headers::{self, Carry};
use crate::link::Link;
use crate::publish::{ConfirmChannel, DelayQueues, Outgoing, copy};
use crate::topology::{self, name};

/// What [`AckId`] holds for a RabbitMQ delivery: its acker and what a republished
/// copy needs.
struct Receipt {
    acker: Acker,
    id: String,
    payload: Bytes,
    attributes: Attributes,
    carry: Carry,
}

/// Where the subscriber's deliveries come from.
pub(crate) struct Source {
    /// The queue consumed.
    pub(crate) queue: String,
    /// Where explicit dead letters are published: the queue's dead-letter exchange.
    /// `None` for a dead-letter queue itself.
    pub(crate) dead_letter_exchange: Option<String>,
    /// Whether the queue keeps `x-delivery-count` (quorum queues do).
    pub(crate) counted: bool,
}

/// wharf's [`SubscriptionDriver`] for one RabbitMQ queue.
pub struct RabbitMqSubscriber {
    source: Arc<Source>,
    caps: Capabilities,
    link: Arc<Link>,
    buffer: Mutex<mpsc::Receiver<Delivery>>,
    fault: Arc<SyncMutex<Option<Error>>>,
    consumer: AbortHandle,
    republish: ConfirmChannel,
    delays: DelayQueues,
}

impl RabbitMqSubscriber {
    /// Starts consuming `source` in the background.
    pub(crate) fn start(source: Source, caps: Capabilities, link: Arc<Link>) -> Self {
        let prefetch = link.config().prefetch;
        let (sender, buffer) = mpsc::channel(usize::from(prefetch));
        let source = Arc::new(source);
        let fault = Arc::new(SyncMutex::new(None));

        let task = ConsumeLoop {
            link: link.clone(),
            source: source.clone(),
            fault: fault.clone(),
            sender,
        };
        let consumer = tokio::spawn(task.run()).abort_handle();

        Self {
            source,
            caps,
            republish: ConfirmChannel::new(link.clone()),
            link,
            buffer: Mutex::new(buffer),
            fault,
            consumer,
            delays: DelayQueues::default(),
        }
    }

    fn raw(&self, delivery: Delivery) -> RawDelivery {
        let acker = delivery.acker.clone();
        let incoming = headers::incoming(delivery, self.source.counted);
        let receipt = Receipt {
            acker,
            id: incoming.id.clone(),
            payload: incoming.payload.clone(),
            attributes: incoming.attributes.clone(),
            carry: incoming.carry.clone(),
        };

        RawDelivery {
            id: incoming.id,
            payload: incoming.payload,
            attributes: incoming.attributes,
            ordering_key: None,
            attempt: incoming.attempt,
            published_at: incoming.carry.published_at.unwrap_or_else(SystemTime::now),
            first_failure: incoming.carry.first_failure,
            ack_id: AckId::new(receipt),
        }
    }

    fn fault(&self) -> Option<Error> {
        let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        fault.as_ref().map(copy)
    }

    /// Publishes a copy of the delivery to `out`, then acks the original.
    async fn move_to(&self, receipt: &Receipt, out: Outgoing) -> Result<()> {
        if receipt.acker.poisoned() {
            return Err(Error::lease_expired(&receipt.id));
        }
        let published = self.republish.publish_all(vec![out]).await.pop();
        published.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "no publish result")))?;

        ack(receipt).await
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        let carry = Carry {
            id: Some(receipt.id.clone()),
            first_failure: receipt.carry.first_failure.or(Some(SystemTime::now())),
            ..receipt.carry.clone()
        };
        let message =
            Message::new(receipt.payload.clone()).with_attributes(receipt.attributes.clone());
        let properties = headers::properties(&message, &carry);
        let queue = &self.source.queue;

        if delay.is_zero() {
            let out = outgoing("", queue, receipt.payload.clone(), properties);
            return self.move_to(receipt, out).await;
        }
        let delay_queue = topology::nack_delay_queue(queue, delay);
        self.delays
            .ensure(&self.link, &delay_queue, delay, "", queue)
            .await?;
        let out = outgoing("", &delay_queue, receipt.payload.clone(), properties);

        let moved = self.move_to(receipt, out).await;
        if moved
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::NotFound)
        {
            self.delays.forget(&delay_queue);
        }
        moved
    }
}

fn outgoing(
    exchange: &str,
    routing_key: &str,
    payload: Bytes,
    properties: lapin::BasicProperties,
) -> Outgoing {
    Outgoing {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        payload,
        properties,
    }
}

async fn ack(receipt: &Receipt) -> Result<()> {
    settled(receipt, receipt.acker.ack(BasicAckOptions::default()).await)
}

/// Maps an acker's answer: `false` means its channel died, and the broker has put the
/// message back for redelivery.
fn settled(receipt: &Receipt, outcome: lapin::Result<bool>) -> Result<()> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::lease_expired(&receipt.id)),
        Err(_) if receipt.acker.poisoned() => Err(Error::lease_expired(&receipt.id)),
        Err(error) => Err(map("settling a delivery", error)),
    }
}

#[async_trait]
impl SubscriptionDriver for RabbitMqSubscriber {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn subscription(&self) -> &str {
        &self.source.queue
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        let deadline = Instant::now() + wait;
        let Ok(mut buffer) = tokio::time::timeout_at(deadline, self.buffer.lock()).await else {
            return Ok(Vec::new());
        };

        let mut received = Vec::new();
        while received.len() < max {
            let next = if received.is_empty() {
                tokio::time::timeout_at(deadline, buffer.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                buffer.try_recv().ok()
            };
            let Some(delivery) = next else { break };
            // A dead channel's deliveries are already back in the queue.
            if delivery.acker.poisoned() {
                continue;
            }
            received.push(self.raw(delivery));
        }

        match self.fault() {
            Some(fault) if received.is_empty() => Err(fault),
            _ => Ok(received),
        }
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        let acks = ids
            .iter()
            .map(|id| async move { ack(id.expect::<Receipt>()?).await });
        join_all(acks).await
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        let receipt = id.expect::<Receipt>()?;

        // A quorum queue counts a plain return in `x-delivery-count` and applies its
        // delivery limit; anything else is republished with wharf's attempt header.
        if delay.is_zero() && self.source.counted {
            let options = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            return settled(receipt, receipt.acker.nack(options).await);
        }
        self.retry_later(receipt, delay).await
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        let receipt = id.expect::<Receipt>()?;
        let Some(exchange) = &self.source.dead_letter_exchange else {
            return Err(Error::unsupported(
                "rabbitmq",
                "dead-lettering from a dead-letter queue",
            ));
        };

        let carry = Carry {
            id: Some(receipt.id.clone()),
            published_at: receipt.carry.published_at,
            ..Carry::default()
        };
        let message = letter.to_message();
        headers::check(&message)?;
        let properties = headers::properties(&message, &carry);
        let out = outgoing(exchange, "", message.payload().clone(), properties);

        self.move_to(receipt, out).await
    }

    async fn extend_lease(&self, _id: &AckId, _lease: Duration) -> Result<()> {
        Err(Error::unsupported(
            "rabbitmq",
            "lease extension: RabbitMQ holds an unacked delivery until it is settled or the \
             consumer disconnects",
        ))
    }

    async fn close(&self) -> Result<()> {
        self.consumer.abort();
        self.buffer.lock().await.close();
        self.republish.close().await;
        Ok(())
    }
}

impl Drop for RabbitMqSubscriber {
    fn drop(&mut self) {
        // Ending the task drops its channel, which returns unacked deliveries to the queue.
        self.consumer.abort();
    }
}

/// The background consumer of one subscriber.
struct ConsumeLoop {
    link: Arc<Link>,
    source: Arc<Source>,
    fault: Arc<SyncMutex<Option<Error>>>,
    sender: mpsc::Sender<Delivery>,
}

impl ConsumeLoop {
    async fn run(self) {
        loop {
            match self.start().await {
                Ok((channel, consumer)) => {
                    self.set_fault(None);
                    let ended = self.forward(consumer).await;
                    drop(channel);
                    let Some(error) = ended else { return };
                    warn!(source = %self.source.queue, error.kind = %error.kind(), %error,
                        "RabbitMQ consumer stopped; resuming");
                    self.set_fault(Some(error));
                }
                Err(error) => {
                    warn!(source = %self.source.queue, error.kind = %error.kind(), %error,
                        "cannot start RabbitMQ consumer; retrying");
                    self.set_fault(Some(error));
                }
            }
            tokio::time::sleep(self.link.pause().await).await;
        }
    }

    async fn start(&self) -> Result<(Channel, Consumer)> {
        let channel = self.link.channel().await?;
        let prefetch = self.link.config().prefetch;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| map("setting the prefetch", e))?;

        let consumer = channel
            .basic_consume(
                name(&self.source.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(&format!("consuming queue {}", self.source.queue), e))?;
        debug!(source = %self.source.queue, prefetch, "RabbitMQ consumer started");
        Ok((channel, consumer))
    }

    /// Forwards deliveries until the consumer ends. Returns why it ended, or `None`
    /// when the subscriber is gone and the loop should stop.
    async fn forward(&self, mut consumer: Consumer) -> Option<Error> {
        while let Some(next) = consumer.next().await {
            match next {
                Ok(delivery) => {
                    if self.sender.send(delivery).await.is_err() {
                        return None;
                    }
                }
                Err(error) => return Some(map("receiving", error)),
            }
        }
        Some(Error::new(
            ErrorKind::Unavailable,
            format!(
                "RabbitMQ cancelled the consumer of queue {} (deleted, or the node is \
                 going down)",
                self.source.queue
            ),
        ))
    }

    fn set_fault(&self, fault: Option<Error>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }
}
