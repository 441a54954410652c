//! The SERIAL path: the Paxos proposer for `Cas` and for SERIAL reads, an
//! async shell around the pure rules of `paxos/rules.rs`.
//!
//! One request runs rounds until one decides or the deadline passes:
//! 1. **Prepare** a fresh HLC ballot at the key's live participants (its
//!    replicas; for LOCAL_SERIAL those in this node's zone) and wait for a
//!    majority of promises. Each promise carries the replica's version of
//!    the key, so the read phase costs no extra round trip (Paxos v2 does
//!    the same; v1 read separately).
//! 2. If a promiser reports an accepted proposal of the open instance, an
//!    earlier request may have been interrupted after it was chosen:
//!    re-propose and commit it under our ballot, then start over.
//! 3. **Read**: merge the promisers' versions; repair the promisers behind
//!    the merge, so what the decision sees is held by a quorum.
//! 4. **Propose**: the CAS's new version (the merge superseded by one
//!    sibling) if the condition holds, or a no-op otherwise and for reads.
//!    The no-op is what CASSANDRA-12126 was missing: an unapplied CAS or a
//!    read that proposes nothing leaves a minority-accepted proposal able
//!    to surface later, "before" what it just answered.
//! 5. **Commit** a value to every live replica (a hint for the down ones)
//!    and wait for a majority of participants to make it durable.
//!
//! Outcomes. Too few live participants fail fast as `Unavailable`, before
//! any message. A round refused by a higher ballot (contention) is retried
//! after a randomized, growing back-off, at most [`MAX_CONTENTION_RETRIES`]
//! times. A proposal of a value that some acceptor may have accepted, when
//! a quorum did not, is `Indeterminate`: another proposer may still finish
//! it. So is a chosen value whose commit reached too few replicas (a later
//! SERIAL request finishes it). Anything that ends before a value was
//! proposed is `Timeout` or `Unavailable`: nothing of it happened.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::cas_phases::{commit, gather, propose, remaining, settle_read, Proposed};
use super::ctx::Ctx;
use super::plan::Ask;
use super::receipt::{self, report_for};
use crate::error::{Error, Result};
use crate::paxos::{condition_holds, in_flight, Ballot, Break, Promise, Proposal};
use crate::quorum::Level;
use crate::version::{DvvSet, Sibling};

/// Rounds a request retries after losing to a higher ballot; the deadline
/// bounds them too. Past this many losses in a row the key is too hot for
/// Paxos to make progress for this client, and it is told so (a `timeout`
/// saying how many retries) rather than kept waiting to its deadline.
pub const MAX_CONTENTION_RETRIES: u32 = 32;
/// The first back-off's upper bound; each retry doubles it, up to
/// [`BACKOFF_CAP`]. A few milliseconds is a round trip or two here, enough
/// for the winner to finish its propose and commit.
const BACKOFF_BASE: Duration = Duration::from_millis(4);
/// The largest back-off bound: with 16 clients on one key (the issue's
/// contention case) a smaller cap kept most of them colliding.
const BACKOFF_CAP: Duration = Duration::from_millis(200);

/// What a SERIAL request does once it holds a quorum's promises.
#[derive(Clone, Debug)]
pub enum SerialOp {
    /// Compare-and-set.
    Cas {
        /// The value every live sibling must equal; `None`: absent or deleted.
        expect: Option<Vec<u8>>,
        /// The new value; `None` writes a tombstone.
        new: Option<Vec<u8>>,
    },
    /// A linearizable read (proposes a no-op).
    Read,
}

/// A finished SERIAL request.
pub struct SerialResult {
    /// The CAS condition held and its version is committed.
    pub applied: bool,
    /// The key's version after the request: the committed one when
    /// applied, the one read otherwise; `None` when no replica had the key.
    pub version: Option<DvvSet>,
    /// What it cost, with the Paxos rounds in `receipt.paxos`.
    pub receipt: pb::Receipt,
}

