//! The wharf contract: one way to publish, receive, ack, nack with delay and dead-letter,
//! whatever the message broker.
//!
//! Applications use [`Publisher`], [`Subscriber`], [`Delivery`] and [`Worker`]. Adapter
//! crates (`wharf-memory`, `wharf-rabbitmq`, `wharf-kafka`, `wharf-sqs`, `wharf-pubsub`)
//! implement the narrow traits in [`driver`]; everything else (validation against
//! [`Capabilities`], batching, the [`RetryPolicy`], dead-letter envelopes, lease
//! keep-alive, tracing) lives here once, so it behaves the same on every backend.
//!
//! # Delivery semantics
//!
//! At least once. A message is removed only when a delivery of it is acked or moved to
//! the dead-letter destination. A delivery that is nacked, dropped, or whose lease runs
//! out comes back with its [`attempt`](Received::attempt) one higher. Handlers must
//! therefore tolerate seeing a message twice.
//!
//! # Tracing and metrics
//!
//! Spans `publish`, `receive`, `settle` (with `operation` = `ack`, `nack`, `dead_letter`
//! or `extend_lease`), `worker` and `handle`, with the fields `destination` or `source`,
//! `backend`, `batch_size`, `bytes`, `delivery`, `attempt` and `error.kind`. Payloads are
//! never logged. With OpenTelemetry installed, the W3C trace context travels in message
//! attributes so a handler's span continues the publisher's trace, and counters,
//! a handler-duration histogram and backlog gauges are recorded: see [`telemetry`].
//!
//! # Operating queues
//!
//! Backlog stats, dead-letter peek, redrive and purge, and setup checks against the
//! application's policy, the same on every backend: see [`operations`].

mod acks;
pub mod capabilities;
pub mod dead_letter;
pub mod delivery;
pub mod driver;
pub mod error;
pub mod handler;
pub mod message;
pub mod operations;
pub mod publisher;
pub mod reply;
pub mod retry;
pub mod subscriber;
pub mod telemetry;
pub mod url_options;
pub mod worker;

pub use capabilities::Capabilities;
pub use dead_letter::{DeadLetter, Envelope};
pub use delivery::{Delivery, Received};
pub use driver::{AckId, Backend, RawDelivery, SubscriptionDriver, SubscriptionSpec, TopicDriver};
pub use error::{Error, ErrorKind, PublishError, Result, SettleError};
pub use handler::{Handler, HandlerError};
pub use message::{Attributes, Message};
pub use operations::{Expectations, Figure, Finding, Severity, SubscriptionStats};
pub use publisher::Publisher;
pub use retry::{Decision, RetryPolicy};
pub use subscriber::Subscriber;
pub use worker::{Worker, WorkerOptions, WorkerReport, WorkerStats};

pub use async_trait::async_trait;
pub use bytes::Bytes;
