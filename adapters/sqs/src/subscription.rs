//! [`SqsSubscription`]: receives from one queue and settles with receipt handles.
//!
//! A delivery's lease is the queue's visibility timeout, asked for explicitly on every
//! `ReceiveMessage` so wharf knows when it ends. SQS itself does not reliably refuse a
//! stale receipt handle (AWS deletes with an outdated handle "successfully" without
//! deleting; LocalStack accepts it), so each [`Receipt`] remembers when its lease runs
//! out and settling after that is [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired)
//! without a call. The deadline is measured from before the receive request left, so it
//! never lies past the one SQS keeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use tokio::sync::OnceCell;
use tracing::{debug, error as log_error, trace};
use wharf_core::{
    AckId, Capabilities, DeadLetter, Error, ErrorKind, RawDelivery, Result, SubscriptionDriver,
    TopicDriver,
};

use crate::error;
use crate::limits::{self, MAX_BATCH_ENTRIES, MAX_RECEIVE, MAX_WAIT};
use crate::queue::{Queues, is_fifo};
use crate::topic::{SqsTopic, UNORDERED_GROUP, whole_seconds};
use crate::wire;

/// What wharf keeps to settle one received message.
struct Receipt {
    message_id: String,
    handle: String,
    /// When the lease runs out, as far as wharf can tell.
    deadline: Mutex<Instant>,
}

impl Receipt {
    fn check_lease(&self) -> Result<()> {
        let deadline = *self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        if Instant::now() >= deadline {
            return Err(Error::lease_expired(&self.message_id));
        }
        Ok(())
    }

    fn renew(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = deadline;
    }
}

/// Receives from one SQS queue and settles its deliveries.
pub struct SqsSubscription {
    client: Client,
    queues: Queues,
    queue: String,
    url: Arc<str>,
    lease: Duration,
    dead_letter: String,
    dead_letter_topic: OnceCell<SqsTopic>,
    capabilities: Capabilities,
    closed: AtomicBool,
}

impl SqsSubscription {
    pub(crate) fn new(
        queues: Queues,
        queue: &str,
        url: Arc<str>,
        lease: Duration,
        dead_letter: String,
    ) -> Self {
        Self {
            client: queues.client().clone(),
            queues,
            queue: queue.to_owned(),
            url,
            lease,
            dead_letter,
            dead_letter_topic: OnceCell::new(),
            capabilities: limits::for_queue(queue),
            closed: AtomicBool::new(false),
        }
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> &str {
        &self.dead_letter
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("subscriber"));
        }
        Ok(())
    }

    /// One `ReceiveMessage` call waiting up to `wait` (whole seconds, at most 20).
    async fn receive_once(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        let started = Instant::now();
        let output = self
            .client
            .receive_message()
            .queue_url(&*self.url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE) as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT.as_secs()) as i32)
            .visibility_timeout(whole_seconds(self.lease))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("receiving from `{}`", self.queue)))?;

        let deadline = started + self.lease;
        Ok(output
            .messages()
            .iter()
            .filter_map(|message| self.delivery(message, deadline))
            .collect())
    }

    fn delivery(
        &self,
        message: &aws_sdk_sqs::types::Message,
        deadline: Instant,
    ) -> Option<RawDelivery> {
        let message_id = message.message_id().unwrap_or_default().to_owned();
        let Some(handle) = message.receipt_handle() else {
            // Cannot happen with a conforming server; the message returns after its
            // visibility timeout, so it is not lost, but it must not pass unnoticed.
            log_error!(
                queue = %self.queue,
                delivery = %message_id,
                "SQS returned a message without a receipt handle"
            );
            return None;
        };

        let system = |name: MessageSystemAttributeName| {
            message
                .attributes()
                .and_then(|a| a.get(&name))
                .map(String::as_str)
        };
        let attempt = system(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let published_at = system(MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse().ok())
            .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
        let ordering_key = system(MessageSystemAttributeName::MessageGroupId)
            .filter(|group| !group.starts_with(UNORDERED_GROUP))
            .map(str::to_owned);
        let incoming = wire::decode(message);

        trace!(queue = %self.queue, delivery = %message_id, attempt, "received");
        Some(RawDelivery {
            id: message_id.clone(),
            payload: incoming.payload,
            attributes: incoming.attributes,
            ordering_key,
            attempt,
            published_at,
            first_failure: None,
            ack_id: AckId::new(Receipt {
                message_id,
                handle: handle.to_owned(),
                deadline: Mutex::new(deadline),
            }),
        })
    }

    async fn delete(&self, receipt: &Receipt) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&*self.url)
            .receipt_handle(&receipt.handle)
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("deleting from `{}`", self.queue)))
            .map_err(|e| error::in_settlement(e, &receipt.message_id))?;
        Ok(())
    }

    /// Deletes up to ten messages with one `DeleteMessageBatch` call.
    async fn delete_batch(&self, receipts: &[&Receipt]) -> Vec<Result<()>> {
        if let [receipt] = receipts {
            return vec![self.delete(receipt).await];
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&receipt.handle)
                    .build()
                    .unwrap_or_else(|_| unreachable!("id and receipt handle are set"))
            })
            .collect();

        let what = format!("deleting from `{}`", self.queue);
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&*self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                let shared = Arc::new(e);
                return receipts
                    .iter()
                    .map(|r| {
                        let e = error::from_shared_sdk(&shared, &what);
                        Err(error::in_settlement(e, &r.message_id))
                    })
                    .collect();
            }
        };

        let mut results: Vec<Result<()>> = receipts.iter().map(|_| Ok(())).collect();
        for failed in output.failed() {
            let Ok(i) = failed.id().parse::<usize>() else {
                continue;
            };
            if let Some(slot) = results.get_mut(i) {
                let e = error::from_entry(failed.code(), failed.message(), &what);
                *slot = Err(error::in_settlement(e, &receipts[i].message_id));
            }
        }
        results
    }

    async fn change_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&*self.url)
            .receipt_handle(&receipt.handle)
            .visibility_timeout(whole_seconds(timeout))
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("changing visibility in `{}`", self.queue)))
            .map_err(|e| error::in_settlement(e, &receipt.message_id))?;
        Ok(())
    }

    async fn dead_letter_topic(&self) -> Result<&SqsTopic> {
        self.dead_letter_topic
            .get_or_try_init(|| async {
                let url = self.queues.url(&self.dead_letter).await.map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!(
                            "queue `{}` has no usable dead-letter queue `{}`; create the \
                             subscription with wharf or give the queue a redrive policy",
                            self.queue, self.dead_letter
                        ),
                    )
                    .with_source(e)
                })?;
                let deduplication = false;
                Ok(SqsTopic::new(
                    self.client.clone(),
                    &self.dead_letter,
                    url,
                    deduplication,
                ))
            })
            .await
    }
}

