//! Load-balancing policies: which node coordinates a request.
//!
//! A [`Policy`] orders the candidate nodes for one request. The client
//! sends to the first, and on a connection failure tries the next. Every
//! policy is a small pure type over a [`View`] of the cluster (nodes, their
//! health, outstanding requests, latency, gossiped load, the ring) and the
//! [`Request`] (key, kind, client id). Each is deterministic given its seed.
//!
//! | seed's policy | here |
//! |---|---|
//! | round robin | [`RoundRobin`] |
//! | weighted round robin | [`Weighted`] |
//! | least connection | [`LeastOutstanding`] |
//! | least response time | [`LeastLatency`] (EWMA, power of two choices) |
//! | IP hashing (layer 4) | [`Sticky`] (hash of the client id) |
//! | consistent hashing | [`TokenAware`] (a replica of the key first) |
//! | consistent hashing with bounded loads | [`BoundedLoad`] |
//! | dynamic load | [`DynamicLoad`] (gossiped load figures) |
//! | geography | [`ZoneAware`] |
//! | content-based (layer 7) | [`ContentBased`] (rules on key prefix and kind) |
//!
//! [`PolicyName`] parses the names `--policy` takes into these types.
//!
//! Policies are pure, so they can be tried on a hand-made view:
//!
//! ```
//! use ringkv_client::policy::{BoundedLoad, NodeView, OpKind, Policy, Request, RoundRobin, TokenAware, View};
//! let node = |id: &str| NodeView { id: id.into(), zone: "z".into(), healthy: true, outstanding: 0, ewma_us: 500.0, weight: 1, load: 0 };
//! // Three nodes, four tokens each, every key on two of them.
//! let tokens = (0..12u64).map(|i| (i * (u64::MAX / 12), (i % 3) as usize)).collect();
//! let mut view = View::new(vec![node("n1"), node("n2"), node("n3")], tokens, 2);
//! let req = Request { key: b"user:1", kind: OpKind::Read, client_id: "me" };
//!
//! let replicas = view.replicas(b"user:1");
//! let token_aware = TokenAware::new(Box::new(RoundRobin::default()));
//! assert!(replicas.contains(&token_aware.order(&req, &view)[0]), "a replica coordinates: no forwarding hop");
//!
//! // The owner has 10 requests in flight, over (1 + 0.25) x the mean: skip it.
//! view.nodes[replicas[0]].outstanding = 10;
//! assert_ne!(BoundedLoad::new(0.25).order(&req, &view)[0], replicas[0]);
//! ```

mod bounded_load;
mod content;
mod dynamic_load;
mod least_latency;
mod least_outstanding;
mod named;
mod round_robin;
mod sticky;
mod token_aware;
mod view;
mod weighted;
mod zone_aware;

pub use bounded_load::BoundedLoad;
pub use content::{ContentBased, Rule};
pub use dynamic_load::DynamicLoad;
pub use least_latency::LeastLatency;
pub use least_outstanding::LeastOutstanding;
pub use named::{PolicyName, DEFAULT_EPSILON};
pub use round_robin::RoundRobin;
pub use sticky::Sticky;
pub use token_aware::TokenAware;
pub use view::{token_of, NodeView, OpKind, Request, View};
pub use weighted::Weighted;
pub use zone_aware::ZoneAware;

/// Orders candidate nodes for a request.
pub trait Policy: Send + Sync {
    /// The policy's name, as `--policy` takes it.
    fn name(&self) -> String;
    /// Indices into `view.nodes`, best first. Healthy nodes come before
    /// unhealthy ones; every node appears once.
    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize>;
}

/// Healthy nodes first, each group in the order `rank` gives.
pub(crate) fn healthy_first(view: &View, mut idx: Vec<usize>) -> Vec<usize> {
    idx.sort_by_key(|&i| !view.nodes[i].healthy);
    idx
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Four nodes over two zones; n1..n4 at 127.0.0.1:7101.. .
    pub fn view() -> View {
        let nodes = (1..=4)
            .map(|i| NodeView {
                id: format!("n{i}"),
                zone: if i <= 2 { "a".into() } else { "b".into() },
                healthy: true,
                outstanding: 0,
                ewma_us: 1000.0,
                weight: 1,
                load: 0,
            })
            .collect();
        // Tokens: n1 owns (…, 100], n2 (100, 200], n3 (200, 300], n4 (300, 400].
        View::new(nodes, vec![(100, 0), (200, 1), (300, 2), (400, 3)], 3)
    }

    pub fn ids(view: &View, order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| view.nodes[i].id.clone()).collect()
    }

    pub fn req(key: &[u8]) -> Request<'_> {
        Request { key, kind: OpKind::Read, client_id: "client-1" }
    }

    /// Every policy lists each node exactly once.
    pub fn is_permutation(order: &[usize], n: usize) -> bool {
        let mut o = order.to_vec();
        o.sort();
        o == (0..n).collect::<Vec<_>>()
    }
}
