//! `jepsen-lite`: start a real ringkv cluster, inject faults while clients
//! record a history, check it, and write a PACELC report.
//!
//! Exit codes: 0 when every checker passed, 1 when a safety checker
//! failed, 2 for usage errors or when the run itself could not be done.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jepsen_lite::nemesis::{Kinds, Net};
use jepsen_lite::run::{run, RunConfig};
use jepsen_lite::workload::Workload;
use ringkv_client::parse_duration;

/// Fault injection over real `ringkv serve` processes.
#[derive(Parser, Debug)]
#[command(name = "jepsen-lite", version)]
struct Args {
    /// Nodes to start, on 127.0.0.11, 127.0.0.12, ...
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// How long the workload runs under faults (e.g. 60s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    duration: Duration,
    /// Fault kinds: all, none, or a comma list of kill, pause, partition, latency, clock.
    #[arg(long, default_value = "all")]
    nemesis: Kinds,
    /// How partitions are made: the nodes' fault layer, or kernel DROP rules (root only).
    #[arg(long, value_enum, default_value_t = Net::Fault)]
    net: Net,
    /// Seed for the fault schedule and the clients (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// register (hot keys), set (a fresh key per write), both (half the clients each), or cas (SERIAL cas and reads, hard linearizability check).
    #[arg(long, value_enum, default_value_t = Workload::Both)]
    workload: Workload,
    /// Hot keys of the register workload.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Pause between a client's operations.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    think: Duration,
    /// A client gives up on an operation after this long (a write then counts as indeterminate).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    op_timeout: Duration,
    /// How long to wait for the replicas to converge on their own before running a repair.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    passive_wait: Duration,
    /// Output directory: history.jsonl, report.json, report.html, nodes/.
    #[arg(long, default_value = "jepsen-lite-out")]
    out: PathBuf,
    /// The ringkv executable (default: next to this one).
    #[arg(long)]
    ringkv: Option<PathBuf>,
    /// Extra flags for every `ringkv serve`, e.g. --node-arg=--durability=fsync.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Run the cluster with TLS (mutual between peers) and tokens; the CA, certificates and
    /// token file are made under OUT/secure.
    #[arg(long)]
    secure: bool,
}

fn main() {
    let a = Args::parse();
    let ringkv = a.ringkv.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.parent().map(|d| d.join("ringkv")).unwrap_or_else(|| PathBuf::from("ringkv"))
    });
    let seed = a.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    let cfg = RunConfig {
        nodes: a.nodes,
        duration: a.duration,
        kinds: a.nemesis,
        net: a.net,
        seed,
        clients: a.clients,
        workload: a.workload,
        register_keys: a.keys,
        think: a.think,
        op_timeout: a.op_timeout,
        passive_wait: a.passive_wait,
        out: a.out,
        ringkv,
        node_args: a.node_args,
        secure: a.secure,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&cfg) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; every node this run started has been stopped")),
        }
    });
    match result {
        Ok(report) => {
            print!("{}", report.text());
            std::process::exit(if report.failed == 0 { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
