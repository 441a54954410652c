//! Talking to peers: one [`PeerClient`] per peer address, behind [`Peers`].
//!
//! The coordinator never touches a channel. It asks `Peers` to replicate,
//! read or forward (DESIGN §2). Every call passes through the fault layer,
//! runs under a deadline, and reports its outcome to the membership's
//! up/down view.
//!
//! Replication is batched per peer: a task per peer takes every replicate
//! message that is ready, up to [`MAX_BATCH`] messages and [`PAGE_BYTES`]
//! bytes, and sends them as one `ReplicateBatch` call, with at most
//! [`BATCHES_IN_FLIGHT`] calls outstanding. An idle peer gets each message at once; a busy one gets
//! them in batches, which saves the per-call cost that dominated a
//! profiled write load. The queue is bounded (`replicate_queue.rs`): a peer
//! far behind has new messages refused at once, and messages whose caller
//! gave up are dropped unsent.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::channel::Channel;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::peer_client::PeerClient as PbPeerClient;
use tokio::sync::oneshot;
use tonic::Code;

use ringkv_proto::delivery::Delivery;
pub use ringkv_proto::wire::MAX_MESSAGE_BYTES;

use crate::error::{Error, Result, KIND_HEADER};
use crate::fault::{Faults, Verdict};
use crate::membership::{Member, Membership};
use crate::paging::{Page, PAGE_BYTES};
use crate::record;
use crate::replicate_queue::{self, Pending, QueueReceiver, QueueSender};
use crate::security::PeerCredentials;
use crate::transport::{dial, Transport};
use crate::version::DvvSet;

/// The connection to one peer.
#[derive(Clone)]
pub struct PeerClient {
    rpc: PbPeerClient<Channel>,
}

/// Every peer this node talks to.
pub struct Peers {
    transport: Arc<dyn Transport>,
    faults: Arc<Faults>,
    membership: Arc<Membership>,
    timeout: Duration,
    credentials: PeerCredentials,
    clients: Mutex<HashMap<String, PeerClient>>,
    /// Per (peer id, address): the queue of its batching task.
    batchers: Mutex<HashMap<(String, String), QueueSender>>,
    read_latencies: Mutex<HashMap<String, VecDeque<Duration>>>,
}

/// Most replicate messages in one batch; a batch is also cut at
/// [`PAGE_BYTES`], since 128 maximal values would outgrow a message.
pub const MAX_BATCH: usize = 128;
/// Batch calls outstanding per peer; later messages queue and join a batch.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Read latencies kept per peer for speculative retry.
const LATENCY_WINDOW: usize = 128;
/// Samples needed before a peer's p99 is trusted.
const MIN_SAMPLES: usize = 8;

impl Peers {
    /// A registry dialing through `transport`, with `timeout` per message,
    /// presenting `credentials` to every peer.
    pub fn new(
        transport: Arc<dyn Transport>,
        faults: Arc<Faults>,
        membership: Arc<Membership>,
        timeout: Duration,
        credentials: PeerCredentials,
    ) -> Self {
        Self {
            transport,
            faults,
            membership,
            timeout,
            credentials,
            clients: Mutex::new(HashMap::new()),
            batchers: Mutex::new(HashMap::new()),
            read_latencies: Mutex::new(HashMap::new()),
        }
    }

