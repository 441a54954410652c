//! Anti-entropy passes: every range this node replicates, synced with each
//! of its other replicas; the schedule that runs them; tombstone GC;
//! rebuilding the trees when the ring changes; and starting the automatic
//! cleanup (`cleanup.rs`) once the ring has settled.
//!
//! A pass syncs a range with each peer in turn, then goes round once more
//! if anything changed. The first round brings this node to the union of
//! all replicas, and the second pushes that union to the peers synced
//! before the last change. A range found identical on every one of its
//! replicas in the final round may drop tombstones older than
//! `tombstone_grace`. Every replica drops the same ones (this node tells
//! the peers the cutoff), so a delete cannot be undone by a replica that
//! missed it: none did, or the range would not have been identical.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cleanup::{run_cleanup, Schedule};
use super::merkle::in_range;
use super::sync::{sync_range, RateLimit, SyncPeer};
use super::Trees;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::handles::Handles;
use crate::record;
use crate::ring::Token;
use crate::store::Store;
use crate::version::DvvSet;

/// How often the worker checks for ring changes and due passes.
const TICK: Duration = Duration::from_millis(500);
/// How long a pass waits for a peer's tree that is still building.
const NOT_READY_RETRIES: u32 = 40;

/// Counters since start, shown by `ringkv status`.
#[derive(Default)]
pub struct Stats {
    passes: AtomicU64,
    ranges_checked: AtomicU64,
    ranges_out_of_sync: AtomicU64,
    keys_repaired: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    tombstones_purged: AtomicU64,
    keys_cleaned: AtomicU64,
    trees_healed: AtomicU64,
}

impl Stats {
    /// Counts keys dropped by a cleanup (`cleanup.rs`).
    pub fn cleaned(&self, keys: u64) {
        self.keys_cleaned.fetch_add(keys, Ordering::Relaxed);
    }

    /// Merkle trees rebuilt because they disagreed with the stored data
    /// ([`Store::heal_tree`](crate::store::Store::heal_tree)).
    pub fn trees_healed(&self) -> u64 {
        self.trees_healed.load(Ordering::Relaxed)
    }

    fn add(&self, r: &pb::RepairReport) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.ranges_checked.fetch_add(r.ranges_checked, Ordering::Relaxed);
        self.ranges_out_of_sync.fetch_add(r.ranges_out_of_sync, Ordering::Relaxed);
        self.keys_repaired.fetch_add(r.keys_repaired, Ordering::Relaxed);
        self.bytes_sent.fetch_add(r.bytes_sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(r.bytes_received, Ordering::Relaxed);
        self.tombstones_purged.fetch_add(r.tombstones_purged, Ordering::Relaxed);
    }

    /// A snapshot for the wire.
    pub fn snapshot(&self, trees: &Trees) -> pb::AntiEntropyStats {
        let (ready, total) = trees.readiness();
        pb::AntiEntropyStats {
            passes: self.passes.load(Ordering::Relaxed),
            ranges_checked: self.ranges_checked.load(Ordering::Relaxed),
            ranges_out_of_sync: self.ranges_out_of_sync.load(Ordering::Relaxed),
            keys_repaired: self.keys_repaired.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            tombstones_purged: self.tombstones_purged.load(Ordering::Relaxed),
            trees_ready: ready,
            trees_total: total,
            keys_cleaned: self.keys_cleaned.load(Ordering::Relaxed),
        }
    }
}

/// What a repair pass, a cleanup and the worker need of the node: the
/// shared handles, the wall clock (tombstone GC) and the counters.
#[derive(Clone)]
pub struct Repair {
    /// Config, store, membership, peers, shutdown.
    pub h: Handles,
    /// The node's wall clock.
    pub clock: Arc<dyn Clock>,
    /// Anti-entropy counters, reported by `status`.
    pub stats: Arc<Stats>,
}

/// A remote replica as a sync peer.
struct Remote<'a> {
    s: &'a Handles,
    id: &'a str,
}

impl SyncPeer for Remote<'_> {
    fn name(&self) -> &str {
        self.id
    }
    async fn merkle_nodes(&self, req: pb::MerkleNodesRequest) -> Result<pb::MerkleNodesResponse> {
        self.s.peers.merkle_nodes(self.id, req).await
    }
    async fn leaf_digest(&self, req: pb::LeafDigestRequest) -> Result<pb::LeafDigestResponse> {
        self.s.peers.leaf_digest(self.id, req).await
    }
    async fn fetch_keys(&self, req: pb::FetchKeysRequest) -> Result<pb::KeyVersions> {
        self.s.peers.fetch_keys(self.id, req).await
    }
    async fn push_keys(&self, req: pb::PushKeysRequest) -> Result<pb::PushKeysResponse> {
        self.s.peers.push_keys(self.id, req).await
    }
}

