//! The write path (DESIGN §2, §5): stamp, fan out, count, hint.
//!
//! A write must be coordinated by a replica, because the new sibling's dot
//! names the coordinator; a non-replica forwards it (`forward.rs`). The
//! coordinator:
//! 1. refuses to stamp while its clock is off its peers' ([`Ctx::check_clock`]);
//! 2. plans, failing with `Unavailable` before anything is stored;
//! 3. applies the write to its own version ([`Ctx::stamp`]);
//! 4. sends the result to the other live replicas and pending replicas
//!    (which merge it), and `StoreHint` to the plan's stand-ins;
//! 5. hints, on this node, the replicas that are down with no stand-in;
//! 6. answers once W have made it durable.
//!
//! The answers are counted by a [`WriteRound`], a plain state machine: it
//! fills in the receipt, hints a replica that fails, recruits a spare
//! stand-in for it under sloppy quorum, and says when the quorum is met or
//! impossible. Replicas still outstanding after the answer finish in the
//! background, and one that fails then gets a hint. A write that misses W
//! after storing it anywhere is `Indeterminate`, never a plain failure.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::ctx::{Ctx, ReplicaFuture};
use super::forward;
use super::plan::{Ask, Plan};
use super::receipt::{self, report_for};
use crate::error::{Error, Result};
use crate::quorum::{Level, Outcome, QuorumTracker};
use crate::record;
use crate::version::Context;

/// A write as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct Write {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty for a delete.
    pub value: Vec<u8>,
    /// What the writer read; `None` makes a blind (LWW) write.
    pub context: Option<Context>,
    /// A delete.
    pub tombstone: bool,
    /// Time to live in ms; 0 never expires. The coordinating replica turns
    /// it into an absolute expiry from its HLC. Refused on a delete.
    pub ttl_ms: u64,
    /// Replicas that must acknowledge.
    pub level: Level,
    /// Deadline for the whole request.
    pub timeout: Duration,
    /// Let healthy nodes beyond the preference list stand in for down replicas.
    pub sloppy: bool,
}

