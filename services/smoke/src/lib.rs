//! Smoke tests for the brokers that `scripts/services` runs.
//!
//! Each test in `tests/` makes one real round trip with a broker's own client
//! (lapin, rdkafka, aws-sdk-sqs, google-cloud-pubsub), not through wharf:
//! create a uniquely named queue or topic, publish a message with a header,
//! receive it, check payload and header, ack it and clean up. A failure here
//! means the harness or the machine is broken, not wharf.
//!
//! The tests read the same variables as the adapter tests and fall back to
//! the harness's addresses:
//!
//! | variable | default |
//! |---|---|
//! | `WHARF_RABBITMQ_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `WHARF_KAFKA_BROKERS` | `127.0.0.1:9092` |
//! | `WHARF_SQS_ENDPOINT` | `http://127.0.0.1:4566` |
//! | `PUBSUB_EMULATOR_HOST` | `127.0.0.1:8085` |
//!
//! ```text
//! scripts/services up
//! cargo test -p wharf-services-smoke
//! ```
//!
//! This library holds only the small helpers the tests share.

use std::time::Duration;

/// How long a test waits for any single broker operation before failing.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A local broker the smoke tests talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// RabbitMQ over AMQP 0-9-1.
    RabbitMq,
    /// Apache Kafka in KRaft mode.
    Kafka,
    /// SQS as served by LocalStack.
    Sqs,
    /// Google's Pub/Sub emulator.
    PubSub,
}

impl Service {
    /// The name `scripts/services` knows the service by.
    pub fn harness_name(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Kafka => "kafka",
            Self::Sqs => "sqs",
            Self::PubSub => "pubsub",
        }
    }

    /// The environment variable that points the tests at this service.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::RabbitMq => "WHARF_RABBITMQ_URL",
            Self::Kafka => "WHARF_KAFKA_BROKERS",
            Self::Sqs => "WHARF_SQS_ENDPOINT",
            Self::PubSub => "PUBSUB_EMULATOR_HOST",
        }
    }

    /// Where `scripts/services up` serves it.
    pub fn default_address(self) -> &'static str {
        match self {
            Self::RabbitMq => "amqp://guest:guest@127.0.0.1:5672/%2f",
            Self::Kafka => "127.0.0.1:9092",
            Self::Sqs => "http://127.0.0.1:4566",
            Self::PubSub => "127.0.0.1:8085",
        }
    }

    /// The address from the environment, or the harness default.
    pub fn address(self) -> String {
        std::env::var(self.env_var())
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| self.default_address().to_owned())
    }

    /// What to tell a person when a step against this service fails.
    pub fn hint(self) -> String {
        format!(
            "is {name} up at {address}? Run `scripts/services up {name}` \
             (then `scripts/services logs {name}`), or set {var} to your own broker",
            name = self.harness_name(),
            address = redact_credentials(&self.address()),
            var = self.env_var(),
        )
    }
}

/// The address without a `user:password@` part, fit for a failure message.
fn redact_credentials(address: &str) -> String {
    match (address.find("://"), address.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &address[..scheme_end + 3], &address[at..])
        }
        _ => address.to_owned(),
    }
}

/// A name no other test run uses: `prefix` plus a random suffix. Starts with a
/// letter and uses only `[a-z0-9-]`, which every broker here accepts.
pub fn unique_name(prefix: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &suffix[..12])
}

/// Await `step`, failing with the service's hint when it errs or exceeds
/// [`STEP_TIMEOUT`].
///
/// # Panics
///
/// When the step fails or times out; the message names the step, the error
/// and what to do.
pub async fn step<T, E, F>(service: Service, what: &str, step: F) -> T
where
    E: std::fmt::Debug,
    F: std::future::IntoFuture<Output = Result<T, E>>,
{
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what} failed: {error:?}\n{}", service.hint()),
        Err(_) => panic!(
            "{what} timed out after {STEP_TIMEOUT:?}\n{}",
            service.hint()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_credentials;

    #[test]
    fn failure_messages_hide_credentials_in_urls() {
        let redacted = redact_credentials("amqp://user:secret@127.0.0.1:5672/%2f");

        assert_eq!(redacted, "amqp://***@127.0.0.1:5672/%2f");
    }

    #[test]
    fn addresses_without_credentials_are_unchanged() {
        assert_eq!(redact_credentials("127.0.0.1:9092"), "127.0.0.1:9092");
    }
}
