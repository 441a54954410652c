//! The node-to-node `Peer` service.
//!
//! It distrusts its callers: every version they send passes the node's
//! admission check (`admit.rs`) before it is merged or kept, every argument
//! that sizes an answer is bounded (`MerkleNodes`, `LeafDigest`,
//! `FetchKeys`, page limits, batch sizes), a `Purge` cutoff may not be
//! later than this node's own, and `StoreHint` holds hints only for
//! members. A refusal is `INVALID_ARGUMENT` (or `FAILED_PRECONDITION` for
//! clock skew) with a message naming what was wrong.

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::timeout;
use crate::admit::check_items;
use crate::antientropy::purge_tombstones;
use crate::antientropy::sync::answer;
use crate::coordinator::{decode_context, encode_context, Coordinator, Write};
use crate::error::Error;
use crate::hints::{Limits, Stored};
use crate::membership::{Member, NodeState};
use crate::paging::{Page, PAGE_BYTES};
use crate::paxos::{Ballot, Proposal};
use crate::quorum::Level;
use crate::record;
use crate::ring::token_of;
use crate::shared::Shared;
use crate::store::{Store, Ticket, OFFLOAD_ITEMS};
use crate::version::DvvSet;

/// Most keys in a page of `FetchRange` and `ScanLocal`; both are also cut
/// at [`PAGE_BYTES`]. A larger `limit` is refused: no caller asks for more
/// (joins ask 1000; scans allow at most 10,000).
const MAX_PAGE: usize = 10_000;

/// Serves `ringkv.v1.Peer`.
pub struct PeerService {
    s: Arc<Shared>,
    coordinator: Coordinator,
}

impl PeerService {
    /// A service over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        Self { coordinator: Coordinator::new(s.clone()), s }
    }
}

/// The page size a `limit` asks for (0: the most), or a refusal above it.
fn page(what: &str, limit: u32) -> Result<usize, Error> {
    match limit as usize {
        0 => Ok(MAX_PAGE),
        n if n > MAX_PAGE => Err(Error::InvalidArgument(format!("{what} limit {n} is over the maximum of {MAX_PAGE}"))),
        n => Ok(n),
    }
}

impl PeerService {
    /// Decodes a replicated version and admits it (`admit.rs`).
    fn admit_replica(&self, req: &pb::ReplicateRequest) -> Result<DvvSet, Error> {
        self.s.admit.pushed(&req.key, &req.version, &req.from)
    }

