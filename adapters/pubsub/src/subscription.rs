//! [`PubSubSubscription`]: the subscription driver.
//!
//! Messages arrive through one streaming pull ([`crate::stream`]). Settling uses unary
//! calls whose results come back: `Acknowledge` for an ack, `ModifyAckDeadline` for a
//! nack (deadline 0, or the delay), for a lease extension and for releasing buffered
//! messages at close. Each delivery carries the moment its lease ends as this process
//! knows it; a settlement after that moment reports
//! [`LeaseExpired`](wharf_core::ErrorKind::LeaseExpired), because the service may already
//! have handed the message to another consumer and, outside exactly-once subscriptions,
//! does not say whether a late ack was applied.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gcloud_googleapis::pubsub::v1::{AcknowledgeRequest, ModifyAckDeadlineRequest};
use gcloud_pubsub::apiv1::subscriber_client::SubscriberClient;
use google_cloud_pubsub::client::Publisher as NativePublisher;
use tokio::time::Instant;
use tracing::{debug, warn};
use wharf_core::{AckId, Capabilities, DeadLetter, Error, RawDelivery, Result, SubscriptionDriver};

use crate::attempts::AttemptCounter;
use crate::capabilities::capabilities;
use crate::error::{Operation, from_status};
use crate::on_demand::OnDemandStream;
use crate::stream::{Pulled, whole_seconds};
use crate::topic::{EMPTY_MARKER, send};

/// Settlements are refused this long before the lease ends, since the service's clock
/// started when it sent the message, slightly before it arrived here.
const LEASE_SAFETY: Duration = Duration::from_secs(1);

/// Most ack ids in one `Acknowledge` or `ModifyAckDeadline` call. Source: Google's
/// client libraries send at most 2,500 per call to stay under the request size limit.
const MAX_ACK_IDS_PER_CALL: usize = 2_500;

/// What settles one delivery: its ack id, and when its lease ends.
#[derive(Debug)]
struct PubSubAck {
    ack_id: String,
    message_id: String,
    lease_ends: Mutex<Instant>,
}

impl PubSubAck {
    fn expired(&self) -> bool {
        let ends = *self.lease_ends.lock().unwrap_or_else(|e| e.into_inner());
        Instant::now() + LEASE_SAFETY >= ends
    }

    fn check_lease(&self) -> Result<()> {
        if self.expired() {
            return Err(Error::lease_expired(&self.message_id));
        }
        Ok(())
    }

    fn renew(&self, ends: Instant) {
        *self.lease_ends.lock().unwrap_or_else(|e| e.into_inner()) = ends;
    }
}

/// Where explicit dead letters go: the dead-letter topic and a publisher on it.
pub(crate) struct DeadLetterTopic {
    pub(crate) topic: String,
    pub(crate) publisher: NativePublisher,
}

/// Receives and settles the messages of one subscription.
pub(crate) struct PubSubSubscription {
    name: String,
    path: String,
    client: SubscriberClient,
    stream: Arc<OnDemandStream>,
    attempts: Arc<AttemptCounter>,
    dead_letters: DeadLetterTopic,
    capabilities: Capabilities,
}

impl PubSubSubscription {
    pub(crate) fn new(
        name: String,
        path: String,
        client: SubscriberClient,
        stream: Arc<OnDemandStream>,
        attempts: Arc<AttemptCounter>,
        dead_letters: DeadLetterTopic,
    ) -> Self {
        Self {
            name,
            path,
            client,
            stream,
            attempts,
            dead_letters,
            capabilities: capabilities(),
        }
    }

    fn to_raw(&self, pulled: Pulled) -> RawDelivery {
        let mut message = pulled.message.message.unwrap_or_default();
        if message.data.is_empty() {
            message.attributes.remove(EMPTY_MARKER);
        }
        // The service counts deliveries only on subscriptions with a dead-letter policy.
        let attempt = u32::try_from(pulled.message.delivery_attempt)
            .ok()
            .filter(|attempt| *attempt > 0)
            .unwrap_or_else(|| self.attempts.record(&message.message_id));
        let ack = PubSubAck {
            ack_id: pulled.message.ack_id,
            message_id: message.message_id.clone(),
            lease_ends: Mutex::new(pulled.lease_ends),
        };

        RawDelivery {
            id: message.message_id,
            payload: message.data,
            attributes: message.attributes.into_iter().collect(),
            ordering_key: Some(message.ordering_key).filter(|key| !key.is_empty()),
            attempt,
            published_at: message
                .publish_time
                .map_or_else(SystemTime::now, |t| to_system_time(t.seconds, t.nanos)),
            first_failure: None,
            ack_id: AckId::new(ack),
        }
    }

    async fn modify_deadline(&self, ack_ids: Vec<String>, deadline: Duration) -> Result<()> {
        for chunk in ack_ids.chunks(MAX_ACK_IDS_PER_CALL) {
            let request = ModifyAckDeadlineRequest {
                subscription: self.path.clone(),
                ack_ids: chunk.to_vec(),
                ack_deadline_seconds: whole_seconds(deadline),
            };
            self.client
                .modify_ack_deadline(request, None)
                .await
                .map_err(|status| self.settle_error(status))?;
        }
        Ok(())
    }

