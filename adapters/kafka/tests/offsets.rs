//! Committed offsets follow settlement, not arrival: acks in any order never move a
//! partition's committed offset past a record that is still unsettled.

mod common;

use common::{Queue, committed, position};
use wharf_core::{Backend, Message};
use wharf_testkit::conformance::support::{ARRIVAL, ack, receive_all, receive_one};

/// Publishes `payloads` with one ordering key, so they share a partition in order.
async fn publish_in_one_partition(queue: &Queue, payloads: &[&'static str]) {
    for payload in payloads {
        let message = Message::new(*payload).with_ordering_key("one-partition");
        if let Err(failed) = queue.publisher.publish(message).await {
            panic!("publish failed: {}", failed.error);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_never_commit_past_an_unsettled_record() {
    let queue = Queue::new("offsets").await;
    publish_in_one_partition(&queue, &["first", "second", "third"]).await;
    let mut deliveries = receive_all(&queue.subscriber, 3, ARRIVAL).await;
    deliveries.sort_by_key(|d| position(d.id()).1);
    let (partition, first_offset) = position(deliveries[0].id());
    let (_, second_offset) = position(deliveries[1].id());
    let held_back = deliveries.remove(1);

    // The third settles before the second; closing commits synchronously what was
    // settled. Holding back the middle record tells "commits up to the gap" apart from
    // both "commits nothing" and "commits everything".
    for delivery in deliveries.into_iter().rev() {
        ack(delivery).await;
    }
    queue.subscriber.close().await.expect("close");
    let after_close = committed(&queue.subscription, &queue.topic, partition).await;
    drop(held_back);

    assert_eq!(second_offset, first_offset + 1, "one partition, in order");
    assert_eq!(
        after_close,
        Some(second_offset),
        "the commit passes the settled first record and stops at the unsettled second"
    );
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_record_is_delivered_again_and_then_committed_past() {
    let queue = Queue::new("offsets-again").await;
    publish_in_one_partition(&queue, &["held", "done"]).await;
    let mut deliveries = receive_all(&queue.subscriber, 2, ARRIVAL).await;
    deliveries.sort_by_key(|d| position(d.id()).1);
    let (partition, held_offset) = position(deliveries[0].id());
    let done_offset = position(deliveries[1].id()).1;
    let held_back = deliveries.remove(0);
    ack(deliveries.remove(0)).await;
    queue.subscriber.close().await.expect("close");
    drop(held_back);

    let next = queue
        .backend
        .subscriber(&queue.subscription)
        .await
        .expect("second subscriber");
    let again = receive_one(&next, ARRIVAL).await;
    assert_eq!(
        &again.payload()[..],
        b"held",
        "the unsettled record comes back first"
    );
    assert_eq!(position(again.id()), (partition, held_offset));
    ack(again).await;
    // "done" sits behind the old commit point, so at-least-once delivers it again.
    let duplicate = receive_one(&next, ARRIVAL).await;
    assert_eq!(&duplicate.payload()[..], b"done");
    ack(duplicate).await;
    next.close().await.expect("close second subscriber");

    let after = committed(&queue.subscription, &queue.topic, partition).await;
    assert_eq!(
        after,
        Some(done_offset + 1),
        "everything settled is committed"
    );
    queue.delete().await;
}
