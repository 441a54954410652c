//! `removenode` is final: tombstones for removed ids, the pure rules that
//! keep a removed node out of the ring, and what a node does when it learns
//! that it was removed itself.
//!
//! **Why a tombstone.** `removenode` marks a dead node `left` in one
//! `(generation, version)` of its entry. Gossip lets a newer generation
//! replace an entry outright, so a removed node that restarts on its old
//! data dir (systemd restarts it) came back `normal` with its old tokens and
//! stale data, and the nodes that had taken over its ranges dropped out of
//! the replica sets. A QUORUM read could then miss an acknowledged write.
//!
//! **The rule.** Every node keeps `Removed`: removed id → the generation it
//! was removed at. Gossip carries the whole map (the `removed` field of
//! `GossipRequest` and `GossipResponse`), merged as a union keeping the
//! lowest generation, and it is persisted in `meta` with the member list.
//! For a tombstoned id:
//! - an entry with a generation at or above the tombstone's is refused: a
//!   restart, or a fresh data dir reusing the id, cannot rejoin;
//! - an older entry merges as usual, but the known entry is kept `left`;
//! - both rings leave it out, since it is never `normal`, `joining` or
//!   `leaving`.
//!
//! **The removed node.** Its own entry is never taken from gossip, so it
//! learns of its removal only from a tombstone for its own id, which comes
//! with the first gossip exchange with any node that knows. It then records
//! `left` and `removed` in `meta`, logs an error, and cancels its shutdown
//! token, so it stops serving. A start on that data dir is refused with the
//! same message. The way back for the machine is a fresh data dir *and* a
//! new id. Tombstones are kept for good: an id and a `u64` each.
//!
//! Cassandra keeps removed endpoints in gossip for 3 days for the same
//! reason (`Gossiper.justRemovedEndpoints`, quarantine); ringkv has no
//! expiry, because an id can always be replaced by a new one.

use std::collections::BTreeMap;

use ringkv_proto::v1 as pb;

use super::merge::{merge_member, Merged};
use super::{Member, Membership, NodeState};
use crate::handles::Handles;

/// Removed node ids, each with the generation it was removed at.
pub type Removed = BTreeMap<String, u64>;

/// Merges tombstones into `known`, keeping the lowest generation per id, so
/// the tombstone covers every incarnation from the one removed. Returns the
/// ids whose tombstone is new or now covers more.
pub fn merge_removed(known: &mut Removed, incoming: impl IntoIterator<Item = (String, u64)>) -> Vec<String> {
    let mut changed = Vec::new();
    for (id, generation) in incoming {
        if id.is_empty() {
            continue;
        }
        match known.get_mut(&id) {
            Some(at) if *at <= generation => {}
            Some(at) => {
                *at = generation;
                changed.push(id);
            }
            None => {
                known.insert(id.clone(), generation);
                changed.push(id);
            }
        }
    }
    changed
}

/// [`merge_member`] behind the tombstones: a removed id's entry at or
/// above its tombstone's generation is refused, and a removed id is never
/// anything but `left`.
pub fn merge_screened(known: &mut BTreeMap<String, Member>, removed: &Removed, incoming: Member, me: &str) -> Merged {
    let Some(&at) = removed.get(&incoming.id) else {
        return merge_member(known, incoming, me);
    };
    if incoming.generation >= at {
        return Merged::default();
    }
    let id = incoming.id.clone();
    let mut merged = merge_member(known, incoming, me);
    merged.state |= force_left(known, &id);
    merged
}

/// Keeps a removed id's known entry `left`; returns whether it changed.
fn force_left(known: &mut BTreeMap<String, Member>, id: &str) -> bool {
    match known.get_mut(id) {
        Some(m) if m.state != NodeState::Left => {
            m.state = NodeState::Left;
            true
        }
        _ => false,
    }
}

/// What a removed node says when it refuses to serve, and what to do.
pub fn removed_message(id: &str, generation: u64) -> String {
    format!(
        "node {id} was removed from the cluster (ringkv removenode; incarnation {generation}) and must not serve this data again; \
         to bring this machine back, start it with a fresh --data-dir and a new --id (a removed id is refused for good)"
    )
}

impl Membership {
    /// Every tombstone this node knows.
    pub fn removed(&self) -> Removed {
        self.inner.read().expect("lock").removed.clone()
    }

    /// The tombstones for the wire.
    pub fn removed_wire(&self) -> Vec<pb::RemovedNode> {
        self.removed().into_iter().map(|(id, generation)| pb::RemovedNode { id, generation }).collect()
    }

    /// The generation `id` was removed at, if it was.
    pub fn removed_at(&self, id: &str) -> Option<u64> {
        self.inner.read().expect("lock").removed.get(id).copied()
    }

