//! Observability over plain HTTP: Prometheus metrics, `/healthz` and
//! `/readyz` (issue #16), and the per-request tracing span.
//!
//! # One registry per node
//!
//! Simulations run several nodes in one process (`tests/tests/sim`), so a
//! process-global recorder (the `metrics` crate's facade) would add every
//! node's requests into one series. Each node therefore owns its series:
//! `prometheus-client` metrics are plain values (an `Arc` around atomics),
//! created where the node's parts are built and registered into a
//! [`Registry`] that belongs to that node alone ([`registry`]). The
//! `ringkv` binary runs one node per process, so there it makes no
//! difference; in a simulation it keeps nodes apart.
//!
//! # Two ways a series is fed
//!
//! - **Recorded as it happens**, with one call where the event is: client
//!   requests, their latency, stale replicas, speculative reads and read
//!   repairs (`request.rs`, called from `service/kv.rs` and the
//!   coordinator's `ctx.rs`), and the group-commit batch and sync time
//!   (`commit.rs`, called from `store/durability.rs`). A counter increment
//!   is an atomic add; a labelled series is found under a read lock that is
//!   never held across an `.await`, and labels are `&'static str`, so a
//!   request allocates nothing for its metrics.
//! - **Read at scrape time** from counters and state the node already
//!   keeps (`collect.rs`): peers' liveness, phi and clock offsets, hints
//!   pending and their counters, anti-entropy's counters, keys stored and
//!   bytes on disk. Nothing on the write path pays for those.
//!
//! # Readiness
//!
//! `readiness.rs` is the pure decision behind `/readyz` and the
//! `grpc.health.v1` status of `ringkv.v1.Kv`: ready only while this node is
//! `normal` in its own view of the ring.
//!
//! # The listener
//!
//! `http.rs` serves `GET /metrics`, `/healthz` and `/readyz` on
//! `http_listen` (off by default), in plaintext, over the node's own
//! [`Transport`](crate::transport::Transport) so a simulation can scrape a
//! simulated node too. It serves nothing else: no key, value or
//! configuration secret is ever in a series or a label.

mod collect;
mod commit;
mod http;
mod readiness;
mod request;

pub use collect::NodeCollector;
pub use commit::CommitMetrics;
pub use http::{router, serve};
pub use readiness::{readiness, Readiness};
pub use request::{level_label, outcome_of, request_span, Op, Receipted, RequestMetrics, Summary};

use prometheus_client::registry::Registry;

/// The node's registry: its request series, the store's group-commit
/// series, and the collector that reads the rest at scrape time.
pub fn registry(requests: &RequestMetrics, commits: &CommitMetrics, collector: NodeCollector) -> Registry {
    let mut registry = Registry::default();
    requests.register(&mut registry);
    commits.register(&mut registry);
    registry.register_collector(Box::new(collector));
    registry
}