    fn merge_replica(&self, req: pb::ReplicateRequest) -> Result<Ticket, Error> {
        let incoming = self.admit_replica(&req)?;
        Ok(self.s.store.merge(&req.key, &incoming)?.ticket)
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn replicate(&self, req: Request<pb::ReplicateRequest>) -> Result<Response<pb::ReplicateResponse>, Status> {
        let ticket = self.merge_replica(req.into_inner())?;
        self.s.store.durable(ticket).await?;
        Ok(Response::new(pb::ReplicateResponse {}))
    }

    async fn replicate_batch(&self, req: Request<pb::ReplicateBatchRequest>) -> Result<Response<pb::ReplicateBatchResponse>, Status> {
        // Every admitted item is merged in one engine batch (one atomic
        // write), then the batch waits once: its writes share one ticket,
        // and an unchanged item's ticket is never newer than that.
        let items = req.into_inner().items;
        check_items("ReplicateBatch items", items.len())?;
        let admitted: Vec<Result<DvvSet, Error>> = items.iter().map(|item| self.admit_replica(item)).collect();
        let n = admitted.iter().filter(|a| a.is_ok()).count();
        let merge = move |store: &Store| {
            let batch: Vec<(&[u8], &DvvSet)> =
                items.iter().zip(&admitted).filter_map(|(item, a)| a.as_ref().ok().map(|v| (item.key.as_slice(), v))).collect();
            let mut merged = store.merge_many(&batch).into_iter();
            Ok(admitted
                .into_iter()
                .map(|a| a.and_then(|_| merged.next().expect("one result per admitted item").map(|m| m.ticket)))
                .collect::<Vec<Result<Ticket, Error>>>())
        };
        // A few items are point writes, cheaper inline than handed off.
        let outcomes = if n >= OFFLOAD_ITEMS { self.s.store.offload(merge).await? } else { merge(&self.s.store)? };
        let newest = outcomes.iter().filter_map(|o| o.as_ref().ok()).copied().max().unwrap_or_default();
        let synced = self.s.store.durable(newest).await.map_err(|e| e.to_string());
        let results = outcomes
            .into_iter()
            .map(|o| o.and_then(|_| synced.clone().map_err(Error::Storage)))
            .map(|r| match r {
                Ok(()) => pb::ItemResult::default(),
                Err(e) => {
                    let kind = e.kind().as_str().to_string();
                    let status = Status::from(e);
                    pb::ItemResult { code: status.code() as i32, kind, message: status.message().to_string() }
                }
            })
            .collect();
        Ok(Response::new(pb::ReplicateBatchResponse { results }))
    }

    async fn read(&self, req: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        let version = self.s.store.read_raw(&req.into_inner().key)?;
        Ok(Response::new(pb::ReadResponse { version }))
    }

    async fn forward_write(&self, req: Request<pb::ForwardWriteRequest>) -> Result<Response<pb::ForwardWriteResponse>, Status> {
        let req = req.into_inner();
        let options = req.options.as_ref();
        let write = Write {
            key: req.key,
            value: req.value,
            context: req.context.as_deref().map(decode_context).transpose()?,
            tombstone: req.tombstone,
            ttl_ms: req.ttl_ms,
            level: Level::from_proto(options.map_or(0, |o| o.consistency))?,
            timeout: timeout(options, &self.s.config),
            sloppy: options.is_some_and(|o| o.sloppy),
        };
        let (ctx, receipt) = self.coordinator.write(write, Some(req.from)).await?;
        Ok(Response::new(pb::ForwardWriteResponse { context: encode_context(&ctx), receipt: Some(receipt) }))
    }

    async fn gossip(&self, req: Request<pb::GossipRequest>) -> Result<Response<pb::GossipResponse>, Status> {
        let req = req.into_inner();
        // Tombstones first, so a removed sender's own entry is refused.
        crate::membership::learn_removals(&self.s.handles(), req.removed);
        self.s.membership.merge(req.members.into_iter().map(Member::from));
        // A direct message from the peer proves it can reach us, not that we can reach it.
        let members = self.s.membership.members().iter().map(Into::into).collect();
        Ok(Response::new(pb::GossipResponse { members, wall_ms: self.s.clock.wall_ms(), removed: self.s.membership.removed_wire() }))
    }

    async fn fetch_range(&self, req: Request<pb::FetchRangeRequest>) -> Result<Response<pb::KeyVersions>, Status> {
        let req = req.into_inner();
        // Resume after the token of the last key returned (token order).
        // `limit` caps the keys; the page is cut by bytes too, so large
        // values never make it outgrow a message.
        let lo = if req.start_after.is_empty() { req.start_token } else { token_of(&req.start_after) };
        let page = Page::new(page("FetchRange", req.limit)?, PAGE_BYTES);
        let (rows, more) = self.s.store.offload(move |s| s.token_range(lo, req.end_token, page)).await?;
        let entries = rows.into_iter().map(|(key, version)| pb::KeyVersion { key, version }).collect();
        Ok(Response::new(pb::KeyVersions { entries, more }))
    }

    async fn scan_local(&self, req: Request<pb::ScanLocalRequest>) -> Result<Response<pb::KeyVersions>, Status> {
        let req = req.into_inner();
        let limit = page("ScanLocal", req.limit)?;
        let (rows, more) =
            self.s.store.offload(move |s| s.scan_prefix(&req.prefix, &req.start_after, Page::new(limit, PAGE_BYTES))).await?;
        let entries = rows.into_iter().map(|(key, version)| pb::KeyVersion { key, version }).collect();
        Ok(Response::new(pb::KeyVersions { entries, more }))
    }

    async fn merkle_nodes(&self, req: Request<pb::MerkleNodesRequest>) -> Result<Response<pb::MerkleNodesResponse>, Status> {
        Ok(Response::new(answer::nodes(&self.s.store, &req.into_inner())?))
    }

    async fn leaf_digest(&self, req: Request<pb::LeafDigestRequest>) -> Result<Response<pb::LeafDigestResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.s.store.offload(move |s| answer::leaf(s, &req)).await?))
    }

    async fn fetch_keys(&self, req: Request<pb::FetchKeysRequest>) -> Result<Response<pb::KeyVersions>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.s.store.offload(move |s| answer::fetch(s, &req)).await?))
    }

    async fn push_keys(&self, req: Request<pb::PushKeysRequest>) -> Result<Response<pb::PushKeysResponse>, Status> {
        let req = req.into_inner();
        let admit = self.s.admit.clone();
        let (resp, ticket) = self.s.store.offload(move |s| answer::push(s, &admit.pushed_page(&req.entries, &req.from)?)).await?;
        self.s.store.durable(ticket).await?;
        Ok(Response::new(resp))
    }

    async fn purge(&self, req: Request<pb::PurgeRequest>) -> Result<Response<pb::PurgeResponse>, Status> {
        let req = req.into_inner();
        // A cutoff later than this node's own (allowing for clock skew)
        // would purge tombstones still within their grace: deletes undone.
        let c = &self.s.config;
        let ours = self
            .s
            .clock
            .wall_ms()
            .saturating_sub(crate::clock::millis(c.tombstone_grace))
            .saturating_add(crate::clock::millis(c.max_clock_skew));
        if req.cutoff_wall_ms > ours {
            return Err(Error::InvalidArgument(format!(
                "purge cutoff {} ms is later than this node's ({ours} ms: now, less tombstone_grace, plus max_clock_skew)",
                req.cutoff_wall_ms
            ))
            .into());
        }
        let r = req.range.unwrap_or_default();
        let (cutoff, now) = (req.cutoff_wall_ms, self.s.clock.wall_ms());
        let purged = self.s.store.offload(move |s| purge_tombstones(s, r.start, r.end, cutoff, now)).await?;
        Ok(Response::new(pb::PurgeResponse { purged }))
    }

    async fn store_hint(&self, req: Request<pb::StoreHintRequest>) -> Result<Response<pb::StoreHintResponse>, Status> {
        let req = req.into_inner();
        // Only for a member that may come back: a made-up target would hold
        // up to its byte budget here, and be retried by replay forever.
        match self.s.membership.member(&req.target) {
            None => return Err(Error::InvalidArgument(format!("StoreHint target {:?} is not a member of this cluster", req.target)).into()),
            Some(m) if m.state == NodeState::Left => {
                return Err(Error::InvalidArgument(format!("StoreHint target {:?} has left the cluster", req.target)).into())
            }
            Some(_) => {}
        }
        let version = self.s.admit.pushed(&req.key, &req.version, &req.from)?;
        let c = &self.s.config;
        let silent = self.s.membership.silent_ms(&req.target);
        let limits = Limits { silent_ms: silent, window: c.max_hint_window, budget: c.max_hint_bytes_per_target };
        let offered = self.s.hints.offer(&req.target, &req.key, &version, self.s.clock.wall_ms(), limits)?;
        match offered {
            Stored::Yes(ticket) => {
                self.s.store.durable(ticket).await?;
                Ok(Response::new(pb::StoreHintResponse {}))
            }
            other => Err(Error::Unavailable {
                level: "sloppy stand-in".into(),
                required: 1,
                alive: 0,
                hint: format!("; {} will not hold hints for {} ({other:?})", c.id, req.target),
            }
            .into()),
        }
    }

    async fn paxos_prepare(&self, req: Request<pb::PaxosPrepareRequest>) -> Result<Response<pb::PaxosPrepareResponse>, Status> {
        let req = req.into_inner();
        crate::admit::check_key(&req.key, self.s.config.max_key_bytes)?;
        let ballot: Ballot = record::decode(&req.key, &req.ballot)?;
        // A ballot far ahead of this clock would fence every proposer for as long.
        self.s.hlc.check(&ballot, self.s.clock.wall_ms())?;
        let (promise, version, ticket) = self.s.paxos.prepare_and_read(&req.key, &ballot)?;
        if let Some(t) = ticket {
            self.s.store.durable(t).await?;
        }
        Ok(Response::new(pb::PaxosPrepareResponse { promise: record::encode(&promise), version: version.map(|v| record::encode(&v)) }))
    }

    async fn paxos_propose(&self, req: Request<pb::PaxosProposeRequest>) -> Result<Response<pb::PaxosProposeResponse>, Status> {
        let req = req.into_inner();
        crate::admit::check_key(&req.key, self.s.config.max_key_bytes)?;
        let proposal: Proposal = record::decode(&req.key, &req.proposal)?;
        self.s.hlc.check(&proposal.ballot, self.s.clock.wall_ms())?;
        if let Some(v) = &proposal.value {
            self.s.admit.check(&req.key, v)?;
        }
        match self.s.paxos.accept(&req.key, &proposal)? {
            Ok(ticket) => {
                self.s.store.durable(ticket).await?;
                Ok(Response::new(pb::PaxosProposeResponse { accepted: true, promised: Vec::new() }))
            }
            Err(b) => Ok(Response::new(pb::PaxosProposeResponse { accepted: false, promised: record::encode(&b) })),
        }
    }

    async fn paxos_commit(&self, req: Request<pb::PaxosCommitRequest>) -> Result<Response<pb::PaxosCommitResponse>, Status> {
        let req = req.into_inner();
        let ballot: Ballot = record::decode(&req.key, &req.ballot)?;
        self.s.hlc.check(&ballot, self.s.clock.wall_ms())?;
        let version = self.s.admit.pushed(&req.key, &req.version, &req.from)?;
        let ticket = self.s.paxos.commit_version(&req.key, &ballot, &version)?;
        self.s.store.durable(ticket).await?;
        Ok(Response::new(pb::PaxosCommitResponse {}))
    }

    async fn ping(&self, _req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse { node: self.s.config.id.clone() }))
    }
}
