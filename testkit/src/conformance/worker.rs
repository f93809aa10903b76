//! The worker runtime on a real backend: retries and dead-lettering by attempt count,
//! panics and timeouts as failures, bounded concurrency, lease keep-alive and a graceful
//! shutdown that loses nothing.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use wharf_core::{
    Backend, Envelope, Handler, HandlerError, Message, Received, RetryPolicy, Worker,
    WorkerOptions, WorkerReport,
};

use super::support::{
    ARRIVAL, Fixture, LEASE_MARGIN, ack, expect_nothing, numbered, publish, publish_numbered,
    receive_one, text, wait_until,
};

/// Attempts numbers seen by a handler, shared with the test.
type Seen = Arc<Mutex<Vec<u32>>>;

/// Options for a fast test worker: quick retries, short receive waits.
pub(super) fn options(fx: &Fixture<'_>) -> WorkerOptions {
    WorkerOptions {
        concurrency: 4,
        handler_timeout: Duration::from_secs(10),
        retry: retry(5),
        lease: fx.lease(),
        shutdown_grace: Duration::from_secs(5),
        receive_wait: Duration::from_millis(500),
    }
}

/// `attempts` attempts, 100 ms apart, without jitter.
pub(super) fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_millis(100))
        .jitter(0.0)
}

/// Runs `worker` until `until` completes, then shuts it down and returns its report.
pub(super) async fn run_until<H: Handler>(
    worker: Worker,
    handler: H,
    until: impl Future<Output = ()>,
) -> WorkerReport {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = worker.run(handler, async {
        stopped.await.ok();
    });
    let watch = async {
        until.await;
        stop.send(()).ok();
    };

    let (report, ()) = tokio::join!(run, watch);
    report.unwrap_or_else(|e| panic!("worker stopped with an error: {e}"))
}

fn seen(list: &Seen) -> Vec<u32> {
    list.lock().expect("seen lock").clone()
}

fn record(list: &Seen, received: &Received) {
    list.lock().expect("seen lock").push(received.attempt());
}

/// A handler that succeeds has each message acked once and never redelivered.
pub async fn worker_acks_what_its_handler_accepts(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "worker-ack");
    fx.run(async {
        let queue = fx.queue().await;
        publish_numbered(&queue.publisher, 10).await;
        let handled = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker::new(queue.subscriber.clone()).options(options(&fx));
        let stats = worker.stats();

        let log = handled.clone();
        let handler = move |r: Received| {
            log.lock().expect("lock").push(text(r.payload()));
            async { Ok(()) }
        };
        let done = wait_until(ARRIVAL, "10 acks", || stats.snapshot().acked == 10);
        let report = run_until(worker, handler, done).await;

        let handled = handled.lock().expect("lock").clone();
        assert_eq!(
            handled.iter().cloned().collect::<BTreeSet<_>>(),
            numbered(10)
        );
        assert_eq!(handled.len(), 10, "each message handled once");
        assert_eq!(
            (report.acked, report.retried, report.dead_lettered),
            (10, 0, 0)
        );
        let quiet = fx.lease() + LEASE_MARGIN;
        expect_nothing(&queue.subscriber, quiet, "the worker acked everything").await;
    })
    .await;
}

/// With a retry policy of N attempts, a handler that always fails sees attempts 1 to N,
/// and the message is then dead-lettered saying N attempts.
pub async fn worker_dead_letters_after_exactly_max_attempts(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "worker-retry");
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("flaky")).await;
        let attempts: Seen = Arc::default();
        let dead_letters = fx.dead_letters(&queue.spec.name).await;
        let mut opts = options(&fx);
        opts.retry = retry(3);

        let log = attempts.clone();
        let handler = move |r: Received| {
            record(&log, &r);
            async { Err(HandlerError::transient("payment service unavailable")) }
        };
        let envelope = std::cell::RefCell::new(None);
        let until = async {
            let dead = receive_one(&dead_letters, ARRIVAL * 2).await;
            *envelope.borrow_mut() = Envelope::from_attributes(dead.attributes());
            ack(dead).await;
        };
        let worker = Worker::new(queue.subscriber.clone()).options(opts);
        let report = run_until(worker, handler, until).await;

        let envelope = envelope
            .into_inner()
            .expect("the dead letter carries an envelope");
        assert_eq!(
            seen(&attempts),
            vec![1, 2, 3],
            "the handler saw attempts 1 to 3"
        );
        assert_eq!(envelope.attempts, 3);
        assert!(
            envelope.reason.contains("payment service unavailable"),
            "{}",
            envelope.reason
        );
        assert_eq!((report.retried, report.dead_lettered), (2, 1));
    })
    .await;
}

