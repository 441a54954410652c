//! Deterministic simulations: three nodes in one process on turmoil, with
//! pinned seeds. Override a seed with `RINGKV_SIM_SEED`; a failure prints
//! the seed to rerun.

use std::time::Duration;

use ringkv_client::{Error, Level, Options, ReadRepair};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};

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
