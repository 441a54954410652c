//! Coalescing: concurrent requests for one node share one `Kv.Batch` call.
//!
//! Each link to a node has [`CALLS_IN_FLIGHT`] slots. A request that finds a
//! slot free is sent as its own call (`Get`, `Put` or `Delete`), so a
//! client with one request at a time pays nothing and its latency is that
//! of a plain call. A request that finds every slot taken joins the link's
//! queue instead; the link's task waits for the next free slot and sends
//! everything queued by then (up to [`MAX_ITEMS`] items or [`MAX_BYTES`])
//! as one `Kv.Batch`. The node serves each item as its own request and
//! streams each result back as soon as that item finishes, so a request
//! keeps its own receipt, error and latency, and a slow item does not hold
//! up a fast one. Under load this replaces a stream, its headers and a task
//! per request on both ends with one per batch.
//!
//! A queued request waits at most [`MAX_QUEUE_WAIT`] for a slot: two slow
//! calls (a level ALL on a hung replica, a long deadline) cannot hold back
//! a fast one for longer than that. A request whose caller gave up while
//! it was queued is dropped unsent.
//!
//! A node that does not know `Batch` (an older version) answers
//! `Unimplemented`; the batch's items are then sent one by one, and so is
//! everything on that link for [`REPROBE_AFTER`], when a batch is tried
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use pb::batch_item::Request as Item;
use pb::batch_result::Outcome;
use pb::kv_client::KvClient;
use ringkv_proto::channel::Channel;
use ringkv_proto::v1 as pb;
use ringkv_proto::wire::MAX_MESSAGE_BYTES;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Calls (plain or batch) outstanding per link before requests queue.
pub const CALLS_IN_FLIGHT: usize = 2;
/// Most items in one batch (the node takes up to 1024).
pub const MAX_ITEMS: usize = 256;
/// A batch is cut once its keys and values reach this many bytes.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Longest a queued request waits for a free slot before its batch goes
/// without one.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_millis(2);
/// After a node refuses `Batch`, how long its link sends requests alone
/// before trying a batch again (the node may have been upgraded).
pub const REPROBE_AFTER: Duration = Duration::from_secs(60);

/// One request that may travel in a batch.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    Get(pb::GetRequest),
    Put(pb::PutRequest),
    Delete(pb::DeleteRequest),
}

/// Its answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Get(pb::GetResponse),
    Put(pb::PutResponse),
    Delete(pb::DeleteResponse),
}

type Reply = oneshot::Sender<Result<Answer, Status>>;

/// The way to one node: its slots and its queue.
pub(crate) struct Link {
    slots: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<(Call, Reply)>,
    refusals: Refusals,
}

const NEVER: u64 = u64::MAX;

impl Link {
    /// A link over `ch`, with its task (which ends when the link is dropped).
    pub fn new(ch: Channel) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
        let refusals = Refusals { at: Arc::new(AtomicU64::new(NEVER)), born: Instant::now() };
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(ch, slots.clone(), refusals.clone(), rx));
        Arc::new(Self { slots, queue, refusals })
    }

    /// Sends `call` over `ch`: on its own when a slot is free, else in the
    /// next batch.
    pub async fn send(&self, ch: Channel, call: Call) -> Result<Answer, Status> {
        if self.refusals.recent() {
            return direct(ch, call).await;
        }
        if let Ok(_slot) = self.slots.try_acquire() {
            return direct(ch, call).await;
        }
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((call, _))) = self.queue.send((call, reply)) {
            // The task is gone (its runtime shut down): send it alone.
            return direct(ch, call).await;
        }
        // A dropped reply means the batch's task died after taking it: it
        // may have been sent, so this is a broken call, not a refusal.
        answer.await.unwrap_or_else(|_| Err(Status::unknown("the batch carrying this request was dropped")))
    }
}

/// When a link's node last refused `Batch`, shared by the link and its task.
#[derive(Clone)]
struct Refusals {
    /// Milliseconds since `born`, or `NEVER`.
    at: Arc<AtomicU64>,
    born: Instant,
}

impl Refusals {
    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// The node answered a batch `Unimplemented`.
    fn record(&self) {
        self.at.store(self.now(), Ordering::Relaxed);
    }

    /// Whether that was less than [`REPROBE_AFTER`] ago: requests go alone.
    fn recent(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != NEVER && self.now() < at + REPROBE_AFTER.as_millis() as u64
    }
}

/// The link's task: whenever requests are queued, waits for a free slot
/// (at most [`MAX_QUEUE_WAIT`]) and sends what is queued as one batch.
async fn run(ch: Channel, slots: Arc<Semaphore>, refusals: Refusals, mut rx: mpsc::UnboundedReceiver<(Call, Reply)>) {
    while let Some(first) = rx.recv().await {
        // Two slow calls (a level ALL on a hung replica) must not hold the
        // rest back for their whole deadline: past the wait, the batch goes
        // without a slot.
        let slot = tokio::time::timeout(MAX_QUEUE_WAIT, slots.clone().acquire_owned()).await.ok().and_then(Result::ok);
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some((call, reply)) = next {
            // A caller that gave up (its future dropped, a timeout around
            // it) is not sent: a plain call would not have been either.
            if !reply.is_closed() {
                bytes += call.bytes();
                items.push((call, reply));
            }
            next = if items.len() < MAX_ITEMS && bytes < MAX_BYTES { rx.try_recv().ok() } else { None };
        }
        if items.is_empty() {
            continue;
        }
        let (ch, refusals) = (ch.clone(), refusals.clone());
        tokio::spawn(async move {
            send_batch(ch, items, &refusals).await;
            drop(slot);
        });
    }
}

