//! Who a request goes to: pure placement arithmetic, no I/O.
//!
//! [`plan`] turns one node's view of the cluster (the ring, the ring once
//! pending joins and leaves complete, a liveness predicate, its zone) and a
//! request (level, write or read, sloppy or strict) into the nodes to send
//! to and the answers that count. It fails fast with `Unavailable` when
//! fewer than the level needs are alive (DESIGN §2), before any data moves.
//!
//! Three rules shape it:
//! - **Pending replicas.** Writes also go to nodes that will own the key
//!   once a join or leave completes. As in Cassandra, each pending replica
//!   adds one to the acknowledgements required, so a quorum of the future
//!   owners holds every acknowledged write.
//! - **LOCAL_QUORUM** counts only the replicas (current and pending) in the
//!   coordinator's zone, and needs a majority of the current ones.
//!   LOCAL_SERIAL's Paxos participants are planned the same way.
//! - **Sloppy quorum** (Dynamo §4.6). Each down replica whose answer counts
//!   may be replaced by a live node further round the ring. The stand-in
//!   holds the write as a hint for that replica and counts toward W; the
//!   live nodes left over are spares, recruited if a replica fails
//!   mid-write.

use crate::error::{Error, Result};
use crate::quorum::Level;
use crate::ring::Ring;

/// One node's view of the cluster, as the plan needs it.
pub(crate) struct View<'a> {
    /// The current ring.
    pub ring: &'a Ring,
    /// The ring once pending joins and leaves complete.
    pub future: &'a Ring,
    /// Whether a node is reachable as far as this node knows.
    pub is_up: &'a dyn Fn(&str) -> bool,
    /// This node's zone, for LOCAL_QUORUM.
    pub zone: &'a str,
    /// The replication factor N.
    pub n: usize,
    /// Whether hinted handoff is on (ANY may then proceed with no replica up).
    pub hinted_handoff: bool,
}

/// What one request asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    /// The consistency level.
    pub level: Level,
    /// A write (pending replicas receive it; sloppy quorum may apply).
    pub write: bool,
    /// Let live nodes beyond the preference list stand in for down replicas.
    pub sloppy: bool,
}

/// Who a request goes to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// The key's current replicas, in preference order.
    pub prefs: Vec<String>,
    /// Future replicas that also receive writes.
    pub pending: Vec<String>,
    /// Live nodes to send to.
    pub targets: Vec<String>,
    /// Nodes whose answers count toward `required`.
    pub counted: Vec<String>,
    /// Answers needed.
    pub required: usize,
    /// Live nodes among `counted`.
    pub alive_counted: usize,
    /// Sloppy quorum: (stand-in, the replica it stands in for).
    pub stand_ins: Vec<(String, String)>,
    /// Sloppy quorum: more live nodes to recruit if a replica fails mid-write.
    pub spares: Vec<String>,
}

impl Plan {
    /// Every node a write reaches or lists: current and pending replicas,
    /// then stand-ins.
    pub fn everyone(&self) -> Vec<String> {
        self.prefs.iter().chain(&self.pending).chain(self.stand_ins.iter().map(|(si, _)| si)).cloned().collect()
    }

    /// Replicas (current or pending) not sent to and with no stand-in: the
    /// coordinator keeps a hint for each.
    pub fn unreached(&self) -> Vec<String> {
        let covered = |target: &String| self.stand_ins.iter().any(|(_, t)| t == target);
        self.prefs.iter().chain(&self.pending).filter(|t| !self.targets.contains(t) && !covered(t)).cloned().collect()
    }
}

