//! Topic and consumer-group administration through librdkafka's admin client, and the
//! metadata look-ups that go with it.
//!
//! Creating and deleting are idempotent: a topic that already exists, or a topic or group
//! already gone, counts as done. librdkafka's metadata calls block, so they run on
//! tokio's blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::debug;
use wharf_core::{Error, ErrorKind, Result};

use crate::config::KafkaConfig;
use crate::error::{from_code, from_kafka};
use crate::producer::LogContext;

impl ConsumerContext for LogContext {}

/// How often to look again while waiting for a topic to appear in or leave the metadata.
const VISIBILITY_PAUSE: Duration = Duration::from_millis(50);

/// Kafka's longest topic name (`Topic.MAX_NAME_LENGTH`).
const MAX_TOPIC_NAME: usize = 249;

/// A topic to create.
pub(crate) struct TopicSpec {
    pub(crate) name: String,
    /// Partitions, or `None` for the configured default.
    pub(crate) partitions: Option<i32>,
    pub(crate) config: Vec<(&'static str, String)>,
}

impl TopicSpec {
    pub(crate) fn plain(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            partitions: None,
            config: Vec::new(),
        }
    }
}

/// The admin client plus a group-less consumer for metadata and watermarks.
pub(crate) struct Admin {
    client: AdminClient<LogContext>,
    metadata: Arc<BaseConsumer<LogContext>>,
    config: KafkaConfig,
}

impl Admin {
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        let client = config
            .client()
            .create_with_context(LogContext)
            .map_err(|error| from_kafka(error, "creating the admin client"))?;
        let metadata = config
            .client()
            .create_with_context(LogContext)
            .map_err(|error| from_kafka(error, "creating the metadata client"))?;

        Ok(Self {
            client,
            metadata: Arc::new(metadata),
            config: config.clone(),
        })
    }

    /// The rdkafka admin client.
    pub(crate) fn native(&self) -> &AdminClient<LogContext> {
        &self.client
    }

    fn options(&self) -> AdminOptions {
        let timeout = self.config.operation_timeout;
        AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout))
    }

    /// Checks that the brokers answer.
    pub(crate) async fn ping(&self) -> Result<()> {
        let metadata = self.metadata.clone();
        let timeout = self.config.operation_timeout;
        let brokers = self.config.brokers.clone();

        blocking(move || metadata.fetch_metadata(None, timeout))
            .await?
            .map(|_| ())
            .map_err(|error| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot reach the Kafka brokers at {brokers}"),
                )
                .with_source(error)
            })
    }

    /// Creates the topics that do not exist yet and waits until they can be used.
    pub(crate) async fn create_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let replication = self.config.replication_factor;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                let partitions = topic.partitions.unwrap_or(self.config.partitions);
                let factor = TopicReplication::Fixed(replication);
                let mut new = NewTopic::new(&topic.name, partitions, factor);
                for (key, value) in &topic.config {
                    new = new.set(key, value);
                }
                new
            })
            .collect();

        let results = self
            .client
            .create_topics(&new_topics, &self.options())
            .await
            .map_err(|error| from_kafka(error, "creating topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(from_code(code, "creating topic", &name)),
            }
        }

        for topic in topics {
            self.await_visible(&topic.name).await?;
        }
        Ok(())
    }

    /// Waits until every partition of a new topic has a leader: right after creation the
    /// brokers may not know it yet, and producing or subscribing would fail.
    async fn await_visible(&self, topic: &str) -> Result<()> {
        let deadline = Instant::now() + self.config.operation_timeout;
        loop {
            match self.partitions(topic).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() < deadline && error.kind() == ErrorKind::NotFound => {
                    tokio::time::sleep(VISIBILITY_PAUSE).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The partition ids of `topic`.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) if the topic does not exist or a partition has
    /// no leader yet.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let metadata = self.metadata.clone();
        let timeout = self.config.operation_timeout;
        let name = topic.to_owned();
        let fetched = blocking(move || metadata.fetch_metadata(Some(&name), timeout)).await?;
        let fetched = fetched.map_err(|error| from_kafka(error, "reading topic metadata"))?;

        let Some(found) = fetched.topics().iter().find(|t| t.name() == topic) else {
            return Err(missing(topic));
        };
        if let Some(code) = found.error() {
            let code = RDKafkaErrorCode::from(code);
            return Err(match crate::error::code_kind(code) {
                ErrorKind::NotFound => missing(topic),
                _ => from_code(code, "reading metadata of topic", topic),
            });
        }
        let partitions = found.partitions();
        if partitions.is_empty() || partitions.iter().any(|p| p.leader() < 0) {
            return Err(missing(topic));
        }
        Ok(partitions.iter().map(|p| p.id()).collect())
    }

    /// Deletes topics; ones already gone count as deleted.
    pub(crate) async fn delete_topics(&self, topics: &[&str]) -> Result<()> {
        let results = self
            .client
            .delete_topics(topics, &self.options())
            .await
            .map_err(|error| from_kafka(error, "deleting topics"))?;

        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => return Err(from_code(code, "deleting topic", &name)),
            }
        }
        for topic in topics {
            self.await_gone(topic).await?;
        }
        Ok(())
    }

    /// Waits until a deleted topic has left the metadata: the controller answers a
    /// deletion before the brokers act on it, and until then the topic still takes
    /// messages that would vanish with it.
    async fn await_gone(&self, topic: &str) -> Result<()> {
        let deadline = Instant::now() + self.config.operation_timeout;
        loop {
            match self.partitions(topic).await {
                Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
                Err(error) => return Err(error),
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(VISIBILITY_PAUSE).await,
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "topic {topic} was deleted but is still in the metadata after {:?}; \
                             the brokers may be lagging, check the controller's log",
                            self.config.operation_timeout
                        ),
                    ));
                }
            }
        }
    }

    /// Deletes consumer groups; ones already gone count as deleted.
    pub(crate) async fn delete_groups(&self, groups: &[&str]) -> Result<()> {
        let results = self
            .client
            .delete_groups(groups, &self.options())
            .await
            .map_err(|error| from_kafka(error, "deleting consumer groups"))?;

        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((name, code)) => return Err(from_code(code, "deleting consumer group", &name)),
            }
        }
        Ok(())
    }

    /// Gives a new consumer group committed offsets at the current end of `topic`, so
    /// the subscription receives what is published from now on, as on other brokers,
    /// not the topic's whole history. A group that already has offsets is left alone.
    pub(crate) async fn start_group_at_end(&self, group: &str, topic: &str) -> Result<()> {
        let partitions = self.partitions(topic).await?;
        let consumer: BaseConsumer<LogContext> = self
            .config
            .consumer(group)
            .create_with_context(LogContext)
            .map_err(|error| from_kafka(error, "creating a consumer"))?;
        let timeout = self.config.operation_timeout;
        let topic = topic.to_owned();

        blocking(move || commit_ends(&consumer, &topic, &partitions, timeout)).await?
    }
}