/// Coordinates one SERIAL request for `key`.
pub(super) async fn serial(ctx: &Ctx, key: Vec<u8>, op: SerialOp, level: Level, timeout: Duration) -> Result<SerialResult> {
    if !level.is_serial() {
        return Err(Error::InvalidArgument(format!(
            "cas and serial reads run at SERIAL or LOCAL_SERIAL, not {}; pass -c serial or -c local_serial",
            level.as_str()
        )));
    }
    ctx.check_clock()?;
    let start = Instant::now();
    let deadline = start + timeout;
    let plan = ctx.plan(&key, Ask { level, write: false, sloppy: false })?;
    let required = plan.required;
    let participants: Vec<String> = plan.targets.iter().filter(|t| plan.counted.contains(t)).cloned().collect();
    let mut receipt = receipt::new(ctx.me(), level, required, &plan.prefs, |id| ctx.is_up(id));
    let mut px = pb::PaxosReceipt::default();
    let too_late = |px: &pb::PaxosReceipt, answered: usize| Error::Timeout {
        what: format!(
            "{} at {} (after {} Paxos round trips, {} contention retries)",
            op_name(&op),
            level.as_str(),
            px.round_trips,
            px.contention_retries
        ),
        answered: answered as u32,
        required: required as u32,
        timeout_ms: timeout.as_millis() as u64,
    };
    let actor = ctx.paxos_actor();
    // Our value proposal that some acceptor may hold, until a later round
    // finds it chosen or fences it off; while it is set, any failure is
    // indeterminate.
    let mut pending: Option<Pending> = None;
    loop {
        if Instant::now() >= deadline {
            return Err(settle(&pending, too_late(&px, 0)));
        }
        let ballot = ctx.ballot();
        px.ballot = Some((&ballot).into());
        px.promised.clear();
        px.accepted.clear();

        // Phase 1: prepare, with the read riding on it.
        px.round_trips += 1;
        let prepares = participants.iter().map(|id| ctx.paxos_prepare(id.clone(), key.clone(), ballot.clone(), remaining(deadline)));
        let (answers, _late, timed_out) =
            gather(prepares, deadline, |a| a.iter().filter(|(_, r, _)| matches!(r, Ok((Promise::Promised { .. }, _)))).count() >= required)
                .await;
        let mut promises = Vec::new();
        let (mut beaten, mut errors) = (None::<Ballot>, Vec::new());
        for (id, r, latency) in answers {
            let report = report_for(&mut receipt, &id);
            report.latency_us = latency.as_micros() as u64;
            match r {
                Ok((p @ Promise::Promised { .. }, v)) => {
                    report.answered = true;
                    promises.push((id, p, v));
                }
                Ok((Promise::Refused { promised }, _)) => {
                    report.answered = true;
                    beaten = beaten.max(Some(promised));
                }
                Err(e) => {
                    report.error = e.to_string();
                    errors.push(format!("{id}: {e}"));
                }
            }
        }
        if promises.len() < required {
            if let Some(b) = &beaten {
                ctx.observe(b);
                if back_off(ctx, &mut px, deadline).await {
                    continue;
                }
            }
            if timed_out || beaten.is_some() {
                return Err(settle(&pending, too_late(&px, promises.len())));
            }
            return Err(settle(
                &pending,
                Error::Unavailable {
                    level: level.as_str().into(),
                    required: required as u32,
                    alive: promises.len() as u32,
                    hint: format!("; replicas failed during the Paxos prepare ({}); nothing was proposed", errors.join("; ")),
                },
            ));
        }
        px.promised = promises.iter().map(|(id, _, _)| id.clone()).collect();

        // Finish an interrupted request's proposal before deciding anything.
        if let Some(earlier) = in_flight(promises.iter().map(|(_, p, _)| p)) {
            let value = earlier.value.clone().expect("in_flight returns proposals with a value");
            px.in_flight_completed += 1;
            let ours = pending.as_ref().is_some_and(|p| p.ballot == earlier.ballot);
            let proposal = Arc::new(Proposal { ballot: ballot.clone(), value: Some(value.clone()) });
            if let Proposed::Chosen = propose(ctx, &key, &participants, proposal, required, deadline, &mut receipt, &mut px).await {
                px.round_trips += 1;
                let acks = commit(ctx, &key, &plan.prefs, &participants, &ballot, &value, required, deadline, &mut receipt).await;
                if ours {
                    // Our own earlier proposal, now chosen: the cas applied.
                    return committed(acks, required, value, receipt, px, start);
                }
            } else if !back_off(ctx, &mut px, deadline).await {
                return Err(settle(&pending, too_late(&px, promises.len())));
            }
            continue;
        }

        // The read: the promisers' versions, merged, held by a quorum.
        let merged = if ctx.break_paxos() == Break::SkipRead {
            ctx.local_version(&key)?
        } else {
            let versions: Vec<(String, Option<DvvSet>)> = promises.into_iter().map(|(id, _, v)| (id, v)).collect();
            match settle_read(ctx, &key, versions, required, deadline, &mut receipt).await {
                Some(m) => m,
                None if back_off(ctx, &mut px, deadline).await => continue,
                None => return Err(settle(&pending, too_late(&px, 0))),
            }
        };
        if let Some(p) = &pending {
            let entry = merged.as_ref().and_then(|m| m.entries.get(&actor));
            if entry.is_some_and(|e| e.siblings.contains(&p.sibling)) {
                // Another request completed our earlier proposal.
                receipt.acked = px.promised.len() as u32;
                return Ok(finish(true, merged, receipt, px, start));
            }
            if entry.is_some_and(|e| e.counter >= p.dot) {
                return Err(settle(&pending, too_late(&px, 0)));
            }
            // Not chosen: the proposal below fences it off for good once a
            // quorum accepts it.
        }

        // Decide, then propose the decision (a no-op when nothing changes).
        let value = match &op {
            SerialOp::Cas { expect, new } if condition_holds(merged.as_ref(), expect.as_deref(), ctx.wall_ms()) => {
                Some(ctx.cas_version(merged.as_ref(), new.clone().unwrap_or_default(), new.is_none())?)
            }
            _ => None,
        };
        let proposal = Arc::new(Proposal { ballot: ballot.clone(), value: value.clone() });
        match propose(ctx, &key, &participants, proposal, required, deadline, &mut receipt, &mut px).await {
            // Chosen: any earlier proposal of ours is fenced off for good.
            Proposed::Chosen => {}
            Proposed::Unknown(why) if value.is_some() => {
                // Some acceptor may hold it: a later round finds out.
                let value = value.as_ref().expect("checked");
                let entry = value.entries.get(&actor).expect("cas_version adds a dot of the paxos actor");
                pending = Some(Pending { ballot: ballot.clone(), sibling: entry.siblings[0].clone(), dot: entry.counter });
                if !back_off(ctx, &mut px, deadline).await {
                    return Err(Error::Indeterminate {
                        acked: px.accepted.len() as u32,
                        required: required as u32,
                        reason: format!(
                            "the Paxos proposal was accepted by too few replicas ({why}); another request may still complete it"
                        ),
                    });
                }
                continue;
            }
            Proposed::Refused | Proposed::Unknown(_) => {
                if back_off(ctx, &mut px, deadline).await {
                    continue;
                }
                return Err(settle(&pending, too_late(&px, 0)));
            }
        }
        let Some(value) = value else {
            receipt.acked = px.accepted.len() as u32;
            return Ok(finish(false, merged, receipt, px, start));
        };
        px.round_trips += 1;
        let acks = commit(ctx, &key, &plan.prefs, &participants, &ballot, &value, required, deadline, &mut receipt).await;
        return committed(acks, required, value, receipt, px, start);
    }
}