    /// The transport it dials through (also used to resolve seed names).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The per-message deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn client(&self, addr: &str) -> Result<PeerClient> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let ch = dial(self.transport.clone(), addr, self.timeout, &self.credentials)
            .map_err(|reason| Error::NotSent { peer: addr.to_string(), reason })?;
        let rpc = PbPeerClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
        let c = PeerClient { rpc };
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Looks up peer `id`'s address and passes one message through the
    /// fault layer: fails it, or waits out its delay.
    async fn admit(&self, id: &str) -> Result<String> {
        let not_sent = |reason: String| Error::NotSent { peer: id.to_string(), reason };
        let addr = self.membership.member(id).map(|m| m.address).ok_or_else(|| not_sent("not a known member".into()))?;
        match self.faults.check(id) {
            Verdict::Fail(reason) => {
                self.membership.set_reachable(id, false);
                return Err(not_sent(reason.into()));
            }
            Verdict::Send(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
            Verdict::Send(_) => {}
        }
        Ok(addr)
    }

    /// Sends one message to peer `id` through the fault layer, within
    /// `timeout`, and records whether the peer answered.
    async fn call<T, F, Fut>(&self, id: &str, timeout: Duration, f: F) -> Result<T>
    where
        F: FnOnce(PbPeerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let addr = self.admit(id).await?;
        let client = self.client(&addr)?;
        let result = tokio::time::timeout(timeout.min(self.timeout), f(client.rpc)).await;
        match result {
            Ok(Ok(resp)) => {
                self.membership.set_reachable(id, true);
                Ok(resp.into_inner())
            }
            Ok(Err(status)) => {
                record_failure(&self.membership, id, &status);
                Err(status_error(id, status))
            }
            // A timeout is not proof of death (latency jitter, a slow peer):
            // the failure detector decides.
            Err(_) => Err(Error::PeerTimeout { peer: id.to_string(), ms: timeout.min(self.timeout).as_millis() as u64 }),
        }
    }

    /// Sends a version of `key` for the peer to merge and make durable.
    ///
    /// The message joins the peer's batch queue; the outcome is that of its
    /// own item in the batch call.
    pub async fn replicate(&self, id: &str, key: &[u8], version: Vec<u8>, from: &str, timeout: Duration) -> Result<()> {
        let peer_err = |reason: String| Error::Peer { peer: id.to_string(), reason };
        let addr = self.admit(id).await?;
        let queue = self.batcher(id, &addr)?;
        let (reply, outcome) = oneshot::channel();
        let req = pb::ReplicateRequest { key: key.to_vec(), version, from: from.to_string() };
        // Refused (full or stopped) means never sent: the caller hints it.
        queue.send(req, reply).map_err(|refused| Error::NotSent { peer: id.to_string(), reason: refused.to_string() })?;
        let limit = timeout.min(self.timeout);
        match tokio::time::timeout(limit, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(peer_err("the batch call was dropped".into())),
            Err(_) => Err(Error::PeerTimeout { peer: id.to_string(), ms: limit.as_millis() as u64 }),
        }
    }

    /// The queue of the batching task for peer `id` at `addr`, started on
    /// first use.
    fn batcher(&self, id: &str, addr: &str) -> Result<QueueSender> {
        let mut batchers = self.batchers.lock().expect("lock");
        let slot = (id.to_string(), addr.to_string());
        if let Some(tx) = batchers.get(&slot).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let rpc = self.client(addr)?.rpc;
        // A peer that moved: its old queue goes, which ends the old task.
        batchers.retain(|(i, a), _| i != id || a == addr);
        let (tx, rx) = replicate_queue::queue();
        tokio::spawn(run_batcher(id.to_string(), rpc, self.membership.clone(), self.timeout, rx));
        batchers.insert(slot, tx.clone());
        Ok(tx)
    }

    /// Reads the peer's stored version of `key`, recording the latency.
    pub async fn read(&self, id: &str, key: &[u8], timeout: Duration) -> Result<Option<DvvSet>> {
        let req = pb::ReadRequest { key: key.to_vec() };
        let started = tokio::time::Instant::now();
        let result = self.call(id, timeout, |mut c| async move { c.read(req).await }).await;
        // A failure counts as slow as the deadline, so a failing peer sinks.
        let took = if result.is_ok() { started.elapsed() } else { timeout.min(self.timeout) };
        {
            let mut all = self.read_latencies.lock().expect("lock");
            let window = all.entry(id.to_string()).or_default();
            if window.len() == LATENCY_WINDOW {
                window.pop_front();
            }
            window.push_back(took);
        }
        result?.version.map(|b| record::decode(key, &b)).transpose()
    }

    /// Recent (p50, p99) read latency of a peer, once there are enough samples.
    pub fn read_latency(&self, id: &str) -> Option<(Duration, Duration)> {
        let all = self.read_latencies.lock().expect("lock");
        let window = all.get(id).filter(|w| w.len() >= MIN_SAMPLES)?;
        let mut sorted: Vec<Duration> = window.iter().copied().collect();
        sorted.sort();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }

    /// Hands a write to a replica to coordinate.
    pub async fn forward_write(&self, id: &str, req: pb::ForwardWriteRequest, timeout: Duration) -> Result<pb::ForwardWriteResponse> {
        self.call(id, timeout, |mut c| async move { c.forward_write(req).await }).await
    }

    /// Asks the peer for its stored keys under a prefix.
    pub async fn scan_local(&self, id: &str, req: pb::ScanLocalRequest, timeout: Duration) -> Result<pb::KeyVersions> {
        self.call(id, timeout, |mut c| async move { c.scan_local(req).await }).await
    }

    /// Merkle node hashes of a range.
    pub async fn merkle_nodes(&self, id: &str, req: pb::MerkleNodesRequest) -> Result<pb::MerkleNodesResponse> {
        self.call(id, self.timeout, |mut c| async move { c.merkle_nodes(req).await }).await
    }

    /// Digest of one Merkle leaf.
    pub async fn leaf_digest(&self, id: &str, req: pb::LeafDigestRequest) -> Result<pb::LeafDigestResponse> {
        self.call(id, self.timeout, |mut c| async move { c.leaf_digest(req).await }).await
    }

    /// Stored versions of some keys.
    pub async fn fetch_keys(&self, id: &str, req: pb::FetchKeysRequest) -> Result<pb::KeyVersions> {
        self.call(id, self.timeout, |mut c| async move { c.fetch_keys(req).await }).await
    }

    /// Versions for the peer to merge.
    pub async fn push_keys(&self, id: &str, req: pb::PushKeysRequest) -> Result<pb::PushKeysResponse> {
        self.call(id, self.timeout, |mut c| async move { c.push_keys(req).await }).await
    }

    /// Tombstone purge of a range every replica holds identically.
    pub async fn purge(&self, id: &str, req: pb::PurgeRequest) -> Result<pb::PurgeResponse> {
        self.call(id, self.timeout, |mut c| async move { c.purge(req).await }).await
    }

    /// A page of a token range.
    pub async fn fetch_range(&self, id: &str, req: pb::FetchRangeRequest) -> Result<pb::KeyVersions> {
        self.call(id, self.timeout, |mut c| async move { c.fetch_range(req).await }).await
    }

    /// Asks a stand-in to hold a write for a down replica.
    pub async fn store_hint(&self, id: &str, req: pb::StoreHintRequest, timeout: Duration) -> Result<()> {
        self.call(id, timeout, |mut c| async move { c.store_hint(req).await }).await.map(|_| ())
    }

    /// Paxos phase 1 (SERIAL): prepare a ballot, read the replica's version.
    pub async fn paxos_prepare(&self, id: &str, req: pb::PaxosPrepareRequest, timeout: Duration) -> Result<pb::PaxosPrepareResponse> {
        self.call(id, timeout, |mut c| async move { c.paxos_prepare(req).await }).await
    }

    /// Paxos phase 2 (SERIAL): propose.
    pub async fn paxos_propose(&self, id: &str, req: pb::PaxosProposeRequest, timeout: Duration) -> Result<pb::PaxosProposeResponse> {
        self.call(id, timeout, |mut c| async move { c.paxos_propose(req).await }).await
    }

    /// Paxos phase 3 (SERIAL): commit the chosen version.
    pub async fn paxos_commit(&self, id: &str, req: pb::PaxosCommitRequest, timeout: Duration) -> Result<()> {
        self.call(id, timeout, |mut c| async move { c.paxos_commit(req).await }).await.map(|_| ())
    }

    /// A liveness probe.
    pub async fn ping(&self, id: &str) -> Result<()> {
        self.call(id, self.timeout, |mut c| async move { c.ping(pb::PingRequest {}).await }).await.map(|_| ())
    }

    /// Push-pull gossip with the node at `addr` (which may be a seed whose id
    /// is unknown, so this bypasses the per-id fault rules).
    /// Returns the peer's members and its wall clock.
    /// Returns the peer's members, its wall clock and its tombstones.
    pub async fn gossip(&self, addr: &str, members: &[Member], wall_ms: u64) -> Result<(Vec<Member>, u64, Vec<pb::RemovedNode>)> {
        let mut client = self.client(addr)?;
        let target = self.membership.members().into_iter().find(|m| m.address == addr).map(|m| m.id);
        if let Some(id) = &target {
            if let Verdict::Fail(reason) = self.faults.check(id) {
                return Err(Error::NotSent { peer: id.clone(), reason: reason.into() });
            }
        }
        let req = pb::GossipRequest {
            from: self.membership.me().to_string(),
            members: members.iter().map(Into::into).collect(),
            wall_ms,
            removed: self.membership.removed_wire(),
        };
        let result = tokio::time::timeout(self.timeout, client.rpc.gossip(req)).await;
        if let Some(id) = &target {
            match &result {
                Ok(Ok(_)) => self.membership.set_reachable(id, true),
                Ok(Err(status)) if status.code() == Code::Unavailable => self.membership.set_reachable(id, false),
                _ => {}
            }
        }
        let resp = result
            .map_err(|_| Error::Peer { peer: addr.to_string(), reason: "gossip timed out".into() })?
            .map_err(|s| status_to_error(addr, s))?;
        let resp = resp.into_inner();
        Ok((resp.members.into_iter().map(Member::from).collect(), resp.wall_ms, resp.removed))
    }
}

/// Updates `id`'s reachability after a failed call: an error the peer's
/// own code raised means it is alive; only a refused or broken connection
/// marks it unreachable.
fn record_failure(membership: &Membership, id: &str, status: &tonic::Status) {
    let from_node = status.metadata().contains_key(KIND_HEADER);
    let unreachable = !from_node && status.code() == Code::Unavailable;
    if unreachable || from_node {
        membership.set_reachable(id, !unreachable);
    }
}

/// The error a failed call to `id` returns: the peer's own error passed
/// through unchanged, or a transport failure.
fn status_error(id: &str, status: tonic::Status) -> Error {
    if status.metadata().contains_key(KIND_HEADER) {
        Error::Forwarded(status)
    } else {
        status_to_error(id, status)
    }
}

/// A transport failure as an error: [`Error::NotSent`] when the connection
/// was never made (typed, from the status's source chain), else
/// [`Error::Peer`].
fn status_to_error(peer: &str, status: tonic::Status) -> Error {
    let reason = format!("{:?}: {}", status.code(), status.message());
    match (status.code(), Delivery::of_status(&status)) {
        (Code::InvalidArgument, _) => Error::InvalidArgument(status.message().to_string()),
        (_, Delivery::NotSent) => Error::NotSent { peer: peer.to_string(), reason },
        (_, Delivery::MaybeDelivered) => Error::Peer { peer: peer.to_string(), reason },
    }
}

/// One peer's batching task: takes whatever is queued (at least one
/// message, at most [`MAX_BATCH`] and [`PAGE_BYTES`]) whenever fewer than
/// [`BATCHES_IN_FLIGHT`] calls are outstanding, and sends it as one call.
/// A message that does not fit waits at the head of the next batch.
/// Ends when every sender is gone.
async fn run_batcher(id: String, rpc: PbPeerClient<Channel>, membership: Arc<Membership>, timeout: Duration, mut rx: QueueReceiver) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut held: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut page = Page::new(MAX_BATCH, PAGE_BYTES);
        page.admit(first.size());
        let mut batch = vec![first];
        while let Some(p) = rx.try_recv() {
            if !page.admit(p.size()) {
                held = Some(p);
                break;
            }
            batch.push(p);
        }
        let (mut rpc, membership, id) = (rpc.clone(), membership.clone(), id.clone());
        tokio::spawn(async move {
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.reply)).unzip();
            let result = tokio::time::timeout(timeout, rpc.replicate_batch(pb::ReplicateBatchRequest { items })).await;
            drop(slot);
            match result {
                Ok(Ok(resp)) => {
                    membership.set_reachable(&id, true);
                    let results = resp.into_inner().results;
                    for (reply, r) in replies.into_iter().zip(results.into_iter().map(Some).chain(std::iter::repeat(None))) {
                        let _ = reply.send(item_outcome(&id, r));
                    }
                }
                Ok(Err(status)) => {
                    record_failure(&membership, &id, &status);
                    for reply in replies {
                        let _ = reply.send(Err(status_error(&id, status.clone())));
                    }
                }
                Err(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(Error::PeerTimeout { peer: id.clone(), ms: timeout.as_millis() as u64 }));
                    }
                }
            }
        });
    }
}

