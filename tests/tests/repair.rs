//! Anti-entropy over real processes: a replica that missed writes while
//! dead is brought up to date by `ringkv repair` alone (no hints, no read
//! repair), and a second repair finds nothing to do.

use std::time::Duration;

use ringkv_client::{Client, Level, Options};
use ringkv_tests::process::{cli_json, cluster, liveness, wait_until};

const KEYS: usize = 2000;

#[test]
fn repair_brings_a_restarted_replica_up_to_date_and_then_finds_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &["--hinted-handoff", "off", "--anti-entropy-interval", "0s", "--gossip-interval", "300ms"]);
    let n1 = nodes[0].addr.clone();
    nodes[2].kill9();
    wait_until("n1 sees n3 down", Duration::from_secs(15), || liveness(&n1, "n3") == "down");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect([n1.as_str()]).await.unwrap();
        for i in 0..KEYS {
            let k = format!("ae-{i:05}");
            c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await.unwrap();
        }
    });
    nodes[2].restart();
    // `repair` runs a pass on every node, so every node must see n3 again,
    // not only n1.
    let n2 = nodes[1].addr.clone();
    wait_until("n1 and n2 see n3 up", Duration::from_secs(15), || liveness(&n1, "n3") == "up" && liveness(&n2, "n3") == "up");
    let n3 = nodes[2].addr.clone();
    assert_eq!(cli_json(&n3, &["status"])["local_keys"], 0, "n3 missed every write");

    let first = cli_json(&n1, &["repair"]);
    assert_eq!(first["errors"], serde_json::json!([]), "{first}");
    assert_eq!(first["keys_repaired"], KEYS, "{first}");
    assert!(first["ranges_out_of_sync"].as_u64().unwrap() > 0);
    for field in ["ranges_checked", "bytes_sent", "bytes_received", "duration_ms"] {
        assert!(first[field].is_u64(), "{field} in {first}");
    }
    assert_eq!(cli_json(&n3, &["status"])["local_keys"], KEYS, "n3 holds every key");
    for i in [0, 1, KEYS / 2, KEYS - 1] {
        let k = format!("ae-{i:05}");
        let inspect = cli_json(&n1, &["inspect", &k]);
        let r = inspect["replicas"].as_array().unwrap().iter().find(|r| r["node"] == "n3").unwrap();
        assert_eq!(r["siblings"][0]["value"], k.as_str(), "{inspect}");
    }

    let second = cli_json(&n1, &["repair"]);
    assert_eq!(second["keys_repaired"], 0, "{second}");
    assert_eq!(second["ranges_out_of_sync"], 0, "{second}");
    let bytes = second["bytes_sent"].as_u64().unwrap() + second["bytes_received"].as_u64().unwrap();
    // In sync, each range costs one root exchange per peer: a request and a
    // 32-byte hash, under 100 bytes together.
    let ranges = second["ranges_checked"].as_u64().unwrap();
    assert!(bytes <= ranges * 2 * 100, "an in-sync pass exchanges roots only: {bytes} bytes for {ranges} ranges");
    let roots: Vec<serde_json::Value> = nodes.iter().map(|n| cli_json(&n.addr, &["status"])["anti_entropy"].clone()).collect();
    assert!(roots.iter().all(|a| a["trees_ready"] == a["trees_total"]), "{roots:?}");
}
