//! Cleanup: dropping the data of ranges this node no longer replicates
//! (Cassandra's `nodetool cleanup`).
//!
//! **Why.** A join moves ranges away from their old replicas, and the old
//! copies stayed. Once the new owners purged a deleted key's tombstone
//! (after `tombstone_grace`), the old copy was the only one left: a scan,
//! which asks every node, returned the deleted value, and when the ring
//! later gave the range back (the joiner left), anti-entropy copied the
//! stale value to every replica. Deletes came back.
//!
//! **The rule.** A key is dropped only when this node replicates its token
//! in neither the current ring nor the future one, and only when:
//! - this node is `normal` and owns tokens in both rings (a joining node
//!   owns nothing yet and must keep what it streamed);
//! - the ring is settled: the current and the future ring are the same, so
//!   no node is joining or leaving. A join goes `normal` only after it has
//!   streamed its ranges from every live replica, so the new owners then
//!   hold the data.
//!
//! A key is removed with `Store::purge`, only if its record is unchanged
//! since it was read. Nothing is pushed anywhere first: pushing an old copy
//! to owners that have since purged a tombstone is exactly the
//! resurrection this prevents.
//!
//! **When.** Automatically, once both rings have stayed unchanged for
//! `cleanup_delay` (checked by the anti-entropy worker; 0 turns it
//! off), once per ring; and on demand through `Admin.Cleanup` (`ringkv
//! cleanup`).

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use tokio::time::{Duration, Instant};

use super::pass::Repair;
use crate::error::{Error, Result};
use crate::membership::NodeState;
use crate::ring::{token_of, Ring};
use crate::store::Store;

/// What one cleanup dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Ranges of the current ring this node does not replicate, scanned.
    pub ranges: u32,
    /// Keys dropped.
    pub keys: u64,
    /// Their stored bytes (key and record).
    pub bytes: u64,
}

