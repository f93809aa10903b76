//! wharf's records are ordinary Kafka records: a plain rdkafka client reads what wharf
//! publishes, and wharf receives what a plain rdkafka producer writes.

mod common;

use std::time::Duration;

use common::{Queue, brokers, read_topic};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use wharf_core::Message;
use wharf_testkit::conformance::support::{ARRIVAL, ack, receive_one};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_consumer_reads_what_wharf_publishes() {
    let queue = Queue::new("interop-out").await;
    let payload: Vec<u8> = vec![0, 159, 146, 150, 255];
    let message = Message::new(payload.clone())
        .with_ordering_key("order-42")
        .with_attribute("content-type", "application/octet-stream")
        .with_attribute("émoji", "✓");
    queue.publisher.publish(message).await.expect("publish");

    let records = read_topic(&queue.topic).await;

    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.payload, payload, "payload bytes unchanged");
    assert_eq!(
        record.key.as_deref(),
        Some(&b"order-42"[..]),
        "ordering key is the key"
    );
    assert_eq!(
        record.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(record.header("émoji").as_deref(), Some("✓"));
    assert_eq!(
        record.headers.len(),
        2,
        "no wharf headers on a first publish"
    );
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_receives_what_a_plain_producer_writes() {
    let queue = Queue::new("interop-in").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("plain rdkafka producer");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "tenant",
            value: Some("acme"),
        })
        .insert(Header {
            key: "flag",
            value: None::<&[u8]>,
        });
    let record = FutureRecord::to(&queue.topic)
        .key("customer-9")
        .payload("from a plain client")
        .headers(headers);

    producer
        .send(record, Duration::from_secs(20))
        .await
        .expect("plain produce");
    let delivery = receive_one(&queue.subscriber, ARRIVAL).await;

    assert_eq!(&delivery.payload()[..], b"from a plain client");
    assert_eq!(delivery.ordering_key(), Some("customer-9"));
    assert_eq!(delivery.attribute("tenant"), Some("acme"));
    assert_eq!(
        delivery.attribute("flag"),
        Some(""),
        "a null header reads as empty"
    );
    assert_eq!(delivery.attempt(), 1);
    ack(delivery).await;
    queue.delete().await;
}
