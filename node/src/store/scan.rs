//! Reading the store in order: by token range through the `Tokens` index
//! (anti-entropy, streaming, GC), and by key prefix (client scans); and
//! rebuilding the Merkle trees from a token-range scan.
//!
//! Invariants: every key in the data tree has exactly one `Tokens` entry,
//! `token (big-endian) ++ key`, written in the same engine batch as the
//! record (`mod.rs`), so a token-range scan sees every key in token order.
//! Scans are paged ([`Page`]) and read the engine in bounded batches.

use std::sync::Arc;

use super::Store;
use crate::antientropy::merkle::{item_hash, RangeTree};
use crate::antientropy::Trees;
use crate::error::Result;
use crate::paging::Page;
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

impl Store {
    /// Keys whose token lies in `(lo, hi]` (wrapping; `lo == hi` is the
    /// whole ring), with their records, in token order, as many as fit
    /// `page` (in keys and bytes; at least one). The flag says the page cut
    /// the answer short.
    pub fn token_range(&self, lo: Token, hi: Token, mut page: Page) -> Result<(Vec<KeyValue>, bool)> {
        // Inclusive token spans to walk.
        let spans: Vec<(Token, Token)> = match (lo < hi, lo == u64::MAX) {
            (true, _) => vec![(lo + 1, hi)],
            (false, false) => vec![(lo + 1, u64::MAX), (0, hi)],
            (false, true) => vec![(0, hi)],
        };
        let mut out = Vec::new();
        for (from, to) in spans {
            let (mut cursor, mut inclusive) = (from.to_be_bytes().to_vec(), true);
            'scan: loop {
                let rows = self.engine.scan(Tree::Tokens, &cursor, inclusive, 512)?;
                let Some(last) = rows.last().map(|(k, _)| k.clone()) else { break };
                for (tk, _) in rows {
                    let token = Token::from_be_bytes(tk[..8].try_into().expect("8-byte token prefix"));
                    if token > to {
                        break 'scan;
                    }
                    let key = &tk[8..];
                    if let Some(raw) = self.read_raw(key)? {
                        if !page.admit(key.len() + raw.len()) {
                            return Ok((out, true));
                        }
                        out.push((key.to_vec(), raw));
                    }
                }
                cursor = last;
                inclusive = false;
            }
        }
        Ok((out, false))
    }

    /// Replaces the trees with unbuilt ones for `ranges`, then builds each
    /// from storage while holding its lock. Writes go on meanwhile; each
    /// waits only while its own range is being scanned.
    pub fn rebuild_trees(&self, ranges: Vec<(Token, Token)>) -> Result<()> {
        let trees = Arc::new(Trees::new(ranges));
        *self.trees.write().expect("trees lock") = trees.clone();
        for slot in trees.slots() {
            let mut guard = slot.lock();
            let mut tree = RangeTree::new(slot.start, slot.end);
            let (items, _) = self.token_range(slot.start, slot.end, Page::unbounded())?;
            for (key, raw) in items {
                tree.apply(token_of(&key), &item_hash(&key, &raw));
            }
            *guard = Some(tree);
        }
        Ok(())
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
