//! Zone-aware routing (the seed's "geography"): nodes in the client's zone
//! first, ordered by the child policy; other zones only as fallback.

use super::{healthy_first, Policy, Request, View};

/// The client's zone first.
pub struct ZoneAware {
    zone: String,
    child: Box<dyn Policy>,
}

impl ZoneAware {
    /// Prefers `zone`, ordering within it by `child`.
    pub fn new(zone: impl Into<String>, child: Box<dyn Policy>) -> Self {
        Self { zone: zone.into(), child }
    }
}

impl Policy for ZoneAware {
    fn name(&self) -> String {
        format!("zone-aware({}, {})", self.zone, self.child.name())
    }

    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize> {
        let base = self.child.order(req, view);
        let (mut local, remote): (Vec<usize>, Vec<usize>) = base.into_iter().partition(|&i| view.nodes[i].zone == self.zone);
        local.extend(remote);
        // Health still wins over locality: a dead local node is tried last.
        healthy_first(view, local)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::RoundRobin;
    use super::*;

    #[test]
    fn local_zone_first_and_falls_back_when_it_is_down() {
        let mut v = view();
        let p = ZoneAware::new("b", Box::new(RoundRobin::default()));
        for _ in 0..4 {
            let o = ids(&v, &p.order(&req(b"k"), &v));
            assert!(o[0] == "n3" || o[0] == "n4", "{o:?}");
        }
        v.nodes[2].healthy = false;
        v.nodes[3].healthy = false;
        let o = ids(&v, &p.order(&req(b"k"), &v));
        assert!(o[0] == "n1" || o[0] == "n2", "{o:?}");
    }
}
