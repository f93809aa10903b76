//! A dead letter keeps the original record's key, headers and payload byte for byte,
//! adds wharf's envelope headers, and leaves retry bookkeeping behind.

mod common;

use std::time::Duration;

use common::{Queue, read_topic};
use wharf_core::dead_letter::{ATTEMPTS, REASON, SOURCE};
use wharf_core::{Backend, Message};
use wharf_testkit::conformance::support::{ARRIVAL, ack, receive_one};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topic_keeps_key_headers_and_payload() {
    let queue = Queue::new("dlq").await;
    let payload: Vec<u8> = (0..=255).collect();
    let message = Message::new(payload.clone())
        .with_ordering_key("customer-7")
        .with_attribute("tenant", "acme")
        .with_attribute("trace", "00-abc-01");
    queue.publisher.publish(message).await.expect("publish");

    // One retry first, so the record that is dead-lettered came from the retry topic.
    let first = receive_one(&queue.subscriber, ARRIVAL).await;
    first.nack(Duration::ZERO).await.expect("nack");
    let second = receive_one(&queue.subscriber, ARRIVAL).await;
    second.dead_letter("bad total").await.expect("dead letter");
    let letters = read_topic(&queue.dead_letter_topic()).await;

    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(&b"customer-7"[..]));
    assert_eq!(letter.payload, payload);
    assert_eq!(letter.header("tenant").as_deref(), Some("acme"));
    assert_eq!(letter.header("trace").as_deref(), Some("00-abc-01"));
    assert_eq!(letter.header(REASON).as_deref(), Some("bad total"));
    assert_eq!(letter.header(ATTEMPTS).as_deref(), Some("2"));
    assert_eq!(
        letter.header(SOURCE).as_deref(),
        Some(queue.subscription.as_str())
    );
    for bookkeeping in ["wharf-attempt", "wharf-not-before", "wharf-origin"] {
        assert!(
            letter.header(bookkeeping).is_none(),
            "{bookkeeping} must not reach the dead-letter topic"
        );
    }
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_subscriber_reads_what_was_dead_lettered() {
    let queue = Queue::new("dlq-read").await;
    let letters = queue
        .backend
        .dead_letter_subscriber(&queue.subscription)
        .await
        .expect("dead-letter subscriber");
    let message = Message::new("poison")
        .with_ordering_key("k-1")
        .with_attribute("tenant", "acme");
    queue.publisher.publish(message).await.expect("publish");

    let delivery = receive_one(&queue.subscriber, ARRIVAL).await;
    delivery
        .dead_letter("unparseable")
        .await
        .expect("dead letter");
    let letter = receive_one(&letters, ARRIVAL).await;

    assert_eq!(&letter.payload()[..], b"poison");
    assert_eq!(letter.ordering_key(), Some("k-1"));
    assert_eq!(letter.attribute("tenant"), Some("acme"));
    assert_eq!(letter.attribute(REASON), Some("unparseable"));
    ack(letter).await;
    letters.close().await.expect("close dead-letter subscriber");
    queue.delete().await;
}
