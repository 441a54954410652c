//! Joining with data, decommissioning and removing nodes: the async shells
//! around the member list (DESIGN §4).
//!
//! **Join (bootstrap).** A node without tokens gets them by the formation
//! rule (`formation.rs`): it starts a ring, or claims and plans tokens
//! together with every concurrent joiner. It announces them as `joining`
//! and waits `RING_DELAY_ROUNDS` gossip rounds, until every coordinator
//! knows it and sends it the writes for its future ranges (as a pending
//! replica, see `coordinator/plan.rs`), and checks that no other member keeps
//! one of its tokens. Next it streams each future range from *every* live
//! current replica and merges, so a write acknowledged by any quorum is
//! included. It checks its tokens once more, and only then goes `normal`
//! and serves reads. Finished ranges are recorded in `meta`, so a restart
//! resumes instead of starting over.
//!
//! **Decommission.** The node goes `leaving`, waits the same delay, pushes
//! each of its ranges to the nodes that will own them without it, goes
//! `left`, spreads that, and stops.
//!
//! **Remove.** An operator marks a dead node `left` from any live node.
//! Anti-entropy (`ringkv repair`) then re-replicates its ranges from the
//! survivors onto their new owners.

use std::collections::BTreeSet;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{formation, seeds, NodeState};
use crate::antientropy::sync::RateLimit;
use crate::antientropy::Trees;
use crate::error::{Error, Result};
use crate::handles::{Gossip, Handles};
use crate::paging::{Page, PAGE_BYTES};
use crate::ring::{choose_tokens, Ring, Token};
use crate::store::RangeCursor;

/// Gossip rounds to wait after announcing a join or leave, so that every
/// node has heard of it before data moves (Cassandra's RING_DELAY).
pub const RING_DELAY_ROUNDS: u32 = 4;
/// Most keys per streamed page; the source also cuts each page at
/// [`PAGE_BYTES`] (`FetchRange`), so large values never outgrow a message.
const PAGE: u32 = 1000;
/// Most keys per decommission push; pushes are also cut at [`PAGE_BYTES`].
const PUSH_KEYS: usize = 256;

fn ring_delay(s: &Handles) -> Duration {
    s.config.gossip_interval * RING_DELAY_ROUNDS
}

