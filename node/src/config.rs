//! Node configuration. Only the binary reads files and flags; this crate
//! takes the finished struct. Every field has a default, documented here and
//! in `config/node.example.toml`, and `ringkv serve` has one flag per field.
//!
//! **Durations** are `std::time::Duration`, written as text in files and
//! flags: `"500ms"`, `"10s"`, `"3h"`, `"10d"` ([`parse_duration`]). Fields
//! used to be integers, some in milliseconds with an `_ms` suffix and some
//! in seconds with none. An old file still works: the old `*_ms` names are
//! aliases of the new ones, and a bare integer is read in the field's old
//! unit ([`LegacyUnit`]). The unit is therefore in the type, and nothing in
//! the node multiplies by 1000.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Engine;

/// When a write counts as stored on this replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acknowledging each write.
    Fsync,
    /// fdatasync every `group_commit`; acknowledge after the sync that
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
    /// Storage engine: `fjall`, `redb` or `memory`.
    pub storage: Engine,
    /// Put a commit log in front of a disk engine: an acknowledged write is
    /// one append plus a share of one fdatasync, and the engine is made
    /// durable only at checkpoints (`storage/commitlog.rs`).
    pub commit_log: bool,
    /// When a write counts as stored: `fsync`, `group` or `none`.
    pub durability: Durability,
    /// Group commit window.
    #[serde(alias = "group_commit_ms", with = "millis")]
    pub group_commit: Duration,
    /// Remote timestamps further ahead of the local clock are rejected.
    #[serde(alias = "max_clock_skew_ms", with = "millis")]
    pub max_clock_skew: Duration,
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Default deadline for a client request.
    #[serde(alias = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// Deadline for one message to a peer.
    #[serde(alias = "peer_timeout_ms", with = "millis")]
    pub peer_timeout: Duration,
    /// Gossip and liveness probe period.
    #[serde(alias = "gossip_interval_ms", with = "millis")]
    pub gossip_interval: Duration,
    /// Phi-accrual conviction threshold: a peer is down above it.
    pub phi_threshold: f64,
    /// Heartbeat pause tolerated beyond the mean interval.
    #[serde(alias = "heartbeat_pause_ms", with = "millis")]
    pub heartbeat_pause: Duration,
    /// Seed for the node's RNG (peer choice, fault drops); random when unset.
    pub rng_seed: Option<u64>,
    /// Time between scheduled anti-entropy passes; 0 turns the schedule
    /// off (`ringkv repair` still works).
    #[serde(with = "secs")]
    pub anti_entropy_interval: Duration,
    /// Byte-rate limit for anti-entropy traffic started by this node; 0 is unlimited.
    pub anti_entropy_bytes_per_sec: u64,
    /// How long a tombstone is kept before repair may purge it (once every
    /// replica of its range holds it).
    #[serde(with = "secs")]
    pub tombstone_grace: Duration,
    /// How long the ring must stay settled (no node joining or leaving, and
    /// no change at all) before this node drops the data of ranges it no
    /// longer replicates (`antientropy/cleanup.rs`); 0 turns automatic
    /// cleanup off (`ringkv cleanup` still works).
    #[serde(with = "secs")]
    pub cleanup_delay: Duration,
    /// Hinted handoff: keep writes for replicas that are down and replay them.
    pub hinted_handoff: bool,
    /// How long a replica may be silent and still get new hints, and how
    /// old a hint may grow before it is dropped unreplayed; after that the
    /// replica is left to anti-entropy. Must be shorter than
    /// `tombstone_grace` while hinted handoff is on.
    #[serde(with = "secs")]
    pub max_hint_window: Duration,
    /// Largest total size of hints kept for one target, in bytes.
    pub max_hint_bytes_per_target: u64,
    /// Byte-rate limit for hint replay; 0 is unlimited.
    pub hint_replay_bytes_per_sec: u64,
    /// Speculative-retry delay for a replica with too few latency samples
    /// to have a p99 yet.
    #[serde(alias = "speculative_retry_ms", with = "millis")]
    pub speculative_retry: Duration,
    /// Accept `Admin.SetFault` and `Admin.SetClock` (`ringkv fault`): cut
    /// links, delay or drop messages, step the clock. Off by default, since
    /// anyone who can reach the admin API could otherwise cut a node off or
    /// make it refuse every write; `ringkv demo`, `ringkv cluster`,
    /// jepsen-lite and the tests turn it on.
    pub enable_fault_injection: bool,
    /// Client requests per second this node admits from one client address
    /// (`Kv` only; peers are never limited); 0 turns the limit off. The
    /// cluster-wide ceiling for a client is about N times it.
    pub rate_limit_per_sec: u32,
    /// Requests a client may send at once above the sustained rate; 0
    /// means the same as `rate_limit_per_sec`.
    pub rate_limit_burst: u32,
    /// Changes this node keeps in memory for `Kv.Watch` to resume from
    /// (`watch/log.rs`); a watcher further behind must resync by scanning.
    pub watch_log_changes: usize,
    /// Bytes of keys and records the change log keeps at most.
    pub watch_log_bytes: usize,
    /// Watch streams this node serves at once; more are refused with
    /// `RESOURCE_EXHAUSTED`. 0 turns `Kv.Watch` off.
    pub max_watches: usize,
    /// A deliberately broken Paxos rule, for proving jepsen-lite catches
    /// it. Not a config-file field: the binary sets it from
    /// `RINGKV_BREAK_PAXOS`, and only with `enable_fault_injection`.
    #[serde(skip)]
    pub break_paxos: crate::paxos::Break,
    /// The cluster CA's certificate (PEM). With `tls_cert` and `tls_key`
    /// it turns TLS on: clients must trust this CA, and peers prove they are
    /// nodes with a certificate it signed (security/).
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), from `ringkv cert issue node NAME`.
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Principals, tokens and roles (security/tokens.rs); with it every
    /// client must sign in. Re-read on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// The token this node presents to its peers when peers do not use
    /// TLS (a principal with the `peer` role). Never logged.
    pub peer_token: Option<Secret>,
    /// Listen off loopback without TLS. Anyone who can reach the port can
    /// then read, write and administer the node.
    pub insecure: bool,
    /// A second, plaintext listener that serves only `grpc.health.v1`, for
    /// probes that cannot speak TLS (Kubernetes' gRPC probes, load
    /// balancers). It answers nothing else, so it needs no certificate.
    pub health_listen: Option<String>,
    /// A plaintext HTTP listener for Prometheus (`GET /metrics`) and HTTP
    /// probes (`/healthz`, `/readyz`); off when unset. It is read-only and
    /// shows no key, value or secret, so it may listen off loopback
    /// without TLS (`metrics/http.rs`).
    pub http_listen: Option<String>,
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
            storage: Engine::Fjall,
            commit_log: true,
            durability: Durability::Group,
            group_commit: Duration::from_millis(1),
            max_clock_skew: Duration::from_millis(500),
            max_key_bytes: 64 * 1024,
            max_value_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(2),
            peer_timeout: Duration::from_secs(1),
            gossip_interval: Duration::from_secs(1),
            rng_seed: None,
            phi_threshold: 8.0,
            heartbeat_pause: Duration::from_secs(3),
            anti_entropy_interval: Duration::from_secs(600),
            anti_entropy_bytes_per_sec: 16 * 1024 * 1024,
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            cleanup_delay: Duration::from_secs(600),
            hinted_handoff: true,
            max_hint_window: Duration::from_secs(3 * 3600),
            max_hint_bytes_per_target: 64 * 1024 * 1024,
            hint_replay_bytes_per_sec: 4 * 1024 * 1024,
            speculative_retry: Duration::from_millis(20),
            enable_fault_injection: false,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            watch_log_changes: 100_000,
            watch_log_bytes: 64 * 1024 * 1024,
            max_watches: 1024,
            break_paxos: crate::paxos::Break::None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tokens_file: None,
            peer_token: None,
            insecure: false,
            health_listen: None,
            http_listen: None,
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
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return bad("max_key_bytes and max_value_bytes must be positive".into());
        }
        if self.request_timeout.is_zero() || self.peer_timeout.is_zero() || self.gossip_interval.is_zero() {
            return bad("request_timeout, peer_timeout and gossip_interval must be positive".into());
        }
        if self.watch_log_changes == 0 || self.watch_log_bytes == 0 {
            return bad("watch_log_changes and watch_log_bytes must be positive (max_watches 0 turns Watch off)".into());
        }
        if self.phi_threshold.is_nan() || self.phi_threshold <= 0.0 {
            return bad(format!("phi_threshold is {}; it must be positive", self.phi_threshold));
        }
        let tls = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        if !tls && !self.insecure && !is_loopback(&self.listen) {
            return bad(format!(
                "listen address {} is not loopback and TLS is off, so anyone who can reach it could read, write and \
                 administer this node. Set up certificates (`ringkv cert init --dir certs`, then \
                 `ringkv cert issue node {} --dir certs --host <address>`, and start with --ca certs/ca.crt \
                 --cert certs/{}.crt --key certs/{}.key), or pass --insecure on a network you trust",
                self.listen, self.id, self.id, self.id
            ));
        }
        // The HTTP listener serves only metrics and probes, never data, so
        // unlike `listen` it needs no TLS off loopback; it must still be
        // an address of its own.
        if let Some(http) = &self.http_listen {
            if !has_port(http) {
                return bad(format!("http_listen {http:?} is not host:port (e.g. 0.0.0.0:9100)"));
            }
            if Some(http) == self.health_listen.as_ref() || *http == self.listen {
                return bad(format!("http_listen {http} is already taken by listen or health_listen; give it a port of its own"));
            }
        }
        // Repair purges a tombstone once `tombstone_grace` has passed. A hint
        // kept longer than that can still carry the value the tombstone
        // deleted, and replaying it to a replica that no longer holds the
        // tombstone brings the value back (`hints.rs`).
        if self.hinted_handoff && self.max_hint_window >= self.tombstone_grace {
            return bad(format!(
                "max_hint_window ({}) must be shorter than tombstone_grace ({}): a hint older than the grace \
                 can resurrect data whose tombstone was already purged",
                humantime::format_duration(self.max_hint_window),
                humantime::format_duration(self.tombstone_grace),
            ));
        }
        Ok(())
    }
}

