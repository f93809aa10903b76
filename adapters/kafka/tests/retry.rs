//! A nack re-publishes the record to the subscription's retry topic, and the same
//! subscriber, in the same process, receives it from there once it is due.

mod common;

use std::time::{Duration, SystemTime};

use common::{Queue, read_topic};
use wharf_core::Message;
use wharf_core::dead_letter::{millis, parse_millis};
use wharf_testkit::conformance::support::{ARRIVAL, ack, receive_one};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_record_returns_to_the_same_subscriber_through_the_retry_topic() {
    let queue = Queue::new("retry").await;
    let message = Message::new("again")
        .with_ordering_key("customer-7")
        .with_attribute("tenant", "acme");
    queue.publisher.publish(message).await.expect("publish");

    let first = receive_one(&queue.subscriber, ARRIVAL).await;
    let delay = Duration::from_secs(2);
    let nacked_at = SystemTime::now();
    first.nack(delay).await.expect("nack");
    let second = receive_one(&queue.subscriber, ARRIVAL).await;
    let retried = read_topic(&queue.retry_topic()).await;
    let main = read_topic(&queue.topic).await;

    assert_eq!(&second.payload()[..], b"again");
    assert_eq!(second.attempt(), 2);
    assert_eq!(second.ordering_key(), Some("customer-7"));
    assert_eq!(second.attribute("tenant"), Some("acme"));
    assert!(
        second
            .attributes()
            .keys()
            .all(|key| !key.starts_with("wharf-")),
        "bookkeeping headers stay hidden: {:?}",
        second.attributes().keys().collect::<Vec<_>>()
    );
    assert_eq!(main.len(), 1, "the main topic is not written to");
    assert_eq!(retried.len(), 1, "one copy in the retry topic");
    let copy = &retried[0];
    assert_eq!(copy.key.as_deref(), Some(&b"customer-7"[..]));
    assert_eq!(copy.payload, b"again");
    assert_eq!(copy.header("tenant").as_deref(), Some("acme"));
    assert_eq!(copy.header("wharf-attempt").as_deref(), Some("2"));
    let not_before = copy
        .header("wharf-not-before")
        .and_then(|ms| parse_millis(&ms))
        .expect("a not-before header");
    // The header has millisecond precision.
    assert!(
        millis(not_before) >= millis(nacked_at + delay),
        "not-before carries the delay"
    );

    ack(second).await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_behind_a_delayed_retry_are_not_held_up_by_it() {
    let queue = Queue::new("retry-behind").await;
    queue
        .publisher
        .publish(Message::new("slow").with_ordering_key("k"))
        .await
        .expect("publish");
    let slow = receive_one(&queue.subscriber, ARRIVAL).await;
    slow.nack(Duration::from_secs(60)).await.expect("nack");

    queue
        .publisher
        .publish(Message::new("next").with_ordering_key("k"))
        .await
        .expect("publish");
    let next = receive_one(&queue.subscriber, ARRIVAL).await;

    assert_eq!(
        &next.payload()[..],
        b"next",
        "the delayed retry waits aside"
    );
    ack(next).await;
    queue.delete().await;
}
