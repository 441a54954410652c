//! How a node without tokens gets them: the formation rule, as pure
//! functions over the member list (no I/O, no clock; the shell in
//! `lifecycle.rs` feeds them).
//!
//! Operators start clusters two ways, and both must give exactly one ring
//! with distinct tokens:
//! - **every node at once with the same seed list** (an Ansible role, a
//!   Kubernetes StatefulSet with `podManagementPolicy: Parallel`);
//! - **one node first, the others pointed at it**, in any order and timing.
//!
//! The rule, in three parts:
//!
//! 1. **Starting a ring.** While no member owns tokens, a node whose seed
//!    list names no node but itself starts the ring at once. Any other node
//!    waits until it has reached a *majority* of its seed list (counting
//!    itself when it is a seed: etcd's rule for `--initial-cluster`, so a
//!    partition at formation cannot start two rings), then waits
//!    [`SETTLE_ROUNDS`] more so that every reachable node has heard of every
//!    other, and then the node with the **smallest id** among the live,
//!    tokenless members starts the ring. Everybody else joins it. Two nodes
//!    that both believe they are the smallest (their views differed) take
//!    identical tokens, and part 3 makes one of them back off.
//! 2. **Joining.** A tokenless node announces itself (gossip carries it as
//!    `joining` with no tokens: a *claim*) and keeps quiet for the ring delay
//!    after that, so concurrent joiners hear of each other. It then plans
//!    tokens for every joiner it knows, in id order, each against the
//!    `normal` ring plus the joiners before it, and takes its own share. A
//!    joiner that has already announced tokens keeps its place in that order
//!    with the tokens it announced (it computed them by the same plan), so a
//!    joiner that hears of those tokens a moment before another does still
//!    plans the same sequence. Joiners that see the same joiners compute the
//!    same plan, so they take distinct tokens and the ring stays as balanced
//!    as one grown a node at a time (skew ≤ 1.10 for 10 nodes, ≤ 1.25 for
//!    20; see `ring.rs`).
//! 3. **Checking before use.** A node holding tokens it has not yet used
//!    (state `joining`) waits the ring delay and checks again before it
//!    streams and again before it goes `normal`. If another member holds one
//!    of its tokens, the rule of [`token_keeper`] decides who keeps them: a
//!    `normal` or `leaving` node always, otherwise the smaller id. The other
//!    drops its tokens and claims again. A node therefore never becomes
//!    `normal` with a token another node holds, given that gossip spreads a
//!    change within the ring delay.
//!
//! Cassandra lets seeds skip bootstrap and relies on random tokens not
//! colliding; etcd fixes every initial member up front. This rule needs
//! neither: the seed list only has to overlap, and tokens are chosen for
//! balance, not at random.

use super::{Member, NodeState};
use crate::ring::{choose_tokens, Ring, Token};

/// Gossip rounds a node waits after reaching a majority of its seeds before
/// the smallest id starts the ring: long enough for every node reached to
/// hear of every other (gossip through a seed hub spreads a member list to
/// all in about log2(n) rounds; 64 simulated nodes took 3.1).
pub const SETTLE_ROUNDS: u32 = 3;

/// What a node knows of its seed list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedView {
    /// Seed addresses that are not this node.
    pub others: usize,
    /// How many of those are live members this node has heard from.
    pub others_reached: usize,
    /// Whether this node's own address is in the seed list.
    pub me_seed: bool,
}

impl SeedView {
    /// True when this node has reached more than half of the seed list
    /// (itself included when it is a seed).
    pub fn majority(&self) -> bool {
        let me = usize::from(self.me_seed);
        (self.others_reached + me) * 2 > self.others + me
    }
}

/// What a node without tokens does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// No ring exists and the seed list names nobody else: start it and
    /// serve at once.
    StartAlone,
    /// No ring exists and this node is the one to start it: take the first
    /// ring's tokens, then check for a concurrent starter before serving.
    Start,
    /// A ring exists: claim and plan tokens ([`plan_tokens`]).
    Join,
    /// Not yet; the reason says what it waits for.
    Wait(String),
}

