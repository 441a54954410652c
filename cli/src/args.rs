//! Command-line flags (clap derive). Every command takes `--json` and
//! `--endpoints`; `serve` takes one flag per config field.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringkv_client::parse_duration;

/// ringkv: a Dynamo-style replicated key-value store with per-request consistency.
#[derive(Parser, Debug)]
#[command(name = "ringkv", version, about, propagate_version = true)]
pub struct Cli {
    /// Comma-separated node addresses to talk to.
    #[arg(long, global = true, env = "RINGKV_ENDPOINTS", default_value = "127.0.0.1:7101", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Which node coordinates each request: endpoints (in the order given), round-robin,
    /// weighted, least-outstanding, least-latency, sticky, token-aware, bounded-load
    /// (ε = 0.25; bounded-load:EPS sets ε), dynamic-load, or zone-aware:ZONE.
    #[arg(long, global = true, env = "RINGKV_POLICY", default_value = "endpoints", value_parser = parse_policy)]
    pub policy: String,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_policy(s: &str) -> Result<String, String> {
    const NAMES: [&str; 9] = [
        "endpoints",
        "round-robin",
        "weighted",
        "least-outstanding",
        "least-latency",
        "sticky",
        "token-aware",
        "bounded-load",
        "dynamic-load",
    ];
    let epsilon_ok = s.strip_prefix("bounded-load:").map(|e| e.parse::<f64>().is_ok_and(|e| e >= 0.0 && e.is_finite()));
    if epsilon_ok == Some(false) {
        return Err(format!("{s:?}: ε in bounded-load:EPS must be a number ≥ 0, e.g. bounded-load:0.25"));
    }
    if NAMES.contains(&s) || epsilon_ok == Some(true) || s.strip_prefix("zone-aware:").is_some_and(|z| !z.is_empty()) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown policy {s:?}; expected one of {}, bounded-load:EPS, or zone-aware:ZONE", NAMES.join(", ")))
    }
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{s:?} is not START:END"))?;
    let tok = |t: &str| t.trim().parse::<u64>().map_err(|e| format!("token {t:?}: {e}"));
    Ok((tok(a)?, tok(b)?))
}

/// A consistency level.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum LevelArg {
    One,
    Two,
    Quorum,
    All,
    /// A quorum of the replicas in the coordinator's zone.
    #[value(name = "local_quorum")]
    LocalQuorum,
    /// Writes only: any node, hint holders included.
    Any,
}

/// A switch.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum OnOff {
    On,
    Off,
}