/// A handler's permanent failure dead-letters the message on its first attempt.
pub async fn permanent_failure_dead_letters_at_once(backend: &dyn Backend) {
    dead_letters_at_once(backend, "worker-permanent", Message::new("{}"), |_r| {
        Err(HandlerError::permanent("order for an unknown product"))
    })
    .await;
}

/// A payload the handler cannot decode as JSON is dead-lettered on its first attempt.
pub async fn undecodable_json_dead_letters_at_once(backend: &dyn Backend) {
    dead_letters_at_once(
        backend,
        "worker-undecodable",
        Message::new("{not json"),
        |r| {
            let _order: serde_json::Value = r.json()?;
            Ok(())
        },
    )
    .await;
}

async fn dead_letters_at_once(
    backend: &dyn Backend,
    case: &str,
    message: Message,
    outcome: fn(&Received) -> Result<(), HandlerError>,
) {
    let fx = Fixture::new(backend, case);
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, message).await;
        let attempts: Seen = Arc::default();
        let dead_letters = fx.dead_letters(&queue.spec.name).await;

        let log = attempts.clone();
        let handler = move |r: Received| {
            record(&log, &r);
            let result = outcome(&r);
            async move { result }
        };
        let envelope = std::cell::RefCell::new(None);
        let until = async {
            let dead = receive_one(&dead_letters, ARRIVAL).await;
            *envelope.borrow_mut() = Envelope::from_attributes(dead.attributes());
            ack(dead).await;
        };
        let worker = Worker::new(queue.subscriber.clone()).options(options(&fx));
        let report = run_until(worker, handler, until).await;

        let envelope = envelope
            .into_inner()
            .expect("the dead letter carries an envelope");
        assert_eq!(seen(&attempts), vec![1], "no retry of a permanent failure");
        assert_eq!(envelope.attempts, 1);
        assert_eq!((report.retried, report.dead_lettered), (0, 1));
    })
    .await;
}

/// A handler that panics counts as a failure: the message is retried, not lost, and the
/// worker keeps running.
pub async fn handler_panic_is_retried(backend: &dyn Backend) {
    retried_after(
        backend,
        "worker-panic",
        Duration::from_secs(10),
        |attempt| async move {
            if attempt == 1 {
                panic!("deliberate handler panic on attempt 1 (expected by this test)");
            }
        },
    )
    .await;
}

/// A handler that runs past its timeout counts as a failure and is retried.
pub async fn handler_timeout_is_retried(backend: &dyn Backend) {
    retried_after(
        backend,
        "worker-timeout",
        Duration::from_millis(500),
        |attempt| async move {
            if attempt == 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        },
    )
    .await;
}

async fn retried_after<F, Fut>(backend: &dyn Backend, case: &str, timeout: Duration, body: F)
where
    F: Fn(u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let fx = Fixture::new(backend, case);
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("fragile")).await;
        let attempts: Seen = Arc::default();
        let worker = Worker::new(queue.subscriber.clone())
            .options(options(&fx))
            .handler_timeout(timeout);
        let stats = worker.stats();

        let log = attempts.clone();
        let body = Arc::new(body);
        let handler = move |r: Received| {
            record(&log, &r);
            let body = body.clone();
            async move {
                body(r.attempt()).await;
                Ok(())
            }
        };
        let done = wait_until(ARRIVAL, "the retry to succeed", || {
            stats.snapshot().acked == 1
        });
        let report = run_until(worker, handler, done).await;

        assert_eq!(seen(&attempts), vec![1, 2], "failed once, then succeeded");
        assert_eq!(
            (report.retried, report.acked, report.dead_lettered),
            (1, 1, 0)
        );
    })
    .await;
}

