//! Real multi-process tests of the `ringkv` binary on 127.0.0.1.

use std::time::Duration;

use ringkv_tests::process::{cli, cli_json, cluster, liveness, wait_until};

#[test]
fn three_nodes_survive_kill_9_and_repair_the_restarted_replica_on_read() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &["--gossip-interval", "300ms"]);
    let n1 = nodes[0].addr.clone();

    // A put at ALL is readable at ONE through each node.
    cli_json(&n1, &["put", "a", "1", "-c", "all"]);
    for node in &nodes {
        let got = cli_json(&node.addr, &["get", "a", "-c", "one"]);
        assert_eq!(got["values"], serde_json::json!(["1"]), "through {}", node.id);
    }

    // kill -9 n3: QUORUM still works, ALL fails with exit 1 and a clear message.
    nodes[2].kill9();
    for i in 0..20 {
        cli_json(&n1, &["put", &format!("k{i}"), &format!("v{i}"), "-c", "quorum"]);
    }
    assert_eq!(cli_json(&n1, &["get", "k0", "-c", "quorum"])["values"], serde_json::json!(["v0"]));
    wait_until("n1 sees n3 down", Duration::from_secs(15), || liveness(&n1, "n3") == "down");
    let out = cli(&n1, &["put", "b", "2", "-c", "all"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: unavailable") && err.contains("needs 3") && err.contains("only 2"), "{err}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");

    // Restart n3: a get at ALL returns every value and repairs n3.
    nodes[2].restart();
    wait_until("n1 sees n3 up", Duration::from_secs(15), || liveness(&n1, "n3") == "up");
    for i in 0..20 {
        let got = cli_json(&n1, &["get", &format!("k{i}"), "-c", "all"]);
        assert_eq!(got["values"], serde_json::json!([format!("v{i}")]));
    }
    for i in 0..20 {
        let inspect = cli_json(&n1, &["inspect", &format!("k{i}")]);
        let n3 = inspect["replicas"].as_array().unwrap().iter().find(|r| r["node"] == "n3").unwrap();
        assert_eq!(n3["siblings"][0]["value"], format!("v{i}"), "n3 repaired for k{i}: {inspect}");
    }
}

#[test]
fn missing_key_is_exit_0_with_no_values_and_usage_errors_are_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1, &["--replication-factor", "1"]);
    let got = cli_json(&nodes[0].addr, &["get", "nope"]);
    assert_eq!(got["values"], serde_json::json!([]));
    let out = cli(&nodes[0].addr, &["get", "k", "-c", "most"]);
    assert_eq!(out.status.code(), Some(2), "unknown level is a usage error");
    let out = cli("127.0.0.1:1", &["get", "k"]);
    assert_eq!(out.status.code(), Some(1), "unreachable endpoint is operational");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot reach any endpoint"));
}

#[test]
fn put_reads_stdin_and_scan_pages_through_a_prefix_without_deleted_keys() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1, &["--replication-factor", "1"]);
    let n1 = nodes[0].addr.clone();

    // `put K` with no value reads it from stdin, binary-safe.
    let mut child = std::process::Command::new(ringkv_tests::process::ringkv_bin())
        .args(["--endpoints", &n1, "put", "blob", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[0, 159, 146, 150]).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(cli_json(&n1, &["get", "blob"])["values"][0]["base64"], "AJ+Slg==");

    for i in 0..25 {
        cli_json(&n1, &["put", &format!("user:{i:02}"), &format!("u{i}")]);
    }
    cli_json(&n1, &["put", "other", "x"]);
    cli_json(&n1, &["delete", "user:03"]);
    let mut keys = Vec::new();
    let mut after = String::new();
    loop {
        let page = cli_json(&n1, &["scan", "--prefix", "user:", "--limit", "10", "--start-after", &after]);
        let entries = page["entries"].as_array().unwrap();
        keys.extend(entries.iter().map(|e| e["key"].as_str().unwrap().to_string()));
        if page["more"] != true {
            break;
        }
        after = page["next_start_after"].as_str().unwrap().to_string();
    }
    let want: Vec<String> = (0..25).filter(|i| *i != 3).map(|i| format!("user:{i:02}")).collect();
    assert_eq!(keys, want, "every user: key once, in order, without the deleted one or other prefixes");
}