/// Sends `items` as one `Kv.Batch` (or alone, if only one) and hands each
/// result to its caller.
async fn send_batch(ch: Channel, mut items: Vec<(Call, Reply)>, refusals: &Refusals) {
    if items.len() == 1 {
        let (call, reply) = items.pop().expect("one item");
        let _ = reply.send(direct(ch, call).await);
        return;
    }
    let (calls, replies): (Vec<Call>, Vec<Reply>) = items.into_iter().unzip();
    // Kept to resend alone should the node not know `Batch` (an older
    // version, or a proxy in front of one): `Unimplemented` proves nothing
    // ran.
    let spare = calls.clone();
    let mut replies: Vec<Option<Reply>> = replies.into_iter().map(Some).collect();
    let req = pb::BatchRequest { items: calls.into_iter().map(Call::into_item).collect() };
    let status = match kv(&ch).batch(req).await {
        Err(s) if s.code() == Code::Unimplemented => {
            refusals.record();
            let alone = spare.into_iter().zip(replies.into_iter().flatten()).map(|(call, reply)| {
                let ch = ch.clone();
                async move {
                    let _ = reply.send(direct(ch, call).await);
                }
            });
            join_all(alone).await;
            return;
        }
        Err(s) => s,
        Ok(response) => {
            let mut results = response.into_inner();
            loop {
                match results.message().await {
                    Ok(Some(result)) => {
                        let reply = replies.get_mut(result.index as usize).and_then(Option::take);
                        if let Some(reply) = reply {
                            let _ = reply.send(answer_of(result.outcome));
                        }
                    }
                    // Like a connection that broke mid-call: the item may
                    // have been applied.
                    Ok(None) => break Status::unknown("the node ended the batch without answering this request"),
                    Err(s) => break s,
                }
            }
        }
    };
    for reply in replies.into_iter().flatten() {
        let _ = reply.send(Err(status.clone()));
    }
}

/// `call` as its own RPC.
pub(crate) async fn direct(ch: Channel, call: Call) -> Result<Answer, Status> {
    let mut kv = kv(&ch);
    Ok(match call {
        Call::Get(r) => Answer::Get(kv.get(r).await?.into_inner()),
        Call::Put(r) => Answer::Put(kv.put(r).await?.into_inner()),
        Call::Delete(r) => Answer::Delete(kv.delete(r).await?.into_inner()),
    })
}

/// A `Kv` client over `ch`, with the project's message limits.
pub(crate) fn kv(ch: &Channel) -> KvClient<Channel> {
    KvClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A batch result as the answer (or status) its own call would have had.
fn answer_of(outcome: Option<Outcome>) -> Result<Answer, Status> {
    match outcome {
        Some(Outcome::Get(r)) => Ok(Answer::Get(r)),
        Some(Outcome::Put(r)) => Ok(Answer::Put(r)),
        Some(Outcome::Delete(r)) => Ok(Answer::Delete(r)),
        Some(Outcome::Error(e)) => {
            let mut metadata = MetadataMap::new();
            for (k, v) in &e.metadata {
                if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v.as_str())) {
                    metadata.insert(k, v);
                }
            }
            Err(Status::with_metadata(Code::from(e.code), e.message, metadata))
        }
        None => Err(Status::internal("the node answered a batch item with no outcome")),
    }
}

impl Call {
    fn into_item(self) -> pb::BatchItem {
        let request = match self {
            Call::Get(r) => Item::Get(r),
            Call::Put(r) => Item::Put(r),
            Call::Delete(r) => Item::Delete(r),
        };
        pb::BatchItem { request: Some(request) }
    }

    /// Roughly what it adds to a batch.
    fn bytes(&self) -> usize {
        match self {
            Call::Get(r) => r.key.len(),
            Call::Put(r) => r.key.len() + r.value.len() + r.context.as_ref().map_or(0, Vec::len),
            Call::Delete(r) => r.key.len() + r.context.as_ref().map_or(0, Vec::len),
        }
    }
}

/// What the caller of `Answer::put` and friends gets for a mismatched
/// answer: a node bug, reported rather than unwrapped.
fn mismatched(wanted: &str) -> Status {
    Status::internal(format!("the node answered a {wanted} with another kind of result"))
}

impl Answer {
    pub fn get(self) -> Result<pb::GetResponse, Status> {
        match self {
            Answer::Get(r) => Ok(r),
            _ => Err(mismatched("get")),
        }
    }

    pub fn put(self) -> Result<pb::PutResponse, Status> {
        match self {
            Answer::Put(r) => Ok(r),
            _ => Err(mismatched("put")),
        }
    }

    pub fn delete(self) -> Result<pb::DeleteResponse, Status> {
        match self {
            Answer::Delete(r) => Ok(r),
            _ => Err(mismatched("delete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_error_becomes_the_status_its_own_call_would_have_had() {
        let e = pb::BatchError {
            code: Code::ResourceExhausted as i32,
            message: "rate limited".into(),
            metadata: [("x-ringkv-kind".to_string(), "rate_limited".to_string()), ("bad key\n".to_string(), "x".to_string())].into(),
        };
        let s = answer_of(Some(Outcome::Error(e))).unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, "rate limited"));
        assert_eq!(s.metadata().get("x-ringkv-kind").and_then(|v| v.to_str().ok()), Some("rate_limited"));
        assert_eq!(s.metadata().len(), 1, "a header that cannot be one is left out");
    }

    #[test]
    fn a_mismatched_answer_is_an_error_not_a_panic() {
        let s = Answer::Get(pb::GetResponse::default()).put().unwrap_err();
        assert_eq!(s.code(), Code::Internal);
    }
}
