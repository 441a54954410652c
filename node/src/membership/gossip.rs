//! Push-pull gossip of the member list: a pure merge rule and a thin loop.
//!
//! Every `gossip_interval`, a node sends its whole member list to one random
//! peer (to its seeds while it knows no one) and merges the reply. For each
//! node the entry with the higher `(generation, version)` wins. A node's own
//! entry is only ever written by itself. The same round pings every other
//! member, which keeps the local up/down view fresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use tokio_util::sync::CancellationToken;

use super::Member;
use crate::node::Shared;

/// Merges one gossiped entry into `known`; returns true when it changed.
pub fn merge_member(known: &mut BTreeMap<String, Member>, incoming: Member, me: &str) -> bool {
    if incoming.id == me || incoming.id.is_empty() {
        return false;
    }
    match known.get(&incoming.id) {
        Some(k) if (k.generation, k.version) >= (incoming.generation, incoming.version) => false,
        _ => {
            known.insert(incoming.id.clone(), incoming);
            true
        }
    }
}

/// One gossip round with a random peer, or with the seeds while alone.
pub async fn round(s: &Shared) {
    let members = s.membership.members();
    let others: Vec<&Member> = members.iter().filter(|m| m.id != s.membership.me()).collect();
    let target = {
        let mut rng = s.rng.lock().expect("rng lock");
        others.choose(&mut *rng).map(|m| m.address.clone())
    };
    let targets: Vec<String> = match target {
        Some(addr) => vec![addr],
        None => s.config.seeds.iter().filter(|a| a.as_str() != s.config.advertised()).cloned().collect(),
    };
    for addr in targets {
        match s.peers.gossip(&addr, &members).await {
            Ok(theirs) => {
                if s.membership.merge(theirs) {
                    tracing::debug!(node = %s.membership.me(), ring_nodes = s.membership.ring().nodes().len(), "membership changed");
                }
            }
            Err(e) => tracing::debug!(node = %s.membership.me(), peer = %addr, error = %e, "gossip failed"),
        }
    }
    // Probe everyone, so a dead node is noticed within a round.
    let probes = others.iter().map(|m| s.peers.ping(&m.id));
    futures::future::join_all(probes).await;
}

/// Runs gossip rounds until shutdown.
pub async fn run(s: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(s.config.gossip_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => round(&s).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, generation: u64, version: u64) -> Member {
        Member { id: id.into(), generation, version, ..Default::default() }
    }

    #[test]
    fn newer_generation_or_version_wins() {
        let mut known = BTreeMap::new();
        assert!(merge_member(&mut known, m("b", 1, 5), "a"));
        assert!(!merge_member(&mut known, m("b", 1, 4), "a"), "older version ignored");
        assert!(!merge_member(&mut known, m("b", 1, 5), "a"), "same version is no change");
        assert!(merge_member(&mut known, m("b", 1, 6), "a"));
        assert!(merge_member(&mut known, m("b", 2, 0), "a"), "restart wins over any old version");
        assert_eq!(known["b"].generation, 2);
    }

    #[test]
    fn own_entry_is_never_overwritten() {
        let mut known = BTreeMap::new();
        known.insert("a".to_string(), m("a", 1, 1));
        assert!(!merge_member(&mut known, m("a", 9, 9), "a"));
        assert_eq!(known["a"].generation, 1);
    }
}
