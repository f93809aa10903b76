//! Interoperability: messages published with Google's own client reach wharf unchanged,
//! and messages wharf publishes reach Google's own subscriber unchanged.

mod common;

use std::collections::HashMap;

use common::{ARRIVAL, LEASE, PROJECT, backend, clean_up, emulator_host, receive_n, unique};
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::Subscriber as NativeSubscriber;
use google_cloud_pubsub::model::Message as NativeMessage;
use wharf_core::{Backend, Message, SubscriptionSpec};

const PAYLOAD: &[u8] = b"\x00\x01binary\xff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_consumes_what_googles_client_published() {
    let backend = backend().await;
    let (topic, name) = (unique("from-native", "t"), unique("from-native", "s"));
    backend.create_topic(&topic).await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new(&topic, &name).lease(LEASE))
        .await
        .unwrap();
    let native = backend.native_publisher(&topic).unwrap();
    let message = NativeMessage::new()
        .set_data(PAYLOAD)
        .set_attributes([("source", "native"), ("lang", "any")])
        .set_ordering_key("k");

    let id = native.publish(message).await.expect("native publish");
    let subscriber = backend.subscriber(&name).await.unwrap();
    let delivery = receive_n(&subscriber, 1, ARRIVAL).await.pop().unwrap();

    assert_eq!(delivery.id(), id);
    assert_eq!(&delivery.payload()[..], PAYLOAD);
    assert_eq!(delivery.attribute("source"), Some("native"));
    assert_eq!(delivery.attribute("lang"), Some("any"));
    assert_eq!(
        delivery.attributes().len(),
        2,
        "no attributes added or lost"
    );
    assert_eq!(delivery.ordering_key(), Some("k"));
    assert_eq!(delivery.attempt(), 1);
    delivery.ack().await.expect("ack");
    clean_up(&backend, &[&name], &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_subscriber_consumes_what_wharf_published() {
    let backend = backend().await;
    let (topic, name) = (unique("to-native", "t"), unique("to-native", "s"));
    backend.create_topic(&topic).await.unwrap();
    backend
        .create_subscription(&SubscriptionSpec::new(&topic, &name).lease(LEASE))
        .await
        .unwrap();
    let message = Message::new(PAYLOAD).with_attribute("source", "wharf");
    backend
        .publisher(&topic)
        .await
        .unwrap()
        .publish(message)
        .await
        .unwrap();

    let client = NativeSubscriber::builder()
        .with_endpoint(format!("http://{}", emulator_host()))
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .expect("Google's subscriber");
    let mut stream = client
        .subscribe(format!("projects/{PROJECT}/subscriptions/{name}"))
        .build();
    let (received, handler) = tokio::time::timeout(ARRIVAL, stream.next())
        .await
        .expect("a message within the arrival time")
        .expect("the stream stays open")
        .expect("no stream error");
    handler.ack();

    assert_eq!(&received.data[..], PAYLOAD);
    let expected: HashMap<String, String> = [("source".to_owned(), "wharf".to_owned())].into();
    assert_eq!(
        received.attributes, expected,
        "attributes are native attributes"
    );
    drop(stream);
    clean_up(&backend, &[&name], &topic).await;
}
