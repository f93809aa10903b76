//! What the Kafka integration tests share: a backend on the broker that
//! `scripts/services up kafka` starts, and unique names.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use wharf_kafka::{KafkaBackend, KafkaConfig};

/// A backend on the test broker, or a panic saying how to start it.
pub async fn backend() -> KafkaBackend {
    let config = KafkaConfig::from_env().operation_timeout(Duration::from_secs(10));
    let brokers = config.brokers().to_owned();

    match KafkaBackend::connect(config).await {
        Ok(backend) => backend,
        Err(error) => panic!(
            "cannot reach Kafka at {brokers} ({error}); start it with \
             `scripts/services up kafka` or set WHARF_KAFKA_BROKERS"
        ),
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The brokers the tests use.
pub fn brokers() -> String {
    KafkaConfig::from_env().brokers().to_owned()
}
