//! Anti-entropy: Merkle repair heals what hints did not deliver (these
//! tests turn hints off, so only repair can heal), and tombstones are
//! purged only when no replica can bring the value back.

use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{builder, client, roots, run, seed, sees, until};

use super::{cluster_ready, heal_n3, isolate_n3, no_hints, replicas, state_is, values, CONVERGE};

/// Keys whose tokens n1 takes as its own, so they sit exactly on range ends.
fn edge_keys() -> Vec<String> {
    (0..16).map(|i| format!("edge-{i}")).collect()
}

fn with_edge_tokens(i: usize, cfg: &mut ringkv_node::Config) {
    no_hints(i, cfg);
    if i == 1 {
        cfg.initial_tokens = edge_keys().iter().map(|k| ringkv_node::ring::token_of(k.as_bytes())).collect();
    }
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
