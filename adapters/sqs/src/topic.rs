//! [`SqsTopic`]: sends messages to one queue with `SendMessage` and `SendMessageBatch`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tracing::{trace, warn};
use wharf_core::{Capabilities, Error, ErrorKind, Message, Result, TopicDriver};

use crate::error;
use crate::limits::{self, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_FIFO_ID};
use crate::wire::{self, Outgoing};

/// How often a batch entry SQS failed on its side (not the sender's fault) is sent again
/// before its failure is handed back. The SDK retries whole calls, never single entries
/// of a call that succeeded, so this does not stack on its retries.
const ENTRY_RETRIES: u32 = 2;

/// Pause before sending failed entries again.
const ENTRY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Prefix of the message group wharf gives a FIFO message without an ordering key: a
/// group of its own, so it neither waits for nor holds up any other message.
pub(crate) const UNORDERED_GROUP: &str = "wharf-unordered-";

/// Sends to one SQS queue.
pub struct SqsTopic {
    client: Client,
    queue: String,
    url: Arc<str>,
    capabilities: Capabilities,
    content_deduplication: bool,
    closed: AtomicBool,
}

/// One message on its way: where it sits in the caller's batch, and its SQS form.
struct Entry {
    index: usize,
    outgoing: Outgoing,
    delay_seconds: Option<i32>,
    group_id: Option<String>,
    deduplication_id: Option<String>,
}

impl SqsTopic {
    pub(crate) fn new(
        client: Client,
        queue: &str,
        url: Arc<str>,
        content_deduplication: bool,
    ) -> Self {
        Self {
            client,
            queue: queue.to_owned(),
            url,
            capabilities: limits::for_queue(queue),
            content_deduplication,
            closed: AtomicBool::new(false),
        }
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.url
    }

    fn entry(&self, index: usize, message: &Message) -> Result<Entry> {
        let outgoing = wire::encode(message)?;
        let delay_seconds = message.delay().map(whole_seconds);
        let (group_id, deduplication_id) = if self.capabilities.ordering {
            self.fifo_ids(message)?
        } else {
            (None, None)
        };

        Ok(Entry {
            index,
            outgoing,
            delay_seconds,
            group_id,
            deduplication_id,
        })
    }

    /// The message group and deduplication ids of a FIFO message. Without a
    /// deduplication id, a queue with content-based deduplication derives one; on any
    /// other queue wharf makes a unique one, so two equal messages are both delivered.
    fn fifo_ids(&self, message: &Message) -> Result<(Option<String>, Option<String>)> {
        let group = match message.ordering_key() {
            Some(key) => fifo_id("ordering key", key)?,
            None => format!("{UNORDERED_GROUP}{}", uuid::Uuid::new_v4().simple()),
        };
        let deduplication = match message.deduplication_id() {
            Some(id) => Some(fifo_id("deduplication id", id)?),
            None if self.content_deduplication => None,
            None => Some(uuid::Uuid::new_v4().simple().to_string()),
        };
        Ok((Some(group), deduplication))
    }

    async fn send_one(&self, entry: Entry) -> Result<()> {
        let sent = self
            .client
            .send_message()
            .queue_url(&*self.url)
            .message_body(entry.outgoing.body)
            .set_message_attributes(Some(entry.outgoing.attributes))
            .set_delay_seconds(entry.delay_seconds)
            .set_message_group_id(entry.group_id)
            .set_message_deduplication_id(entry.deduplication_id)
            .send()
            .await;

        sent.map(|_| ())
            .map_err(|e| error::from_sdk(e, &self.sending()))
    }

    /// Sends one request's worth of entries, sending entries that failed on SQS's side
    /// again, and records each entry's result.
    async fn send_request(&self, mut entries: Vec<Entry>, results: &mut [Option<Result<()>>]) {
        for round in 0..=ENTRY_RETRIES {
            if round > 0 {
                tokio::time::sleep(ENTRY_RETRY_PAUSE * round).await;
            }
            let output = match self.call_batch(&entries).await {
                Ok(output) => output,
                Err(error) => {
                    let error = Arc::new(error);
                    for entry in &entries {
                        let failure = error::from_shared_sdk(&error, &self.sending());
                        results[entry.index] = Some(Err(failure));
                    }
                    return;
                }
            };

            entries = self.record(output, entries, results, round < ENTRY_RETRIES);
            if entries.is_empty() {
                return;
            }
            warn!(
                queue = %self.queue,
                failed = entries.len(),
                "SQS failed some batch entries; sending them again"
            );
        }
    }

    async fn call_batch(
        &self,
        entries: &[Entry],
    ) -> Result<
        SendMessageBatchOutput,
        aws_sdk_sqs::error::SdkError<
            aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError,
            aws_sdk_sqs::config::http::HttpResponse,
        >,
    > {
        let request: Vec<SendMessageBatchRequestEntry> = entries.iter().map(batch_entry).collect();

        self.client
            .send_message_batch()
            .queue_url(&*self.url)
            .set_entries(Some(request))
            .send()
            .await
    }

