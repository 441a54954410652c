//! The client library against real processes: token-aware routing saves the
//! forwarding hop, and idempotent requests fail over past a dead node.

use std::time::Duration;

use ringkv_client::{policy, Client, Level, Options};
use ringkv_tests::process::{cluster, liveness, wait_until};

#[test]
fn token_aware_routing_never_forwards_and_idempotent_requests_fail_over() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 5, &["--gossip-interval", "300ms"]);
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Through n1 alone, keys n1 does not replicate are forwarded.
        let fixed = Client::connect([all[0].as_str()]).await.unwrap();
        let mut forwarded = 0;
        for i in 0..200 {
            let r = fixed.put(format!("t{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await.unwrap();
            forwarded += usize::from(!r.receipt.unwrap().forwarded_from.is_empty());
        }
        assert!(forwarded > 20, "with 5 nodes and 3 replicas, about 2 keys in 5 skip n1: {forwarded}");

        // Token-aware: always a replica, so never a hop.
        let aware = Client::builder()
            .endpoints([all[0].as_str()])
            .policy(Box::new(policy::TokenAware::new(Box::new(policy::RoundRobin::default()))))
            .build()
            .await
            .unwrap();
        let mut coordinators = std::collections::BTreeSet::new();
        for i in 0..200 {
            let r = aware.put(format!("t{i}").as_bytes(), b"w", None, Options::level(Level::Quorum)).await.unwrap();
            let receipt = r.receipt.unwrap();
            assert_eq!(receipt.forwarded_from, "", "t{i} was forwarded");
            coordinators.insert(receipt.coordinator);
        }
        assert_eq!(coordinators.len(), 5, "discovery found every node from one endpoint");
    });

    // Kill a node: round-robin gets keep succeeding by moving on.
    nodes[4].kill9();
    wait_until("n1 sees n5 down", Duration::from_secs(15), || liveness(&all[0], "n5") == "down");
    rt.block_on(async {
        let rr = Client::builder()
            .endpoints([all[0].as_str()])
            .policy(Box::new(policy::RoundRobin::default()))
            .health_check_interval(Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        for i in 0..100 {
            let got = rr.get(format!("t{}", i % 200).as_bytes(), Options::level(Level::Quorum)).await;
            assert!(got.is_ok(), "get {i}: {got:?}");
        }
    });
}

#[test]
fn bench_reports_throughput_percentiles_and_coordinator_skew_as_json() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, &[]);
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let out = ringkv_tests::process::cli(
        &all.join(","),
        &["--policy", "token-aware", "bench", "--workload", "a", "--ops", "2000", "--keys", "200", "--concurrency", "8", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ops"], 2000, "{r}");
    assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
    for op in ["reads", "writes"] {
        for field in ["p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(r[op][field].as_f64().is_some(), "{op}.{field} in {r}");
        }
    }
    assert_eq!(r["errors"], serde_json::json!({}));
    assert_eq!(r["coordinators"].as_object().unwrap().len(), 3, "{r}");
    assert!(r["coordinator_skew"].as_f64().unwrap() >= 1.0);
}

/// Consistent hashing with bounded loads under a zipfian workload. Without a
/// bound (ε huge), each key goes to its primary replica and the hot keys'
/// primaries take most requests. With ε = 0.25 every node's in-flight
/// requests are capped at ⌈(1+ε)(m+1)/n⌉ for m in flight on n nodes, so the
/// coordinator counts stay within that cap over the mean (→ 1+ε as m grows).
#[test]
fn bounded_load_keeps_coordinator_skew_within_its_cap_under_zipfian_load() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 5, &[]);
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let (in_flight, n, epsilon): (f64, f64, f64) = (64.0, 5.0, 0.25);
    let skew = |policy: &str| {
        let args = ["--policy", policy, "bench", "--workload", "c", "--keys", "50", "--ops", "6000", "--concurrency", "64", "--json"];
        let out = ringkv_tests::process::cli(&all.join(","), &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
        eprintln!("{policy}: coordinators {} skew {:.2}", r["coordinators"], r["coordinator_skew"]);
        r["coordinator_skew"].as_f64().unwrap()
    };
    let cap: f64 = ((1.0 + epsilon) * (in_flight + 1.0) / n).ceil() / (in_flight / n);
    let (hot, bounded) = (skew("bounded-load:1000"), skew("bounded-load:0.25"));
    assert!(hot > 1.5, "zipfian keys concentrate plain consistent hashing: skew {hot:.2}");
    assert!(bounded <= cap, "bounded-load skew {bounded:.2} exceeds its cap {cap:.2} (1 + ε = {})", 1.0 + epsilon);
    assert!(bounded < hot, "bounded loads ({bounded:.2}) spread more than plain consistent hashing ({hot:.2})");
}
