//! `Kv.Watch` and `Client::watch` over a real 3-node cluster (RF 3):
//! puts and deletes under the prefix arrive once each although every
//! replica emits them, nothing outside it arrives, a stream resumes from a
//! position and delivers what happened while it was away, a position too
//! old or from before a node's restart asks for a resync, a stalled watcher
//! neither blocks writes nor grows without bound, and the per-node cap on
//! watches answers with a clear error.
//!
//! Nothing here waits on a timer for a condition: a stream is drained until
//! its position covers every node's log head (taken after the writes, all
//! at ALL, so every replica has applied them), which makes "exactly these
//! events" a checkable claim.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringkv_client::{pb, Client, Error, Level, Options, WatchEvent, WatchPosition, WatchStream};
use ringkv_harness::cluster::LocalCluster;
use ringkv_tests::process::{cli, free_port, ringkv_bin};

const DEADLINE: Duration = Duration::from_secs(30);

async fn start(root: &std::path::Path, extra: &[&str]) -> LocalCluster {
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    LocalCluster::start(ringkv_bin(), &addrs, root, &|_| extra.clone(), |_| {}).await.expect("cluster starts")
}

fn all() -> Options {
    Options::level(Level::All)
}

/// Every node's newest change now, as the start of a fresh watch sees it.
async fn heads(c: &Client) -> WatchPosition {
    let probe = c.watch(b"\xffno-such-prefix", None).await.expect("probe watch");
    assert_eq!(probe.nodes().len(), 3, "every node answered: {:?}", probe.position());
    probe.position().clone()
}

fn covers(have: &WatchPosition, want: &WatchPosition) -> bool {
    want.nodes().iter().all(|w| have.node(&w.node).is_some_and(|h| h.epoch == w.epoch && h.seq >= w.seq))
}

/// Events until the stream has accounted for every change up to `want`.
async fn drain_to(stream: &mut WatchStream, want: &WatchPosition) -> Vec<WatchEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    while !covers(stream.position(), want) {
        assert!(Instant::now() < deadline, "the stream did not reach {want:?}; at {:?}", stream.position());
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(e))) => events.push(e),
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => {}
        }
    }
    events
}

/// `(key, deleted, live values)` per event, for comparing.
fn summary(events: &[WatchEvent]) -> Vec<(String, bool, Vec<String>)> {
    events
        .iter()
        .map(|e| {
            let values = e.siblings.iter().filter(|s| !s.tombstone).map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
            (String::from_utf8_lossy(&e.key).into_owned(), e.deleted, values)
        })
        .collect()
}

