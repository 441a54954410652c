//! The ringkv Rust client.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A one-node cluster in this process, so the example runs as a test.
//! # let dir = tempfile::tempdir()?;
//! # let addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
//! # let config = ringkv_node::Config { listen: addr.clone(), seeds: vec![addr.clone()], data_dir: dir.path().into(),
//! #     replication_factor: 1, storage: ringkv_node::Engine::Memory, ..Default::default() };
//! # let stop = tokio_util::sync::CancellationToken::new();
//! # tokio::spawn(ringkv_node::run(config.clone(), ringkv_node::Env::real(&config), stop.clone()));
//! use ringkv_client::{policy, Client, Level, Options};
//!
//! // Endpoints tried in the order given:
//! let client = Client::connect([addr.as_str()]).await?;
//! # let t0 = std::time::Instant::now();
//! # // Until the node has formed its one-node ring (a ping answers as soon as it listens).
//! # while client.put(b"warm-up", b"", None, Options::level(Level::One)).await.is_err() && t0.elapsed().as_secs() < 10 { tokio::time::sleep(std::time::Duration::from_millis(20)).await; }
//! let put = client.put(b"user:1", b"ada", None, Options::level(Level::Quorum)).await?;
//! let got = client.get(b"user:1", Options::level(Level::One)).await?;
//! assert_eq!(got.siblings[0].value, b"ada");
//! assert_eq!(put.receipt.unwrap().acked, 1, "one replica in this one-node cluster");
//!
//! // Or discover the cluster and route each request to a replica of its key:
//! let routed = Client::builder()
//!     .endpoints([addr.as_str()])
//!     .policy(Box::new(policy::TokenAware::new(Box::new(policy::LeastOutstanding))))
//!     .build()
//!     .await?;
//! let got = routed.get(b"user:1", Options::level(Level::One)).await?;
//! assert_eq!(got.receipt.unwrap().forwarded_from, "", "no forwarding hop");
//! # stop.cancel();
//! # Ok(()) }
//! ```
//!
//! Each request carries [`Options`]: a consistency level, a read-repair
//! mode and a deadline. Each response carries a receipt (`pb::Receipt`)
//! saying what that choice cost. Errors come back typed: `Unavailable`
//! means nothing was written; `Indeterminate` means the write may have
//! landed.
//!
//! Routing: [`Client::connect`] tries endpoints in order and skips one only
//! when it cannot be reached; [`Client::builder`] with a [`policy`]
//! discovers the ring, health-checks every node over `grpc.health.v1`, and
//! lets the policy pick the coordinator of each request.
#![warn(missing_docs)]

mod cas;
mod coalesce;
mod connect;
mod duration;
mod error;
pub mod policy;
mod routing;
mod watch;

pub use cas::CasResult;
pub use connect::Credentials;
pub use duration::parse_duration;
pub use error::Error;
/// The gRPC channel type the client's connections use: a tonic channel that
/// presents the client's token, if any.
pub use ringkv_proto::channel::Channel;
pub use ringkv_proto::v1 as pb;
pub use watch::{WatchEvent, WatchPosition, WatchStream};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pb::admin_client::AdminClient;
use ringkv_proto::delivery::{Delivery, Failover};
use ringkv_proto::wire::MAX_MESSAGE_BYTES;

/// A consistency level, as the CLI and API name it.
pub use pb::Consistency as Level;
/// A read-repair mode.
pub use pb::ReadRepair;

/// Per-request options.
///
/// ```
/// use std::time::Duration;
/// use ringkv_client::{Level, Options, ReadRepair};
/// let quick = Options::level(Level::One);
/// let careful = Options { level: Level::All, read_repair: ReadRepair::Blocking, timeout: Some(Duration::from_millis(300)), sloppy: false };
/// assert_eq!(quick.level, Level::One);
/// assert_eq!(careful.timeout, Some(Duration::from_millis(300)));
/// assert_eq!(Options::default().level, Level::Unspecified, "the node's default (QUORUM)");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Consistency level; unspecified means the node default (QUORUM).
    pub level: Level,
    /// Read repair for reads; unspecified means blocking.
    pub read_repair: ReadRepair,
    /// Deadline; `None` means the node default.
    pub timeout: Option<Duration>,
    /// Writes: let healthy nodes beyond the preference list stand in for
    /// down replicas (sloppy quorum).
    pub sloppy: bool,
}

