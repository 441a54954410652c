//! [`Client::watch`]: one stream of changes under a prefix, from every node.
//!
//! Each node streams the changes its own replica stores (`Kv.Watch`), so no
//! single node sees every key's changes, and a write shows up once per
//! replica that stores it. The client therefore:
//! - subscribes to every node of the cluster it can discover (with N
//!   replicas per key, one live replica of each range suffices, and
//!   watching all of them needs no knowledge of the ring);
//! - merges the node streams as they come, in no global order;
//! - drops events it has already delivered, by causal clock (`dedup.rs`);
//! - reconnects a dropped node stream from that node's last position, with
//!   backoff, for as long as the [`WatchStream`] lives;
//! - ends with [`Error::ResyncRequired`] when a node cannot resume (its log
//!   evicted the position, or it restarted): the caller scans, then watches
//!   again.
//!
//! Every event carries the combined [`WatchPosition`] after it; a caller
//! that stores it can resume later with [`Client::watch`]'s `resume`.
//! Events between the position and the moment the stream ended are then
//! delivered again (at least once).

mod dedup;
mod position;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use position::WatchPosition;

use crate::{pb, Channel, Client, Error};

/// How long [`Client::watch`] waits for every node's first answer; nodes
/// that have not answered by then keep being retried in the background.
const START_DEADLINE: Duration = Duration::from_secs(5);
/// First and largest wait before a dropped node stream reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Node messages buffered ahead of the caller.
const BUFFERED: usize = 16;

/// One change, as the first node that sent it had stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    /// The key.
    pub key: Vec<u8>,
    /// Every sibling as stored, tombstones included: a delete is a
    /// tombstone. Siblings written with a TTL stay listed after they
    /// expire until a node converts them; check [`crate::expires_at`].
    pub siblings: Vec<pb::Sibling>,
    /// The causal context, as a get returns it: write back with it to
    /// supersede this version.
    pub context: Vec<u8>,
    /// Every sibling is a tombstone (the key is deleted).
    pub deleted: bool,
    /// The node whose stream carried it.
    pub node: String,
    /// The combined position after this event, to resume from.
    pub position: WatchPosition,
}

/// What a node task tells the stream.
enum NodeMsg {
    /// A message of the node's stream.
    Batch { node: String, resp: pb::WatchResponse },
    /// The node cannot go on; the whole watch ends with this.
    Failed(Error),
}

/// The changes under a prefix (see the module docs). Dropping it stops
/// every node stream.
pub struct WatchStream {
    rx: mpsc::Receiver<NodeMsg>,
    ready: VecDeque<Result<WatchEvent, Error>>,
    position: WatchPosition,
    dedup: dedup::Dedup,
    tasks: Vec<JoinHandle<()>>,
    done: bool,
}

impl WatchStream {
    /// The combined position now, including progress past changes outside
    /// the prefix and duplicates dropped.
    pub fn position(&self) -> &WatchPosition {
        &self.position
    }

    /// The nodes being followed, by id.
    pub fn nodes(&self) -> Vec<String> {
        self.position.nodes().into_iter().map(|p| p.node).collect()
    }

