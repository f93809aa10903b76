//! The wharf conformance suite against the real Kafka broker.

mod common;

async fn backend() -> wharf_kafka::KafkaBackend {
    common::backend().await
}

wharf_testkit::conformance_suite!(backend);
