//! wharf: one contract for message queues, whatever the broker.
//!
//! Depend on this crate and turn on the backends you use with cargo features (all off by
//! default): `memory`. The contract itself is re-exported from `wharf-core`.

pub use wharf_core::*;

/// The in-memory backend.
#[cfg(feature = "memory")]
pub use wharf_memory as memory;

/// The Amazon SQS backend, through aws-sdk-sqs.
#[cfg(feature = "sqs")]
pub use wharf_sqs as sqs;

/// The Google Cloud Pub/Sub backend, through google-cloud-pubsub.
#[cfg(feature = "pubsub")]
pub use wharf_pubsub as pubsub;
