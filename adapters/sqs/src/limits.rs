//! SQS's limits as named constants, and the [`Capabilities`] they add up to.
//!
//! Every number comes from the Amazon SQS message quotas ([quotas]) unless its comment
//! says otherwise.
//!
//! [quotas]: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html

use std::time::Duration;

use wharf_core::Capabilities;

/// Largest message SQS stores, body plus attribute names, types and values (the quota
/// older queues and LocalStack keep; AWS raised it to 1 MiB for new settings in 2025).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Bytes kept back from [`MAX_MESSAGE_BYTES`] for what SQS counts and wharf's
/// `Message::size` does not: each attribute's data type name and wharf's own attribute.
pub const BOOKKEEPING_RESERVE: usize = 256;

/// Most entries in one `SendMessageBatch` or `DeleteMessageBatch` request.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Most bytes in one `SendMessageBatch` request, all entries together.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Most message attributes SQS accepts on one message.
pub const MAX_NATIVE_ATTRIBUTES: usize = 10;

/// Attributes left to the user: wharf may need one of the ten for its bookkeeping.
pub const MAX_USER_ATTRIBUTES: usize = MAX_NATIVE_ATTRIBUTES - 1;

/// Longest `DelaySeconds` of `SendMessage`: 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Longest visibility timeout, which bounds both nack delays and leases: 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Shortest useful lease: visibility timeouts are whole seconds.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// SQS's visibility timeout for a queue that sets none.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// Longest long poll of one `ReceiveMessage` call.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Most messages one `ReceiveMessage` call returns.
pub const MAX_RECEIVE: usize = 10;

/// Highest `maxReceiveCount` of a redrive policy.
pub const MAX_RECEIVE_COUNT: u32 = 1000;

/// Longest message retention, given to dead-letter queues so that failures outlive the
/// messages of their source queue: 14 days.
pub const MAX_RETENTION: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Longest queue name, `.fifo` suffix included.
pub const MAX_QUEUE_NAME: usize = 80;

/// Longest message attribute name.
pub const MAX_ATTRIBUTE_NAME: usize = 256;

/// Longest message group id and deduplication id of a FIFO queue.
pub const MAX_FIFO_ID: usize = 128;

/// What a standard SQS queue offers.
pub fn standard() -> Capabilities {
    Capabilities {
        backend: "sqs",
        max_message_bytes: MAX_MESSAGE_BYTES - BOOKKEEPING_RESERVE,
        max_batch_messages: MAX_BATCH_ENTRIES,
        max_batch_bytes: MAX_BATCH_BYTES - BOOKKEEPING_RESERVE,
        max_attributes: Some(MAX_USER_ATTRIBUTES),
        max_publish_delay: Some(MAX_DELAY),
        max_nack_delay: MAX_VISIBILITY,
        min_lease: MIN_LEASE,
        max_lease: Some(MAX_VISIBILITY),
        native_delay: true,
        native_dead_letter: true,
        ordering: false,
        fan_out: false,
        deduplication: false,
        lease_expiry: true,
        backlog_stats: true,
    }
}

/// What a FIFO queue (a name ending in `.fifo`) offers: ordering per message group and
/// deduplication, but no per-message delay.
pub fn fifo() -> Capabilities {
    Capabilities {
        max_publish_delay: None,
        ordering: true,
        deduplication: true,
        ..standard()
    }
}

/// The capabilities of the queue named `queue`.
pub fn for_queue(queue: &str) -> Capabilities {
    if crate::queue::is_fifo(queue) {
        fifo()
    } else {
        standard()
    }
}
