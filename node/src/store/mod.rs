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
//!
//! Every write that changes a stored record is also appended, under the
//! same stripe lock, to the change log that `Kv.Watch` serves
//! (`watch/log.rs`): one short mutex, no await.
//!
//! # Files
//!
//! - this file: the [`Store`] type, reads, [`Store::update`],
//!   [`Store::merge`], the write path that keeps the index and trees in
//!   step, purge, and the `Meta` tree;
//! - `batch.rs`: [`Store::merge_many`] and [`Store::merge_page`], many keys
//!   in one engine batch;
//! - `scan.rs`: the `Tokens` index, token-range walks a page at a time
//!   ([`RangeCursor`], [`Store::for_each_in_range`]), prefix scans, and
//!   [`Store::rebuild_trees`], chunk by chunk so writers never wait for a
//!   whole range;
//! - `durability.rs`: [`Ticket`], [`Store::durable`] and the group-commit
//!   task;
//! - `offload.rs`: [`Store::offload`], which keeps long store work off the
//!   runtime's worker threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::antientropy::merkle::{self, item_hash};
use crate::antientropy::Trees;
use crate::config::Durability;
use crate::error::Result;
use crate::record;
use crate::ring::token_of;
use crate::storage::{Op, Storage, Tree};
use crate::version::DvvSet;
use crate::watch::ChangeLog;

mod batch;
mod durability;
mod offload;
mod scan;

pub use durability::Ticket;
pub use offload::OFFLOAD_ITEMS;
pub use scan::RangeCursor;

use scan::token_key;

/// Number of lock stripes; keys hash onto them.
const STRIPES: usize = 256;

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
    /// Group-commit batch sizes and sync times (`durability.rs`).
    commits: crate::metrics::CommitMetrics,
    /// What `Kv.Watch` serves: every record this store wrote, in order.
    changes: Arc<ChangeLog>,
}

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
            commits: Default::default(),
            changes: Arc::default(),
        }
    }

    /// The change log every changing write feeds (`watch/`).
    pub fn changes(&self) -> &Arc<ChangeLog> {
        &self.changes
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
        if let Some(t) = tree.as_deref_mut() {
            t.apply(token, key, &tree_delta(key, old, &new));
        }
        self.changes.append(key.to_vec(), new);
        Ok(self.issue())
    }

    /// Writes a raw record into another tree (hints), with a ticket for
    /// durability like a data write.
    pub fn put_raw(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<Ticket> {
        self.engine.put(tree, key, value)?;
        Ok(self.issue())
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
        if let Some(t) = tree.as_deref_mut() {
            t.apply(token, key, &item_hash(key, expected));
        }
        Ok(true)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{KeyValue, MemoryStorage};
    use crate::version::{Context, Hlc, Sibling};

    /// A sibling written by n1 at time 1; the other files' tests use it too.
    pub(super) fn sib(v: &str) -> Sibling {
        Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: "n1".into() }, value: v.into(), tombstone: false, expires_at_ms: None }
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

    /// An engine that dies before its `crash_at`-th mutating call: that
    /// call and every later one are lost, as in a kill -9 between them.
    pub(super) struct Crashing {
        pub(super) inner: MemoryStorage,
        pub(super) calls: AtomicU64,
        pub(super) crash_at: u64,
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
    fn corrupt_record_is_reported_with_its_key() {
        let engine = Arc::new(MemoryStorage::default());
        engine.put(Tree::Data, b"bad-key", b"\x01garbage").unwrap();
        let store = Store::new(engine, Durability::None, Duration::from_millis(1));
        let err = store.read(b"bad-key").unwrap_err();
        assert!(err.to_string().contains("bad-key"), "{err}");
    }
}
