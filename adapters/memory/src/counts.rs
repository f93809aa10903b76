//! [`StateCounts`]: how many messages a memory subscription holds in each state, for
//! dashboards, tests and tools.

use std::time::Duration;

/// A snapshot of one subscription's messages, from
/// [`MemoryBackend::counts`](crate::MemoryBackend::counts).
///
/// `ready + in_flight + delayed + blocked` is every message the subscription still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Visible now, waiting for a receiver.
    pub ready: usize,
    /// Delivered and not yet settled, their lease still running.
    pub in_flight: usize,
    /// Hidden until a publish delay or a nack delay ends.
    pub delayed: usize,
    /// On an ordered subscription, waiting behind an earlier message with the same
    /// ordering key.
    pub blocked: usize,
    /// Messages in the subscription's dead-letter queue, in any state.
    pub dead_lettered: usize,
    /// How long ago the oldest message still held was first published; `None` when
    /// the subscription is empty.
    pub oldest_age: Option<Duration>,
}
