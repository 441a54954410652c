//! Membership over real processes: a fourth node joins a cluster holding
//! 10,000 keys, a killed node is detected, and a node is decommissioned,
//! with every key readable throughout.

use std::time::{Duration, Instant};

use ringkv_client::{Client, Level, Options};
use ringkv_tests::process::{cli_json, cluster, liveness, wait_until, NodeProc};

const KEYS: usize = 10_000;

/// Runs `op` on every key, 16 keys in flight.
async fn each_key<F, Fut>(c: &Client, op: F)
where
    F: Fn(Client, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (c, op) = (c.clone(), op.clone());
            tokio::spawn(async move {
                for i in (t..KEYS).step_by(16) {
                    op(c.clone(), format!("m-{i:05}")).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn write_all(c: &Client) {
    each_key(c, |c, k| async move {
        c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await.expect("put");
    })
    .await
}

async fn read_all(c: &Client, level: Level) {
    each_key(c, move |c, k| async move {
        let got = c.get(k.as_bytes(), Options::level(level)).await.unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(got.siblings.iter().any(|s| s.value == k.as_bytes()), "{k} missing at {level:?}");
    })
    .await
}

fn state(endpoint: &str, node: &str) -> String {
    let s = cli_json(endpoint, &["status"]);
    s["nodes"].as_array().unwrap().iter().find(|n| n["id"] == node).map_or(String::new(), |n| n["state"].as_str().unwrap().to_string())
}

#[test]
fn fourth_node_joins_with_data_then_survives_a_kill_and_a_decommission() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &[]);
    let n1 = nodes[0].addr.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { write_all(&Client::connect([n1.as_str()]).await.unwrap()).await });

    // Join: a fourth node ends normal, the ring has 4 nodes with low skew.
    let joined = Instant::now();
    nodes.push(NodeProc::start(root.path(), "n4", Some(&n1), &[]));
    wait_until("n4 is normal", Duration::from_secs(120), || state(&n1, "n4") == "normal");
    eprintln!("join of n4 with {KEYS} keys in the cluster took {:?}", joined.elapsed());
    let ring = cli_json(&n1, &["ring"]);
    assert_eq!(ring["nodes"].as_array().unwrap().len(), 4, "{ring}");
    assert!(ring["skew"].as_f64().unwrap() <= 1.10, "{}", ring["skew"]);
    assert!(cli_json(&nodes[3].addr, &["status"])["local_keys"].as_u64().unwrap() > (KEYS as u64) / 2, "n4 streamed its share");
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    rt.block_on(async { read_all(&Client::connect(&all).await.unwrap(), Level::Quorum).await });

    // Kill an original node: detected within the bound, every key still at QUORUM.
    let killed = Instant::now();
    nodes[1].kill9();
    wait_until("n1 sees n2 down", Duration::from_secs(15), || liveness(&n1, "n2") == "down");
    eprintln!("kill -9 of n2 detected by n1 after {:?}", killed.elapsed());
    let alive: Vec<String> = [0, 2, 3].iter().map(|&i| nodes[i].addr.clone()).collect();
    rt.block_on(async { read_all(&Client::connect(&alive).await.unwrap(), Level::Quorum).await });
    nodes[1].restart();
    wait_until("n1 sees n2 up again", Duration::from_secs(15), || liveness(&n1, "n2") == "up");

    // Decommission n4: three nodes remain and every key reads at ALL.
    let started = Instant::now();
    let out = cli_json(&n1, &["decommission", "--node", "n4"]);
    eprintln!("decommission of n4 took {:?} ({out})", started.elapsed());
    wait_until("n1 sees n4 left", Duration::from_secs(15), || state(&n1, "n4") == "left");
    assert_eq!(cli_json(&n1, &["ring"])["nodes"].as_array().unwrap().len(), 3);
    let three: Vec<String> = nodes[..3].iter().map(|n| n.addr.clone()).collect();
    rt.block_on(async { read_all(&Client::connect(&three).await.unwrap(), Level::All).await });
}
