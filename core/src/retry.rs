//! [`RetryPolicy`]: how many times a failing message is tried, and how long to wait
//! between tries.
//!
//! The policy turns a handler's outcome and the delivery's attempt number, as counted by
//! the backend, into one [`Decision`]. Because the attempt number comes from the backend,
//! the count survives a consumer restart.

use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// Exponential backoff with jitter and a cap on attempts.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(4)
///     .initial_delay(Duration::from_millis(200))
///     .jitter(0.0);
/// assert_eq!(policy.delay_for(1), Duration::from_millis(200));
/// assert_eq!(policy.delay_for(2), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
}

/// What to do with a delivery after its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done; never deliver again.
    Ack,
    /// Deliver again after this delay.
    Retry(Duration),
    /// Move to the dead-letter destination for this reason.
    DeadLetter(String),
}

impl Default for RetryPolicy {
    /// Five attempts, waiting 1 s, 2 s, 4 s, 8 s between them, with 20 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Deliveries tried before dead-lettering, counting the first (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Wait before the second attempt.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Growth of the wait per attempt (at least 1.0).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Longest wait between attempts.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Random spread of each wait, as a fraction from 0.0 (none) to 1.0 (up to ±100 %).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The configured attempt limit.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Checks that every setting is in range.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the setting, its
    /// value and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid(
                "retry max_attempts is 0; it must be at least 1",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid(format!(
                "retry multiplier is {}; it must be a number of at least 1.0",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid(format!(
                "retry jitter is {}; it must be between 0.0 and 1.0",
                self.jitter
            )));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::invalid(
                "retry initial_delay is longer than max_delay",
            ));
        }
        Ok(())
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.powi(exponent);
        let secs = (self.initial_delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());

        self.spread(Duration::from_secs_f64(secs.max(0.0)))
    }

    fn spread(&self, delay: Duration) -> Duration {
        if self.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        let factor = 1.0 + rand::rng().random_range(-self.jitter..=self.jitter);

        Duration::from_secs_f64(delay.as_secs_f64() * factor).min(self.max_delay)
    }

    /// Decides what happens after a transient failure of attempt number `attempt`.
    pub fn after_failure(&self, attempt: u32, reason: &str) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::DeadLetter(format!(
                "gave up after {attempt} attempts; last error: {reason}"
            ));
        }
        Decision::Retry(self.delay_for(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_grows_and_stops_at_the_cap() {
        let policy = RetryPolicy::default()
            .initial_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(5))
            .jitter(0.0);

        assert_eq!(policy.delay_for(1), Duration::from_secs(1));
        assert_eq!(policy.delay_for(3), Duration::from_secs(4));
        assert_eq!(policy.delay_for(4), Duration::from_secs(5));
        assert_eq!(policy.delay_for(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn the_last_attempt_dead_letters() {
        let policy = RetryPolicy::default().max_attempts(3);

        assert!(matches!(
            policy.after_failure(2, "boom"),
            Decision::Retry(_)
        ));
        assert!(
            matches!(policy.after_failure(3, "boom"), Decision::DeadLetter(r) if r.contains("boom"))
        );
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let zero = RetryPolicy::default()
            .max_attempts(0)
            .validate()
            .unwrap_err();
        let jitter = RetryPolicy::default().jitter(1.5).validate().unwrap_err();

        assert!(zero.to_string().contains("max_attempts"), "{zero}");
        assert!(jitter.to_string().contains("1.5"), "{jitter}");
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(attempt in 1u32..100, jitter in 0.0f64..=1.0) {
            let policy = RetryPolicy::default().jitter(jitter);
            let base = policy.clone().jitter(0.0).delay_for(attempt);

            let delay = policy.delay_for(attempt);

            prop_assert!(delay <= Duration::from_secs(300));
            prop_assert!(delay.as_secs_f64() >= base.as_secs_f64() * (1.0 - jitter) - 1e-6);
        }
    }
}