/// A secret setting: serialized as itself, printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `addr` is `host:port` with a numeric port (`[::1]:9100` too).
fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Whether a listen address (`ip:port` or `host:port`) is loopback only.
/// A name other than `localhost` may resolve anywhere, so it is not.
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// The unit a duration field had when it was a bare integer: a field once
/// named `*_ms` took milliseconds, the others seconds. An integer in a
/// config file or flag is still read in that unit, so old files keep
/// working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyUnit {
    /// The field was `*_ms`.
    Millis,
    /// The field was in seconds.
    Secs,
}

impl LegacyUnit {
    fn of(self, n: u64) -> Duration {
        match self {
            LegacyUnit::Millis => Duration::from_millis(n),
            LegacyUnit::Secs => Duration::from_secs(n),
        }
    }
}

/// Parses a config duration: text with units as `humantime` reads it
/// (`"500ms"`, `"10s"`, `"1h 30m"`, `"10d"`), or a bare integer in the
/// field's old unit.
///
/// ```
/// use std::time::Duration;
/// use ringkv_node::config::{parse_duration, LegacyUnit};
/// assert_eq!(parse_duration("10d", LegacyUnit::Secs), Ok(Duration::from_secs(10 * 24 * 3600)));
/// assert_eq!(parse_duration("250", LegacyUnit::Millis), Ok(Duration::from_millis(250)));
/// assert!(parse_duration("soon", LegacyUnit::Secs).unwrap_err().contains("like \"500ms\""));
/// ```
pub fn parse_duration(s: &str, legacy: LegacyUnit) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(legacy.of(n));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"500ms\", \"10s\", \"3h\" or \"10d\": {e}"))
}

