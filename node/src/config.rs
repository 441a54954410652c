//! Node configuration. Only the binary reads files and flags; this crate
//! takes the finished struct. Every field has a default, documented here and
//! in `config/node.example.toml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::ENGINES;

/// When a write counts as stored on this replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acknowledging each write.
    Fsync,
    /// fdatasync every `group_commit_ms`; acknowledge after the sync that
    /// covers the write. One sync serves many writes.
    #[default]
    Group,
    /// Acknowledge once the engine has the write in memory.
    None,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Group => "group",
            Durability::None => "none",
        })
    }
}

/// Everything a node needs to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unique node id, e.g. `n1`. Stored in the data dir; a mismatch refuses to start.
    pub id: String,
    /// Address the gRPC server binds, e.g. `127.0.0.1:7101`.
    pub listen: String,
    /// Address other nodes and clients use; defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory for the storage engine.
    pub data_dir: PathBuf,
    /// Addresses of nodes to join through; empty starts a new cluster.
    pub seeds: Vec<String>,
    /// Zone (rack or data centre) of this node.
    pub zone: String,
    /// Replicas per key (N).
    pub replication_factor: usize,
    /// Tokens this node owns on the ring.
    pub vnodes: usize,
    /// Tokens to take on first start instead of choosing them (like
    /// Cassandra's `initial_token`); empty chooses `vnodes` tokens that
    /// minimise skew. Ignored once the node has stored tokens.
    pub initial_tokens: Vec<u64>,
    /// Storage engine: `redb`, `sled`, `fjall` or `memory`.
    pub storage: String,
    /// Put a commit log in front of a disk engine: an acknowledged write is
    /// one append plus a share of one fdatasync, and the engine is made
    /// durable only at checkpoints (`storage/commitlog.rs`).
    pub commit_log: bool,
    /// When a write counts as stored: `fsync`, `group` or `none`.
    pub durability: Durability,
    /// Group commit window in milliseconds.
    pub group_commit_ms: u64,
    /// Remote timestamps further ahead of the local clock are rejected.
    pub max_clock_skew_ms: u64,
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Default deadline for a client request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Deadline for one message to a peer, in milliseconds.
    pub peer_timeout_ms: u64,
    /// Gossip and liveness probe period, in milliseconds.
    pub gossip_interval_ms: u64,
    /// Phi-accrual conviction threshold: a peer is down above it.
    pub phi_threshold: f64,
    /// Heartbeat pause tolerated beyond the mean interval, in milliseconds.
    pub heartbeat_pause_ms: u64,
    /// Seed for the node's RNG (peer choice, fault drops); random when unset.
    pub rng_seed: Option<u64>,
    /// Seconds between scheduled anti-entropy passes; 0 turns the schedule
    /// off (`ringkv repair` still works).
    pub anti_entropy_interval: u64,
    /// Byte-rate limit for anti-entropy traffic started by this node; 0 is unlimited.
    pub anti_entropy_bytes_per_sec: u64,
    /// Seconds a tombstone is kept before repair may purge it (once every
    /// replica of its range holds it).
    pub tombstone_grace: u64,
    /// Seconds the ring must stay settled (no node joining or leaving, and
    /// no change at all) before this node drops the data of ranges it no
    /// longer replicates (`antientropy/cleanup.rs`); 0 turns automatic
    /// cleanup off (`ringkv cleanup` still works).
    pub cleanup_delay: u64,
    /// Hinted handoff: keep writes for replicas that are down and replay them.
    pub hinted_handoff: bool,
    /// Seconds a replica may be silent and still get new hints; after that
    /// it is left to anti-entropy.
    pub max_hint_window: u64,
    /// Largest total size of hints kept for one target, in bytes.
    pub max_hint_bytes_per_target: u64,
    /// Byte-rate limit for hint replay; 0 is unlimited.
    pub hint_replay_bytes_per_sec: u64,
    /// Speculative-retry delay, in ms, for a replica with too few latency
    /// samples to have a p99 yet.
    pub speculative_retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: "n1".into(),
            listen: "127.0.0.1:7101".into(),
            advertise: None,
            data_dir: PathBuf::from("ringkv-data"),
            seeds: Vec::new(),
            zone: "default".into(),
            replication_factor: 3,
            vnodes: 16,
            initial_tokens: Vec::new(),
            storage: "fjall".into(),
            commit_log: true,
            durability: Durability::Group,
            group_commit_ms: 1,
            max_clock_skew_ms: 500,
            max_key_bytes: 64 * 1024,
            max_value_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 2000,
            peer_timeout_ms: 1000,
            gossip_interval_ms: 1000,
            rng_seed: None,
            phi_threshold: 8.0,
            heartbeat_pause_ms: 3000,
            anti_entropy_interval: 600,
            anti_entropy_bytes_per_sec: 16 * 1024 * 1024,
            tombstone_grace: 10 * 24 * 3600,
            cleanup_delay: 600,
            hinted_handoff: true,
            max_hint_window: 3 * 3600,
            max_hint_bytes_per_target: 64 * 1024 * 1024,
            hint_replay_bytes_per_sec: 4 * 1024 * 1024,
            speculative_retry_ms: 20,
        }
    }
}

impl Config {
    /// The address peers and clients should use.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Rejects settings the node cannot run with, saying which and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.id.is_empty() || self.id.chars().any(|c| c.is_whitespace() || c == ',') {
            return bad(format!("id {:?} must be non-empty, without spaces or commas", self.id));
        }
        if self.replication_factor == 0 {
            return bad("replication_factor must be at least 1".into());
        }
        if self.vnodes == 0 || self.vnodes > 1024 {
            return bad(format!("vnodes is {}; it must be between 1 and 1024", self.vnodes));
        }
        if !ENGINES.contains(&self.storage.as_str()) {
            return bad(format!("storage {:?} is not one of {}", self.storage, ENGINES.join(", ")));
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return bad("max_key_bytes and max_value_bytes must be positive".into());
        }
        if self.request_timeout_ms == 0 || self.peer_timeout_ms == 0 || self.gossip_interval_ms == 0 {
            return bad("request_timeout_ms, peer_timeout_ms and gossip_interval_ms must be positive".into());
        }
        if self.phi_threshold.is_nan() || self.phi_threshold <= 0.0 {
            return bad(format!("phi_threshold is {}; it must be positive", self.phi_threshold));
        }
        Ok(())
    }
}
