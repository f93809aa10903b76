//! Operating queues on RabbitMQ: the backlog figures of [`Backend::stats`], the
//! dead-letter peek and purge, the redrive publisher and the setup checks of the
//! doctor (in `doctor`).
//!
//! AMQP reports what a queue holds ready (a passive `queue.declare`), fetches messages
//! one at a time (`basic.get`) and purges (`queue.purge`). The rest comes from the
//! management plugin's HTTP API (in `management`): where it cannot be reached, those
//! figures are unknown with the reason and what to do, and nothing else fails. The
//! crate's [operating queues](crate#operating-queues) section says where each figure
//! comes from.

mod doctor;
mod management;

pub(crate) use management::Management;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Queue};
use tracing::{debug, info, warn};
use wharf_core::{
    AckId, Backend, Error, ErrorKind, Figure, Publisher, Received, Result, SubscriptionStats,
};

use crate::backend::{RabbitMq, done};
use crate::config::QueueType;
use crate::error::{kind_of, map};
use crate::headers;
use crate::publish::{ConfirmChannel, Outgoing, RabbitMqPublisher};
use crate::subscribe::Source;
use crate::topology::{check_name, name};
use management::{QueueInfo, Unreachable};

/// Why a RabbitMQ subscription has no consumer lag.
const NOT_A_LOG: &str = "a RabbitMQ subscription is a queue, not a log: its backlog is the \
                         ready, in-flight and delayed counts";

/// A queue that holds delayed messages on their way to a subscription, counted.
#[derive(Debug)]
struct Delay {
    name: String,
    /// Messages in it now, over AMQP.
    messages: u64,
    /// The head message's timestamp, as the management plugin last sampled it.
    head: Option<u64>,
}

impl RabbitMq {
    pub(crate) async fn subscription_stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        check_name("subscription", subscription)?;
        let work = self.require(subscription).await?;
        let dead_lettered = self.dead_lettered(subscription).await?;

        let sample = self.management().sampled_queue(subscription).await;
        let delays = match &sample {
            // Nothing answers: asking again for the delay queues would only wait again.
            Err(unreachable) if unreachable.is_down() => Err(unreachable.clone()),
            _ => self.delays(subscription).await?,
        };

