//! Merkle trees over token ranges: pure, no I/O (DESIGN §6).
//!
//! One [`RangeTree`] covers one ring range `(start, end]` that this node
//! replicates. Its leaves split the range's tokens evenly. `FANOUT` is 8 and
//! `DEPTH` is 2, so there are 64 leaves. A node replicates about
//! N × vnodes = 48 ranges, so at 1M keys per node a leaf holds about
//! 1M / 48 / 64 ≈ 325 keys: small enough that a differing leaf costs a few
//! kilobytes of digests, and few enough nodes that a tree costs
//! (1 + 8 + 64) × 32 bytes ≈ 2.3 KiB. That is about 112 KiB per node,
//! whatever the number of keys.
//!
//! Every node's hash is the XOR of `blake3(key, version)` over the keys
//! beneath it. XOR is order-independent and its own inverse. A write
//! therefore changes one leaf and its ancestors by the same delta
//! `H(key, old) ^ H(key, new)`: O(depth) work, and no other key is read.
//! An empty subtree hashes to zero.

use crate::ring::Token;

/// Children per inner node.
pub const FANOUT: usize = 8;
/// Levels below the root.
pub const DEPTH: u32 = 2;
/// Leaves per tree.
pub const LEAVES: usize = FANOUT.pow(DEPTH);

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The all-zero hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// The contribution of one key at one version.
pub fn item_hash(key: &[u8], version: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(version);
    *h.finalize().as_bytes()
}

/// XORs `b` into `a`.
pub fn xor(a: &mut Hash, b: &Hash) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// Number of nodes on `level` (0 is the root).
pub fn level_width(level: u32) -> usize {
    FANOUT.pow(level)
}

/// A Merkle tree over the range `(start, end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeTree {
    /// Exclusive start token.
    pub start: Token,
    /// Inclusive end token.
    pub end: Token,
    /// Levels 0..=DEPTH, each `FANOUT^level` hashes.
    levels: Vec<Vec<Hash>>,
}

impl RangeTree {
    /// An empty tree for `(start, end]`.
    pub fn new(start: Token, end: Token) -> Self {
        Self { start, end, levels: (0..=DEPTH).map(|l| vec![EMPTY; level_width(l)]).collect() }
    }

    /// The leaf that `token` falls in. `token` must lie in the range.
    pub fn leaf_of(&self, token: Token) -> usize {
        let len = range_len(self.start, self.end);
        let offset = token.wrapping_sub(self.start).wrapping_sub(1) as u128;
        ((offset * LEAVES as u128) / len) as usize
    }

    /// The token sub-range `(lo, hi]` that leaf `leaf` covers.
    pub fn leaf_bounds(&self, leaf: usize) -> (Token, Token) {
        let len = range_len(self.start, self.end);
        // Smallest offset whose leaf is `leaf`: ceil(leaf * len / LEAVES).
        let first = |l: usize| ((l as u128 * len).div_ceil(LEAVES as u128)) as u64;
        let lo = self.start.wrapping_add(first(leaf));
        let hi = self.start.wrapping_add(first(leaf + 1));
        (lo, hi)
    }

    /// XORs `delta` into the leaf holding `token` and every ancestor.
    pub fn apply(&mut self, token: Token, delta: &Hash) {
        let mut index = self.leaf_of(token);
        for level in (0..=DEPTH as usize).rev() {
            xor(&mut self.levels[level][index], delta);
            index /= FANOUT;
        }
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.levels[0][0]
    }

    /// Hashes of the given nodes on `level`; out-of-range indices hash as empty.
    pub fn nodes(&self, level: u32, indices: &[u32]) -> Vec<Hash> {
        let row = self.levels.get(level as usize);
        indices.iter().map(|&i| row.and_then(|r| r.get(i as usize)).copied().unwrap_or(EMPTY)).collect()
    }

    /// Bytes this tree occupies in memory (its hashes).
    pub fn memory_bytes() -> usize {
        (0..=DEPTH).map(level_width).sum::<usize>() * 32
    }
}

/// Whether `t` lies in the ring range `(start, end]`, which may wrap. A
/// range whose start equals its end is the whole ring.
pub fn in_range(t: Token, start: Token, end: Token) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Less => t > start && t <= end,
        std::cmp::Ordering::Greater => t > start || t <= end,
        std::cmp::Ordering::Equal => true,
    }
}

fn range_len(start: Token, end: Token) -> u128 {
    if start == end {
        1u128 << 64
    } else {
        end.wrapping_sub(start) as u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rebuild(start: Token, end: Token, items: &BTreeMap<u64, (Vec<u8>, Vec<u8>)>) -> RangeTree {
        let mut t = RangeTree::new(start, end);
        for (token, (k, v)) in items {
            t.apply(*token, &item_hash(k, v));
        }
        t
    }

    #[test]
    fn leaf_bounds_partition_the_range_and_agree_with_leaf_of() {
        for (start, end) in [(0u64, 1000u64), (u64::MAX - 100, 50), (10, 10), (5, 5 + LEAVES as u64 * 3 + 1)] {
            let t = RangeTree::new(start, end);
            let mut prev_hi = start;
            for leaf in 0..LEAVES {
                let (lo, hi) = t.leaf_bounds(leaf);
                assert_eq!(lo, prev_hi, "leaves are contiguous");
                prev_hi = hi;
                if lo != hi {
                    assert_eq!(t.leaf_of(lo.wrapping_add(1)), leaf);
                    assert_eq!(t.leaf_of(hi), leaf, "the leaf's own end is in it");
                }
            }
            assert_eq!(prev_hi, end, "the last leaf ends at the range end");
        }
    }

    #[test]
    fn range_boundaries() {
        assert!(in_range(10, 5, 10), "end is inside");
        assert!(!in_range(5, 5, 10), "start is outside");
        assert!(in_range(2, 100, 5) && in_range(200, 100, 5) && !in_range(50, 100, 5), "wrapping");
        let t = RangeTree::new(5, 5 + 100 * LEAVES as u64);
        assert_eq!(t.leaf_of(5 + 100 * LEAVES as u64), LEAVES - 1, "the end token is in the last leaf");
        assert_eq!(t.leaf_of(6), 0, "the first token after start is in the first leaf");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(u64, u8),
        Delete(u64),
    }

    proptest! {
        #[test]
        fn incremental_updates_match_a_rebuild(
            start in any::<u64>(), len in 1u64..u64::MAX,
            ops in proptest::collection::vec(prop_oneof![
                (any::<u64>(), any::<u8>()).prop_map(|(t, v)| Op::Put(t, v)),
                any::<u64>().prop_map(Op::Delete),
            ], 0..60),
        ) {
            let end = start.wrapping_add(len);
            let mut tree = RangeTree::new(start, end);
            let mut items: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(raw, v) => {
                        let token = start.wrapping_add(1 + raw % len);
                        let key = token.to_be_bytes().to_vec();
                        let new = vec![v];
                        let mut delta = item_hash(&key, &new);
                        if let Some((_, old)) = items.get(&token) {
                            xor(&mut delta, &item_hash(&key, old));
                        }
                        tree.apply(token, &delta);
                        items.insert(token, (key, new));
                    }
                    Op::Delete(raw) => {
                        let token = start.wrapping_add(1 + raw % len);
                        if let Some((k, v)) = items.remove(&token) {
                            tree.apply(token, &item_hash(&k, &v));
                        }
                    }
                }
            }
            prop_assert_eq!(&tree, &rebuild(start, end, &items));
            if items.is_empty() {
                prop_assert_eq!(tree.root(), EMPTY);
            }
        }
    }
}
