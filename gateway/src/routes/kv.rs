//! `GET/PUT/DELETE /v1/kv/{key}`: one key through the client library.
//!
//! The key is the rest of the path, percent-decoded (`/v1/kv/app/user%201`
//! is `app/user 1`). GET with several concurrent siblings: the JSON answer
//! lists them all; the raw answer is the last-writer-wins sibling (newest
//! HLC) with `X-Ringkv-Siblings` counting them, so a client that ignores
//! siblings still gets one value, and one that cares can see there are
//! more. A missing key is 404 (with the receipt, and the context of a
//! delete when there is one).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ringkv_client::{lww, pb};
use serde_json::json;

use super::{respond, Answer};
use crate::body::{self, b64, sibling_json};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::params::{level_name, KvParams};
use crate::receipt;
use crate::recent::Seen;
use crate::state::Gateway;

/// Counts a GET's concurrent siblings.
const SIBLINGS: HeaderName = HeaderName::from_static("x-ringkv-siblings");

/// The key and parameters, or why they are unusable.
fn inputs(
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<KvParams>, QueryRejection>,
) -> Result<(String, KvParams), ApiError> {
    let Path(key) = key.map_err(|e| ApiError::BadRequest(format!("the key in the path: {}", e.body_text())))?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key is empty; use /v1/kv/KEY".into()));
    }
    Ok((key, params))
}

/// Runs `op` with its inputs checked, and records it.
async fn handle<F, Fut>(gw: &Gateway, op: &'static str, key: Result<(String, KvParams), ApiError>, f: F) -> Response
where
    F: FnOnce(String, KvParams) -> Fut,
    Fut: std::future::Future<Output = Result<Answer, ApiError>>,
{
    let started = Instant::now();
    match key {
        Err(e) => respond(gw, Seen::new(op, "", "invalid"), started, Err(e)),
        Ok((key, params)) => {
            let level = params.options().map_or("invalid", |o| level_name(o.level));
            let seen = Seen::new(op, &key, level);
            respond(gw, seen, started, f(key, params).await)
        }
    }
}

fn answer(
    status: StatusCode,
    mut headers: HeaderMap,
    receipt: Option<pb::Receipt>,
    body: impl IntoResponse,
) -> (Response, Option<pb::Receipt>) {
    receipt::set_headers(&mut headers, receipt.as_ref());
    ((status, headers, body).into_response(), receipt)
}

/// `GET /v1/kv/{key}`.
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<KvParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (gw, caller, headers) = (&*gw, &caller, &headers);
    handle(gw, "get", inputs(key, params), |key, params| async move {
        let opts = params.options().map_err(ApiError::BadRequest)?;
        let resp = gw.client_for(caller)?.get(key.as_bytes(), opts).await?;
        let mut out = HeaderMap::new();
        body::set_context(&mut out, &resp.context);
        out.insert(SIBLINGS, HeaderValue::from(resp.siblings.len()));
        let siblings = resp.siblings.len();
        if siblings == 0 {
            let doc = json!({ "error": "not_found", "message": format!("no live value for {key:?}"), "key": key,
                              "context": b64(&resp.context), "receipt": receipt::json(resp.receipt.as_ref()) });
            let (response, receipt) = answer(StatusCode::NOT_FOUND, out, resp.receipt, Json(doc));
            return Ok(Answer { response, receipt, outcome: "not_found", siblings });
        }
        let (response, receipt) = if body::wants_json(headers) {
            let doc = json!({ "key": key, "siblings": resp.siblings.iter().map(sibling_json).collect::<Vec<_>>(),
                              "context": b64(&resp.context), "receipt": receipt::json(resp.receipt.as_ref()) });
            answer(StatusCode::OK, out, resp.receipt, Json(doc))
        } else {
            let winner = lww(&resp.siblings).expect("there is at least one sibling");
            if winner.expires_at_ms > 0 {
                out.insert(HeaderName::from_static("x-ringkv-expires-at-ms"), HeaderValue::from(winner.expires_at_ms));
            }
            out.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            let value = winner.value.clone();
            answer(StatusCode::OK, out, resp.receipt, value)
        };
        Ok(Answer { response, receipt, outcome: "ok", siblings })
    })
    .await
}

/// `PUT /v1/kv/{key}`: the body is the value; `If-Match` or
/// `X-Ringkv-Context` supersedes what a GET saw; `ttl` expires it.
pub async fn put(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<KvParams>, QueryRejection>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (gw, caller, headers, bytes) = (&*gw, &caller, &headers, &bytes);
    handle(gw, "put", inputs(key, params), |key, params| async move {
        let opts = params.options().map_err(ApiError::BadRequest)?;
        let ttl = params.ttl().map_err(ApiError::BadRequest)?;
        let put = body::put_body(headers, bytes)?;
        let client = gw.client_for(caller)?;
        let resp = match ttl {
            Some(ttl) => client.put_with_ttl(key.as_bytes(), &put.value, put.context, ttl, opts).await?,
            None => client.put(key.as_bytes(), &put.value, put.context, opts).await?,
        };
        let mut out = HeaderMap::new();
        body::set_context(&mut out, &resp.context);
        let doc = json!({ "ok": true, "key": key, "context": b64(&resp.context), "ttl_ms": ttl.map(|t| t.as_millis() as u64),
                          "receipt": receipt::json(resp.receipt.as_ref()) });
        let (response, receipt) = answer(StatusCode::OK, out, resp.receipt, Json(doc));
        Ok(Answer { response, receipt, outcome: "ok", siblings: 0 })
    })
    .await
}

/// `DELETE /v1/kv/{key}`: writes a tombstone; `If-Match` or
/// `X-Ringkv-Context` deletes exactly what a GET saw.
pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<KvParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (gw, caller, headers) = (&*gw, &caller, &headers);
    handle(gw, "delete", inputs(key, params), |key, params| async move {
        let opts = params.options().map_err(ApiError::BadRequest)?;
        let context = body::context(headers)?;
        let resp = gw.client_for(caller)?.delete(key.as_bytes(), context, opts).await?;
        let doc = json!({ "ok": true, "key": key, "receipt": receipt::json(resp.receipt.as_ref()) });
        let (response, receipt) = answer(StatusCode::OK, HeaderMap::new(), resp.receipt, Json(doc));
        Ok(Answer { response, receipt, outcome: "ok", siblings: 0 })
    })
    .await
}