    async fn acknowledge(&self, ack_ids: Vec<String>) -> Result<()> {
        let request = AcknowledgeRequest {
            subscription: self.path.clone(),
            ack_ids,
        };

        self.client
            .acknowledge(request, None)
            .await
            .map(drop)
            .map_err(|status| self.settle_error(status))
    }

    fn settle_error(&self, status: gcloud_gax::grpc::Status) -> Error {
        from_status(
            status,
            Operation::Settle,
            &format!("settling on {}", self.name),
        )
    }

    async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<()> {
        let message = letter.to_message();
        let DeadLetterTopic { topic, publisher } = &self.dead_letters;

        let result = send(publisher, topic, std::slice::from_ref(&message)).await;
        let result = result.into_iter().next().unwrap_or(Ok(()));
        if result.is_err()
            && let Some(key) = message.ordering_key()
        {
            // wharf owns this publisher; no application could resume the key.
            publisher.resume_publish(key);
        }
        result
    }
}

#[async_trait]
impl SubscriptionDriver for PubSubSubscription {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn subscription(&self) -> &str {
        &self.name
    }

    async fn receive_batch(&self, max: usize, wait: Duration) -> Result<Vec<RawDelivery>> {
        let pulled = self.stream.take(max, wait, LEASE_SAFETY).await?;

        Ok(pulled.into_iter().map(|p| self.to_raw(p)).collect())
    }

    async fn ack_batch(&self, ids: Vec<AckId>) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(ids.len());
        let mut sent = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            match id.expect::<PubSubAck>() {
                Ok(ack) => {
                    results.push(ack.check_lease());
                    sent.push((index, ack));
                }
                Err(error) => results.push(Err(error)),
            }
        }

        // Late acks are sent too: if the service has not redelivered yet, they still
        // spare a duplicate. They are reported as expired all the same.
        for chunk in sent.chunks(MAX_ACK_IDS_PER_CALL) {
            let ack_ids = chunk.iter().map(|(_, ack)| ack.ack_id.clone()).collect();
            let outcome = self.acknowledge(ack_ids).await;
            for (index, ack) in chunk {
                match (&outcome, &results[*index]) {
                    (Ok(()), Ok(())) => self.attempts.forget(&ack.message_id),
                    (Err(error), Ok(())) => results[*index] = Err(copy(error)),
                    (_, Err(_)) => {}
                }
            }
        }
        results
    }

    async fn nack(&self, id: AckId, delay: Duration) -> Result<()> {
        let ack = id.expect::<PubSubAck>()?;
        ack.check_lease()?;

        self.modify_deadline(vec![ack.ack_id.clone()], delay).await
    }

    async fn dead_letter(&self, id: AckId, letter: DeadLetter) -> Result<()> {
        let ack = id.expect::<PubSubAck>()?;
        ack.check_lease()?;

        self.publish_dead_letter(&letter).await?;
        self.acknowledge(vec![ack.ack_id.clone()]).await?;
        self.attempts.forget(&ack.message_id);
        Ok(())
    }

    async fn extend_lease(&self, id: &AckId, lease: Duration) -> Result<()> {
        let ack = id.expect::<PubSubAck>()?;
        ack.check_lease()?;

        let asked_at = Instant::now();
        self.modify_deadline(vec![ack.ack_id.clone()], lease)
            .await?;
        ack.renew(asked_at + lease);
        debug!(subscription = %self.name, delivery = %ack.message_id, "lease extended");
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let left: Vec<String> = self
            .stream
            .stop()
            .await
            .into_iter()
            .map(|pulled| pulled.message.ack_id)
            .collect();

        debug!(subscription = %self.name, released = left.len(), "subscriber closed");
        self.modify_deadline(left, Duration::ZERO).await
    }
}

impl Drop for PubSubSubscription {
    fn drop(&mut self) {
        let left = self.stream.drain_now();
        if left.is_empty() {
            return;
        }
        // Without a runtime the buffered messages return when their lease ends.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let request = ModifyAckDeadlineRequest {
            subscription: self.path.clone(),
            ack_ids: left,
            ack_deadline_seconds: 0,
        };
        runtime.spawn(async move {
            if let Err(status) = client.modify_ack_deadline(request, None).await {
                warn!(code = ?status.code(), "could not release buffered messages; \
                    they return when their lease ends");
            }
        });
    }
}

/// One failed call fails every ack id it carried; each gets its own copy of the error.
fn copy(error: &Error) -> Error {
    Error::new(error.kind(), error.message().to_owned())
}

/// The service's publish time, which is never before the epoch.
fn to_system_time(seconds: i64, nanos: i32) -> SystemTime {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanos = u32::try_from(nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(seconds, nanos)
}
