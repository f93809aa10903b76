//! Leases: an unsettled delivery returns when its lease ends, an extended lease keeps it
//! hidden, and settling after the lease ran out is reported, never silently accepted.

use std::time::Instant;

use wharf_core::{Backend, ErrorKind, Message};

use super::support::{
    ARRIVAL, Fixture, LEASE_MARGIN, ack, expect_nothing_on, publish, receive_one, receive_one_of,
};

/// A delivery held without settling is not redelivered while its lease runs, and is
/// redelivered, one attempt higher, after it ends.
pub async fn unacked_message_returns_after_its_lease(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "lease-expiry");
    if !fx.has(fx.caps().lease_expiry, "lease expiry") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let lease = queue.spec.lease;
        publish(&queue.publisher, Message::new("slow")).await;

        let held = receive_one(&queue.subscriber, ARRIVAL).await;
        let received_at = Instant::now();
        // Opened after the first delivery so it cannot have taken the message first;
        // the backend may redeliver to either subscriber, so both are watched.
        let other = fx.subscriber(&queue.spec.name).await;
        let both = [&queue.subscriber, &other];
        expect_nothing_on(&both, lease.saturating_sub(LEASE_MARGIN), "its lease runs").await;
        let again = receive_one_of(&both, lease + ARRIVAL).await;

        assert!(
            received_at.elapsed() + LEASE_MARGIN >= lease,
            "redelivered after {:?}, before the {lease:?} lease ended",
            received_at.elapsed()
        );
        assert_eq!(again.attempt(), 2, "an expired lease counts as an attempt");
        ack(again).await;
        drop(held);
    })
    .await;
}

/// Extending the lease halfway through keeps the message from other consumers past
/// the end of its original lease, and the delivery can still be acked.
pub async fn lease_extension_keeps_a_message_hidden(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "lease-extend");
    if !fx.has(fx.caps().lease_extension(), "lease extension") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        let lease = queue.spec.lease;
        publish(&queue.publisher, Message::new("long job")).await;
        let delivery = receive_one(&queue.subscriber, ARRIVAL).await;
        // Opened only now: a streaming backend could otherwise have leased the message
        // to this one first.
        let other = fx.subscriber(&queue.spec.name).await;

        tokio::time::sleep(lease / 2).await;
        delivery.extend_lease(lease).await.expect("extend_lease");
        // Hidden until 1.5 leases after receiving; watch until 1.25 leases. The backend
        // may redeliver to either subscriber, so both are watched.
        let hidden = [&queue.subscriber, &other];
        expect_nothing_on(&hidden, lease * 3 / 4, "its lease was extended").await;

        delivery.ack().await.expect("ack within the extended lease");
        expect_nothing_on(&hidden, LEASE_MARGIN, "it was acked").await;
    })
    .await;
}

/// Settling a delivery whose lease ran out, after the backend handed the message to
/// another consumer, fails with `LeaseExpired` instead of pretending to succeed.
pub async fn settling_after_lease_expiry_is_lease_expired(backend: &dyn Backend) {
    let fx = Fixture::new(backend, "lease-expired");
    if !fx.has(fx.caps().lease_expiry, "lease expiry") {
        return;
    }
    fx.run(async {
        let queue = fx.queue().await;
        publish(&queue.publisher, Message::new("late")).await;
        let stale = receive_one(&queue.subscriber, ARRIVAL).await;
        let other = fx.subscriber(&queue.spec.name).await;
        // A streaming backend may hand the message back to the first subscriber.
        let both = [&queue.subscriber, &other];
        let current = receive_one_of(&both, queue.spec.lease + ARRIVAL).await;

        let failed = stale
            .ack()
            .await
            .expect_err("acking after the lease expired must fail");

        assert_eq!(
            failed.error.kind(),
            ErrorKind::LeaseExpired,
            "{}",
            failed.error
        );
        ack(current).await;
        drop(failed);
        let quiet = queue.spec.lease + LEASE_MARGIN;
        expect_nothing_on(&both, quiet, "the current delivery was acked").await;
    })
    .await;
}