/// However many messages wait, no more handlers run at once than the concurrency.
pub async fn worker_never_exceeds_its_concurrency(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "worker-concurrency");
    fx.run(async {
        let queue = fx.queue().await;
        publish_numbered(&queue.publisher, 12).await;
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let worker = Worker::new(queue.subscriber.clone())
            .options(options(&fx))
            .concurrency(3);
        let stats = worker.stats();

        let (now, peak) = (active.clone(), most.clone());
        let handler = move |_r: Received| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let done = wait_until(ARRIVAL, "12 acks", || stats.snapshot().acked == 12);
        run_until(worker, handler, done).await;

        let peak = most.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&peak),
            "{peak} handlers ran at once with concurrency 3"
        );
    })
    .await;
}

/// While a handler runs longer than the lease, the worker keeps extending it: no other
/// consumer gets the message, and it is handled once.
pub async fn worker_keeps_the_lease_while_a_handler_runs(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "worker-keepalive");
    if !fx.has(fx.caps().lease_extension(), "lease extension") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let lease = queue.spec.lease;
        publish(&queue.publisher, Message::new("long job")).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let worker = Worker::new(queue.subscriber.clone())
            .options(options(&fx))
            .handler_timeout(lease * 4);
        let stats = worker.stats();

        let count = calls.clone();
        let handler = move |_r: Received| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(lease * 3 / 2).await;
                Ok(())
            }
        };
        let watch = async {
            // The other consumer opens once the worker holds the message: before that it
            // may fairly win it, and a streaming backend would lease it to its buffer.
            wait_until(ARRIVAL, "the handler to start", || {
                calls.load(Ordering::SeqCst) > 0
            })
            .await;
            let other = fx.subscriber(&queue.spec.name).await;
            expect_nothing(&other, lease * 3 / 2, "the worker holds its lease").await;
            wait_until(ARRIVAL, "the ack", || stats.snapshot().acked == 1).await;
        };
        let report = run_until(worker, handler, watch).await;

        assert_eq!(calls.load(Ordering::SeqCst), 1, "handled once");
        assert_eq!((report.acked, report.settle_failures), (1, 0));
    })
    .await;
}

/// Shutting a worker down mid-stream loses nothing: in-flight handlers finish within
/// the grace period or their deliveries are released, and a second worker then handles
/// every message that was not done.
pub async fn graceful_shutdown_loses_nothing(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "worker-shutdown");
    fx.run(async {
        let queue = fx.queue().await;
        publish_numbered(&queue.publisher, 20).await;
        let done: Arc<Mutex<BTreeSet<String>>> = Arc::default();

        let first = Worker::new(queue.subscriber.clone())
            .options(options(&fx))
            .shutdown_grace(Duration::from_secs(1));
        let handler = shutdown_handler(done.clone(), true);
        let some_done = wait_until(ARRIVAL, "4 messages handled", || {
            done.lock().expect("lock").len() >= 4
        });
        let report = run_until(first, handler, some_done).await;
        let settled = report.acked + report.released + report.retried + report.settle_failures;
        assert_eq!(report.dead_lettered, 0, "nothing failed: {report:?}");
        assert_eq!(
            settled, report.received,
            "every delivery accounted for: {report:?}"
        );

        let second = Worker::new(fx.subscriber(&queue.spec.name).await).options(options(&fx));
        let all_done = wait_until(ARRIVAL * 2, "all 20 messages handled", || {
            done.lock().expect("lock").len() == 20
        });
        run_until(second, shutdown_handler(done.clone(), false), all_done).await;

        assert_eq!(*done.lock().expect("lock"), numbered(20));
    })
    .await;
}

/// Records each message it finished. With `slow`, every fifth message takes longer than
/// the shutdown grace, so shutdown has something to release.
fn shutdown_handler(done: Arc<Mutex<BTreeSet<String>>>, slow: bool) -> impl Handler {
    move |r: Received| {
        let done = done.clone();
        async move {
            let n: usize = text(r.payload()).parse().unwrap_or(0);
            let pause = match (slow, n % 5) {
                (true, 0) => Duration::from_secs(30),
                (true, _) => Duration::from_millis(300),
                (false, _) => Duration::ZERO,
            };
            tokio::time::sleep(pause).await;
            done.lock().expect("lock").insert(text(r.payload()));
            Ok(())
        }
    }
}
