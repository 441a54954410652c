//! The randomized nemesis sweep: a five-node cluster (replication factor 3)
//! under a seeded client workload, with a random fault every few simulated
//! seconds. It then heals everything, repairs, reads every key at ALL, and
//! runs every checker over the history.
//!
//! Faults ([`SweepFault`]), one at a time, each healed before the next:
//! - isolate one node;
//! - split a minority of two from the majority;
//! - majorities-ring: each node sees only its two neighbours, so each has a
//!   majority and no two have the same one;
//! - a one-way partition;
//! - hold a link's messages and release them later, so old messages arrive
//!   after newer ones;
//! - crash a node (memory storage survives) and restart it at the heal.
//!
//! The four partitions are jepsen-lite's shapes
//! ([`jepsen_lite::nemesis::Partition`]): the links they cut are defined
//! there once, for real clusters and simulated ones alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_lite::checkers;
use jepsen_lite::history::{History, Kind, Op, Outcome};
use jepsen_lite::nemesis::Partition;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringkv_client::{Error, Level, Options};

use crate::sim::{add_nodes, builder, client, repair, roots, sees, until};

/// A node and its root for one range.
type NodeRoot = (String, Vec<u8>);

/// Nodes in the sweep cluster.
pub const NODES: usize = 5;
const CLIENTS: usize = 3;
const KEYS: usize = 4;

/// What one seed did.
pub struct SweepResult {
    /// Digest of the history and the final state.
    pub digest: String,
    /// The recorded history.
    pub history: History,
    /// Every checker violation.
    pub violations: Vec<String>,
    /// The faults injected, in order.
    pub faults: Vec<String>,
    /// Simulated seconds the run covered.
    pub simulated_secs: f64,
}

fn node(i: usize) -> String {
    format!("n{}", i + 1)
}

fn level(r: usize) -> Level {
    [Level::One, Level::Quorum, Level::All][r - 1]
}

/// One client: random puts and gets of a few hot keys at random levels,
/// each recorded with its outcome, until `stop`.
async fn workload(id: usize, seed: u64, stop: Arc<AtomicBool>, ops: Arc<Mutex<Vec<Op>>>) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (0xc11e47 + id as u64));
    let mut order: Vec<String> = (0..NODES).map(node).collect();
    order.shuffle(&mut rng);
    let c = client(&order.iter().map(String::as_str).collect::<Vec<_>>());
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{}", rng.random_range(0..KEYS));
        let r = rng.random_range(1..=3);
        let opts = Options { level: level(r), timeout: Some(Duration::from_millis(1000)), ..Default::default() };
        let invoke_ms = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        let (kind, outcome) = if rng.random_bool(0.5) {
            n += 1;
            let value = format!("c{id}-{n}");
            let outcome = match c.put(key.as_bytes(), value.as_bytes(), None, opts).await {
                Ok(_) => Outcome::Ok,
                Err(Error::Unavailable { .. } | Error::InvalidArgument { .. }) => Outcome::Fail,
                Err(_) => Outcome::Info,
            };
            (Kind::Put { value }, outcome)
        } else {
            match c.get(key.as_bytes(), opts).await {
                Ok(g) => {
                    (Kind::Get { values: g.siblings.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect() }, Outcome::Ok)
                }
                Err(_) => (Kind::Get { values: Vec::new() }, Outcome::Fail),
            }
        };
        let complete_ms = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        ops.lock().unwrap().push(Op { client: id, key, kind, level: r, invoke_ms, complete_ms, outcome, detail: Default::default() });
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
    }
    Ok(())
}

fn heal(sim: &mut turmoil::Sim<'_>, crashed: &mut Option<String>, held: &mut Option<(String, String)>) {
    for a in 0..NODES {
        for b in 0..NODES {
            if a != b {
                sim.repair_oneway(node(a), node(b));
            }
        }
    }
    if let Some((a, b)) = held.take() {
        sim.release(a, b);
    }
    if let Some(n) = crashed.take() {
        sim.bounce(n);
    }
}

