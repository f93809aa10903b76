//! `KafkaBackend::from_url` against the real broker: the URL's options reach the
//! topics wharf creates.

mod common;

use std::time::Duration;

use common::{brokers, unique};
use wharf_core::{Backend, ErrorKind};
use wharf_kafka::KafkaBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_connects_and_its_partitions_option_shapes_new_topics() {
    let url = format!(
        "kafka://{}?partitions=2&subscription=ignored-here",
        brokers()
    );
    let backend = KafkaBackend::from_url(&url).await.expect("connect by URL");
    let topic = unique("kafka-url");

    backend.create_topic(&topic).await.expect("create topic");
    let fetched = backend
        .admin()
        .inner()
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");

    assert_eq!(fetched.topics()[0].partitions().len(), 2);
    backend.delete_topic(&topic).await.expect("delete topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_with_an_unknown_option_is_refused_before_connecting() {
    let url = format!("kafka://{}?partition=2", brokers());

    let error = KafkaBackend::from_url(&url).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("`partition`"), "{error}");
}
