//! `GET /v1/watch?prefix=&resume=`: the change stream of keys under a
//! prefix (`Client::watch`, which follows every node and drops
//! duplicates), two ways:
//! - a **WebSocket** when the request asks to upgrade: one text message per
//!   event, full duplex, for browsers and apps that hold a socket;
//! - **Server-Sent Events** otherwise (`Accept: text/event-stream`): plain
//!   HTTP that proxies and firewalls which block upgrades let through,
//!   with `id:` set to the resume position, so a browser's `EventSource`
//!   resumes by itself through `Last-Event-ID`.
//!
//! Each event is one JSON object: `key`, `deleted`, `siblings` (as GET
//! lists them, plus `tombstone`), `context` (base64, to write back with), `node` (which
//! replica reported it) and `position` (pass it as `resume` to continue
//! after this event). A position too old to resume answers 410 Gone before
//! the stream starts, or ends the stream with a last `error` event (SSE) or
//! message (WebSocket) of kind `resync_required`: read the prefix with
//! `/v1/scan`, then watch again without `resume`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use ringkv_client::{WatchEvent, WatchPosition, WatchStream};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{b64, sibling_json};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::Gateway;

/// The query of `/v1/watch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    /// Keys under this prefix (empty: every key).
    #[serde(default)]
    pub prefix: String,
    /// A position an earlier event gave.
    #[serde(default)]
    pub resume: Option<String>,
}

/// One event as JSON.
pub fn event_json(e: &WatchEvent) -> Value {
    json!({
        "key": String::from_utf8_lossy(&e.key),
        "deleted": e.deleted,
        "siblings": e.siblings.iter().map(|s| {
            let mut v = sibling_json(s);
            v["tombstone"] = json!(s.tombstone);
            v
        }).collect::<Vec<_>>(),
        "context": b64(&e.context),
        "node": e.node,
        "position": e.position.to_token(),
    })
}

/// The last message of a stream that failed.
fn error_json(e: ringkv_client::Error) -> Value {
    let api = ApiError::Client(e);
    json!({ "error": api.kind(), "message": api.to_string() })
}

/// `GET /v1/watch`.
pub async fn watch(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    params: Result<Query<WatchParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        // `resume`, else the `Last-Event-ID` an EventSource sends when it reconnects.
        let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let resume = match params.resume.or(last_event).filter(|t| !t.is_empty()) {
            Some(token) => Some(WatchPosition::from_token(&token)?),
            None => None,
        };
        let client = gw.client_for(&caller)?;
        Ok::<_, ApiError>(client.watch(params.prefix.as_bytes(), resume).await?)
    }
    .await;
    let stream = match result {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => ws.on_upgrade(move |socket| websocket(socket, stream)).into_response(),
        Err(_) => Sse::new(sse_events(stream)).keep_alive(KeepAlive::default()).into_response(),
    }
}

/// The events as SSE, ending with an `error` event if the stream fails.
fn sse_events(stream: WatchStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.next().await? {
            Ok(e) => {
                let event = Event::default().id(e.position.to_token()).event("change").data(event_json(&e).to_string());
                Some((Ok(event), Some(stream)))
            }
            Err(err) => Some((Ok(Event::default().event("error").data(error_json(err).to_string())), None)),
        }
    })
}

/// Sends each event as a text message until the client goes away or the
/// stream fails (then a last error message and a close).
async fn websocket(mut socket: WebSocket, mut stream: WatchStream) {
    loop {
        tokio::select! {
            next = stream.next() => {
                let text = match next {
                    Some(Ok(e)) => event_json(&e).to_string(),
                    Some(Err(err)) => {
                        let _ = socket.send(Message::Text(error_json(err).to_string().into())).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    None => return,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // The client closed, or the connection dropped.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