/// Who to ask for `key` and whose answers count, or `Unavailable` when
/// fewer than the level needs are alive. See the module doc for the rules.
pub(crate) fn plan(view: &View, key: &[u8], ask: Ask) -> Result<Plan> {
    let Ask { level, write, sloppy } = ask;
    let (ring, n) = (view.ring, view.n);
    let prefs = ring.preference_list(key, n);
    let pending: Vec<String> =
        if write { view.future.preference_list(key, n).into_iter().filter(|p| !prefs.contains(p)).collect() } else { Vec::new() };
    let (counted, required) = if matches!(level, Level::LocalQuorum | Level::LocalSerial) {
        let zone = view.zone;
        let local: Vec<String> = prefs.iter().filter(|p| ring.zone(p) == zone).cloned().collect();
        if local.is_empty() {
            return Err(Error::Unavailable {
                level: level.as_str().into(),
                required: 1,
                alive: 0,
                hint: format!("; no replica of this key is in zone {zone:?}"),
            });
        }
        let local_pending: Vec<String> = pending.iter().filter(|p| view.future.zone(p) == zone).cloned().collect();
        let required = local.len() / 2 + 1 + local_pending.len();
        (local.into_iter().chain(local_pending).collect::<Vec<_>>(), required)
    } else if level == Level::Any {
        (prefs.iter().chain(&pending).cloned().collect(), 1)
    } else {
        (prefs.iter().chain(&pending).cloned().collect(), level.required(n) + pending.len())
    };
    let up = |id: &String| (view.is_up)(id);
    let alive_counted = counted.iter().filter(|id| up(id)).count();
    let mut stand_ins = Vec::new();
    let mut spares = Vec::new();
    if sloppy && write {
        let down: Vec<&String> = counted.iter().filter(|id| !up(id)).collect();
        spares = ring
            .preference_list(key, ring.nodes().len())
            .into_iter()
            .filter(|c| !prefs.contains(c) && !pending.contains(c) && up(c))
            .collect();
        let needed = required.saturating_sub(alive_counted).min(down.len()).min(spares.len());
        stand_ins = spares.drain(..needed).zip(down).map(|(si, target)| (si, target.clone())).collect();
    }
    let any_can_hint = level == Level::Any && view.hinted_handoff;
    if alive_counted + stand_ins.len() < required && !any_can_hint {
        let hint = if prefs.len() < n {
            format!("; the ring has {} node(s) but replication_factor is {n}", prefs.len())
        } else {
            let down: Vec<&str> = counted.iter().filter(|p| !up(p)).map(String::as_str).collect();
            let mut h = format!("; down: {}", down.join(", "));
            if sloppy {
                h.push_str(&format!(
                    "; sloppy quorum found {} healthy node(s) outside the preference list to stand in (the ring has {} nodes for replication factor {n})",
                    stand_ins.len(),
                    ring.nodes().len()
                ));
            }
            h
        };
        return Err(Error::Unavailable { level: level.as_str().into(), required: required as u32, alive: alive_counted as u32, hint });
    }
    let targets = prefs.iter().chain(&pending).filter(|id| up(id)).cloned().collect();
    Ok(Plan { prefs, pending, targets, counted, required, alive_counted, stand_ins, spares })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token_of;

    const KEY: &[u8] = b"k";

    /// Node ids, in a table row.
    type Ids = &'static [&'static str];
    /// `Ok(live replicas counted)` or `Err((required, alive))`, in a table row.
    type Want = std::result::Result<usize, (u32, u32)>;
    /// (stand-in, replica) pairs, in a table row.
    type Pairs = &'static [(&'static str, &'static str)];

    /// A ring on which `KEY`'s walk meets `nodes` in the order given, each
    /// `(id, zone)` with one token just past the key's.
    fn ring(nodes: &[(&str, &str)]) -> Ring {
        let t = token_of(KEY);
        let tokens: Vec<[u64; 1]> = (0..nodes.len()).map(|i| [t.wrapping_add(1 + i as u64)]).collect();
        Ring::with_zones(nodes.iter().zip(&tokens).map(|((id, zone), ts)| (*id, *zone, &ts[..])))
    }

    fn one_zone(ids: &[&'static str]) -> Ring {
        ring(&ids.iter().map(|id| (*id, "")).collect::<Vec<_>>())
    }

    fn plan_with(ring: &Ring, future: &Ring, down: &[&str], ask: Ask) -> Result<Plan> {
        let is_up = |id: &str| !down.contains(&id);
        let view = View { ring, future, is_up: &is_up, zone: "z1", n: 3, hinted_handoff: true };
        plan(&view, KEY, ask)
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const fn write(level: Level) -> Ask {
        Ask { level, write: true, sloppy: false }
    }

    const fn read(level: Level) -> Ask {
        Ask { level, write: false, sloppy: false }
    }

    #[test]
    fn every_level_counts_the_replicas_it_needs() {
        let r = one_zone(&["a", "b", "c", "d", "e"]);
        // (ask, required); a, b and c are asked and counted at every level
        let table = [
            (read(Level::One), 1),
            (read(Level::Two), 2),
            (read(Level::Quorum), 2),
            (read(Level::All), 3),
            (write(Level::One), 1),
            (write(Level::Two), 2),
            (write(Level::Quorum), 2),
            (write(Level::All), 3),
            (write(Level::Any), 1),
        ];
        for (ask, required) in table {
            let p = plan_with(&r, &r, &[], ask).unwrap();
            assert_eq!(p.prefs, strs(&["a", "b", "c"]), "{ask:?}");
            assert_eq!(p.counted, p.prefs, "{ask:?}");
            assert_eq!(p.targets, p.prefs, "{ask:?}");
            assert!(p.pending.is_empty() && p.stand_ins.is_empty() && p.spares.is_empty(), "{ask:?}");
            assert_eq!((p.required, p.alive_counted), (required, 3), "{ask:?}");
        }
    }

    #[test]
    fn local_quorum_counts_only_the_coordinators_zone() {
        // The key's replicas: a (z1), b (z2), c (z1); this node is in z1.
        let r = ring(&[("a", "z1"), ("b", "z2"), ("c", "z1"), ("d", "z2")]);
        let p = plan_with(&r, &r, &[], read(Level::LocalQuorum)).unwrap();
        assert_eq!(p.prefs, strs(&["a", "b", "c"]));
        assert_eq!(p.counted, strs(&["a", "c"]));
        assert_eq!((p.required, p.alive_counted), (2, 2));
        // Every live replica still receives it; only z1's answers count.
        assert_eq!(p.targets, strs(&["a", "b", "c"]));
        // One local replica down: 1 of 2 is not a majority of the zone.
        let e = plan_with(&r, &r, &["c"], read(Level::LocalQuorum)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 2, alive: 1, .. }), "{e}");
        // A remote replica down does not matter to LOCAL_QUORUM.
        assert_eq!(plan_with(&r, &r, &["b"], read(Level::LocalQuorum)).unwrap().alive_counted, 2);
    }

    #[test]
    fn local_quorum_with_no_replica_in_the_zone_is_unavailable() {
        let r = ring(&[("a", "z2"), ("b", "z3"), ("c", "z2")]);
        let e = plan_with(&r, &r, &[], read(Level::LocalQuorum)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 1, alive: 0, .. }), "{e}");
        assert!(e.to_string().contains("no replica of this key is in zone \"z1\""), "{e}");
    }

    #[test]
    fn writes_during_a_join_also_go_to_the_pending_replica_and_need_its_ack() {
        let now = one_zone(&["a", "b", "c", "d"]);
        // x joins ahead of a: the future replicas are x, a, b.
        let future = one_zone(&["x", "a", "b", "c", "d"]);
        // (level, required with x pending)
        let table = [(Level::One, 2), (Level::Two, 3), (Level::Quorum, 3), (Level::All, 4), (Level::Any, 1)];
        for (level, required) in table {
            let p = plan_with(&now, &future, &[], write(level)).unwrap();
            assert_eq!(p.prefs, strs(&["a", "b", "c"]), "{level:?}");
            assert_eq!(p.pending, strs(&["x"]), "{level:?}");
            assert_eq!(p.counted, strs(&["a", "b", "c", "x"]), "{level:?}");
            assert_eq!(p.targets, strs(&["a", "b", "c", "x"]), "{level:?}");
            assert_eq!((p.required, p.alive_counted), (required, 4), "{level:?}");
        }
        // Reads ignore the future ring.
        let p = plan_with(&now, &future, &[], read(Level::Quorum)).unwrap();
        assert!(p.pending.is_empty());
        assert_eq!((p.required, p.counted.len()), (2, 3));
    }

    #[test]
    fn a_down_pending_replica_can_make_a_write_unavailable() {
        let now = one_zone(&["a", "b", "c", "d"]);
        let future = one_zone(&["x", "a", "b", "c", "d"]);
        // ALL needs a, b, c and x.
        let e = plan_with(&now, &future, &["x"], write(Level::All)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 4, alive: 3, .. }), "{e}");
        // QUORUM needs 3 of the 4; x is not sent to.
        let p = plan_with(&now, &future, &["x"], write(Level::Quorum)).unwrap();
        assert_eq!((p.required, p.alive_counted), (3, 3));
        assert_eq!(p.targets, strs(&["a", "b", "c"]));
    }

    #[test]
    fn local_quorum_counts_pending_replicas_of_its_own_zone_only() {
        let now = ring(&[("a", "z1"), ("b", "z2"), ("c", "z1"), ("d", "z2")]);
        // x (z1) joins ahead of a; the future replicas are x, b, a.
        let future = ring(&[("x", "z1"), ("a", "z1"), ("b", "z2"), ("c", "z1"), ("d", "z2")]);
        let p = plan_with(&now, &future, &[], write(Level::LocalQuorum)).unwrap();
        assert_eq!(p.pending, strs(&["x"]));
        assert_eq!(p.counted, strs(&["a", "c", "x"]));
        assert_eq!(p.required, 3);
        // A pending replica in another zone is sent to but not counted.
        let future = ring(&[("y", "z2"), ("a", "z1"), ("b", "z2"), ("c", "z1"), ("d", "z2")]);
        let p = plan_with(&now, &future, &[], write(Level::LocalQuorum)).unwrap();
        assert_eq!(p.pending, strs(&["y"]));
        assert_eq!(p.counted, strs(&["a", "c"]));
        assert_eq!(p.required, 2);
        assert_eq!(p.targets, strs(&["a", "b", "c", "y"]));
    }

    #[test]
    fn too_few_live_replicas_fail_fast_per_level() {
        let r = one_zone(&["a", "b", "c", "d", "e"]);
        // (ask, down, Ok(alive_counted) or Err((required, alive)))
        let table: [(Ask, Ids, Want); 10] = [
            (read(Level::One), &["a", "b"], Ok(1)),
            (read(Level::One), &["a", "b", "c"], Err((1, 0))),
            (read(Level::Two), &["a"], Ok(2)),
            (read(Level::Two), &["a", "b"], Err((2, 1))),
            (read(Level::Quorum), &["c"], Ok(2)),
            (write(Level::Quorum), &["b", "c"], Err((2, 1))),
            (read(Level::All), &["a"], Err((3, 2))),
            (write(Level::All), &["d", "e"], Ok(3)),
            // ANY proceeds with every replica down: a hint will do.
            (write(Level::Any), &["a", "b", "c"], Ok(0)),
            (write(Level::One), &["a", "b", "c"], Err((1, 0))),
        ];
        for (ask, down, want) in table {
            let got = plan_with(&r, &r, down, ask);
            match (got, want) {
                (Ok(p), Ok(alive)) => {
                    assert_eq!(p.alive_counted, alive, "{ask:?} down {down:?}");
                    let live: Vec<String> = p.prefs.iter().filter(|id| !down.contains(&id.as_str())).cloned().collect();
                    assert_eq!(p.targets, live, "{ask:?} down {down:?}: only live replicas are sent to");
                }
                (Err(Error::Unavailable { required, alive, hint, .. }), Err(want)) => {
                    assert_eq!((required, alive), want, "{ask:?} down {down:?}");
                    for d in down.iter().filter(|d| p_contains(&r, d)) {
                        assert!(hint.contains(d), "{ask:?}: hint {hint:?} names down replica {d}");
                    }
                }
                (got, want) => panic!("{ask:?} down {down:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn p_contains(r: &Ring, id: &str) -> bool {
        r.preference_list(KEY, 3).iter().any(|p| p == id)
    }

    #[test]
    fn any_without_hinted_handoff_needs_a_live_replica() {
        let r = one_zone(&["a", "b", "c"]);
        let is_up = |_: &str| false;
        let view = View { ring: &r, future: &r, is_up: &is_up, zone: "", n: 3, hinted_handoff: false };
        let e = plan(&view, KEY, write(Level::Any)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 1, alive: 0, .. }), "{e}");
    }

    #[test]
    fn a_ring_smaller_than_n_says_so() {
        let r = one_zone(&["a", "b"]);
        let e = plan_with(&r, &r, &[], read(Level::All)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 3, alive: 2, .. }), "{e}");
        assert!(e.to_string().contains("the ring has 2 node(s) but replication_factor is 3"), "{e}");
        // A level the smaller ring can meet still plans.
        assert_eq!(plan_with(&r, &r, &[], read(Level::Quorum)).unwrap().prefs, strs(&["a", "b"]));
    }

    #[test]
    fn sloppy_quorum_pairs_down_replicas_with_stand_ins_beyond_the_preference_list() {
        let r = one_zone(&["a", "b", "c", "d", "e", "f"]);
        let sloppy = |level| Ask { level, write: true, sloppy: true };
        // (level, down, stand-ins, spares left)
        let table: [(Level, Ids, Pairs, Ids); 6] = [
            // Nothing down: no stand-in, every node beyond the list is a spare.
            (Level::Quorum, &[], &[], &["d", "e", "f"]),
            // QUORUM with one down is met without a stand-in.
            (Level::Quorum, &["b"], &[], &["d", "e", "f"]),
            // QUORUM with two down needs one stand-in, for the first down.
            (Level::Quorum, &["b", "c"], &[("d", "b")], &["e", "f"]),
            // ALL with two down needs two; a down spare is skipped.
            (Level::All, &["a", "c", "d"], &[("e", "a"), ("f", "c")], &[]),
            // ONE with all three down: one stand-in.
            (Level::One, &["a", "b", "c"], &[("d", "a")], &["e", "f"]),
            // ALL with all three down: three stand-ins.
            (Level::All, &["a", "b", "c"], &[("d", "a"), ("e", "b"), ("f", "c")], &[]),
        ];
        for (level, down, stand_ins, spares) in table {
            let p = plan_with(&r, &r, down, sloppy(level)).unwrap_or_else(|e| panic!("{level:?} down {down:?}: {e}"));
            let want: Vec<(String, String)> = stand_ins.iter().map(|(s, t)| (s.to_string(), t.to_string())).collect();
            assert_eq!(p.stand_ins, want, "{level:?} down {down:?}");
            assert_eq!(p.spares, strs(spares), "{level:?} down {down:?}");
            // Stand-ins are not targets: they get a hint, not the write.
            assert!(p.targets.iter().all(|t| !down.contains(&t.as_str()) && p.prefs.contains(t)), "{level:?}");
        }
    }

    #[test]
    fn sloppy_quorum_without_enough_stand_ins_is_unavailable_and_says_why() {
        let r = one_zone(&["a", "b", "c", "d"]);
        let e = plan_with(&r, &r, &["a", "b", "c"], Ask { level: Level::All, write: true, sloppy: true }).unwrap_err();
        let Error::Unavailable { required, alive, hint, .. } = &e else { panic!("{e}") };
        assert_eq!((*required, *alive), (3, 0));
        assert!(hint.contains("sloppy quorum found 1 healthy node(s)"), "{hint}");
        assert!(hint.contains("the ring has 4 nodes for replication factor 3"), "{hint}");
    }

    #[test]
    fn sloppy_reads_and_strict_writes_get_no_stand_ins() {
        let r = one_zone(&["a", "b", "c", "d", "e"]);
        let e = plan_with(&r, &r, &["b", "c"], Ask { level: Level::Quorum, write: false, sloppy: true }).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 2, alive: 1, .. }), "{e}");
        let e = plan_with(&r, &r, &["b", "c"], write(Level::Quorum)).unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(!e.to_string().contains("sloppy"), "{e}");
    }

    #[test]
    fn sloppy_stand_ins_skip_pending_replicas() {
        let now = one_zone(&["a", "b", "c", "d", "e"]);
        // a is leaving, so d will replicate the key: a pending replica that
        // is already on the ring, which must not double as a stand-in.
        let future = one_zone(&["b", "c", "d", "e"]);
        let p = plan_with(&now, &future, &["a", "b"], Ask { level: Level::Quorum, write: true, sloppy: true }).unwrap();
        assert_eq!(p.pending, strs(&["d"]));
        assert_eq!((p.required, p.alive_counted), (3, 2));
        assert_eq!(p.stand_ins, vec![("e".to_string(), "a".to_string())]);
        assert!(p.spares.is_empty());
        assert_eq!(p.targets, strs(&["c", "d"]));
    }

    #[test]
    fn down_replicas_without_a_stand_in_are_the_ones_left_to_hint() {
        let now = one_zone(&["a", "b", "c", "d", "e"]);
        let future = one_zone(&["x", "a", "b", "c", "d", "e"]);
        // a and x down: ALL needs all four of a, b, c, x, so d and e stand in.
        let sloppy = Ask { level: Level::All, write: true, sloppy: true };
        let p = plan_with(&now, &future, &["a", "x"], sloppy).unwrap();
        assert_eq!(p.stand_ins, vec![("d".to_string(), "a".to_string()), ("e".to_string(), "x".to_string())]);
        assert!(p.unreached().is_empty());
        assert_eq!(p.everyone(), strs(&["a", "b", "c", "x", "d", "e"]));
        let p = plan_with(&now, &future, &["a", "x"], write(Level::One)).unwrap();
        assert_eq!(p.unreached(), strs(&["a", "x"]));
        assert_eq!(p.everyone(), strs(&["a", "b", "c", "x"]));
    }
}