/// Runs until this node is `normal`: gets tokens by the formation rule
/// (`formation.rs`), checks them against every other member's, streams its
/// future ranges from the current owners, checks once more and goes
/// `normal`. A token another node keeps sends it back to claiming.
pub async fn join(g: Gossip, shutdown: CancellationToken) {
    let s = &g.h;
    // Gossip has carried this node as a tokenless `joining` member (a claim)
    // since it started.
    let mut claimed = Instant::now();
    loop {
        let Some(me) = s.membership.member(&s.config.id) else { return };
        if me.state == NodeState::Normal {
            return;
        }
        if me.tokens.is_empty() {
            match acquire_tokens(&g, &shutdown, claimed).await {
                None => return,
                Some(true) => return,
                Some(false) => {}
            }
        }
        tracing::info!(node = %s.config.id, delay_ms = ring_delay(s).as_millis() as u64, "joining: tokens announced; waiting for the ring to hear of them");
        if !pause(&shutdown, ring_delay(s)).await || !keeps_tokens(s) {
            claimed = Instant::now();
            continue;
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let keys = loop {
            match bootstrap(s).await {
                Ok(keys) => break keys,
                Err(e) => {
                    tracing::warn!(node = %s.config.id, error = %e, "bootstrap streaming failed; retrying");
                    if !pause(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if !keeps_tokens(s) {
            claimed = Instant::now();
            continue;
        }
        if let Err(e) = s.store.meta_put("joining", &false) {
            tracing::error!(error = %e, "cannot record the end of the join");
            return;
        }
        s.membership.update_me(|m| m.state = NodeState::Normal);
        s.save_members();
        tracing::info!(node = %s.config.id, keys, ms = started.elapsed().as_millis() as u64, "joined the ring: streamed its ranges, now normal");
        return;
    }
}

/// Sleeps `d`; false when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Part 3 of the formation rule: true when no other member keeps one of
/// this node's tokens. Otherwise the tokens are dropped (in gossip and on
/// disk) so that the node claims again.
fn keeps_tokens(s: &Handles) -> bool {
    let Some(me) = s.membership.member(&s.config.id) else { return false };
    let members = s.membership.members();
    let Some((keeper, token)) = formation::token_keeper(&me, &members) else { return true };
    tracing::warn!(node = %s.config.id, keeper, token, "another node holds one of the tokens this node chose; dropping them and choosing again");
    let dropped =
        s.store.meta_put("tokens", &Vec::<Token>::new()).and_then(|_| s.store.meta_put("bootstrap_done", &Vec::<(Token, Token)>::new()));
    if let Err(e) = dropped {
        tracing::error!(error = %e, "cannot record dropped tokens");
    }
    s.membership.update_me(|m| m.tokens.clear());
    s.save_members();
    false
}

/// Parts 1 and 2 of the formation rule: waits until this node may take
/// tokens, takes and persists them. `Some(true)` when it started a ring
/// alone and is already `normal`, `Some(false)` when it holds tokens as a
/// joiner, `None` on shutdown.
async fn acquire_tokens(g: &Gossip, shutdown: &CancellationToken, claimed: Instant) -> Option<bool> {
    let s = &g.h;
    let tick = Duration::from_millis(200);
    let settle = s.config.gossip_interval * formation::SETTLE_ROUNDS;
    let mut majority_since: Option<Instant> = None;
    let mut waits = 0u32;
    loop {
        let (up, _) = s.membership.peers_by_liveness();
        let seeds = seeds::resolve(s.peers.transport().as_ref(), &s.config.seeds, s.config.advertised(), &s.config.listen).await;
        let view = seeds::view(s.peers.transport().as_ref(), &seeds, &up).await;
        if !view.majority() {
            majority_since = None;
        } else if majority_since.is_none() {
            majority_since = Some(Instant::now());
        }
        let settled = majority_since.is_some_and(|t| t.elapsed() >= settle);
        let members = s.membership.members();
        let me = s.config.id.as_str();
        let (tokens, alone) = match formation::next(me, &members, |id| s.membership.is_up(id), view, settled) {
            formation::Next::StartAlone => (choose_tokens(&Ring::default(), s.config.vnodes), true),
            formation::Next::Start => {
                tracing::info!(node = %me, seeds_reached = view.others_reached, "no ring yet and this node has the smallest id: starting one");
                (choose_tokens(&Ring::default(), s.config.vnodes), false)
            }
            formation::Next::Join if claimed.elapsed() >= ring_delay(s) => {
                // Joiners with tokens, and live claimers; planned against
                // the normal members' ring.
                let joiners: Vec<(String, Vec<Token>)> = members
                    .iter()
                    .filter(|m| m.state == NodeState::Joining && (!m.tokens.is_empty() || s.membership.is_up(&m.id)))
                    .map(|m| (m.id.clone(), m.tokens.clone()))
                    .collect();
                let base = Ring::with_zones(
                    members
                        .iter()
                        .filter(|m| m.state == NodeState::Normal && !m.tokens.is_empty())
                        .map(|m| (m.id.as_str(), m.zone.as_str(), m.tokens.as_slice())),
                );
                let claimers: Vec<&str> = joiners.iter().filter(|(_, t)| t.is_empty()).map(|(id, _)| id.as_str()).collect();
                let announced: Vec<&str> = joiners.iter().filter(|(_, t)| !t.is_empty()).map(|(id, _)| id.as_str()).collect();
                tracing::info!(node = %me, ?claimers, ?announced, "joining a ring: planning tokens for every concurrent joiner");
                (formation::plan_tokens(me, &joiners, &base, s.config.vnodes), false)
            }
            formation::Next::Join => (Vec::new(), false),
            formation::Next::Wait(reason) => {
                waits += 1;
                if waits.is_multiple_of(50) {
                    tracing::warn!(node = %me, seeds = ?s.config.seeds, waited_ms = u64::from(waits) * 200, "{reason}");
                } else {
                    tracing::debug!(node = %me, "{reason}");
                }
                (Vec::new(), false)
            }
        };
        if !tokens.is_empty() {
            let tokens = if s.config.initial_tokens.is_empty() { tokens } else { s.config.initial_tokens.clone() };
            let persisted = s.store.meta_put("joining", &!alone).and_then(|_| s.store.meta_put("tokens", &tokens));
            if let Err(e) = persisted {
                tracing::error!(error = %e, "cannot persist tokens; not joining");
                return None;
            }
            s.membership.update_me(|m| {
                m.tokens = tokens;
                m.state = if alone { NodeState::Normal } else { NodeState::Joining };
            });
            s.save_members();
            if alone {
                tracing::info!(node = %me, "started a new ring");
            }
            return Some(alone);
        }
        // Until some peer answers, gossip with the seeds more often than
        // the gossip loop does, so formation does not wait a whole interval.
        if up.is_empty() {
            super::run_round(g).await;
        }
        if !pause(shutdown, tick).await {
            return None;
        }
    }
}

/// Streams every future range of this node from all its live current
/// replicas. Returns the keys merged.
async fn bootstrap(s: &Handles) -> Result<u64> {
    let me = &s.config.id;
    let n = s.config.replication_factor;
    let future = s.membership.future_ring();
    let current = s.membership.ring();
    let mut done: BTreeSet<(Token, Token)> =
        s.store.meta_get::<Vec<(Token, Token)>>("bootstrap_done")?.unwrap_or_default().into_iter().collect();
    let mut rate = RateLimit::new(s.config.anti_entropy_bytes_per_sec);
    let mut keys = 0u64;
    let ranges = Trees::ranges_of(&future, me, n);
    // A future range may span several current ranges; ask the replicas of each.
    for (start, end) in ranges {
        if done.contains(&(start, end)) {
            continue;
        }
        let mut sources: BTreeSet<String> = BTreeSet::new();
        for (cs, ce, _) in current.ranges() {
            if crate::antientropy::merkle::in_range(ce, start, end) || crate::antientropy::merkle::in_range(end, cs, ce) {
                sources.extend(current.replicas_of(ce, n));
            }
        }
        sources.remove(me);
        for source in sources.iter().filter(|p| s.membership.is_up(p)) {
            keys += stream_range(s, source, start, end, &mut rate).await?;
        }
        done.insert((start, end));
        s.store.meta_put("bootstrap_done", &done.iter().copied().collect::<Vec<_>>())?;
    }
    Ok(keys)
}

/// Pulls `(start, end]` from `source` page by page and merges it.
async fn stream_range(s: &Handles, source: &str, start: Token, end: Token, rate: &mut RateLimit) -> Result<u64> {
    let mut after = Vec::new();
    let mut merged = 0;
    loop {
        let req = pb::FetchRangeRequest { start_token: start, end_token: end, start_after: after.clone(), limit: PAGE };
        let page = s.peers.fetch_range(source, req).await?;
        let bytes: usize = page.entries.iter().map(|e| e.key.len() + e.version.len()).sum();
        rate.consume(bytes as u64).await;
        // One engine batch and one durability wait per page. A version that
        // fails admission is skipped (and logged), not a reason to stall the join.
        merged += page.entries.len() as u64;
        let next = page.entries.last().filter(|_| page.more).map(|e| e.key.clone());
        let (admit, from) = (s.admit.clone(), source.to_string());
        let last_ticket = s.store.offload(move |store| Ok(store.merge_page(&admit.pulled_page(&page.entries, &from))?.1)).await?;
        s.store.durable(last_ticket).await?;
        match next {
            Some(key) => after = key,
            None => return Ok(merged),
        }
    }
}

/// Streams this node's ranges to their next owners, goes `left` and
/// cancels `stop` so the process exits. Returns the keys pushed.
pub async fn decommission(g: &Gossip, stop: CancellationToken) -> Result<pb::DecommissionResponse> {
    let s = &g.h;
    let started = Instant::now();
    let me = s.config.id.clone();
    if s.membership.member(&me).is_none_or(|m| m.state != NodeState::Normal) {
        return Err(Error::InvalidArgument(format!("{me} is not normal; only a normal node can be decommissioned")));
    }
    let others = s.membership.ring().nodes().into_iter().filter(|n| *n != me).count();
    if others < s.config.replication_factor {
        return Err(Error::InvalidArgument(format!(
            "decommissioning {me} would leave {others} node(s) for replication_factor {}; add a node first",
            s.config.replication_factor
        )));
    }
    s.membership.update_me(|m| m.state = NodeState::Leaving);
    s.save_members();
    tracing::info!(node = %me, "leaving: announced; waiting for the ring to hear of it");
    tokio::time::sleep(ring_delay(s)).await;

    let n = s.config.replication_factor;
    let current = s.membership.ring();
    let future = s.membership.future_ring();
    let mut pushed = 0u64;
    for (start, end) in Trees::ranges_of(&current, &me, n) {
        let now: Vec<String> = current.replicas_of(end, n);
        let next: Vec<String> = future.replicas_of(end, n).into_iter().filter(|p| !now.contains(p)).collect();
        // A page at a time, so memory stays flat whatever the range holds.
        let mut walk = RangeCursor::new(start, end);
        while !next.is_empty() && !walk.done() {
            let (items, w) = s
                .store
                .offload(move |store| {
                    let mut w = walk;
                    Ok((store.next_page(&mut w, Page::new(PUSH_KEYS, PAGE_BYTES))?.0, w))
                })
                .await?;
            walk = w;
            if items.is_empty() {
                continue;
            }
            let entries: Vec<pb::KeyVersion> = items.into_iter().map(|(key, version)| pb::KeyVersion { key, version }).collect();
            for owner in &next {
                s.peers.push_keys(owner, pb::PushKeysRequest { from: me.clone(), entries: entries.clone() }).await?;
                pushed += entries.len() as u64;
            }
        }
    }
    s.store.meta_put("left", &true)?;
    s.membership.update_me(|m| m.state = NodeState::Left);
    s.save_members();
    // Spread `left` before stopping.
    for _ in 0..RING_DELAY_ROUNDS {
        super::run_round(g).await;
    }
    tracing::info!(node = %me, keys = pushed, ms = started.elapsed().as_millis() as u64, "decommissioned; stopping");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    Ok(pb::DecommissionResponse { keys_streamed: pushed, duration_ms: started.elapsed().as_millis() as u64 })
}
