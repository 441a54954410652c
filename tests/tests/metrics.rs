//! Metrics and HTTP probes of real `ringkv serve` processes on 127.0.0.1
//! (`--http-listen`, `node/src/metrics/`): the request counters move by
//! exactly the requests sent, per node, op, level and outcome; the latency
//! histogram, group commit, hints, anti-entropy and peer series are there
//! and say what happened; `/readyz` tells a formed node from one still
//! waiting for its seeds.

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_tests::process::{cli, cli_json, free_port, liveness, up_count, wait_until, NodeProc};
use ringkv_tests::scrape::{http_get, scrape};

/// A series' value, 0 when absent (a counter never moved, a label set never seen).
fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// How much `series` moved between two scrapes.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

fn requests(op: &str, level: &str, outcome: &str) -> String {
    format!(r#"ringkv_requests_total{{op="{op}",level="{level}",outcome="{outcome}"}}"#)
}

/// Three nodes, each with its own HTTP port, joined through n1.
fn three_nodes(root: &std::path::Path) -> Vec<(NodeProc, String)> {
    let mut nodes: Vec<(NodeProc, String)> = Vec::new();
    for i in 1..=3 {
        let http = format!("127.0.0.1:{}", free_port());
        let seed = nodes.first().map(|(n, _)| n.addr.clone());
        // n1 logs each client request's span as it closes.
        let log = if i == 1 { "info,ringkv_node::metrics=debug" } else { "info" };
        let node =
            NodeProc::start(root, &format!("n{i}"), seed.as_deref(), &["--gossip-interval", "300ms", "--http-listen", &http, "--log", log]);
        nodes.push((node, http));
        let first = nodes[0].0.addr.clone();
        wait_until(&format!("n{i} joins"), Duration::from_secs(30), || up_count(&first) == i);
    }
    nodes
}

#[test]
fn request_counters_move_by_the_requests_sent_and_every_series_family_is_served() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(root.path());
    let n1 = nodes[0].0.addr.clone();
    let (h1, h2, h3) = (nodes[0].1.clone(), nodes[1].1.clone(), nodes[2].1.clone());

    for http in [&h1, &h2, &h3] {
        assert_eq!(http_get(http, "/healthz").unwrap(), (200, "ok\n".into()), "{http}");
        wait_until(&format!("{http} ready"), Duration::from_secs(10), || http_get(http, "/readyz").is_ok_and(|r| r.0 == 200));
        assert_eq!(http_get(http, "/nothing-here").unwrap().0, 404, "only the three paths are served");
    }
    let before = [scrape(&h1), scrape(&h2), scrape(&h3)];

    // Every node replicates every key (N = 3, three nodes), so n1
    // coordinates each of these itself.
    for i in 0..5 {
        cli_json(&n1, &["put", &format!("one{i}"), "v", "-c", "one"]);
    }
    for i in 0..4 {
        cli_json(&n1, &["put", &format!("q{i}"), "v", "-c", "quorum"]);
    }
    for i in 0..3 {
        cli_json(&n1, &["get", &format!("one{i}"), "-c", "one"]);
    }
    for i in 0..2 {
        cli_json(&n1, &["get", &format!("q{i}"), "-c", "quorum"]);
    }
    let after = scrape(&h1);
    let moved = |series: &str| delta(&before[0], &after, series);
    assert_eq!(moved(&requests("put", "one", "ok")), 5.0);
    assert_eq!(moved(&requests("put", "quorum", "ok")), 4.0);
    assert_eq!(moved(&requests("get", "one", "ok")), 3.0);
    assert_eq!(moved(&requests("get", "quorum", "ok")), 2.0);
    // Each request's span closed with its receipt's fields in n1's log.
    let log = nodes[0].0.log();
    let spans: Vec<&str> = log.lines().filter(|l| l.contains("request{") && l.contains("close")).collect();
    assert_eq!(spans.len(), 14, "one closed span per request:\n{log}");
    let put = spans.iter().find(|l| l.contains(r#"op="put""#) && l.contains(r#"level="quorum""#)).expect("a QUORUM put's span");
    for field in [r#"outcome="ok""#, r#"coordinator="n1""#, "required=2", "replicas=3", "answered="] {
        assert!(put.contains(field), "{field} in {put}");
    }
    // Client requests are counted where they arrived: n2 and n3 got none.
    for (i, h) in [(1, &h2), (2, &h3)] {
        let other = scrape(h);
        let total =
            |m: &BTreeMap<String, f64>| m.iter().filter(|(k, _)| k.starts_with("ringkv_requests_total")).map(|(_, v)| v).sum::<f64>();
        assert_eq!(total(&other), total(&before[i]), "n{} counted requests it never received", i + 1);
    }

    // The latency histogram: a count per op and level, buckets, +Inf = count.
    let count = r#"ringkv_request_duration_seconds_count{op="put",level="quorum"}"#;
    assert_eq!(moved(count), 4.0);
    let inf = r#"ringkv_request_duration_seconds_bucket{le="+Inf",op="put",level="quorum"}"#;
    assert_eq!(value(&after, inf), value(&after, count));
    let buckets =
        after.keys().filter(|k| k.starts_with("ringkv_request_duration_seconds_bucket{") && k.ends_with(r#"op="put",level="quorum"}"#));
    assert!(buckets.count() >= 10, "latency buckets per op and level");
    assert!(value(&after, r#"ringkv_request_duration_seconds_sum{op="put",level="quorum"}"#) > 0.0);

    // Group commit ran for those writes; keys and bytes are stored.
    assert!(moved("ringkv_group_commit_batch_writes_count") >= 1.0, "a sync per batch of writes");
    assert!(value(&after, "ringkv_sync_duration_seconds_count") >= 1.0);
    assert!(value(&after, "ringkv_stored_keys") >= 9.0, "9 keys written");
    assert!(value(&after, "ringkv_stored_bytes") > 0.0);

    // Peers: up, phi and clock offset per peer; the node itself is not a peer.
    for peer in ["n2", "n3"] {
        assert_eq!(value(&after, &format!(r#"ringkv_peer_up{{peer="{peer}"}}"#)), 1.0, "{peer} up");
        assert!(after.contains_key(&format!(r#"ringkv_peer_phi{{peer="{peer}"}}"#)), "{peer} phi");
        let offset = value(&after, &format!(r#"ringkv_peer_clock_offset_seconds{{peer="{peer}"}}"#));
        assert!(offset.abs() < 1.0, "one machine, one clock: {peer} is {offset} s off");
    }
    assert!(!after.contains_key(r#"ringkv_peer_up{peer="n1"}"#));
    assert_eq!(value(&after, r#"ringkv_members{state="normal"}"#), 3.0);
    assert_eq!(value(&after, "ringkv_ready"), 1.0);

    // Anti-entropy: `ringkv repair` on n1 runs one pass, with every range checked.
    for series in
        ["ringkv_antientropy_passes_total", "ringkv_antientropy_keys_repaired_total", r#"ringkv_antientropy_bytes_total{direction="sent"}"#]
    {
        assert!(after.contains_key(series), "{series} is served before any pass");
    }
    cli_json(&n1, &["repair"]);
    let repaired = scrape(&h1);
    assert_eq!(delta(&after, &repaired, "ringkv_antientropy_passes_total"), 1.0);
    assert!(delta(&after, &repaired, "ringkv_antientropy_ranges_checked_total") > 0.0);

    // Hints: once n1 sees n3 down, a QUORUM write through n1 leaves a
    // hint for n3, and an ALL write is refused as unavailable.
    for series in ["ringkv_hints_stored_total", "ringkv_hints_replayed_total", r#"ringkv_hints_dropped_total{reason="window"}"#] {
        assert!(repaired.contains_key(series), "{series} is served before any hint");
    }
    nodes[2].0.kill9();
    wait_until("n1 sees n3 down", Duration::from_secs(15), || liveness(&n1, "n3") == "down");
    cli_json(&n1, &["put", "hinted", "v", "-c", "quorum"]);
    let out = cli(&n1, &["put", "refused", "v", "-c", "all"]);
    assert_eq!(out.status.code(), Some(1), "ALL with a replica down: {}", String::from_utf8_lossy(&out.stderr));
    let down = scrape(&h1);
    assert!(delta(&repaired, &down, "ringkv_hints_stored_total") >= 1.0, "a hint for n3");
    assert!(value(&down, r#"ringkv_hints_pending{target="n3"}"#) >= 1.0);
    assert!(value(&down, r#"ringkv_hints_pending_bytes{target="n3"}"#) > 0.0);
    assert!(delta(&repaired, &down, "ringkv_hinted_replicas_total") >= 1.0);
    assert_eq!(delta(&repaired, &down, &requests("put", "all", "unavailable")), 1.0);
    assert_eq!(value(&down, r#"ringkv_peer_up{peer="n3"}"#), 0.0);
}

#[test]
fn readyz_is_503_until_the_node_is_in_a_formed_ring_while_healthz_is_200() {
    let root = tempfile::tempdir().unwrap();
    // Its only seed is a port nobody listens on: it can never form a ring.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let lonely = NodeProc::start(root.path(), "n1", Some(&nowhere), &["--gossip-interval", "300ms", "--http-listen", &http]);
    assert_eq!(http_get(&http, "/healthz").unwrap(), (200, "ok\n".into()), "the process is up");
    let (status, body) = http_get(&http, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: waiting for a ring"), "the reason is given: {body}");
    assert_eq!(value(&scrape(&http), "ringkv_ready"), 0.0);
    let out = cli(&lonely.addr, &["get", "k", "-c", "one"]);
    assert_eq!(out.status.code(), Some(1), "and it really does not serve");
}
