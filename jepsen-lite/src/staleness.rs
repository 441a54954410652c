//! How stale each read was, as Bailis et al. measure partial quorums in
//! "Probabilistically Bounded Staleness" (PBS).
//!
//! For a successful read of key k invoked at t, the *prior writes* are the
//! acknowledged writes to k that completed before t. The read is *fresh*
//! when it returns the newest prior write or something at least as new (a
//! value whose write did not happen before it). Its *k-staleness* is how
//! many prior writes it missed, and *time since write* is t minus the
//! completion of the newest prior write. The t-visibility curve is the
//! fraction of fresh reads against time since write, per level.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::checkers::sees_at_least;
use crate::history::{History, Kind, Op, Outcome};

/// How many prior writes are examined per read: k-staleness is capped here.
pub const K_WINDOW: usize = 64;

/// Upper bounds (exclusive, ms) of the time-since-write buckets.
pub const BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, u64::MAX];

/// One read, judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadStaleness {
    /// Replicas required (1 ONE, 2 QUORUM, 3 ALL).
    pub level: usize,
    /// ms from the newest prior write's completion to this read's invocation.
    pub since_write_ms: u64,
    /// Prior writes it missed (at most [`K_WINDOW`]).
    pub k: usize,
}

impl ReadStaleness {
    /// It missed nothing.
    pub fn fresh(&self) -> bool {
        self.k == 0
    }
}

/// Judges every successful read that has at least one prior write.
pub fn reads(h: &History) -> Vec<ReadStaleness> {
    let writers = h.writers();
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for o in h.ops.iter().filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, Kind::Put { .. })) {
        by_key.entry(&o.key).or_default().push(o);
    }
    for writes in by_key.values_mut() {
        writes.sort_by_key(|w| w.complete_ms);
    }
    let mut out = Vec::new();
    for r in &h.ops {
        let Some(values) = r.read() else { continue };
        let Some(writes) = by_key.get(r.key.as_str()) else { continue };
        let prior = &writes[..writes.partition_point(|w| w.complete_ms < r.invoke_ms)];
        let Some(newest) = prior.last() else { continue };
        let window = &prior[prior.len().saturating_sub(K_WINDOW)..];
        let k = window.iter().filter(|w| !sees_at_least(&writers, values, w)).count();
        out.push(ReadStaleness { level: r.level, since_write_ms: r.invoke_ms - newest.complete_ms, k });
    }
    out
}

/// One point of a t-visibility curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Reads that started less than this many ms after the write ([`u64::MAX`] for the last).
    pub below_ms: u64,
    /// Reads in the bucket.
    pub reads: usize,
    /// Fresh reads among them.
    pub fresh: usize,
}

/// Per level, the fraction of fresh reads per time-since-write bucket.
/// Empty buckets are left out.
pub fn t_visibility(reads: &[ReadStaleness]) -> BTreeMap<usize, Vec<Bucket>> {
    let mut out: BTreeMap<usize, Vec<Bucket>> = BTreeMap::new();
    for r in reads {
        let buckets =
            out.entry(r.level).or_insert_with(|| BUCKETS_MS.iter().map(|&b| Bucket { below_ms: b, reads: 0, fresh: 0 }).collect());
        let i = BUCKETS_MS.iter().position(|&b| r.since_write_ms < b).unwrap_or(BUCKETS_MS.len() - 1);
        buckets[i].reads += 1;
        buckets[i].fresh += usize::from(r.fresh());
    }
    for buckets in out.values_mut() {
        buckets.retain(|b| b.reads > 0);
    }
    out
}

/// Per level, how many reads missed k prior writes.
pub fn k_histogram(reads: &[ReadStaleness]) -> BTreeMap<usize, BTreeMap<usize, usize>> {
    let mut out: BTreeMap<usize, BTreeMap<usize, usize>> = BTreeMap::new();
    for r in reads {
        *out.entry(r.level).or_default().entry(r.k).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Detail;

    fn op(key: &str, kind: Kind, level: usize, t: (u64, u64)) -> Op {
        Op { client: 0, key: key.into(), kind, level, invoke_ms: t.0, complete_ms: t.1, outcome: Outcome::Ok, detail: Detail::default() }
    }
    fn put(v: &str, t: (u64, u64)) -> Op {
        op("k", Kind::Put { value: v.into() }, 2, t)
    }
    fn get(vs: &[&str], level: usize, t: (u64, u64)) -> Op {
        op("k", Kind::Get { values: vs.iter().map(|v| v.to_string()).collect() }, level, t)
    }

    #[test]
    fn counts_missed_writes_and_time_since_the_newest() {
        let h = History::of(vec![
            put("a", (0, 10)),
            put("b", (20, 30)),
            put("c", (40, 50)),
            get(&["a"], 1, (55, 56)),   // missed b and c: k = 2
            get(&["c"], 2, (60, 61)),   // fresh
            put("d", (100, 200)),       // in flight during the next read
            get(&["d"], 1, (150, 151)), // sees a write newer than c: fresh
            get(&["b"], 1, (300, 301)), // missed c and d
        ]);
        let r = reads(&h);
        assert_eq!(
            r.iter().map(|r| (r.level, r.since_write_ms, r.k)).collect::<Vec<_>>(),
            vec![(1, 5, 2), (2, 10, 0), (1, 100, 0), (1, 100, 2)]
        );
        let curve = t_visibility(&r);
        assert_eq!(curve[&1], vec![Bucket { below_ms: 10, reads: 1, fresh: 0 }, Bucket { below_ms: 200, reads: 2, fresh: 1 }]);
        assert_eq!(curve[&2], vec![Bucket { below_ms: 20, reads: 1, fresh: 1 }]);
        assert_eq!(k_histogram(&r)[&1], BTreeMap::from([(0, 1), (2, 2)]));
    }

    #[test]
    fn reads_before_any_write_and_failed_reads_are_not_judged() {
        let mut failed = get(&[], 1, (20, 21));
        failed.outcome = Outcome::Fail;
        let h = History::of(vec![get(&[], 1, (0, 1)), put("a", (5, 10)), failed]);
        assert!(reads(&h).is_empty());
    }
}
