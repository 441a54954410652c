//! The three fan-outs of a SERIAL round (`cas.rs` runs the rounds): the
//! prepare answers are gathered by [`gather`], phase 2 is [`propose`], the
//! read's merge and repair of the promisers is [`settle_read`], phase 3 is
//! [`commit`]. Each fills in the receipt as answers arrive; none decides
//! what the request answers.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::delivery::Delivery;
use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::ctx::{Ctx, ReplicaFuture};
use super::receipt::report_for;
use crate::error::Result;
use crate::paxos::{Ballot, Proposal};
use crate::record;
use crate::version::DvvSet;

/// How a phase-2 fan-out ended.
pub(super) enum Proposed {
    /// A majority accepted: the proposal is chosen.
    Chosen,
    /// Every answer was a refusal or a message that never left: nothing of
    /// it was accepted (the HLC has observed the refusing ballots).
    Refused,
    /// Some acceptor may have accepted it, but no majority did.
    Unknown(String),
}

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Runs `futs` until `done` holds for the answers so far, all have
/// answered, or the deadline passes. Returns the answers, the futures still
/// out, and whether the deadline passed.
pub(super) async fn gather<T: Send + 'static>(
    futs: impl IntoIterator<Item = ReplicaFuture<T>>,
    deadline: Instant,
    done: impl Fn(&[(String, Result<T>, Duration)]) -> bool,
) -> (Vec<(String, Result<T>, Duration)>, FuturesUnordered<ReplicaFuture<T>>, bool) {
    let mut pending: FuturesUnordered<ReplicaFuture<T>> = futs.into_iter().collect();
    let mut answers = Vec::new();
    while !done(&answers) {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(a)) => answers.push(a),
            Ok(None) => break,
            Err(_) => return (answers, pending, true),
        }
    }
    (answers, pending, false)
}

/// Phase 2 at the participants.
#[allow(clippy::too_many_arguments)]
pub(super) async fn propose(
    ctx: &Ctx,
    key: &[u8],
    participants: &[String],
    proposal: Arc<Proposal>,
    required: usize,
    deadline: Instant,
    receipt: &mut pb::Receipt,
    px: &mut pb::PaxosReceipt,
) -> Proposed {
    // A coordinator that was paused past its deadline sends nothing more:
    // its client has given up, and a late proposal would only contend.
    if Instant::now() >= deadline {
        return Proposed::Refused;
    }
    px.round_trips += 1;
    let sends = participants.iter().map(|id| ctx.paxos_propose(id.clone(), key.to_vec(), proposal.clone(), remaining(deadline)));
    let (answers, late, _) = gather(sends, deadline, |a| a.iter().filter(|(_, r, _)| matches!(r, Ok(Ok(())))).count() >= required).await;
    let mut beaten = None::<Ballot>;
    let mut unknown: Vec<String> = late.iter().map(|_| "no answer before the deadline".to_string()).collect();
    for (id, r, latency) in answers {
        let report = report_for(receipt, &id);
        report.latency_us = latency.as_micros() as u64;
        match r {
            Ok(Ok(())) => {
                report.answered = true;
                px.accepted.push(id);
            }
            Ok(Err(b)) => {
                report.answered = true;
                beaten = beaten.max(Some(b));
            }
            Err(e) => {
                report.error = e.to_string();
                if e.delivery() != Delivery::NotSent {
                    unknown.push(format!("{id}: {e}"));
                }
            }
        }
    }
    if let Some(b) = &beaten {
        ctx.observe(b);
    }
    if px.accepted.len() >= required {
        Proposed::Chosen
    } else if px.accepted.is_empty() && unknown.is_empty() {
        Proposed::Refused
    } else {
        Proposed::Unknown(format!("{} of {required} accepted; {}", px.accepted.len(), unknown.join("; ")))
    }
}

/// Merges the promisers' versions and repairs the promisers behind the
/// merge. Returns the merge once a quorum holds it, `None` when repairs
/// failed too often to say so.
pub(super) async fn settle_read(
    ctx: &Ctx,
    key: &[u8],
    versions: Vec<(String, Option<DvvSet>)>,
    required: usize,
    deadline: Instant,
    receipt: &mut pb::Receipt,
) -> Option<Option<DvvSet>> {
    let merged = versions.iter().filter_map(|(_, v)| v.as_ref()).fold(None::<DvvSet>, |acc, v| match acc {
        None => Some(v.clone()),
        Some(a) => Some(a.merged(v)),
    });
    let Some(m) = merged else { return Some(None) };
    let stale: Vec<String> =
        versions.iter().filter(|(_, v)| v.as_ref().is_none_or(|v| !v.dominates(&m))).map(|(id, _)| id.clone()).collect();
    let mut holding = versions.len() - stale.len();
    let repairs = stale.iter().map(|id| {
        let (ctx, id, key, m) = (ctx.clone(), id.clone(), key.to_vec(), m.clone());
        async move { (id.clone(), ctx.repair(id, key, m, remaining(deadline)).await) }
    });
    for (id, r) in futures::future::join_all(repairs).await {
        let report = report_for(receipt, &id);
        report.stale = true;
        match r {
            Ok(()) => {
                report.repaired = true;
                holding += 1;
            }
            Err(e) => tracing::warn!(node = %ctx.me(), peer = %id, error = %e, "serial read repair failed"),
        }
    }
    (holding >= required).then_some(Some(m))
}

/// Phase 3: every live replica merges the chosen version (a hint for the
/// down ones); returns how many participants made it durable before the
/// deadline. The others finish in the background.
#[allow(clippy::too_many_arguments)]
pub(super) async fn commit(
    ctx: &Ctx,
    key: &[u8],
    prefs: &[String],
    participants: &[String],
    ballot: &Ballot,
    value: &DvvSet,
    required: usize,
    deadline: Instant,
    receipt: &mut pb::Receipt,
) -> usize {
    let encoded = Arc::new(record::encode(value));
    let (live, down): (Vec<&String>, Vec<&String>) = prefs.iter().partition(|id| ctx.is_up(id));
    for target in down {
        if ctx.hint(target, key, value).is_some() {
            report_for(receipt, target).hinted = true;
            receipt.hints_stored = true;
        }
    }
    let sends = live.into_iter().map(|id| ctx.paxos_commit(id.clone(), key.to_vec(), ballot.clone(), encoded.clone(), remaining(deadline)));
    let counts = |a: &[(String, Result<()>, Duration)]| a.iter().filter(|(id, r, _)| r.is_ok() && participants.contains(id)).count();
    let (answers, mut late, _) = gather(sends, deadline, |a| counts(a) >= required).await;
    let acks = counts(&answers);
    for (id, r, latency) in answers {
        let report = report_for(receipt, &id);
        report.latency_us = latency.as_micros() as u64;
        match r {
            Ok(()) => report.answered = true,
            Err(e) => report.error = e.to_string(),
        }
    }
    if !late.is_empty() {
        let (ctx, key, value) = (ctx.clone(), key.to_vec(), value.clone());
        tokio::spawn(async move {
            while let Some((id, r, _)) = late.next().await {
                if r.is_err() {
                    ctx.hint(&id, &key, &value);
                }
            }
        });
    }
    acks
}
