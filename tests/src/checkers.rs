//! Invariant checkers: pure functions over a [`History`] (and the final
//! state), each returning the violations it found. Every write in a
//! history is a blind write of a unique value, so a value names its write.
//!
//! "w' happened before w" means w' completed strictly before w was invoked
//! (in simulated ms). Only then does last-writer-wins by HLC promise that w
//! wins over w' (the simulated clocks agree). Anything else is concurrent,
//! and either may win.

use std::collections::BTreeMap;

use crate::history::{History, Kind, Op, Outcome};

fn before(a: &Op, b: &Op) -> bool {
    a.outcome == Outcome::Ok && a.complete_ms < b.invoke_ms
}

/// A write `w` may be gone only if another write to its key could have
/// superseded it: one that did not happen before `w`.
fn superseded(h: &History, w: &Op) -> bool {
    h.ops.iter().any(|o| o.key == w.key && o.may_have_written() && o.written() != w.written() && !before(o, w))
}

/// No acknowledged write at `min_level` or above is missing from the final
/// state unless a later or concurrent write superseded it.
pub fn lost_writes(h: &History, final_values: &BTreeMap<String, Vec<String>>, min_level: usize) -> Vec<String> {
    let mut bad = Vec::new();
    for w in h.ops.iter().filter(|o| o.outcome == Outcome::Ok && o.level >= min_level) {
        let Some(value) = w.written() else { continue };
        let present = final_values.get(&w.key).is_some_and(|vs| vs.iter().any(|v| v == value));
        if !present && !superseded(h, w) {
            bad.push(format!("acknowledged write {value} to {} (level {}) is lost", w.key, w.level));
        }
    }
    bad
}

/// Every value read was written by some put.
pub fn phantom_reads(h: &History, final_values: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    let reads = h.ops.iter().filter(|o| o.outcome == Outcome::Ok).filter_map(|o| match &o.kind {
        Kind::Get { values } => Some((&o.key, values)),
        Kind::Put { .. } => None,
    });
    for (key, values) in reads.chain(final_values.iter()) {
        for v in values {
            if h.writer_of(v).is_none_or(|w| &w.key != key || !w.may_have_written()) {
                bad.push(format!("read {v} from {key}, which no put wrote"));
            }
        }
    }
    bad
}

/// Whether a read's values are at least as new as write `w`: it returned
/// `w`'s value, or a value whose write did not happen before `w`.
fn sees_at_least(h: &History, values: &[String], w: &Op) -> bool {
    values.iter().any(|v| Some(v.as_str()) == w.written() || h.writer_of(v).is_some_and(|o| !before(o, w)))
}

/// Per client: after an acknowledged write at level W, a later read of the
/// same key at level R with R + W > n sees that write or a newer one.
pub fn read_your_writes(h: &History, n: usize) -> Vec<String> {
    let mut bad = Vec::new();
    let mut last_write: BTreeMap<(usize, &str), &Op> = BTreeMap::new();
    for op in &h.ops {
        if op.outcome != Outcome::Ok {
            continue;
        }
        match &op.kind {
            Kind::Put { .. } => {
                last_write.insert((op.client, &op.key), op);
            }
            Kind::Get { values } => {
                if let Some(w) = last_write.get(&(op.client, op.key.as_str())) {
                    if op.level + w.level > n && !sees_at_least(h, values, w) {
                        bad.push(format!("client {} wrote {:?} to {} then read {values:?}", op.client, w.written(), op.key));
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
    let mut bad = Vec::new();
    let mut last_seen: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    for op in h.ops.iter().filter(|o| o.outcome == Outcome::Ok && o.level >= min_level) {
        let Kind::Get { values } = &op.kind else { continue };
        if let Some(prev) = last_seen.get(&(op.client, op.key.as_str())) {
            for w in prev {
                if !sees_at_least(h, values, w) {
                    bad.push(format!("client {} read {values:?} from {} after having seen {:?}", op.client, op.key, w.written()));
                }
            }
        }
        let writers: Vec<&Op> = values.iter().filter_map(|v| h.writer_of(v)).collect();
        last_seen.insert((op.client, &op.key), writers);
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: usize, key: &str, value: &str, level: usize, t: (u64, u64), outcome: Outcome) -> Op {
        Op { client, key: key.into(), kind: Kind::Put { value: value.into() }, level, invoke_ms: t.0, complete_ms: t.1, outcome }
    }

    fn get(client: usize, key: &str, values: &[&str], level: usize, t: (u64, u64)) -> Op {
        let values = values.iter().map(|v| v.to_string()).collect();
        Op { client, key: key.into(), kind: Kind::Get { values }, level, invoke_ms: t.0, complete_ms: t.1, outcome: Outcome::Ok }
    }

    fn finals(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect())).collect()
    }

    #[test]
    fn lost_write_is_caught_and_superseded_one_is_not() {
        let h = History { ops: vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (20, 30), Outcome::Ok)] };
        assert!(lost_writes(&h, &finals(&[("k", &["b"])]), 2).is_empty(), "b came after a and superseded it");
        assert_eq!(lost_writes(&h, &finals(&[("k", &["a"])]), 2).len(), 1, "b is lost: nothing after it");
        let concurrent = History { ops: vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (5, 15), Outcome::Ok)] };
        assert!(lost_writes(&concurrent, &finals(&[("k", &["a"])]), 2).is_empty(), "concurrent: either may win");
        let failed_later = History { ops: vec![put(0, "k", "a", 2, (0, 10), Outcome::Ok), put(1, "k", "b", 2, (20, 30), Outcome::Fail)] };
        assert_eq!(lost_writes(&failed_later, &finals(&[("k", &["b"])]), 2).len(), 1, "a failed write cannot supersede a");
        assert_eq!(phantom_reads(&failed_later, &finals(&[("k", &["b"])])).len(), 1, "and reading it is a phantom");
    }

    #[test]
    fn phantom_read_is_caught() {
        let h = History { ops: vec![put(0, "k", "a", 1, (0, 1), Outcome::Ok), get(1, "k", &["zz"], 1, (2, 3))] };
        assert_eq!(phantom_reads(&h, &BTreeMap::new()).len(), 1);
        let wrong_key = History { ops: vec![put(0, "k", "a", 1, (0, 1), Outcome::Ok), get(1, "j", &["a"], 1, (2, 3))] };
        assert_eq!(phantom_reads(&wrong_key, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn stale_read_after_own_quorum_write_is_caught() {
        let h = History {
            ops: vec![
                put(0, "k", "old", 2, (0, 5), Outcome::Ok),
                put(0, "k", "new", 2, (10, 15), Outcome::Ok),
                get(0, "k", &["old"], 2, (20, 25)),
            ],
        };
        assert_eq!(read_your_writes(&h, 3).len(), 1);
        let weak = History {
            ops: vec![
                put(0, "k", "old", 1, (0, 5), Outcome::Ok),
                put(0, "k", "new", 1, (10, 15), Outcome::Ok),
                get(0, "k", &["old"], 1, (20, 25)),
            ],
        };
        assert!(read_your_writes(&weak, 3).is_empty(), "ONE/ONE promises nothing");
    }

    #[test]
    fn going_back_in_time_is_caught() {
        let h = History {
            ops: vec![
                put(0, "k", "old", 2, (0, 5), Outcome::Ok),
                put(0, "k", "new", 2, (10, 15), Outcome::Ok),
                get(1, "k", &["new"], 2, (20, 25)),
                get(1, "k", &["old"], 2, (30, 35)),
            ],
        };
        assert_eq!(monotonic_reads(&h, 2).len(), 1);
    }
}
