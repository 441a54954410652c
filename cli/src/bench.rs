//! `ringkv bench`: a YCSB-style load generator.
//!
//! Workloads A (50/50 read/update), B (95/5), C (read only), write (update
//! only), cas (half QUORUM puts, half SERIAL cas: `bench_cas.rs`) and ping (a no-op RPC on the node, the gRPC floor of the same
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
//! Nodes are chosen by the client's `--policy`. `--target etcd` or
//! `--target redis` runs the same loop against a peer system
//! (`bench_target.rs`), so `bench/compare.sh` can put them side by side;
//! `--target http` runs it through `ringkv gateway` (`bench/gateway.sh`).

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
use serde_json::{json, Value};

use crate::args::{BenchArgs, Distribution, TargetKind, Workload};
use crate::bench_target::Target;

/// What the workers record.
#[derive(Default)]
struct Tally {
    reads: Option<Histogram<u64>>,
    writes: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    coordinators: BTreeMap<String, u64>,
    /// `--workload cas`: cas latencies, applied and not, and contention retries.
    cas: Option<Histogram<u64>>,
    cas_applied: u64,
    cas_not_applied: u64,
    cas_retries: u64,
}

fn key(i: u64) -> String {
    format!("user{i:012}")
}

/// Runs the benchmark against `endpoints` and prints the report.
pub async fn run(
    a: BenchArgs,
    endpoints: &[String],
    policy: &ringkv_client::policy::PolicyName,
    credentials: &ringkv_client::Credentials,
    json_mode: bool,
) -> Result<()> {
    if a.keys == 0 || a.concurrency == 0 {
        anyhow::bail!("--keys and --concurrency must be at least 1");
    }
    if a.workload == Workload::Cas && a.target != TargetKind::Ringkv {
        anyhow::bail!("--workload cas runs against ringkv only");
    }
    if a.workload == Workload::Ping && matches!(a.target, TargetKind::Etcd | TargetKind::Http) {
        anyhow::bail!("--workload ping has no etcd or HTTP counterpart here; use it with --target ringkv or redis");
    }
    let value = vec![b'x'; a.value_size];
    let (client, members) = if a.target == TargetKind::Ringkv {
        let client = crate::commands::connect(endpoints, policy, credentials).await?.coalescing(!a.no_coalesce);
        // Every node, so that skew counts the ones no request reached.
        let members: Vec<String> = client.status().await?.nodes.into_iter().filter(|n| n.state == "normal").map(|n| n.id).collect();
        (Some(client), members)
    } else {
        (None, Vec::new())
    };
    let coalesced = if a.no_coalesce { ", every request its own call" } else { "" };
    let policy_name = client.as_ref().map_or(String::new(), |c| format!("{}{coalesced}", c.policy_name()));
    let target = Arc::new(
        Target::connect(a.target, endpoints, client, a.read_level.into(), a.write_level.into(), a.etcd_linearizable, a.concurrency).await?,
    );
    if a.load {
        load(&target, &a, &value, json_mode).await?;
    }
    let tally = Arc::new(Mutex::new(Tally {
        reads: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        writes: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        cas: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
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
        let (target, tally, done, value, a) = (target.clone(), tally.clone(), done.clone(), value.clone(), a.clone());
        let cas_client = target.client().cloned();
        workers.push(tokio::spawn(async move {
            let mut known = std::collections::HashMap::new();
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
                    Workload::Write | Workload::Ping | Workload::Cas => 0.0,
                };
                let t0 = Instant::now();
                if let Some(client) = cas_client.as_ref().filter(|_| a.workload == Workload::Cas && rng.random_bool(0.5)) {
                    let fresh = format!("w{w}-{n}").into_bytes();
                    // Keys of their own, so puts never change what a cas expects.
                    let cas_key = format!("cas-{}", key(k));
                    let outcome = crate::bench_cas::cas(client, cas_key.as_bytes(), &fresh, &mut known).await;
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    let mut t = tally.lock().expect("tally lock");
                    match outcome {
                        Ok(d) => {
                            let _ = t.cas.as_mut().expect("histogram").record(us);
                            if d.applied {
                                t.cas_applied += 1;
                            } else {
                                t.cas_not_applied += 1;
                            }
                            t.cas_retries += u64::from(d.retries);
                            if let Some(c) = d.coordinator {
                                *t.coordinators.entry(c).or_default() += 1;
                            }
                        }
                        Err(kind) => *t.errors.entry(kind).or_default() += 1,
                    }
                    continue;
                }
                let (is_read, outcome) = if a.workload == Workload::Ping {
                    (true, target.ping().await)
                } else if rng.random_bool(read_share) {
                    (true, target.read(key(k).as_bytes()).await)
                } else {
                    (false, target.write(key(k).as_bytes(), &value).await)
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
                    Err(kind) => *t.errors.entry(kind).or_default() += 1,
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
    report(&a, target.name(), &policy_name, &tally.lock().expect("tally lock"), secs, json_mode);
    Ok(())
}

/// Writes every key once, before the measured run.
async fn load(target: &Arc<Target>, a: &BenchArgs, value: &[u8], json_mode: bool) -> Result<()> {
    let bar = if json_mode { ProgressBar::hidden() } else { ProgressBar::new(a.keys) };
    bar.set_style(ProgressStyle::with_template("loading {bar:40} {pos}/{len}")?);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(64) {
        let (target, next, value, bar, keys) = (target.clone(), next.clone(), value.to_vec(), bar.clone(), a.keys);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<_, anyhow::Error>(());
                }
                target.write(key(i).as_bytes(), &value).await.map_err(|kind| anyhow::anyhow!("loading key {i} failed: {kind}"))?;
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

fn report(a: &BenchArgs, target: &str, policy: &str, t: &Tally, secs: f64, json_mode: bool) {
    let (reads, writes, cas) =
        (t.reads.as_ref().expect("histogram"), t.writes.as_ref().expect("histogram"), t.cas.as_ref().expect("histogram"));
    let ok = reads.len() + writes.len() + cas.len();
    let counts: Vec<u64> = t.coordinators.values().copied().collect();
    let skew = if counts.is_empty() {
        0.0
    } else {
        *counts.iter().max().unwrap() as f64 * counts.len() as f64 / counts.iter().sum::<u64>() as f64
    };
    let value = json!({
        "target": target,
        "workload": format!("{:?}", a.workload).to_lowercase(),
        "distribution": format!("{:?}", a.distribution).to_lowercase(),
        "policy": policy,
        "concurrency": a.concurrency,
        "seconds": secs,
        "ops": ok,
        "ops_per_sec": ok as f64 / secs,
        "reads": percentiles(reads),
        "writes": percentiles(writes),
        "cas": percentiles(cas),
        "cas_applied": t.cas_applied,
        "cas_not_applied": t.cas_not_applied,
        "cas_contention_retries": t.cas_retries,
        "errors": t.errors,
        "coordinators": t.coordinators,
        "coordinator_skew": skew,
    });
    if json_mode {
        println!("{value}");
        return;
    }
    println!("{target}: workload {:?}, {:?} keys, policy {policy}, {} in flight, {secs:.1} s", a.workload, a.distribution, a.concurrency);
    println!("{ok} ops, {:.0} ops/s, errors {:?}", ok as f64 / secs, t.errors);
    println!("{:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}", "op", "count", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms");
    for (name, h) in [("read", reads), ("write", writes), ("cas", cas)] {
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
    if !cas.is_empty() {
        println!("cas: {} applied, {} not applied, {} contention retries", t.cas_applied, t.cas_not_applied, t.cas_retries);
    }
    if !t.coordinators.is_empty() {
        println!("requests per coordinator: {:?} (skew max/mean {skew:.2})", t.coordinators);
    }
}
