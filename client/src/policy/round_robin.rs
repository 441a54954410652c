//! Round robin (the seed's "round robin"): each request starts one node
//! further along.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{healthy_first, Policy, Request, View};

/// Rotates through the nodes.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> String {
        "round-robin".into()
    }

    fn order(&self, _req: &Request<'_>, view: &View) -> Vec<usize> {
        let n = view.nodes.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        healthy_first(view, (0..view.nodes.len()).map(|i| (start + i) % n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn rotates_and_puts_unhealthy_last() {
        let mut v = view();
        let p = RoundRobin::default();
        let firsts: Vec<String> = (0..5).map(|_| ids(&v, &p.order(&req(b"k"), &v))[0].clone()).collect();
        assert_eq!(firsts, ["n1", "n2", "n3", "n4", "n1"]);
        v.nodes[1].healthy = false;
        let o = p.order(&req(b"k"), &v);
        assert!(is_permutation(&o, 4));
        assert_eq!(ids(&v, &o).last().unwrap(), "n2");
    }
}
