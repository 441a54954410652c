//! `ringkv serve` and `ringkv cluster`: the only code that reads config files
//! and the environment; the node library takes a finished `Config`.

use std::path::Path;

use anyhow::{Context, Result};
use ringkv_node::{Config, Durability, Env};
use tokio_util::sync::CancellationToken;

use crate::args::{ClusterArgs, ServeArgs};
use crate::local_cluster::LocalCluster;

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
        gossip_interval_ms
    );
    if a.advertise.is_some() {
        c.advertise = a.advertise.clone();
    }
    if a.rng_seed.is_some() {
        c.rng_seed = a.rng_seed;
    }
    if let Some(p) = a.phi_threshold {
        c.phi_threshold = p;
    }
    if let Some(p) = a.heartbeat_pause_ms {
        c.heartbeat_pause_ms = p;
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
    let mut cluster = LocalCluster::start(&ports, root, &a.serve_args, |m| eprintln!("{m}")).await?;
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
