//! Least outstanding requests (the seed's "least connection"): the node
//! this client has the fewest requests in flight to.

use super::{healthy_first, Policy, Request, View};

/// Fewest in-flight requests first.
#[derive(Default)]
pub struct LeastOutstanding;

impl Policy for LeastOutstanding {
    fn name(&self) -> String {
        "least-outstanding".into()
    }

    fn order(&self, _req: &Request<'_>, view: &View) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..view.nodes.len()).collect();
        idx.sort_by_key(|&i| view.nodes[i].outstanding);
        healthy_first(view, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn prefers_the_idlest_node() {
        let mut v = view();
        for (i, o) in [5, 2, 9, 2].iter().enumerate() {
            v.nodes[i].outstanding = *o;
        }
        assert_eq!(ids(&v, &LeastOutstanding.order(&req(b"k"), &v)), ["n2", "n4", "n1", "n3"]);
    }
}
