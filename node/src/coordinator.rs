//! The coordinator: turns one client request into messages to the key's
//! replicas, waits for as many answers as the consistency level needs, and
//! writes the receipt of what that cost.
//!
//! Writes (DESIGN §2). A write must be coordinated by a replica, because
//! the new sibling's dot names the coordinator. A non-replica forwards it.
//! The coordinator:
//! 1. checks that enough replicas are alive, failing with `Unavailable`
//!    before anything is stored;
//! 2. applies the write to its own version (`DvvSet::update`);
//! 3. sends the result to the other live replicas, which merge it;
//! 4. answers once W have made it durable.
//!
//! Replicas still outstanding finish in the background. A write that misses
//! W after storing it anywhere is `Indeterminate`, never a plain failure.
//!
//! Reads ask every live replica and return once R have answered. They merge
//! the answers, mark the stale ones, and repair them: before answering
//! (`blocking`), after (`async`), or not at all (`off`). Replicas that
//! answer late are compared and repaired in the background too.
//!
//! Replica calls go through `PeerClient` (`peer_client.rs`), or straight to
//! the local store when the replica is this node.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use ringkv_proto::delivery::Failover;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::ReadRepair;
use tokio::time::Instant;

use crate::admit;
use crate::error::{Error, Result};
use crate::hints::{Limits, Stored};
use crate::paging::{Page, PAGE_BYTES};
use crate::quorum::{Level, Outcome, QuorumTracker};
use crate::record;
use crate::shared::Shared;
use crate::store::Ticket;
use crate::version::{check_context, Context, DvvSet, Sibling};

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
    /// Replicas that must acknowledge.
    pub level: Level,
    /// Deadline for the whole request.
    pub timeout: Duration,
    /// Let healthy nodes beyond the preference list stand in for down replicas.
    pub sloppy: bool,
}

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

/// One page of a scan: live keys with their merged versions.
pub struct ScanResult {
    /// Keys in order, with merged versions; each has a live sibling.
    pub entries: Vec<(Vec<u8>, DvvSet)>,
    /// More keys may follow; resume after `next_start_after`.
    pub more: bool,
    /// When `more`: the last key this page accounts for, deleted ones
    /// included. It is past every entry and past the request's
    /// `start_after`, so paging always advances.
    pub next_start_after: Vec<u8>,
    /// Which nodes answered.
    pub receipt: pb::Receipt,
}

/// Encodes a causal context for the client (framed, so garbage is caught).
pub fn encode_context(ctx: &Context) -> Vec<u8> {
    record::encode(ctx)
}

/// Decodes a client-supplied context.
pub fn decode_context(bytes: &[u8]) -> Result<Context> {
    record::decode::<Context>(b"<context>", bytes)
        .map_err(|e| Error::InvalidArgument(format!("malformed context ({e}); pass the context returned by a get, unchanged")))
}

/// Coordinates requests for one node.
#[derive(Clone)]
pub struct Coordinator {
    s: Arc<Shared>,
}

type ReplicaFuture<T> = BoxFuture<'static, (String, Result<T>, Duration)>;

/// Who a request goes to.
struct Plan {
    /// The key's current replicas, in preference order.
    prefs: Vec<String>,
    /// Future replicas that also receive writes.
    pending: Vec<String>,
    /// Live nodes to send to.
    targets: Vec<String>,
    /// Nodes whose answers count toward `required`.
    counted: Vec<String>,
    /// Answers needed.
    required: usize,
    /// Live nodes among `counted`.
    alive_counted: usize,
    /// Sloppy quorum: (stand-in, the replica it stands in for).
    stand_ins: Vec<(String, String)>,
    /// Sloppy quorum: more live nodes to recruit if a replica fails mid-write.
    spares: Vec<String>,
}

