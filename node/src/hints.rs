//! Hinted handoff (DESIGN §5): writes kept for a replica that could not
//! take them, and replayed when it comes back.
//!
//! A hint is stored under `target \0 key` in the `hints` tree, as the
//! key's DVVSet plus when it was first stored. A second write to the same
//! key for the same target merges into the same hint, so a long outage
//! costs one hint per distinct key, not one per write.
//!
//! Bounds, so a long outage cannot turn into a hint storm:
//! - no new hints for a target silent longer than `max_hint_window`; it is
//!   left to anti-entropy;
//! - at most `max_hint_bytes_per_target` bytes per target. Past that,
//!   writes are not hinted and a counter says so (back-pressure).
//!
//! - a hint older than `max_hint_window` (counted from when it was first
//!   stored, on the node's `Clock`) is dropped and counted, never replayed.
//!   A delete's tombstone may be purged once `tombstone_grace` has passed,
//!   and a hint that old may still hold the version the delete covered;
//!   replaying it would bring the deleted value back. Anti-entropy, which
//!   compares with every replica, repairs what an expired hint would have.
//!   An expired hint is also not merged into: a new write for the key
//!   starts a fresh hint.
//!
//! Replay runs when the failure detector sees the target up again, and only
//! for a member: an id no member has is never "up" here (`StoreHint`
//! refuses such targets too), so a made-up target is not retried every
//! tick. It pushes
//! the hints in pages with the same merge every replica uses, rate-limited,
//! and deletes a hint only after the target has acknowledged it, and only
//! if the hint has not changed meanwhile. Hints live in storage, so a
//! restart of the holder loses none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::antientropy::sync::RateLimit;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::membership::Membership;
use crate::paging::{self, PAGE_BYTES};
use crate::peer_client::Peers;
use crate::record;
use crate::storage::Tree;
use crate::store::{Store, Ticket};
use crate::version::DvvSet;

/// Most hints pushed per replay message; a page is also cut at
/// [`PAGE_BYTES`], so hints of large values never outgrow a message.
const PAGE: usize = 256;
/// Hint records read from storage at a time while filling a page: few,
/// since the page may take only a few large ones.
const SCAN_BATCH: usize = 16;
/// How often the replay worker looks for targets that came back.
const TICK: Duration = Duration::from_millis(500);

/// One stored hint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hint {
    version: DvvSet,
    /// Wall time (the node's `Clock`) when the hint was first stored; a
    /// merge into it keeps this, so its age covers its oldest content.
    stored_at_ms: u64,
}

/// Whether a hint first stored at `stored_at_ms` is past the window at
/// `now_ms`, and must be dropped instead of replayed. A clock that went
/// backwards makes a hint younger, never expired.
pub fn expired(stored_at_ms: u64, now_ms: u64, window_ms: u64) -> bool {
    now_ms.saturating_sub(stored_at_ms) > window_ms
}

fn hint_key(target: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(target.len() + 1 + key.len());
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

fn split(hk: &[u8]) -> Option<(String, Vec<u8>)> {
    let i = hk.iter().position(|b| *b == 0)?;
    Some((String::from_utf8_lossy(&hk[..i]).into_owned(), hk[i + 1..].to_vec()))
}

/// Pending hints for one target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetHints {
    /// Hints (distinct keys) waiting.
    pub count: u64,
    /// Their stored size.
    pub bytes: u64,
}

/// When a hint may be kept.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long the target has been silent, in ms.
    pub silent_ms: u64,
    /// `max_hint_window`.
    pub window: Duration,
    /// `max_hint_bytes_per_target`.
    pub budget: u64,
}

/// One page of hints: key, version, the stored bytes, when stored.
type Page = Vec<(Vec<u8>, DvvSet, Vec<u8>, u64)>;

/// The hint store and its counters.
pub struct Hints {
    store: Arc<Store>,
    pending: Mutex<BTreeMap<String, TargetHints>>,
    lock: Mutex<()>,
    /// Hints refused because the target was down longer than the window.
    pub dropped_window: AtomicU64,
    /// Hints refused because the target's byte budget was full.
    pub dropped_budget: AtomicU64,
    /// Hints dropped unreplayed because they were older than the window.
    pub expired: AtomicU64,
    /// Hints delivered.
    pub replayed: AtomicU64,
    /// Hints stored (a new hint, or a write merged into a pending one).
    pub stored: AtomicU64,
}

/// What happened to a write offered as a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored; wait on the ticket for durability.
    Yes(Ticket),
    /// Not stored: the target has been down longer than the hint window.
    WindowExpired,
    /// Not stored: the target's hint budget is full.
    BudgetFull,
}

