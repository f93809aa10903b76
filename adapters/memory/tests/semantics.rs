//! The memory backend's own behaviour where it is subtle: leases on a paused clock, stale
//! receipts, ordering keys, deduplication, the native delivery limit, waking receivers.
//! The shared conformance suite covers the rest of the contract.

use std::time::Duration;

use tokio::time::{Instant, advance};
use wharf_core::dead_letter::{ATTEMPTS, Envelope, REASON};
use wharf_core::{Backend, Delivery, ErrorKind, Message, Publisher, Subscriber, SubscriptionSpec};
use wharf_memory::{MemoryBackend, MemoryOptions, StateCounts};

const LEASE: Duration = Duration::from_secs(10);
const NOW: Duration = Duration::ZERO;

struct Setup {
    backend: MemoryBackend,
    publisher: Publisher,
    subscriber: Subscriber,
}

async fn setup(spec: SubscriptionSpec) -> Setup {
    let backend = MemoryBackend::new();
    backend.create_topic(&spec.topic).await.unwrap();
    backend.create_subscription(&spec).await.unwrap();

    Setup {
        publisher: backend.publisher(&spec.topic).await.unwrap(),
        subscriber: backend.subscriber(&spec.name).await.unwrap(),
        backend,
    }
}

async fn orders() -> Setup {
    setup(SubscriptionSpec::new("orders", "billing").lease(LEASE)).await
}

async fn publish(publisher: &Publisher, message: Message) {
    publisher.publish(message).await.unwrap();
}

async fn receive_all(subscriber: &Subscriber) -> Vec<Delivery> {
    subscriber.receive(100, NOW).await.unwrap()
}

async fn receive_one(subscriber: &Subscriber) -> Delivery {
    let found = subscriber.receive_one(NOW).await.unwrap();
    found.expect("a visible message")
}

fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(d.payload()).into_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_unsettled_delivery_returns_after_its_lease_with_attempt_two() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let first = receive_one(&s.subscriber).await;

    advance(LEASE - Duration::from_millis(1)).await;
    let hidden = receive_all(&s.subscriber).await;
    advance(Duration::from_millis(1)).await;
    let again = receive_one(&s.subscriber).await;

    assert!(hidden.is_empty());
    assert_eq!(first.attempt(), 1);
    assert_eq!(again.attempt(), 2);
    assert!(again.first_failure().is_some());
    assert_eq!(again.id(), first.id());
    again.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn settling_after_the_lease_ran_out_is_lease_expired_even_before_redelivery() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let delivery = receive_one(&s.subscriber).await;

    advance(LEASE).await;
    let failed = delivery.ack().await.unwrap_err();

    assert_eq!(failed.error.kind(), ErrorKind::LeaseExpired);
    assert_eq!(s.backend.counts("billing").unwrap().ready, 1);
}

#[tokio::test(start_paused = true)]
async fn a_receipt_from_an_earlier_delivery_cannot_settle_the_redelivery() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let stale = receive_one(&s.subscriber).await;
    advance(LEASE).await;
    let current = receive_one(&s.subscriber).await;

    let stale_nack = stale.nack(NOW).await.unwrap_err();
    let current_ack = current.ack().await;

    assert_eq!(stale_nack.error.kind(), ErrorKind::LeaseExpired);
    assert!(current_ack.is_ok());
    assert_eq!(s.backend.counts("billing").unwrap(), StateCounts::default());
}

