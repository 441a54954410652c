//! Keeping the runtime free: store work that can block for long (a range
//! scan, a bulk merge, a tombstone purge) runs on tokio's blocking pool,
//! not on a worker thread, where it would stall every other request that
//! worker serves.
//!
//! What stays inline, and why: a single key's read or write is a few
//! microseconds against the engine's memory (fjall's memtable and journal
//! buffer), less than the thread hand-off would cost on every request. Its
//! durability wait, the fdatasync, already runs on the pool
//! (`durability.rs`).
//!
//! On an engine that does no disk I/O (`memory`, in the simulations) the
//! work runs inline, so a simulation stays on one thread and repeatable.

use std::sync::Arc;

use super::Store;
use crate::error::{Error, Result};

/// Merged items from which a `ReplicateBatch` goes to the blocking pool;
/// a smaller batch is a few point writes, cheaper inline.
pub const OFFLOAD_ITEMS: usize = 8;

impl Store {
    /// Runs `f` on the blocking pool when the engine does disk I/O, and
    /// inline otherwise.
    pub async fn offload<R: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&Store) -> Result<R> + Send + 'static) -> Result<R> {
        if !self.engine.blocking() {
            return f(self);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| Error::Storage(format!("store task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Durability;
    use crate::storage::{KeyValue, MemoryStorage, Op, Storage, Tree};

    /// The memory engine, claiming to do disk I/O.
    struct OnDisk(MemoryStorage);

    impl Storage for OnDisk {
        fn name(&self) -> &'static str {
            "on-disk"
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.0.get(tree, key)
        }
        fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
            self.0.put(tree, key, value)
        }
        fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
            self.0.delete(tree, key)
        }
        fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
            self.0.write_batch(ops)
        }
        fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
            self.0.scan(tree, start, inclusive, limit)
        }
        fn len(&self, tree: Tree) -> Result<u64> {
            self.0.len(tree)
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn durability_note(&self) -> &'static str {
            "test engine"
        }
    }

    #[tokio::test]
    async fn disk_engines_run_store_work_off_the_worker_and_memory_runs_inline() {
        // A current-thread runtime: its one worker is this thread.
        let worker = std::thread::current().id();
        let elsewhere = move |_: &Store| Ok(std::thread::current().id() != worker);
        let disk = Arc::new(Store::new(Arc::new(OnDisk(MemoryStorage::default())), Durability::None, Duration::from_millis(1)));
        assert!(disk.offload(elsewhere).await.unwrap(), "a disk engine's work ran on the worker thread");
        let memory = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1)));
        assert!(!memory.offload(elsewhere).await.unwrap(), "the memory engine's work left the runtime");
        let err = disk.offload(|_| -> Result<()> { Err(Error::Storage("boom".into())) }).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "the work's own error comes back: {err}");
    }
}
