//! A per-key linearizability check for a register of blind writes: the
//! Wing–Gong search with Lowe's memoisation, as Porcupine and Knossos do it.
//! Diagnostic only: the README promises linearizability at no level, and
//! this shows which levels get close.
//!
//! For level L, the history of one key is every write (at any level, since
//! every write changes the register) plus the successful reads at L. It is
//! cut into segments at quiescent instants (no operation open). A segment
//! starts from any value the previous one could have ended with: one of its
//! writes that no later write of the segment follows, or, if it wrote
//! nothing that surely landed, what the segment before could end with. An
//! indeterminate write is assumed to take effect within its own segment or
//! never, and its return is placed at the segment's end. A read of several
//! siblings is satisfied when one of them is the register's value. Each
//! segment has a step budget; running out yields `unknown`.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::history::{History, Kind, Op, Outcome, SERIAL_LEVEL};

/// Steps of the search per segment before it gives up with `unknown`.
pub const STEP_BUDGET: usize = 200_000;
/// Longest segment searched; longer ones are `unknown`.
pub const MAX_SEGMENT: usize = 512;

/// What the search concluded for one level.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LevelResult {
    /// Segments found linearizable.
    pub linearizable: usize,
    /// Segments with no linearization.
    pub violations: usize,
    /// Segments given up on (too long or out of steps).
    pub unknown: usize,
    /// The first few violating segments, described.
    pub examples: Vec<String>,
}

/// One operation as the search sees it: values interned to indices.
struct SOp {
    invoke: u64,
    complete: u64,
    write: Option<usize>,
    reads: Vec<Option<usize>>,
}

impl SOp {
    /// Applies it to `state`, or `None` if it cannot happen there.
    fn step(&self, state: Option<usize>) -> Option<Option<usize>> {
        match self.write {
            Some(v) => Some(Some(v)),
            None => self.reads.contains(&state).then_some(state),
        }
    }
}

/// Is `ops` (one segment) linearizable from `init`? `None` when out of steps.
fn wgl(ops: &[SOp], init: Option<usize>) -> Option<bool> {
    let spans: Vec<(u64, u64)> = ops.iter().map(|o| (o.invoke, o.complete)).collect();
    search(&spans, init, |i, s| ops[i].step(s).into_iter().collect(), |_| true)
}

/// The Wing–Gong search with Lowe's memoisation over a register whose
/// states are interned values (`None`: absent). `spans[i]` is operation
/// i's (invoke, complete); `step(i, state)` lists the states operation i
/// may leave when applied in `state` (empty: it cannot happen there; more
/// than one: it may or may not take effect). A linearization counts only if
/// `accept_end` accepts the state it ends in. `None` when out of steps.
pub(crate) fn search(
    spans: &[(u64, u64)],
    init: Option<usize>,
    step: impl Fn(usize, Option<usize>) -> Vec<Option<usize>>,
    accept_end: impl Fn(Option<usize>) -> bool,
) -> Option<bool> {
    if spans.is_empty() {
        return Some(accept_end(init));
    }
    // Events: (time, is_return, op). Calls sort before returns at equal
    // times, which treats touching operations as concurrent.
    let mut events: Vec<(u64, bool, usize)> = spans.iter().enumerate().flat_map(|(i, o)| [(o.0, false, i), (o.1, true, i)]).collect();
    events.sort();
    let n = events.len();
    // A doubly linked list over the events, with a head sentinel at n.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
    next.push(0);
    prev.push(usize::MAX);
    let end = n; // next[i] == n means the end of the list
    next[n - 1] = end;
    let head = n;
    let mut ret_of = vec![0; spans.len()];
    for (e, &(_, is_ret, op)) in events.iter().enumerate() {
        if is_ret {
            ret_of[op] = e;
        }
    }
    let first = |next: &Vec<usize>| next[head];
    let mut linearized = vec![0u64; spans.len().div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, Option<usize>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<usize>)> = Vec::new();
    let mut state = init;
    let mut entry = first(&next);
    let mut steps = 0;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != end {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != end {
            prev[nx] = e;
        }
    };
    loop {
        steps += 1;
        if steps > STEP_BUDGET {
            return None;
        }
        let backtrack = if first(&next) == end {
            if accept_end(state) {
                return Some(true);
            }
            true
        } else {
            let (_, is_ret, op) = events[entry];
            if !is_ret {
                let mut placed = false;
                for new_state in step(op, state) {
                    let mut lin = linearized.clone();
                    lin[op / 64] |= 1 << (op % 64);
                    if cache.insert((lin.clone(), new_state)) {
                        stack.push((entry, state));
                        state = new_state;
                        linearized = lin;
                        unlink(&mut next, &mut prev, entry);
                        unlink(&mut next, &mut prev, ret_of[op]);
                        entry = first(&next);
                        placed = true;
                        break;
                    }
                }
                if !placed {
                    entry = next[entry];
                }
                false
            } else {
                // A return whose call is not linearized.
                true
            }
        };
        if backtrack {
            let Some((e, s)) = stack.pop() else { return Some(false) };
            let op = events[e].2;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, e);
            state = s;
            // Retry the same call: an alternative outcome not yet tried
            // (the cache skips those tried) comes first, then later calls.
            entry = e;
        }
    }
}

