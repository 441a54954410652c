//! The coordinator: turns one client request into messages to the key's
//! replicas, waits for as many answers as the consistency level needs, and
//! writes the receipt of what that cost. Any node coordinates any request
//! (DESIGN §2). Every request reads the same way: a plan, a round, a
//! receipt.
//!
//! **Plan** (`plan.rs`, pure). From the ring, the future ring, liveness and
//! the level: whom to send to, whose answers count, how many are needed,
//! and, under sloppy quorum, which live nodes stand in for down replicas.
//! Too few live replicas fail fast with `Unavailable`, before anything is
//! sent or stored.
//!
//! **Writes** (`write.rs`). Only a replica coordinates a write, because the
//! new sibling's dot names it; a non-replica forwards the write to the
//! first live replica (`forward.rs`), and reports `Indeterminate` once an
//! attempt may have landed. The coordinator stamps the write into its own
//! version, sends the result to the other live and pending replicas (which
//! merge it) and to the stand-ins (which keep it as a hint), hints the
//! down replicas with no stand-in, and answers once W are durable. A
//! `WriteRound` counts the answers. Stragglers finish in the background. A
//! write that misses W after storing it anywhere is `Indeterminate`, never
//! a plain failure. Under ANY, a durable hint counts as the one answer.
//!
//! **Reads** (`read.rs`). A read asks R replicas, this node first, then by
//! recent median latency. When an asked replica fails, or has not answered
//! within its recent p99 (`speculative_retry_ms` until it has enough
//! samples), it asks the next one (speculative retry). Once R have
//! answered, it merges them, marks the stale ones, and repairs them with
//! the merge: before answering (`blocking`), after (`async`), or not at all
//! (`off`). Answers that arrive late are compared and repaired in the
//! background.
//!
//! **SERIAL** (`cas.rs`). `Cas` and SERIAL/LOCAL_SERIAL reads run a
//! Paxos round over a majority of the key's replicas: prepare (with the
//! read riding on it), finish any interrupted proposal, propose the new
//! version or a no-op, commit. The acceptor and the pure rules are in
//! `paxos/`.
//!
//! **Scans** (`scan.rs`) ask every live node for a page under the prefix
//! and merge per key; every token range must have its level of replicas
//! answering.
//!
//! **Receipts** (`receipt.rs`): every response says who was asked, who
//! answered and how fast, who was stale, repaired, hinted or stood in.
//!
//! The paths see the node through `Ctx` (`ctx.rs`): a few config values,
//! the view the plan is made from, the hint store, the HLC, and one call
//! per replica message, which goes to the local store when the replica is
//! this node and through `PeerClient` (`peer_client.rs`) otherwise.

mod cas;
mod cas_phases;
mod ctx;
mod forward;
mod plan;
mod read;
mod receipt;
mod scan;
mod write;

pub use cas::{SerialOp, SerialResult, MAX_CONTENTION_RETRIES};
pub use read::{Read, ReadResult};
pub use scan::ScanResult;
pub use write::Write;

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;

use self::ctx::Ctx;
use crate::error::{Error, Result};
use crate::quorum::Level;
use crate::record;
use crate::shared::Shared;
use crate::version::{Context, DvvSet};

/// Encodes a causal context for the client (framed, so garbage is caught).
pub fn encode_context(ctx: &Context) -> Vec<u8> {
    record::encode(ctx)
}

/// Decodes a client-supplied context.
pub fn decode_context(bytes: &[u8]) -> Result<Context> {
    record::decode::<Context>(b"<context>", bytes)
        .map_err(|e| Error::InvalidArgument(format!("malformed context ({e}); pass the context returned by a get, unchanged")))
}

/// Coordinates requests for one node.
#[derive(Clone)]
pub struct Coordinator {
    ctx: Ctx,
}