/// The group's committed offsets of `list`, asked again until `timeout` while the
/// answer is retryable: right after a broker starts, or while a group's coordinator
/// moves, Kafka answers NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS for a moment.
fn committed_offsets(
    consumer: &BaseConsumer<LogContext>,
    list: &TopicPartitionList,
    timeout: Duration,
) -> Result<TopicPartitionList> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match consumer.committed_offsets(list.clone(), timeout) {
            Ok(committed) => return Ok(committed),
            Err(error) => {
                let error = from_kafka(error, "reading committed offsets");
                if !error.is_retryable() || std::time::Instant::now() >= deadline {
                    return Err(error);
                }
                debug!(%error, "group coordinator not ready; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn commit_ends(
    consumer: &BaseConsumer<LogContext>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<()> {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    let committed = committed_offsets(consumer, &list, timeout)?;
    if committed
        .elements()
        .iter()
        .any(|e| e.offset() != Offset::Invalid)
    {
        debug!(topic, "consumer group already has offsets");
        return Ok(());
    }

    let mut ends = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, *partition, timeout)
            .map_err(|error| from_kafka(error, "reading partition ends"))?;
        ends.add_partition_offset(topic, *partition, Offset::Offset(high))
            .map_err(|error| from_kafka(error, "describing offsets"))?;
    }
    consumer
        .commit(&ends, CommitMode::Sync)
        .map_err(|error| from_kafka(error, "committing start offsets"))
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(call).await.map_err(|e| {
        Error::new(ErrorKind::Internal, "a blocking Kafka call panicked").with_source(e)
    })
}

fn missing(topic: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("Kafka topic `{topic}` does not exist; create it first"),
    )
}

/// Checks a name Kafka will use as a topic: at most 249 characters of ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`.
pub(crate) fn check_topic_name(name: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name == "." || name == ".." || !name.chars().all(legal) {
        return Err(Error::invalid(format!(
            "`{name}` is not a valid Kafka topic name: use ASCII letters, digits, '.', '_' \
             and '-'"
        )));
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(Error::invalid(format!(
            "topic name `{name}` is {} characters; Kafka allows at most {MAX_TOPIC_NAME}",
            name.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_against_kafkas_rules() {
        assert!(check_topic_name("orders.v1_eu-west").is_ok());
        assert!(check_topic_name("orders/eu").is_err());
        assert!(check_topic_name("..").is_err());

        let long = "x".repeat(250);
        let error = check_topic_name(&long).unwrap_err();
        assert!(error.to_string().contains("250"), "{error}");
        assert!(error.to_string().contains("249"), "{error}");
    }
}
