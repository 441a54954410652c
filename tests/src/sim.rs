//! Turmoil support: the node runs unchanged, with the transport and clock
//! swapped for simulated ones (DESIGN §7).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ringkv_client::{pb, Client};
use ringkv_node::storage::MemoryStorage;
use ringkv_node::transport::{channel, Conn, Incoming, Transport};
use ringkv_node::{Clock, Config, Engine, Env};
use ringkv_proto::v1::admin_client::AdminClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Port every simulated node listens on.
pub const PORT: u16 = 7101;

/// A fixed epoch, so wall time is the same in every run of a seed.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// turmoil's TCP as a ringkv `Transport`.
pub struct SimTransport;

impl Transport for SimTransport {
    fn listen(&self, addr: &str) -> BoxFuture<'static, std::io::Result<Incoming>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            let stream = futures::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(s, remote)| Conn::new(s, Some(remote)));
                Some((conn, l))
            });
            Ok(Box::pin(stream) as Incoming)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'static, std::io::Result<Conn>> {
        let addr = addr.to_string();
        Box::pin(async move { Ok(Conn::new(turmoil::net::TcpStream::connect(addr).await?, None)) })
    }
}

/// The wall time, in ms, of a simulated node whose clock has no offset: the
/// fixed epoch plus simulated elapsed time. Tests compare it with the
/// instants nodes stamp (an expiry, say).
pub fn wall_ms() -> u64 {
    EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// Simulated wall time: a fixed epoch plus simulated elapsed time, plus an
/// offset a test can set to skew one node's clock.
#[derive(Default)]
pub struct SimClock {
    /// Added to this node's wall time, in ms.
    pub offset_ms: std::sync::atomic::AtomicI64,
}

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        wall_ms().saturating_add_signed(self.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set_offset_ms(&self, ms: i64) -> bool {
        self.offset_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
        true
    }
}

/// A simulated node's handles that outlive crashes.
#[derive(Clone)]
pub struct SimNode {
    /// Its storage.
    pub storage: MemoryStorage,
    /// Its clock, for skew injection.
    pub clock: Arc<SimClock>,
}

/// The seed for this run: `RINGKV_SIM_SEED` when set, else `pinned`.
pub fn seed(pinned: u64) -> u64 {
    std::env::var("RINGKV_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(pinned)
}

/// A simulation with the settings every test uses.
pub fn builder(seed: u64) -> turmoil::Builder {
    // RINGKV_SIM_LOG=debug (or any filter) shows the nodes' logs.
    if let Ok(filter) = std::env::var("RINGKV_SIM_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
    let mut b = turmoil::Builder::new();
    b.rng_seed(seed).simulation_duration(Duration::from_secs(120)).tick_duration(Duration::from_millis(1));
    b
}

/// The config of simulated node `i` (1-based) of a cluster seeded by `n1`.
pub fn config(i: usize, seed: u64) -> Config {
    Config {
        id: format!("n{i}"),
        listen: format!("0.0.0.0:{PORT}"),
        advertise: Some(format!("n{i}:{PORT}")),
        seeds: vec![format!("n1:{PORT}")],
        storage: Engine::Memory,
        gossip_interval: Duration::from_millis(500),
        peer_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        rng_seed: Some(seed ^ i as u64),
        // Tests run repair passes themselves.
        anti_entropy_interval: Duration::ZERO,
        // The simulations inject faults through the admin API.
        enable_fault_injection: true,
        // turmoil's network is simulated: no one else can reach it.
        insecure: true,
        ..Config::default()
    }
}

/// Adds `n` nodes as hosts. Node `i` starts `i - 1` simulated seconds in,
/// so that nodes join one at a time (a joining node picks tokens from the
/// ring it sees). Each keeps its storage across crashes.
pub fn add_nodes(sim: &mut turmoil::Sim<'_>, n: usize, seed: u64) -> Vec<SimNode> {
    add_nodes_with(sim, n, seed, |_, _| {})
}

/// [`add_nodes`] with a hook to adjust node `i`'s config.
pub fn add_nodes_with(sim: &mut turmoil::Sim<'_>, n: usize, seed: u64, adjust: impl Fn(usize, &mut Config)) -> Vec<SimNode> {
    (1..=n)
        .map(|i| {
            let mut cfg = config(i, seed);
            adjust(i, &mut cfg);
            add_node(sim, cfg, Duration::from_secs(i as u64 - 1))
        })
        .collect()
}

/// Adds one node as a host that first starts `delay` into the simulation
/// (a restart after a crash starts at once). Returns its storage, which
/// survives crashes.
pub fn add_node(sim: &mut turmoil::Sim<'_>, cfg: Config, delay: Duration) -> SimNode {
    add_host(sim, cfg, Start::After(delay), None)
}

/// Adds one node as a host that first starts once a test sets `start`
/// (checked every 100 simulated ms), for a join at a chosen point of a
/// scenario rather than at a guessed time. Returns its storage, which
/// survives crashes.
pub fn add_node_on(sim: &mut turmoil::Sim<'_>, cfg: Config, start: Arc<AtomicBool>) -> SimNode {
    add_host(sim, cfg, Start::On(start), None)
}

/// The errors a node's `run` stopped with, oldest first.
pub type Stops = Arc<std::sync::Mutex<Vec<String>>>;

/// [`add_node`] for a node expected to stop with an error (a refused
/// start, or learning that it was removed): the error ends its host
/// cleanly instead of failing the simulation, and is kept for the test.
pub fn add_node_expecting_stops(sim: &mut turmoil::Sim<'_>, cfg: Config, delay: Duration) -> (SimNode, Stops) {
    let stops = Stops::default();
    (add_host(sim, cfg, Start::After(delay), Some(stops.clone())), stops)
}

/// When a host first starts.
#[derive(Clone)]
enum Start {
    /// This far into the simulation.
    After(Duration),
    /// Once the flag is set.
    On(Arc<AtomicBool>),
}

fn add_host(sim: &mut turmoil::Sim<'_>, cfg: Config, start: Start, stops: Option<Stops>) -> SimNode {
    let node = SimNode { storage: MemoryStorage::default(), clock: Arc::new(SimClock::default()) };
    let kept = node.clone();
    sim.host(cfg.id.clone(), move || {
        let (store, clock, cfg, start, stops) = (kept.storage.clone(), kept.clock.clone(), cfg.clone(), start.clone(), stops.clone());
        async move {
            match start {
                Start::After(delay) => {
                    let now = turmoil::sim_elapsed().unwrap_or_default();
                    if now < delay {
                        tokio::time::sleep(delay - now).await;
                    }
                }
                Start::On(flag) => {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            let env = Env { transport: Arc::new(SimTransport), clock, storage: Some(Arc::new(store)) };
            match (ringkv_node::run(cfg, env, CancellationToken::new()).await, stops) {
                (Err(e), Some(stops)) => stops.lock().expect("stops lock").push(e.to_string()),
                (result, _) => result?,
            }
            Ok(())
        }
    });
    node
}

/// A client routed to the given simulated nodes, in order.
pub fn client(nodes: &[&str]) -> Client {
    let channels = nodes
        .iter()
        .map(|n| {
            let addr = format!("{n}:{PORT}");
            let ch = channel(Arc::new(SimTransport), &addr, Duration::from_millis(500)).expect("valid address");
            (addr, ch.into())
        })
        .collect();
    Client::from_channels(channels)
}

/// An admin client for one simulated node.
pub fn admin(node: &str) -> AdminClient<Channel> {
    let ch = channel(Arc::new(SimTransport), &format!("{node}:{PORT}"), Duration::from_millis(500)).expect("valid address");
    AdminClient::new(ch)
}

/// Every range's Merkle root on `node`, in range order.
pub async fn roots(node: &str) -> Result<Vec<(u64, u64, Vec<u8>)>, tonic::Status> {
    let r = admin(node).roots(pb::RootsRequest {}).await?.into_inner();
    Ok(r.ranges.into_iter().map(|x| (x.start, x.end, x.root)).collect())
}

/// Runs an anti-entropy pass on `node`.
pub async fn repair(node: &str) -> Result<pb::RepairReport, tonic::Status> {
    Ok(admin(node).repair(pb::RepairRequest::default()).await?.into_inner())
}

/// Runs an anti-entropy pass on `node` over the ranges overlapping `(start, end]`.
pub async fn repair_range(node: &str, start: u64, end: u64) -> Result<pb::RepairReport, tonic::Status> {
    Ok(admin(node).repair(pb::RepairRequest { start: Some(start), end: Some(end) }).await?.into_inner())
}

/// Polls `probe` every 100 simulated ms until it returns true, failing after
/// `within` of simulated time.
pub async fn until<F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !probe().await {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what}: not true within {within:?} of simulated time"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// True when `observer` sees `node` with the given liveness.
pub async fn sees(observer: &str, node: &str, liveness: &str) -> bool {
    match client(&[observer]).status().await {
        Ok(s) => s.nodes.iter().any(|n| n.id == node && n.liveness == liveness && n.state == "normal"),
        Err(_) => false,
    }
}

/// Runs the simulation; on failure, panics with the seed to rerun it.
pub fn run(mut sim: turmoil::Sim<'_>, seed: u64) {
    if let Err(e) = sim.run() {
        panic!("simulation failed: {e}\nrerun: RINGKV_SIM_SEED={seed}");
    }
}