impl Coordinator {
    /// A coordinator over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        Self { ctx: Ctx::new(s) }
    }

    /// Checks a key against the configured limits.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        crate::admit::check_key(key, self.ctx.max_key_bytes())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        crate::admit::check_value(value, self.ctx.max_value_bytes())
    }

    /// Coordinates a write (put or delete), or forwards it to a replica.
    /// Returns the new context. `forwarded_from` names the node that
    /// forwarded it here, which must not forward it again.
    pub async fn write(&self, w: Write, forwarded_from: Option<String>) -> Result<(Context, pb::Receipt)> {
        self.check_key(&w.key)?;
        self.check_value(&w.value)?;
        if w.level.is_serial() {
            return Err(Error::InvalidArgument(format!(
                "put and delete do not run at {}; a linearizable write is a cas (ringkv cas KEY --expect OLD --set NEW)",
                w.level.as_str()
            )));
        }
        crate::version::check_ttl(w.ttl_ms, w.tombstone)?;
        // A client's context is distrusted: bounded here, and capped to
        // what the key has issued by `DvvSet::update`.
        w.context.as_ref().map(crate::version::check_context).transpose()?;
        write::write(&self.ctx, w, forwarded_from).await
    }

    /// Coordinates a read. A SERIAL or LOCAL_SERIAL read runs a Paxos
    /// round (`cas.rs`), completing any in-flight proposal first.
    pub async fn read(&self, r: Read) -> Result<ReadResult> {
        self.check_key(&r.key)?;
        if r.level.is_serial() {
            let done = cas::serial(&self.ctx, r.key, SerialOp::Read, r.level, r.timeout).await?;
            return Ok(ReadResult { version: done.version, receipt: done.receipt });
        }
        read::read(&self.ctx, r).await
    }

    /// Coordinates a compare-and-set at `level` (SERIAL or LOCAL_SERIAL):
    /// sets `key` to `new` (`None`: a tombstone) only if its live value is
    /// `expect` (`None`: absent or deleted).
    pub async fn cas(&self, key: Vec<u8>, op: SerialOp, level: Level, timeout: Duration) -> Result<SerialResult> {
        self.check_key(&key)?;
        if let SerialOp::Cas { expect, new } = &op {
            for v in expect.iter().chain(new) {
                self.check_value(v)?;
            }
        }
        cas::serial(&self.ctx, key, op, level, timeout).await
    }

    /// One page of live keys under `prefix`, merged across replicas. Every
    /// token range must have `level` of its replicas answering.
    ///
    /// Each node lists a page of its own keys, deleted ones included (a
    /// tombstone on one replica may hide a live sibling on another). Below
    /// the *horizon*, the least last key of the node pages that were cut
    /// short, every answering node has listed every key it holds, so merged
    /// versions there are complete. Tombstoned keys are dropped before the
    /// page is cut to `limit` keys and [`PAGE_BYTES`](crate::paging::PAGE_BYTES)
    /// bytes, and the page names the key to resume after, which may lie past
    /// its last entry: a run of deleted keys yields a short or empty page
    /// that still moves on.
    pub async fn scan(&self, prefix: Vec<u8>, start_after: Vec<u8>, limit: usize, level: Level, timeout: Duration) -> Result<ScanResult> {
        if level.is_serial() {
            return Err(Error::InvalidArgument("scans do not run at SERIAL; read single keys at SERIAL, or scan at QUORUM".into()));
        }
        scan::scan(&self.ctx, prefix, start_after, limit, level, timeout).await
    }

    /// Each replica's stored version of `key`, side by side. Reads only; never repairs.
    pub async fn inspect(&self, key: &[u8]) -> Result<Vec<(String, Result<Option<DvvSet>>)>> {
        self.check_key(key)?;
        let prefs = self.ctx.ring().preference_list(key, self.ctx.n());
        let timeout = self.ctx.peer_timeout();
        let reads = prefs.into_iter().map(|id| self.ctx.read(id, key.to_vec(), timeout));
        Ok(futures::future::join_all(reads).await.into_iter().map(|(id, r, _)| (id, r)).collect())
    }
}
