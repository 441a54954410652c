//! Expiry over a whole version: which siblings a read at a given instant
//! returns, turning expired values into tombstones, and when tombstone GC
//! may drop the key.
//!
//! The rules for one sibling, and why converting is a join, are in
//! `sibling.rs`. Here they are lifted to a [`DvvSet`]:
//!
//! - [`DvvSet::live`] (in `dvv.rs`) hides expired siblings, judged at the
//!   reader's `now_ms`.
//! - [`DvvSet::expire`] converts every sibling expired at `now_ms` in
//!   place. It never changes a clock entry, a dot or the floor, so it
//!   commutes with every merge: `expire(a ⊔ b) = expire(a) ⊔ expire(b)`,
//!   and a replica that converted and one that did not merge to the
//!   converted set. Nodes convert when they coordinate a write to the key
//!   and during tombstone GC, each by its own clock; the proptests in
//!   `proptests.rs` show the outcome does not depend on when, or whether,
//!   each replica converted.
//! - [`DvvSet::purgeable`] is the GC rule: every sibling dead since the
//!   cutoff (a delete from its write, an expiring value from its expiry,
//!   converted or not) and no timestamp at or after it. It gives the same
//!   answer for either form of every dot, so replicas that hold different
//!   forms still purge the same keys.

use super::DvvSet;

impl DvvSet {
    /// True when some sibling has expired by `now_ms` but is not yet a
    /// tombstone: [`DvvSet::expire`] would change the set.
    pub fn has_expired(&self, now_ms: u64) -> bool {
        self.entries.values().flat_map(|e| &e.siblings).any(|s| s.is_unconverted() && s.is_expired(now_ms))
    }

    /// Turns every sibling expired by `now_ms` into its tombstone
    /// (`Sibling::expired`). Returns whether anything changed.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        for s in self.entries.values_mut().flat_map(|e| e.siblings.iter_mut()) {
            if s.is_unconverted() && s.is_expired(now_ms) {
                *s = s.expired();
                changed = true;
            }
        }
        changed
    }

    /// A copy with every sibling expired by `now_ms` converted.
    pub fn expired_at(&self, now_ms: u64) -> DvvSet {
        let mut out = self.clone();
        out.expire(now_ms);
        out
    }

    /// Tombstone GC: true when every sibling has been dead since
    /// `cutoff_ms` and nothing, the floor included, was written at or after
    /// it. A key with neither siblings nor floor is never purgeable.
    pub fn purgeable(&self, cutoff_ms: u64) -> bool {
        self.max_hlc().is_some_and(|h| h.wall_ms < cutoff_ms) && self.siblings().iter().all(|s| s.dead_at(cutoff_ms))
    }
}

#[cfg(test)]
mod tests {
    use crate::version::{Context, DvvSet, Hlc, Sibling};

    fn put(d: &mut DvvSet, ctx: &Context, node: &str, wall: u64, v: &str, ttl: Option<u64>) {
        let s = Sibling {
            expires_at_ms: ttl.map(|t| wall + t),
            ..Sibling::value(Hlc { wall_ms: wall, logical: 0, node: node.into() }, v.into())
        };
        d.update(ctx, node, s, ctx.is_empty()).unwrap();
    }

    fn values(d: &DvvSet, now: u64) -> Vec<String> {
        let mut v: Vec<String> = d.live(now).iter().map(|s| String::from_utf8(s.value.clone()).unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_value_is_read_until_its_expiry_and_never_after() {
        let mut d = DvvSet::default();
        put(&mut d, &Context::new(), "a", 1_000, "v", Some(2_000));
        assert_eq!(values(&d, 1_000), ["v"]);
        assert_eq!(values(&d, 2_999), ["v"]);
        assert!(values(&d, 3_000).is_empty());
        assert!(!d.has_expired(2_999) && d.has_expired(3_000));
        assert!(d.expire(3_000), "converts");
        assert!(!d.expire(9_000), "and only once");
        assert!(values(&d, 0).is_empty(), "a converted value is gone at any time");
        assert_eq!(d.siblings().len(), 1, "its tombstone stays, for GC");
        assert!(d.siblings()[0].tombstone && d.siblings()[0].value.is_empty());
    }

    #[test]
    fn a_write_with_a_newer_context_supersedes_an_expiring_sibling() {
        let mut d = DvvSet::default();
        put(&mut d, &Context::new(), "a", 1_000, "short-lived", Some(60_000));
        let ctx = d.context();
        put(&mut d, &ctx, "b", 1_001, "kept", None);
        assert_eq!(values(&d, 1_002), ["kept"]);
        assert_eq!(values(&d, 100_000), ["kept"], "the expiry of what was superseded changes nothing");
        assert_eq!(d.siblings().len(), 1);
    }

    #[test]
    fn a_concurrent_sibling_outlives_an_expiring_one() {
        let mut a = DvvSet::default();
        put(&mut a, &Context::from([("x".into(), 0)]), "a", 1_000, "ttl", Some(500));
        let mut b = DvvSet::default();
        put(&mut b, &Context::from([("x".into(), 0)]), "b", 1_001, "forever", None);
        a.merge(&b);
        assert_eq!(values(&a, 1_100), ["forever", "ttl"]);
        assert_eq!(values(&a, 1_500), ["forever"]);
    }

    #[test]
    fn a_replica_that_converted_and_one_that_did_not_merge_to_the_converted_set() {
        let mut a = DvvSet::default();
        put(&mut a, &Context::new(), "a", 1_000, "v", Some(100));
        let b = a.clone();
        a.expire(1_100);
        assert_ne!(a, b);
        assert_eq!(a.merged(&b), a);
        assert_eq!(b.merged(&a), a);
        assert!(b.dominates(&b.expired_at(1_050)), "nothing expired yet: nothing to convert");
        assert!(!b.dominates(&a), "the unconverted copy is stale, so read repair and anti-entropy fix it");
    }

    #[test]
    fn purge_is_decided_by_expiry_alike_for_both_forms() {
        let mut d = DvvSet::default();
        put(&mut d, &Context::new(), "a", 1_000, "v", Some(5_000));
        let converted = d.expired_at(6_000);
        for form in [&d, &converted] {
            assert!(!form.purgeable(5_999), "still live at the cutoff");
            assert!(form.purgeable(6_000), "expired at the cutoff instant itself");
        }
        // A plain delete is dead from its own write, as before TTL.
        let mut t = DvvSet::default();
        t.update(&Context::new(), "a", Sibling::tombstone(Hlc { wall_ms: 1_000, logical: 0, node: "a".into() }), true).unwrap();
        assert!(!t.purgeable(1_000) && t.purgeable(1_001));
        // A live sibling beside it keeps the key.
        put(&mut t, &Context::from([("x".into(), 0)]), "b", 2_000, "live", None);
        assert!(!t.purgeable(u64::MAX));
    }
}
