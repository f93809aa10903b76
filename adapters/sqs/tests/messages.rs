//! How messages travel through SQS: payloads SQS cannot take as a body, the
//! ten-attribute budget, batches split by count and bytes, and delayed publish.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestQueue;
use wharf_core::dead_letter::ENVELOPE_KEYS;
use wharf_core::{Attributes, Backend, ErrorKind, Message, TopicDriver};
use wharf_sqs::BOOKKEEPING;
use wharf_sqs::limits::{MAX_DELAY, MAX_NATIVE_ATTRIBUTES, MAX_USER_ATTRIBUTES};

const ARRIVAL: Duration = Duration::from_secs(10);

/// Payloads that are not XML text, so cannot be an SQS body as they are.
fn awkward_payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("every byte value", (0..=255u8).cycle().take(1024).collect()),
        ("nul", b"before\0after".to_vec()),
        ("bell", "ring \u{7}".as_bytes().to_vec()),
        ("noncharacter", "\u{FFFE}".as_bytes().to_vec()),
        ("invalid UTF-8", vec![0xC3, 0x28, 0xFF]),
        ("empty", Vec::new()),
        ("near the limit", vec![0u8; 200 * 1024]),
    ]
}

#[tokio::test]
async fn payloads_that_are_not_xml_text_round_trip_byte_for_byte() {
    let queue = TestQueue::standard("payloads").await;
    let payloads = awkward_payloads();

    for (name, payload) in &payloads {
        let message = Message::new(payload.clone()).with_attribute("case", *name);
        queue.publisher.publish(message).await.expect(name);
    }
    let received = queue.receive(payloads.len(), ARRIVAL).await;

    let by_case: BTreeMap<&str, &[u8]> = received
        .iter()
        .map(|d| (d.attribute("case").expect("case kept"), &d.payload()[..]))
        .collect();
    for (name, payload) in &payloads {
        assert!(
            by_case.get(name) == Some(&&payload[..]),
            "payload `{name}` changed"
        );
    }
    for delivery in received {
        assert!(!delivery.attributes().contains_key(BOOKKEEPING));
        delivery.ack().await.expect("acked");
    }
    queue.delete().await;
}

#[tokio::test]
async fn text_payloads_reach_other_sqs_clients_unchanged() {
    let queue = TestQueue::standard("interop").await;
    let text = "plain <xml> & ünïcode text";

    let message = Message::new(text).with_attribute("kind", "greeting");
    queue.publisher.publish(message).await.expect("published");

    let url = queue.backend.queue_url(&queue.name).await.expect("url");
    let output = queue
        .backend
        .client()
        .receive_message()
        .queue_url(url)
        .message_attribute_names("All")
        .wait_time_seconds(5)
        .send()
        .await
        .expect("raw receive");
    let raw = &output.messages()[0];
    assert_eq!(raw.body(), Some(text));
    let attributes = raw.message_attributes().expect("attributes");
    assert_eq!(
        attributes.len(),
        1,
        "no bookkeeping attribute: {attributes:?}"
    );
    assert_eq!(attributes["kind"].string_value(), Some("greeting"));
    queue.delete().await;
}

/// Nine user attributes, two of which SQS cannot carry natively.
fn full_attributes() -> Attributes {
    let mut attributes: Attributes = (0..MAX_USER_ATTRIBUTES - 2)
        .map(|i| (format!("user-{i}"), format!("value {i}")))
        .collect();
    attributes.insert("has space".to_owned(), "v".to_owned());
    attributes.insert("empty".to_owned(), String::new());
    attributes
}

#[tokio::test]
async fn the_full_attribute_budget_survives_packing_and_dead_lettering() {
    let queue = TestQueue::standard("attributes").await;
    let attributes = full_attributes();
    assert_eq!(attributes.len(), MAX_USER_ATTRIBUTES);

    let message = Message::new(vec![0u8, 1, 2]).with_attributes(attributes.clone());
    queue.publisher.publish(message).await.expect("published");
    let delivery = queue.receive(1, ARRIVAL).await.pop().expect("delivered");
    assert_eq!(delivery.attributes(), &attributes);
    delivery
        .dead_letter("handler gave up")
        .await
        .expect("dead-lettered");

    // On the dead-letter queue the five envelope keys come on top of the nine.
    let dead_letters = queue.backend.dead_letter_subscriber(&queue.name);
    let dead_letters = dead_letters.await.expect("dead-letter subscriber");
    let letter = common::receive_from(&dead_letters, 1, ARRIVAL).await;
    let letter = letter.first().expect("dead letter arrived");
    assert_eq!(&letter.payload()[..], &[0u8, 1, 2]);
    for (key, value) in &attributes {
        assert_eq!(letter.attribute(key), Some(value.as_str()), "{key}");
    }
    for key in ENVELOPE_KEYS.iter().take(3) {
        assert!(
            letter.attribute(key).is_some(),
            "envelope key {key} missing"
        );
    }
    assert_eq!(letter.attribute(ENVELOPE_KEYS[0]), Some("handler gave up"));
    queue.delete().await;
}

