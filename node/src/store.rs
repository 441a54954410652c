//! The replica's versioned store: framed DVVSets over a storage engine,
//! read-modify-write under a per-key lock, and durability waits.
//!
//! Every change to a key — a coordinated write, an incoming replica, a read
//! repair — goes through [`Store::update`] or [`Store::merge`]. Each holds a
//! striped lock for the key while it reads, changes and writes back, so two
//! merges of one key never interleave. The lock is a plain mutex, never
//! held across an `.await`.
//!
//! Every write also keeps two derived structures in step, under the lock
//! of the key's token range: the `Tokens` index (token ++ key, so a token
//! range can be scanned in order), and the range's Merkle tree
//! (`antientropy/`), updated by the XOR delta of the old and new version.
//!
//! Durability (DESIGN §8). A write returns a [`Ticket`], and the caller
//! awaits [`Store::durable`] before it acknowledges. A merge that changes
//! nothing returns a ticket too: the version it found may have been written
//! a moment earlier (by read repair) and not be synced yet, and an
//! acknowledgement promises that the version is durable, not that this call
//! wrote it.
//! - `fsync`: one engine sync per write.
//! - `group`: the group-commit task syncs every `group_commit`, and the
//!   waiters whose writes it covered wake together. A write that waits
//!   alone is synced at once, so light load does not pay the window.
//! - `none`: no wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::antientropy::merkle::{self, item_hash, RangeTree};
use crate::antientropy::Trees;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::paging::Page;
use crate::record;
use crate::ring::{token_of, Token};
use crate::storage::{KeyValue, Op, Storage, Tree};
use crate::version::DvvSet;

/// Number of lock stripes; keys hash onto them.
const STRIPES: usize = 256;
/// Records a prefix scan reads from the engine at a time. Small, because
/// the engine returns values too and the page may take only a few of
/// them; 32 maximal (4 MiB) values are 128 MiB.
const SCAN_BATCH: usize = 32;

/// What [`Store::merge`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The version now stored.
    pub version: DvvSet,
    /// Await [`Store::durable`] with it before acknowledging: the merge's
    /// own write, or, when nothing changed, the last write on the key's
    /// stripe (which the stored version is, or precedes).
    pub ticket: Ticket,
    /// Whether the stored version changed.
    pub changed: bool,
}

/// Proof that a write happened; await [`Store::durable`] with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// DVVSets over an engine.
pub struct Store {
    engine: Arc<dyn Storage>,
    /// Per stripe, the lock and the ticket of the last write made under it.
    stripes: Vec<Mutex<Ticket>>,
    mode: Durability,
    window: Duration,
    written: AtomicU64,
    /// Keys in the data tree, counted once at open and kept up to date by
    /// every write and purge, so that the load gossip reports each round
    /// costs nothing (fjall can only count by scanning).
    keys: AtomicU64,
    synced: watch::Sender<u64>,
    kick: Notify,
    trees: RwLock<Arc<Trees>>,
}

/// A key `merge_many` rewrites: the key, the record it replaces (if any)
/// and the new record.
type Rewrite<'k> = (&'k [u8], Option<Vec<u8>>, Vec<u8>);

/// The Merkle delta of rewriting `key` from `old` (if it was stored) to
/// `new`: the new item's hash, XOR the old one's.
fn tree_delta(key: &[u8], old: Option<&[u8]>, new: &[u8]) -> merkle::Hash {
    let mut delta = item_hash(key, new);
    if let Some(old) = old {
        merkle::xor(&mut delta, &item_hash(key, old));
    }
    delta
}

/// The lock stripe `key` falls on.
fn stripe_of(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize % STRIPES
}

