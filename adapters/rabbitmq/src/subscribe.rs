//! Consuming: [`RabbitMqSubscriber`], wharf's [`SubscriptionDriver`] for one queue.
//!
//! Each subscriber runs one long-lived consumer (`basic.consume` with manual acks and
//! `basic.qos` set to the configured prefetch) in a background task that feeds a bounded
//! buffer; `receive_batch` drains that buffer within its wait. When the channel or the
//! connection dies, the task logs a warning, reconnects with backoff and consumes again,
//! while `receive_batch` keeps returning within its wait and reports the fault once the
//! buffer is empty, so a caller never hangs on a dead channel. Deliveries of a dead
//! channel still in the buffer are dropped: the broker has already put them back.
//!
//! The consumer runs only while someone receives: when the subscriber closes, or after
//! the idle window without a receive, it is cancelled and the buffer is handed back to
//! the queue (see [`ConsumeLoop`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Consumer};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;
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
    /// Keeps the delivery's channel open until the delivery is settled or dropped: a
    /// paused consumer's channel closes once nothing received on it is outstanding.
    _channel: Channel,
    id: String,
    payload: Bytes,
    attributes: Attributes,
    carry: Carry,
}

/// A delivery in the buffer, with the channel it arrived on.
struct Arrival {
    delivery: Delivery,
    channel: Channel,
}

/// Message ids nacked back to the queue whose redelivery may still be on its way.
type Requeued = Arc<SyncMutex<HashSet<String>>>;

/// How long a stopping consumer waits for messages it just nacked back to the queue:
/// a quorum queue may redeliver one after the consumer's cancel is confirmed, and
/// lapin then drops it unseen, so it would return later with one attempt too many.
const QUIESCE: Duration = Duration::from_secs(1);

/// Where the subscriber's deliveries come from.
pub(crate) struct Source {
    /// The queue consumed.
    pub(crate) queue: String,
    /// Where explicit dead letters are published: the queue's dead-letter exchange.
    /// `None` for a dead-letter queue itself.
    pub(crate) dead_letter_exchange: Option<String>,
    /// Whether the queue keeps `x-delivery-count` (quorum queues do).
    pub(crate) counted: bool,
    /// For a dead-letter queue: the deliveries one copy of a message gets before the
    /// broker's delivery limit dead-letters it, if this process created the
    /// subscription and so knows its spec.
    pub(crate) delivery_limit: Option<u32>,
}

/// wharf's [`SubscriptionDriver`] for one RabbitMQ queue.
pub struct RabbitMqSubscriber {
    source: Arc<Source>,
    caps: Capabilities,
    link: Arc<Link>,
    buffer: Arc<Mutex<mpsc::Receiver<Arrival>>>,
    fault: Arc<SyncMutex<Option<Error>>>,
    demand: Arc<Demand>,
    requeued: Requeued,
    stop: watch::Sender<bool>,
    consumer: SyncMutex<Option<JoinHandle<()>>>,
    republish: Arc<ConfirmChannel>,
    delays: DelayQueues,
}

impl RabbitMqSubscriber {
    /// Starts consuming `source` in the background.
    pub(crate) fn start(source: Source, caps: Capabilities, link: Arc<Link>) -> Self {
        let prefetch = link.config().prefetch;
        let (sender, buffer) = mpsc::channel(usize::from(prefetch));
        let buffer = Arc::new(Mutex::new(buffer));
        let (stop, stopped) = watch::channel(false);
        let republish = Arc::new(ConfirmChannel::new(link.clone()));
        let source = Arc::new(source);
        let fault = Arc::new(SyncMutex::new(None));
        let demand = Arc::new(Demand::new());
        let requeued = Requeued::default();

        let task = ConsumeLoop {
            link: link.clone(),
            source: source.clone(),
            fault: fault.clone(),
            sender,
            buffer: buffer.clone(),
            republish: republish.clone(),
            demand: demand.clone(),
            requeued: requeued.clone(),
            stop: stopped,
        };
        let consumer = SyncMutex::new(Some(tokio::spawn(task.run())));

        Self {
            source,
            caps,
            link,
            buffer,
            fault,
            demand,
            requeued,
            stop,
            consumer,
            republish,
            delays: DelayQueues::default(),
        }
    }