impl Options {
    /// Options with just a level.
    pub fn level(level: Level) -> Self {
        Self { level, ..Default::default() }
    }

    fn to_proto(self) -> pb::RequestOptions {
        pb::RequestOptions {
            consistency: self.level as i32,
            read_repair: self.read_repair as i32,
            sloppy: self.sloppy,
            timeout_ms: self.timeout.map_or(0, |t| t.as_millis().min(u32::MAX as u128) as u32),
        }
    }
}

/// A connection to a ringkv cluster.
///
/// [`Client::connect`] tries its endpoints in the order given. A client
/// from [`Client::builder`] with a [`policy`](ClientBuilder::policy)
/// discovers the cluster instead, and routes each request as the policy
/// says. Either way an idempotent request (a get, a scan, a blind put or
/// delete) moves on to the next node when one cannot serve it. A write with
/// a context is retried only when the connection was refused, since it
/// cannot have been delivered; anything else comes back as is
/// (indeterminate outcomes included).
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<(String, Channel)>,
    router: Option<Arc<routing::Router>>,
    credentials: Arc<Credentials>,
    /// Whose token the requests present ([`Client::with_token`]).
    presents: Presents,
    /// Per endpoint, the link that coalesces its concurrent requests
    /// (`coalesce.rs`); made on first use.
    links: Arc<[OnceLock<Arc<coalesce::Link>>]>,
    /// Whether concurrent requests to one node share `Kv.Batch` calls.
    coalesce: bool,
}

/// The token a client's requests present.
#[derive(Clone, Debug, Default)]
enum Presents {
    /// The one in its [`Credentials`], if any.
    #[default]
    Credentials,
    /// This one instead, or none at all.
    Token(Option<Arc<str>>),
}

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn example() -> Result<(), ringkv_client::Error> {
/// use ringkv_client::{policy, Client};
/// let client = Client::builder()
///     .endpoints(["127.0.0.1:7101"])
///     .policy(Box::new(policy::TokenAware::new(Box::new(policy::LeastOutstanding))))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    endpoints: Vec<String>,
    policy: Option<Box<dyn policy::Policy>>,
    client_id: String,
    weights: std::collections::BTreeMap<String, u32>,
    health_interval: Duration,
    refresh_interval: Duration,
    credentials: Credentials,
    coalesce: bool,
}

impl ClientBuilder {
    /// TLS and a token for a secured cluster (default: plaintext, no token).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Nodes to start from (`host:port`).
    pub fn endpoints<S: AsRef<str>>(mut self, endpoints: impl IntoIterator<Item = S>) -> Self {
        self.endpoints = endpoints.into_iter().map(|e| e.as_ref().to_string()).collect();
        self
    }

