//! Progress of a demo run on stderr: two bars (accepted, settled) on a terminal, one
//! plain line a second elsewhere (CI logs, pipes), or nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::orders::OrderStore;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Progress bars.
    Bars,
    /// One line a second.
    Lines,
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// `Auto` made definite: bars only on an interactive terminal outside CI.
    pub fn resolve(self) -> Self {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() && !in_ci() => Self::Bars,
            ProgressMode::Auto => Self::Lines,
            other => other,
        }
    }
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Orders sent so far, counted by the load generator.
#[derive(Debug, Default)]
pub struct Sent {
    /// Answered `202 Accepted`.
    pub accepted: AtomicU64,
    /// Answered anything else, or not at all.
    pub refused: AtomicU64,
}

impl Sent {
    fn read(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// A running progress display; [`Reporter::finish`] stops it.
pub struct Reporter {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing progress of `total` orders: `sent` as the generator counts them,
    /// settled ones as the store has them (orders from `first` on).
    pub fn start(
        mode: ProgressMode,
        total: u64,
        sent: Arc<Sent>,
        orders: OrderStore,
        first: Uuid,
    ) -> Self {
        let stop = CancellationToken::new();
        let watch = Watch {
            total,
            sent,
            orders,
            first,
        };
        let task = match mode.resolve() {
            ProgressMode::Bars => Some(tokio::spawn(watch.bars(stop.clone()))),
            ProgressMode::Lines => Some(tokio::spawn(watch.lines(stop.clone()))),
            ProgressMode::Auto | ProgressMode::Quiet => None,
        };
        Self { stop, task }
    }

    /// Stops the display after one last update.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // A display that failed must not fail the run it was showing.
            let _ = task.await;
        }
    }
}

struct Watch {
    total: u64,
    sent: Arc<Sent>,
    orders: OrderStore,
    first: Uuid,
}

impl Watch {
    async fn settled(&self) -> u64 {
        self.orders
            .counts_since(self.first)
            .await
            .map(|c| c.settled())
            .unwrap_or(0)
    }

    async fn bars(self, stop: CancellationToken) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let accepted = multi.add(self.bar("accepted"));
        let settled = multi.add(self.bar("settled"));

        loop {
            let done = stop.is_cancelled();
            accepted.set_position(self.sent.read().0);
            settled.set_position(self.settled().await);
            if done {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        accepted.finish();
        settled.finish();
    }

    fn bar(&self, label: &'static str) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:>9} [{bar:40.cyan/blue}] {pos:>7}/{len:7} {per_sec:>12} {elapsed:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");

        ProgressBar::new(self.total)
            .with_style(style)
            .with_prefix(label)
    }

    async fn lines(self, stop: CancellationToken) {
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let (accepted, refused) = self.sent.read();
            let settled = self.settled().await;
            eprintln!(
                "[{:>5.1}s] accepted {accepted}/{total}, refused {refused}, settled {settled}",
                started.elapsed().as_secs_f64(),
                total = self.total,
            );
        }
    }
}
