//! One watcher's stream: a task that reads the change log from the
//! watcher's position, sends what matches its prefix, and waits for more.
//!
//! The task sends into a small bounded channel that the gRPC response
//! drains. A watcher that stops reading therefore stalls only its own task
//! (HTTP/2 flow control fills up, then the channel); writers never wait for
//! it, and the log keeps evicting. When the task reads again and finds its
//! position evicted, it ends the stream with `ResyncRequired`. Memory per
//! watcher is bounded by the channel: [`BUFFERED`] messages of at most
//! [`LIMIT`] each.
//!
//! The first message carries no events and says where the stream starts,
//! so a watcher that sees no change can still resume from there. When the
//! position moves past changes outside the prefix, a progress message (no
//! events) says so at most every [`PROGRESS_EVERY`], so an idle watcher's
//! position does not fall behind the log while it waits.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::log::{Change, ChangeLog, ReadLimit};
use crate::coordinator::encode_context;
use crate::error::{Error, Result};
use crate::record;
use crate::version::DvvSet;

/// What one message may hold: up to 256 changes and 4 MiB (at least one
/// change, however large), after examining at most 4096 changes, so one
/// read holds the log's lock only briefly.
pub const LIMIT: ReadLimit = ReadLimit { scan: 4096, changes: 256, bytes: 4 * 1024 * 1024 };

/// Messages buffered per watcher beyond what the transport holds.
pub const BUFFERED: usize = 4;

/// How often an idle watcher is told its position moved.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One item of a watch response stream.
pub type Item = std::result::Result<pb::WatchResponse, tonic::Status>;

/// A watcher: which node's log, which keys, and where it stands.
#[derive(Clone, Debug)]
pub struct Watcher {
    /// This node's id, for positions and messages.
    pub node: String,
    /// Only keys starting with this.
    pub prefix: Vec<u8>,
    /// The log's incarnation.
    pub epoch: u64,
    /// The last change accounted for.
    pub after: u64,
}

/// Where a watch on `node` starts: after `resume` when it is still
/// resumable, else an error saying why not; from now when it is absent.
pub fn start(log: &ChangeLog, node: &str, prefix: Vec<u8>, resume: Option<&pb::WatchPosition>) -> Result<Watcher> {
    let (epoch, after) = match resume {
        None => log.head(),
        Some(p) if p.node != node => {
            return Err(Error::InvalidArgument(format!(
                "the watch position is node {:?}'s, and this is node {node:?}; resume each node's stream on that node",
                p.node
            )))
        }
        Some(p) => {
            log.check(p.epoch, p.seq).map_err(|gap| match gap.needs_resync() {
                true => Error::ResyncRequired(format!("node {node}: {gap}")),
                false => Error::InvalidArgument(format!("node {node}: {gap}")),
            })?;
            (p.epoch, p.seq)
        }
    };
    Ok(Watcher { node: node.to_string(), prefix, epoch, after })
}

/// Serves `watcher` from `log` until the receiver goes away, the log
/// evicts its position, or `shutdown`. The permit counts the watch against
/// `max_watches` for as long as the task runs.
pub fn spawn(log: Arc<ChangeLog>, watcher: Watcher, shutdown: CancellationToken, permit: OwnedSemaphorePermit) -> ReceiverStream<Item> {
    let (tx, rx) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        let _permit = permit;
        pump(&log, watcher, &tx, &shutdown).await;
    });
    ReceiverStream::new(rx)
}

/// The watch event for one stored change.
pub fn event(change: &Change) -> Result<pb::WatchEvent> {
    let dvv: DvvSet = record::decode(&change.key, &change.record)?;
    let clock = dvv.context();
    Ok(pb::WatchEvent {
        key: change.key.clone(),
        siblings: dvv.siblings().into_iter().map(Into::into).collect(),
        context: encode_context(&clock),
        clock: clock.into_iter().collect(),
        seq: change.seq,
    })
}

fn message(w: &Watcher, events: Vec<pb::WatchEvent>, seq: u64) -> pb::WatchResponse {
    pb::WatchResponse { events, position: Some(pb::WatchPosition { node: w.node.clone(), epoch: w.epoch, seq }) }
}

