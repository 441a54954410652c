//! `ringkv`: the one binary. Parses flags and dispatches; each command lives
//! in its own module. Exit codes: 0 success (a missing key included), 1 an
//! operational error (one `error: ...` line on stderr), 2 a usage error.

mod args;
mod bench;
mod bench_cas;
mod bench_target;
mod cas;
mod commands;
mod demo;
mod gateway;
mod output;
mod secure;
mod serve;
mod watch;

use clap::Parser;

/// glibc malloc took 14% of a profiled write load (`bench/compare.sh`);
/// mimalloc's per-thread heaps avoid most of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use args::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let plaintext = cli.auth.ca.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(mut a) => {
                a.overrides.tls = serve::tls_files(&cli.auth)?;
                serve::run(*a).await
            }
            Command::Cluster(a) => serve::cluster(a).await,
            Command::Demo(a) => demo::run(a, cli.json).await,
            Command::Cert { action } => secure::cert(action, cli.json),
            Command::Token { action } => secure::token(action, cli.json),
            Command::Gateway(a) => gateway::run(a, &cli.endpoints, &cli.policy, &cli.auth.credentials()?).await,
            Command::Bench(a) => bench::run(a, &cli.endpoints, &cli.policy, &cli.auth.credentials()?, cli.json).await,
            other => commands::run(other, &cli.endpoints, &cli.policy, &cli.auth.credentials()?, cli.json).await,
        }
    });
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
        eprintln!("error: {msg}");
        // A plaintext client meeting a TLS node sees only an HTTP/2 framing
        // error; say what it most likely means.
        if plaintext && msg.contains("h2 protocol error") {
            eprintln!("hint: the node may be serving TLS; pass --ca (or RINGKV_CA) with the cluster's CA certificate");
        }
        std::process::exit(1);
    }
}
