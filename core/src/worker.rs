//! [`Worker`]: runs a [`Handler`] over a subscription with bounded concurrency, retries,
//! dead-lettering, lease keep-alive and graceful shutdown.
//!
//! The loop never holds more deliveries than it has handler slots, so a slow handler
//! slows receiving instead of piling up leased messages. Each delivery ends in exactly
//! one of: acked, retried (nacked with the policy's delay), dead-lettered, or released
//! at shutdown for another consumer. Nothing is dropped.
//!
//! Acks of handlers that finish together leave in one call (see [`Delivery::ack_all`]):
//! nothing waits to fill a batch, but acks that arrive while one call is in flight go
//! together in the next, so under load a worker needs far fewer ack requests.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::acks::AckBatcher;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerError};
use crate::retry::{Decision, RetryPolicy};
use crate::subscriber::Subscriber;
use crate::telemetry;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Most deliveries handled at once.
    pub concurrency: usize,
    /// A handler still running after this long counts as a transient failure.
    pub handler_timeout: Duration,
    /// Retries and dead-lettering of failed deliveries.
    pub retry: RetryPolicy,
    /// The lease kept alive while a handler runs, renewed at half its length.
    pub lease: Duration,
    /// At shutdown, how long in-flight handlers may finish before their deliveries are
    /// released for redelivery.
    pub shutdown_grace: Duration,
    /// How long one receive call waits for messages; also bounds how quickly shutdown
    /// is noticed.
    pub receive_wait: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            handler_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            receive_wait: Duration::from_secs(1),
        }
    }
}

/// Live counters of a running worker, shared through [`Worker::stats`].
#[derive(Debug, Default)]
pub struct WorkerStats {
    received: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    released: AtomicU64,
    settle_failures: AtomicU64,
}

/// A snapshot of [`WorkerStats`], also what [`Worker::run`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Deliveries taken from the subscription.
    pub received: u64,
    /// Deliveries acked after their handler succeeded.
    pub acked: u64,
    /// Deliveries nacked for a later attempt.
    pub retried: u64,
    /// Deliveries moved to the dead-letter destination.
    pub dead_lettered: u64,
    /// Deliveries handed back unfinished at shutdown.
    pub released: u64,
    /// Settlements the backend refused; those deliveries return after their lease.
    pub settle_failures: u64,
}

impl WorkerStats {
    /// The counters now.
    pub fn snapshot(&self) -> WorkerReport {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerReport {
            received: read(&self.received),
            acked: read(&self.acked),
            retried: read(&self.retried),
            dead_lettered: read(&self.dead_lettered),
            released: read(&self.released),
            settle_failures: read(&self.settle_failures),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a handler over a subscription until told to stop.
///
/// ```no_run
/// # async fn example(subscriber: wharf_core::Subscriber) -> wharf_core::Result<()> {
/// use wharf_core::{HandlerError, Received, RetryPolicy, Worker};
///
/// let report = Worker::new(subscriber)
///     .concurrency(8)
///     .retry(RetryPolicy::default().max_attempts(3))
///     .run(
///         |delivery: Received| async move {
///             let order: serde_json::Value = delivery.json()?;
///             if order["sku"].is_null() {
///                 return Err(HandlerError::permanent("order without a sku"));
///             }
///             Ok(())
///         },
///         async { tokio::signal::ctrl_c().await.ok(); },
///     )
///     .await?;
/// println!("{} acked, {} dead-lettered", report.acked, report.dead_lettered);
/// # Ok(()) }
/// ```
pub struct Worker {
    subscriber: Subscriber,
    options: WorkerOptions,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker on `subscriber` with default [`WorkerOptions`].
    pub fn new(subscriber: Subscriber) -> Self {
        Self {
            subscriber,
            options: WorkerOptions::default(),
            stats: Arc::default(),
        }
    }

    /// Replaces all options.
    #[must_use]
    pub fn options(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the most deliveries handled at once.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.options.concurrency = concurrency;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }

    /// Sets the per-delivery handler timeout.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.options.handler_timeout = timeout;
        self
    }

    /// Sets the lease kept alive while a handler runs.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.options.lease = lease;
        self
    }

    /// Sets how long in-flight handlers may finish at shutdown.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.options.shutdown_grace = grace;
        self
    }

    /// Live counters, readable while [`run`](Self::run) goes on.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Handles deliveries until `shutdown` completes, then stops receiving, lets
    /// in-flight handlers finish within the grace period and releases the rest.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) for out-of-range options,
    /// before anything is received; a non-retryable receive error (the subscription was
    /// deleted, the credentials were revoked) after in-flight work has been drained.
    /// Retryable receive errors are logged and retried with backoff.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport> {
        self.validate()?;
        let run = Run {
            subscriber: self.subscriber,
            handler: Arc::new(handler),
            options: Arc::new(self.options),
            stats: self.stats.clone(),
            cancel: CancellationToken::new(),
        };

