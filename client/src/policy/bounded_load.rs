//! Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
//! 2018): go to the key's replicas in ring order, but skip any replica
//! whose outstanding load exceeds (1 + ε) × the mean, so a hot key cannot
//! pile onto one coordinator.

use super::{healthy_first, Policy, Request, View};

/// Token-aware with a load cap of (1 + epsilon) × mean.
pub struct BoundedLoad {
    epsilon: f64,
}

impl BoundedLoad {
    /// A cap of (1 + `epsilon`) × mean outstanding.
    pub fn new(epsilon: f64) -> Self {
        Self { epsilon }
    }
}

impl Policy for BoundedLoad {
    fn name(&self) -> String {
        format!("bounded-load({})", self.epsilon)
    }

    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize> {
        let n = view.nodes.len().max(1) as f64;
        // The mean counts this request, so an idle cluster admits anyone.
        let mean = (view.nodes.iter().map(|x| x.outstanding).sum::<u64>() as f64 + 1.0) / n;
        let cap = ((1.0 + self.epsilon) * mean).ceil() as u64;
        let mut walk = view.replicas(req.key);
        let others: Vec<usize> = (0..view.nodes.len()).filter(|i| !walk.contains(i)).collect();
        walk.extend(others);
        let (fits, over): (Vec<usize>, Vec<usize>) = walk.into_iter().partition(|&i| view.nodes[i].outstanding < cap);
        healthy_first(view, fits.into_iter().chain(over).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_hot_key_spills_past_a_loaded_owner() {
        let mut v = view();
        let p = BoundedLoad::new(0.25);
        let key = b"hot";
        let owner = v.replicas(key)[0];
        assert_eq!(p.order(&req(key), &v)[0], owner, "idle: the owner coordinates");
        // Send 100 requests that never finish: loads stay within the cap.
        for _ in 0..100 {
            let first = p.order(&req(key), &v)[0];
            v.nodes[first].outstanding += 1;
        }
        let loads: Vec<u64> = v.nodes.iter().map(|n| n.outstanding).collect();
        let mean: f64 = 100.0 / 4.0;
        let max = *loads.iter().max().unwrap() as f64;
        assert!(max <= (1.25 * mean).ceil() + 1.0, "max/mean {:.2}: {loads:?}", max / mean);
    }
}
