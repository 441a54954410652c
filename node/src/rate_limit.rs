//! Per-client rate limits on the client surface (`Kv`), GCRA by `governor`.
//!
//! Each client gets its own cell: a principal by its name when the node
//! has principals (security/tokens.rs), otherwise its IP address. The quota
//! is the principal's own when one of its roles sets `rate_limit_per_sec`,
//! else the node's `rate_limit_per_sec` with bursts of `rate_limit_burst`.
//! A request over its limit is refused before any work is done, as
//! `RESOURCE_EXHAUSTED` with `x-ringkv-retry-after-ms` saying when the next
//! one would pass, so a client neither writes anything nor has to guess its
//! back-off.
//!
//! The limit is per node. A client that spreads its requests over N nodes
//! can therefore reach about N times it across the cluster; an operator
//! sizes the per-node limit with that in mind (README). A connection whose
//! address the transport does not know shares one cell with the others.
//! Peer traffic is never limited here: replication must not be throttled
//! by the client limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

/// Cells kept per quota before idle ones are swept (`retain_recent`), so a
/// scan of many addresses cannot grow the table without bound.
const SWEEP_AT: usize = 10_000;

/// Who a cell belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// A principal, by name.
    Principal(String),
    /// An anonymous client, by address.
    Address(Option<IpAddr>),
}

/// `(per_sec, burst)`.
type QuotaKey = (u32, u32);

/// The node's client rate limits.
pub struct RateLimits {
    default: Option<QuotaKey>,
    limiters: RwLock<HashMap<QuotaKey, Arc<DefaultKeyedRateLimiter<Client>>>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Limits of `per_sec` requests per second per client, with bursts of
    /// `burst` (0: the same as `per_sec`). `per_sec` 0 turns the default
    /// off; principals whose roles set a limit are still held to it.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let default = (per_sec > 0).then_some((per_sec, if burst == 0 { per_sec } else { burst }));
        Self { default, limiters: RwLock::default(), clock: DefaultClock::default() }
    }

    fn limiter(&self, (per_sec, burst): QuotaKey) -> Option<Arc<DefaultKeyedRateLimiter<Client>>> {
        if let Some(l) = self.limiters.read().expect("limits lock").get(&(per_sec, burst)) {
            return Some(l.clone());
        }
        let rate = NonZeroU32::new(per_sec)?;
        let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
        let mut limiters = self.limiters.write().expect("limits lock");
        Some(limiters.entry((per_sec, burst)).or_insert_with(|| Arc::new(RateLimiter::keyed(quota))).clone())
    }

    /// Admits one request from `client`, held to `own` (a role's quota) or
    /// else the node's default, or says when to come back.
    pub fn check(&self, client: &Client, own: Option<(u32, u32)>) -> Result<()> {
        let Some(quota) = own.or(self.default) else { return Ok(()) };
        let Some(limiter) = self.limiter(quota) else { return Ok(()) };
        if limiter.len() > SWEEP_AT {
            limiter.retain_recent();
        }
        limiter.check_key(client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::RateLimited { per_sec: quota.0, burst: quota.1, retry_after_ms: (wait.as_millis() as u64).max(1) }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> Client {
        Client::Address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))))
    }

    #[test]
    fn off_admits_everything() {
        let limits = RateLimits::new(0, 0);
        assert!((0..10_000).all(|_| limits.check(&ip(1), None).is_ok()));
    }

    #[test]
    fn a_burst_past_the_limit_is_refused_with_a_wait_and_other_clients_are_not() {
        let limits = RateLimits::new(5, 5);
        let admitted = (0..20).filter(|_| limits.check(&ip(1), None).is_ok()).count();
        assert!((5..=6).contains(&admitted), "the burst of 5 passes, the rest wait: {admitted}");
        match limits.check(&ip(1), None) {
            Err(Error::RateLimited { per_sec: 5, burst: 5, retry_after_ms }) => {
                assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}")
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert!(limits.check(&ip(2), None).is_ok(), "another client has its own cell");
    }

    #[test]
    fn a_role_quota_overrides_the_default_for_its_principal() {
        let limits = RateLimits::new(0, 0);
        let batch = Client::Principal("batch".into());
        let admitted = (0..20).filter(|_| limits.check(&batch, Some((3, 3))).is_ok()).count();
        assert!((3..=4).contains(&admitted), "the role's burst of 3: {admitted}");
        assert!((0..100).all(|_| limits.check(&Client::Principal("web".into()), None).is_ok()), "no default: unlimited");
        let strict = RateLimits::new(2, 2);
        let generous = (0..20).filter(|_| strict.check(&batch, Some((100, 100))).is_ok()).count();
        assert_eq!(generous, 20, "the role's own quota, not the node default");
    }
}