        let span = info_span!("worker", source = %run.subscriber.subscription());
        run.run(shutdown).instrument(span).await
    }

    fn validate(&self) -> Result<()> {
        let options = &self.options;
        if options.concurrency == 0 {
            return Err(Error::invalid(
                "worker concurrency is 0; it must be at least 1",
            ));
        }
        if options.handler_timeout.is_zero() {
            return Err(Error::invalid(
                "worker handler_timeout must be longer than zero",
            ));
        }
        options.retry.validate()?;

        let caps = self.subscriber.capabilities();
        if caps.lease_extension() {
            caps.check_lease(options.lease)?;
        }
        Ok(())
    }
}

struct Run<H> {
    subscriber: Subscriber,
    handler: Arc<H>,
    options: Arc<WorkerOptions>,
    stats: Arc<WorkerStats>,
    cancel: CancellationToken,
}

impl<H: Handler> Run<H> {
    async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport> {
        let slots = Arc::new(Semaphore::new(self.options.concurrency));
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let (acks, batching) = AckBatcher::start(self.options.concurrency);

        let outcome = self
            .receive_loop(&slots, &mut tasks, &mut shutdown, &acks)
            .await;
        self.drain(&mut tasks).await;
        drop(acks);
        if let Err(error) = batching.await {
            warn!(%error, "the ack batching task failed; unsettled deliveries return");
        }

        outcome.map(|()| self.stats.snapshot())
    }

    async fn receive_loop(
        &self,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        shutdown: &mut (impl Unpin + futures::future::FusedFuture<Output = ()>),
        acks: &AckBatcher,
    ) -> Result<()> {
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}

            // Biased: once shutdown is asked for, no new receive starts even if slots
            // are free at the same moment.
            let permits = tokio::select! {
                biased;
                () = &mut *shutdown => return Ok(()),
                permits = take_free_slots(slots) => permits,
            };
            if shutdown.is_terminated() {
                return Ok(());
            }

            // Not raced against shutdown: a receive cut short could strand messages the
            // backend already leased to us until their lease ran out.
            let wait = self.options.receive_wait;
            match self.subscriber.receive(permits.len(), wait).await {
                Ok(deliveries) => {
                    failures = 0;
                    self.spawn_all(deliveries, permits, tasks, acks);
                }
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    self.pause_after(&error, failures, shutdown).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn pause_after(
        &self,
        error: &Error,
        failures: u32,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) {
        let pause = receive_backoff(failures);
        warn!(error.kind = %error.kind(), %error, failures, pause_ms = pause.as_millis() as u64,
            "receive failed; retrying");

        tokio::select! {
            () = &mut *shutdown => {}
            () = tokio::time::sleep(pause) => {}
        }
    }

    fn spawn_all(
        &self,
        deliveries: Vec<Delivery>,
        mut permits: Vec<OwnedSemaphorePermit>,
        tasks: &mut JoinSet<()>,
        acks: &AckBatcher,
    ) {
        for delivery in deliveries {
            // `receive` returns at most one delivery per permit.
            let Some(permit) = permits.pop() else {
                tasks.spawn(async move { drop(delivery) });
                continue;
            };
            WorkerStats::bump(&self.stats.received);
            let job = Job {
                handler: self.handler.clone(),
                options: self.options.clone(),
                stats: self.stats.clone(),
                cancel: self.cancel.clone(),
                acks: acks.clone(),
            };
            tasks.spawn(job.process(delivery, permit));
        }
    }

    async fn drain(&self, tasks: &mut JoinSet<()>) {
        let grace = tokio::time::sleep(self.options.shutdown_grace);
        tokio::pin!(grace);

        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                () = &mut grace, if !self.cancel.is_cancelled() => {
                    debug!(in_flight = tasks.len(), "shutdown grace over; releasing the rest");
                    self.cancel.cancel();
                }
            }
        }
    }
}

/// Waits for one free handler slot, then takes every other free one.
async fn take_free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    let Ok(first) = slots.clone().acquire_owned().await else {
        return Vec::new();
    };
    let mut permits = vec![first];
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        permits.push(permit);
    }
    permits
}

fn receive_backoff(failures: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << failures.min(8));
    Duration::from_millis(millis.min(10_000))
}

/// Everything one delivery's task needs.
struct Job<H> {
    handler: Arc<H>,
    options: Arc<WorkerOptions>,
    stats: Arc<WorkerStats>,
    cancel: CancellationToken,
    acks: AckBatcher,
}

/// How a handler run ended.
enum Outcome {
    Done(Result<(), HandlerError>),
    Panicked(String),
    TimedOut,
    Cancelled,
}

