//! A model check of the pure rules (`rules.rs`): proposers running the
//! proposer's choice ([`in_flight`]) against three acceptors running
//! [`AcceptorState::prepare`] and [`AcceptorState::accept`], over thousands
//! of seeded random schedules in which messages arrive in any order or not
//! at all. Within one instance (no commits), Paxos's safety property must
//! hold: every proposal a majority accepted carries the same value. The
//! same schedules with the deliberately broken acceptor (accepting below
//! its promise) must break it, so the check can fail.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rules::{in_flight, AcceptorState, Ballot, Promise, Proposal};
use crate::version::{DvvSet, Hlc, Sibling};

const ACCEPTORS: usize = 3;
const MAJORITY: usize = 2;

fn value(name: &str) -> DvvSet {
    let mut d = DvvSet::default();
    let s = Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: name.into() }, value: name.into(), tombstone: false, expires_at_ms: None };
    d.update(&Default::default(), name, s, false).expect("a fresh set takes a dot");
    d
}

/// Where one proposer is.
enum Phase {
    /// Waiting for promises; the acceptors not yet asked.
    Preparing {
        ballot: Ballot,
        unsent: Vec<usize>,
        promises: Vec<Promise>,
    },
    /// Waiting for acceptances.
    Proposing {
        proposal: Proposal,
        unsent: Vec<usize>,
        accepted: usize,
    },
    Done,
}

struct Proposer {
    name: String,
    round: u64,
    phase: Phase,
}

impl Proposer {
    fn start(&mut self, clock: &mut u64) {
        *clock += 1;
        self.round += 1;
        let ballot = Hlc { wall_ms: *clock, logical: 0, node: self.name.clone() };
        self.phase = Phase::Preparing { ballot, unsent: (0..ACCEPTORS).collect(), promises: Vec::new() };
    }

    /// After a phase that reached too few acceptors: a new round, as after a
    /// timeout, for at most four rounds.
    fn retry_or_give_up(&mut self, clock: &mut u64) {
        if self.round < 4 {
            self.start(clock);
        } else {
            self.phase = Phase::Done;
        }
    }
}

/// Runs one random schedule; returns the distinct values a majority accepted.
fn schedule(seed: u64, accept_lower: bool) -> Vec<DvvSet> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acceptors = vec![AcceptorState::default(); ACCEPTORS];
    let mut clock = 0u64;
    let mut proposers: Vec<Proposer> =
        ["p1", "p2", "p3"].iter().map(|n| Proposer { name: n.to_string(), round: 0, phase: Phase::Done }).collect();
    for p in &mut proposers {
        p.start(&mut clock);
    }
    // (ballot, value) -> acceptors that accepted it.
    let mut votes: Vec<(Proposal, usize)> = Vec::new();
    for _ in 0..200 {
        let i = rng.random_range(0..proposers.len());
        let p = &mut proposers[i];
        let drop = rng.random_bool(0.2);
        match &mut p.phase {
            Phase::Done => {}
            Phase::Preparing { ballot, unsent, promises } => {
                if unsent.is_empty() {
                    // Too few promises arrived.
                    p.retry_or_give_up(&mut clock);
                    continue;
                }
                let a = unsent.swap_remove(rng.random_range(0..unsent.len()));
                let promise = acceptors[a].prepare(ballot, None);
                if drop {
                    continue;
                }
                if let Promise::Refused { promised } = &promise {
                    clock = clock.max(promised.wall_ms);
                }
                promises.push(promise);
                let promised = promises.iter().filter(|p| matches!(p, Promise::Promised { .. })).count();
                if promised >= MAJORITY {
                    let chosen = in_flight(promises.iter()).and_then(|p| p.value.clone());
                    let proposal = Proposal { ballot: ballot.clone(), value: Some(chosen.unwrap_or_else(|| value(&p.name))) };
                    p.phase = Phase::Proposing { proposal, unsent: (0..ACCEPTORS).collect(), accepted: 0 };
                }
            }
            Phase::Proposing { proposal, unsent, accepted } => {
                if unsent.is_empty() {
                    p.retry_or_give_up(&mut clock);
                    continue;
                }
                let a = unsent.swap_remove(rng.random_range(0..unsent.len()));
                if acceptors[a].accept(proposal, None, accept_lower).is_ok() {
                    match votes.iter_mut().find(|(v, _)| v == proposal) {
                        Some((_, n)) => *n += 1,
                        None => votes.push((proposal.clone(), 1)),
                    }
                    if !drop {
                        *accepted += 1;
                    }
                }
                if *accepted >= MAJORITY {
                    p.phase = Phase::Done;
                }
            }
        }
    }
    let mut chosen: Vec<DvvSet> = votes.into_iter().filter(|(_, n)| *n >= MAJORITY).filter_map(|(p, _)| p.value).collect();
    chosen.dedup();
    chosen.sort_by_key(|d| format!("{d:?}"));
    chosen.dedup();
    chosen
}

#[test]
fn at_most_one_value_is_chosen_per_instance_under_any_schedule() {
    let mut decided = 0;
    for seed in 0..3000 {
        let chosen = schedule(seed, false);
        assert!(chosen.len() <= 1, "seed {seed}: {} different values were chosen: {chosen:?}", chosen.len());
        decided += chosen.len();
    }
    // The schedules are not vacuous: most of them decide.
    assert!(decided > 1000, "only {decided} of 3000 schedules chose a value");
}

#[test]
fn the_broken_acceptor_lets_two_values_be_chosen() {
    let broken = (0..3000).filter(|&seed| schedule(seed, true).len() > 1).count();
    assert!(broken > 0, "accepting below the promise never chose two values in 3000 schedules");
}
