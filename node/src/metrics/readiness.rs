//! Is this node serving? The one decision behind `/readyz` and the
//! `grpc.health.v1` status of `ringkv.v1.Kv` (`node.rs`). Pure.
//!
//! A node is ready only while its own entry is `normal`: it owns tokens in
//! a formed ring and has streamed its ranges (a joining node serves no
//! reads of its ranges yet, DESIGN §4). Liveness (`/healthz`) is separate
//! and always true while the process answers, so a probe does not restart
//! a node that is still forming or joining.

use crate::membership::{Member, NodeState};

/// Whether the node serves, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `normal`: it serves client requests.
    Ready,
    /// Not serving; a short reason for the probe's body and the log.
    NotReady(&'static str),
}

impl Readiness {
    /// True when ready.
    pub fn is_ready(self) -> bool {
        self == Readiness::Ready
    }
}

/// The readiness of a node whose own entry is `me`, given whether it is
/// shutting down.
pub fn readiness(me: Option<&Member>, shutting_down: bool) -> Readiness {
    if shutting_down {
        return Readiness::NotReady("shutting down");
    }
    let Some(me) = me else { return Readiness::NotReady("not in its own member list") };
    match me.state {
        NodeState::Normal => Readiness::Ready,
        NodeState::Joining if me.tokens.is_empty() => {
            Readiness::NotReady("waiting for a ring to form or to be given tokens (check --seeds)")
        }
        NodeState::Joining => Readiness::NotReady("joining: streaming its ranges"),
        NodeState::Leaving => Readiness::NotReady("leaving: decommission in progress"),
        NodeState::Left => Readiness::NotReady("left the ring"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: NodeState, tokens: usize) -> Member {
        Member { id: "n1".into(), state, tokens: (1..=tokens as u64).collect(), ..Default::default() }
    }

    #[test]
    fn only_a_normal_node_that_is_not_stopping_is_ready() {
        let table = [
            (Some(member(NodeState::Normal, 16)), false, Readiness::Ready),
            (Some(member(NodeState::Normal, 16)), true, Readiness::NotReady("shutting down")),
            (
                Some(member(NodeState::Joining, 0)),
                false,
                Readiness::NotReady("waiting for a ring to form or to be given tokens (check --seeds)"),
            ),
            (Some(member(NodeState::Joining, 16)), false, Readiness::NotReady("joining: streaming its ranges")),
            (Some(member(NodeState::Leaving, 16)), false, Readiness::NotReady("leaving: decommission in progress")),
            (Some(member(NodeState::Left, 0)), false, Readiness::NotReady("left the ring")),
            (None, false, Readiness::NotReady("not in its own member list")),
        ];
        for (me, stopping, want) in table {
            assert_eq!(readiness(me.as_ref(), stopping), want, "{me:?}, stopping {stopping}");
        }
        assert!(Readiness::Ready.is_ready() && !Readiness::NotReady("x").is_ready());
    }
}
