//! `GET /v1/scan?prefix=&start_after=&limit=`: one page of live keys.
//! Page on with `start_after` set to the answer's `next_start_after` while
//! `more` is true (a page may be empty with `more` set: a run of deleted
//! keys).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderMap;
use serde_json::json;

use super::{respond, Answer};
use crate::body::{b64, sibling_json};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::params::{level_name, ScanParams};
use crate::receipt;
use crate::recent::Seen;
use crate::state::Gateway;

/// `GET /v1/scan`.
pub async fn scan(State(gw): State<Arc<Gateway>>, caller: Caller, params: Result<Query<ScanParams>, QueryRejection>) -> Response {
    let started = Instant::now();
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return respond(&gw, Seen::new("scan", "", "invalid"), started, Err(ApiError::BadRequest(e.body_text()))),
    };
    let level = params.options().map_or("invalid", |o| level_name(o.level));
    let seen = Seen::new("scan", &params.prefix, level);
    let result = async {
        let opts = params.options().map_err(ApiError::BadRequest)?;
        let limit = params.limit().map_err(ApiError::BadRequest)?;
        let client = gw.client_for(&caller)?;
        let resp = client.scan(params.prefix.as_bytes(), params.start_after.as_bytes(), limit, opts).await?;
        let entries: Vec<_> = resp
            .entries
            .iter()
            .map(|e| {
                json!({ "key": String::from_utf8_lossy(&e.key), "siblings": e.siblings.iter().map(sibling_json).collect::<Vec<_>>(),
                        "context": b64(&e.context) })
            })
            .collect();
        let doc = json!({ "entries": entries, "more": resp.more, "next_start_after": String::from_utf8_lossy(&resp.next_start_after),
                          "receipt": receipt::json(resp.receipt.as_ref()) });
        let mut headers = HeaderMap::new();
        receipt::set_headers(&mut headers, resp.receipt.as_ref());
        Ok(Answer { response: (headers, Json(doc)).into_response(), receipt: resp.receipt, outcome: "ok", siblings: 0 })
    }
    .await;
    respond(&gw, seen, started, result)
}
