//! Which offset of a partition may be committed, given deliveries settled in any order.
//!
//! Kafka keeps one committed offset per partition: everything below it counts as done.
//! Handlers finish out of order, so wharf may commit only up to the lowest offset still
//! unsettled; committing further would lose that message if the consumer stopped.

use std::collections::BTreeSet;

/// Offsets of one partition handed out and not yet settled, for one assignment of it.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    unsettled: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The offset last sent to the broker as committed.
    committed: Option<i64>,
}

impl OffsetTracker {
    /// Records that `offset` was taken from the partition and awaits settlement.
    pub(crate) fn delivered(&mut self, offset: i64) {
        self.unsettled.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
    }

    /// Marks `offset` settled; false if it was not awaiting settlement.
    pub(crate) fn settle(&mut self, offset: i64) -> bool {
        self.unsettled.remove(&offset)
    }

    /// How many offsets await settlement.
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    /// The offset to commit: the lowest unsettled one, or one past the highest handed
    /// out if all are settled; `None` before anything was handed out.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        self.unsettled.first().copied().or(self.next)
    }

    /// The commit point if it moved since the last commit.
    pub(crate) fn pending_commit(&self) -> Option<i64> {
        self.commit_point()
            .filter(|point| Some(*point) != self.committed)
    }

    /// Records that `offset` was committed.
    pub(crate) fn committed(&mut self, offset: i64) {
        self.committed = Some(offset);
    }

    /// Forgets the last commit, so the next round sends the commit point again.
    pub(crate) fn forget_commit(&mut self) {
        self.committed = None;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commit_stops_at_the_lowest_unsettled_offset() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.delivered(offset);
        }

        tracker.settle(13);
        tracker.settle(10);
        tracker.settle(12);

        assert_eq!(tracker.commit_point(), Some(11));
    }

    #[test]
    fn all_settled_commits_past_the_highest_offset() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered(4);
        tracker.delivered(7);

        tracker.settle(7);
        tracker.settle(4);

        assert_eq!(tracker.commit_point(), Some(8));
    }

    #[test]
    fn nothing_to_commit_before_the_first_delivery_or_after_a_commit() {
        let mut tracker = OffsetTracker::default();
        assert_eq!(tracker.pending_commit(), None);

        tracker.delivered(0);
        tracker.settle(0);
        tracker.committed(1);

        assert_eq!(tracker.pending_commit(), None);
        tracker.forget_commit();
        assert_eq!(tracker.pending_commit(), Some(1));
    }

    #[test]
    fn settling_twice_or_an_unknown_offset_is_reported() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered(3);

        assert!(tracker.settle(3));
        assert!(!tracker.settle(3));
        assert!(!tracker.settle(99));
    }

    /// Increasing offsets with gaps (compaction and transaction markers leave gaps), and
    /// an order in which to settle a subset of them.
    fn deliveries() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
        prop::collection::vec(1i64..4, 1..60).prop_flat_map(|gaps| {
            let offsets: Vec<i64> = gaps
                .iter()
                .scan(0i64, |at, gap| {
                    *at += gap;
                    Some(*at)
                })
                .collect();
            let count = offsets.len();
            let order = prop::collection::vec(0..count, 0..count * 2);
            (Just(offsets), order)
        })
    }

    proptest! {
        #[test]
        fn commit_point_never_passes_an_unsettled_offset((offsets, order) in deliveries()) {
            let mut tracker = OffsetTracker::default();
            for &offset in &offsets {
                tracker.delivered(offset);
            }
            let mut settled = BTreeSet::new();
            let mut last_point = tracker.commit_point();

            for index in order {
                tracker.settle(offsets[index]);
                settled.insert(offsets[index]);

                let point = tracker.commit_point().expect("offsets were delivered");
                let lowest_open = offsets.iter().find(|o| !settled.contains(o));
                match lowest_open {
                    Some(&open) => prop_assert_eq!(point, open),
                    None => prop_assert_eq!(point, offsets[offsets.len() - 1] + 1),
                }
                prop_assert!(Some(point) >= last_point, "commit point moved backwards");
                last_point = Some(point);
            }
        }
    }
}
