//! The set of Merkle trees one node keeps: one per ring range it
//! replicates, each behind its own mutex.
//!
//! `Store` takes a range's mutex around every write to that range, so the
//! engine write and the tree update happen as one step. A rebuild holds the
//! mutex while it scans the range, so no write slips between the scan and
//! the tree. A tree that is `None` is not built yet: writes skip it (the
//! rebuild will read them from storage), and sync waits for it.

use std::sync::{Mutex, MutexGuard};

use super::merkle::{in_range, RangeTree};
use crate::ring::{Ring, Token};

/// One range and its tree.
pub struct Slot {
    /// Exclusive start token.
    pub start: Token,
    /// Inclusive end token.
    pub end: Token,
    tree: Mutex<Option<RangeTree>>,
}

impl Slot {
    /// Locks the tree (None while unbuilt).
    pub fn lock(&self) -> MutexGuard<'_, Option<RangeTree>> {
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
        Self { slots: ranges.into_iter().map(|(start, end)| Slot { start, end, tree: Mutex::new(None) }).collect() }
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
        let ready = self.slots.iter().filter(|s| s.lock().is_some()).count();
        (ready as u32, self.slots.len() as u32)
    }
}

#[cfg(test)]
mod tests {
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
}
