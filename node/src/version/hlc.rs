//! Hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks",
//! 2014): the timestamp every sibling carries and the per-node clock that
//! issues it.
//!
//! Invariants: a clock never issues a timestamp at or below one it issued
//! or observed before, and it refuses a remote timestamp more than
//! `max_skew_ms` ahead of local wall time. The clock is pure: wall time is
//! an argument, read by the caller from the injected `Clock`.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A hybrid logical clock timestamp. The derived order (wall, logical,
/// node) is total, so LWW between any two writes is decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical time in milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
    /// The node that issued the timestamp, the final tie-breaker.
    pub node: String,
}

/// A hybrid logical clock (Kulkarni et al., 2014) for one node. Pure: the
/// wall time comes in as an argument, from the injected `Clock`.
#[derive(Debug)]
pub struct HlcClock {
    node: String,
    max_skew_ms: u64,
    last: Mutex<(u64, u32)>,
}

impl HlcClock {
    /// A clock for `node` that rejects remote timestamps more than
    /// `max_skew_ms` ahead of local wall time.
    pub fn new(node: impl Into<String>, max_skew_ms: u64) -> Self {
        Self { node: node.into(), max_skew_ms, last: Mutex::new((0, 0)) }
    }

    /// A fresh timestamp, greater than every one issued or observed before.
    pub fn now(&self, wall_ms: u64) -> Hlc {
        let mut last = self.last.lock().expect("hlc lock poisoned");
        *last = if wall_ms > last.0 { (wall_ms, 0) } else { (last.0, last.1 + 1) };
        Hlc { wall_ms: last.0, logical: last.1, node: self.node.clone() }
    }

    /// Moves the clock past `seen`, so the next `now` is greater. Used for
    /// timestamps this node already stores, which are never rejected.
    pub fn observe(&self, seen: &Hlc) {
        let mut last = self.last.lock().expect("hlc lock poisoned");
        if (seen.wall_ms, seen.logical) > *last {
            *last = (seen.wall_ms, seen.logical);
        }
    }

    /// Checks a timestamp that came from another node, then observes it. A
    /// timestamp too far ahead is rejected: accepting it would let a skewed
    /// clock shadow every later write.
    pub fn receive(&self, remote: &Hlc, wall_ms: u64) -> Result<()> {
        self.check(remote, wall_ms)?;
        self.observe(remote);
        Ok(())
    }

    /// The check of [`HlcClock::receive`] alone: fails if `remote` is more
    /// than `max_skew_ms` ahead of `wall_ms`; the clock does not move.
    pub fn check(&self, remote: &Hlc, wall_ms: u64) -> Result<()> {
        let limit = wall_ms.saturating_add(self.max_skew_ms);
        if remote.wall_ms > limit {
            return Err(Error::ClockSkew { node: remote.node.clone(), ahead_ms: remote.wall_ms - wall_ms, max_ms: self.max_skew_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_and_rejects_far_future() {
        let c = HlcClock::new("n1", 500);
        let t1 = c.now(100);
        let t2 = c.now(100);
        let t3 = c.now(50);
        assert!(t1 < t2 && t2 < t3);
        let remote = Hlc { wall_ms: 400, logical: 7, node: "n2".into() };
        c.receive(&remote, 100).unwrap();
        assert!(c.now(100) > remote);
        let far = Hlc { wall_ms: 700, logical: 0, node: "n3".into() };
        let err = c.receive(&far, 100).unwrap_err();
        assert!(matches!(err, Error::ClockSkew { ahead_ms: 600, max_ms: 500, .. }), "{err}");
    }
}
