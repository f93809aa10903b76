//! The doctor: compares how RabbitMQ is set up for one subscription with what the
//! application expects, and says what to change in RabbitMQ's own terms.
//!
//! Over AMQP alone it can tell only whether the exchanges and queues exist. With the
//! management API it also reads the queue's arguments, the policies in effect and the
//! bindings, and checks what an operator would: the queue is durable and neither
//! auto-delete nor exclusive; it is bound to its topic's exchange; its delivery limit
//! leaves room for every retry; the broker's dead letters have an exchange that routes
//! them to the queue wharf reads; wharf's own dead-letter exchange and queue are there
//! and bound; no TTL, expiry or length limit throws messages away; and the consumer
//! timeout outlasts the handler.
//!
//! Queue arguments cannot change once a queue exists, and a policy's limit only applies
//! where it is lower than the argument's, so each fix says which of the two to change.

use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use wharf_core::operations::doctor::missing;
use wharf_core::{ErrorKind, Expectations, Finding, Result};

use super::management::{QueueInfo, Unreachable};
use crate::backend::{RabbitMq, done};
use crate::error::{kind_of, map};
use crate::topology::{self, check_name, name};

/// RabbitMQ's default `consumer_timeout` since 3.8.15: a delivery unacknowledged for
/// longer makes the broker close its channel.
const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The delivery limit RabbitMQ 4.0 and later give a quorum queue that sets none.
const DEFAULT_DELIVERY_LIMIT_SINCE_4: i64 = 20;

impl RabbitMq {
    pub(crate) async fn check(&self, expected: &Expectations) -> Result<Vec<Finding>> {
        let spec = &expected.spec;
        check_name("subscription", &spec.name)?;
        check_name("topic", &spec.topic)?;

        let mut findings = Vec::new();
        let topic_exists = self.exchange_exists(&spec.topic).await?;
        if !topic_exists {
            let fix = "create it with create_topic (a durable fanout exchange)";
            findings.push(missing(&spec.topic, "topic exchange", fix));
        }
        if self.declared(&spec.name).await?.is_none() {
            let fix = "create it with create_subscription";
            findings.push(missing(&spec.name, "subscription queue", fix));
            return Ok(findings);
        }

        let management = self.management();
        let queue = match management.queue(&spec.name).await {
            Ok(Some(queue)) => queue,
            Ok(None) => {
                let unreachable = management.unknown_queue(&spec.name);
                findings.extend(self.check_over_amqp(expected, &unreachable).await?);
                return Ok(findings);
            }
            Err(unreachable) => {
                findings.extend(self.check_over_amqp(expected, &unreachable).await?);
                return Ok(findings);
            }
        };
        let major = management
            .version()
            .await
            .ok()
            .and_then(|v| major_version(&v));
        let mut checkup = Checkup {
            backend: self,
            expected,
            queue: &queue,
            major,
            findings,
        };
        checkup.run(topic_exists).await?;
        Ok(checkup.findings)
    }

    /// What can be checked without the management API, and a warning naming the rest.
    async fn check_over_amqp(
        &self,
        expected: &Expectations,
        unreachable: &Unreachable,
    ) -> Result<Vec<Finding>> {
        let subscription = expected.subscription();
        let mut findings = Vec::new();

        let exchange = topology::dead_letter_exchange(subscription);
        if !self.exchange_exists(&exchange).await? {
            findings.push(no_dead_letter_exchange(&exchange, expected));
        }
        let dead_letters = expected.spec.dead_letter_name();
        if self.declared(&dead_letters).await?.is_none() {
            findings.push(no_dead_letter_queue(&dead_letters));
        }
        findings.extend(consumer_timeout(subscription, None, expected));
        findings.push(Finding::warning(
            subscription,
            format!(
                "the delivery limit, dead-letter routing, bindings and policies of \
                 `{subscription}` are unchecked: {unreachable}"
            ),
            "enable the rabbitmq_management plugin (`rabbitmq-plugins enable \
             rabbitmq_management`) or set management_url, then run the doctor again",
        ));
        Ok(findings)
    }

    /// Whether the exchange exists, over AMQP. The default exchange always does.
    pub(crate) async fn exchange_exists(&self, exchange: &str) -> Result<bool> {
        if exchange.is_empty() {
            return Ok(true);
        }
        let exchange_name = name(exchange)?;
        let options = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };

