//! SERIAL: linearizable compare-and-set by single-decree Paxos per key over
//! the key's replicas, as Cassandra's lightweight transactions do it
//! (prepare/promise, read, propose/accept, commit). ARCHITECTURE.md,
//! "SERIAL compare-and-set", tells the whole design and what was taken from
//! Cassandra and what was avoided.
//!
//! - `rules.rs`: the pure rules. An acceptor's state transitions (prepare,
//!   accept, commit given its state), the proposer's choice of an in-flight
//!   proposal to finish from a quorum of promises, and the CAS condition.
//! - `acceptor.rs`: each replica's persisted state, one record per key in
//!   the `paxos` tree, with its garbage collection;
//! - `gc.rs`: the loop that runs that collection every ten minutes;
//! - `model.rs` (tests only): a model check of the rules over thousands of
//!   random message schedules: at most one value is chosen per instance,
//!   and the deliberately broken acceptor chooses two.
//!
//! The proposer, an async shell that sends the messages, is
//! `coordinator/cas.rs`.

mod acceptor;
pub mod gc;
#[cfg(test)]
mod model;
mod rules;

pub use acceptor::Acceptor;
pub use rules::{condition_holds, in_flight, AcceptorState, Ballot, Promise, Proposal};

/// Deliberately broken Paxos, for showing that jepsen-lite's hard
/// linearizability checker catches a broken build. Set from the
/// `RINGKV_BREAK_PAXOS` environment variable by the binary, and only when
/// fault injection is enabled; never in a normal run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Break {
    /// Correct Paxos.
    #[default]
    None,
    /// Acceptors accept proposals below the ballot they promised.
    AcceptLowerBallot,
    /// The proposer skips the quorum read: it decides on its own replica's
    /// version instead of the promisers' merged versions.
    SkipRead,
}

impl std::str::FromStr for Break {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "none" => Ok(Break::None),
            "accept-lower-ballot" => Ok(Break::AcceptLowerBallot),
            "skip-read" => Ok(Break::SkipRead),
            other => Err(format!("unknown RINGKV_BREAK_PAXOS {other:?}; expected accept-lower-ballot or skip-read")),
        }
    }
}