/// A read-repair mode.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum RepairArg {
    Blocking,
    Async,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct RequestArgs {
    /// Consistency level.
    #[arg(short = 'c', long = "consistency", value_enum, default_value = "quorum")]
    pub level: LevelArg,
    /// Deadline for the whole request, e.g. 500ms or 2s (default: the node's request_timeout_ms).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Writes: let healthy nodes beyond the preference list stand in for down replicas.
    #[arg(long)]
    pub sloppy: bool,
    /// Print the receipt: replicas asked and answered, latencies, stale replicas, repairs.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node in the foreground.
    Serve(Box<ServeArgs>),
    /// Run a local cluster of N nodes as child processes; Ctrl-C stops them all.
    Cluster(ClusterArgs),
    /// Start a throwaway 3-node cluster and walk through the PACELC trade-offs.
    Demo(DemoArgs),
    /// Write a value (read from stdin when VALUE is omitted).
    Put {
        key: String,
        value: Option<String>,
        /// Causal context from a previous `get --json` (base64); omit for a blind LWW write.
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        req: RequestArgs,
    },
    /// Read a key: every live sibling.
    Get {
        key: String,
        /// Read repair: blocking, async or off.
        #[arg(long, value_enum, default_value = "blocking")]
        read_repair: RepairArg,
        #[command(flatten)]
        req: RequestArgs,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        key: String,
        /// Causal context from a previous `get --json` (base64).
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        req: RequestArgs,
    },
    /// List keys and values under a prefix.
    Scan {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Resume after this key.
        #[arg(long, default_value = "")]
        start_after: String,
        /// At most this many keys per page.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        req: RequestArgs,
    },
    /// Nodes, state, zone, liveness and ownership as one node sees them.
    Status,
    /// Tokens and ownership per node, and skew (max / mean).
    Ring,
    /// Each replica's stored siblings and HLC timestamps, side by side. Never repairs.
    Inspect { key: String },
    /// Run an anti-entropy pass now (Merkle sync of every range with its replicas) and report.
    Repair {
        /// Only this node's pass (default: every node, one after another).
        #[arg(long)]
        node: Option<String>,
        /// Only ranges overlapping the token interval START:END, exclusive start, inclusive end
        /// (tokens as `ringkv ring --json` lists them).
        #[arg(long, value_parser = parse_range)]
        range: Option<(u64, u64)>,
    },
    /// Drop the data of ranges a node no longer replicates (after a join moved them away), and
    /// report. Nodes also do it by themselves once the ring has been settled for `cleanup_delay`.
    Cleanup {
        /// Only this node (default: every node, one after another).
        #[arg(long)]
        node: Option<String>,
    },
    /// Hints held for down replicas, per target, on every node.
    Hints,
    /// Stream a node's ranges to their next owners, then stop it.
    Decommission {
        /// The node to decommission.
        #[arg(long)]
        node: String,
    },
    /// Remove a dead node from the ring, then re-replicate its ranges (runs a repair).
    Removenode {
        /// The dead node's id.
        id: String,
    },
    /// YCSB-style load: workloads a, b, c, write and ping, with percentiles and coordinator skew.
    Bench(BenchArgs),
    /// Inject or clear faults on peer links (block, delay, drop).
    Fault {
        #[command(subcommand)]
        action: FaultAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum FaultAction {
    /// Cut a node off: no peer traffic to or from it (or only one way with --from/--to).
    Block(FaultTarget),
    /// Delay peer traffic to and from a node.
    Delay {
        #[command(flatten)]
        target: FaultTarget,
        /// Added delay per message, in milliseconds.
        #[arg(long)]
        ms: u32,
    },
    /// Drop a fraction of peer messages to and from a node.
    Drop {
        #[command(flatten)]
        target: FaultTarget,
        /// Fraction dropped, 0..1.
        #[arg(long)]
        fraction: f64,
    },
    /// Shift one node's wall clock (its HLC still never goes backwards).
    Clock {
        /// The node whose clock moves.
        #[arg(long)]
        node: String,
        /// Offset from the system clock in ms (negative is behind); 0 undoes it.
        #[arg(long, allow_hyphen_values = true)]
        offset_ms: i64,
    },
    /// Remove every fault rule on every node (clock offsets stay; set them to 0).
    Clear,
}

#[derive(Args, Debug, Clone)]
pub struct FaultTarget {
    /// The node to cut off, slow or make lossy (both directions).
    #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
    pub node: Option<String>,
    /// One-way: traffic from this node...
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// ...to this node.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}

/// `ringkv serve`: every config field is also a flag; flags override the file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML config file (see config/node.example.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated seed addresses.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    #[arg(long)]
    pub zone: Option<String>,
    #[arg(long)]
    pub replication_factor: Option<usize>,
    #[arg(long)]
    pub vnodes: Option<usize>,
    /// Comma-separated tokens to take instead of choosing them.
    #[arg(long, value_delimiter = ',')]
    pub initial_tokens: Option<Vec<u64>>,
    /// redb, sled or memory.
    #[arg(long)]
    pub storage: Option<String>,
    /// fsync, group or none.
    #[arg(long)]
    pub durability: Option<String>,
    #[arg(long)]
    pub group_commit_ms: Option<u64>,
    #[arg(long)]
    pub max_clock_skew_ms: Option<u64>,
    #[arg(long)]
    pub max_key_bytes: Option<usize>,
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    #[arg(long)]
    pub peer_timeout_ms: Option<u64>,
    #[arg(long)]
    pub gossip_interval_ms: Option<u64>,
    #[arg(long)]
    pub rng_seed: Option<u64>,
    /// Phi-accrual conviction threshold.
    #[arg(long)]
    pub phi_threshold: Option<f64>,
    #[arg(long)]
    pub heartbeat_pause_ms: Option<u64>,
    /// Tolerated silence of a replica, in seconds, before it stops getting hints.
    #[arg(long)]
    pub max_hint_window: Option<u64>,
    #[arg(long)]
    pub max_hint_bytes_per_target: Option<u64>,
    #[arg(long)]
    pub hint_replay_bytes_per_sec: Option<u64>,
    #[arg(long)]
    pub speculative_retry_ms: Option<u64>,
    /// Seconds between anti-entropy passes; 0 turns the schedule off.
    #[arg(long)]
    pub anti_entropy_interval: Option<u64>,
    #[arg(long)]
    pub anti_entropy_bytes_per_sec: Option<u64>,
    /// Seconds before repair may purge a tombstone.
    #[arg(long)]
    pub tombstone_grace: Option<u64>,
    /// Seconds of a settled ring before unowned ranges are dropped; 0 turns it off.
    #[arg(long)]
    pub cleanup_delay: Option<u64>,
    /// on (default) or off.
    #[arg(long)]
    pub hinted_handoff: Option<OnOff>,
    /// A commit log in front of the disk engine: on (default) or off.
    #[arg(long)]
    pub commit_log: Option<OnOff>,
    /// Log filter (also RUST_LOG), e.g. info or ringkv_node=debug.
    #[arg(long, default_value = "info")]
    pub log: String,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Port of the first node; the others follow.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// Parent directory for each node's data and log.
    #[arg(long, default_value = "ringkv-cluster")]
    pub data_dir: PathBuf,
    /// Extra flags passed to every `serve`, e.g. --serve-arg=--durability=fsync.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Operations per level in the latency chapter.
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// Delay injected on the slow replica's links, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u32,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "ringkv-demo.svg")]
    pub svg: std::path::PathBuf,
}

/// A bench workload.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// Reads only.
    C,
    /// Updates only.
    Write,
    /// A no-op RPC: the gRPC floor.
    Ping,
}

/// What `ringkv bench` measures.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum TargetKind {
    /// This store, through the client and its --policy.
    Ringkv,
    /// etcd's v3 KV API at --endpoints (its client URLs).
    Etcd,
    /// A Redis server at --endpoints.
    Redis,
}

