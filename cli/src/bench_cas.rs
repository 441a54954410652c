//! The CAS half of `ringkv bench --workload cas`: half the operations are
//! puts at `--write-level` (QUORUM by default), half are SERIAL cas on a
//! parallel set of keys (`cas-<key>`, so puts never change what a cas
//! expects), so one run compares the two paths' latency and throughput.
//!
//! Each worker remembers, per key, the value it last saw and sets the key
//! from it to a fresh value; a cas that is not applied (another worker, or
//! a put, changed the key) adopts the value it reports. With `--keys 1`
//! every worker races on one key: the contention mode (`--concurrency 16`
//! for the 16 clients), where the receipts' contention retries and
//! the not-applied count tell how Paxos copes.

use std::collections::HashMap;

use ringkv_client::{Client, Level, Options};

/// What one cas did.
pub struct CasDone {
    /// The coordinator, from the receipt.
    pub coordinator: Option<String>,
    /// Its condition held.
    pub applied: bool,
    /// Rounds it lost to a concurrent proposer.
    pub retries: u32,
}

/// One SERIAL cas of `key` from what this worker last saw to `value`.
pub async fn cas(client: &Client, key: &[u8], value: &[u8], known: &mut HashMap<Vec<u8>, Option<Vec<u8>>>) -> Result<CasDone, String> {
    let expect = known.get(key).cloned().flatten();
    let r = client.cas(key, expect.as_deref(), Some(value), Options::level(Level::Serial)).await.map_err(|e| e.kind().to_string())?;
    let next = if r.applied { Some(value.to_vec()) } else { r.current.first().map(|s| s.value.clone()) };
    known.insert(key.to_vec(), next);
    let receipt = r.receipt.as_ref();
    Ok(CasDone {
        coordinator: receipt.map(|r| r.coordinator.clone()),
        applied: r.applied,
        retries: receipt.and_then(|r| r.paxos.as_ref()).map_or(0, |p| p.contention_retries),
    })
}
