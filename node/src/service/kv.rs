//! The client-facing `Kv` service.
//!
//! Each request runs inside its own `request` span and, once answered, is
//! counted by op, level and outcome, timed, and its receipt's replicas
//! recorded into the span and the node's metrics (`metrics/request.rs`):
//! the public methods below do only that, around the private ones that
//! serve.

mod batch;

use std::future::Future;
use std::sync::Arc;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::ReadRepair;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::timeout;
use crate::coordinator::{decode_context, encode_context, Coordinator, Read, SerialOp, Write};
use crate::error::Error;
use crate::metrics::{level_label, outcome_of, request_span, Op, Receipted};
use crate::quorum::Level;
use crate::rate_limit::Client;
use crate::security::{grants_of, remote_ip, Grants};
use crate::shared::Shared;
use crate::watch;

/// Default and largest page for `Scan`.
const SCAN_DEFAULT_LIMIT: usize = 1000;
const SCAN_MAX_LIMIT: usize = 10_000;

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> InFlight<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU64) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves `ringkv.v1.Kv`.
#[derive(Clone)]
pub struct KvService {
    s: Arc<Shared>,
    coordinator: Coordinator,
    /// One permit per watch stream being served (`max_watches`).
    watches: Arc<tokio::sync::Semaphore>,
}

impl KvService {
    /// A service over the node's shared state.
    pub fn new(s: Arc<Shared>) -> Self {
        let watches = Arc::new(tokio::sync::Semaphore::new(s.config.max_watches));
        Self { coordinator: Coordinator::new(s.clone()), s, watches }
    }

    fn write(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        context: Option<Vec<u8>>,
        tombstone: bool,
        ttl_ms: u64,
        options: Option<&pb::RequestOptions>,
    ) -> Result<Write, Error> {
        Ok(Write {
            key,
            value,
            context: context.as_deref().map(decode_context).transpose()?,
            tombstone,
            ttl_ms,
            level: Level::from_proto(consistency(options))?,
            timeout: timeout(options, &self.s.config),
            sloppy: options.is_some_and(|o| o.sloppy),
        })
    }
}

/// The request's raw consistency level (0, the default, when unset).
fn consistency(options: Option<&pb::RequestOptions>) -> i32 {
    options.map_or(0, |o| o.consistency)
}

fn read_repair(options: Option<&pb::RequestOptions>) -> Result<ReadRepair, Error> {
    let raw = options.map_or(0, |o| o.read_repair);
    ReadRepair::try_from(raw)
        .map_err(|_| Error::InvalidArgument(format!("unknown read_repair mode {raw}; expected blocking, async or off")))
}

impl KvService {
    /// Who the client is (the gate authenticated it) and its rate limit:
    /// refused before any work when it is over.
    fn admit_client<T>(&self, req: &Request<T>) -> Result<Arc<Grants>, Error> {
        let (grants, client) = caller(req)?;
        self.charge(&grants, &client)?;
        Ok(grants)
    }

    /// Takes one request from `client`'s rate limit.
    fn charge(&self, grants: &Grants, client: &Client) -> Result<(), Error> {
        self.s.rate_limits.check(client, grants.rate_limit)
    }
}

/// Who sent `req` (the gate authenticated it), and whose rate limit it
/// counts against: its principal's, or without tokens its address's.
fn caller<T>(req: &Request<T>) -> Result<(Arc<Grants>, Client), Error> {
    let grants = grants_of(req)?.clone();
    let client = match &grants.name {
        Some(name) => Client::Principal(name.clone()),
        None => Client::Address(remote_ip(req.extensions())),
    };
    Ok((grants, client))
}

impl KvService {
    /// Serves one request inside its span, then records it.
    async fn observed<R: Receipted>(
        &self,
        op: Op,
        consistency: i32,
        serve: impl Future<Output = Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status> {
        let level = level_label(consistency, op);
        let span = request_span(op, level);
        let started = tokio::time::Instant::now();
        let result = serve.instrument(span.clone()).await;
        let receipt = result.as_ref().ok().and_then(|r| r.get_ref().receipt());
        self.s.requests.finish(&span, op, level, outcome_of(&result), started.elapsed(), receipt);
        result
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<watch::stream::Item>;
    type BatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BatchResult, Status>>;

    /// Many gets, puts and deletes in one call (`batch.rs`): each item
    /// served as its own request, each result sent as it finishes.
    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<Self::BatchStream>, Status> {
        let (grants, client) = caller(&req)?;
        Ok(Response::new(batch::serve(self.clone(), grants, client, req.into_inner().items)?))
    }

    /// A change stream of this node's replica (`watch/`): gated like a scan
    /// (read on the whole prefix, the client's rate limit once at the
    /// start), and refused beyond `max_watches` streams at once.
    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let grants = self.admit_client(&req)?;
        let req = req.into_inner();
        grants.check_scan(&req.prefix)?;
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| Error::TooManyWatches { max: self.s.config.max_watches })?;
        let log = self.s.store.changes().clone();
        let watcher = watch::stream::start(&log, &self.s.config.id, req.prefix, req.resume.as_ref())?;
        Ok(Response::new(watch::stream::spawn(log, watcher, self.s.shutdown.clone(), permit)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let consistency = consistency(req.get_ref().options.as_ref());
        self.observed(Op::Get, consistency, self.serve_get(req)).await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let consistency = consistency(req.get_ref().options.as_ref());
        self.observed(Op::Put, consistency, self.serve_put(req)).await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let consistency = consistency(req.get_ref().options.as_ref());
        self.observed(Op::Delete, consistency, self.serve_delete(req)).await
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let consistency = consistency(req.get_ref().options.as_ref());
        self.observed(Op::Scan, consistency, self.serve_scan(req)).await
    }

    async fn cas(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let consistency = consistency(req.get_ref().options.as_ref());
        self.observed(Op::Cas, consistency, self.serve_cas(req)).await
    }
}

impl KvService {
    async fn serve_get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let grants = self.admit_client(&req)?;
        self.get_item(&grants, req.into_inner()).await
    }

    /// A get from a caller already admitted.
    async fn get_item(&self, grants: &Grants, req: pb::GetRequest) -> Result<Response<pb::GetResponse>, Status> {
        let _counted = InFlight::new(&self.s.in_flight);
        grants.check_read(&req.key)?;
        let options = req.options.as_ref();
        let read = Read {
            key: req.key,
            level: Level::from_proto(consistency(options))?,
            read_repair: read_repair(options)?,
            timeout: timeout(options, &self.s.config),
        };
        let result = self.coordinator.read(read).await?;
        // Expiry is judged once, here, by this coordinator's clock.
        let now = self.s.clock.wall_ms();
        let (siblings, context) = match &result.version {
            Some(v) => (v.live(now).into_iter().map(Into::into).collect(), encode_context(&v.context())),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Response::new(pb::GetResponse { siblings, context, receipt: Some(result.receipt) }))
    }

    async fn serve_put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let grants = self.admit_client(&req)?;
        self.put_item(&grants, req.into_inner()).await
    }

