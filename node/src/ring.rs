//! The consistent-hash ring: tokens, preference lists and ownership.
//!
//! Keys hash (blake3, first 8 bytes) onto a 64-bit ring. A token `t` owns
//! the range `(previous token, t]`. A key's preference list is the first N
//! *distinct* nodes met walking clockwise from its hash (Dynamo §4.3).
//! With zones, the walk first takes nodes from zones not yet used, so the
//! N replicas span min(N, zones) zones. It then fills any remaining places
//! in clockwise order (as Cassandra's rack-aware placement does).
//!
//! Tokens are not random. A joining node picks them with [`choose_tokens`]
//! to bring every node to an equal share (`1 / nodes`). It steals from the
//! most over-full node's largest range first, one slice per vnode. With 16
//! vnodes this keeps skew (max / mean owned range) near 1.0, where random
//! tokens give about 1.5. The unit tests hold it to at most 1.10 for 1 to 10
//! nodes.

use std::collections::BTreeMap;

/// A position on the ring.
pub type Token = u64;

/// The size of the ring, as u128 so sums never overflow.
const RING: u128 = 1 << 64;

/// Where a key lands on the ring.
pub fn token_of(key: &[u8]) -> Token {
    let h = blake3::hash(key);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The ring as one node sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ring {
    /// Sorted by token; ties (which `choose_tokens` avoids) by node id.
    tokens: Vec<(Token, String)>,
    /// Each node's zone; empty when zones are not used.
    zones: BTreeMap<String, String>,
    /// Distinct zones among the nodes with tokens: once a walk has used
    /// them all, no later node can add a new one.
    zone_count: usize,
}

impl Ring {
    /// Builds a ring from each node's tokens, all in one zone.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a [Token])>) -> Self {
        Self::with_zones(nodes.into_iter().map(|(id, ts)| (id, "", ts)))
    }

    /// Builds a ring from each node's zone and tokens.
    pub fn with_zones<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str, &'a [Token])>) -> Self {
        let mut tokens = Vec::new();
        let mut zones = BTreeMap::new();
        for (id, zone, ts) in nodes {
            zones.insert(id.to_string(), zone.to_string());
            tokens.extend(ts.iter().map(|t| (*t, id.to_string())));
        }
        tokens.sort();
        tokens.dedup();
        let mut ring = Self { tokens, zones, zone_count: 0 };
        ring.count_zones();
        ring
    }

    fn count_zones(&mut self) {
        let mut zones: Vec<&str> = self.tokens.iter().map(|(_, id)| self.zone(id)).collect();
        zones.sort_unstable();
        zones.dedup();
        self.zone_count = zones.len();
    }

    /// The zone of `id` ("" when unknown).
    pub fn zone(&self, id: &str) -> &str {
        self.zones.get(id).map_or("", String::as_str)
    }

    /// True when no node has tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Every token and its owner, sorted.
    pub fn tokens(&self) -> &[(Token, String)] {
        &self.tokens
    }

    /// The distinct node ids, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tokens.iter().map(|(_, id)| id.clone()).collect();
        n.sort();
        n.dedup();
        n
    }

    /// The first `n` distinct nodes clockwise from `key`'s hash.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<String> {
        self.replicas_of(token_of(key), n)
    }

    /// The first `n` distinct nodes clockwise from `token` (the owner of the
    /// range containing `token` first), spread over distinct zones first.
    pub fn replicas_of(&self, token: Token, n: usize) -> Vec<String> {
        let len = self.tokens.len();
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        let at = |i: usize| &self.tokens[(start + i) % len].1;
        // Each chosen node with its first place clockwise (where both
        // passes take it).
        let mut chosen: Vec<(usize, &String)> = Vec::with_capacity(n);
        let taken = |chosen: &[(usize, &String)], id: &String| chosen.iter().any(|(_, c)| *c == id);
        // First pass: one node per zone not yet used, until every zone is;
        // second: fill in order.
        let mut used_zones: Vec<&str> = Vec::new();
        for i in 0..len {
            if chosen.len() == n || used_zones.len() == self.zone_count {
                break;
            }
            let id = at(i);
            let zone = self.zone(id);
            if !used_zones.contains(&zone) && !taken(&chosen, id) {
                used_zones.push(zone);
                chosen.push((i, id));
            }
        }
        for i in 0..len {
            if chosen.len() == n {
                break;
            }
            let id = at(i);
            if !taken(&chosen, id) {
                chosen.push((i, id));
            }
        }
        // Keep clockwise order among the chosen, so the owner stays first.
        chosen.sort_unstable_by_key(|(i, _)| *i);
        chosen.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Each token range `(start, end]` with its owner; the first range wraps.
    /// When two nodes hold the same token, the first (by node id) owns it and
    /// no empty range is listed.
    pub fn ranges(&self) -> Vec<(Token, Token, String)> {
        let n = self.tokens.len();
        (0..n)
            .filter(|&i| n == 1 || self.tokens[(i + n - 1) % n].0 != self.tokens[i].0)
            .map(|i| {
                let start = (1..=n).map(|k| self.tokens[(i + n - k) % n].0).find(|t| *t != self.tokens[i].0).unwrap_or(self.tokens[i].0);
                (start, self.tokens[i].0, self.tokens[i].1.clone())
            })
            .collect()
    }

    /// The fraction of the ring each node owns as primary. Every node with
    /// tokens is listed, including one whose every token is also held by a
    /// node that sorts first (it owns 0.0).
    pub fn ownership(&self) -> BTreeMap<String, f64> {
        let mut owned: BTreeMap<String, u128> = self.zones.keys().map(|id| (id.clone(), 0)).collect();
        for (start, end, id) in self.ranges() {
            *owned.entry(id).or_default() += range_len(start, end);
        }
        owned.into_iter().map(|(id, len)| (id, len as f64 / RING as f64)).collect()
    }

    /// max / mean owned range over every node on the ring; 1.0 is perfect
    /// balance. A node that owns nothing makes it infinite: that ring is
    /// broken (two nodes hold the same tokens), not merely unbalanced, and a
    /// finite number computed over the other nodes would hide it.
    pub fn skew(&self) -> f64 {
        let own = self.ownership();
        if own.is_empty() {
            return 1.0;
        }
        if own.values().any(|f| *f == 0.0) {
            return f64::INFINITY;
        }
        let max = own.values().cloned().fold(0.0, f64::max);
        max * own.len() as f64
    }

    /// Nodes on the ring that own no range (their tokens are all held by
    /// another node too).
    pub fn owning_nothing(&self) -> Vec<String> {
        self.ownership().into_iter().filter(|(_, f)| *f == 0.0).map(|(id, _)| id).collect()
    }

    /// Adds a node's tokens, as if it were on the ring (for planning).
    pub fn add(&mut self, id: &str, zone: &str, tokens: &[Token]) {
        self.zones.insert(id.to_string(), zone.to_string());
        self.tokens.extend(tokens.iter().map(|t| (*t, id.to_string())));
        self.tokens.sort();
        self.tokens.dedup();
        self.count_zones();
    }
}

