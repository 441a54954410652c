//! Cluster formation the way operators start clusters (simulated, pinned
//! seeds; `RINGKV_SIM_SEED` overrides): every node at once with the same
//! seed list, concurrent joiners into a running cluster, and two nodes that
//! both start a ring because a partition split their views. Each ends with
//! one ring whose tokens are distinct and whose every node owns a share.

use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{add_node, admin, builder, client, config, run, seed, until};

/// The same seed list, naming nodes 1 to `n`, for every node.
fn seed_list(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}:{}", ringkv_tests::sim::PORT)).collect()
}

/// True when `observer` sees exactly the nodes `ids`, all normal and up.
async fn all_normal(observer: &str, ids: &[String]) -> bool {
    match client(&[observer]).status().await {
        Ok(s) => ids.iter().all(|id| s.nodes.iter().any(|n| &n.id == id && n.state == "normal" && n.liveness == "up")),
        Err(_) => false,
    }
}

/// True when every node in `ids` sees all of them normal and up.
async fn every_node_sees_all_normal(ids: &[String]) -> bool {
    futures::future::join_all(ids.iter().map(|id| all_normal(id, ids))).await.into_iter().all(|ok| ok)
}

/// `grpc.health.v1` for `ringkv.v1.Kv` on `node` (the readiness a
/// Kubernetes probe asks): `Some(true)` when SERVING, `None` when the node
/// does not answer.
async fn kv_ready(node: &str) -> Option<bool> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let ch = ringkv_node::transport::channel(
        std::sync::Arc::new(ringkv_tests::sim::SimTransport),
        &format!("{node}:{}", ringkv_tests::sim::PORT),
        Duration::from_millis(500),
    )
    .expect("address");
    let r = HealthClient::new(ch).check(HealthCheckRequest { service: "ringkv.v1.Kv".into() }).await.ok()?;
    Some(r.into_inner().status == ServingStatus::Serving as i32)
}

/// Checks `observer`'s ring: one entry per node in `ids`, no token held
/// twice, every node owning a share, skew at most `max_skew`. Returns skew.
async fn assert_balanced_ring(observer: &str, ids: &[String], max_skew: f64) -> f64 {
    let r = admin(observer).ring(ringkv_client::pb::RingRequest {}).await.expect("ring").into_inner();
    let mut tokens: Vec<u64> = r.tokens.iter().map(|t| t.token).collect();
    let held = tokens.len();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), held, "a token is held by two nodes");
    assert_eq!(r.owners.len(), ids.len(), "owners {:?}", r.owners);
    for o in &r.owners {
        assert!(o.ownership > 0.0, "{} owns nothing", o.node);
    }
    assert!(r.skew <= max_skew, "skew {} > {max_skew}", r.skew);
    r.skew
}

