//! Connecting the tests to the SQS under test: LocalStack started by
//! `scripts/services up sqs`, or whatever `WHARF_SQS_ENDPOINT` names.

#![allow(dead_code, unreachable_pub)]

use aws_sdk_sqs::Client;
use wharf_sqs::{SqsBackend, SqsConfig};

/// Where LocalStack listens when `WHARF_SQS_ENDPOINT` is not set.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";

/// The endpoint the tests use.
pub fn endpoint() -> String {
    std::env::var("WHARF_SQS_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned())
}

/// LocalStack's region and the dummy credentials it accepts; the machine's own AWS
/// settings must not leak into the tests.
pub fn config() -> SqsConfig {
    SqsConfig::new()
        .endpoint(endpoint())
        .region("us-east-1")
        .static_credentials("test", "test")
}

/// A backend on the SQS under test, after checking that it answers.
pub async fn backend() -> SqsBackend {
    let backend = SqsBackend::connect(&config()).await;
    let reachable = backend.client().list_queues().max_results(1).send().await;
    if let Err(error) = reachable {
        panic!(
            "SQS at {} does not answer ({error}); start it with `scripts/services up sqs` \
             or point WHARF_SQS_ENDPOINT at a running one",
            endpoint()
        );
    }
    backend
}

/// A raw SDK client on the same SQS, for interoperability checks.
pub async fn raw_client() -> Client {
    backend().await.client().clone()
}

/// A queue name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("wharf-sqs-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A queue created for one test, with its publisher and subscriber.
pub struct TestQueue {
    pub backend: SqsBackend,
    pub name: String,
    pub publisher: wharf_core::Publisher,
    pub subscriber: wharf_core::Subscriber,
}

impl TestQueue {
    /// A fresh queue named after `prefix` (FIFO if `suffix` is `.fifo`), leased for
    /// `lease`, with `spec` adjusting the subscription before it is created.
    pub async fn with(
        prefix: &str,
        suffix: &str,
        lease: std::time::Duration,
        spec: impl FnOnce(wharf_core::SubscriptionSpec) -> wharf_core::SubscriptionSpec,
    ) -> Self {
        use wharf_core::Backend;

        let backend = backend().await;
        let name = format!("{}{suffix}", unique(prefix));
        backend.create_topic(&name).await.expect("topic created");
        let base = wharf_core::SubscriptionSpec::new(&name, &name).lease(lease);
        backend
            .create_subscription(&spec(base))
            .await
            .expect("subscription created");

        Self {
            publisher: backend.publisher(&name).await.expect("publisher"),
            subscriber: backend.subscriber(&name).await.expect("subscriber"),
            backend,
            name,
        }
    }

    /// A standard queue with a 30 s lease.
    pub async fn standard(prefix: &str) -> Self {
        Self::with(prefix, "", std::time::Duration::from_secs(30), |s| s).await
    }

    /// Receives until `count` deliveries arrived or `within` passed.
    pub async fn receive(
        &self,
        count: usize,
        within: std::time::Duration,
    ) -> Vec<wharf_core::Delivery> {
        receive_from(&self.subscriber, count, within).await
    }

    /// Deletes the queue and its dead-letter queue.
    pub async fn delete(self) {
        use wharf_core::Backend;

        self.backend
            .delete_subscription(&self.name)
            .await
            .expect("queues deleted");
    }
}

/// Receives from `subscriber` until `count` deliveries arrived or `within` passed.
pub async fn receive_from(
    subscriber: &wharf_core::Subscriber,
    count: usize,
    within: std::time::Duration,
) -> Vec<wharf_core::Delivery> {
    let deadline = std::time::Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = left.min(std::time::Duration::from_secs(2));
        let batch = subscriber
            .receive(count - received.len(), wait)
            .await
            .expect("receive");
        received.extend(batch);
    }
    received
}