    /// Merges gossiped tombstones; a newly removed member goes `left` and
    /// the rings are rebuilt. Returns whether anything changed.
    pub fn merge_removed(&self, incoming: impl IntoIterator<Item = (String, u64)>) -> bool {
        let mut inner = self.inner.write().expect("lock");
        let changed = merge_removed(&mut inner.removed, incoming);
        if changed.is_empty() {
            return false;
        }
        for id in &changed {
            if *id != self.me {
                force_left(&mut inner.members, id);
            }
        }
        let (ring, future) = super::build_rings(&inner.members);
        inner.ring = ring;
        inner.future = future;
        true
    }
}

/// Merges the tombstones of a gossip message, then stops this node if one
/// of them names it.
pub fn learn(s: &Handles, incoming: Vec<pb::RemovedNode>) {
    if incoming.is_empty() {
        return;
    }
    if s.membership.merge_removed(incoming.into_iter().map(|r| (r.id, r.generation))) {
        s.save_members();
    }
    stop_if_removed(s);
}

/// If this node's id has a tombstone: records `left` and `removed` in
/// `meta` (so a restart refuses to start) and cancels the shutdown token
/// (so it stops serving now).
pub fn stop_if_removed(s: &Handles) {
    let Some(generation) = s.membership.removed_at(&s.config.id) else { return };
    if s.shutdown.is_cancelled() {
        return;
    }
    let persisted = s.store.meta_put("removed", &generation).and_then(|_| s.store.meta_put("left", &true));
    if let Err(e) = persisted {
        tracing::error!(node = %s.config.id, error = %e, "could not record the removal; stopping anyway");
    }
    tracing::error!(node = %s.config.id, generation, "{}; stopping now", removed_message(&s.config.id, generation));
    s.shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, generation: u64, version: u64, state: NodeState) -> Member {
        Member {
            id: id.into(),
            generation,
            version,
            state,
            heartbeat: 1,
            tokens: vec![u64::from(id.as_bytes()[0]) << 56],
            ..Default::default()
        }
    }

    #[test]
    fn tombstones_merge_as_a_union_keeping_the_lowest_generation() {
        let mut known = Removed::new();
        assert_eq!(merge_removed(&mut known, [("d".into(), 7)]), vec!["d".to_string()]);
        assert_eq!(merge_removed(&mut known, [("d".into(), 9)]), Vec::<String>::new(), "a later incarnation is already covered");
        assert_eq!(merge_removed(&mut known, [("d".into(), 5), ("e".into(), 1)]), vec!["d".to_string(), "e".to_string()]);
        assert_eq!(known, Removed::from([("d".into(), 5), ("e".into(), 1)]));
        assert!(merge_removed(&mut known, [(String::new(), 1)]).is_empty(), "an empty id is ignored");
    }

    #[test]
    fn a_removed_node_restarting_with_a_newer_generation_stays_left() {
        let mut known = BTreeMap::new();
        known.insert("d".to_string(), m("d", 7, 3, NodeState::Left));
        let removed = Removed::from([("d".into(), 7)]);
        for generation in [7, 8, 1_000] {
            let merged = merge_screened(&mut known, &removed, m("d", generation, 1, NodeState::Normal), "a");
            assert_eq!(merged, Merged::default(), "generation {generation} refused");
            assert_eq!((known["d"].generation, known["d"].state), (7, NodeState::Left));
        }
    }

    #[test]
    fn an_older_entry_of_a_removed_id_never_makes_it_a_member_again() {
        let removed = Removed::from([("d".into(), 7)]);
        let mut known = BTreeMap::new();
        let merged = merge_screened(&mut known, &removed, m("d", 6, 1, NodeState::Normal), "a");
        assert!(merged.state);
        assert_eq!(known["d"].state, NodeState::Left, "learned, but as left");
    }

    #[test]
    fn ids_without_a_tombstone_merge_as_before() {
        let removed = Removed::from([("d".into(), 7)]);
        let mut known = BTreeMap::new();
        merge_screened(&mut known, &removed, m("b", 1, 1, NodeState::Normal), "a");
        let merged = merge_screened(&mut known, &removed, m("b", 2, 1, NodeState::Normal), "a");
        assert_eq!(merged, Merged { state: true, heartbeat: true }, "a restart of a member still replaces its entry");
        assert_eq!(known["b"].generation, 2);
    }

    #[test]
    fn membership_drops_a_removed_member_from_both_rings_when_the_tombstone_arrives() {
        let cfg = super::super::DetectorConfig { threshold: 8.0, interval_ms: 1000, pause_ms: 3000 };
        let view = Membership::new(m("a", 1, 1, NodeState::Normal), cfg);
        view.merge([m("d", 9, 1, NodeState::Normal)]);
        assert!(view.ring().nodes().contains(&"d".to_string()));
        assert!(view.merge_removed([("d".to_string(), 7)]));
        assert!(!view.ring().nodes().contains(&"d".to_string()) && !view.future_ring().nodes().contains(&"d".to_string()));
        assert_eq!(view.member("d").map(|m| m.state), Some(NodeState::Left));
        assert!(!view.merge([m("d", 10, 1, NodeState::Normal)]), "a later restart is refused too");
        assert_eq!(view.removed_at("d"), Some(7));
    }
}
