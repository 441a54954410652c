//! The read path: ask R replicas, speculate, merge, read repair.
//!
//! A read asks only as many replicas as its level needs (R), this node
//! first, then the others by their recent median read latency, so read load
//! stays at R per read (DESIGN §2 allows R or all N; see ARCHITECTURE.md,
//! Deviations). It asks one more replica when an asked one fails, or when
//! one has not answered within its recent p99 (`speculative_retry_ms`
//! before the peer has enough samples): Cassandra's speculative retry.
//!
//! Once R have answered, their versions are merged (the DVVSet join), and
//! every answer whose version does not dominate the merge is stale. Stale
//! replicas are repaired with the merge before answering (`blocking`, the
//! default), after (`async`), or not at all (`off`). Answers that arrive
//! after the quorum are compared and repaired in the background. Read
//! repair sees only the replicas asked; anti-entropy covers the rest.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::ReadRepair;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::plan::Ask;
use super::receipt::{self, report_for};
use crate::error::{Error, Result};
use crate::quorum::{Level, Outcome, QuorumTracker};
use crate::version::DvvSet;

/// A read as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct Read {
    /// The key.
    pub key: Vec<u8>,
    /// Replicas that must answer.
    pub level: Level,
    /// What to do with stale replicas.
    pub read_repair: ReadRepair,
    /// Deadline for the whole request.
    pub timeout: Duration,
}

/// A finished read.
pub struct ReadResult {
    /// The merged version; `None` when no replica had the key.
    pub version: Option<DvvSet>,
    /// What it cost.
    pub receipt: pb::Receipt,
}

