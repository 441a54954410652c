//! `ringkv serve` and `ringkv cluster`: the only code that reads config files
//! and the environment; the node library takes a finished `Config`.

use std::path::Path;

use anyhow::{Context, Result};
use ringkv_node::{Config, Durability, Env};
use tokio_util::sync::CancellationToken;

use crate::args::{ClusterArgs, ServeArgs};
use ringkv_harness::cluster::LocalCluster;

/// Builds the node config: defaults, then the file, then flags.
pub fn load_config(a: &ServeArgs) -> Result<Config> {
    let mut c = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
            toml::from_str::<Config>(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => {$( if let Some(v) = a.$f.clone() { c.$f = v; } )*};
    }
    set!(
        id,
        listen,
        data_dir,
        seeds,
        zone,
        replication_factor,
        vnodes,
        storage,
        group_commit_ms,
        max_clock_skew_ms,
        max_key_bytes,
        max_value_bytes,
        request_timeout_ms,
        peer_timeout_ms,
        gossip_interval_ms,
        initial_tokens,
        anti_entropy_interval,
        anti_entropy_bytes_per_sec,
        tombstone_grace,
        cleanup_delay,
        max_hint_window,
        max_hint_bytes_per_target,
        hint_replay_bytes_per_sec,
        speculative_retry_ms,
        phi_threshold,
        heartbeat_pause_ms
    );
    if let Some(h) = a.hinted_handoff {
        c.hinted_handoff = h == crate::args::OnOff::On;
    }
    if let Some(l) = a.commit_log {
        c.commit_log = l == crate::args::OnOff::On;
    }
    if a.advertise.is_some() {
        c.advertise = a.advertise.clone();
    }
    if a.rng_seed.is_some() {
        c.rng_seed = a.rng_seed;
    }
    if let Some(d) = &a.durability {
        c.durability = match d.as_str() {
            "fsync" => Durability::Fsync,
            "group" => Durability::Group,
            "none" => Durability::None,
            other => anyhow::bail!("durability {other:?} is not one of fsync, group, none"),
        };
    }
    c.validate()?;
    Ok(c)
}

/// Cancels `token` on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
}

/// Runs one node until Ctrl-C or SIGTERM.
pub async fn run(a: ServeArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&a.log));
    use std::io::IsTerminal;
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(std::io::stderr().is_terminal()).init();
    let config = load_config(&a)?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let env = Env::real(&config);
    ringkv_node::run(config, env, shutdown).await?;
    Ok(())
}

/// Runs a local cluster in the foreground until Ctrl-C.
pub async fn cluster(a: ClusterArgs) -> Result<()> {
    if a.nodes == 0 || a.nodes > 64 {
        anyhow::bail!("--nodes must be between 1 and 64, not {}", a.nodes);
    }
    let ports: Vec<u16> = (0..a.nodes as u16).map(|i| a.base_port + i).collect();
    let root: &Path = &a.data_dir;
    let exe = std::env::current_exe().context("cannot find the ringkv executable")?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut cluster = LocalCluster::start(&exe, &addrs, root, &|_| a.serve_args.clone(), |m| eprintln!("{m}")).await?;
    eprintln!("cluster of {} nodes is up: --endpoints {}", a.nodes, cluster.endpoints());
    eprintln!("data in {}; press Ctrl-C to stop", root.display());
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    // A node that dies (or is killed to try a failure) is reported once;
    // the others keep running.
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                for exit in cluster.exited_all() {
                    if reported.insert(exit.clone()) {
                        eprintln!("{exit}; the other nodes keep running");
                    }
                }
            }
        }
    }
    eprintln!("stopping {} nodes...", a.nodes);
    cluster.stop();
    eprintln!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command};

    /// Every config field has a `serve` flag that takes effect.
    #[test]
    fn every_config_field_can_be_set_by_a_flag() {
        let flags = [
            "--id=n9",
            "--listen=127.0.0.9:7109",
            "--advertise=127.0.0.9:7109",
            "--data-dir=/tmp/x",
            "--seeds=a:1,b:2",
            "--zone=z",
            "--replication-factor=5",
            "--vnodes=8",
            "--initial-tokens=1,2",
            "--storage=sled",
            "--durability=fsync",
            "--group-commit-ms=7",
            "--max-clock-skew-ms=9",
            "--max-key-bytes=10",
            "--max-value-bytes=11",
            "--request-timeout-ms=12",
            "--peer-timeout-ms=13",
            "--gossip-interval-ms=14",
            "--rng-seed=15",
            "--phi-threshold=3.5",
            "--heartbeat-pause-ms=16",
            "--anti-entropy-interval=0",
            "--anti-entropy-bytes-per-sec=17",
            "--tombstone-grace=18",
            "--hinted-handoff=off",
            "--max-hint-window=19",
            "--max-hint-bytes-per-target=20",
            "--hint-replay-bytes-per-sec=21",
            "--speculative-retry-ms=22",
            "--cleanup-delay=23",
            "--commit-log=off",
        ];
        let cli = Cli::try_parse_from(["ringkv", "serve"].into_iter().chain(flags)).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let got = toml::Value::try_from(super::load_config(&args).unwrap()).unwrap();
        let default = toml::Value::try_from(ringkv_node::Config::default()).unwrap();
        for (field, value) in got.as_table().unwrap() {
            assert_ne!(Some(value), default.get(field), "the flag for {field} had no effect");
        }
        assert!(got.get("advertise").is_some() && got.get("rng_seed").is_some());
    }
}
