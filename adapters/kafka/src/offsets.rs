//! Which offset of a partition may be committed, given deliveries settled in any order.
//!
//! Kafka keeps one committed offset per partition: everything below it counts as done.
//! Handlers finish out of order, so wharf may commit only up to the lowest offset still
//! unsettled; committing further would lose that message if the consumer stopped.

use std::collections::VecDeque;

/// Offsets per bitmap word.
const WORD: i64 = 64;

/// Offsets of one partition handed out and not yet settled, for one assignment of it.
///
/// A bitmap with one bit per offset, from the word holding the lowest unsettled offset to
/// the one holding the highest handed out: a bit is set while its offset awaits
/// settlement. Handing out and settling are a few bit operations each, whatever the
/// order, and words left all zero at the front are dropped as the commit point moves.
/// Offsets never handed out (gaps left by compaction or transaction markers) stay zero
/// and so never hold the commit point back.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// The offset of the first bit of `words[0]`, a multiple of [`WORD`].
    base: i64,
    words: VecDeque<u64>,
    /// How many bits are set.
    unsettled: usize,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The offset last sent to the broker as committed.
    committed: Option<i64>,
}

impl OffsetTracker {
    /// Records that `offset` was taken from the partition and awaits settlement.
    pub(crate) fn delivered(&mut self, offset: i64) {
        if self.words.is_empty() {
            self.base = offset - offset.rem_euclid(WORD);
        }
        // Only an offset below every one handed out so far needs words at the front;
        // librdkafka hands out a partition's records in order, so this is rare.
        while offset < self.base {
            self.words.push_front(0);
            self.base -= WORD;
        }
        let (word, bit) = self.position(offset);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }

        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.unsettled += 1;
        }
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
    }

    /// Marks `offset` settled; false if it was not awaiting settlement.
    pub(crate) fn settle(&mut self, offset: i64) -> bool {
        if offset < self.base {
            return false;
        }
        let (word, bit) = self.position(offset);
        let Some(bits) = self.words.get_mut(word) else {
            return false;
        };
        if *bits & bit == 0 {
            return false;
        }

        *bits &= !bit;
        self.unsettled -= 1;
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += WORD;
        }
        true
    }

    /// The word index and bit mask of `offset`, which must not be below `base`.
    fn position(&self, offset: i64) -> (usize, u64) {
        let index = offset - self.base;
        let word = usize::try_from(index / WORD).expect("offset at or above the base");
        (word, 1 << (index % WORD))
    }

    /// How many offsets await settlement.
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// The offset to commit: the lowest unsettled one, or one past the highest handed
    /// out if all are settled; `None` before anything was handed out.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        // Settling drops zero words at the front, so the first non-zero word is almost
        // always the first one.
        let lowest = self.words.iter().zip(0i64..).find_map(|(bits, word)| {
            (*bits != 0).then(|| self.base + word * WORD + i64::from(bits.trailing_zeros()))
        });
        lowest.or(self.next)
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
    use std::collections::BTreeSet;

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

    #[test]
    fn an_offset_below_the_first_one_still_holds_the_commit_point() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered(1_000);
        tracker.delivered(3);

        tracker.settle(1_000);

        assert_eq!(tracker.commit_point(), Some(3));
        assert!(tracker.settle(3));
        assert_eq!(tracker.commit_point(), Some(1_001));
        assert_eq!(tracker.unsettled(), 0);
    }

    #[test]
    fn a_wide_gap_behind_an_unsettled_offset_is_skipped_once_it_settles() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered(5);
        tracker.delivered(100_000);
        tracker.settle(100_000);

        assert_eq!(tracker.commit_point(), Some(5));
        tracker.settle(5);
        assert_eq!(tracker.commit_point(), Some(100_001));
        tracker.delivered(100_001);
        assert_eq!(tracker.commit_point(), Some(100_001));
    }

    /// Increasing offsets with gaps (compaction and transaction markers leave gaps), and
    /// an order in which to settle a subset of them.
    fn deliveries() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
        // Small gaps, and some beyond a bitmap word.
        let gap = prop_oneof![4 => 1i64..4, 1 => 60i64..200];
        prop::collection::vec(gap, 1..60).prop_flat_map(|gaps| {
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

        #[test]
        fn offsets_handed_out_in_any_order_are_tracked_alike(
            (offsets, order) in deliveries().prop_flat_map(|(offsets, order)| {
                (Just(offsets).prop_shuffle(), Just(order))
            })
        ) {
            let mut tracker = OffsetTracker::default();
            for &offset in &offsets {
                tracker.delivered(offset);
            }
            let mut open: BTreeSet<i64> = offsets.iter().copied().collect();

            for index in order {
                let was_open = open.remove(&offsets[index]);
                prop_assert_eq!(tracker.settle(offsets[index]), was_open);

                let highest = offsets.iter().max().expect("offsets were delivered");
                let expected = open.first().copied().unwrap_or(highest + 1);
                prop_assert_eq!(tracker.commit_point(), Some(expected));
                prop_assert_eq!(tracker.unsettled(), open.len());
            }
        }
    }
}
