//! Metrics in one process: three simulated nodes, each scraped over
//! turmoil's network on its own `http_listen`, count only the requests they
//! coordinated. A process-global recorder would show every node the sum.

use std::collections::BTreeMap;

use ringkv_client::{Level, Options};
use ringkv_tests::scrape::{get_request, parse_metrics, parse_response};
use ringkv_tests::sim::{add_nodes_with, builder, client, run, seed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster_ready;

/// The simulated nodes' HTTP port.
const HTTP_PORT: u16 = 9100;

/// `GET path` on simulated node `node`'s HTTP listener.
async fn get(node: &str, path: &str) -> Result<(u16, String), String> {
    let addr = format!("{node}:{HTTP_PORT}");
    let mut s = turmoil::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(get_request(&addr, path).as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| format!("read: {e}"))?;
    parse_response(raw)
}

async fn scrape(node: &str) -> Result<BTreeMap<String, f64>, String> {
    let (status, body) = get(node, "/metrics").await?;
    if status != 200 {
        return Err(format!("GET /metrics on {node}: {status} {body}"));
    }
    Ok(parse_metrics(&body))
}

fn put_quorum_ok(m: &BTreeMap<String, f64>) -> f64 {
    m.get(r#"ringkv_requests_total{op="put",level="quorum",outcome="ok"}"#).copied().unwrap_or(0.0)
}

#[test]
fn each_simulated_node_counts_only_its_own_requests() {
    let seed = seed(0x5eed_3e71);
    let mut sim = builder(seed).build();
    add_nodes_with(&mut sim, 3, seed, |_, c| c.http_listen = Some(format!("0.0.0.0:{HTTP_PORT}")));
    sim.client("client", async {
        cluster_ready().await?;
        for i in 0..3 {
            client(&["n1"]).put(format!("a{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
        }
        for i in 0..2 {
            client(&["n2"]).put(format!("b{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
        }
        let counted = [put_quorum_ok(&scrape("n1").await?), put_quorum_ok(&scrape("n2").await?), put_quorum_ok(&scrape("n3").await?)];
        assert_eq!(counted, [3.0, 2.0, 0.0], "per node, not summed over the process");
        assert_eq!(get("n3", "/readyz").await?, (200, "ready\n".to_string()));
        // Memory storage has no data dir to measure.
        assert!(!scrape("n1").await?.contains_key("ringkv_stored_bytes"));
        Ok(())
    });
    run(sim, seed);
}