/// Tombstone GC over `(start, end]`: first turns the values expired by
/// `now_ms` into tombstones (a merge with `DvvSet::expired_at`, so a write
/// racing it is kept), then drops the keys [`DvvSet::purgeable`] at
/// `cutoff_wall_ms`: every sibling dead (deleted, or expired, converted or
/// not) since before it. Returns how many keys were dropped.
pub fn purge_tombstones(store: &Store, start: Token, end: Token, cutoff_wall_ms: u64, now_ms: u64) -> Result<u32> {
    let mut purged = 0;
    store.for_each_in_range(start, end, |key, raw| {
        let mut v: DvvSet = record::decode(key, raw)?;
        let mut raw = std::borrow::Cow::Borrowed(raw);
        if v.has_expired(now_ms) {
            v = store.merge(key, &v.expired_at(now_ms))?.version;
            raw = record::encode(&v).into();
        }
        if v.purgeable(cutoff_wall_ms) && store.purge(key, &raw)? {
            purged += 1;
        }
        Ok(())
    })?;
    Ok(purged)
}

/// Runs one pass over every range this node replicates, or only over those
/// overlapping `only` (a token interval `(start, end]`).
pub async fn run_pass(r: &Repair, only: Option<(Token, Token)>) -> pb::RepairReport {
    let s = &r.h;
    let started = Instant::now();
    let me = s.config.id.clone();
    let mut report = pb::RepairReport { node: me.clone(), ..Default::default() };
    let ring = s.membership.ring();
    let trees = s.store.trees();
    let mut rate = RateLimit::new(s.config.anti_entropy_bytes_per_sec);
    let wanted = |(a, b): (Token, Token)| only.is_none_or(|(c, d)| in_range(b, c, d) || in_range(d, a, b));
    for (start, end) in trees.ranges().into_iter().filter(|r| wanted(*r)) {
        let peers: Vec<String> = ring.replicas_of(end, s.config.replication_factor).into_iter().filter(|p| *p != me).collect();
        report.ranges_checked += 1;
        let mut out_of_sync = false;
        let mut everyone_equal = false;
        for round in 0..2 {
            let mut changed = false;
            everyone_equal = true;
            for peer in &peers {
                if !s.membership.is_up(peer) {
                    report.errors.push(format!("range ({start}, {end}]: {peer} is down"));
                    everyone_equal = false;
                    continue;
                }
                match sync_with_retry(s, start, end, peer, &mut rate).await {
                    Ok(mut o) => {
                        if !o.suspect_leaves.is_empty() {
                            heal(r, start, end, std::mem::take(&mut o.suspect_leaves)).await;
                        }
                        report.bytes_sent += o.bytes_sent;
                        report.bytes_received += o.bytes_received;
                        report.keys_repaired += o.keys_repaired;
                        changed |= o.keys_repaired > 0;
                        if !o.equal {
                            everyone_equal = false;
                            if round == 0 {
                                out_of_sync = true;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %me, peer = %peer, range = %format!("({start}, {end}]"), error = %e, "range sync failed");
                        report.errors.push(format!("range ({start}, {end}] with {peer}: {e}"));
                        everyone_equal = false;
                    }
                }
            }
            if !changed || peers.len() < 2 {
                break;
            }
        }
        if out_of_sync {
            report.ranges_out_of_sync += 1;
        }
        if everyone_equal {
            report.tombstones_purged += gc(r, start, end, &peers).await;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    r.stats.add(&report);
    tracing::info!(
        node = %me, ranges = report.ranges_checked, out_of_sync = report.ranges_out_of_sync,
        keys_repaired = report.keys_repaired, bytes_sent = report.bytes_sent, errors = report.errors.len(), "anti-entropy pass done"
    );
    report
}

async fn sync_with_retry(s: &Handles, start: Token, end: Token, peer: &str, rate: &mut RateLimit) -> Result<super::sync::RangeOutcome> {
    let mut attempt = 0;
    loop {
        match sync_range(&s.store, &s.admit, start, end, &Remote { s, id: peer }, &s.config.id, rate).await {
            Err(Error::TreeNotReady { .. }) if attempt < NOT_READY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Leaves that differed from a peer's while every key matched: if this
/// node's tree is the wrong one, it is rebuilt from the data (the peer
/// checks its own in its own pass).
async fn heal(r: &Repair, start: Token, end: Token, leaves: Vec<u32>) {
    match r.h.store.offload(move |store| store.heal_tree(start, end, &leaves)).await {
        Ok(rebuilt) => {
            r.stats.trees_healed.fetch_add(u64::from(rebuilt), Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(range = %format!("({start}, {end}]"), error = %e, "checking a Merkle tree against its data failed"),
    }
}

/// Tombstone GC for a range every replica holds identically.
async fn gc(r: &Repair, start: Token, end: Token, peers: &[String]) -> u64 {
    let s = &r.h;
    let now = r.clock.wall_ms();
    let cutoff = now.saturating_sub(crate::clock::millis(s.config.tombstone_grace));
    let mut purged = match s.store.offload(move |store| purge_tombstones(store, start, end, cutoff, now)).await {
        Ok(n) => u64::from(n),
        Err(e) => {
            tracing::warn!(error = %e, "tombstone purge failed");
            return 0;
        }
    };
    for peer in peers {
        let req = pb::PurgeRequest { range: Some(pb::RangeRef { start, end }), cutoff_wall_ms: cutoff };
        match s.peers.purge(peer, req).await {
            Ok(r) => purged += u64::from(r.purged),
            Err(e) => tracing::debug!(peer = %peer, error = %e, "peer purge failed; a later pass retries"),
        }
    }
    purged
}

/// Keeps the trees matching the ring, and runs a pass every
/// `anti_entropy_interval` (never when it is zero).
pub async fn run_worker(r: Repair, shutdown: CancellationToken) {
    let s = &r.h;
    let (interval, cleanup_delay) = (s.config.anti_entropy_interval, s.config.cleanup_delay);
    let mut last_pass = Instant::now();
    let mut cleanup = Schedule::new(s.membership.ring(), s.membership.future_ring(), Instant::now());
    loop {
        let want = Trees::ranges_of(&s.membership.ring(), &s.config.id, s.config.replication_factor);
        if !want.is_empty() && want != s.store.trees().ranges() {
            let started = Instant::now();
            let store = s.store.clone();
            let count = want.len();
            let result = if store.engine().blocking() {
                tokio::task::spawn_blocking(move || store.rebuild_trees(want))
                    .await
                    .unwrap_or_else(|e| Err(crate::Error::Storage(e.to_string())))
            } else {
                store.rebuild_trees(want)
            };
            match result {
                Ok(()) => {
                    tracing::info!(node = %s.config.id, ranges = count, ms = started.elapsed().as_millis() as u64, "Merkle trees built")
                }
                Err(e) => tracing::error!(node = %s.config.id, error = %e, "Merkle tree rebuild failed"),
            }
        }
        if cleanup.due(&s.membership.ring(), &s.membership.future_ring(), Instant::now(), cleanup_delay) {
            if let Err(e) = run_cleanup(&r).await {
                tracing::info!(node = %s.config.id, error = %e, "automatic cleanup skipped");
            }
        }
        if !interval.is_zero() && last_pass.elapsed() >= interval {
            run_pass(&r, None).await;
            last_pass = Instant::now();
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::storage::MemoryStorage;
    use crate::version::{Context, Hlc, Sibling};

    #[test]
    fn gc_converts_expired_values_then_purges_them_once_the_grace_has_passed_since_the_expiry() {
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
        let hlc = Hlc { wall_ms: 1_000, logical: 0, node: "n1".into() };
        let ttl = Sibling { expires_at_ms: Some(3_000), ..Sibling::value(hlc.clone(), b"v".to_vec()) };
        store.update(b"ttl", |d| d.update(&Context::new(), "n1", ttl, true)).unwrap();
        store.update(b"kept", |d| d.update(&Context::new(), "n1", Sibling::value(hlc, b"k".to_vec()), true)).unwrap();
        let whole_ring = (0, 0);
        let gc = |cutoff, now| purge_tombstones(&store, whole_ring.0, whole_ring.1, cutoff, now).unwrap();

        assert_eq!(gc(2_999, 2_999), 0);
        assert!(!store.read(b"ttl").unwrap().unwrap().siblings()[0].tombstone, "not expired yet: untouched");
        assert_eq!(gc(2_999, 3_000), 0, "expired, but dead only since the cutoff's future");
        let converted = store.read(b"ttl").unwrap().unwrap();
        assert!(converted.siblings()[0].tombstone && converted.siblings()[0].value.is_empty(), "{converted:?}");
        assert_eq!(gc(3_000, 9_000), 1, "dead since the cutoff: purged");
        assert!(store.read(b"ttl").unwrap().is_none());
        assert!(store.read(b"kept").unwrap().is_some(), "a value with no expiry is never GC'd");
    }
}
