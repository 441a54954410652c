//! Failover over real processes: hinted handoff delivers what a killed node
//! missed, and sloppy quorum keeps writes available with two replicas down.

use std::time::{Duration, Instant};

use ringkv_client::{Client, Error, Level, Options};
use ringkv_tests::process::{cli, cli_json, cluster, liveness, wait_until};

#[test]
fn hints_alone_bring_a_restarted_node_every_write_it_missed() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &["--anti-entropy-interval", "0s", "--gossip-interval", "300ms"]);
    let n1 = nodes[0].addr.clone();
    nodes[2].kill9();
    wait_until("n1 sees n3 down", Duration::from_secs(15), || liveness(&n1, "n3") == "down");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect([nodes[0].addr.as_str(), nodes[1].addr.as_str()]).await.unwrap();
        for i in 0..1000 {
            let k = format!("hh-{i:04}");
            c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await.unwrap();
        }
    });
    assert_eq!(cli_json(&n1, &["hints"])["pending"], 1000, "one hint per write, held by its coordinator");
    let restarted = Instant::now();
    nodes[2].restart();
    let n3 = nodes[2].addr.clone();
    wait_until("n3 holds all 1000 keys", Duration::from_secs(30), || cli_json(&n3, &["status"])["local_keys"] == 1000);
    eprintln!("1000 hints delivered {:?} after restart", restarted.elapsed());
    wait_until("no hints pending", Duration::from_secs(10), || cli_json(&n1, &["hints"])["pending"] == 0);
    for i in [0, 499, 999] {
        let k = format!("hh-{i:04}");
        let inspect = cli_json(&n1, &["inspect", &k]);
        let r = inspect["replicas"].as_array().unwrap().iter().find(|r| r["node"] == "n3").unwrap();
        assert_eq!(r["siblings"][0]["value"], k.as_str(), "{inspect}");
    }
}

#[test]
fn sloppy_quorum_needs_stand_ins_and_hands_their_writes_back() {
    // With three nodes and replication factor 3 there is no stand-in.
    let root = tempfile::tempdir().unwrap();
    let mut three = cluster(root.path(), 3, &["--gossip-interval", "300ms"]);
    let a = three[0].addr.clone();
    three[1].kill9();
    three[2].kill9();
    wait_until("n1 sees n2, n3 down", Duration::from_secs(15), || liveness(&a, "n2") == "down" && liveness(&a, "n3") == "down");
    let out = cli(&a, &["put", "k", "v", "--sloppy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sloppy quorum found 0 healthy node(s) outside the preference list"), "{err}");
    drop(three);

    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 5, &["--gossip-interval", "300ms"]);
    let n1 = nodes[0].addr.clone();
    nodes[3].kill9();
    nodes[4].kill9();
    wait_until("n1 sees n4, n5 down", Duration::from_secs(15), || liveness(&n1, "n4") == "down" && liveness(&n1, "n5") == "down");
    let live: Vec<String> = nodes[..3].iter().map(|n| n.addr.clone()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sloppy_keys = rt.block_on(async {
        let c = Client::connect(&live).await.unwrap();
        let mut sloppy = Vec::new();
        for i in 0..100 {
            let k = format!("sl-{i:03}");
            match c.put(k.as_bytes(), k.as_bytes(), None, Options::level(Level::Quorum)).await {
                Ok(_) => {}
                Err(Error::Unavailable { required: 2, alive: 1, .. }) => {
                    let r =
                        c.put(k.as_bytes(), k.as_bytes(), None, Options { level: Level::Quorum, sloppy: true, ..Default::default() }).await;
                    let receipt = r.unwrap_or_else(|e| panic!("{k} with --sloppy: {e}")).receipt.unwrap();
                    assert!(receipt.replicas.iter().any(|x| !x.stand_in_for.is_empty()), "{k}: {receipt:?}");
                    sloppy.push(k);
                }
                Err(e) => panic!("{k}: {e}"),
            }
        }
        sloppy
    });
    assert!(!sloppy_keys.is_empty(), "some keys have two of their three replicas among n4, n5");
    let first = &sloppy_keys[0];
    let out = cli(&n1, &["put", first, "via-cli", "-c", "quorum"]);
    assert!(out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("unavailable"));
    cli_json(&n1, &["put", first, first, "-c", "quorum", "--sloppy"]);

    nodes[3].restart();
    nodes[4].restart();
    wait_until("owners hold every sloppy write", Duration::from_secs(30), || {
        sloppy_keys.iter().all(|k| {
            let inspect = cli_json(&n1, &["inspect", k]);
            inspect["replicas"].as_array().unwrap().iter().all(|r| r["siblings"][0]["value"] == k.as_str())
        })
    });
}
