//! Telemetry the same on every backend: W3C trace context carried in message attributes,
//! and OpenTelemetry metrics.
//!
//! # Traces
//!
//! wharf logs through `tracing` (spans `publish`, `receive`, `settle`, `worker`,
//! `handle`; see the [crate docs](crate)). With a `tracing-opentelemetry` layer
//! installed, a publish writes the publishing span's context into the message as the
//! W3C `traceparent` (and `tracestate`) attributes, and the worker's `handle` span
//! continues that trace, so one trace runs from the request that published to the
//! handler that processed, across services and languages: any W3C-aware consumer reads
//! the same attributes. Without such a layer nothing is added. The attributes are added
//! only while the message still fits the backend's limits (SQS allows ten attributes),
//! and never replace a `traceparent` the application set itself.
//!
//! Code that receives without a [`Worker`](crate::Worker) continues the trace with
//! [`Received::trace_context`](crate::Received::trace_context):
//!
//! ```
//! use tracing_opentelemetry::OpenTelemetrySpanExt;
//!
//! # fn example(delivery: &wharf_core::Delivery) {
//! let span = tracing::info_span!("process order", delivery = %delivery.id());
//! // Fails only when no OpenTelemetry layer is installed; the span then has no trace.
//! let _ = span.set_parent(delivery.trace_context());
//! # }
//! ```
//!
//! # Metrics
//!
//! Instruments come from the global meter provider
//! ([`opentelemetry::global::meter`]) when a publisher or subscriber is opened, so
//! install the provider first. Each measurement carries `messaging.system` (the
//! backend) and `messaging.destination.name` (the topic or subscription):
//!
//! | Instrument | Kind | Unit | Counts |
//! |---|---|---|---|
//! | `wharf.published` | counter | `{message}` | messages the broker accepted |
//! | `wharf.acked` | counter | `{message}` | deliveries acked |
//! | `wharf.nacked` | counter | `{message}` | deliveries returned for redelivery |
//! | `wharf.dead_lettered` | counter | `{message}` | deliveries sent to dead-letter |
//! | `wharf.handler.duration` | histogram | `s` | how long each worker handler ran |
//! | `wharf.backlog` | gauge | `{message}` | [`SubscriptionStats::backlog`] |
//! | `wharf.dead_letter.depth` | gauge | `{message}` | dead letters held |
//! | `wharf.oldest_age` | gauge | `s` | age of the oldest message |
//!
//! The gauges are recorded only by a running [`BacklogGauges`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::capabilities::Capabilities;
use crate::driver::Backend;
use crate::message::{Attributes, Message};
use crate::operations::{Figure, SubscriptionStats};

/// The W3C trace context attribute.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state attribute.
pub const TRACESTATE: &str = "tracestate";

const METER: &str = "wharf";

/// The shortest refresh interval of [`BacklogGauges`]: stats are broker calls.
pub const MIN_REFRESH: Duration = Duration::from_millis(10);

/// Writes the current span's trace context into `message`, if there is one, the
/// message carries none yet, and it still fits `caps` afterwards.
pub(crate) fn inject_current(message: &mut Message, caps: &Capabilities) {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() || message.attributes().contains_key(TRACEPARENT) {
        return;
    }

    let mut carried = Attributes::new();
    TraceContextPropagator::new().inject_context(&cx, &mut AttributeInjector(&mut carried));
    let mut traced = message.clone();
    traced.attributes_mut().extend(carried);
    if caps.check_message(&traced).is_ok() {
        *message = traced;
    }
}

/// The trace context carried in `attributes`; an empty context when there is none.
pub(crate) fn extract(attributes: &Attributes) -> Context {
    TraceContextPropagator::new().extract(&AttributeExtractor(attributes))
}

/// Makes `span` continue the trace carried in `attributes`, if any.
pub(crate) fn continue_trace(span: &tracing::Span, attributes: &Attributes) {
    if !attributes.contains_key(TRACEPARENT) {
        return;
    }
    // Without an OpenTelemetry layer there is no trace to continue, which is fine.
    let _ = span.set_parent(extract(attributes));
}

struct AttributeInjector<'a>(&'a mut Attributes);

impl Injector for AttributeInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct AttributeExtractor<'a>(&'a Attributes);

impl Extractor for AttributeExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// One publisher's or subscriber's instruments, with the attributes every measurement
/// carries.
pub(crate) struct Instruments {
    attributes: [KeyValue; 2],
    published: Counter<u64>,
    acked: Counter<u64>,
    nacked: Counter<u64>,
    dead_lettered: Counter<u64>,
    handler_duration: Histogram<f64>,
}

impl Instruments {
    /// Instruments of the global meter provider for `destination` on `backend`.
    pub(crate) fn new(backend: &'static str, destination: &str) -> Arc<Self> {
        let meter = opentelemetry::global::meter(METER);
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{message}")
                .with_description(description)
                .build()
        };

