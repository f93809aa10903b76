//! [`FaultyBackend`]: wraps a real backend and makes it misbehave on purpose, so that
//! application code can be tested against what brokers actually do.
//!
//! Real brokers fail publishes, lose acks, deliver a message twice or late. Code that
//! only ever ran against a healthy broker tends to assume none of that happens. Wrap the
//! backend your tests use and choose the faults:
//!
//! ```no_run
//! use std::time::Duration;
//! use wharf_testkit::{FaultyBackend, Times};
//!
//! # async fn example(inner: impl wharf_core::Backend) -> wharf_core::Result<()> {
//! use wharf_core::Backend;
//!
//! let backend = FaultyBackend::new(inner)
//!     .fail_publishes(2)
//!     .drop_acks(Times::ratio(0.1))
//!     .duplicate_deliveries(1)
//!     .delay_deliveries(Duration::from_millis(300), Times::always());
//! let publisher = backend.publisher("orders").await?;
//! // ... run the code under test, then check what was injected:
//! println!("{:?}", backend.report());
//! # Ok(()) }
//! ```
//!
//! Faults apply to every publisher and subscriber opened through the wrapper (they share
//! one budget), but not to [`dead_letter_subscriber`](Backend::dead_letter_subscriber),
//! which returns the inner backend's subscriber unchanged so tests can inspect dead
//! letters reliably. Topic and subscription management is passed through.
//!
//! What each fault does, in the terms of the real broker behaviour it imitates:
//!
//! - [`fail_publishes`](FaultyBackend::fail_publishes): the broker refuses a message
//!   with a retryable [`Unavailable`](ErrorKind::Unavailable) error; the message is not
//!   sent and the [`Publisher`] hands it back.
//! - [`fail_receives`](FaultyBackend::fail_receives): a receive call fails with
//!   `Unavailable`.
//! - [`fail_acks`](FaultyBackend::fail_acks): an ack fails with `Unavailable` and the
//!   delivery is handed back unsettled.
//! - [`drop_acks`](FaultyBackend::drop_acks): an ack reports success but never reaches
//!   the broker, so the message returns when its lease ends (on a backend without
//!   lease expiry, when its subscriber closes).
//! - [`duplicate_deliveries`](FaultyBackend::duplicate_deliveries): a delivery is
//!   handed out twice. The first settlement of either copy reaches the broker; the
//!   other copy's settlement then succeeds without effect, as settling a stale copy
//!   does on brokers that deduplicate acks.
//! - [`delay_deliveries`](FaultyBackend::delay_deliveries): a received delivery is held
//!   back for a while before it is handed out. Its lease runs meanwhile, so keep the
//!   delay below the lease unless a lease expiry is what you want to test.
//!
//! Deliveries held back or queued as duplicates when a subscriber is closed are released
//! to the broker by [`Subscriber::close`](wharf_core::Subscriber::close).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::debug;
use wharf_core::{
    AckId, Backend, Capabilities, DeadLetter, Error, ErrorKind, Expectations, Figure, Finding,
    Message, Publisher, RawDelivery, Received, Result, Subscriber, SubscriptionDriver,
    SubscriptionSpec, SubscriptionStats, TopicDriver,
};

/// When a fault strikes.
///
/// A plain number converts into [`Times::first`], so `fail_publishes(3)` fails the
/// first three publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Times {
    /// Never (the default for every fault).
    Never,
    /// The first `n` opportunities, then never again.
    First(u32),
    /// Each opportunity independently with this probability, from 0.0 to 1.0.
    Ratio(f64),
    /// Every opportunity.
    Always,
}

impl Times {
    /// The first `n` opportunities.
    pub fn first(n: u32) -> Self {
        Times::First(n)
    }

    /// Each opportunity with probability `p`; values outside 0.0..=1.0 are clamped, and
    /// NaN means never.
    pub fn ratio(p: f64) -> Self {
        if p.is_nan() {
            return Times::Never;
        }
        Times::Ratio(p.clamp(0.0, 1.0))
    }