        let channel = self.channel().await?;
        let kind = ExchangeKind::Fanout;
        let declared = channel
            .exchange_declare(exchange_name, kind, options, FieldTable::default())
            .await;
        done(channel).await;

        match declared {
            Ok(()) => Ok(true),
            Err(error) if kind_of(&error) == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(map(&format!("looking up exchange {exchange}"), error)),
        }
    }
}

/// The checks that read the management API, for one existing queue.
struct Checkup<'a> {
    backend: &'a RabbitMq,
    expected: &'a Expectations,
    queue: &'a QueueInfo,
    /// The broker's major version, if the API said.
    major: Option<u32>,
    findings: Vec<Finding>,
}

impl Checkup<'_> {
    async fn run(&mut self, topic_exists: bool) -> Result<()> {
        self.check_shape();
        if topic_exists {
            self.check_topic_binding().await;
        }
        self.check_delivery_limit();
        self.check_dead_letter_routing().await?;
        self.check_dead_letter_queue().await?;
        self.check_expiry();
        let timeout = setting(self.queue, "x-consumer-timeout", "consumer-timeout");
        let subject = self.queue.name.as_str();
        self.findings
            .extend(consumer_timeout(subject, timeout, self.expected));
        Ok(())
    }

    fn subject(&self) -> String {
        self.queue.name.clone()
    }

    fn check_shape(&mut self) {
        let subject = self.subject();
        let recreate = "delete the queue and create it again with create_subscription";
        if !self.queue.durable() {
            self.findings.push(Finding::warning(
                &subject,
                "the queue is not durable: it and its messages are lost when the broker \
                 restarts",
                recreate,
            ));
        }
        if self.queue.auto_delete() {
            self.findings.push(Finding::error(
                &subject,
                "the queue is auto-delete: the broker deletes it, with its messages, once its \
                 last consumer goes",
                recreate,
            ));
        }
        if self.queue.exclusive() {
            self.findings.push(Finding::error(
                &subject,
                "the queue is exclusive to one connection: no other worker can consume it, \
                 and it is deleted when that connection closes",
                recreate,
            ));
        }
    }

    async fn check_topic_binding(&mut self) {
        let topic = self.expected.spec.topic.clone();
        let subject = self.subject();
        let management = self.backend.management();
        let bindings = match management.queue_bindings(&subject).await {
            Ok(bindings) => bindings.unwrap_or_default(),
            Err(unreachable) => return self.unchecked(&subject, "its bindings", &unreachable),
        };

        let keys: Vec<&str> = bindings
            .iter()
            .filter(|binding| binding.source == topic)
            .map(|binding| binding.routing_key.as_str())
            .collect();
        if keys.is_empty() {
            self.findings.push(Finding::error(
                &subject,
                format!(
                    "the queue is not bound to exchange `{topic}`: messages published to \
                     topic `{topic}` never reach it"
                ),
                format!(
                    "bind it (queue.bind `{subject}` to `{topic}`, routing key `#` on a topic \
                     exchange), or create it again with create_subscription"
                ),
            ));
            return;
        }
        let exchange = match management.exchange(&topic).await {
            Ok(exchange) => exchange,
            Err(unreachable) => return self.unchecked(&topic, "its type", &unreachable),
        };
        let is_topic = exchange.is_some_and(|e| e.kind == "topic");
        if is_topic && !keys.contains(&"#") {
            self.findings.push(Finding::warning(
                &subject,
                format!(
                    "the queue is bound to topic exchange `{topic}` only with routing keys \
                     {keys:?}: it misses messages published with other keys, and wharf \
                     publishes with an empty one"
                ),
                format!("bind `{subject}` to `{topic}` with routing key `#`"),
            ));
        }
    }

    /// The delivery limit in effect: quorum queues only, `None` for none.
    fn delivery_limit(&self) -> Option<Setting> {
        if self.queue.kind != "quorum" {
            return None;
        }
        match setting(self.queue, "x-delivery-limit", "delivery-limit") {
            // RabbitMQ 4 reads a negative limit as no limit.
            Some(limit) if limit.value < 0 => None,
            Some(limit) => Some(limit),
            None if self.major.is_some_and(|major| major >= 4) => Some(Setting {
                value: DEFAULT_DELIVERY_LIMIT_SINCE_4,
                origin: Origin::Default,
            }),
            None => None,
        }
    }

    fn check_delivery_limit(&mut self) {
        let subject = self.subject();
        let attempts = self.expected.max_attempts;
        match self.delivery_limit() {
            Some(limit) => {
                // The broker counts returns: a limit of n allows n + 1 deliveries.
                let deliveries = limit.value.saturating_add(1);
                if deliveries < i64::from(attempts) {
                    let problem = format!(
                        "{} is {}: the broker dead-letters a message after {deliveries} \
                         deliveries, below the retry policy's {attempts} attempts",
                        limit.origin.name("x-delivery-limit", "delivery-limit"),
                        limit.value
                    );
                    let fix = limit_fix(limit.origin, &subject, attempts, deliveries);
                    self.findings.push(Finding::error(&subject, problem, fix));
                }
            }
            None if self.expected.spec.max_delivery_attempts.is_some() => {
                self.findings.push(self.no_delivery_limit(&subject));
            }
            None => {}
        }
    }

    fn no_delivery_limit(&self, subject: &str) -> Finding {
        let wanted = self.expected.spec.max_delivery_attempts.unwrap_or(1);
        let returns = wanted.saturating_sub(1);
        let (problem, fix) = if self.queue.kind == "quorum" {
            (
                "the queue has no delivery limit (x-delivery-limit)".to_owned(),
                format!(
                    "apply a policy with delivery-limit {returns} to `{subject}`, or delete it \
                     and create it again with max_delivery_attempts({wanted})"
                ),
            )
        } else {
            (
                format!(
                    "the queue is a {} queue, which has no delivery limit",
                    self.queue.kind
                ),
                format!(
                    "delete it and create it again as a quorum queue (x-queue-type quorum, \
                     x-delivery-limit {returns}) with create_subscription"
                ),
            )
        };
        Finding::warning(
            subject,
            format!(
                "{problem}: a message that crashes every consumer is delivered again \
                 forever, although the subscription expects the broker to dead-letter it \
                 after {wanted} deliveries"
            ),
            fix,
        )
    }

    /// The broker's own dead letters (delivery limit, rejections by other clients,
    /// expiry) go to the queue's dead-letter exchange, which must reach the queue wharf
    /// reads dead letters from.
    async fn check_dead_letter_routing(&mut self) -> Result<()> {
        let subject = self.subject();
        let ours = topology::dead_letter_exchange(&subject);
        let dead_letters = self.expected.spec.dead_letter_name();
        let exchange = text_setting(self.queue, "x-dead-letter-exchange", "dead-letter-exchange");

        let Some(exchange) = exchange else {
            self.findings
                .push(self.no_dead_letter_routing(&subject, &ours));
            return Ok(());
        };
        if !self.backend.exchange_exists(&exchange).await? {
            self.findings.push(Finding::error(
                &subject,
                format!(
                    "the queue's dead-letter exchange `{exchange}` (x-dead-letter-exchange) \
                     does not exist: the broker drops every message it dead-letters"
                ),
                format!(
                    "declare exchange `{exchange}` and bind `{dead_letters}` to it, or point \
                     the queue at `{ours}` with a policy's dead-letter-exchange"
                ),
            ));
            return Ok(());
        }
        if exchange == ours || exchange.is_empty() {
            return Ok(());
        }
        match self.routes_to(&exchange, &dead_letters).await {
            Ok(true) => {}
            Ok(false) => self.findings.push(Finding::warning(
                &subject,
                format!(
                    "the broker dead-letters to `{exchange}` (x-dead-letter-exchange), which \
                     does not route to `{dead_letters}`: the dead-letter subscriber, peek and \
                     redrive never see what the broker dead-letters"
                ),
                format!(
                    "bind `{dead_letters}` to `{exchange}`, or point the queue at `{ours}` \
                     with a policy's dead-letter-exchange"
                ),
            )),
            Err(unreachable) => self.unchecked(&exchange, "its bindings", &unreachable),
        }
        Ok(())
    }

    fn no_dead_letter_routing(&self, subject: &str, ours: &str) -> Finding {
        let fix = format!(
            "queue arguments cannot change: apply a policy with dead-letter-exchange `{ours}` \
             to `{subject}`, or delete the queue and create it again with create_subscription \
             (which sets x-dead-letter-exchange = {ours})"
        );
        match self.delivery_limit() {
            Some(limit) => Finding::error(
                subject,
                format!(
                    "the queue has no dead-letter exchange (x-dead-letter-exchange): messages \
                     that reach its delivery limit of {} returns are dropped",
                    limit.value
                ),
                fix,
            ),
            None => Finding::warning(
                subject,
                "the queue has no dead-letter exchange (x-dead-letter-exchange): messages \
                 the broker dead-letters (rejected by another client, expired, over a length \
                 limit) are dropped",
                fix,
            ),
        }
    }

    /// wharf's own dead letters go to `<subscription>.dlx`, bound to the dead-letter
    /// queue; that queue must keep them.
    async fn check_dead_letter_queue(&mut self) -> Result<()> {
        let ours = topology::dead_letter_exchange(&self.queue.name);
        let dead_letters = self.expected.spec.dead_letter_name();
        let exchange_exists = self.backend.exchange_exists(&ours).await?;
        if !exchange_exists {
            self.findings
                .push(no_dead_letter_exchange(&ours, self.expected));
        }

        let queue = match self.backend.management().queue(&dead_letters).await {
            Ok(Some(queue)) => queue,
            Ok(None) => {
                self.findings.push(no_dead_letter_queue(&dead_letters));
                return Ok(());
            }
            Err(unreachable) => {
                self.unchecked(&dead_letters, "its arguments", &unreachable);
                return Ok(());
            }
        };
        if exchange_exists {
            match self.routes_to(&ours, &dead_letters).await {
                Ok(true) => {}
                Ok(false) => self.findings.push(Finding::error(
                    &dead_letters,
                    format!(
                        "the dead-letter queue is not bound to `{ours}`: wharf's dead letters \
                         are returned as unroutable, so dead-lettering fails"
                    ),
                    format!(
                        "bind it (queue.bind `{dead_letters}` to `{ours}`), or create the \
                         subscription again with create_subscription"
                    ),
                )),
                Err(unreachable) => self.unchecked(&ours, "its bindings", &unreachable),
            }
        }
        self.check_dead_letter_retention(&queue);
        Ok(())
    }

    /// A dead-letter queue has no dead-letter exchange of its own: whatever it drops is
    /// gone.
    fn check_dead_letter_retention(&mut self, queue: &QueueInfo) {
        let subject = queue.name.clone();
        let limits = [
            (
                "x-message-ttl",
                "message-ttl",
                "expire after that many milliseconds",
            ),
            ("x-max-length", "max-length", "beyond that many are dropped"),
            (
                "x-max-length-bytes",
                "max-length-bytes",
                "beyond that many bytes are dropped",
            ),
        ];
        for (argument, policy, effect) in limits {
            if let Some(limit) = setting(queue, argument, policy) {
                self.findings.push(Finding::warning(
                    &subject,
                    format!(
                        "{} is {}: dead letters {effect}, unseen",
                        limit.origin.name(argument, policy),
                        limit.value
                    ),
                    format!("remove {}", limit.origin.name(argument, policy)),
                ));
            }
        }

        let unlimited_by_default = queue.kind == "quorum"
            && self.major.is_some_and(|major| major >= 4)
            && setting(queue, "x-delivery-limit", "delivery-limit").is_none();
        if unlimited_by_default {
            self.findings.push(Finding::warning(
                &subject,
                format!(
                    "the quorum dead-letter queue has RabbitMQ 4's default delivery limit of \
                     {DEFAULT_DELIVERY_LIMIT_SINCE_4}: every peek and every dead letter a \
                     redrive skips counts as a delivery, and past the limit the dead letter \
                     is dropped"
                ),
                format!("apply a policy with delivery-limit -1 (no limit) to `{subject}`"),
            ));
        }
    }

    /// A TTL, an expiry or a length limit on the work queue throws messages away before
    /// any handler saw them.
    fn check_expiry(&mut self) {
        let subject = self.subject();
        if let Some(ttl) = setting(self.queue, "x-message-ttl", "message-ttl") {
            let name = ttl.origin.name("x-message-ttl", "message-ttl");
            self.findings.push(Finding::warning(
                &subject,
                format!(
                    "{name} is {} ms: messages waiting longer expire unprocessed and reach the \
                     dead-letter queue without wharf's envelope",
                    ttl.value
                ),
                format!("remove {name}, or raise it above the longest backlog you expect"),
            ));
        }
        if let Some(expires) = setting(self.queue, "x-expires", "expires") {
            let name = expires.origin.name("x-expires", "expires");
            self.findings.push(Finding::error(
                &subject,
                format!(
                    "{name} is {} ms: the broker deletes the queue, with its messages, once \
                     it has gone that long without consumers",
                    expires.value
                ),
                format!("remove {name} (a queue argument means creating the queue again)"),
            ));
        }
        for (argument, policy) in [
            ("x-max-length", "max-length"),
            ("x-max-length-bytes", "max-length-bytes"),
        ] {
            if let Some(limit) = setting(self.queue, argument, policy) {
                let name = limit.origin.name(argument, policy);
                self.findings.push(Finding::warning(
                    &subject,
                    format!(
                        "{name} is {}: past it the broker drops or dead-letters the oldest \
                         messages, or refuses new ones (x-overflow)",
                        limit.value
                    ),
                    format!("raise or remove {name} if the backlog may grow that far"),
                ));
            }
        }
    }

    async fn routes_to(
        &self,
        exchange: &str,
        queue: &str,
    ) -> std::result::Result<bool, Unreachable> {
        let bindings = self
            .backend
            .management()
            .exchange_bindings(exchange)
            .await?;
        Ok(bindings
            .unwrap_or_default()
            .iter()
            .any(|binding| binding.destination == queue && binding.destination_type == "queue"))
    }

    fn unchecked(&mut self, subject: &str, what: &str, unreachable: &Unreachable) {
        self.findings.push(Finding::warning(
            subject,
            format!("could not read {what} of `{subject}`: {unreachable}"),
            "make the management API reachable (see the problem), then run the doctor again",
        ));
    }
}