/// Checks every key at each read level found in `h`.
pub fn check(h: &History) -> BTreeMap<usize, LevelResult> {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in &h.ops {
        keys.entry(&o.key).or_default().push(o);
    }
    // SERIAL operations get the hard check of `cas_check.rs` instead.
    let levels: std::collections::BTreeSet<usize> =
        h.ops.iter().filter(|o| o.read().is_some() && o.level < SERIAL_LEVEL).map(|o| o.level).collect();
    let mut out = BTreeMap::new();
    for level in levels {
        let mut result = LevelResult::default();
        for (key, ops) in &keys {
            check_key(key, ops, level, &mut result);
        }
        out.insert(level, result);
    }
    out
}

fn check_key(key: &str, ops: &[&Op], level: usize, result: &mut LevelResult) {
    let mut chosen: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| match &o.kind {
            Kind::Put { .. } => o.outcome != Outcome::Fail,
            Kind::Get { .. } => o.outcome == Outcome::Ok && o.level == level,
            Kind::Cas { .. } => false,
        })
        .collect();
    if !chosen.iter().any(|o| o.read().is_some()) {
        return;
    }
    chosen.sort_by_key(|o| o.invoke_ms);
    let mut values: BTreeMap<String, usize> = BTreeMap::new();
    let mut intern = |v: &str| {
        let n = values.len();
        *values.entry(v.to_string()).or_insert(n)
    };
    // The values the register may hold when the next segment starts.
    let mut starts: Vec<Option<usize>> = vec![None];
    let mut i = 0;
    while i < chosen.len() {
        // Grow the segment until no operation is open past its end.
        let mut j = i;
        let mut open_until = chosen[i].complete_ms;
        while j + 1 < chosen.len() && chosen[j + 1].invoke_ms <= open_until {
            j += 1;
            open_until = open_until.max(chosen[j].complete_ms);
        }
        let seg = &chosen[i..=j];
        let sops: Vec<SOp> = seg
            .iter()
            .map(|o| SOp {
                invoke: o.invoke_ms,
                complete: if o.outcome == Outcome::Info { open_until + 1 } else { o.complete_ms },
                write: o.written().map(&mut intern),
                reads: o
                    .read()
                    .map(|vs| if vs.is_empty() { vec![None] } else { vs.iter().map(|v| Some(intern(v))).collect() })
                    .unwrap_or_default(),
            })
            .collect();
        let verdict = if seg.len() > MAX_SEGMENT {
            None
        } else {
            let mut any_unknown = false;
            let before = std::mem::take(&mut starts);
            for &s in &before {
                match wgl(&sops, s) {
                    Some(true) => starts.push(s),
                    Some(false) => {}
                    None => any_unknown = true,
                }
            }
            let found = !starts.is_empty();
            if !found {
                // Carry on from every start, so one violation is reported once.
                starts = before;
            }
            if found {
                Some(true)
            } else if any_unknown {
                None
            } else {
                Some(false)
            }
        };
        match verdict {
            Some(true) => result.linearizable += 1,
            None => result.unknown += 1,
            Some(false) => {
                result.violations += 1;
                if result.examples.len() < 5 {
                    let ops: Vec<String> = seg
                        .iter()
                        .map(|o| match &o.kind {
                            Kind::Put { value } => format!("put {value} {}..{} {:?}", o.invoke_ms, o.complete_ms, o.outcome),
                            Kind::Get { values } => format!("get {values:?} {}..{}", o.invoke_ms, o.complete_ms),
                            Kind::Cas { .. } => String::new(),
                        })
                        .collect();
                    result.examples.push(format!("{key} at {}..{} ms: {}", seg[0].invoke_ms, open_until, ops.join("; ")));
                }
            }
        }
        // The values this segment may end with.
        let ends: Vec<Option<usize>> = sops
            .iter()
            .enumerate()
            .filter(|(a, op)| {
                op.write.is_some()
                    && !sops
                        .iter()
                        .enumerate()
                        .any(|(b, o)| b != *a && o.write.is_some() && seg[b].outcome == Outcome::Ok && o.invoke > op.complete)
            })
            .map(|(_, op)| op.write)
            .collect();
        let surely_wrote = seg.iter().any(|o| o.written().is_some() && o.outcome == Outcome::Ok);
        if surely_wrote {
            starts = ends;
        } else {
            starts.extend(ends);
        }
        starts.sort();
        starts.dedup();
        starts.truncate(16);
        i = j + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Detail;

    fn op(kind: Kind, level: usize, t: (u64, u64), outcome: Outcome) -> Op {
        Op { client: 0, key: "k".into(), kind, level, invoke_ms: t.0, complete_ms: t.1, outcome, detail: Detail::default() }
    }
    fn put(v: &str, t: (u64, u64)) -> Op {
        op(Kind::Put { value: v.into() }, 2, t, Outcome::Ok)
    }
    fn get(vs: &[&str], level: usize, t: (u64, u64)) -> Op {
        op(Kind::Get { values: vs.iter().map(|v| v.to_string()).collect() }, level, t, Outcome::Ok)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = History::of(vec![get(&[], 2, (0, 1)), put("a", (2, 3)), get(&["a"], 2, (4, 5)), put("b", (6, 7)), get(&["b"], 2, (8, 9))]);
        assert_eq!(check(&h)[&2], LevelResult { linearizable: 5, ..Default::default() });
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let h = History::of(vec![put("a", (0, 1)), put("b", (2, 3)), get(&["a"], 1, (4, 5)), get(&["b"], 2, (6, 7))]);
        let r = check(&h);
        assert_eq!(r[&1].violations, 1, "{:?}", r[&1]);
        assert!(r[&1].examples[0].contains("get [\"a\"] 4..5"), "{:?}", r[&1].examples);
        assert_eq!(r[&2].violations, 0);
    }

    #[test]
    fn concurrent_reads_may_see_either_value_but_not_flip_back() {
        // Both reads overlap the write of b: each may see a or b...
        let ok = History::of(vec![put("a", (0, 1)), put("b", (10, 20)), get(&["b"], 2, (11, 12)), get(&["a"], 2, (11, 19))]);
        assert_eq!(check(&ok)[&2].violations, 0);
        // ...but once one read finished with b, a later read cannot see a.
        let bad = History::of(vec![put("a", (0, 1)), put("b", (10, 20)), get(&["b"], 2, (11, 12)), get(&["a"], 2, (13, 19))]);
        assert_eq!(check(&bad)[&2].violations, 1);
    }

    #[test]
    fn an_indeterminate_write_may_or_may_not_land() {
        let mut lost = put("b", (2, 3));
        lost.outcome = Outcome::Info;
        let landed = History::of(vec![put("a", (0, 1)), lost.clone(), get(&["b"], 2, (2, 5))]);
        assert_eq!(check(&landed)[&2].violations, 0);
        let never = History::of(vec![put("a", (0, 1)), lost, get(&["a"], 2, (2, 5))]);
        assert_eq!(check(&never)[&2].violations, 0);
    }

    #[test]
    fn segments_carry_the_possible_values_forward() {
        // Two concurrent writes; the later segment may start from either.
        let h = History::of(vec![put("a", (0, 10)), put("b", (5, 15)), get(&["a"], 2, (20, 21)), get(&["a"], 2, (30, 31))]);
        assert_eq!(check(&h)[&2].violations, 0);
        let flip = History::of(vec![put("a", (0, 10)), put("b", (5, 15)), get(&["a"], 2, (20, 21)), get(&["b"], 2, (30, 31))]);
        assert_eq!(check(&flip)[&2].violations, 1, "the register cannot go from a back to b");
    }
}
