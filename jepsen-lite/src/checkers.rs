//! Invariant checkers: pure functions over a [`History`] (and the final
//! state), each returning the violations it found. Every write in a
//! history is a blind write of a unique value, so a value names its write.
//!
//! "w' happened before w" means w' completed strictly before w was invoked
//! (in simulated ms). Only then does last-writer-wins by HLC promise that w
//! wins over w' (the simulated clocks agree). Anything else is concurrent,
//! and either may win.

use std::collections::{BTreeMap, HashMap};

use crate::history::{History, Kind, Op, Outcome};

/// Values to the put that wrote them.
pub type Writers<'a> = HashMap<&'a str, &'a Op>;

fn before(a: &Op, b: &Op) -> bool {
    a.outcome == Outcome::Ok && a.complete_ms < b.invoke_ms
}

/// Per key: the writes that may have landed, for the supersession test.
struct KeyWrites {
    /// Indeterminate writes: they may have landed at any time.
    info: usize,
    /// The two latest completion times of acknowledged writes.
    latest_ok: [Option<u64>; 2],
}

fn key_writes(h: &History) -> HashMap<&str, KeyWrites> {
    let mut out: HashMap<&str, KeyWrites> = HashMap::new();
    for o in h.ops.iter().filter(|o| o.may_have_written()) {
        let k = out.entry(o.key.as_str()).or_insert(KeyWrites { info: 0, latest_ok: [None, None] });
        match o.outcome {
            Outcome::Info => k.info += 1,
            _ => {
                let t = Some(o.complete_ms);
                if t > k.latest_ok[0] {
                    k.latest_ok = [t, k.latest_ok[0]];
                } else if t > k.latest_ok[1] {
                    k.latest_ok[1] = t;
                }
            }
        }
    }
    out
}

/// A write `w` may be gone only if another write to its key could have
/// superseded it: one that did not happen before `w` (an indeterminate
/// write, or an acknowledged one that completed after `w` was invoked).
fn superseded(keys: &HashMap<&str, KeyWrites>, w: &Op) -> bool {
    let Some(k) = keys.get(w.key.as_str()) else { return false };
    let own_info = usize::from(w.outcome == Outcome::Info);
    // The latest other acknowledged write: skip w's own completion once.
    let other_latest = if w.outcome == Outcome::Ok && k.latest_ok[0] == Some(w.complete_ms) { k.latest_ok[1] } else { k.latest_ok[0] };
    k.info > own_info || other_latest.is_some_and(|t| t >= w.invoke_ms)
}

/// No acknowledged write at `min_level` or above is missing from the final
/// state unless a later or concurrent write superseded it.
pub fn lost_writes(h: &History, final_values: &BTreeMap<String, Vec<String>>, min_level: usize) -> Vec<String> {
    let keys = key_writes(h);
    let mut bad = Vec::new();
    for w in h.ops.iter().filter(|o| o.outcome == Outcome::Ok && o.level >= min_level) {
        let Some(value) = w.written() else { continue };
        let present = final_values.get(&w.key).is_some_and(|vs| vs.iter().any(|v| v == value));
        if !present && !superseded(&keys, w) {
            bad.push(format!(
                "acknowledged write {value} to {} (level {}, {}..{} ms, via {}) is lost; the final read found {:?}",
                w.key,
                crate::history::level_name(w.level),
                w.invoke_ms,
                w.complete_ms,
                w.detail.coordinator,
                final_values.get(&w.key).cloned().unwrap_or_default()
            ));
        }
    }
    bad
}

/// Every value read was written by some put that may have landed.
pub fn phantom_reads(h: &History, final_values: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let writers = h.writers();
    let mut bad = Vec::new();
    let reads = h.ops.iter().filter_map(|o| o.read().map(|values| (&o.key, values, Some(o))));
    let finals = final_values.iter().map(|(k, vs)| (k, vs.as_slice(), None));
    for (key, values, op) in reads.chain(finals) {
        for v in values {
            if writers.get(v.as_str()).is_none_or(|w| &w.key != key || !w.may_have_written()) {
                let at = op.map_or("in the final read".to_string(), |o| {
                    format!("at {}..{} ms by client {}", o.invoke_ms, o.complete_ms, o.client)
                });
                bad.push(format!("read {v} from {key} {at}, which no put wrote"));
            }
        }
    }
    bad
}

/// Whether a read's values are at least as new as write `w`: it returned
/// `w`'s value, or a value whose write did not happen before `w`.
pub fn sees_at_least(writers: &Writers, values: &[String], w: &Op) -> bool {
    values.iter().any(|v| Some(v.as_str()) == w.written() || writers.get(v.as_str()).is_some_and(|o| !before(o, w)))
}

