//! A short tour of the client: a write at QUORUM, a read at ONE with its
//! receipt, a causal write-back, and token-aware routing.
//!
//! Start a cluster (`ringkv cluster --nodes 3`), then:
//! `cargo run -p ringkv-client --example quickstart -- 127.0.0.1:7101`

use ringkv_client::{lww, policy, Client, Level, Options};

#[tokio::main]
async fn main() -> Result<(), ringkv_client::Error> {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7101".into());
    let client = Client::connect([endpoint.as_str()]).await?;

    client.put(b"greeting", b"hello", None, Options::level(Level::Quorum)).await?;
    let read = client.get(b"greeting", Options::level(Level::One)).await?;
    let receipt = read.receipt.clone().unwrap_or_default();
    println!(
        "read {:?} via {} in {} µs",
        lww(&read.siblings).map(|s| String::from_utf8_lossy(&s.value)),
        receipt.coordinator,
        receipt.latency_us
    );

    // A causal write supersedes exactly what the read saw.
    client.put(b"greeting", b"hello again", Some(read.context), Options::level(Level::Quorum)).await?;

    // Token-aware routing sends each request to a replica of its key.
    let routed = Client::builder()
        .endpoints([endpoint.as_str()])
        .policy(Box::new(policy::TokenAware::new(Box::new(policy::RoundRobin::default()))))
        .build()
        .await?;
    let r = routed.put(b"greeting", b"routed", None, Options::level(Level::Quorum)).await?;
    println!(
        "coordinated by {} (forwarded: {:?})",
        r.receipt.as_ref().map_or("", |x| &x.coordinator),
        r.receipt.as_ref().map(|x| &x.forwarded_from)
    );
    Ok(())
}
