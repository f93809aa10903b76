//! Fan-out: every subscription on a topic receives every message.

mod common;

use std::collections::BTreeSet;

use common::{ARRIVAL, LEASE, backend, clean_up, receive_n, unique};
use wharf_core::{Backend, Message, SubscriptionSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscription_receives_every_message() {
    let backend = backend().await;
    let topic = unique("fanout", "t");
    let names = [
        unique("fanout", "s1"),
        unique("fanout", "s2"),
        unique("fanout", "s3"),
    ];
    backend.create_topic(&topic).await.unwrap();
    for name in &names {
        let spec = SubscriptionSpec::new(&topic, name).lease(LEASE);
        backend.create_subscription(&spec).await.unwrap();
    }
    let publisher = backend.publisher(&topic).await.unwrap();
    let messages = (0..25).map(|i| Message::new(i.to_string())).collect();

    for result in publisher.publish_batch(messages).await {
        result.expect("publish");
    }

    let expected: BTreeSet<String> = (0..25).map(|i| i.to_string()).collect();
    for name in &names {
        let subscriber = backend.subscriber(name).await.unwrap();
        let mut got = BTreeSet::new();
        for delivery in receive_n(&subscriber, 25, ARRIVAL).await {
            got.insert(String::from_utf8_lossy(delivery.payload()).into_owned());
            delivery.ack().await.expect("ack");
        }
        assert_eq!(got, expected, "subscription {name} missed messages");
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    clean_up(&backend, &names, &topic).await;
}
