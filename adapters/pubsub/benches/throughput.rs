//! wharf against the clients it wraps, doing the same work on the same emulator in the
//! same run: publishing batches, and receiving and acking them.
//!
//! Needs the emulator: `scripts/services up pubsub` (or `PUBSUB_EMULATOR_HOST`).
//! Run with `cargo bench -p wharf-pubsub`; compare each `wharf` line with the `raw`
//! line of its group.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::future::join_all;
use gcloud_pubsub::client::{Client as PullClient, ClientConfig};
use gcloud_pubsub::subscription::SubscribeConfig;
use google_cloud_pubsub::model::Message as NativeMessage;
use tokio::runtime::Runtime;
use wharf_core::{Backend, Message, SubscriptionSpec};
use wharf_pubsub::{PubSubBackend, PubSubConfig};

const PROJECT: &str = "wharf-bench";
const BATCH: usize = 1_000;
const PAYLOAD_BYTES: usize = 256;
const RECEIVE_MAX: usize = 100;

fn emulator() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".to_owned())
}

fn payload() -> Vec<u8> {
    vec![b'x'; PAYLOAD_BYTES]
}

async fn connect() -> PubSubBackend {
    let config = PubSubConfig::new(PROJECT).with_emulator(emulator());
    PubSubBackend::connect(config)
        .await
        .expect("the emulator must run: scripts/services up pubsub")
}

async fn queue(backend: &PubSubBackend, name: &str) {
    // Leftovers of an interrupted run would be received as part of the next.
    cleanup(backend, name).await;
    backend.create_topic(name).await.expect("create topic");
    let spec = SubscriptionSpec::new(name, name).lease(Duration::from_secs(60));
    backend
        .create_subscription(&spec)
        .await
        .expect("create subscription");
}

fn publishing(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    // A topic without subscriptions: the emulator keeps every message a subscription
    // has not acked in its heap, and this group publishes millions.
    runtime.block_on(async {
        cleanup(&backend, "bench-publish").await;
        backend
            .create_topic("bench-publish")
            .await
            .expect("create topic");
    });
    let wharf = runtime
        .block_on(backend.publisher("bench-publish"))
        .expect("publisher");
    let raw = backend
        .native_publisher("bench-publish")
        .expect("native publisher");

    let mut group = c.benchmark_group("publish 1000 x 256 B");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(20);
    group.bench_function(BenchmarkId::from_parameter("wharf"), |b| {
        b.to_async(&runtime).iter(|| async {
            let messages = (0..BATCH).map(|_| Message::new(payload())).collect();
            for result in wharf.publish_batch(messages).await {
                result.expect("publish");
            }
        });
    });
    group.bench_function(BenchmarkId::from_parameter("raw"), |b| {
        b.to_async(&runtime).iter(|| async {
            let pending: Vec<_> = (0..BATCH)
                .map(|_| raw.publish(NativeMessage::new().set_data(payload())))
                .collect();
            let (results, ()) = futures::join!(join_all(pending), raw.flush());
            for result in results {
                result.expect("publish");
            }
        });
    });
    group.finish();
    runtime.block_on(cleanup(&backend, "bench-publish"));
}

fn receiving(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let backend = runtime.block_on(connect());
    runtime.block_on(queue(&backend, "bench-wharf"));
    runtime.block_on(queue(&backend, "bench-raw"));
    let subscriber = runtime
        .block_on(backend.subscriber("bench-wharf"))
        .expect("subscriber");
    let client = runtime.block_on(raw_client());
    let stream = runtime
        .block_on(client.subscription("bench-raw").subscribe(Some(
            SubscribeConfig::default().with_channel_capacity(1_000),
        )))
        .expect("raw stream");
    // Criterion's closure is FnMut, so the stream is lent to each iteration's future.
    let stream = tokio::sync::Mutex::new(stream);

    let mut group = c.benchmark_group("receive and ack 1000");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(10);
    group.bench_function(BenchmarkId::from_parameter("wharf"), |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (backend, subscriber) = (&backend, &subscriber);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    fill(backend, "bench-wharf").await;
                    let started = Instant::now();
                    let mut left = BATCH;
                    while left > 0 {
                        let batch = subscriber
                            .receive(RECEIVE_MAX.min(left), Duration::from_secs(5))
                            .await
                            .expect("receive");
                        left -= batch.len();
                        for result in join_all(batch.into_iter().map(|d| d.ack())).await {
                            result.expect("ack");
                        }
                    }
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.bench_function(BenchmarkId::from_parameter("raw"), |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (backend, stream) = (&backend, &stream);
            async move {
                let mut stream = stream.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    fill(backend, "bench-raw").await;
                    let started = Instant::now();
                    let mut left = BATCH;
                    while left > 0 {
                        let batch = next_raw_batch(&mut stream, RECEIVE_MAX.min(left)).await;
                        left -= batch.len();
                        for result in join_all(batch.iter().map(|m| m.ack())).await {
                            result.expect("ack");
                        }
                    }
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.finish();
    // Disposed inside the runtime: dropped outside, the stream's own clean-up panics.
    runtime.block_on(stream.into_inner().dispose());
    runtime.block_on(cleanup(&backend, "bench-wharf"));
    runtime.block_on(cleanup(&backend, "bench-raw"));
}

/// The raw equivalent of one `receive(max, ..)`: wait for one message, then take what
/// is already buffered, up to `max`.
async fn next_raw_batch(
    stream: &mut gcloud_pubsub::subscription::MessageStream,
    max: usize,
) -> Vec<gcloud_pubsub::subscriber::ReceivedMessage> {
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message in time")
        .expect("the stream is open");
    let mut batch = vec![first];
    while batch.len() < max {
        match futures::FutureExt::now_or_never(stream.next()) {
            Some(Some(message)) => batch.push(message),
            _ => break,
        }
    }
    batch
}

async fn raw_client() -> PullClient {
    let config = ClientConfig {
        project_id: Some(PROJECT.to_owned()),
        environment: gcloud_gax::conn::Environment::Emulator(emulator()),
        ..ClientConfig::default()
    };
    PullClient::new(config).await.expect("raw client")
}

/// Publishes one batch for a receive benchmark, outside the timed part.
async fn fill(backend: &PubSubBackend, topic: &str) {
    let publisher = backend.native_publisher(topic).expect("publisher");
    let pending: Vec<_> = (0..BATCH)
        .map(|_| publisher.publish(NativeMessage::new().set_data(payload())))
        .collect();
    let (results, ()) = futures::join!(join_all(pending), publisher.flush());
    for result in results {
        result.expect("publish");
    }
}

async fn cleanup(backend: &PubSubBackend, name: &str) {
    let _ = backend.delete_subscription(name).await;
    let _ = backend.delete_topic(name).await;
}

criterion_group!(benches, publishing, receiving);
criterion_main!(benches);
