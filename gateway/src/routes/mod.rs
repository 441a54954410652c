//! The HTTP routes, one file per surface, assembled here.
//!
//! | route | file |
//! |---|---|
//! | `GET/PUT/DELETE /v1/kv/{key}` | `kv.rs` |
//! | `GET /v1/scan` | `scan.rs` |
//! | `GET /v1/watch` (WebSocket or Server-Sent Events) | `watch.rs` |
//! | `GET /v1/cluster` (ring, nodes, liveness) | `cluster.rs` |
//! | `GET /v1/recent`, `/v1/latency`, `/metrics` | `observe.rs` |
//! | `GET /`, `/app.js` (the cluster page) | `page.rs` |
//!
//! The data routes (`data()`) sit behind the per-client rate limit; a new
//! data route (a change stream, say) is one more file and one more
//! `.route` line there. Every data handler ends in [`respond`], which
//! records the request for the page and the statistics.

mod cluster;
mod kv;
mod observe;
mod page;
mod scan;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ringkv_client::pb;

use crate::error::ApiError;
use crate::recent::Seen;
use crate::state::Gateway;

/// The largest request body accepted: the gRPC message limit the client
/// uses toward the nodes, so the gateway never refuses what a node would
/// take.
const MAX_BODY_BYTES: usize = ringkv_proto::wire::MAX_MESSAGE_BYTES;

/// Every route, over `gw`.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .merge(data(gw.clone()))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/recent", get(observe::recent))
        .route("/v1/latency", get(observe::latency))
        .route("/metrics", get(observe::metrics))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .fallback(|| async { ApiError::NotFound("no such route; see the README's \"HTTP gateway\" section for the API".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gw)
}

/// The data routes, rate limited per client.
fn data(gw: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/scan", get(scan::scan))
        .route("/v1/watch", get(watch::watch))
        .route_layer(axum::middleware::from_fn_with_state(gw, crate::limit::middleware))
}

/// What a data handler answered, and what to record about it.
pub(crate) struct Answer {
    /// The HTTP response.
    pub response: Response,
    /// The receipt, for the recent list.
    pub receipt: Option<pb::Receipt>,
    /// `ok` or `not_found`.
    pub outcome: &'static str,
    /// Siblings a GET found.
    pub siblings: usize,
}

/// Records the request (`op` on `key` at `level`, begun at `started`) and
/// returns its response.
pub(crate) fn respond(gw: &Gateway, mut seen: Seen, started: Instant, result: Result<Answer, ApiError>) -> Response {
    match result {
        Ok(a) => {
            seen = seen.with_receipt(a.receipt.as_ref());
            seen.siblings = a.siblings;
            gw.finish(seen, started, a.response.status().as_u16(), a.outcome);
            a.response
        }
        Err(e) => {
            gw.finish(seen, started, e.status().as_u16(), e.kind());
            e.into_response()
        }
    }
}
