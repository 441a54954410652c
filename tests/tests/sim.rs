//! Deterministic simulations: three nodes in one process on turmoil, with
//! pinned seeds. Override a seed with `RINGKV_SIM_SEED`; a failure prints
//! the seed to rerun.

use std::time::Duration;

use ringkv_client::{Error, Level, Options, ReadRepair};
use ringkv_tests::sim::{add_nodes, builder, client, roots, run, seed, sees, until};

const CONVERGE: Duration = Duration::from_secs(20);

/// The live sibling values of a read.
fn values(r: &ringkv_client::pb::GetResponse) -> Vec<&[u8]> {
    r.siblings.iter().map(|s| s.value.as_slice()).collect()
}

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
        assert_eq!(values(&got), [b"v1".as_slice()]);
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
        let got = c.get(b"healed", Options { level: Level::All, read_repair: ReadRepair::Blocking, ..Default::default() }).await?;
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

/// Found by jepsen-lite: a coordinator replicates a write while its own
/// copy is still waiting for the group commit. If it crashes then, the
/// peers hold a dot it no longer knows it issued. Reusing that dot for the
/// next write made the merge drop the new value (reads came back empty).
/// Each incarnation now issues dots under its own actor id.
#[test]
fn a_dot_lost_in_a_crash_is_never_reused_for_another_value() {
    use ringkv_node::storage::{Storage, Tree};
    let seed = seed(0x5eed_004c);
    let mut sim = builder(seed).build();
    let nodes = add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        client(&["n1"]).put(b"k", b"old", None, Options::level(Level::All)).await?;
        Ok(())
    });
    while !sim.step().expect("simulation step") {}
    // n1 crashes before its own copy was durable: n2 and n3 hold the write, n1 does not.
    sim.crash("n1");
    nodes[0].storage.delete(Tree::Data, b"k").expect("drop n1's copy");
    sim.bounce("n1");
    sim.client("after", async {
        until("n1 sees n2 and n3 up", CONVERGE, || async { sees("n1", "n2", "up").await && sees("n1", "n3", "up").await }).await?;
        client(&["n1"]).put(b"k", b"new", None, Options::level(Level::All)).await?;
        for via in ["n1", "n2", "n3"] {
            let got = client(&[via]).get(b"k", Options::level(Level::All)).await?;
            assert_eq!(values(&got), [b"new".as_slice()], "read at ALL through {via}");
        }
        Ok(())
    });
    run(sim, seed);
}

// ---- anti-entropy ----

/// Keys whose tokens n1 takes as its own, so they sit exactly on range ends.
fn edge_keys() -> Vec<String> {
    (0..16).map(|i| format!("edge-{i}")).collect()
}

/// Anti-entropy tests run without hints, so only repair can heal.
fn no_hints(_: usize, cfg: &mut ringkv_node::Config) {
    cfg.hinted_handoff = false;
}

fn with_edge_tokens(i: usize, cfg: &mut ringkv_node::Config) {
    no_hints(i, cfg);
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
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, no_hints);
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
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |i, cfg| {
        no_hints(i, cfg);
        cfg.tombstone_grace = Duration::ZERO;
    });
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

/// Live values of `key` in a QUORUM scan through `via` (which asks every node).
async fn scanned(via: &str, key: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let r = client(&[via]).scan(key.as_bytes(), b"", 100, Options::level(Level::Quorum)).await?;
    Ok(r.entries
        .iter()
        .filter(|e| e.key == key.as_bytes())
        .flat_map(|e| e.siblings.iter().filter(|s| !s.tombstone).map(|s| String::from_utf8_lossy(&s.value).into_owned()))
        .collect())
}

#[test]
fn a_purged_delete_never_comes_back_from_a_node_a_join_moved_the_range_away_from() {
    let seed = seed(0x5eed_0013);
    let mut sim = builder(seed).build();
    const GRACE_S: u64 = 3;
    let short = |_: usize, cfg: &mut ringkv_node::Config| {
        cfg.tombstone_grace = Duration::from_secs(GRACE_S);
        // `validate` wants hints to expire before tombstones may be purged.
        cfg.max_hint_window = Duration::from_secs(GRACE_S - 1);
        // Well inside the grace: the old replica drops its copy before the tombstone goes.
        cfg.cleanup_delay = Duration::from_secs(1);
    };
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, short);
    let mut cfg4 = ringkv_tests::sim::config(4, seed);
    short(4, &mut cfg4);
    ringkv_tests::sim::add_node(&mut sim, cfg4, Duration::from_secs(12));
    sim.client("operator", async move {
        cluster_ready().await?;
        let c = client(&["n1"]);
        c.put(b"doomed", b"alive", None, Options::level(Level::All)).await?;
        for node in ["n1", "n2", "n3"] {
            until(&format!("{node} sees n4 joined"), Duration::from_secs(60), || sees(node, "n4", "up")).await?;
        }
        // The join moved the key away from one of n1..n3: that is C.
        let owners = replicas("n1", "doomed").await?;
        let moved_from = ["n1", "n2", "n3"].into_iter().find(|n| !owners.iter().any(|o| o == n)).expect("n4 took one replica");
        assert!(owners.contains(&"n4".to_string()), "{owners:?}");

        c.delete(b"doomed", None, Options::level(Level::All)).await?;
        until("the tombstone is purged on every owner after the grace", Duration::from_secs(4 * GRACE_S), || async {
            ringkv_tests::sim::repair(&owners[0]).await.is_ok()
                && c.inspect(b"doomed").await.is_ok_and(|r| r.replicas.iter().all(|v| v.reachable && !v.present))
        })
        .await?;
        assert_eq!(scanned("n1", "doomed").await?, Vec::<String>::new(), "a scan brought the deleted value back from {moved_from}");
        assert!(values(&c.get(b"doomed", Options::level(Level::All)).await?).is_empty());

        // The joiner leaves: the range goes back to C, and repair runs everywhere.
        ringkv_tests::sim::admin("n4").decommission(ringkv_client::pb::DecommissionRequest {}).await?;
        for node in ["n1", "n2", "n3"] {
            until(&format!("{node} sees n4 left"), CONVERGE, || state_is(node, "n4", "left")).await?;
        }
        for node in ["n1", "n2", "n3"] {
            let report = ringkv_tests::sim::repair(node).await?;
            assert!(report.errors.is_empty(), "{node}: {:?}", report.errors);
        }
        let got = c.get(b"doomed", Options::level(Level::All)).await?;
        assert!(values(&got).is_empty(), "repair copied the deleted value back from {moved_from}: {:?}", values(&got));
        assert_eq!(scanned("n1", "doomed").await?, Vec::<String>::new());
        // C already dropped what it does not replicate, and now owns the key again.
        let again = ringkv_tests::sim::admin(moved_from).cleanup(ringkv_client::pb::CleanupRequest {}).await?.into_inner();
        assert_eq!(again.keys_removed, 0, "{again:?}");
        Ok(())
    });
    run(sim, seed);
}

