//! Wires a node together and runs it until shutdown.
//!
//! [`run`] opens storage, establishes the node's identity and tokens, serves
//! `Kv`, `Peer`, `Admin` and `grpc.health.v1` on one port (and, when set,
//! metrics and HTTP probes on `http_listen`), and runs the background tasks
//! (gossip, group commit, joining). All of it hangs off one
//! `CancellationToken`. Cancel it and the server stops accepting, in-flight
//! work drains, and a last sync runs.
//!
//! Everything that differs between real sockets and a simulation comes in
//! through [`Env`]: the transport, the clock and (optionally) a storage
//! engine that outlives the node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use ringkv_proto::v1::{admin_server::AdminServer, kv_server::KvServer, peer_server::PeerServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::admit::Admit;
use crate::antientropy;
use crate::clock::{millis, Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::hints::{self, Hints};
use crate::membership::{self, DetectorConfig, Member, Membership, NodeState};
use crate::metrics;
use crate::peer_client::{Peers, MAX_MESSAGE_BYTES};
use crate::ring::Token;
use crate::security::{record_path, Gate, Security, Surface};
use crate::service::{AdminService, KvService, PeerService};
pub use crate::shared::Shared;
use crate::storage::{self, Storage};
use crate::store::Store;
use crate::transport::{TcpTransport, Transport};
use crate::version::HlcClock;

/// How long shutdown waits for in-flight requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// The world a node runs in.
pub struct Env {
    /// How it listens and dials.
    pub transport: Arc<dyn Transport>,
    /// Its wall clock.
    pub clock: Arc<dyn Clock>,
    /// A storage engine to use instead of opening `config.storage` (for
    /// simulations, where the engine must survive a simulated crash).
    pub storage: Option<Arc<dyn Storage>>,
}

impl Env {
    /// Real sockets, with outgoing connections bound to the listen IP, and
    /// the system clock.
    pub fn real(config: &Config) -> Self {
        let local_ip = config.listen.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        Self { transport: Arc::new(TcpTransport { local_ip }), clock: Arc::new(SystemClock::default()), storage: None }
    }
}

/// Runs a node until `shutdown` is cancelled.
pub async fn run(config: Config, env: Env, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    let security = Arc::new(Security::load(&config)?);
    let engine = match env.storage {
        Some(s) => s,
        None => storage::open(config.storage, &config.data_dir, config.commit_log)?,
    };
    let store = Arc::new(Store::new(engine.clone(), config.durability, config.group_commit));

    match store.meta_get::<String>("node_id")? {
        Some(id) if id != config.id => {
            return Err(Error::Config(format!(
                "data dir {} belongs to node {id:?}, not {:?}; use its own id or a fresh --data-dir",
                config.data_dir.display(),
                config.id
            )))
        }
        Some(_) => {}
        None => store.meta_put("node_id", &config.id)?,
    }
    // A removal is checked before `left`: the removed node must not rejoin
    // even with a fresh data dir under this id, so its message says more.
    if let Some(generation) = store.meta_get::<u64>("removed")? {
        return Err(Error::Config(membership::removed_message(&config.id, generation)));
    }
    if store.meta_get::<bool>("left")? == Some(true) {
        return Err(Error::Config(format!("node {} was decommissioned; start it with a fresh --data-dir to join again", config.id)));
    }
    // Tokens dropped after a collision are stored empty: the node claims again.
    let tokens: Option<Vec<Token>> = store.meta_get::<Vec<Token>>("tokens")?.filter(|t| !t.is_empty());
    let joining = store.meta_get::<bool>("joining")?.unwrap_or(false);
    let last_generation: u64 = store.meta_get("generation")?.unwrap_or(0);
    let generation = env.clock.wall_ms().max(last_generation + 1);
    store.meta_put("generation", &generation)?;
    // The change log Watch serves is per incarnation: positions name this
    // generation, so one from before a restart asks for a resync.
    let retention = crate::watch::Retention { max_changes: config.watch_log_changes, max_bytes: config.watch_log_bytes };
    store.changes().configure(generation, retention);

    let me = Member {
        id: config.id.clone(),
        address: config.advertised().to_string(),
        tokens: tokens.clone().unwrap_or_default(),
        zone: config.zone.clone(),
        generation,
        version: 1,
        state: if tokens.is_some() && !joining { NodeState::Normal } else { NodeState::Joining },
        heartbeat: 0,
        keys: 0,
        in_flight: 0,
    };
    let detector = DetectorConfig {
        threshold: config.phi_threshold,
        interval_ms: millis(config.gossip_interval),
        pause_ms: millis(config.heartbeat_pause),
    };
    let membership = Arc::new(Membership::new(me, detector));
    if let Some(removed) = store.meta_get::<membership::Removed>("removed_nodes")? {
        membership.merge_removed(removed);
    }
    if let Some(known) = store.meta_get::<Vec<Member>>("members")? {
        membership.merge(known);
    }
    let seed = config.rng_seed.unwrap_or_else(|| env.clock.wall_ms() ^ u64::from(crc32fast::hash(config.id.as_bytes())));
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let faults = Arc::new(Faults::new(rng.clone()));
    let credentials = security.peer_credentials().clone();
    let peers = Arc::new(Peers::new(env.transport.clone(), faults.clone(), membership.clone(), config.peer_timeout, credentials));
    let hints = Arc::new(Hints::open(store.clone())?);
    let hlc = Arc::new(HlcClock::new(config.id.clone(), millis(config.max_clock_skew)));
    let admit = Arc::new(Admit::new(&config, hlc.clone(), env.clock.clone()));
    let (rate_limit_per_sec, rate_limit_burst) = (config.rate_limit_per_sec, config.rate_limit_burst);
    let accept_lower = config.enable_fault_injection && config.break_paxos == crate::paxos::Break::AcceptLowerBallot;
    let paxos = Arc::new(crate::paxos::Acceptor::open(store.clone(), accept_lower)?);
    let shared = Arc::new(Shared {
        hlc,
        admit,
        actor: format!("{}@{generation}", config.id),
        clock_watch: crate::clock::ClockWatch::new(millis(config.max_clock_skew)),
        config: Arc::new(config),
        store,
        membership,
        peers,
        clock: env.clock,
        faults,
        rng,
        anti_entropy: Default::default(),
        hints,
        in_flight: Default::default(),
        rate_limits: crate::rate_limit::RateLimits::new(rate_limit_per_sec, rate_limit_burst),
        security: security.clone(),
        shutdown: shutdown.clone(),
        paxos,
        requests: Default::default(),
    });
    let c = &shared.config;
    tracing::info!(
        node = %c.id, listen = %c.listen, storage = engine.name(), durability = %c.durability,
        replication_factor = c.replication_factor, note = engine.durability_note(), "starting"
    );

    let incoming = env
        .transport
        .listen(&shared.config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", shared.config.listen)))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    // The same statuses, served again on `health_listen` when it is set.
    let health_service_for_probes = health_service.clone();
    // `""` (the server) is SERVING once it listens; `ringkv.v1.Kv` only
    // while this node is `normal` (see `readiness`).
    health.set_not_serving::<KvServer<KvService>>().await;

    let limit = MAX_MESSAGE_BYTES;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls() {
        builder = builder.tls_config(tls).map_err(|e| Error::Config(format!("TLS settings: {e}")))?;
    }
    // The gates need the RPC's path, which interceptors do not see.
    let mut builder = builder.layer(tower::util::MapRequestLayer::new(record_path::<tonic::body::Body>));
    let gate = |surface| Gate::new(security.clone(), surface);
    let kv = KvServer::new(KvService::new(shared.clone())).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let peer = PeerServer::new(PeerService::new(shared.clone())).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let admin = AdminServer::new(AdminService::new(shared.clone())).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let server = builder
        .add_service(health_service)
        .add_service(InterceptedService::new(kv, gate(Surface::Kv)))
        .add_service(InterceptedService::new(peer, gate(Surface::Peer)))
        .add_service(InterceptedService::new(admin, gate(Surface::Admin)))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    let mut tasks = JoinSet::new();
    tasks.spawn(shared.store.clone().run_group_commit(shutdown.clone()));
    tasks.spawn(membership::join(shared.gossip(), shutdown.clone()));
    tasks.spawn(gossip(shared.clone(), shutdown.clone()));
    tasks.spawn(antientropy::run_worker(shared.repair(), shutdown.clone()));
    let replayer = hints::Replayer::new(
        &shared.config.id,
        shared.hints.clone(),
        shared.peers.clone(),
        shared.membership.clone(),
        shared.clock.clone(),
        &shared.config,
    );
    tasks.spawn(replayer.run(shutdown.clone()));
    tasks.spawn(readiness(shared.clone(), health, shutdown.clone()));
    let blocking = shared.store.engine().blocking();
    tasks.spawn(crate::paxos::gc::run(shared.paxos.clone(), shared.clock.clone(), blocking, shared.config.id.clone(), shutdown.clone()));
    if security.tokens_file().is_some() {
        tasks.spawn(reload_on_hangup(security.clone(), shutdown.clone()));
    }
    tracing::info!(node = %shared.config.id, listen = %shared.config.listen, "serving");

    if let Some(addr) = &shared.config.health_listen {
        let probes =
            env.transport.listen(addr).await.map_err(|e| Error::Config(format!("cannot listen on {addr} (health_listen): {e}")))?;
        let health_only = tonic::transport::Server::builder()
            .add_service(health_service_for_probes)
            .serve_with_incoming_shutdown(probes, shutdown.clone().cancelled_owned());
        tasks.spawn(async move {
            if let Err(e) = health_only.await {
                tracing::error!(error = %e, "the health listener failed");
            }
        });
        tracing::info!(node = %shared.config.id, health_listen = %addr, "serving grpc.health.v1 in plaintext for probes");
    }
    if let Some(addr) = &shared.config.http_listen {
        let http = env.transport.listen(addr).await.map_err(|e| Error::Config(format!("cannot listen on {addr} (http_listen): {e}")))?;
        tasks.spawn(serve_http(shared.clone(), http, engine.blocking()));
        tracing::info!(node = %shared.config.id, http_listen = %addr, "serving /metrics, /healthz and /readyz over plain HTTP");
    }
    let served = server.await;
    shutdown.cancel();
    if tokio::time::timeout(DRAIN_DEADLINE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("background tasks did not stop within the drain deadline");
        tasks.abort_all();
    }
    shared.store.engine().sync()?;
    tracing::info!(node = %shared.config.id, "stopped");
    served.map_err(|e| Error::Config(format!("server failed: {e}")))?;
    // Stopped because it learned it was removed: exit as a refused start would.
    match shared.store.meta_get::<u64>("removed")? {
        Some(generation) => Err(Error::Config(membership::removed_message(&shared.config.id, generation))),
        None => Ok(()),
    }
}

/// Gossip, persisting the member list whenever it changes. Each round also
/// looks at the wall clock, so the step watch's baseline stays fresh and
/// slow drift between writes never adds up to a false step.
async fn gossip(s: Arc<Shared>, shutdown: CancellationToken) {
    let mut seen = (s.membership.members(), s.membership.removed());
    let watcher = async {
        let mut tick = tokio::time::interval(s.config.gossip_interval);
        loop {
            tick.tick().await;
            s.clock_watch.check(s.clock.wall_ms());
            let now = (s.membership.members(), s.membership.removed());
            if now != seen {
                s.save_members();
                seen = now;
            }
        }
    };
    tokio::select! {
        biased;
        _ = membership::run_gossip(s.gossip(), shutdown.clone()) => {}
        _ = watcher => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Re-reads the token file on every SIGHUP. A bad file is logged and the
/// principals already loaded stay in force, so a typo never locks
/// everyone out.
async fn reload_on_hangup(security: Arc<Security>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the token file is read only at start");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangups.recv() => match security.reload() {
                    Ok(n) => tracing::info!(principals = n, "token file reloaded"),
                    Err(e) => tracing::error!(error = %e, "token file not reloaded; the previous principals stay in force"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    shutdown.cancelled().await;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `incoming` (`metrics/`),
/// over a registry of this node's own series. `on_disk`: the engine keeps
/// files, whose size a scrape measures.
async fn serve_http(s: Arc<Shared>, incoming: crate::transport::Incoming, on_disk: bool) {
    let collector = metrics::NodeCollector {
        membership: s.membership.clone(),
        hints: s.hints.clone(),
        anti_entropy: s.anti_entropy.clone(),
        store: s.store.clone(),
        in_flight: s.in_flight.clone(),
        data_dir: on_disk.then(|| s.config.data_dir.clone()),
        shutdown: s.shutdown.clone(),
    };
    let registry = metrics::registry(&s.requests, s.store.commit_metrics(), collector);
    let router = metrics::router(registry, s.membership.clone(), s.shutdown.clone(), on_disk);
    if let Err(e) = metrics::serve(incoming, router, s.shutdown.clone()).await {
        tracing::error!(node = %s.config.id, error = %e, "the http_listen server failed; metrics and HTTP probes are down");
    }
}

/// How often readiness looks at this node's state.
const READINESS_POLL: Duration = Duration::from_millis(200);

/// Keeps `grpc.health.v1`'s status for `ringkv.v1.Kv` in step with this
/// node's lifecycle: SERVING while it is `normal`, NOT_SERVING while it
/// waits for a ring, joins, leaves or has left. A Kubernetes readiness
/// probe (or a load balancer) can then keep clients away from a node that
/// is not yet part of the ring; the server itself (`""`) stays SERVING, so
/// a liveness probe does not restart a node that is still forming.
async fn readiness(s: Arc<Shared>, health: tonic_health::server::HealthReporter, shutdown: CancellationToken) {
    let mut serving = false;
    loop {
        let normal = metrics::readiness(s.membership.member(&s.config.id).as_ref(), false).is_ready();
        if normal != serving {
            serving = normal;
            if serving {
                health.set_serving::<KvServer<KvService>>().await;
            } else {
                health.set_not_serving::<KvServer<KvService>>().await;
            }
            tracing::info!(node = %s.config.id, serving, "readiness (grpc.health.v1, ringkv.v1.Kv) changed");
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(READINESS_POLL) => {}
        }
    }
}
