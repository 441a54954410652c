//! Least response time (the seed's "least response time"): power of two
//! choices over EWMA latency. Two random healthy nodes are drawn and the
//! faster one goes first, which avoids herding every client onto the
//! single fastest node.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{healthy_first, Policy, Request, View};

/// EWMA latency with power of two choices.
pub struct LeastLatency {
    rng: Mutex<StdRng>,
}

impl LeastLatency {
    /// Draws with a seeded RNG.
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new(StdRng::seed_from_u64(seed)) }
    }
}

impl Policy for LeastLatency {
    fn name(&self) -> String {
        "least-latency".into()
    }

    fn order(&self, _req: &Request<'_>, view: &View) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..view.nodes.len()).collect();
        idx.sort_by(|&a, &b| view.nodes[a].ewma_us.total_cmp(&view.nodes[b].ewma_us));
        let healthy: Vec<usize> = idx.iter().copied().filter(|&i| view.nodes[i].healthy).collect();
        if healthy.len() >= 2 {
            let mut rng = self.rng.lock().expect("lock");
            let a = healthy[rng.random_range(0..healthy.len())];
            let mut b = healthy[rng.random_range(0..healthy.len() - 1)];
            if b == a {
                b = healthy[healthy.len() - 1];
            }
            let best = if view.nodes[a].ewma_us <= view.nodes[b].ewma_us { a } else { b };
            idx.retain(|&i| i != best);
            idx.insert(0, best);
        }
        healthy_first(view, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn never_picks_the_slowest_of_two_and_spreads_over_fast_nodes() {
        let mut v = view();
        for (i, l) in [100.0, 200.0, 5000.0, 300.0].iter().enumerate() {
            v.nodes[i].ewma_us = *l;
        }
        let p = LeastLatency::new(7);
        let mut counts = [0; 4];
        for _ in 0..1000 {
            counts[p.order(&req(b"k"), &v)[0]] += 1;
        }
        assert_eq!(counts[2], 0, "the slowest node never wins a pair: {counts:?}");
        assert!(counts[0] > counts[1] && counts[1] > counts[3] && counts[3] > 0, "{counts:?}");
    }
}
