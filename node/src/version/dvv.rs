//! The DVVSet itself: siblings, contexts, per-node entries, and the three
//! pure operations (context, update, merge) with the LWW floor.
//!
//! Invariants kept here (the essay in `version/mod.rs` explains why):
//! entry `(n, l)` means `l[i]` is dot `n - i`; no sibling is older than the
//! floor; `merge` is a join (commutative, associative, idempotent), which
//! `proptests.rs` checks against `shared/models/dvv_floor.py`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sibling::settle;
use super::{Hlc, Sibling};
use crate::error::{Error, Result};

/// What a reader has seen: one counter per coordinating node.
pub type Context = BTreeMap<String, u64>;

/// Most entries a client context may name. A context has one entry per
/// actor (node incarnation) that ever wrote the key, so honest contexts
/// stay far below this: 1024 is a hundred nodes restarted ten times each.
/// It bounds the work one request does under the key's stripe lock.
pub const MAX_CONTEXT_ENTRIES: usize = 1024;

/// Checks a client-supplied context before it is used: at most
/// [`MAX_CONTEXT_ENTRIES`] entries, and no counter at `u64::MAX` (no dot
/// is ever issued there, so such a counter is made up).
pub fn check_context(ctx: &Context) -> Result<()> {
    if ctx.len() > MAX_CONTEXT_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "the context names {} actors, more than the {MAX_CONTEXT_ENTRIES} allowed; pass the context returned by a get, unchanged",
            ctx.len()
        )));
    }
    if let Some((id, _)) = ctx.iter().find(|(_, &n)| n == u64::MAX) {
        return Err(Error::InvalidArgument(format!(
            "the context's counter for {id} is u64::MAX, which no write ever issued; pass the context returned by a get, unchanged"
        )));
    }
    Ok(())
}

/// One node's entry: it coordinated dots `1..=counter`; `siblings[i]` is dot
/// `counter - i` and still live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The highest dot this node has issued for the key.
    pub counter: u64,
    /// Live siblings, newest first.
    pub siblings: Vec<Sibling>,
}

/// The stored version of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvvSet {
    /// Per coordinating node, ordered so that encoding is canonical.
    pub entries: BTreeMap<String, Entry>,
    /// The highest HLC of any blind write seen (LWW floor).
    pub floor: Option<Hlc>,
}

impl DvvSet {
    /// The causal context a read returns.
    pub fn context(&self) -> Context {
        self.entries.iter().map(|(id, e)| (id.clone(), e.counter)).collect()
    }

    /// Every sibling, tombstones included, newest HLC first.
    pub fn siblings(&self) -> Vec<&Sibling> {
        let mut all: Vec<&Sibling> = self.entries.values().flat_map(|e| &e.siblings).collect();
        all.sort_by(|a, b| b.hlc.cmp(&a.hlc));
        all
    }

    /// The siblings a read at `now_ms` returns: neither deleted nor
    /// expired, newest HLC first.
    pub fn live(&self, now_ms: u64) -> Vec<&Sibling> {
        self.siblings().into_iter().filter(|s| s.is_live(now_ms)).collect()
    }

    /// The highest timestamp stored for this key, floor included.
    pub fn max_hlc(&self) -> Option<&Hlc> {
        self.entries.values().flat_map(|e| e.siblings.iter().map(|s| &s.hlc)).chain(self.floor.as_ref()).max()
    }

    /// A write coordinated by `node`: drop what `ctx` has seen, then add
    /// `sibling` as the node's next dot. A blind write (`blind`) also raises
    /// the floor to its timestamp.
    ///
    /// The context comes from a client, so it is distrusted. It may only
    /// cover what this copy knows was issued: each counter is capped at the
    /// key's own counter for that actor, and an actor the key has no entry
    /// for is ignored. A context therefore never adds a clock entry, and
    /// never covers a dot this copy has not seen (a made-up counter would
    /// otherwise drop acknowledged writes on every later merge). The cost:
    /// when this copy lags the read the context came from, a sibling the
    /// client saw survives as a false conflict, which the next write-back
    /// resolves; nothing acknowledged is ever dropped by it.
    ///
    /// Fails, changing nothing, on a context [`check_context`] refuses, or
    /// when `node`'s counter has no next dot.
    pub fn update(&mut self, ctx: &Context, node: &str, sibling: Sibling, blind: bool) -> Result<()> {
        check_context(ctx)?;
        let next =
            self.entries.get(node).map_or(0, |e| e.counter).checked_add(1).filter(|&n| n < u64::MAX).ok_or_else(|| {
                Error::InvalidArgument(format!("the dot counter of {node} on this key is exhausted; the version is corrupt"))
            })?;
        for (id, &seen) in ctx {
            if let Some(entry) = self.entries.get_mut(id) {
                // Keep only the dots above what the context saw.
                let keep = entry.counter.saturating_sub(seen);
                entry.siblings.truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            }
        }
        if blind {
            self.raise_floor(Some(&sibling.hlc));
        }
        let entry = self.entries.entry(node.to_string()).or_default();
        entry.counter = next;
        entry.siblings.insert(0, sibling);
        self.apply_floor();
        Ok(())
    }

