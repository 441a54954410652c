//! [`Gateway`]: what every route shares. The client (with its routing
//! policy and health checks), the rate limiter, the recent-requests buffer
//! and the statistics.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::Request;
use ringkv_client::Client;

use crate::caller::Caller;
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::limit::Limiter;
use crate::recent::{Recent, Seen};
use crate::stats::Stats;

/// The gateway's shared state.
pub struct Gateway {
    client: Client,
    own_token: bool,
    limiter: Option<Limiter>,
    pub(crate) recent: Recent,
    pub(crate) stats: Stats,
}

impl Gateway {
    /// A gateway in front of `client`: built with the routing policy and the
    /// gateway's own credentials (TLS toward the nodes, its own token for
    /// discovery and the cluster page).
    pub fn new(client: Client, config: &GatewayConfig) -> Self {
        Self {
            client,
            own_token: config.own_token,
            limiter: config.rate_limit.map(Limiter::new),
            recent: Recent::new(config.recent),
            stats: Stats::default(),
        }
    }

    /// The client for the gateway's own calls (the cluster page).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client for `caller`'s request: presenting the caller's token,
    /// or none, never the gateway's own.
    pub(crate) fn client_for(&self, caller: &Caller) -> Result<Cow<'_, Client>, ApiError> {
        if caller.token.is_none() && !self.own_token {
            return Ok(Cow::Borrowed(&self.client));
        }
        Ok(Cow::Owned(self.client.with_token(caller.token.as_deref())?))
    }

    pub(crate) fn limiter(&self) -> Option<&Limiter> {
        self.limiter.as_ref()
    }

    /// Records a finished request in the statistics and the recent list.
    pub(crate) fn finish(&self, mut seen: Seen, started: Instant, status: u16, outcome: &str) {
        let took = started.elapsed();
        seen.status = status;
        seen.outcome = outcome.to_string();
        seen.gateway_us = took.as_micros() as u64;
        tracing::debug!(op = seen.op, key = %seen.key, level = %seen.level, status, outcome, gateway_us = seen.gateway_us, "gateway request");
        self.stats.record(seen.op, &seen.level, status, took);
        self.recent.push(seen);
    }

    /// Records a request the rate limit refused.
    pub(crate) fn refused(&self, req: &Request, e: &ApiError) {
        let op = match *req.method() {
            http::Method::PUT => "put",
            http::Method::DELETE => "delete",
            _ if req.uri().path().starts_with("/v1/scan") => "scan",
            _ if req.uri().path().starts_with("/v1/watch") => "watch",
            _ => "get",
        };
        let key = req.uri().path().strip_prefix("/v1/kv/").unwrap_or("");
        self.finish(Seen::new(op, key, "limited"), Instant::now(), e.status().as_u16(), e.kind());
    }
}
