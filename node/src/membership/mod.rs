//! Membership: who is in the cluster, where they listen, which tokens they
//! own, their zone and lifecycle state, and whether they are alive (DESIGN §4).
//!
//! - `gossip.rs`: push-pull gossip of the member list. Each node bumps its
//!   own heartbeat every round; newer `(generation, version)` wins for
//!   application state, and newer `(generation, heartbeat)` for the
//!   heartbeat.
//! - `detector.rs`: phi accrual over the arrival times of each peer's
//!   heartbeats. It is judged locally by each node.
//! - `formation.rs`: how a node without tokens gets them, whether it starts
//!   a ring or joins one, and how a token two nodes chose is settled.
//! - `seeds.rs`: the seed list, with names resolved afresh on every use.
//! - `lifecycle.rs`: the shells that join, decommission and remove.
//!
//! A peer is **up** when its phi is at or below the threshold *and* the last
//! direct message to it did not fail at the transport. The second condition
//! makes a killed process (connection refused) count as down at once. It
//! clears on the next direct success, since gossip now and then contacts a
//! down peer.
//!
//! Two rings come out of the member list. `ring()` holds the current owners
//! (`normal` and `leaving` nodes) and serves reads and W. `future_ring()`
//! holds the owners once pending joins and leaves complete (`normal` and
//! `joining`). Writes also go to the future owners of a key, so a joining
//! node misses nothing while it streams.
//!
//! `removal.rs` keeps `removenode` final: removed ids are remembered as
//! tombstones that gossip spreads, so a removed node that restarts with a
//! newer generation is kept out of the ring and told to stop.

mod detector;
mod formation;
mod gossip;
mod lifecycle;
mod merge;
mod removal;
pub mod seeds;

pub use detector::PhiDetector;
pub use formation::{SeedView, SETTLE_ROUNDS};
pub use gossip::{round as run_round, run as run_gossip};
pub use lifecycle::{decommission, join, RING_DELAY_ROUNDS};
pub use merge::{merge_member, Merged};
pub use removal::{learn as learn_removals, merge_removed, merge_screened, removed_message, stop_if_removed, Removed};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ringkv_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::ring::{Ring, Token};

/// A member's lifecycle state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Has tokens, streaming its ranges; receives writes, serves no reads.
    #[default]
    Joining,
    /// Owns tokens and serves.
    Normal,
    /// Handing its ranges to their next owners; still serves.
    Leaving,
    /// Gone.
    Left,
}

impl NodeState {
    /// The name used on the wire and in `ringkv status`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Normal => "normal",
            NodeState::Leaving => "leaving",
            NodeState::Left => "left",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "normal" => NodeState::Normal,
            "leaving" => NodeState::Leaving,
            "left" => NodeState::Left,
            _ => NodeState::Joining,
        }
    }
}

/// What gossip says about one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// `host:port` its gRPC server listens on.
    pub address: String,
    /// Ring tokens it owns (or will own, while joining).
    pub tokens: Vec<Token>,
    /// Its zone.
    pub zone: String,
    /// Bumped on restart; a newer generation wins outright.
    pub generation: u64,
    /// Bumped on each change of the fields above within a generation.
    pub version: u64,
    /// Lifecycle state.
    pub state: NodeState,
    /// Bumped every gossip round by the node itself.
    pub heartbeat: u64,
    /// Keys stored, as of the last heartbeat.
    pub keys: u64,
    /// Requests in flight, as of the last heartbeat.
    pub in_flight: u64,
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            id: m.id.clone(),
            address: m.address.clone(),
            tokens: m.tokens.clone(),
            zone: m.zone.clone(),
            generation: m.generation,
            version: m.version,
            state: m.state.as_str().into(),
            heartbeat: m.heartbeat,
            keys: m.keys,
            in_flight: m.in_flight,
        }
    }
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Member {
            id: m.id,
            address: m.address,
            tokens: m.tokens,
            zone: m.zone,
            generation: m.generation,
            version: m.version,
            state: NodeState::parse(&m.state),
            heartbeat: m.heartbeat,
            keys: m.keys,
            in_flight: m.in_flight,
        }
    }
}

/// Failure-detector settings.
#[derive(Clone, Copy, Debug)]
pub struct DetectorConfig {
    /// Conviction threshold for phi.
    pub threshold: f64,
    /// Expected heartbeat interval (the gossip interval), in ms.
    pub interval_ms: u64,
    /// Acceptable pause beyond the mean, in ms.
    pub pause_ms: u64,
}

impl DetectorConfig {
    fn detector(&self, now_ms: u64) -> PhiDetector {
        PhiDetector::new(now_ms, self.interval_ms, self.pause_ms, self.interval_ms / 4)
    }
}