/// Where a setting in effect comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A queue argument, fixed when the queue was declared.
    Argument,
    /// A policy (or an operator policy) that applies to the queue.
    Policy,
    /// The broker's default.
    Default,
}

impl Origin {
    /// The setting's name as an operator knows it.
    fn name(self, argument: &str, policy: &str) -> String {
        match self {
            Self::Argument => format!("the queue argument {argument}"),
            Self::Policy => format!("the policy's {policy}"),
            Self::Default => format!("RabbitMQ 4's default {policy}"),
        }
    }
}

/// A numeric setting in effect, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setting {
    value: i64,
    origin: Origin,
}

/// A numeric limit in effect: the lower of the queue argument and the policy's value,
/// as RabbitMQ applies limits.
fn setting(queue: &QueueInfo, argument: &str, policy: &str) -> Option<Setting> {
    let declared = queue
        .argument(argument)
        .and_then(Value::as_i64)
        .map(|value| Setting {
            value,
            origin: Origin::Argument,
        });
    let applied = queue
        .policy(policy)
        .and_then(Value::as_i64)
        .map(|value| Setting {
            value,
            origin: Origin::Policy,
        });
    match (declared, applied) {
        (Some(declared), Some(applied)) if applied.value < declared.value => Some(applied),
        (Some(declared), _) => Some(declared),
        (None, applied) => applied,
    }
}

