//! `ringkv serve` and `ringkv cluster`: the only code that reads config files
//! and the environment; the node library takes a finished `Config`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ringkv_node::{Config, Env};
use tokio_util::sync::CancellationToken;

use crate::args::{AuthArgs, ClusterArgs, ServeArgs};
use ringkv_harness::cluster::LocalCluster;
use ringkv_harness::secure::SecureFiles;

/// Builds the node config: defaults, then the file, then flags.
pub fn load_config(a: &ServeArgs) -> Result<Config> {
    let mut c = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
            toml::from_str::<Config>(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => Config::default(),
    };
    a.overrides.apply(&mut c);
    c.validate()?;
    Ok(c)
}

/// The node's TLS files from the global `--ca`, `--cert` and `--key`: all
/// three or none.
pub fn tls_files(auth: &AuthArgs) -> Result<Option<(PathBuf, PathBuf, PathBuf)>> {
    match (&auth.ca, &auth.cert, &auth.key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some((ca.clone(), cert.clone(), key.clone()))),
        _ => anyhow::bail!(
            "a node with TLS needs all three of --ca (the cluster CA), --cert and --key (its own, from `ringkv cert issue node ID`)"
        ),
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
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
    // A span's close is logged: each client request's `request` span
    // (debug, `--log info,ringkv_node::metrics=debug`) then prints one line
    // with its receipt's fields. The node has no other spans.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut config = load_config(&a)?;
    // A deliberately broken Paxos, for showing jepsen-lite catches it;
    // honoured only where faults may be injected anyway.
    if let Ok(raw) = std::env::var("RINGKV_BREAK_PAXOS") {
        let broken: ringkv_node::paxos::Break = raw.parse().map_err(anyhow::Error::msg)?;
        if config.enable_fault_injection {
            tracing::warn!(node = %config.id, ?broken, "RINGKV_BREAK_PAXOS: SERIAL is deliberately broken in this process");
            config.break_paxos = broken;
        } else if broken != ringkv_node::paxos::Break::None {
            anyhow::bail!("RINGKV_BREAK_PAXOS={raw} is only honoured with --enable-fault-injection; unset it");
        }
    }
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
    let mut cluster = match &a.secure {
        None => LocalCluster::start(&exe, &addrs, root, &|_| a.serve_args.clone(), |m| eprintln!("{m}")).await?,
        Some(dir) => {
            let files = SecureFiles::prepare(dir, &addrs)?;
            let extra = |i| [files.serve_args(i), a.serve_args.clone()].concat();
            LocalCluster::start_with(&exe, &addrs, root, &extra, files.credentials()?, |m| eprintln!("{m}")).await?
        }
    };
    eprintln!("cluster of {} nodes is up: --endpoints {}", a.nodes, cluster.endpoints());
    if let Some(dir) = &a.secure {
        eprintln!(
            "TLS and tokens are on; use: export RINGKV_CA={} RINGKV_TOKEN=$(cat {})",
            dir.join("ca.crt").display(),
            dir.join("admin.token").display()
        );
    }
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
    use std::time::Duration;

    use clap::Parser;

    use crate::args::{Cli, Command};

    /// Every config field has a `serve` flag that takes effect: the test
    /// sets each flag to a value unlike the default and checks that every
    /// field of the resulting config differs from the default. A field
    /// without a flag keeps its default and fails it.
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
            "--storage=redb",
            "--durability=fsync",
            "--group-commit=7ms",
            "--max-clock-skew=9ms",
            "--max-key-bytes=10",
            "--max-value-bytes=11",
            "--request-timeout=12ms",
            "--peer-timeout=13ms",
            "--gossip-interval=14ms",
            "--rng-seed=15",
            "--phi-threshold=3.5",
            "--heartbeat-pause=16ms",
            "--anti-entropy-interval=0s",
            "--anti-entropy-bytes-per-sec=17",
            "--tombstone-grace=18d",
            "--hinted-handoff=off",
            "--max-hint-window=19h",
            "--max-hint-bytes-per-target=20",
            "--hint-replay-bytes-per-sec=21",
            "--speculative-retry=22ms",
            "--cleanup-delay=23s",
            "--commit-log=off",
            "--enable-fault-injection",
            "--rate-limit-per-sec=24",
            "--rate-limit-burst=25",
            "--watch-log-changes=26",
            "--watch-log-bytes=27",
            "--max-watches=28",
            "--ca=ca.crt",
            "--cert=n9.crt",
            "--key=n9.key",
            "--tokens-file=tokens.toml",
            "--peer-token=rkv_peer",
            "--insecure",
            "--health-listen=127.0.0.9:7110",
            "--http-listen=127.0.0.9:9100",
        ];
        let got = toml::Value::try_from(config_from(&flags).unwrap()).unwrap();
        let default = toml::Value::try_from(ringkv_node::Config::default()).unwrap();
        let got = got.as_table().unwrap();
        // Every field, the optional ones included, is in the serialized config.
        let optional =
            ["advertise", "rng_seed", "tls_ca", "tls_cert", "tls_key", "tokens_file", "peer_token", "health_listen", "http_listen"];
        assert_eq!(got.len(), default.as_table().unwrap().len() + optional.len(), "the optional fields are set too: {optional:?}");
        for (field, value) in got {
            assert_ne!(Some(value), default.get(field), "the flag for {field} had no effect");
        }
    }

    fn config_from(flags: &[&str]) -> anyhow::Result<ringkv_node::Config> {
        let cli = Cli::try_parse_from(["ringkv", "serve"].iter().chain(flags))?;
        let Command::Serve(mut args) = cli.command else { panic!("not serve") };
        // As main does: the global --ca/--cert/--key are the node's TLS files.
        args.overrides.tls = super::tls_files(&cli.auth)?;
        super::load_config(&args)
    }

    #[test]
    fn old_duration_flags_keep_their_units() {
        let c =
            config_from(&["--gossip-interval-ms=300", "--peer-timeout-ms", "500", "--anti-entropy-interval=10", "--tombstone-grace=86400"])
                .unwrap();
        assert_eq!(c.gossip_interval, Duration::from_millis(300));
        assert_eq!(c.peer_timeout, Duration::from_millis(500));
        assert_eq!(c.anti_entropy_interval, Duration::from_secs(10));
        assert_eq!(c.tombstone_grace, Duration::from_secs(86400));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let err = config_from(&["--storage=rocksdb"]).unwrap_err().to_string();
        assert!(err.contains("invalid value 'rocksdb'") && err.contains("fjall, redb, memory"), "{err}");
        let err = config_from(&["--durability=always"]).unwrap_err().to_string();
        assert!(err.contains("invalid value 'always'") && err.contains("fsync, group, none"), "{err}");
        let err = config_from(&["--tombstone-grace=forever"]).unwrap_err().to_string();
        assert!(err.contains("not a duration"), "{err}");
        let err = config_from(&["--tombstone-grace=1h", "--max-hint-window=1h"]).unwrap_err().to_string();
        assert!(err.contains("max_hint_window (1h) must be shorter than tombstone_grace (1h)"), "{err}");
        let err = Cli::try_parse_from(["ringkv", "--policy=fastest", "status"]).unwrap_err().to_string();
        assert!(err.contains("unknown policy \"fastest\"") && err.contains("token-aware"), "{err}");
    }

    #[test]
    fn a_config_file_is_read_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "id = \"n7\"\nstorage = \"memory\"\ngroup_commit_ms = 4\ntombstone_grace = \"2d\"\n").unwrap();
        let c = config_from(&[&format!("--config={}", path.display()), "--tombstone-grace=3d"]).unwrap();
        assert_eq!((c.id.as_str(), c.storage), ("n7", ringkv_node::Engine::Memory));
        assert_eq!(c.group_commit, Duration::from_millis(4));
        assert_eq!(c.tombstone_grace, Duration::from_secs(3 * 24 * 3600));
    }
}