    fn raw(&self, arrival: Arrival) -> RawDelivery {
        let acker = arrival.delivery.acker.clone();
        let incoming = headers::incoming(arrival.delivery, &self.source);
        let receipt = Receipt {
            acker,
            _channel: arrival.channel,
            id: incoming.id.clone(),
            payload: incoming.payload.clone(),
            attributes: incoming.attributes.clone(),
            carry: incoming.carry.clone(),
        };

        incoming.into_raw(AckId::new(receipt))
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
        let _receiving = self.demand.begin();
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
            let Some(arrival) = next else { break };
            // A dead channel's deliveries are already back in the queue.
            if arrival.delivery.acker.poisoned() {
                continue;
            }
            received.push(self.raw(arrival));
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
            self.requeued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(receipt.id.clone());
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
        let _ = self.stop.send(true);
        let task = self
            .consumer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            // The loop hands its buffer back before it ends; bounded so close never hangs.
            let _ = tokio::time::timeout(CLOSE_WAIT, task).await;
        }
        self.republish.close().await;
        Ok(())
    }
}

/// Longest `close` waits for the consumer to hand its buffer back.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

impl Drop for RabbitMqSubscriber {
    fn drop(&mut self) {
        // The loop hands its buffer back, then drops its channel, which returns the
        // deliveries still unacked to the queue.
        let _ = self.stop.send(true);
    }
}

/// Whether anyone is receiving: a receive in progress, or one that ended recently.
pub(crate) struct Demand {
    waiting: AtomicUsize,
    last: SyncMutex<Instant>,
    wake: Notify,
}

impl Demand {
    fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            last: SyncMutex::new(Instant::now()),
            wake: Notify::new(),
        }
    }

    /// Marks a receive in progress until the guard drops.
    fn begin(self: &Arc<Self>) -> DemandGuard {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.touch();
        self.wake.notify_one();
        DemandGuard(self.clone())
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self, window: Duration) -> bool {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.load(Ordering::SeqCst) == 0 && last.elapsed() >= window
    }
}

