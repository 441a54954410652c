//! The replica's versioned store: framed DVVSets over a storage engine,
//! read-modify-write under a per-key lock, and durability waits.
//!
//! Every change to a key — a coordinated write, an incoming replica, a read
//! repair — goes through [`Store::update`] or [`Store::merge`]. Each holds a
//! striped lock for the key while it reads, changes and writes back, so two
//! merges of one key never interleave. The lock is a plain mutex, never
//! held across an `.await`.
//!
//! Durability (DESIGN §8). A write returns a [`Ticket`], and the caller
//! awaits [`Store::durable`] before it acknowledges:
//! - `fsync`: one engine sync per write.
//! - `group`: the group-commit task syncs every `group_commit_ms`, and the
//!   waiters whose writes it covered wake together.
//! - `none`: no wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Durability;
use crate::error::{Error, Result};
use crate::record;
use crate::storage::{KeyValue, Storage, Tree};
use crate::version::DvvSet;

/// Number of lock stripes; keys hash onto them.
const STRIPES: usize = 256;

/// Proof that a write happened; await [`Store::durable`] with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// DVVSets over an engine.
pub struct Store {
    engine: Arc<dyn Storage>,
    stripes: Vec<Mutex<()>>,
    mode: Durability,
    window: Duration,
    written: AtomicU64,
    synced: watch::Sender<u64>,
    kick: Notify,
}

impl Store {
    /// Wraps `engine` with the given durability mode.
    pub fn new(engine: Arc<dyn Storage>, mode: Durability, group_commit_ms: u64) -> Self {
        Self {
            engine,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            mode,
            window: Duration::from_millis(group_commit_ms),
            written: AtomicU64::new(0),
            synced: watch::channel(0).0,
            kick: Notify::new(),
        }
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<dyn Storage> {
        &self.engine
    }

    fn stripe(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let h = crc32fast::hash(key) as usize % STRIPES;
        self.stripes[h].lock().expect("stripe lock poisoned")
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
    /// result. Returns the new version, a ticket and what `f` returned.
    pub fn update<R>(&self, key: &[u8], f: impl FnOnce(&mut DvvSet) -> R) -> Result<(DvvSet, Ticket, R)> {
        let _guard = self.stripe(key);
        let mut dvv = self.read(key)?.unwrap_or_default();
        let out = f(&mut dvv);
        let ticket = self.write(key, &dvv)?;
        Ok((dvv, ticket, out))
    }

    /// Merges `incoming` into the key's version. Writes only when something
    /// changed; the ticket is then the default (nothing to wait for).
    pub fn merge(&self, key: &[u8], incoming: &DvvSet) -> Result<(DvvSet, Ticket)> {
        let _guard = self.stripe(key);
        let current = self.read(key)?;
        let merged = match &current {
            Some(c) => c.merged(incoming),
            None => incoming.clone(),
        };
        if current.as_ref() == Some(&merged) {
            return Ok((merged, Ticket::default()));
        }
        let ticket = self.write(key, &merged)?;
        Ok((merged, ticket))
    }

    fn write(&self, key: &[u8], dvv: &DvvSet) -> Result<Ticket> {
        self.engine.put(Tree::Data, key, &record::encode(dvv))?;
        Ok(Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1))
    }

    /// Up to `limit` stored records in key order from `start`.
    pub fn scan_raw(&self, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        self.engine.scan(Tree::Data, start, inclusive, limit)
    }

    /// Up to `limit` records whose key starts with `prefix`, after
    /// `start_after` when it is set. The flag is true when the limit cut the
    /// listing short.
    pub fn scan_prefix(&self, prefix: &[u8], start_after: &[u8], limit: usize) -> Result<(Vec<KeyValue>, bool)> {
        let (start, inclusive) = if start_after > prefix { (start_after, false) } else { (prefix, true) };
        let rows = self.scan_raw(start, inclusive, limit)?;
        let full = rows.len() == limit;
        let matching: Vec<_> = rows.into_iter().take_while(|(k, _)| k.starts_with(prefix)).collect();
        let more = full && matching.len() == limit;
        Ok((matching, more))
    }

    /// Number of keys stored.
    pub fn len(&self) -> Result<u64> {
        self.engine.len(Tree::Data)
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
            Durability::Fsync => self.sync_now().await,
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
    /// join, sync once, and release every write the sync covered.
    pub async fn run_group_commit(self: Arc<Self>, shutdown: CancellationToken) {
        if self.mode != Durability::Group {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.kick.notified() => {}
            }
            tokio::time::sleep(self.window).await;
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
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::Group, 1));
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
    fn merge_writes_only_on_change() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, 1);
        let (v, _, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let (_, t) = store.merge(b"k", &v).unwrap();
        assert_eq!(t, Ticket::default(), "merging what is stored changes nothing");
        assert_eq!(store.read(b"k").unwrap().unwrap(), v);
    }

    #[test]
    fn corrupt_record_is_reported_with_its_key() {
        let engine = Arc::new(MemoryStorage::default());
        engine.put(Tree::Data, b"bad-key", b"\x01garbage").unwrap();
        let store = Store::new(engine, Durability::None, 1);
        let err = store.read(b"bad-key").unwrap_err();
        assert!(err.to_string().contains("bad-key"), "{err}");
    }
}