#[tokio::test]
async fn a_tenth_user_attribute_is_refused_before_sending() {
    let queue = TestQueue::standard("too-many").await;
    let message = Message::new("x")
        .with_attributes(full_attributes())
        .with_attribute("tenth", "v");

    let error = queue.publisher.publish(message).await.expect_err("refused");

    assert_eq!(
        error.error.kind(),
        ErrorKind::LimitExceeded,
        "{}",
        error.error
    );
    assert_eq!(error.message.attributes().len(), MAX_NATIVE_ATTRIBUTES);
    queue.delete().await;
}

/// Sends `messages` straight through the driver, as core would after its own split,
/// so the adapter's split by SQS's count and byte limits is what is tested.
async fn send_through_driver(queue: &TestQueue, messages: &[Message]) {
    let topic = queue.backend.topic(&queue.name).await.expect("topic");

    let results = topic.send_batch(messages).await;

    assert_eq!(results.len(), messages.len());
    for (i, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "message {i}: {result:?}");
    }
}

fn numbers(deliveries: &[wharf_core::Delivery]) -> Vec<usize> {
    let mut numbers: Vec<usize> = deliveries
        .iter()
        .map(|d| d.attribute("n").expect("n").parse().expect("number"))
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test]
async fn batches_over_ten_entries_are_split_and_all_arrive() {
    let queue = TestQueue::standard("batch-count").await;
    let messages: Vec<Message> = (0..23)
        .map(|i| Message::new(format!("m{i}")).with_attribute("n", i.to_string()))
        .collect();

    send_through_driver(&queue, &messages).await;
    let received = queue.receive(23, ARRIVAL).await;

    assert_eq!(numbers(&received), (0..23).collect::<Vec<_>>());
    for delivery in received {
        delivery.ack().await.expect("acked");
    }
    queue.delete().await;
}

#[tokio::test]
async fn batches_over_the_byte_limit_are_split_and_all_arrive() {
    let queue = TestQueue::standard("batch-bytes").await;
    // Four 100 KiB binary payloads: one request would be 400 KiB, over SQS's 256 KiB.
    let messages: Vec<Message> = (0..4)
        .map(|i| Message::new(vec![i as u8; 100 * 1024]).with_attribute("n", i.to_string()))
        .collect();

    send_through_driver(&queue, &messages).await;
    let received = queue.receive(4, ARRIVAL).await;

    assert_eq!(numbers(&received), vec![0, 1, 2, 3]);
    for delivery in received {
        let n = delivery
            .attribute("n")
            .expect("n")
            .parse::<u8>()
            .expect("number");
        assert!(
            delivery.payload().iter().all(|&b| b == n),
            "payload {n} changed"
        );
        delivery.ack().await.expect("acked");
    }
    queue.delete().await;
}

#[tokio::test]
async fn a_delay_beyond_fifteen_minutes_is_refused_and_handed_back() {
    let queue = TestQueue::standard("long-delay").await;
    let message = Message::new("later").with_delay(MAX_DELAY + Duration::from_secs(1));

    let error = queue.publisher.publish(message).await.expect_err("refused");

    assert_eq!(
        error.error.kind(),
        ErrorKind::InvalidArgument,
        "{}",
        error.error
    );
    assert_eq!(&error.message.payload()[..], b"later");
    let longest = Message::new("in 15 minutes").with_delay(MAX_DELAY);
    queue
        .publisher
        .publish(longest)
        .await
        .expect("15 minutes is accepted");
    assert!(queue.receive(1, Duration::from_secs(2)).await.is_empty());
    queue.delete().await;
}

#[tokio::test]
async fn a_short_delay_holds_the_message_back() {
    let queue = TestQueue::standard("short-delay").await;

    let message = Message::new("soon").with_delay(Duration::from_secs(3));
    queue.publisher.publish(message).await.expect("published");

    assert!(
        queue.receive(1, Duration::from_secs(1)).await.is_empty(),
        "early"
    );
    let delivered = queue.receive(1, ARRIVAL).await;
    assert_eq!(delivered.len(), 1, "arrives after its delay");
    queue.delete().await;
}

#[tokio::test]
async fn a_delay_on_a_fifo_queue_is_unsupported() {
    let queue = TestQueue::with("fifo-delay", ".fifo", Duration::from_secs(30), |s| s).await;

    let message = Message::new("later").with_delay(Duration::from_secs(5));
    let error = queue.publisher.publish(message).await.expect_err("refused");

    assert_eq!(
        error.error.kind(),
        ErrorKind::Unsupported,
        "{}",
        error.error
    );
    queue.delete().await;
}
