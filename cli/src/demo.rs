//! `ringkv demo`: PACELC on a throwaway local cluster.
//!
//! Starts three nodes in a temporary directory and walks through four
//! chapters, each a table:
//! 1. **Else: latency.** Put and get latency per level, with every link
//!    healthy.
//! 2. **Else: latency vs consistency (PACELC).** One replica's links are
//!    slowed by the fault layer. Each write at ONE is followed, after a wait
//!    t of 0, half the delay or twice the delay, by a read through the slow
//!    node: the fraction of fresh reads per level and t is the PBS
//!    t-visibility. ONE answers fast but stale until t passes the delay;
//!    ALL answers fresh but pays the delay.
//! 3. **Partition: availability.** The slow node is cut off. Each level is
//!    tried on the majority side and on the minority side.
//! 4. **Heal: read repair.** A write the cut-off node missed is brought to it
//!    by one blocking read at ALL, as `inspect` shows before and after.
//!
//! It stops its processes and removes its files on every exit path (the
//! cluster and the temporary directory are dropped).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ringkv_client::{pb, Client, Error as ClientError, Level, Options, ReadRepair};
use serde_json::{json, Value};

use crate::args::{DemoArgs, FaultAction, FaultTarget};
use crate::commands::apply_fault;
use crate::output::level_name;
use ringkv_harness::chart::{render, Group, Panel};
use ringkv_harness::cluster::LocalCluster;

const LEVELS: [Level; 3] = [Level::One, Level::Quorum, Level::All];

