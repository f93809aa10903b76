//! What the command-line tests share: the URL of each broker the service harness runs,
//! queues created through the library, and running the built `wharf` binary.

#![allow(dead_code, unreachable_pub)]

use std::panic::AssertUnwindSafe;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use futures::FutureExt;
use serde_json::Value;
use wharf::{Backend, ErrorKind, SubscriptionSpec};

/// The settings variables the `wharf` crate reads; removed from the command's
/// environment so only what a test passes counts.
const SETTINGS_VARIABLES: [&str; 10] = [
    "WHARF_URL",
    "WHARF_CONFIG",
    "WHARF_TOPIC",
    "WHARF_SUBSCRIPTION",
    "WHARF_DEAD_LETTER",
    "WHARF_CREATE_IF_MISSING",
    "WHARF_CONCURRENCY",
    "WHARF_LEASE",
    "WHARF_RETRY__MAX_ATTEMPTS",
    "WHARF_LOG",
];

/// How long a broker may take to show a change: SQS counts approximately and Kafka
/// commits asynchronously.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The RabbitMQ under test: `WHARF_RABBITMQ_URL`, or the harness's local default.
pub fn rabbitmq_url() -> String {
    env_or(
        "WHARF_RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// The Kafka under test: `WHARF_KAFKA_URL`, or the brokers in `WHARF_KAFKA_BROKERS`
/// (default: the harness's local broker).
pub fn kafka_url() -> String {
    std::env::var("WHARF_KAFKA_URL").unwrap_or_else(|_| {
        format!(
            "kafka://{}",
            env_or("WHARF_KAFKA_BROKERS", "127.0.0.1:9092")
        )
    })
}

/// The SQS under test: `WHARF_SQS_URL`, or LocalStack at `WHARF_SQS_ENDPOINT` (default:
/// the harness's local one) with the dummy credentials it accepts.
pub fn sqs_url() -> String {
    std::env::var("WHARF_SQS_URL").unwrap_or_else(|_| {
        let endpoint = env_or("WHARF_SQS_ENDPOINT", "http://127.0.0.1:4566");
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        format!("sqs://test:test@{host}?region=us-east-1")
    })
}

/// The Pub/Sub under test: `WHARF_PUBSUB_URL`, or the emulator at
/// `PUBSUB_EMULATOR_HOST` (default: the harness's local one).
pub fn pubsub_url() -> String {
    std::env::var("WHARF_PUBSUB_URL").unwrap_or_else(|_| {
        let host = env_or("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085");
        format!("pubsub://wharf-test?emulator={host}")
    })
}

fn env_or(variable: &str, default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A name no other test run uses.
pub fn unique(case: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("wharf-cli-{case}-{}", &random[..12])
}

/// A topic with one subscription, created through the library, deleted by
/// [`Queue::run`].
pub struct Queue {
    pub url: String,
    pub backend: Arc<dyn Backend>,
    pub topic: String,
    pub subscription: String,
}

impl Queue {
    /// A fresh topic and subscription on the broker at `url`, named after `case`.
    pub async fn new(url: &str, case: &str) -> Self {
        let backend = wharf::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach the broker at {} ({e}); start it with `scripts/services up`",
                wharf::redact(url)
            )
        });
        let topic = unique(case);
        let caps = backend.capabilities();
        let subscription = caps
            .subscription_name(&topic, &format!("{topic}-sub"))
            .to_owned();
        backend.create_topic(&topic).await.expect("create topic");
        let spec = SubscriptionSpec::new(&topic, &subscription);
        backend
            .create_subscription(&spec)
            .await
            .expect("create subscription");

        Self {
            url: url.to_owned(),
            backend,
            topic,
            subscription,
        }
    }

    /// Runs the test body, then deletes the subscription and topic, also when the body
    /// panicked; the panic is then resumed.
    pub async fn run(self, body: impl AsyncFnOnce(&Queue)) {
        let outcome = AssertUnwindSafe(body(&self)).catch_unwind().await;

        for (what, result) in [
            (
                "subscription",
                self.backend.delete_subscription(&self.subscription).await,
            ),
            ("topic", self.backend.delete_topic(&self.topic).await),
        ] {
            // A backend without fan-out deletes the topic's queue with its subscription.
            if let Err(error) = result
                && error.kind() != ErrorKind::NotFound
            {
                eprintln!("cleanup: deleting {what} failed: {error}");
            }
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `wharf --url URL ARGS...`.
    pub async fn wharf(&self, args: &[&str]) -> Run {
        wharf_with(Some(&self.url), args, None).await
    }

    /// Runs `wharf --url URL ARGS...` with `stdin` as its standard input.
    pub async fn wharf_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        wharf_with(Some(&self.url), args, Some(stdin.to_vec())).await
    }
}

/// Runs the built `wharf` binary with `--url url` (if given) and `args`, without the
/// settings variables of this process, off the async runtime's threads.
pub async fn wharf_with(url: Option<&str>, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    let mut argv: Vec<String> = url
        .map(|u| vec!["--url".to_owned(), u.to_owned()])
        .unwrap_or_default();
    argv.extend(args.iter().map(|a| (*a).to_owned()));

    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        for variable in SETTINGS_VARIABLES {
            command.env_remove(variable);
        }
        command
            .args(&argv)
            .write_stdin(stdin.unwrap_or_default())
            .timeout(Duration::from_secs(120));
        command.output().expect("the wharf binary runs")
    })
    .await
    .expect("the command's thread");
    Run {
        args: args.join(" "),
        output,
    }
}

/// What one run of the command printed and how it exited.
pub struct Run {
    pub args: String,
    pub output: Output,
}

impl Run {
    /// The exit code.
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, showing everything the command printed if it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "`wharf {}` exited with {} instead of {code}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Asserts success.
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Standard output parsed as the one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "`wharf {}` printed no JSON document ({e})\nstdout:\n{}\nstderr:\n{}",
                self.args,
                self.stdout(),
                self.stderr()
            )
        })
    }
}

/// Calls `check` until it returns `Some`, or panics with `what` after [`SETTLE`].
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