/// Starts `n` nodes at the same simulated instant, each with the same seed
/// list naming all of them, and measures how long until all are normal.
fn same_seed_list_started_at_once(n: usize, pinned: u64) {
    let seed = seed(pinned);
    let mut b = builder(seed);
    b.simulation_duration(Duration::from_secs(90));
    let mut sim = b.build();
    for i in 1..=n {
        let mut cfg = config(i, seed);
        cfg.seeds = seed_list(n);
        add_node(&mut sim, cfg, Duration::ZERO);
    }
    sim.client("observer", async move {
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let started = tokio::time::Instant::now();
        // Up but not yet in a ring: the server is live, Kv is not ready.
        until("n1 answers health checks", Duration::from_secs(5), || async { kv_ready("n1").await.is_some() }).await?;
        assert_eq!(kv_ready("n1").await, Some(false), "ready before any ring formed");
        until("every node normal on every node", Duration::from_secs(30), || async { every_node_sees_all_normal(&ids).await }).await?;
        let took = started.elapsed();
        for id in &ids {
            until(&format!("{id} ready"), Duration::from_secs(2), || async { kv_ready(id).await == Some(true) }).await?;
        }
        let skew = assert_balanced_ring("n1", &ids, 1.25).await;
        eprintln!("{n} nodes, same seed list, started at once: all normal after {took:?} (simulated), skew {skew:.3}");
        // The ring serves: a QUORUM write is read back through another node.
        let c = client(&["n1"]);
        c.put(b"formed", b"yes", None, Options::level(Level::Quorum)).await?;
        let got = client(&[&format!("n{n}")]).get(b"formed", Options::level(Level::Quorum)).await?;
        assert_eq!(got.siblings.iter().map(|s| s.value.as_slice()).collect::<Vec<_>>(), [b"yes"]);
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn five_nodes_with_the_same_seed_list_started_at_once_form_one_balanced_ring() {
    same_seed_list_started_at_once(5, 0x5eed_f001);
}

#[test]
fn twenty_nodes_with_the_same_seed_list_started_at_once_form_one_balanced_ring() {
    same_seed_list_started_at_once(20, 0x5eed_f002);
}

#[test]
fn three_concurrent_joiners_into_a_running_cluster_take_distinct_tokens_and_lose_nothing() {
    let seed = seed(0x5eed_f003);
    let mut b = builder(seed);
    b.simulation_duration(Duration::from_secs(90));
    let mut sim = b.build();
    // A running cluster of three (same seed list), then three joiners
    // launched at the same instant, seeded by the first three.
    for i in 1..=6 {
        let mut cfg = config(i, seed);
        cfg.seeds = seed_list(3);
        add_node(&mut sim, cfg, if i <= 3 { Duration::ZERO } else { Duration::from_secs(20) });
    }
    sim.client("observer", async {
        let first: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        until("the first three are normal", Duration::from_secs(19), || all_normal("n1", &first)).await?;
        let c = client(&["n1", "n2", "n3"]);
        for i in 0..200 {
            let k = format!("k{i:03}");
            c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await?;
        }
        let all: Vec<String> = (1..=6).map(|i| format!("n{i}")).collect();
        until("all six normal on every node", Duration::from_secs(60), || async { every_node_sees_all_normal(&all).await }).await?;
        let skew = assert_balanced_ring("n4", &all, 1.25).await;
        eprintln!("3 concurrent joiners: skew {skew:.3}");
        // Every write made before the joins is readable at QUORUM through
        // each joiner.
        for id in ["n4", "n5", "n6"] {
            let c = client(&[id]);
            let reads = (0..200).map(|i| {
                let c = c.clone();
                async move {
                    let k = format!("k{i:03}");
                    let got = c.get(k.as_bytes(), Options::level(Level::Quorum)).await.map_err(|e| format!("{k}: {e}"))?;
                    if got.siblings.iter().any(|s| s.value == k.as_bytes()) {
                        Ok(())
                    } else {
                        Err(format!("{k} missing through {id}"))
                    }
                }
            });
            for r in futures::future::join_all(reads).await {
                r?;
            }
        }
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn two_nodes_that_both_start_a_ring_settle_the_shared_tokens_before_serving() {
    let seed = seed(0x5eed_f004);
    let mut b = builder(seed);
    b.simulation_duration(Duration::from_secs(90));
    let mut sim = b.build();
    for i in 1..=3 {
        let mut cfg = config(i, seed);
        cfg.seeds = seed_list(3);
        add_node(&mut sim, cfg, Duration::ZERO);
    }
    // n1 and n2 cannot reach each other, but both reach n3: each sees the
    // other only through n3 and, failing to reach it directly, counts it
    // down, so both believe they have the smallest live id and start a ring
    // with the same first tokens.
    sim.partition("n1", "n2");
    sim.client("observer", async {
        let ids: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        until("n1 is normal", Duration::from_secs(30), || async {
            client(&["n1"]).status().await.is_ok_and(|s| s.nodes.iter().any(|n| n.id == "n1" && n.state == "normal"))
        })
        .await?;
        turmoil::repair("n1", "n2");
        until("all three normal on every node", Duration::from_secs(40), || async { every_node_sees_all_normal(&ids).await }).await?;
        for id in &ids {
            assert_balanced_ring(id, &ids, 1.25).await;
        }
        Ok(())
    });
    run(sim, seed);
}