/// The formation rule, part 1. `settled` is true once the seed majority has
/// held for [`SETTLE_ROUNDS`].
pub fn next(me: &str, members: &[Member], is_up: impl Fn(&str) -> bool, seeds: SeedView, settled: bool) -> Next {
    let others = || members.iter().filter(|m| m.id != me && m.state != NodeState::Left);
    if others().any(|m| !m.tokens.is_empty() && matches!(m.state, NodeState::Normal | NodeState::Leaving)) {
        return Next::Join;
    }
    if let Some(starter) = others().find(|m| !m.tokens.is_empty()) {
        return Next::Wait(format!("{} is starting the ring", starter.id));
    }
    if seeds.others == 0 {
        return Next::StartAlone;
    }
    if !seeds.majority() {
        let me_seed = usize::from(seeds.me_seed);
        return Next::Wait(format!(
            "no ring yet; reached {} of {} seeds, and a ring starts only once a majority is reached",
            seeds.others_reached + me_seed,
            seeds.others + me_seed
        ));
    }
    if !settled {
        return Next::Wait("no ring yet; a majority of seeds reached, letting the member lists settle".into());
    }
    let smallest = others().filter(|m| m.tokens.is_empty() && is_up(&m.id)).map(|m| m.id.as_str()).chain([me]).min().expect("me");
    if smallest == me {
        Next::Start
    } else {
        Next::Wait(format!("no ring yet; {smallest} (the smallest id) starts it"))
    }
}

/// The formation rule, part 2: tokens for `me`, planned for every joiner
/// in id order against `base` (the ring of `normal` members). `joiners`
/// pairs each joining member with the tokens it has announced (empty for a
/// live claimer); `me` is among them or added. A joiner with tokens keeps
/// its place in the order with those tokens, so planners that hear of an
/// announcement at different moments still compute one sequence.
pub fn plan_tokens(me: &str, joiners: &[(String, Vec<Token>)], base: &Ring, vnodes: usize) -> Vec<Token> {
    let mut order: Vec<(&str, &[Token])> = joiners.iter().map(|(id, t)| (id.as_str(), t.as_slice())).collect();
    order.retain(|(id, _)| *id != me);
    order.push((me, &[]));
    order.sort_unstable_by_key(|(id, _)| *id);
    order.dedup_by_key(|(id, _)| *id);
    let mut ring = base.clone();
    for (id, announced) in order {
        if id == me {
            return choose_tokens(&ring, vnodes);
        }
        let tokens = if announced.is_empty() { choose_tokens(&ring, vnodes) } else { announced.to_vec() };
        ring.add(id, "", &tokens);
    }
    unreachable!("me is in the order")
}

