//! The in-memory backend's limits and the options that change them.
//!
//! There is no remote broker whose quotas to mirror, so the limits are chosen to be
//! generous yet finite: finite so that a program developed against this backend does not
//! grow habits (a 50 MiB message, a week-long delay) that no real broker accepts.

use std::fmt;
use std::time::Duration;

use wharf_core::{Capabilities, Error, Result};

/// Largest message by default, counted as payload plus attribute text (SQS and Pub/Sub
/// accept 256 KiB and 10 MB; 1 MiB sits between them).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most messages in one publish request (ten times what SQS takes, as Pub/Sub's 1,000).
pub const MAX_BATCH_MESSAGES: usize = 1_000;
/// Most bytes in one publish request (Pub/Sub's 10 MB request limit, in MiB).
pub const MAX_BATCH_BYTES: usize = 10 * 1024 * 1024;
/// Most attributes on one message (Pub/Sub's limit).
pub const MAX_ATTRIBUTES: usize = 100;
/// Longest delayed publish (a day: longer delays belong in a scheduler, not a queue).
pub const MAX_PUBLISH_DELAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest nack delay (the same day).
pub const MAX_NACK_DELAY: Duration = MAX_PUBLISH_DELAY;
/// Shortest lease (one millisecond: the clock's useful resolution).
pub const MIN_LEASE: Duration = Duration::from_millis(1);
/// Longest single lease (SQS's maximum visibility timeout, 12 hours).
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 60 * 60);
/// How long a deduplication id is remembered by default (SQS FIFO's 5 minutes).
pub const DEFAULT_DEDUPLICATION_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Settings of a [`MemoryBackend`](crate::MemoryBackend); the defaults suit most uses.
///
/// ```
/// use std::time::Duration;
/// use wharf_memory::{MemoryBackend, MemoryOptions};
///
/// let options = MemoryOptions::default()
///     .max_message_bytes(64 * 1024)
///     .deduplication_window(Duration::from_secs(60));
/// let backend = MemoryBackend::with_options(options)?;
/// # Ok::<(), wharf_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    max_message_bytes: usize,
    pub(crate) deduplication_window: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            deduplication_window: DEFAULT_DEDUPLICATION_WINDOW,
        }
    }
}

impl MemoryOptions {
    /// Sets the largest message accepted, from 1 byte to [`MAX_BATCH_BYTES`]. Lower it to
    /// match the broker used in production, so oversized messages fail early.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets how long a deduplication id is remembered, from 1 ms to a day.
    #[must_use]
    pub fn deduplication_window(mut self, window: Duration) -> Self {
        self.deduplication_window = window;
        self
    }

    /// Checks every option against its range.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](wharf_core::ErrorKind::InvalidArgument) naming the value and
    /// its range.
    pub fn validate(&self) -> Result<()> {
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_BATCH_BYTES {
            return Err(Error::invalid(format!(
                "max_message_bytes of {} is outside the memory backend's range of 1 to {} bytes",
                self.max_message_bytes, MAX_BATCH_BYTES
            )));
        }

        let window = self.deduplication_window;
        if window < MIN_LEASE || window > MAX_PUBLISH_DELAY {
            return Err(Error::invalid(format!(
                "deduplication_window of {window:?} is outside the memory backend's range \
                 of 1ms to 24h"
            )));
        }
        Ok(())
    }

    /// What a backend with these options offers.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BACKEND,
            max_message_bytes: self.max_message_bytes,
            max_batch_messages: MAX_BATCH_MESSAGES,
            max_batch_bytes: MAX_BATCH_BYTES,
            max_attributes: Some(MAX_ATTRIBUTES),
            max_publish_delay: Some(MAX_PUBLISH_DELAY),
            max_nack_delay: MAX_NACK_DELAY,
            min_lease: MIN_LEASE,
            max_lease: Some(MAX_LEASE),
            native_delay: true,
            native_dead_letter: true,
            ordering: true,
            fan_out: true,
            deduplication: true,
            lease_expiry: true,
            backlog_stats: true,
        }
    }
}

/// Written by hand like every wharf configuration's `Debug`, though nothing here is
/// secret, so all of them read the same.
impl fmt::Debug for MemoryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOptions")
            .field("max_message_bytes", &self.max_message_bytes)
            .field("deduplication_window", &self.deduplication_window)
            .finish()
    }
}

/// The backend's name in capabilities, errors and logs.
pub(crate) const BACKEND: &str = "memory";

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::ErrorKind;

    #[test]
    fn defaults_are_valid() {
        assert!(MemoryOptions::default().validate().is_ok());
    }

    #[test]
    fn zero_message_size_is_refused_with_the_range() {
        let error = MemoryOptions::default()
            .max_message_bytes(0)
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(
            error.message().contains("max_message_bytes of 0"),
            "{error}"
        );
    }

    #[test]
    fn zero_deduplication_window_is_refused() {
        let error = MemoryOptions::default()
            .deduplication_window(Duration::ZERO)
            .validate()
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }
}
