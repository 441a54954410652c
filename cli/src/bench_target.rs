//! What `ringkv bench` measures: ringkv itself, or a peer system on the
//! same machine in the same run, through the same workload loop.
//!
//! - `ringkv`: the client with its `--policy`; reads and writes at the
//!   chosen levels; coordinators come from the receipts.
//! - `etcd`: the v3 KV API over gRPC (Range, serializable unless
//!   `--etcd-linearizable`; Put), one channel per endpoint, round robin.
//! - `redis`: one multiplexed connection per endpoint, round robin; GET,
//!   SET, PING. A single non-replicated server is the ceiling.
//! - `http`: ringkv through `ringkv gateway` at `--endpoints` (its HTTP
//!   addresses), with one pooled HTTP/1.1 client (keep-alive, a connection
//!   per request in flight): `GET`/`PUT /v1/kv/{key}` at the same levels;
//!   coordinators come from the `X-Ringkv-Coordinator` header.
//!   `bench/gateway.sh` runs it beside `ringkv` to measure the gateway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use redis::AsyncCommands;
use ringkv_client::{Client, Level, Options};
use ringkv_proto::etcd;
use tonic::transport::{Channel, Endpoint};

use crate::args::TargetKind;

/// A connected target.
pub enum Target {
    /// ringkv through the client.
    Ringkv {
        /// The client, with its policy.
        client: Client,
        /// Level for reads.
        read: Level,
        /// Level for writes.
        write: Level,
    },
    /// etcd through its v3 KV API.
    Etcd {
        /// One channel per endpoint.
        channels: Vec<Channel>,
        /// Serializable (member-local) reads.
        serializable: bool,
        /// Round-robin cursor.
        next: AtomicUsize,
    },
    /// ringkv through the HTTP gateway.
    Http {
        /// The pooled HTTP client.
        http: reqwest::Client,
        /// `http://host:port/v1/kv/` per gateway.
        bases: Vec<String>,
        /// `?consistency=...` for reads.
        read: String,
        /// `?consistency=...` for writes.
        write: String,
        /// Round-robin cursor.
        next: AtomicUsize,
    },
    /// Redis, one multiplexed connection per endpoint.
    Redis {
        /// The connections.
        conns: Vec<redis::aio::MultiplexedConnection>,
        /// Round-robin cursor.
        next: AtomicUsize,
    },
}

/// An operation's outcome: the coordinator when known, or an error kind.
pub type Outcome = std::result::Result<Option<String>, String>;

fn pick<T: Clone>(items: &[T], next: &AtomicUsize) -> T {
    items[next.fetch_add(1, Ordering::Relaxed) % items.len()].clone()
}

