//! Command-line flags (clap derive). Every command takes `--json` and
//! `--endpoints`; `serve` takes one flag per config field.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringkv_client::parse_duration;
use ringkv_client::policy::PolicyName;
use ringkv_node::config::{parse_duration as config_duration, LegacyUnit};
use ringkv_node::{Config, Durability, Engine};

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
    // The help lists the names `PolicyName` parses, so it cannot go stale.
    #[arg(
        long,
        global = true,
        env = "RINGKV_POLICY",
        default_value = "endpoints",
        value_parser = clap::value_parser!(PolicyName),
        help = format!("Which node coordinates each request (endpoints: in the order given; bounded-load alone is ε = 0.25): {}", PolicyName::forms()),
    )]
    pub policy: PolicyName,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Credentials for a secured cluster. For `serve`, `--ca`, `--cert` and
/// `--key` are the node's own TLS files.
#[derive(Args, Debug, Default, Clone)]
pub struct AuthArgs {
    /// Bearer token (from `ringkv token add`).
    #[arg(long = "token", id = "auth_token", global = true, env = "RINGKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA certificate (PEM); turns TLS on.
    #[arg(long = "ca", id = "auth_ca", global = true, env = "RINGKV_CA")]
    pub ca: Option<PathBuf>,
    /// A certificate (PEM) from `ringkv cert issue`: the client's for mutual TLS, or the node's for `serve`.
    #[arg(long = "cert", id = "auth_cert", global = true, env = "RINGKV_CERT")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long = "key", id = "auth_key", global = true, env = "RINGKV_KEY")]
    pub key: Option<PathBuf>,
}

impl AuthArgs {
    /// What a client presents.
    pub fn credentials(&self) -> anyhow::Result<ringkv_client::Credentials> {
        Ok(ringkv_client::Credentials::from_files(self.ca.as_deref(), self.cert.as_deref(), self.key.as_deref(), self.token.clone())?)
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
    /// Linearizable, by a Paxos round over a majority of the key's
    /// replicas: `cas` and `get` only.
    Serial,
    /// SERIAL over the replicas in the coordinator's zone.
    #[value(name = "local_serial")]
    LocalSerial,
}

/// A switch.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(s: OnOff) -> bool {
        s == OnOff::On
    }
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
    /// Deadline for the whole request, e.g. 500ms or 2s (default: the node's request_timeout).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Writes: let healthy nodes beyond the preference list stand in for down replicas.
    #[arg(long)]
    pub sloppy: bool,
    /// Print the receipt: replicas asked and answered, latencies, stale replicas, repairs.
    #[arg(long)]
    pub explain: bool,
}

