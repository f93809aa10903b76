//! Wires the system together: queues, database, workers and the HTTP router.
//!
//! [`App::start`] creates the topics and subscriptions (if missing) on whatever
//! [`Backend`] it is given, then starts two worker pools: fulfilment on the orders
//! subscription and the status updater on the reply subscription. [`App::stop`] shuts
//! them down gracefully: in-flight orders finish, nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::SqlitePool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wharf::{
    Backend, Capabilities, Handler, RetryPolicy, SubscriptionSpec, Worker, WorkerReport,
    WorkerStats,
};

use crate::api::{self, ApiState};
use crate::config::Settings;
use crate::confirmations::StatusUpdater;
use crate::fulfilment::{Counters, Fulfilment};
use crate::inventory::Inventory;
use crate::orders::OrderStore;
use crate::payment::Payments;

/// Worker slots of the status updater; its work is one small database update.
const STATUS_CONCURRENCY: usize = 16;
/// How long in-flight handlers may finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest one handler may run before it counts as failed.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// The topic and subscription names, all derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Topic the API publishes orders to.
    pub orders: String,
    /// Subscription the fulfilment workers read; its dead-letter queue holds poison.
    pub fulfilment: String,
    /// Topic the workers publish replies to.
    pub replies: String,
    /// Subscription the status updater reads.
    pub status: String,
}

impl Names {
    /// The names for `backend`: on one without fan-out (SQS) a subscription is its
    /// topic's queue, so it takes the topic's name.
    pub fn for_backend(prefix: &str, backend: &Capabilities) -> Self {
        let names = Self::new(prefix);
        Self {
            fulfilment: backend
                .subscription_name(&names.orders, &names.fulfilment)
                .to_owned(),
            status: backend
                .subscription_name(&names.replies, &names.status)
                .to_owned(),
            ..names
        }
    }

    /// `PREFIX`, `PREFIX-fulfilment`, `PREFIX-replies`, `PREFIX-replies-status`.
    pub fn new(prefix: &str) -> Self {
        Self {
            orders: prefix.to_owned(),
            fulfilment: format!("{prefix}-fulfilment"),
            replies: format!("{prefix}-replies"),
            status: format!("{prefix}-replies-status"),
        }
    }
}

/// Why the system could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The backend refused to set up or open a queue.
    #[error("message backend: {0}")]
    Backend(#[from] wharf::Error),
    /// The inventory could not be loaded.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    /// A worker task failed to run to its end.
    #[error("a worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Counters of a running or stopped system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The fulfilment workers' counters.
    pub fulfilment: WorkerReport,
    /// The status updater's counters.
    pub status: WorkerReport,
    /// Orders delivered again after their stock decision was stored.
    pub duplicate_orders: u64,
    /// Replies for orders already settled.
    pub duplicate_replies: u64,
    /// Payment authorisations that failed transiently.
    pub payment_failures: u64,
}

/// One worker pool running in its own task.
struct Pool {
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
    task: JoinHandle<wharf::Result<WorkerReport>>,
}

/// The running system.
pub struct App {
    names: Names,
    backend: Arc<dyn Backend>,
    api: ApiState,
    inventory: Inventory,
    counters: Arc<Counters>,
    fulfilment: Pool,
    status: Pool,
}

impl App {
    /// Sets up the queues and starts both worker pools.
    ///
    /// # Errors
    ///
    /// [`AppError::Backend`] if a topic or subscription cannot be created or opened,
    /// or the worker settings are out of the backend's range.
    pub async fn start(
        settings: &Settings,
        backend: Arc<dyn Backend>,
        pool: SqlitePool,
    ) -> Result<Self, AppError> {
        let names = Names::for_backend(&settings.prefix, &backend.capabilities());
        create_queues(backend.as_ref(), &names, settings).await?;

        let counters = Arc::new(Counters::default());
        let orders = OrderStore::new(pool.clone());
        let inventory = Inventory::new(pool);
        let fulfilment = Fulfilment {
            inventory: inventory.clone(),
            orders: orders.clone(),
            payments: Payments::new(settings.payment_failure_rate, settings.seed),
            replies: backend.publisher(&names.replies).await?,
            max_attempts: settings.max_attempts,
            counters: counters.clone(),
        };
        let updater = StatusUpdater {
            orders: orders.clone(),
            counters: counters.clone(),
        };

        let order_worker = worker(&*backend, &names.fulfilment, settings, settings.concurrency);
        let fulfilment = spawn(order_worker.await?, fulfilment);
        let status_worker = worker(&*backend, &names.status, settings, STATUS_CONCURRENCY);
        let status = spawn(status_worker.await?, updater);

        let api = ApiState {
            orders,
            publisher: backend.publisher(&names.orders).await?,
        };
        info!(backend = backend.capabilities().backend, prefix = %settings.prefix, "started");
        Ok(Self {
            names,
            backend,
            api,
            inventory,
            counters,
            fulfilment,
            status,
        })
    }

