//! The handles a node's background loops share, and no more.
//!
//! Gossip, joining and leaving (`membership`) and hint replay (`hints`) run
//! beside the services. They used to take the whole node (`node::Shared`),
//! which made `node.rs` and those modules import each other. Now `node.rs`
//! builds these small values once and hands each loop what it uses:
//! - [`Handles`]: config, store, membership view, peer connections, the
//!   admission check and the node's shutdown token — what membership changes touch;
//! - [`Gossip`]: `Handles` plus the RNG, wall clock and request gauge a
//!   gossip round needs (joining runs rounds of its own);
//! - `hints::Replayer`: the hint store, peers, liveness and clock.
//!
//! All fields are `Arc`s (or cheap clones), so a loop owns its copy.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::admit::Admit;
use crate::clock::Clock;
use crate::config::Config;
use crate::membership::Membership;
use crate::peer_client::Peers;
use crate::store::Store;

/// What membership changes (gossip merges, joins, leaves, removals) touch.
#[derive(Clone)]
pub struct Handles {
    /// The node's configuration.
    pub config: Arc<Config>,
    /// Its replica store (also holds the persisted member list).
    pub store: Arc<Store>,
    /// Its view of the cluster.
    pub membership: Arc<Membership>,
    /// Its connections to peers.
    pub peers: Arc<Peers>,
    /// The check every version from another node passes (`admit.rs`).
    pub admit: Arc<Admit>,
    /// Cancelled to stop the node (shutdown, a decommission, a removal).
    pub shutdown: CancellationToken,
}

impl Handles {
    /// Persists the member list and the removal tombstones, so a restart
    /// knows its peers, and whom to keep out, before gossip.
    pub fn save_members(&self) {
        let saved = self
            .store
            .meta_put("members", &self.membership.members())
            .and_then(|_| self.store.meta_put("removed_nodes", &self.membership.removed()));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not persist the member list");
        }
    }
}

/// What a gossip round needs beyond [`Handles`].
#[derive(Clone)]
pub struct Gossip {
    /// Config, store, membership, peers, shutdown.
    pub h: Handles,
    /// The node's seeded RNG (picks gossip targets).
    pub rng: Arc<Mutex<StdRng>>,
    /// Its wall clock (peers' clock offsets).
    pub clock: Arc<dyn Clock>,
    /// Client requests being served now, gossiped as load.
    pub in_flight: Arc<AtomicU64>,
}
