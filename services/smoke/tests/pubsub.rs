//! Pub/Sub round trip with google-cloud-pubsub against Google's emulator:
//! create a topic and a subscription, publish with an attribute, stream it,
//! ack, delete both.

use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use wharf_services_smoke::{Service, step, unique_name};

const PUBSUB: Service = Service::PubSub;

/// The emulator accepts any project id.
const PROJECT: &str = "wharf-smoke";

/// The emulator speaks plain HTTP/2 and checks no credentials.
fn endpoint() -> String {
    format!("http://{}", PUBSUB.address())
}

fn credentials() -> Credentials {
    anonymous::Builder::new().build()
}

#[tokio::test]
async fn message_with_attribute_round_trips_through_a_subscription() {
    let topic_admin = TopicAdmin::builder()
        .with_endpoint(endpoint())
        .with_credentials(credentials())
        .build();
    let topic_admin = step(PUBSUB, "building the topic admin", topic_admin).await;
    let subscription_admin = SubscriptionAdmin::builder()
        .with_endpoint(endpoint())
        .with_credentials(credentials())
        .build();
    let subscription_admin = step(
        PUBSUB,
        "building the subscription admin",
        subscription_admin,
    )
    .await;
    // Ids must start with a letter and have at least 3 characters.
    let topic = format!("projects/{PROJECT}/topics/{}", unique_name("wharf-smoke"));
    let subscription = format!(
        "projects/{PROJECT}/subscriptions/{}",
        unique_name("wharf-smoke")
    );

    let create_topic = topic_admin.create_topic().set_name(&topic).send();
    step(PUBSUB, "creating the topic", create_topic).await;
    let create_subscription = subscription_admin
        .create_subscription()
        .set_name(&subscription)
        .set_topic(&topic)
        .set_ack_deadline_seconds(10)
        .send();
    step(PUBSUB, "creating the subscription", create_subscription).await;

    let publisher = Publisher::builder(&topic)
        .with_endpoint(endpoint())
        .with_credentials(credentials())
        .build();
    let publisher = step(PUBSUB, "building the publisher", publisher).await;
    let message = Message::new()
        .set_data("hello pubsub")
        .set_attributes([("wharf-test", "header-value")]);
    step(PUBSUB, "publishing", publisher.publish(message)).await;

    let subscriber = Subscriber::builder()
        .with_endpoint(endpoint())
        .with_credentials(credentials())
        .build();
    let subscriber = step(PUBSUB, "building the subscriber", subscriber).await;
    let mut stream = subscriber.subscribe(&subscription).build();
    let next = async {
        match stream.next().await {
            Some(item) => item.map_err(|error| error.to_string()),
            None => Err("message stream ended".to_owned()),
        }
    };
    let (received, handler) = step(PUBSUB, "receiving", next).await;

    assert_eq!(received.data, "hello pubsub");
    let attribute = received.attributes.get("wharf-test").map(String::as_str);
    assert_eq!(attribute, Some("header-value"));

    handler.ack();
    drop(stream);
    let delete_subscription = subscription_admin
        .delete_subscription()
        .set_subscription(&subscription)
        .send();
    step(PUBSUB, "deleting the subscription", delete_subscription).await;
    step(
        PUBSUB,
        "deleting the topic",
        topic_admin.delete_topic().set_topic(&topic).send(),
    )
    .await;
}