/// Key popularity.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The system to load: ringkv, or a peer for comparison (bench/compare.sh).
    #[arg(long, value_enum, default_value = "ringkv")]
    pub target: TargetKind,
    /// etcd only: linearizable reads instead of serializable (member-local) ones.
    #[arg(long)]
    pub etcd_linearizable: bool,
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    #[arg(long, value_enum, default_value = "zipfian")]
    pub distribution: Distribution,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Level for reads.
    #[arg(long, value_enum, default_value = "one")]
    pub read_level: LevelArg,
    /// Level for writes.
    #[arg(long, value_enum, default_value = "quorum")]
    pub write_level: LevelArg,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run, e.g. 10s (ignored when --ops is set).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: std::time::Duration,
    /// Stop after this many operations.
    #[arg(long)]
    pub ops: Option<u64>,
    /// At most this many operations per second (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Write the keys first (not counted).
    #[arg(long)]
    pub load: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_with_their_parameters_and_typos_are_refused() {
        for ok in ["endpoints", "token-aware", "bounded-load", "bounded-load:0.5", "zone-aware:eu"] {
            assert_eq!(parse_policy(ok), Ok(ok.to_string()));
        }
        assert!(parse_policy("bounded-load:-1").unwrap_err().contains("ε"));
        assert!(parse_policy("bounded-load:x").unwrap_err().contains("ε"));
        assert!(parse_policy("zone-aware:").unwrap_err().contains("unknown policy"));
        assert!(parse_policy("token_aware").unwrap_err().contains("expected one of"));
    }
}
