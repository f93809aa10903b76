//! wharf against the raw `aws-sdk-sqs` client, doing the same work on the same
//! LocalStack in the same run: publish a batch, receive it, ack every message.
//!
//! Needs SQS: `scripts/services up sqs` (or `WHARF_SQS_ENDPOINT`). Run with
//! `cargo bench -p wharf-sqs`; compare the `wharf` line with the `raw` lines. wharf acks
//! each received batch with `Delivery::ack_all` (`DeleteMessageBatch`); the raw client
//! is measured twice: one `DeleteMessage` per message, and `DeleteMessageBatch`, the
//! same work as wharf's.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use tokio::runtime::Runtime;
use wharf_core::{Backend, Delivery, Message, Publisher, Subscriber, SubscriptionSpec};
use wharf_sqs::{SqsBackend, SqsConfig};

/// Messages per iteration: published, received and acked.
const MESSAGES: usize = 100;
const PAYLOAD_BYTES: usize = 256;
/// SQS's batch and receive limit.
const CHUNK: usize = 10;
const WAIT: Duration = Duration::from_secs(5);

fn endpoint() -> String {
    std::env::var("WHARF_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

async fn backend() -> SqsBackend {
    let config = SqsConfig::new()
        .endpoint(endpoint())
        .region("us-east-1")
        .static_credentials("test", "test");
    SqsBackend::connect(&config).await
}

/// A fresh queue of its own, so nothing an interrupted run left is received.
async fn queue(backend: &SqsBackend, name: &str) -> String {
    backend
        .create_topic(name)
        .await
        .expect("SQS must run: scripts/services up sqs");
    let spec = SubscriptionSpec::new(name, name).lease(Duration::from_secs(60));
    backend
        .create_subscription(&spec)
        .await
        .expect("subscription");
    backend.queue_url(name).await.expect("queue url")
}

fn payload() -> String {
    "x".repeat(PAYLOAD_BYTES)
}

async fn wharf_round(publisher: &Publisher, subscriber: &Subscriber) {
    let messages = (0..MESSAGES).map(|_| Message::new(payload())).collect();
    let sent = publisher.publish_batch(messages).await;
    assert!(sent.iter().all(Result::is_ok), "publish failed");

    let mut received = 0;
    while received < MESSAGES {
        let batch = subscriber.receive(CHUNK, WAIT).await.expect("receive");
        assert!(!batch.is_empty(), "messages went missing");
        received += batch.len();
        let acks = Delivery::ack_all(batch).await;
        assert!(acks.iter().all(Result::is_ok), "ack failed");
    }
}

async fn raw_publish(client: &Client, url: &str) {
    for chunk in 0..MESSAGES / CHUNK {
        let entries = (0..CHUNK).map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("{chunk}-{i}"))
                .message_body(payload())
                .build()
                .expect("entry")
        });
        let output = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("send batch");
        assert!(output.failed().is_empty(), "entries failed");
    }
}

async fn raw_round(client: &Client, url: &str, batch_delete: bool) {
    raw_publish(client, url).await;

    let mut received = 0;
    while received < MESSAGES {
        let output = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(CHUNK as i32)
            .wait_time_seconds(WAIT.as_secs() as i32)
            .send()
            .await
            .expect("receive");
        let handles: Vec<&str> = output
            .messages()
            .iter()
            .filter_map(|m| m.receipt_handle())
            .collect();
        assert!(!handles.is_empty(), "messages went missing");
        received += handles.len();
        if batch_delete {
            delete_batch(client, url, &handles).await;
        } else {
            let deletes = handles.iter().map(|handle| {
                client
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(*handle)
                    .send()
            });
            let deleted = join_all(deletes).await;
            assert!(deleted.iter().all(Result::is_ok), "delete failed");
        }
    }
}

async fn delete_batch(client: &Client, url: &str, handles: &[&str]) {
    let entries = handles.iter().enumerate().map(|(i, handle)| {
        DeleteMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .receipt_handle(*handle)
            .build()
            .expect("entry")
    });
    let output = client
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries.collect()))
        .send()
        .await
        .expect("delete batch");
    assert!(output.failed().is_empty(), "deletes failed");
}

fn publish_receive_ack(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(backend());
    let name = &format!("wharf-bench-{}", uuid::Uuid::new_v4().simple());
    let url = runtime.block_on(queue(&backend, name));
    let publisher = runtime
        .block_on(backend.publisher(name))
        .expect("publisher");
    let subscriber = runtime
        .block_on(backend.subscriber(name))
        .expect("subscriber");
    let client = backend.client().clone();

    let mut group = c.benchmark_group("publish_receive_ack");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));

    group.bench_function("wharf", |b| {
        b.to_async(&runtime)
            .iter(|| wharf_round(&publisher, &subscriber));
    });
    group.bench_function("raw_delete_each", |b| {
        b.to_async(&runtime)
            .iter(|| raw_round(&client, &url, false));
    });
    group.bench_function("raw_delete_batch", |b| {
        b.to_async(&runtime).iter(|| raw_round(&client, &url, true));
    });
    group.finish();

    runtime
        .block_on(backend.delete_subscription(name))
        .expect("cleanup");
}

criterion_group!(benches, publish_receive_ack);
criterion_main!(benches);
