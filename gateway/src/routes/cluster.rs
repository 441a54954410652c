//! `GET /v1/cluster`: the ring and the nodes, as the cluster page draws
//! them. One node's view (Admin.Status and Admin.Ring, through the client
//! and its routing), fetched with the gateway's own credentials.
//!
//! Tokens are u64 and JavaScript numbers are not, so each token is sent as
//! a string and placed on the circle here: `at` is its fraction of the
//! ring (0..1), and each range `(previous token, token]` belongs, as
//! primary, to the node holding the token that ends it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ringkv_client::pb;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::Gateway;

/// One primary range on the circle.
#[derive(Debug, PartialEq, Serialize)]
pub struct Arc01 {
    /// The owner (primary replica).
    pub node: String,
    /// Where the range starts, as a fraction of the ring (exclusive).
    pub from: f64,
    /// Where it ends (inclusive): the owner's token.
    pub to: f64,
    /// The owner's token, as text.
    pub token: String,
}

fn at(token: u64) -> f64 {
    token as f64 / 2f64.powi(64)
}

/// The primary ranges, in ring order. The first range wraps around zero:
/// it starts at the last token.
pub fn arcs(tokens: &[pb::RingToken]) -> Vec<Arc01> {
    let mut sorted: Vec<&pb::RingToken> = tokens.iter().collect();
    sorted.sort_by_key(|t| t.token);
    let Some(last) = sorted.last() else { return Vec::new() };
    let mut prev = at(last.token) - 1.0;
    sorted
        .iter()
        .map(|t| {
            let arc = Arc01 { node: t.node.clone(), from: prev, to: at(t.token), token: t.token.to_string() };
            prev = arc.to;
            arc
        })
        .collect()
}

/// `GET /v1/cluster`.
pub async fn cluster(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let client = gw.client();
    let (status, ring) = tokio::join!(client.status(), client.ring());
    let (status, ring) = (status?, ring?);
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            json!({ "id": n.id, "address": n.address, "zone": n.zone, "state": n.state, "liveness": n.liveness,
                    "phi": if n.phi.is_finite() { n.phi } else { 1e9 }, "tokens": n.tokens, "ownership": n.ownership,
                    "keys": n.keys, "in_flight": n.in_flight })
        })
        .collect();
    Ok(Json(json!({
        "as_seen_by": status.node,
        "replication_factor": status.replication_factor,
        "policy": client.policy_name(),
        "skew": ring.skew,
        "nodes": nodes,
        "arcs": arcs(&ring.tokens),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_ends_at_its_owners_token_and_the_first_wraps_around_zero() {
        let t = |token: u64, node: &str| pb::RingToken { token, node: node.into() };
        let half = 1u64 << 63;
        let a = arcs(&[t(half, "n2"), t(half / 2, "n1")]);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].node.as_str(), a[0].from, a[0].to), ("n1", -0.5, 0.25));
        assert_eq!((a[1].node.as_str(), a[1].from, a[1].to), ("n2", 0.25, 0.5));
        assert_eq!(a[1].token, half.to_string(), "tokens travel as text: JavaScript numbers lose u64 precision");
        assert!(arcs(&[]).is_empty());
    }
}