/// The events one node's own stream carries from `from` up to `to`.
async fn raw_events(addr: &str, prefix: &[u8], from: pb::WatchPosition, to: u64) -> Vec<pb::WatchEvent> {
    let mut kv = pb::kv_client::KvClient::connect(format!("http://{addr}")).await.expect("connect");
    let req = pb::WatchRequest { prefix: prefix.to_vec(), resume: Some(from) };
    let mut stream = kv.watch(req).await.expect("watch").into_inner();
    let mut events = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "node {addr} did not reach change {to}");
        let msg = stream.message().await.expect("stream").expect("open");
        events.extend(msg.events);
        if msg.position.expect("position").seq >= to {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_deletes_under_the_prefix_arrive_once_each_and_a_stream_resumes_after_a_disconnect() {
    let root = tempfile::tempdir().unwrap();
    let cluster = start(root.path(), &[]).await;
    let c = Client::connect([cluster.nodes[0].addr.as_str()]).await.unwrap();
    let mut stream = c.watch(b"app/", None).await.unwrap();
    let started = stream.position().clone();
    assert_eq!(stream.nodes(), ["n1", "n2", "n3"], "the client follows every node");

    c.put(b"app/a", b"1", None, all()).await.unwrap();
    c.put(b"other/x", b"no", None, all()).await.unwrap();
    c.put(b"app/b", b"2", None, all()).await.unwrap();
    c.delete(b"app/a", None, all()).await.unwrap();
    let head = heads(&c).await;
    let events = drain_to(&mut stream, &head).await;

    let got = summary(&events);
    let want = [("app/a", false, vec!["1"]), ("app/b", false, vec!["2"]), ("app/a", true, vec![])];
    let want: Vec<(String, bool, Vec<String>)> =
        want.iter().map(|(k, d, v)| (k.to_string(), *d, v.iter().map(|s| s.to_string()).collect())).collect();
    assert_eq!(got.len(), 3, "each write once, none outside the prefix: {got:?}");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want.iter().cloned().collect::<BTreeSet<_>>(), "{got:?}");
    let a: Vec<bool> = got.iter().filter(|(k, _, _)| k == "app/a").map(|(_, d, _)| *d).collect();
    assert_eq!(a, [false, true], "per key, the put before the delete");
    let deleted = events.iter().find(|e| e.deleted).unwrap();
    assert!(deleted.siblings.iter().all(|s| s.tombstone) && !deleted.siblings.is_empty(), "a delete is a tombstone sibling");
    let put_b = events.iter().find(|e| e.key == b"app/b").unwrap();
    let read = c.get(b"app/b", all()).await.unwrap();
    assert_eq!(put_b.context, read.context, "the event's context is the one a get returns");

    // Every replica emitted app/b; the client delivered it once.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let id = format!("n{}", i + 1);
        let raw = raw_events(&node.addr, b"app/", started.node(&id).unwrap(), head.node(&id).unwrap().seq).await;
        assert_eq!(raw.iter().filter(|e| e.key == b"app/b").count(), 1, "{id} streamed app/b itself: {raw:?}");
    }

    // Disconnect, write, resume from the position (through its token).
    let token = stream.position().to_token();
    drop(stream);
    c.put(b"app/c", b"3", None, all()).await.unwrap();
    c.delete(b"app/b", None, all()).await.unwrap();
    c.put(b"other/y", b"no", None, all()).await.unwrap();
    let head = heads(&c).await;
    let mut resumed = c.watch(b"app/", Some(WatchPosition::from_token(&token).unwrap())).await.unwrap();
    let got = summary(&drain_to(&mut resumed, &head).await);
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        [("app/b".to_string(), true, vec![]), ("app/c".to_string(), false, vec!["3".to_string()])].into_iter().collect(),
        "exactly what happened while disconnected"
    );

    // The CLI prints the same stream: resume from the token, two events.
    let out = cli(&cluster.nodes[1].addr, &["--json", "watch", "app/", "--resume", &token, "--count", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys: BTreeSet<(String, bool)> =
        lines.iter().map(|l| (l["key"].as_str().unwrap().to_string(), l["deleted"].as_bool().unwrap())).collect();
    assert_eq!(keys, [("app/b".to_string(), true), ("app/c".to_string(), false)].into_iter().collect(), "{lines:?}");
    assert!(lines.iter().all(|l| l["position"].as_str().unwrap().starts_with("w1.")));
}

/// Resuming from `position` fails with `ResyncRequired`: at once, or, when
/// the node that cannot resume was slow to answer, as the stream's first
/// error.
async fn expect_resync(c: &Client, position: WatchPosition, why: &str) -> String {
    let e = match c.watch(b"r/", Some(position)).await {
        Err(e) => e,
        Ok(mut stream) => first_error(&mut stream, why).await,
    };
    match e {
        Error::ResyncRequired(m) => {
            assert!(m.contains("scan"), "{why}: the message says what to do: {m}");
            m
        }
        e => panic!("{why}: expected ResyncRequired, got {e:?}"),
    }
}

/// The first error a stream yields (events before it are skipped).
async fn first_error(stream: &mut WatchStream, why: &str) -> Error {
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "{why}: the stream never reported an error");
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Err(e))) => return e,
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(None) => panic!("{why}: the stream ended without an error"),
        }
    }
}