impl Hints {
    /// Opens the hints kept in `store`, counting what is pending.
    pub fn open(store: Arc<Store>) -> Result<Self> {
        let mut pending: BTreeMap<String, TargetHints> = BTreeMap::new();
        let mut cursor = Vec::new();
        let mut inclusive = true;
        loop {
            let rows = store.engine().scan(Tree::Hints, &cursor, inclusive, 1024)?;
            let Some(last) = rows.last().map(|(k, _)| k.clone()) else { break };
            for (hk, v) in rows {
                if let Some((target, _)) = split(&hk) {
                    let t = pending.entry(target).or_default();
                    t.count += 1;
                    t.bytes += v.len() as u64;
                }
            }
            cursor = last;
            inclusive = false;
        }
        Ok(Self {
            store,
            pending: Mutex::new(pending),
            lock: Mutex::new(()),
            dropped_window: AtomicU64::new(0),
            dropped_budget: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        })
    }

    /// Keeps `version` of `key` for `target`, unless the target has been
    /// silent longer than the window or its budget is full.
    pub fn offer(&self, target: &str, key: &[u8], version: &DvvSet, now_ms: u64, limits: Limits) -> Result<Stored> {
        let Limits { silent_ms, window, budget } = limits;
        let window_ms = crate::clock::millis(window);
        if silent_ms > window_ms {
            self.dropped_window.fetch_add(1, Ordering::Relaxed);
            return Ok(Stored::WindowExpired);
        }
        let _guard = self.lock.lock().expect("hints lock");
        let hk = hint_key(target, key);
        let old = self.store.engine().get(Tree::Hints, &hk)?;
        let old_hint: Option<Hint> = old.as_deref().map(|b| record::decode(&hk, b)).transpose()?;
        let hint = match &old_hint {
            Some(h) if !expired(h.stored_at_ms, now_ms, window_ms) => {
                Hint { version: h.version.merged(version), stored_at_ms: h.stored_at_ms }
            }
            Some(_) => {
                // Its old content must never be replayed; the new write starts afresh.
                self.expired.fetch_add(1, Ordering::Relaxed);
                Hint { version: version.clone(), stored_at_ms: now_ms }
            }
            None => Hint { version: version.clone(), stored_at_ms: now_ms },
        };
        let bytes = record::encode(&hint);
        let old_len = old.as_ref().map_or(0, |o| o.len() as u64);
        let mut pending = self.pending.lock().expect("pending lock");
        let t = pending.entry(target.to_string()).or_default();
        if t.bytes - old_len + bytes.len() as u64 > budget {
            self.dropped_budget.fetch_add(1, Ordering::Relaxed);
            return Ok(Stored::BudgetFull);
        }
        let ticket = self.store.put_raw(Tree::Hints, &hk, &bytes)?;
        t.bytes = t.bytes - old_len + bytes.len() as u64;
        if old.is_none() {
            t.count += 1;
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(Stored::Yes(ticket))
    }

    /// Pending hints per target.
    pub fn pending(&self) -> BTreeMap<String, TargetHints> {
        self.pending.lock().expect("pending lock").iter().filter(|(_, t)| t.count > 0).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The first hints for `target` that fit `budget` (at least one):
    /// (key, version, stored bytes, stored at). A hint's stored size stands
    /// for what replay sends: its version, plus a few bytes.
    fn page(&self, target: &str, mut budget: paging::Page) -> Result<Page> {
        let prefix = hint_key(target, b"");
        let (mut cursor, mut inclusive) = (prefix.clone(), true);
        let mut out = Vec::new();
        loop {
            let rows = self.store.engine().scan(Tree::Hints, &cursor, inclusive, SCAN_BATCH)?;
            let full = rows.len() == SCAN_BATCH;
            for (hk, raw) in rows {
                if !hk.starts_with(&prefix) || !budget.admit(hk.len() - prefix.len() + raw.len()) {
                    return Ok(out);
                }
                let hint: Hint = record::decode(&hk, &raw)?;
                cursor.clone_from(&hk);
                out.push((hk[prefix.len()..].to_vec(), hint.version, raw, hint.stored_at_ms));
            }
            if !full {
                return Ok(out);
            }
            inclusive = false;
        }
    }

    /// The oldest pending hint's store time for `target`.
    pub fn oldest_ms(&self, target: &str) -> Result<Option<u64>> {
        let mut oldest = None;
        let prefix = hint_key(target, b"");
        let mut cursor = prefix.clone();
        let mut inclusive = true;
        loop {
            let rows = self.store.engine().scan(Tree::Hints, &cursor, inclusive, 1024)?;
            let Some(last) = rows.last().map(|(k, _)| k.clone()) else { break };
            for (hk, raw) in &rows {
                if !hk.starts_with(&prefix) {
                    return Ok(oldest);
                }
                let hint: Hint = record::decode(hk, raw)?;
                oldest = Some(oldest.map_or(hint.stored_at_ms, |o: u64| o.min(hint.stored_at_ms)));
            }
            cursor = last;
            inclusive = false;
        }
        Ok(oldest)
    }

    /// Drops every hint held for `target` (a node that left or was
    /// removed: it will never take them). Returns how many; they count as
    /// expired.
    pub fn drop_target(&self, target: &str) -> Result<u64> {
        let mut dropped = 0;
        loop {
            let page = self.page(target, paging::Page::new(PAGE, PAGE_BYTES))?;
            if page.is_empty() {
                return Ok(dropped);
            }
            for (key, _, raw, _) in &page {
                self.remove(target, key, raw)?;
            }
            dropped += page.len() as u64;
            self.expired.fetch_add(page.len() as u64, Ordering::Relaxed);
        }
    }

    /// Deletes a delivered hint, unless it changed since it was read.
    fn remove(&self, target: &str, key: &[u8], delivered: &[u8]) -> Result<()> {
        let _guard = self.lock.lock().expect("hints lock");
        let hk = hint_key(target, key);
        if self.store.engine().get(Tree::Hints, &hk)?.as_deref() != Some(delivered) {
            return Ok(());
        }
        self.store.engine().delete(Tree::Hints, &hk)?;
        let mut pending = self.pending.lock().expect("pending lock");
        if let Some(t) = pending.get_mut(target) {
            t.count = t.count.saturating_sub(1);
            t.bytes = t.bytes.saturating_sub(delivered.len() as u64);
        }
        Ok(())
    }
}

/// True when `target` will never take its hints: it left (decommission)
/// or was removed (`removenode`). An id this node has not heard of is not
/// abandoned: after a restart, gossip may not have named it yet.
fn abandoned(membership: &Membership, target: &str) -> bool {
    membership.removed_at(target).is_some() || membership.member(target).is_some_and(|m| m.state == crate::membership::NodeState::Left)
}

/// The replay worker: what it needs of the node, and no more.
pub struct Replayer {
    me: String,
    hints: Arc<Hints>,
    peers: Arc<Peers>,
    membership: Arc<Membership>,
    clock: Arc<dyn Clock>,
    /// `max_hint_window`.
    window: Duration,
    /// `hint_replay_bytes_per_sec`.
    bytes_per_sec: u64,
}

impl Replayer {
    /// A replayer for node `me`'s hints.
    pub fn new(
        me: &str,
        hints: Arc<Hints>,
        peers: Arc<Peers>,
        membership: Arc<Membership>,
        clock: Arc<dyn Clock>,
        config: &Config,
    ) -> Self {
        Self {
            me: me.to_string(),
            hints,
            peers,
            membership,
            clock,
            window: config.max_hint_window,
            bytes_per_sec: config.hint_replay_bytes_per_sec,
        }
    }

    /// Replays every pending hint for `target`; returns how many were
    /// delivered. Hints past `max_hint_window` are dropped (and counted) instead.
    pub async fn replay(&self, target: &str, rate: &mut RateLimit) -> Result<u64> {
        let mut delivered = 0;
        let window_ms = crate::clock::millis(self.window);
        loop {
            let page = self.hints.page(target, paging::Page::new(PAGE, PAGE_BYTES))?;
            if page.is_empty() {
                return Ok(delivered);
            }
            let now_ms = self.clock.wall_ms();
            let (stale, page): (Page, Page) = page.into_iter().partition(|(_, _, _, at)| expired(*at, now_ms, window_ms));
            for (key, _, raw, at) in &stale {
                self.hints.remove(target, key, raw)?;
                self.hints.expired.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %self.me, peer = %target, age_ms = now_ms.saturating_sub(*at), "hint past the window dropped, not replayed");
            }
            if !stale.is_empty() {
                tracing::warn!(node = %self.me, peer = %target, hints = stale.len(), window_ms, "hints older than max_hint_window dropped; anti-entropy repairs those keys");
            }
            if page.is_empty() {
                continue;
            }
            let entries: Vec<pb::KeyVersion> =
                page.iter().map(|(key, v, _, _)| pb::KeyVersion { key: key.clone(), version: record::encode(v) }).collect();
            let bytes: usize = entries.iter().map(|e| e.key.len() + e.version.len()).sum();
            self.peers.push_keys(target, pb::PushKeysRequest { from: self.me.clone(), entries }).await?;
            for (key, _, raw, _) in &page {
                self.hints.remove(target, key, raw)?;
            }
            delivered += page.len() as u64;
            self.hints.replayed.fetch_add(page.len() as u64, Ordering::Relaxed);
            rate.consume(bytes as u64).await;
        }
    }

    /// Replays hints to every target that is up, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            for (target, _) in self.hints.pending() {
                if abandoned(&self.membership, &target) {
                    match self.hints.drop_target(&target) {
                        Ok(n) => {
                            tracing::info!(node = %self.me, peer = %target, hints = n, "hints for a node that left or was removed dropped")
                        }
                        Err(e) => {
                            tracing::warn!(node = %self.me, peer = %target, error = %e, "could not drop the hints of a node that left")
                        }
                    }
                    continue;
                }
                if !self.membership.is_up_member(&target) {
                    continue;
                }
                let mut rate = RateLimit::new(self.bytes_per_sec);
                match self.replay(&target, &mut rate).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(node = %self.me, peer = %target, hints = n, "hints replayed"),
                    Err(e) => tracing::warn!(node = %self.me, peer = %target, error = %e, "hint replay failed; will retry"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::version::{Context, Hlc, Sibling};

    /// A write of `value` coordinated by `node` (distinct nodes: concurrent writes).
    fn version(node: &str, value: &str, wall_ms: u64) -> DvvSet {
        let mut d = DvvSet::default();
        let sib =
            Sibling { hlc: Hlc { wall_ms, logical: 0, node: node.into() }, value: value.into(), tombstone: false, expires_at_ms: None };
        d.update(&Context::new(), node, sib, false).unwrap();
        d
    }

    #[test]
    fn a_hint_expires_only_once_older_than_the_window() {
        let window = 10_000;
        for (stored, now, want) in [
            (1_000, 1_000, false),
            (1_000, 11_000, false), // exactly the window: still replayed
            (1_000, 11_001, true),
            (5_000, 1_000, false), // the clock went back: younger, not expired
            (0, u64::MAX, true),
        ] {
            assert_eq!(expired(stored, now, window), want, "stored {stored}, now {now}");
        }
    }

    #[test]
    fn a_write_to_an_expired_hint_starts_a_fresh_one() {
        let hints =
            Hints::open(Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1)))).unwrap();
        let limits = Limits { silent_ms: 0, window: Duration::from_secs(10), budget: u64::MAX };
        hints.offer("n2", b"k", &version("n1", "old", 1_000), 1_000, limits).unwrap();
        hints.offer("n2", b"k", &version("n3", "newer", 5_000), 5_000, limits).unwrap();
        let page = hints.page("n2", paging::Page::new(10, usize::MAX)).unwrap();
        assert_eq!(page[0].3, 1_000, "a merge keeps the first store time");
        assert_eq!(page[0].1.siblings().len(), 2, "both writes are in the hint");