/// Sends, unless shutdown comes first; false when the stream is over.
async fn send(tx: &mpsc::Sender<Item>, item: Item, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

async fn pump(log: &Arc<ChangeLog>, mut w: Watcher, tx: &mpsc::Sender<Item>, shutdown: &CancellationToken) {
    let subscription = log.subscribe();
    if !send(tx, Ok(message(&w, Vec::new(), w.after)), shutdown).await {
        return;
    }
    let mut told = w.after;
    let mut told_at = tokio::time::Instant::now();
    loop {
        let batch = match log.read(w.epoch, w.after, &w.prefix, LIMIT) {
            Ok(batch) => batch,
            Err(gap) => {
                tracing::debug!(node = %w.node, after = w.after, %gap, "watcher fell behind the change log");
                let e = Error::ResyncRequired(format!("node {}: {gap}", w.node));
                let _ = send(tx, Err(e.into()), shutdown).await;
                return;
            }
        };
        w.after = batch.position;
        if !batch.changes.is_empty() {
            let events = batch
                .changes
                .iter()
                .filter_map(|c| event(c).map_err(|e| tracing::warn!(node = %w.node, error = %e, "change not sent to watchers")).ok())
                .collect();
            if !send(tx, Ok(message(&w, events, w.after)), shutdown).await {
                return;
            }
            (told, told_at) = (w.after, tokio::time::Instant::now());
            continue;
        }
        if w.after > told && told_at.elapsed() >= PROGRESS_EVERY {
            if !send(tx, Ok(message(&w, Vec::new(), w.after)), shutdown).await {
                return;
            }
            (told, told_at) = (w.after, tokio::time::Instant::now());
        }
        tokio::select! {
            _ = subscription.changed_after(w.after) => {}
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => {
                let _ = tx.try_send(Err(tonic::Status::unavailable(format!("node {} is shutting down; watch again elsewhere or later", w.node))));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::version::{Context, Hlc, Sibling};
    use crate::watch::Retention;

    fn record(value: &str, tombstone: bool) -> Vec<u8> {
        let mut d = DvvSet::default();
        let s = Sibling { hlc: Hlc { wall_ms: 1, logical: 0, node: "n1".into() }, value: value.into(), tombstone, expires_at_ms: None };
        d.update(&Context::new(), "n1@1", s, false).unwrap();
        record::encode(&d)
    }

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    #[tokio::test]
    async fn a_stream_starts_with_its_position_then_sends_matching_changes_with_clock_and_tombstones() {
        let log = Arc::new(ChangeLog::new(5, Retention::default()));
        log.append(b"app/old".to_vec(), record("before", false));
        let w = start(&log, "n1", b"app/".to_vec(), None).unwrap();
        let mut s = spawn(log.clone(), w, CancellationToken::new(), permit());
        let first = s.next().await.unwrap().unwrap();
        assert!(first.events.is_empty());
        assert_eq!(first.position, Some(pb::WatchPosition { node: "n1".into(), epoch: 5, seq: 1 }), "starts from now");
        log.append(b"other/x".to_vec(), record("no", false));
        log.append(b"app/k".to_vec(), record("", true));
        let m = s.next().await.unwrap().unwrap();
        assert_eq!(m.events.len(), 1, "{m:?}");
        let e = &m.events[0];
        assert_eq!((e.key.as_slice(), e.seq), (&b"app/k"[..], 3));
        assert!(e.siblings[0].tombstone, "a delete shows as a tombstone");
        assert_eq!(e.clock.get("n1@1"), Some(&1));
        assert!(!e.context.is_empty());
        assert_eq!(m.position.unwrap().seq, 3);
    }

    #[test]
    fn a_position_from_another_node_or_incarnation_or_past_the_log_is_refused() {
        let log = ChangeLog::new(5, Retention { max_changes: 2, max_bytes: usize::MAX });
        for i in 0..4 {
            log.append(format!("k{i}").into_bytes(), record("v", false));
        }
        let at = |node: &str, epoch, seq| pb::WatchPosition { node: node.into(), epoch, seq };
        assert!(matches!(start(&log, "n1", vec![], Some(&at("n2", 5, 3))), Err(Error::InvalidArgument(_))));
        assert!(matches!(start(&log, "n1", vec![], Some(&at("n1", 4, 3))), Err(Error::ResyncRequired(_))));
        assert!(matches!(start(&log, "n1", vec![], Some(&at("n1", 5, 1))), Err(Error::ResyncRequired(_))), "evicted");
        assert!(matches!(start(&log, "n1", vec![], Some(&at("n1", 5, 9))), Err(Error::InvalidArgument(_))));
        assert_eq!(start(&log, "n1", vec![], Some(&at("n1", 5, 2))).unwrap().after, 2);
        let status = tonic::Status::from(Error::ResyncRequired("x".into()));
        assert_eq!(status.code(), tonic::Code::OutOfRange);
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_gets_resync_and_never_blocks_appends() {
        let log = Arc::new(ChangeLog::new(1, Retention { max_changes: 10, max_bytes: usize::MAX }));
        let w = start(&log, "n1", Vec::new(), None).unwrap();
        let mut s = spawn(log.clone(), w, CancellationToken::new(), permit());
        // Nobody reads while 10,000 changes go in: appends never wait.
        for i in 0..10_000u32 {
            log.append(i.to_be_bytes().to_vec(), record("v", false));
        }
        let mut resync = None;
        while let Some(item) = s.next().await {
            if let Err(status) = item {
                resync = Some(status);
                break;
            }
        }
        let status = resync.expect("the stream ends with an error");
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("resync"), "{}", status.message());
    }
}