#[tokio::test(start_paused = true)]
async fn extending_the_lease_keeps_the_message_hidden_past_the_first_lease() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let delivery = receive_one(&s.subscriber).await;

    advance(Duration::from_secs(8)).await;
    delivery.extend_lease(LEASE).await.unwrap();
    advance(Duration::from_secs(8)).await;
    let hidden = receive_all(&s.subscriber).await;

    assert!(hidden.is_empty());
    delivery.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_nack_delay_is_never_cut_short() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let delay = Duration::from_secs(5);
    receive_one(&s.subscriber).await.nack(delay).await.unwrap();

    advance(delay - Duration::from_millis(1)).await;
    let early = receive_all(&s.subscriber).await;
    advance(Duration::from_millis(1)).await;
    let due = receive_one(&s.subscriber).await;

    assert!(early.is_empty());
    assert_eq!(due.attempt(), 2);
    due.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiting_receive_wakes_exactly_when_a_delayed_publish_is_due() {
    let s = orders().await;
    let delay = Duration::from_secs(3);
    publish(&s.publisher, Message::new("a").with_delay(delay)).await;
    let start = Instant::now();

    let delivery = s
        .subscriber
        .receive_one(Duration::from_secs(60))
        .await
        .unwrap();

    assert_eq!(start.elapsed(), delay);
    delivery.expect("due after its delay").ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiting_receive_wakes_when_another_consumers_lease_runs_out() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    let held = receive_one(&s.subscriber).await;
    let start = Instant::now();

    let returned = s
        .subscriber
        .receive_one(Duration::from_secs(60))
        .await
        .unwrap();

    assert_eq!(start.elapsed(), LEASE);
    assert_eq!(returned.expect("redelivered").attempt(), 2);
    drop(held);
}