        hints.offer("n2", b"k", &version("n4", "latest", 20_000), 20_000, limits).unwrap();
        let page = hints.page("n2", paging::Page::new(10, usize::MAX)).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].3, 20_000, "a fresh hint");
        let values: Vec<Vec<u8>> = page[0].1.siblings().iter().map(|s| s.value.clone()).collect();
        assert_eq!(values, vec![b"latest".to_vec()], "nothing older than the window survives");
        assert_eq!(hints.expired.load(Ordering::Relaxed), 1);
    }

    /// Hints for a node that left or was removed were kept forever (noticed
    /// last wave): replay skipped them and nothing else dropped them.
    #[test]
    fn hints_for_a_node_that_left_are_dropped_and_an_unheard_of_node_keeps_them() {
        use crate::membership::{DetectorConfig, Member, Membership, NodeState};
        let hints =
            Hints::open(Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1)))).unwrap();
        let limits = Limits { silent_ms: 0, window: Duration::from_secs(10), budget: u64::MAX };
        for k in 0..300u32 {
            hints.offer("n9", &k.to_be_bytes(), &version("n1", "v", 1_000), 1_000, limits).unwrap();
        }
        let detector = DetectorConfig { threshold: 8.0, interval_ms: 200, pause_ms: 1000 };
        let m = Membership::new(Member { id: "n1".into(), ..Default::default() }, detector);
        assert!(!abandoned(&m, "n9"), "not heard of yet: kept");
        m.merge([Member { id: "n9".into(), state: NodeState::Normal, version: 1, heartbeat: 1, ..Default::default() }]);
        assert!(!abandoned(&m, "n9"), "a member: kept for replay");
        m.merge([Member { id: "n9".into(), state: NodeState::Left, version: 2, heartbeat: 2, ..Default::default() }]);
        assert!(abandoned(&m, "n9"), "left: abandoned");
        assert_eq!(hints.drop_target("n9").unwrap(), 300, "more than one page");
        assert!(hints.pending().is_empty());
        assert_eq!(hints.expired.load(Ordering::Relaxed), 300);
    }
}
