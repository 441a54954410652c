//! Weighted round robin (the seed's "weighted round robin"): smooth
//! weighted round robin (as nginx does), so a node of weight 3 coordinates
//! three requests for each one a node of weight 1 does, interleaved.

use std::sync::Mutex;

use super::{healthy_first, Policy, Request, View};

/// Smooth weighted round robin over `NodeView::weight`.
#[derive(Default)]
pub struct Weighted {
    current: Mutex<Vec<i64>>,
}

impl Policy for Weighted {
    fn name(&self) -> String {
        "weighted".into()
    }

    fn order(&self, _req: &Request<'_>, view: &View) -> Vec<usize> {
        let mut current = self.current.lock().expect("lock");
        current.resize(view.nodes.len(), 0);
        let total: i64 = view.nodes.iter().map(|n| i64::from(n.weight)).sum();
        for (c, n) in current.iter_mut().zip(&view.nodes) {
            *c += i64::from(n.weight);
        }
        let mut idx: Vec<usize> = (0..view.nodes.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(current[i]));
        if let Some(&best) = idx.first() {
            current[best] -= total;
        }
        healthy_first(view, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn picks_in_proportion_to_weight() {
        let mut v = view();
        v.nodes[0].weight = 3;
        let p = Weighted::default();
        let mut counts = [0; 4];
        for _ in 0..600 {
            counts[p.order(&req(b"k"), &v)[0]] += 1;
        }
        assert_eq!(counts, [300, 100, 100, 100]);
    }
}
