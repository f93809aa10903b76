//! A small client for the management plugin's HTTP API, for what AMQP does not report:
//! unacknowledged counts, the age of a classic queue's head message, the other queues of
//! a virtual host, bindings, queue arguments and the policies in effect.
//!
//! Every call returns the broker's answer or an [`Unreachable`] whose text says what to
//! do (enable the plugin, correct `management_url`, give the user the `monitoring` tag),
//! so that callers turn it into an unknown figure or a finding rather than failing.
//! Credentials travel in the `Authorization` header, never in a URL, so no error and no
//! log line shows them.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;
use url::Url;

use crate::config::{ManagementEndpoint, RabbitMqConfig};

/// Longest one request may take: the API answers in milliseconds when it is up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Queues one page of a listing holds; the API's own maximum is 500.
const PAGE_SIZE: usize = 500;
/// Longest [`Management::sampled_queue`] waits for a new queue's first sample: the
/// plugin collects every 5 s by default, and a quorum queue reports on its own tick
/// on top of that, so its first figures can take about ten seconds.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(15);
/// How often to ask again while waiting for a first sample.
const SAMPLE_POLL: Duration = Duration::from_millis(500);

/// Why the management API gave no answer, phrased as what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreachable {
    reason: String,
    /// Nothing answered at all, so asking again at once is pointless.
    down: bool,
}

impl Unreachable {
    /// The API answered, but not with what was asked for.
    fn answered(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            down: false,
        }
    }

    /// Nothing answers at the API's address.
    fn down(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            down: true,
        }
    }

    /// The explanation, for an unknown figure or a finding.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether nothing answered, rather than an answer that did not help.
    pub(crate) fn is_down(&self) -> bool {
        self.down
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What the API says of one queue. Fields the plugin has not sampled yet are `None`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct QueueInfo {
    /// The queue's name.
    pub(crate) name: String,
    /// `quorum`, `classic` or `stream`.
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    durable: Option<bool>,
    #[serde(default)]
    auto_delete: Option<bool>,
    #[serde(default)]
    exclusive: Option<bool>,
    #[serde(default)]
    arguments: Value,
    #[serde(default)]
    effective_policy_definition: Value,
    /// Messages waiting for a consumer, as last sampled.
    #[serde(default)]
    pub(crate) messages_ready: Option<u64>,
    /// Messages delivered and not yet acknowledged, as last sampled.
    #[serde(default)]
    pub(crate) messages_unacknowledged: Option<u64>,
    #[serde(default)]
    head_message_timestamp: Value,
}

impl QueueInfo {
    /// Whether the plugin has sampled the queue's message counts yet.
    pub(crate) fn sampled(&self) -> bool {
        self.messages_ready.is_some() && self.messages_unacknowledged.is_some()
    }

    /// The `timestamp` property, in seconds, of the message at the head; classic
    /// queues only, and only if that message carries one.
    pub(crate) fn head_timestamp(&self) -> Option<u64> {
        self.head_message_timestamp.as_u64()
    }

    pub(crate) fn durable(&self) -> bool {
        self.durable.unwrap_or(true)
    }

    pub(crate) fn auto_delete(&self) -> bool {
        self.auto_delete.unwrap_or(false)
    }

    pub(crate) fn exclusive(&self) -> bool {
        self.exclusive.unwrap_or(false)
    }

    /// The queue argument `key` (`x-...`), as declared.
    pub(crate) fn argument(&self, key: &str) -> Option<&Value> {
        self.arguments.get(key)
    }

    /// The key of the policies in effect (`dead-letter-exchange`, ...), operator
    /// policies merged in by the broker.
    pub(crate) fn policy(&self, key: &str) -> Option<&Value> {
        self.effective_policy_definition.get(key)
    }
}

/// One binding, as the API lists it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Binding {
    /// The exchange; empty for the default exchange.
    pub(crate) source: String,
    /// The queue or exchange bound.
    pub(crate) destination: String,
    /// `queue` or `exchange`.
    pub(crate) destination_type: String,
    /// The binding key.
    #[serde(default)]
    pub(crate) routing_key: String,
}

/// What the API says of one exchange.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExchangeInfo {
    /// `fanout`, `topic`, `direct`, `headers`, ...
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    #[serde(default)]
    page_count: usize,
}

#[derive(Deserialize)]
struct Overview {
    #[serde(default)]
    rabbitmq_version: Option<String>,
    #[serde(default)]
    product_version: Option<String>,
}