/// Coordinates a write (put or delete). Returns the new context.
pub(super) async fn write(ctx: &Ctx, w: Write, forwarded_from: Option<String>) -> Result<(Context, pb::Receipt)> {
    ctx.check_clock()?;
    let start = Instant::now();
    let plan = ctx.plan(&w.key, Ask { level: w.level, write: true, sloppy: w.sloppy })?;
    let required = plan.required;
    if !plan.prefs.iter().any(|p| p == ctx.me()) {
        if w.level == Level::Any && plan.alive_counted == 0 {
            return hint_only(ctx, w, &plan, start).await;
        }
        if forwarded_from.is_some() {
            return Err(Error::Unavailable {
                level: w.level.as_str().into(),
                required: required as u32,
                alive: 0,
                hint: "; the forwarding node and this one disagree about the ring; retry once gossip settles".into(),
            });
        }
        let alive: Vec<String> = plan.prefs.iter().filter(|p| plan.targets.contains(p)).cloned().collect();
        return forward::forward(ctx, w, &alive, start).await;
    }

    let Write { key, value, context, tombstone, ttl_ms, level, timeout, .. } = w;
    let (dvv, ticket) = ctx.stamp(&key, value, tombstone, ttl_ms, context)?;
    let encoded = record::encode(&dvv);
    let stand_in = |si: String, target: String| ctx.store_hint(si, target, key.clone(), encoded.clone(), timeout);
    let mut pending: FuturesUnordered<ReplicaFuture<()>> = FuturesUnordered::new();
    for id in plan.targets.iter().cloned() {
        pending.push(ctx.replicate(id, key.clone(), encoded.clone(), ticket, timeout));
    }
    for (si, target) in plan.stand_ins.iter().cloned() {
        pending.push(stand_in(si, target));
    }
    let mut round = WriteRound::new(&plan, receipt::new(ctx.me(), level, required, &plan.everyone(), |id| ctx.is_up(id)));

    // Hints for the replicas that are down and have no stand-in.
    let mut hint_tickets = Vec::new();
    for target in plan.unreached() {
        if let Some(t) = ctx.hint(&target, &key, &dvv) {
            hint_tickets.push(t);
            round.hinted(&target);
        }
    }
    // Under ANY a durable hint counts as the one acknowledgement.
    if level == Level::Any && !hint_tickets.is_empty() {
        let last = hint_tickets.iter().copied().max().unwrap_or_default();
        round.count_hint(ctx.durable(last).await.is_ok());
    }

    let hint = |id: &str| ctx.hint(id, &key, &dvv).is_some();
    let deadline = start + timeout;
    let mut timed_out = false;
    while round.outcome() != Outcome::Met {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some((id, result, latency))) => {
                let failed = round.settle(id, result, latency, &hint);
                // Sloppy quorum: a replica failed mid-write, so recruit a stand-in for it.
                if let Some((si, target)) = round.recruit(failed) {
                    pending.push(stand_in(si, target));
                }
                if round.outcome() == Outcome::Impossible {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    // Failed: let the other replicas report, so the receipt and the
    // error count every replica that stored the write.
    if round.outcome() == Outcome::Impossible {
        while let Ok(Some((id, result, latency))) = tokio::time::timeout_at(deadline, pending.next()).await {
            round.settle(id, result, latency, &hint);
        }
    }
    // Every live replica still gets the write after the client has its
    // answer; one that fails then gets a hint. A stand-in that fails held
    // the hint for another replica: this node keeps it for that replica
    // instead (never a hint for the stand-in, which owns nothing of it).
    if !pending.is_empty() {
        let (ctx, key, dvv) = (ctx.clone(), key.clone(), dvv.clone());
        let stand_ins = round.stand_ins().to_vec();
        tokio::spawn(async move {
            while let Some((id, result, _)) = pending.next().await {
                let owner = hint_owner(&stand_ins, &id);
                if result.is_err() && ctx.me() != owner {
                    ctx.hint(owner, &key, &dvv);
                }
            }
        });
    }
    let acks = round.acks();
    match round.finish(start.elapsed(), forwarded_from, timed_out.then_some(timeout)) {
        Ok(receipt) => Ok((dvv.context(), receipt)),
        Err(e) => {
            tracing::warn!(node = %ctx.me(), acks, required, cl = level.as_str(), "write quorum not met");
            Err(e)
        }
    }
}

/// Whom a hint for a failed `id` is for: the replica `id` stood in for, or
/// `id` itself.
fn hint_owner<'a>(stand_ins: &'a [(String, String)], id: &'a str) -> &'a str {
    stand_ins.iter().find(|(si, _)| si == id).map_or(id, |(_, target)| target.as_str())
}

/// ANY with every replica down, on a node that is not a replica: keep
/// the write as hints for all of them. The new sibling's dot gets a
/// one-off id, since this node keeps no history of the key to continue
/// a counter from.
async fn hint_only(ctx: &Ctx, w: Write, plan: &Plan, start: Instant) -> Result<(Context, pb::Receipt)> {
    let dvv = ctx.one_off(w.value, w.tombstone, w.ttl_ms, w.context)?;
    let mut receipt = receipt::new(ctx.me(), w.level, 1, &plan.prefs, |id| ctx.is_up(id));
    let mut last = None;
    for target in &plan.prefs {
        if let Some(t) = ctx.hint(target, &w.key, &dvv) {
            report_for(&mut receipt, target).hinted = true;
            last = last.max(Some(t));
        }
    }
    let Some(last) = last else {
        return Err(Error::Unavailable {
            level: "ANY".into(),
            required: 1,
            alive: 0,
            hint: "; every replica is down and no hint could be stored (hint window passed or budget full)".into(),
        });
    };
    ctx.durable(last).await?;
    receipt.acked = 1;
    receipt.hints_stored = true;
    receipt.latency_us = start.elapsed().as_micros() as u64;
    Ok((dvv.context(), receipt))
}

/// The answers to one write, counted against its plan.
///
/// Pure: the caller sends the messages and hands each answer to
/// [`settle`](Self::settle), with a function that stores a hint.
pub(super) struct WriteRound {
    /// Nodes whose answers count: the plan's `counted`.
    counted: Vec<String>,
    /// (stand-in, replica) pairs, planned and recruited; their answers count.
    stand_ins: Vec<(String, String)>,
    /// Live nodes beyond the preference list not yet recruited.
    spares: VecDeque<String>,
    receipt: pb::Receipt,
    tracker: QuorumTracker,
    /// `"<node>: <error>"` per failure, for the error message.
    errors: Vec<String>,
}

impl WriteRound {
    /// A round for `plan`, filling in `receipt` (which lists every node the
    /// write reaches).
    pub fn new(plan: &Plan, mut receipt: pb::Receipt) -> Self {
        for (si, target) in &plan.stand_ins {
            report_for(&mut receipt, si).stand_in_for = target.clone();
        }
        Self {
            counted: plan.counted.clone(),
            stand_ins: plan.stand_ins.clone(),
            spares: plan.spares.iter().cloned().collect(),
            receipt,
            tracker: QuorumTracker::new(plan.required, plan.alive_counted + plan.stand_ins.len()),
            errors: Vec::new(),
        }
    }

    /// Whether `id`'s answer counts toward W.
    fn counts(&self, id: &str) -> bool {
        self.counted.iter().any(|c| c == id) || self.stand_ins.iter().any(|(si, _)| si == id)
    }

    /// A hint for `target` was stored on this node.
    pub fn hinted(&mut self, target: &str) {
        report_for(&mut self.receipt, target).hinted = true;
    }

    /// The (stand-in, replica it stands in for) pairs so far.
    pub fn stand_ins(&self) -> &[(String, String)] {
        &self.stand_ins
    }

    /// Under ANY, this node's own hint counts as one more answer: durable
    /// (an acknowledgement) or not (a failure).
    pub fn count_hint(&mut self, durable: bool) {
        self.tracker.add_asked();
        if durable {
            self.tracker.ack();
        } else {
            self.tracker.fail();
        }
    }

    /// Records `id`'s answer. A failed replica (not a stand-in) gets a hint
    /// through `hint`, which says whether one was stored. Returns the id of
    /// a counted replica that failed, for [`recruit`](Self::recruit).
    pub fn settle(&mut self, id: String, result: Result<()>, latency: Duration, hint: &dyn Fn(&str) -> bool) -> Option<String> {
        let counted = self.counts(&id);
        let report = report_for(&mut self.receipt, &id);
        report.latency_us = latency.as_micros() as u64;
        match result {
            Ok(()) => {
                report.answered = true;
                if counted {
                    self.tracker.ack();
                }
            }
            Err(e) => {
                report.error = e.to_string();
                self.errors.push(format!("{id}: {e}"));
                let replica = report.stand_in_for.is_empty();
                if replica && hint(&id) {
                    report.hinted = true;
                }
                if counted {
                    self.tracker.fail();
                    if replica {
                        return Some(id);
                    }
                }
            }
        }
        None
    }

    /// Sloppy quorum: the next spare stands in for `failed`, and is
    /// returned with it to be sent a `StoreHint`.
    ///
    /// Called after every settled answer; only a failure takes a spare.
    /// (Before the coordinator was split, the spare was popped before the
    /// failure was looked at, so every successful answer threw one away and
    /// a later failure could find none.)
    pub fn recruit(&mut self, failed: Option<String>) -> Option<(String, String)> {
        let target = failed?;
        let si = self.spares.pop_front()?;
        report_for(&mut self.receipt, &si).stand_in_for = target.clone();
        self.stand_ins.push((si.clone(), target.clone()));
        self.tracker.add_asked();
        Some((si, target))
    }

    /// Where the round stands.
    pub fn outcome(&self) -> Outcome {
        self.tracker.outcome()
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> usize {
        self.tracker.acks()
    }

    /// The finished receipt, or `Indeterminate` when W was not met (after
    /// the deadline, when `timed_out` carries it).
    pub fn finish(mut self, latency: Duration, forwarded_from: Option<String>, timed_out: Option<Duration>) -> Result<pb::Receipt> {
        let r = &mut self.receipt;
        r.acked = self.tracker.acks() as u32;
        r.hints_stored = r.replicas.iter().any(|r| r.hinted || !r.stand_in_for.is_empty());
        r.latency_us = latency.as_micros() as u64;
        r.forwarded_from = forwarded_from.unwrap_or_default();
        if self.tracker.outcome() != Outcome::Met {
            let reason = match timed_out {
                Some(timeout) => format!("the {} ms deadline", timeout.as_millis()),
                None => format!("replicas failed ({})", self.errors.join("; ")),
            };
            return Err(Error::Indeterminate { acked: self.tracker.acks() as u32, required: r.required, reason });
        }
        Ok(self.receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A 3-replica QUORUM write to a, b, c, with `stand_ins` planned and
    /// `spares` in reserve; c is down when planned unless it has a stand-in.
    fn round(stand_ins: &[(&str, &str)], spares: &[&str]) -> WriteRound {
        let plan = Plan {
            prefs: strs(&["a", "b", "c"]),
            targets: strs(&["a", "b"]),
            counted: strs(&["a", "b", "c"]),
            required: 2,
            alive_counted: 2,
            stand_ins: stand_ins.iter().map(|(s, t)| (s.to_string(), t.to_string())).collect(),
            spares: strs(spares),
            ..Default::default()
        };
        let receipt = receipt::new("a", Level::Quorum, 2, &plan.everyone(), |id| id != "c");
        WriteRound::new(&plan, receipt)
    }

    fn refused(peer: &str) -> Error {
        Error::Peer { peer: peer.into(), reason: "connection refused".into() }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn two_acks_meet_quorum_and_the_receipt_says_who_answered() {
        let mut r = round(&[], &[]);
        let no_hint = |_: &str| -> bool { panic!("nothing failed") };
        assert_eq!(r.settle("a".into(), Ok(()), MS, &no_hint), None);
        assert_eq!(r.outcome(), Outcome::Pending);
        r.settle("b".into(), Ok(()), 2 * MS, &no_hint);
        assert_eq!(r.outcome(), Outcome::Met);
        let receipt = r.finish(3 * MS, Some("z".into()), None).unwrap();
        assert_eq!((receipt.acked, receipt.latency_us, receipt.forwarded_from.as_str()), (2, 3000, "z"));
        assert!(!receipt.hints_stored);
        let answered: Vec<(&str, bool, u64)> = receipt.replicas.iter().map(|p| (p.node.as_str(), p.answered, p.latency_us)).collect();
        assert_eq!(answered, [("a", true, 1000), ("b", true, 2000), ("c", false, 0)]);
    }

    #[test]
    fn a_failed_replica_is_hinted_and_returned_for_recruiting() {
        let mut r = round(&[], &[]);
        let hinted = std::cell::RefCell::new(Vec::new());
        let hint = |id: &str| {
            hinted.borrow_mut().push(id.to_string());
            true
        };
        r.settle("a".into(), Ok(()), MS, &hint);
        assert_eq!(r.settle("b".into(), Err(refused("b")), MS, &hint), Some("b".into()));
        // a and b were the only live ones: 1 ack, 1 failure of 2 asked.
        assert_eq!(r.outcome(), Outcome::Impossible);
        assert_eq!(*hinted.borrow(), ["b"]);
        let e = r.finish(MS, None, None).unwrap_err();
        let Error::Indeterminate { acked, required, reason } = &e else { panic!("{e}") };
        assert_eq!((*acked, *required), (1, 2));
        assert!(reason.contains("replicas failed (b: peer b: connection refused)"), "{reason}");
    }

    #[test]
    fn a_missed_deadline_is_indeterminate_and_says_so() {
        let r = round(&[], &[]);
        let e = r.finish(MS, None, Some(Duration::from_millis(250))).unwrap_err();
        assert!(e.to_string().contains("the 250 ms deadline"), "{e}");
    }

    #[test]
    fn a_stand_in_counts_and_is_never_hinted_when_it_fails() {
        // d stands in for c, which is down.
        let mut r = round(&[("d", "c")], &[]);
        let hint = |id: &str| -> bool { panic!("hinted {id}") };
        assert_eq!(r.settle("d".into(), Err(refused("d")), MS, &hint), None, "a stand-in is not recruited for");
        r.settle("a".into(), Ok(()), MS, &hint);
        r.settle("b".into(), Ok(()), MS, &hint);
        assert_eq!(r.outcome(), Outcome::Met);
        let receipt = r.finish(MS, None, None).unwrap();
        let d = receipt.replicas.iter().find(|p| p.node == "d").unwrap();
        assert_eq!((d.stand_in_for.as_str(), d.hinted, d.answered), ("c", false, false));
        // A stand-in, even a failed one, means hints were involved.
        assert!(receipt.hints_stored);
    }

    #[test]
    fn a_spare_stands_in_for_a_replica_that_fails_mid_write() {
        let mut r = round(&[], &["d", "e"]);
        let hint = |_: &str| false;
        let failed = r.settle("b".into(), Err(refused("b")), MS, &hint);
        assert_eq!(r.outcome(), Outcome::Impossible);
        assert_eq!(r.recruit(failed), Some(("d".into(), "b".into())));
        assert_eq!(r.outcome(), Outcome::Pending, "the recruit is asked");
        r.settle("a".into(), Ok(()), MS, &hint);
        r.settle("d".into(), Ok(()), MS, &hint);
        assert_eq!(r.outcome(), Outcome::Met, "the recruit's answer counts");
        let receipt = r.finish(MS, None, None).unwrap();
        let d = receipt.replicas.iter().find(|p| p.node == "d").unwrap();
        assert_eq!((d.stand_in_for.as_str(), d.answered), ("b", true));
        let b = receipt.replicas.iter().find(|p| p.node == "b").unwrap();
        assert!(!b.hinted, "the hint function stored nothing");
    }

    #[test]
    fn nothing_is_recruited_without_a_failure_or_without_spares() {
        let mut r = round(&[], &[]);
        assert_eq!(r.recruit(Some("b".into())), None);
        let mut r = round(&[], &["d"]);
        assert_eq!(r.recruit(None), None);
    }

    /// A successful answer used to throw a spare away (see `recruit`), so
    /// with one spare, a success and then a failure left the write without
    /// a stand-in: W = 2 of a, b, c with b and c failing could not be met.
    #[test]
    fn a_successful_answer_keeps_the_spares_for_a_failure() {
        let mut r = round(&[], &["d"]);
        let hint = |_: &str| false;
        let ok = r.settle("a".into(), Ok(()), MS, &hint);
        assert_eq!(r.recruit(ok), None);
        let failed = r.settle("b".into(), Err(refused("b")), MS, &hint);
        assert_eq!(r.recruit(failed), Some(("d".into(), "b".into())), "d is still there for b");
        r.settle("d".into(), Ok(()), MS, &hint);
        assert_eq!(r.outcome(), Outcome::Met);
    }

    #[test]
    fn a_failed_stand_in_hands_its_hint_back_to_the_replica_it_stood_in_for() {
        let stand_ins = vec![("d".to_string(), "c".to_string())];
        assert_eq!(hint_owner(&stand_ins, "d"), "c", "the hint is for c, not for d");
        assert_eq!(hint_owner(&stand_ins, "b"), "b");
    }

    #[test]
    fn any_counts_a_durable_hint_as_the_acknowledgement() {
        let plan = Plan { prefs: strs(&["a", "b", "c"]), counted: strs(&["a", "b", "c"]), required: 1, ..Default::default() };
        let mut r = WriteRound::new(&plan, receipt::new("z", Level::Any, 1, &plan.prefs, |_| false));
        for t in &plan.prefs {
            r.hinted(t);
        }
        r.count_hint(true);
        assert_eq!(r.outcome(), Outcome::Met);
        let receipt = r.finish(MS, None, None).unwrap();
        assert_eq!(receipt.acked, 1);
        assert!(receipt.hints_stored && receipt.replicas.iter().all(|p| p.hinted));
        let mut r = WriteRound::new(&plan, receipt::new("z", Level::Any, 1, &plan.prefs, |_| false));
        r.count_hint(false);
        assert_eq!(r.outcome(), Outcome::Impossible);
    }
}
