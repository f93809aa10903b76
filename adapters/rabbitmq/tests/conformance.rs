//! The wharf conformance suite against the real RabbitMQ server.

mod common;

/// A backend on the broker in `WHARF_RABBITMQ_URL`, one per test.
async fn backend() -> wharf_rabbitmq::RabbitMq {
    common::backend().await
}

wharf_testkit::conformance_suite!(backend);
