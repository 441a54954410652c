//! Expiring keys (TTL, issue #17 item 6): a put with a TTL is read at once,
//! gone after its expiry through every replica, turned into the same
//! tombstone on every replica, and purged by tombstone GC once the grace has
//! passed since the expiry. A replica whose clock is ahead hides the value
//! sooner, by at most its skew, and the replicas still converge.

use std::time::Duration;

use ringkv_client::pb::InspectResponse;
use ringkv_client::pb::RepairReport;
use ringkv_client::{Level, Options};
use ringkv_tests::sim::{add_nodes_with, builder, client, repair_range, roots, run, seed, until, wall_ms};

use super::{cluster_ready, values};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const TTL: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(3);
const KEY: &[u8] = b"session";
const KEY2: &[u8] = b"lease";

/// A short tombstone grace, and a hint window below it as `validate` asks.
fn short_grace(_: usize, cfg: &mut ringkv_node::Config) {
    cfg.tombstone_grace = GRACE;
    cfg.max_hint_window = GRACE - Duration::from_secs(1);
}

/// Reads `key` at ONE through `node`, which reads its own copy and judges
/// expiry by its own clock.
async fn read_via(node: &str, key: &[u8]) -> Vec<Vec<u8>> {
    match client(&[node]).get(key, Options::level(Level::One)).await {
        Ok(r) => values(&r).into_iter().map(<[u8]>::to_vec).collect(),
        Err(e) => vec![format!("error: {e}").into_bytes()],
    }
}

/// Every replica's one sibling of the key, asserting each replica holds
/// exactly one.
fn only_siblings(r: &InspectResponse) -> Vec<(String, ringkv_client::pb::Sibling)> {
    r.replicas
        .iter()
        .map(|v| {
            assert!(v.reachable && v.present && v.siblings.len() == 1, "{}: {v:?}\nall replicas: {r:?}", v.node);
            (v.node.clone(), v.siblings[0].clone())
        })
        .collect()
}

/// An anti-entropy pass on `node` over the one range that holds `key`,
/// tombstone GC included. A whole pass syncs 48 ranges one after another
/// and takes seconds of simulated time, longer than the test's grace.
async fn repair_key(node: &str, key: &[u8]) -> Result<RepairReport, tonic::Status> {
    let token = ringkv_node::ring::token_of(key);
    repair_range(node, token.wrapping_sub(1), token).await
}

async fn assert_identical_roots() -> Result<(), Box<dyn std::error::Error>> {
    let r1 = roots("n1").await?;
    assert_eq!(r1, roots("n2").await?, "n1 and n2 roots");
    assert_eq!(r1, roots("n3").await?, "n1 and n3 roots");
    Ok(())
}