fn name(l: Level) -> String {
    level_name(l as i32)
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold every listener until all ports are known, so they differ.
    let listeners: Vec<std::net::TcpListener> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs the demo.
pub async fn run(a: DemoArgs, json_mode: bool) -> Result<()> {
    let started = Instant::now();
    let say = |m: &str| {
        if !json_mode {
            println!("{m}");
        }
    };
    let dir = tempfile::Builder::new().prefix("ringkv-demo-").tempdir().context("cannot create a temporary directory")?;
    say(&format!("ringkv demo: starting a 3-node cluster in {}", dir.path().display()));
    let ports = free_ports(3)?;
    // Hinted handoff is off so that chapter 4 shows read repair doing the
    // healing (with hints on, the hint replay would usually get there first).
    let extra = ["--gossip-interval", "500ms", "--peer-timeout", "500ms", "--hinted-handoff", "off"].map(String::from);
    let exe = std::env::current_exe().context("cannot find the ringkv executable")?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut cluster = LocalCluster::start(&exe, &addrs, dir.path(), &|_| extra.to_vec(), |m| say(&format!("  {m}"))).await?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let via = |i: usize| Client::connect([addrs[i].as_str()]);
    let (c1, c3) = (via(0).await?, via(2).await?);
    let mut report = serde_json::Map::new();

    // Chapter 1: latency per level, all links healthy.
    say("\n1. Else (no partition): what each level costs in latency, every link healthy");
    say(&format!("   {} puts and {} gets per level through n1; latency from the receipts", a.ops, a.ops));
    say(&format!("   {:<8} {:>10} {:>10} {:>10} {:>10}", "level", "put p50", "put p99", "get p50", "get p99"));
    let mut ch1 = Vec::new();
    let mut healthy_p50 = Vec::new();
    for level in LEVELS {
        let (mut put, mut get) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
        for i in 0..a.ops {
            let key = format!("demo:lat:{}:{i}", name(level));
            let r = c1.put(key.as_bytes(), b"v", None, Options::level(level)).await?;
            put.record(r.receipt.map_or(0, |r| r.latency_us))?;
            let r = c1.get(key.as_bytes(), Options::level(level)).await?;
            get.record(r.receipt.map_or(0, |r| r.latency_us))?;
        }
        let row = [put.value_at_quantile(0.5), put.value_at_quantile(0.99), get.value_at_quantile(0.5), get.value_at_quantile(0.99)];
        say(&format!("   {:<8} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms", name(level), ms(row[0]), ms(row[1]), ms(row[2]), ms(row[3])));
        ch1.push(json!({ "level": name(level), "put_p50_us": row[0], "put_p99_us": row[1], "get_p50_us": row[2], "get_p99_us": row[3] }));
        healthy_p50.push(ms(row[2]));
    }
    report.insert("latency".into(), Value::Array(ch1));

    // Chapter 2: a slow replica; write at ONE via n1, read at once via n3.
    let target = |node: &str| FaultTarget { node: Some(node.into()), from: None, to: None };
    let admin = Client::connect(&addrs).await?;
    apply_fault(&admin, FaultAction::Delay { target: target("n3"), ms: a.delay_ms }).await.context("the demo could not set a fault")?;
    say(&format!("\n2. PACELC, else-branch: latency against consistency, with {} ms added to every link of n3", a.delay_ms));
    say("   write at ONE through n1, wait t, then read through n3 (n3 hears of the write late);");
    say("   P(fresh) is the fraction of reads that returned the write: the PBS t-visibility");
    let waits = [0, a.delay_ms / 2, a.delay_ms * 2];
    let wait_names: Vec<String> = waits.iter().map(|w| format!("t={w}ms")).collect();
    say(&format!(
        "   {:<8} {:>10} {:>12} {:>12} {:>12}",
        "read at",
        "get p50",
        format!("P(fresh) {}", wait_names[0]),
        wait_names[1],
        wait_names[2]
    ));
    let mut ch2 = Vec::new();
    let (mut slow_p50, mut fresh_pct) = (Vec::new(), Vec::new());
    let rounds = (a.ops / 4).max(10);
    for level in LEVELS {
        let mut lat = Histogram::<u64>::new(3)?;
        let mut fresh = vec![0; waits.len()];
        for (w, wait) in waits.iter().enumerate() {
            for i in 0..rounds {
                let key = format!("demo:stale:{}:{wait}:{i}", name(level));
                let value = format!("v{i}");
                c1.put(key.as_bytes(), value.as_bytes(), None, Options::level(Level::One)).await?;
                tokio::time::sleep(Duration::from_millis((*wait).into())).await;
                let r = c3.get(key.as_bytes(), Options { level, read_repair: ReadRepair::Off, ..Default::default() }).await?;
                if w == 0 {
                    lat.record(r.receipt.as_ref().map_or(0, |r| r.latency_us))?;
                }
                fresh[w] += usize::from(r.siblings.iter().any(|s| s.value == value.as_bytes()));
            }
        }
        let pct: Vec<f64> = fresh.iter().map(|f| *f as f64 * 100.0 / rounds as f64).collect();
        say(&format!(
            "   {:<8} {:>8.2}ms {:>11.0}% {:>11.0}% {:>11.0}%",
            name(level),
            ms(lat.value_at_quantile(0.5)),
            pct[0],
            pct[1],
            pct[2]
        ));
        let by_wait: Vec<Value> =
            waits.iter().zip(&fresh).map(|(w, f)| json!({ "wait_ms": w, "fresh_reads": f, "reads": rounds })).collect();
        ch2.push(json!({ "level": name(level), "get_p50_us": lat.value_at_quantile(0.5), "fresh": by_wait }));
        slow_p50.push(ms(lat.value_at_quantile(0.5)));
        fresh_pct.push(pct);
    }
    report.insert("slow_replica".into(), Value::Array(ch2));

    // Chapter 3: partition n3 away.
    apply_fault(&admin, FaultAction::Clear).await.context("the demo could not set a fault")?;
    apply_fault(&admin, FaultAction::Block(target("n3"))).await.context("the demo could not set a fault")?;
    say("\n3. PACELC, partition branch: n3 is cut off from n1 and n2. Which levels stay available?");
    wait_down(&c1, "n3").await?;
    wait_down(&c3, "n1").await?;
    wait_down(&c3, "n2").await?;
    say(&format!("   {:<8} {:>22} {:>22}", "level", "majority side (n1)", "minority side (n3)"));
    let mut ch3 = Vec::new();
    for level in LEVELS {
        let mut cells = Vec::new();
        for (side, client) in [("majority", &c1), ("minority", &c3)] {
            let key = format!("demo:part:{}:{side}", name(level));
            let put = outcome(client.put(key.as_bytes(), b"v", None, Options::level(level)).await.map(|_| ()));
            let get = outcome(client.get(key.as_bytes(), Options::level(level)).await.map(|_| ()));
            cells.push((put, get));
        }
        let cell = |(p, g): &(&str, &str)| format!("put {p:<5} get {g:<5}");
        say(&format!("   {:<8} {:>22} {:>22}", name(level), cell(&cells[0]), cell(&cells[1])));
        ch3.push(json!({ "level": name(level), "majority": { "put": cells[0].0, "get": cells[0].1 }, "minority": { "put": cells[1].0, "get": cells[1].1 } }));
    }
    // SERIAL: a cas stands in for the put, a SERIAL read for the get.
    let mut cells = Vec::new();
    for (side, client) in [("majority", &c1), ("minority", &c3)] {
        let key = format!("demo:part:SERIAL:{side}");
        let serial = Options::level(Level::Serial);
        let cas = outcome(client.cas(key.as_bytes(), None, Some(b"v"), serial).await.map(|_| ()));
        let get = outcome(client.get(key.as_bytes(), serial).await.map(|_| ()));
        cells.push((cas, get));
    }
    let cell = |(p, g): &(&str, &str)| format!("cas {p:<5} get {g:<5}");
    say(&format!("   {:<8} {:>22} {:>22}", "SERIAL", cell(&cells[0]), cell(&cells[1])));
    ch3.push(json!({ "level": "SERIAL", "majority": { "cas": cells[0].0, "get": cells[0].1 }, "minority": { "cas": cells[1].0, "get": cells[1].1 } }));
    say("   (ok = served; unav = refused as unavailable before any data was sent)");
    report.insert("partition".into(), Value::Array(ch3));

    // Chapter 4: heal and read repair.
    say("\n4. Heal: a write n3 missed, repaired by one read at ALL (hinted handoff is off in this demo)");
    c1.put(b"demo:healed", b"written-during-partition", None, Options::level(Level::Quorum)).await?;
    let before = holds(&c1, "n3").await?;
    apply_fault(&admin, FaultAction::Clear).await.context("the demo could not set a fault")?;
    wait_up(&c1, "n3").await?;
    let r = c1.get(b"demo:healed", Options { level: Level::All, read_repair: ReadRepair::Blocking, ..Default::default() }).await?;
    let receipt = r.receipt.unwrap_or_default();
    let n3 = receipt.replicas.iter().find(|x| x.node == "n3").cloned().unwrap_or_default();
    let after = holds(&c1, "n3").await?;
    say(&format!("   before the read, n3 holds the value: {before}"));
    say(&format!("   read at ALL found n3 stale: {} · repaired it: {}", n3.stale, n3.repaired));
    say(&format!("   after the read, n3 holds the value: {after}"));
    report
        .insert("read_repair".into(), json!({ "n3_before": before, "n3_stale": n3.stale, "n3_repaired": n3.repaired, "n3_after": after }));
    if before || !after || !n3.stale || !n3.repaired {
        bail!("read repair did not behave: n3 held the value before={before}, after={after}; stale={}, repaired={}", n3.stale, n3.repaired);
    }

    cluster.stop();
    let groups = |f: &dyn Fn(usize) -> Vec<f64>| LEVELS.iter().enumerate().map(|(i, l)| Group { label: name(*l), values: f(i) }).collect();
    let svg = render(
        "ringkv demo: what each consistency level costs (PACELC, else-branch)",
        &[
            Panel {
                title: "read latency p50".into(),
                unit: "ms".into(),
                series: vec!["healthy links".into(), format!("n3 slowed {} ms", a.delay_ms)],
                groups: groups(&|i| vec![healthy_p50[i], slow_p50[i]]),
            },
            Panel {
                title: "P(fresh read) t ms after a write at ONE".into(),
                unit: "%".into(),
                series: wait_names.clone(),
                groups: groups(&|i| fresh_pct[i].clone()),
            },
        ],
    );
    std::fs::write(&a.svg, svg).with_context(|| format!("cannot write {}", a.svg.display()))?;
    say(&format!("\nchart written to {}", a.svg.display()));
    report.insert("chart".into(), json!(a.svg.display().to_string()));
    let secs = started.elapsed().as_secs_f64();
    report.insert("seconds".into(), json!(secs));
    if json_mode {
        println!("{}", Value::Object(report));
    } else {
        println!("\ndone in {secs:.1} s; the cluster is stopped and {} removed", dir.path().display());
    }
    Ok(())
}

fn outcome(r: Result<(), ClientError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(ClientError::Unavailable { .. }) => "unav",
        Err(ClientError::Indeterminate { .. }) => "indet",
        Err(_) => "error",
    }
}

async fn holds(client: &Client, node: &str) -> Result<bool> {
    let r = client.inspect(b"demo:healed").await?;
    Ok(r.replicas.iter().any(|v: &pb::ReplicaVersion| v.node == node && v.siblings.iter().any(|s| s.value == b"written-during-partition")))
}

async fn wait_liveness(client: &Client, node: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = client.status().await?;
        if s.nodes.iter().any(|n| n.id == node && n.liveness == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not see {node} as {want} within 15 s", s.node);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_down(client: &Client, node: &str) -> Result<()> {
    wait_liveness(client, node, "down").await
}

async fn wait_up(client: &Client, node: &str) -> Result<()> {
    wait_liveness(client, node, "up").await
}
