//! The rules of single-decree Paxos per key, pure: what an acceptor does
//! with a prepare, a proposal or a commit given its state, and what a
//! proposer makes of a quorum of promises. No I/O, no clock: the acceptor
//! shell (`acceptor.rs`) persists what these return, and the proposer shell
//! (`coordinator/cas.rs`) sends the messages.
//!
//! One key's Paxos runs as a sequence of *instances*, as in Cassandra's
//! lightweight transactions: an instance ends when its chosen proposal is
//! committed, and the next one starts from the committed data. An acceptor
//! therefore keeps three things per key ([`AcceptorState`]):
//! - `promised`: the highest ballot it promised; it refuses anything lower;
//! - `accepted`: the last proposal it accepted and has not seen committed;
//! - `committed`: the highest ballot it saw committed. An accepted proposal
//!   at or below it is finished (or lost for good) and never re-proposed.
//!
//! A proposal's value is a whole version (a DVVSet built on a quorum read,
//! so committing it is an idempotent merge), or a *no-op*: SERIAL reads and
//! CAS whose condition failed still get a proposal accepted at a quorum,
//! which fences every lower-ballot proposal that some minority accepted
//! (CASSANDRA-12126: without it, two reads in a row could see a value
//! appear "in the past").

use serde::{Deserialize, Serialize};

use crate::version::{DvvSet, Hlc};

/// A Paxos ballot: an HLC timestamp of the proposer, whose node id breaks
/// ties, so ballots are totally ordered and unique per proposer.
pub type Ballot = Hlc;

/// A proposal: a ballot and what it would commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposer's ballot.
    pub ballot: Ballot,
    /// The version to commit; `None` is a no-op (a read, or a CAS whose
    /// condition failed), which commits nothing.
    pub value: Option<DvvSet>,
}

/// What one acceptor remembers of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest ballot promised (or accepted, or committed).
    pub promised: Option<Ballot>,
    /// The last proposal accepted and not yet committed.
    pub accepted: Option<Proposal>,
    /// The highest ballot seen committed.
    pub committed: Option<Ballot>,
}

/// An acceptor's answer to a prepare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Promise {
    /// Promised: it will refuse every ballot below the prepared one. Says
    /// what it accepted and the last commit it saw.
    Promised {
        /// Its accepted, uncommitted proposal.
        accepted: Option<Proposal>,
        /// The highest ballot it saw committed.
        committed: Option<Ballot>,
    },
    /// Refused: it already promised this higher-or-equal ballot.
    Refused {
        /// The ballot that beat the prepared one.
        promised: Ballot,
    },
}

impl AcceptorState {
    /// Phase 1b: promises `ballot` if it is above everything promised so
    /// far (a ballot is never promised twice: two proposers could then both
    /// think they hold it). `floor` is the node's garbage-collection floor:
    /// every ballot at or below it belongs to a purged, finished instance.
    pub fn prepare(&mut self, ballot: &Ballot, floor: Option<&Ballot>) -> Promise {
        let highest = self.promised.as_ref().max(floor);
        if let Some(p) = highest.filter(|p| *p >= ballot) {
            return Promise::Refused { promised: p.clone() };
        }
        self.promised = Some(ballot.clone());
        Promise::Promised { accepted: self.accepted.clone(), committed: self.committed.clone().max(floor.cloned()) }
    }

    /// Phase 2b: accepts `proposal` unless a higher ballot was promised.
    /// Returns the refusing ballot otherwise. `accept_lower` is the
    /// deliberately broken rule jepsen-lite must catch (fault-injection
    /// builds only): it accepts whatever arrives.
    pub fn accept(&mut self, proposal: &Proposal, floor: Option<&Ballot>, accept_lower: bool) -> Result<(), Ballot> {
        let highest = self.promised.as_ref().max(floor);
        if let Some(p) = highest.filter(|p| **p > proposal.ballot) {
            if !accept_lower {
                return Err(p.clone());
            }
        }
        self.promised = self.promised.clone().max(Some(proposal.ballot.clone()));
        self.accepted = Some(proposal.clone());
        Ok(())
    }

    /// Phase 3 (learn): the proposal at `ballot` was chosen and its version
    /// merged into the data. Ends the instance: an accepted proposal at or
    /// below `ballot` is dropped (its value, if chosen, is in the data now),
    /// and the promise is raised so no proposer still holding a lower
    /// ballot (its read predates this commit) can get anything accepted.
    pub fn commit(&mut self, ballot: &Ballot) {
        if self.accepted.as_ref().is_some_and(|a| a.ballot <= *ballot) {
            self.accepted = None;
        }
        self.committed = self.committed.clone().max(Some(ballot.clone()));
        self.promised = self.promised.clone().max(Some(ballot.clone()));
    }

