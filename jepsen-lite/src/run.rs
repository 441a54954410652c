//! One jepsen-lite run, start to finish:
//! 1. start N `ringkv serve` processes on 127.0.0.11, .12, ... and wait
//!    until they agree on the ring;
//! 2. run the workload while the nemesis follows its schedule;
//! 3. heal everything, wait for the ring, and time convergence (identical
//!    Merkle roots on every replica: passively first, then with an
//!    explicit repair);
//! 4. read every key at ALL for the final state;
//! 5. judge the history and write `history.jsonl`, `report.json` and
//!    `report.html`.
//!
//! Everything started here lives inside the returned future: dropping it
//! (Ctrl-C) or a panic stops every node and removes any iptables chain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use ringkv_client::{pb, policy, Client, Credentials, Level, Options};
use ringkv_harness::cluster::LocalCluster;
use ringkv_harness::secure::SecureFiles;

use crate::history::{History, NemesisEvent};
use crate::nemesis::{schedule, Kinds, Nemesis, Net};
use crate::report::{Convergence, Header, Report};
use crate::workload::{run_client, ClientSpec, Recorder, Workload};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Nodes to start.
    pub nodes: usize,
    /// How long the workload runs under faults.
    pub duration: Duration,
    /// Fault kinds.
    pub kinds: Kinds,
    /// How partitions are made.
    pub net: Net,
    /// Seed for the schedule, the clients and the nodes.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Which workload.
    pub workload: Workload,
    /// Hot keys of the register workload.
    pub register_keys: usize,
    /// Pause between a client's operations.
    pub think: Duration,
    /// A client gives up on an operation after this long.
    pub op_timeout: Duration,
    /// How long to wait for passive convergence before repairing.
    pub passive_wait: Duration,
    /// Output directory.
    pub out: PathBuf,
    /// The `ringkv` executable.
    pub ringkv: PathBuf,
    /// Extra flags for every `ringkv serve`.
    pub node_args: Vec<String>,
    /// Run the cluster with TLS (mutual between peers) and tokens, its
    /// files made in `out/secure`.
    pub secure: bool,
}

fn say(m: &str) {
    eprintln!("jepsen-lite: {m}");
}

