//! The fault layer on a node's outgoing peer traffic (DESIGN §7).
//!
//! Per peer, a rule can block every message, delay each one, or drop a
//! fraction of them. `PeerClient` consults it before each send. That is all
//! the demo and jepsen-lite need to cut or slow links, since this machine's
//! kernel has no netem. Rules are set through the Admin service
//! (`ringkv fault ...`). A drop is decided by the node's seeded RNG, so a
//! simulation replays it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// One rule on traffic to `peer`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultRule {
    /// The peer's node id.
    pub peer: String,
    /// Fail every message to it.
    pub block: bool,
    /// Hold every message this long before sending.
    pub delay: Duration,
    /// Fraction of messages that fail, 0..=1.
    pub drop: f64,
}

/// What to do with one message.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Send it, after this delay.
    Send(Duration),
    /// Fail it; the reason names the rule.
    Fail(&'static str),
}

/// The node's current rules.
pub struct Faults {
    rules: RwLock<BTreeMap<String, FaultRule>>,
    rng: Arc<Mutex<StdRng>>,
}

impl Faults {
    /// No rules; drops draw from `rng`.
    pub fn new(rng: Arc<Mutex<StdRng>>) -> Self {
        Self { rules: RwLock::new(BTreeMap::new()), rng }
    }

    /// Sets `rules`, each replacing the earlier rule for its peer; a rule
    /// that does nothing removes it. `clear` removes every rule first.
    pub fn apply(&self, clear: bool, rules: Vec<FaultRule>) {
        let mut current = self.rules.write().expect("lock");
        if clear {
            current.clear();
        }
        for r in rules {
            if r.block || !r.delay.is_zero() || r.drop > 0.0 {
                current.insert(r.peer.clone(), r);
            } else {
                current.remove(&r.peer);
            }
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.read().expect("lock").values().cloned().collect()
    }

    /// Decides the fate of one message to `peer`.
    pub fn check(&self, peer: &str) -> Verdict {
        let rules = self.rules.read().expect("lock");
        let Some(rule) = rules.get(peer) else { return Verdict::Send(Duration::ZERO) };
        if rule.block {
            return Verdict::Fail("blocked by the fault layer");
        }
        if rule.drop > 0.0 && self.rng.lock().expect("lock").random::<f64>() < rule.drop {
            return Verdict::Fail("dropped by the fault layer");
        }
        Verdict::Send(rule.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn faults() -> Faults {
        Faults::new(Arc::new(Mutex::new(StdRng::seed_from_u64(7))))
    }

    #[test]
    fn block_delay_and_clear() {
        let f = faults();
        assert_eq!(f.check("n2"), Verdict::Send(Duration::ZERO));
        f.apply(
            false,
            vec![
                FaultRule { peer: "n2".into(), block: true, ..Default::default() },
                FaultRule { peer: "n3".into(), delay: Duration::from_millis(20), ..Default::default() },
            ],
        );
        assert!(matches!(f.check("n2"), Verdict::Fail(_)));
        assert_eq!(f.check("n3"), Verdict::Send(Duration::from_millis(20)));
        f.apply(false, vec![FaultRule { peer: "n3".into(), ..Default::default() }]);
        assert_eq!(f.check("n3"), Verdict::Send(Duration::ZERO), "an empty rule removes");
        assert!(matches!(f.check("n2"), Verdict::Fail(_)), "other rules stay");
        f.apply(true, vec![]);
        assert_eq!(f.check("n2"), Verdict::Send(Duration::ZERO));
    }

    #[test]
    fn drop_fraction_is_roughly_honoured() {
        let f = faults();
        f.apply(false, vec![FaultRule { peer: "n2".into(), drop: 0.3, ..Default::default() }]);
        let failed = (0..10_000).filter(|_| matches!(f.check("n2"), Verdict::Fail(_))).count();
        assert!((2_500..3_500).contains(&failed), "{failed} of 10000 dropped at 0.3");
    }
}
