//! The per-peer replicate queue: what waits for a peer's batching task
//! (`peer_client.rs`), bounded in messages and bytes.
//!
//! Without a bound, a peer that still heartbeats but answers slowly lets
//! its queue grow for as long as writes arrive, and a caller that timed out
//! leaves its message behind to be sent anyway. So:
//! - a message that would take the queue past [`MAX_QUEUED`] messages or
//!   [`MAX_QUEUED_BYTES`] bytes is refused at once ([`Refused::Full`]); the
//!   coordinator counts the replica as failed and hints it, as for any
//!   message that was never sent;
//! - a message whose caller has given up (its reply receiver is gone) is
//!   dropped when the task reaches it, not sent.
//!
//! A message always fits an empty queue, so one value of any accepted size
//! still moves. The count is kept with atomics outside the channel, so two
//! writers racing for the last place may both get in: the bound is exact to
//! within the number of concurrent senders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ringkv_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;

/// Messages queued per peer before new ones are refused. At 64 writes in
/// flight with N = 3 a busy peer's queue holds about 128; this is 32 times
/// that, so only a peer far behind ever fills it.
pub const MAX_QUEUED: usize = 4096;
/// Bytes (keys and records) queued per peer before new ones are refused.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// One queued replicate message and where its outcome goes.
pub struct Pending {
    /// The message.
    pub req: pb::ReplicateRequest,
    /// The caller's end; closed when the caller gave up.
    pub reply: oneshot::Sender<Result<()>>,
    size: usize,
}

impl Pending {
    /// Bytes the message counts for (key, record and sender id).
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at its bound: the peer is far behind.
    Full {
        /// Messages queued.
        queued: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// The batching task has stopped.
    Closed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { queued, bytes } => write!(
                f,
                "the replicate queue is full ({queued} messages, {bytes} bytes waiting; bounds {MAX_QUEUED} and {MAX_QUEUED_BYTES}): the peer is far behind, so this write is hinted instead"
            ),
            Refused::Closed => f.write_str("the batching task stopped"),
        }
    }
}

/// What is queued, in messages and bytes.
#[derive(Debug)]
struct Budget {
    max_items: usize,
    max_bytes: usize,
    items: AtomicUsize,
    bytes: AtomicUsize,
}

impl Budget {
    /// Takes room for a message of `size` bytes, or says how full it is.
    fn take(&self, size: usize) -> std::result::Result<(), Refused> {
        let items = self.items.fetch_add(1, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(size, Ordering::AcqRel);
        if items == 0 || (items < self.max_items && bytes.saturating_add(size) <= self.max_bytes) {
            return Ok(());
        }
        self.give_back(size);
        Err(Refused::Full { queued: items, bytes })
    }

    fn give_back(&self, size: usize) {
        self.items.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }
}

/// The sending side, shared by every writer to one peer.
#[derive(Clone)]
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Pending>,
    budget: Arc<Budget>,
}

/// The batching task's side.
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Pending>,
    budget: Arc<Budget>,
    dropped: usize,
}

/// A queue bounded at [`MAX_QUEUED`] messages and [`MAX_QUEUED_BYTES`].
pub fn queue() -> (QueueSender, QueueReceiver) {
    bounded(MAX_QUEUED, MAX_QUEUED_BYTES)
}

/// A queue with the given bounds (tests use small ones).
pub fn bounded(max_items: usize, max_bytes: usize) -> (QueueSender, QueueReceiver) {
    let budget = Arc::new(Budget { max_items, max_bytes, items: AtomicUsize::new(0), bytes: AtomicUsize::new(0) });
    let (tx, rx) = mpsc::unbounded_channel();
    (QueueSender { tx, budget: budget.clone() }, QueueReceiver { rx, budget, dropped: 0 })
}

