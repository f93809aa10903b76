//! One long-lived streaming pull per subscriber, feeding a bounded buffer.
//!
//! A background task holds the stream open, reconnecting with backoff after transient
//! failures, and pushes each message into a channel as large as the flow-control
//! window. When the buffer is full the task stops reading, the stream's own flow control
//! stops the service, and nothing more is leased than the subscriber can hold. A
//! failure that reconnecting cannot cure (the subscription was deleted, permission was
//! revoked) is kept and returned by the next receive.
//!
//! Closing the buffer (or dropping it) stops the stream gracefully: the task ends the
//! request side, reads what the service had already sent until it ends the stream (at
//! most [`CLOSE_GRACE`]), and releases those messages with a zero ack deadline. Merely
//! cancelling the call would lose them until their lease ends; and Google's emulator
//! does not notice a cancelled stream (its gRPC server fails on the reset), so it would
//! keep handing messages to a stream nobody reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gcloud_gax::grpc::codec::Streaming;
use gcloud_gax::grpc::{Code, Request, Status};
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as GrpcSubscriberClient;
use gcloud_googleapis::pubsub::v1::{
    ModifyAckDeadlineRequest, ReceivedMessage, StreamingPullRequest, StreamingPullResponse,
};
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::apiv1::subscriber_client::SubscriberClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, error, trace, warn};
use wharf_core::{Error, Result};

use crate::error::{Operation, from_status};

/// How often an idle stream sends a keep-alive; Google's clients use 30 s, and the
/// service closes streams that stay silent much longer.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long a closing stream waits for the service to end it after the request side
/// ended, releasing what still arrives.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Largest response the stream accepts: one message of Pub/Sub's 10 MB limit, as the
/// community client allows for its own calls.
const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// The gRPC header by which the service routes a call to the subscription's region.
const ROUTING_HEADER: &str = "x-goog-request-params";

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

/// What the background task works with.
struct Task {
    connections: Arc<ConnectionManager>,
    /// Releases the messages that arrive while the stream closes.
    client: SubscriberClient,
    settings: StreamSettings,
    sender: mpsc::Sender<Pulled>,
    failure: Arc<Mutex<Option<Error>>>,
}

