//! The series read at scrape time from what the node already keeps.
//!
//! Peers' liveness and phi (the failure detector, `membership/detector.rs`),
//! their clock offsets (sampled in every gossip exchange), hints (the
//! counters and pending totals `hints.rs` keeps for `ringkv hints`),
//! anti-entropy's counters (`antientropy/pass.rs`, also in `ringkv
//! status`), keys stored (counted by the store on every write) and the data
//! dir's size on disk. Reading them when Prometheus asks costs the write
//! path nothing, and the numbers are the same ones the CLI shows.
//!
//! Per-peer series carry a `peer` (or `target`) label: one per member, a
//! bounded set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio_util::sync::CancellationToken;

use super::readiness::readiness;
use crate::antientropy;
use crate::hints::Hints;
use crate::membership::{Membership, NodeState};
use crate::store::Store;

/// Reads one node's state into series on every scrape.
pub struct NodeCollector {
    /// The node's view of the cluster.
    pub membership: Arc<Membership>,
    /// Its hint store and counters.
    pub hints: Arc<Hints>,
    /// Anti-entropy's counters.
    pub anti_entropy: Arc<antientropy::Stats>,
    /// Its replica store.
    pub store: Arc<Store>,
    /// Client requests being served now.
    pub in_flight: Arc<AtomicU64>,
    /// Its data directory, measured on disk; `None` for in-memory storage.
    pub data_dir: Option<PathBuf>,
    /// The node's shutdown token (a stopping node is not ready).
    pub shutdown: CancellationToken,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").field("node", &self.membership.me()).finish_non_exhaustive()
    }
}

/// One unlabelled gauge.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One unlabelled counter (`name` gets `_total`).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A family of series of one type, one per label set.
fn family<L: EncodeLabelSet>(enc: &mut DescriptorEncoder, name: &str, help: &str, kind: MetricType, rows: &[(L, f64)]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        match kind {
            MetricType::Counter => ConstCounter::new(*value as u64).encode(m.encode_family(labels)?)?,
            _ => ConstGauge::new(*value).encode(m.encode_family(labels)?)?,
        }
    }
    Ok(())
}

/// Bytes the files under `dir` take on disk, as `du` counts them (blocks
/// allocated, so fjall's preallocated, mostly sparse 64 MiB journal counts
/// for what it holds), following no links; unreadable entries count as 0
/// (a file compacted away mid-walk, say).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| allocated(&m)),
            _ => 0,
        })
        .sum()
}