    /// Every opportunity.
    pub fn always() -> Self {
        Times::Always
    }
}

impl From<u32> for Times {
    fn from(n: u32) -> Self {
        Times::First(n)
    }
}

/// One fault's schedule and how often it struck.
#[derive(Debug)]
struct Fault {
    times: Times,
    remaining: AtomicU32,
    struck: AtomicU64,
}

impl Fault {
    fn new(times: Times) -> Self {
        let remaining = match times {
            Times::First(n) => n,
            _ => 0,
        };
        Self {
            times,
            remaining: AtomicU32::new(remaining),
            struck: AtomicU64::new(0),
        }
    }

    /// Whether the fault strikes at this opportunity; counts it if so.
    fn strikes(&self) -> bool {
        let strikes = match self.times {
            Times::Never => false,
            Times::Always => true,
            Times::Ratio(p) => rand::random::<f64>() < p,
            Times::First(_) => self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok(),
        };
        if strikes {
            self.struck.fetch_add(1, Ordering::Relaxed);
        }
        strikes
    }

    fn count(&self) -> u64 {
        self.struck.load(Ordering::Relaxed)
    }
}

impl Clone for Fault {
    fn clone(&self) -> Self {
        Self {
            times: self.times,
            remaining: AtomicU32::new(self.remaining.load(Ordering::SeqCst)),
            struck: AtomicU64::new(self.count()),
        }
    }
}

/// Every fault of one [`FaultyBackend`], shared by its publishers and subscribers.
#[derive(Debug, Clone)]
struct Faults {
    publish: Fault,
    receive: Fault,
    fail_ack: Fault,
    drop_ack: Fault,
    duplicate: Fault,
    delay: Fault,
    delay_by: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            publish: Fault::new(Times::Never),
            receive: Fault::new(Times::Never),
            fail_ack: Fault::new(Times::Never),
            drop_ack: Fault::new(Times::Never),
            duplicate: Fault::new(Times::Never),
            delay: Fault::new(Times::Never),
            delay_by: Duration::ZERO,
        }
    }
}

/// How many faults of each kind a [`FaultyBackend`] injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Messages refused by [`FaultyBackend::fail_publishes`].
    pub publishes_failed: u64,
    /// Receive calls failed by [`FaultyBackend::fail_receives`].
    pub receives_failed: u64,
    /// Acks failed by [`FaultyBackend::fail_acks`].
    pub acks_failed: u64,
    /// Acks lost by [`FaultyBackend::drop_acks`].
    pub acks_dropped: u64,
    /// Deliveries handed out twice by [`FaultyBackend::duplicate_deliveries`].
    pub deliveries_duplicated: u64,
    /// Deliveries held back by [`FaultyBackend::delay_deliveries`].
    pub deliveries_delayed: u64,
}

