//! The `cas` workload: registers driven only by SERIAL compare-and-set and
//! SERIAL reads, for the hard linearizability check (`cas_check.rs`).
//!
//! Each client keeps, per key, the value it last saw (`None`: absent, or
//! not known). Most operations are a cas from that value to a fresh unique
//! value `c<client>-<seq>`; the rest, and every operation after an unknown
//! outcome, are SERIAL reads that refresh it. A cas that is not applied
//! reports the current value, which the client adopts. So most cas
//! operations race other clients' on the same expected value, which is
//! exactly what Paxos must serialize.
//!
//! Outcomes: `ok` when the node answered (applied or not); `fail` when it
//! said nothing was proposed (`unavailable`, a server-side `timeout`, an
//! invalid argument, a refused connection); `info` otherwise
//! (`indeterminate`, a client-side timeout, anything else).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, Level, Options};

use crate::history::{Detail, Kind, Op, Outcome, SERIAL_LEVEL};
use crate::workload::{ClientSpec, Recorder};

/// Fraction of operations that are SERIAL reads when the client knows the
/// value.
const READ_FRACTION: f64 = 0.25;

fn record(rec: &Recorder, id: usize, key: &str, kind: Kind, invoke_ms: u64, outcome: Outcome, detail: Detail) {
    let op = Op { client: id, key: key.into(), kind, level: SERIAL_LEVEL, invoke_ms, complete_ms: rec.now_ms(), outcome, detail };
    rec.ops.lock().expect("lock").push(op);
}

fn detail(r: Option<&ringkv_client::pb::Receipt>) -> Detail {
    Detail { coordinator: r.map_or(String::new(), |r| r.coordinator.clone()), acked: r.map_or(0, |r| r.acked), ..Default::default() }
}

/// How a failed cas ended: `fail` only when nothing can have been proposed.
fn cas_outcome(e: &Error) -> Outcome {
    match e {
        Error::Unavailable { .. } | Error::InvalidArgument { .. } | Error::Connect { .. } | Error::Timeout { .. } => Outcome::Fail,
        Error::Other { kind, .. } if kind == "clock_skew" => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// A SERIAL read, recorded; the value read when it answered.
async fn read(client: &Client, rec: &Recorder, id: usize, key: &str, timeout: Duration) -> Option<Option<String>> {
    let invoke_ms = rec.now_ms();
    let opts = Options { level: Level::Serial, timeout: Some(timeout.mul_f64(0.8)), ..Default::default() };
    let result = tokio::time::timeout(timeout, client.get(key.as_bytes(), opts)).await;
    let (outcome, values, d) = match result {
        Ok(Ok(r)) => {
            let values: Vec<String> = r.siblings.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
            (Outcome::Ok, values, detail(r.receipt.as_ref()))
        }
        Ok(Err(e)) => (Outcome::Fail, Vec::new(), Detail { error: format!("{}: {e}", e.kind()), ..Default::default() }),
        Err(_) => (Outcome::Fail, Vec::new(), Detail { error: "client timeout".into(), ..Default::default() }),
    };
    let seen = (outcome == Outcome::Ok).then(|| values.first().cloned());
    record(rec, id, key, Kind::Get { values }, invoke_ms, outcome, d);
    seen
}

/// A SERIAL cas, recorded. Returns what the client knows afterwards:
/// `Some(v)` the key's value, `None` unknown.
async fn cas(
    client: &Client,
    rec: &Recorder,
    id: usize,
    key: &str,
    expect: Option<String>,
    value: String,
    timeout: Duration,
) -> Option<Option<String>> {
    let invoke_ms = rec.now_ms();
    let opts = Options { level: Level::Serial, timeout: Some(timeout.mul_f64(0.8)), ..Default::default() };
    let call = client.cas(key.as_bytes(), expect.as_deref().map(str::as_bytes), Some(value.as_bytes()), opts);
    let result = tokio::time::timeout(timeout, call).await;
    let (outcome, applied, current, d) = match result {
        Ok(Ok(r)) => {
            let current: Vec<String> = r.current.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
            (Outcome::Ok, r.applied, current, detail(r.receipt.as_ref()))
        }
        Ok(Err(e)) => (cas_outcome(&e), false, Vec::new(), Detail { error: format!("{}: {e}", e.kind()), ..Default::default() }),
        Err(_) => (Outcome::Info, false, Vec::new(), Detail { error: "client timeout".into(), ..Default::default() }),
    };
    let known = match (outcome, applied) {
        (Outcome::Ok, true) => Some(Some(value.clone())),
        (Outcome::Ok, false) => Some(current.first().cloned()),
        (Outcome::Fail, _) => Some(expect.clone()),
        (Outcome::Info, _) => None,
    };
    let shown = if applied { Vec::new() } else { current };
    record(rec, id, key, Kind::Cas { expect, value, applied, current: shown }, invoke_ms, outcome, d);
    known
}

/// Runs one cas client until `deadline`.
pub async fn run_client(client: Client, spec: ClientSpec, rec: &Recorder, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let keys = spec.register_keys.max(1);
    // Per key: what this client believes it holds (None inside: absent).
    let mut known: Vec<Option<Option<String>>> = vec![Some(None); keys];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let k = rng.random_range(0..keys);
        let key = format!("cas-r{k}");
        known[k] = match known[k].clone() {
            Some(expect) if !rng.random_bool(READ_FRACTION) => {
                seq += 1;
                cas(&client, rec, spec.id, &key, expect, format!("c{}-{seq}", spec.id), spec.op_timeout).await
            }
            _ => read(&client, rec, spec.id, &key, spec.op_timeout).await.or(known[k].clone()),
        };
        tokio::time::sleep(spec.think).await;
    }
}