/// A text setting in effect: the queue argument wins over the policy.
fn text_setting(queue: &QueueInfo, argument: &str, policy: &str) -> Option<String> {
    queue
        .argument(argument)
        .or_else(|| queue.policy(policy))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// How to make room for `attempts` deliveries, depending on where the limit comes from.
fn limit_fix(origin: Origin, queue: &str, attempts: u32, deliveries: i64) -> String {
    let returns = attempts.saturating_sub(1);
    let lower = format!("or lower the retry policy to {deliveries} attempts");
    match origin {
        Origin::Argument => format!(
            "queue arguments cannot change and a policy can only lower the limit: delete \
             `{queue}` and create it again with max_delivery_attempts({attempts}) \
             (x-delivery-limit {returns}), {lower}"
        ),
        Origin::Policy => format!(
            "raise the policy's delivery-limit to at least {returns} ({attempts} \
             deliveries), {lower}"
        ),
        Origin::Default => format!(
            "set x-delivery-limit to at least {returns}: create the queue with \
             max_delivery_attempts({attempts}), or apply a policy with delivery-limit \
             {returns}; {lower}"
        ),
    }
}

/// A handler that outlives the consumer timeout loses its delivery: the broker closes
/// the channel, redelivers the message and refuses the late ack.
fn consumer_timeout(
    subject: &str,
    timeout: Option<Setting>,
    expected: &Expectations,
) -> Option<Finding> {
    let handler = expected.handler_timeout;
    let shown = humantime::format_duration(handler);
    let millis = handler.as_millis();
    match timeout {
        Some(timeout) if timeout.value >= 0 => {
            let limit = Duration::from_millis(timeout.value.unsigned_abs());
            let name = timeout
                .origin
                .name("x-consumer-timeout", "consumer-timeout");
            (limit < handler).then(|| {
                Finding::error(
                    subject,
                    format!(
                        "{name} is {} ms, shorter than the handler timeout of {shown}: the \
                         broker closes the channel of a delivery held longer, the message is \
                         delivered again and the late ack fails",
                        timeout.value
                    ),
                    format!("raise {name} to at least {millis}, or shorten the handler timeout"),
                )
            })
        }
        _ => (handler > DEFAULT_CONSUMER_TIMEOUT).then(|| {
            Finding::warning(
                subject,
                format!(
                    "the broker's consumer_timeout cannot be read over AMQP or the management \
                     API, and its default of 30m is shorter than the handler timeout of \
                     {shown}: a delivery held longer has its channel closed and is delivered \
                     again"
                ),
                format!(
                    "make sure consumer_timeout in rabbitmq.conf is at least {millis} \
                     (milliseconds), or on RabbitMQ 3.12 and later set x-consumer-timeout or \
                     a policy's consumer-timeout on the queue; or shorten the handler timeout"
                ),
            )
        }),
    }
}

fn no_dead_letter_exchange(exchange: &str, expected: &Expectations) -> Finding {
    let dead_letters = expected.spec.dead_letter_name();
    Finding::error(
        exchange,
        format!(
            "exchange `{exchange}` does not exist: wharf's dead_letter publishes there, so \
             dead-lettering fails and the message is delivered again instead"
        ),
        format!(
            "create the subscription again with create_subscription, which declares it (a \
             durable fanout exchange bound to `{dead_letters}`)"
        ),
    )
}

fn no_dead_letter_queue(dead_letters: &str) -> Finding {
    missing(
        dead_letters,
        "dead-letter queue",
        "create the subscription again with create_subscription, which declares it",
    )
}

fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::{RetryPolicy, Severity, SubscriptionSpec};

    fn queue(json: &str) -> QueueInfo {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_lower_of_argument_and_policy_applies() {
        let both = queue(
            r#"{"name":"q","arguments":{"x-delivery-limit":9},
                "effective_policy_definition":{"delivery-limit":3}}"#,
        );
        let argument = queue(r#"{"name":"q","arguments":{"x-delivery-limit":2}}"#);

        let limit = setting(&both, "x-delivery-limit", "delivery-limit").unwrap();
        assert_eq!((limit.value, limit.origin), (3, Origin::Policy));
        let limit = setting(&argument, "x-delivery-limit", "delivery-limit").unwrap();
        assert_eq!((limit.value, limit.origin), (2, Origin::Argument));
    }

    #[test]
    fn a_consumer_timeout_below_the_handler_timeout_is_an_error() {
        let policy = RetryPolicy::default();
        let expected = Expectations::from_policy(
            SubscriptionSpec::new("orders", "billing"),
            &policy,
            Duration::from_secs(120),
        );
        let short = Setting {
            value: 60_000,
            origin: Origin::Argument,
        };

        let finding = consumer_timeout("billing", Some(short), &expected).unwrap();

        assert_eq!(finding.severity, Severity::Error);
        assert!(finding.fix.contains("x-consumer-timeout"), "{finding}");
        assert!(finding.fix.contains("120000"), "{finding}");
        assert_eq!(consumer_timeout("billing", None, &expected), None);
    }

    #[test]
    fn versions_read_their_major_number() {
        assert_eq!(major_version("3.10.8"), Some(3));
        assert_eq!(major_version("4.1.0-rc.1"), Some(4));
        assert_eq!(major_version("unknown"), None);
    }
}
