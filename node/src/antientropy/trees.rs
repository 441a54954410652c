//! The set of Merkle trees one node keeps: one per ring range it
//! replicates, each behind its own mutex.
//!
//! `Store` takes a range's mutex around every write to that range, so the
//! engine write and the tree update happen as one step. A tree that is not
//! built yet is skipped by sync, which waits for it.
//!
//! A rebuild does not hold the mutex for the whole range: it scans a chunk
//! of keys under the mutex, adds them to a partial tree, records how far it
//! has come, and lets go, so a writer waits for one chunk at most. A write
//! behind that mark updates the partial tree by its delta, as it would a
//! built one; a write ahead of it is skipped, because the scan will read the
//! key's new record when it gets there. Positions are compared in walk
//! order, `(offset of the token from the range start, key)`, which is
//! token order even for the range that wraps past the top of the ring.

use std::sync::{Mutex, MutexGuard};

use super::merkle::{in_range, Hash, RangeTree};
use crate::ring::{Ring, Token};

/// How far a rebuild's scan has come, in walk order.
type Mark = (u64, Vec<u8>);

/// A range's tree under its mutex: built, being rebuilt, or neither.
#[derive(Default)]
pub struct SlotState {
    tree: Option<RangeTree>,
    building: Option<(RangeTree, Option<Mark>)>,
}

impl SlotState {
    /// The built tree, if there is one.
    pub fn built(&self) -> Option<&RangeTree> {
        self.tree.as_ref()
    }

    /// True once the tree is built.
    pub fn is_built(&self) -> bool {
        self.tree.is_some()
    }

    /// Applies a write's Merkle delta for `key` at `token`: to the built
    /// tree, or to the partial one when the rebuild has scanned past the key.
    pub fn apply(&mut self, token: Token, key: &[u8], delta: &Hash) {
        if let Some(t) = self.tree.as_mut() {
            return t.apply(token, delta);
        }
        if let Some((t, Some(mark))) = self.building.as_mut() {
            if (offset(t.start, token), key) <= (mark.0, mark.1.as_slice()) {
                t.apply(token, delta);
            }
        }
    }

    /// Starts a rebuild from an empty tree for `(start, end]`.
    pub fn begin_build(&mut self, start: Token, end: Token) {
        self.tree = None;
        self.building = Some((RangeTree::new(start, end), None));
    }

    /// Adds a scanned item (its token, key and item hash) to the partial
    /// tree and moves the mark past it. Items come in walk order.
    pub fn add_scanned(&mut self, token: Token, key: &[u8], hash: &Hash) {
        let (t, mark) = self.building.as_mut().expect("add_scanned during a rebuild");
        t.apply(token, hash);
        *mark = Some((offset(t.start, token), key.to_vec()));
    }

    /// Finishes the rebuild: the partial tree becomes the tree.
    pub fn finish_build(&mut self) {
        if let Some((t, _)) = self.building.take() {
            self.tree = Some(t);
        }
    }
}

/// A token's distance past the range's exclusive start: walk order.
fn offset(start: Token, token: Token) -> u64 {
    token.wrapping_sub(start).wrapping_sub(1)
}

/// One range and its tree.
pub struct Slot {
    /// Exclusive start token.
    pub start: Token,
    /// Inclusive end token.
    pub end: Token,
    tree: Mutex<SlotState>,
}

impl Slot {
    /// Locks the range's tree state.
    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.tree.lock().expect("tree lock poisoned")
    }
}

/// The trees of the ranges a node replicates, sorted by end token.
#[derive(Default)]
pub struct Trees {
    slots: Vec<Slot>,
}

impl Trees {
    /// Unbuilt trees for `ranges`.
    pub fn new(mut ranges: Vec<(Token, Token)>) -> Self {
        ranges.sort_by_key(|r| r.1);
        Self { slots: ranges.into_iter().map(|(start, end)| Slot { start, end, tree: Mutex::new(SlotState::default()) }).collect() }
    }

    /// The ranges of `ring` that `me` replicates with replication factor `n`.
    pub fn ranges_of(ring: &Ring, me: &str, n: usize) -> Vec<(Token, Token)> {
        let mut out: Vec<(Token, Token)> = ring
            .ranges()
            .into_iter()
            .filter(|(_, end, _)| ring.replicas_of(*end, n).iter().any(|r| r == me))
            .map(|(s, e, _)| (s, e))
            .collect();
        out.sort_by_key(|r| r.1);
        out
    }

    /// The ranges, sorted by end.
    pub fn ranges(&self) -> Vec<(Token, Token)> {
        self.slots.iter().map(|s| (s.start, s.end)).collect()
    }