/// The management API of the broker a backend talks to, in its virtual host.
pub(crate) struct Management {
    client: std::result::Result<reqwest::Client, Unreachable>,
    endpoint: std::result::Result<ManagementEndpoint, Unreachable>,
}

impl Management {
    /// A client for the API `config` names or implies. Nothing is sent yet.
    pub(crate) fn new(config: &RabbitMqConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Unreachable::down(format!("no HTTP client for the management API: {e}")));
        let endpoint = config
            .management()
            .map_err(|e| Unreachable::down(e.to_string()));
        Self { client, endpoint }
    }

    /// The queue `name`, or `None` if the API does not know it.
    pub(crate) async fn queue(&self, name: &str) -> Result<Option<QueueInfo>, Unreachable> {
        self.get_vhost(&["queues"], &[name], &[]).await
    }

    /// The queue `name` once the plugin has sampled its message counts, waiting for
    /// the first sample of a queue created moments ago (up to [`FIRST_SAMPLE_WAIT`]).
    pub(crate) async fn sampled_queue(&self, name: &str) -> Result<QueueInfo, Unreachable> {
        let deadline = Instant::now() + FIRST_SAMPLE_WAIT;
        loop {
            let Some(queue) = self.queue(name).await? else {
                return Err(self.unknown_queue(name));
            };
            if queue.sampled() {
                return Ok(queue);
            }
            if Instant::now() + SAMPLE_POLL > deadline {
                return Err(Unreachable::answered(format!(
                    "the management plugin has not sampled queue `{name}` yet (it samples \
                     every collect_statistics_interval, 5 s by default, and quorum queues \
                     report on their own tick); ask again in a few seconds"
                )));
            }
            tokio::time::sleep(SAMPLE_POLL).await;
        }
    }

    /// Every queue of the virtual host whose name matches `pattern`, a regular
    /// expression as the broker (Erlang's `re`) reads it.
    pub(crate) async fn queues_matching(
        &self,
        pattern: &str,
    ) -> Result<Vec<QueueInfo>, Unreachable> {
        let mut queues = Vec::new();
        let mut page = 1;
        loop {
            let number = page.to_string();
            let size = PAGE_SIZE.to_string();
            let query = [
                ("name", pattern),
                ("use_regex", "true"),
                ("page", number.as_str()),
                ("page_size", size.as_str()),
            ];
            let listed: Option<Page<QueueInfo>> = self.get_vhost(&["queues"], &[], &query).await?;
            let Some(listed) = listed else {
                return Err(self.no_api("the queue listing"));
            };
            queues.extend(listed.items);
            if page >= listed.page_count {
                return Ok(queues);
            }
            page += 1;
        }
    }

    /// The bindings of queue `name`, or `None` if the API does not know the queue.
    pub(crate) async fn queue_bindings(
        &self,
        name: &str,
    ) -> Result<Option<Vec<Binding>>, Unreachable> {
        self.get_vhost(&["queues"], &[name, "bindings"], &[]).await
    }

    /// The exchange `name`, or `None` if it does not exist.
    pub(crate) async fn exchange(&self, name: &str) -> Result<Option<ExchangeInfo>, Unreachable> {
        self.get_vhost(&["exchanges"], &[name], &[]).await
    }

    /// The bindings whose source is exchange `name`, or `None` if it does not exist.
    pub(crate) async fn exchange_bindings(
        &self,
        name: &str,
    ) -> Result<Option<Vec<Binding>>, Unreachable> {
        self.get_vhost(&["exchanges"], &[name, "bindings", "source"], &[])
            .await
    }

    /// The broker's version, such as `3.10.8`.
    pub(crate) async fn version(&self) -> Result<String, Unreachable> {
        let overview: Option<Overview> = self.get(&["overview"], &[]).await?;
        let overview = overview.ok_or_else(|| self.no_api("/api/overview"))?;
        overview
            .rabbitmq_version
            .or(overview.product_version)
            .ok_or_else(|| Unreachable::answered("the management API did not say its version"))
    }

    /// An API known to answer, but not for `name`, which AMQP says exists: the URL
    /// points at another broker or virtual host.
    pub(crate) fn unknown_queue(&self, name: &str) -> Unreachable {
        Unreachable::answered(format!(
            "the management API at {} does not know queue `{name}`, which AMQP reports: \
             management_url points at another broker",
            self.shown()
        ))
    }

    /// `GET api/<collection>/<vhost>/<rest...>`.
    async fn get_vhost<T: DeserializeOwned>(
        &self,
        collection: &[&str],
        rest: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Option<T>, Unreachable> {
        let vhost = self.endpoint()?.vhost.clone();
        let mut segments: Vec<&str> = collection.to_vec();
        segments.push(&vhost);
        segments.extend(rest);
        self.get(&segments, query).await
    }

    /// `GET api/<segments...>?<query>`: `None` for a 404.
    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Option<T>, Unreachable> {
        let endpoint = self.endpoint()?;
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let url = api_url(&endpoint.base, segments)?;

        let sent = client
            .get(url.clone())
            .query(query)
            .basic_auth(&endpoint.username, Some(&endpoint.password))
            .send()
            .await;
        let response = sent.map_err(|e| self.not_answering(e))?;

        let status = response.status();
        debug!(url = %url, status = status.as_u16(), "management API call");
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED => Err(self.refused("refused the login")),
            StatusCode::FORBIDDEN => Err(self.refused("refused access to the virtual host")),
            status if !status.is_success() => Err(Unreachable::answered(format!(
                "the management API at {} answered {status} for {}",
                self.shown(),
                url.path()
            ))),
            _ => response.json().await.map(Some).map_err(|e| {
                Unreachable::answered(format!(
                    "the management API at {} answered what wharf cannot read ({}); is \
                     management_url the plugin's address?",
                    self.shown(),
                    causes(&e.without_url())
                ))
            }),
        }
    }

    fn endpoint(&self) -> Result<&ManagementEndpoint, Unreachable> {
        self.endpoint.as_ref().map_err(Clone::clone)
    }

    /// The base URL, which holds no credentials.
    fn shown(&self) -> String {
        self.endpoint
            .as_ref()
            .map_or_else(|_| "<no URL>".to_owned(), |e| e.base.to_string())
    }

    fn not_answering(&self, error: reqwest::Error) -> Unreachable {
        let cause = causes(&error.without_url());
        Unreachable::down(format!(
            "the management API at {} did not answer ({cause}); enable the \
             rabbitmq_management plugin (`rabbitmq-plugins enable rabbitmq_management`) or \
             set management_url",
            self.shown()
        ))
    }

    fn refused(&self, what: &str) -> Unreachable {
        let user = self
            .endpoint
            .as_ref()
            .map_or("", |endpoint| endpoint.username.as_str());
        Unreachable::answered(format!(
            "the management API at {} {what} of user `{user}`: give that user the \
             `monitoring` tag and permissions on the virtual host (`rabbitmqctl \
             set_user_tags {user} monitoring`), or set management_url with a user who has \
             them",
            self.shown()
        ))
    }

    fn no_api(&self, what: &str) -> Unreachable {
        Unreachable::answered(format!(
            "the server at {} has no management API ({what} is not found): correct \
             management_url, including the plugin's path prefix if it has one",
            self.shown()
        ))
    }
}

