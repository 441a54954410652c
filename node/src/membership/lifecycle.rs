//! Joining with data, decommissioning and removing nodes: the async shells
//! around the member list (DESIGN §4).
//!
//! **Join (bootstrap).** A new node learns the ring from a seed, chooses
//! tokens that minimise skew, and announces itself `joining`. It then waits
//! `RING_DELAY_ROUNDS` gossip rounds, until every coordinator knows it and
//! sends it the writes for its future ranges (as a pending replica, see
//! `coordinator.rs`). Next it streams each future range from *every* live
//! current replica and merges, so a write acknowledged by any quorum is
//! included. Only then does it go `normal` and serve reads. Finished ranges
//! are recorded in `meta`, so a restart resumes instead of starting over.
//!
//! **Decommission.** The node goes `leaving`, waits the same delay, pushes
//! each of its ranges to the nodes that will own them without it, goes
//! `left`, spreads that, and stops.
//!
//! **Remove.** An operator marks a dead node `left` from any live node.
//! Anti-entropy (`ringkv repair`) then re-replicates its ranges from the
//! survivors onto their new owners.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NodeState;
use crate::antientropy::sync::RateLimit;
use crate::antientropy::Trees;
use crate::error::{Error, Result};
use crate::node::Shared;
use crate::paging::{self, Page, PAGE_BYTES};
use crate::record;
use crate::ring::{choose_tokens, Token};
use crate::version::DvvSet;

/// Gossip rounds to wait after announcing a join or leave, so that every
/// node has heard of it before data moves (Cassandra's RING_DELAY).
pub const RING_DELAY_ROUNDS: u32 = 4;
/// Most keys per streamed page; the source also cuts each page at
/// [`PAGE_BYTES`] (`FetchRange`), so large values never outgrow a message.
const PAGE: u32 = 1000;
/// Most keys per decommission push; pushes are also cut at [`PAGE_BYTES`].
const PUSH_KEYS: usize = 256;

fn ring_delay(s: &Shared) -> Duration {
    Duration::from_millis(s.config.gossip_interval_ms * u64::from(RING_DELAY_ROUNDS))
}

/// Runs until this node is `normal`: joins the ring, streaming its future
/// ranges first unless it is the first node.
pub async fn join(s: Arc<Shared>, shutdown: CancellationToken) {
    if s.membership.member(&s.config.id).is_some_and(|m| m.state == NodeState::Normal) {
        return;
    }
    if s.membership.member(&s.config.id).is_some_and(|m| m.tokens.is_empty()) && !take_tokens(&s, &shutdown).await {
        return;
    }
    if s.membership.member(&s.config.id).is_some_and(|m| m.state == NodeState::Normal) {
        return;
    }
    tracing::info!(node = %s.config.id, delay_ms = ring_delay(&s).as_millis() as u64, "joining: announced; waiting for the ring to hear of it");
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(ring_delay(&s)) => {}
    }
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let keys = loop {
        match bootstrap(&s).await {
            Ok(keys) => break keys,
            Err(e) => {
                tracing::warn!(node = %s.config.id, error = %e, "bootstrap streaming failed; retrying");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    if let Err(e) = s.store.meta_put("joining", &false) {
        tracing::error!(error = %e, "cannot record the end of the join");
        return;
    }
    s.membership.update_me(|m| m.state = NodeState::Normal);
    s.save_members();
    tracing::info!(node = %s.config.id, keys, ms = started.elapsed().as_millis() as u64, "joined the ring: streamed its ranges, now normal");
}

/// Chooses and persists tokens. Returns false on shutdown.
async fn take_tokens(s: &Arc<Shared>, shutdown: &CancellationToken) -> bool {
    let seeds: Vec<&String> = s.config.seeds.iter().filter(|a| a.as_str() != s.config.advertised()).collect();
    let mut attempts = 0u32;
    while !seeds.is_empty() && s.membership.ring().is_empty() {
        super::run_round(s).await;
        attempts += 1;
        if attempts.is_multiple_of(25) {
            tracing::warn!(node = %s.config.id, seeds = ?seeds, attempts, "still waiting to reach a seed");
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Choose against the future ring: nodes still joining own their tokens too.
    let ring = s.membership.future_ring();
    let first = ring.is_empty();
    let tokens = if s.config.initial_tokens.is_empty() { choose_tokens(&ring, s.config.vnodes) } else { s.config.initial_tokens.clone() };
    let persisted = s.store.meta_put("joining", &!first).and_then(|_| s.store.meta_put("tokens", &tokens));
    if let Err(e) = persisted {
        tracing::error!(error = %e, "cannot persist tokens; not joining");
        return false;
    }
    s.membership.update_me(|m| {
        m.tokens = tokens;
        m.state = if first { NodeState::Normal } else { NodeState::Joining };
    });
    s.save_members();
    if first {
        tracing::info!(node = %s.config.id, "started a new ring");
    }
    true
}

/// Streams every future range of this node from all its live current
/// replicas. Returns the keys merged.
async fn bootstrap(s: &Arc<Shared>) -> Result<u64> {
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
async fn stream_range(s: &Shared, source: &str, start: Token, end: Token, rate: &mut RateLimit) -> Result<u64> {
    let mut after = Vec::new();
    let mut merged = 0;
    loop {
        let req = pb::FetchRangeRequest { start_token: start, end_token: end, start_after: after.clone(), limit: PAGE };
        let page = s.peers.fetch_range(source, req).await?;
        let bytes: usize = page.entries.iter().map(|e| e.key.len() + e.version.len()).sum();
        rate.consume(bytes as u64).await;
        let mut last_ticket = Default::default();
        for e in &page.entries {
            let v: DvvSet = record::decode(&e.key, &e.version)?;
            last_ticket = std::cmp::max(last_ticket, s.store.merge(&e.key, &v)?.ticket);
            merged += 1;
        }
        s.store.durable(last_ticket).await?;
        match (page.more, page.entries.last()) {
            (true, Some(last)) => after = last.key.clone(),
            _ => return Ok(merged),
        }
    }
}

/// Streams this node's ranges to their next owners, goes `left` and
/// cancels `stop` so the process exits. Returns the keys pushed.
pub async fn decommission(s: &Arc<Shared>, stop: CancellationToken) -> Result<pb::DecommissionResponse> {
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
        let (items, _) = s.store.token_range(start, end, Page::unbounded())?;
        for owner in &next {
            for chunk in paging::chunks(&items, PUSH_KEYS, PAGE_BYTES, |(key, version)| key.len() + version.len()) {
                let entries = chunk.iter().map(|(key, version)| pb::KeyVersion { key: key.clone(), version: version.clone() }).collect();
                s.peers.push_keys(owner, pb::PushKeysRequest { from: me.clone(), entries }).await?;
                pushed += chunk.len() as u64;
            }
        }
    }
    s.store.meta_put("left", &true)?;
    s.membership.update_me(|m| m.state = NodeState::Left);
    s.save_members();
    // Spread `left` before stopping.
    for _ in 0..RING_DELAY_ROUNDS {
        super::run_round(s).await;
    }
    tracing::info!(node = %me, keys = pushed, ms = started.elapsed().as_millis() as u64, "decommissioned; stopping");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    Ok(pb::DecommissionResponse { keys_streamed: pushed, duration_ms: started.elapsed().as_millis() as u64 })
}