/// The `Tokens` index key: the key's token, big-endian, then the key.
fn token_key(token: Token, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&token.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A 16-byte digest of a stored version, for leaf comparison.
pub fn version_digest(raw: &[u8]) -> [u8; 16] {
    blake3::hash(raw).as_bytes()[..16].try_into().expect("16 bytes")
}

impl Store {
    /// Wraps `engine` with the given durability mode.
    pub fn new(engine: Arc<dyn Storage>, mode: Durability, group_commit: Duration) -> Self {
        // Only the load figures read the count; a broken engine fails the
        // first real read or write anyway.
        let engine_keys = engine.len(Tree::Data).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot count stored keys; load figures start at 0");
            0
        });
        Self {
            engine,
            stripes: (0..STRIPES).map(|_| Mutex::new(Ticket::default())).collect(),
            mode,
            window: group_commit,
            written: AtomicU64::new(0),
            keys: AtomicU64::new(engine_keys),
            synced: watch::channel(0).0,
            kick: Notify::new(),
            trees: RwLock::new(Arc::new(Trees::default())),
        }
    }

    /// The Merkle trees currently kept.
    pub fn trees(&self) -> Arc<Trees> {
        self.trees.read().expect("trees lock").clone()
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<dyn Storage> {
        &self.engine
    }

    fn stripe(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Ticket> {
        self.stripes[stripe_of(key)].lock().expect("stripe lock poisoned")
    }

    /// The stored record, still framed, for sending to a peer as is.
    pub fn read_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.get(Tree::Data, key)
    }

    /// The decoded version of `key`.
    pub fn read(&self, key: &[u8]) -> Result<Option<DvvSet>> {
        self.read_raw(key)?.map(|b| record::decode(key, &b)).transpose()
    }

    /// Applies `f` to the key's version (empty if absent) and stores the
    /// result. Returns the new version, a ticket and what `f` returned. If
    /// `f` fails, nothing is written and its error is returned.
    pub fn update<R>(&self, key: &[u8], f: impl FnOnce(&mut DvvSet) -> Result<R>) -> Result<(DvvSet, Ticket, R)> {
        let mut last = self.stripe(key);
        let old = self.read_raw(key)?;
        let mut dvv = old.as_deref().map(|b| record::decode(key, b)).transpose()?.unwrap_or_default();
        let out = f(&mut dvv)?;
        let ticket = self.write(key, old.as_deref(), &dvv)?;
        *last = ticket;
        Ok((dvv, ticket, out))
    }

    /// Merges `incoming` into the key's version, writing only when
    /// something changed.
    ///
    /// An unchanged merge still returns a ticket to wait on: the last write
    /// made under the key's stripe. Every write of this key happens under
    /// the stripe, so that ticket covers the write that stored the current
    /// version. It is the cheapest correct choice: a per-key ticket would
    /// need a map that grows with the keyspace, and the store-wide latest
    /// ticket would make every unchanged merge wait for the next sync under
    /// load, where a stripe's last write (1 of 256) is usually synced
    /// already and [`Store::durable`] returns at once.
    pub fn merge(&self, key: &[u8], incoming: &DvvSet) -> Result<Merged> {
        let mut last = self.stripe(key);
        let old = self.read_raw(key)?;
        let current: Option<DvvSet> = old.as_deref().map(|b| record::decode(key, b)).transpose()?;
        let merged = match &current {
            Some(c) => c.merged(incoming),
            None => incoming.clone(),
        };
        if current.as_ref() == Some(&merged) {
            return Ok(Merged { version: merged, ticket: *last, changed: false });
        }
        let ticket = self.write(key, old.as_deref(), &merged)?;
        *last = ticket;
        Ok(Merged { version: merged, ticket, changed: true })
    }

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
        let mut ranges: Vec<(Token, std::sync::MutexGuard<'_, Option<RangeTree>>)> =
            slots.iter().map(|(start, s)| (*start, s.lock())).collect();

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
        let indexes: Vec<Vec<u8>> = pending.iter().map(|(k, _, _)| token_key(token_of(k), k)).collect();
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(pending.len() * 2);
        for ((key, old, new), index) in pending.iter().zip(&indexes) {
            ops.push(Op::Put(Tree::Data, key, new));
            if old.is_none() {
                ops.push(Op::Put(Tree::Tokens, index, &[]));
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
            if let Some(t) = guard.as_mut() {
                t.apply(token, &tree_delta(key, old.as_deref(), new));
            }
        }
        let ticket = if pending.is_empty() { Ticket::default() } else { Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1) };
        for (key, _, _) in &pending {
            let i = stripe_of(key);
            if let Some((_, g)) = guards.iter_mut().find(|(s, _)| *s == i) {
                **g = ticket;
            }
        }
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

    /// Writes `dvv` over `old` (the record it replaces, if any), keeping the
    /// token index and the range's Merkle tree in step. Caller holds the
    /// key's stripe lock.
    fn write(&self, key: &[u8], old: Option<&[u8]>, dvv: &DvvSet) -> Result<Ticket> {
        let new = record::encode(dvv);
        let token = token_of(key);
        let trees = self.trees.read().expect("trees lock");
        let mut tree = trees.find(token).map(|slot| slot.lock());
        // The record and its token-index entry land together or not at all:
        // a key missing from the index is invisible to anti-entropy,
        // streaming and GC for good.
        let index = token_key(token, key);
        let record = Op::Put(Tree::Data, key, &new);
        match old {
            Some(_) => self.engine.write_batch(&[record])?,
            None => {
                self.engine.write_batch(&[record, Op::Put(Tree::Tokens, &index, &[])])?;
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(Some(t)) = tree.as_deref_mut() {
            t.apply(token, &tree_delta(key, old, &new));
        }
        Ok(Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1))
    }

    /// Writes a raw record into another tree (hints), with a ticket for
    /// durability like a data write.
    pub fn put_raw(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<Ticket> {
        self.engine.put(tree, key, value)?;
        Ok(Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1))
    }

    /// Removes `key` if its stored record is still `expected` (tombstone
    /// purge); returns whether it did.
    pub fn purge(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        let _last = self.stripe(key);
        if self.read_raw(key)?.as_deref() != Some(expected) {
            return Ok(false);
        }
        let token = token_of(key);
        let trees = self.trees.read().expect("trees lock");
        let mut tree = trees.find(token).map(|slot| slot.lock());
        self.engine.write_batch(&[Op::Delete(Tree::Data, key), Op::Delete(Tree::Tokens, &token_key(token, key))])?;
        self.keys.fetch_sub(1, Ordering::Relaxed);
        if let Some(Some(t)) = tree.as_deref_mut() {
            t.apply(token, &item_hash(key, expected));
        }
        Ok(true)
    }

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

    /// Number of keys stored.
    pub fn len(&self) -> Result<u64> {
        Ok(self.keys.load(Ordering::Relaxed))
    }

    /// True when no keys are stored.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads a `Meta` tree entry.
    pub fn meta_get<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.engine.get(Tree::Meta, name.as_bytes())?.map(|b| record::decode(name.as_bytes(), &b)).transpose()
    }

    /// Writes a `Meta` tree entry and syncs it.
    pub fn meta_put<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        self.engine.put(Tree::Meta, name.as_bytes(), &record::encode(value))?;
        self.engine.sync()
    }

    /// Waits until the write behind `ticket` is durable under this store's mode.
    pub async fn durable(&self, ticket: Ticket) -> Result<()> {
        if ticket == Ticket::default() {
            return Ok(());
        }
        match self.mode {
            Durability::None => Ok(()),
            // A ticket an earlier sync covered (an unchanged merge of a
            // synced version) costs nothing; otherwise sync, and record
            // what the sync covered for the next caller.
            Durability::Fsync => {
                if *self.synced.borrow() >= ticket.0 {
                    return Ok(());
                }
                let covered = self.written.load(Ordering::SeqCst);
                self.sync_now().await?;
                self.synced.send_if_modified(|s| std::mem::replace(s, covered.max(*s)) < covered);
                Ok(())
            }
            Durability::Group => {
                let mut rx = self.synced.subscribe();
                self.kick.notify_one();
                rx.wait_for(|&s| s >= ticket.0)
                    .await
                    .map(|_| ())
                    .map_err(|_| Error::Storage("group commit stopped; the node is shutting down".into()))
            }
        }
    }

    async fn sync_now(&self) -> Result<()> {
        if !self.engine.blocking() {
            return self.engine.sync();
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.sync()).await.map_err(|e| Error::Storage(format!("sync task failed: {e}")))?
    }

    /// The group-commit loop: after a kick, wait one window so more writes
    /// join (unless only one write is waiting), sync once, and release every
    /// write the sync covered.
    pub async fn run_group_commit(self: Arc<Self>, shutdown: CancellationToken) {
        if self.mode != Durability::Group {
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.kick.notified() => {}
            }
            // A lone waiter is synced at once; with company, wait one window
            // so more writes join the same sync.
            if !self.window.is_zero() && self.synced.receiver_count() > 1 {
                tokio::time::sleep(self.window).await;
            }
            let covered = self.written.load(Ordering::SeqCst);
            if covered <= *self.synced.borrow() {
                continue;
            }
            match self.sync_now().await {
                Ok(()) => {
                    self.synced.send_replace(covered);
                }
                Err(e) => tracing::error!(error = %e, "group commit sync failed; writes stay unacknowledged"),
            }
        }
        // A last sync so nothing acknowledged-in-flight is left behind.
        let covered = self.written.load(Ordering::SeqCst);
        if self.sync_now().await.is_ok() {
            self.synced.send_replace(covered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use crate::version::{Context, Hlc, Sibling};

    fn sib(v: &str) -> Sibling {
        Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: "n1".into() }, value: v.into(), tombstone: false }
    }

    #[tokio::test]
    async fn group_commit_releases_waiters() {
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::Group, Duration::from_millis(1)));
        let stop = CancellationToken::new();
        let task = tokio::spawn(store.clone().run_group_commit(stop.clone()));
        let (_, t1, _) = store.update(b"a", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let (_, t2, _) = store.update(b"b", |d| d.update(&Context::new(), "n1", sib("y"), false)).unwrap();
        store.durable(t1).await.unwrap();
        store.durable(t2).await.unwrap();
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn merge_writes_only_on_change_and_waits_for_the_write_it_found() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        let (v, written, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let m = store.merge(b"k", &v).unwrap();
        assert!(!m.changed, "merging what is stored changes nothing");
        assert_eq!(m.ticket, written, "an unchanged merge waits for the write that stored the version");
        assert_eq!(store.read(b"k").unwrap().unwrap(), v);
        let mut newer = v.clone();
        newer.update(&Context::new(), "n2", sib("y"), false).unwrap();
        let m = store.merge(b"k", &newer).unwrap();
        assert!(m.changed && m.ticket > written, "a change is a new write: {m:?}");
    }

    #[tokio::test]
    async fn unchanged_merge_is_not_durable_before_a_sync_covers_the_stored_version() {
        use futures::FutureExt;
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::Group, Duration::from_millis(1)));
        // Read repair writes a version; before any sync, a replica of the
        // same version arrives and changes nothing.
        let (v, written, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let unchanged = store.merge(b"k", &v).unwrap().ticket;
        assert!(store.durable(unchanged).now_or_never().is_none(), "acknowledged before the stored version was synced");
        let stop = CancellationToken::new();
        let task = tokio::spawn(store.clone().run_group_commit(stop.clone()));
        store.durable(written).await.unwrap();
        assert_eq!(store.durable(unchanged).now_or_never().map(|r| r.is_ok()), Some(true), "released by the sync that covered the write");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn under_fsync_an_unchanged_merge_of_a_synced_version_needs_no_sync() {
        use futures::FutureExt;
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::Fsync, Duration::from_millis(1));
        let (v, written, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let unchanged = store.merge(b"k", &v).unwrap().ticket;
        assert_eq!(unchanged, written, "before the sync, the unchanged merge waits for the write's own sync");
        store.durable(written).await.unwrap();
        assert_eq!(*store.synced.borrow(), written.0, "the sync is recorded");
        assert!(store.durable(unchanged).now_or_never().is_some_and(|r| r.is_ok()), "covered already");
    }

    /// An engine that dies before its `crash_at`-th mutating call: that
    /// call and every later one are lost, as in a kill -9 between them.
    struct Crashing {
        inner: MemoryStorage,
        calls: AtomicU64,
        crash_at: u64,
    }

    impl Crashing {
        fn alive(&self) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst) < self.crash_at
        }
    }

    impl Storage for Crashing {
        fn name(&self) -> &'static str {
            "crashing"
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(tree, key)
        }
        fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
            if self.alive() {
                self.inner.put(tree, key, value)?;
            }
            Ok(())
        }
        fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
            if self.alive() {
                self.inner.delete(tree, key)?;
            }
            Ok(())
        }
        fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
            if self.alive() {
                self.inner.write_batch(ops)?;
            }
            Ok(())
        }
        fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
            self.inner.scan(tree, start, inclusive, limit)
        }
        fn len(&self, tree: Tree) -> Result<u64> {
            self.inner.len(tree)
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn durability_note(&self) -> &'static str {
            "test engine"
        }
    }

    #[test]
    fn a_crash_between_any_two_engine_calls_never_leaves_a_key_out_of_the_token_index() {
        // Enough calls to cover every crash point of the workload below.
        for crash_at in 0..40 {
            let inner = MemoryStorage::default();
            let store = Store::new(
                Arc::new(Crashing { inner: inner.clone(), calls: AtomicU64::new(0), crash_at }),
                Durability::None,
                Duration::from_millis(1),
            );
            for k in ["a", "b", "c"] {
                let (v, _, _) = store.update(k.as_bytes(), |d| d.update(&Context::new(), "n1", sib(k), false)).unwrap();
                store.update(k.as_bytes(), |d| d.update(&v.context(), "n1", sib("again"), false)).unwrap();
            }
            let stored = store.read_raw(b"b").unwrap();
            if let Some(raw) = stored {
                store.purge(b"b", &raw).unwrap();
            }
            // After the "crash": the data tree and its token index agree.
            let data: Vec<Vec<u8>> = inner.scan(Tree::Data, b"", true, 100).unwrap().into_iter().map(|(k, _)| k).collect();
            let mut indexed: Vec<Vec<u8>> =
                inner.scan(Tree::Tokens, b"", true, 100).unwrap().into_iter().map(|(k, _)| k[8..].to_vec()).collect();
            indexed.sort();
            assert_eq!(data, indexed, "crash before engine call {crash_at}: data and token index disagree");
        }
    }

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

    #[test]
    fn corrupt_record_is_reported_with_its_key() {
        let engine = Arc::new(MemoryStorage::default());
        engine.put(Tree::Data, b"bad-key", b"\x01garbage").unwrap();
        let store = Store::new(engine, Durability::None, Duration::from_millis(1));
        let err = store.read(b"bad-key").unwrap_err();
        assert!(err.to_string().contains("bad-key"), "{err}");
    }
}
