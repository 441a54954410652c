//! fjall 3 engine: an LSM tree with its own write-ahead journal.
//!
//! One keyspace per tree. A `put`, `delete` or `write_batch` is one fjall
//! write batch, committed to the journal atomically across keyspaces and
//! not synced; `sync` is `Database::persist(SyncData)`, an fdatasync of the
//! journal. Memtables flush to sorted tables in fjall's background threads,
//! and recovery replays the journal, so fjall needs no commit log in front
//! (`open` never adds one).
//!
//! `len` scans the keyspace (fjall keeps no exact count; its estimate goes
//! wrong after deletes). The store calls it once, at open, and keeps its own
//! count from then on (`Store::keys`).

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{KeyValue, Op, Storage, Tree};
use crate::error::{Error, Result};

/// fjall behind the `Storage` trait.
pub struct FjallStorage {
    db: Database,
    trees: Vec<(Tree, Keyspace)>,
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(format!("fjall: {e}"))
    }
}

impl FjallStorage {
    /// Opens or creates a fjall database in directory `path`, replaying its
    /// journal.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder(path).open()?;
        let trees =
            Tree::ALL.iter().map(|t| Ok((*t, db.keyspace(t.name(), KeyspaceCreateOptions::default)?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { db, trees })
    }

    fn tree(&self, tree: Tree) -> &Keyspace {
        &self.trees.iter().find(|(t, _)| *t == tree).expect("every tree opened").1
    }
}

impl Storage for FjallStorage {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
        self.write_batch(&[Op::Put(tree, key, value)])
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.write_batch(&[Op::Delete(tree, key)])
    }

    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        let mut batch = self.db.batch();
        for op in ops {
            match *op {
                Op::Put(tree, key, value) => batch.insert(self.tree(tree), key, value),
                Op::Delete(tree, key) => batch.remove(self.tree(tree), key),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        for guard in self.tree(tree).range(start..) {
            let (k, v) = guard.into_inner()?;
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
        Ok(self.tree(tree).len()? as u64)
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn durability_note(&self) -> &'static str {
        "fjall: sync fdatasyncs its journal, covering every earlier batch"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStorage::open(&dir.path().join("f")).unwrap();
        super::super::conformance::run(&s);
        let b = FjallStorage::open(&dir.path().join("b")).unwrap();
        super::super::conformance::batches(&b);
    }

    #[test]
    fn survives_reopen() {
        super::super::conformance::survives_reopen(super::super::Engine::Fjall);
    }
}