struct DemandGuard(Arc<Demand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why forwarding from one consumer stopped.
enum Ended {
    /// Nobody received for the idle window: hand the buffer back and pause.
    Idle,
    /// The subscriber closed or was dropped.
    Stop,
    /// The channel or the consumer failed.
    Failed(Error),
}

/// The background consumer of one subscriber.
///
/// It consumes only while someone receives. After [`RabbitMqConfig::idle_release`]
/// without a receive it cancels the consumer and hands the buffered deliveries back
/// to the queue, so a subscriber that stopped receiving (a worker shutting down, a
/// test holding an extra handle) does not sit on messages another consumer could
/// take. Handed back are copies that keep their attempt count, because a plain return
/// would count as a failed delivery.
///
/// [`RabbitMqConfig::idle_release`]: crate::RabbitMqConfig::idle_release
struct ConsumeLoop {
    link: Arc<Link>,
    source: Arc<Source>,
    fault: Arc<SyncMutex<Option<Error>>>,
    sender: mpsc::Sender<Arrival>,
    buffer: Arc<Mutex<mpsc::Receiver<Arrival>>>,
    republish: Arc<ConfirmChannel>,
    demand: Arc<Demand>,
    requeued: Requeued,
    stop: watch::Receiver<bool>,
}

impl ConsumeLoop {
    async fn run(mut self) {
        while !self.stopped() {
            if self.demand.idle_for(self.idle()) {
                self.wait_for_demand().await;
                continue;
            }
            match self.session().await {
                Ok(Ended::Stop) => break,
                Ok(Ended::Idle) => {}
                Ok(Ended::Failed(error)) | Err(error) => {
                    warn!(source = %self.source.queue, error.kind = %error.kind(), %error,
                        "RabbitMQ consumer interrupted; resuming");
                    self.set_fault(Some(error));
                    self.pause().await;
                }
            }
        }
    }

    /// Consumes on a new channel until the consumer ends. The channel closes, returning
    /// what is still unacked to the queue, once the deliveries taken from it are
    /// settled or dropped.
    async fn session(&mut self) -> Result<Ended> {
        let channel = self.open().await?;
        self.drop_dead();
        let mut consumer = self.consume(&channel).await?;
        self.set_fault(None);

        let ended = self.forward(&channel, &mut consumer).await;
        if !matches!(ended, Ended::Failed(_)) {
            self.quiesce(&channel, &mut consumer).await;
            self.cancel(&channel, consumer).await;
            self.release().await;
        }
        Ok(ended)
    }

    /// Waits, briefly, for messages this subscriber nacked back to the queue to
    /// arrive, so the cancel does not race their redelivery.
    async fn quiesce(&self, channel: &Channel, consumer: &mut Consumer) {
        let deadline = Instant::now() + QUIESCE;
        while !self.requeued_lock().is_empty() {
            let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
            else {
                break;
            };
            self.push(channel, delivery).await;
        }
        self.requeued_lock().clear();
    }

    async fn push(&self, channel: &Channel, delivery: Delivery) {
        if let Some(id) = delivery.properties.message_id() {
            self.requeued_lock().remove(id.as_str());
        }
        let arrival = Arrival {
            delivery,
            channel: channel.clone(),
        };
        // The buffer holds the prefetch, so a send waits only if nobody drains it. A
        // stopping loop must not hang on it: the delivery is then dropped, and returns
        // to the queue when its channel closes.
        let mut stop = self.stop.clone();
        tokio::select! {
            biased;
            _ = self.sender.send(arrival) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }

    /// Drops the deliveries of a dead channel still in the buffer, so that they leave
    /// room for the new consumer's; the broker has put them back already. A receive in
    /// progress holds the buffer and skips them itself: waiting for it would deadlock,
    /// as it waits for this consumer.
    fn drop_dead(&self) {
        let Ok(mut buffer) = self.buffer.try_lock() else {
            return;
        };
        let mut alive = Vec::new();
        while let Ok(arrival) = buffer.try_recv() {
            if !arrival.delivery.acker.poisoned() {
                alive.push(arrival);
            }
        }
        for arrival in alive {
            // Fewer than were just taken out, so there is room.
            let _ = self.sender.try_send(arrival);
        }
    }

    fn requeued_lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.requeued.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn open(&self) -> Result<Channel> {
        let channel = self.link.channel().await?;
        let prefetch = self.link.config().prefetch;

        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| map("setting the prefetch", e))?;
        Ok(channel)
    }

    async fn consume(&self, channel: &Channel) -> Result<Consumer> {
        let consumer = channel
            .basic_consume(
                name(&self.source.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(&format!("consuming queue {}", self.source.queue), e))?;

        debug!(source = %self.source.queue, "RabbitMQ consumer started");
        Ok(consumer)
    }

    async fn forward(&mut self, channel: &Channel, consumer: &mut Consumer) -> Ended {
        let idle = self.idle();
        loop {
            tokio::select! {
                _ = self.stop.changed() => return Ended::Stop,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.push(channel, delivery).await,
                    Some(Err(error)) => return Ended::Failed(map("receiving", error)),
                    None => return Ended::Failed(self.cancelled()),
                },
                () = tokio::time::sleep(idle) => {
                    if self.demand.idle_for(idle) {
                        return Ended::Idle;
                    }
                }
            }
        }
    }

    /// Cancels the consumer and buffers what the broker sent before the cancel took.
    async fn cancel(&self, channel: &Channel, mut consumer: Consumer) {
        let cancelled = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        if cancelled.is_err() {
            return;
        }

        let drain = async {
            while let Some(Ok(delivery)) = consumer.next().await {
                self.push(channel, delivery).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        debug!(source = %self.source.queue, "RabbitMQ consumer paused");
    }

    /// Hands every buffered delivery back to the queue without counting an attempt.
    async fn release(&self) {
        let mut buffer = self.buffer.lock().await;
        let mut released = 0;
        while let Ok(arrival) = buffer.try_recv() {
            if arrival.delivery.acker.poisoned() {
                continue;
            }
            self.release_one(arrival.delivery).await;
            released += 1;
        }
        if released > 0 {
            debug!(source = %self.source.queue, released, "handed idle buffer back");
        }
    }

    async fn release_one(&self, delivery: Delivery) {
        let acker = delivery.acker.clone();
        let incoming = headers::incoming(delivery, &self.source);
        let carry = Carry {
            id: Some(incoming.id.clone()),
            prior_attempts: incoming.attempt.saturating_sub(1),
            ..incoming.carry
        };
        let message = Message::new(incoming.payload.clone()).with_attributes(incoming.attributes);
        let properties = headers::properties(&message, &carry);
        let copy = outgoing("", &self.source.queue, incoming.payload, properties);

        let published = self.republish.publish_all(vec![copy]).await.pop();
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        // If the copy could not be stored, a plain return (counted) beats holding it.
        let settled = match published {
            Some(Ok(())) => acker.ack(BasicAckOptions::default()).await,
            _ => acker.nack(options).await,
        };
        if let Err(error) = settled {
            debug!(source = %self.source.queue, %error, "could not hand a delivery back");
        }
    }

    async fn wait_for_demand(&mut self) {
        tokio::select! {
            _ = self.stop.changed() => {}
            () = self.demand.wake.notified() => {}
        }
    }

    async fn pause(&mut self) {
        let pause = self.link.pause().await;
        tokio::select! {
            _ = self.stop.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }

    /// Stopped by the subscriber, or the subscriber is gone.
    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    fn idle(&self) -> Duration {
        self.link.config().idle_release
    }

    fn cancelled(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "RabbitMQ cancelled the consumer of queue {} (deleted, or the node is \
                 going down)",
                self.source.queue
            ),
        )
    }

    fn set_fault(&self, fault: Option<Error>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }
}