/// The faults the sweep draws from, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepFault {
    /// Cut one node off from all others ([`Partition::Isolate`]).
    Isolate,
    /// Cut a minority of two off from the rest ([`Partition::Split`]).
    Split,
    /// Each node keeps only its two ring neighbours
    /// ([`Partition::MajoritiesRing`]).
    MajoritiesRing,
    /// Drop one link's traffic in one direction ([`Partition::OneWay`]).
    OneWay,
    /// Hold a link's messages and release them at the heal.
    Hold,
    /// Crash a node; restart it at the heal.
    Crash,
}

impl SweepFault {
    /// Every fault, in the order the sweep's draw indexes them. A seed's
    /// schedule depends on this order and length: reordering or adding a
    /// fault changes the faults of every pinned seed.
    pub const ALL: [SweepFault; 6] =
        [SweepFault::Isolate, SweepFault::Split, SweepFault::MajoritiesRing, SweepFault::OneWay, SweepFault::Hold, SweepFault::Crash];
}

/// Cuts the links of `shape` among the sweep's nodes, and describes it.
fn cut(sim: &mut turmoil::Sim<'_>, shape: Partition) -> String {
    // Both directions of a link cut one at a time leave turmoil in the
    // state one two-way `partition` would: both halves down, nothing in
    // flight.
    for (a, b) in shape.cut_links(NODES) {
        sim.partition_oneway(node(a), node(b));
    }
    shape.describe()
}

fn inject(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut StdRng,
    only: Option<SweepFault>,
    crashed: &mut Option<String>,
    held: &mut Option<(String, String)>,
) -> String {
    let mut all: Vec<usize> = (0..NODES).collect();
    all.shuffle(rng);
    // Drawn even when `only` decides, so the rest of the run draws the same.
    let drawn = SweepFault::ALL[rng.random_range(0..SweepFault::ALL.len())];
    match only.unwrap_or(drawn) {
        SweepFault::Isolate => cut(sim, Partition::Isolate(all[0])),
        SweepFault::Split => {
            let mut minority = all[..2].to_vec();
            minority.sort();
            cut(sim, Partition::Split(minority))
        }
        SweepFault::MajoritiesRing => cut(sim, Partition::MajoritiesRing),
        SweepFault::OneWay => cut(sim, Partition::OneWay(all[0], all[1])),
        SweepFault::Hold => {
            sim.hold(node(all[0]), node(all[1]));
            *held = Some((node(all[0]), node(all[1])));
            format!("hold {} <-> {}", node(all[0]), node(all[1]))
        }
        SweepFault::Crash => {
            sim.crash(node(all[0]));
            *crashed = Some(node(all[0]));
            format!("crash {}", node(all[0]))
        }
    }
}

/// Runs one seed: `fault_secs` of random faults, then heal, repair and check.
pub fn run_sweep(seed: u64, fault_secs: u64) -> SweepResult {
    run_nemesis(seed, fault_secs, None)
}

