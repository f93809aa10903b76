//! RabbitMQ round trip with lapin: declare, publish with a header, consume,
//! ack, delete.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use wharf_services_smoke::{Service, step, unique_name};

const RABBITMQ: Service = Service::RabbitMq;

#[tokio::test]
async fn message_with_header_round_trips_through_a_queue() {
    let url = RABBITMQ.address();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let connection = step(RABBITMQ, "connecting", connect).await;
    let channel = step(RABBITMQ, "opening a channel", connection.create_channel()).await;
    let queue = unique_name("wharf-smoke");

    let declare = channel.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    );
    step(RABBITMQ, "declaring the queue", declare).await;
    step(
        RABBITMQ,
        "enabling confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await;

    let mut headers = FieldTable::default();
    headers.insert(
        "wharf-test".into(),
        AMQPValue::LongString(LongString::from("header-value")),
    );
    let publish = channel.basic_publish(
        "".into(),
        queue.as_str().into(),
        BasicPublishOptions::default(),
        b"hello rabbitmq",
        BasicProperties::default().with_headers(headers),
    );
    let confirm = step(RABBITMQ, "publishing", publish).await;
    let confirmation = step(RABBITMQ, "waiting for the publisher confirm", confirm).await;
    assert!(
        matches!(confirmation, Confirmation::Ack(_)),
        "broker did not ack: {confirmation:?}"
    );

    let consume = channel.basic_consume(
        queue.as_str().into(),
        "wharf-smoke".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let mut consumer = step(RABBITMQ, "starting a consumer", consume).await;
    let next = async {
        match consumer.next().await {
            Some(delivery) => delivery.map_err(|error| error.to_string()),
            None => Err("consumer stream ended".to_owned()),
        }
    };
    let delivery = step(RABBITMQ, "receiving", next).await;

    assert_eq!(delivery.data, b"hello rabbitmq");
    let header = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("wharf-test"));
    match header {
        Some(AMQPValue::LongString(value)) => assert_eq!(value.as_bytes(), b"header-value"),
        other => panic!("header wharf-test missing or of another type: {other:?}"),
    }

    step(RABBITMQ, "acking", delivery.ack(BasicAckOptions::default())).await;
    let delete = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
    let remaining = step(RABBITMQ, "deleting the queue", delete).await;
    assert_eq!(remaining, 0, "the acked message is still in the queue");
    step(RABBITMQ, "closing", connection.close(200, "bye".into())).await;
}
