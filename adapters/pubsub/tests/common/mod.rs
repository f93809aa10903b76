//! Connecting the tests to Google's Pub/Sub emulator, and names unique to each test.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use wharf_core::{Backend, Delivery, Subscriber};
use wharf_pubsub::{PubSubBackend, PubSubConfig};

/// The project every test uses on the emulator.
pub const PROJECT: &str = "wharf-test";

/// Where the emulator listens unless `PUBSUB_EMULATOR_HOST` says otherwise.
const DEFAULT_EMULATOR: &str = "127.0.0.1:8085";

/// The shortest lease Pub/Sub accepts, which keeps lease tests short.
pub const LEASE: Duration = Duration::from_secs(10);

/// How long a published message may take to arrive.
pub const ARRIVAL: Duration = Duration::from_secs(20);

/// The emulator's `HOST:PORT`.
pub fn emulator_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_EMULATOR.to_owned())
}

/// A backend on the emulator.
///
/// # Panics
///
/// If the emulator cannot be reached, saying how to start it.
pub async fn backend() -> PubSubBackend {
    let host = emulator_host();
    let config = PubSubConfig::new(PROJECT).with_emulator(&host);

    let backend = PubSubBackend::connect(config).await;
    let backend = backend.unwrap_or_else(|e| unreachable_emulator(&host, &e));
    // The clients connect lazily; one cheap call proves the emulator answers.
    if let Err(error) = backend.create_topic("wharf-probe").await {
        unreachable_emulator(&host, &error);
    }
    backend
}

fn unreachable_emulator(host: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "the Pub/Sub emulator at {host} is not reachable ({error}); start it with \
         `scripts/services up pubsub`, or set PUBSUB_EMULATOR_HOST"
    )
}

/// A name no other test run uses: `wharf-<case>-<random>-<kind>`.
pub fn unique(case: &str, kind: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("wharf-{case}-{}-{kind}", &random[..8])
}

/// Receives until `count` deliveries arrived, or panics after `within`.
pub async fn receive_n(subscriber: &Subscriber, count: usize, within: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "expected {count} deliveries, got {}",
            received.len()
        );
        let batch = subscriber
            .receive(count - received.len(), left.min(Duration::from_millis(500)))
            .await
            .expect("receive");
        received.extend(batch);
    }
    received
}

/// Deletes a subscription and its topic, reporting failures without failing the test.
pub async fn clean_up(backend: &PubSubBackend, subscriptions: &[&str], topic: &str) {
    for subscription in subscriptions {
        if let Err(error) = backend.delete_subscription(subscription).await {
            eprintln!("cleanup of {subscription}: {error}");
        }
    }
    if let Err(error) = backend.delete_topic(topic).await {
        eprintln!("cleanup of {topic}: {error}");
    }
}