    /// Records the outcome of one batch call, returning the entries to send again.
    fn record(
        &self,
        output: SendMessageBatchOutput,
        entries: Vec<Entry>,
        results: &mut [Option<Result<()>>],
        may_retry: bool,
    ) -> Vec<Entry> {
        for sent in output.successful() {
            if let Ok(index) = sent.id().parse::<usize>() {
                results[index] = Some(Ok(()));
            }
        }

        let mut again = Vec::new();
        for failed in output.failed() {
            let Some(position) = entries
                .iter()
                .position(|e| e.index.to_string() == failed.id())
            else {
                continue;
            };
            if !failed.sender_fault() && may_retry {
                again.push(position);
                continue;
            }
            let error = error::from_entry(failed.code(), failed.message(), &self.sending());
            results[entries[position].index] = Some(Err(error));
        }

        entries
            .into_iter()
            .enumerate()
            .filter(|(position, _)| again.contains(position))
            .map(|(_, entry)| entry)
            .collect()
    }

    fn sending(&self) -> String {
        format!("sending to SQS queue `{}`", self.queue)
    }
}

#[async_trait]
impl TopicDriver for SqsTopic {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn topic(&self) -> &str {
        &self.queue
    }

    async fn send_batch(&self, batch: &[Message]) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch
                .iter()
                .map(|_| Err(Error::closed("publisher")))
                .collect();
        }
        let mut results: Vec<Option<Result<()>>> = batch.iter().map(|_| None).collect();

        let mut entries = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            match self.entry(index, message) {
                Ok(entry) => entries.push(entry),
                Err(error) => results[index] = Some(Err(error)),
            }
        }

        for request in requests(entries) {
            trace!(queue = %self.queue, batch_size = request.len(), "sending");
            if let [_] = request.as_slice() {
                let entry = request.into_iter().next().unwrap_or_else(|| unreachable!());
                let index = entry.index;
                results[index] = Some(self.send_one(entry).await);
            } else {
                self.send_request(request, &mut results).await;
            }
        }

        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(no_answer())))
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Splits entries into requests of at most [`MAX_BATCH_ENTRIES`] and [`MAX_BATCH_BYTES`]
/// as SQS counts them, keeping their order. Core splits by the message as given;
/// encoding can make it larger, so the split is checked again here.
fn requests(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut requests: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0;

    for entry in entries {
        let size = entry.outgoing.wire_bytes;
        let fits = requests
            .last()
            .is_some_and(|r| r.len() < MAX_BATCH_ENTRIES && bytes + size <= MAX_BATCH_BYTES);
        if !fits {
            requests.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(request) = requests.last_mut() {
            request.push(entry);
        }
    }
    requests
}

fn batch_entry(entry: &Entry) -> SendMessageBatchRequestEntry {
    SendMessageBatchRequestEntry::builder()
        .id(entry.index.to_string())
        .message_body(entry.outgoing.body.clone())
        .set_message_attributes(Some(entry.outgoing.attributes.clone()))
        .set_delay_seconds(entry.delay_seconds)
        .set_message_group_id(entry.group_id.clone())
        .set_message_deduplication_id(entry.deduplication_id.clone())
        .build()
        .unwrap_or_else(|_| unreachable!("id and body are set"))
}

/// SQS takes whole seconds; rounding up never delivers early.
pub(crate) fn whole_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// Checks a FIFO message group or deduplication id: up to 128 printable ASCII
/// characters.
fn fifo_id(what: &str, id: &str) -> Result<String> {
    let valid =
        !id.is_empty() && id.len() <= MAX_FIFO_ID && id.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        return Ok(id.to_owned());
    }

    Err(Error::invalid(format!(
        "SQS takes a FIFO {what} of 1 to {MAX_FIFO_ID} printable ASCII characters; \
         `{id}` is not one"
    )))
}

fn no_answer() -> Error {
    Error::new(
        ErrorKind::Internal,
        "SQS answered a batch without mentioning one of its entries",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, bytes: usize) -> Entry {
        Entry {
            index,
            outgoing: wire::encode(&Message::new("x".repeat(bytes))).unwrap(),
            delay_seconds: None,
            group_id: None,
            deduplication_id: None,
        }
    }

    #[test]
    fn requests_hold_at_most_ten_entries() {
        let entries = (0..23).map(|i| entry(i, 10)).collect();

        let sizes: Vec<usize> = requests(entries).iter().map(Vec::len).collect();

        assert_eq!(sizes, vec![10, 10, 3]);
    }

    #[test]
    fn requests_stay_under_the_byte_limit() {
        let entries = (0..4).map(|i| entry(i, 100 * 1024)).collect();

        let sizes: Vec<usize> = requests(entries).iter().map(Vec::len).collect();

        assert_eq!(sizes, vec![2, 2]);
    }

    #[test]
    fn delays_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn fifo_ids_must_be_printable_ascii() {
        assert!(fifo_id("ordering key", "customer-42").is_ok());
        assert!(fifo_id("ordering key", "has space").is_err());
        assert!(fifo_id("ordering key", &"k".repeat(129)).is_err());
    }
}
