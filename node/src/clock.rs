//! The injected clock. Node code never calls `SystemTime::now()`: wall time
//! for the HLC comes from a `Clock`, so a simulation can supply its own and
//! skew one node. Timers use `tokio::time`, which turmoil simulates.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds.
    fn wall_ms(&self) -> u64;

    /// Shifts this clock by `ms` from its source; false when this clock
    /// cannot be shifted.
    fn set_offset_ms(&self, _ms: i64) -> bool {
        false
    }
}

/// `d` in the milliseconds wall time is counted in (saturating), for the
/// pure cores that take wall time as a `u64` of ms.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The operating system's clock plus an adjustable offset (for clock-fault
/// injection).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        now.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    fn set_offset_ms(&self, ms: i64) -> bool {
        self.offset_ms.store(ms, Ordering::Relaxed);
        true
    }
}

/// Watches the wall clock for steps: a jump of more than `max_step_ms`
/// against the monotonic clock between two looks. Gossip finds a clock that
/// disagrees with the peers, but only from fresh samples; a step is seen
/// here at the very next look. The coordinator then refuses to stamp writes
/// until gossip has sampled most peers' clocks since the step, and from
/// there the gossip comparison decides. So no write is stamped by a clock
/// that has just jumped, either way.
#[derive(Debug)]
pub struct ClockWatch {
    max_step_ms: u64,
    state: std::sync::Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The last look: wall ms and the monotonic instant.
    last: Option<(u64, tokio::time::Instant)>,
    /// The last step seen: when, and by how much (ms, signed).
    step: Option<(tokio::time::Instant, i64)>,
}

impl ClockWatch {
    /// Flags steps larger than `max_step_ms`.
    pub fn new(max_step_ms: u64) -> Self {
        Self { max_step_ms, state: Default::default() }
    }

    /// Looks at the wall clock (`wall_ms`, read just now) and returns the
    /// latest step ever seen: when it was seen, and its size in ms.
    pub fn check(&self, wall_ms: u64) -> Option<(tokio::time::Instant, i64)> {
        let now = tokio::time::Instant::now();
        let mut s = self.state.lock().expect("clock watch lock");
        if let Some((wall, at)) = s.last {
            let expected = wall as i128 + now.duration_since(at).as_millis() as i128;
            let step = (wall_ms as i128 - expected) as i64;
            if step.unsigned_abs() > self.max_step_ms {
                s.step = Some((now, step));
            }
        }
        s.last = Some((wall_ms, now));
        s.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn steps_either_way_are_seen_and_drift_is_not_a_step() {
        let w = ClockWatch::new(500);
        let step = |r: Option<(tokio::time::Instant, i64)>| r.map(|(_, s)| s);
        assert_eq!(w.check(10_000), None, "the first look sets the baseline");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(w.check(10_100), None, "wall kept pace with the monotonic clock");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(w.check(10_200 + 400), None, "400 ms is within the limit");
        tokio::time::advance(Duration::from_millis(100)).await;
        let jumped = tokio::time::Instant::now();
        assert_eq!(w.check(10_700 + 3_000), Some((jumped, 3_000)), "a 3 s step forward, seen now");
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(w.check(14_700), Some((jumped, 3_000)), "the step is remembered");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(step(w.check(14_800 - 5_000)), Some(-5_000), "a step back is a step too");
    }
}
