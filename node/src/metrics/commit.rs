//! Group commit, measured: how many writes each engine sync covered, and
//! how long the sync took (DESIGN §8, durability).
//!
//! The store owns one [`CommitMetrics`] (`store/durability.rs` records into
//! it after every sync that acknowledged writes, under `group` and
//! `fsync`); the node registers the same handles with its registry. A
//! batch of 1 under load means the window is too short to gather writes; a
//! sync time near the window means the disk, not the window, sets the pace.

use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The group-commit series of one store.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    batch: Histogram,
    sync: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 1 to 4096 writes per sync.
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 50 µs doubling to 1.6 s: a page-cache sync to a stalled disk.
            sync: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

impl CommitMetrics {
    /// Records one sync that made `writes` writes durable in `took`.
    pub fn synced(&self, writes: u64, took: Duration) {
        self.batch.observe(writes as f64);
        self.sync.observe(took.as_secs_f64());
    }

    /// Registers the series with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringkv_group_commit_batch_writes",
            "Writes made durable by one engine sync (group commit batch size)",
            self.batch.clone(),
        );
        registry.register("ringkv_sync_duration_seconds", "Time one engine sync (fdatasync) took", self.sync.clone());
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn a_sync_lands_in_the_batch_and_latency_buckets() {
        let m = CommitMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.synced(3, Duration::from_micros(70));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"ringkv_group_commit_batch_writes_bucket{le="2.0"} 0"#), "{text}");
        assert!(text.contains(r#"ringkv_group_commit_batch_writes_bucket{le="4.0"} 1"#), "{text}");
        assert!(text.contains("ringkv_group_commit_batch_writes_sum 3.0"), "{text}");
        assert!(text.contains(r#"ringkv_sync_duration_seconds_bucket{le="0.0001"} 1"#), "{text}");
    }
}
