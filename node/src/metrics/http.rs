//! The plaintext HTTP listener on `http_listen`: `GET /metrics`,
//! `/healthz` and `/readyz`, and nothing else (404 for any other path, 405
//! for any other method).
//!
//! It is read-only and carries no key, value or secret, so it needs no TLS
//! or token, like most Prometheus scrape targets and the kubelet's HTTP
//! probes; `config.validate` lets it listen off loopback for that reason.
//! It runs on axum (already in the tree through tonic) over the node's own
//! [`Transport`](crate::transport::Transport), so the bytes flow through
//! turmoil in a simulation and through `tokio::net` for real.
//!
//! `/metrics` answers in the OpenMetrics text format, which
//! `prometheus-client` writes and Prometheus scrapes natively.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::readiness::{readiness, Readiness};
use crate::membership::Membership;
use crate::transport::{Conn, Incoming};

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How long to wait before accepting again after an accept error (say, out
/// of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

struct Node {
    registry: Registry,
    membership: Arc<Membership>,
    shutdown: CancellationToken,
    /// Whether a scrape does disk I/O (the data dir's size): then it runs
    /// on the blocking pool.
    blocking: bool,
}

/// The routes, over one node's registry and view.
pub fn router(registry: Registry, membership: Arc<Membership>, shutdown: CancellationToken, blocking: bool) -> Router {
    let node = Arc::new(Node { registry, membership, shutdown, blocking });
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(node)
}

fn render(node: &Node) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &node.registry)?;
    Ok(text)
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let text = if node.blocking {
        let n = node.clone();
        tokio::task::spawn_blocking(move || render(&n)).await.unwrap_or(Err(std::fmt::Error))
    } else {
        render(&node)
    };
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "could not encode the metrics; see the node's log\n").into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let me = node.membership.member(node.membership.me());
    match readiness(me.as_ref(), node.shutdown.is_cancelled()) {
        Readiness::Ready => "ready\n".into_response(),
        Readiness::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// Accepted connections from a [`Transport`](crate::transport::Transport),
/// as axum wants them.
struct Accept(Incoming);

impl axum::serve::Listener for Accept {
    type Io = Conn;
    type Addr = ();

    async fn accept(&mut self) -> (Conn, ()) {
        loop {
            match self.0.next().await {
                Some(Ok(conn)) => return (conn, ()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "http_listen: accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                // A listener that ends accepts nothing more.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Serves `router` on `incoming` until `shutdown` is cancelled.
pub async fn serve(incoming: Incoming, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    axum::serve(Accept(incoming), router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