        Arc::new(Self {
            attributes: destination_attributes(backend, destination),
            published: counter("wharf.published", "Messages the broker accepted"),
            acked: counter("wharf.acked", "Deliveries acked"),
            nacked: counter("wharf.nacked", "Deliveries returned for redelivery"),
            dead_lettered: counter("wharf.dead_lettered", "Deliveries dead-lettered"),
            handler_duration: meter
                .f64_histogram("wharf.handler.duration")
                .with_unit("s")
                .with_description("How long each worker handler ran")
                .build(),
        })
    }

    pub(crate) fn published(&self, count: u64) {
        self.published.add(count, &self.attributes);
    }

    pub(crate) fn acked(&self) {
        self.acked.add(1, &self.attributes);
    }

    pub(crate) fn nacked(&self) {
        self.nacked.add(1, &self.attributes);
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.add(1, &self.attributes);
    }

    pub(crate) fn handled(&self, took: Duration) {
        self.handler_duration
            .record(took.as_secs_f64(), &self.attributes);
    }
}

fn destination_attributes(backend: &'static str, destination: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("messaging.system", backend),
        KeyValue::new("messaging.destination.name", destination.to_owned()),
    ]
}

/// Backlog gauges for a set of subscriptions, refreshed from
/// [`Backend::stats`] in the background.
///
/// The gauges report the latest snapshot; a figure the broker cannot report is left
/// out rather than reported as zero. Dropping the value stops the refreshing.
///
/// ```no_run
/// # async fn example(backend: std::sync::Arc<dyn wharf_core::Backend>) {
/// use std::time::Duration;
/// use wharf_core::telemetry::BacklogGauges;
///
/// let gauges = BacklogGauges::start(backend, vec!["billing".into()], Duration::from_secs(15));
/// # drop(gauges);
/// # }
/// ```
pub struct BacklogGauges {
    stop: CancellationToken,
    snapshots: Snapshots,
    _gauges: Vec<ObservableGauge<f64>>,
}

type Snapshots = Arc<Mutex<Vec<SubscriptionStats>>>;

impl BacklogGauges {
    /// Registers the gauges on the global meter provider and refreshes them every
    /// `interval` (at least [`MIN_REFRESH`]) from `backend`. Must be called inside a
    /// Tokio runtime.
    pub fn start(
        backend: Arc<dyn Backend>,
        subscriptions: Vec<String>,
        interval: Duration,
    ) -> Self {
        let snapshots: Snapshots = Arc::default();
        let meter = opentelemetry::global::meter(METER);
        let gauges = register(&meter, backend.capabilities().backend, &snapshots);

        let stop = CancellationToken::new();
        let interval = interval.max(MIN_REFRESH);
        let refresh = refresh(
            backend,
            subscriptions,
            interval,
            snapshots.clone(),
            stop.clone(),
        );
        tokio::spawn(stop.clone().run_until_cancelled_owned(refresh));
        Self {
            stop,
            snapshots,
            _gauges: gauges,
        }
    }
}

impl Drop for BacklogGauges {
    fn drop(&mut self) {
        // The meter provider may keep calling back; report nothing from now on.
        let mut latest = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.stop.cancel();
        latest.clear();
    }
}

async fn refresh(
    backend: Arc<dyn Backend>,
    subscriptions: Vec<String>,
    interval: Duration,
    snapshots: Snapshots,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let mut fresh = Vec::with_capacity(subscriptions.len());
        for subscription in &subscriptions {
            match backend.stats(subscription).await {
                Ok(stats) => fresh.push(stats),
                Err(error) => warn!(subscription, %error, "backlog gauges: stats failed"),
            }
        }
        let mut latest = snapshots.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: a drop that cleared the snapshots while stats were
        // read must not see them come back.
        if stop.is_cancelled() {
            return;
        }
        *latest = fresh;
    }
}

fn register(
    meter: &Meter,
    backend: &'static str,
    snapshots: &Snapshots,
) -> Vec<ObservableGauge<f64>> {
    let gauge =
        |name: &'static str, unit: &'static str, figure: fn(&SubscriptionStats) -> Option<f64>| {
            let snapshots = snapshots.clone();
            meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_callback(move |observer| {
                    let snapshots = snapshots.lock().unwrap_or_else(PoisonError::into_inner);
                    for stats in snapshots.iter() {
                        if let Some(value) = figure(stats) {
                            let attributes = destination_attributes(backend, &stats.subscription);
                            observer.observe(value, &attributes);
                        }
                    }
                })
                .build()
        };

    vec![
        gauge("wharf.backlog", "{message}", |s| known(&s.backlog())),
        gauge("wharf.dead_letter.depth", "{message}", |s| {
            known(&s.dead_lettered)
        }),
        gauge("wharf.oldest_age", "s", |s| {
            s.oldest_age
                .known()
                .map(|age| age.map_or(0.0, |age| age.as_secs_f64()))
        }),
    ]
}

fn known(figure: &Figure<u64>) -> Option<f64> {
    figure.known().map(|&value| value as f64)
}