/// `ringkv cas KEY (--expect VALUE | --absent) (--set NEW | --delete)`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("condition").required(true).args(["expect", "absent"])))]
#[command(group(clap::ArgGroup::new("change").required(true).args(["set", "delete"])))]
pub struct CasArgs {
    pub key: String,
    /// Apply only if every live value of KEY equals this.
    #[arg(long)]
    pub expect: Option<String>,
    /// Apply only if KEY is absent or deleted.
    #[arg(long)]
    pub absent: bool,
    /// The new value.
    #[arg(long)]
    pub set: Option<String>,
    /// Delete KEY instead (a tombstone).
    #[arg(long)]
    pub delete: bool,
    /// serial (the default) or local_serial.
    #[arg(short = 'c', long = "consistency", value_enum, default_value = "serial")]
    pub level: LevelArg,
    /// Deadline for the whole request, e.g. 500ms or 2s (default: the node's request_timeout).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Print the receipt, Paxos rounds included.
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
        /// Expire the value this long after the write, e.g. 30s, 10m, 1h, 7d (a bare number is seconds).
        #[arg(long, value_parser = ttl)]
        ttl: Option<Duration>,
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
    /// Compare-and-set at SERIAL: set (or delete) KEY only if its value is
    /// still the one expected; prints applied or not, and the current value.
    Cas(CasArgs),
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
    /// Print changes to keys under PREFIX as they happen (puts and deletes, from every node,
    /// without duplicates), until Ctrl-C; then print the position to resume from.
    Watch {
        /// Only keys starting with this (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Resume from a position a previous watch printed (its last line on stderr, or an event's
        /// "position" with --json); what changed since is printed first.
        #[arg(long)]
        resume: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
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
    /// A development certificate authority: `cert init`, then `cert issue node|client NAME`.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Principals and their tokens in a node's token file.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// HTTP/JSON in front of the cluster, with a live cluster page at `/`.
    Gateway(GatewayArgs),
}

/// `ringkv gateway --listen ADDR --nodes A,B,C [--policy P] [--rate-limit N/s]`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address the HTTP server binds.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Comma-separated node addresses to start from (default: --endpoints).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Option<Vec<String>>,
    /// Requests per second each client (bearer token, else remote IP) may send to /v1/kv and /v1/scan, e.g. 100/s.
    #[arg(long)]
    pub rate_limit: Option<ringkv_gateway::RateLimit>,
    /// Requests the cluster page lists.
    #[arg(long, default_value_t = ringkv_gateway::DEFAULT_RECENT)]
    pub recent: usize,
    /// Log filter (also RUST_LOG), e.g. info or ringkv_gateway=debug.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// `ringkv cert`.
#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Make a new CA (ca.crt, ca.key) in --dir.
    Init {
        /// Where the CA and the certificates it issues live.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue a certificate signed by the CA in --dir: NAME.crt and NAME.key.
    Issue {
        /// `node` (serves TLS and may call the Peer API) or `client`.
        #[arg(value_enum)]
        kind: CertKindArg,
        /// The node id or client name (its common name).
        name: String,
        /// Where the CA lives.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses the node serves under (repeatable).
        #[arg(long)]
        host: Vec<String>,
    },
}

/// The two kinds of certificate.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CertKindArg {
    /// A node's.
    Node,
    /// A client's.
    Client,
}

/// `ringkv token`.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Add a principal with a new token, printed once (the file keeps only its hash).
    Add {
        /// The principal's name.
        name: String,
        /// A role it holds (repeatable): admin, peer, readwrite, readonly, or one under `[roles]` in the file.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The token file.
        #[arg(long, default_value = "tokens.toml")]
        file: PathBuf,
    },
    /// List the principals and roles in the file (never tokens).
    List {
        /// The token file.
        #[arg(long, default_value = "tokens.toml")]
        file: PathBuf,
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
    #[command(flatten)]
    pub overrides: ConfigOverrides,
    /// Log filter (also RUST_LOG), e.g. info or ringkv_node=debug.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// A duration flag over a field that once took milliseconds: `500ms`, `2s`,
/// or a bare number of milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    config_duration(s, LegacyUnit::Millis)
}

/// A duration flag over a field that once took seconds: `10m`, `10d`, or a
/// bare number of seconds.
fn secs(s: &str) -> Result<Duration, String> {
    config_duration(s, LegacyUnit::Secs)
}

/// `put --ttl`: `30s`, `10m`, `1h`, `7d`, or a bare number of seconds (as
/// Redis `EXPIRE` and Cassandra `USING TTL` take it); never zero.
fn ttl(s: &str) -> Result<Duration, String> {
    let d = secs(s)?;
    if d.is_zero() {
        return Err("a TTL must be positive; leave out --ttl for a value that never expires".into());
    }
    Ok(d)
}

