//! In-memory engine for simulations and tests. Clones share one map, so a
//! simulation can keep a node's data across a simulated crash by creating
//! the engine outside the host closure.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::{KeyValue, Op, Storage, Tree};
use crate::error::Result;

type Maps = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A BTreeMap per tree behind a lock.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    maps: Arc<RwLock<Maps>>,
}

impl Storage for MemoryStorage {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps.read().expect("lock").get(&tree).and_then(|m| m.get(key).cloned()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
        self.maps.write().expect("lock").entry(tree).or_default().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
        if let Some(m) = self.maps.write().expect("lock").get_mut(&tree) {
            m.remove(key);
        }
        Ok(())
    }

    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        // One write lock: readers see all of the batch or none of it.
        let mut maps = self.maps.write().expect("lock");
        for op in ops {
            match *op {
                Op::Put(tree, key, value) => {
                    maps.entry(tree).or_default().insert(key.to_vec(), value.to_vec());
                }
                Op::Delete(tree, key) => {
                    if let Some(m) = maps.get_mut(&tree) {
                        m.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        let maps = self.maps.read().expect("lock");
        let Some(m) = maps.get(&tree) else { return Ok(vec![]) };
        let lower = if inclusive { Bound::Included(start) } else { Bound::Excluded(start) };
        Ok(m.range::<[u8], _>((lower, Bound::Unbounded)).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn len(&self, tree: Tree) -> Result<u64> {
        Ok(self.maps.read().expect("lock").get(&tree).map_or(0, |m| m.len() as u64))
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn durability_note(&self) -> &'static str {
        "memory: nothing survives a process exit"
    }

    fn blocking(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_conformance() {
        super::super::conformance::run(&super::MemoryStorage::default());
        super::super::conformance::batches(&super::MemoryStorage::default());
    }
}
