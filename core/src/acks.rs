//! [`AckBatcher`]: lets a worker's handlers ack through one task that sends every ack
//! waiting at that moment in one [`Delivery::ack_all`] call.
//!
//! Nothing waits to fill a batch: when acks arrive slower than the broker answers, each
//! goes alone and as soon as it comes. Under load, acks queue up behind the call in
//! flight and leave together with the next one, so an SQS worker sends
//! `DeleteMessageBatch` requests of up to ten instead of one `DeleteMessage` per
//! message, and Pub/Sub one `Acknowledge` call for many.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::delivery::Delivery;
use crate::error::SettleError;

/// Most acks sent in one call: enough for every backend's batch limit several times.
const MOST_PER_CALL: usize = 100;

type Request = (Delivery, oneshot::Sender<Result<(), SettleError>>);

/// The sending side, cloned into every handler task.
#[derive(Clone)]
pub(crate) struct AckBatcher {
    requests: mpsc::Sender<Request>,
}

impl AckBatcher {
    /// Starts the batching task; it ends once every clone of the batcher is dropped
    /// and the acks it holds are sent.
    pub(crate) fn start(capacity: usize) -> (Self, JoinHandle<()>) {
        let (requests, incoming) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(send_batches(incoming));
        (Self { requests }, task)
    }

    /// Acks `delivery` in the next batch and returns its result; `None` if the batching
    /// task ended without answering (it panicked in the backend), in which case the
    /// delivery was dropped unsettled, which releases it for redelivery.
    pub(crate) async fn ack(&self, delivery: Delivery) -> Option<Result<(), SettleError>> {
        let (reply, result) = oneshot::channel();
        if let Err(refused) = self.requests.send((delivery, reply)).await {
            let (delivery, _) = refused.0;
            return Some(delivery.ack().await);
        }
        result.await.ok()
    }
}

async fn send_batches(mut incoming: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MOST_PER_CALL);
    while incoming.recv_many(&mut batch, MOST_PER_CALL).await > 0 {
        let (deliveries, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let results = Delivery::ack_all(deliveries).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A handler task that stopped waiting no longer needs the answer.
            let _ = reply.send(result);
        }
    }
}
