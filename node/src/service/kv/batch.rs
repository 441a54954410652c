//! `Kv.Batch`: many gets, puts and deletes in one call.
//!
//! The client library sends one when it has several requests for this
//! node at once (`client/src/coalesce.rs`), which saves the per-call cost
//! (an HTTP/2 stream, its headers, a task) that dominates a small request.
//! Nothing else about a request changes: each item is admitted, charged to
//! the caller's rate limit, authorized, served, counted and timed exactly
//! as its own call would be, and answered with its own receipt or error.
//! Items run concurrently in one task, and each result is sent the moment
//! its item finishes, so a QUORUM put never holds up a ONE get.

use std::future::Future;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::batch_item::Request as Item;
use ringkv_proto::v1::batch_result::Outcome;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::{consistency, KvService};
use crate::error::Error;
use crate::metrics::{Op, Receipted};
use crate::rate_limit::Client;
use crate::security::Grants;

/// Most items in one batch.
pub const MAX_ITEMS: usize = 1024;

/// Starts serving `items` for the caller `grants`/`client`; the stream
/// carries one result per item, in the order they finish.
pub(super) fn serve(
    kv: KvService,
    grants: Arc<Grants>,
    client: Client,
    items: Vec<pb::BatchItem>,
) -> Result<ReceiverStream<Result<pb::BatchResult, Status>>, Error> {
    if items.is_empty() {
        return Err(Error::InvalidArgument("a batch holds no items; send at least one".into()));
    }
    if items.len() > MAX_ITEMS {
        return Err(Error::InvalidArgument(format!("a batch holds at most {MAX_ITEMS} items, not {}; split it", items.len())));
    }
    kv.s.requests.batch(items.len());
    let (tx, rx) = tokio::sync::mpsc::channel(items.len().max(1));
    tokio::spawn(async move {
        let (kv, grants, client) = (&kv, &grants, &client);
        let mut running: FuturesUnordered<_> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| async move { (index as u32, kv.guarded(grants, client, item).await) })
            .collect();
        while let Some((index, outcome)) = running.next().await {
            // The caller hung up: the items still running are dropped, as
            // its own calls would be.
            if tx.send(Ok(pb::BatchResult { index, outcome: Some(outcome) })).await.is_err() {
                break;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

impl KvService {
    /// [`serve_item`](Self::serve_item), with a panic (a bug) failing this
    /// item alone, as it would fail only its own call's stream.
    async fn guarded(&self, grants: &Grants, client: &Client, item: pb::BatchItem) -> Outcome {
        std::panic::AssertUnwindSafe(self.serve_item(grants, client, item))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Outcome::Error(error_of(&Status::internal("serving this item panicked; see the node's log"))))
    }

    /// One item, as its own call: charged, observed, served.
    async fn serve_item(&self, grants: &Grants, client: &Client, item: pb::BatchItem) -> Outcome {
        let level = |o: &Option<pb::RequestOptions>| consistency(o.as_ref());
        let result = match item.request {
            Some(Item::Get(req)) => {
                self.as_call(Op::Get, level(&req.options), grants, client, self.get_item(grants, req), Outcome::Get).await
            }
            Some(Item::Put(req)) => {
                self.as_call(Op::Put, level(&req.options), grants, client, self.put_item(grants, req), Outcome::Put).await
            }
            Some(Item::Delete(req)) => {
                self.as_call(Op::Delete, level(&req.options), grants, client, self.delete_item(grants, req), Outcome::Delete).await
            }
            // Charged like any call, so empty items cost their sender too.
            None => {
                let refused = self.charge(grants, client).err();
                let empty = || Error::InvalidArgument("a batch item holds no request; set get, put or delete".into());
                Err(refused.unwrap_or_else(empty).into())
            }
        };
        result.unwrap_or_else(|status| Outcome::Error(error_of(&status)))
    }

    /// Runs `serve` as its own call would run: charged to the caller's rate
    /// limit, then observed (span, counters, latency).
    async fn as_call<R: Receipted>(
        &self,
        op: Op,
        consistency: i32,
        grants: &Grants,
        client: &Client,
        serve: impl Future<Output = Result<Response<R>, Status>>,
        outcome: fn(R) -> Outcome,
    ) -> Result<Outcome, Status> {
        let charged = async {
            self.charge(grants, client)?;
            serve.await
        };
        self.observed(op, consistency, charged).await.map(|r| outcome(r.into_inner()))
    }
}

/// A status as a batch item's error: code, message and its ASCII metadata
/// (the client rebuilds the same status from them).
pub fn error_of(status: &Status) -> pb::BatchError {
    let metadata = status
        .metadata()
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_string(), v.to_str().ok()?.to_string())),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    pb::BatchError { code: status.code() as i32, message: status.message().to_string(), metadata }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KIND_HEADER;

    #[test]
    fn an_item_error_keeps_the_code_the_message_and_the_kind() {
        let status = Status::from(Error::RateLimited { per_sec: 10, burst: 5, retry_after_ms: 250 });
        let e = error_of(&status);
        assert_eq!(e.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(e.message, status.message());
        assert_eq!(e.metadata.get(KIND_HEADER).map(String::as_str), Some("rate_limited"));
        assert_eq!(e.metadata.len(), status.metadata().len(), "every header is carried: {:?}", e.metadata);
    }
}
