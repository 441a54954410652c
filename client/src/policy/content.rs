//! Content-based routing (the seed's layer-7 "content-based"): a rule table
//! on the request (key prefix, operation kind) picks a child policy or a set
//! of nodes; the first matching rule wins, and a default covers the rest.

use super::{healthy_first, OpKind, Policy, Request, View};

/// One rule: requests matching `prefix` (if set) and `kind` (if set) go to
/// `nodes` (if non-empty, in that order) or else through `policy`.
pub struct Rule {
    /// Key prefix to match.
    pub prefix: Option<Vec<u8>>,
    /// Operation kind to match.
    pub kind: Option<OpKind>,
    /// Node ids to send to, in order.
    pub nodes: Vec<String>,
    /// Policy to use when `nodes` is empty.
    pub policy: Option<Box<dyn Policy>>,
}

/// A rule table with a default policy.
pub struct ContentBased {
    rules: Vec<Rule>,
    default: Box<dyn Policy>,
}

impl ContentBased {
    /// Rules tried in order, then `default`.
    pub fn new(rules: Vec<Rule>, default: Box<dyn Policy>) -> Self {
        Self { rules, default }
    }
}

impl Policy for ContentBased {
    fn name(&self) -> String {
        format!("content-based({} rules, {})", self.rules.len(), self.default.name())
    }

    fn order(&self, req: &Request<'_>, view: &View) -> Vec<usize> {
        let rule =
            self.rules.iter().find(|r| r.prefix.as_ref().is_none_or(|p| req.key.starts_with(p)) && r.kind.is_none_or(|k| k == req.kind));
        let Some(rule) = rule else { return self.default.order(req, view) };
        if rule.nodes.is_empty() {
            return rule.policy.as_ref().map_or_else(|| self.default.order(req, view), |p| p.order(req, view));
        }
        let mut idx: Vec<usize> = rule.nodes.iter().filter_map(|id| view.nodes.iter().position(|n| &n.id == id)).collect();
        let others: Vec<usize> = (0..view.nodes.len()).filter(|i| !idx.contains(i)).collect();
        idx.extend(others);
        healthy_first(view, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{LeastOutstanding, RoundRobin, Sticky};
    use super::*;

    #[test]
    fn scans_and_a_tenant_prefix_follow_their_rules() {
        let mut v = view();
        v.nodes[3].outstanding = 0;
        v.nodes[0].outstanding = 5;
        let p = ContentBased::new(
            vec![
                Rule { prefix: None, kind: Some(OpKind::Scan), nodes: vec!["n4".into(), "n3".into()], policy: None },
                Rule { prefix: Some(b"tenant-a/".to_vec()), kind: None, nodes: vec![], policy: Some(Box::new(LeastOutstanding)) },
            ],
            Box::new(Sticky),
        );
        let scan = Request { key: b"", kind: OpKind::Scan, client_id: "c" };
        assert_eq!(ids(&v, &p.order(&scan, &v))[..2], ["n4", "n3"]);
        let tenant = p.order(&req(b"tenant-a/x"), &v);
        assert_ne!(v.nodes[tenant[0]].id, "n1", "least outstanding avoids the busy n1");
        let other = p.order(&req(b"z"), &v);
        assert_eq!(other, Sticky.order(&req(b"z"), &v), "the default applies");
        let _ = RoundRobin::default();
    }
}
