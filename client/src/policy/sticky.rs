//! Sticky routing (the seed's "IP hashing", layer 4): a stable hash of the
//! client id picks the coordinator, so one client keeps one coordinator
//! while it stays healthy.

use super::{healthy_first, Policy, Request, View};

/// Hash of the client id.
#[derive(Default)]
pub struct Sticky;

impl Policy for Sticky {
    fn name(&self) -> String {
        "sticky".into()
    }

    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize> {
        let n = view.nodes.len().max(1);
        let h = super::token_of(req.client_id.as_bytes()) as usize % n;
        healthy_first(view, (0..view.nodes.len()).map(|i| (h + i) % n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_client_keeps_its_coordinator_and_clients_spread() {
        let v = view();
        let first = |c: &str| Sticky.order(&Request { client_id: c, ..req(b"k") }, &v)[0];
        assert_eq!(first("alice"), first("alice"));
        let distinct: std::collections::BTreeSet<usize> = (0..40).map(|i| first(&format!("client-{i}"))).collect();
        assert_eq!(distinct.len(), 4, "40 clients use all 4 nodes");
    }
}
