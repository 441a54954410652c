//! `ringkv bench`: a YCSB-style load generator.
//!
//! Workloads A (50/50 read/update), B (95/5), C (read only), write (update
//! only) and ping (a no-op RPC on the node, the gRPC floor of the same
//! cluster in the same run). Keys are uniform or zipfian (θ = 0.99, as in
//! YCSB). Up to `--concurrency` requests run at once until `--duration` or
//! `--ops`, optionally rate-limited.
//!
//! The report gives:
//! - ops/s and HDR-histogram latency percentiles, per operation;
//! - errors by kind;
//! - requests per coordinator node, and their skew (max / mean), read from
//!   the receipts.
//!
//! Nodes are chosen by the client's `--policy`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Zipf};
use ringkv_client::{Client, Level, Options};
use serde_json::{json, Value};

use crate::args::{BenchArgs, Distribution, Workload};

/// What the workers record.
#[derive(Default)]
struct Tally {
    reads: Option<Histogram<u64>>,
    writes: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    coordinators: BTreeMap<String, u64>,
}

fn key(i: u64) -> String {
    format!("user{i:012}")
}

/// Runs the benchmark and prints the report.
pub async fn run(a: BenchArgs, client: Client, json_mode: bool) -> Result<()> {
    if a.keys == 0 || a.concurrency == 0 {
        anyhow::bail!("--keys and --concurrency must be at least 1");
    }
    let value = vec![b'x'; a.value_size];
    // Every node, so that skew counts the ones no request reached.
    let members: Vec<String> = client.status().await?.nodes.into_iter().filter(|n| n.state == "normal").map(|n| n.id).collect();
    if a.load {
        load(&client, &a, &value, json_mode).await?;
    }
    let tally = Arc::new(Mutex::new(Tally {
        reads: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        writes: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        coordinators: if a.workload == Workload::Ping { BTreeMap::new() } else { members.into_iter().map(|m| (m, 0)).collect() },
        ..Default::default()
    }));
    let done = Arc::new(AtomicU64::new(0));
    let limit = a.ops.unwrap_or(u64::MAX);
    let bar = if json_mode { ProgressBar::hidden() } else { ProgressBar::new(a.ops.unwrap_or(a.duration.as_secs())) };
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")?);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let (client, tally, done, value, a) = (client.clone(), tally.clone(), done.clone(), value.clone(), a.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0xbe7c4 + w as u64);
            let zipf = Zipf::new(a.keys as f64, 0.99).expect("valid zipf");
            let per_worker_rate = if a.rate == 0 { 0.0 } else { a.rate as f64 / a.concurrency as f64 };
            let mut n = 0u64;
            loop {
                let i = done.fetch_add(1, Ordering::Relaxed);
                if i >= limit || (a.ops.is_none() && started.elapsed() >= a.duration) {
                    break;
                }
                if per_worker_rate > 0.0 {
                    let due = started + Duration::from_secs_f64(n as f64 / per_worker_rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                n += 1;
                let k = match a.distribution {
                    Distribution::Uniform => rng.random_range(0..a.keys),
                    Distribution::Zipfian => zipf.sample(&mut rng) as u64 - 1,
                };
                let read_share = match a.workload {
                    Workload::A => 0.5,
                    Workload::B => 0.95,
                    Workload::C => 1.0,
                    Workload::Write | Workload::Ping => 0.0,
                };
                let t0 = Instant::now();
                let (is_read, outcome) = if a.workload == Workload::Ping {
                    (true, client.ping().await.map(|_| None))
                } else if rng.random_bool(read_share) {
                    let r = client.get(key(k).as_bytes(), Options::level(a.read_level.into())).await;
                    (true, r.map(|r| r.receipt.map(|x| x.coordinator)))
                } else {
                    let r = client.put(key(k).as_bytes(), &value, None, Options::level(a.write_level.into())).await;
                    (false, r.map(|r| r.receipt.map(|x| x.coordinator)))
                };
                let us = t0.elapsed().as_micros().max(1) as u64;
                let mut t = tally.lock().expect("tally lock");
                match outcome {
                    Ok(coordinator) => {
                        let h = if is_read { t.reads.as_mut() } else { t.writes.as_mut() };
                        let _ = h.expect("histogram").record(us);
                        if let Some(c) = coordinator {
                            *t.coordinators.entry(c).or_default() += 1;
                        }
                    }
                    Err(e) => *t.errors.entry(e.kind().to_string()).or_default() += 1,
                }
            }
        }));
    }
    // Progress until the workers finish.
    let progress = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let ops = done.load(Ordering::Relaxed);
                bar.set_position(if a.ops.is_some() { ops.min(limit) } else { started.elapsed().as_secs() });
                bar.set_message(format!("{:.0} ops/s", ops as f64 / started.elapsed().as_secs_f64()));
            }
        })
    };
    for w in workers {
        w.await?;
    }
    progress.abort();
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    report(&a, &client, &tally.lock().expect("tally lock"), secs, json_mode);
    Ok(())
}

async fn load(client: &Client, a: &BenchArgs, value: &[u8], json_mode: bool) -> Result<()> {
    let bar = if json_mode { ProgressBar::hidden() } else { ProgressBar::new(a.keys) };
    bar.set_style(ProgressStyle::with_template("loading {bar:40} {pos}/{len}")?);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(64) {
        let (client, next, value, bar, keys) = (client.clone(), next.clone(), value.to_vec(), bar.clone(), a.keys);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<_, anyhow::Error>(());
                }
                client.put(key(i).as_bytes(), &value, None, Options::level(Level::Quorum)).await?;
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({ "count": h.len(), "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0 })
}

fn report(a: &BenchArgs, client: &Client, t: &Tally, secs: f64, json_mode: bool) {
    let (reads, writes) = (t.reads.as_ref().expect("histogram"), t.writes.as_ref().expect("histogram"));
    let ok = reads.len() + writes.len();
    let counts: Vec<u64> = t.coordinators.values().copied().collect();
    let skew = if counts.is_empty() {
        0.0
    } else {
        *counts.iter().max().unwrap() as f64 * counts.len() as f64 / counts.iter().sum::<u64>() as f64
    };
    let value = json!({
        "workload": format!("{:?}", a.workload).to_lowercase(),
        "distribution": format!("{:?}", a.distribution).to_lowercase(),
        "policy": client.policy_name(),
        "concurrency": a.concurrency,
        "seconds": secs,
        "ops": ok,
        "ops_per_sec": ok as f64 / secs,
        "reads": percentiles(reads),
        "writes": percentiles(writes),
        "errors": t.errors,
        "coordinators": t.coordinators,
        "coordinator_skew": skew,
    });
    if json_mode {
        println!("{value}");
        return;
    }
    println!(
        "workload {:?}, {:?} keys, policy {}, {} in flight, {secs:.1} s",
        a.workload,
        a.distribution,
        client.policy_name(),
        a.concurrency
    );
    println!("{ok} ops, {:.0} ops/s, errors {:?}", ok as f64 / secs, t.errors);
    println!("{:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}", "op", "count", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms");
    for (name, h) in [("read", reads), ("write", writes)] {
        if h.is_empty() {
            continue;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<7} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            h.len(),
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    if !t.coordinators.is_empty() {
        println!("requests per coordinator: {:?} (skew max/mean {skew:.2})", t.coordinators);
    }
}