// ---- membership ----

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The documented detection bound (membership/detector.rs) for the
/// simulation's settings: a round for the last heartbeat to spread, then
/// μ + pause + 5.61·σ' of silence, then a round for the check, plus the
/// 100 ms polling step.
fn detection_bound() -> Duration {
    let cfg = ringkv_tests::sim::config(1, 0);
    let interval = cfg.gossip_interval.as_millis() as f64;
    let ms = interval + interval + cfg.heartbeat_pause.as_millis() as f64 + 5.61 * interval / 4.0 + interval + 100.0;
    Duration::from_millis(ms as u64)
}

#[test]
fn crashed_node_is_marked_down_on_every_survivor_within_the_bound_and_up_after_restart() {
    let seed = seed(0x5eed_0020);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    let ready = Arc::new(AtomicBool::new(false));
    let detected_ms = Arc::new(AtomicU64::new(0));
    let (r, d) = (ready.clone(), detected_ms.clone());
    sim.client("observer", async move {
        cluster_ready().await?;
        r.store(true, Ordering::SeqCst);
        until("n1 and n2 see n3 down", CONVERGE, || async { sees("n1", "n3", "down").await && sees("n2", "n3", "down").await }).await?;
        d.store(turmoil::sim_elapsed().unwrap().as_millis() as u64, Ordering::SeqCst);
        until("n1 and n2 see n3 up again", CONVERGE, || async { sees("n1", "n3", "up").await && sees("n2", "n3", "up").await }).await?;
        Ok(())
    });
    while !ready.load(Ordering::SeqCst) {
        sim.step().expect("step");
    }
    let crashed_at = sim.elapsed();
    sim.crash("n3");
    while detected_ms.load(Ordering::SeqCst) == 0 {
        sim.step().unwrap_or_else(|e| panic!("{e}\nrerun: RINGKV_SIM_SEED={seed}"));
    }
    let took = Duration::from_millis(detected_ms.load(Ordering::SeqCst)) - crashed_at;
    eprintln!("crash detected on every survivor after {took:?} (bound {:?})", detection_bound());
    assert!(took <= detection_bound(), "detected after {took:?}, bound {:?}; rerun: RINGKV_SIM_SEED={seed}", detection_bound());
    sim.bounce("n3");
    run(sim, seed);
}