async fn wait_all_up(c: &Client) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(s) = c.status().await {
            if s.nodes.iter().filter(|n| n.state == "normal" && n.liveness == "up").count() == 3 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_evicted_from_the_log_or_from_before_a_restart_asks_for_a_resync() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = start(root.path(), &["--watch-log-changes", "20"]).await;
    let c = Client::connect([cluster.nodes[0].addr.as_str()]).await.unwrap();

    let old = c.watch(b"r/", None).await.unwrap().position().clone();
    for i in 0..50 {
        c.put(format!("r/{i}").as_bytes(), b"v", None, all()).await.unwrap();
    }
    let m = expect_resync(&c, old.clone(), "evicted").await;
    assert!(m.contains("older than the change log reaches"), "{m}");
    let out = cli(&cluster.nodes[0].addr, &["watch", "r/", "--resume", &old.to_token()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resync required"), "{}", String::from_utf8_lossy(&out.stderr));

    // A live stream, and a position taken before n2 restarts.
    let mut live = c.watch(b"r/", None).await.unwrap();
    let before = live.position().clone();
    let t0 = Instant::now();
    cluster.restart(1).unwrap();
    wait_all_up(&c).await;
    let n2 = Client::connect([cluster.nodes[1].addr.as_str()]).await.unwrap();
    while n2.status().await.is_err() {
        assert!(t0.elapsed() < DEADLINE, "n2 did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = expect_resync(&c, before, "restarted").await;
    assert!(m.contains("restarted") && m.contains("n2"), "{m}");
    // The live stream reconnects to n2 from its last position, which n2's
    // new incarnation cannot serve: the stream ends with the resync error.
    let ended = first_error(&mut live, "live stream").await;
    assert!(matches!(ended, Error::ResyncRequired(_)), "{ended:?}");
    assert!(live.next().await.is_none(), "and then ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_does_not_block_writes_and_is_told_to_resync_and_watches_are_capped() {
    let root = tempfile::tempdir().unwrap();
    let cluster = start(root.path(), &["--watch-log-changes", "100", "--max-watches", "1"]).await;
    let c = Client::connect([cluster.nodes[0].addr.as_str()]).await.unwrap();
    let mut stalled = c.watch(b"s/", None).await.unwrap();

    // The cap: every node serves its one watch already.
    match c.watch(b"s/", None).await {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains("max_watches"), "{e}"),
        Err(e) => panic!("expected Unavailable naming max_watches, got {e:?}"),
        Ok(_) => panic!("a second watch got past max_watches 1"),
    }

    // Nobody reads `stalled` while 1,000 writes of 16 KiB go in (16 MB,
    // more than HTTP/2 windows and socket buffers hold): each one still
    // succeeds within its deadline.
    let value = vec![b'x'; 16 * 1024];
    for i in 0..1000 {
        let opts = Options { level: Level::Quorum, timeout: Some(Duration::from_secs(2)), ..Default::default() };
        c.put(format!("s/{i:04}").as_bytes(), &value, None, opts).await.unwrap_or_else(|e| panic!("write {i} failed: {e}"));
    }
    // Reading now: what was buffered, then the resync error, well before
    // all 1,000 (the logs keep 100 changes).
    let deadline = Instant::now() + DEADLINE;
    let mut delivered = 0;
    let err = loop {
        assert!(Instant::now() < deadline, "no resync error after {delivered} events");
        match tokio::time::timeout(Duration::from_millis(200), stalled.next()).await {
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("ended without an error"),
            Err(_) => {}
        }
    };
    assert!(matches!(err, Error::ResyncRequired(_)), "{err:?}");
    assert!(delivered < 1000, "a stalled watcher is not buffered in full: {delivered}");
    drop(stalled);
    // Its slots are free again once the streams are gone.
    let deadline = Instant::now() + DEADLINE;
    while c.watch(b"s/", None).await.is_err() {
        assert!(Instant::now() < deadline, "the watch slots were never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
