//! Large values: more bytes in sum than one message may carry move by
//! repair, join and decommission, because every transfer pages by bytes,
//! not by keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_client::{Level, Options};
use ringkv_tests::sim::{builder, client, run, seed, sees, until};

use super::{local_keys, no_hints, CONVERGE};

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
