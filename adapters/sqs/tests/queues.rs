//! Queue behaviour wharf sets up on SQS: FIFO ordering and deduplication, the redrive
//! policy to the dead-letter queue, and settling after a lease ran out.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::TestQueue;
use wharf_core::{Backend, ErrorKind, Message};

const ARRIVAL: Duration = Duration::from_secs(10);

async fn queue_attributes(
    queue: &TestQueue,
    name: &str,
) -> std::collections::HashMap<QueueAttributeName, String> {
    let url = queue.backend.queue_url(name).await.expect("queue exists");
    let output = queue
        .backend
        .client()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    output.attributes().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_fifo_queue_keeps_each_ordering_key_in_order() {
    let queue = TestQueue::with("fifo-order", ".fifo", Duration::from_secs(30), |s| {
        s.ordered(true)
    })
    .await;
    let messages: Vec<Message> = (0..20)
        .map(|i| Message::new(format!("{i}")).with_ordering_key(["a", "b"][i % 2]))
        .collect();

    let results = queue.publisher.publish_batch(messages).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..20 {
        let batch = queue.receive(10, ARRIVAL).await;
        if batch.is_empty() {
            break;
        }
        for delivery in batch {
            let key = delivery
                .ordering_key()
                .expect("ordering key kept")
                .to_owned();
            let n = std::str::from_utf8(delivery.payload())
                .expect("text")
                .parse();
            by_key.entry(key).or_default().push(n.expect("number"));
            delivery.ack().await.expect("acked");
        }
    }

    let evens: Vec<u32> = (0..20).step_by(2).collect();
    let odds: Vec<u32> = (1..20).step_by(2).collect();
    assert_eq!(by_key.get("a"), Some(&evens));
    assert_eq!(by_key.get("b"), Some(&odds));
    queue.delete().await;
}

#[tokio::test]
async fn a_fifo_queue_drops_a_repeated_deduplication_id_but_not_equal_messages() {
    let queue = TestQueue::with("fifo-dedup", ".fifo", Duration::from_secs(30), |s| s).await;
    let once = Message::new("once").with_deduplication_id("order-42");
    let twin = Message::new("twin");

    let sent = [once.clone(), once, twin.clone(), twin];
    for message in sent {
        queue.publisher.publish(message).await.expect("published");
    }
    let received = queue.receive(4, Duration::from_secs(4)).await;

    let mut payloads: Vec<&[u8]> = received.iter().map(|d| &d.payload()[..]).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, vec![&b"once"[..], b"twin", b"twin"]);
    queue.delete().await;
}

#[tokio::test]
async fn the_dead_letter_queue_and_redrive_policy_are_created_with_the_subscription() {
    let queue = TestQueue::with("redrive", "", Duration::from_secs(1), |s| {
        s.max_delivery_attempts(2)
    })
    .await;
    let dead_letter = format!("{}-dlq", queue.name);

    let source = queue_attributes(&queue, &queue.name).await;
    let target = queue_attributes(&queue, &dead_letter).await;

    let policy: serde_json::Value =
        serde_json::from_str(&source[&QueueAttributeName::RedrivePolicy]).expect("json");
    assert_eq!(
        policy["deadLetterTargetArn"].as_str(),
        Some(target[&QueueAttributeName::QueueArn].as_str())
    );
    assert_eq!(policy["maxReceiveCount"].as_u64(), Some(2));
    assert_eq!(source[&QueueAttributeName::VisibilityTimeout], "1");
    assert_eq!(
        target[&QueueAttributeName::MessageRetentionPeriod],
        "1209600"
    );
    queue.delete().await;
}

#[tokio::test]
async fn sqs_moves_a_message_past_its_delivery_limit_to_the_dead_letter_queue() {
    let queue = TestQueue::with("redrive-move", "", Duration::from_secs(1), |s| {
        s.max_delivery_attempts(2)
    })
    .await;
    queue
        .publisher
        .publish(Message::new("poison"))
        .await
        .expect("published");

    for attempt in 1..=2 {
        let delivery = queue.receive(1, ARRIVAL).await.pop().expect("delivered");
        assert_eq!(delivery.attempt(), attempt);
        delivery.nack(Duration::ZERO).await.expect("nacked");
    }
    // SQS moves the message when a third receive would exceed maxReceiveCount.
    assert!(queue.receive(1, Duration::from_secs(2)).await.is_empty());

    let dead_letters = queue.backend.dead_letter_subscriber(&queue.name).await;
    let dead_letters = dead_letters.expect("dead-letter subscriber");
    let moved = common::receive_from(&dead_letters, 1, ARRIVAL).await;
    assert_eq!(
        moved.first().map(|d| &d.payload()[..]),
        Some(&b"poison"[..])
    );
    queue.delete().await;
}

#[tokio::test]
async fn settling_after_the_lease_ran_out_is_lease_expired() {
    let queue = TestQueue::with("lease-out", "", Duration::from_secs(1), |s| s).await;
    queue
        .publisher
        .publish(Message::new("slow"))
        .await
        .expect("published");
    let delivery = queue.receive(1, ARRIVAL).await.pop().expect("delivered");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let error = delivery.ack().await.expect_err("too late");

    assert_eq!(
        error.error.kind(),
        ErrorKind::LeaseExpired,
        "{}",
        error.error
    );
    let again = queue.receive(1, ARRIVAL).await.pop().expect("redelivered");
    assert_eq!(again.attempt(), 2);
    again.ack().await.expect("acked");
    queue.delete().await;
}

#[tokio::test]
async fn a_receipt_handle_sqs_no_longer_knows_is_lease_expired() {
    let queue = TestQueue::standard("stale-handle").await;
    let url = queue.backend.queue_url(&queue.name).await.expect("url");

    for settle in ["nack", "extend_lease"] {
        queue
            .publisher
            .publish(Message::new(settle))
            .await
            .expect("published");
        let delivery = queue.receive(1, ARRIVAL).await.pop().expect("delivered");
        // Purging deletes the message in flight: its receipt handle goes stale while
        // wharf's own lease clock still runs.
        let client = queue.backend.client();
        client
            .purge_queue()
            .queue_url(&url)
            .send()
            .await
            .expect("purged");

        let error = match settle {
            "nack" => delivery.nack(Duration::ZERO).await.map_err(|e| e.error),
            _ => delivery.extend_lease(Duration::from_secs(60)).await,
        }
        .expect_err("stale handle");

        assert_eq!(error.kind(), ErrorKind::LeaseExpired, "{settle}: {error}");
        // SQS allows one purge a minute; LocalStack does not enforce it.
    }
    queue.delete().await;
}

#[tokio::test]
async fn a_subscription_named_apart_from_its_topic_is_unsupported() {
    let backend = common::backend().await;
    let topic = common::unique("apart");
    backend.create_topic(&topic).await.expect("topic");

    let spec = wharf_core::SubscriptionSpec::new(&topic, format!("{topic}-sub"));
    let error = backend
        .create_subscription(&spec)
        .await
        .expect_err("refused");

    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    backend.delete_topic(&topic).await.expect("deleted");
}
