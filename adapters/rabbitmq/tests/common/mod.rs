//! What every RabbitMQ test shares: connecting to the broker the service harness runs.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use wharf_rabbitmq::{RabbitMq, RabbitMqConfig};

/// A backend on the broker in `WHARF_RABBITMQ_URL` (or the local default), failing the
/// test with the command that starts the broker when it cannot be reached.
pub async fn backend() -> RabbitMq {
    connect(RabbitMqConfig::from_env()).await
}

/// A backend with `config`, failing like [`backend`].
pub async fn connect(config: RabbitMqConfig) -> RabbitMq {
    let shown = config.redacted_url();
    match RabbitMq::with_config(config).await {
        Ok(backend) => backend,
        Err(error) => panic!(
            "cannot reach RabbitMQ at {shown}: {error}\n\
             start it with `scripts/services up rabbitmq` (or set WHARF_RABBITMQ_URL)"
        ),
    }
}

/// The broker URL for raw lapin clients.
pub fn url() -> String {
    std::env::var(wharf_rabbitmq::config::URL_VARIABLE)
        .unwrap_or_else(|_| wharf_rabbitmq::config::DEFAULT_URL.to_owned())
}

/// A name no other test run uses.
pub fn unique(case: &str) -> String {
    format!("wharf-{case}-{}", uuid::Uuid::new_v4().simple())
}

/// How long a message may take to arrive in these tests.
pub const ARRIVAL: Duration = Duration::from_secs(10);