    /// Checks that this is a well-formed DVVSet: every entry has no more
    /// live siblings than dots it issued, and room for one more dot. A
    /// malformed set would break the dot arithmetic of every later merge.
    pub fn check_shape(&self) -> Result<()> {
        for (id, e) in &self.entries {
            if e.siblings.len() as u64 > e.counter {
                return Err(Error::InvalidArgument(format!(
                    "malformed version: {id} has {} siblings but issued only {} dots",
                    e.siblings.len(),
                    e.counter
                )));
            }
            if e.counter == u64::MAX {
                return Err(Error::InvalidArgument(format!("malformed version: {id}'s dot counter is u64::MAX, leaving no next dot")));
            }
        }
        Ok(())
    }

    /// The join: DVVSet sync per entry, max of the floors, then drop what is
    /// below the floor. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &DvvSet) {
        for (id, theirs) in &other.entries {
            let merged = match self.entries.remove(id) {
                Some(ours) => merge_entry(ours, theirs.clone()),
                None => theirs.clone(),
            };
            self.entries.insert(id.clone(), merged);
        }
        self.raise_floor(other.floor.as_ref());
        self.apply_floor();
    }

    /// `self` merged with `other`, leaving both untouched.
    pub fn merged(&self, other: &DvvSet) -> DvvSet {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// True when merging `other` into `self` changes nothing.
    pub fn dominates(&self, other: &DvvSet) -> bool {
        &self.merged(other) == self
    }

    fn raise_floor(&mut self, ts: Option<&Hlc>) {
        if ts > self.floor.as_ref() {
            self.floor = ts.cloned();
        }
    }

    fn apply_floor(&mut self) {
        if let Some(floor) = &self.floor {
            for e in self.entries.values_mut() {
                e.siblings.retain(|s| &s.hlc >= floor);
            }
        }
    }
}

