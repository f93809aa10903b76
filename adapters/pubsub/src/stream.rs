//! One long-lived streaming pull per subscriber, feeding a bounded buffer.
//!
//! A background task holds the stream open, reconnecting with backoff after transient
//! failures, and pushes each message into a channel as large as the flow-control
//! window. When the buffer is full the task stops reading, the stream's own flow control
//! stops the service, and nothing more is leased than the subscriber can hold. A
//! failure that reconnecting cannot cure (the subscription was deleted, permission was
//! revoked) is kept and returned by the next receive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gcloud_gax::grpc::{Code, Status};
use gcloud_googleapis::pubsub::v1::{ReceivedMessage, StreamingPullRequest};
use gcloud_pubsub::apiv1::subscriber_client::SubscriberClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, error, trace};
use wharf_core::{Error, Result};

use crate::error::{Operation, from_status};

/// How often an idle stream sends a keep-alive; Google's clients use 30 s, and the
/// service closes streams that stay silent much longer.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// First wait before reopening a stream after a transient failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between attempts to reopen a stream.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A message in the buffer, with the moment its lease ends.
pub(crate) struct Pulled {
    pub(crate) message: ReceivedMessage,
    pub(crate) lease_ends: Instant,
}

/// How the stream is opened.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    pub(crate) subscription_path: String,
    pub(crate) lease: Duration,
    pub(crate) max_outstanding_messages: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) client_id: String,
}

/// The receiving end of one streaming pull.
pub(crate) struct PullStream {
    buffer: tokio::sync::Mutex<mpsc::Receiver<Pulled>>,
    failure: Arc<Mutex<Option<Error>>>,
    task: JoinHandle<()>,
}

impl PullStream {
    /// Opens the stream in a background task.
    pub(crate) fn start(client: SubscriberClient, settings: StreamSettings) -> Self {
        let (sender, receiver) = mpsc::channel(settings.max_outstanding_messages.max(1));
        let failure = Arc::new(Mutex::new(None));

        let task = tokio::spawn(run(client, settings, sender, failure.clone()));
        Self {
            buffer: tokio::sync::Mutex::new(receiver),
            failure,
            task,
        }
    }

    /// Takes up to `max` messages whose lease still has more than `margin` to run,
    /// waiting at most `wait` for the first. Messages whose lease is (nearly) over are
    /// skipped: the service is about to deliver them again.
    pub(crate) async fn take(
        &self,
        max: usize,
        wait: Duration,
        margin: Duration,
    ) -> Result<Vec<Pulled>> {
        let deadline = Instant::now() + wait;
        let Ok(mut buffer) = timeout_at(deadline, self.buffer.lock()).await else {
            return Ok(Vec::new());
        };

        let mut taken = Vec::new();
        while taken.is_empty() {
            let first = match timeout_at(deadline, buffer.recv()).await {
                Err(_elapsed) => return Ok(taken),
                Ok(None) => return Err(self.failure()),
                Ok(Some(pulled)) => pulled,
            };
            keep_fresh(&mut taken, first, margin);

            while taken.len() < max {
                let Ok(pulled) = buffer.try_recv() else { break };
                keep_fresh(&mut taken, pulled, margin);
            }
        }
        Ok(taken)
    }

    /// Stops the stream and returns what was buffered and never handed out.
    pub(crate) async fn stop(&self) -> Vec<Pulled> {
        self.task.abort();

        let mut buffer = self.buffer.lock().await;
        buffer.close();
        let mut left = Vec::new();
        while let Ok(pulled) = buffer.try_recv() {
            left.push(pulled);
        }
        left
    }

    /// Ack ids still buffered, without waiting, for a release on drop.
    pub(crate) fn drain_now(&self) -> Vec<String> {
        let Ok(mut buffer) = self.buffer.try_lock() else {
            return Vec::new();
        };
        buffer.close();
        std::iter::from_fn(|| buffer.try_recv().ok())
            .map(|pulled| pulled.message.ack_id)
            .collect()
    }

    fn failure(&self) -> Error {
        let kept = self.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        kept.unwrap_or_else(|| Error::closed("the subscriber"))
    }
}

impl Drop for PullStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keep_fresh(taken: &mut Vec<Pulled>, pulled: Pulled, margin: Duration) {
    if pulled.lease_ends > Instant::now() + margin {
        taken.push(pulled);
    } else {
        trace!(
            message_id = %pulled.message.message.as_ref().map_or("", |m| &m.message_id),
            "skipping a buffered message whose lease ended; the service redelivers it"
        );
    }
}

/// Keeps a stream open until the buffer is closed or a permanent failure.
async fn run(
    client: SubscriberClient,
    settings: StreamSettings,
    sender: mpsc::Sender<Pulled>,
    failure: Arc<Mutex<Option<Error>>>,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let outcome = pull(&client, &settings, &sender, &mut backoff).await;
        if sender.is_closed() {
            return;
        }

        match outcome {
            Ok(()) => debug!(subscription = %settings.subscription_path, "stream ended; reopening"),
            Err(status) if is_transient(status.code()) => {
                debug!(subscription = %settings.subscription_path, code = ?status.code(),
                    backoff_ms = backoff.as_millis() as u64, "stream failed; reopening");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(status) => {
                let what = format!("streaming pull from {}", settings.subscription_path);
                let stopped = from_status(status, Operation::Receive, &what);
                error!(subscription = %settings.subscription_path,
                    error.kind = %stopped.kind(), error = %stopped, "stream stopped");
                *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopped);
                return;
            }
        }
    }
}

/// Reads one stream until it ends, resetting `backoff` once it delivers.
async fn pull(
    client: &SubscriberClient,
    settings: &StreamSettings,
    sender: &mpsc::Sender<Pulled>,
    backoff: &mut Duration,
) -> Result<(), Status> {
    let mut stream = client
        .streaming_pull(request(settings), PING_INTERVAL, None)
        .await?
        .into_inner();
    debug!(subscription = %settings.subscription_path, "stream open");

    while let Some(response) = stream.message().await? {
        *backoff = INITIAL_BACKOFF;
        // The lease runs from when the service sent the message; taking it from the
        // moment it arrived errs late by one network hop, which the receive margin covers.
        let lease_ends = Instant::now() + settings.lease;
        for message in response.received_messages {
            if sender.send(Pulled { message, lease_ends }).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn request(settings: &StreamSettings) -> StreamingPullRequest {
    StreamingPullRequest {
        subscription: settings.subscription_path.clone(),
        stream_ack_deadline_seconds: whole_seconds(settings.lease),
        max_outstanding_messages: settings.max_outstanding_messages as i64,
        max_outstanding_bytes: settings.max_outstanding_bytes as i64,
        client_id: settings.client_id.clone(),
        ..StreamingPullRequest::default()
    }
}

/// Seconds for an ack-deadline field, rounded up so that a deadline is never shorter
/// than asked.
pub(crate) fn whole_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// Codes after which Google's clients reopen a streaming pull.
fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(2_500)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn a_deleted_subscription_is_not_retried() {
        assert!(!is_transient(Code::NotFound));
        assert!(!is_transient(Code::PermissionDenied));
        assert!(is_transient(Code::Unavailable));
    }
}
