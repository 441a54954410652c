//! Clients that run a workload and record every operation.
//!
//! Every written value is unique (`c<client>-<seq>`), so a checker knows
//! which write each read saw. Two workloads:
//! - **register**: a few hot keys; each operation is a read or a blind
//!   write of one of them, at a level drawn per operation;
//! - **set**: each write goes to a fresh key; reads go back to keys this
//!   client wrote, so nothing but a lost write can make one go missing.
//!
//! An operation that gets no answer within the op timeout is recorded as
//! `info` (a write) or `fail` (a read): the client cannot know whether a
//! write landed, and a read that did not answer told it nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{lww, pb, Client, Error, Level, Options};

use crate::history::{Detail, Kind, Op, Outcome};

/// Which workload a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Hot keys, reads and blind writes mixed.
    Register,
    /// A fresh key per write.
    Set,
    /// Half the clients each.
    Both,
    /// Hot keys driven only by SERIAL compare-and-set and SERIAL reads,
    /// checked by the hard linearizability checker (`cas_workload.rs`).
    Cas,
}

/// The levels operations draw from, and their replicas-required number.
pub const LEVELS: [(Level, usize); 3] = [(Level::One, 1), (Level::Quorum, 2), (Level::All, 3)];

/// What one client does.
pub struct ClientSpec {
    /// Its id in the history.
    pub id: usize,
    /// Register or set (not both).
    pub workload: Workload,
    /// Hot keys for the register workload.
    pub register_keys: usize,
    /// Pause between operations.
    pub think: Duration,
    /// Give up on an operation after this long.
    pub op_timeout: Duration,
    /// Seed for its choices.
    pub seed: u64,
}

/// Where operations go: one list shared by every client.
pub struct Recorder {
    /// When the run started; times are ms since then.
    pub start: Instant,
    /// Operations in completion order.
    pub ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// ms since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records an operation invoked at `invoke_ms` that completes now.
    fn record(&self, client: usize, key: &str, kind: Kind, level: usize, invoke_ms: u64, (outcome, detail): (Outcome, Detail)) {
        let op = Op { client, key: key.into(), kind, level, invoke_ms, complete_ms: self.now_ms(), outcome, detail };
        self.ops.lock().expect("lock").push(op);
    }
}

fn hlc(s: &pb::Sibling) -> String {
    s.hlc.as_ref().map_or(String::new(), |h| format!("{}.{}@{}", h.wall_ms, h.logical, h.node))
}

fn receipt_detail(r: Option<&pb::Receipt>) -> Detail {
    let Some(r) = r else { return Detail::default() };
    Detail {
        coordinator: r.coordinator.clone(),
        acked: r.acked,
        stale: r.replicas.iter().filter(|p| p.stale).count() as u32,
        ..Default::default()
    }
}

/// How a failed write ended: `fail` only when the cluster said nothing
/// was written (or the request never left), `info` otherwise.
fn write_outcome(e: &Error) -> Outcome {
    match e {
        Error::Unavailable { .. } | Error::InvalidArgument { .. } | Error::Connect { .. } => Outcome::Fail,
        Error::Other { kind, .. } if kind == "clock_skew" => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// One put, recorded.
pub async fn put(client: &Client, rec: &Recorder, id: usize, key: &str, value: &str, level: (Level, usize), timeout: Duration) {
    let invoke_ms = rec.now_ms();
    let opts = Options { level: level.0, timeout: Some(timeout.mul_f64(0.8)), ..Default::default() };
    let result = tokio::time::timeout(timeout, client.put(key.as_bytes(), value.as_bytes(), None, opts)).await;
    let (outcome, detail) = match result {
        Ok(Ok(r)) => {
            // A put's version is the causal context it returned.
            let version = base64::engine::general_purpose::STANDARD.encode(&r.context);
            (Outcome::Ok, Detail { version, ..receipt_detail(r.receipt.as_ref()) })
        }
        Ok(Err(e)) => (write_outcome(&e), Detail { error: format!("{}: {e}", e.kind()), ..Default::default() }),
        Err(_) => (Outcome::Info, Detail { error: "client timeout".into(), ..Default::default() }),
    };
    rec.record(id, key, Kind::Put { value: value.into() }, level.1, invoke_ms, (outcome, detail));
}

/// One get, recorded.
pub async fn get(client: &Client, rec: &Recorder, id: usize, key: &str, level: (Level, usize), timeout: Duration) -> Option<Vec<String>> {
    let invoke_ms = rec.now_ms();
    let opts = Options { level: level.0, timeout: Some(timeout.mul_f64(0.8)), ..Default::default() };
    let result = tokio::time::timeout(timeout, client.get(key.as_bytes(), opts)).await;
    let (outcome, values, detail) = match result {
        Ok(Ok(r)) => {
            let values: Vec<String> = r.siblings.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
            let mut detail = receipt_detail(r.receipt.as_ref());
            detail.version = lww(&r.siblings).map(hlc).unwrap_or_default();
            (Outcome::Ok, values, detail)
        }
        Ok(Err(e)) => (Outcome::Fail, Vec::new(), Detail { error: format!("{}: {e}", e.kind()), ..Default::default() }),
        Err(_) => (Outcome::Fail, Vec::new(), Detail { error: "client timeout".into(), ..Default::default() }),
    };
    let ok = outcome == Outcome::Ok;
    rec.record(id, key, Kind::Get { values: values.clone() }, level.1, invoke_ms, (outcome, detail));
    ok.then_some(values)
}

/// Runs one client until `deadline`.
pub async fn run_client(client: Client, spec: ClientSpec, rec: &Recorder, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut written: Vec<String> = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let level = LEVELS[rng.random_range(0..LEVELS.len())];
        seq += 1;
        let value = format!("c{}-{seq}", spec.id);
        match spec.workload {
            Workload::Set if written.is_empty() || rng.random_bool(0.6) => {
                let key = format!("s-{value}");
                put(&client, rec, spec.id, &key, &value, level, spec.op_timeout).await;
                written.push(key);
            }
            Workload::Set => {
                let key = written[rng.random_range(0..written.len())].clone();
                get(&client, rec, spec.id, &key, level, spec.op_timeout).await;
            }
            _ => {
                let key = format!("r{}", rng.random_range(0..spec.register_keys.max(1)));
                if rng.random_bool(0.5) {
                    put(&client, rec, spec.id, &key, &value, level, spec.op_timeout).await;
                } else {
                    get(&client, rec, spec.id, &key, level, spec.op_timeout).await;
                }
            }
        }
        tokio::time::sleep(spec.think).await;
    }
}
