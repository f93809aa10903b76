//! Queue names, queue URLs and queue settings.
//!
//! SQS addresses queues by URL, which costs a `GetQueueUrl` call to learn; [`Queues`]
//! resolves each name once and caches it for every publisher and subscriber of a
//! backend. It also reads the settings wharf needs from a queue: its visibility timeout
//! (the lease) and where its dead letters go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::debug;
use wharf_core::{Error, ErrorKind, Result, SubscriptionSpec};

use crate::error;
use crate::limits::{DEFAULT_VISIBILITY, MAX_QUEUE_NAME};

/// Suffix SQS requires of FIFO queue names.
pub(crate) const FIFO_SUFFIX: &str = ".fifo";

/// Queue tag naming the dead-letter queue, for queues without a redrive policy.
pub(crate) const DEAD_LETTER_TAG: &str = "wharf-dead-letter";

/// Whether `name` is a FIFO queue's.
pub(crate) fn is_fifo(name: &str) -> bool {
    name.ends_with(FIFO_SUFFIX)
}

/// Checks `name` against SQS's rules: 1 to 80 of `A-Za-z0-9_-`, then `.fifo` for a FIFO
/// queue.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let base = name.strip_suffix(FIFO_SUFFIX).unwrap_or(name);
    let valid = !base.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        return Ok(());
    }

    Err(Error::invalid(format!(
        "`{name}` is not a valid SQS queue name: use 1 to {MAX_QUEUE_NAME} letters, digits, \
         hyphens or underscores, ending in `{FIFO_SUFFIX}` for a FIFO queue"
    )))
}

/// The dead-letter queue of `spec`: the one it names, or `<name>-dlq`. A FIFO queue's
/// dead-letter queue must be FIFO too, so its default is `<base>-dlq.fifo`.
pub(crate) fn dead_letter_name(spec: &SubscriptionSpec) -> Result<String> {
    let name = match &spec.dead_letter {
        Some(name) => name.clone(),
        None => default_dead_letter_name(&spec.name),
    };
    check_name(&name)?;

    if is_fifo(&spec.name) != is_fifo(&name) {
        return Err(Error::invalid(format!(
            "dead-letter queue `{name}` of `{}` must be of the same kind: SQS requires a \
             FIFO queue's dead-letter queue to be FIFO and a standard one's to be standard",
            spec.name
        )));
    }
    Ok(name)
}

/// `<name>-dlq`, keeping a FIFO queue's `.fifo` suffix last.
pub(crate) fn default_dead_letter_name(queue: &str) -> String {
    match queue.strip_suffix(FIFO_SUFFIX) {
        Some(base) => format!("{base}-dlq{FIFO_SUFFIX}"),
        None => format!("{queue}-dlq"),
    }
}

/// The queue name at the end of a queue ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`).
pub(crate) fn name_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit(':').next().filter(|name| !name.is_empty())
}

/// A queue's settings that matter to a subscriber.
#[derive(Debug, Clone)]
pub(crate) struct QueueSettings {
    /// The queue's visibility timeout: each delivery's lease.
    pub(crate) visibility: Duration,
    /// The dead-letter queue's name.
    pub(crate) dead_letter: String,
}

/// Resolves and caches queue URLs, and creates, inspects and deletes queues.
#[derive(Clone)]
pub(crate) struct Queues {
    client: Client,
    urls: Arc<Mutex<HashMap<String, Arc<str>>>>,
}