struct Inner {
    members: BTreeMap<String, Member>,
    /// Each peer's clock minus ours, in ms, from the last gossip exchange,
    /// and when that sample was taken.
    offsets: BTreeMap<String, (i64, tokio::time::Instant)>,
    unreachable: BTreeSet<String>,
    detectors: BTreeMap<String, PhiDetector>,
    ring: Arc<Ring>,
    future: Arc<Ring>,
    /// Ids removed by an operator, with the generation removed (`removal.rs`).
    removed: Removed,
}

/// This node's view of the cluster.
pub struct Membership {
    me: String,
    base: tokio::time::Instant,
    detector: DetectorConfig,
    inner: RwLock<Inner>,
}

impl Membership {
    /// A view that knows only `me`.
    pub fn new(me: Member, detector: DetectorConfig) -> Self {
        let id = me.id.clone();
        let mut members = BTreeMap::new();
        members.insert(id.clone(), me);
        let (ring, future) = build_rings(&members);
        let inner = Inner {
            members,
            offsets: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            detectors: BTreeMap::new(),
            ring,
            future,
            removed: Removed::new(),
        };
        Self { me: id, base: tokio::time::Instant::now(), detector, inner: RwLock::new(inner) }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current owners (normal and leaving nodes): reads and W use it.
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.read().expect("lock").ring.clone()
    }

    /// The owners once pending joins and leaves complete.
    pub fn future_ring(&self) -> Arc<Ring> {
        self.inner.read().expect("lock").future.clone()
    }

    /// Every known member, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.inner.read().expect("lock").members.values().cloned().collect()
    }

    /// One member.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.inner.read().expect("lock").members.get(id).cloned()
    }

    /// Merges gossip; returns true when the application state of any
    /// member changed (the rings are then rebuilt).
    pub fn merge(&self, incoming: impl IntoIterator<Item = Member>) -> bool {
        let now = self.now_ms();
        let mut inner = self.inner.write().expect("lock");
        let mut changed = false;
        for m in incoming {
            let id = m.id.clone();
            let Inner { members, removed, .. } = &mut *inner;
            let merged = merge_screened(members, removed, m, &self.me);
            changed |= merged.state;
            if merged.heartbeat {
                let cfg = self.detector;
                inner.detectors.entry(id).and_modify(|d| d.heartbeat(now)).or_insert_with(|| cfg.detector(now));
            }
        }
        if changed {
            let (ring, future) = build_rings(&inner.members);
            inner.ring = ring;
            inner.future = future;
        }
        changed
    }

    /// Changes this node's own entry and bumps its version.
    pub fn update_me(&self, f: impl FnOnce(&mut Member)) {
        let mut inner = self.inner.write().expect("lock");
        let me = inner.members.get_mut(&self.me).expect("own entry always present");
        f(me);
        me.version += 1;
        let (ring, future) = build_rings(&inner.members);
        inner.ring = ring;
        inner.future = future;
    }

    /// Bumps this node's heartbeat and load figures (once per gossip round).
    pub fn beat(&self, keys: u64, in_flight: u64) {
        let mut inner = self.inner.write().expect("lock");
        let me = inner.members.get_mut(&self.me).expect("own entry always present");
        me.heartbeat += 1;
        me.keys = keys;
        me.in_flight = in_flight;
    }

    /// Marks another node `left` on behalf of an operator (`removenode`).
    /// Only a node that is down may be removed.
    pub fn remove(&self, id: &str) -> Result<(), String> {
        if id == self.me {
            return Err("a node cannot remove itself; use decommission".into());
        }
        if self.is_up(id) {
            return Err(format!("{id} is up; decommission it instead, or stop it first"));
        }
        let mut inner = self.inner.write().expect("lock");
        let m = inner.members.get_mut(id).ok_or_else(|| format!("{id} is not a member"))?;
        m.state = NodeState::Left;
        m.version += 1;
        let generation = m.generation;
        merge_removed(&mut inner.removed, [(id.to_string(), generation)]);
        let (ring, future) = build_rings(&inner.members);
        inner.ring = ring;
        inner.future = future;
        Ok(())
    }

    /// phi for `id` now (0 for this node; 0 before any heartbeat was seen).
    pub fn phi(&self, id: &str) -> f64 {
        if id == self.me {
            return 0.0;
        }
        let now = self.now_ms();
        self.inner.read().expect("lock").detectors.get(id).map_or(0.0, |d| d.phi(now))
    }

    /// How long since a heartbeat of `id` was last seen, in ms (0 for this
    /// node or one never heard from).
    pub fn silent_ms(&self, id: &str) -> u64 {
        let now = self.now_ms();
        self.inner.read().expect("lock").detectors.get(id).map_or(0, |d| now.saturating_sub(d.last_ms()))
    }

    /// Whether `id` is reachable as far as this node knows. Always true for itself.
    pub fn is_up(&self, id: &str) -> bool {
        if id == self.me {
            return true;
        }
        let now = self.now_ms();
        let inner = self.inner.read().expect("lock");
        !inner.unreachable.contains(id) && inner.detectors.get(id).is_none_or(|d| d.phi(now) <= self.detector.threshold)
    }

    /// Whether `id` is a member (in any state but `left`) that is up. Hint
    /// replay asks this: [`Membership::is_up`] counts an id it has never
    /// heard of as up (a peer not yet sampled is not yet suspected, which
    /// requests rely on), and replay to a made-up target would then be
    /// retried every tick, forever.
    pub fn is_up_member(&self, id: &str) -> bool {
        self.member(id).is_some_and(|m| m.state != NodeState::Left) && self.is_up(id)
    }

    /// Records the transport outcome of a direct message to `id`.
    pub fn set_reachable(&self, id: &str, reachable: bool) {
        if id == self.me {
            return;
        }
        let mut inner = self.inner.write().expect("lock");
        let changed = if reachable { inner.unreachable.remove(id) } else { inner.unreachable.insert(id.to_string()) };
        if changed {
            if reachable {
                tracing::info!(node = %self.me, peer = %id, "peer reachable again");
            } else {
                tracing::warn!(node = %self.me, peer = %id, "peer unreachable");
            }
        }
    }

    /// Records `peer`'s clock offset (its clock minus ours), in ms.
    pub fn set_offset(&self, peer: &str, offset_ms: i64) {
        self.inner.write().expect("lock").offsets.insert(peer.to_string(), (offset_ms, tokio::time::Instant::now()));
    }

    /// Each peer's last sampled clock offset (its clock minus ours), in ms.
    pub fn offsets(&self) -> Vec<(String, i64)> {
        self.inner.read().expect("lock").offsets.iter().map(|(id, (ms, _))| (id.clone(), *ms)).collect()
    }

    /// When more than half of the live peers' clocks differ from ours by
    /// more than `max_ms` (all in the same direction), our clock is the
    /// odd one out: returns the median offset (positive when we are
    /// behind). One skewed peer cannot make the others think they are.
    pub fn self_skew(&self, max_ms: u64) -> Option<i64> {
        let (up, _) = self.peers_by_liveness();
        let inner = self.inner.read().expect("lock");
        let mut offs: Vec<i64> = up.iter().filter_map(|m| inner.offsets.get(&m.id).map(|o| o.0)).collect();
        if offs.is_empty() {
            return None;
        }
        offs.sort();
        let max = max_ms as i64;
        let ahead = offs.iter().filter(|o| **o < -max).count();
        let behind = offs.iter().filter(|o| **o > max).count();
        (ahead * 2 > offs.len() || behind * 2 > offs.len()).then(|| offs[offs.len() / 2])
    }

    /// True when most live peers' clocks were sampled after `since` (or
    /// there is no live peer to sample).
    pub fn offsets_sampled_since(&self, since: tokio::time::Instant) -> bool {
        let (up, _) = self.peers_by_liveness();
        let inner = self.inner.read().expect("lock");
        let fresh = up.iter().filter(|m| inner.offsets.get(&m.id).is_some_and(|o| o.1 > since)).count();
        fresh * 2 > up.len() || up.is_empty()
    }

    /// Members other than this one, split into (up, down), `left` excluded.
    pub fn peers_by_liveness(&self) -> (Vec<Member>, Vec<Member>) {
        self.members().into_iter().filter(|m| m.id != self.me && m.state != NodeState::Left).partition(|m| self.is_up(&m.id))
    }
}