    /// The HTTP routes, ready to serve.
    pub fn router(&self) -> Router {
        api::router(self.api.clone())
    }

    /// The order statuses.
    pub fn orders(&self) -> &OrderStore {
        &self.api.orders
    }

    /// The stock.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The topic and subscription names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The backend the system runs on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        self.counters.snapshot(
            self.fulfilment.stats.snapshot(),
            self.status.stats.snapshot(),
        )
    }

    /// Stops the fulfilment workers, then the status updater, each letting in-flight
    /// deliveries finish; unfinished ones are released for redelivery.
    ///
    /// # Errors
    ///
    /// [`AppError`] if a worker pool ended with an error.
    pub async fn stop(self) -> Result<Snapshot, AppError> {
        let fulfilment = self.fulfilment.stop().await?;
        let status = self.status.stop().await?;

        Ok(self.counters.snapshot(fulfilment, status))
    }

    /// Deletes the topics and subscriptions (with the dead-letter queue), for runs that
    /// made their own.
    ///
    /// # Errors
    ///
    /// The backend's error for the first deletion that failed.
    pub async fn delete_queues(backend: &dyn Backend, names: &Names) -> Result<(), AppError> {
        backend.delete_subscription(&names.fulfilment).await?;
        backend.delete_subscription(&names.status).await?;
        backend.delete_topic(&names.orders).await?;
        backend.delete_topic(&names.replies).await?;
        Ok(())
    }
}

impl Counters {
    fn snapshot(&self, fulfilment: WorkerReport, status: WorkerReport) -> Snapshot {
        Snapshot {
            fulfilment,
            status,
            duplicate_orders: Counters::read(&self.duplicate_orders),
            duplicate_replies: Counters::read(&self.duplicate_replies),
            payment_failures: Counters::read(&self.payment_failures),
        }
    }
}

impl Pool {
    async fn stop(self) -> Result<WorkerReport, AppError> {
        self.stop.cancel();

        Ok(self.task.await??)
    }
}

async fn create_queues(
    backend: &dyn Backend,
    names: &Names,
    settings: &Settings,
) -> Result<(), AppError> {
    backend.create_topic(&names.orders).await?;
    backend.create_topic(&names.replies).await?;

    let orders = SubscriptionSpec::new(&names.orders, &names.fulfilment).lease(settings.lease());
    backend.create_subscription(&orders).await?;
    let replies = SubscriptionSpec::new(&names.replies, &names.status).lease(settings.lease());
    backend.create_subscription(&replies).await?;
    Ok(())
}

async fn worker(
    backend: &dyn Backend,
    subscription: &str,
    settings: &Settings,
    concurrency: usize,
) -> Result<Worker, AppError> {
    let retry = RetryPolicy::default()
        .max_attempts(settings.max_attempts)
        .initial_delay(settings.backoff_initial())
        .max_delay(settings.backoff_max());

    Ok(Worker::new(backend.subscriber(subscription).await?)
        .concurrency(concurrency)
        .retry(retry)
        .lease(settings.lease())
        .handler_timeout(HANDLER_TIMEOUT)
        .shutdown_grace(SHUTDOWN_GRACE))
}

fn spawn(worker: Worker, handler: impl Handler) -> Pool {
    let stop = CancellationToken::new();
    let stats = worker.stats();
    let shutdown = stop.clone().cancelled_owned();

    let task = tokio::spawn(async move {
        let result = worker.run(handler, shutdown).await;
        if let Err(error) = &result {
            warn!(error = %error, "worker stopped with an error");
        }
        result
    });
    Pool { stats, stop, task }
}
