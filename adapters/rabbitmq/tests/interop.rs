//! A message wharf publishes is an ordinary RabbitMQ message, and wharf consumes what
//! plain AMQP clients publish: checked with raw lapin on both sides.

mod common;

use futures::StreamExt;
use wharf_core::{Backend, Message, SubscriptionSpec};
use wharf_rabbitmq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use wharf_rabbitmq::lapin::types::{AMQPValue, FieldTable, LongString};
use wharf_rabbitmq::lapin::{BasicProperties, Connection, ConnectionProperties};

use common::{ARRIVAL, backend, unique, url};

async fn raw_connection() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("raw lapin connects; run `scripts/services up rabbitmq`")
}

#[tokio::test]
async fn wharf_consumes_what_a_plain_amqp_client_published() {
    let backend = backend().await;
    let topic = unique("interop-in");
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, unique("interop-in-s"));
    backend.create_subscription(&spec).await.unwrap();
    let subscriber = backend.subscriber(&spec.name).await.unwrap();

    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "text".into(),
        AMQPValue::LongString(LongString::from(b"plain".to_vec())),
    );
    headers.insert("count".into(), AMQPValue::LongInt(42));
    headers.insert("flag".into(), AMQPValue::Boolean(true));
    let properties = BasicProperties::default()
        .with_headers(headers)
        .with_content_type("text/plain".into());
    channel
        .basic_publish(
            topic.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"\x00from lapin\xff",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let delivery = subscriber
        .receive_one(ARRIVAL)
        .await
        .unwrap()
        .expect("a delivery");

    assert_eq!(&delivery.payload()[..], b"\x00from lapin\xff");
    assert_eq!(delivery.attribute("text"), Some("plain"));
    assert_eq!(delivery.attribute("count"), Some("42"));
    assert_eq!(delivery.attribute("flag"), Some("true"));
    assert_eq!(delivery.attribute("content-type"), Some("text/plain"));
    assert_eq!(delivery.attempt(), 1);
    delivery.ack().await.unwrap();
    backend.delete_subscription(&spec.name).await.unwrap();
    backend.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn a_plain_amqp_client_consumes_what_wharf_published() {
    let backend = backend().await;
    let topic = unique("interop-out");
    backend.create_topic(&topic).await.unwrap();
    let spec = SubscriptionSpec::new(&topic, unique("interop-out-s"));
    backend.create_subscription(&spec).await.unwrap();
    let publisher = backend.publisher(&topic).await.unwrap();
    let message = Message::new(&b"\x01wharf bytes\xfe"[..])
        .with_attribute("customer", "42")
        .with_attribute("content-type", "application/octet-stream");

    publisher.publish(message).await.unwrap();

    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            spec.name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(ARRIVAL, consumer.next())
        .await
        .expect("arrives in time")
        .expect("consumer open")
        .expect("delivery");

    assert_eq!(delivery.data, b"\x01wharf bytes\xfe");
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get("customer") {
        Some(AMQPValue::LongString(value)) => assert_eq!(value.as_bytes(), b"42"),
        other => panic!("header customer is missing or not a string: {other:?}"),
    }
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.to_string());
    assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
    assert!(delivery.properties.message_id().is_some());
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    connection.close(200, "bye".into()).await.unwrap();
    backend.delete_subscription(&spec.name).await.unwrap();
    backend.delete_topic(&topic).await.unwrap();
}
