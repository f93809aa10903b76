//! `BacklogGauges` reports each subscription's backlog and dead-letter depth through the
//! global meter provider, refreshed from `Backend::stats`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use wharf_core::telemetry::BacklogGauges;
use wharf_core::{Backend, Message, SubscriptionSpec};
use wharf_memory::MemoryBackend;

#[tokio::test]
async fn gauges_follow_the_backlog() {
    let exporter = InMemoryMetricExporter::default();
    let reader = PeriodicReader::builder(exporter.clone()).build();
    let provider = SdkMeterProvider::builder().with_reader(reader).build();
    global::set_meter_provider(provider.clone());

    let started = std::time::Instant::now();
    let backend = MemoryBackend::new();
    backend.create_topic("orders").await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new("orders", "billing"))
        .await
        .unwrap();
    let publisher = backend.publisher("orders").await.unwrap();
    for n in 0..3 {
        publisher
            .publish(Message::new(format!("order {n}")))
            .await
            .unwrap();
    }
    let subscriber = backend.subscriber("billing").await.unwrap();
    let delivery = subscriber
        .receive_one(Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    delivery.dead_letter("broken").await.unwrap();

    let backend: Arc<dyn Backend> = Arc::new(backend);
    let gauges = BacklogGauges::start(backend, vec!["billing".into()], Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    provider.force_flush().unwrap();

    assert_eq!(gauge(&exporter, "wharf.backlog"), Some(2.0));
    assert_eq!(gauge(&exporter, "wharf.dead_letter.depth"), Some(1.0));
    let age = gauge(&exporter, "wharf.oldest_age").expect("the oldest age is reported");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        age > 0.0 && age <= elapsed,
        "the oldest message is {age} s old, but the test began {elapsed} s ago"
    );

    drop(gauges);
    exporter.reset();
    provider.force_flush().unwrap();
    assert_eq!(
        gauge(&exporter, "wharf.backlog"),
        None,
        "stopped gauges report nothing"
    );
}

/// The value the last export holds for the gauge `name` of subscription `billing`.
fn gauge(exporter: &InMemoryMetricExporter, name: &str) -> Option<f64> {
    let exports = exporter.get_finished_metrics().unwrap();
    let metric = exports
        .last()?
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .find(|metric| metric.name() == name)?;
    let AggregatedMetrics::F64(MetricData::Gauge(gauge)) = metric.data() else {
        panic!("{name} is not an f64 gauge");
    };
    gauge
        .data_points()
        .find(|point| {
            point.attributes().any(|kv| {
                kv.key.as_str() == "messaging.destination.name" && kv.value.as_str() == "billing"
            })
        })
        .map(|point| point.value())
}
