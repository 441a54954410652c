//! Failover: hinted handoff (replay, the window, durability of hints),
//! sloppy quorum with stand-ins, speculative retry, ANY, and the
//! coordinator's deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};

use super::{cluster_ready, heal_n3, isolate_n3, local_keys, CONVERGE};

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