    /// Route with `policy` (default: the endpoints in the order given).
    pub fn policy(mut self, policy: Box<dyn policy::Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A stable id for sticky routing (default: a random one).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Weights for weighted round robin, by node id (default 1).
    pub fn weight(mut self, node: impl Into<String>, weight: u32) -> Self {
        self.weights.insert(node.into(), weight);
        self
    }

    /// How often to probe each node's `grpc.health.v1` (default 2 s).
    pub fn health_check_interval(mut self, d: Duration) -> Self {
        self.health_interval = d;
        self
    }

    /// How often to refresh the cluster view (default 10 s).
    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    /// Whether concurrent requests to one node share `Kv.Batch` calls
    /// (default: yes); see [`Client::coalescing`].
    pub fn coalescing(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Connects; with a policy, also discovers the cluster.
    pub async fn build(self) -> Result<Client, Error> {
        let mut client = Client::connect_with(&self.endpoints, self.credentials).await?.coalescing(self.coalesce);
        if let Some(policy) = self.policy {
            let router = Arc::new(routing::Router::new(policy, self.client_id, self.weights, client.credentials.clone()));
            router.discover(&client.endpoints).await?;
            let bg =
                routing::Router::background(Arc::downgrade(&router), client.endpoints.clone(), self.health_interval, self.refresh_interval);
            tokio::spawn(bg);
            client.router = Some(router);
        }
        Ok(client)
    }
}

impl Client {
    /// Prepares connections to `endpoints` (`host:port`). Connections open
    /// lazily, so this fails only on malformed addresses.
    pub async fn connect<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        Self::connect_with(endpoints, Credentials::default()).await
    }

    /// Like [`Client::connect`], presenting `credentials` (TLS, a client
    /// certificate, a token) to every node.
    pub async fn connect_with<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>, credentials: Credentials) -> Result<Self, Error> {
        let mut out = Vec::new();
        for e in endpoints {
            let addr = e.as_ref().trim().to_string();
            if addr.is_empty() {
                continue;
            }
            let ch = credentials.channel(&addr)?;
            out.push((addr, ch));
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument { message: "no endpoints given; pass --endpoints host:port[,host:port...]".into() });
        }
        Ok(Self::over(out, Arc::new(credentials)))
    }

    fn over(endpoints: Vec<(String, Channel)>, credentials: Arc<Credentials>) -> Self {
        let links = endpoints.iter().map(|_| OnceLock::new()).collect();
        Self { endpoints, router: None, credentials, presents: Presents::Credentials, links, coalesce: true }
    }

    /// The same client with coalescing on or off (default: on).
    ///
    /// On, a get, put or delete that finds two calls already out to its
    /// node (plain or batch) waits for the next one to finish and
    /// travels with the others then waiting, in one `Kv.Batch` call. Each
    /// keeps its own answer, receipt and error, and comes back as soon as
    /// its node has served it. A client with one request at a time sends
    /// plain calls either way. Off, every request is its own call.
    pub fn coalescing(self, on: bool) -> Self {
        Self { coalesce: on, ..self }
    }

    /// A builder for a client with a load-balancing policy.
    pub fn builder() -> ClientBuilder {
        let id = format!("client-{:x}", rand::random::<u64>());
        ClientBuilder {
            endpoints: Vec::new(),
            policy: None,
            client_id: id,
            weights: Default::default(),
            health_interval: Duration::from_secs(2),
            refresh_interval: Duration::from_secs(10),
            credentials: Credentials::default(),
            coalesce: true,
        }
    }

    /// The routing policy's name ("endpoints" without one).
    pub fn policy_name(&self) -> String {
        self.router.as_ref().map_or("endpoints".into(), |r| r.policy.name())
    }

    /// A client over channels built elsewhere, e.g. through a simulated
    /// network. Each pair is an endpoint name and its channel.
    pub fn from_channels(endpoints: Vec<(String, Channel)>) -> Self {
        Self::over(endpoints, Arc::default())
    }

    /// The same client (its connections, routing and health checks shared)
    /// whose requests present `token` instead of the credentials' token;
    /// `None` presents none. For a gateway that passes each caller's own
    /// bearer token through to the nodes. Discovery and health checks keep
    /// the credentials' token.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let client = ringkv_client::Client::connect(["127.0.0.1:7101"]).await.unwrap();
    /// assert!(client.with_token(Some("caller-token")).is_ok());
    /// let err = client.with_token(Some("bad\ntoken")).err().expect("a newline cannot be sent");
    /// assert_eq!(err.kind(), "invalid_argument");
    /// # }
    /// ```
    pub fn with_token(&self, token: Option<&str>) -> Result<Client, Error> {
        if let (Some((_, ch)), Some(_)) = (self.endpoints.first(), token) {
            // Checked once here, so that sending cannot fail on it later.
            Channel::new(ch.inner().clone(), token).map_err(|message| Error::InvalidArgument { message })?;
        }
        Ok(Client { presents: Presents::Token(token.map(Arc::from)), ..self.clone() })
    }

    /// `ch` as this client's requests present it: with [`Client::with_token`]'s
    /// token in place of the credentials' one.
    fn presenting(&self, ch: Channel) -> Channel {
        match &self.presents {
            Presents::Credentials => ch,
            Presents::Token(token) => Channel::new(ch.inner().clone(), token.as_deref()).expect("the token was checked by with_token"),
        }
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> Vec<&str> {
        self.endpoints.iter().map(|(a, _)| a.as_str()).collect()
    }

    /// An admin client for one endpoint.
    pub fn admin(&self, endpoint: &str) -> Result<AdminClient<Channel>, Error> {
        let ch = match self.endpoints.iter().find(|(a, _)| a == endpoint) {
            Some((_, ch)) => ch.clone(),
            None => self.credentials.channel(endpoint)?,
        };
        Ok(AdminClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Runs `f` on the first endpoint that can be reached.
    async fn first<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.route(policy::OpKind::Read, b"", true, |hop| f(hop.ch)).await
    }

    /// Runs `f` on the nodes in routing order until one serves it. Moves
    /// on after a transport failure (or, for an idempotent request, after
    /// `Unavailable` from a node that could not reach enough replicas).
    async fn route<T, F, Fut>(&self, kind: policy::OpKind, key: &[u8], idempotent: bool, f: F) -> Result<T, Error>
    where
        F: Fn(Hop) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let routed = self.router.as_ref().map(|r| r.order(&policy::Request { key, kind, client_id: &r.client_id }));
        type Candidate<'a> = (&'a Channel, &'a OnceLock<Arc<coalesce::Link>>, Option<&'a Arc<routing::NodeState>>);
        let candidates: Vec<Candidate<'_>> = match &routed {
            Some(nodes) => nodes.iter().map(|n| (&n.channel, &n.link, Some(n))).collect(),
            None => self.endpoints.iter().zip(self.links.iter()).map(|((_, ch), link)| (ch, link, None)).collect(),
        };
        let mut last: Option<Error> = None;
        // A write attempt that failed without proof it never arrived makes
        // any later failure indeterminate, never a definite "not written".
        let mut failover = Failover::default();
        let settle = |e: Error, failover: &Failover| match e {
            Error::Unavailable { .. } | Error::Connect { .. } | Error::Other { .. }
                if failover.maybe_landed().is_some() && kind == policy::OpKind::Write =>
            {
                Error::Indeterminate { message: format!("{e}; an earlier attempt on another node may have been applied") }
            }
            e => e,
        };
        for (ch, link, node) in candidates {
            if let Some(n) = &node {
                n.outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // A client presenting a caller's token sends plain calls: a
            // link carries one principal's requests.
            let link = (self.coalesce && matches!(self.presents, Presents::Credentials))
                .then(|| link.get_or_init(|| coalesce::Link::new(ch.clone())).clone());
            let started = std::time::Instant::now();
            let result = f(Hop { ch: self.presenting(ch.clone()), link }).await;
            if let Some(n) = &node {
                n.outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let transport = result.as_ref().err().is_some_and(Error::is_transport);
                routing::Router::record(n, started.elapsed(), transport);
            }
            let delivery = result.as_ref().err().map(Delivery::of_status);
            match result {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if Error::is_transport(&s) && (idempotent || delivery == Some(Delivery::NotSent)) => {
                    failover.failed(delivery.unwrap_or(Delivery::MaybeDelivered), || s.message().to_string());
                    last = Some(Error::Connect { endpoints: self.endpoints().join(","), message: s.message().to_string() })
                }
                Err(s) => {
                    let e = Error::from(s);
                    if idempotent && matches!(e, Error::Unavailable { .. }) && self.router.is_some() {
                        last = Some(e);
                        continue;
                    }
                    return Err(settle(e, &failover));
                }
            }
        }
        let e = last.unwrap_or_else(|| Error::Connect { endpoints: self.endpoints().join(","), message: "no node to send to".into() });
        Err(settle(e, &failover))
    }

    /// Reads a key: its live siblings, causal context and receipt.
    pub async fn get(&self, key: &[u8], opts: Options) -> Result<pb::GetResponse, Error> {
        let req = pb::GetRequest { key: key.to_vec(), options: Some(opts.to_proto()) };
        self.route(policy::OpKind::Read, key, true, |hop| {
            let req = req.clone();
            async move { hop.send(coalesce::Call::Get(req)).await?.get().map(tonic::Response::new) }
        })
        .await
    }

    /// Writes a value. With `context` (from a get) it supersedes exactly
    /// what that read saw; without, it is a blind last-writer-wins write.
    pub async fn put(&self, key: &[u8], value: &[u8], context: Option<Vec<u8>>, opts: Options) -> Result<pb::PutResponse, Error> {
        self.send_put(key, value, context, 0, opts).await
    }

    /// Writes a value that expires `ttl` after the coordinator stamps it
    /// (rounded up to whole milliseconds): from then on reads leave it out,
    /// as if deleted, and its tombstone is purged like a delete's. Reads
    /// report the instant as [`expires_at`]. `context` works as for
    /// [`Client::put`].
    ///
    /// The instant is judged by the clock of whichever node coordinates a
    /// read, so near it a value may vanish up to the cluster's
    /// `max_clock_skew` early or late (README, "TTL").
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    /// # let config = ringkv_node::Config { listen: addr.clone(), seeds: vec![addr.clone()], data_dir: dir.path().into(),
    /// #     replication_factor: 1, storage: ringkv_node::Engine::Memory, ..Default::default() };
    /// # let stop = tokio_util::sync::CancellationToken::new();
    /// # tokio::spawn(ringkv_node::run(config.clone(), ringkv_node::Env::real(&config), stop.clone()));
    /// # let client = ringkv_client::Client::connect([addr.as_str()]).await?;
    /// # let t0 = std::time::Instant::now();
    /// use std::time::{Duration, SystemTime};
    /// use ringkv_client::{expires_at, Level, Options};
    /// # while client.put(b"warm-up", b"", None, Options::level(Level::One)).await.is_err() && t0.elapsed().as_secs() < 10 { tokio::time::sleep(Duration::from_millis(20)).await; }
    /// let opts = Options::level(Level::Quorum);
    /// client.put_with_ttl(b"session:42", b"token", None, Duration::from_secs(30), opts).await?;
    /// let got = client.get(b"session:42", opts).await?;
    /// let at = expires_at(&got.siblings[0]).expect("it has a TTL");
    /// assert!(at > SystemTime::now() && at <= SystemTime::now() + Duration::from_secs(31));
    /// # stop.cancel();
    /// # Ok(()) }
    /// ```
    pub async fn put_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        context: Option<Vec<u8>>,
        ttl: Duration,
        opts: Options,
    ) -> Result<pb::PutResponse, Error> {
        let ttl_ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(Error::InvalidArgument { message: "a TTL must be positive; use put for a value that never expires".into() });
        }
        self.send_put(key, value, context, ttl_ms, opts).await
    }

    async fn send_put(
        &self,
        key: &[u8],
        value: &[u8],
        context: Option<Vec<u8>>,
        ttl_ms: u64,
        opts: Options,
    ) -> Result<pb::PutResponse, Error> {
        let blind = context.is_none();
        let req = pb::PutRequest { key: key.to_vec(), value: value.to_vec(), context, options: Some(opts.to_proto()), ttl_ms };
        self.route(policy::OpKind::Write, key, blind, |hop| {
            let req = req.clone();
            async move { hop.send(coalesce::Call::Put(req)).await?.put().map(tonic::Response::new) }
        })
        .await
    }

    /// Writes a value that supersedes exactly what the read behind
    /// `context` saw (siblings written concurrently survive beside it).
    /// Never retried on another node unless the connection was refused.
    pub async fn put_with_context(&self, key: &[u8], value: &[u8], context: Vec<u8>, opts: Options) -> Result<pb::PutResponse, Error> {
        self.put(key, value, Some(context), opts).await
    }

    /// Reads `key` and, when it has concurrent siblings, writes back
    /// `merge(siblings)` with the read's context, so the merged value
    /// replaces them. Returns the value now stored (`None` when the key is
    /// absent), and whether a merge was written.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    /// # let config = ringkv_node::Config { listen: addr.clone(), seeds: vec![addr.clone()], data_dir: dir.path().into(),
    /// #     replication_factor: 1, storage: ringkv_node::Engine::Memory, ..Default::default() };
    /// # let stop = tokio_util::sync::CancellationToken::new();
    /// # tokio::spawn(ringkv_node::run(config.clone(), ringkv_node::Env::real(&config), stop.clone()));
    /// # let client = ringkv_client::Client::connect([addr.as_str()]).await?;
    /// # let t0 = std::time::Instant::now();
    /// use ringkv_client::{Level, Options};
    /// # // Until the node has formed its one-node ring (a ping answers as soon as it listens).
    /// # while client.put(b"warm-up", b"", None, Options::level(Level::One)).await.is_err() && t0.elapsed().as_secs() < 10 { tokio::time::sleep(std::time::Duration::from_millis(20)).await; }
    /// let opts = Options::level(Level::Quorum);
    /// client.put(b"cart", b"milk", None, opts).await?;
    /// let ctx = client.get(b"cart", opts).await?.context;
    /// // Two writers update the same version concurrently: siblings.
    /// client.put_with_context(b"cart", b"milk,eggs", ctx.clone(), opts).await?;
    /// client.put_with_context(b"cart", b"milk,bread", ctx, opts).await?;
    /// assert_eq!(client.get(b"cart", opts).await?.siblings.len(), 2);
    /// // Merge them as a set union, written back with the context.
    /// let union = |siblings: &[ringkv_client::pb::Sibling]| {
    ///     let mut items: Vec<String> = siblings.iter().flat_map(|s| String::from_utf8_lossy(&s.value).split(',').map(String::from).collect::<Vec<_>>()).collect();
    ///     items.sort();
    ///     items.dedup();
    ///     items.join(",").into_bytes()
    /// };
    /// let (value, merged) = client.resolve(b"cart", opts, union).await?;
    /// assert!(merged);
    /// assert_eq!(value.as_deref(), Some(&b"bread,eggs,milk"[..]));
    /// assert_eq!(client.get(b"cart", opts).await?.siblings.len(), 1);
    /// # stop.cancel();
    /// # Ok(()) }
    /// ```
    pub async fn resolve(
        &self,
        key: &[u8],
        opts: Options,
        merge: impl FnOnce(&[pb::Sibling]) -> Vec<u8>,
    ) -> Result<(Option<Vec<u8>>, bool), Error> {
        let got = self.get(key, opts).await?;
        match got.siblings.len() {
            0 => Ok((None, false)),
            1 => Ok((Some(got.siblings[0].value.clone()), false)),
            _ => {
                let value = merge(&got.siblings);
                self.put_with_context(key, &value, got.context, opts).await?;
                Ok((Some(value), true))
            }
        }
    }

    /// Deletes a key (writes a tombstone).
    pub async fn delete(&self, key: &[u8], context: Option<Vec<u8>>, opts: Options) -> Result<pb::DeleteResponse, Error> {
        let blind = context.is_none();
        let req = pb::DeleteRequest { key: key.to_vec(), context, options: Some(opts.to_proto()) };
        self.route(policy::OpKind::Write, key, blind, |hop| {
            let req = req.clone();
            async move { hop.send(coalesce::Call::Delete(req)).await?.delete().map(tonic::Response::new) }
        })
        .await
    }

    /// One page of live keys under `prefix`, after `start_after`.
    ///
    /// Page with the resume key: while `more` is set, ask again with
    /// `start_after = next_start_after`. It can lie past the last entry,
    /// and a page can be empty with `more` set (a run of deleted keys), so
    /// resuming after the last entry is not enough. Against a node that
    /// predates the field, it is filled in from the last entry.
    pub async fn scan(&self, prefix: &[u8], start_after: &[u8], limit: u32, opts: Options) -> Result<pb::ScanResponse, Error> {
        let req = pb::ScanRequest { prefix: prefix.to_vec(), start_after: start_after.to_vec(), limit, options: Some(opts.to_proto()) };
        let mut resp: pb::ScanResponse = self
            .route(policy::OpKind::Scan, b"", true, |hop| {
                let req = req.clone();
                async move { coalesce::kv(&hop.ch).scan(req).await }
            })
            .await?;
        if resp.more && resp.next_start_after.is_empty() {
            resp.next_start_after = resp.entries.last().map(|e| e.key.clone()).unwrap_or_default();
        }
        Ok(resp)
    }

    /// Cluster status as the first reachable endpoint sees it.
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        self.first(|ch| async move { AdminClient::new(ch).status(pb::StatusRequest {}).await }).await
    }

    /// The ring as the first reachable endpoint sees it.
    pub async fn ring(&self) -> Result<pb::RingResponse, Error> {
        self.first(|ch| async move { AdminClient::new(ch).ring(pb::RingRequest {}).await }).await
    }

    /// A no-op round trip to the first reachable node: the gRPC floor that
    /// `ringkv bench --workload ping` measures.
    pub async fn ping(&self) -> Result<(), Error> {
        self.first(|ch| async move { pb::peer_client::PeerClient::new(ch).ping(pb::PingRequest {}).await }).await.map(|_| ())
    }

    /// Every replica's stored version of a key, side by side.
    pub async fn inspect(&self, key: &[u8]) -> Result<pb::InspectResponse, Error> {
        let req = pb::InspectRequest { key: key.to_vec() };
        self.first(|ch| {
            let req = req.clone();
            // Every replica's siblings of a large value add up past tonic's
            // 4 MiB default.
            async move { AdminClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES).inspect(req).await }
        })
        .await
    }
}

