//! sled 0.34.7 engine.
//!
//! sled's `flush` writes its log with `pwrite` and then calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! (`pagecache/iobuf.rs`). That pushes the pages to the device, but it
//! neither flushes the device's write cache nor syncs metadata, so it does
//! not survive power loss. sled's own full `sync_all` runs only from its
//! background flusher, every 500 ms by default. This wrapper therefore
//! follows every `flush` with an fdatasync of sled's log file (`db`): after
//! `sync`, the log is on stable storage.
//!
//! A gap remains. sled writes values over about 128 KiB (segment size / 4)
//! as separate blob files and never fsyncs them. A large value can survive
//! a crash of the process yet be lost on power loss.

use std::fs::File;
use std::path::Path;

use super::{KeyValue, Op, Storage, Tree};
use crate::error::Result;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// sled with an fdatasync after every flush.
pub struct SledStorage {
    db: sled::Db,
    trees: Vec<(Tree, sled::Tree)>,
    log: File,
}

impl SledStorage {
    /// Opens or creates a sled database in directory `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new().path(path).open()?;
        let trees = Tree::ALL.iter().map(|t| Ok((*t, db.open_tree(t.name())?))).collect::<Result<Vec<_>>>()?;
        let log = File::open(path.join("db"))?;
        Ok(Self { db, trees, log })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees.iter().find(|(t, _)| *t == tree).expect("every tree opened").1
    }
}

impl Storage for SledStorage {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(tree).insert(key, value)?;
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.tree(tree).remove(key)?;
        Ok(())
    }

    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        // A sled transaction over all four trees; it retries itself on
        // conflict, so the closure only replays the ops.
        let trees: Vec<sled::Tree> = Tree::ALL.iter().map(|t| self.tree(*t).clone()).collect();
        let index = |tree: Tree| Tree::ALL.iter().position(|t| *t == tree).expect("every tree listed");
        let result: std::result::Result<(), TransactionError<()>> = trees.as_slice().transaction(|views| {
            for op in ops {
                match *op {
                    Op::Put(tree, key, value) => {
                        views[index(tree)].insert(key, value)?;
                    }
                    Op::Delete(tree, key) => {
                        views[index(tree)].remove(key)?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => unreachable!("the batch never aborts"),
        }
    }

    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        for item in self.tree(tree).range(start..) {
            let (k, v) = item?;
            if !inclusive && &*k == start {
                continue;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn len(&self, tree: Tree) -> Result<u64> {
        Ok(self.tree(tree).len() as u64)
    }

    fn sync(&self) -> Result<()> {
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(())
    }

    fn durability_note(&self) -> &'static str {
        "sled 0.34.7: flush uses sync_file_range, so ringkv adds fdatasync of sled's log; values over ~128 KiB go to blob files sled never fsyncs"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(&super::SledStorage::open(&dir.path().join("s")).unwrap());
        super::super::conformance::batches(&super::SledStorage::open(&dir.path().join("b")).unwrap());
    }

    #[test]
    fn survives_reopen() {
        super::super::conformance::survives_reopen(super::super::Engine::Sled);
    }
}
