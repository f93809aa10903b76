//! [`OnDemandStream`]: a streaming pull that is open only while someone receives.
//!
//! A streaming pull leases messages to this process as soon as it is open, whether or
//! not anyone takes them from its buffer. A subscriber that stopped receiving (a worker
//! that shut down, a consumer that went quiet) would sit on those messages until their
//! ack deadline ran out, and the service would often hand them straight back to the
//! same idle stream. So the stream opens on the first receive and closes after
//! [`PubSubConfig::idle_release`](crate::PubSubConfig::idle_release) without one,
//! releasing what it buffered (ack deadline 0) for other consumers. The next receive
//! opens a fresh stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::apiv1::subscriber_client::SubscriberClient;
use tokio::time::Instant;
use tracing::debug;
use wharf_core::Result;

use crate::stream::{PullStream, Pulled, StreamSettings};

/// Opens, hands out and idles away the streaming pull of one subscriber.
pub(crate) struct OnDemandStream {
    connections: Arc<ConnectionManager>,
    client: SubscriberClient,
    settings: StreamSettings,
    idle_release: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<Arc<PullStream>>,
    last_receive: Option<Instant>,
    /// Receives under way; the stream is never idled away under one.
    receiving: Arc<AtomicUsize>,
}

/// Counts one receive for as long as it lives.
struct Receiving(Arc<AtomicUsize>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl OnDemandStream {
    pub(crate) fn new(
        connections: Arc<ConnectionManager>,
        client: SubscriberClient,
        settings: StreamSettings,
        idle_release: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            connections,
            client,
            settings,
            idle_release,
            state: Mutex::default(),
        })
    }

    /// Takes up to `max` fresh messages, opening the stream if it is not open; see
    /// [`PullStream::take`].
    pub(crate) async fn take(
        self: &Arc<Self>,
        max: usize,
        wait: Duration,
        margin: Duration,
    ) -> Result<Vec<Pulled>> {
        let (stream, _receiving) = self.open();

        stream.take(max, wait, margin).await
    }

    /// Stops the stream if it is open and returns what it buffered, for the caller to
    /// release; the next receive opens a new one.
    pub(crate) async fn stop(&self) -> Vec<Pulled> {
        let stream = self.lock().current.take();
        match stream {
            Some(stream) => stream.stop().await,
            None => Vec::new(),
        }
    }

    /// Ack ids still buffered, without waiting, for a release on drop.
    pub(crate) fn drain_now(&self) -> Vec<String> {
        let stream = self.lock().current.take();
        stream.map(|stream| stream.drain_now()).unwrap_or_default()
    }

    /// The open stream (opening one if needed), with this receive counted.
    fn open(self: &Arc<Self>) -> (Arc<PullStream>, Receiving) {
        let mut state = self.lock();
        state.last_receive = Some(Instant::now());
        state.receiving.fetch_add(1, Ordering::SeqCst);
        let receiving = Receiving(state.receiving.clone());

        if let Some(stream) = &state.current {
            return (stream.clone(), receiving);
        }
        let stream = Arc::new(PullStream::start(
            self.connections.clone(),
            self.client.clone(),
            self.settings.clone(),
        ));
        state.current = Some(stream.clone());
        debug!(subscription = %self.settings.subscription_path, "streaming pull opened");
        tokio::spawn(watch_idle(Arc::downgrade(self), Arc::downgrade(&stream)));
        (stream, receiving)
    }

    /// Takes `stream` out if it is still the open one and nobody received from it for
    /// the idle time.
    fn take_if_idle(&self, stream: &Arc<PullStream>) -> Option<Arc<PullStream>> {
        let mut state = self.lock();
        let current = state.current.as_ref()?;
        let idle = state
            .last_receive
            .is_none_or(|at| at.elapsed() >= self.idle_release);
        let quiet = state.receiving.load(Ordering::SeqCst) == 0;

        (Arc::ptr_eq(current, stream) && idle && quiet).then(|| state.current.take())?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn release(&self, left: Vec<Pulled>) {
        let ack_ids: Vec<String> = left.into_iter().map(|p| p.message.ack_id).collect();
        if ack_ids.is_empty() {
            return;
        }
        let released = ack_ids.len();
        let request = gcloud_googleapis::pubsub::v1::ModifyAckDeadlineRequest {
            subscription: self.settings.subscription_path.clone(),
            ack_ids,
            ack_deadline_seconds: 0,
        };
        match self.client.modify_ack_deadline(request, None).await {
            Ok(_) => debug!(subscription = %self.settings.subscription_path, released,
                "idle subscriber handed its buffer back"),
            Err(status) => tracing::warn!(subscription = %self.settings.subscription_path,
                code = ?status.code(), released,
                "could not release an idle subscriber's buffer; it returns when its lease ends"),
        }
    }
}

/// Closes `stream` once its subscriber has been idle long enough, then ends. Ends early
/// if the subscriber or the stream is gone.
async fn watch_idle(owner: Weak<OnDemandStream>, stream: Weak<PullStream>) {
    loop {
        let Some(pause) = owner.upgrade().map(|o| o.idle_release / 2) else {
            return;
        };
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;

        let (Some(owner), Some(watched)) = (owner.upgrade(), stream.upgrade()) else {
            return;
        };
        if let Some(idle) = owner.take_if_idle(&watched) {
            drop(watched);
            let left = idle.stop().await;
            owner.release(left).await;
            debug!(subscription = %owner.settings.subscription_path, "idle streaming pull closed");
            return;
        }
    }
}