/// The commit of the tree the ringkv binary was built in (`git describe`).
fn commit(ringkv: &std::path::Path) -> String {
    let dir = ringkv.parent().filter(|d| d.is_dir()).unwrap_or(std::path::Path::new("."));
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `ip:port` for node `i`: its own loopback address and a free port.
fn address(i: usize) -> Result<String> {
    let ip = format!("127.0.0.{}", 11 + i);
    let listener =
        std::net::TcpListener::bind((ip.as_str(), 0)).with_context(|| format!("cannot bind {ip}; is the loopback network up?"))?;
    Ok(format!("{ip}:{}", listener.local_addr()?.port()))
}

/// Runs everything and returns the report (already written to `out`).
pub async fn run(cfg: &RunConfig) -> Result<Report> {
    if !(1..=200).contains(&cfg.nodes) {
        bail!("--nodes must be between 1 and 200, not {}", cfg.nodes);
    }
    if cfg.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let nodes_dir = cfg.out.join("nodes");
    if nodes_dir.exists() {
        std::fs::remove_dir_all(&nodes_dir).with_context(|| format!("cannot clear {}", nodes_dir.display()))?;
    }
    std::fs::create_dir_all(&nodes_dir).with_context(|| format!("cannot create {}", nodes_dir.display()))?;
    // Before the cluster, so a missing root or iptables fails fast.
    let nemesis = Nemesis::new(cfg.net)?;
    let addrs: Vec<String> = (0..cfg.nodes).map(address).collect::<Result<_>>()?;
    say(&format!("starting {} nodes (logs and data under {})", cfg.nodes, nodes_dir.display()));
    let seed = cfg.seed;
    let node_args = cfg.node_args.clone();
    let extra = move |i: usize| {
        // Fast gossip and a 10 s anti-entropy schedule: passive convergence
        // then covers writes no hint can carry (a coordinator killed mid-write).
        let seed = (seed + i as u64).to_string();
        let mut a: Vec<String> =
            ["--rng-seed", &seed, "--gossip-interval", "500ms", "--peer-timeout", "500ms", "--anti-entropy-interval", "10s"]
                .map(String::from)
                .to_vec();
        a.extend(node_args.iter().cloned());
        a
    };
    let secure = if cfg.secure { Some(SecureFiles::prepare(&cfg.out.join("secure"), &addrs)?) } else { None };
    let credentials = secure.as_ref().map(SecureFiles::credentials).transpose()?.unwrap_or_default();
    let extra = |i: usize| [secure.as_ref().map(|s| s.serve_args(i)).unwrap_or_default(), extra(i)].concat();
    let mut cluster = LocalCluster::start_with(&cfg.ringkv, &addrs, &nodes_dir, &extra, credentials.clone(), say).await?;
    if cfg.secure {
        say("TLS (mutual between peers) and tokens are on");
    }
    say(&format!("the {} nodes agree on the ring", cfg.nodes));

    let plan = schedule(cfg.seed, &cfg.kinds, cfg.nodes, cfg.duration);
    say(&format!("{} faults scheduled over {} s (seed {}, nemesis {})", plan.len(), cfg.duration.as_secs(), cfg.seed, cfg.kinds));
    let rec = Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) };
    let events: Mutex<Vec<NemesisEvent>> = Mutex::new(Vec::new());
    let log = |phase: &str, fault: &str, description: String| {
        say(&format!("{:>6.1} s  {phase:<5} {description}", rec.start.elapsed().as_secs_f64()));
        events.lock().expect("lock").push(NemesisEvent { time_ms: rec.now_ms(), phase: phase.into(), fault: fault.into(), description });
    };
    let deadline = rec.start + cfg.duration;

    let rec_ref = &rec;
    let mut clients = Vec::new();
    for id in 0..cfg.clients {
        let client = Client::builder()
            .endpoints(&addrs)
            .policy(Box::new(policy::RoundRobin::default()))
            .client_id(format!("jepsen-{id}"))
            .health_check_interval(Duration::from_millis(500))
            .refresh_interval(Duration::from_secs(2))
            .credentials(credentials.clone())
            .build()
            .await?;
        let workload = match cfg.workload {
            Workload::Both if id % 2 == 0 => Workload::Register,
            Workload::Both => Workload::Set,
            w => w,
        };
        let spec = ClientSpec {
            id,
            workload,
            register_keys: cfg.register_keys,
            think: cfg.think,
            op_timeout: cfg.op_timeout,
            seed: cfg.seed ^ (id as u64 + 1) << 32,
        };
        clients.push(async move {
            match spec.workload {
                Workload::Cas => crate::cas_workload::run_client(client, spec, rec_ref, deadline).await,
                _ => run_client(client, spec, rec_ref, deadline).await,
            }
        });
    }
    let workload = futures::future::join_all(clients);
    let faults = async {
        for s in &plan {
            tokio::time::sleep_until((rec.start + Duration::from_millis(s.start_ms)).into()).await;
            let kind = s.fault.kind().name();
            match nemesis.start(&mut cluster, &s.fault).await {
                Ok(()) => log("start", kind, s.fault.describe()),
                Err(e) => log("start", kind, format!("{} (failed to apply: {e:#})", s.fault.describe())),
            }
            tokio::time::sleep_until((rec.start + Duration::from_millis(s.heal_ms)).into()).await;
            match nemesis.heal(&mut cluster, &s.fault).await {
                Ok(()) => log("heal", kind, format!("healed {}", s.fault.describe())),
                Err(e) => log("heal", kind, format!("heal of {} failed: {e:#}", s.fault.describe())),
            }
        }
        cluster
    };
    let progress = async {
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now()))).await;
            let ops = rec.ops.lock().expect("lock");
            let ok = ops.iter().filter(|o| o.outcome == crate::history::Outcome::Ok).count();
            say(&format!("{:>6.1} s  {} operations, {} acknowledged", rec.start.elapsed().as_secs_f64(), ops.len(), ok));
        }
    };
    let (_, mut cluster, _) = tokio::join!(workload, faults, progress);

    nemesis.heal_all(&mut cluster).await?;
    log("heal", "all", "final heal: every node running, no faults".into());
    let healed = Instant::now();
    cluster.wait_joined(cfg.nodes).await.context("after the final heal the nodes did not agree on the ring")?;
    let convergence = converge(&addrs, &credentials, healed, cfg.passive_wait).await?;
    let mut history =
        History { ops: std::mem::take(&mut *rec.ops.lock().expect("lock")), nemesis: std::mem::take(&mut *events.lock().expect("lock")) };
    history.ops.sort_by_key(|o| o.complete_ms);
    say("reading every key at ALL for the final state");
    let finals = final_state(&addrs, &credentials, &history).await?;
    let header = Header {
        commit: commit(&cfg.ringkv),
        seed: cfg.seed,
        nodes: cfg.nodes,
        duration_s: cfg.duration.as_secs(),
        nemesis: cfg.kinds.to_string(),
        net: format!("{:?}", cfg.net).to_lowercase(),
        clients: cfg.clients,
        workload: format!("{:?}", cfg.workload).to_lowercase(),
    };
    let report = Report::build(header, &history, &finals, convergence);
    write(&cfg.out.join("history.jsonl"), &history.to_jsonl())?;
    write(&cfg.out.join("report.json"), &serde_json::to_string_pretty(&report)?)?;
    write(&cfg.out.join("report.html"), &report.html())?;
    say(&format!("wrote {} (history.jsonl, report.json, report.html)", cfg.out.display()));
    drop(cluster);
    Ok(report)
}

fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// How far the replicas are from agreeing.
#[derive(Debug, Default, PartialEq)]
struct RootsView {
    /// Nodes that did not answer.
    silent: usize,
    /// Ranges seen.
    ranges: usize,
    /// Ranges whose roots differ between the nodes holding them.
    differing: usize,
    /// Ranges some node is still building a tree for.
    building: usize,
}

impl RootsView {
    fn agree(&self) -> bool {
        self.silent == 0 && self.ranges > 0 && self.differing == 0 && self.building == 0
    }
}

/// Compares every range's Merkle root across the nodes that hold it.
async fn roots(client: &Client, addrs: &[String]) -> RootsView {
    let mut view = RootsView::default();
    let mut by_range: BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for addr in addrs {
        let answer = async {
            let mut admin = client.admin(addr)?;
            anyhow::Ok(admin.roots(pb::RootsRequest {}).await?.into_inner())
        };
        match answer.await {
            Ok(r) => {
                for range in r.ranges {
                    by_range.entry((range.start, range.end)).or_default().insert(range.root);
                }
            }
            Err(_) => view.silent += 1,
        }
    }
    view.ranges = by_range.len();
    view.building = by_range.values().filter(|roots| roots.iter().any(|r| r.is_empty())).count();
    view.differing = by_range.values().filter(|roots| roots.len() > 1).count();
    view
}

/// Times convergence after the heal at `healed`.
async fn converge(addrs: &[String], credentials: &Credentials, healed: Instant, passive_wait: Duration) -> Result<Convergence> {
    let mut c = Convergence { passive_wait_ms: passive_wait.as_millis() as u64, ..Default::default() };
    // One set of connections for every poll and repair.
    let client = Client::connect_with(addrs, credentials.clone()).await?;
    say(&format!("waiting up to {} s for the replicas to converge on their own", passive_wait.as_secs()));
    let mut last = RootsView::default();
    while healed.elapsed() < passive_wait {
        last = roots(&client, addrs).await;
        if last.agree() {
            c.passive_ms = Some(healed.elapsed().as_millis() as u64);
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(&format!(
        "not converged yet ({} of {} ranges differ, {} still building, {} nodes silent); running an anti-entropy repair on every node",
        last.differing, last.ranges, last.building, last.silent
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        for addr in addrs {
            let mut admin = client.admin(addr)?;
            if let Err(e) = admin.repair(pb::RepairRequest::default()).await {
                say(&format!("repair on {addr} failed: {}", e.message()));
            }
        }
        if roots(&client, addrs).await.agree() {
            c.after_repair_ms = Some(healed.elapsed().as_millis() as u64);
            break;
        }
    }
    Ok(c)
}

/// Reads every key the history wrote, at ALL with blocking read repair.
async fn final_state(addrs: &[String], credentials: &Credentials, h: &History) -> Result<BTreeMap<String, Vec<String>>> {
    let client = Client::connect_with(addrs, credentials.clone()).await?;
    let keys: BTreeSet<&str> = h.ops.iter().filter(|o| o.may_have_written()).map(|o| o.key.as_str()).collect();
    let opts = Options { level: Level::All, timeout: Some(Duration::from_secs(5)), ..Default::default() };
    let reads = futures::stream::iter(keys)
        .map(|key| {
            let client = client.clone();
            async move {
                let mut last = None;
                for _ in 0..10 {
                    match client.get(key.as_bytes(), opts).await {
                        Ok(r) => {
                            return Ok((
                                key.to_string(),
                                r.siblings.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect(),
                            ))
                        }
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(anyhow::anyhow!("cannot read the final state of {key} at ALL: {}", last.expect("an error")))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<Result<(String, Vec<String>)>>>()
        .await;
    reads.into_iter().collect()
}
