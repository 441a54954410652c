//! What the gateway saw: `GET /v1/recent` (the last requests and their
//! receipts, newest first), `GET /v1/latency` (per operation and level)
//! and `GET /metrics` (the same counts in Prometheus' text format).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use http::header::CONTENT_TYPE;
use serde_json::{json, Value};

use crate::state::Gateway;

/// `GET /v1/recent`.
pub async fn recent(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({ "requests": gw.recent.newest_first() }))
}

/// `GET /v1/latency`.
pub async fn latency(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({ "series": gw.stats.rows() }))
}

/// `GET /metrics`.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], gw.stats.prometheus())
}
