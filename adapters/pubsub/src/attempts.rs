//! Delivery attempts for subscriptions whose service-side count is missing.
//!
//! Pub/Sub counts deliveries (`delivery_attempt`) only on subscriptions with a
//! dead-letter policy. Elsewhere the adapter counts the deliveries of each message id it
//! has seen itself, shared by every subscriber one [`PubSubBackend`](crate::PubSubBackend)
//! opens on the subscription. The count is lost when the process ends, and a message
//! first delivered to another process starts again at 1 here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many message ids a counter remembers. Ids are forgotten when their message is
/// acked or dead-lettered; this bounds the memory held by messages that are nacked and
/// never seen again (another process took them).
const REMEMBERED_IDS: usize = 100_000;

/// Deliveries seen per message id, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct AttemptCounter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    seen: HashMap<String, (u32, u64)>,
    order: VecDeque<(String, u64)>,
    next_stamp: u64,
}

impl AttemptCounter {
    /// Records one more delivery of `message_id` and returns which one it is (from 1).
    pub(crate) fn record(&self, message_id: &str) -> u32 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = state.next_stamp;
        state.next_stamp += 1;

        let entry = state
            .seen
            .entry(message_id.to_owned())
            .or_insert((0, stamp));
        entry.0 += 1;
        entry.1 = stamp;
        let attempt = entry.0;

        state.order.push_back((message_id.to_owned(), stamp));
        state.evict();
        attempt
    }

    /// Forgets a message that is done.
    pub(crate) fn forget(&self, message_id: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.remove(message_id);
    }
}

impl State {
    fn evict(&mut self) {
        while self.order.len() > REMEMBERED_IDS {
            let Some((id, stamp)) = self.order.pop_front() else {
                return;
            };
            // Only the id's latest delivery evicts it; older queue entries are stale.
            if self
                .seen
                .get(&id)
                .is_some_and(|(_, latest)| *latest == stamp)
            {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delivery_of_an_id_counts_one_higher() {
        let counter = AttemptCounter::default();

        assert_eq!(counter.record("m1"), 1);
        assert_eq!(counter.record("m2"), 1);
        assert_eq!(counter.record("m1"), 2);
    }

    #[test]
    fn a_forgotten_id_starts_again() {
        let counter = AttemptCounter::default();
        counter.record("m1");

        counter.forget("m1");

        assert_eq!(counter.record("m1"), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let counter = AttemptCounter::default();

        for i in 0..REMEMBERED_IDS + 10 {
            counter.record(&i.to_string());
        }

        let state = counter.state.lock().unwrap();
        assert!(state.order.len() <= REMEMBERED_IDS);
        assert!(state.seen.len() <= REMEMBERED_IDS);
    }
}
