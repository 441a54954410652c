//! The node's state, shared by its services and the coordinator: one
//! [`Shared`] per node, built by `node::run`.
//!
//! Background loops do not take it whole: `Shared` hands them the narrow
//! values of `handles.rs` (and `hints::Replayer`, `antientropy::Repair`),
//! so no loop depends on the node, and `node.rs` only wires.

use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::admit::Admit;
use crate::antientropy;
use crate::clock::Clock;
use crate::config::Config;
use crate::fault::Faults;
use crate::handles::{self, Handles};
use crate::hints::Hints;
use crate::membership::Membership;
use crate::peer_client::Peers;
use crate::store::Store;
use crate::version::HlcClock;

/// State shared by every service and task of one node.
pub struct Shared {
    /// The configuration it started with.
    pub config: Arc<Config>,
    /// Its replica store.
    pub store: Arc<Store>,
    /// Its view of the cluster.
    pub membership: Arc<Membership>,
    /// Its connections to peers.
    pub peers: Arc<Peers>,
    /// Its hybrid logical clock.
    pub hlc: Arc<HlcClock>,
    /// The check every version from another node passes (`admit.rs`).
    pub admit: Arc<Admit>,
    /// The actor id on the dots this incarnation issues: `<id>@<generation>`.
    /// A restart gets a new one, so a write lost in a crash (stored by peers
    /// but not yet durable here) can never have its dot reused for another
    /// value, which the merge would then drop. Riak's vnode epochs solve the
    /// same problem the same way.
    pub actor: String,
    /// Watches the wall clock for steps.
    pub clock_watch: crate::clock::ClockWatch,
    /// Its wall clock.
    pub clock: Arc<dyn Clock>,
    /// Its fault-injection rules.
    pub faults: Arc<Faults>,
    /// Its seeded RNG.
    pub rng: Arc<Mutex<StdRng>>,
    /// Anti-entropy counters.
    pub anti_entropy: Arc<antientropy::Stats>,
    /// Hints held for other replicas.
    pub hints: Arc<Hints>,
    /// Cancelled to stop the node (shutdown, or the end of a decommission).
    pub shutdown: CancellationToken,
    /// Client requests being served now (gossiped as load).
    pub in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// Per-client rate limits on the client surface (`rate_limit.rs`).
    pub rate_limits: crate::rate_limit::RateLimits,
    /// This replica's Paxos acceptor (SERIAL, `paxos/`).
    pub paxos: Arc<crate::paxos::Acceptor>,
    /// TLS, principals and the gates in front of each surface.
    pub security: Arc<crate::security::Security>,
    /// The client-request series (`metrics/request.rs`), this node's own.
    pub requests: crate::metrics::RequestMetrics,
}

impl Shared {
    /// The handles membership changes touch (`handles.rs`).
    pub fn handles(&self) -> Handles {
        Handles {
            config: self.config.clone(),
            store: self.store.clone(),
            membership: self.membership.clone(),
            peers: self.peers.clone(),
            admit: self.admit.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// What a gossip round needs.
    pub fn gossip(&self) -> handles::Gossip {
        handles::Gossip { h: self.handles(), rng: self.rng.clone(), clock: self.clock.clone(), in_flight: self.in_flight.clone() }
    }

    /// What anti-entropy passes and cleanups need.
    pub fn repair(&self) -> antientropy::Repair {
        antientropy::Repair { h: self.handles(), clock: self.clock.clone(), stats: self.anti_entropy.clone() }
    }

    /// Persists the member list and the removal tombstones.
    pub fn save_members(&self) {
        self.handles().save_members()
    }
}