#[tokio::test]
async fn a_waiting_receive_returns_as_soon_as_a_message_is_published() {
    let s = orders().await;
    let subscriber = s.subscriber.clone();
    let waiting =
        tokio::spawn(async move { subscriber.receive_one(Duration::from_secs(60)).await });

    tokio::task::yield_now().await;
    publish(&s.publisher, Message::new("a")).await;
    let delivery = waiting.await.unwrap().unwrap();

    delivery.expect("woken by the publish").ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_receive_with_nothing_to_find_returns_empty_after_its_wait() {
    let s = orders().await;
    let start = Instant::now();

    let found = s
        .subscriber
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap();

    assert!(found.is_empty());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn one_ordering_key_is_blocked_while_its_message_is_in_flight() {
    let s = setup(SubscriptionSpec::new("orders", "billing").ordered(true)).await;
    for (key, payload) in [("k1", "a"), ("k1", "b"), ("k2", "c"), ("k1", "d")] {
        publish(&s.publisher, Message::new(payload).with_ordering_key(key)).await;
    }

    let first = receive_all(&s.subscriber).await;
    let while_a_in_flight = receive_all(&s.subscriber).await;
    assert_eq!(payloads(&first), ["a", "c"]);
    assert!(while_a_in_flight.is_empty());
    assert_eq!(s.backend.counts("billing").unwrap().blocked, 2);

    for delivery in first {
        delivery.ack().await.unwrap();
    }
    let second = receive_all(&s.subscriber).await;
    assert_eq!(payloads(&second), ["b"]);
}

#[tokio::test]
async fn a_nacked_message_keeps_its_place_at_the_head_of_its_key() {
    let s = setup(SubscriptionSpec::new("orders", "billing").ordered(true)).await;
    for payload in ["a", "b"] {
        publish(&s.publisher, Message::new(payload).with_ordering_key("k")).await;
    }

    receive_one(&s.subscriber).await.nack(NOW).await.unwrap();
    let again = receive_all(&s.subscriber).await;

    assert_eq!(payloads(&again), ["a"]);
    assert_eq!(again[0].attempt(), 2);
}

#[tokio::test]
async fn an_unordered_subscription_ignores_ordering_keys() {
    let s = orders().await;
    for payload in ["a", "b"] {
        publish(&s.publisher, Message::new(payload).with_ordering_key("k")).await;
    }

    let both = receive_all(&s.subscriber).await;

    assert_eq!(payloads(&both), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_repeated_deduplication_id_is_accepted_but_delivered_once_within_the_window() {
    let s = orders().await;
    let message = |payload| Message::new(payload).with_deduplication_id("order-7");

    publish(&s.publisher, message("first")).await;
    publish(&s.publisher, message("repeat")).await;
    let within = receive_all(&s.subscriber).await;
    assert_eq!(payloads(&within), ["first"]);
    for delivery in within {
        delivery.ack().await.unwrap();
    }
    advance(Duration::from_secs(5 * 60)).await;
    publish(&s.publisher, message("after")).await;
    let after = receive_all(&s.subscriber).await;

    assert_eq!(payloads(&after), ["after"]);
}

#[tokio::test]
async fn the_delivery_limit_moves_the_message_to_the_dead_letter_queue() {
    let spec = SubscriptionSpec::new("orders", "billing").max_delivery_attempts(2);
    let s = setup(spec).await;
    publish(
        &s.publisher,
        Message::new("poison").with_attribute("sku", "x"),
    )
    .await;

    for _ in 0..2 {
        receive_one(&s.subscriber).await.nack(NOW).await.unwrap();
    }
    let third = receive_all(&s.subscriber).await;
    let dead = s.backend.dead_letter_subscriber("billing").await.unwrap();
    let letter = receive_one(&dead).await;

    assert!(third.is_empty());
    assert_eq!(letter.payload().as_ref(), b"poison");
    assert_eq!(letter.attribute("sku"), Some("x"));
    assert_eq!(
        letter.attribute(REASON),
        Some("delivery limit of 2 reached")
    );
    assert_eq!(letter.attribute(ATTEMPTS), Some("2"));
    assert_eq!(letter.attempt(), 1);
}

#[tokio::test]
async fn dead_lettering_keeps_payload_attributes_and_the_reason() {
    let s = orders().await;
    publish(
        &s.publisher,
        Message::new(vec![0u8, 255]).with_attribute("k", "v"),
    )
    .await;
    let delivery = receive_one(&s.subscriber).await;
    let id = delivery.id().to_owned();

    delivery.dead_letter("unknown product").await.unwrap();
    let dead = s.backend.subscriber("billing-dlq").await.unwrap();
    let letter = receive_one(&dead).await;
    let envelope = Envelope::from_attributes(letter.attributes()).unwrap();

    assert_eq!(letter.payload().as_ref(), [0u8, 255]);
    assert_eq!(letter.id(), id);
    assert_eq!(envelope.reason, "unknown product");
    assert_eq!(envelope.source, "billing");
    assert_eq!(Envelope::strip(letter.attributes()).len(), 1);
    assert_eq!(s.backend.counts("billing").unwrap().dead_lettered, 1);
}

#[tokio::test]
async fn dead_lettering_from_a_dead_letter_queue_is_unsupported() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    receive_one(&s.subscriber)
        .await
        .dead_letter("bad")
        .await
        .unwrap();
    let dead = s.backend.dead_letter_subscriber("billing").await.unwrap();

    let failed = receive_one(&dead)
        .await
        .dead_letter("again")
        .await
        .unwrap_err();

    assert_eq!(failed.error.kind(), ErrorKind::Unsupported);
    failed.into_delivery().ack().await.unwrap();
}

#[tokio::test]
async fn the_attempt_count_survives_a_new_subscriber() {
    let s = orders().await;
    publish(&s.publisher, Message::new("a")).await;
    receive_one(&s.subscriber).await.nack(NOW).await.unwrap();
    s.subscriber.close().await.unwrap();

    let restarted = s.backend.subscriber("billing").await.unwrap();
    let delivery = receive_one(&restarted).await;

    assert_eq!(delivery.attempt(), 2);
    delivery.ack().await.unwrap();
}

#[tokio::test]
async fn every_subscription_gets_its_own_copy() {
    let s = orders().await;
    let audit = SubscriptionSpec::new("orders", "audit");
    s.backend.create_subscription(&audit).await.unwrap();
    let auditor = s.backend.subscriber("audit").await.unwrap();

    publish(&s.publisher, Message::new("a")).await;
    let billed = receive_all(&s.subscriber).await;
    let audited = receive_all(&auditor).await;

    assert_eq!(payloads(&billed), ["a"]);
    assert_eq!(payloads(&audited), ["a"]);
}

#[tokio::test]
async fn a_topic_without_subscriptions_keeps_nothing() {
    let backend = MemoryBackend::new();
    backend.create_topic("orders").await.unwrap();
    let publisher = backend.publisher("orders").await.unwrap();

    publish(&publisher, Message::new("lost by design")).await;
    let spec = SubscriptionSpec::new("orders", "late");
    backend.create_subscription(&spec).await.unwrap();

    assert_eq!(backend.counts("late").unwrap(), StateCounts::default());
}

#[tokio::test]
async fn missing_topics_and_subscriptions_are_not_found_by_name() {
    let backend = MemoryBackend::new();

    let topic = backend.publisher("nowhere").await.unwrap_err();
    let spec = SubscriptionSpec::new("nowhere", "billing");
    let on_missing_topic = backend.create_subscription(&spec).await.unwrap_err();
    let subscription = backend.subscriber("billing").await.unwrap_err();

    assert_eq!(topic.kind(), ErrorKind::NotFound);
    assert!(topic.message().contains("`nowhere`"), "{topic}");
    assert!(topic.message().contains("create_topic"), "{topic}");
    assert_eq!(on_missing_topic.kind(), ErrorKind::NotFound);
    assert_eq!(subscription.kind(), ErrorKind::NotFound);
    assert!(
        subscription.message().contains("`billing`"),
        "{subscription}"
    );
}

#[tokio::test]
async fn a_deleted_subscription_is_not_found_by_its_subscribers() {
    let s = orders().await;

    s.backend.delete_subscription("billing").await.unwrap();
    let error = s.subscriber.receive(1, NOW).await.unwrap_err();
    let dead = s
        .backend
        .dead_letter_subscriber("billing")
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(dead.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn creating_a_subscription_again_is_fine_with_the_same_settings_only() {
    let s = orders().await;
    let same = SubscriptionSpec::new("orders", "billing").lease(LEASE);
    let other = same.clone().ordered(true);

    let again = s.backend.create_subscription(&same).await;
    let changed = s.backend.create_subscription(&other).await.unwrap_err();

    assert!(again.is_ok());
    assert_eq!(changed.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test]
async fn out_of_range_subscription_settings_are_invalid() {
    let backend = MemoryBackend::new();
    backend.create_topic("orders").await.unwrap();
    let long = SubscriptionSpec::new("orders", "a").lease(Duration::from_secs(13 * 3600));
    let zero = SubscriptionSpec::new("orders", "b").max_delivery_attempts(0);

    let long = backend.create_subscription(&long).await.unwrap_err();
    let zero = backend.create_subscription(&zero).await.unwrap_err();

    assert_eq!(long.kind(), ErrorKind::InvalidArgument);
    assert_eq!(zero.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn publisher_and_subscriber_refuse_work_after_close() {
    let s = orders().await;

    s.publisher.close().await.unwrap();
    s.subscriber.close().await.unwrap();
    let published = s.publisher.publish(Message::new("a")).await.unwrap_err();
    let received = s.subscriber.receive(1, NOW).await.unwrap_err();

    assert_eq!(published.error.kind(), ErrorKind::Closed);
    assert_eq!(published.into_message().payload().as_ref(), b"a");
    assert_eq!(received.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn an_oversized_message_is_refused_with_the_configured_limit() {
    let options = MemoryOptions::default().max_message_bytes(8);
    let backend = MemoryBackend::with_options(options).unwrap();
    backend.create_topic("orders").await.unwrap();
    let publisher = backend.publisher("orders").await.unwrap();

    let failed = publisher
        .publish(Message::new("nine bytes"))
        .await
        .unwrap_err();

    assert_eq!(failed.error.kind(), ErrorKind::PayloadTooLarge);
    assert!(
        failed.error.message().contains("at most 8 bytes"),
        "{}",
        failed.error
    );
}

#[tokio::test(start_paused = true)]
async fn stats_count_messages_by_state() {
    let s = orders().await;
    for payload in ["a", "b"] {
        publish(&s.publisher, Message::new(payload)).await;
    }
    publish(&s.publisher, Message::new("c").with_delay(LEASE)).await;
    let leased = s.subscriber.receive(1, NOW).await.unwrap();
    advance(Duration::from_secs(1)).await;

    let stats = s.backend.counts("billing").unwrap();

    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (1, 1, 1));
    assert!(stats.oldest_age.is_some());
    drop(leased);
}
