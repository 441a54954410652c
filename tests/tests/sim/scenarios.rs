//! Named fault scenarios: the sweep's nemesis with one fault kind for 20
//! simulated seconds under the workload, then every checker; and targeted
//! cases where one precise fault meets one client action (a lost ack, a
//! late release, split brain, a skewed clock).

use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};
use ringkv_tests::sweep::SweepFault;

use super::{cluster_ready, heal_n3, isolate_n3, values, CONVERGE};

/// 20 simulated seconds of `fault` alone under the sweep's workload, then
/// every checker.
fn scenario(seed: u64, fault: SweepFault) {
    let seed = self::seed(seed);
    let r = ringkv_tests::sweep::run_nemesis(seed, 20, Some(fault));
    assert!(!r.faults.is_empty(), "no fault was injected");
    assert!(r.violations.is_empty(), "{:?}\nfaults {:?}\nrerun: RINGKV_SIM_SEED={seed}", r.violations, r.faults);
}

#[test]
fn isolated_nodes_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0040, SweepFault::Isolate);
}

#[test]
fn minority_majority_splits_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0041, SweepFault::Split);
}

#[test]
fn majorities_ring_loses_no_acknowledged_quorum_write() {
    scenario(0x5eed_0042, SweepFault::MajoritiesRing);
}

#[test]
fn one_way_partitions_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0043, SweepFault::OneWay);
}

#[test]
fn held_and_released_messages_lose_no_acknowledged_quorum_write() {
    scenario(0x5eed_0044, SweepFault::Hold);
}

#[test]
fn crash_restart_with_group_durability_loses_no_acknowledged_quorum_write() {
    scenario(0x5eed_0045, SweepFault::Crash);
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