/// A value proposal of ours that some acceptor may have accepted.
struct Pending {
    /// Its ballot.
    ballot: Ballot,
    /// Its new sibling (HLC-stamped, so unique).
    sibling: Sibling,
    /// The sibling's dot counter under the paxos actor.
    dot: u64,
}

/// `e`, or `Indeterminate` when a proposal of ours may still be chosen.
fn settle(pending: &Option<Pending>, e: Error) -> Error {
    match pending {
        None => e,
        Some(_) => Error::Indeterminate {
            acked: 0,
            required: 0,
            reason: format!("{e}, after a Paxos proposal of this request reached some replicas; another request may still complete it"),
        },
    }
}

/// The answer once our value was chosen and its commit sent.
fn committed(
    acks: usize,
    required: usize,
    value: DvvSet,
    mut receipt: pb::Receipt,
    px: pb::PaxosReceipt,
    start: Instant,
) -> Result<SerialResult> {
    if acks < required {
        return Err(Error::Indeterminate {
            acked: acks as u32,
            required: required as u32,
            reason: "the commit of a chosen proposal reached too few replicas; the next SERIAL request on the key completes it".into(),
        });
    }
    receipt.acked = acks as u32;
    Ok(finish(true, Some(value), receipt, px, start))
}

fn op_name(op: &SerialOp) -> &'static str {
    match op {
        SerialOp::Cas { .. } => "cas",
        SerialOp::Read => "serial read",
    }
}