fn build_rings(members: &BTreeMap<String, Member>) -> (Arc<Ring>, Arc<Ring>) {
    let pick = |states: &[NodeState]| {
        Ring::with_zones(
            members
                .values()
                .filter(|m| states.contains(&m.state) && !m.tokens.is_empty())
                .map(|m| (m.id.as_str(), m.zone.as_str(), m.tokens.as_slice())),
        )
    };
    let ring = pick(&[NodeState::Normal, NodeState::Leaving]);
    let future = pick(&[NodeState::Normal, NodeState::Joining]);
    (Arc::new(ring), Arc::new(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: NodeState) -> Member {
        Member { id: id.into(), address: format!("{id}:1"), state, heartbeat: 1, generation: 1, version: 1, ..Default::default() }
    }

    #[test]
    fn only_a_member_that_has_not_left_is_up_for_hint_replay() {
        let view = Membership::new(member("n1", NodeState::Normal), DetectorConfig { threshold: 8.0, interval_ms: 1000, pause_ms: 3000 });
        view.merge([member("n2", NodeState::Normal), member("n3", NodeState::Left)]);
        assert!(view.is_up("ghost"), "requests count an id never heard of as up");
        assert!(!view.is_up_member("ghost"), "hint replay does not");
        assert!(view.is_up_member("n2"));
        assert!(!view.is_up_member("n3"), "a left node takes no hints");
        assert!(view.is_up_member("n1"));
    }
}