impl<H: Handler> Job<H> {
    async fn process(self, delivery: Delivery, _permit: OwnedSemaphorePermit) {
        let span = info_span!(
            "handle",
            source = %delivery.source(),
            backend = delivery.capabilities().backend,
            delivery = %delivery.id(),
            attempt = delivery.attempt(),
        );
        telemetry::continue_trace(&span, delivery.attributes());
        async move {
            let outcome = self.run_handler(&delivery).await;
            self.settle(delivery, outcome).await;
        }
        .instrument(span)
        .await
    }

    async fn run_handler(&self, delivery: &Delivery) -> Outcome {
        let handling = AssertUnwindSafe(self.handler.handle(delivery.received().clone()));
        let guarded = tokio::time::timeout(self.options.handler_timeout, handling.catch_unwind());
        let started = Instant::now();

        let outcome = tokio::select! {
            result = guarded => match result {
                Ok(Ok(done)) => Outcome::Done(done),
                Ok(Err(panic)) => Outcome::Panicked(panic_text(&panic)),
                Err(_) => Outcome::TimedOut,
            },
            () = keep_lease_alive(delivery, self.options.lease) => unreachable!("keep-alive never ends"),
            () = self.cancel.cancelled() => Outcome::Cancelled,
        };
        delivery.instruments().handled(started.elapsed());
        outcome
    }

    async fn settle(&self, delivery: Delivery, outcome: Outcome) {
        let decision = match outcome {
            Outcome::Done(Ok(())) => Decision::Ack,
            Outcome::Done(Err(error)) => self.decide(&delivery, &error),
            Outcome::Panicked(text) => self.after_failure(&delivery, &format!("panic: {text}")),
            Outcome::TimedOut => self.after_failure(&delivery, &self.timeout_text()),
            Outcome::Cancelled => return self.release(delivery).await,
        };

        let (counter, result) = match decision {
            Decision::Ack => match self.acks.ack(delivery).await {
                Some(result) => (&self.stats.acked, result),
                None => {
                    WorkerStats::bump(&self.stats.settle_failures);
                    warn!("ack batching stopped; the delivery was released for redelivery");
                    return;
                }
            },
            Decision::Retry(delay) => (&self.stats.retried, delivery.nack(delay).await),
            Decision::DeadLetter(reason) => (
                &self.stats.dead_lettered,
                delivery.dead_letter(reason).await,
            ),
        };
        match result {
            Ok(()) => WorkerStats::bump(counter),
            Err(failed) => {
                WorkerStats::bump(&self.stats.settle_failures);
                warn!(error.kind = %failed.error.kind(), error = %failed.error,
                    "could not settle delivery; it returns after its lease");
            }
        }
    }

    fn decide(&self, delivery: &Delivery, error: &HandlerError) -> Decision {
        if error.is_permanent() {
            return Decision::DeadLetter(format!("permanent failure: {}", error.source()));
        }
        match (
            self.after_failure(delivery, &error.to_string()),
            error.requested_delay(),
        ) {
            (Decision::Retry(_), Some(delay)) => Decision::Retry(self.clamp(delivery, delay)),
            (decision, _) => decision,
        }
    }

    fn after_failure(&self, delivery: &Delivery, reason: &str) -> Decision {
        debug!(reason, "handler failed");
        match self.options.retry.after_failure(delivery.attempt(), reason) {
            Decision::Retry(delay) => Decision::Retry(self.clamp(delivery, delay)),
            decision => decision,
        }
    }

    fn clamp(&self, delivery: &Delivery, delay: Duration) -> Duration {
        delay.min(delivery_max_nack_delay(delivery))
    }

    fn timeout_text(&self) -> String {
        format!(
            "handler timed out after {}",
            humantime::format_duration(self.options.handler_timeout)
        )
    }

    async fn release(&self, delivery: Delivery) {
        match delivery.nack(Duration::ZERO).await {
            Ok(()) => WorkerStats::bump(&self.stats.released),
            Err(failed) => {
                WorkerStats::bump(&self.stats.settle_failures);
                warn!(error = %failed.error, "could not release delivery; it returns after its lease");
            }
        }
    }
}

fn delivery_max_nack_delay(delivery: &Delivery) -> Duration {
    delivery.capabilities().max_nack_delay
}

/// Renews the lease at half its length for as long as it is polled. Never completes: once
/// the lease is lost the handler still runs to the end, and its settlement then reports
/// [`LeaseExpired`](crate::ErrorKind::LeaseExpired).
async fn keep_lease_alive(delivery: &Delivery, lease: Duration) {
    if !delivery.capabilities().lease_extension() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(lease / 2).await;
        match delivery.extend_lease(lease).await {
            Ok(()) => debug!(lease_ms = lease.as_millis() as u64, "lease extended"),
            Err(error) if error.is_retryable() => {
                warn!(error.kind = %error.kind(), %error, "lease extension failed; trying again");
            }
            Err(error) => {
                warn!(error.kind = %error.kind(), %error, "lease lost while the handler ran");
                return std::future::pending().await;
            }
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    panic
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "non-text panic".to_owned())
}
