//! Ordering keys: order per key on ordered subscriptions, and the paused-key behaviour
//! after a failed publish.

mod common;

use std::collections::BTreeMap;

use common::{ARRIVAL, backend, clean_up, receive_n, unique};
use wharf_core::{Backend, ErrorKind, Message, SubscriptionSpec};
use wharf_pubsub::OrderingKeyPaused;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_key_arrive_in_publish_order() {
    let backend = backend().await;
    let (topic, name) = (unique("order", "t"), unique("order", "s"));
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, &name)
        .lease(common::LEASE)
        .ordered(true);
    backend.create_subscription(&spec).await.unwrap();
    let publisher = backend.publisher(&topic).await.unwrap();
    let subscriber = backend.subscriber(&name).await.unwrap();
    let messages = (0..60)
        .map(|i| Message::new(i.to_string()).with_ordering_key(["a", "b", "c"][i % 3]))
        .collect();

    for result in publisher.publish_batch(messages).await {
        result.expect("publish");
    }
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for delivery in receive_n(&subscriber, 60, ARRIVAL).await {
        let key = delivery
            .ordering_key()
            .expect("ordering key kept")
            .to_owned();
        let number = String::from_utf8_lossy(delivery.payload()).parse().unwrap();
        per_key.entry(key).or_default().push(number);
        delivery.ack().await.expect("ack");
    }

    assert_eq!(per_key.len(), 3);
    for (key, numbers) in &per_key {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, &sorted, "key {key} arrived out of order");
    }
    clean_up(&backend, &[&name], &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_pauses_its_key_until_the_application_resumes_it() {
    let backend = backend().await;
    let topic = unique("paused", "t");
    backend.create_topic(&topic).await.unwrap();
    let publisher = backend.publisher(&topic).await.unwrap();
    // Make the service refuse the next publish: the topic disappears under the publisher.
    backend.delete_topic(&topic).await.unwrap();

    let failed = publisher
        .publish(Message::new("first").with_ordering_key("k1"))
        .await
        .expect_err("publishing to a deleted topic fails");
    backend.create_topic(&topic).await.unwrap();
    let paused = publisher
        .publish(Message::new("second").with_ordering_key("k1"))
        .await
        .expect_err("the key is paused after a failure");
    let other_key = publisher
        .publish(Message::new("other").with_ordering_key("k2"))
        .await;
    backend.resume_publish(&topic, "k1");
    let resumed = publisher
        .publish(Message::new("third").with_ordering_key("k1"))
        .await;

    assert_eq!(failed.error.kind(), ErrorKind::NotFound, "{}", failed.error);
    assert_eq!(paused.error.kind(), ErrorKind::Closed, "{}", paused.error);
    let source = std::error::Error::source(&paused.error).expect("a typed source");
    let source = source
        .downcast_ref::<OrderingKeyPaused>()
        .expect("OrderingKeyPaused");
    assert_eq!(source.key(), "k1");
    assert_eq!(
        &paused.message.payload()[..],
        b"second",
        "the message is handed back"
    );
    other_key.expect("other keys are not paused");
    resumed.expect("publishing works again after resume_publish");
    clean_up(&backend, &[], &topic).await;
}
