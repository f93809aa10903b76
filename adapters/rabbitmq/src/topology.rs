//! How wharf's topics and subscriptions are laid out in RabbitMQ, and the declarations
//! that create them.
//!
//! | wharf | RabbitMQ |
//! |---|---|
//! | topic `T` | durable exchange `T` (fanout, or topic with queues bound by `#`) |
//! | subscription `S` on `T` | durable queue `S` (quorum by default) bound to `T` |
//! | dead letters of `S` | fanout exchange `S.dlx` (`S`'s dead-letter exchange) → queue `S-dlq` |
//! | nack of `S` delayed `d` ms | classic queue `S.delay.d`, TTL `d`, dead-lettering back to `S` |
//! | publish to `T` delayed `d` ms | classic queue `T.publish-delay.d`, dead-lettering into `T` |
//!
//! The dead-letter queue takes the spec's name if it gives one. A delay queue
//! dead-letters through the default exchange (or into the topic's exchange) and holds
//! each message for exactly its TTL, so nothing arrives early. Its `x-expires` is twice
//! the delay plus a minute and every use re-declares it, so an idle one disappears by
//! itself but never while it still holds a message.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use wharf_core::{Error, Result, SubscriptionSpec};

use crate::config::{QueueType, TopicKind};
use crate::error::map;

/// Longest queue or exchange name AMQP can carry (a `shortstr`).
pub(crate) const MAX_NAME_BYTES: usize = 255;
/// Room the longest suffix wharf appends (`.publish-delay.` and ten digits) needs.
const SUFFIX_BYTES: usize = 26;
/// Longest TTL RabbitMQ accepts: an unsigned 32-bit count of milliseconds.
const MAX_TTL_MS: u64 = u32::MAX as u64;

/// The suffix of a subscription's dead-letter exchange.
const DLX_SUFFIX: &str = ".dlx";

/// Checks a topic or subscription name before it reaches the broker.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name must not be empty")));
    }
    if name.starts_with("amq.") {
        return Err(Error::invalid(format!(
            "{what} name `{name}` starts with `amq.`, which RabbitMQ reserves"
        )));
    }
    let limit = MAX_NAME_BYTES - SUFFIX_BYTES;
    if name.len() > limit {
        return Err(Error::invalid(format!(
            "{what} name is {} bytes; RabbitMQ names hold {MAX_NAME_BYTES} bytes and wharf \
             needs {SUFFIX_BYTES} of them for suffixes, so at most {limit}",
            name.len()
        )));
    }
    Ok(())
}

/// The dead-letter exchange of a subscription.
pub(crate) fn dead_letter_exchange(subscription: &str) -> String {
    format!("{subscription}{DLX_SUFFIX}")
}

/// The queue that delays a subscription's nacked messages by `delay`.
pub(crate) fn nack_delay_queue(subscription: &str, delay: Duration) -> String {
    format!("{subscription}.delay.{}", delay_ms(delay))
}

/// The queue that delays messages published to `topic` by `delay`.
pub(crate) fn publish_delay_queue(topic: &str, delay: Duration) -> String {
    format!("{topic}.publish-delay.{}", delay_ms(delay))
}

/// A delay as the milliseconds of its bucket: rounded up to whole milliseconds, then
/// above 100 ms up to two significant digits. A message is never early and at most
/// 10 % late, and jittered retry delays share at most 90 queues per power of ten.
pub(crate) fn delay_ms(delay: Duration) -> u64 {
    let ms = delay.as_nanos().div_ceil(1_000_000);
    let ms = u64::try_from(ms).unwrap_or(MAX_TTL_MS);

    let mut step = 1;
    while ms / step >= 100 {
        step *= 10;
    }
    ms.div_ceil(step).saturating_mul(step).min(MAX_TTL_MS)
}

/// Declares the exchange behind `topic`.
pub(crate) async fn declare_topic(channel: &Channel, topic: &str, kind: TopicKind) -> Result<()> {
    let kind = match kind {
        TopicKind::Fanout => ExchangeKind::Fanout,
        TopicKind::Topic => ExchangeKind::Topic,
    };
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };

    channel
        .exchange_declare(name(topic)?, kind, options, FieldTable::default())
        .await
        .map_err(|e| map(&format!("declaring topic exchange {topic}"), e))
}

/// Checks that the exchange behind `topic` exists.
pub(crate) async fn check_topic(channel: &Channel, topic: &str) -> Result<()> {
    let options = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };

    channel
        .exchange_declare(
            name(topic)?,
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| map(&format!("looking up topic {topic}"), e))
}

/// Checks that `queue` exists.
pub(crate) async fn check_queue(channel: &Channel, queue: &str) -> Result<()> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };

    channel
        .queue_declare(name(queue)?, options, FieldTable::default())
        .await
        .map(drop)
        .map_err(|e| map(&format!("looking up queue {queue}"), e))
}

