//! What Pub/Sub offers and the limits it enforces, each a named constant with its source.
//!
//! The limits are those of the Pub/Sub service, listed under "Quotas and limits" in its
//! documentation (<https://cloud.google.com/pubsub/quotas#resource_limits>). The emulator
//! accepts at least as much, so the same values hold for both.

use std::time::Duration;

use wharf_core::Capabilities;

/// The backend name used in errors and logs.
pub const BACKEND: &str = "pubsub";

/// Most bytes in one publish request. Source: quotas, "Publish request: 10 MB".
pub const MAX_BATCH_BYTES: usize = 10_000_000;

/// Room left in a request for the topic name and the protobuf framing around each
/// message, so that one message of [`MAX_MESSAGE_BYTES`] still fits a request.
const REQUEST_FRAMING: usize = 64 * 1024;

/// Largest message, payload plus attribute keys and values. Source: quotas, "Message
/// size (the data field): 10 MB", less the framing of the request that carries it.
pub const MAX_MESSAGE_BYTES: usize = MAX_BATCH_BYTES - REQUEST_FRAMING;

/// Most messages in one publish request. Source: quotas, "Messages per publish
/// request: 1,000".
pub const MAX_BATCH_MESSAGES: usize = 1_000;

/// Most attributes on one message. Source: quotas, "Attributes per message: 100".
pub const MAX_ATTRIBUTES: usize = 100;

/// Longest attribute key in bytes. Source: quotas, "Attribute key size: 256 bytes".
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;

/// Longest attribute value in bytes. Source: quotas, "Attribute value size: 1,024 bytes".
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1_024;

/// Longest ordering key in bytes. Source: quotas, "Ordering key size: 1 KB".
pub const MAX_ORDERING_KEY_BYTES: usize = 1_024;

/// Shortest ack deadline. Source: `Subscription.ack_deadline_seconds` and
/// `ModifyAckDeadlineRequest` in the v1 API reference, "minimum 10 seconds".
pub const MIN_LEASE: Duration = Duration::from_secs(10);

/// Longest ack deadline, for a subscription and for one modify-ack-deadline call.
/// Source: the same reference, "maximum 600 seconds (10 minutes)".
pub const MAX_LEASE: Duration = Duration::from_secs(600);

/// Longest nack delay: a nack with a delay is a modify-ack-deadline call, so it has the
/// same ceiling as a lease. Source: as [`MAX_LEASE`].
pub const MAX_NACK_DELAY: Duration = MAX_LEASE;

/// Fewest delivery attempts a dead-letter policy accepts. Source: `DeadLetterPolicy`
/// in the v1 API reference, "must be between 5 and 100".
pub const MIN_DELIVERY_ATTEMPTS: u32 = 5;

/// Most delivery attempts a dead-letter policy accepts. Source: as
/// [`MIN_DELIVERY_ATTEMPTS`].
pub const MAX_DELIVERY_ATTEMPTS: u32 = 100;

/// What the Pub/Sub backend offers, the same against the service and its emulator.
pub fn capabilities() -> Capabilities {
    Capabilities {
        backend: BACKEND,
        max_message_bytes: MAX_MESSAGE_BYTES,
        max_batch_messages: MAX_BATCH_MESSAGES,
        max_batch_bytes: MAX_BATCH_BYTES,
        max_attributes: Some(MAX_ATTRIBUTES),
        // Pub/Sub has no delayed publish.
        max_publish_delay: None,
        max_nack_delay: MAX_NACK_DELAY,
        min_lease: MIN_LEASE,
        max_lease: Some(MAX_LEASE),
        // A nack with a delay sets the message's ack deadline; the service holds it.
        native_delay: true,
        native_dead_letter: true,
        ordering: true,
        fan_out: true,
        // Publish has no deduplication id; only exactly-once subscriptions deduplicate,
        // and those key on the message id the service assigns.
        deduplication: false,
        lease_expiry: true,
        // Pub/Sub reports backlog only through Cloud Monitoring, which the emulator lacks.
        backlog_stats: false,
    }
}