    fn take(&mut self, msg: NodeMsg) {
        match msg {
            NodeMsg::Failed(e) => {
                self.ready.push_back(Err(e));
                self.done = true;
            }
            NodeMsg::Batch { node, resp } => {
                for e in resp.events {
                    self.position.set(&pb::WatchPosition { seq: e.seq, ..resp.position.clone().unwrap_or_default() });
                    if !self.dedup.admit(&e.key, &e.clock, &e.siblings) {
                        continue;
                    }
                    let deleted = e.siblings.iter().all(|s| s.tombstone);
                    self.ready.push_back(Ok(WatchEvent {
                        key: e.key,
                        siblings: e.siblings,
                        context: e.context,
                        deleted,
                        node: node.clone(),
                        position: self.position.clone(),
                    }));
                }
                if let Some(p) = &resp.position {
                    self.position.set(p);
                }
            }
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(msg)) => self.take(msg),
                // Every node task ended without a terminal error: only
                // possible once they were all aborted.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Errors after which retrying the same request cannot help.
fn is_terminal(e: &Error) -> bool {
    matches!(e, Error::ResyncRequired(_) | Error::PermissionDenied { .. } | Error::Unauthenticated { .. } | Error::InvalidArgument { .. })
}

/// One node's side: subscribe, forward, and on a drop resubscribe from the
/// last position. The first answer (its start position, or why it failed)
/// also goes to `first`, for [`Client::watch`] to wait on.
struct Follow {
    node: String,
    channel: Channel,
    prefix: Vec<u8>,
    position: Option<pb::WatchPosition>,
    tx: mpsc::Sender<NodeMsg>,
}

impl Follow {
    async fn run(mut self, first: oneshot::Sender<Result<pb::WatchPosition, Error>>) {
        let mut first = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let error = match self.subscribe(&mut first, &mut backoff).await {
                Ok(()) => Error::Unavailable { required: 0, alive: 0, message: format!("node {} ended the watch", self.node) },
                Err(e) => e,
            };
            if is_terminal(&error) {
                match first.take() {
                    Some(f) => drop(f.send(Err(error))),
                    None => drop(self.tx.send(NodeMsg::Failed(error)).await),
                }
                return;
            }
            let wait = match &error {
                Error::RateLimited { retry_after, .. } => (*retry_after).max(BACKOFF_MIN),
                _ => backoff,
            };
            if let Some(f) = first.take() {
                // The caller learns this node did not answer; it goes on
                // being retried here, from now once it answers.
                drop(f.send(Err(error)));
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if self.tx.is_closed() {
                return;
            }
        }
    }

    async fn subscribe(
        &mut self,
        first: &mut Option<oneshot::Sender<Result<pb::WatchPosition, Error>>>,
        backoff: &mut Duration,
    ) -> Result<(), Error> {
        let req = pb::WatchRequest { prefix: self.prefix.clone(), resume: self.position.clone() };
        let mut stream = crate::coalesce::kv(&self.channel).watch(req).await?.into_inner();
        while let Some(resp) = stream.message().await? {
            *backoff = BACKOFF_MIN;
            if let Some(p) = &resp.position {
                if p.node != self.node {
                    return Err(Error::InvalidArgument {
                        message: format!("the node at {}'s address answered as {:?}; the cluster changed, watch again", self.node, p.node),
                    });
                }
                self.position = Some(p.clone());
            }
            if let Some(f) = first.take() {
                drop(f.send(Ok(self.position.clone().unwrap_or_default())));
            }
            // The first message goes to the stream too: if `watch` stopped
            // waiting for this node, its start position is learnt here.
            if self.tx.send(NodeMsg::Batch { node: self.node.clone(), resp }).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Client {
    /// Watches every key under `prefix`: a stream of [`WatchEvent`]s from
    /// every node of the cluster, merged, without duplicates (module docs).
    ///
    /// Without `resume` it starts from now: a write acknowledged after this
    /// returns is delivered (by every node that answered; a node down now is
    /// followed once it answers, from then on). With `resume` (a
    /// [`WatchEvent::position`] or [`WatchStream::position`]) each node
    /// resumes after its part of it, and what changed since is delivered;
    /// a node the position does not name starts from now. A node that
    /// cannot resume makes this return [`Error::ResyncRequired`].
    ///
    /// What is promised: at least once while the stream lives, per key in
    /// an order consistent with causality per node, versions possibly
    /// coalesced; no order across keys. README "Watch" says it in full.
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
    /// use futures::StreamExt;
    /// use ringkv_client::{Level, Options};
    /// # while client.put(b"warm-up", b"", None, Options::level(Level::One)).await.is_err() && t0.elapsed().as_secs() < 10 { tokio::time::sleep(std::time::Duration::from_millis(20)).await; }
    /// let mut changes = client.watch(b"orders/", None).await?;
    /// client.put(b"orders/1", b"new", None, Options::level(Level::Quorum)).await?;
    /// client.delete(b"orders/1", None, Options::level(Level::Quorum)).await?;
    /// let put = changes.next().await.unwrap()?;
    /// assert_eq!((put.key.as_slice(), put.siblings[0].value.as_slice(), put.deleted), (&b"orders/1"[..], &b"new"[..], false));
    /// let delete = changes.next().await.unwrap()?;
    /// assert!(delete.deleted);
    /// // Later, from where it stopped:
    /// let token = delete.position.to_token();
    /// drop(changes);
    /// let resumed = client.watch(b"orders/", Some(token.parse()?)).await?;
    /// # drop(resumed);
    /// # stop.cancel();
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, prefix: &[u8], resume: Option<WatchPosition>) -> Result<WatchStream, Error> {
        let status = self.status().await?;
        let resume = resume.unwrap_or_default();
        let (tx, rx) = mpsc::channel(BUFFERED);
        let mut tasks = Vec::new();
        let mut starts = Vec::new();
        for n in status.nodes.iter().filter(|n| n.state != "left" && !n.address.is_empty()) {
            let channel = match self.endpoints.iter().find(|(a, _)| *a == n.address) {
                Some((_, ch)) => ch.clone(),
                None => self.credentials.channel(&n.address)?,
            };
            let follow = Follow { node: n.id.clone(), channel, prefix: prefix.to_vec(), position: resume.node(&n.id), tx: tx.clone() };
            let (first_tx, first_rx) = oneshot::channel();
            tasks.push(tokio::spawn(follow.run(first_tx)));
            starts.push((n.id.clone(), first_rx));
        }
        drop(tx);
        // A followed node that does not answer in time keeps its place.
        let mut position = WatchPosition::default();
        for (node, _) in &starts {
            if let Some(p) = resume.node(node) {
                position.set(&p);
            }
        }
        let dedup = dedup::Dedup::new(dedup::DEFAULT_CAPACITY);
        let mut stream = WatchStream { rx, ready: VecDeque::new(), position, dedup, tasks, done: false };
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut answered = 0;
        let mut failure: Option<Error> = None;
        for (node, first) in starts {
            match tokio::time::timeout_at(deadline, first).await {
                Ok(Ok(Ok(p))) => {
                    stream.position.set(&p);
                    answered += 1;
                }
                Ok(Ok(Err(e))) if is_terminal(&e) => return Err(e),
                Ok(Ok(Err(e))) => failure = failure.or(Some(e)),
                Ok(Err(_)) => {}
                Err(_) => failure = failure.or(Some(Error::Timeout { message: format!("node {node} did not answer the watch in time") })),
            }
        }
        if answered == 0 {
            return Err(
                failure.unwrap_or_else(|| Error::Connect { endpoints: self.endpoints().join(","), message: "no node to watch".into() })
            );
        }
        Ok(stream)
    }
}