/// The formation rule, part 3: the member that keeps a token `me` also
/// holds, with that token, or `None` when `me` may use all its tokens. A
/// `normal` or `leaving` member always keeps its tokens; between two
/// joiners the smaller id does.
pub fn token_keeper<'a>(me: &Member, members: &'a [Member]) -> Option<(&'a str, Token)> {
    members
        .iter()
        .filter(|m| m.id != me.id && m.state != NodeState::Left)
        .filter(|m| matches!(m.state, NodeState::Normal | NodeState::Leaving) || m.id < me.id)
        .find_map(|m| m.tokens.iter().find(|t| me.tokens.contains(t)).map(|t| (m.id.as_str(), *t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: NodeState, tokens: &[Token]) -> Member {
        Member { id: id.into(), state, tokens: tokens.to_vec(), ..Default::default() }
    }

    fn seeds(others: usize, others_reached: usize, me_seed: bool) -> SeedView {
        SeedView { others, others_reached, me_seed }
    }

    fn up(_: &str) -> bool {
        true
    }

    #[test]
    fn a_node_whose_seed_list_names_only_itself_starts_alone() {
        let ms = [member("n1", NodeState::Joining, &[])];
        assert_eq!(next("n1", &ms, up, seeds(0, 0, true), false), Next::StartAlone);
        assert_eq!(next("n1", &ms, up, seeds(0, 0, false), false), Next::StartAlone, "no seeds at all");
    }

    #[test]
    fn a_ring_starts_only_after_a_majority_of_seeds_and_the_settle_time() {
        let ms = [member("n1", NodeState::Joining, &[]), member("n2", NodeState::Joining, &[])];
        // Three seeds, n1 among them, only n2 reached: 2 of 3 is a majority.
        assert!(matches!(next("n1", &ms, up, seeds(2, 0, true), true), Next::Wait(_)), "1 of 3");
        assert!(matches!(next("n1", &ms, up, seeds(2, 1, true), false), Next::Wait(_)), "not settled");
        assert_eq!(next("n1", &ms, up, seeds(2, 1, true), true), Next::Start);
        // A non-seed needs a majority of the seeds themselves.
        assert!(matches!(next("n1", &ms, up, seeds(3, 1, false), true), Next::Wait(_)), "1 of 3");
        assert_eq!(next("n1", &ms, up, seeds(3, 2, false), true), Next::Start);
    }

    #[test]
    fn only_the_smallest_live_tokenless_id_starts_the_ring() {
        let ms = [member("n1", NodeState::Joining, &[]), member("n2", NodeState::Joining, &[]), member("n3", NodeState::Joining, &[])];
        let view = seeds(2, 2, true);
        assert_eq!(next("n1", &ms, up, view, true), Next::Start);
        assert_eq!(next("n2", &ms, up, view, true), Next::Wait("no ring yet; n1 (the smallest id) starts it".into()));
        // A dead n1 does not hold the others up.
        assert_eq!(next("n2", &ms, |id| id != "n1", view, true), Next::Start);
        // A member already gone does not count.
        let gone = [member("n0", NodeState::Left, &[]), member("n2", NodeState::Joining, &[])];
        assert_eq!(next("n2", &gone, up, view, true), Next::Start);
    }

    #[test]
    fn a_ring_that_exists_is_joined_and_one_being_started_is_waited_for() {
        let starting = [member("n1", NodeState::Joining, &[5]), member("n2", NodeState::Joining, &[])];
        assert_eq!(next("n2", &starting, up, seeds(0, 0, false), true), Next::Wait("n1 is starting the ring".into()));
        let started = [member("n1", NodeState::Normal, &[5]), member("n2", NodeState::Joining, &[])];
        assert_eq!(next("n2", &started, up, seeds(0, 0, false), false), Next::Join, "even with no seeds reached");
        let left = [member("n1", NodeState::Left, &[5]), member("n2", NodeState::Joining, &[])];
        assert_eq!(next("n2", &left, up, seeds(0, 0, false), false), Next::StartAlone, "a left node's tokens are no ring");
    }

    fn claims(ids: &[&str]) -> Vec<(String, Vec<Token>)> {
        ids.iter().map(|id| (id.to_string(), Vec::new())).collect()
    }

    #[test]
    fn concurrent_claimers_plan_distinct_tokens_that_balance_the_ring() {
        let first = choose_tokens(&Ring::default(), 16);
        let ring = Ring::new([("n1", first.as_slice())]);
        let joiners = claims(&["n2", "n3", "n4", "n5"]);
        let mut grown = ring.clone();
        for (id, _) in &joiners {
            // Every claimer computes its own share from the same view.
            let mine = plan_tokens(id, &joiners, &ring, 16);
            assert!(mine.iter().all(|t| !grown.tokens().iter().any(|(u, _)| u == t)), "{id} took a token already planned");
            grown.add(id, "", &mine);
        }
        assert_eq!(grown.tokens().len(), 5 * 16);
        assert!(grown.skew() <= 1.10, "skew {}", grown.skew());
    }

    /// The netns CI failure (skew 1.28): n5 planned after n4 had announced
    /// its tokens, but before n2 and n3 had. Planning n4 first (it was in
    /// the future ring) and n2, n3 after it put n5 on the wrong spots.
    #[test]
    fn a_joiner_that_announced_first_keeps_its_place_in_id_order() {
        let first = choose_tokens(&Ring::default(), 16);
        let ring = Ring::new([("n1", first.as_slice())]);
        let all = claims(&["n2", "n3", "n4", "n5"]);
        let planned: Vec<Vec<Token>> = all.iter().map(|(id, _)| plan_tokens(id, &all, &ring, 16)).collect();
        // n5's view: n4 has announced, n2 and n3 are still claims.
        let seen = vec![
            ("n2".to_string(), Vec::new()),
            ("n3".to_string(), Vec::new()),
            ("n4".to_string(), planned[2].clone()),
            ("n5".to_string(), Vec::new()),
        ];
        assert_eq!(plan_tokens("n5", &seen, &ring, 16), planned[3], "n5 plans the same as with every claim in view");
        let mut grown = ring.clone();
        for ((id, _), tokens) in all.iter().zip(&planned) {
            grown.add(id, "", tokens);
        }
        assert!(grown.skew() <= 1.10, "skew {}", grown.skew());
    }

    #[test]
    fn normal_nodes_and_then_smaller_ids_keep_shared_tokens() {
        let me = member("n3", NodeState::Joining, &[1, 2]);
        let joiner_after = [me.clone(), member("n4", NodeState::Joining, &[2])];
        assert_eq!(token_keeper(&me, &joiner_after), None, "n3 < n4: n3 keeps");
        let joiner_before = [member("n2", NodeState::Joining, &[2]), me.clone()];
        assert_eq!(token_keeper(&me, &joiner_before), Some(("n2", 2)));
        let normal_after = [member("n9", NodeState::Normal, &[1])];
        assert_eq!(token_keeper(&me, &normal_after), Some(("n9", 1)), "a normal node always keeps");
        let left = [member("n1", NodeState::Left, &[1, 2])];
        assert_eq!(token_keeper(&me, &left), None, "a left node holds nothing");
        let apart = [member("n1", NodeState::Normal, &[7])];
        assert_eq!(token_keeper(&me, &apart), None);
    }
}
