//! Push-pull gossip of the member list: the loop. Its pure merge rule is
//! `merge.rs`.
//!
//! Every `gossip_interval`, a node bumps its own heartbeat and sends its
//! whole member list to one random live peer. With probability
//! `down / (live + 1)` it also sends it to one random down peer, which is
//! how a healed or restarted peer is noticed. While it knows no live peer,
//! it sends to its seeds, resolving their names afresh (`seeds.rs`). It merges every reply. Gossip spreads
//! epidemically: a change reaches all n nodes in O(log n) rounds.
//!
//! A round takes [`Gossip`] (config, store, membership, peers, RNG, clock),
//! not the whole node.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use rand::seq::IndexedRandom;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::handles::Gossip;

/// One gossip round.
pub async fn round(g: &Gossip) {
    let s = &g.h;
    let keys = s.store.len().unwrap_or(0);
    s.membership.beat(keys, g.in_flight.load(Ordering::Relaxed));
    let (up, down) = s.membership.peers_by_liveness();
    let mut targets: Vec<String> = Vec::new();
    {
        let mut rng = g.rng.lock().expect("rng lock");
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
        let sent = g.clock.wall_ms();
        match s.peers.gossip(&addr, &members, sent).await {
            Ok((theirs, their_wall, removed)) => {
                // Their clock against the midpoint of our send and receive.
                let mid = (sent + g.clock.wall_ms()) / 2;
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
pub async fn run(g: Gossip, shutdown: CancellationToken) {
    let s = &g.h;
    let mut tick = tokio::time::interval(s.config.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_down: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => round(&g).await,
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