/// Serde for a duration field that took milliseconds as an integer.
mod millis {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::serialize(d, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor(LegacyUnit::Millis))
    }
}

/// Serde for a duration field that took seconds as an integer.
mod secs {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::serialize(d, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor(LegacyUnit::Secs))
    }
}

/// Writes a duration as `humantime` text, e.g. `"10days"`, which
/// [`parse_duration`] reads back.
fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

struct DurationVisitor(LegacyUnit);

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"500ms\", \"10s\" or \"10d\"")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Duration, E> {
        Ok(self.0.of(n))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Duration, E> {
        let n = u64::try_from(n).map_err(|_| E::custom(format!("{n} is negative; a duration is at least 0")))?;
        Ok(self.0.of(n))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Duration, E> {
        parse_duration(s, self.0).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn an_empty_watch_log_is_refused_and_no_watches_is_allowed() {
        for c in [Config { watch_log_changes: 0, ..Config::default() }, Config { watch_log_bytes: 0, ..Config::default() }] {
            assert!(c.validate().unwrap_err().to_string().contains("watch_log"), "{c:?}");
        }
        Config { max_watches: 0, ..Config::default() }.validate().unwrap();
    }

    #[test]
    fn off_loopback_a_node_needs_tls_or_insecure() {
        for listen in ["127.0.0.1:7101", "[::1]:7101", "localhost:7101", "127.0.0.11:7101"] {
            Config { listen: listen.into(), ..Config::default() }.validate().unwrap_or_else(|e| panic!("{listen}: {e}"));
        }
        for listen in ["0.0.0.0:7101", "10.0.0.5:7101", "db1.example.internal:7101", "[::]:7101"] {
            let open = Config { listen: listen.into(), ..Config::default() };
            let e = open.validate().unwrap_err().to_string();
            assert!(e.contains("not loopback") && e.contains("ringkv cert init") && e.contains("--insecure"), "{listen}: {e}");
            Config { insecure: true, ..open.clone() }.validate().unwrap();
            let tls = |p: &str| Some(PathBuf::from(p));
            Config { tls_ca: tls("ca.crt"), tls_cert: tls("n1.crt"), tls_key: tls("n1.key"), ..open }.validate().unwrap();
        }
    }

    #[test]
    fn the_http_listener_may_listen_anywhere_without_tls_but_must_be_an_address_of_its_own() {
        // Metrics and probes only: off loopback without TLS is accepted.
        for http in ["0.0.0.0:9100", "[::]:9100", "10.0.0.5:9100", "127.0.0.1:9100"] {
            Config { http_listen: Some(http.into()), ..Config::default() }.validate().unwrap_or_else(|e| panic!("{http}: {e}"));
        }
        for bad in ["9100", ":9100", "host:port", "0.0.0.0:99999"] {
            let e = Config { http_listen: Some(bad.into()), ..Config::default() }.validate().unwrap_err().to_string();
            assert!(e.contains("is not host:port"), "{bad}: {e}");
        }
        let taken = Config { http_listen: Some("127.0.0.1:7101".into()), ..Config::default() };
        assert!(taken.validate().unwrap_err().to_string().contains("a port of its own"));
        let taken =
            Config { http_listen: Some("127.0.0.1:7102".into()), health_listen: Some("127.0.0.1:7102".into()), ..Config::default() };
        assert!(taken.validate().unwrap_err().to_string().contains("a port of its own"));
    }

    #[test]
    fn a_hint_window_as_long_as_the_tombstone_grace_is_rejected() {
        let c = Config { max_hint_window: Duration::from_secs(60), tombstone_grace: Duration::from_secs(60), ..Config::default() };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max_hint_window (1m) must be shorter than tombstone_grace (1m)"), "{err}");
        assert!(err.contains("resurrect"), "the message says why: {err}");
        // Without hinted handoff no hint exists to resurrect anything.
        Config { hinted_handoff: false, ..c.clone() }.validate().unwrap();
        Config { max_hint_window: Duration::from_secs(59), ..c }.validate().unwrap();
    }

    #[test]
    fn durations_read_as_text_and_as_integers_in_their_old_units() {
        let c: Config = toml::from_str(
            r#"
            group_commit = "5ms"
            request_timeout = "1.5s"
            tombstone_grace = "10d"
            max_hint_window = "3h"
            anti_entropy_interval = "0s"
            "#,
        )
        .unwrap();
        assert_eq!(c.group_commit, Duration::from_millis(5));
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.tombstone_grace, Duration::from_secs(10 * 24 * 3600));
        assert_eq!(c.max_hint_window, Duration::from_secs(3 * 3600));
        assert_eq!(c.anti_entropy_interval, Duration::ZERO);
        // A file written before durations were typed means the same as before.
        let old: Config = toml::from_str(
            r#"
            group_commit_ms = 5
            gossip_interval_ms = 300
            max_clock_skew_ms = 250
            tombstone_grace = 864000
            max_hint_window = 10800
            cleanup_delay = 0
            "#,
        )
        .unwrap();
        assert_eq!(old.group_commit, Duration::from_millis(5));
        assert_eq!(old.gossip_interval, Duration::from_millis(300));
        assert_eq!(old.max_clock_skew, Duration::from_millis(250));
        assert_eq!(old.tombstone_grace, Duration::from_secs(864000));
        assert_eq!(old.max_hint_window, Duration::from_secs(10800));
        assert_eq!(old.cleanup_delay, Duration::ZERO);
    }

    /// The duration lines of `config/node.example.toml` as they were before
    /// durations were typed: they still mean the defaults.
    #[test]
    fn the_old_example_config_still_reads_as_the_defaults() {
        let old: Config = toml::from_str(
            r#"
            storage = "fjall"
            durability = "group"
            group_commit_ms = 1
            max_clock_skew_ms = 500
            request_timeout_ms = 2000
            peer_timeout_ms = 1000
            gossip_interval_ms = 1000
            heartbeat_pause_ms = 3000
            anti_entropy_interval = 600
            tombstone_grace = 864000
            cleanup_delay = 600
            max_hint_window = 10800
            speculative_retry_ms = 20
            "#,
        )
        .unwrap();
        assert_eq!(format!("{old:?}"), format!("{:?}", Config::default()));
        let err = toml::from_str::<Config>("gossip_interval_ms = 300\ngossip_interval = \"300ms\"").unwrap_err().to_string();
        assert!(err.contains("duplicate"), "an old name and its new one together are refused: {err}");
    }

    #[test]
    fn bad_durations_and_enums_are_rejected_with_the_reason() {
        let err = toml::from_str::<Config>(r#"tombstone_grace = "ten days""#).unwrap_err().to_string();
        assert!(err.contains("tombstone_grace") && err.contains("not a duration"), "{err}");
        let err = toml::from_str::<Config>("peer_timeout = -5").unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
        let err = toml::from_str::<Config>(r#"storage = "rocksdb""#).unwrap_err().to_string();
        assert!(err.contains("unknown variant `rocksdb`") && err.contains("`fjall`"), "{err}");
        let err = toml::from_str::<Config>(r#"durability = "always""#).unwrap_err().to_string();
        assert!(err.contains("unknown variant `always`") && err.contains("`fsync`"), "{err}");
    }

    #[test]
    fn a_config_written_out_reads_back_the_same() {
        let c = Config { tombstone_grace: Duration::from_secs(90061), group_commit: Duration::from_micros(1500), ..Config::default() };
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("tombstone_grace = \"1day 1h 1m 1s\""), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
    }
}
