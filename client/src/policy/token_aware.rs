//! Token-aware routing (the seed's "consistent hashing"): send each keyed
//! request to a replica of its key, which saves the forwarding hop a
//! non-replica coordinator would add. The child policy orders the replicas,
//! and the other nodes follow as fallbacks.

use super::{healthy_first, Policy, Request, View};

/// Replicas of the key first, ordered by `child`.
pub struct TokenAware {
    child: Box<dyn Policy>,
}

impl TokenAware {
    /// Wraps `child`.
    pub fn new(child: Box<dyn Policy>) -> Self {
        Self { child }
    }
}

impl Policy for TokenAware {
    fn name(&self) -> String {
        format!("token-aware({})", self.child.name())
    }

    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize> {
        let base = self.child.order(req, view);
        if req.key.is_empty() {
            return base;
        }
        let replicas = view.replicas(req.key);
        let (mut first, rest): (Vec<usize>, Vec<usize>) = base.into_iter().partition(|i| replicas.contains(i));
        first.extend(rest);
        healthy_first(view, first)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::LeastOutstanding;
    use super::*;

    #[test]
    fn replicas_come_first_ordered_by_the_child() {
        let mut v = view();
        let key = "some-key".to_string();
        let replicas = v.replicas(key.as_bytes());
        assert_eq!(replicas.len(), 3);
        v.nodes[replicas[0]].outstanding = 9;
        let p = TokenAware::new(Box::new(LeastOutstanding));
        let o = p.order(&req(key.as_bytes()), &v);
        assert!(is_permutation(&o, 4));
        assert!(replicas.contains(&o[0]) && replicas.contains(&o[1]) && replicas.contains(&o[2]));
        assert_ne!(o[0], replicas[0], "the busy replica is not first");
    }
}