/// `ringkv demo --json` runs every chapter and reports what PACELC predicts.
#[test]
fn demo_shows_the_price_of_each_level_and_writes_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("demo.svg");
    let out = std::process::Command::new(ringkv_tests::process::ringkv_bin())
        .args(["--json", "demo", "--ops", "40", "--svg"])
        .arg(&svg)
        .output()
        .expect("run ringkv demo");
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["latency"].as_array().unwrap().len(), 3, "{r}");
    // Chapter 2: right after a write at ONE, a ONE read through the slow
    // replica is mostly stale; QUORUM and ALL are always fresh.
    for level in r["slow_replica"].as_array().unwrap() {
        for point in level["fresh"].as_array().unwrap() {
            let (fresh, reads) = (point["fresh_reads"].as_u64().unwrap(), point["reads"].as_u64().unwrap());
            match (level["level"].as_str().unwrap(), point["wait_ms"].as_u64().unwrap()) {
                ("ONE", 0) => assert!(fresh * 2 <= reads, "ONE at t=0: {fresh} of {reads} fresh"),
                ("ONE", _) => {}
                (other, wait) => assert_eq!(fresh, reads, "{other} at t={wait}ms"),
            }
        }
    }
    // Chapter 3: which side serves which level.
    let part = &r["partition"];
    assert_eq!(part[0]["minority"]["put"], "ok", "ONE on the minority side: {part}");
    assert_eq!(part[1]["majority"]["put"], "ok", "QUORUM on the majority side: {part}");
    assert_eq!(part[1]["minority"]["put"], "unav", "QUORUM on the minority side: {part}");
    assert_eq!(part[2]["majority"]["get"], "unav", "ALL anywhere: {part}");
    assert_eq!(
        (&part[3]["level"], &part[3]["majority"]["cas"], &part[3]["majority"]["get"]),
        (&"SERIAL".into(), &"ok".into(), &"ok".into()),
        "{part}"
    );
    assert_eq!(
        (&part[3]["minority"]["cas"], &part[3]["minority"]["get"]),
        (&"unav".into(), &"unav".into()),
        "SERIAL on the minority side: {part}"
    );
    assert_eq!(r["read_repair"]["n3_after"], true);
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.starts_with("<svg") && chart.contains("P(fresh read)"));
}

/// `ringkv fault clock` steps a node's clock; the node refuses to stamp
/// writes from the very next one, and takes them again once the clock is
/// back and gossip has compared it with its peers.
#[test]
fn a_clock_step_is_refused_at_once_and_recovered_from() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, &["--gossip-interval", "300ms"]);
    let (n1, n2) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    let r = cli_json(&n1, &["fault", "clock", "--node", "n2", "--offset-ms", "5000"]);
    assert_eq!(r["offset_ms"], 5000, "{r}");
    let out = cli(&n2, &["put", "k", "v", "-c", "one"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused by the step watch, or, once gossip has resampled the peers,
    // by the comparison with them: either way, not stamped.
    assert!(err.contains("clock skew") && (err.contains("stepped by") || err.contains("off most of its peers")), "{err}");
    cli_json(&n1, &["put", "k", "v", "-c", "quorum"]);

    cli_json(&n1, &["fault", "clock", "--node", "n2", "--offset-ms", "0"]);
    wait_until("n2 stamps writes again", Duration::from_secs(20), || cli(&n2, &["put", "k", "w", "-c", "one"]).status.success());

    let out = cli(&n1, &["fault", "clock", "--node", "n9", "--offset-ms", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown node \"n9\""));
}

#[test]
fn a_put_with_ttl_is_read_at_once_and_gone_after_its_expiry() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1, &["--replication-factor", "1"]);
    let n1 = nodes[0].addr.clone();

    let put = cli_json(&n1, &["put", "session", "token", "--ttl", "1s"]);
    assert_eq!(put["ttl_ms"], 1000, "{put}");
    let got = cli_json(&n1, &["get", "session"]);
    assert_eq!(got["values"], serde_json::json!(["token"]), "readable at once");
    let expires_at_ms = got["siblings"][0]["expires_at_ms"].as_u64().expect("an expiry");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(expires_at_ms > now_ms.saturating_sub(1_000) && expires_at_ms <= now_ms + 1_000, "{got}");
    assert!(got["siblings"][0]["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{got}");
    // A plain put beside it never expires.
    cli_json(&n1, &["put", "forever", "v"]);
    assert_eq!(cli_json(&n1, &["get", "forever"])["siblings"][0]["expires_at_ms"], serde_json::Value::Null);

    wait_until("the ttl'd value is gone", Duration::from_secs(10), || {
        cli_json(&n1, &["get", "session"])["values"] == serde_json::json!([])
    });
    assert_eq!(cli_json(&n1, &["scan", "--prefix", "sess"])["entries"], serde_json::json!([]), "scans skip it");
    assert_eq!(cli_json(&n1, &["get", "forever"])["values"], serde_json::json!(["v"]));

    // A zero TTL is a usage error; one past the maximum is refused by the node.
    let out = cli(&n1, &["put", "k", "v", "--ttl", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&n1, &["put", "k", "v", "--ttl", "100years"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:") && err.contains("over the maximum"), "{err}");
}
