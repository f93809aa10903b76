//! Kafka round trip with rdkafka: create a topic, produce with a header,
//! consume in a group, commit, delete the topic.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use wharf_services_smoke::{Service, step, unique_name};

const KAFKA: Service = Service::Kafka;

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Admin results carry a per-topic result inside the call's own result.
fn check_topic_results(what: &str, results: Vec<rdkafka::admin::TopicResult>) {
    for result in results {
        if let Err((topic, code)) = result {
            panic!("{what} {topic} failed: {code:?}\n{}", KAFKA.hint());
        }
    }
}

#[tokio::test]
async fn message_with_header_round_trips_through_a_topic() {
    let brokers = KAFKA.address();
    let admin: AdminClient<DefaultClientContext> = config(&brokers)
        .create()
        .expect("admin client config is valid");
    let topic = unique_name("wharf-smoke");

    let new_topic = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
    let created = admin.create_topics([&new_topic], &AdminOptions::new());
    check_topic_results(
        "creating topic",
        step(KAFKA, "creating the topic", created).await,
    );

    let producer: FutureProducer = config(&brokers).create().expect("producer config is valid");
    let headers = OwnedHeaders::new().insert(Header {
        key: "wharf-test",
        value: Some("header-value"),
    });
    let record = FutureRecord::to(&topic)
        .key("key")
        .payload("hello kafka")
        .headers(headers);
    let sent = producer.send(record, Duration::from_secs(10));
    step(KAFKA, "producing", async {
        sent.await.map_err(|(error, _)| error)
    })
    .await;

    // A short session timeout: the first join of a new group takes about half
    // of it (see services/README.md).
    let consumer: StreamConsumer = config(&brokers)
        .set("group.id", unique_name("wharf-smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer config is valid");
    consumer
        .subscribe(&[&topic])
        .expect("subscribing is local and cannot fail");
    let message = step(KAFKA, "consuming", consumer.recv()).await;

    assert_eq!(message.payload(), Some(&b"hello kafka"[..]));
    let header = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == "wharf-test")
            .and_then(|header| header.value)
    });
    assert_eq!(
        header,
        Some(&b"header-value"[..]),
        "header wharf-test missing"
    );

    if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
        panic!("committing the offset failed: {error:?}\n{}", KAFKA.hint());
    }
    drop(message);
    drop(consumer);
    let deleted = admin.delete_topics(&[&topic], &AdminOptions::new());
    check_topic_results(
        "deleting topic",
        step(KAFKA, "deleting the topic", deleted).await,
    );
}