/// One attempt's way to a node: its channel (presenting the client's
/// token) and, when coalescing, the node's link.
struct Hop {
    ch: Channel,
    link: Option<Arc<coalesce::Link>>,
}

impl Hop {
    /// Sends a get, put or delete: through the link, or as its own call.
    async fn send(self, call: coalesce::Call) -> Result<coalesce::Answer, tonic::Status> {
        match self.link {
            Some(link) => link.send(self.ch, call).await,
            None => coalesce::direct(self.ch, call).await,
        }
    }
}

/// The newest live sibling by HLC: last-writer-wins resolution.
///
/// ```
/// use ringkv_client::{lww, pb};
/// let at = |wall_ms, node: &str| Some(pb::Hlc { wall_ms, logical: 0, node: node.into() });
/// let siblings = vec![
///     pb::Sibling { value: b"old".to_vec(), hlc: at(1_000, "n1"), ..Default::default() },
///     pb::Sibling { value: b"new".to_vec(), hlc: at(2_000, "n2"), ..Default::default() },
/// ];
/// assert_eq!(lww(&siblings).unwrap().value, b"new");
/// assert!(lww(&[]).is_none());
/// ```
pub fn lww(siblings: &[pb::Sibling]) -> Option<&pb::Sibling> {
    siblings.iter().max_by(|a, b| {
        let key = |s: &pb::Sibling| s.hlc.as_ref().map(|h| (h.wall_ms, h.logical, h.node.clone()));
        key(a).cmp(&key(b))
    })
}

/// When a sibling expires, if it was written with a TTL
/// ([`Client::put_with_ttl`]): the coordinator's HLC wall time at the write
/// plus the TTL. `None` for a value that never expires.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ringkv_client::{expires_at, pb};
/// let s = pb::Sibling { value: b"v".to_vec(), expires_at_ms: 1_700_000_030_000, ..Default::default() };
/// assert_eq!(expires_at(&s), Some(UNIX_EPOCH + Duration::from_millis(1_700_000_030_000)));
/// assert_eq!(expires_at(&pb::Sibling::default()), None);
/// ```
pub fn expires_at(sibling: &pb::Sibling) -> Option<std::time::SystemTime> {
    (sibling.expires_at_ms > 0).then(|| std::time::UNIX_EPOCH + Duration::from_millis(sibling.expires_at_ms))
}