/// Per client: after an acknowledged write at level W, a later read of the
/// same key at level R with R + W > n sees that write or a newer one.
pub fn read_your_writes(h: &History, n: usize) -> Vec<String> {
    let writers = h.writers();
    let mut bad = Vec::new();
    let mut last_write: BTreeMap<(usize, &str), &Op> = BTreeMap::new();
    for op in &h.ops {
        if op.outcome != Outcome::Ok {
            continue;
        }
        match &op.kind {
            Kind::Put { .. } | Kind::Cas { .. } => {
                if op.written().is_some() {
                    last_write.insert((op.client, &op.key), op);
                }
            }
            Kind::Get { values } => {
                if let Some(w) = last_write.get(&(op.client, op.key.as_str())) {
                    if op.level + w.level > n && !sees_at_least(&writers, values, w) {
                        bad.push(format!(
                            "client {} wrote {:?} to {} at {} (done at {} ms), then read {values:?} at {} ({}..{} ms)",
                            op.client,
                            w.written(),
                            op.key,
                            crate::history::level_name(w.level),
                            w.complete_ms,
                            crate::history::level_name(op.level),
                            op.invoke_ms,
                            op.complete_ms
                        ));
                    }
                }
            }
        }
    }
    bad
}

/// Per client and key: successive acknowledged reads at `min_level` or
/// above never go back to values older than what an earlier read saw.
pub fn monotonic_reads(h: &History, min_level: usize) -> Vec<String> {
    let writers = h.writers();
    let mut bad = Vec::new();
    let mut last_seen: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    for op in h.ops.iter().filter(|o| o.outcome == Outcome::Ok && o.level >= min_level) {
        let Kind::Get { values } = &op.kind else { continue };
        if let Some(prev) = last_seen.get(&(op.client, op.key.as_str())) {
            for w in prev {
                if !sees_at_least(&writers, values, w) {
                    bad.push(format!(
                        "client {} read {values:?} from {} at {}..{} ms after having seen {:?}",
                        op.client,
                        op.key,
                        op.invoke_ms,
                        op.complete_ms,
                        w.written()
                    ));
                }
            }
        }
        let seen: Vec<&Op> = values.iter().filter_map(|v| writers.get(v.as_str()).copied()).collect();
        last_seen.insert((op.client, &op.key), seen);
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: usize, key: &str, value: &str, level: usize, t: (u64, u64), outcome: Outcome) -> Op {
        let kind = Kind::Put { value: value.into() };
        Op { client, key: key.into(), kind, level, invoke_ms: t.0, complete_ms: t.1, outcome, detail: Default::default() }
    }

    fn get(client: usize, key: &str, values: &[&str], level: usize, t: (u64, u64)) -> Op {
        let values = values.iter().map(|v| v.to_string()).collect();
        Op {
            client,
            key: key.into(),
            kind: Kind::Get { values },
            level,
            invoke_ms: t.0,
            complete_ms: t.1,
            outcome: Outcome::Ok,
            detail: Default::default(),
        }
    }

    fn finals(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect())).collect()
    }

    #[test]
    fn lost_write_is_caught_and_superseded_one_is_not() {
        let h = History::of(vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (20, 30), Outcome::Ok)]);
        assert!(lost_writes(&h, &finals(&[("k", &["b"])]), 2).is_empty(), "b came after a and superseded it");
        assert_eq!(lost_writes(&h, &finals(&[("k", &["a"])]), 2).len(), 1, "b is lost: nothing after it");
        let concurrent = History::of(vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (5, 15), Outcome::Ok)]);
        assert!(lost_writes(&concurrent, &finals(&[("k", &["a"])]), 2).is_empty(), "concurrent: either may win");
        let failed_later = History::of(vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (20, 30), Outcome::Fail)]);
        assert_eq!(lost_writes(&failed_later, &finals(&[("k", &["b"])]), 2).len(), 1, "a failed write cannot supersede a");
        assert_eq!(phantom_reads(&failed_later, &finals(&[("k", &["b"])])).len(), 1, "and reading it is a phantom");
    }

    #[test]
    fn phantom_read_is_caught() {
        let h = History::of(vec![put(0, "k", "a", 1, (0, 1), Outcome::Ok), get(1, "k", &["zz"], 1, (2, 3))]);
        assert_eq!(phantom_reads(&h, &BTreeMap::new()).len(), 1);
        let wrong_key = History::of(vec![put(0, "k", "a", 1, (0, 1), Outcome::Ok), get(1, "j", &["a"], 1, (2, 3))]);
        assert_eq!(phantom_reads(&wrong_key, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn stale_read_after_own_quorum_write_is_caught() {
        let h = History::of(vec![
            put(0, "k", "old", 2, (0, 5), Outcome::Ok),
            put(0, "k", "new", 2, (10, 15), Outcome::Ok),
            get(0, "k", &["old"], 2, (20, 25)),
        ]);
        assert_eq!(read_your_writes(&h, 3).len(), 1);
        let weak = History::of(vec![
            put(0, "k", "old", 1, (0, 5), Outcome::Ok),
            put(0, "k", "new", 1, (10, 15), Outcome::Ok),
            get(0, "k", &["old"], 1, (20, 25)),
        ]);
        assert!(read_your_writes(&weak, 3).is_empty(), "ONE/ONE promises nothing");
    }

    #[test]
    fn going_back_in_time_is_caught() {
        let h = History::of(vec![
            put(0, "k", "old", 2, (0, 5), Outcome::Ok),
            put(0, "k", "new", 2, (10, 15), Outcome::Ok),
            get(1, "k", &["new"], 2, (20, 25)),
            get(1, "k", &["old"], 2, (30, 35)),
        ]);
        assert_eq!(monotonic_reads(&h, 2).len(), 1);
    }
}
