//! Per-client rate limits on the client surface (`Kv`), GCRA by `governor`.
//!
//! Each client address gets its own cell: `rate_limit_per_sec` sustained,
//! with `rate_limit_burst` requests allowed at once above it. A request over
//! its limit is refused before any work is done, as `RESOURCE_EXHAUSTED`
//! with `x-ringkv-retry-after-ms` saying when the next one would pass, so a
//! client neither writes anything nor has to guess its back-off.
//!
//! The limit is per node. A client that spreads its requests over N nodes
//! can therefore reach about N times it across the cluster; an operator
//! sizes the per-node limit with that in mind (README). Until tokens exist
//! (#14's principals), the client is its IP address; a connection whose
//! address the transport does not know shares one cell with the others.
//! Peer traffic is never limited here: replication must not be throttled
//! by the client limits.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

/// Cells kept before idle ones are swept (`retain_recent`), so a scan of
/// many addresses cannot grow the table without bound.
const SWEEP_AT: usize = 10_000;

/// The node's client rate limits; off when `rate_limit_per_sec` is 0.
pub struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    per_sec: u32,
    burst: u32,
}

impl RateLimits {
    /// Limits of `per_sec` requests per second per client, with bursts of
    /// `burst` (0: the same as `per_sec`). `per_sec` 0 turns them off.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let burst = if burst == 0 { per_sec } else { burst };
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
            RateLimiter::keyed(quota)
        });
        Self { limiter, clock: DefaultClock::default(), per_sec, burst }
    }

    /// Admits one request from `client`, or says when to come back.
    pub fn check(&self, client: Option<IpAddr>) -> Result<()> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if limiter.len() > SWEEP_AT {
            limiter.retain_recent();
        }
        let key = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::RateLimited { per_sec: self.per_sec, burst: self.burst, retry_after_ms: (wait.as_millis() as u64).max(1) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    #[test]
    fn off_admits_everything() {
        let limits = RateLimits::new(0, 0);
        assert!((0..10_000).all(|_| limits.check(ip(1)).is_ok()));
    }

    #[test]
    fn a_burst_past_the_limit_is_refused_with_a_wait_and_other_clients_are_not() {
        let limits = RateLimits::new(5, 5);
        let admitted = (0..20).filter(|_| limits.check(ip(1)).is_ok()).count();
        assert!((5..=6).contains(&admitted), "the burst of 5 passes, the rest wait: {admitted}");
        match limits.check(ip(1)) {
            Err(Error::RateLimited { per_sec: 5, burst: 5, retry_after_ms }) => {
                assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}")
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert!(limits.check(ip(2)).is_ok(), "another client has its own cell");
    }
}
