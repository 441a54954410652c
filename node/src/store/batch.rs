//! Many keys' merges as one engine batch: a `ReplicateBatch` from a
//! coordinator, or a page of a streamed range.
//!
//! Invariants: every result is what [`Store::merge`] of that item alone
//! would have returned; every changed key lands in one atomic engine write
//! with its `Tokens` entry; locks are taken stripes first, then ranges,
//! each in ascending order, so a batch and a single write never deadlock.

use std::sync::atomic::Ordering;

use super::{stripe_of, token_key, tree_delta, Merged, Store, Ticket};
use crate::antientropy::SlotState;
use crate::error::{Error, Result};
use crate::record;
use crate::ring::{token_of, Token};
use crate::storage::{Op, Tree};
use crate::version::DvvSet;

/// A key `merge_many` rewrites: the key, the record it replaces (if any)
/// and the new record.
type Rewrite<'k> = (&'k [u8], Option<Vec<u8>>, Vec<u8>);

impl Store {
    /// Merges many keys' incoming versions as one engine batch: one atomic
    /// write (one redb transaction, one commit-log record) for every key
    /// that changed, where [`Store::merge`] per key would make one each. A
    /// `ReplicateBatch` from a coordinator arrives this way. Each result is
    /// what `merge` would have returned for that item; an item that fails to
    /// decode its stored record fails alone. A key listed twice is merged
    /// once with both versions.
    pub fn merge_many(&self, items: &[(&[u8], &DvvSet)]) -> Vec<Result<Merged>> {
        // Every stripe, then every range, in a fixed order: a single write
        // takes one stripe then one range, so no cycle can form.
        let mut stripes: Vec<usize> = items.iter().map(|(k, _)| stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Ticket>)> =
            stripes.iter().map(|&i| (i, self.stripes[i].lock().expect("stripe lock poisoned"))).collect();
        let trees = self.trees.read().expect("trees lock");
        let mut slots: Vec<(Token, &crate::antientropy::Slot)> =
            items.iter().filter_map(|(k, _)| trees.find(token_of(k)).map(|s| (s.start, s))).collect();
        slots.sort_unstable_by_key(|(start, _)| *start);
        slots.dedup_by_key(|(start, _)| *start);
        let mut ranges: Vec<(Token, std::sync::MutexGuard<'_, SlotState>)> = slots.iter().map(|(start, s)| (*start, s.lock())).collect();

        // Merge in memory; the last state of each key is what gets written.
        let mut results: Vec<Result<(DvvSet, bool)>> = Vec::with_capacity(items.len());
        let mut pending: Vec<Rewrite<'_>> = Vec::new();
        for (key, incoming) in items {
            let merged = (|| {
                let earlier = pending.iter().rposition(|(k, _, _)| k == key);
                let (old, current) = match earlier {
                    Some(i) => (pending[i].1.clone(), Some(record::decode::<DvvSet>(key, &pending[i].2)?)),
                    None => {
                        let old = self.read_raw(key)?;
                        let current = old.as_deref().map(|b| record::decode(key, b)).transpose()?;
                        (old, current)
                    }
                };
                let merged = match &current {
                    Some(c) => c.merged(incoming),
                    None => (*incoming).clone(),
                };
                let changed = current.as_ref() != Some(&merged);
                if changed {
                    let new = record::encode(&merged);
                    match earlier {
                        Some(i) => pending[i].2 = new,
                        None => pending.push((key, old, new)),
                    }
                }
                Ok((merged, changed))
            })();
            results.push(merged);
        }
        let indexes: Vec<Vec<u8>> = pending.iter().filter(|(_, old, _)| old.is_none()).map(|(k, _, _)| token_key(token_of(k), k)).collect();
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(pending.len() * 2);
        let mut indexes = indexes.iter();
        for (key, old, new) in &pending {
            ops.push(Op::Put(Tree::Data, key, new));
            if old.is_none() {
                ops.push(Op::Put(Tree::Tokens, indexes.next().expect("one index entry per new key"), &[]));
            }
        }
        // Nothing changed: no engine write and no new ticket, so an
        // already-stored batch does not make group commit sync again.
        if !pending.is_empty() {
            if let Err(e) = self.engine.write_batch(&ops) {
                let reason = e.to_string();
                return results.into_iter().map(|_| Err(Error::Storage(format!("batch write failed: {reason}")))).collect();
            }
        }
        self.keys.fetch_add(pending.iter().filter(|(_, old, _)| old.is_none()).count() as u64, Ordering::Relaxed);
        for (key, old, new) in &pending {
            let token = token_of(key);
            let Some(slot) = trees.find(token) else { continue };
            let Some((_, guard)) = ranges.iter_mut().find(|(start, _)| *start == slot.start) else { continue };
            guard.apply(token, key, &tree_delta(key, old.as_deref(), new));
        }
        let ticket = if pending.is_empty() { Ticket::default() } else { self.issue() };
        for (key, _, _) in &pending {
            let i = stripe_of(key);
            if let Some((_, g)) = guards.iter_mut().find(|(s, _)| *s == i) {
                **g = ticket;
            }
        }
        // Still under the stripes, so each key's changes reach the log in
        // the order the store applied them.
        self.changes.append_many(pending.into_iter().map(|(key, _, new)| (key.to_vec(), new)));
        items
            .iter()
            .zip(results)
            .map(|((key, _), r)| {
                r.map(|(version, changed)| {
                    // Unchanged: the last write on the key's stripe, as in `merge`.
                    let last = *guards.iter().find(|(s, _)| *s == stripe_of(key)).expect("every stripe locked").1;
                    Merged { version, ticket: if changed { ticket } else { last }, changed }
                })
            })
            .collect()
    }

    /// Merges a page of versions (a streamed range, pushed keys), already
    /// decoded and admitted (`admit.rs`), as one engine batch. Returns how
    /// many changed and the ticket to await before acknowledging the page.
    pub fn merge_page(&self, page: &[(&[u8], DvvSet)]) -> Result<(u32, Ticket)> {
        let items: Vec<(&[u8], &DvvSet)> = page.iter().map(|(k, v)| (*k, v)).collect();
        let mut changed = 0;
        let mut last = Ticket::default();
        for merged in self.merge_many(&items) {
            let merged = merged?;
            changed += u32::from(merged.changed);
            last = last.max(merged.ticket);
        }
        Ok((changed, last))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Durability;
    use crate::storage::{MemoryStorage, Storage};
    use crate::store::tests::{sib, Crashing};
    use crate::version::Context;

    #[test]
    fn merge_many_is_one_engine_batch_and_agrees_with_merge_one_at_a_time() {
        let mut versions = Vec::new();
        for k in ["a", "b", "a", "c"] {
            let mut d = DvvSet::default();
            d.update(&Context::new(), "n2", sib(&format!("{k}{}", versions.len())), false).unwrap();
            versions.push((k.as_bytes().to_vec(), d));
        }
        let inner = MemoryStorage::default();
        let engine = Arc::new(Crashing { inner: inner.clone(), calls: AtomicU64::new(0), crash_at: u64::MAX });
        let batched = Store::new(engine.clone(), Durability::None, Duration::from_millis(1));
        let (stored, _, _) = batched.update(b"c", |d| d.update(&Context::new(), "n1", sib("c-old"), false)).unwrap();
        let before = engine.calls.load(Ordering::SeqCst);
        let items: Vec<(&[u8], &DvvSet)> = versions.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        let got = batched.merge_many(&items);
        assert_eq!(engine.calls.load(Ordering::SeqCst) - before, 1, "one engine write for the whole batch");

        let single = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        single.merge(b"c", &stored).unwrap();
        for ((k, v), got) in versions.iter().zip(&got) {
            let want = single.merge(k, v).unwrap();
            let got = got.as_ref().unwrap();
            assert_eq!((&got.version, got.changed), (&want.version, want.changed), "{}", String::from_utf8_lossy(k));
        }
        for k in [&b"a"[..], b"b", b"c"] {
            assert_eq!(batched.read(k).unwrap(), single.read(k).unwrap());
        }
        let indexed = inner.scan(Tree::Tokens, b"", true, 10).unwrap().len();
        assert_eq!(indexed, 3, "each new key indexed once");
        assert_eq!(batched.len().unwrap(), 3, "the key count follows batches");
        let raw = batched.read_raw(b"b").unwrap().unwrap();
        assert!(batched.purge(b"b", &raw).unwrap());
        assert_eq!(batched.len().unwrap(), 2, "and purges");
        assert_eq!(
            Store::new(engine.clone(), Durability::None, Duration::from_millis(1)).len().unwrap(),
            2,
            "and is counted afresh at open"
        );
        // Merging the same again changes nothing and writes nothing (b,
        // purged, comes back once).
        let before = engine.calls.load(Ordering::SeqCst);
        assert_eq!(batched.merge_many(&items).iter().filter(|r| r.as_ref().unwrap().changed).count(), 1);
        assert!(engine.calls.load(Ordering::SeqCst) - before <= 1, "an empty batch at most");
    }
}
