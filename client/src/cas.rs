//! Compare-and-set at SERIAL: [`Client::cas`] and its typed result.
//!
//! A CAS is not idempotent, so it moves to another node only when the
//! connection was refused (it cannot have arrived). An `Indeterminate`
//! error means a proposal may have been accepted and may still be
//! completed: read the key at SERIAL to find out.

use crate::{pb, policy, Client, Error, Options};

/// What a [`Client::cas`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct CasResult {
    /// The condition held and the new value (or tombstone) is committed.
    pub applied: bool,
    /// When not applied: the live siblings the condition was checked
    /// against (empty: absent or deleted). When applied: the new value.
    pub current: Vec<pb::Sibling>,
    /// The key's causal context after the request.
    pub context: Vec<u8>,
    /// What it cost; `receipt.paxos` has the Paxos rounds.
    pub receipt: Option<pb::Receipt>,
}

impl Client {
    /// Sets `key` to `new` (`None`: deletes it) only if its current value
    /// is `expect` (`None`: the key must be absent or deleted), as one
    /// linearizable step (per-key Paxos). `opts.level` is
    /// [`Level::Serial`](crate::Level::Serial) (the default when
    /// unspecified) or [`Level::LocalSerial`](crate::Level::LocalSerial).
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
    /// use ringkv_client::{Level, Options};
    /// # while client.put(b"warm-up", b"", None, Options::level(Level::One)).await.is_err() && t0.elapsed().as_secs() < 10 { tokio::time::sleep(std::time::Duration::from_millis(20)).await; }
    /// let serial = Options::level(Level::Serial);
    /// // Take a lock only if nobody holds it.
    /// assert!(client.cas(b"lock", None, Some(b"alice"), serial).await?.applied);
    /// let second = client.cas(b"lock", None, Some(b"bob"), serial).await?;
    /// assert!(!second.applied);
    /// assert_eq!(second.current[0].value, b"alice");
    /// // Release it only if we still hold it.
    /// assert!(client.cas(b"lock", Some(b"alice"), None, serial).await?.applied);
    /// # stop.cancel();
    /// # Ok(()) }
    /// ```
    pub async fn cas(&self, key: &[u8], expect: Option<&[u8]>, new: Option<&[u8]>, opts: Options) -> Result<CasResult, Error> {
        let req = pb::CasRequest {
            key: key.to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            value: new.map(<[u8]>::to_vec).unwrap_or_default(),
            delete: new.is_none(),
            options: Some(opts.to_proto()),
        };
        let resp = self
            .route(policy::OpKind::Write, key, false, |hop| {
                let req = req.clone();
                async move { crate::coalesce::kv(&hop.ch).cas(req).await }
            })
            .await?;
        Ok(CasResult { applied: resp.applied, current: resp.current, context: resp.context, receipt: resp.receipt })
    }
}
