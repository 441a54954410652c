//! The read and write paths on three nodes: consistency levels through any
//! coordinator, a minority partition seen from either side, blocking read
//! repair, a crash with surviving storage, and scans.

use ringkv_client::{Error, Level, Options, ReadRepair};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};

use super::{cluster_ready, isolate_n3, values, CONVERGE};

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