#[async_trait]
impl SubscriptionDriver for SqsSubscription {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn subscription(&self) -> &str {
        &self.queue
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        self.check_open()?;
        let deadline = Instant::now() + wait;

        // A long poll lasts at most 20 s; longer waits take several, each ending early
        // as soon as messages arrive.
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let deliveries = self.receive_once(max, remaining).await?;

            let left = deadline.saturating_duration_since(Instant::now());
            if !deliveries.is_empty() || left < Duration::from_secs(1) {
                return Ok(deliveries);
            }
        }
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        if self.check_open().is_err() {
            return ids
                .iter()
                .map(|_| Err(Error::closed("subscriber")))
                .collect();
        }
        let mut results: Vec<Option<Result<()>>> = ids.iter().map(|_| None).collect();

        let mut live: Vec<(usize, &Receipt)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match id
                .expect::<Receipt>()
                .and_then(|r| r.check_lease().map(|()| r))
            {
                Ok(receipt) => live.push((i, receipt)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }

        let chunks: Vec<&[(usize, &Receipt)]> = live.chunks(MAX_BATCH_ENTRIES).collect();
        let calls = chunks.iter().map(|chunk| {
            let receipts: Vec<&Receipt> = chunk.iter().map(|(_, r)| *r).collect();
            async move { self.delete_batch(&receipts).await }
        });
        let outcomes = futures::future::join_all(calls).await;

        for (chunk, outcome) in chunks.iter().zip(outcomes) {
            for ((i, _), result) in chunk.iter().zip(outcome) {
                results[*i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "ack lost"))))
            .collect()
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        self.check_open()?;
        let receipt = id.expect::<Receipt>()?;
        receipt.check_lease()?;

        self.change_visibility(receipt, delay).await
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        self.check_open()?;
        let receipt = id.expect::<Receipt>()?;
        receipt.check_lease()?;

        let target = self.dead_letter_topic().await?;
        let mut message = shortened(letter).to_message();
        if is_fifo(&self.dead_letter) {
            // The original message id makes a repeated dead-letter send a duplicate SQS
            // drops, should the delete below fail and the message come back.
            message = message.with_deduplication_id(receipt.message_id.clone());
        }
        let mut sent = target.send_batch(std::slice::from_ref(&message)).await;
        sent.pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "no result")))?;
        debug!(
            queue = %self.queue,
            dead_letter = %self.dead_letter,
            delivery = %receipt.message_id,
            "dead-lettered"
        );

        self.delete(receipt).await
    }

    async fn extend_lease(&self, id: &AckId, lease: Duration) -> Result<()> {
        self.check_open()?;
        let receipt = id.expect::<Receipt>()?;
        receipt.check_lease()?;

        let started = Instant::now();
        self.change_visibility(receipt, lease).await?;
        receipt.renew(started + lease);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Longest dead-letter reason kept, in bytes: a handler's error text can be long, and
/// the envelope must not push the message over SQS's size limit.
const MAX_REASON_BYTES: usize = 1024;

fn shortened(mut letter: DeadLetter) -> DeadLetter {
    if letter.reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !letter.reason.is_char_boundary(end) {
            end -= 1;
        }
        letter.reason.truncate(end);
    }
    letter
}
