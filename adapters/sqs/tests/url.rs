//! `sqs://` URLs against the SQS under test: the backend a URL opens really works, and
//! its options reach the queues it creates.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use wharf_core::Backend;
use wharf_sqs::SqsBackend;

/// The endpoint of the SQS under test as an `sqs://` URL with LocalStack's credentials.
fn url(options: &str) -> String {
    let endpoint = common::endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .expect("WHARF_SQS_ENDPOINT is an http:// URL");
    format!("sqs://test:test@{host}?region=us-east-1&{options}")
}

#[tokio::test]
async fn a_url_opens_a_working_backend_and_sets_content_based_deduplication() {
    let backend = SqsBackend::from_url(&url("content_based_deduplication=true&lease=5s"))
        .await
        .expect("a valid URL");
    let queue = format!("{}.fifo", common::unique("url"));

    backend.create_topic(&queue).await.expect("created");

    let queue_url = backend.queue_url(&queue).await.expect("url");
    let attributes = backend
        .client()
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ContentBasedDeduplication)
        .send()
        .await
        .expect("attributes");
    let dedupe = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ContentBasedDeduplication));
    assert_eq!(dedupe.map(String::as_str), Some("true"));
    backend.delete_topic(&queue).await.expect("deleted");
}
