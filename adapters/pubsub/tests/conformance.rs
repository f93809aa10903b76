//! The wharf conformance suite against Google's Pub/Sub emulator.

mod common;

async fn backend() -> wharf_pubsub::PubSubBackend {
    common::backend().await
}

wharf_testkit::conformance_suite!(backend);
