//! The operator-facing `Admin` service: status, ring, inspect, faults.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::antientropy::run_pass;
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::fault::FaultRule;
use crate::shared::Shared;

/// The largest clock shift a fault may inject: one day.
const MAX_CLOCK_OFFSET_MS: u64 = 86_400_000;

/// Serves `ringkv.v1.Admin`.
pub struct AdminService {
    s: Arc<Shared>,
    coordinator: Coordinator,
}

impl AdminService {
    /// A service over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        Self { coordinator: Coordinator::new(s.clone()), s }
    }
}

impl AdminService {
    fn hint_targets(&self) -> Result<Vec<pb::HintTarget>, Error> {
        let now = self.s.clock.wall_ms();
        let mut out = Vec::new();
        for (target, t) in self.s.hints.pending() {
            let oldest = self.s.hints.oldest_ms(&target)?;
            out.push(pb::HintTarget { target, count: t.count, bytes: t.bytes, oldest_age_ms: oldest.map_or(0, |o| now.saturating_sub(o)) });
        }
        Ok(out)
    }

    /// `FAILED_PRECONDITION` unless this node was started with
    /// `--enable-fault-injection` (`enable_fault_injection`).
    fn fault_injection_enabled(&self) -> Result<(), Status> {
        if self.s.config.enable_fault_injection {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "fault injection is off on node {}; start it with --enable-fault-injection \
             (enable_fault_injection = true) to use `ringkv fault`: it is meant for tests and demos",
            self.s.config.id
        )))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ownership = self.s.membership.ring().ownership();
        let nodes = self
            .s
            .membership
            .members()
            .into_iter()
            .map(|m| pb::NodeStatus {
                liveness: if self.s.membership.is_up(&m.id) { "up" } else { "down" }.into(),
                phi: self.s.membership.phi(&m.id),
                keys: m.keys,
                in_flight: m.in_flight,
                ownership: ownership.get(&m.id).copied().unwrap_or(0.0),
                tokens: m.tokens.len() as u32,
                state: m.state.as_str().into(),
                id: m.id,
                address: m.address,
                zone: m.zone,
            })
            .collect();
        let c = &self.s.config;
        Ok(Response::new(pb::StatusResponse {
            node: c.id.clone(),
            storage: self.s.store.engine().name().into(),
            durability: c.durability.to_string(),
            replication_factor: c.replication_factor as u32,
            nodes,
            local_keys: self.s.store.len()?,
            anti_entropy: Some(self.s.anti_entropy.snapshot(&self.s.store.trees())),
            hints: self.hint_targets()?,
        }))
    }

    async fn ring(&self, _req: Request<pb::RingRequest>) -> Result<Response<pb::RingResponse>, Status> {
        let ring = self.s.membership.ring();
        Ok(Response::new(pb::RingResponse {
            tokens: ring.tokens().iter().map(|(t, n)| pb::RingToken { token: *t, node: n.clone() }).collect(),
            owners: ring
                .ownership()
                .into_iter()
                .map(|(node, ownership)| pb::RingOwnership { zone: ring.zone(&node).to_string(), node, ownership })
                .collect(),
            skew: ring.skew(),
        }))
    }

    async fn inspect(&self, req: Request<pb::InspectRequest>) -> Result<Response<pb::InspectResponse>, Status> {
        let replicas = self
            .coordinator
            .inspect(&req.into_inner().key)
            .await?
            .into_iter()
            .map(|(node, result)| match result {
                Ok(v) => pb::ReplicaVersion {
                    node,
                    reachable: true,
                    present: v.is_some(),
                    clock: v.iter().flat_map(|v| v.context()).map(|(node, counter)| pb::Dot { node, counter }).collect(),
                    siblings: v.iter().flat_map(|v| v.siblings()).map(Into::into).collect(),
                    floor: v.as_ref().and_then(|v| v.floor.as_ref()).map(Into::into),
                    error: String::new(),
                },
                Err(e) => pb::ReplicaVersion { node, error: e.to_string(), ..Default::default() },
            })
            .collect();
        Ok(Response::new(pb::InspectResponse { replicas }))
    }

    async fn repair(&self, req: Request<pb::RepairRequest>) -> Result<Response<pb::RepairReport>, Status> {
        let req = req.into_inner();
        let only = match (req.start, req.end) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, None) => None,
            _ => return Err(Error::InvalidArgument("a repair range needs both start and end tokens".into()).into()),
        };
        Ok(Response::new(run_pass(&self.s.repair(), only).await))
    }

    async fn decommission(&self, _req: Request<pb::DecommissionRequest>) -> Result<Response<pb::DecommissionResponse>, Status> {
        Ok(Response::new(crate::membership::decommission(&self.s.gossip(), self.s.shutdown.clone()).await?))
    }

    async fn remove_node(&self, req: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let id = req.into_inner().id;
        self.s.membership.remove(&id).map_err(Error::InvalidArgument)?;
        self.s.save_members();
        tracing::warn!(node = %self.s.config.id, removed = %id, "node removed from the ring; run a repair to re-replicate its ranges");
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn cleanup(&self, _req: Request<pb::CleanupRequest>) -> Result<Response<pb::CleanupReport>, Status> {
        Ok(Response::new(crate::antientropy::cleanup::run_cleanup(&self.s.repair()).await?))
    }

    async fn hints(&self, _req: Request<pb::HintsRequest>) -> Result<Response<pb::HintsResponse>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.s.hints;
        Ok(Response::new(pb::HintsResponse {
            node: self.s.config.id.clone(),
            targets: self.hint_targets()?,
            dropped_window: h.dropped_window.load(Relaxed),
            dropped_budget: h.dropped_budget.load(Relaxed),
            replayed: h.replayed.load(Relaxed),
            expired: h.expired.load(Relaxed),
        }))
    }

    async fn roots(&self, _req: Request<pb::RootsRequest>) -> Result<Response<pb::RootsResponse>, Status> {
        let trees = self.s.store.trees();
        let ranges = trees
            .slots()
            .iter()
            .map(|slot| pb::RangeRoot {
                start: slot.start,
                end: slot.end,
                root: slot.lock().built().map(|t| t.root().to_vec()).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::RootsResponse { node: self.s.config.id.clone(), ranges }))
    }

    async fn set_clock(&self, req: Request<pb::SetClockRequest>) -> Result<Response<pb::SetClockResponse>, Status> {
        self.fault_injection_enabled()?;
        let offset_ms = req.into_inner().offset_ms;
        if offset_ms.unsigned_abs() > MAX_CLOCK_OFFSET_MS {
            return Err(Error::InvalidArgument(format!("clock offset {offset_ms} ms is beyond ±{MAX_CLOCK_OFFSET_MS} ms")).into());
        }
        if !self.s.clock.set_offset_ms(offset_ms) {
            return Err(Error::InvalidArgument(format!("node {}'s clock cannot be shifted", self.s.config.id)).into());
        }
        tracing::warn!(node = %self.s.config.id, offset_ms, "wall clock shifted by a fault");
        Ok(Response::new(pb::SetClockResponse { node: self.s.config.id.clone(), wall_ms: self.s.clock.wall_ms(), offset_ms }))
    }

    async fn set_fault(&self, req: Request<pb::SetFaultRequest>) -> Result<Response<pb::SetFaultResponse>, Status> {
        let req = req.into_inner();
        // Listing the rules (none given, nothing cleared) changes nothing.
        if req.clear || !req.rules.is_empty() {
            self.fault_injection_enabled()?;
        }
        let mut rules = Vec::new();
        for r in req.rules {
            if !(0.0..=1.0).contains(&r.drop) {
                return Err(Error::InvalidArgument(format!("drop fraction {} for peer {} must be between 0 and 1", r.drop, r.peer)).into());
            }
            rules.push(FaultRule { peer: r.peer, block: r.block, delay: Duration::from_millis(r.delay_ms.into()), drop: r.drop });
        }
        tracing::info!(node = %self.s.config.id, rules = rules.len(), "fault rules set");
        self.s.faults.apply(req.clear, rules);
        let rules = self
            .s
            .faults
            .rules()
            .into_iter()
            .map(|r| pb::FaultRule { peer: r.peer, block: r.block, delay_ms: r.delay.as_millis() as u32, drop: r.drop })
            .collect();
        Ok(Response::new(pb::SetFaultResponse { rules }))
    }
}
