//! The acceptor: each replica's persisted Paxos state, one record per key in
//! the `paxos` tree, read-modified-written under one lock and made durable
//! before the answer leaves (a promise or an acceptance forgotten in a crash
//! would break Paxos).
//!
//! Garbage collection, in two steps:
//! - **On commit** the accepted proposal is dropped (its version is in the
//!   data tree now), so a finished key keeps only two ballots, ~60 bytes.
//! - **By sweep** ([`Acceptor::collect`]): records whose every ballot is
//!   older than a cutoff, with nothing accepted pending, are deleted, and the
//!   node's *floor* (kept in the `meta` tree) is raised to the highest
//!   ballot deleted. The floor stands in for every deleted record: a prepare
//!   or proposal at or below it is refused, and a promise reports it as the
//!   last commit. Ballots are HLC timestamps, so the floor only refuses
//!   proposers whose ballot is older than the cutoff; the caller picks a
//!   cutoff well past any request deadline, when their requests are over.
//!   A deleted record is safe to lose only once its instance's commit
//!   reached a quorum; the sweep never deletes a record holding an accepted
//!   proposal, and a record with none either never accepted anything or
//!   saw the commit that cleared it.

use std::sync::{Arc, Mutex};

use super::rules::{AcceptorState, Ballot, Promise, Proposal};
use crate::error::Result;
use crate::record;
use crate::storage::Tree;
use crate::store::{Store, Ticket};
use crate::version::DvvSet;

/// The meta-tree entry holding the garbage-collection floor.
const FLOOR_KEY: &str = "paxos_floor";

/// One replica's acceptor, over its store.
pub struct Acceptor {
    store: Arc<Store>,
    /// Serializes read-modify-write of records and the floor; held for
    /// microseconds, never across an await.
    lock: Mutex<Option<Ballot>>,
    /// The deliberately broken rule (fault-injection builds only).
    accept_lower: bool,
}

impl Acceptor {
    /// The acceptor over `store`, with its floor loaded.
    pub fn open(store: Arc<Store>, accept_lower: bool) -> Result<Self> {
        let floor = store.meta_get::<Ballot>(FLOOR_KEY)?;
        Ok(Self { store, lock: Mutex::new(floor), accept_lower })
    }

    fn load(&self, key: &[u8]) -> Result<AcceptorState> {
        Ok(self.store.engine().get(Tree::Paxos, key)?.map(|b| record::decode(key, &b)).transpose()?.unwrap_or_default())
    }

    fn save(&self, key: &[u8], state: &AcceptorState) -> Result<Ticket> {
        self.store.put_raw(Tree::Paxos, key, &record::encode(state))
    }

    /// Phase 1b for `key`. Returns the promise and, when it changed the
    /// record, the ticket to wait on before answering.
    pub fn prepare(&self, key: &[u8], ballot: &Ballot) -> Result<(Promise, Option<Ticket>)> {
        let floor = self.lock.lock().expect("paxos lock");
        let mut state = self.load(key)?;
        let promise = state.prepare(ballot, floor.as_ref());
        let ticket = match promise {
            Promise::Promised { .. } => Some(self.save(key, &state)?),
            Promise::Refused { .. } => None,
        };
        Ok((promise, ticket))
    }

    /// Phase 2b for `key`: `Ok(ticket)` when accepted, `Err(ballot)` with
    /// the promise that refused it.
    pub fn accept(&self, key: &[u8], proposal: &Proposal) -> Result<std::result::Result<Ticket, Ballot>> {
        let floor = self.lock.lock().expect("paxos lock");
        let mut state = self.load(key)?;
        match state.accept(proposal, floor.as_ref(), self.accept_lower) {
            Ok(()) => Ok(Ok(self.save(key, &state)?)),
            Err(b) => Ok(Err(b)),
        }
    }

    /// Phase 3 for `key`: the proposal at `ballot` was chosen and merged.
    pub fn commit(&self, key: &[u8], ballot: &Ballot) -> Result<Ticket> {
        let _floor = self.lock.lock().expect("paxos lock");
        let mut state = self.load(key)?;
        state.commit(ballot);
        self.save(key, &state)
    }

    /// Phase 1b plus the read phase, as one replica answers a prepare:
    /// the promise, this replica's version of the key, and the ticket to
    /// wait on. The version is read after the promise is recorded, so any
    /// commit it misses comes from a ballot this promise now outranks.
    pub fn prepare_and_read(&self, key: &[u8], ballot: &Ballot) -> Result<(Promise, Option<DvvSet>, Option<Ticket>)> {
        let (promise, ticket) = self.prepare(key, ballot)?;
        let version = match promise {
            Promise::Promised { .. } => self.store.read(key)?,
            Promise::Refused { .. } => None,
        };
        Ok((promise, version, ticket))
    }

