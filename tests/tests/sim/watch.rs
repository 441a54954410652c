//! Watch under a partition: writes a replica missed while cut off reach it
//! later by hint replay, which its store applies like any change, so its
//! own stream carries them then; the client's merged stream, which already
//! delivered them from the other replicas, does not deliver them again.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use ringkv_client::{Level, Options, WatchPosition, WatchStream};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, until};

use super::{cluster_ready, heal_n3, isolate_n3, local_keys, CONVERGE};

const WRITES: usize = 20;

fn covers(have: &WatchPosition, want: &WatchPosition) -> bool {
    want.nodes().iter().all(|w| have.node(&w.node).is_some_and(|h| h.epoch == w.epoch && h.seq >= w.seq))
}

/// The keys of the events until the stream has accounted for `want`.
async fn drain_to(stream: &mut WatchStream, want: &WatchPosition) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut keys = Vec::new();
    while !covers(stream.position(), want) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the stream did not reach {want:?}; at {:?}", stream.position()).into());
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(event)) => keys.push(String::from_utf8_lossy(&event?.key).into_owned()),
            Ok(None) => return Err("the stream ended".into()),
            Err(_) => {}
        }
    }
    Ok(keys)
}

#[test]
fn writes_replayed_to_a_partitioned_replica_are_streamed_by_it_and_delivered_once() {
    let seed = seed(0x5eed_0090);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1", "n2", "n3"]);
        let mut stream = c.watch(b"w/", None).await?;
        let start = stream.position().node("n3").expect("n3 followed");
        isolate_n3().await?;
        let writer = client(&["n1", "n2"]);
        for i in 0..WRITES {
            let r = writer.put(format!("w/{i:02}").as_bytes(), b"v", None, Options::level(Level::Quorum)).await?;
            assert!(r.receipt.unwrap().hints_stored, "w/{i:02} was hinted for n3");
        }
        heal_n3().await?;
        until("n3 holds every write", CONVERGE, || async { local_keys("n3").await == WRITES as u64 }).await?;
        let head = c.watch(b"\xffnone", None).await?.position().clone();
        let n3 = head.node("n3").expect("n3 answered");
        assert!(n3.seq >= start.seq + WRITES as u64, "n3 logged the replayed writes: {start:?} -> {n3:?}");
        let keys = drain_to(&mut stream, &head).await?;
        assert_eq!(keys.len(), WRITES, "each write once, though n1, n2 and later n3 streamed it: {keys:?}");
        assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), WRITES);
        Ok(())
    });
    run(sim, seed);
}
