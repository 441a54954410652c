//! `ringkv gateway`: the flags to a [`ringkv_gateway::Gateway`], served
//! until Ctrl-C or SIGTERM. The gateway itself lives in the
//! `ringkv-gateway` crate (`gateway/`).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use ringkv_client::policy::PolicyName;
use ringkv_client::Credentials;
use ringkv_gateway::{Gateway, GatewayConfig};
use tokio_util::sync::CancellationToken;

use crate::args::GatewayArgs;

/// Connects to the cluster with `policy` and `credentials`, then serves HTTP.
pub async fn run(a: GatewayArgs, endpoints: &[String], policy: &PolicyName, credentials: &Credentials) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&a.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(std::io::stderr().is_terminal()).init();
    let nodes = a.nodes.as_deref().unwrap_or(endpoints);
    let client = crate::commands::connect(nodes, policy, credentials)
        .await
        .with_context(|| format!("cannot reach the cluster at {} to discover it", nodes.join(",")))?;
    let config = GatewayConfig { listen: a.listen, rate_limit: a.rate_limit, recent: a.recent, own_token: credentials.token.is_some() };
    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {} for HTTP", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, nodes = %nodes.join(","), policy = %client.policy_name(), rate_limit = ?config.rate_limit.map(|r| r.to_string()), "gateway listening");
    // Scripts wait for this line; the page's address is on it.
    println!("ringkv gateway listening on http://{addr}/ (nodes {}, policy {})", nodes.join(","), client.policy_name());
    let shutdown = CancellationToken::new();
    crate::serve::cancel_on_signal(shutdown.clone());
    ringkv_gateway::serve(listener, Gateway::new(client, &config), shutdown).await.context("the HTTP server failed")
}