/// The receiving end of one streaming pull.
pub(crate) struct PullStream {
    buffer: tokio::sync::Mutex<mpsc::Receiver<Pulled>>,
    failure: Arc<Mutex<Option<Error>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PullStream {
    /// Opens the stream in a background task; `client` releases what arrives while the
    /// stream closes.
    pub(crate) fn start(
        connections: Arc<ConnectionManager>,
        client: SubscriberClient,
        settings: StreamSettings,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(settings.max_outstanding_messages.max(1));
        let failure = Arc::new(Mutex::new(None));
        let task = Task {
            connections,
            client,
            settings,
            sender,
            failure: failure.clone(),
        };

        Self {
            buffer: tokio::sync::Mutex::new(receiver),
            failure,
            task: Mutex::new(Some(tokio::spawn(task.run()))),
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

    /// Stops the stream, waits for it to close, and returns what was buffered and never
    /// handed out. What arrived during the close is already released.
    pub(crate) async fn stop(&self) -> Vec<Pulled> {
        let mut buffer = self.buffer.lock().await;
        buffer.close();
        let mut left = Vec::new();
        while let Ok(pulled) = buffer.try_recv() {
            left.push(pulled);
        }

        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && timeout(CLOSE_GRACE * 2, &mut task).await.is_err()
        {
            task.abort();
        }
        // Whatever the task forwarded before it saw the buffer close.
        while let Ok(pulled) = buffer.try_recv() {
            left.push(pulled);
        }
        left
    }

    /// Ack ids still buffered, without waiting, for a release on drop. Closing the
    /// buffer also lets the task close the stream by itself.
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
        let kept = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        kept.unwrap_or_else(|| Error::closed("the subscriber"))
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

impl Task {
    /// Keeps a stream open until the buffer is closed or a permanent failure.
    async fn run(self) {
        let path = &self.settings.subscription_path;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let mut late = Vec::new();
            let outcome = self.pull(&mut backoff, &mut late).await;
            self.release(late).await;
            if self.sender.is_closed() {
                debug!(subscription = %path, "stream closed");
                return;
            }

            match outcome {
                Ok(()) => debug!(subscription = %path, "stream ended; reopening"),
                Err(status) if is_transient(status.code()) => {
                    debug!(subscription = %path, code = ?status.code(),
                        backoff_ms = backoff.as_millis() as u64, "stream failed; reopening");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.sender.closed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(status) => {
                    let stopped = from_status(
                        status,
                        Operation::Receive,
                        &format!("streaming pull from {path}"),
                    );
                    error!(subscription = %path, error.kind = %stopped.kind(),
                        error = %stopped, "stream stopped");
                    *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopped);
                    return;
                }
            }
        }
    }

    /// Reads one stream until it ends, resetting `backoff` once it delivers. Once the
    /// buffer closes, ends the request side and collects the ack ids of what still
    /// arrives in `late`, until the service ends the stream or [`CLOSE_GRACE`] passes.
    ///
    /// The request side is a channel fed from here with keep-alives, so that it ends
    /// when asked (or when this future is dropped) rather than pinging on by itself.
    async fn pull(&self, backoff: &mut Duration, late: &mut Vec<String>) -> Result<(), Status> {
        let (requests, outgoing) = mpsc::channel(1);
        // The first request opens the stream; the channel has room for it.
        let _ = requests.try_send(request(&self.settings));
        let mut requests = Some(requests);
        let outgoing = futures::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|request| (request, outgoing))
        });
        let mut stream = tokio::select! {
            opened = self.open(outgoing) => opened?,
            () = self.sender.closed() => return Ok(()),
        };
        debug!(subscription = %self.settings.subscription_path, "stream open");

        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut give_up = Instant::now();
        loop {
            let response = tokio::select! {
                response = stream.message() => response?,
                _ = ping.tick(), if requests.is_some() => {
                    // An empty request keeps the stream from being closed as idle; a full
                    // request channel means the stream is busy, so a skipped ping is fine.
                    if let Some(requests) = &requests
                        && requests.try_send(StreamingPullRequest::default()).is_err()
                    {
                        trace!("ping skipped: requests are queued");
                    }
                    continue;
                }
                () = self.sender.closed(), if requests.is_some() => {
                    requests = None;
                    give_up = Instant::now() + CLOSE_GRACE;
                    continue;
                }
                () = sleep_until(give_up), if requests.is_none() => return Ok(()),
            };
            let Some(response) = response else {
                return Ok(());
            };

            *backoff = INITIAL_BACKOFF;
            self.forward(response, late).await;
        }
    }

    /// Hands the messages of one response to the buffer, or to `late` once it closed.
    async fn forward(&self, response: StreamingPullResponse, late: &mut Vec<String>) {
        // The lease runs from when the service sent the message; taking it from the
        // moment it arrived errs late by one network hop, which the receive margin covers.
        let lease_ends = Instant::now() + self.settings.lease;
        for message in response.received_messages {
            let pulled = Pulled {
                message,
                lease_ends,
            };
            if let Err(refused) = self.sender.send(pulled).await {
                late.push(refused.0.message.ack_id);
            }
        }
    }

    /// Opens the streaming pull with `outgoing` as its request side.
    async fn open(
        &self,
        outgoing: impl futures::Stream<Item = StreamingPullRequest> + Send + 'static,
    ) -> Result<Streaming<StreamingPullResponse>, Status> {
        let mut client = GrpcSubscriberClient::new(self.connections.conn())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let mut call = Request::new(outgoing);
        // The service routes the stream by this header, as Google's clients send it.
        let routing = format!("subscription={}", self.settings.subscription_path);
        if let Ok(value) = routing.parse() {
            call.metadata_mut().insert(ROUTING_HEADER, value);
        }

        Ok(client.streaming_pull(call).await?.into_inner())
    }

    /// Returns messages that arrived while the stream closed to the service at once.
    async fn release(&self, ack_ids: Vec<String>) {
        if ack_ids.is_empty() {
            return;
        }
        let count = ack_ids.len();
        let request = ModifyAckDeadlineRequest {
            subscription: self.settings.subscription_path.clone(),
            ack_ids,
            ack_deadline_seconds: 0,
        };

        match self.client.modify_ack_deadline(request, None).await {
            Ok(_) => debug!(subscription = %self.settings.subscription_path, released = count,
                "released messages that arrived while closing"),
            Err(status) => warn!(subscription = %self.settings.subscription_path,
                code = ?status.code(), released = count,
                "could not release messages that arrived while closing; they return when \
                 their lease ends"),
        }
    }
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