/// `base` with `api/` and `segments` appended, each percent-encoded (a vhost of `/`
/// becomes `%2F`).
fn api_url(base: &Url, segments: &[&str]) -> Result<Url, Unreachable> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| Unreachable::answered(format!("management URL {base} cannot take a path")))?
        .pop_if_empty()
        .push("api")
        .extend(segments);
    Ok(url)
}

/// An error and its causes, most general first: reqwest's own text alone says only
/// "error sending request".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_and_follow_the_prefix() {
        let base = Url::parse("http://rabbit:15672/prefix/").unwrap();

        let url = api_url(&base, &["queues", "/", "a b#c"]).unwrap();

        assert_eq!(
            url.as_str(),
            "http://rabbit:15672/prefix/api/queues/%2F/a%20b%23c"
        );
    }

    #[test]
    fn queue_figures_are_read_where_sampled() {
        let json = r#"{"name":"billing","type":"classic","durable":true,
            "arguments":{"x-delivery-limit":4},"effective_policy_definition":[],
            "messages_ready":3,"messages_unacknowledged":2,"head_message_timestamp":1700}"#;

        let queue: QueueInfo = serde_json::from_str(json).unwrap();

        assert!(queue.sampled());
        assert_eq!(queue.head_timestamp(), Some(1700));
        assert_eq!(queue.argument("x-delivery-limit"), Some(&Value::from(4)));
        assert_eq!(queue.policy("delivery-limit"), None);
        let fresh: QueueInfo = serde_json::from_str(r#"{"name":"new"}"#).unwrap();
        assert!(!fresh.sampled());
        assert!(fresh.durable());
    }
}
