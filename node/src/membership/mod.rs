//! Membership: who is in the cluster, where they listen, which tokens they
//! own, and whether this node can currently reach them.
//!
//! The member list spreads by push-pull gossip (`gossip.rs`). Liveness is
//! local: a peer is down when messages to it fail, and up again when one
//! succeeds. The gossip loop pings every member once per round, so a dead
//! node is noticed within about one `gossip_interval` even when no client
//! traffic goes to it. (Phi-accrual detection replaces this in the
//! membership issue; `is_up` is the seam it plugs into.)

mod gossip;

pub use gossip::{merge_member, round as run_round, run as run_gossip};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ringkv_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::ring::{Ring, Token};

/// A member's lifecycle state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Known, but not yet owning tokens.
    #[default]
    Joining,
    /// Owns tokens and serves.
    Normal,
    /// Handing its ranges away.
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
    /// Ring tokens it owns.
    pub tokens: Vec<Token>,
    /// Its zone.
    pub zone: String,
    /// Bumped on restart; a newer generation wins outright.
    pub generation: u64,
    /// Bumped on each change within a generation.
    pub version: u64,
    /// Lifecycle state.
    pub state: NodeState,
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
        }
    }
}

struct Inner {
    members: BTreeMap<String, Member>,
    down: BTreeSet<String>,
    ring: Arc<Ring>,
}

/// This node's view of the cluster.
pub struct Membership {
    me: String,
    inner: RwLock<Inner>,
}

impl Membership {
    /// A view that knows only `me`.
    pub fn new(me: Member) -> Self {
        let id = me.id.clone();
        let mut members = BTreeMap::new();
        members.insert(id.clone(), me);
        let ring = Arc::new(build_ring(&members));
        Self { me: id, inner: RwLock::new(Inner { members, down: BTreeSet::new(), ring }) }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current ring (cheap to clone, rebuilt only when tokens change).
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.read().expect("lock").ring.clone()
    }

    /// Every known member, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.inner.read().expect("lock").members.values().cloned().collect()
    }

    /// One member.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.inner.read().expect("lock").members.get(id).cloned()
    }

    /// Merges gossip; returns true when anything changed.
    pub fn merge(&self, incoming: impl IntoIterator<Item = Member>) -> bool {
        let mut inner = self.inner.write().expect("lock");
        let mut changed = false;
        for m in incoming {
            changed |= merge_member(&mut inner.members, m, &self.me);
        }
        if changed {
            inner.ring = Arc::new(build_ring(&inner.members));
        }
        changed
    }

    /// Changes this node's own entry and bumps its version.
    pub fn update_me(&self, f: impl FnOnce(&mut Member)) {
        let mut inner = self.inner.write().expect("lock");
        let me = inner.members.get_mut(&self.me).expect("own entry always present");
        f(me);
        me.version += 1;
        inner.ring = Arc::new(build_ring(&inner.members));
    }

    /// Whether `id` is reachable as far as this node knows. Always true for itself.
    pub fn is_up(&self, id: &str) -> bool {
        id == self.me || !self.inner.read().expect("lock").down.contains(id)
    }

    /// Records the outcome of a message to `id`; logs transitions.
    pub fn set_up(&self, id: &str, up: bool) {
        if id == self.me || self.is_up(id) == up {
            return;
        }
        let mut inner = self.inner.write().expect("lock");
        if up {
            inner.down.remove(id);
            tracing::info!(node = %self.me, peer = %id, "peer is up");
        } else {
            inner.down.insert(id.to_string());
            tracing::warn!(node = %self.me, peer = %id, "peer is down");
        }
    }
}

fn build_ring(members: &BTreeMap<String, Member>) -> Ring {
    Ring::new(
        members
            .values()
            .filter(|m| matches!(m.state, NodeState::Normal | NodeState::Leaving))
            .map(|m| (m.id.as_str(), m.tokens.as_slice())),
    )
}