/// A backend that passes everything to `inner` except the faults it was told to inject.
///
/// Configure it with the methods below before opening publishers and subscribers: those
/// opened earlier keep the faults they were opened with. See the
/// [module documentation](self) for what each fault does.
pub struct FaultyBackend<B> {
    inner: B,
    faults: Arc<Faults>,
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner`, injecting no faults yet.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Refuses messages at publish with a retryable `Unavailable` error.
    #[must_use]
    pub fn fail_publishes(self, times: impl Into<Times>) -> Self {
        self.with(|f| f.publish = Fault::new(times.into()))
    }

    /// Fails receive calls with a retryable `Unavailable` error.
    #[must_use]
    pub fn fail_receives(self, times: impl Into<Times>) -> Self {
        self.with(|f| f.receive = Fault::new(times.into()))
    }

    /// Fails acks with a retryable `Unavailable` error, handing the delivery back.
    #[must_use]
    pub fn fail_acks(self, times: impl Into<Times>) -> Self {
        self.with(|f| f.fail_ack = Fault::new(times.into()))
    }

    /// Reports acks as successful without sending them, so the messages come back.
    #[must_use]
    pub fn drop_acks(self, times: impl Into<Times>) -> Self {
        self.with(|f| f.drop_ack = Fault::new(times.into()))
    }

    /// Hands deliveries out twice.
    #[must_use]
    pub fn duplicate_deliveries(self, times: impl Into<Times>) -> Self {
        self.with(|f| f.duplicate = Fault::new(times.into()))
    }

    /// Holds deliveries back for `delay` before handing them out.
    #[must_use]
    pub fn delay_deliveries(self, delay: Duration, times: impl Into<Times>) -> Self {
        self.with(|f| {
            f.delay = Fault::new(times.into());
            f.delay_by = delay;
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Faults)) -> Self {
        // Publishers and subscribers already opened keep the faults they were opened
        // with; make_mut copies the set for this backend's later ones.
        change(Arc::make_mut(&mut self.faults));
        self
    }

    /// How many faults of each kind struck so far.
    pub fn report(&self) -> FaultReport {
        let f = &self.faults;
        FaultReport {
            publishes_failed: f.publish.count(),
            receives_failed: f.receive.count(),
            acks_failed: f.fail_ack.count(),
            acks_dropped: f.drop_ack.count(),
            deliveries_duplicated: f.duplicate.count(),
            deliveries_delayed: f.delay.count(),
        }
    }
}

impl<B> fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<B: Backend> Backend for FaultyBackend<B> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        self.inner.create_topic(topic).await
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.inner.create_subscription(spec).await
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher> {
        let inner = self.inner.publisher(topic).await?;

        Ok(Publisher::new(FaultyTopic {
            inner: inner.driver().clone(),
            faults: self.faults.clone(),
        }))
    }

    async fn subscriber(&self, subscription: &str) -> Result<Subscriber> {
        let inner = self.inner.subscriber(subscription).await?;

        Ok(Subscriber::new(FaultySubscription {
            inner: inner.driver().clone(),
            faults: self.faults.clone(),
            held: Mutex::default(),
        }))
    }

    async fn dead_letter_subscriber(&self, subscription: &str) -> Result<Subscriber> {
        self.inner.dead_letter_subscriber(subscription).await
    }

    async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        self.inner.delete_subscription(subscription).await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.delete_topic(topic).await
    }

    // The operations pass through untouched: faults are for the application's path.
    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        self.inner.stats(subscription).await
    }

    async fn peek_dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        self.inner.peek_dead_letters(subscription, max).await
    }

    async fn purge_dead_letters(&self, subscription: &str) -> Result<Figure<u64>> {
        self.inner.purge_dead_letters(subscription).await
    }

    async fn redrive_publisher(&self, subscription: &str) -> Result<Publisher> {
        self.inner.redrive_publisher(subscription).await
    }

    async fn doctor(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        self.inner.doctor(expected).await
    }
}

fn injected(what: &str) -> Error {
    Error::new(ErrorKind::Unavailable, format!("injected fault: {what}"))
}

/// Publishes through the inner driver, refusing the messages the fault picks.
struct FaultyTopic {
    inner: Arc<dyn TopicDriver>,
    faults: Arc<Faults>,
}

#[async_trait]
impl TopicDriver for FaultyTopic {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        let refused: Vec<bool> = batch
            .iter()
            .map(|_| self.faults.publish.strikes())
            .collect();
        let passed: Vec<Message> = batch
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| !**refused)
            .map(|(message, _)| message.clone())
            .collect();

        let mut sent = match passed.is_empty() {
            true => Vec::new(),
            false => self.inner.send_batch(&passed).await,
        }
        .into_iter();

        refused
            .into_iter()
            .map(|refused| match refused {
                true => {
                    debug!(destination = %self.topic(), fault = "publish", "injected fault");
                    Err(injected("publish refused"))
                }
                false => sent
                    .next()
                    .unwrap_or_else(|| Err(injected("missing result"))),
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// The ack id this wrapper hands out: the inner id, plus a flag shared by the copies of
/// a duplicated delivery so only the first settlement reaches the broker.
struct FaultyAck {
    inner: AckId,
    settled: Arc<AtomicBool>,
}

/// A delivery waiting in the wrapper until it may be handed out.
struct Held {
    ready_at: Instant,
    delivery: RawDelivery,
}

/// Receives through the inner driver, holding back, duplicating and settling (or not)
/// as the faults decide.
struct FaultySubscription {
    inner: Arc<dyn SubscriptionDriver>,
    faults: Arc<Faults>,
    held: Mutex<VecDeque<Held>>,
}

impl FaultySubscription {
    /// Wraps fresh deliveries and queues them, with their duplicates and delays.
    fn hold(&self, fresh: Vec<RawDelivery>) {
        let now = Instant::now();
        let mut held = self.held.lock().expect("held lock");

        for raw in fresh {
            let delayed = self.faults.delay.strikes();
            let ready_at = if delayed {
                now + self.faults.delay_by
            } else {
                now
            };
            let delivery = wrap(raw);
            let copy = self.faults.duplicate.strikes().then(|| twin(&delivery));
            held.push_back(Held { ready_at, delivery });
            if let Some(delivery) = copy {
                held.push_back(Held { ready_at, delivery });
            }
        }
    }

    /// Takes up to `max` deliveries whose time has come, oldest first.
    fn take_ready(&self, max: usize) -> Vec<RawDelivery> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("held lock");
        let mut ready = Vec::new();
        let mut waiting = VecDeque::with_capacity(held.len());

        while let Some(entry) = held.pop_front() {
            if entry.ready_at <= now && ready.len() < max {
                ready.push(entry.delivery);
            } else {
                waiting.push_back(entry);
            }
        }
        *held = waiting;
        ready
    }

    fn next_ready(&self) -> Option<Instant> {
        let held = self.held.lock().expect("held lock");
        held.iter().map(|entry| entry.ready_at).min()
    }

    fn held_len(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Fetches more from the broker if there is room, else waits for a held delivery.
    async fn fetch_or_wait(&self, max: usize, wait: Duration) -> Result<()> {
        let room = max.saturating_sub(self.held_len());
        if room == 0 {
            tokio::time::sleep(wait).await;
            return Ok(());
        }

        let fresh = self.inner.receive_batch(room, wait).await?;
        self.hold(fresh);
        Ok(())
    }
}

/// Gives `raw` a wrapper ack id with a fresh settled flag.
fn wrap(raw: RawDelivery) -> RawDelivery {
    let ack_id = AckId::new(FaultyAck {
        inner: raw.ack_id.clone(),
        settled: Arc::default(),
    });
    RawDelivery { ack_id, ..raw }
}

/// A second copy of a wrapped delivery, sharing its settled flag.
fn twin(delivery: &RawDelivery) -> RawDelivery {
    RawDelivery {
        id: delivery.id.clone(),
        payload: delivery.payload.clone(),
        attributes: delivery.attributes.clone(),
        ordering_key: delivery.ordering_key.clone(),
        attempt: delivery.attempt,
        published_at: delivery.published_at,
        first_failure: delivery.first_failure,
        ack_id: delivery.ack_id.clone(),
    }
}

/// The wrapper's id, and whether this settlement is the first of its copies. Marks it
/// settled; call [`FaultyAck::unsettle`] if the settlement then fails.
fn claim(id: &AckId) -> Result<(&FaultyAck, bool)> {
    let ack = id.expect::<FaultyAck>()?;
    let first = !ack.settled.swap(true, Ordering::SeqCst);
    Ok((ack, first))
}

impl FaultyAck {
    fn unsettle(&self) {
        self.settled.store(false, Ordering::SeqCst);
    }
}

#[async_trait]
impl SubscriptionDriver for FaultySubscription {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn subscription(&self) -> &str {
        self.inner.subscription()
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        if self.faults.receive.strikes() {
            debug!(source = %self.subscription(), fault = "receive", "injected fault");
            return Err(injected("receive failed"));
        }
        let deadline = Instant::now() + wait;

        loop {
            let ready = self.take_ready(max);
            if !ready.is_empty() {
                return Ok(ready);
            }

            let until = self.next_ready().map_or(deadline, |t| t.min(deadline));
            self.fetch_or_wait(max, until.saturating_duration_since(Instant::now()))
                .await?;

            if Instant::now() >= deadline {
                return Ok(self.take_ready(max));
            }
        }
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        let decided: Vec<Option<Result<()>>> = ids.iter().map(|id| self.ack_fault(id)).collect();
        let forwarded: Vec<AckId> = ids
            .iter()
            .zip(&decided)
            .filter(|(_, decided)| decided.is_none())
            .filter_map(|(id, _)| id.get::<FaultyAck>().map(|ack| ack.inner.clone()))
            .collect();

        let mut sent = match forwarded.is_empty() {
            true => Vec::new(),
            false => self.inner.ack_batch(forwarded).await,
        }
        .into_iter();

        ids.iter()
            .zip(decided)
            .map(|(id, decided)| decided.unwrap_or_else(|| self.after_ack(id, sent.next())))
            .collect()
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        let (ack, first) = claim(&id)?;
        if !first {
            return Ok(());
        }

        let result = self.inner.nack(ack.inner.clone(), delay).await;
        if result.is_err() {
            ack.unsettle();
        }
        result
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        let (ack, first) = claim(&id)?;
        if !first {
            return Ok(());
        }

        let result = self.inner.dead_letter(ack.inner.clone(), letter).await;
        if result.is_err() {
            ack.unsettle();
        }
        result
    }

    async fn extend_lease(&self, id: &AckId, lease: Duration) -> Result<()> {
        let ack = id.expect::<FaultyAck>()?;

        self.inner.extend_lease(&ack.inner, lease).await
    }

    async fn close(&self) -> Result<()> {
        let held: Vec<Held> = self.held.lock().expect("held lock").drain(..).collect();
        for entry in held {
            // Released, not lost: the broker redelivers them to the next consumer.
            if let Ok((ack, true)) = claim(&entry.delivery.ack_id) {
                self.inner
                    .nack(ack.inner.clone(), Duration::ZERO)
                    .await
                    .ok();
            }
        }

        self.inner.close().await
    }
}

impl FaultySubscription {
    /// The ack's outcome if a fault or a twin settles it here, `None` to forward it.
    fn ack_fault(&self, id: &AckId) -> Option<Result<()>> {
        let ack = match id.expect::<FaultyAck>() {
            Ok(ack) => ack,
            Err(error) => return Some(Err(error)),
        };
        // A twin copy settled first: this copy is stale and its ack has no effect.
        if ack.settled.load(Ordering::SeqCst) {
            return Some(Ok(()));
        }
        if self.faults.fail_ack.strikes() {
            debug!(source = %self.subscription(), fault = "fail_ack", "injected fault");
            return Some(Err(injected("ack failed")));
        }
        if ack.settled.swap(true, Ordering::SeqCst) {
            return Some(Ok(()));
        }
        if self.faults.drop_ack.strikes() {
            debug!(source = %self.subscription(), fault = "drop_ack", "injected fault");
            return Some(Ok(()));
        }
        None
    }

    /// The result of a forwarded ack; a failed one may be settled again.
    fn after_ack(&self, id: &AckId, result: Option<Result<()>>) -> Result<()> {
        let result = result.unwrap_or_else(|| Err(injected("missing ack result")));
        if result.is_err()
            && let Some(ack) = id.get::<FaultyAck>()
        {
            ack.unsettle();
        }
        result
    }
}
