//! What the coordinator may touch of its node, and nothing else.
//!
//! The write, read, scan and forwarding paths see the node only through
//! [`Ctx`]: the identity and the few config values they use, the view the
//! plan is made from, the hint store, the HLC, and one call per replica
//! message. Each call hides the one branch every path used to repeat: when
//! the replica is this node, it goes straight to the local store instead of
//! through `PeerClient`.
//!
//! `Ctx` holds the node's `Arc<Shared>` privately: the HLC and the clock
//! watch live inside `Shared` by value, and the calls that outlive a request
//! (stragglers, async read repair) need an owned handle.
//! This file is the only part of the coordinator that names `Shared`;
//! `plan` sees a borrowed [`View`] and pure values only.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::plan::{self, Ask, Plan, View};
use crate::error::{Error, Result};
use crate::hints::{Limits, Stored};
use crate::paging::{Page, PAGE_BYTES};
use crate::paxos::{Ballot, Break, Promise, Proposal};
use crate::record;
use crate::ring::Ring;
use crate::shared::Shared;
use crate::store::Ticket;
use crate::version::{expiry_for, Context, DvvSet, Sibling};

/// One replica's answer: who, what, and how long it took.
pub(crate) type ReplicaFuture<T> = BoxFuture<'static, (String, Result<T>, Duration)>;

/// The coordinator's narrow handle on its node; cheap to clone.
#[derive(Clone)]
pub(crate) struct Ctx {
    s: Arc<Shared>,
}

