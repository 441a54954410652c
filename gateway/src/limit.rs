//! The gateway's per-client rate limit (GCRA by `governor`), in front of
//! the data routes. A client is its bearer token when it sends one, else
//! its remote IP ([`Caller::limit_key`]). The nodes keep their own limits
//! too; this one protects the gateway and the cluster from one HTTP client
//! before a request fans out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::caller::Caller;
use crate::config::RateLimit;
use crate::error::ApiError;
use crate::state::Gateway;

/// Past this many tracked clients, those idle long enough to be back at a
/// full budget are forgotten, so the map cannot grow without bound.
const SWEEP_AT: usize = 10_000;

/// A keyed limiter.
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    limit: RateLimit,
}

impl Limiter {
    /// `limit` per client, with a burst of the same size.
    pub fn new(limit: RateLimit) -> Self {
        Self { inner: RateLimiter::keyed(Quota::per_second(limit.per_second)), clock: DefaultClock::default(), limit }
    }

    /// Admits one request from `key`, or says when to come back.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        if self.inner.len() > SWEEP_AT {
            self.inner.retain_recent();
        }
        self.inner.check_key(&key.to_string()).map_err(|not_until| ApiError::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            limit: self.limit.to_string(),
        })
    }
}

/// The middleware: refuses with 429 and `Retry-After` when over the limit.
pub async fn middleware(State(gw): State<Arc<Gateway>>, caller: Caller, req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(limiter) = gw.limiter() {
        if let Err(e) = limiter.check(&caller.limit_key()) {
            gw.refused(&req, &e);
            return Err(e);
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn a_client_past_its_burst_waits_and_another_client_does_not() {
        let l = Limiter::new(RateLimit { per_second: NonZeroU32::new(3).unwrap() });
        let admitted = (0..10).filter(|_| l.check("token:a").is_ok()).count();
        assert!((3..=4).contains(&admitted), "{admitted}");
        match l.check("token:a") {
            Err(ApiError::RateLimited { retry_after, limit }) => {
                assert!(retry_after.as_millis() <= 1000, "{retry_after:?}");
                assert_eq!(limit, "3/s");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(l.check("ip:127.0.0.1").is_ok());
    }
}
