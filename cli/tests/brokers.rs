//! The `wharf` command against each real broker: queues are created through the
//! library, then the command publishes, tails, reads stats, works the dead letters and
//! checks the setup. The URLs fall back to the service harness's local brokers, so these
//! tests always run (start them with `scripts/services up`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use wharf::operations::dead_letters::REDRIVE_COUNT;
use wharf::{Delivery, Envelope, Message};

use common::{Queue, eventually};

/// How long a published message may take to reach a receiver.
const ARRIVAL: Duration = Duration::from_secs(20);

/// `--wait` for a tail that expects messages: longer than the 30 s lease, because the
/// Pub/Sub emulator sometimes hands a message to the stream of a consumer that just
/// closed, and it comes back only when that lease runs out. A tail returns as soon as
/// its messages arrived, so this costs time only then.
const PATIENCE: &str = "40s";

macro_rules! broker_tests {
    ($($backend:ident => $url:path),* $(,)?) => {$(
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_then_tail_peeks_and_consumes() {
                super::publish_then_tail_peeks_and_consumes(&$url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tail_raw_writes_the_payload_bytes_alone() {
                super::tail_raw_writes_the_payload_bytes_alone(&$url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stats_show_the_backlog_grow() {
                super::stats_show_the_backlog_grow(&$url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letters_are_peeked_counted_redriven_and_purged() {
                super::dead_letters_are_peeked_counted_redriven_and_purged(&$url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn doctor_passes_a_clean_setup_and_fails_a_missing_one() {
                super::doctor_passes_a_clean_setup_and_fails_a_missing_one(&$url()).await;
            }
        }
    )*};
}

broker_tests! {
    rabbitmq => crate::common::rabbitmq_url,
    kafka => crate::common::kafka_url,
    sqs => crate::common::sqs_url,
    pubsub => crate::common::pubsub_url,
}

/// Publishing from an argument, a file and standard input reaches the subscription;
/// a peek shows the messages and leaves them, a consume takes them away.
async fn publish_then_tail_peeks_and_consumes(url: &str) {
    Queue::new(url, "tail")
        .await
        .run(async |queue: &Queue| {
            let topic = queue.topic.as_str();
            let sub = queue.subscription.as_str();
            let file = tempfile::NamedTempFile::new().expect("a temporary file");
            std::fs::write(file.path(), b"from-file\x00\xff").expect("write the file");
            let path = file.path().to_str().expect("a UTF-8 path");

            let argument = queue
                .wharf(&["publish", "--topic", topic, "hello", "-a", "tenant=acme"])
                .await;
            let from_file = queue.wharf(&["publish", "-t", topic, "--file", path]).await;
            let lines = queue
                .wharf_stdin(
                    &["publish", "-t", topic, "--lines", "--json", "-"],
                    b"l1\nl2\n",
                )
                .await;

            argument.success();
            assert!(
                argument.stderr().contains("published 1 message"),
                "{}",
                argument.stderr()
            );
            from_file.success();
            assert_eq!(lines.success().json()["published"], 2);

            if backend_name(queue) == "kafka" {
                // Handing a record back would re-publish it: Kafka refuses the peek.
                let refused = queue.wharf(&["tail", "-s", sub, "--peek"]).await;
                let stderr = refused.expect_code(6).stderr();
                assert!(stderr.contains("--dead-letters"), "{stderr}");
            } else {
                peek_leaves_them(queue, sub).await;
            }

            let consumed = tail(queue, &["--consume", "--count", "4"]).await;
            assert_eq!(
                payloads(&consumed),
                expected_payloads(),
                "the peeks left them all"
            );
            let left = tail(queue, &["--consume", "--count", "1", "--wait", "3s"]).await;
            assert!(
                left.is_empty(),
                "consumed messages are gone, but tail shows {left:?}"
            );
        })
        .await;
}

/// `tail --peek` and a plain `tail` show every message with its attributes, in JSON and
/// as text, and leave them for the consume that follows.
async fn peek_leaves_them(queue: &Queue, sub: &str) {
    let peeked = tail(queue, &["--peek", "--count", "4"]).await;
    assert_eq!(
        payloads(&peeked),
        expected_payloads(),
        "peek shows every published message"
    );
    let hello = peeked
        .iter()
        .find(|m| m["payload"] == "hello")
        .expect("hello");
    assert_eq!(hello["attributes"]["tenant"], "acme");

    let text = queue
        .wharf(&["tail", "-s", sub, "-n", "4", "--wait", PATIENCE])
        .await;
    assert!(
        text.success().stdout().contains("attribute tenant = acme"),
        "{}",
        text.stdout()
    );
}

fn backend_name(queue: &Queue) -> &'static str {
    queue.backend.capabilities().backend
}

/// `tail --raw` writes the payload's bytes and nothing else.
///
/// On a queue of its own: the Pub/Sub emulator hands a message published just after a
/// consumer closed to that consumer's stream, so it would arrive only after the lease.
async fn tail_raw_writes_the_payload_bytes_alone(url: &str) {
    Queue::new(url, "raw")
        .await
        .run(async |queue: &Queue| {
            let sub = queue.subscription.as_str();
            queue
                .wharf(&["publish", "-t", &queue.topic, "raw\x01bytes"])
                .await
                .success();

            let raw = queue
                .wharf(&[
                    "tail",
                    "-s",
                    sub,
                    "--consume",
                    "-n",
                    "1",
                    "--raw",
                    "--wait",
                    PATIENCE,
                ])
                .await;

            assert_eq!(raw.success().output.stdout, b"raw\x01bytes");
        })
        .await;
}

/// `tail --json` of the queue's subscription with `options` (waiting [`PATIENCE`]
/// unless they say otherwise).
async fn tail(queue: &Queue, options: &[&str]) -> Vec<Value> {
    let mut args = vec!["tail", "--json", "-s", queue.subscription.as_str()];
    if !options.contains(&"--wait") {
        args.extend(["--wait", PATIENCE]);
    }
    args.extend(options);
    let run = queue.wharf(&args).await;
    let document = run.success().json();
    document["messages"]
        .as_array()
        .expect("a messages array")
        .clone()
}

fn payloads(messages: &[Value]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["payload_encoding"].as_str().unwrap(),
                m["payload"].as_str().unwrap()
            )
        })
        .collect()
}

fn expected_payloads() -> BTreeSet<String> {
    [
        "utf8:hello",
        "base64:ZnJvbS1maWxlAP8=",
        "utf8:l1",
        "utf8:l2",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// `stats --json` shows the backlog grow with what the command published, or says why
/// a backend without backlog stats cannot.
async fn stats_show_the_backlog_grow(url: &str) {
    Queue::new(url, "stats")
        .await
        .run(async |queue: &Queue| {
            let sub = queue.subscription.as_str();
            let before = stats(queue).await;
            if !queue.backend.capabilities().backlog_stats {
                assert!(before["backlog"].is_null(), "{before}");
                assert!(
                    before["unknown"]["backlog"].is_string(),
                    "the reason: {before}"
                );
                return;
            }
            assert_eq!(before["backlog"], 0, "a new subscription: {before}");

            queue
                .wharf_stdin(
                    &["publish", "-t", &queue.topic, "--lines", "-"],
                    b"1\n2\n3\n4\n5\n",
                )
                .await
                .success();

            let grown = eventually("a backlog of 5", async || {
                let row = stats(queue).await;
                (row["backlog"] == 5).then_some(row)
            })
            .await;
            assert_eq!(grown["subscription"], sub);
            for figure in [
                "ready",
                "in_flight",
                "delayed",
                "dead_lettered",
                "consumer_lag",
            ] {
                if grown[figure].is_null() {
                    assert!(
                        grown["unknown"][figure].is_string(),
                        "a reason for {figure}: {grown}"
                    );
                }
            }
            let table = queue.wharf(&["stats", "-s", sub]).await;
            let text = table.success().stdout();
            assert!(text.contains("Backlog") && text.contains(sub), "{text}");
        })
        .await;
}

/// The one row of `stats --json` for the queue's subscription.
async fn stats(queue: &Queue) -> Value {
    let run = queue
        .wharf(&["stats", "--json", "-s", &queue.subscription])
        .await;
    let document = run.success().json();
    document["subscriptions"][0].clone()
}

/// Dead letters made through the library show in `dlq peek` and `dlq count`; a filtered
/// `dlq redrive` returns the matching ones intact; `dlq purge` refuses without --yes
/// and then removes the rest.
async fn dead_letters_are_peeked_counted_redriven_and_purged(url: &str) {
    Queue::new(url, "dlq")
        .await
        .run(async |queue: &Queue| {
            let sub = queue.subscription.as_str();
            let sent = dead_letter_orders(queue).await;

            let peeked = eventually("4 dead letters in peek", async || {
                let run = queue
                    .wharf(&["dlq", "peek", "--json", "-s", sub, "-n", "10"])
                    .await;
                let messages = run.success().json()["messages"].as_array()?.clone();
                (messages.len() == 4).then_some(messages)
            })
            .await;
            for letter in &peeked {
                assert_eq!(letter["dead_letter"]["reason"], "out of stock", "{letter}");
                assert_eq!(
                    letter["payload_encoding"], "base64",
                    "binary payloads: {letter}"
                );
            }
            check_count(queue, 4).await;

            let run = queue
                .wharf(&[
                    "dlq",
                    "redrive",
                    "--json",
                    "-s",
                    sub,
                    "--where",
                    "tenant=acme",
                    "--idle",
                    "3s",
                ])
                .await;
            let report = run.success().json();
            assert_eq!(
                (&report["redriven"], &report["skipped"]),
                (&Value::from(2), &Value::from(2)),
                "{report}"
            );
            check_redriven(queue, &sent).await;

            let refused = queue.wharf(&["dlq", "purge", "-s", sub]).await;
            assert!(
                refused.expect_code(2).stderr().contains("--yes"),
                "{}",
                refused.stderr()
            );
            let purged = queue
                .wharf(&["dlq", "purge", "--json", "--yes", "-s", sub])
                .await;
            let purged = purged.success().json();
            // PurgeQueue and Pub/Sub's seek do not say how many they removed.
            match backend_name(queue) {
                "sqs" | "pubsub" => assert!(purged["unknown"]["purged"].is_string(), "{purged}"),
                _ => assert_eq!(purged["purged"], 2, "{purged}"),
            }
            eventually("an empty dead-letter destination", async || {
                let run = queue.wharf(&["dlq", "peek", "--json", "-s", sub]).await;
                run.success().json()["messages"]
                    .as_array()?
                    .is_empty()
                    .then_some(())
            })
            .await;
        })
        .await;
}

/// Publishes four orders with binary payloads, half for tenant `acme`, and dead-letters
/// each through the library.
async fn dead_letter_orders(queue: &Queue) -> Vec<Message> {
    let sent: Vec<Message> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            Message::new(format!("order-{id}\x00\u{ff}").into_bytes())
                .with_attribute("order", *id)
                .with_attribute("tenant", tenant)
        })
        .collect();
    let publisher = queue
        .backend
        .publisher(&queue.topic)
        .await
        .expect("publisher");
    for result in publisher.publish_batch(sent.clone()).await {
        result.expect("publish");
    }

    let subscriber = queue
        .backend
        .subscriber(&queue.subscription)
        .await
        .expect("subscriber");
    let mut dead = 0;
    eventually("4 deliveries to dead-letter", async || {
        for delivery in subscriber
            .receive(4 - dead, ARRIVAL)
            .await
            .expect("receive")
        {
            delivery
                .dead_letter("out of stock")
                .await
                .expect("dead_letter");
            dead += 1;
        }
        (dead == 4).then_some(())
    })
    .await;
    sent
}

/// `dlq count` says `expected`, or exits with 6 and the reason where the broker
/// cannot count dead letters.
async fn check_count(queue: &Queue, expected: u64) {
    let sub = queue.subscription.as_str();
    eventually("the dead-letter count", async || {
        let run = queue.wharf(&["dlq", "count", "--json", "-s", sub]).await;
        let document = run.json();
        // Only the Pub/Sub emulator cannot count dead letters.
        if backend_name(queue) == "pubsub" {
            assert_eq!(run.code(), 6, "{document}");
            assert!(
                document["unknown"]["dead_lettered"].is_string(),
                "{document}"
            );
            return Some(());
        }
        (run.success().json()["dead_lettered"] == expected).then_some(())
    })
    .await;
}

/// The two `acme` orders are back on the subscription with payload and attributes
/// intact, a redrive count of 1 and no envelope.
async fn check_redriven(queue: &Queue, sent: &[Message]) {
    let subscriber = queue
        .backend
        .subscriber(&queue.subscription)
        .await
        .expect("subscriber");
    let mut back: Vec<Delivery> = Vec::new();
    eventually("2 redriven messages", async || {
        back.extend(
            subscriber
                .receive(2 - back.len(), ARRIVAL)
                .await
                .expect("receive"),
        );
        (back.len() == 2).then_some(())
    })
    .await;

    for delivery in &back {
        let original = sent
            .iter()
            .find(|m| {
                m.attributes().get("order").map(String::as_str) == delivery.attribute("order")
            })
            .expect("a redriven message is one that was sent");
        assert_eq!(
            delivery.payload(),
            original.payload(),
            "the payload is intact"
        );
        assert_eq!(delivery.attribute("tenant"), Some("acme"));
        assert_eq!(delivery.attribute(REDRIVE_COUNT), Some("1"));
        assert!(Envelope::from_attributes(delivery.attributes()).is_none());
    }
    Delivery::ack_all(back).await;
}

/// `doctor` exits with 0 on what wharf created, and with 3 and an error finding naming
/// a subscription that does not exist; `stats` of that one exits with 4.
async fn doctor_passes_a_clean_setup_and_fails_a_missing_one(url: &str) {
    Queue::new(url, "doctor")
        .await
        .run(async |queue: &Queue| {
            let (topic, sub) = (queue.topic.as_str(), queue.subscription.as_str());
            let missing = format!("{sub}-missing");

            let clean = queue
                .wharf(&["doctor", "--json", "-s", sub, "--topic", topic])
                .await;
            let broken = queue
                .wharf(&["doctor", "--json", "-s", &missing, "--topic", topic])
                .await;
            let not_found = queue.wharf(&["stats", "-s", &missing]).await;

            let clean = clean.success().json();
            assert_eq!(clean["errors"], 0, "{clean}");
            let broken = broken.expect_code(3).json();
            let findings = broken["findings"].as_array().expect("findings");
            assert!(
                findings.iter().any(|f| f["severity"] == "error"
                    && f["problem"].as_str().is_some_and(|p| p.contains(&missing))),
                "an error naming `{missing}`: {broken}"
            );
            not_found.expect_code(4);
        })
        .await;
}