        let (ready, in_flight) = ready_and_in_flight(&sample, &work);
        let oldest_age = oldest_age(&sample, &delays);
        let delayed = match &delays {
            Ok(delays) => Figure::Known(delays.iter().map(|d| d.messages).sum()),
            Err(unreachable) => Figure::unknown(unreachable.reason()),
        };
        debug!(subscription, %ready, %in_flight, %delayed, %dead_lettered, "stats");
        Ok(SubscriptionStats {
            subscription: subscription.to_owned(),
            ready,
            in_flight,
            delayed,
            dead_lettered,
            oldest_age,
            consumer_lag: Figure::unknown(NOT_A_LOG),
        })
    }

    pub(crate) async fn peek(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        check_name("subscription", subscription)?;
        self.require(subscription).await?;
        let source = self.dead_letter_source(subscription);
        let queue = name(&source.queue)?;
        if self.declared(&source.queue).await?.is_none() {
            return Err(no_dead_letter_queue(subscription, &source.queue));
        }
        let kind = self.queue_type_of(&source.queue).await;

        let channel = self.channel().await?;
        let peeked = match take(&channel, queue, &source, max).await {
            Ok(taken) => Ok(self.give_back(&channel, kind, taken).await),
            Err(error) => Err(error),
        };
        // Closing the channel also returns what a failed peek left unacknowledged.
        done(channel).await;
        let count = peeked.as_ref().map_or(0, Vec::len);
        debug!(subscription, dead_letters = %source.queue, peeked = count, ?kind, "peeked");
        peeked
    }

    /// The type of `queue` as the management API reports it, or else the type wharf
    /// declares queues with.
    async fn queue_type_of(&self, queue: &str) -> QueueType {
        match self.management().queue(queue).await {
            Ok(Some(info)) if info.kind == "classic" => QueueType::Classic,
            Ok(Some(info)) if info.kind == "quorum" => QueueType::Quorum,
            _ => self.config().queue_type,
        }
    }

    /// Puts peeked messages back. A classic queue takes a returned message back at its
    /// place and counts nothing, so one `basic.nack` (multiple, requeue) does. A quorum
    /// queue counts every return toward its delivery limit (RabbitMQ 4 gives every
    /// quorum queue one, 20 by default) and puts it at the back, so there each message
    /// is replaced by a confirmed copy instead (see [`Self::replace_with_copies`]).
    async fn give_back(
        &self,
        channel: &Channel,
        kind: QueueType,
        taken: Vec<Taken>,
    ) -> Vec<Received> {
        let Some(last) = taken.last().map(|t| t.tag) else {
            return Vec::new();
        };

        match kind {
            QueueType::Classic => {
                if let Err(error) = channel.basic_nack(last, requeue(true)).await {
                    // Closing the channel returns them all the same.
                    debug!(%error, "returning peeked messages by closing the channel");
                }
            }
            QueueType::Quorum => self.replace_with_copies(channel, &taken).await,
        }
        taken.into_iter().map(|t| t.received).collect()
    }

    /// Publishes a copy of each taken message into its queue and acks the original once
    /// the copy is confirmed: the copy's deliveries are counted afresh, and a dead
    /// letter is never lost to peeking. An original whose copy is not confirmed is
    /// returned the plain way.
    async fn replace_with_copies(&self, channel: &Channel, taken: &[Taken]) {
        let confirms = ConfirmChannel::new(self.link().clone());
        let copies = taken.iter().map(|t| t.copy.clone()).collect();
        let published = confirms.publish_all(copies).await;
        confirms.close().await;

        let mut returned = 0;
        for (taken, published) in taken.iter().zip(published) {
            let settled = match published {
                Ok(()) => {
                    channel
                        .basic_ack(taken.tag, BasicAckOptions::default())
                        .await
                }
                Err(_) => {
                    returned += 1;
                    channel.basic_nack(taken.tag, requeue(false)).await
                }
            };
            if let Err(error) = settled {
                debug!(%error, "settling a peeked message; closing the channel returns it");
            }
        }
        if returned > 0 {
            let queue = taken.first().map(|t| t.copy.routing_key.as_str());
            warn!(
                queue,
                returned, "peek: copies not confirmed; originals returned instead"
            );
        }
    }

    pub(crate) async fn purge(&self, subscription: &str) -> Result<Figure<u64>> {
        check_name("subscription", subscription)?;
        self.require(subscription).await?;
        let dead_letters = self.created(subscription).dead_letters;
        let queue = name(&dead_letters)?;

        let channel = self.channel().await?;
        let purged = channel
            .queue_purge(queue, QueuePurgeOptions::default())
            .await;
        done(channel).await;

        match purged {
            Ok(count) => {
                info!(subscription, %dead_letters, purged = count, "purged dead letters");
                Ok(Figure::Known(u64::from(count)))
            }
            Err(error) if kind_of(&error) == ErrorKind::NotFound => {
                Err(no_dead_letter_queue(subscription, &dead_letters))
            }
            Err(error) => Err(map(&format!("purging queue {dead_letters}"), error)),
        }
    }

    pub(crate) async fn queue_publisher(&self, subscription: &str) -> Result<Publisher> {
        check_name("subscription", subscription)?;
        self.require(subscription).await?;

        let driver = RabbitMqPublisher::into_queue(
            subscription.to_owned(),
            self.capabilities(),
            self.link().clone(),
        );
        Ok(Publisher::new(driver))
    }

    /// The subscription's queue, or `NotFound` saying how to create it.
    async fn require(&self, subscription: &str) -> Result<Queue> {
        self.declared(subscription)
            .await?
            .ok_or_else(|| no_subscription(subscription))
    }

    /// A queue's ready count and consumers, live over AMQP; `None` if there is no such
    /// queue.
    pub(crate) async fn declared(&self, queue: &str) -> Result<Option<Queue>> {
        let queue_name = name(queue)?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };

        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(queue_name, options, FieldTable::default())
            .await;
        done(channel).await;

        match declared {
            Ok(found) => Ok(Some(found)),
            // The broker closes the channel over it; the connection stays up.
            Err(error) if kind_of(&error) == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(map(&format!("looking up queue {queue}"), error)),
        }
    }

    async fn dead_lettered(&self, subscription: &str) -> Result<Figure<u64>> {
        let dead_letters = self.created(subscription).dead_letters;

        Ok(match self.declared(&dead_letters).await? {
            Some(queue) => Figure::Known(u64::from(queue.message_count())),
            None => Figure::unknown(format!(
                "dead-letter queue `{dead_letters}` does not exist; run the doctor to see \
                 where the dead letters of `{subscription}` go"
            )),
        })
    }

    /// The delay queues that feed `subscription`: its own nack delays, and the publish
    /// delays of every topic it is bound to. Listed through the management API, counted
    /// live over AMQP: a delay queue is often younger than the plugin's last sample.
    async fn delays(
        &self,
        subscription: &str,
    ) -> Result<std::result::Result<Vec<Delay>, Unreachable>> {
        let listed = match self.delay_queues(subscription).await {
            Ok(listed) => listed,
            Err(unreachable) => return Ok(Err(unreachable)),
        };

        let mut delays = Vec::with_capacity(listed.len());
        for queue in listed {
            // An idle delay queue expires by itself; one gone since the listing is empty.
            if let Some(declared) = self.declared(&queue.name).await? {
                delays.push(Delay {
                    messages: u64::from(declared.message_count()),
                    head: queue.head_timestamp(),
                    name: queue.name,
                });
            }
        }
        Ok(Ok(delays))
    }

    async fn delay_queues(
        &self,
        subscription: &str,
    ) -> std::result::Result<Vec<QueueInfo>, Unreachable> {
        let management = self.management();
        let bindings = management
            .queue_bindings(subscription)
            .await?
            .ok_or_else(|| management.unknown_queue(subscription))?;

        // The default exchange binds every queue by its name; it has no delay queues.
        let mut topics: Vec<&str> = bindings
            .iter()
            .map(|binding| binding.source.as_str())
            .filter(|source| !source.is_empty())
            .collect();
        topics.sort_unstable();
        topics.dedup();
        management
            .queues_matching(&delay_pattern(subscription, &topics))
            .await
    }

    /// Where the dead letters of `subscription` are read from, as the dead-letter
    /// subscriber reads them.
    fn dead_letter_source(&self, subscription: &str) -> Source {
        let created = self.created(subscription);
        Source {
            queue: created.dead_letters,
            dead_letter_exchange: None,
            counted: self.config().queue_type == QueueType::Quorum,
            delivery_limit: created.max_attempts,
        }
    }
}