    /// Phase 3 as one replica does it: merges the chosen version into the
    /// data (the normal merge, so the Merkle trees and the token index keep
    /// step), then ends the instance in the record. Data first: a crash
    /// between the two leaves the proposal accepted, and the next round
    /// merely commits it again.
    pub fn commit_version(&self, key: &[u8], ballot: &Ballot, version: &DvvSet) -> Result<Ticket> {
        let data = self.store.merge(key, version)?.ticket;
        Ok(self.commit(key, ballot)?.max(data))
    }

    /// The key's record, for tests and `inspect`.
    pub fn state(&self, key: &[u8]) -> Result<AcceptorState> {
        let _floor = self.lock.lock().expect("paxos lock");
        self.load(key)
    }

    /// The garbage-collection floor.
    pub fn floor(&self) -> Option<Ballot> {
        self.lock.lock().expect("paxos lock").clone()
    }

    /// Deletes every record [`collectable`](AcceptorState::collectable)
    /// below `cutoff`, raising the floor first (so no moment exists where a
    /// record is gone and its ballots are not fenced). Returns how many were
    /// deleted. Scans the whole tree in pages; call it rarely, off the
    /// request path.
    pub fn collect(&self, cutoff: &Ballot) -> Result<usize> {
        const PAGE: usize = 1000;
        let mut deleted = 0;
        let mut start = Vec::new();
        let mut inclusive = true;
        loop {
            let rows = self.store.engine().scan(Tree::Paxos, &start, inclusive, PAGE)?;
            let Some((last, _)) = rows.last() else { break };
            let (next, full) = (last.clone(), rows.len() == PAGE);
            for (key, raw) in rows {
                let mut floor = self.lock.lock().expect("paxos lock");
                // Re-read under the lock: a request may have moved it.
                let Some(current) = self.store.engine().get(Tree::Paxos, &key)? else { continue };
                if current != raw {
                    continue;
                }
                let state: AcceptorState = record::decode(&key, &raw)?;
                if !state.collectable(cutoff) {
                    continue;
                }
                if let Some(top) = state.promised.clone().max(state.committed.clone()).filter(|t| Some(t) > floor.as_ref()) {
                    self.store.meta_put(FLOOR_KEY, &top)?;
                    *floor = Some(top);
                }
                self.store.engine().delete(Tree::Paxos, &key)?;
                deleted += 1;
            }
            if !full {
                break;
            }
            start = next;
            inclusive = false;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::version::Hlc;

    fn b(wall_ms: u64) -> Ballot {
        Hlc { wall_ms, logical: 0, node: "n1".into() }
    }

    fn acceptor(store: &Arc<Store>) -> Acceptor {
        Acceptor::open(store.clone(), false).unwrap()
    }

    fn store() -> Arc<Store> {
        Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::None, std::time::Duration::ZERO))
    }

    #[test]
    fn promises_and_acceptances_survive_a_restart() {
        let s = store();
        let a = acceptor(&s);
        assert!(matches!(a.prepare(b"k", &b(5)).unwrap().0, Promise::Promised { .. }));
        a.accept(b"k", &Proposal { ballot: b(5), value: None }).unwrap().unwrap();
        let again = acceptor(&s);
        assert_eq!(again.prepare(b"k", &b(4)).unwrap().0, Promise::Refused { promised: b(5) });
        let Promise::Promised { accepted, .. } = again.prepare(b"k", &b(6)).unwrap().0 else { panic!("6 > 5") };
        assert_eq!(accepted.map(|p| p.ballot), Some(b(5)));
    }

    #[test]
    fn a_sweep_deletes_finished_records_and_the_floor_still_fences_them() {
        let s = store();
        let a = acceptor(&s);
        a.prepare(b"done", &b(5)).unwrap();
        a.accept(b"done", &Proposal { ballot: b(5), value: None }).unwrap().unwrap();
        a.commit(b"done", &b(5)).unwrap();
        a.prepare(b"open", &b(6)).unwrap();
        a.accept(b"open", &Proposal { ballot: b(6), value: None }).unwrap().unwrap();
        a.prepare(b"young", &b(50)).unwrap();
        assert_eq!(a.collect(&b(10)).unwrap(), 1, "only the finished, old record goes");
        assert_eq!(s.engine().len(Tree::Paxos).unwrap(), 2);
        assert!(a.state(b"open").unwrap().accepted.is_some(), "an accepted proposal is never collected");
        // After a restart, the floor refuses the purged ballot.
        let again = acceptor(&s);
        assert_eq!(again.floor(), Some(b(5)));
        assert_eq!(again.prepare(b"done", &b(5)).unwrap().0, Promise::Refused { promised: b(5) });
        assert!(matches!(again.prepare(b"done", &b(7)).unwrap().0, Promise::Promised { committed: Some(c), .. } if c == b(5)));
    }
}