    /// Whether the record can be dropped once the node's floor is raised
    /// past `cutoff`: nothing accepted is pending, and every ballot it
    /// holds is at or below the cutoff (so the floor refuses what the
    /// record would have refused).
    pub fn collectable(&self, cutoff: &Ballot) -> bool {
        self.accepted.is_none() && self.promised.as_ref().is_none_or(|p| p <= cutoff)
    }
}

/// The proposal a proposer must finish before its own, from a quorum of
/// promises: the accepted proposal with the highest ballot, if that ballot
/// is above every commit the promisers saw and it carries a value. Paxos's
/// rule (choose the highest accepted value) restricted to the current
/// instance: a proposal at or below a seen commit belongs to a finished
/// instance, and a no-op has nothing to finish.
pub fn in_flight<'a>(promises: impl IntoIterator<Item = &'a Promise>) -> Option<&'a Proposal> {
    let mut committed: Option<&Ballot> = None;
    let mut best: Option<&Proposal> = None;
    for p in promises {
        if let Promise::Promised { accepted, committed: c } = p {
            committed = committed.max(c.as_ref());
            if let Some(a) = accepted {
                if best.is_none_or(|b| a.ballot > b.ballot) {
                    best = Some(a);
                }
            }
        }
    }
    best.filter(|b| b.value.is_some() && committed.is_none_or(|c| b.ballot > *c))
}