/// Coordinates a read.
pub(super) async fn read(ctx: &Ctx, r: Read) -> Result<ReadResult> {
    let start = Instant::now();
    if r.level == Level::Any {
        return Err(Error::InvalidArgument("ANY is a write level; read at ONE or higher".into()));
    }
    let plan = ctx.plan(&r.key, Ask { level: r.level, write: false, sloppy: false })?;
    let required = plan.required;
    let candidates: Vec<String> = plan.targets.iter().filter(|t| plan.counted.contains(t)).cloned().collect();
    let mut unasked: VecDeque<String> = ask_order(candidates, ctx.me(), |id| ctx.read_latency(id).map(|(p50, _)| p50)).into();
    let mut pending = FuturesUnordered::new();
    let mut receipt = receipt::new(ctx.me(), r.level, required, &plan.prefs, |id| ctx.is_up(id));
    let mut outstanding: Vec<String> = Vec::new();
    for _ in 0..required {
        if let Some(id) = unasked.pop_front() {
            outstanding.push(id.clone());
            pending.push(ctx.read(id, r.key.clone(), r.timeout));
        }
    }
    // How long to wait for the replicas asked before asking one more.
    let patience = |outstanding: &[String]| -> Duration {
        outstanding
            .iter()
            .filter(|id| *id != ctx.me())
            .map(|id| ctx.read_latency(id).map_or(ctx.speculative_retry(), |(_, p99)| p99))
            .max()
            .unwrap_or(r.timeout)
    };
    let mut speculate_at = Instant::now() + patience(&outstanding);

    let mut tracker = QuorumTracker::new(required, plan.alive_counted);
    let mut answers: Vec<(String, Option<DvvSet>)> = Vec::new();
    let mut errors = Vec::new();
    let deadline = start + r.timeout;
    while tracker.outcome() == Outcome::Pending {
        tokio::select! {
            biased;
            next = pending.next() => {
                let Some((id, result, latency)) = next else { break };
                outstanding.retain(|o| *o != id);
                let report = report_for(&mut receipt, &id);
                report.latency_us = latency.as_micros() as u64;
                match result {
                    Ok(v) => {
                        report.answered = true;
                        answers.push((id, v));
                        tracker.ack();
                    }
                    Err(e) => {
                        report.error = e.to_string();
                        errors.push(format!("{id}: {e}"));
                        tracker.fail();
                        if let Some(next) = unasked.pop_front() {
                            outstanding.push(next.clone());
                            pending.push(ctx.read(next, r.key.clone(), r.timeout));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(speculate_at), if !unasked.is_empty() && !outstanding.is_empty() => {
                let next = unasked.pop_front().expect("checked non-empty");
                report_for(&mut receipt, &next).speculative = true;
                outstanding.push(next.clone());
                pending.push(ctx.read(next, r.key.clone(), r.timeout));
                speculate_at = Instant::now() + patience(&outstanding);
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout {
                    what: format!("read at {}", r.level.as_str()),
                    answered: tracker.acks() as u32,
                    required: required as u32,
                    timeout_ms: r.timeout.as_millis() as u64,
                });
            }
        }
    }
    if tracker.outcome() != Outcome::Met {
        return Err(Error::Unavailable {
            level: r.level.as_str().into(),
            required: required as u32,
            alive: tracker.acks() as u32,
            hint: format!("; replicas failed during the read ({})", errors.join("; ")),
        });
    }

    let merged = merge(&answers);
    let stale = merged.as_ref().map_or_else(Vec::new, |m| stale(&answers, m));
    for id in &stale {
        report_for(&mut receipt, id).stale = true;
    }
    if let Some(m) = &merged {
        let repairs = stale.iter().map(|id| {
            let (ctx, id, key, m) = (ctx.clone(), id.clone(), r.key.clone(), m.clone());
            let remaining = r.timeout.saturating_sub(start.elapsed());
            async move { (id.clone(), ctx.repair(id, key, m, remaining).await) }
        });
        match r.read_repair {
            ReadRepair::Off => {}
            ReadRepair::Async => {
                let all = futures::future::join_all(repairs);
                tokio::spawn(all);
            }
            ReadRepair::Blocking | ReadRepair::Unspecified => {
                for (id, result) in futures::future::join_all(repairs).await {
                    match result {
                        Ok(()) => report_for(&mut receipt, &id).repaired = true,
                        Err(e) => tracing::warn!(node = %ctx.me(), peer = %id, error = %e, "read repair failed"),
                    }
                }
            }
        }
    }
    // Late answers: compare and repair them in the background.
    if !pending.is_empty() && r.read_repair != ReadRepair::Off {
        if let Some(m) = merged.clone() {
            let (ctx, key, timeout) = (ctx.clone(), r.key.clone(), r.timeout);
            tokio::spawn(async move {
                while let Some((id, result, _)) = pending.next().await {
                    if let Ok(v) = result {
                        if v.as_ref().is_none_or(|v| !v.dominates(&m)) {
                            let _ = ctx.repair(id, key.clone(), m.clone(), timeout).await;
                        }
                    }
                }
            });
        }
    }
    receipt.acked = tracker.acks() as u32;
    receipt.latency_us = start.elapsed().as_micros() as u64;
    Ok(ReadResult { version: merged, receipt })
}

/// The order to ask replicas in: this node first (no network), then by
/// recent median read latency; a peer with no samples yet sorts as fast.
fn ask_order(mut candidates: Vec<String>, me: &str, median: impl Fn(&str) -> Option<Duration>) -> Vec<String> {
    candidates.sort_by_key(|id| if id == me { 0 } else { 1 + median(id).map_or(0, |p50| p50.as_micros() as u64) });
    candidates
}

/// The join of every version answered; `None` when no replica had the key.
fn merge(answers: &[(String, Option<DvvSet>)]) -> Option<DvvSet> {
    answers.iter().filter_map(|(_, v)| v.as_ref()).fold(None::<DvvSet>, |acc, v| match acc {
        None => Some(v.clone()),
        Some(a) => Some(a.merged(v)),
    })
}

/// The replicas whose answer does not dominate `merged`, missing the key included.
fn stale(answers: &[(String, Option<DvvSet>)], merged: &DvvSet) -> Vec<String> {
    answers.iter().filter(|(_, v)| v.as_ref().is_none_or(|v| !v.dominates(merged))).map(|(id, _)| id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Context, Hlc, Sibling};

    fn write(on: Option<&DvvSet>, actor: &str, wall_ms: u64, value: &str) -> DvvSet {
        let mut d = on.cloned().unwrap_or_default();
        let ctx: Context = d.context();
        let hlc = Hlc { wall_ms, logical: 0, node: actor.into() };
        d.update(&ctx, actor, Sibling { hlc, value: value.into(), tombstone: false, expires_at_ms: None }, false).expect("a test context");
        d
    }

    fn values(d: &DvvSet) -> Vec<String> {
        let mut v: Vec<String> = d.live(0).iter().map(|s| String::from_utf8(s.value.clone()).unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn replicas_missing_or_behind_the_merge_are_stale() {
        let old = write(None, "a", 1, "v1");
        let new = write(Some(&old), "a", 2, "v2");
        let answers = vec![("a".to_string(), Some(new.clone())), ("b".to_string(), Some(old)), ("c".to_string(), None)];
        let m = merge(&answers).unwrap();
        assert_eq!(values(&m), ["v2"]);
        assert_eq!(stale(&answers, &m), ["b", "c"]);
        // Equal versions are not stale.
        let answers = vec![("a".to_string(), Some(new.clone())), ("b".to_string(), Some(new))];
        assert!(stale(&answers, &merge(&answers).unwrap()).is_empty());
    }

    #[test]
    fn concurrent_writes_merge_into_siblings_and_both_sides_are_stale() {
        let x = write(None, "a", 1, "x");
        let y = write(None, "b", 1, "y");
        let answers = vec![("a".to_string(), Some(x)), ("b".to_string(), Some(y))];
        let m = merge(&answers).unwrap();
        assert_eq!(values(&m), ["x", "y"]);
        assert_eq!(stale(&answers, &m), ["a", "b"]);
    }

    #[test]
    fn no_replica_with_the_key_merges_to_none() {
        assert!(merge(&[("a".to_string(), None), ("b".to_string(), None)]).is_none());
    }

    #[test]
    fn this_node_is_asked_first_then_the_fastest_peers() {
        let ms = Duration::from_millis;
        let median = |id: &str| match id {
            "b" => Some(ms(9)),
            "c" => Some(ms(2)),
            _ => None,
        };
        let order = ask_order(["b", "c", "me", "d"].map(String::from).to_vec(), "me", median);
        assert_eq!(order, ["me", "d", "c", "b"]);
    }
}
