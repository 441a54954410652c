//! redb engine: a copy-on-write B-tree with ACID transactions.
//!
//! Each `put`, and each `write_batch` across trees, is one write
//! transaction, committed with
//! `Durability::None`: visible at once, not yet synced. `sync` commits an
//! empty transaction with `Durability::Immediate`. redb then fsyncs, which
//! makes that commit and every non-durable commit before it durable. Group
//! commit therefore costs one fsync per group, not one per write.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::{KeyValue, Op, Storage, Tree};
use crate::error::Result;

/// A table as ringkv uses it: bytes to bytes.
type BytesTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// redb behind the `Storage` trait.
pub struct RedbStorage {
    db: Database,
}

impl RedbStorage {
    /// Opens or creates the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for t in Tree::ALL {
            tx.open_table(table(t))?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    fn write(&self, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<()>, tree: Tree) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut t = tx.open_table(table(tree))?;
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Storage for RedbStorage {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(tree))?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(
            |t| {
                t.insert(key, value)?;
                Ok(())
            },
            tree,
        )
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.write(
            |t| {
                t.remove(key)?;
                Ok(())
            },
            tree,
        )
    }

    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        // One write transaction over every tree the batch touches: redb
        // commits it atomically.
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut tables: Vec<(Tree, BytesTable<'_>)> = Vec::new();
            for op in ops {
                let tree = match *op {
                    Op::Put(tree, ..) | Op::Delete(tree, _) => tree,
                };
                let i = match tables.iter().position(|(t, _)| *t == tree) {
                    Some(i) => i,
                    None => {
                        tables.push((tree, tx.open_table(table(tree))?));
                        tables.len() - 1
                    }
                };
                let t = &mut tables[i].1;
                match *op {
                    Op::Put(_, key, value) => {
                        t.insert(key, value)?;
                    }
                    Op::Delete(_, key) => {
                        t.remove(key)?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(tree))?;
        let mut out = Vec::new();
        for item in t.range(start..)? {
            let (k, v) = item?;
            if !inclusive && k.value() == start {
                continue;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn len(&self, tree: Tree) -> Result<u64> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(table(tree))?.len()?)
    }

    fn sync(&self) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    fn durability_note(&self) -> &'static str {
        "redb: a durable commit fsyncs the database file, covering every earlier commit"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(&super::RedbStorage::open(&dir.path().join("r.redb")).unwrap());
        super::super::conformance::batches(&super::RedbStorage::open(&dir.path().join("b.redb")).unwrap());
    }

    #[test]
    fn survives_reopen() {
        super::super::conformance::survives_reopen(super::super::Engine::Redb);
    }
}
