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
