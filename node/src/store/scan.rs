//! Reading the store in order: by token range through the `Tokens` index
//! (anti-entropy, streaming, GC), and by key prefix (client scans); and
//! rebuilding the Merkle trees from a token-range scan.
//!
//! Invariants: every key in the data tree has exactly one `Tokens` entry,
//! `token (big-endian) ++ key`, written in the same engine batch as the
//! record (`mod.rs`), so a token-range scan sees every key in token order.
//! Scans are paged ([`Page`]) and read the engine in bounded batches.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Store;
use crate::antientropy::merkle::{item_hash, RangeTree, DEPTH};
use crate::antientropy::{Slot, Trees};
use crate::error::Result;
use crate::paging::{Page, PAGE_BYTES};
use crate::ring::{token_of, Token};
use crate::storage::{KeyValue, Tree};

/// Records a prefix scan reads from the engine at a time. Small, because
/// the engine returns values too and the page may take only a few of
/// them; 32 maximal (4 MiB) values are 128 MiB.
const SCAN_BATCH: usize = 32;

/// The `Tokens` index key: the key's token, big-endian, then the key.
pub(super) fn token_key(token: Token, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&token.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Index entries read from the engine at a time by a token-range walk.
/// They are keys only (the index stores no value), so a batch is small.
const INDEX_BATCH: usize = 512;

/// Keys a rebuild adds to a partial tree per hold of the range's mutex: a
/// writer to that range waits for at most this many reads.
const REBUILD_CHUNK: usize = 256;

/// A walk over the keys whose token lies in `(lo, hi]`, in token order,
/// a page at a time ([`Store::next_page`]). It holds only its position, so
/// memory stays flat however large the range; writes made meanwhile are
/// seen if the walk has not passed them yet.
#[derive(Clone, Debug)]
pub struct RangeCursor {
    /// Inclusive token spans still to walk; the first is under way.
    spans: VecDeque<(Token, Token)>,
    /// The last index entry taken from the first span.
    after: Option<Vec<u8>>,
}

impl RangeCursor {
    /// A walk over `(lo, hi]`, wrapping past the top of the ring when
    /// `hi <= lo` (`lo == hi` is the whole ring).
    pub fn new(lo: Token, hi: Token) -> Self {
        let spans = match (lo < hi, lo == u64::MAX) {
            (true, _) => vec![(lo + 1, hi)],
            (false, false) => vec![(lo + 1, u64::MAX), (0, hi)],
            (false, true) => vec![(0, hi)],
        };
        Self { spans: spans.into(), after: None }
    }

    /// True once every key has been walked.
    pub fn done(&self) -> bool {
        self.spans.is_empty()
    }

    fn next_span(&mut self) {
        self.spans.pop_front();
        self.after = None;
    }
}

impl Store {
    /// Keys whose token lies in `(lo, hi]` (wrapping; `lo == hi` is the
    /// whole ring), with their records, in token order, as many as fit
    /// `page` (in keys and bytes; at least one). The flag says the page cut
    /// the answer short.
    pub fn token_range(&self, lo: Token, hi: Token, page: Page) -> Result<(Vec<KeyValue>, bool)> {
        self.next_page(&mut RangeCursor::new(lo, hi), page)
    }

    /// The next keys of a walk with their records, as many as fit `page`
    /// (at least one, unless the walk is done). The flag says the page was
    /// cut short: call again for more.
    pub fn next_page(&self, walk: &mut RangeCursor, mut page: Page) -> Result<(Vec<KeyValue>, bool)> {
        let mut out = Vec::new();
        while let Some(&(from, to)) = walk.spans.front() {
            let rows = match &walk.after {
                Some(after) => self.engine.scan(Tree::Tokens, after, false, INDEX_BATCH)?,
                None => self.engine.scan(Tree::Tokens, &from.to_be_bytes(), true, INDEX_BATCH)?,
            };
            // The span is over when the index runs out or passes `to`.
            let mut span_over = rows.len() < INDEX_BATCH;
            for (tk, _) in rows {
                let token = Token::from_be_bytes(tk[..8].try_into().expect("8-byte token prefix"));
                if token > to {
                    span_over = true;
                    break;
                }
                let key = &tk[8..];
                if let Some(raw) = self.read_raw(key)? {
                    if !page.admit(key.len() + raw.len()) {
                        return Ok((out, true));
                    }
                    out.push((key.to_vec(), raw));
                }
                walk.after = Some(tk);
            }
            if span_over {
                walk.next_span();
            }
        }
        Ok((out, false))
    }

    /// Calls `visit` with every key in `(lo, hi]` and its record, in token
    /// order, reading a bounded page at a time: memory stays flat whatever
    /// the range holds. `visit` may write to the store.
    pub fn for_each_in_range(&self, lo: Token, hi: Token, mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mut walk = RangeCursor::new(lo, hi);
        while !walk.done() {
            let (rows, _) = self.next_page(&mut walk, Page::new(INDEX_BATCH, PAGE_BYTES))?;
            for (key, raw) in rows {
                visit(&key, &raw)?;
            }
        }
        Ok(())
    }

    /// Replaces the trees with unbuilt ones for `ranges`, then builds each
    /// from storage, a chunk of keys per hold of the range's mutex
    /// (`antientropy/trees.rs` says why writes meanwhile stay counted).
    /// Writers wait for one chunk at most, never for a whole range.
    pub fn rebuild_trees(&self, ranges: Vec<(Token, Token)>) -> Result<()> {
        let trees = Arc::new(Trees::new(ranges));
        for slot in trees.slots() {
            slot.lock().begin_build(slot.start, slot.end);
        }
        *self.trees.write().expect("trees lock") = trees.clone();
        for slot in trees.slots() {
            self.build_slot(slot)?;
        }
        Ok(())
    }

    /// Builds `slot`'s tree (its rebuild already begun) from storage, a
    /// chunk at a time.
    fn build_slot(&self, slot: &Slot) -> Result<()> {
        let mut walk = RangeCursor::new(slot.start, slot.end);
        while !walk.done() {
            let mut state = slot.lock();
            let (rows, _) = self.next_page(&mut walk, Page::new(REBUILD_CHUNK, PAGE_BYTES))?;
            for (key, raw) in rows {
                let token = token_of(&key);
                state.add_scanned(token, &key, &item_hash(&key, &raw));
            }
        }
        slot.lock().finish_build();
        Ok(())
    }

    /// Checks `leaves` of range `(start, end]`'s tree against the records
    /// stored there, and rebuilds the range's tree if one disagrees.
    /// Returns whether it rebuilt.
    ///
    /// Anti-entropy calls this for leaves whose hashes differed from a
    /// peer's while every key's version matched: then a tree, not the data,
    /// is wrong, and no amount of key repair would make the roots agree.
    /// Each leaf is checked under the range's mutex, so a write cannot slip
    /// between reading the tree and reading the data.
    pub fn heal_tree(&self, start: Token, end: Token, leaves: &[u32]) -> Result<bool> {
        let trees = self.trees();
        let Some(slot) = trees.get(start, end) else { return Ok(false) };
        let mut wrong = None;
        for &leaf in leaves {
            let state = slot.lock();
            let Some(tree) = state.built() else { return Ok(false) };
            let (lo, hi) = tree.leaf_bounds(leaf as usize);
            let mut fresh = RangeTree::new(start, end);
            if lo != hi {
                self.for_each_in_range(lo, hi, |key, raw| {
                    fresh.apply(token_of(key), &item_hash(key, raw));
                    Ok(())
                })?;
            }
            if fresh.nodes(DEPTH, &[leaf]) != tree.nodes(DEPTH, &[leaf]) {
                wrong = Some(leaf);
                break;
            }
        }
        let Some(leaf) = wrong else { return Ok(false) };
        tracing::warn!(range = %format!("({start}, {end}]"), leaf, "Merkle tree disagreed with the stored data; rebuilding the range's tree");
        slot.lock().begin_build(start, end);
        self.build_slot(slot)?;
        Ok(true)
    }

    /// Up to `limit` stored records in key order from `start`.
    pub fn scan_raw(&self, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        self.engine.scan(Tree::Data, start, inclusive, limit)
    }

    /// Records whose key starts with `prefix`, after `start_after` when it
    /// is set, in key order, as many as fit `page` (at least one). The flag
    /// is true when the page cut the listing short: another matching key
    /// follows the last one returned.
    pub fn scan_prefix(&self, prefix: &[u8], start_after: &[u8], mut page: Page) -> Result<(Vec<KeyValue>, bool)> {
        let (mut cursor, mut inclusive) = if start_after > prefix { (start_after.to_vec(), false) } else { (prefix.to_vec(), true) };
        let mut out = Vec::new();
        loop {
            let rows = self.scan_raw(&cursor, inclusive, SCAN_BATCH)?;
            let full = rows.len() == SCAN_BATCH;
            for (key, raw) in rows {
                if !key.starts_with(prefix) {
                    return Ok((out, false));
                }
                if !page.admit(key.len() + raw.len()) {
                    return Ok((out, true));
                }
                cursor.clone_from(&key);
                out.push((key, raw));
            }
            if !full {
                return Ok((out, false));
            }
            inclusive = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::store::tests::sib;
    use crate::version::Context;

    fn store_with(keys: usize) -> Arc<Store> {
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1)));
        for i in 0..keys {
            store.update(format!("k{i}").as_bytes(), |d| d.update(&Context::new(), "n1", sib("v"), false)).unwrap();
        }
        store
    }

    fn keys_of(rows: &[KeyValue]) -> Vec<Vec<u8>> {
        rows.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn a_walk_in_small_pages_sees_every_key_once_in_token_order_even_across_the_wrap() {
        // More keys than one index batch, so the walk crosses batches too.
        let store = store_with(INDEX_BATCH * 2 + 37);
        for (lo, hi) in [(0, 0), (u64::MAX / 3, u64::MAX / 3 * 2), (u64::MAX / 3 * 2, u64::MAX / 3), (u64::MAX, 7)] {
            let (all, more) = store.token_range(lo, hi, Page::unbounded()).unwrap();
            assert!(!more);
            let mut walk = RangeCursor::new(lo, hi);
            let mut paged = Vec::new();
            while !walk.done() {
                let (rows, _) = store.next_page(&mut walk, Page::new(10, usize::MAX)).unwrap();
                assert!(rows.len() <= 10);
                paged.extend(rows);
            }
            assert_eq!(keys_of(&paged), keys_of(&all), "({lo}, {hi}]: paged walk differs from one read");
            let mut visited = Vec::new();
            store
                .for_each_in_range(lo, hi, |k, _| {
                    visited.push(k.to_vec());
                    Ok(())
                })
                .unwrap();
            assert_eq!(visited, keys_of(&all), "({lo}, {hi}]: for_each differs");
            let in_range = |k: &Vec<u8>| crate::antientropy::merkle::in_range(token_of(k), lo, hi);
            let expect = (0..INDEX_BATCH * 2 + 37).map(|i| format!("k{i}").into_bytes()).filter(in_range).count();
            assert_eq!(all.len(), expect, "({lo}, {hi}]: every key in range, no other");
        }
    }

    #[test]
    fn a_rebuild_racing_writers_ends_with_the_tree_of_what_is_stored() {
        let store = store_with(3000);
        let halves = vec![(0, u64::MAX / 2), (u64::MAX / 2, 0)];
        store.rebuild_trees(halves.clone()).unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    for i in (0..3000).step_by(7) {
                        let key = format!("k{i}");
                        let v = store.read(key.as_bytes()).unwrap().unwrap_or_default();
                        store.update(key.as_bytes(), |d| d.update(&v.context(), "n1", sib(&format!("w{round}")), false)).unwrap();
                    }
                }
            })
        };
        let mut rebuilds = 0;
        while !writer.is_finished() || rebuilds == 0 {
            store.rebuild_trees(halves.clone()).unwrap();
            rebuilds += 1;
        }
        writer.join().unwrap();
        let roots = |s: &Store| s.trees().slots().iter().map(|slot| slot.lock().built().unwrap().root()).collect::<Vec<_>>();
        let raced = roots(&store);
        store.rebuild_trees(halves).unwrap();
        assert_eq!(raced, roots(&store), "a write during a rebuild was lost or counted twice");
    }
}