/// [`run_sweep`] with every fault of one kind.
pub fn run_nemesis(seed: u64, fault_secs: u64, only: Option<SweepFault>) -> SweepResult {
    let mut b = builder(seed);
    b.simulation_duration(Duration::from_secs(fault_secs + 120));
    let mut sim = b.build();
    add_nodes(&mut sim, NODES, seed);
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let finals: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let converged = Arc::new(Mutex::new(Vec::new()));

    let r = ready.clone();
    sim.client("ready", async move {
        until("the cluster forms", Duration::from_secs(60), || async {
            sees("n1", &node(NODES - 1), "up").await && sees(&node(NODES - 1), "n1", "up").await
        })
        .await?;
        r.store(true, Ordering::SeqCst);
        Ok(())
    });
    while !ready.load(Ordering::SeqCst) {
        sim.step().unwrap_or_else(|e| panic!("{e}\nrerun: RINGKV_SIM_SEED={seed}"));
    }
    for id in 0..CLIENTS {
        let (stop, ops) = (stop.clone(), ops.clone());
        sim.client(format!("c{id}"), workload(id, seed, stop, ops));
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let (mut crashed, mut held) = (None, None);
    let mut faults = Vec::new();
    let start = sim.elapsed();
    let mut next = start + Duration::from_secs(1);
    while sim.elapsed() < start + Duration::from_secs(fault_secs) {
        sim.step().unwrap_or_else(|e| panic!("{e}\nrerun: RINGKV_SIM_SEED={seed}"));
        if sim.elapsed() >= next {
            heal(&mut sim, &mut crashed, &mut held);
            // Two faults in three; otherwise a quiet spell.
            if rng.random_bool(2.0 / 3.0) {
                let at = sim.elapsed().as_millis();
                faults.push(format!("{at} ms: {}", inject(&mut sim, &mut rng, only, &mut crashed, &mut held)));
            }
            next = sim.elapsed() + Duration::from_millis(rng.random_range(1500..4000));
        }
    }
    heal(&mut sim, &mut crashed, &mut held);
    stop.store(true, Ordering::SeqCst);

    let (f, c) = (finals.clone(), converged.clone());
    sim.client("checker", async move {
        // Let the clients finish and every node see every other.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..NODES {
            for j in 0..NODES {
                if i != j {
                    let (a, b) = (node(i), node(j));
                    until("everyone sees everyone up", Duration::from_secs(60), || sees(&a, &b, "up")).await?;
                }
            }
        }
        // Repair every node until a whole round is clean: links that were
        // cut may take a keepalive period to reconnect after the heal.
        let healed = tokio::time::Instant::now();
        let mut last_errors = Vec::new();
        for _ in 0..20 {
            last_errors.clear();
            for i in 0..NODES {
                let report = repair(&node(i)).await?;
                last_errors.extend(report.errors.into_iter().map(|e| format!("{}: {e}", node(i))));
            }
            if last_errors.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !last_errors.is_empty() {
            c.lock().unwrap().push(format!(
                "repair still failing {:?} after heal: {:?}",
                healed.elapsed(),
                &last_errors[..last_errors.len().min(3)]
            ));
        }
        // Convergence: every replica of every range has the same root.
        let mut by_range: BTreeMap<(u64, u64), Vec<NodeRoot>> = BTreeMap::new();
        for i in 0..NODES {
            for (s, e, root) in roots(&node(i)).await? {
                by_range.entry((s, e)).or_default().push((node(i), root));
            }
        }
        for ((s, e), rs) in by_range {
            if rs.iter().any(|(_, r)| *r != rs[0].1) {
                c.lock().unwrap().push(format!("range ({s}, {e}] did not converge: {rs:?}"));
            }
        }
        let cl = client(&["n1", "n2", "n3"]);
        for k in 0..KEYS {
            let key = format!("k{k}");
            let got = cl.get(key.as_bytes(), Options::level(Level::All)).await?;
            let values = got.siblings.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
            f.lock().unwrap().insert(key, values);
        }
        Ok(())
    });
    if let Err(e) = sim.run() {
        panic!("simulation failed: {e}\nrerun: RINGKV_SIM_SEED={seed}");
    }

    let history = History::of(std::mem::take(&mut *ops.lock().unwrap()));
    let finals = finals.lock().unwrap().clone();
    let mut violations = converged.lock().unwrap().clone();
    violations.extend(checkers::lost_writes(&history, &finals, 2));
    violations.extend(checkers::phantom_reads(&history, &finals));
    violations.extend(checkers::read_your_writes(&history, 3));
    violations.extend(checkers::monotonic_reads(&history, 2));
    let digest = blake3::hash(format!("{}{finals:?}", history.digest()).as_bytes()).to_hex()[..16].to_string();
    SweepResult { digest, history, violations, faults, simulated_secs: sim.elapsed().as_secs_f64() }
}

/// A one-line summary of a run.
pub fn describe(result: &SweepResult) -> String {
    let puts = result.history.ops.iter().filter(|o| matches!(o.kind, Kind::Put { .. })).count();
    let oks = result.history.ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    format!("{} ops ({puts} puts, {oks} ok), {} faults", result.history.ops.len(), result.faults.len())
}
