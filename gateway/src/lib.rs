//! `ringkv gateway`: HTTP/JSON in front of the ring, built on the client
//! library, with a live cluster page.
//!
//! # What it does
//!
//! The gateway takes on the four duties of an API gateway for ringkv:
//!
//! - **protocol translation**: `GET/PUT/DELETE /v1/kv/{key}` and
//!   `GET /v1/scan` become the client's `get`/`put`/`delete`/`scan`; query
//!   parameters become [`ringkv_client::Options`] (`params.rs`); the value
//!   is the body, raw or JSON with base64, and the causal context travels in
//!   `X-Ringkv-Context`/`ETag`/`If-Match` (`body.rs`); the receipt comes
//!   back as JSON and as `X-Ringkv-*` headers (`receipt.rs`); the client's
//!   typed errors map to status codes in one place (`error.rs`);
//! - **routing**: the client library's load-balancing policies and health
//!   checks, unchanged: the gateway is one long-lived client;
//! - **authentication**: the caller's `Authorization: Bearer` token is
//!   passed through to the nodes, which decide what it may do
//!   (`caller.rs`, [`ringkv_client::Client::with_token`]); the gateway never
//!   lends its own token to a caller;
//! - **rate limiting**: per client (token, else remote IP) before anything
//!   fans out (`limit.rs`).
//!
//! It also keeps the last requests with their receipts (`recent.rs`) and
//! latency per operation and level (`stats.rs`), which the cluster page at
//! `/` (`routes/page.rs`, `page/`) polls, with the ring from
//! `/v1/cluster`.
//!
//! # Shape
//!
//! Handlers are thin async shells over pure pieces (parameter parsing,
//! body and header codecs, the error table, the ring buffer, the
//! histograms), each unit-tested in its file. [`Gateway`] is the shared
//! state; `routes/mod.rs` assembles the router.

mod body;
mod caller;
mod config;
mod error;
mod limit;
mod params;
mod receipt;
mod recent;
mod routes;
mod state;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{GatewayConfig, RateLimit, DEFAULT_RECENT};
pub use error::ApiError;
pub use state::Gateway;
use tokio_util::sync::CancellationToken;

/// The router over `gateway`, for serving or for in-process tests.
pub fn router(gateway: Gateway) -> axum::Router {
    routes::router(Arc::new(gateway))
}

/// Serves `gateway` on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish.
pub async fn serve(listener: tokio::net::TcpListener, gateway: Gateway, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = router(gateway).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
