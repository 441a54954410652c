//! The gossip merge rule, pure: how one gossiped member entry updates the
//! known list. The loop that exchanges lists is `gossip.rs`; removal
//! tombstones screen this merge in `removal.rs`.
//!
//! Merge rule per member:
//! - a higher `generation` (a restart) replaces the entry outright;
//! - within a generation, a higher `version` replaces the application state,
//!   and a higher `heartbeat` replaces the heartbeat and load figures.
//!
//! Only a node writes its own entry, with one exception: `removenode`
//! marks a dead node `left`. Its tombstone travels with the member list
//! and screens every merge (`removal.rs`).

use std::collections::BTreeMap;

use super::Member;

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