fn finish(applied: bool, version: Option<DvvSet>, mut receipt: pb::Receipt, px: pb::PaxosReceipt, start: Instant) -> SerialResult {
    receipt.latency_us = start.elapsed().as_micros() as u64;
    receipt.paxos = Some(px);
    SerialResult { applied, version, receipt }
}

/// Counts a lost round and sleeps a randomized, growing back-off. Returns
/// false, without sleeping, when the retries are used up or the back-off
/// would pass the deadline.
async fn back_off(ctx: &Ctx, px: &mut pb::PaxosReceipt, deadline: Instant) -> bool {
    if px.contention_retries >= MAX_CONTENTION_RETRIES {
        return false;
    }
    let bound = BACKOFF_BASE.saturating_mul(1 << px.contention_retries.min(16)).min(BACKOFF_CAP);
    let wait = ctx.jitter(bound);
    if Instant::now() + wait >= deadline {
        return false;
    }
    px.contention_retries += 1;
    tokio::time::sleep(wait).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Hlc;

    fn pending() -> Option<Pending> {
        let hlc = Hlc { wall_ms: 1, logical: 0, node: "n1".into() };
        Some(Pending { ballot: hlc.clone(), sibling: Sibling { hlc, value: b"v".to_vec(), tombstone: false, expires_at_ms: None }, dot: 1 })
    }

    #[test]
    fn a_failure_is_indeterminate_only_while_a_proposal_of_ours_may_be_pending() {
        let timeout = || Error::Timeout { what: "cas at SERIAL".into(), answered: 1, required: 2, timeout_ms: 100 };
        assert!(matches!(settle(&None, timeout()), Error::Timeout { .. }), "nothing proposed: nothing happened");
        let e = settle(&pending(), timeout());
        assert!(matches!(&e, Error::Indeterminate { reason, .. } if reason.contains("may still complete it")), "{e}");
        let unavailable = Error::Unavailable { level: "SERIAL".into(), required: 2, alive: 1, hint: String::new() };
        assert!(matches!(settle(&pending(), unavailable), Error::Indeterminate { .. }));
    }

    #[test]
    fn a_chosen_value_whose_commit_missed_the_majority_is_indeterminate() {
        let e =
            committed(1, 2, DvvSet::default(), pb::Receipt::default(), pb::PaxosReceipt::default(), Instant::now()).err().expect("1 < 2");
        assert!(matches!(e, Error::Indeterminate { acked: 1, required: 2, .. }), "{e}");
        let Ok(ok) = committed(2, 2, DvvSet::default(), pb::Receipt::default(), pb::PaxosReceipt::default(), Instant::now()) else {
            panic!("2 of 2 is a quorum")
        };
        assert!(ok.applied && ok.receipt.paxos.is_some());
    }
}