/// Length of `(start, end]`; a lone token owns the whole ring.
fn range_len(start: Token, end: Token) -> u128 {
    if start == end {
        RING
    } else {
        (end.wrapping_sub(start)) as u128
    }
}

/// Picks `count` tokens for a node joining `ring`, to minimise skew.
///
/// An empty ring gets evenly spaced tokens. Otherwise each new token takes a
/// slice of `target / count` from the largest range of the node whose
/// ownership most exceeds the new fair share `1 / (nodes + 1)`.
pub fn choose_tokens(ring: &Ring, count: usize) -> Vec<Token> {
    assert!(count > 0, "a node needs at least one token");
    if ring.is_empty() {
        let step = (RING / count as u128) as u64;
        return (0..count as u64).map(|i| i.wrapping_mul(step).wrapping_add(step / 2)).collect();
    }
    const NEW: &str = "\u{0}joining";
    let nodes = ring.nodes().len() as u128;
    let target = RING / (nodes + 1);
    let mut excess: BTreeMap<String, u128> =
        ring.ownership().into_iter().map(|(id, f)| (id, ((f * RING as f64) as u128).saturating_sub(target))).collect();
    let mut work = ring.clone();
    let mut chosen = Vec::with_capacity(count);
    let mut stolen: u128 = 0;
    for j in 0..count {
        // Deterministic: ties go to the smallest node id.
        let Some((victim, &room)) = excess.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else { break };
        let victim = victim.clone();
        let Some((start, end, _)) = work
            .ranges()
            .into_iter()
            .filter(|(_, _, id)| *id == victim)
            .max_by(|a, b| range_len(a.0, a.1).cmp(&range_len(b.0, b.1)).then(b.1.cmp(&a.1)))
        else {
            break;
        };
        let want = (target - stolen.min(target)) / (count - j) as u128;
        let slice = want.min(room).min(range_len(start, end) - 1).max(1);
        let token = start.wrapping_add(slice as u64);
        chosen.push(token);
        work.tokens.push((token, NEW.to_string()));
        work.tokens.sort();
        stolen += slice;
        *excess.get_mut(&victim).expect("victim is a member") = room.saturating_sub(slice);
    }
    chosen.sort();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `replicas_of` as first written: two full walks and a sort by
    /// first position; the faster one must agree with it.
    fn replicas_reference(ring: &Ring, token: Token, n: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if ring.tokens.is_empty() {
            return out;
        }
        let start = ring.tokens.partition_point(|(t, _)| *t < token);
        let walk = || (0..ring.tokens.len()).map(|i| &ring.tokens[(start + i) % ring.tokens.len()].1);
        let mut used_zones: Vec<&str> = Vec::new();
        for id in walk() {
            if out.len() < n && !out.contains(id) && !used_zones.contains(&ring.zone(id)) {
                used_zones.push(ring.zone(id));
                out.push(id.clone());
            }
        }
        for id in walk() {
            if out.len() < n && !out.contains(id) {
                out.push(id.clone());
            }
        }
        let order: Vec<&String> = walk().collect();
        out.sort_by_key(|id| order.iter().position(|o| *o == id));
        out
    }

    proptest::proptest! {
        #[test]
        fn replicas_match_the_two_walk_reference(
            nodes in proptest::collection::vec((0u8..3, proptest::collection::vec(proptest::num::u64::ANY, 0..6)), 0..7),
            extra in proptest::option::of((0u8..4, proptest::collection::vec(proptest::num::u64::ANY, 1..4))),
            token in proptest::num::u64::ANY,
            n in 1usize..5,
        ) {
            let ids: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
            let zones = ["", "a", "b", "c"];
            let mut ring = Ring::with_zones(nodes.iter().zip(&ids).map(|((z, ts), id)| (id.as_str(), zones[*z as usize], ts.as_slice())));
            if let Some((z, ts)) = &extra {
                ring.add("joiner", zones[*z as usize], ts);
            }
            proptest::prop_assert_eq!(ring.replicas_of(token, n), replicas_reference(&ring, token, n));
        }
    }

    fn grow(nodes: usize, vnodes: usize) -> Ring {
        let mut all: Vec<(String, Vec<Token>)> = Vec::new();
        for i in 0..nodes {
            let ring = Ring::new(all.iter().map(|(id, t)| (id.as_str(), t.as_slice())));
            all.push((format!("n{}", i + 1), choose_tokens(&ring, vnodes)));
        }
        Ring::new(all.iter().map(|(id, t)| (id.as_str(), t.as_slice())))
    }

    #[test]
    fn skew_stays_at_or_below_1_10_for_1_to_10_nodes_with_16_vnodes() {
        for n in 1..=10 {
            let ring = grow(n, 16);
            assert_eq!(ring.nodes().len(), n);
            assert_eq!(ring.tokens().len(), n * 16, "{n} nodes: tokens collided");
            let skew = ring.skew();
            assert!(skew <= 1.10, "{n} nodes: skew {skew:.3}");
        }
    }

    #[test]
    fn ownership_sums_to_one() {
        let total: f64 = grow(5, 16).ownership().values().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn preference_list_is_distinct_and_clockwise() {
        let ring = Ring::new([("a", &[10u64][..]), ("b", &[20, 40][..]), ("c", &[30][..])]);
        assert_eq!(ring.replicas_of(15, 3), ["b", "c", "a"]);
        assert_eq!(ring.replicas_of(20, 2), ["b", "c"], "a token owns its own position");
        assert_eq!(ring.replicas_of(35, 3), ["b", "a", "c"], "b's second token, then wrap");
        assert_eq!(ring.replicas_of(u64::MAX, 2), ["a", "b"], "wraps past the top");
        assert_eq!(ring.replicas_of(15, 5).len(), 3, "never more than the nodes");
    }

    #[test]
    fn every_key_gets_n_distinct_replicas() {
        let ring = grow(4, 16);
        for i in 0..1000 {
            let p = ring.preference_list(format!("key{i}").as_bytes(), 3);
            let mut d = p.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "{p:?}");
        }
    }

    #[test]
    fn replicas_span_distinct_zones_when_there_are_enough() {
        let mut all: Vec<(String, &str, Vec<Token>)> = Vec::new();
        for (i, zone) in ["a", "a", "b", "b", "c", "c"].iter().enumerate() {
            let ring = Ring::with_zones(all.iter().map(|(id, z, t)| (id.as_str(), *z, t.as_slice())));
            all.push((format!("n{}", i + 1), zone, choose_tokens(&ring, 16)));
        }
        let ring = Ring::with_zones(all.iter().map(|(id, z, t)| (id.as_str(), *z, t.as_slice())));
        for i in 0..500 {
            let p = ring.preference_list(format!("key{i}").as_bytes(), 3);
            let mut zones: Vec<&str> = p.iter().map(|id| ring.zone(id)).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "{p:?} spans {zones:?}");
        }
        // Two zones, N = 3: both zones used, third replica fills in.
        let two = Ring::with_zones([("x", "a", &[10u64][..]), ("y", "a", &[20][..]), ("z", "b", &[30][..])]);
        assert_eq!(two.replicas_of(5, 3), ["x", "y", "z"]);
        assert_eq!(two.replicas_of(5, 2), ["x", "z"], "skips y to reach zone b");
    }

    #[test]
    fn a_node_sharing_every_token_owns_nothing_and_skew_is_infinite() {
        let mut ring = grow(2, 4);
        let n2: Vec<Token> = ring.tokens().iter().filter(|(_, id)| id == "n2").map(|(t, _)| *t).collect();
        ring.add("n3", "", &n2);
        assert_eq!(ring.ownership()["n3"], 0.0, "n2 sorts first and keeps every shared token");
        assert_eq!(ring.owning_nothing(), ["n3"]);
        assert!(ring.skew().is_infinite(), "skew {}", ring.skew());
        assert!(grow(3, 16).skew().is_finite());
    }

    #[test]
    fn skew_stays_at_or_below_1_25_up_to_20_nodes_joining_in_turn() {
        for n in 11..=20 {
            let skew = grow(n, 16).skew();
            assert!(skew <= 1.25, "{n} nodes: skew {skew:.3}");
        }
    }

    #[test]
    fn choose_tokens_is_deterministic() {
        assert_eq!(grow(4, 16), grow(4, 16));
    }
}