impl Ctx {
    /// A context over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        Self { s }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.s.config.id
    }

    /// The replication factor N.
    pub fn n(&self) -> usize {
        self.s.config.replication_factor
    }

    /// `max_key_bytes`.
    pub fn max_key_bytes(&self) -> usize {
        self.s.config.max_key_bytes
    }

    /// `max_value_bytes`.
    pub fn max_value_bytes(&self) -> usize {
        self.s.config.max_value_bytes
    }

    /// How long to wait for a read replica with too few latency samples.
    pub fn speculative_retry(&self) -> Duration {
        self.s.config.speculative_retry
    }

    /// The per-message peer deadline.
    pub fn peer_timeout(&self) -> Duration {
        self.s.peers.timeout()
    }

    /// Whether `id` is reachable as far as this node knows.
    pub fn is_up(&self, id: &str) -> bool {
        self.s.membership.is_up(id)
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.s.membership.ring()
    }

    /// A peer's recent (median, p99) read latency, once sampled.
    pub fn read_latency(&self, id: &str) -> Option<(Duration, Duration)> {
        self.s.peers.read_latency(id)
    }

    /// The plan for `key`, from this node's current view.
    pub fn plan(&self, key: &[u8], ask: Ask) -> Result<Plan> {
        let (ring, future) = (self.s.membership.ring(), self.s.membership.future_ring());
        let is_up = |id: &str| self.s.membership.is_up(id);
        let view = View {
            ring: &ring,
            future: &future,
            is_up: &is_up,
            zone: &self.s.config.zone,
            n: self.s.config.replication_factor,
            hinted_handoff: self.s.config.hinted_handoff,
        };
        plan::plan(&view, key, ask)
    }

    /// Refuses to stamp writes while this node's clock disagrees with most
    /// of its peers, or has just stepped: its timestamps would shadow (or
    /// lose to) everyone else's.
    pub fn check_clock(&self) -> Result<()> {
        let s = &self.s;
        let max_skew = crate::clock::millis(s.config.max_clock_skew);
        if let Some((at, step_ms)) = s.clock_watch.check(s.clock.wall_ms()) {
            if !s.membership.offsets_sampled_since(at) {
                tracing::error!(node = %self.me(), step_ms, "wall clock stepped: refusing to coordinate writes until gossip samples the peers");
                return Err(Error::ClockStepped { step_ms, max_ms: max_skew });
            }
        }
        if let Some(offset) = s.membership.self_skew(max_skew) {
            tracing::error!(node = %self.me(), offset_ms = offset, "clock skew: refusing to coordinate writes");
            return Err(Error::OwnClockSkew { offset_ms: offset.unsigned_abs(), max_ms: max_skew });
        }
        Ok(())
    }

    /// Applies a write to this replica's own version of `key`: observes the
    /// key's stored timestamps (so the HLC is monotonic per key), then adds
    /// the new sibling under this incarnation's dot. A TTL becomes an
    /// absolute expiry from the new timestamp's wall time, and siblings
    /// already expired by this node's clock are turned into tombstones on
    /// the way (`version/expiry.rs`; any replica may do that at any time).
    pub fn stamp(&self, key: &[u8], value: Vec<u8>, tombstone: bool, ttl_ms: u64, context: Option<Context>) -> Result<(DvvSet, Ticket)> {
        let blind = context.is_none();
        let ctx = context.unwrap_or_default();
        let (hlc, clock, actor) = (&self.s.hlc, &self.s.clock, &self.s.actor);
        let (dvv, ticket, ()) = self.s.store.update(key, |d| {
            if let Some(seen) = d.max_hlc() {
                hlc.observe(seen);
            }
            let now = clock.wall_ms();
            d.expire(now);
            let stamp = hlc.now(now);
            let expires_at_ms = expiry_for(stamp.wall_ms, ttl_ms, tombstone)?;
            d.update(&ctx, actor, Sibling { hlc: stamp, value, tombstone, expires_at_ms }, blind)
        })?;
        Ok((dvv, ticket))
    }

    /// This node's wall clock, in ms: the instant reads judge expiry at.
    pub fn wall_ms(&self) -> u64 {
        self.s.clock.wall_ms()
    }

    /// A scan answer from peer `from`, admitted whole (`admit.rs`).
    pub fn admit_answer(&self, entries: Vec<pb::KeyVersion>, from: &str) -> Result<Vec<(Vec<u8>, DvvSet)>> {
        self.s.admit.answer(entries, from)
    }

    /// A version of a write that no stored history continues: its dot gets
    /// the one-off id `node~hlc` (ANY kept only as hints).
    pub fn one_off(&self, value: Vec<u8>, tombstone: bool, ttl_ms: u64, context: Option<Context>) -> Result<DvvSet> {
        let now = self.s.hlc.now(self.s.clock.wall_ms());
        let dot_id = format!("{}~{}.{}", self.me(), now.wall_ms, now.logical);
        let expires_at_ms = expiry_for(now.wall_ms, ttl_ms, tombstone)?;
        let mut dvv = DvvSet::default();
        let blind = context.is_none();
        dvv.update(&context.unwrap_or_default(), &dot_id, Sibling { hlc: now, value, tombstone, expires_at_ms }, blind)?;
        Ok(dvv)
    }

    /// Stores a hint for `target` on this node, if hinted handoff allows.
    pub fn hint(&self, target: &str, key: &[u8], version: &DvvSet) -> Option<Ticket> {
        let s = &self.s;
        if !s.config.hinted_handoff {
            return None;
        }
        let silent = s.membership.silent_ms(target);
        let limits = Limits { silent_ms: silent, window: s.config.max_hint_window, budget: s.config.max_hint_bytes_per_target };
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

    /// Waits until this node's write `ticket` is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<()> {
        self.s.store.durable(ticket).await
    }

    /// Has replica `id` hold `version` durably: this node waits for its own
    /// `ticket`, a peer merges the encoded version.
    pub fn replicate(&self, id: String, key: Vec<u8>, version: Vec<u8>, ticket: Ticket, timeout: Duration) -> ReplicaFuture<()> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let me = &s.config.id;
            let r = if id == *me { s.store.durable(ticket).await } else { s.peers.replicate(&id, &key, version, me, timeout).await };
            (id, r, t0.elapsed())
        }
        .boxed()
    }

    /// Asks `stand_in` to keep the encoded version as a hint for `target`.
    pub fn store_hint(&self, stand_in: String, target: String, key: Vec<u8>, version: Vec<u8>, timeout: Duration) -> ReplicaFuture<()> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let req = pb::StoreHintRequest { target, key, version, from: s.config.id.clone() };
            let r = s.peers.store_hint(&stand_in, req, timeout).await;
            (stand_in, r, t0.elapsed())
        }
        .boxed()
    }

    /// Replica `id`'s stored version of `key`.
    pub fn read(&self, id: String, key: Vec<u8>, timeout: Duration) -> ReplicaFuture<Option<DvvSet>> {
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

    /// Pushes `version` of `key` to replica `id` and waits until it is
    /// durable there. Every read repair comes through here, so it is
    /// counted here (blocking, async and late ones alike).
    pub async fn repair(&self, id: String, key: Vec<u8>, version: DvvSet, timeout: Duration) -> Result<()> {
        let s = &self.s;
        let pushed = async {
            if id == s.config.id {
                let ticket = s.store.merge(&key, &version)?.ticket;
                s.store.durable(ticket).await
            } else {
                s.peers.replicate(&id, &key, record::encode(&version), &s.config.id, timeout).await
            }
        }
        .await;
        s.requests.repaired(pushed.is_ok());
        pushed
    }

    /// Hands a write to another node to coordinate.
    pub async fn forward_write(&self, target: &str, req: pb::ForwardWriteRequest, timeout: Duration) -> Result<pb::ForwardWriteResponse> {
        self.s.peers.forward_write(target, req, timeout).await
    }

    /// A fresh Paxos ballot from this node's HLC: above every ballot and
    /// timestamp it issued or observed. It names this incarnation's actor
    /// (`<id>@<generation>`), not just the node: a node restarted with its
    /// clock stepped back could otherwise issue a ballot it issued before
    /// the crash, and Paxos needs every ballot to be unique.
    pub fn ballot(&self) -> Ballot {
        Ballot { node: self.s.actor.clone(), ..self.s.hlc.now(self.s.clock.wall_ms()) }
    }

    /// Moves the HLC past a ballot that beat ours, so the next is higher.
    pub fn observe(&self, seen: &Ballot) {
        self.s.hlc.observe(seen)
    }

    /// The actor id on the dots of committed SERIAL writes: distinct from
    /// the one non-serial writes use, so every dot it issued on a key comes
    /// from a chosen proposal, and a quorum read (which holds every chosen
    /// proposal) always knows its next counter, even on a non-replica.
    pub fn paxos_actor(&self) -> String {
        format!("{}+cas", self.s.actor)
    }

    /// Builds the version a CAS proposes: `read` (the quorum's merge)
    /// superseded by one new sibling, so its context covers everything read.
    pub fn cas_version(&self, read: Option<&DvvSet>, value: Vec<u8>, tombstone: bool) -> Result<DvvSet> {
        let mut d = read.cloned().unwrap_or_default();
        if let Some(seen) = d.max_hlc() {
            self.s.hlc.observe(seen);
        }
        let sibling = Sibling { hlc: self.s.hlc.now(self.s.clock.wall_ms()), value, tombstone, expires_at_ms: None };
        let seen = d.context();
        d.update(&seen, &self.paxos_actor(), sibling, false)?;
        Ok(d)
    }

    /// The deliberately broken Paxos rule in force (fault injection only).
    pub fn break_paxos(&self) -> Break {
        if self.s.config.enable_fault_injection {
            self.s.config.break_paxos
        } else {
            Break::None
        }
    }

    /// A random back-off in `0..max`, from the node's seeded RNG.
    pub fn jitter(&self, max: Duration) -> Duration {
        use rand::Rng;
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.s.rng.lock().expect("rng lock").random_range(0..ms))
    }

    /// This replica's own version of `key`.
    pub fn local_version(&self, key: &[u8]) -> Result<Option<DvvSet>> {
        self.s.store.read(key)
    }

    /// Paxos prepare at replica `id`: its promise and its version of `key`.
    pub fn paxos_prepare(&self, id: String, key: Vec<u8>, ballot: Ballot, timeout: Duration) -> ReplicaFuture<(Promise, Option<DvvSet>)> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let r = async {
                if id == s.config.id {
                    let (promise, version, ticket) = s.paxos.prepare_and_read(&key, &ballot)?;
                    if let Some(t) = ticket {
                        s.store.durable(t).await?;
                    }
                    return Ok((promise, version));
                }
                let req = pb::PaxosPrepareRequest { key: key.clone(), ballot: record::encode(&ballot), from: s.config.id.clone() };
                let resp = s.peers.paxos_prepare(&id, req, timeout).await?;
                let promise: Promise = record::decode(&key, &resp.promise)?;
                let version = resp.version.map(|raw| record::decode::<DvvSet>(&key, &raw)).transpose()?;
                if let Some(v) = &version {
                    s.admit.check(&key, v)?;
                }
                Ok((promise, version))
            }
            .await;
            (id, r, t0.elapsed())
        }
        .boxed()
    }

    /// Paxos propose at replica `id`: `Ok(Ok(()))` accepted, `Ok(Err(b))`
    /// refused for the higher promise `b`.
    pub fn paxos_propose(
        &self,
        id: String,
        key: Vec<u8>,
        proposal: Arc<Proposal>,
        timeout: Duration,
    ) -> ReplicaFuture<std::result::Result<(), Ballot>> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let r = async {
                if id == s.config.id {
                    return match s.paxos.accept(&key, &proposal)? {
                        Ok(ticket) => s.store.durable(ticket).await.map(Ok),
                        Err(b) => Ok(Err(b)),
                    };
                }
                let req = pb::PaxosProposeRequest { key: key.clone(), proposal: record::encode(&*proposal), from: s.config.id.clone() };
                let resp = s.peers.paxos_propose(&id, req, timeout).await?;
                if resp.accepted {
                    Ok(Ok(()))
                } else {
                    Ok(Err(record::decode(&key, &resp.promised)?))
                }
            }
            .await;
            (id, r, t0.elapsed())
        }
        .boxed()
    }

    /// Paxos commit at replica `id`: it merges `version` durably and ends
    /// the instance at `ballot`.
    pub fn paxos_commit(&self, id: String, key: Vec<u8>, ballot: Ballot, version: Arc<Vec<u8>>, timeout: Duration) -> ReplicaFuture<()> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let r = async {
                if id == s.config.id {
                    let dvv: DvvSet = record::decode(&key, &version)?;
                    let ticket = s.paxos.commit_version(&key, &ballot, &dvv)?;
                    return s.store.durable(ticket).await;
                }
                let req = pb::PaxosCommitRequest {
                    key: key.clone(),
                    ballot: record::encode(&ballot),
                    version: (*version).clone(),
                    from: s.config.id.clone(),
                };
                s.peers.paxos_commit(&id, req, timeout).await
            }
            .await;
            (id, r, t0.elapsed())
        }
        .boxed()
    }

    /// One page of node `id`'s own keys under the request's prefix, deleted
    /// ones included.
    pub fn scan_local(&self, id: String, req: pb::ScanLocalRequest, timeout: Duration) -> ReplicaFuture<pb::KeyVersions> {
        let s = self.s.clone();
        async move {
            let t0 = Instant::now();
            let r = if id == s.config.id {
                let page = Page::new(req.limit as usize, PAGE_BYTES);
                s.store.offload(move |store| store.scan_prefix(&req.prefix, &req.start_after, page)).await.map(|(rows, more)| {
                    pb::KeyVersions { entries: rows.into_iter().map(|(key, version)| pb::KeyVersion { key, version }).collect(), more }
                })
            } else {
                s.peers.scan_local(&id, req, timeout).await
            };
            (id, r, t0.elapsed())
        }
        .boxed()
    }
}
