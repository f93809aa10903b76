//! The operations side of [`MemoryBackend`]: backlog figures, dead-letter peek and purge,
//! and setup checks. Every figure is known, because the broker is this process.

use wharf_core::operations::doctor::{delivery_limit, lease_covers_handler, missing};
use wharf_core::{
    AckId, Error, ErrorKind, Expectations, Figure, Finding, RawDelivery, Received, Result,
    SubscriptionStats,
};

use crate::backend::MemoryBackend;
use crate::queue::{Peeked, Queue};

impl MemoryBackend {
    pub(crate) fn subscription_stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        let (_, queue) = self.registered(subscription)?;
        let counts = queue.stats();
        let dead_lettered = queue.dead_letter_queue().map_or(0, |dlq| dlq.len());

        Ok(SubscriptionStats {
            subscription: subscription.to_owned(),
            // Blocked messages wait only for their turn within an ordering key.
            ready: Figure::Known((counts.ready + counts.blocked) as u64),
            in_flight: Figure::Known(counts.in_flight as u64),
            delayed: Figure::Known(counts.delayed as u64),
            dead_lettered: Figure::Known(dead_lettered as u64),
            oldest_age: Figure::Known(counts.oldest_age),
            consumer_lag: Figure::unknown("a memory subscription is a queue, not a log"),
        })
    }

    pub(crate) fn peek(&self, subscription: &str, max: usize) -> Result<Vec<Received>> {
        let dead_letters = self.dead_letters_of(subscription)?;
        let source = dead_letters.name().to_owned();

        let peeked = dead_letters.peek(max);
        Ok(peeked.into_iter().map(|p| received(p, &source)).collect())
    }

    pub(crate) fn purge(&self, subscription: &str) -> Result<Figure<u64>> {
        let removed = self.dead_letters_of(subscription)?.purge();
        Ok(Figure::Known(removed as u64))
    }

    pub(crate) fn check(&self, expected: &Expectations) -> Vec<Finding> {
        let name = expected.subscription();
        // A lookup by name fails only for a missing subscription.
        let Ok((spec, _)) = self.registered(name) else {
            let fix = "create it with create_subscription (or `create_if_missing`)";
            return vec![missing(name, "subscription", fix)];
        };

        let limit = "its max_delivery_attempts";
        let lease = "its lease";
        let mut findings = Vec::new();
        findings.extend(delivery_limit(
            name,
            spec.max_delivery_attempts,
            expected,
            limit,
        ));
        findings.extend(lease_covers_handler(name, spec.lease, expected, lease));
        findings.extend(dead_letter_mismatch(
            name,
            &spec.dead_letter_name(),
            expected,
        ));
        findings
    }

    fn dead_letters_of(&self, subscription: &str) -> Result<std::sync::Arc<Queue>> {
        let (_, queue) = self.registered(subscription)?;
        // Every memory subscription is created with one; never fall back to the live
        // queue, which a purge would empty.
        queue.dead_letter_queue().cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                format!("subscription `{subscription}` has no dead-letter queue"),
            )
        })
    }
}

fn dead_letter_mismatch(name: &str, actual: &str, expected: &Expectations) -> Option<Finding> {
    let wanted = expected.spec.dead_letter_name();
    (actual != wanted).then(|| {
        Finding::error(
            name,
            format!(
                "dead letters go to `{actual}`, but the application reads them from `{wanted}`"
            ),
            format!("create the subscription again with dead_letter(\"{wanted}\")"),
        )
    })
}

fn received(peeked: Peeked, source: &str) -> Received {
    let message = &peeked.message;
    let raw = RawDelivery {
        id: message.id.to_string(),
        payload: message.payload.clone(),
        attributes: message.attributes.clone(),
        ordering_key: message.ordering_key.clone(),
        attempt: peeked.deliveries + 1,
        published_at: message.published_at,
        first_failure: peeked.first_failure,
        ack_id: AckId::new(()),
    };
    Received::from_raw(raw, source)
}