#[cfg(unix)]
fn allocated(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // `st_blocks` is in 512-byte units whatever the file system's block size.
    m.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(m: &std::fs::Metadata) -> u64 {
    m.len()
}

impl NodeCollector {
    fn peers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let me = self.membership.me();
        let members = self.membership.members();
        let peers: Vec<&str> = members.iter().filter(|m| m.id != me && m.state != NodeState::Left).map(|m| m.id.as_str()).collect();
        let up: Vec<([(&str, &str); 1], f64)> =
            peers.iter().map(|p| ([("peer", *p)], if self.membership.is_up(p) { 1.0 } else { 0.0 })).collect();
        family(
            enc,
            "ringkv_peer_up",
            "1 while this node's failure detector counts the peer up (phi under the threshold, reachable)",
            MetricType::Gauge,
            &up,
        )?;
        let phi: Vec<([(&str, &str); 1], f64)> = peers.iter().map(|p| ([("peer", *p)], self.membership.phi(p))).collect();
        family(enc, "ringkv_peer_phi", "The phi accrual failure detector's suspicion of the peer", MetricType::Gauge, &phi)?;
        let offsets = self.membership.offsets();
        let offsets: Vec<([(&str, &str); 1], f64)> = offsets
            .iter()
            .filter(|(id, _)| peers.contains(&id.as_str()))
            .map(|(id, ms)| ([("peer", id.as_str())], *ms as f64 / 1000.0))
            .collect();
        family(
            enc,
            "ringkv_peer_clock_offset_seconds",
            "The peer's wall clock minus this node's, from the last gossip exchange",
            MetricType::Gauge,
            &offsets,
        )?;
        let states = [NodeState::Joining, NodeState::Normal, NodeState::Leaving, NodeState::Left];
        let by_state: Vec<([(&str, &str); 1], f64)> =
            states.iter().map(|s| ([("state", s.as_str())], members.iter().filter(|m| m.state == *s).count() as f64)).collect();
        family(enc, "ringkv_members", "Members this node knows of, itself included, by state", MetricType::Gauge, &by_state)
    }

    fn hints(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let h = &self.hints;
        counter(
            enc,
            "ringkv_hints_stored",
            "Hints stored on this node (for a down replica, or as a sloppy-quorum stand-in)",
            h.stored.load(Ordering::Relaxed),
        )?;
        counter(enc, "ringkv_hints_replayed", "Hints delivered to their target and deleted", h.replayed.load(Ordering::Relaxed))?;
        let dropped = [
            ([("reason", "window")], h.dropped_window.load(Ordering::Relaxed) as f64),
            ([("reason", "budget")], h.dropped_budget.load(Ordering::Relaxed) as f64),
            ([("reason", "expired")], h.expired.load(Ordering::Relaxed) as f64),
        ];
        family(
            enc,
            "ringkv_hints_dropped",
            "Hints not kept or not replayed: target silent past the window, byte budget full, or older than the window",
            MetricType::Counter,
            &dropped,
        )?;
        let pending = h.pending();
        let count: Vec<([(&str, &str); 1], f64)> = pending.iter().map(|(t, p)| ([("target", t.as_str())], p.count as f64)).collect();
        family(enc, "ringkv_hints_pending", "Hints (distinct keys) waiting for their target", MetricType::Gauge, &count)?;
        let bytes: Vec<([(&str, &str); 1], f64)> = pending.iter().map(|(t, p)| ([("target", t.as_str())], p.bytes as f64)).collect();
        family(enc, "ringkv_hints_pending_bytes", "Stored bytes of the hints waiting for their target", MetricType::Gauge, &bytes)
    }

    fn anti_entropy(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = self.anti_entropy.snapshot(&self.store.trees());
        counter(enc, "ringkv_antientropy_passes", "Anti-entropy passes run (scheduled and `ringkv repair`)", s.passes)?;
        counter(enc, "ringkv_antientropy_ranges_checked", "Range syncs run with a replica", s.ranges_checked)?;
        counter(enc, "ringkv_antientropy_ranges_out_of_sync", "Range syncs that found the Merkle trees different", s.ranges_out_of_sync)?;
        counter(enc, "ringkv_antientropy_keys_repaired", "Keys fetched or pushed by anti-entropy", s.keys_repaired)?;
        let bytes = [([("direction", "sent")], s.bytes_sent as f64), ([("direction", "received")], s.bytes_received as f64)];
        family(enc, "ringkv_antientropy_bytes", "Bytes anti-entropy exchanged with replicas", MetricType::Counter, &bytes)?;
        counter(enc, "ringkv_antientropy_tombstones_purged", "Tombstones purged after their grace", s.tombstones_purged)?;
        counter(enc, "ringkv_cleanup_keys_dropped", "Keys of ranges no longer replicated here, dropped by cleanup", s.keys_cleaned)?;
        let healed = self.anti_entropy.trees_healed();
        counter(
            enc,
            "ringkv_merkle_trees_healed",
            "Range trees rebuilt because anti-entropy found them disagreeing with the stored data",
            healed,
        )?;
        gauge(enc, "ringkv_merkle_trees_ready", "Merkle trees built (anti-entropy waits for the rest)", f64::from(s.trees_ready))?;
        gauge(enc, "ringkv_merkle_trees", "Merkle trees this node keeps (one per range it replicates)", f64::from(s.trees_total))
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let me = self.membership.member(self.membership.me());
        let ready = readiness(me.as_ref(), self.shutdown.is_cancelled()).is_ready();
        gauge(
            &mut enc,
            "ringkv_ready",
            "1 while this node serves clients (normal in the ring); /readyz says why not",
            if ready { 1.0 } else { 0.0 },
        )?;
        gauge(&mut enc, "ringkv_requests_in_flight", "Client requests being served now", self.in_flight.load(Ordering::Relaxed) as f64)?;
        // `len` reads a counter the store keeps; it cannot fail today.
        let keys = self.store.len().unwrap_or(0);
        gauge(&mut enc, "ringkv_stored_keys", "Keys in this node's data tree, tombstones included", keys as f64)?;
        if let Some(dir) = &self.data_dir {
            gauge(
                &mut enc,
                "ringkv_stored_bytes",
                "Bytes the data dir takes on disk: every tree, journal and commit log",
                dir_bytes(dir) as f64,
            )?;
        }
        self.peers(&mut enc)?;
        self.hints(&mut enc)?;
        self.anti_entropy(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_adds_up_what_nested_files_hold_on_disk_not_their_sparse_length() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), vec![7u8; 50_000]).unwrap();
        let written = dir_bytes(dir.path());
        assert!((150_000..200_000).contains(&written), "both files, rounded up to blocks: {written}");
        // A preallocated journal: 64 MiB long, nothing written.
        std::fs::File::create(dir.path().join("sparse")).unwrap().set_len(64 << 20).unwrap();
        assert!(dir_bytes(dir.path()) < written + (1 << 20), "a sparse file counts for its blocks, not its length");
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}