/// Drops every key `me` replicates in neither `current` nor `future`.
/// Does nothing unless `me` owns tokens in both rings.
pub fn drop_unowned(store: &Store, current: &Ring, future: &Ring, me: &str, n: usize) -> Result<Cleaned> {
    let mut out = Cleaned::default();
    let me_owned = |r: &Ring| r.nodes().iter().any(|x| x == me);
    if !me_owned(current) || !me_owned(future) {
        return Ok(out);
    }
    for (start, end, _) in current.ranges() {
        if current.replicas_of(end, n).iter().any(|r| r == me) {
            continue;
        }
        out.ranges += 1;
        store.for_each_in_range(start, end, |key, raw| {
            if !future.replicas_of(token_of(key), n).iter().any(|r| r == me) && store.purge(key, raw)? {
                out.keys += 1;
                out.bytes += (key.len() + raw.len()) as u64;
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Decides when automatic cleanup is due: both rings unchanged for the
/// delay, the same as each other, and not cleaned for yet.
pub struct Schedule {
    current: Arc<Ring>,
    future: Arc<Ring>,
    since: Instant,
    done: bool,
}

impl Schedule {
    /// Starts watching at `now`; the first cleanup is a delay away.
    pub fn new(current: Arc<Ring>, future: Arc<Ring>, now: Instant) -> Self {
        Self { current, future, since: now, done: false }
    }

    /// True once per settled ring, `delay` after it last changed (never
    /// when `delay` is zero).
    pub fn due(&mut self, current: &Arc<Ring>, future: &Arc<Ring>, now: Instant, delay: Duration) -> bool {
        if self.current.tokens() != current.tokens() || self.future.tokens() != future.tokens() {
            *self = Self::new(current.clone(), future.clone(), now);
        }
        let settled = current.tokens() == future.tokens() && !current.is_empty();
        if delay.is_zero() || self.done || !settled || now.duration_since(self.since) < delay {
            return false;
        }
        self.done = true;
        true
    }
}

/// Runs a cleanup on this node now, if its ring is settled.
pub async fn run_cleanup(r: &Repair) -> Result<pb::CleanupReport> {
    let s = &r.h;
    let started = Instant::now();
    let me = s.config.id.clone();
    let state = s.membership.member(&me).map(|m| m.state);
    if state != Some(NodeState::Normal) {
        return Err(Error::InvalidArgument(format!("{me} is {}; only a normal node cleans up", state.map_or("unknown", |st| st.as_str()))));
    }
    let in_flux: Vec<String> = s
        .membership
        .members()
        .into_iter()
        .filter(|m| matches!(m.state, NodeState::Joining | NodeState::Leaving) && !m.tokens.is_empty())
        .map(|m| format!("{} is {}", m.id, m.state.as_str()))
        .collect();
    let (current, future) = (s.membership.ring(), s.membership.future_ring());
    if !in_flux.is_empty() || current.tokens() != future.tokens() {
        return Err(Error::InvalidArgument(format!(
            "the ring is changing ({}); run cleanup once the join or leave has finished",
            if in_flux.is_empty() { "views differ".to_string() } else { in_flux.join(", ") }
        )));
    }
    let store = s.store.clone();
    let n = s.config.replication_factor;
    let who = me.clone();
    let cleaned = if store.engine().blocking() {
        tokio::task::spawn_blocking(move || drop_unowned(&store, &current, &future, &who, n))
            .await
            .map_err(|e| Error::Storage(format!("cleanup task failed: {e}")))??
    } else {
        drop_unowned(&store, &current, &future, &who, n)?
    };
    r.stats.cleaned(cleaned.keys);
    let report = pb::CleanupReport {
        node: me.clone(),
        ranges_scanned: cleaned.ranges,
        keys_removed: cleaned.keys,
        bytes_removed: cleaned.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        node = %me, ranges = cleaned.ranges, keys = cleaned.keys, bytes = cleaned.bytes, ms = report.duration_ms,
        "cleanup: dropped the data of ranges this node no longer replicates"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::version::{Context, DvvSet, Hlc, Sibling};

    fn put(store: &Store, key: &str) {
        let sib =
            Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: "a".into() }, value: b"v".to_vec(), tombstone: false, expires_at_ms: None };
        store.update(key.as_bytes(), |d: &mut DvvSet| d.update(&Context::new(), "a", sib, false)).unwrap();
    }

    fn ring(nodes: &[(&str, &[u64])]) -> Ring {
        Ring::new(nodes.iter().map(|(id, t)| (*id, *t)))
    }

    #[test]
    fn only_keys_this_node_replicates_in_neither_ring_are_dropped() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        let q = u64::MAX / 4;
        let before = ring(&[("a", &[q]), ("b", &[2 * q]), ("c", &[3 * q])]);
        let after = ring(&[("a", &[q]), ("b", &[2 * q]), ("c", &[3 * q]), ("d", &[u64::MAX])]);
        // What a held before d joined.
        let keys: Vec<String> =
            (0..300).map(|i| format!("k{i}")).filter(|k| before.preference_list(k.as_bytes(), 2).contains(&"a".to_string())).collect();
        keys.iter().for_each(|k| put(&store, k));
        assert_eq!(drop_unowned(&store, &before, &before, "a", 2).unwrap().keys, 0, "nothing moved");
        let joining = drop_unowned(&store, &before, &after, "a", 2).unwrap();
        assert_eq!(joining.keys, 0, "while d joins, a still replicates the range it gives up");

        let cleaned = drop_unowned(&store, &after, &after, "a", 2).unwrap();
        let owned = |k: &String| after.preference_list(k.as_bytes(), 2).contains(&"a".to_string());
        let unowned = keys.iter().filter(|k| !owned(k)).count() as u64;
        assert!(unowned > 0 && cleaned.keys == unowned, "{cleaned:?}, {unowned} unowned");
        for k in &keys {
            assert_eq!(store.read(k.as_bytes()).unwrap().is_some(), owned(k), "{k}");
        }
        assert_eq!(drop_unowned(&store, &after, &after, "a", 2).unwrap().keys, 0, "a second cleanup finds nothing");
    }

    #[test]
    fn a_node_outside_either_ring_drops_nothing() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        put(&store, "k");
        let others = ring(&[("b", &[1]), ("c", &[u64::MAX / 2])]);
        let with_me = ring(&[("a", &[7]), ("b", &[1]), ("c", &[u64::MAX / 2])]);
        assert_eq!(drop_unowned(&store, &others, &with_me, "a", 1).unwrap(), Cleaned::default(), "joining");
        assert_eq!(drop_unowned(&store, &with_me, &others, "a", 1).unwrap(), Cleaned::default(), "leaving");
        assert!(store.read(b"k").unwrap().is_some());
    }

    #[test]
    fn automatic_cleanup_is_due_once_after_the_ring_settles_for_the_delay() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let delay = Duration::from_secs(10);
        let old = Arc::new(ring(&[("a", &[1])]));
        let new = Arc::new(ring(&[("a", &[1]), ("b", &[u64::MAX / 2])]));
        let mut sched = Schedule::new(old.clone(), old.clone(), t0);
        assert!(!sched.due(&old, &new, s(20), delay), "a join in progress is not settled");
        assert!(!sched.due(&new, &new, s(25), delay), "settled, but only just");
        assert!(!sched.due(&new, &new, s(34), delay));
        assert!(sched.due(&new, &new, s(35), delay), "settled for the delay");
        assert!(!sched.due(&new, &new, s(99), delay), "once per ring");
        assert!(!sched.due(&old, &old, s(100), delay), "a new change restarts the wait");
        assert!(sched.due(&old, &old, s(110), delay));
        let mut off = Schedule::new(old.clone(), old.clone(), t0);
        assert!(!off.due(&old, &old, s(1_000), Duration::ZERO), "0 turns it off");
    }
}