fn uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Target {
    /// The ringkv client, for operations only ringkv has (cas).
    pub fn client(&self) -> Option<&Client> {
        match self {
            Target::Ringkv { client, .. } => Some(client),
            _ => None,
        }
    }

    /// Connects to `endpoints` as `kind` says. For ringkv, `client` is used.
    pub async fn connect(
        kind: TargetKind,
        endpoints: &[String],
        client: Option<Client>,
        read: Level,
        write: Level,
        linearizable: bool,
        concurrency: usize,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("no endpoints given; pass --endpoints host:port[,host:port...]");
        }
        Ok(match kind {
            TargetKind::Ringkv => Target::Ringkv { client: client.context("a ringkv client")?, read, write },
            TargetKind::Etcd => {
                let mut channels = Vec::new();
                for e in endpoints {
                    let ch = Endpoint::from_shared(uri(e))
                        .with_context(|| format!("bad etcd endpoint {e:?}"))?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_secs(2))
                        .connect()
                        .await
                        .with_context(|| format!("cannot reach etcd at {e}; is it running (bench/compare.sh starts one)?"))?;
                    channels.push(ch);
                }
                Target::Etcd { channels, serializable: !linearizable, next: AtomicUsize::new(0) }
            }
            TargetKind::Http => {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(concurrency)
                    .tcp_nodelay(true)
                    .build()
                    .context("cannot build the HTTP client")?;
                let bases: Vec<String> = endpoints.iter().map(|e| format!("{}/v1/kv/", uri(e).trim_end_matches('/'))).collect();
                let probe = format!("{}/v1/cluster", uri(&endpoints[0]).trim_end_matches('/'));
                let up = http
                    .get(&probe)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the gateway at {probe}; is `ringkv gateway` running?"))?;
                if !up.status().is_success() {
                    bail!("the gateway at {probe} answered {}: it cannot see the cluster", up.status());
                }
                let level = |l: Level| format!("?consistency={}", l.as_str_name().trim_start_matches("CONSISTENCY_").to_lowercase());
                Target::Http { http, bases, read: level(read), write: level(write), next: AtomicUsize::new(0) }
            }
            TargetKind::Redis => {
                let mut conns = Vec::new();
                // Three connections to a single server, like the other targets' three.
                let addrs: Vec<&String> = if endpoints.len() == 1 { vec![&endpoints[0]; 3] } else { endpoints.iter().collect() };
                for e in addrs {
                    let url = if e.starts_with("redis://") { e.clone() } else { format!("redis://{e}/") };
                    let c = redis::Client::open(url.as_str()).with_context(|| format!("bad redis endpoint {e:?}"))?;
                    let conn = c
                        .get_multiplexed_async_connection()
                        .await
                        .with_context(|| format!("cannot reach redis at {e}; is it running (bench/compare.sh starts one)?"))?;
                    conns.push(conn);
                }
                Target::Redis { conns, next: AtomicUsize::new(0) }
            }
        })
    }

    /// The target's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Ringkv { .. } => "ringkv",
            Target::Etcd { .. } => "etcd",
            Target::Http { .. } => "http",
            Target::Redis { .. } => "redis",
        }
    }

    /// Reads `key`.
    pub async fn read(&self, key: &[u8]) -> Outcome {
        match self {
            Target::Ringkv { client, read, .. } => {
                client.get(key, Options::level(*read)).await.map(|r| r.receipt.map(|x| x.coordinator)).map_err(|e| e.kind().to_string())
            }
            Target::Etcd { channels, serializable, next } => {
                let req = etcd::RangeRequest { key: key.to_vec(), serializable: *serializable, ..Default::default() };
                etcd::kv_client::KvClient::new(pick(channels, next))
                    .range(req)
                    .await
                    .map(|_| None)
                    .map_err(|s| format!("{:?}", s.code()).to_lowercase())
            }
            Target::Http { http, bases, read, next, .. } => {
                let url = format!("{}{}{read}", pick(bases, next), String::from_utf8_lossy(key));
                http_outcome(http.get(url).send().await).await
            }
            Target::Redis { conns, next } => {
                let mut c = pick(conns, next);
                c.get::<_, Option<Vec<u8>>>(key).await.map(|_| None).map_err(|e| format!("{:?}", e.kind()).to_lowercase())
            }
        }
    }

    /// Writes `value` to `key`.
    pub async fn write(&self, key: &[u8], value: &[u8]) -> Outcome {
        match self {
            Target::Ringkv { client, write, .. } => client
                .put(key, value, None, Options::level(*write))
                .await
                .map(|r| r.receipt.map(|x| x.coordinator))
                .map_err(|e| e.kind().to_string()),
            Target::Etcd { channels, next, .. } => {
                let req = etcd::PutRequest { key: key.to_vec(), value: value.to_vec(), lease: 0 };
                etcd::kv_client::KvClient::new(pick(channels, next))
                    .put(req)
                    .await
                    .map(|_| None)
                    .map_err(|s| format!("{:?}", s.code()).to_lowercase())
            }
            Target::Http { http, bases, write, next, .. } => {
                let url = format!("{}{}{write}", pick(bases, next), String::from_utf8_lossy(key));
                http_outcome(http.put(url).body(value.to_vec()).send().await).await
            }
            Target::Redis { conns, next } => {
                let mut c = pick(conns, next);
                c.set::<_, _, ()>(key, value).await.map(|_| None).map_err(|e| format!("{:?}", e.kind()).to_lowercase())
            }
        }
    }

    /// A no-op round trip: ringkv's Ping, Redis's PING. etcd has none in
    /// the slice of its API spoken here.
    pub async fn ping(&self) -> Outcome {
        match self {
            Target::Ringkv { client, .. } => client.ping().await.map(|_| None).map_err(|e| e.kind().to_string()),
            Target::Etcd { .. } | Target::Http { .. } => Err("unsupported".into()),
            Target::Redis { conns, next } => {
                let mut c = pick(conns, next);
                redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| None).map_err(|e| format!("{:?}", e.kind()).to_lowercase())
            }
        }
    }
}

/// A gateway answer as an outcome: 200 and 404 (a key not yet written)
/// are served, with the coordinator from its header; anything else is an
/// error named by the body's `error` field (the client's error kinds).
async fn http_outcome(sent: reqwest::Result<reqwest::Response>) -> Outcome {
    let resp = sent.map_err(|e| if e.is_connect() { "connect".to_string() } else { "http".to_string() })?;
    let status = resp.status();
    let coordinator = resp.headers().get("x-ringkv-coordinator").and_then(|v| v.to_str().ok()).map(String::from);
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        // Read the body so the connection goes back to the pool.
        resp.bytes().await.map_err(|_| "http".to_string())?;
        return Ok(coordinator);
    }
    let kind = resp.json::<serde_json::Value>().await.ok().and_then(|v| v["error"].as_str().map(String::from));
    Err(kind.unwrap_or_else(|| format!("http_{}", status.as_u16())))
}