#[test]
fn a_ttl_put_is_read_at_once_gone_after_its_expiry_on_every_replica_and_purged_after_the_grace() {
    let seed = seed(0x5eed_0170);
    let mut sim = builder(seed).build();
    add_nodes_with(&mut sim, 3, seed, short_grace);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        let written = wall_ms();
        c.put_with_ttl(KEY, b"token", None, TTL, Options::level(Level::All)).await?;

        // Every replica holds the value with one absolute expiry, stamped
        // by the coordinator from its HLC.
        let held = only_siblings(&c.inspect(KEY).await?);
        let expires_at = held[0].1.expires_at_ms;
        assert!(expires_at >= written + 2_000, "expires at {expires_at}, written at {written}");
        for (node, s) in &held {
            assert_eq!((s.value.as_slice(), s.tombstone, s.expires_at_ms), (b"token".as_slice(), false, expires_at), "{node}");
            assert_eq!(s.expires_at_ms - s.hlc.as_ref().unwrap().wall_ms, 2_000, "{node}: HLC wall time plus the TTL");
        }

        // Readable at once through every replica, with its expiry, and in a scan.
        for node in NODES {
            let got = client(&[node]).get(KEY, Options::level(Level::One)).await?;
            assert_eq!(values(&got), [b"token"], "through {node}");
            assert_eq!(got.siblings[0].expires_at_ms, expires_at);
        }
        let scanned = c.scan(KEY, b"", 10, Options::level(Level::Quorum)).await?;
        assert_eq!(scanned.entries.len(), 1, "{scanned:?}");
        assert!(wall_ms() < expires_at, "all of that happened before the expiry");

        // Gone after the expiry through every replica (each reads its own
        // copy by its own clock), and from scans.
        until("the value is gone through every replica", Duration::from_secs(5), || async {
            for node in NODES {
                if !read_via(node, KEY).await.is_empty() {
                    return false;
                }
            }
            true
        })
        .await?;
        assert!(wall_ms() >= expires_at, "gone only once expired");
        let scanned = c.scan(KEY, b"", 10, Options::level(Level::Quorum)).await?;
        assert!(scanned.entries.is_empty(), "a scan skips it: {scanned:?}");

        // The first repair after the expiry turns it into a tombstone on
        // every replica, the same one everywhere, and purges nothing: the
        // grace runs from the expiry.
        let first = repair_key("n1", KEY).await?;
        assert_eq!(first.ranges_checked, 1, "{first:?}");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(first.tombstones_purged, 0, "{first:?}");
        for (node, s) in only_siblings(&c.inspect(KEY).await?) {
            assert!(s.tombstone && s.value.is_empty() && s.expires_at_ms == expires_at, "{node} holds the expired tombstone: {s:?}");
        }
        assert_identical_roots().await?;

        // Tombstone GC purges it from every replica once the grace has
        // passed since the expiry.
        until("purged on every replica", Duration::from_secs(10), || async {
            repair_key("n1", KEY).await.is_ok() && c.inspect(KEY).await.is_ok_and(|r| r.replicas.iter().all(|v| v.reachable && !v.present))
        })
        .await?;
        assert!(wall_ms() >= expires_at + GRACE.as_millis() as u64, "purged only after the grace");
        assert!(c.get(KEY, Options::level(Level::All)).await?.siblings.is_empty());
        assert_identical_roots().await?;
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn a_replica_whose_clock_is_ahead_hides_the_value_sooner_by_at_most_its_skew_and_replicas_converge() {
    let seed = seed(0x5eed_0171);
    const SKEW: Duration = Duration::from_millis(1_500);
    let mut sim = builder(seed).build();
    let nodes = add_nodes_with(&mut sim, 3, seed, |i, cfg| {
        short_grace(i, cfg);
        cfg.max_clock_skew = Duration::from_secs(2);
    });
    nodes[2].clock.offset_ms.store(SKEW.as_millis() as i64, std::sync::atomic::Ordering::Relaxed);
    sim.client("client", async {
        cluster_ready().await?;
        let c = client(&["n1"]);
        c.put_with_ttl(KEY2, b"holder", None, TTL, Options::level(Level::All)).await?;
        let expires_at = only_siblings(&c.inspect(KEY2).await?)[0].1.expires_at_ms;

        // n3's clock runs ahead, so it hides the value first, by at most
        // its skew; n1, by its own clock, still serves it.
        until("n3 hides the value", Duration::from_secs(5), || async { read_via("n3", KEY2).await.is_empty() }).await?;
        let now = wall_ms();
        assert!(now < expires_at && now + SKEW.as_millis() as u64 >= expires_at, "hidden {} ms early", expires_at - now);
        assert_eq!(read_via("n1", KEY2).await, [b"holder".to_vec()], "n1's clock says it has not expired");

        // A repair on n3 converts its copy; n1 and n2 are told to GC the
        // range but by their clocks nothing has expired.
        let report = repair_key("n3", KEY2).await?;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let held = only_siblings(&c.inspect(KEY2).await?);
        for (node, s) in &held {
            assert_eq!(s.tombstone, node == "n3", "only n3 converted: {node} {s:?}");
            assert_eq!(s.expires_at_ms, expires_at, "{node}");
        }
        assert!(wall_ms() < expires_at, "still before the expiry by n1's clock");

        // A read that reaches n3 hides it through n1 too (the tombstone
        // wins the merge), and blocking read repair hands every replica the
        // same tombstone: one outcome, whoever converted first.
        let got = c.get(KEY2, Options::level(Level::All)).await?;
        assert!(got.siblings.is_empty(), "{got:?}");
        let held = only_siblings(&c.inspect(KEY2).await?);
        for (node, s) in &held {
            assert!(s.tombstone && s.value.is_empty() && s.expires_at_ms == expires_at, "{node}: {s:?}");
        }
        assert_identical_roots().await?;

        // And tombstone GC still purges it everywhere after the grace.
        until("purged on every replica", Duration::from_secs(10), || async {
            repair_key("n1", KEY2).await.is_ok()
                && c.inspect(KEY2).await.is_ok_and(|r| r.replicas.iter().all(|v| v.reachable && !v.present))
        })
        .await?;
        assert_identical_roots().await?;
        Ok(())
    });
    run(sim, seed);
}