/// One flag per [`Config`] field, named after it (`replication_factor` ->
/// `--replication-factor`); each is `None` unless given. Durations take
/// units (`500ms`, `10d`); the renamed `*_ms` fields keep their old flag
/// names as aliases. `Config` documents each field.
#[derive(Args, Debug, Default)]
pub struct ConfigOverrides {
    /// Unique node id, e.g. n1.
    #[arg(long)]
    pub id: Option<String>,
    /// Address the gRPC server binds.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address peers and clients use (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for the storage engine.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated seed addresses.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Zone (rack or data centre) of this node.
    #[arg(long)]
    pub zone: Option<String>,
    /// Replicas per key (N).
    #[arg(long)]
    pub replication_factor: Option<usize>,
    /// Tokens this node owns on the ring.
    #[arg(long)]
    pub vnodes: Option<usize>,
    /// Comma-separated tokens to take instead of choosing them.
    #[arg(long, value_delimiter = ',')]
    pub initial_tokens: Option<Vec<u64>>,
    /// Storage engine.
    #[arg(long, value_enum)]
    pub storage: Option<Engine>,
    /// A commit log in front of the disk engine: on (default) or off.
    #[arg(long, value_enum)]
    pub commit_log: Option<OnOff>,
    /// When a write counts as stored.
    #[arg(long, value_enum)]
    pub durability: Option<Durability>,
    /// Group commit window, e.g. 1ms.
    #[arg(long, alias = "group-commit-ms", value_parser = millis)]
    pub group_commit: Option<Duration>,
    /// Remote timestamps further ahead than this are rejected, e.g. 500ms.
    #[arg(long, alias = "max-clock-skew-ms", value_parser = millis)]
    pub max_clock_skew: Option<Duration>,
    /// Largest key accepted, in bytes.
    #[arg(long)]
    pub max_key_bytes: Option<usize>,
    /// Largest value accepted, in bytes.
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Default deadline for a client request, e.g. 2s.
    #[arg(long, alias = "request-timeout-ms", value_parser = millis)]
    pub request_timeout: Option<Duration>,
    /// Deadline for one message to a peer, e.g. 1s.
    #[arg(long, alias = "peer-timeout-ms", value_parser = millis)]
    pub peer_timeout: Option<Duration>,
    /// Gossip and liveness probe period, e.g. 1s.
    #[arg(long, alias = "gossip-interval-ms", value_parser = millis)]
    pub gossip_interval: Option<Duration>,
    /// Phi-accrual conviction threshold.
    #[arg(long)]
    pub phi_threshold: Option<f64>,
    /// Heartbeat pause tolerated beyond the mean interval, e.g. 3s.
    #[arg(long, alias = "heartbeat-pause-ms", value_parser = millis)]
    pub heartbeat_pause: Option<Duration>,
    /// Seed for the node's RNG (random when unset).
    #[arg(long)]
    pub rng_seed: Option<u64>,
    /// Time between anti-entropy passes, e.g. 10m; 0 turns the schedule off.
    #[arg(long, value_parser = secs)]
    pub anti_entropy_interval: Option<Duration>,
    /// Byte-rate limit for anti-entropy traffic; 0 is unlimited.
    #[arg(long)]
    pub anti_entropy_bytes_per_sec: Option<u64>,
    /// How long a tombstone is kept before repair may purge it, e.g. 10d.
    #[arg(long, value_parser = secs)]
    pub tombstone_grace: Option<Duration>,
    /// How long the ring must stay settled before unowned ranges are dropped, e.g. 10m; 0 turns it off.
    #[arg(long, value_parser = secs)]
    pub cleanup_delay: Option<Duration>,
    /// Hinted handoff: on (default) or off.
    #[arg(long, value_enum)]
    pub hinted_handoff: Option<OnOff>,
    /// How long a replica may be silent and still get hints, e.g. 3h.
    #[arg(long, value_parser = secs)]
    pub max_hint_window: Option<Duration>,
    /// Largest total size of hints kept for one target, in bytes.
    #[arg(long)]
    pub max_hint_bytes_per_target: Option<u64>,
    /// Byte-rate limit for hint replay; 0 is unlimited.
    #[arg(long)]
    pub hint_replay_bytes_per_sec: Option<u64>,
    /// Speculative-retry delay before a replica has a p99, e.g. 20ms.
    #[arg(long, alias = "speculative-retry-ms", value_parser = millis)]
    pub speculative_retry: Option<Duration>,
    /// Accept fault injection (`ringkv fault`: cut, delay or drop links,
    /// step the clock). For tests and demos only; off by default.
    #[arg(long)]
    pub enable_fault_injection: bool,
    /// Client requests per second admitted per client address; 0 is off.
    #[arg(long)]
    pub rate_limit_per_sec: Option<u32>,
    /// Requests a client may burst above the rate; 0 is the rate itself.
    #[arg(long)]
    pub rate_limit_burst: Option<u32>,
    /// Changes kept in memory for watches to resume from.
    #[arg(long)]
    pub watch_log_changes: Option<usize>,
    /// Bytes the watch change log keeps at most.
    #[arg(long)]
    pub watch_log_bytes: Option<usize>,
    /// Watch streams served at once; 0 turns Watch off.
    #[arg(long)]
    pub max_watches: Option<usize>,
    /// Principals, tokens and roles (`ringkv token add`); every client must then sign in. Re-read on SIGHUP.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// The token this node presents to its peers when they do not use TLS (a principal with the peer role).
    #[arg(long, env = "RINGKV_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,
    /// Listen off loopback without TLS (anyone who can reach the port can then read, write and administer).
    #[arg(long)]
    pub insecure: bool,
    /// Also serve grpc.health.v1 alone, in plaintext, here (for probes that cannot speak TLS).
    #[arg(long)]
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics (/metrics) and HTTP probes (/healthz, /readyz) here, in plaintext; read-only.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Set from the global --ca/--cert/--key, which name the node's own TLS files for `serve`.
    #[arg(skip)]
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl ConfigOverrides {
    /// Sets every field given on the command line.
    pub fn apply(&self, c: &mut Config) {
        // `Config` is taken apart whole, without `..`: a new field does not
        // compile until it is bound here, and an unused binding is a
        // warning (an error in CI) until its flag sets it.
        let Config {
            id,
            listen,
            advertise,
            data_dir,
            seeds,
            zone,
            replication_factor,
            vnodes,
            initial_tokens,
            storage,
            commit_log,
            durability,
            group_commit,
            max_clock_skew,
            max_key_bytes,
            max_value_bytes,
            request_timeout,
            peer_timeout,
            gossip_interval,
            phi_threshold,
            heartbeat_pause,
            rng_seed,
            anti_entropy_interval,
            anti_entropy_bytes_per_sec,
            tombstone_grace,
            cleanup_delay,
            hinted_handoff,
            max_hint_window,
            max_hint_bytes_per_target,
            hint_replay_bytes_per_sec,
            speculative_retry,
            enable_fault_injection,
            rate_limit_per_sec,
            rate_limit_burst,
            watch_log_changes,
            watch_log_bytes,
            max_watches,
            // Set from RINGKV_BREAK_PAXOS by `serve`, never by a flag.
            break_paxos: _,
            tls_ca,
            tls_cert,
            tls_key,
            tokens_file,
            peer_token,
            insecure,
            health_listen,
            http_listen,
        } = c;
        fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        fn set_some<T: Clone>(field: &mut Option<T>, flag: &Option<T>) {
            if flag.is_some() {
                *field = flag.clone();
            }
        }
        set(id, &self.id);
        set(listen, &self.listen);
        set_some(advertise, &self.advertise);
        set(data_dir, &self.data_dir);
        set(seeds, &self.seeds);
        set(zone, &self.zone);
        set(replication_factor, &self.replication_factor);
        set(vnodes, &self.vnodes);
        set(initial_tokens, &self.initial_tokens);
        set(storage, &self.storage);
        set(commit_log, &self.commit_log.map(bool::from));
        set(durability, &self.durability);
        set(group_commit, &self.group_commit);
        set(max_clock_skew, &self.max_clock_skew);
        set(max_key_bytes, &self.max_key_bytes);
        set(max_value_bytes, &self.max_value_bytes);
        set(request_timeout, &self.request_timeout);
        set(peer_timeout, &self.peer_timeout);
        set(gossip_interval, &self.gossip_interval);
        set(phi_threshold, &self.phi_threshold);
        set(heartbeat_pause, &self.heartbeat_pause);
        set_some(rng_seed, &self.rng_seed);
        set(anti_entropy_interval, &self.anti_entropy_interval);
        set(anti_entropy_bytes_per_sec, &self.anti_entropy_bytes_per_sec);
        set(tombstone_grace, &self.tombstone_grace);
        set(cleanup_delay, &self.cleanup_delay);
        set(hinted_handoff, &self.hinted_handoff.map(bool::from));
        set(max_hint_window, &self.max_hint_window);
        set(max_hint_bytes_per_target, &self.max_hint_bytes_per_target);
        set(hint_replay_bytes_per_sec, &self.hint_replay_bytes_per_sec);
        set(speculative_retry, &self.speculative_retry);
        // A switch: given, it turns injection on; absent, the file decides.
        *enable_fault_injection |= self.enable_fault_injection;
        set(rate_limit_per_sec, &self.rate_limit_per_sec);
        set(rate_limit_burst, &self.rate_limit_burst);
        set(watch_log_changes, &self.watch_log_changes);
        set(watch_log_bytes, &self.watch_log_bytes);
        set(max_watches, &self.max_watches);
        if let Some((ca, cert, key)) = &self.tls {
            (*tls_ca, *tls_cert, *tls_key) = (Some(ca.clone()), Some(cert.clone()), Some(key.clone()));
        }
        set_some(tokens_file, &self.tokens_file);
        set_some(peer_token, &self.peer_token.clone().map(ringkv_node::config::Secret));
        *insecure |= self.insecure;
        set_some(health_listen, &self.health_listen);
        set_some(http_listen, &self.http_listen);
    }
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
    /// Secure the cluster with the files in this directory, making what is missing: the CA, a
    /// certificate per node, tokens.toml with an admin principal, and admin.token.
    #[arg(long, value_name = "DIR")]
    pub secure: Option<PathBuf>,
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
    /// Half puts at --write-level, half SERIAL cas on the same keys
    /// (--keys 1 makes every client race on one key).
    Cas,
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
    /// This store through `ringkv gateway` at --endpoints (its HTTP addresses).
    Http,
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
    /// ringkv only: send every request as its own call, never coalesced
    /// with others to the same node into one Kv.Batch call.
    #[arg(long)]
    pub no_coalesce: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_with_their_parameters_and_typos_are_refused() {
        let policy = |p: &str| Cli::try_parse_from(["ringkv", "--policy", p, "status"]).map(|c| c.policy).map_err(|e| e.to_string());
        assert_eq!(policy("token-aware"), Ok(PolicyName::TokenAware));
        assert_eq!(policy("bounded-load:0.5"), Ok(PolicyName::BoundedLoad(0.5)));
        assert_eq!(policy("zone-aware:eu"), Ok(PolicyName::ZoneAware("eu".into())));
        assert!(policy("bounded-load:-1").unwrap_err().contains("ε"));
        assert!(policy("zone-aware:").unwrap_err().contains("needs a zone"));
        assert!(policy("token_aware").unwrap_err().contains("expected one of"));
        let help = <Cli as clap::CommandFactory>::command().render_help().to_string();
        assert!(help.contains("dynamic-load, bounded-load:EPS, zone-aware:ZONE"), "--help lists every policy: {help}");
    }

    #[test]
    fn the_flags_are_consistent_and_credentials_parse_beside_a_key_argument() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        // `get KEY` has its own `key`; the global --key must not collide with it.
        let cli =
            Cli::try_parse_from(["ringkv", "--ca", "ca.crt", "--cert", "c.crt", "--key", "c.key", "--token", "t", "get", "k"]).unwrap();
        assert_eq!(cli.auth.key, Some(PathBuf::from("c.key")));
        assert_eq!(cli.auth.token.as_deref(), Some("t"));
        assert!(matches!(cli.command, Command::Get { ref key, .. } if key == "k"));
    }
}
