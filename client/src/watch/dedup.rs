//! Dropping events already delivered: the same write arrives once from
//! each replica that stores it, and a replica may send a version older than
//! one another replica already sent.
//!
//! Per key, the state is the join (componentwise max) of the causal clocks
//! delivered so far, plus a digest of the last delivered siblings. An event
//! is dropped when its clock is dominated by that join (every counter at or
//! below, one strictly below: an older version), or equals it with the same
//! siblings (the same version again). Anything else, newer or concurrent,
//! is delivered and joined in. Equal clocks with different siblings are
//! delivered: the same dots can be stored as a value and, once it expired,
//! as its tombstone.
//!
//! The state is bounded: past `capacity` keys, the key remembered longest
//! ago is forgotten, and a later duplicate of it is delivered again. That is
//! within the promise (at least once), and memory stays fixed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::pb;

/// Keys remembered by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

struct Seen {
    clock: BTreeMap<String, u64>,
    digest: [u8; 16],
}

/// Per-key delivered versions, bounded (see the module docs).
pub struct Dedup {
    keys: HashMap<Vec<u8>, Seen>,
    order: VecDeque<Vec<u8>>,
    capacity: usize,
}

/// A digest of a version's siblings: timestamps, flags, expiries, values.
fn digest(siblings: &[pb::Sibling]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    for s in siblings {
        if let Some(hlc) = &s.hlc {
            h.update(&hlc.wall_ms.to_be_bytes());
            h.update(&hlc.logical.to_be_bytes());
            h.update(&(hlc.node.len() as u64).to_be_bytes());
            h.update(hlc.node.as_bytes());
        }
        h.update(&[u8::from(s.tombstone)]);
        h.update(&s.expires_at_ms.to_be_bytes());
        h.update(&(s.value.len() as u64).to_be_bytes());
        h.update(&s.value);
    }
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// How an event's clock relates to what was delivered.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    Below,
    Equal,
    Other,
}

fn compare(event: &HashMap<String, u64>, seen: &BTreeMap<String, u64>) -> Order {
    let below = event.iter().all(|(actor, n)| seen.get(actor).is_some_and(|m| n <= m));
    if !below {
        return Order::Other;
    }
    let equal = event.len() == seen.len() && event.iter().all(|(actor, n)| seen.get(actor) == Some(n));
    if equal {
        Order::Equal
    } else {
        Order::Below
    }
}

impl Dedup {
    /// Remembers up to `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { keys: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Whether an event for `key` with this clock and these siblings is new
    /// (deliver it) or already delivered (drop it); a new one is recorded.
    pub fn admit(&mut self, key: &[u8], clock: &HashMap<String, u64>, siblings: &[pb::Sibling]) -> bool {
        let d = digest(siblings);
        if let Some(seen) = self.keys.get_mut(key) {
            match compare(clock, &seen.clock) {
                Order::Below => return false,
                Order::Equal if seen.digest == d => return false,
                Order::Equal => {}
                Order::Other => {
                    for (actor, &n) in clock {
                        let m = seen.clock.entry(actor.clone()).or_insert(0);
                        *m = (*m).max(n);
                    }
                }
            }
            seen.digest = d;
            return true;
        }
        if self.keys.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        self.order.push_back(key.to_vec());
        self.keys.insert(key.to_vec(), Seen { clock: clock.iter().map(|(a, n)| (a.clone(), *n)).collect(), digest: d });
        true
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(entries: &[(&str, u64)]) -> HashMap<String, u64> {
        entries.iter().map(|(a, n)| (a.to_string(), *n)).collect()
    }

    fn sib(v: &str) -> Vec<pb::Sibling> {
        vec![pb::Sibling { value: v.into(), ..Default::default() }]
    }

    #[test]
    fn the_same_version_from_each_replica_is_delivered_once() {
        let mut d = Dedup::new(10);
        let c = clock(&[("n1@1", 1)]);
        assert!(d.admit(b"k", &c, &sib("a")));
        assert!(!d.admit(b"k", &c, &sib("a")), "the second replica's copy");
        assert!(!d.admit(b"k", &c, &sib("a")), "the third's");
        assert!(d.admit(b"other", &c, &sib("a")), "keys are separate");
    }

    #[test]
    fn an_older_version_after_a_newer_one_is_dropped_and_a_newer_or_concurrent_one_delivered() {
        let mut d = Dedup::new(10);
        assert!(d.admit(b"k", &clock(&[("a", 2)]), &sib("v2")));
        assert!(!d.admit(b"k", &clock(&[("a", 1)]), &sib("v1")), "a lagging replica's older version");
        assert!(d.admit(b"k", &clock(&[("a", 2), ("b", 1)]), &sib("v3")), "newer");
        assert!(d.admit(b"k", &clock(&[("c", 1)]), &sib("x")), "concurrent");
        assert!(!d.admit(b"k", &clock(&[("a", 1), ("c", 1)]), &sib("y")), "below the join of what was delivered");
        assert!(d.admit(b"k", &clock(&[("a", 2), ("b", 1), ("c", 1)]), &sib("merged")), "the join itself, new siblings");
        assert!(d.admit(b"k", &clock(&[("a", 2), ("b", 1), ("c", 1)]), &[pb::Sibling { tombstone: true, ..Default::default() }]));
    }

    #[test]
    fn state_is_bounded_and_a_forgotten_key_is_delivered_again() {
        let mut d = Dedup::new(2);
        let c = clock(&[("a", 1)]);
        for k in [b"k1", b"k2", b"k3"] {
            assert!(d.admit(k, &c, &sib("v")));
        }
        assert_eq!(d.len(), 2);
        assert!(d.admit(b"k1", &c, &sib("v")), "k1 was forgotten first: a duplicate gets through, at least once");
        assert!(!d.admit(b"k3", &c, &sib("v")), "k3 is still remembered");
    }
}
