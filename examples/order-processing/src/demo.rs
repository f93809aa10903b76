//! The demo: runs the whole system in one process, fires orders at it over HTTP, waits
//! until every accepted order is settled, and checks the result.
//!
//! The run uses its own topic and subscription names (the configured prefix plus a
//! random suffix) and deletes them afterwards, so it can share a broker with other runs.
//! The checks: every accepted order is settled (none lost), the dead-letter queue holds
//! exactly the poison orders and those whose payment failed on every attempt, and the
//! stock adds up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;
use wharf::{Backend, Envelope, Received};

use crate::app::{App, AppError, Snapshot};
use crate::config::Settings;
use crate::database::{self, DatabaseError};
use crate::inventory::{Catalogue, InventoryError};
use crate::load::{self, Fired, Traffic};
use crate::order::{ORDER_ID_ATTRIBUTE, OrderPlaced, Status};
use crate::payment::Payments;
use crate::progress::{ProgressMode, Reporter, Sent};
use crate::summary::Summary;

/// Most orders one demo run may send.
pub const MAX_ORDERS: usize = 10_000_000;
/// How often the run checks whether every order has settled.
const POLL: Duration = Duration::from_millis(20);
/// How long an empty dead-letter queue must stay empty to count as drained.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// How to run the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// The traffic to send.
    pub traffic: Traffic,
    /// Give up waiting for orders to settle after this long.
    pub deadline: Duration,
    /// How to show progress.
    pub progress: ProgressMode,
}

/// Why the demo could not run to its checks.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The backend could not be opened or used.
    #[error("message backend: {0}")]
    Backend(#[from] wharf::Error),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// The inventory failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The system failed to start or stop.
    #[error(transparent)]
    App(#[from] AppError),
    /// The HTTP listener could not be opened.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
}

impl DemoOptions {
    /// Checks the options are in range.
    ///
    /// # Errors
    ///
    /// [`DemoError::Invalid`] naming the option, its value and the range.
    pub fn validate(&self) -> Result<(), DemoError> {
        let t = &self.traffic;
        if !(1..=MAX_ORDERS).contains(&t.orders) {
            return invalid(format!(
                "orders is {}; it must be 1 to {MAX_ORDERS}",
                t.orders
            ));
        }
        if !(0.0..=1.0).contains(&t.spike_share) {
            return invalid(format!(
                "spike share is {}; it must be 0.0 to 1.0",
                t.spike_share
            ));
        }
        if !(0.0..=1.0).contains(&t.poison_rate) {
            return invalid(format!(
                "poison rate is {}; it must be 0.0 to 1.0",
                t.poison_rate
            ));
        }
        if t.steady_rate == 0 || t.steady_clients == 0 || t.spike_clients == 0 {
            return invalid("rate and client counts must be at least 1".to_owned());
        }
        Ok(())
    }
}

fn invalid(message: String) -> Result<(), DemoError> {
    Err(DemoError::Invalid(message))
}

/// Runs the demo on the backend `settings` names and returns its summary.
///
/// # Errors
///
/// [`DemoError`] if the demo cannot run at all; a run that finds lost orders or a
/// wrong dead-letter queue still returns its [`Summary`], which says so.
pub async fn run(settings: &Settings, options: &DemoOptions) -> Result<Summary, DemoError> {
    options.validate()?;
    let backend = wharf::connect(&settings.backend).await?;

    run_on(backend, settings, options).await
}

/// Runs the demo on an opened backend.
///
/// # Errors
///
/// As [`run`].
pub async fn run_on(
    backend: Arc<dyn Backend>,
    settings: &Settings,
    options: &DemoOptions,
) -> Result<Summary, DemoError> {
    options.validate()?;
    let settings = own_queues(settings);
    let catalogue = Catalogue::sized_for(options.traffic.orders);
    let pool = database::open(&settings.database).await?;
    let app = App::start(&settings, backend.clone(), pool).await?;
    app.inventory().load(&catalogue).await?;

    let outcome = drive(&app, &catalogue, options).await;
    let names = app.names().clone();
    let stopped = app.stop().await;

    let found = drain_dead_letters(backend.as_ref(), &names.fulfilment).await;
    if let Err(error) = App::delete_queues(backend.as_ref(), &names).await {
        warn!(error = %error, "could not delete the demo's queues");
    }

    let mut run = outcome?;
    run.snapshot = stopped?;
    Ok(run.summarise(&settings, backend.as_ref(), &found?))
}

/// The settings with a prefix of the run's own.
fn own_queues(settings: &Settings) -> Settings {
    let suffix = Uuid::new_v4().simple().to_string();
    Settings {
        prefix: format!("{}-demo-{}", settings.prefix, &suffix[..8]),
        ..settings.clone()
    }
}

/// What a run observed, before the dead-letter queue is read.
struct Run {
    fired: Vec<Fired>,
    statuses: HashMap<Uuid, Status>,
    stock_consistent: bool,
    timed_out: bool,
    elapsed: Duration,
    snapshot: Snapshot,
}

async fn drive(app: &App, catalogue: &Catalogue, options: &DemoOptions) -> Result<Run, DemoError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(DemoError::Listen)?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(DemoError::Listen)?
    );
    let stop_http = CancellationToken::new();
    let server = axum::serve(listener, app.router())
        .with_graceful_shutdown(stop_http.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });

    let result = observe(app, catalogue, options, &base).await;
    stop_http.cancel();
    if let Ok(Err(error)) = server.await {
        warn!(error = %error, "HTTP server ended with an error");
    }
    result
}

