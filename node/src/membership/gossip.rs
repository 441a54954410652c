//! Push-pull gossip of the member list: a pure merge rule and a thin loop.
//!
//! Every `gossip_interval`, a node bumps its own heartbeat and sends its
//! whole member list to one random live peer. With probability
//! `down / (live + 1)` it also sends it to one random down peer, which is
//! how a healed or restarted peer is noticed. While it knows no live peer,
//! it sends to its seeds, resolving their names afresh (`seeds.rs`). It merges every reply. Gossip spreads
//! epidemically: a change reaches all n nodes in O(log n) rounds.
//!
//! Merge rule per member:
//! - a higher `generation` (a restart) replaces the entry outright;
//! - within a generation, a higher `version` replaces the application state,
//!   and a higher `heartbeat` replaces the heartbeat and load figures.
//!
//! Only a node writes its own entry, with one exception: `removenode`
//! marks a dead node `left`. Its tombstone travels with the member list
//! and screens every merge (`removal.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::Member;
use crate::node::Shared;

/// What merging one entry changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Application state (address, tokens, zone, state).
    pub state: bool,
    /// The heartbeat advanced.
    pub heartbeat: bool,
}

/// Merges one gossiped entry into `known`.
pub fn merge_member(known: &mut BTreeMap<String, Member>, incoming: Member, me: &str) -> Merged {
    if incoming.id == me || incoming.id.is_empty() {
        return Merged::default();
    }
    let Some(k) = known.get_mut(&incoming.id) else {
        known.insert(incoming.id.clone(), incoming);
        return Merged { state: true, heartbeat: true };
    };
    if incoming.generation > k.generation {
        *k = incoming;
        return Merged { state: true, heartbeat: true };
    }
    let mut merged = Merged::default();
    if incoming.generation == k.generation {
        if incoming.version > k.version {
            k.version = incoming.version;
            k.address = incoming.address;
            k.tokens = incoming.tokens;
            k.zone = incoming.zone;
            k.state = incoming.state;
            merged.state = true;
        }
        if incoming.heartbeat > k.heartbeat {
            k.heartbeat = incoming.heartbeat;
            k.keys = incoming.keys;
            k.in_flight = incoming.in_flight;
            merged.heartbeat = true;
        }
    }
    merged
}

/// One gossip round.
pub async fn round(s: &Shared) {
    let keys = s.store.len().unwrap_or(0);
    s.membership.beat(keys, s.in_flight.load(Ordering::Relaxed));
    let (up, down) = s.membership.peers_by_liveness();
    let mut targets: Vec<String> = Vec::new();
    {
        let mut rng = s.rng.lock().expect("rng lock");
        if let Some(m) = up.choose(&mut *rng) {
            targets.push(m.address.clone());
        }
        let p_down = down.len() as f64 / (up.len() as f64 + 1.0);
        if !down.is_empty() && rng.random::<f64>() < p_down {
            targets.push(down.choose(&mut *rng).expect("non-empty").address.clone());
        }
    }
    if up.is_empty() {
        // Resolved afresh each round: a seed's name may point elsewhere now.
        let seeds = super::seeds::resolve(s.peers.transport().as_ref(), &s.config.seeds, s.config.advertised(), &s.config.listen).await;
        for seed in seeds.others {
            if !targets.contains(&seed.contact) {
                targets.push(seed.contact);
            }
        }
    }
    let members = s.membership.members();
    for addr in targets {
        let sent = s.clock.wall_ms();
        match s.peers.gossip(&addr, &members, sent).await {
            Ok((theirs, their_wall, removed)) => {
                // Their clock against the midpoint of our send and receive.
                let mid = (sent + s.clock.wall_ms()) / 2;
                if let Some(m) = s.membership.members().into_iter().find(|m| m.address == addr) {
                    s.membership.set_offset(&m.id, their_wall as i64 - mid as i64);
                }
                // Tombstones first, so a removed node's newer entry is refused.
                super::removal::learn(s, removed);
                s.membership.merge(theirs);
            }
            Err(e) => tracing::debug!(node = %s.membership.me(), peer = %addr, error = %e, "gossip failed"),
        }
    }
}

/// Runs gossip rounds until shutdown, logging up/down transitions.
pub async fn run(s: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(s.config.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_down: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => round(&s).await,
        }
        let (_, down) = s.membership.peers_by_liveness();
        let now_down: BTreeSet<String> = down.into_iter().map(|m| m.id).collect();
        for id in now_down.difference(&was_down) {
            tracing::warn!(node = %s.config.id, peer = %id, phi = s.membership.phi(id), "peer is down");
        }
        for id in was_down.difference(&now_down) {
            tracing::info!(node = %s.config.id, peer = %id, "peer is up");
        }
        was_down = now_down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, generation: u64, version: u64, heartbeat: u64) -> Member {
        Member { id: id.into(), generation, version, heartbeat, ..Default::default() }
    }

    #[test]
    fn newer_generation_version_or_heartbeat_wins() {
        let mut known = BTreeMap::new();
        assert_eq!(merge_member(&mut known, m("b", 1, 5, 1), "a"), Merged { state: true, heartbeat: true });
        assert_eq!(
            merge_member(&mut known, m("b", 1, 4, 9), "a"),
            Merged { state: false, heartbeat: true },
            "older version, newer heartbeat"
        );
        assert_eq!(known["b"].version, 5);
        assert_eq!(merge_member(&mut known, m("b", 1, 5, 9), "a"), Merged::default(), "nothing new");
        assert_eq!(merge_member(&mut known, m("b", 1, 6, 2), "a"), Merged { state: true, heartbeat: false });
        assert_eq!(known["b"].heartbeat, 9, "heartbeat never goes back");
        assert_eq!(merge_member(&mut known, m("b", 2, 0, 0), "a"), Merged { state: true, heartbeat: true }, "restart");
        assert_eq!(merge_member(&mut known, m("b", 1, 99, 99), "a"), Merged::default(), "older generation ignored");
        assert_eq!(known["b"].generation, 2);
    }

    #[test]
    fn own_entry_is_never_overwritten() {
        let mut known = BTreeMap::new();
        known.insert("a".to_string(), m("a", 1, 1, 1));
        assert_eq!(merge_member(&mut known, m("a", 9, 9, 9), "a"), Merged::default());
        assert_eq!(known["a"].generation, 1);
    }
}
