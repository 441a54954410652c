//! Routing for a client built with a policy: the cluster view (members,
//! zones, tokens, gossiped load) discovered from any reachable node and
//! refreshed in the background; per-node counters (outstanding requests,
//! EWMA latency, consecutive errors); and `grpc.health.v1` health checks.
//!
//! Health checks are the client's own mechanism: the seed's "the balancer
//! calls /health". The nodes' heartbeats between themselves are a
//! different thing (`node/src/membership/`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::pb;
use crate::policy::{NodeView, Policy, Request, View};
use crate::{Channel, Credentials, Error};

/// Consecutive request failures that mark a node unhealthy until a health
/// check passes.
const UNHEALTHY_AFTER: u32 = 3;
/// Weight of the newest sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.2;

/// One node as the client tracks it.
pub(crate) struct NodeState {
    pub id: String,
    pub addr: String,
    zone: String,
    pub channel: Channel,
    /// Coalesces this node's concurrent requests (`coalesce.rs`).
    pub link: OnceLock<Arc<crate::coalesce::Link>>,
    pub outstanding: AtomicU64,
    ewma_us: Mutex<f64>,
    healthy: AtomicBool,
    errors: AtomicU32,
    load: AtomicU64,
}

/// The routing state behind a policy-driven client.
pub(crate) struct Router {
    nodes: RwLock<Vec<Arc<NodeState>>>,
    tokens: RwLock<Vec<(u64, String)>>,
    replication_factor: AtomicUsize,
    weights: BTreeMap<String, u32>,
    pub policy: Box<dyn Policy>,
    pub client_id: String,
    credentials: Arc<Credentials>,
}

impl Router {
    pub fn new(policy: Box<dyn Policy>, client_id: String, weights: BTreeMap<String, u32>, credentials: Arc<Credentials>) -> Self {
        Self {
            nodes: RwLock::new(Vec::new()),
            tokens: RwLock::new(Vec::new()),
            replication_factor: AtomicUsize::new(3),
            weights,
            policy,
            client_id,
            credentials,
        }
    }

    /// Learns members, zones, load and tokens from the first node in
    /// `seeds` (then the known nodes) that answers.
    pub async fn discover(&self, seeds: &[(String, Channel)]) -> Result<(), Error> {
        let known: Vec<(String, Channel)> = self.nodes.read().expect("lock").iter().map(|n| (n.addr.clone(), n.channel.clone())).collect();
        let mut last = String::new();
        for (addr, ch) in known.iter().chain(seeds) {
            let mut admin = pb::admin_client::AdminClient::new(ch.clone());
            let (status, ring) = match (admin.status(pb::StatusRequest {}).await, admin.ring(pb::RingRequest {}).await) {
                (Ok(s), Ok(r)) => (s.into_inner(), r.into_inner()),
                (Err(e), _) | (_, Err(e)) => {
                    last = format!("{addr}: {}", e.message());
                    continue;
                }
            };
            self.install(status, ring)?;
            return Ok(());
        }
        Err(Error::Connect { endpoints: seeds.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>().join(","), message: last })
    }

    fn install(&self, status: pb::StatusResponse, ring: pb::RingResponse) -> Result<(), Error> {
        let mut nodes = self.nodes.write().expect("lock");
        let mut next = Vec::new();
        for n in status.nodes.iter().filter(|n| n.state == "normal" || n.state == "leaving") {
            let state = match nodes.iter().find(|o| o.id == n.id && o.addr == n.address) {
                Some(existing) => existing.clone(),
                None => Arc::new(NodeState {
                    id: n.id.clone(),
                    addr: n.address.clone(),
                    zone: n.zone.clone(),
                    channel: self.credentials.channel(&n.address)?,
                    link: OnceLock::new(),
                    outstanding: AtomicU64::new(0),
                    ewma_us: Mutex::new(0.0),
                    healthy: AtomicBool::new(n.liveness == "up"),
                    errors: AtomicU32::new(0),
                    load: AtomicU64::new(0),
                }),
            };
            state.load.store(n.in_flight, Ordering::Relaxed);
            next.push(state);
        }
        *nodes = next;
        *self.tokens.write().expect("lock") = ring.tokens.into_iter().map(|t| (t.token, t.node)).collect();
        self.replication_factor.store(status.replication_factor.max(1) as usize, Ordering::Relaxed);
        Ok(())
    }

    /// The nodes in the order the policy wants for `req`.
    pub fn order(&self, req: &Request<'_>) -> Vec<Arc<NodeState>> {
        let nodes = self.nodes.read().expect("lock").clone();
        let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
        let tokens = self.tokens.read().expect("lock").iter().filter_map(|(t, id)| index.get(id.as_str()).map(|i| (*t, *i))).collect();
        let views = nodes
            .iter()
            .map(|n| NodeView {
                id: n.id.clone(),
                zone: n.zone.clone(),
                healthy: n.healthy.load(Ordering::Relaxed),
                outstanding: n.outstanding.load(Ordering::Relaxed),
                ewma_us: *n.ewma_us.lock().expect("lock"),
                weight: self.weights.get(&n.id).copied().unwrap_or(1),
                load: n.load.load(Ordering::Relaxed),
            })
            .collect();
        let view = View::new(views, tokens, self.replication_factor.load(Ordering::Relaxed));
        self.policy.order(req, &view).into_iter().map(|i| nodes[i].clone()).collect()
    }

    /// Records how a request to `node` went.
    pub fn record(node: &NodeState, took: Duration, failed_transport: bool) {
        if failed_transport {
            if node.errors.fetch_add(1, Ordering::Relaxed) + 1 >= UNHEALTHY_AFTER {
                node.healthy.store(false, Ordering::Relaxed);
            }
            return;
        }
        node.errors.store(0, Ordering::Relaxed);
        node.healthy.store(true, Ordering::Relaxed);
        let mut e = node.ewma_us.lock().expect("lock");
        let us = took.as_micros() as f64;
        *e = if *e == 0.0 { us } else { EWMA_ALPHA * us + (1.0 - EWMA_ALPHA) * *e };
    }

    /// Probes every node's health service.
    async fn check_health(&self) {
        let nodes = self.nodes.read().expect("lock").clone();
        for n in nodes {
            let mut hc = HealthClient::new(n.channel.clone());
            let ok = tokio::time::timeout(Duration::from_secs(1), hc.check(HealthCheckRequest { service: String::new() }))
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32));
            n.healthy.store(ok, Ordering::Relaxed);
            if ok {
                n.errors.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Health checks and view refreshes until the client is dropped.
    pub async fn background(me: Weak<Router>, seeds: Vec<(String, Channel)>, health: Duration, refresh: Duration) {
        let mut health_tick = tokio::time::interval(health);
        let mut refresh_tick = tokio::time::interval(refresh);
        loop {
            tokio::select! {
                biased;
                _ = health_tick.tick() => match me.upgrade() {
                    Some(r) => r.check_health().await,
                    None => return,
                },
                _ = refresh_tick.tick() => match me.upgrade() {
                    Some(r) => { let _ = r.discover(&seeds).await; }
                    None => return,
                },
            }
        }
    }
}
