//! wharf: one contract for message queues, whatever the broker.
//!
//! Application code publishes [`Message`]s, receives [`Delivery`]s and runs [`Worker`]s
//! the same way on every backend. Turn on the backends you use with cargo features (all
//! off by default) and choose one at run time with a URL:
//!
//! ```toml
//! wharf = { version = "0.1", features = ["memory"] }
//! ```
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use wharf::{Message, SubscriptionSpec};
//!
//! let backend = wharf::connect("mem://quickstart").await?;
//! backend.create_topic("orders").await?;
//! backend.create_subscription(&SubscriptionSpec::new("orders", "billing")).await?;
//!
//! let publisher = backend.publisher("orders").await?;
//! publisher.publish(Message::new("order #1").with_attribute("priority", "high")).await?;
//!
//! let subscriber = backend.subscriber("billing").await?;
//! let delivery = subscriber.receive_one(Duration::from_secs(1)).await?.expect("a delivery");
//! assert_eq!(delivery.attribute("priority"), Some("high"));
//! delivery.ack().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! The contract lives in `wharf-core` and is re-exported here.

mod config;
mod connect;
mod open;

pub use config::{RetrySettings, Settings};

pub use connect::{SECRET_OPTIONS, connect, redact};
pub use open::Connection;
pub use wharf_core::*;

/// The in-memory backend: a real broker inside the process.
#[cfg(feature = "memory")]
pub use wharf_memory as memory;

/// The RabbitMQ backend, through lapin.
#[cfg(feature = "rabbitmq")]
pub use wharf_rabbitmq as rabbitmq;

/// The Google Cloud Pub/Sub backend, through google-cloud-pubsub.
#[cfg(feature = "pubsub")]
pub use wharf_pubsub as pubsub;

/// The Apache Kafka backend, through rdkafka.
#[cfg(feature = "kafka")]
pub use wharf_kafka as kafka;

/// The Amazon SQS backend, through aws-sdk-sqs.
#[cfg(feature = "sqs")]
pub use wharf_sqs as sqs;