    /// A put from a caller already admitted.
    async fn put_item(&self, grants: &Grants, req: pb::PutRequest) -> Result<Response<pb::PutResponse>, Status> {
        let _counted = InFlight::new(&self.s.in_flight);
        grants.check_write(&req.key)?;
        let write = self.write(req.key, req.value, req.context, false, req.ttl_ms, req.options.as_ref())?;
        let (ctx, receipt) = self.coordinator.write(write, None).await?;
        Ok(Response::new(pb::PutResponse { context: encode_context(&ctx), receipt: Some(receipt) }))
    }

    async fn serve_delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let grants = self.admit_client(&req)?;
        self.delete_item(&grants, req.into_inner()).await
    }

    /// A delete from a caller already admitted.
    async fn delete_item(&self, grants: &Grants, req: pb::DeleteRequest) -> Result<Response<pb::DeleteResponse>, Status> {
        let _counted = InFlight::new(&self.s.in_flight);
        grants.check_write(&req.key)?;
        let write = self.write(req.key, Vec::new(), req.context, true, 0, req.options.as_ref())?;
        let (_, receipt) = self.coordinator.write(write, None).await?;
        Ok(Response::new(pb::DeleteResponse { receipt: Some(receipt) }))
    }

    async fn serve_scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let grants = self.admit_client(&req)?;
        let _counted = InFlight::new(&self.s.in_flight);
        let req = req.into_inner();
        grants.check_scan(&req.prefix)?;
        let options = req.options.as_ref();
        let limit = match req.limit as usize {
            0 => SCAN_DEFAULT_LIMIT,
            n if n > SCAN_MAX_LIMIT => {
                return Err(Error::InvalidArgument(format!("scan limit {n} is over the maximum of {SCAN_MAX_LIMIT}")).into())
            }
            n => n,
        };
        let level = Level::from_proto(consistency(options))?;
        let page = self.coordinator.scan(req.prefix, req.start_after, limit, level, timeout(options, &self.s.config)).await?;
        // The coordinator returns live keys only, and a resume key that
        // moves past deleted (and expired) ones.
        let now = page.now_ms;
        let entries = page
            .entries
            .into_iter()
            .map(|(key, v)| pb::ScanEntry {
                key,
                siblings: v.live(now).into_iter().map(Into::into).collect(),
                context: encode_context(&v.context()),
            })
            .collect();
        Ok(Response::new(pb::ScanResponse {
            entries,
            more: page.more,
            receipt: Some(page.receipt),
            next_start_after: page.next_start_after,
        }))
    }

    async fn serve_cas(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let grants = self.admit_client(&req)?;
        let _counted = InFlight::new(&self.s.in_flight);
        let req = req.into_inner();
        // A cas writes, and answers the current value when not applied.
        grants.check_write(&req.key)?;
        grants.check_read(&req.key)?;
        let options = req.options.as_ref();
        let level = match consistency(options) {
            0 => Level::Serial,
            raw => Level::from_proto(raw)?,
        };
        if !level.is_serial() {
            return Err(Error::InvalidArgument(format!(
                "cas runs at SERIAL or LOCAL_SERIAL, not {}; leave the level unset (SERIAL) or pass serial / local_serial",
                level.as_str()
            ))
            .into());
        }
        let new = (!req.delete).then_some(req.value);
        let op = SerialOp::Cas { expect: req.expect, new };
        let done = self.coordinator.cas(req.key, op, level, timeout(options, &self.s.config)).await?;
        let now = self.s.clock.wall_ms();
        let (current, context) = match &done.version {
            Some(v) => (v.live(now).into_iter().map(Into::into).collect(), encode_context(&v.context())),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Response::new(pb::CasResponse { applied: done.applied, current, context, receipt: Some(done.receipt) }))
    }
}