/// One item's outcome, as its own `Replicate` call would have returned it.
fn item_outcome(id: &str, r: Option<pb::ItemResult>) -> Result<()> {
    let Some(r) = r else { return Err(Error::Peer { peer: id.to_string(), reason: "the batch answer was short".into() }) };
    if r.code == 0 {
        return Ok(());
    }
    let mut status = tonic::Status::new(Code::from_i32(r.code), r.message);
    if let Ok(kind) = r.kind.parse() {
        status.metadata_mut().insert(KIND_HEADER, kind);
    }
    Err(Error::Forwarded(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::DetectorConfig;
    use crate::transport::TcpTransport;
    use rand::SeedableRng;

    /// `Peers` for node n1 that knows n2 at `n2_addr`.
    fn peers(n2_addr: &str) -> (Peers, Arc<Faults>) {
        let detector = DetectorConfig { threshold: 8.0, interval_ms: 200, pause_ms: 1000 };
        let membership = Arc::new(Membership::new(Member { id: "n1".into(), ..Default::default() }, detector));
        membership.merge([Member { id: "n2".into(), address: n2_addr.into(), heartbeat: 1, ..Default::default() }]);
        let faults = Arc::new(Faults::new(Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(1)))));
        (Peers::new(Arc::new(TcpTransport::default()), faults.clone(), membership, Duration::from_secs(2), Default::default()), faults)
    }

    #[tokio::test]
    async fn calls_that_cannot_have_arrived_are_not_sent_by_type() {
        // A closed port: bind, note the address, drop the listener.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let (p, faults) = peers(&closed);
        let refused = p.ping("n2").await.unwrap_err();
        assert_eq!(refused.delivery(), Delivery::NotSent, "refused connection: {refused:?}");
        let refused = p.replicate("n2", b"k", vec![1], "n1", Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(refused.delivery(), Delivery::NotSent, "refused replicate: {refused:?}");
        let unknown = p.ping("n9").await.unwrap_err();
        assert_eq!(unknown.delivery(), Delivery::NotSent, "unknown member: {unknown:?}");
        faults.apply(false, vec![crate::fault::FaultRule { peer: "n2".into(), block: true, ..Default::default() }]);
        let blocked = p.ping("n2").await.unwrap_err();
        assert_eq!(blocked.delivery(), Delivery::NotSent, "fault layer: {blocked:?}");
    }

    #[tokio::test]
    async fn a_connection_dropped_after_it_was_made_may_have_delivered() {
        // A server that accepts and closes at once: the request may have
        // been read before the close, so it is not provably unsent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let (p, _) = peers(&addr);
        let reset = p.ping("n2").await.unwrap_err();
        assert_eq!(reset.delivery(), Delivery::MaybeDelivered, "{reset:?}");
    }

    #[test]
    fn a_batch_item_fails_as_its_own_call_would_have() {
        assert!(item_outcome("n2", Some(pb::ItemResult::default())).is_ok());
        let skew =
            pb::ItemResult { code: Code::FailedPrecondition as i32, kind: "clock_skew".into(), message: "clock skew: n1 is ahead".into() };
        let e = item_outcome("n2", Some(skew)).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::ClockSkew);
        assert_eq!(e.to_string(), "clock skew: n1 is ahead");
        assert!(matches!(item_outcome("n2", None), Err(Error::Peer { .. })), "a missing answer is a peer failure");
    }
}