impl Coordinator {
    /// A coordinator over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        Self { s }
    }

    fn me(&self) -> &str {
        &self.s.config.id
    }

    /// Checks a key against the configured limits.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        admit::check_key(key, self.s.config.max_key_bytes)
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        admit::check_value(value, self.s.config.max_value_bytes)
    }

    /// Who to ask and whose answers count, or `Unavailable` when fewer
    /// than the level needs are alive.
    ///
    /// Writes also go to *pending* replicas: nodes that will own the key
    /// once a join or leave completes. As in Cassandra, each pending
    /// replica adds one to the acknowledgements required, so a quorum of
    /// the future owners holds every acknowledged write.
    ///
    /// With `sloppy`, each down replica whose answer counts may be replaced
    /// by a live node beyond the preference list. The stand-in holds the
    /// write as a hint for that replica and counts toward W.
    fn plan(&self, key: &[u8], level: Level, write: bool, sloppy: bool) -> Result<Plan> {
        let n = self.s.config.replication_factor;
        let ring = self.s.membership.ring();
        let prefs = ring.preference_list(key, n);
        let pending: Vec<String> = if write {
            self.s.membership.future_ring().preference_list(key, n).into_iter().filter(|p| !prefs.contains(p)).collect()
        } else {
            Vec::new()
        };
        let (counted, required) = if level == Level::LocalQuorum {
            let future = self.s.membership.future_ring();
            let zone = &self.s.config.zone;
            let local: Vec<String> = prefs.iter().filter(|p| ring.zone(p) == zone).cloned().collect();
            if local.is_empty() {
                return Err(Error::Unavailable {
                    level: level.as_str().into(),
                    required: 1,
                    alive: 0,
                    hint: format!("; no replica of this key is in zone {zone:?}"),
                });
            }
            let local_pending: Vec<String> = pending.iter().filter(|p| future.zone(p) == zone).cloned().collect();
            let required = local.len() / 2 + 1 + local_pending.len();
            (local.into_iter().chain(local_pending).collect::<Vec<_>>(), required)
        } else if level == Level::Any {
            (prefs.iter().chain(&pending).cloned().collect(), 1)
        } else {
            (prefs.iter().chain(&pending).cloned().collect(), level.required(n) + pending.len())
        };
        let up = |id: &String| self.s.membership.is_up(id);
        let alive_counted = counted.iter().filter(|id| up(id)).count();
        let mut stand_ins = Vec::new();
        let mut spares = Vec::new();
        if sloppy && write {
            let down: Vec<&String> = counted.iter().filter(|id| !up(id)).collect();
            spares = ring
                .preference_list(key, ring.nodes().len())
                .into_iter()
                .filter(|c| !prefs.contains(c) && !pending.contains(c) && up(c))
                .collect();
            let needed = required.saturating_sub(alive_counted).min(down.len()).min(spares.len());
            stand_ins = spares.drain(..needed).zip(down).map(|(si, target)| (si, target.clone())).collect();
        }
        let any_can_hint = level == Level::Any && self.s.config.hinted_handoff;
        if alive_counted + stand_ins.len() < required && !any_can_hint {
            let hint = if prefs.len() < n {
                format!("; the ring has {} node(s) but replication_factor is {n}", prefs.len())
            } else {
                let down: Vec<&str> = counted.iter().filter(|p| !up(p)).map(String::as_str).collect();
                let mut h = format!("; down: {}", down.join(", "));
                if sloppy {
                    h.push_str(&format!(
                        "; sloppy quorum found {} healthy node(s) outside the preference list to stand in (the ring has {} nodes for replication factor {n})",
                        stand_ins.len(),
                        ring.nodes().len()
                    ));
                }
                h
            };
            return Err(Error::Unavailable { level: level.as_str().into(), required: required as u32, alive: alive_counted as u32, hint });
        }
        let targets = prefs.iter().chain(&pending).filter(|id| up(id)).cloned().collect();
        Ok(Plan { prefs, pending, targets, counted, required, alive_counted, stand_ins, spares })
    }

    /// Stores a hint for `target` on this node, if hinted handoff allows.
    fn hint(s: &Shared, target: &str, key: &[u8], version: &DvvSet) -> Option<Ticket> {
        if !s.config.hinted_handoff {
            return None;
        }
        let silent = s.membership.silent_ms(target);
        let limits = Limits { silent_ms: silent, window_ms: s.config.max_hint_window * 1000, budget: s.config.max_hint_bytes_per_target };
        let offered = s.hints.offer(target, key, version, s.clock.wall_ms(), limits);
        match offered {
            Ok(Stored::Yes(t)) => Some(t),
            Ok(other) => {
                tracing::debug!(peer = %target, outcome = ?other, "write not hinted");
                None
            }
            Err(e) => {
                tracing::warn!(peer = %target, error = %e, "could not store a hint");
                None
            }
        }
    }

    fn receipt(&self, level: Level, required: usize, prefs: &[String]) -> pb::Receipt {
        pb::Receipt {
            coordinator: self.me().to_string(),
            consistency: level.to_proto() as i32,
            required: required as u32,
            replicas: prefs
                .iter()
                .map(|id| pb::ReplicaReport {
                    node: id.clone(),
                    error: if self.s.membership.is_up(id) { String::new() } else { "down: not asked".into() },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Coordinates a write (put or delete). Returns the new context.
    pub async fn write(&self, w: Write, forwarded_from: Option<String>) -> Result<(Context, pb::Receipt)> {
        self.check_key(&w.key)?;
        self.check_value(&w.value)?;
        // A client's context is distrusted: bounded here, and capped to
        // what the key has issued by `DvvSet::update`.
        w.context.as_ref().map(check_context).transpose()?;
        // A node whose clock disagrees with most of its peers stamps no
        // writes: its timestamps would shadow (or lose to) everyone else's.
        let max_skew = self.s.config.max_clock_skew_ms;
        if let Some((at, step_ms)) = self.s.clock_watch.check(self.s.clock.wall_ms()) {
            if !self.s.membership.offsets_sampled_since(at) {
                tracing::error!(node = %self.me(), step_ms, "wall clock stepped: refusing to coordinate writes until gossip samples the peers");
                return Err(Error::ClockStepped { step_ms, max_ms: max_skew });
            }
        }
        if let Some(offset) = self.s.membership.self_skew(max_skew) {
            tracing::error!(node = %self.me(), offset_ms = offset, "clock skew: refusing to coordinate writes");
            return Err(Error::OwnClockSkew { offset_ms: offset.unsigned_abs(), max_ms: max_skew });
        }
        let start = Instant::now();
        let plan = self.plan(&w.key, w.level, true, w.sloppy)?;
        let required = plan.required;
        if !plan.prefs.iter().any(|p| p == self.me()) {
            if w.level == Level::Any && plan.alive_counted == 0 {
                return self.hint_only(w, &plan, start).await;
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
            return self.forward(w, &alive, start).await;
        }

        let me = self.me().to_string();
        let blind = w.context.is_none();
        let ctx = w.context.unwrap_or_default();
        let (hlc, clock, actor) = (&self.s.hlc, &self.s.clock, &self.s.actor);
        let (dvv, ticket, ()) = self.s.store.update(&w.key, |d| {
            if let Some(seen) = d.max_hlc() {
                hlc.observe(seen);
            }
            let sibling = Sibling { hlc: hlc.now(clock.wall_ms()), value: w.value, tombstone: w.tombstone };
            d.update(&ctx, actor, sibling, blind)
        })?;
        let encoded = record::encode(&dvv);

        // (node, whose answer it stands for, counts toward W)
        let mut pending: FuturesUnordered<ReplicaFuture<()>> = FuturesUnordered::new();
        for id in plan.targets.iter().cloned() {
            let s = self.s.clone();
            let (key, version, me) = (w.key.clone(), encoded.clone(), me.clone());
            pending.push(
                async move {
                    let t0 = Instant::now();
                    let r =
                        if id == me { s.store.durable(ticket).await } else { s.peers.replicate(&id, &key, version, &me, w.timeout).await };
                    (id, r, t0.elapsed())
                }
                .boxed(),
            );
        }
        let stand_in = |stand_in: String, target: String| -> ReplicaFuture<()> {
            let s = self.s.clone();
            let (key, version, me) = (w.key.clone(), encoded.clone(), me.clone());
            async move {
                let t0 = Instant::now();
                let req = pb::StoreHintRequest { target, key, version, from: me };
                let r = s.peers.store_hint(&stand_in, req, w.timeout).await;
                (stand_in, r, t0.elapsed())
            }
            .boxed()
        };
        for (si, target) in plan.stand_ins.iter().cloned() {
            pending.push(stand_in(si, target));
        }
        let mut spares: std::collections::VecDeque<String> = plan.spares.iter().cloned().collect();
        let mut recruited: Vec<(String, String)> = Vec::new();

        let everyone: Vec<String> =
            plan.prefs.iter().chain(&plan.pending).chain(plan.stand_ins.iter().map(|(si, _)| si)).cloned().collect();
        let mut receipt = self.receipt(w.level, required, &everyone);
        for (si, target) in &plan.stand_ins {
            report_for(&mut receipt, si).stand_in_for = target.clone();
        }
        let counts = |id: &str, recruited: &[(String, String)]| {
            plan.counted.iter().any(|c| c == id) || plan.stand_ins.iter().chain(recruited).any(|(si, _)| si == id)
        };
        let asked_counted = plan.alive_counted + plan.stand_ins.len();

        // Hints for the replicas that are down and have no stand-in.
        let mut hint_tickets = Vec::new();
        for target in plan.prefs.iter().chain(&plan.pending) {
            let covered = plan.stand_ins.iter().any(|(_, t)| t == target);
            if !plan.targets.contains(target) && !covered {
                if let Some(t) = Self::hint(&self.s, target, &w.key, &dvv) {
                    hint_tickets.push(t);
                    report_for(&mut receipt, target).hinted = true;
                }
            }
        }
        // Under ANY a durable hint counts as the one acknowledgement.
        let mut tracker = QuorumTracker::new(required, asked_counted + usize::from(w.level == Level::Any && !hint_tickets.is_empty()));
        if w.level == Level::Any && !hint_tickets.is_empty() {
            let last = hint_tickets.iter().copied().max().unwrap_or_default();
            if self.s.store.durable(last).await.is_ok() {
                tracker.ack();
            } else {
                tracker.fail();
            }
        }

        let mut errors = Vec::new();
        let deadline = start + w.timeout;
        let mut timed_out = false;
        // Returns the id of a counted replica (not a stand-in) that failed.
        let settle = |receipt: &mut pb::Receipt,
                      tracker: &mut QuorumTracker,
                      errors: &mut Vec<String>,
                      recruited: &[(String, String)],
                      id: String,
                      result: Result<()>,
                      latency: Duration|
         -> Option<String> {
            let counted = counts(&id, recruited);
            let report = report_for(receipt, &id);
            report.latency_us = latency.as_micros() as u64;
            match result {
                Ok(()) => {
                    report.answered = true;
                    if counted {
                        tracker.ack();
                    }
                }
                Err(e) => {
                    report.error = e.to_string();
                    errors.push(format!("{id}: {e}"));
                    let replica = report.stand_in_for.is_empty();
                    if replica && Self::hint(&self.s, &id, &w.key, &dvv).is_some() {
                        report.hinted = true;
                    }
                    if counted {
                        tracker.fail();
                        if replica {
                            return Some(id);
                        }
                    }
                }
            }
            None
        };
        while tracker.outcome() != Outcome::Met {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((id, result, latency))) => {
                    let failed = settle(&mut receipt, &mut tracker, &mut errors, &recruited, id, result, latency);
                    // Sloppy quorum: a replica failed mid-write, so recruit a stand-in for it.
                    if let (Some(target), Some(si)) = (failed, spares.pop_front()) {
                        report_for(&mut receipt, &si).stand_in_for = target.clone();
                        recruited.push((si.clone(), target.clone()));
                        tracker.add_asked();
                        pending.push(stand_in(si, target));
                    }
                    if tracker.outcome() == Outcome::Impossible {
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
        if tracker.outcome() == Outcome::Impossible {
            while let Ok(Some((id, result, latency))) = tokio::time::timeout_at(deadline, pending.next()).await {
                settle(&mut receipt, &mut tracker, &mut errors, &recruited, id, result, latency);
            }
        }
        // Every live replica still gets the write after the client has its
        // answer; one that fails then gets a hint.
        if !pending.is_empty() {
            let (s, key, dvv) = (self.s.clone(), w.key.clone(), dvv.clone());
            tokio::spawn(async move {
                while let Some((id, result, _)) = pending.next().await {
                    if result.is_err() && s.config.id != id {
                        Self::hint(&s, &id, &key, &dvv);
                    }
                }
            });
        }
        receipt.acked = tracker.acks() as u32;
        receipt.hints_stored = receipt.replicas.iter().any(|r| r.hinted || !r.stand_in_for.is_empty());
        receipt.latency_us = start.elapsed().as_micros() as u64;
        receipt.forwarded_from = forwarded_from.unwrap_or_default();
        if tracker.outcome() != Outcome::Met {
            let reason = if timed_out {
                format!("the {} ms deadline", w.timeout.as_millis())
            } else {
                format!("replicas failed ({})", errors.join("; "))
            };
            tracing::warn!(node = %me, acks = tracker.acks(), required, cl = w.level.as_str(), "write quorum not met");
            return Err(Error::Indeterminate { acked: tracker.acks() as u32, required: required as u32, reason });
        }
        Ok((dvv.context(), receipt))
    }

    /// ANY with every replica down, on a node that is not a replica: keep
    /// the write as hints for all of them. The new sibling's dot gets a
    /// one-off id, since this node keeps no history of the key to continue
    /// a counter from.
    async fn hint_only(&self, w: Write, plan: &Plan, start: Instant) -> Result<(Context, pb::Receipt)> {
        let now = self.s.hlc.now(self.s.clock.wall_ms());
        let dot_id = format!("{}~{}.{}", self.me(), now.wall_ms, now.logical);
        let mut dvv = DvvSet::default();
        let blind = w.context.is_none();
        dvv.update(&w.context.unwrap_or_default(), &dot_id, Sibling { hlc: now, value: w.value, tombstone: w.tombstone }, blind)?;
        let mut receipt = self.receipt(w.level, 1, &plan.prefs);
        let mut last = None;
        for target in &plan.prefs {
            if let Some(t) = Self::hint(&self.s, target, &w.key, &dvv) {
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
        self.s.store.durable(last).await?;
        receipt.acked = 1;
        receipt.hints_stored = true;
        receipt.latency_us = start.elapsed().as_micros() as u64;
        Ok((dvv.context(), receipt))
    }

    /// Hands a write to the first live replica that takes it.
    async fn forward(&self, w: Write, alive: &[String], start: Instant) -> Result<(Context, pb::Receipt)> {
        let req = pb::ForwardWriteRequest {
            key: w.key.clone(),
            value: w.value.clone(),
            context: w.context.as_ref().map(encode_context),
            tombstone: w.tombstone,
            options: Some(pb::RequestOptions {
                consistency: w.level.to_proto() as i32,
                timeout_ms: w.timeout.as_millis() as u32,
                sloppy: w.sloppy,
                ..Default::default()
            }),
            from: self.me().to_string(),
        };
        let mut last = None;
        // Set once an attempt failed in a way that does not prove the write
        // never arrived: from then on no failure may be reported as definite.
        let mut failover = Failover::default();
        let required = w.level.required(self.s.config.replication_factor) as u32;
        for target in alive {
            let remaining = w.timeout.saturating_sub(start.elapsed());
            match self.s.peers.forward_write(target, req.clone(), remaining).await {
                Ok(resp) => {
                    let mut receipt = resp.receipt.unwrap_or_default();
                    receipt.forwarded_from = self.me().to_string();
                    receipt.latency_us = start.elapsed().as_micros() as u64;
                    return Ok((decode_context(&resp.context)?, receipt));
                }
                // The replica answered: its verdict (unavailable, indeterminate…)
                // stands, unless an earlier attempt may have landed.
                Err(e @ Error::Forwarded(_)) => {
                    return Err(match failover.maybe_landed() {
                        Some(earlier) => Error::Indeterminate { acked: 0, required, reason: format!("{earlier}, then {e}") },
                        None => e,
                    })
                }
                // It may have applied the write; trying another could apply it twice.
                Err(Error::PeerTimeout { peer, ms }) => {
                    return Err(Error::Indeterminate {
                        acked: 0,
                        required,
                        reason: format!("the write was forwarded to {peer}, which did not answer within {ms} ms"),
                    })
                }
                // Try the next replica; remember if this one may have applied it.
                Err(e) => {
                    failover.failed(e.delivery(), || format!("forwarding to {target} failed ({e})"));
                    last = Some(e);
                }
            }
        }
        if let Some(earlier) = failover.maybe_landed() {
            return Err(Error::Indeterminate { acked: 0, required, reason: earlier.to_string() });
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            level: w.level.as_str().into(),
            required: 1,
            alive: 0,
            hint: "; no replica of this key could be reached to coordinate the write".into(),
        }))
    }

    fn read_from(&self, id: String, key: Vec<u8>, timeout: Duration) -> ReplicaFuture<Option<DvvSet>> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let r = if id == s.config.id {
                s.store.read(&key)
            } else {
                // A peer's answer is admitted like any version it sends; one
                // that fails counts as that replica failing.
                s.peers.read(&id, &key, timeout).await.and_then(|v| v.map(|v| s.admit.check(&key, &v).map(|()| v)).transpose())
            };
            (id, r, t0.elapsed())
        }
        .boxed()
    }

    /// Pushes `version` of `key` to replica `id` and waits until it is durable there.
    async fn repair(s: Arc<Shared>, id: String, key: Vec<u8>, version: DvvSet, timeout: Duration) -> Result<()> {
        if id == s.config.id {
            let ticket = s.store.merge(&key, &version)?.ticket;
            s.store.durable(ticket).await
        } else {
            let me = s.config.id.clone();
            s.peers.replicate(&id, &key, record::encode(&version), &me, timeout).await
        }
    }

    /// Coordinates a read.
    pub async fn read(&self, r: Read) -> Result<ReadResult> {
        self.check_key(&r.key)?;
        let start = Instant::now();
        if r.level == Level::Any {
            return Err(Error::InvalidArgument("ANY is a write level; read at ONE or higher".into()));
        }
        let plan = self.plan(&r.key, r.level, false, false)?;
        let required = plan.required;
        // Ask only as many replicas as the level needs: this node first, then
        // by recent median latency. Ask one more when an asked replica fails,
        // or has not answered within its recent p99 (speculative retry).
        let mut order: Vec<String> = plan.targets.iter().filter(|t| plan.counted.contains(t)).cloned().collect();
        order.sort_by_key(
            |id| if id == self.me() { 0 } else { 1 + self.s.peers.read_latency(id).map_or(0, |(p50, _)| p50.as_micros() as u64) },
        );
        let mut unasked: std::collections::VecDeque<String> = order.into();
        let mut pending = FuturesUnordered::new();
        let mut receipt = self.receipt(r.level, required, &plan.prefs);
        let mut outstanding: Vec<String> = Vec::new();
        for _ in 0..required {
            if let Some(id) = unasked.pop_front() {
                outstanding.push(id.clone());
                pending.push(self.read_from(id, r.key.clone(), r.timeout));
            }
        }
        let patience = |outstanding: &[String]| -> Duration {
            outstanding
                .iter()
                .filter(|id| *id != self.me())
                .map(|id| self.s.peers.read_latency(id).map_or(Duration::from_millis(self.s.config.speculative_retry_ms), |(_, p99)| p99))
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
                                pending.push(self.read_from(next, r.key.clone(), r.timeout));
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(speculate_at), if !unasked.is_empty() && !outstanding.is_empty() => {
                    let next = unasked.pop_front().expect("checked non-empty");
                    report_for(&mut receipt, &next).speculative = true;
                    outstanding.push(next.clone());
                    pending.push(self.read_from(next, r.key.clone(), r.timeout));
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

        let merged = answers.iter().filter_map(|(_, v)| v.as_ref()).fold(None::<DvvSet>, |acc, v| match acc {
            None => Some(v.clone()),
            Some(a) => Some(a.merged(v)),
        });
        let stale: Vec<String> = match &merged {
            None => Vec::new(),
            Some(m) => answers.iter().filter(|(_, v)| v.as_ref().is_none_or(|v| !v.dominates(m))).map(|(id, _)| id.clone()).collect(),
        };
        for id in &stale {
            report_for(&mut receipt, id).stale = true;
        }
        if let Some(m) = &merged {
            let repairs = stale.iter().map(|id| {
                let s = self.s.clone();
                let (id, key, m) = (id.clone(), r.key.clone(), m.clone());
                let remaining = r.timeout.saturating_sub(start.elapsed());
                async move { (id.clone(), Self::repair(s, id, key, m, remaining).await) }
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
                            Err(e) => tracing::warn!(node = %self.me(), peer = %id, error = %e, "read repair failed"),
                        }
                    }
                }
            }
        }
        // Late answers: compare and repair them in the background.
        if !pending.is_empty() && r.read_repair != ReadRepair::Off {
            if let Some(m) = merged.clone() {
                let (s, key, timeout) = (self.s.clone(), r.key.clone(), r.timeout);
                tokio::spawn(async move {
                    while let Some((id, result, _)) = pending.next().await {
                        if let Ok(v) = result {
                            if v.as_ref().is_none_or(|v| !v.dominates(&m)) {
                                let _ = Self::repair(s.clone(), id, key.clone(), m.clone(), timeout).await;
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

    /// One page of live keys under `prefix`, merged across replicas. Every
    /// token range must have `level` of its replicas answering.
    ///
    /// Each node lists a page of its own keys, deleted ones included (a
    /// tombstone on one replica may hide a live sibling on another). Below
    /// the *horizon*, the least last key of the node pages that were cut
    /// short, every answering node has listed every key it holds, so merged
    /// versions there are complete. Tombstoned keys are dropped before the
    /// page is cut to `limit` keys and [`PAGE_BYTES`] bytes, and the page
    /// names the key to resume after, which may lie past its last entry: a
    /// run of deleted keys yields a short or empty page that still moves on.
    pub async fn scan(&self, prefix: Vec<u8>, start_after: Vec<u8>, limit: usize, level: Level, timeout: Duration) -> Result<ScanResult> {
        let start = Instant::now();
        let ring = self.s.membership.ring();
        let nodes = ring.nodes();
        let n = self.s.config.replication_factor;
        let required = level.required(n);
        let req = pb::ScanLocalRequest { prefix: prefix.clone(), start_after: start_after.clone(), limit: limit as u32 };
        let asks = nodes.iter().filter(|id| self.s.membership.is_up(id)).map(|id| {
            let (s, id, req) = (self.s.clone(), id.clone(), req.clone());
            async move {
                let t0 = Instant::now();
                let r = if id == s.config.id {
                    s.store.scan_prefix(&req.prefix, &req.start_after, Page::new(req.limit as usize, PAGE_BYTES)).map(|(rows, more)| {
                        pb::KeyVersions { entries: rows.into_iter().map(|(key, version)| pb::KeyVersion { key, version }).collect(), more }
                    })
                } else {
                    s.peers.scan_local(&id, req, timeout).await
                };
                (id, r, t0.elapsed())
            }
        });
        let results = tokio::time::timeout(timeout, futures::future::join_all(asks)).await.map_err(|_| Error::Timeout {
            what: "scan".into(),
            answered: 0,
            required: required as u32,
            timeout_ms: timeout.as_millis() as u64,
        })?;

        let mut receipt = self.receipt(level, required, &nodes);
        let mut answered = Vec::new();
        let mut merged: std::collections::BTreeMap<Vec<u8>, DvvSet> = Default::default();
        let mut horizon: Option<Vec<u8>> = None;
        for (id, result, latency) in results {
            let report = report_for(&mut receipt, &id);
            report.latency_us = latency.as_micros() as u64;
            // A peer's answer is admitted whole, or counts as not answering.
            let result = result.and_then(|kv| {
                let entries: Vec<(Vec<u8>, DvvSet)> = if id == self.me() {
                    kv.entries.into_iter().map(|e| record::decode(&e.key, &e.version).map(|v| (e.key, v))).collect::<Result<_>>()?
                } else {
                    self.s.admit.answer(kv.entries, &id)?
                };
                Ok((kv.more, entries))
            });
            match result {
                Ok((more, entries)) => {
                    report.answered = true;
                    answered.push(id);
                    if let Some((last, _)) = entries.last().filter(|_| more) {
                        if horizon.as_ref().is_none_or(|h| last < h) {
                            horizon = Some(last.clone());
                        }
                    }
                    for (key, v) in entries {
                        merged.entry(key).and_modify(|m: &mut DvvSet| m.merge(&v)).or_insert(v);
                    }
                }
                Err(e) => report.error = e.to_string(),
            }
        }
        for (_, end, _) in ring.ranges() {
            let replicas = ring.replicas_of(end, n);
            let got = replicas.iter().filter(|r| answered.contains(r)).count();
            if got < required.min(replicas.len().max(1)) || replicas.len() < required {
                return Err(Error::Unavailable {
                    level: level.as_str().into(),
                    required: required as u32,
                    alive: got as u32,
                    hint: format!("; a token range replicated on {} has too few answering replicas for the scan", replicas.join(", ")),
                });
            }
        }
        let mut entries = Vec::new();
        let mut page = Page::new(limit, PAGE_BYTES);
        // The page ends at the horizon, unless it fills first.
        let mut next_start_after = horizon.clone();
        let mut examined: Option<Vec<u8>> = None;
        for (key, version) in merged {
            if horizon.as_ref().is_some_and(|h| key > *h) {
                break;
            }
            let live = version.live();
            if !live.is_empty() {
                let size = key.len() + live.iter().map(|s| s.value.len()).sum::<usize>();
                if !page.admit(size) {
                    next_start_after = examined;
                    break;
                }
                entries.push((key.clone(), version));
            }
            examined = Some(key);
        }
        receipt.acked = answered.len() as u32;
        receipt.latency_us = start.elapsed().as_micros() as u64;
        Ok(ScanResult { entries, more: next_start_after.is_some(), next_start_after: next_start_after.unwrap_or_default(), receipt })
    }

    /// Each replica's stored version of `key`, side by side. Reads only; never repairs.
    pub async fn inspect(&self, key: &[u8]) -> Result<Vec<(String, Result<Option<DvvSet>>)>> {
        self.check_key(key)?;
        let prefs = self.s.membership.ring().preference_list(key, self.s.config.replication_factor);
        let timeout = self.s.peers.timeout();
        let reads = prefs.into_iter().map(|id| self.read_from(id, key.to_vec(), timeout));
        Ok(futures::future::join_all(reads).await.into_iter().map(|(id, r, _)| (id, r)).collect())
    }
}

/// The receipt's report for `id`, added if this is the first word of it
/// (a stand-in recruited mid-write).
fn report_for<'a>(receipt: &'a mut pb::Receipt, id: &str) -> &'a mut pb::ReplicaReport {
    let i = match receipt.replicas.iter().position(|r| r.node == id) {
        Some(i) => i,
        None => {
            receipt.replicas.push(pb::ReplicaReport { node: id.to_string(), ..Default::default() });
            receipt.replicas.len() - 1
        }
    };
    &mut receipt.replicas[i]
}
