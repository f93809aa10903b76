//! SQS round trip with aws-sdk-sqs against LocalStack: create a queue, send
//! with a message attribute, receive, delete the message and the queue.

use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::MessageAttributeValue;
use wharf_services_smoke::{Service, step, unique_name};

const SQS: Service = Service::Sqs;

/// Fixed region and dummy credentials: LocalStack accepts any, and the
/// machine's own AWS settings must not leak into the test.
async fn client() -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(SQS.address())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "wharf-smoke"))
        .load()
        .await;
    Client::new(&config)
}

#[tokio::test]
async fn message_with_attribute_round_trips_through_a_queue() {
    let client = client().await;
    let name = unique_name("wharf-smoke");

    let created = step(
        SQS,
        "creating the queue",
        client.create_queue().queue_name(&name).send(),
    )
    .await;
    let queue_url = created
        .queue_url()
        .expect("CreateQueue returns the queue URL")
        .to_owned();

    let attribute = MessageAttributeValue::builder()
        .data_type("String")
        .string_value("header-value")
        .build()
        .expect("attribute has a data type");
    let send = client
        .send_message()
        .queue_url(&queue_url)
        .message_body("hello sqs")
        .message_attributes("wharf-test", attribute)
        .send();
    step(SQS, "sending", send).await;

    let receive = client
        .receive_message()
        .queue_url(&queue_url)
        .message_attribute_names("All")
        .max_number_of_messages(1)
        .wait_time_seconds(10)
        .send();
    let received = step(SQS, "receiving", receive).await;
    let messages = received.messages();
    assert_eq!(messages.len(), 1, "expected one message, got {messages:?}");
    let message = &messages[0];

    assert_eq!(message.body(), Some("hello sqs"));
    let attribute = message
        .message_attributes()
        .and_then(|attributes| attributes.get("wharf-test"));
    assert_eq!(
        attribute.and_then(|a| a.string_value()),
        Some("header-value")
    );

    let receipt = message
        .receipt_handle()
        .expect("a received message has a receipt handle");
    let delete = client
        .delete_message()
        .queue_url(&queue_url)
        .receipt_handle(receipt)
        .send();
    step(SQS, "deleting the message", delete).await;
    step(
        SQS,
        "deleting the queue",
        client.delete_queue().queue_url(&queue_url).send(),
    )
    .await;
}
