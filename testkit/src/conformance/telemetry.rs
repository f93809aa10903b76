//! Telemetry: a handler's span continues the publisher's trace through the W3C
//! `traceparent` attribute, and the metrics count what happened to each message.
//!
//! Both cases install OpenTelemetry for their own thread or process only:
//! `trace_context_reaches_the_handler` needs a current-thread runtime, so that the
//! worker's tasks see the tracing subscriber it sets for this thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use wharf_core::telemetry::TRACEPARENT;
use wharf_core::{Backend, HandlerError, Message, Received, Worker};

use super::support::{ARRIVAL, Fixture, publish, wait_until};
use super::worker::{options, retry, run_until};

/// A message published inside a span reaches the worker's handler in a span of the
/// same trace, carried by the `traceparent` attribute.
pub async fn trace_context_reaches_the_handler(backend: &dyn Backend) {
    let tracer = SdkTracerProvider::builder()
        .build()
        .tracer("wharf-conformance");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    let _installed = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let fx = Fixture::new(backend, "trace");
    fx.run(async {
        let queue = fx.queue().await;
        let checkout = tracing::info_span!("checkout");
        let published_in = trace_id(&checkout);
        assert_ne!(
            published_in,
            TraceId::INVALID,
            "the test's tracer records spans"
        );

        publish(&queue.publisher, Message::new("traced"))
            .instrument(checkout)
            .await;

        let seen: Arc<Mutex<Option<Handled>>> = Arc::default();
        let handler = {
            let seen = seen.clone();
            move |received: Received| {
                let seen = seen.clone();
                async move {
                    let traceparent = received.attribute(TRACEPARENT).map(str::to_owned);
                    *seen.lock().expect("seen") =
                        Some((trace_id(&tracing::Span::current()), traceparent));
                    Ok::<(), HandlerError>(())
                }
            }
        };
        let worker = Worker::new(queue.subscriber.clone()).options(options(&fx));
        run_until(
            worker,
            handler,
            wait_until(ARRIVAL, "the handler to run", || {
                seen.lock().expect("seen").is_some()
            }),
        )
        .await;

        let (handled_in, traceparent) = seen.lock().expect("seen").clone().expect("handled");
        let traceparent = traceparent.expect("the message carries a traceparent attribute");
        assert!(
            traceparent.starts_with(&format!("00-{published_in}-")),
            "traceparent {traceparent} does not carry the publisher's trace {published_in}"
        );
        assert_eq!(
            handled_in, published_in,
            "the handler's span continues the publisher's trace"
        );
    })
    .await;
}

/// The trace a handler ran in, and the `traceparent` its message carried.
type Handled = (TraceId, Option<String>);

fn trace_id(span: &tracing::Span) -> TraceId {
    span.context().span().span_context().trace_id()
}

/// The metrics count each message published, acked, nacked and dead-lettered on its
/// topic and subscription, and time every handler run.
pub async fn metrics_count_each_outcome(backend: &dyn Backend) {
    // Instruments are taken from the global provider when the publisher and subscriber
    // open, so it must be in place before.
    installed();
    let fx = Fixture::new(backend, "metrics");
    fx.run(async {
        let queue = fx.queue().await;
        let messages = ["fine", "flaky", "poison"].map(Message::new).to_vec();
        for result in queue.publisher.publish_batch(messages).await {
            result.unwrap_or_else(|failed| panic!("publish failed: {}", failed.error));
        }

        let handled = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let handled = handled.clone();
            move |received: Received| {
                let handled = handled.clone();
                async move {
                    handled.lock().expect("handled").push(received.attempt());
                    match (received.payload().as_ref(), received.attempt()) {
                        (b"flaky", 1) => Err(HandlerError::transient("first try fails")),
                        (b"poison", _) => Err(HandlerError::permanent("cannot be processed")),
                        _ => Ok(()),
                    }
                }
            }
        };
        let mut opts = options(&fx);
        opts.retry = retry(3);
        let worker = Worker::new(queue.subscriber.clone()).options(opts);
        let stats = worker.stats();
        run_until(
            worker,
            handler,
            wait_until(ARRIVAL, "three messages settled", || {
                let report = stats.snapshot();
                report.acked == 2 && report.dead_lettered == 1
            }),
        )
        .await;

        let topic = queue.publisher.topic();
        let subscription = &queue.spec.name;
        let totals = exported();
        let count = |name: &str, destination: &str| {
            totals
                .get(&(name.to_owned(), destination.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(
            count("wharf.published", topic),
            3,
            "published on {topic}: {totals:?}"
        );
        assert_eq!(count("wharf.acked", subscription), 2, "{totals:?}");
        assert_eq!(count("wharf.nacked", subscription), 1, "{totals:?}");
        assert_eq!(count("wharf.dead_lettered", subscription), 1, "{totals:?}");
        assert_eq!(
            count("wharf.handler.duration", subscription),
            4,
            "one per handler run: {totals:?}"
        );
    })
    .await;
}

/// The process's global meter provider, exporting into memory; installed once.
fn installed() -> &'static (SdkMeterProvider, InMemoryMetricExporter) {
    static INSTALLED: OnceLock<(SdkMeterProvider, InMemoryMetricExporter)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        global::set_meter_provider(provider.clone());
        (provider, exporter)
    })
}

/// Sums (counters) and counts (histograms) by instrument and destination, from the
/// latest export after a flush.
fn exported() -> BTreeMap<(String, String), u64> {
    let (provider, exporter) = installed();
    provider.force_flush().expect("flushing metrics");
    let exports = exporter.get_finished_metrics().expect("exported metrics");

    let mut totals = BTreeMap::new();
    let Some(latest) = exports.last() else {
        return totals;
    };
    for metric in latest.scope_metrics().flat_map(|scope| scope.metrics()) {
        let points: Vec<(u64, String)> = match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .map(|p| (p.value(), destination(p.attributes())))
                .collect(),
            AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
                .data_points()
                .map(|p| (p.count(), destination(p.attributes())))
                .collect(),
            _ => Vec::new(),
        };
        for (value, destination) in points {
            totals.insert((metric.name().to_owned(), destination), value);
        }
    }
    totals
}

fn destination<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> String {
    attributes
        .filter(|kv| kv.key.as_str() == "messaging.destination.name")
        .map(|kv| kv.value.to_string())
        .next()
        .unwrap_or_default()
}
