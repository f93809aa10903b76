//! A payment provider that fails now and then, to show retries with backoff.
//!
//! Whether an authorisation fails is drawn from a random generator seeded with the run's
//! seed, the order id and the attempt number. The same run therefore fails the same
//! orders on the same attempts, whatever the timing, and the demo can work out in advance
//! which orders will exhaust their retries.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// The provider did not answer in time; a later attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider unavailable while authorising order {order_id} (attempt {attempt})")]
pub struct PaymentUnavailable {
    /// The order.
    pub order_id: Uuid,
    /// The delivery attempt it happened on.
    pub attempt: u32,
}

/// The simulated payment provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Payments {
    failure_rate: f64,
    seed: u64,
}

impl Payments {
    /// A provider that fails each authorisation with probability `failure_rate`
    /// (clamped to 0.0..=1.0), drawn from `seed`.
    pub fn new(failure_rate: f64, seed: u64) -> Self {
        let failure_rate = if failure_rate.is_finite() {
            failure_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self { failure_rate, seed }
    }

    /// Authorises the payment for `order_id`. The order id doubles as the idempotency
    /// key a real provider would take, so a retried authorisation charges once.
    ///
    /// # Errors
    ///
    /// [`PaymentUnavailable`] on the attempts this provider is drawn to fail.
    pub fn authorise(&self, order_id: Uuid, attempt: u32) -> Result<(), PaymentUnavailable> {
        if self.fails(order_id, attempt) {
            return Err(PaymentUnavailable { order_id, attempt });
        }
        Ok(())
    }

    /// Whether the authorisation of `order_id` fails on `attempt`.
    pub fn fails(&self, order_id: Uuid, attempt: u32) -> bool {
        let (high, low) = order_id.as_u64_pair();
        let mixed = self.seed ^ high.rotate_left(17) ^ low ^ u64::from(attempt).rotate_left(41);

        StdRng::seed_from_u64(mixed).random_bool(self.failure_rate)
    }

    /// Whether `order_id` fails on every one of `max_attempts` attempts, and so ends in
    /// the dead-letter queue.
    pub fn gives_up(&self, order_id: Uuid, max_attempts: u32) -> bool {
        (1..=max_attempts).all(|attempt| self.fails(order_id, attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_fails_the_same_attempts() {
        let a = Payments::new(0.5, 7);
        let b = Payments::new(0.5, 7);
        let ids: Vec<Uuid> = (0..200).map(|n| Uuid::from_u64_pair(n, n * 31)).collect();

        let fa: Vec<bool> = ids.iter().map(|id| a.fails(*id, 1)).collect();
        let fb: Vec<bool> = ids.iter().map(|id| b.fails(*id, 1)).collect();

        assert_eq!(fa, fb);
        assert!(fa.iter().any(|f| *f) && fa.iter().any(|f| !*f));
    }

    #[test]
    fn rate_zero_never_fails_and_rate_one_always_gives_up() {
        let id = Uuid::from_u64_pair(1, 2);

        assert!(Payments::new(0.0, 1).authorise(id, 1).is_ok());
        assert!(Payments::new(1.0, 1).gives_up(id, 5));
        assert!(Payments::new(f64::NAN, 1).authorise(id, 1).is_ok());
    }
}
