//! `Kv.Watch`: a change stream per node, resumable from a position.
//!
//! A leaderless store has no global order to stream, so each node streams
//! its own: every record its store writes (a coordinated write, a
//! replicated write or `ReplicateBatch`, read repair, anti-entropy, hint
//! replay, streaming) is appended to a bounded in-memory change log
//! ([`log`]) at the one place the store applies changes (`store/mod.rs`,
//! `Store::write`, and `store/batch.rs`, `merge_many`). [`stream`] serves
//! that log to one watcher, filtered by prefix, from a position the node
//! gave (its incarnation and a sequence number), then follows it live.
//!
//! What a watcher gets, exactly (README "Watch"):
//! - every change this replica stores under the prefix, at least once while
//!   connected, in the order it stored them; changes of one key that a
//!   single read of the log finds together are coalesced into the last;
//! - nothing across keys or nodes is ordered; a write reaches each replica
//!   separately, so the client library watches every node and drops what it
//!   has already delivered by comparing causal clocks;
//! - resuming after a position works while the log still holds the change
//!   after it and the node has not restarted; otherwise the answer is
//!   `ResyncRequired` (`OUT_OF_RANGE`), and the watcher scans instead.
//!
//! Purges (tombstone GC, dropping ranges a node no longer replicates) are
//! not changes of a key's value and are not logged.

pub mod log;
pub mod stream;

pub use log::{ChangeLog, Retention};

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::log::ReadLimit;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::store::Store;
    use crate::version::{Context, DvvSet, Hlc, Sibling};

    const ALL: ReadLimit = ReadLimit { scan: usize::MAX, changes: usize::MAX, bytes: usize::MAX };

    fn sib(v: &str, node: &str) -> Sibling {
        Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: node.into() }, value: v.into(), tombstone: false, expires_at_ms: None }
    }

    #[test]
    fn every_store_write_path_feeds_the_log_and_a_merge_that_changes_nothing_does_not() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        let log = store.changes().clone();
        let (v, _, _) = store.update(b"a", |d| d.update(&Context::new(), "n1", sib("1", "n1"), false)).unwrap();
        assert_eq!(log.head().1, 1, "a coordinated write");
        store.merge(b"a", &v).unwrap();
        assert_eq!(log.head().1, 1, "merging what is stored changes nothing and logs nothing");
        let mut newer = v.clone();
        newer.update(&Context::new(), "n2", sib("2", "n2"), false).unwrap();
        store.merge(b"a", &newer).unwrap();
        assert_eq!(log.head().1, 2, "a replicated write (read repair and hint replay merge the same way)");
        let mut b = DvvSet::default();
        b.update(&Context::new(), "n3", sib("b", "n3"), false).unwrap();
        store.merge_many(&[(&b"b"[..], &b), (&b"a"[..], &newer)]);
        assert_eq!(log.head().1, 3, "a batch logs only the key it changed");
        store.merge_page(&[(&b"c"[..], b.clone())]).unwrap();
        let batch = log.read(0, 0, b"", ALL).unwrap();
        let keys: Vec<&[u8]> = batch.changes.iter().map(|c| c.key.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c"], "a streamed page too; a's two changes coalesce into its last");
        let last_a = batch.changes.iter().find(|c| c.key == b"a").unwrap();
        assert_eq!(crate::record::decode::<DvvSet>(b"a", &last_a.record).unwrap(), store.read(b"a").unwrap().unwrap(), "the stored record");
    }
}