impl Queues {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            urls: Arc::default(),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The URL of queue `name`, from the cache or from SQS.
    pub(crate) async fn url(&self, name: &str) -> Result<Arc<str>> {
        if let Some(url) = self.cached(name) {
            return Ok(url);
        }
        check_name(name)?;

        let output = self
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("looking up queue `{name}`")))
            .map_err(|e| explain_not_found(e, name))?;
        let url: Arc<str> = output.queue_url().unwrap_or_default().into();

        self.remember(name, url.clone());
        Ok(url)
    }

    /// Creates queue `name` with `attributes` if it does not exist, returning its URL.
    pub(crate) async fn create(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<Arc<str>> {
        check_name(name)?;

        let output = self
            .client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("creating queue `{name}`")))?;
        let url: Arc<str> = output.queue_url().unwrap_or_default().into();

        debug!(queue = name, "queue created or already there");
        self.remember(name, url.clone());
        Ok(url)
    }

    /// Sets `attributes` on the queue at `url`.
    pub(crate) async fn set_attributes(
        &self,
        url: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<()> {
        self.client
            .set_queue_attributes()
            .queue_url(url)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| error::from_sdk(e, "setting queue attributes"))?;
        Ok(())
    }

    /// Reads `names` of the queue at `url`.
    pub(crate) async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| error::from_sdk(e, "reading queue attributes"))?;

        Ok(output.attributes().cloned().unwrap_or_default())
    }

    /// Tags the queue at `url` with the name of its dead-letter queue.
    pub(crate) async fn tag_dead_letter(&self, url: &str, dead_letter: &str) -> Result<()> {
        self.client
            .tag_queue()
            .queue_url(url)
            .tags(DEAD_LETTER_TAG, dead_letter)
            .send()
            .await
            .map_err(|e| error::from_sdk(e, "tagging the queue"))?;
        Ok(())
    }

    /// The lease and dead-letter queue of queue `name`.
    ///
    /// The dead-letter queue is the redrive policy's target; without one, the queue's
    /// [`DEAD_LETTER_TAG`]; without that, the default name.
    pub(crate) async fn settings(&self, name: &str) -> Result<QueueSettings> {
        let url = self.url(name).await?;
        let wanted = [
            QueueAttributeName::VisibilityTimeout,
            QueueAttributeName::RedrivePolicy,
        ];
        let attributes = self.attributes(&url, &wanted).await?;

        let visibility = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|secs| secs.parse().ok())
            .map_or(DEFAULT_VISIBILITY, Duration::from_secs);
        let redrive_target = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|policy| redrive_target(policy));
        let dead_letter = match redrive_target {
            Some(name) => name,
            None => self.tagged_dead_letter(&url, name).await?,
        };

        Ok(QueueSettings {
            visibility,
            dead_letter,
        })
    }

    async fn tagged_dead_letter(&self, url: &str, name: &str) -> Result<String> {
        let output = self
            .client
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &format!("reading the tags of queue `{name}`")))?;

        Ok(output
            .tags()
            .and_then(|tags| tags.get(DEAD_LETTER_TAG).cloned())
            .unwrap_or_else(|| default_dead_letter_name(name)))
    }

    /// Deletes queue `name`; a queue that is already gone counts as deleted.
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        let url = match self.url(name).await {
            Ok(url) => url,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.forget(name);

        let deleted = self.client.delete_queue().queue_url(&*url).send().await;
        match deleted.map_err(|e| error::from_sdk(e, &format!("deleting queue `{name}`"))) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<str>> {
        let urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        urls.get(name).cloned()
    }

    fn remember(&self, name: &str, url: Arc<str>) {
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        urls.insert(name.to_owned(), url);
    }

    fn forget(&self, name: &str) {
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        urls.remove(name);
    }
}

/// The dead-letter queue's name in a redrive policy
/// (`{"deadLetterTargetArn": "...", "maxReceiveCount": 5}`).
fn redrive_target(policy: &str) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = policy.get("deadLetterTargetArn")?.as_str()?;
    name_of_arn(arn).map(str::to_owned)
}

/// The redrive policy sending a message to `dead_letter_arn` after `max_receives`.
pub(crate) fn redrive_policy(dead_letter_arn: &str, max_receives: u32) -> String {
    serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": max_receives,
    })
    .to_string()
}

fn explain_not_found(error: Error, name: &str) -> Error {
    if error.kind() != ErrorKind::NotFound {
        return error;
    }
    Error::new(
        ErrorKind::NotFound,
        format!("SQS queue `{name}` does not exist; create it with create_topic first"),
    )
    .with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_dead_letter_queues_keep_the_suffix_last() {
        assert_eq!(default_dead_letter_name("orders"), "orders-dlq");
        assert_eq!(default_dead_letter_name("orders.fifo"), "orders-dlq.fifo");
    }

    #[test]
    fn queue_names_follow_the_sqs_rules() {
        assert!(check_name("orders_2-b").is_ok());
        assert!(check_name("orders.fifo").is_ok());
        assert!(check_name(".fifo").is_err());
        assert!(check_name("has.dot").is_err());
        assert!(check_name(&"x".repeat(81)).is_err());
    }

    #[test]
    fn a_standard_queue_cannot_dead_letter_into_a_fifo_queue() {
        let spec = SubscriptionSpec::new("orders", "orders").dead_letter("failed.fifo");

        assert!(dead_letter_name(&spec).is_err());
    }

    #[test]
    fn the_redrive_target_is_read_from_the_policy() {
        let policy = redrive_policy("arn:aws:sqs:us-east-1:000000000000:orders-dlq", 5);

        assert_eq!(redrive_target(&policy).as_deref(), Some("orders-dlq"));
    }
}