    /// Every slot.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot whose range holds `token`, if this node replicates it.
    pub fn find(&self, token: Token) -> Option<&Slot> {
        let i = self.slots.partition_point(|s| s.end < token);
        let candidates = [i, self.slots.len().wrapping_sub(1), 0];
        candidates.into_iter().filter_map(|i| self.slots.get(i)).find(|s| in_range(token, s.start, s.end))
    }

    /// The slot for exactly `(start, end]`.
    pub fn get(&self, start: Token, end: Token) -> Option<&Slot> {
        let i = self.slots.partition_point(|s| s.end < end);
        self.slots.get(i).filter(|s| s.start == start && s.end == end)
    }

    /// (built, total) trees.
    pub fn readiness(&self) -> (u32, u32) {
        let ready = self.slots.iter().filter(|s| s.lock().is_built()).count();
        (ready as u32, self.slots.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::item_hash;
    use super::*;

    #[test]
    fn find_handles_gaps_and_the_wrapping_range() {
        let t = Trees::new(vec![(100, 200), (300, 400), (u64::MAX - 10, 5)]);
        assert_eq!(t.find(150).map(|s| s.end), Some(200));
        assert_eq!(t.find(200).map(|s| s.end), Some(200));
        assert!(t.find(250).is_none(), "a range this node does not replicate");
        assert_eq!(t.find(3).map(|s| s.end), Some(5), "wrapping range, low side");
        assert_eq!(t.find(u64::MAX).map(|s| s.end), Some(5), "wrapping range, high side");
        assert!(t.get(300, 400).is_some() && t.get(299, 400).is_none());
    }

    /// The tree of `(token, key, version)` items, built in one go.
    fn built_from(start: Token, end: Token, items: &[(Token, &str, &str)]) -> RangeTree {
        let mut t = RangeTree::new(start, end);
        for (token, key, v) in items {
            t.apply(*token, &item_hash(key.as_bytes(), v.as_bytes()));
        }
        t
    }

    #[test]
    fn writes_during_a_chunked_rebuild_are_counted_once() {
        use super::super::merkle::xor;
        // A wrapping range: walk order is 200, MAX, 3, 5.
        let (start, end) = (100, 10);
        let delta = |key: &str, old: &str, new: &str| {
            let mut d = item_hash(key.as_bytes(), new.as_bytes());
            xor(&mut d, &item_hash(key.as_bytes(), old.as_bytes()));
            d
        };
        let mut s = SlotState::default();
        s.begin_build(start, end);
        // The first chunk: the keys at 200 and MAX.
        s.add_scanned(200, b"a", &item_hash(b"a", b"1"));
        s.add_scanned(u64::MAX, b"b", &item_hash(b"b", b"1"));
        // A write behind the mark updates the partial tree; one ahead of it
        // (token 3, low side of the wrap) is left for the scan.
        s.apply(200, b"a", &delta("a", "1", "2"));
        s.apply(3, b"c", &delta("c", "1", "2"));
        assert!(!s.is_built(), "not built before the scan ends");
        // The second chunk reads c's new record, and d.
        s.add_scanned(3, b"c", &item_hash(b"c", b"2"));
        s.add_scanned(5, b"d", &item_hash(b"d", b"1"));
        s.finish_build();
        let want = built_from(start, end, &[(200, "a", "2"), (u64::MAX, "b", "1"), (3, "c", "2"), (5, "d", "1")]);
        assert_eq!(s.built().map(RangeTree::root), Some(want.root()));
        // Once built, every write applies.
        s.apply(5, b"d", &delta("d", "1", "3"));
        let want = built_from(start, end, &[(200, "a", "2"), (u64::MAX, "b", "1"), (3, "c", "2"), (5, "d", "3")]);
        assert_eq!(s.built().map(RangeTree::root), Some(want.root()));
    }

    #[test]
    fn a_write_at_the_marks_token_but_a_later_key_waits_for_the_scan() {
        let mut s = SlotState::default();
        s.begin_build(0, 1000);
        s.add_scanned(50, b"k1", &item_hash(b"k1", b"v"));
        // Same token, later key: not scanned yet, so skipped.
        s.apply(50, b"k2", &item_hash(b"k2", b"v"));
        s.add_scanned(50, b"k2", &item_hash(b"k2", b"v"));
        s.finish_build();
        assert_eq!(s.built().map(RangeTree::root), Some(built_from(0, 1000, &[(50, "k1", "v"), (50, "k2", "v")]).root()));
    }
}