async fn observe(
    app: &App,
    catalogue: &Catalogue,
    options: &DemoOptions,
    base: &str,
) -> Result<Run, DemoError> {
    let traffic = &options.traffic;
    let first = Uuid::now_v7();
    let sent = Arc::new(Sent::default());
    let total = u64::try_from(traffic.orders).unwrap_or(u64::MAX);
    let reporter = Reporter::start(
        options.progress,
        total,
        sent.clone(),
        app.orders().clone(),
        first,
    );
    let started = Instant::now();

    let fired = load::fire(base, traffic, load::plan(traffic, catalogue), sent).await;
    let accepted = fired.iter().filter(|f| f.answer.is_ok()).count() as u64;
    info!(accepted, "all orders sent; waiting for them to settle");
    let timed_out = !settle(app, first, accepted, started + options.deadline).await?;
    let elapsed = started.elapsed();
    reporter.finish().await;

    let levels = app.inventory().levels().await?;
    Ok(Run {
        fired,
        statuses: app.orders().statuses_since(first).await?,
        stock_consistent: levels.iter().all(|level| level.adds_up()),
        timed_out,
        elapsed,
        snapshot: app.snapshot(),
    })
}

/// Waits until `accepted` orders from `first` on are settled; `false` if `deadline`
/// passed first.
async fn settle(
    app: &App,
    first: Uuid,
    accepted: u64,
    deadline: Instant,
) -> Result<bool, DemoError> {
    loop {
        let settled = app.orders().counts_since(first).await?.settled();
        if settled >= accepted {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            warn!(
                settled,
                accepted, "deadline passed before every order settled"
            );
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One message found in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeadLetterFound {
    order_id: Option<Uuid>,
    reason: String,
}

/// Reads (and acks) everything in the fulfilment subscription's dead-letter queue.
async fn drain_dead_letters(
    backend: &dyn Backend,
    subscription: &str,
) -> Result<Vec<DeadLetterFound>, DemoError> {
    let dead_letters = backend.dead_letter_subscriber(subscription).await?;
    let mut found = Vec::new();

    loop {
        let batch = dead_letters.receive(256, DRAIN_QUIET).await?;
        if batch.is_empty() {
            // Closed before the queues are deleted: a Kafka consumer group with a
            // member left in it cannot be deleted.
            dead_letters.close().await?;
            return Ok(found);
        }
        for delivery in batch {
            found.push(inspect(&delivery));
            delivery.ack().await.map_err(|failed| failed.error)?;
        }
    }
}

fn inspect(delivery: &Received) -> DeadLetterFound {
    let from_attribute = delivery
        .attribute(ORDER_ID_ATTRIBUTE)
        .and_then(|id| id.parse().ok());
    let order_id = from_attribute.or_else(|| delivery.json::<OrderPlaced>().ok().map(|o| o.id));
    let reason = Envelope::from_attributes(delivery.attributes())
        .map(|envelope| envelope.reason)
        .unwrap_or_default();

    DeadLetterFound { order_id, reason }
}

impl Run {
    fn summarise(
        &self,
        settings: &Settings,
        backend: &dyn Backend,
        found: &[DeadLetterFound],
    ) -> Summary {
        let accepted: Vec<(Uuid, bool)> = self
            .fired
            .iter()
            .filter_map(|f| f.answer.as_ref().ok().map(|id| (*id, f.planned.poison)))
            .collect();
        let expected = expected_dead_letters(&accepted, settings);
        let found_ids: HashSet<Uuid> = found.iter().filter_map(|d| d.order_id).collect();
        let count =
            |status: Status| self.statuses.values().filter(|s| **s == status).count() as u64;
        let settled = accepted
            .iter()
            .filter(|(id, _)| self.statuses.get(id).is_some_and(|s| s.is_settled()))
            .count();
        let fulfilment = self.snapshot.fulfilment;

        Summary {
            backend: backend.capabilities().backend.to_owned(),
            backend_url: wharf::redact(&settings.backend),
            orders: self.fired.len() as u64,
            accepted: accepted.len() as u64,
            refused: (self.fired.len() - accepted.len()) as u64,
            processed: fulfilment.acked + fulfilment.dead_lettered,
            confirmed: count(Status::Confirmed),
            rejected_out_of_stock: count(Status::Rejected),
            retried: fulfilment.retried,
            payment_failures: self.snapshot.payment_failures,
            dead_lettered: found.len() as u64,
            poison: accepted.iter().filter(|(_, poison)| *poison).count() as u64,
            payment_gave_up: (expected.len() - accepted.iter().filter(|(_, p)| *p).count()) as u64,
            dead_letters_missing: expected.difference(&found_ids).count() as u64,
            dead_letters_unexpected: unexpected(found, &expected),
            lost: (accepted.len() - settled) as u64,
            duplicates: self.snapshot.duplicate_orders + self.snapshot.duplicate_replies,
            stock_consistent: self.stock_consistent,
            timed_out: self.timed_out,
            elapsed_secs: self.elapsed.as_secs_f64(),
            throughput: settled as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON),
        }
    }
}

/// The accepted orders that must end in the dead-letter queue: the poison ones, and
/// those the seeded payment provider fails on every attempt.
fn expected_dead_letters(accepted: &[(Uuid, bool)], settings: &Settings) -> HashSet<Uuid> {
    let payments = Payments::new(settings.payment_failure_rate, settings.seed);

    accepted
        .iter()
        .filter(|(id, poison)| *poison || payments.gives_up(*id, settings.max_attempts))
        .map(|(id, _)| *id)
        .collect()
}

/// Dead letters not expected: unknown orders, and each copy beyond the first.
fn unexpected(found: &[DeadLetterFound], expected: &HashSet<Uuid>) -> u64 {
    let mut seen = HashSet::new();
    let odd = found.iter().filter(|letter| match letter.order_id {
        Some(id) => !expected.contains(&id) || !seen.insert(id),
        None => true,
    });
    let odd: Vec<&DeadLetterFound> = odd.collect();

    for letter in odd.iter().take(5) {
        warn!(order.id = ?letter.order_id, reason = %letter.reason, "unexpected dead letter");
    }
    odd.len() as u64
}
