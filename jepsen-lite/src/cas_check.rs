//! The hard linearizability check for SERIAL operations: per key, is there
//! an order of the cas operations and SERIAL reads, consistent with real
//! time, in which a compare-and-set register explains every answer? Any
//! key without one fails the run, and the report names the operations.
//!
//! The model, over interned unique values (`None`: absent):
//! - an applied cas needs the register to hold its `expect`, then holds
//!   its value;
//! - a cas answered "not applied" needs the register to hold one of the
//!   values it reported, and not its `expect`;
//! - a SERIAL read needs the register to hold one of its values;
//! - an indeterminate cas (`info`) may or may not have happened: it applies
//!   only where the register holds its `expect`, or is skipped;
//! - a failed cas (`fail`: refused before anything was proposed) did not
//!   happen and is left out.
//!
//! An indeterminate cas stays open past its own return. ringkv's Paxos
//! settles an interrupted proposal in the next round that prepares a
//! quorum: that round completes it or fences it for good (its ballot is
//! above the proposal's, or it could not have been promised). So its
//! effect falls before the first acknowledged operation on the key invoked
//! after the cas returned (which saw it, or fenced it off for good); that
//! is where its window closes (or at the end of the history). The history is cut into segments at
//! instants no window spans, and each segment is searched (`search` in
//! `linearizability.rs`, Wing–Gong with Lowe's memoisation) from every
//! register value the previous segments may have ended with.

use std::collections::BTreeMap;

use crate::history::{History, Kind, Op, Outcome, SERIAL_LEVEL};
use crate::linearizability::{search, MAX_SEGMENT};

/// Register values the segments carry forward, at most.
const MAX_STARTS: usize = 16;

/// One operation as the search sees it.
#[derive(Debug)]
enum Effect {
    Read(Vec<Option<usize>>),
    Applied { expect: Option<usize>, new: usize },
    NotApplied { expect: Option<usize>, seen: Vec<Option<usize>> },
    Maybe { expect: Option<usize>, new: usize },
}

impl Effect {
    fn step(&self, s: Option<usize>) -> Vec<Option<usize>> {
        match self {
            Effect::Read(vs) if vs.contains(&s) => vec![s],
            Effect::Applied { expect, new } if *expect == s => vec![Some(*new)],
            Effect::NotApplied { expect, seen } if *expect != s && seen.contains(&s) => vec![s],
            Effect::Maybe { expect, new } if *expect == s => vec![Some(*new), s],
            Effect::Maybe { .. } => vec![s],
            _ => Vec::new(),
        }
    }

    fn writes(&self) -> Option<usize> {
        match self {
            Effect::Applied { new, .. } | Effect::Maybe { new, .. } => Some(*new),
            _ => None,
        }
    }
}

/// Every violation found: one line per key segment with no linearization,
/// or that could not be searched (too long, out of steps).
pub fn check(h: &History) -> Vec<String> {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in h.ops.iter().filter(|o| o.level == SERIAL_LEVEL && o.outcome != Outcome::Fail) {
        if matches!(o.kind, Kind::Cas { .. }) || o.outcome == Outcome::Ok {
            keys.entry(&o.key).or_default().push(o);
        }
    }
    let mut bad = Vec::new();
    for (key, ops) in keys {
        check_key(key, ops, &mut bad);
    }
    bad
}

