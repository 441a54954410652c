//! Membership: the failure detector's bound and stability, and ring
//! changes (join, decommission, removenode) under load or partitions,
//! without losing an acknowledged write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};

use super::{cluster_ready, heal_n3, isolate_n3, no_hints, replicas, state_is, values, CONVERGE};

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