/// One message taken from the head of a queue for a peek, not yet given back.
struct Taken {
    tag: u64,
    received: Received,
    /// What replaces it on a quorum queue.
    copy: Outgoing,
}

/// Takes up to `max` messages from the head of the queue with `basic.get`, holding each
/// unacknowledged so that the next get moves on to the one behind it.
async fn take(
    channel: &Channel,
    queue: lapin::types::ShortString,
    source: &Source,
    max: usize,
) -> Result<Vec<Taken>> {
    let mut taken = Vec::new();
    while taken.len() < max {
        let got = channel
            .basic_get(queue.clone(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| map(&format!("peeking at queue {}", source.queue), e))?;
        let Some(got) = got else { break };

        let remaining = got.message_count;
        taken.push(taken_from(got.delivery, source));
        if remaining == 0 {
            break;
        }
    }
    Ok(taken)
}

fn taken_from(delivery: Delivery, source: &Source) -> Taken {
    let tag = delivery.delivery_tag;
    let properties = delivery.properties.clone();
    let payload = Bytes::from(delivery.data.clone());
    let received = received(delivery, source);

    let copy = Outgoing {
        exchange: String::new(),
        routing_key: source.queue.clone(),
        properties: headers::requeued(&properties, received.attributes()),
        payload,
    };
    Taken {
        tag,
        received,
        copy,
    }
}

/// Nack options that return the message (and, with `multiple`, every earlier one).
fn requeue(multiple: bool) -> BasicNackOptions {
    BasicNackOptions {
        multiple,
        requeue: true,
    }
}

fn received(delivery: Delivery, source: &Source) -> Received {
    // Nothing to settle: the peek returns every message itself.
    let raw = headers::incoming(delivery, source).into_raw(AckId::new(()));
    Received::from_raw(raw, &source.queue)
}

/// Ready and in flight, both from the same sample of the management plugin; without
/// one, ready as AMQP counts it now and in flight unknown.
fn ready_and_in_flight(
    sample: &std::result::Result<QueueInfo, Unreachable>,
    work: &Queue,
) -> (Figure<u64>, Figure<u64>) {
    match sample {
        Ok(queue) => (
            Figure::Known(queue.messages_ready.unwrap_or_default()),
            Figure::Known(queue.messages_unacknowledged.unwrap_or_default()),
        ),
        Err(unreachable) => (
            Figure::Known(u64::from(work.message_count())),
            Figure::unknown(unreachable.reason()),
        ),
    }
}

/// How long ago the oldest message not yet settled was published, where RabbitMQ can
/// tell: known to be none when nothing waits, otherwise only for classic queues with
/// nothing in flight, from the `timestamp` of each head message (whole seconds).
fn oldest_age(
    sample: &std::result::Result<QueueInfo, Unreachable>,
    delays: &std::result::Result<Vec<Delay>, Unreachable>,
) -> Figure<Option<Duration>> {
    let (queue, delays) = match (sample, delays) {
        (Ok(queue), Ok(delays)) => (queue, delays),
        (Err(unreachable), _) | (_, Err(unreachable)) => {
            return Figure::unknown(unreachable.reason());
        }
    };
    let ready = queue.messages_ready.unwrap_or_default();
    let in_flight = queue.messages_unacknowledged.unwrap_or_default();
    let waiting: Vec<&Delay> = delays.iter().filter(|d| d.messages > 0).collect();

    if ready == 0 && in_flight == 0 && waiting.is_empty() {
        return Figure::Known(None);
    }
    if in_flight > 0 {
        return Figure::unknown(format!(
            "{in_flight} deliveries are in flight, and RabbitMQ reports only the age of the \
             message at the head of a queue"
        ));
    }
    if queue.kind != "classic" {
        return Figure::unknown(format!(
            "{} queues do not report the age of their head message \
             (head_message_timestamp); classic queues do",
            queue.kind
        ));
    }

    let mut heads = Vec::with_capacity(waiting.len() + 1);
    if ready > 0 {
        heads.push((queue.name.as_str(), queue.head_timestamp()));
    }
    heads.extend(waiting.iter().map(|d| (d.name.as_str(), d.head)));
    let mut oldest = u64::MAX;
    for (name, head) in heads {
        let Some(seconds) = head else {
            return Figure::unknown(format!(
                "the message at the head of queue `{name}` carries no timestamp property, or \
                 the management plugin has not sampled the queue yet"
            ));
        };
        oldest = oldest.min(seconds);
    }
    let published = UNIX_EPOCH + Duration::from_secs(oldest);
    Figure::Known(Some(
        SystemTime::now()
            .duration_since(published)
            .unwrap_or_default(),
    ))
}

/// The names of the delay queues that feed `subscription`, as a regular expression:
/// `S.delay.<ms>` and `T.publish-delay.<ms>` for each topic `T`.
fn delay_pattern(subscription: &str, topics: &[&str]) -> String {
    let mut prefixes = vec![format!("{}\\.delay", escape(subscription))];
    prefixes.extend(
        topics
            .iter()
            .map(|topic| format!("{}\\.publish-delay", escape(topic))),
    );
    format!("^({})\\.[0-9]+$", prefixes.join("|"))
}

/// `text` as a literal in the broker's regular expressions (Erlang's `re`, PCRE).
fn escape(text: &str) -> String {
    const SPECIAL: &str = "\\^$.|?*+()[]{}";
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if SPECIAL.contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn no_subscription(subscription: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "subscription `{subscription}` does not exist: RabbitMQ has no queue of that name \
             in this virtual host; create it with create_subscription"
        ),
    )
}

fn no_dead_letter_queue(subscription: &str, queue: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "the dead-letter queue `{queue}` of subscription `{subscription}` does not exist; \
             run the doctor to see where its dead letters go, or create the subscription \
             again with create_subscription"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_queues_of_the_subscription_and_its_topics_match() {
        let pattern = delay_pattern("billing.eu", &["orders"]);

        assert_eq!(
            pattern,
            "^(billing\\.eu\\.delay|orders\\.publish-delay)\\.[0-9]+$"
        );
        assert_eq!(escape("a-b_c+d(1)"), "a-b_c\\+d\\(1\\)");
        assert_eq!(escape("zürich"), "zürich");
    }
}
