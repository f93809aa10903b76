//! The wharf conformance suite against SQS (LocalStack by default).

mod common;

async fn backend() -> wharf_sqs::SqsBackend {
    common::backend().await
}

wharf_testkit::conformance_suite!(backend);
