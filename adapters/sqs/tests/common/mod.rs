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
