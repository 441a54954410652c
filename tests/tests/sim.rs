//! Deterministic simulations: three nodes in one process on turmoil, with
//! pinned seeds. Override a seed with `RINGKV_SIM_SEED`; a failure prints
//! the seed to rerun.

use std::time::Duration;

use ringkv_client::{Error, Level, Options, ReadRepair};
use ringkv_tests::sim::{add_nodes, builder, client, roots, run, seed, sees, until};

const CONVERGE: Duration = Duration::from_secs(20);

/// Waits until n1 sees all three nodes normal and up.
async fn cluster_ready() -> Result<(), Box<dyn std::error::Error>> {
    until("n1 sees 3 nodes up", CONVERGE, || async {
        sees("n1", "n2", "up").await && sees("n1", "n3", "up").await && sees("n3", "n2", "up").await
    })
    .await?;
    Ok(())
}

#[test]
fn quorum_write_is_readable_at_quorum_through_another_coordinator() {
    let seed = seed(0x5eed_0001);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let via_n1 = client(&["n1"]);
        let via_n2 = client(&["n2"]);
        via_n1.put(b"k", b"v1", None, Options::level(Level::Quorum)).await?;
        let got = via_n2.get(b"k", Options::level(Level::Quorum)).await?;
        let values: Vec<&[u8]> = got.siblings.iter().map(|s| s.value.as_slice()).collect();
        assert_eq!(values, [b"v1".as_slice()]);
        let receipt = got.receipt.unwrap();
        assert_eq!(receipt.coordinator, "n2");
        assert!(receipt.acked >= 2, "QUORUM read answered by {} replicas", receipt.acked);
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn minority_partition_fails_all_but_serves_quorum_and_one() {
    let seed = seed(0x5eed_0002);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        turmoil::partition("n3", "n1");
        turmoil::partition("n3", "n2");
        until("n1 sees n3 down", CONVERGE, || sees("n1", "n3", "down")).await?;
        let c = client(&["n1"]);
        match c.put(b"k", b"v", None, Options::level(Level::All)).await {
            Err(Error::Unavailable { required: 3, alive: 2, .. }) => {}
            other => panic!("ALL should be unavailable with 2 of 3 alive, got {other:?}"),
        }
        match c.get(b"k", Options::level(Level::All)).await {
            Err(Error::Unavailable { required: 3, alive: 2, .. }) => {}
            other => panic!("ALL read should be unavailable, got {other:?}"),
        }
        c.put(b"k", b"v", None, Options::level(Level::Quorum)).await?;
        c.put(b"k2", b"w", None, Options::level(Level::One)).await?;
        let got = c.get(b"k", Options::level(Level::Quorum)).await?;
        assert_eq!(got.siblings[0].value, b"v");
        let got = c.get(b"k2", Options::level(Level::One)).await?;
        assert_eq!(got.siblings[0].value, b"w");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn blocking_read_repair_at_all_heals_the_stale_replica() {
    let seed = seed(0x5eed_0003);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        turmoil::partition("n3", "n1");
        turmoil::partition("n3", "n2");
        until("n1 sees n3 down", CONVERGE, || sees("n1", "n3", "down")).await?;
        let c = client(&["n1"]);
        c.put(b"healed", b"during-partition", None, Options::level(Level::Quorum)).await?;
        let before = c.inspect(b"healed").await?;
        let n3 = before.replicas.iter().find(|r| r.node == "n3").unwrap();
        assert!(!n3.reachable || !n3.present, "n3 must have missed the write: {n3:?}");

        turmoil::repair("n3", "n1");
        turmoil::repair("n3", "n2");
        until("n1 sees n3 up", CONVERGE, || sees("n1", "n3", "up")).await?;
        let got = c.get(b"healed", Options { level: Level::All, read_repair: ReadRepair::Blocking, timeout: None }).await?;
        assert_eq!(got.siblings[0].value, b"during-partition");
        let report = got.receipt.unwrap().replicas.into_iter().find(|r| r.node == "n3").unwrap();
        assert!(report.stale && report.repaired, "n3 should be found stale and repaired: {report:?}");

        let after = c.inspect(b"healed").await?;
        let n3 = after.replicas.iter().find(|r| r.node == "n3").unwrap();
        assert!(n3.siblings.iter().any(|s| s.value == b"during-partition"), "n3 holds the value after repair: {n3:?}");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn crashed_node_keeps_its_data_and_tokens_in_memory_storage() {
    let seed = seed(0x5eed_0004);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        client(&["n1"]).put(b"durable", b"yes", None, Options::level(Level::All)).await?;
        Ok(())
    });
    // Step until the client is done, then crash and restart n2.
    while !sim.step().expect("simulation step") {}
    sim.bounce("n2");
    sim.client("after", async {
        until("n1 sees n2 up again", CONVERGE, || sees("n1", "n2", "up")).await?;
        let got = client(&["n2"]).get(b"durable", Options::level(Level::One)).await?;
        assert_eq!(got.siblings[0].value, b"yes");
        let ring = client(&["n2"]).ring().await?;
        assert_eq!(ring.owners.len(), 3, "n2 rejoins with its stored tokens");
        Ok(())
    });
    run(sim, seed);
}

// ---- anti-entropy ----

/// Keys whose tokens n1 takes as its own, so they sit exactly on range ends.
fn edge_keys() -> Vec<String> {
    (0..16).map(|i| format!("edge-{i}")).collect()
}

fn with_edge_tokens(i: usize, cfg: &mut ringkv_node::Config) {
    if i == 1 {
        cfg.initial_tokens = edge_keys().iter().map(|k| ringkv_node::ring::token_of(k.as_bytes())).collect();
    }
}

/// Isolates n3 and waits until n1 has noticed.
async fn isolate_n3() -> Result<(), Box<dyn std::error::Error>> {
    turmoil::partition("n3", "n1");
    turmoil::partition("n3", "n2");
    until("n1 sees n3 down", CONVERGE, || sees("n1", "n3", "down")).await?;
    Ok(())
}

async fn heal_n3() -> Result<(), Box<dyn std::error::Error>> {
    turmoil::repair("n3", "n1");
    turmoil::repair("n3", "n2");
    until("n1 sees n3 up", CONVERGE, || sees("n1", "n3", "up")).await?;
    until("n3 sees n1 up", CONVERGE, || sees("n3", "n1", "up")).await?;
    Ok(())
}

async fn assert_identical_roots() -> Result<(), Box<dyn std::error::Error>> {
    let (r1, r2, r3) = (roots("n1").await?, roots("n2").await?, roots("n3").await?);
    assert!(!r1.is_empty() && r1.iter().all(|(_, _, root)| root.len() == 32), "n1 has built trees");
    assert_eq!(r1, r2, "n1 and n2 roots");
    assert_eq!(r1, r3, "n1 and n3 roots");
    Ok(())
}

#[test]
fn partitioned_replica_catches_up_through_repair_alone_including_range_boundaries() {
    let seed = seed(0x5eed_0010);
    let mut sim = builder(seed).build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, with_edge_tokens);
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        let c = client(&["n1"]);
        let keys: Vec<String> = edge_keys().into_iter().chain((0..200).map(|i| format!("k{i}"))).collect();
        for k in &keys {
            c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await?;
        }
        heal_n3().await?;
        // A repair limited to one range touches only that range.
        let (start, end, _) = roots("n1").await?[0].clone();
        let one = ringkv_tests::sim::repair_range("n1", start, end).await?;
        assert_eq!(one.ranges_checked, 1, "{one:?}");
        let report = ringkv_tests::sim::repair("n1").await?;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(one.keys_repaired + report.keys_repaired, keys.len() as u64, "{one:?} {report:?}");
        assert_identical_roots().await?;
        for k in &keys {
            let r = c.inspect(k.as_bytes()).await?;
            let values: Vec<Vec<u8>> = r.replicas.iter().map(|v| v.siblings.first().map(|s| s.value.clone()).unwrap_or_default()).collect();
            assert_eq!(values, vec![k.as_bytes().to_vec(); 3], "{k} on every replica");
        }
        let again = ringkv_tests::sim::repair("n1").await?;
        assert_eq!((again.keys_repaired, again.ranges_out_of_sync), (0, 0), "{again:?}");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn repair_interrupted_by_a_partition_completes_on_the_next_pass() {
    let seed = seed(0x5eed_0011);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        let c = client(&["n1"]);
        for i in 0..300 {
            c.put(format!("k{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
        }
        heal_n3().await?;
        // Cut n3 off again while the pass is under way.
        let pass = tokio::spawn(ringkv_tests::sim::repair("n1"));
        tokio::time::sleep(Duration::from_millis(40)).await;
        turmoil::partition("n3", "n1");
        let first = pass.await??;
        assert!(!first.errors.is_empty() && first.keys_repaired < 300, "the first pass was interrupted: {first:?}");
        heal_n3().await?;
        let second = ringkv_tests::sim::repair("n1").await?;
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        assert_eq!(first.keys_repaired + second.keys_repaired, 300, "together the passes repair every key once");
        assert_identical_roots().await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn tombstone_is_purged_only_once_every_replica_holds_it() {
    let seed = seed(0x5eed_0012);
    let mut sim = builder(seed).build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |_, cfg| cfg.tombstone_grace = 0);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        c.put(b"doomed", b"alive", None, Options::level(Level::All)).await?;
        isolate_n3().await?;
        c.delete(b"doomed", None, Options::level(Level::Quorum)).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;

        // n3 still holds the live value, so nothing may be purged.
        let blocked = ringkv_tests::sim::repair("n1").await?;
        assert_eq!(blocked.tombstones_purged, 0, "{blocked:?}");
        let r = c.inspect(b"doomed").await?;
        let n1 = r.replicas.iter().find(|v| v.node == "n1").unwrap();
        assert!(n1.present && n1.siblings.iter().all(|s| s.tombstone), "n1 keeps the tombstone: {n1:?}");

        heal_n3().await?;
        let healed = ringkv_tests::sim::repair("n1").await?;
        assert!(healed.errors.is_empty(), "{:?}", healed.errors);
        assert_eq!(healed.tombstones_purged, 3, "purged on all three replicas: {healed:?}");
        let r = c.inspect(b"doomed").await?;
        assert!(r.replicas.iter().all(|v| v.reachable && !v.present), "nothing stored anywhere: {r:?}");
        let got = c.get(b"doomed", Options::level(Level::All)).await?;
        assert!(got.siblings.is_empty(), "the deleted value never comes back");
        assert_identical_roots().await?;
        Ok(())
    });
    run(sim, seed);
}