/// Riak's `merge`: keep the longer causal history, and of its siblings only
/// those the other side has not already covered. A dot live on both sides
/// is [`settle`]d, so a value and its expired tombstone meet on the
/// tombstone whichever side holds which (`sibling.rs`).
///
/// Saturating arithmetic: [`DvvSet::check_shape`] keeps malformed entries
/// out, and should one get in anyway it must not panic under a stripe lock.
fn merge_entry(a: Entry, b: Entry) -> Entry {
    let (hi, lo) = if a.counter >= b.counter { (a, b) } else { (b, a) };
    // Dots above these bounds are live on each side.
    let hi_base = hi.counter.saturating_sub(hi.siblings.len() as u64);
    let lo_base = lo.counter.saturating_sub(lo.siblings.len() as u64);
    let mut siblings = hi.siblings;
    if lo_base > hi_base {
        // `lo` has covered dots up to lo_base, so `hi` keeps only the dots above it.
        siblings.truncate(usize::try_from(hi.counter - lo_base).unwrap_or(usize::MAX));
    }
    // Dots live on both sides: lo's i-th is dot lo.counter - i, which is
    // hi's (hi.counter - dot)-th, if hi kept it.
    for (i, theirs) in lo.siblings.into_iter().enumerate() {
        let dot = lo.counter.saturating_sub(i as u64);
        // Further dots of `lo` lie below everything `hi` kept.
        let Some(ours) = hi.counter.checked_sub(dot).and_then(|j| usize::try_from(j).ok()).and_then(|j| siblings.get_mut(j)) else {
            break;
        };
        if *ours != theirs {
            *ours = settle(std::mem::replace(ours, Sibling::tombstone(Hlc::default())), theirs);
        }
    }
    Entry { counter: hi.counter, siblings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sib(wall: u64, node: &str, v: &str) -> Sibling {
        Sibling::value(Hlc { wall_ms: wall, logical: 0, node: node.into() }, v.into())
    }

    fn values(d: &DvvSet) -> Vec<String> {
        let mut v: Vec<String> = d.live(0).iter().map(|s| String::from_utf8(s.value.clone()).unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn causal_write_supersedes_what_its_context_saw() {
        let mut d = DvvSet::default();
        d.update(&Context::new(), "a", sib(1, "a", "v1"), false).unwrap();
        let ctx = d.context();
        d.update(&ctx, "a", sib(2, "a", "v2"), false).unwrap();
        assert_eq!(values(&d), ["v2"]);
    }

    #[test]
    fn concurrent_causal_writes_stay_siblings() {
        let mut a = DvvSet::default();
        a.update(&Context::new(), "a", sib(1, "a", "base"), false).unwrap();
        let ctx = a.context();
        let mut b = a.clone();
        a.update(&ctx, "a", sib(2, "a", "left"), false).unwrap();
        b.update(&ctx, "b", sib(3, "b", "right"), false).unwrap();
        a.merge(&b);
        assert_eq!(values(&a), ["left", "right"]);
        // A write-back with the merged context collapses them.
        let ctx = a.context();
        a.update(&ctx, "a", sib(4, "a", "resolved"), false).unwrap();
        assert_eq!(values(&a), ["resolved"]);
    }

    #[test]
    fn blind_write_drops_older_siblings_on_every_replica() {
        let mut a = DvvSet::default();
        a.update(&Context::new(), "a", sib(1, "a", "old-a"), false).unwrap();
        let mut b = DvvSet::default();
        b.update(&Context::new(), "b", sib(2, "b", "old-b"), false).unwrap();
        a.update(&Context::new(), "a", sib(5, "a", "blind"), true).unwrap();
        b.merge(&a);
        assert_eq!(values(&b), ["blind"]);
        // A newer concurrent sibling survives the floor.
        let mut c = DvvSet::default();
        c.update(&Context::new(), "c", sib(9, "c", "newer"), false).unwrap();
        b.merge(&c);
        assert_eq!(values(&b), ["blind", "newer"]);
    }

    #[test]
    fn dropped_sibling_never_comes_back() {
        let mut a = DvvSet::default();
        a.update(&Context::new(), "a", sib(1, "a", "x"), false).unwrap();
        let stale = a.clone();
        let ctx = a.context();
        a.update(&ctx, "a", sib(2, "a", "y"), false).unwrap();
        a.merge(&stale);
        assert_eq!(values(&a), ["y"]);
    }

    #[test]
    fn tombstone_hides_value_but_keeps_context() {
        let mut a = DvvSet::default();
        a.update(&Context::new(), "a", sib(1, "a", "x"), false).unwrap();
        let ctx = a.context();
        let tomb = Sibling::tombstone(Hlc { wall_ms: 2, logical: 0, node: "a".into() });
        a.update(&ctx, "a", tomb, false).unwrap();
        assert!(a.live(0).is_empty());
        assert_eq!(a.siblings().len(), 1);
        assert_eq!(a.context()["a"], 2);
    }

    #[test]
    fn a_u64_max_context_is_rejected_without_panic_and_changes_nothing() {
        let mut d = DvvSet::default();
        d.update(&Context::new(), "a", sib(1, "a", "x"), false).unwrap();
        let before = d.clone();
        for actor in ["a", "b"] {
            let ctx = Context::from([(actor.to_string(), u64::MAX)]);
            let err = d.update(&ctx, "a", sib(2, "a", "y"), false).unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("u64::MAX")), "{err}");
            assert_eq!(d, before, "a refused update changes nothing");
        }
        // A stored counter with no next dot (only a corrupt or hostile
        // version has one) fails the write instead of wrapping.
        d.entries.get_mut("a").unwrap().counter = u64::MAX - 1;
        let err = d.update(&Context::new(), "a", sib(3, "a", "z"), false).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("exhausted")), "{err}");
    }

    #[test]
    fn a_context_with_too_many_entries_is_rejected() {
        let ctx: Context = (0..=MAX_CONTEXT_ENTRIES).map(|i| (format!("x{i}"), 1)).collect();
        assert!(check_context(&ctx).is_err());
        let mut d = DvvSet::default();
        assert!(d.update(&ctx, "a", sib(1, "a", "v"), false).is_err());
        assert_eq!(d, DvvSet::default());
    }

    #[test]
    fn a_context_covers_only_what_the_key_has_issued() {
        let mut d = DvvSet::default();
        d.update(&Context::new(), "a", sib(1, "a", "a1"), false).unwrap();
        let mut b = DvvSet::default();
        b.update(&Context::new(), "b", sib(2, "b", "b1"), false).unwrap();
        d.merge(&b);
        // b issues dot 2, which this copy has not seen yet.
        b.update(&b.context(), "b", sib(3, "b", "b2"), false).unwrap();
        // A client claims far more than was issued, and names a made-up actor.
        let ctx = Context::from([("a".into(), 1), ("b".into(), 9), ("ghost".into(), 7)]);
        d.update(&ctx, "a", sib(4, "a", "mine"), false).unwrap();
        assert_eq!(d.context(), Context::from([("a".into(), 2), ("b".into(), 1)]), "no ghost entry, b not raised");
        d.merge(&b);
        assert_eq!(values(&d), ["b2", "mine"], "b's unseen dot survives as a sibling");
    }

    #[test]
    fn malformed_versions_fail_the_shape_check_and_never_panic_a_merge() {
        let good = Entry { counter: 2, siblings: vec![sib(2, "a", "y")] };
        let crowded = Entry { counter: 1, siblings: vec![sib(2, "a", "y"), sib(1, "a", "x")] };
        let maxed = Entry { counter: u64::MAX, siblings: vec![] };
        let set = |e: &Entry| DvvSet { entries: BTreeMap::from([("a".to_string(), e.clone())]), floor: None };
        set(&good).check_shape().unwrap();
        for bad in [&crowded, &maxed] {
            let err = set(bad).check_shape().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            // Had one been stored, merging it still does not panic.
            let _ = set(&good).merged(&set(bad));
            let _ = set(bad).merged(&set(&good));
        }
    }
}