fn check_key(key: &str, mut ops: Vec<&Op>, bad: &mut Vec<String>) {
    ops.sort_by_key(|o| (o.invoke_ms, o.complete_ms));
    // Where each operation's window closes, in half-milliseconds: an
    // indeterminate cas closes half a millisecond before the next
    // acknowledged operation invoked after it returned (so it falls
    // strictly before that one), or at the end of the history.
    let close: Vec<u64> = ops
        .iter()
        .map(|o| match o.outcome {
            Outcome::Info => ops
                .iter()
                .filter(|p| p.outcome == Outcome::Ok && p.invoke_ms > o.complete_ms)
                .map(|p| 2 * p.invoke_ms - 1)
                .min()
                .unwrap_or(u64::MAX / 2),
            _ => 2 * o.complete_ms,
        })
        .collect();
    let mut values: BTreeMap<String, usize> = BTreeMap::new();
    let mut intern = |v: &str| {
        let n = values.len();
        *values.entry(v.to_string()).or_insert(n)
    };
    let mut set = |vs: &[String]| -> Vec<Option<usize>> {
        if vs.is_empty() {
            vec![None]
        } else {
            vs.iter().map(|v| Some(intern(v))).collect()
        }
    };
    let effects: Vec<Effect> = ops
        .iter()
        .map(|o| match &o.kind {
            Kind::Get { values } => Effect::Read(set(values)),
            Kind::Cas { expect, value, applied, current } => {
                let expect = expect.as_ref().and_then(|e| set(std::slice::from_ref(e))[0]);
                let new = set(std::slice::from_ref(value))[0].expect("a value interns to Some");
                match (o.outcome, applied) {
                    (Outcome::Ok, true) => Effect::Applied { expect, new },
                    (Outcome::Ok, false) => Effect::NotApplied { expect, seen: set(current) },
                    _ => Effect::Maybe { expect, new },
                }
            }
            // Blind puts have no place in a SERIAL register.
            Kind::Put { .. } => Effect::Read(Vec::new()),
        })
        .collect();
    let mut starts: Vec<Option<usize>> = vec![None];
    let mut i = 0;
    while i < ops.len() {
        let mut j = i;
        let mut open_until = close[i];
        while j + 1 < ops.len() && 2 * ops[j + 1].invoke_ms <= open_until {
            j += 1;
            open_until = open_until.max(close[j]);
        }
        let spans: Vec<(u64, u64)> = (i..=j).map(|k| (2 * ops[k].invoke_ms, close[k])).collect();
        let step = |k: usize, s: Option<usize>| effects[i + k].step(s);
        let describe = || {
            let list: Vec<String> = (i..=j).map(|k| describe(ops[k])).collect();
            format!("{key} at {}..{} ms: {}", ops[i].invoke_ms, ops[j].complete_ms, list.join("; "))
        };
        if spans.len() > MAX_SEGMENT {
            bad.push(format!("could not check (segment of {} operations is too long): {}", spans.len(), describe()));
        } else {
            // The values this segment may end with: what it may write, or
            // what it started from.
            let mut candidates: Vec<Option<usize>> = (i..=j).filter_map(|k| effects[k].writes().map(Some)).collect();
            candidates.extend(starts.iter().copied());
            candidates.sort();
            candidates.dedup();
            let mut ends = Vec::new();
            let mut unknown = false;
            for &c in &candidates {
                for &s in &starts {
                    match search(&spans, s, step, |end| end == c) {
                        Some(true) => {
                            ends.push(c);
                            break;
                        }
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
            }
            if ends.is_empty() {
                let why = if unknown { "could not check (the search ran out of steps)" } else { "not linearizable" };
                bad.push(format!("{why}: {}", describe()));
                // Carry on from anything it may have written, so one
                // violation is reported once.
                starts = candidates;
            } else {
                starts = ends;
            }
            starts.truncate(MAX_STARTS);
        }
        i = j + 1;
    }
}

fn describe(o: &Op) -> String {
    let outcome = format!("{:?}", o.outcome).to_lowercase();
    match &o.kind {
        Kind::Get { values } => format!("c{} read {values:?} {}..{}", o.client, o.invoke_ms, o.complete_ms),
        Kind::Cas { expect, value, applied, current } => {
            let expect = expect.as_deref().unwrap_or("(absent)");
            let answer = match (o.outcome, applied) {
                (Outcome::Ok, true) => "applied".to_string(),
                (Outcome::Ok, false) => format!("not applied, saw {current:?}"),
                _ => outcome,
            };
            format!("c{} cas {expect}->{value} {answer} {}..{}", o.client, o.invoke_ms, o.complete_ms)
        }
        Kind::Put { value } => format!("c{} put {value} {}..{}", o.client, o.invoke_ms, o.complete_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Detail;

    fn op(client: usize, kind: Kind, t: (u64, u64), outcome: Outcome) -> Op {
        Op { client, key: "k".into(), kind, level: SERIAL_LEVEL, invoke_ms: t.0, complete_ms: t.1, outcome, detail: Detail::default() }
    }
    fn cas(client: usize, expect: Option<&str>, value: &str, applied: bool, t: (u64, u64)) -> Op {
        let kind = Kind::Cas { expect: expect.map(Into::into), value: value.into(), applied, current: Vec::new() };
        op(client, kind, t, Outcome::Ok)
    }
    fn refused(client: usize, expect: Option<&str>, value: &str, saw: &[&str], t: (u64, u64)) -> Op {
        let current = saw.iter().map(|v| v.to_string()).collect();
        op(client, Kind::Cas { expect: expect.map(Into::into), value: value.into(), applied: false, current }, t, Outcome::Ok)
    }
    fn info(client: usize, expect: Option<&str>, value: &str, t: (u64, u64)) -> Op {
        let kind = Kind::Cas { expect: expect.map(Into::into), value: value.into(), applied: false, current: Vec::new() };
        op(client, kind, t, Outcome::Info)
    }
    fn read(client: usize, values: &[&str], t: (u64, u64)) -> Op {
        op(client, Kind::Get { values: values.iter().map(|v| v.to_string()).collect() }, t, Outcome::Ok)
    }

    #[test]
    fn a_chain_of_cas_and_reads_is_linearizable() {
        let h = History::of(vec![
            cas(0, None, "a", true, (0, 5)),
            refused(1, None, "b", &["a"], (6, 8)),
            cas(1, Some("a"), "b", true, (9, 12)),
            read(0, &["b"], (13, 14)),
        ]);
        assert_eq!(check(&h), Vec::<String>::new());
    }

    #[test]
    fn two_cas_applied_from_the_same_value_is_a_violation_and_named() {
        // Concurrent, both from absent: only one may apply.
        let h = History::of(vec![cas(0, None, "a", true, (0, 10)), cas(1, None, "b", true, (2, 9)), read(0, &["b"], (11, 12))]);
        let bad = check(&h);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("not linearizable") && bad[0].contains("c1 cas (absent)->b applied"), "{bad:?}");
    }

    #[test]
    fn a_read_cannot_go_back_in_time() {
        let h = History::of(vec![cas(0, None, "a", true, (0, 1)), cas(0, Some("a"), "b", true, (2, 3)), read(1, &["a"], (4, 5))]);
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn an_unapplied_cas_must_have_seen_something_else_than_its_expectation() {
        let h = History::of(vec![cas(0, None, "a", true, (0, 1)), refused(1, Some("a"), "b", &["a"], (2, 3))]);
        assert_eq!(check(&h).len(), 1, "it saw a and still did not apply");
    }

    #[test]
    fn an_indeterminate_cas_may_or_may_not_have_happened() {
        let happened = History::of(vec![cas(0, None, "a", true, (0, 1)), info(1, Some("a"), "b", (2, 3)), read(0, &["b"], (4, 5))]);
        assert_eq!(check(&happened), Vec::<String>::new());
        let did_not = History::of(vec![cas(0, None, "a", true, (0, 1)), info(1, Some("a"), "b", (2, 3)), read(0, &["a"], (4, 5))]);
        assert_eq!(check(&did_not), Vec::<String>::new());
        // It may take effect after it returned, until the next
        // acknowledged operation invoked after it completes...
        let late = History::of(vec![
            cas(0, None, "a", true, (0, 1)),
            info(1, Some("a"), "b", (2, 3)),
            read(0, &["a"], (10, 11)),
            read(0, &["b"], (20, 21)),
        ]);
        assert_eq!(check(&late).len(), 1, "after a read at 10..11 saw a, it can no longer happen");
        // ...but not flip-flop: a then b then a is impossible.
        let flip = History::of(vec![
            cas(0, None, "a", true, (0, 1)),
            info(1, Some("a"), "b", (2, 30)),
            read(0, &["b"], (10, 11)),
            read(0, &["a"], (12, 13)),
        ]);
        assert_eq!(check(&flip).len(), 1);
    }

    #[test]
    fn segments_carry_every_possible_end_forward() {
        // Two concurrent cas from absent, one applied, one indeterminate:
        // the next segment starts from a (the indeterminate lost) or from a
        // then c (it expected a).
        let h = History::of(vec![
            cas(0, None, "a", true, (0, 10)),
            info(1, Some("a"), "c", (5, 12)),
            read(2, &["c"], (13, 14)),
            read(2, &["c"], (20, 21)),
        ]);
        assert_eq!(check(&h), Vec::<String>::new());
        let h = History::of(vec![
            cas(0, None, "a", true, (0, 10)),
            info(1, Some("a"), "c", (5, 12)),
            read(2, &["c"], (13, 14)),
            read(2, &["a"], (20, 21)),
        ]);
        assert_eq!(check(&h).len(), 1);
    }
}
