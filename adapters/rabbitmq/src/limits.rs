//! RabbitMQ's limits as wharf [`Capabilities`], each a named constant with its source.

use std::time::Duration;

use wharf_core::Capabilities;

use crate::config::QueueType;

/// Largest message: RabbitMQ 4.0's default `max_message_size` (16 MiB); 3.x allowed
/// 128 MiB, so staying at 16 MiB works on both.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Messages in one publish request: no broker limit; wharf's cap on the confirms one
/// batch waits for.
pub const MAX_BATCH_MESSAGES: usize = 1_000;
/// Bytes in one publish request: no broker limit; wharf's cap on the memory one batch
/// holds, four largest messages.
pub const MAX_BATCH_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// Longest nack or publish delay: a week, well inside the 32-bit millisecond
/// `x-message-ttl` RabbitMQ accepts, with room for the delay queue's own `x-expires`.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What the RabbitMQ backend offers with queues of `queue_type`.
pub fn capabilities(queue_type: QueueType) -> Capabilities {
    Capabilities {
        backend: "rabbitmq",
        max_message_bytes: MAX_MESSAGE_BYTES,
        max_batch_messages: MAX_BATCH_MESSAGES,
        max_batch_bytes: MAX_BATCH_BYTES,
        // Counted by bytes instead: the headers must fit in one frame.
        max_attributes: None,
        max_publish_delay: Some(MAX_DELAY),
        max_nack_delay: MAX_DELAY,
        // An unacked delivery stays with its consumer until settled or disconnected.
        min_lease: Duration::ZERO,
        max_lease: None,
        // Delays wait in broker-side TTL queues, not in the consumer.
        native_delay: true,
        // Only quorum queues count deliveries and enforce `x-delivery-limit`.
        native_dead_letter: queue_type == QueueType::Quorum,
        ordering: false,
        fan_out: true,
        deduplication: false,
        lease_expiry: false,
        backlog_stats: true,
    }
}