#[test]
fn heavy_latency_jitter_causes_no_up_down_flapping() {
    let seed = seed(0x5eed_0021);
    let mut b = builder(seed);
    b.min_message_latency(Duration::from_millis(0)).max_message_latency(Duration::from_millis(300));
    let mut sim = b.build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |_, cfg| cfg.peer_timeout = Duration::from_secs(2));
    sim.client("observer", async {
        cluster_ready().await?;
        let started = tokio::time::Instant::now();
        let mut samples = 0;
        while started.elapsed() < Duration::from_secs(60) {
            for (observer, peer) in [("n1", "n2"), ("n1", "n3"), ("n2", "n3"), ("n3", "n1")] {
                let s = client(&[observer]).status().await?;
                let n = s.nodes.iter().find(|n| n.id == peer).unwrap();
                assert_eq!(n.liveness, "up", "{observer} saw {peer} down (phi {:.2}) after {:?}", n.phi, started.elapsed());
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Each status call crosses the jittery links, so a round of four
        // samples takes about a second: 60 s gives well over 100.
        assert!(samples >= 100, "{samples} samples");
        Ok(())
    });
    run(sim, seed);
}

/// A writer that puts fresh keys at QUORUM until told to stop, recording
/// the acknowledged ones, while a reader checks acknowledged keys at QUORUM.
async fn write_and_check_until(stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) -> Result<usize, Box<dyn std::error::Error>> {
    let c = client(&["n1", "n2"]);
    let mut i = 0;
    let mut checked = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("load-{i:05}");
        i += 1;
        if c.put(key.as_bytes(), key.as_bytes(), None, Options::level(Level::Quorum)).await.is_ok() {
            acked.lock().unwrap().push(key);
        }
        // Read back an older acknowledged key: it must never be missing.
        let probe = { acked.lock().unwrap().get(i / 2).cloned() };
        if let Some(k) = probe {
            let got = c.get(k.as_bytes(), Options::level(Level::Quorum)).await?;
            assert!(got.siblings.iter().any(|s| s.value == k.as_bytes()), "{k} unreadable at QUORUM mid-change");
            checked += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(checked)
}

async fn all_readable(acked: &Mutex<Vec<String>>, level: Level) -> Result<usize, Box<dyn std::error::Error>> {
    let keys = acked.lock().unwrap().clone();
    let c = client(&["n1"]);
    for k in &keys {
        let got = c.get(k.as_bytes(), Options::level(level)).await?;
        assert!(got.siblings.iter().any(|s| s.value == k.as_bytes()), "{k} lost");
    }
    Ok(keys.len())
}

#[test]
fn join_with_data_under_write_load_loses_no_quorum_write() {
    let seed = seed(0x5eed_0022);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    ringkv_tests::sim::add_node(&mut sim, ringkv_tests::sim::config(4, seed), Duration::from_secs(12));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (s2, a2) = (stop.clone(), acked.clone());
    sim.client("writer", async move {
        cluster_ready().await?;
        write_and_check_until(s2, a2).await?;
        Ok(())
    });
    sim.client("operator", async move {
        cluster_ready().await?;
        let state_of_n4 = || async {
            client(&["n1"])
                .status()
                .await
                .ok()
                .and_then(|s| s.nodes.into_iter().find(|n| n.id == "n4"))
                .map(|n| n.state)
                .unwrap_or_default()
        };
        until("n4 announces its join", Duration::from_secs(60), || async { state_of_n4().await == "joining" }).await?;
        let before = acked.lock().unwrap().len();
        until("n4 joins as normal", Duration::from_secs(60), || sees("n1", "n4", "up")).await?;
        let during = acked.lock().unwrap().len() - before;
        assert!(during > 0, "writes were acknowledged while n4 was joining");
        // Keep writing a little after the join, then stop and check everything.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = all_readable(&acked, Level::Quorum).await?;
        let ring = client(&["n1"]).ring().await?;
        assert_eq!(ring.owners.len(), 4);
        assert!(ring.skew <= 1.10, "skew {}", ring.skew);
        let n4 = client(&["n4"]).status().await?;
        assert!(n4.local_keys > (n as u64) / 2, "n4 streamed its share: {} of {n}", n4.local_keys);
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn decommission_under_write_load_loses_no_write() {
    let seed = seed(0x5eed_0023);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 4, seed);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (s2, a2) = (stop.clone(), acked.clone());
    sim.client("writer", async move {
        until("4 nodes up", CONVERGE, || async { sees("n1", "n4", "up").await && sees("n4", "n3", "up").await }).await?;
        write_and_check_until(s2, a2).await?;
        Ok(())
    });
    sim.client("operator", async move {
        until("4 nodes up", CONVERGE, || async { sees("n1", "n4", "up").await && sees("n4", "n3", "up").await }).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r = ringkv_tests::sim::admin("n4").decommission(ringkv_client::pb::DecommissionRequest {}).await?.into_inner();
        assert!(r.keys_streamed > 0, "{r:?}");
        until("n1 sees n4 left", CONVERGE, || async {
            client(&["n1"]).status().await.is_ok_and(|s| s.nodes.iter().any(|n| n.id == "n4" && n.state == "left"))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        all_readable(&acked, Level::All).await?;
        assert_eq!(client(&["n1"]).ring().await?.owners.len(), 3);
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn sixty_four_nodes_converge_in_a_few_gossip_rounds() {
    let seed = seed(0x5eed_0024);
    let mut b = builder(seed);
    // Short, even links, so that the count is of gossip rounds, not of latency.
    b.simulation_duration(Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2));
    let mut sim = b.build();
    const N: usize = 64;
    for i in 1..=N {
        let mut cfg = ringkv_tests::sim::config(i, seed);
        // Fixed, distinct tokens, so all 64 can start at once.
        cfg.initial_tokens = (0..4).map(|v| ((v * N + i) as u64) << 52).collect();
        cfg.anti_entropy_interval = Duration::ZERO;
        ringkv_tests::sim::add_node(&mut sim, cfg, Duration::ZERO);
    }
    sim.client("observer", async {
        let interval = ringkv_tests::sim::config(1, 0).gossip_interval.as_millis();
        let started = tokio::time::Instant::now();
        let mut pending: Vec<usize> = (1..=N).collect();
        while !pending.is_empty() {
            let views = futures::future::join_all(
                pending.iter().map(|i| async move { (*i, client(&[&format!("n{i}")]).status().await.map_or(0, |s| s.nodes.len())) }),
            )
            .await;
            pending = views.into_iter().filter(|(_, knows)| *knows < N).map(|(i, _)| i).collect();
            assert!(started.elapsed() < Duration::from_secs(30), "{} nodes still lack a full view", pending.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rounds = started.elapsed().as_millis() as f64 / interval as f64;
        eprintln!("64 nodes: every node knows every member after {rounds:.1} gossip rounds (log2(64) = 6)");
        assert!(rounds <= 12.0, "{rounds} rounds");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn partitioned_node_comes_back_up_after_the_partition_heals() {
    let seed = seed(0x5eed_0025);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        until("n2 sees n3 down too", CONVERGE, || sees("n2", "n3", "down")).await?;
        heal_n3().await?;
        until("n2 sees n3 up", CONVERGE, || sees("n2", "n3", "up")).await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn removenode_drops_a_dead_node_and_repair_re_replicates_its_ranges() {
    let seed = seed(0x5eed_0026);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 4, seed);
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    sim.client("writer", async move {
        until("4 nodes up", CONVERGE, || async { sees("n1", "n4", "up").await && sees("n4", "n3", "up").await }).await?;
        let c = client(&["n1"]);
        for i in 0..200 {
            c.put(format!("r{i}").as_bytes(), b"v", None, Options::level(Level::All)).await?;
        }
        r.store(true, Ordering::SeqCst);
        Ok(())
    });
    while !ready.load(Ordering::SeqCst) {
        sim.step().expect("step");
    }
    sim.crash("n4");
    sim.client("operator", async {
        until("n1 sees n4 down", CONVERGE, || sees("n1", "n4", "down")).await?;
        ringkv_tests::sim::admin("n1").remove_node(ringkv_client::pb::RemoveNodeRequest { id: "n4".into() }).await?;
        until("n3 learns n4 left", CONVERGE, || async { client(&["n3"]).ring().await.is_ok_and(|r| r.owners.len() == 3) }).await?;
        for node in ["n1", "n2", "n3"] {
            let report = ringkv_tests::sim::repair(node).await?;
            assert!(report.errors.is_empty(), "{node}: {:?}", report.errors);
        }
        // Every key now has its three replicas among n1..n3.
        let c = client(&["n1"]);
        for i in 0..200 {
            let r = c.inspect(format!("r{i}").as_bytes()).await?;
            assert!(r.replicas.iter().all(|v| v.present && v.node != "n4"), "r{i}: {r:?}");
            assert_eq!(r.replicas.len(), 3);
        }
        Ok(())
    });
    run(sim, seed);
}

/// The replicas `coordinator`'s ring names for `key`.
async fn replicas(coordinator: &str, key: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(client(&[coordinator]).inspect(key.as_bytes()).await?.replicas.into_iter().map(|r| r.node).collect())
}

/// True when `observer` sees `node` in state `state`.
async fn state_is(observer: &str, node: &str, state: &str) -> bool {
    client(&[observer]).status().await.is_ok_and(|s| s.nodes.iter().any(|n| n.id == node && n.state == state))
}

/// Steps `sim` until `flag` is set.
fn step_until(sim: &mut turmoil::Sim<'_>, flag: &AtomicBool, seed: u64) {
    while !flag.load(Ordering::SeqCst) {
        if let Err(e) = sim.step() {
            panic!("simulation failed: {e}\nrerun: RINGKV_SIM_SEED={seed}");
        }
    }
}

/// The key under test, its replicas with n4 in the ring, and without it.
type RemovalPlan = (String, Vec<String>, Vec<String>);

#[test]
fn a_removed_node_restarted_on_its_old_data_stays_out_and_stops() {
    let seed = seed(0x5eed_0027);
    let mut sim = builder(seed).build();
    // No hints: only the writes themselves place data, so the replica sets decide.
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, no_hints);
    let mut cfg4 = ringkv_tests::sim::config(4, seed);
    no_hints(4, &mut cfg4);
    let (_, stops) = ringkv_tests::sim::add_node_expecting_stops(&mut sim, cfg4, Duration::from_secs(3));
    let plan: Arc<Mutex<RemovalPlan>> = Arc::default();
    let (written, removed, checked) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));

    let (p, w) = (plan.clone(), written.clone());
    sim.client("writer", async move {
        until("4 nodes up", CONVERGE, || async { sees("n1", "n4", "up").await && sees("n4", "n3", "up").await }).await?;
        let c = client(&["n1"]);
        for i in 0..20 {
            c.put(format!("k{i}").as_bytes(), b"v1", None, Options::level(Level::All)).await?;
        }
        for i in 0..20 {
            let key = format!("k{i}");
            let old = replicas("n1", &key).await?;
            if old.iter().any(|r| r == "n4") {
                p.lock().unwrap().0 = key;
                p.lock().unwrap().1 = old;
                break;
            }
        }
        w.store(true, Ordering::SeqCst);
        Ok(())
    });
    step_until(&mut sim, &written, seed);
    sim.crash("n4");

    let (p, r) = (plan.clone(), removed.clone());
    sim.client("operator", async move {
        until("n1 sees n4 down", CONVERGE, || sees("n1", "n4", "down")).await?;
        ringkv_tests::sim::admin("n1").remove_node(ringkv_client::pb::RemoveNodeRequest { id: "n4".into() }).await?;
        for node in ["n1", "n2", "n3"] {
            until(&format!("{node} learns n4 left"), CONVERGE, || state_is(node, "n4", "left")).await?;
        }
        let (key, old) = {
            let p = p.lock().unwrap();
            (p.0.clone(), p.1.clone())
        };
        let new = replicas("n1", &key).await?;
        assert!(!new.contains(&"n4".to_string()), "{new:?}");
        // `a` and `b` stay replicas; `c` took over from n4.
        let kept: Vec<&String> = new.iter().filter(|n| old.contains(n)).collect();
        let (a, b) = (kept[1].clone(), kept[0].clone());
        // A write acknowledged by a and c only: b is cut off.
        for other in ["n1", "n2", "n3"].into_iter().filter(|n| *n != b) {
            turmoil::partition(b.as_str(), other);
        }
        until("a sees b down", CONVERGE, || sees(&a, &b, "down")).await?;
        let put = client(&[&a]).put(key.as_bytes(), b"v2", None, Options::level(Level::Quorum)).await?;
        assert_eq!(put.receipt.unwrap().acked, 2, "acknowledged by a and c");
        for other in ["n1", "n2", "n3"].into_iter().filter(|n| *n != b) {
            turmoil::repair(b.as_str(), other);
        }
        until("a sees b up", CONVERGE, || sees(&a, &b, "up")).await?;
        p.lock().unwrap().2 = new;
        r.store(true, Ordering::SeqCst);
        Ok(())
    });
    step_until(&mut sim, &removed, seed);
    // systemd restarts the removed node on its old data dir.
    sim.bounce("n4");

    let (p, st, ch) = (plan.clone(), stops.clone(), checked.clone());
    sim.client("after", async move {
        let (key, old, new) = p.lock().unwrap().clone();
        let kept: Vec<&String> = new.iter().filter(|n| old.contains(n)).collect();
        let (a, b) = (kept[1].clone(), kept[0].clone());
        until("n4 has stopped, or is back in the ring", CONVERGE, || async {
            !st.lock().unwrap().is_empty() || sees("n1", "n4", "up").await
        })
        .await?;
        // Cut a off: a QUORUM read through b must still find v2, on c.
        for other in ["n1", "n2", "n3", "n4"].into_iter().filter(|n| *n != a) {
            turmoil::partition(a.as_str(), other);
        }
        until("b sees a down", CONVERGE, || sees(&b, &a, "down")).await?;
        let got = client(&[&b]).get(key.as_bytes(), Options::level(Level::Quorum)).await?;
        let asked: Vec<&str> = got.receipt.as_ref().unwrap().replicas.iter().map(|r| r.node.as_str()).collect();
        let read: Vec<String> = values(&got).iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        assert_eq!(read, vec!["v2"], "a QUORUM read through {b} missed an acknowledged write (asked {asked:?})");
        for other in ["n1", "n2", "n3", "n4"].into_iter().filter(|n| *n != a) {
            turmoil::repair(a.as_str(), other);
        }
        // n4 is in no ring and no preference list, and refuses to serve.
        for node in ["n1", "n2", "n3"] {
            let ring = client(&[node]).ring().await?;
            assert!(ring.owners.iter().all(|o| o.node != "n4") && ring.tokens.iter().all(|t| t.node != "n4"), "{node}: {ring:?}");
            assert!(state_is(node, "n4", "left").await, "{node} sees n4 left");
            for i in 0..20 {
                assert!(!replicas(node, &format!("k{i}")).await?.contains(&"n4".to_string()), "{node}: k{i}");
            }
        }
        assert!(client(&["n4"]).get(key.as_bytes(), Options::level(Level::One)).await.is_err(), "n4 serves no reads");
        assert!(client(&["n4"]).put(b"new", b"x", None, Options::level(Level::One)).await.is_err(), "n4 takes no writes");
        let stopped = st.lock().unwrap().clone();
        assert!(stopped.len() == 1 && stopped[0].contains("removed") && stopped[0].contains("new --id"), "{stopped:?}");
        ch.store(true, Ordering::SeqCst);
        Ok(())
    });
    step_until(&mut sim, &checked, seed);
    // Restarted again, it refuses to start at all.
    sim.bounce("n4");
    sim.client("again", async move {
        until("n4 refuses to start", CONVERGE, || async { stops.lock().unwrap().len() == 2 }).await?;
        let stopped = stops.lock().unwrap().clone();
        assert!(stopped[1].contains("was removed") && stopped[1].contains("fresh --data-dir"), "{stopped:?}");
        assert!(client(&["n1"]).ring().await?.owners.iter().all(|o| o.node != "n4"));
        Ok(())
    });
    run(sim, seed);
}

// ---- failover ----

async fn local_keys(node: &str) -> u64 {
    client(&[node]).status().await.map_or(0, |s| s.local_keys)
}

async fn hints_pending(node: &str) -> Result<(u64, ringkv_client::pb::HintsResponse), tonic::Status> {
    let h = ringkv_tests::sim::admin(node).hints(ringkv_client::pb::HintsRequest {}).await?.into_inner();
    Ok((h.targets.iter().map(|t| t.count).sum(), h))
}

#[test]
fn hint_replay_alone_delivers_every_write_a_partitioned_replica_missed() {
    let seed = seed(0x5eed_0030);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        let c = client(&["n1", "n2"]);
        for i in 0..100 {
            let r = c.put(format!("h{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
            assert!(r.receipt.unwrap().hints_stored, "h{i}: the receipt says a hint was kept for n3");
        }
        assert_eq!(local_keys("n3").await, 0);
        heal_n3().await?;
        // Anti-entropy is off and nothing reads: only hints can deliver.
        until("n3 holds all 100 writes", CONVERGE, || async { local_keys("n3").await == 100 }).await?;
        until("no hints pending", CONVERGE, || async { hints_pending("n1").await.is_ok_and(|h| h.0 == 0) }).await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn replica_down_longer_than_the_hint_window_gets_no_hints() {
    let seed = seed(0x5eed_0031);
    let mut sim = builder(seed).build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |_, cfg| cfg.max_hint_window = Duration::from_secs(2));
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c = client(&["n1"]);
        for i in 0..50 {
            c.put(format!("w{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
        }
        let (pending, h) = hints_pending("n1").await?;
        assert_eq!(pending, 0, "{h:?}");
        assert!(h.dropped_window >= 50, "{h:?}");
        heal_n3().await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(local_keys("n3").await, 0, "nothing was hinted, so nothing was replayed");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn hints_older_than_the_window_are_dropped_not_replayed() {
    let seed = seed(0x5eed_0037);
    let mut sim = builder(seed).build();
    // Longer than detection (about 5 s here) plus the time the 50 writes
    // take, so every write is hinted: a target silent for longer than the
    // window gets no new hints.
    const WINDOW_S: u64 = 20;
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |_, cfg| cfg.max_hint_window = Duration::from_secs(WINDOW_S));
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        let c = client(&["n1"]);
        let puts = (0..50).map(|i| {
            let c = c.clone();
            async move { (i, c.put(format!("x{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await) }
        });
        for (i, r) in futures::future::join_all(puts).await {
            assert!(r?.receipt.unwrap().hints_stored, "x{i} was hinted for n3");
        }
        assert_eq!(hints_pending("n1").await?.0, 50);
        // Every hint was stored before its write was acknowledged.
        let written = tokio::time::Instant::now();
        until("the newest hint is past the window", Duration::from_secs(2 * WINDOW_S), || async move {
            written.elapsed() > Duration::from_millis(WINDOW_S * 1000 + 500)
        })
        .await?;
        heal_n3().await?;
        until("no hints pending on n1", CONVERGE, || async { hints_pending("n1").await.is_ok_and(|h| h.0 == 0) }).await?;
        assert_eq!(local_keys("n3").await, 0, "expired hints were replayed to n3");
        let (_, h) = hints_pending("n1").await?;
        assert_eq!((h.expired, h.replayed), (50, 0), "every hint dropped and counted: {h:?}");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn hints_survive_a_crash_of_their_holder() {
    let seed = seed(0x5eed_0032);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    let written = Arc::new(AtomicBool::new(false));
    let w = written.clone();
    sim.client("writer", async move {
        cluster_ready().await?;
        isolate_n3().await?;
        let c = client(&["n1"]);
        for i in 0..50 {
            c.put(format!("c{i}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
        }
        assert_eq!(hints_pending("n1").await?.0, 50);
        w.store(true, Ordering::SeqCst);
        Ok(())
    });
    while !written.load(Ordering::SeqCst) {
        sim.step().expect("step");
    }
    sim.bounce("n1");
    sim.client("after", async {
        until("n1 is back", CONVERGE, || sees("n1", "n2", "up")).await?;
        assert_eq!(hints_pending("n1").await?.0, 50, "hints were persisted");
        heal_n3().await?;
        until("n3 holds all 50 writes", CONVERGE, || async { local_keys("n3").await == 50 }).await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn sloppy_quorum_keeps_writes_available_with_two_replicas_down_and_hands_them_back() {
    let seed = seed(0x5eed_0033);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 5, seed);
    let ready = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicBool::new(false));
    let sloppy_keys = Arc::new(Mutex::new(Vec::new()));
    let (r, w, k) = (ready.clone(), written.clone(), sloppy_keys.clone());
    sim.client("before", async move {
        until("5 nodes up", CONVERGE, || async { sees("n1", "n5", "up").await && sees("n5", "n1", "up").await }).await?;
        r.store(true, Ordering::SeqCst);
        Ok(())
    });
    while !ready.load(Ordering::SeqCst) {
        sim.step().expect("step");
    }
    sim.crash("n4");
    sim.crash("n5");
    sim.client("writer", async move {
        until("n1 sees n4 and n5 down", CONVERGE, || async { sees("n1", "n4", "down").await && sees("n1", "n5", "down").await }).await?;
        let c = client(&["n1", "n2", "n3"]);
        for i in 0..60 {
            let key = format!("s{i}");
            match c.put(key.as_bytes(), b"v", None, Options::level(Level::Quorum)).await {
                Ok(_) => {}
                Err(ringkv_client::Error::Unavailable { .. }) => {
                    let r = c.put(key.as_bytes(), b"v", None, Options { level: Level::Quorum, sloppy: true, ..Default::default() }).await?;
                    let receipt = r.receipt.unwrap();
                    assert!(receipt.replicas.iter().any(|x| !x.stand_in_for.is_empty()), "{key}: stand-ins named in {receipt:?}");
                    k.lock().unwrap().push(key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        assert!(!k.lock().unwrap().is_empty(), "some keys had two of three replicas among n4, n5");
        w.store(true, Ordering::SeqCst);
        Ok(())
    });
    while !written.load(Ordering::SeqCst) {
        sim.step().expect("step");
    }
    sim.bounce("n4");
    sim.bounce("n5");
    sim.client("after", async move {
        until("n4 and n5 back", CONVERGE, || async { sees("n1", "n4", "up").await && sees("n1", "n5", "up").await }).await?;
        let keys = sloppy_keys.lock().unwrap().clone();
        let c = client(&["n1"]);
        until("owners hold every sloppy write", CONVERGE, || async {
            for key in &keys {
                let r = c.inspect(key.as_bytes()).await.unwrap();
                if !r.replicas.iter().all(|v| v.present) {
                    return false;
                }
            }
            true
        })
        .await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn speculative_retry_masks_a_slow_replica() {
    let seed = seed(0x5eed_0034);
    // Short, even links, so the injected delay is the only slow path.
    let mut b = builder(seed);
    b.min_message_latency(Duration::from_millis(1)).max_message_latency(Duration::from_millis(2));
    let mut sim = b.build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        for i in 0..20 {
            c.put(format!("r{i}").as_bytes(), b"v", None, Options::level(Level::All)).await?;
        }
        // Every message from n1 to n2 now waits 300 ms.
        let rule = ringkv_client::pb::FaultRule { peer: "n2".into(), delay_ms: 300, ..Default::default() };
        ringkv_tests::sim::admin("n1").set_fault(ringkv_client::pb::SetFaultRequest { rules: vec![rule], clear: true }).await?;
        let mut latencies = Vec::new();
        let mut speculated = 0;
        for round in 0..10 {
            for i in 0..20 {
                let r = c.get(format!("r{i}").as_bytes(), Options::level(Level::Quorum)).await?;
                let receipt = r.receipt.unwrap();
                speculated += receipt.replicas.iter().filter(|x| x.speculative).count();
                if round > 0 {
                    latencies.push(receipt.latency_us);
                }
            }
        }
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        eprintln!("QUORUM read p99 with one replica slowed by 300 ms: {:.1} ms; {speculated} speculative retries", p99 as f64 / 1000.0);
        assert!(p99 < 50_000, "p99 {p99} us should be far below the slow replica's 300 ms");
        assert!(speculated > 0, "speculation was used");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn any_succeeds_through_a_hint_when_the_only_replica_is_down() {
    let seed = seed(0x5eed_0035);
    let mut sim = builder(seed).build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, |_, cfg| cfg.replication_factor = 1);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        // A key whose single replica is n3.
        let mut key = String::new();
        for i in 0.. {
            key = format!("any-{i}");
            if c.inspect(key.as_bytes()).await?.replicas[0].node == "n3" {
                break;
            }
        }
        isolate_n3().await?;
        match c.put(key.as_bytes(), b"v", None, Options::level(Level::One)).await {
            Err(ringkv_client::Error::Unavailable { .. }) => {}
            other => panic!("ONE with the only replica down: {other:?}"),
        }
        let r = c.put(key.as_bytes(), b"v", None, Options::level(Level::Any)).await?;
        let receipt = r.receipt.unwrap();
        assert!(receipt.hints_stored && receipt.acked == 1, "{receipt:?}");
        heal_n3().await?;
        until("the hint reaches n3", CONVERGE, || async {
            c.get(key.as_bytes(), Options::level(Level::One)).await.is_ok_and(|g| g.siblings.iter().any(|s| s.value == b"v"))
        })
        .await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn the_coordinator_never_waits_past_the_deadline() {
    let seed = seed(0x5eed_0036);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        // Cut n3 off without waiting: n1 still believes it is up and sends to it.
        turmoil::partition("n3", "n1");
        turmoil::partition("n3", "n2");
        let c = client(&["n1"]);
        let started = tokio::time::Instant::now();
        let r = c
            .put(b"late", b"v", None, Options { level: Level::All, timeout: Some(Duration::from_millis(300)), ..Default::default() })
            .await;
        let took = started.elapsed();
        assert!(
            matches!(r, Err(ringkv_client::Error::Indeterminate { .. })),
            "a write stored on n1 and n2 but not acknowledged at ALL: {r:?}"
        );
        assert!(took < Duration::from_millis(400), "answered after {took:?}, deadline 300 ms");
        Ok(())
    });
    run(sim, seed);
}

// ---- randomized nemesis sweep ----

/// Seeds swept by default in CI; `RINGKV_SIM_SEEDS=1000` sweeps more, and
/// `RINGKV_SIM_SEED=s` reruns one.
const SWEEP_SEEDS: u64 = 50;
/// Simulated seconds of faults per seed; `RINGKV_SIM_FAULT_SECS=300` runs
/// five minutes of them.
fn sweep_fault_secs() -> u64 {
    std::env::var("RINGKV_SIM_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// Runs the named test of this binary in a fresh process with `env`, and
/// returns its stdout (the line the child printed after `marker`).
fn child(test: &str, env: (&str, String), marker: &str) -> Result<String, String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .output()
        .expect("rerun the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    stdout.lines().find_map(|l| l.split(marker).nth(1).map(|d| d.trim().to_string())).ok_or(stdout)
}

/// The sweep. Each seed runs in a fresh process (two at a time), exactly
/// as `RINGKV_SIM_SEED=s` reruns it, so a failing seed reproduces.
#[test]
fn randomized_nemesis_sweep_keeps_every_invariant() {
    if let Some(seed) = std::env::var("RINGKV_SWEEP_CHILD").ok().and_then(|s| s.parse::<u64>().ok()) {
        let r = ringkv_tests::sweep::run_sweep(seed, sweep_fault_secs());
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {} violations, first {:?}\nfaults: {:?}\n{}\ndigest {}\nrerun: RINGKV_SIM_SEED={seed}",
            r.violations.len(),
            &r.violations[..r.violations.len().min(5)],
            r.faults,
            ringkv_tests::sweep::describe(&r),
            r.digest
        );
        println!("SWEEP={} {}", r.simulated_secs, r.digest);
        return;
    }
    let seeds: Vec<u64> = match std::env::var("RINGKV_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("RINGKV_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("RINGKV_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SWEEP_SEEDS);
            (0..n).map(|i| 0x5ee9_0000 + i).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut simulated = 0.0;
    for pair in seeds.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|&seed| {
                std::thread::spawn(move || {
                    (seed, child("randomized_nemesis_sweep_keeps_every_invariant", ("RINGKV_SWEEP_CHILD", seed.to_string()), "SWEEP="))
                })
            })
            .collect();
        for run in runs {
            let (seed, result) = run.join().unwrap();
            match result {
                Ok(line) => simulated += line.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0),
                Err(output) => panic!("seed {seed} failed:\n{output}\nrerun: RINGKV_SIM_SEED={seed}"),
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!("swept {} seeds: {simulated:.0} simulated s in {wall:.1} wall s ({:.1}x)", seeds.len(), simulated / wall);
}

/// Two runs of one seed, each in a fresh process (as a rerun from the
/// printed seed is), record the same history. Within one process, later
/// runs start from other per-thread `HashMap` hash keys, which libraries
/// underneath may iterate, so each run gets its own process.
#[test]
fn one_seed_replays_the_same_history() {
    const SEED: u64 = 0x5ee9_d1d1;
    if std::env::var_os("RINGKV_DIGEST_CHILD").is_some() {
        let r = ringkv_tests::sweep::run_sweep(SEED, 10);
        assert!(r.history.ops.len() > 50, "{}", ringkv_tests::sweep::describe(&r));
        println!("DIGEST={}", r.digest);
        return;
    }
    let run =
        || child("one_seed_replays_the_same_history", ("RINGKV_DIGEST_CHILD", "1".into()), "DIGEST=").unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (run(), run());
    assert_eq!(a, b, "the same seed gave different histories");
}

// ---- named fault scenarios (the nemesis with one fault kind, then the checkers) ----

fn scenario(seed: u64, kind: usize) {
    let seed = self::seed(seed);
    let r = ringkv_tests::sweep::run_nemesis(seed, 20, Some(kind));
    assert!(!r.faults.is_empty(), "no fault was injected");
    assert!(r.violations.is_empty(), "{:?}\nfaults {:?}\nrerun: RINGKV_SIM_SEED={seed}", r.violations, r.faults);
}

#[test]
fn isolated_nodes_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0040, 0);
}

#[test]
fn minority_majority_splits_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0041, 1);
}

#[test]
fn majorities_ring_loses_no_acknowledged_quorum_write() {
    scenario(0x5eed_0042, 2);
}

#[test]
fn one_way_partitions_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0043, 3);
}

#[test]
fn held_and_released_messages_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0044, 4);
}

#[test]
fn crash_restart_with_group_durability_loses_no_acknowledged_quorum_write() {
    scenario(0x5eed_0045, 5);
}

#[test]
fn minority_side_refuses_quorum_but_serves_one() {
    let seed = seed(0x5eed_0046);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        isolate_n3().await?;
        until("n3 sees n1 and n2 down", CONVERGE, || async { sees("n3", "n1", "down").await && sees("n3", "n2", "down").await }).await?;
        let minority = client(&["n3"]);
        assert!(matches!(
            minority.put(b"m", b"v", None, Options::level(Level::Quorum)).await,
            Err(ringkv_client::Error::Unavailable { .. })
        ));
        assert!(matches!(minority.get(b"m", Options::level(Level::Quorum)).await, Err(ringkv_client::Error::Unavailable { .. })));
        minority.put(b"m", b"v", None, Options::level(Level::One)).await?;
        assert_eq!(minority.get(b"m", Options::level(Level::One)).await?.siblings[0].value, b"v");
        client(&["n1"]).put(b"m2", b"w", None, Options::level(Level::Quorum)).await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn retry_after_a_lost_ack_is_idempotent() {
    let seed = seed(0x5eed_0047);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        // n2's replies to n1 are lost: n2 stores the write but n1 never hears.
        turmoil::partition_oneway("n2", "n1");
        let c = client(&["n1"]);
        let opts = Options { level: Level::All, timeout: Some(Duration::from_millis(400)), ..Default::default() };
        let first = c.put(b"once", b"v", None, opts).await;
        assert!(matches!(first, Err(ringkv_client::Error::Indeterminate { .. })), "{first:?}");
        turmoil::repair_oneway("n2", "n1");
        until("n1 sees n2 up", CONVERGE, || sees("n1", "n2", "up")).await?;
        // The client retries the same blind write until it is acknowledged:
        // one value results, not two.
        until("the retry is acknowledged", CONVERGE, || async { c.put(b"once", b"v", None, Options::level(Level::All)).await.is_ok() })
            .await?;
        let r = c.inspect(b"once").await?;
        for v in &r.replicas {
            let live: Vec<&[u8]> = v.siblings.iter().filter(|s| !s.tombstone).map(|s| s.value.as_slice()).collect();
            assert_eq!(live, [b"v".as_slice()], "{} holds exactly one copy", v.node);
        }
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn an_old_write_released_late_does_not_beat_a_newer_one() {
    let seed = seed(0x5eed_0048);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        turmoil::hold("n1", "n3");
        let (c1, c2) = (client(&["n1"]), client(&["n2"]));
        c1.put(b"race", b"old", None, Options::level(Level::One)).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.put(b"race", b"new", None, Options::level(Level::Quorum)).await?;
        turmoil::release("n1", "n3");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = c2.get(b"race", Options::level(Level::All)).await?;
        assert_eq!(values(&got), [b"new".as_slice()], "the newer blind write wins everywhere");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn split_brain_writes_with_contexts_become_siblings_and_collapse_on_write_back() {
    let seed = seed(0x5eed_0049);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let (c1, c3) = (client(&["n1"]), client(&["n3"]));
        c1.put(b"cart", b"base", None, Options::level(Level::All)).await?;
        let ctx = c1.get(b"cart", Options::level(Level::All)).await?.context;
        isolate_n3().await?;
        c1.put(b"cart", b"left", Some(ctx.clone()), Options::level(Level::Quorum)).await?;
        c3.put(b"cart", b"right", Some(ctx), Options::level(Level::One)).await?;
        heal_n3().await?;
        let got = c1.get(b"cart", Options::level(Level::All)).await?;
        let mut seen = values(&got);
        seen.sort();
        assert_eq!(seen, [b"left".as_slice(), b"right".as_slice()], "both concurrent writes survive as siblings");
        c1.put(b"cart", b"merged", Some(got.context), Options::level(Level::All)).await?;
        let after = c3.get(b"cart", Options::level(Level::All)).await?;
        assert_eq!(values(&after), [b"merged".as_slice()], "a write-back with the merged context collapses them");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn join_during_a_partition_streams_from_the_replicas_it_can_reach() {
    let seed = seed(0x5eed_004a);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    ringkv_tests::sim::add_node(&mut sim, ringkv_tests::sim::config(4, seed), Duration::from_secs(15));
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        for i in 0..100 {
            c.put(format!("j{i}").as_bytes(), b"v", None, Options::level(Level::All)).await?;
        }
        isolate_n3().await?;
        until("n4 joins while n3 is cut off", Duration::from_secs(60), || sees("n1", "n4", "up")).await?;
        heal_n3().await?;
        for i in 0..100 {
            let got = c.get(format!("j{i}").as_bytes(), Options::level(Level::All)).await?;
            assert_eq!(got.siblings.len(), 1, "j{i}");
        }
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn a_node_with_a_skewed_clock_refuses_writes_instead_of_shadowing_others() {
    let seed = seed(0x5eed_004b);
    let mut sim = builder(seed).build();
    let nodes = add_nodes(&mut sim, 3, seed);
    let n3_clock = nodes[2].clock.clone();
    sim.client("client", async move {
        cluster_ready().await?;
        let (c1, c3) = (client(&["n1"]), client(&["n3"]));
        c1.put(b"t", b"before", None, Options::level(Level::All)).await?;
        // n3's clock jumps 10 s ahead, far past max_clock_skew (500 ms).
        n3_clock.offset_ms.store(10_000, Ordering::SeqCst);
        // The very next write sees the step: none is stamped 10 s ahead.
        match c3.put(b"t", b"skewed", None, Options::level(Level::One)).await {
            Err(ringkv_client::Error::Other { kind, message }) => {
                assert!(kind == "clock_skew" && message.contains("stepped by 10000 ms"), "{message}")
            }
            other => panic!("the first write after the step must be refused: {other:?}"),
        }
        // Once the step is no longer fresh, gossip's comparison with the peers keeps refusing.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for level in [Level::One, Level::Quorum, Level::All] {
            match c3.put(b"t", b"skewed", None, Options::level(level)).await {
                Err(ringkv_client::Error::Other { kind, message }) => {
                    assert!(kind == "clock_skew" && message.contains("fix NTP"), "{message}")
                }
                other => panic!("a write through the skewed node must be refused: {other:?}"),
            }
        }
        // The healthy nodes keep working, and see no skew in themselves.
        c1.put(b"t", b"after", None, Options::level(Level::Quorum)).await?;
        let got = c1.get(b"t", Options::level(Level::All)).await?;
        assert_eq!(values(&got), [b"after".as_slice()], "no skewed write shadows the newer one");
        // Fixing the clock brings n3 back.
        n3_clock.offset_ms.store(0, Ordering::SeqCst);
        until("n3 accepts writes again", CONVERGE, || async { c3.put(b"probe", b"y", None, Options::level(Level::Quorum)).await.is_ok() })
            .await?;
        Ok(())
    });
    run(sim, seed);
}

// ---- large values ----

/// One large value, under the default `max_value_bytes` (4 MiB).
const LARGE_VALUE_BYTES: usize = 3 * 1024 * 1024;
/// Enough large values (288 MiB) that one page of them, counted in keys,
/// would be larger than the 256 MiB message cap.
const LARGE_KEYS: usize = 96;

/// Tokens huddled at the bottom of the ring: n1..n3 take 1, 2 and 3, so the
/// range (3, 1] holds every key, and n4 takes the top, so the range it
/// joins into, (3, MAX - 1000], holds nearly all of them. Hints are off, so
/// only repair, join and decommission move data, and unthrottled, so that
/// 288 MiB per transfer takes seconds, not the default rate's 18. Peer
/// deadlines allow for multi-MiB messages that cross several HTTP/2
/// flow-control windows, each a round trip of simulated latency.
fn huddled_tokens(i: usize, cfg: &mut ringkv_node::Config) {
    no_hints(i, cfg);
    cfg.anti_entropy_bytes_per_sec = 0;
    cfg.initial_tokens = vec![if i == 4 { u64::MAX - 1000 } else { i as u64 }];
    cfg.peer_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(10);
}

fn large_key(i: usize) -> String {
    format!("large-{i:03}")
}

/// A value that names its key in its first bytes, so a mix-up shows.
fn large_value(i: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; LARGE_VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

#[test]
fn values_larger_in_sum_than_a_message_move_by_repair_join_and_decommission() {
    let seed = seed(0x5eed_0060);
    // Short, even links: each multi-MiB message crosses HTTP/2 flow-control
    // windows, a round trip each, and three transfers of 288 MiB over the
    // default 0-100 ms links would take minutes of simulated time.
    let mut sim = builder(seed)
        .simulation_duration(Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .build();
    ringkv_tests::sim::add_nodes_with(&mut sim, 3, seed, huddled_tokens);
    let start_n4 = Arc::new(AtomicBool::new(false));
    let mut n4 = ringkv_tests::sim::config(4, seed);
    huddled_tokens(4, &mut n4);
    ringkv_tests::sim::add_node_on(&mut sim, n4, start_n4.clone());
    sim.client("client", async move {
        // Every node must see every other as normal before the cuts, or one
        // would keep a ring without it until they heal.
        until("every node sees the others normal and up", CONVERGE, || async {
            let mut all = true;
            for (a, b) in [("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n2", "n3"), ("n3", "n1"), ("n3", "n2")] {
                all &= sees(a, b, "up").await;
            }
            all
        })
        .await?;
        // Only n1 takes the writes: n2 and n3 are cut off from it, and n3
        // from n2 as well.
        turmoil::partition("n2", "n1");
        turmoil::partition("n3", "n1");
        turmoil::partition("n3", "n2");
        until("n1 sees n2 and n3 down", CONVERGE, || async { sees("n1", "n2", "down").await && sees("n1", "n3", "down").await }).await?;
        let c = client(&["n1"]);
        for i in 0..LARGE_KEYS {
            c.put(large_key(i).as_bytes(), &large_value(i), None, Options::level(Level::One)).await?;
        }
        assert_eq!(local_keys("n2").await, 0);

        // Anti-entropy: n2 fetches every large value from n1.
        turmoil::repair("n2", "n1");
        until("n1 and n2 see each other up", CONVERGE, || async { sees("n1", "n2", "up").await && sees("n2", "n1", "up").await }).await?;
        let report = ringkv_tests::sim::repair("n2").await?;
        assert!(report.errors.iter().all(|e| e.contains("n3 is down")), "{:?}", report.errors);
        assert_eq!(report.keys_repaired, LARGE_KEYS as u64, "{report:?}");
        assert_eq!(local_keys("n2").await, LARGE_KEYS as u64);

        // Join: n4 streams nearly the whole ring from n1 and n2.
        start_n4.store(true, Ordering::SeqCst);
        until("n4 joins as normal", Duration::from_secs(60), || sees("n1", "n4", "up")).await?;
        assert_eq!(local_keys("n4").await, LARGE_KEYS as u64, "n4 streamed every large value");

        // Decommission: n4 hands its big range to n3, the one replica that
        // lacks it (n3 is cut off from n1 and n2, not from n4).
        assert_eq!(local_keys("n3").await, 0);
        let r = ringkv_tests::sim::admin("n4").decommission(ringkv_client::pb::DecommissionRequest {}).await?.into_inner();
        assert_eq!(r.keys_streamed, LARGE_KEYS as u64, "{r:?}");
        assert_eq!(local_keys("n3").await, LARGE_KEYS as u64, "n3 received every large value");

        turmoil::repair("n3", "n1");
        turmoil::repair("n3", "n2");
        until("n1 sees n3 up", CONVERGE, || sees("n1", "n3", "up")).await?;
        let r = c.inspect(large_key(7).as_bytes()).await?;
        for v in &r.replicas {
            assert_eq!(v.siblings.iter().map(|s| s.value.clone()).collect::<Vec<_>>(), [large_value(7)], "{} holds the value", v.node);
        }
        Ok(())
    });
    run(sim, seed);
}

// ---- scans ----

#[test]
fn scan_pages_past_a_run_of_deleted_keys_to_the_live_keys_after_it() {
    let seed = seed(0x5eed_0061);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        const LIMIT: u32 = 10;
        // A full page of deleted keys, then live ones.
        for i in 0..LIMIT {
            let key = format!("p:{i:02}");
            c.put(key.as_bytes(), b"gone", None, Options::level(Level::All)).await?;
            c.delete(key.as_bytes(), None, Options::level(Level::All)).await?;
        }
        for i in LIMIT..LIMIT + 5 {
            c.put(format!("p:{i:02}").as_bytes(), b"live", None, Options::level(Level::All)).await?;
        }
        let mut keys = Vec::new();
        let mut after = Vec::new();
        for _ in 0..20 {
            let page = c.scan(b"p:", &after, LIMIT, Options::level(Level::Quorum)).await?;
            keys.extend(page.entries.iter().map(|e| String::from_utf8_lossy(&e.key).into_owned()));
            if !page.more {
                let want: Vec<String> = (LIMIT..LIMIT + 5).map(|i| format!("p:{i:02}")).collect();
                assert_eq!(keys, want, "every live key once, in order, and no deleted one");
                return Ok(());
            }
            let next = page.next_start_after;
            assert!(next > after, "the page after {:?} says more but gives no later key to resume from", String::from_utf8_lossy(&after));
            after = next;
        }
        panic!("paging did not finish in 20 pages: {keys:?}");
    });
    run(sim, seed);
}