/// Declares the dead-letter exchange and queue, then the subscription's queue bound
/// to its topic.
pub(crate) async fn declare_subscription(
    channel: &Channel,
    spec: &SubscriptionSpec,
    queue_type: QueueType,
    topic_kind: TopicKind,
) -> Result<()> {
    let dlx = dead_letter_exchange(&spec.name);
    let dlq = spec.dead_letter_name();
    declare_dead_letters(channel, &dlx, &dlq, queue_type).await?;

    let mut arguments = queue_arguments(queue_type);
    arguments.insert("x-dead-letter-exchange".into(), text(&dlx));
    if let Some(attempts) = spec.max_delivery_attempts {
        // The broker counts returns, not deliveries: a limit of n - 1 returns allows n
        // deliveries before it dead-letters the message.
        let limit = i64::from(attempts.saturating_sub(1));
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    declare_queue(channel, &spec.name, arguments).await?;

    let key = match topic_kind {
        TopicKind::Fanout => "",
        TopicKind::Topic => "#",
    };
    bind(channel, &spec.name, &spec.topic, key).await
}

async fn declare_dead_letters(
    channel: &Channel,
    dlx: &str,
    dlq: &str,
    queue_type: QueueType,
) -> Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            name(dlx)?,
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| map(&format!("declaring dead-letter exchange {dlx}"), e))?;

    declare_queue(channel, dlq, queue_arguments(queue_type)).await?;
    bind(channel, dlq, dlx, "").await
}

/// Declares the delay queue `queue`, holding messages for `delay` before dead-lettering
/// them to `exchange` with `routing_key`.
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    queue: &str,
    delay: Duration,
    exchange: &str,
    routing_key: &str,
) -> Result<()> {
    let ttl = delay_ms(delay);
    // Twice the delay plus a minute: re-declared on every use, the queue outlives the
    // newest message it holds, and an idle one is removed by the broker.
    let expires = ttl.saturating_mul(2).saturating_add(60_000).min(MAX_TTL_MS);

    let mut arguments = queue_arguments(QueueType::Classic);
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl as i64));
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(expires as i64));
    arguments.insert("x-dead-letter-exchange".into(), text(exchange));
    arguments.insert("x-dead-letter-routing-key".into(), text(routing_key));
    declare_queue(channel, queue, arguments).await
}

/// How long a declared delay queue may go without being re-declared before a message
/// published into it could outlive the queue.
pub(crate) fn delay_queue_refresh(delay: Duration) -> Duration {
    Duration::from_millis(delay_ms(delay) / 2 + 30_000)
}

async fn declare_queue(channel: &Channel, queue: &str, arguments: FieldTable) -> Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };

    channel
        .queue_declare(name(queue)?, options, arguments)
        .await
        .map(drop)
        .map_err(|e| map(&format!("declaring queue {queue}"), e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(
            name(queue)?,
            name(exchange)?,
            name(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| map(&format!("binding queue {queue} to {exchange}"), e))
}

/// Deletes a queue; deleting one that does not exist succeeds.
pub(crate) async fn delete_queue(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_delete(name(queue)?, QueueDeleteOptions::default())
        .await
        .map(drop)
        .map_err(|e| map(&format!("deleting queue {queue}"), e))
}

/// Deletes an exchange; deleting one that does not exist succeeds.
pub(crate) async fn delete_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    channel
        .exchange_delete(name(exchange)?, ExchangeDeleteOptions::default())
        .await
        .map_err(|e| map(&format!("deleting exchange {exchange}"), e))
}

fn queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text(queue_type.argument()));
    arguments
}

/// A queue, exchange or routing key name as a `shortstr`.
pub(crate) fn name(value: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| {
        Error::invalid(format!(
            "name of {} bytes is longer than the {MAX_NAME_BYTES} bytes RabbitMQ accepts",
            value.len()
        ))
    })
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_their_bucket_never_down() {
        assert_eq!(delay_ms(Duration::from_micros(1)), 1);
        assert_eq!(delay_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(delay_ms(Duration::from_micros(1_500_001)), 1600);
        assert_eq!(delay_ms(Duration::from_millis(99)), 99);
        assert_eq!(delay_ms(Duration::from_millis(12_345)), 13_000);
    }

    #[test]
    fn reserved_and_overlong_names_are_refused() {
        assert!(check_name("topic", "amq.direct").is_err());
        assert!(check_name("topic", "").is_err());
        let long = "t".repeat(MAX_NAME_BYTES);
        let error = check_name("topic", &long).unwrap_err();
        assert!(error.to_string().contains("255 bytes"), "{error}");
    }

    #[test]
    fn a_refreshed_delay_queue_outlives_its_newest_message() {
        let delay = Duration::from_secs(10);
        let expires = delay_ms(delay) * 2 + 60_000;

        let latest_expiry = delay_queue_refresh(delay).as_millis() as u64 + delay_ms(delay);

        assert!(latest_expiry < expires);
    }
}
