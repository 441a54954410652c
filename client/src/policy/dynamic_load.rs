//! Dynamic load (the seed's "dynamic load"): weight nodes by the load they
//! gossip, which counts every client's requests, not only this one's.

use super::{healthy_first, Policy, Request, View};

/// Least gossiped load first; ties by this client's outstanding requests.
#[derive(Default)]
pub struct DynamicLoad;

impl Policy for DynamicLoad {
    fn name(&self) -> String {
        "dynamic-load".into()
    }

    fn order(&self, _req: &Request<'_>, view: &View) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..view.nodes.len()).collect();
        idx.sort_by_key(|&i| (view.nodes[i].load + view.nodes[i].outstanding, view.nodes[i].outstanding));
        healthy_first(view, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn follows_the_gossiped_load() {
        let mut v = view();
        for (i, l) in [40, 3, 10, 3].iter().enumerate() {
            v.nodes[i].load = *l;
        }
        v.nodes[3].outstanding = 1;
        assert_eq!(ids(&v, &DynamicLoad.order(&req(b"k"), &v)), ["n2", "n4", "n3", "n1"]);
    }
}
