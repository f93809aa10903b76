//! What the RabbitMQ adapter promises beyond the conformance suite: it carries on after
//! the broker closes its connection, and an idle subscriber hands its buffer back.
//!
//! The connection is closed from the server side with `rabbitmqctl close_connection`,
//! picking only this test's connection by its unique connection name, so tests running
//! in parallel on the same broker are not disturbed. `rabbitmqctl` is the service
//! harness's (`scripts/services`), or the command in `WHARF_RABBITMQCTL`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use wharf_core::{Backend, Message, SubscriptionSpec};
use wharf_rabbitmq::{RabbitMq, RabbitMqConfig};

use common::{ARRIVAL, connect, unique};

/// A topic with one subscription on `backend`, named after `case`.
async fn arrange(backend: &RabbitMq, case: &str) -> SubscriptionSpec {
    let topic = unique(case);
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, unique(&format!("{case}-s")));
    backend.create_subscription(&spec).await.unwrap();
    spec
}

async fn clean_up(backend: &RabbitMq, spec: &SubscriptionSpec) {
    backend.delete_subscription(&spec.name).await.unwrap();
    backend.delete_topic(&spec.topic).await.unwrap();
}

/// `rabbitmqctl` with the environment that finds the harness's node.
fn rabbitmqctl() -> Command {
    if let Ok(command) = std::env::var("WHARF_RABBITMQCTL") {
        return Command::new(command);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
    command
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env(
            "RABBITMQ_CONF_ENV_FILE",
            root.join(".services/rabbitmq/rabbitmq-env.conf"),
        )
        .arg("-q");
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run rabbitmqctl ({e}); start the broker with `scripts/services up \
             rabbitmq` or set WHARF_RABBITMQCTL"
        )
    });
    assert!(
        output.status.success(),
        "rabbitmqctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The Erlang pids of the connections named `name`. rabbitmqctl's table lists each
/// connection's pid and its client properties as an Erlang term, which holds
/// `{"connection_name","NAME"}`; its JSON output turns pids into a form
/// `close_connection` does not accept.
fn connections_named(name: &str) -> Vec<String> {
    let listing = run(rabbitmqctl().args(["list_connections", "pid", "client_properties"]));
    let property = format!("{{\"connection_name\",\"{name}\"}}");

    listing
        .lines()
        .filter(|line| line.starts_with('<') && line.contains(&property))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

/// Closes, from the broker's side, every connection named `name`; returns how many.
fn close_connections_named(name: &str) -> usize {
    let pids = connections_named(name);
    for pid in &pids {
        run(rabbitmqctl().args(["close_connection", pid, "closed by a wharf test"]));
    }
    pids.len()
}

/// Publishes until the broker confirms, allowing only retryable failures.
async fn publish_until_confirmed(publisher: &wharf_core::Publisher, message: Message) -> u32 {
    let deadline = Instant::now() + ARRIVAL;
    let mut failures = 0;
    loop {
        match publisher.publish(message.clone()).await {
            Ok(_) => return failures,
            Err(failed) => {
                assert!(
                    failed.error.is_retryable(),
                    "a lost connection must fail retryably: {}",
                    failed.error
                );
                assert!(
                    Instant::now() < deadline,
                    "never reconnected: {}",
                    failed.error
                );
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Receives one delivery, allowing only retryable faults while the consumer recovers.
async fn receive_through_faults(subscriber: &wharf_core::Subscriber) -> wharf_core::Delivery {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing arrived after reconnecting"
        );
        match subscriber.receive_one(Duration::from_millis(500)).await {
            Ok(Some(delivery)) => return delivery,
            Ok(None) => {}
            Err(error) => assert!(error.is_retryable(), "consumer fault: {error}"),
        }
    }
}

#[tokio::test]
async fn publishing_and_consuming_carry_on_after_the_broker_closes_the_connection() {
    let name = unique("reconnect");
    let config = RabbitMqConfig::from_env()
        .connection_name(&name)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let backend = connect(config).await;
    let spec = arrange(&backend, "reconnect").await;
    let publisher = backend.publisher(&spec.topic).await.unwrap();
    let subscriber = backend.subscriber(&spec.name).await.unwrap();
    publisher.publish(Message::new("before")).await.unwrap();
    let before = subscriber
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("before");
    before.ack().await.unwrap();
    let old = backend.connection().await.unwrap();

    let closed = close_connections_named(&name);
    let deadline = Instant::now() + ARRIVAL;
    while old.status().connected() {
        assert!(
            Instant::now() < deadline,
            "the broker did not close the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_until_confirmed(&publisher, Message::new("after")).await;
    let after = receive_through_faults(&subscriber).await;

    assert_eq!(closed, 1, "exactly this backend's connection was closed");
    assert_eq!(&after.payload()[..], b"after");
    assert_eq!(after.attempt(), 1);
    after.ack().await.unwrap();
    let new = backend.connection().await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&old, &new), "a new connection");
    assert_eq!(
        connections_named(&name).len(),
        1,
        "one live connection again"
    );
    subscriber.close().await.unwrap();
    clean_up(&backend, &spec).await;
}

#[tokio::test]
async fn an_idle_subscriber_hands_its_buffer_to_another_consumer() {
    let config = RabbitMqConfig::from_env().idle_release(Duration::from_millis(500));
    let backend = connect(config).await;
    let spec = arrange(&backend, "idle").await;
    let publisher = backend.publisher(&spec.topic).await.unwrap();
    let messages = (0..5).map(|i| Message::new(i.to_string())).collect();
    for result in publisher.publish_batch(messages).await {
        result.unwrap();
    }
    let idle = backend.subscriber(&spec.name).await.unwrap();
    let first = idle.receive_one(ARRIVAL).await.unwrap().expect("first");
    first.ack().await.unwrap();

    let other = backend.subscriber(&spec.name).await.unwrap();
    let mut rest = Vec::new();
    let deadline = Instant::now() + ARRIVAL;
    while rest.len() < 4 && Instant::now() < deadline {
        rest.extend(other.receive(4, Duration::from_millis(500)).await.unwrap());
    }

    assert_eq!(rest.len(), 4, "the idle subscriber kept some of the buffer");
    for delivery in rest {
        assert_eq!(
            delivery.attempt(),
            1,
            "a handed-back message was never seen"
        );
        delivery.ack().await.unwrap();
    }
    idle.close().await.unwrap();
    other.close().await.unwrap();
    clean_up(&backend, &spec).await;
}