/// Whether the key's current version meets a CAS condition at wall time
/// `now_ms`: `expect` `None` holds when no live sibling is left (absent,
/// deleted or expired);
/// `Some(v)` when there is at least one live sibling and every one equals
/// `v` (siblings only arise from non-SERIAL writes to the key).
pub fn condition_holds(current: Option<&DvvSet>, expect: Option<&[u8]>, now_ms: u64) -> bool {
    let live = current.map(|d| d.live(now_ms)).unwrap_or_default();
    match expect {
        None => live.is_empty(),
        Some(v) => !live.is_empty() && live.iter().all(|s| s.value == v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Sibling;

    fn b(wall_ms: u64, node: &str) -> Ballot {
        Hlc { wall_ms, logical: 0, node: node.into() }
    }

    fn version(value: &str) -> DvvSet {
        let mut d = DvvSet::default();
        let s = Sibling { hlc: b(1, "a"), value: value.into(), tombstone: false, expires_at_ms: None };
        d.update(&Default::default(), "a", s, false).unwrap();
        d
    }

    fn proposal(ballot: Ballot, value: Option<&str>) -> Proposal {
        Proposal { ballot, value: value.map(version) }
    }

    #[test]
    fn an_acceptor_promises_only_ballots_above_every_promise() {
        let mut s = AcceptorState::default();
        assert!(matches!(s.prepare(&b(5, "a"), None), Promise::Promised { accepted: None, committed: None }));
        assert_eq!(s.prepare(&b(5, "a"), None), Promise::Refused { promised: b(5, "a") }, "the same ballot twice");
        assert_eq!(s.prepare(&b(4, "z"), None), Promise::Refused { promised: b(5, "a") });
        // The node id breaks a tie on time.
        assert!(matches!(s.prepare(&b(5, "b"), None), Promise::Promised { .. }));
        assert_eq!(s.promised, Some(b(5, "b")));
    }

    #[test]
    fn an_acceptor_refuses_proposals_below_its_promise_and_reports_what_it_accepted() {
        let mut s = AcceptorState::default();
        s.prepare(&b(5, "a"), None);
        assert_eq!(s.accept(&proposal(b(4, "a"), Some("old")), None, false), Err(b(5, "a")));
        assert_eq!(s.accepted, None, "a refused proposal leaves no trace");
        s.accept(&proposal(b(5, "a"), Some("x")), None, false).unwrap();
        let Promise::Promised { accepted, .. } = s.prepare(&b(6, "b"), None) else { panic!("6 > 5") };
        assert_eq!(accepted, Some(proposal(b(5, "a"), Some("x"))));
        // The broken rule accepts below the promise.
        assert!(s.accept(&proposal(b(4, "c"), Some("y")), None, true).is_ok());
    }

    #[test]
    fn a_commit_ends_the_instance_and_fences_lower_ballots() {
        let mut s = AcceptorState::default();
        s.prepare(&b(5, "a"), None);
        s.accept(&proposal(b(5, "a"), Some("x")), None, false).unwrap();
        s.commit(&b(5, "a"));
        assert_eq!((s.accepted.as_ref(), s.committed.as_ref()), (None, Some(&b(5, "a"))));
        // A commit of an older ballot keeps a newer accepted proposal.
        let mut s = AcceptorState::default();
        s.accept(&proposal(b(7, "a"), Some("y")), None, false).unwrap();
        s.commit(&b(5, "a"));
        assert_eq!(s.accepted, Some(proposal(b(7, "a"), Some("y"))));
        // A commit raises the promise: a proposer that read before it is refused.
        let mut s = AcceptorState::default();
        s.prepare(&b(3, "a"), None);
        s.commit(&b(9, "b"));
        assert_eq!(s.accept(&proposal(b(3, "a"), Some("stale")), None, false), Err(b(9, "b")));
    }

    #[test]
    fn the_floor_refuses_ballots_of_purged_instances() {
        let mut s = AcceptorState::default();
        let floor = b(10, "x");
        assert_eq!(s.prepare(&b(9, "a"), Some(&floor)), Promise::Refused { promised: floor.clone() });
        assert_eq!(s.accept(&proposal(b(9, "a"), None), Some(&floor), false), Err(floor.clone()));
        let Promise::Promised { committed, .. } = s.prepare(&b(11, "a"), Some(&floor)) else { panic!("11 > 10") };
        assert_eq!(committed, Some(floor), "a purged instance reads as committed at the floor");
    }

    #[test]
    fn the_proposer_finishes_the_highest_accepted_proposal_of_the_open_instance() {
        let promised = |accepted: Option<Proposal>, committed: Option<Ballot>| Promise::Promised { accepted, committed };
        let refused = Promise::Refused { promised: b(99, "z") };
        // Nothing accepted: nothing to finish.
        assert_eq!(in_flight(&[promised(None, None), promised(None, Some(b(1, "a")))]), None);
        // The highest accepted wins over a lower one; refusals do not count.
        let ps = [promised(Some(proposal(b(4, "a"), Some("x"))), None), promised(Some(proposal(b(6, "b"), Some("y"))), None), refused];
        assert_eq!(in_flight(&ps), Some(&proposal(b(6, "b"), Some("y"))));
        // At or below a commit any promiser saw: finished, not re-proposed
        // (the minority-accepted loser of an earlier instance).
        let ps = [promised(Some(proposal(b(4, "a"), Some("x"))), None), promised(None, Some(b(5, "b")))];
        assert_eq!(in_flight(&ps), None);
        // A no-op at the top fences the lower value under it (CASSANDRA-12126).
        let ps = [promised(Some(proposal(b(4, "a"), Some("x"))), None), promised(Some(proposal(b(6, "b"), None)), None)];
        assert_eq!(in_flight(&ps), None);
    }

    #[test]
    fn a_condition_compares_every_live_sibling() {
        let x = version("x");
        assert!(condition_holds(None, None, 0));
        assert!(!condition_holds(Some(&x), None, 0));
        assert!(condition_holds(Some(&x), Some(b"x"), 0));
        assert!(!condition_holds(Some(&x), Some(b"y"), 0));
        assert!(!condition_holds(None, Some(b"x"), 0));
        let mut gone = x.clone();
        let t = Sibling { hlc: b(2, "a"), value: vec![], tombstone: true, expires_at_ms: None };
        gone.update(&gone.context(), "a", t, false).unwrap();
        assert!(condition_holds(Some(&gone), None, 0), "a tombstone reads as absent");
        let mut two = x.clone();
        two.update(&Default::default(), "b", Sibling { hlc: b(3, "b"), value: "y".into(), tombstone: false, expires_at_ms: None }, false)
            .unwrap();
        assert!(!condition_holds(Some(&two), Some(b"x"), 0), "siblings x and y are not x");
        let mut expiring = DvvSet::default();
        let s = Sibling { hlc: b(4, "a"), value: "x".into(), tombstone: false, expires_at_ms: Some(100) };
        expiring.update(&Default::default(), "a", s, false).unwrap();
        assert!(condition_holds(Some(&expiring), Some(b"x"), 99), "x before its expiry");
        assert!(condition_holds(Some(&expiring), None, 100), "an expired value reads as absent");
    }
}