impl QueueSender {
    /// Queues `req`; its outcome will be sent to `reply`.
    pub fn send(&self, req: pb::ReplicateRequest, reply: oneshot::Sender<Result<()>>) -> std::result::Result<(), Refused> {
        let size = req.key.len() + req.version.len() + req.from.len();
        self.budget.take(size)?;
        self.tx.send(Pending { req, reply, size }).map_err(|_| {
            self.budget.give_back(size);
            Refused::Closed
        })
    }

    /// True once the batching task is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl QueueReceiver {
    /// The next message whose caller still waits, or `None` once every
    /// sender is gone.
    pub async fn recv(&mut self) -> Option<Pending> {
        loop {
            let p = self.rx.recv().await?;
            if let Some(p) = self.keep(p) {
                return Some(p);
            }
        }
    }

    /// The next message already queued whose caller still waits.
    pub fn try_recv(&mut self) -> Option<Pending> {
        loop {
            let p = self.rx.try_recv().ok()?;
            if let Some(p) = self.keep(p) {
                return Some(p);
            }
        }
    }

    /// Messages dropped so far because their caller had given up.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Releases the message's room; keeps it only if its caller waits.
    fn keep(&mut self, p: Pending) -> Option<Pending> {
        self.budget.give_back(p.size);
        if p.reply.is_closed() {
            self.dropped += 1;
            return None;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(bytes: usize) -> pb::ReplicateRequest {
        pb::ReplicateRequest { key: vec![0; bytes], version: Vec::new(), from: String::new() }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_takes_more_once_drained() {
        let (tx, mut rx) = bounded(2, 1000);
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let (reply, outcome) = oneshot::channel();
            tx.send(msg(10), reply).unwrap();
            waiting.push(outcome);
        }
        let (reply, _outcome) = oneshot::channel();
        assert_eq!(tx.send(msg(10), reply), Err(Refused::Full { queued: 2, bytes: 20 }));
        assert!(rx.recv().await.is_some());
        let (reply, _outcome) = oneshot::channel();
        assert!(tx.send(msg(10), reply).is_ok(), "room again after one was taken");
    }

    #[tokio::test]
    async fn bytes_bound_the_queue_but_an_empty_queue_takes_any_message() {
        let (tx, mut rx) = bounded(100, 50);
        let (reply, _a) = oneshot::channel();
        tx.send(msg(500), reply).expect("an oversized message fits an empty queue");
        let (reply, _b) = oneshot::channel();
        assert!(matches!(tx.send(msg(1), reply), Err(Refused::Full { .. })), "nothing fits behind it");
        assert_eq!(rx.recv().await.map(|p| p.size()), Some(500));
        let (reply, _c) = oneshot::channel();
        let (reply2, _d) = oneshot::channel();
        tx.send(msg(30), reply).unwrap();
        assert!(matches!(tx.send(msg(30), reply2), Err(Refused::Full { .. })), "30 + 30 is over 50");
    }

    #[tokio::test]
    async fn messages_whose_caller_gave_up_are_dropped_and_free_their_room() {
        let (tx, mut rx) = bounded(2, 1000);
        let (reply, outcome) = oneshot::channel();
        tx.send(msg(1), reply).unwrap();
        drop(outcome); // the caller timed out
        let (reply, _kept) = oneshot::channel();
        tx.send(msg(2), reply).unwrap();
        let got = rx.try_recv().expect("the live message");
        assert_eq!(got.size(), 2, "the abandoned one was skipped");
        assert_eq!(rx.dropped(), 1);
        assert!(rx.try_recv().is_none());
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let (reply, outcome) = oneshot::channel();
            waiting.push(outcome);
            tx.send(msg(1), reply).expect("both places free again");
        }
    }

    #[tokio::test]
    async fn a_stopped_task_is_reported() {
        let (tx, rx) = bounded(2, 1000);
        drop(rx);
        let (reply, _o) = oneshot::channel();
        assert_eq!(tx.send(msg(1), reply), Err(Refused::Closed));
        assert!(tx.is_closed());
    }
}
