//! kill -9 a real node during a stream of acknowledged writes, restart it,
//! and check that every acknowledged write survived, for both disk engines
//! under `fsync` and `group` durability, behind the commit log (the
//! default, so the restart replays it) and, for redb, without it; and fjall,
//! whose own journal replays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_client::{Client, Level, Options};
use ringkv_tests::process::{wait_until, NodeProc};

/// Writes acknowledged before the kill; bounds the test's length.
const ACKED_BEFORE_KILL: usize = 300;

fn kill_9_keeps_every_acknowledged_write(storage: &str, durability: &str) {
    kill_9_keeps_every_acknowledged_write_with(storage, durability, "on");
}

fn kill_9_keeps_every_acknowledged_write_with(storage: &str, durability: &str, commit_log: &str) {
    let root = tempfile::tempdir().unwrap();
    let flags = ["--replication-factor", "1", "--storage", storage, "--durability", durability, "--commit-log", commit_log];
    let mut node = NodeProc::start(root.path(), "n1", None, &flags);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(Client::connect([node.addr.as_str()])).unwrap();
    let acked = Arc::new(AtomicUsize::new(0));

    // Writer: sequential puts; key i is recorded only once acknowledged.
    let writer = {
        let (client, acked) = (client.clone(), acked.clone());
        rt.spawn(async move {
            for i in 0..100_000usize {
                let key = format!("crash-{i:06}");
                match client.put(key.as_bytes(), key.as_bytes(), None, Options::level(Level::One)).await {
                    Ok(_) => acked.store(i + 1, Ordering::SeqCst),
                    Err(_) => break,
                }
            }
        })
    };
    wait_until("writes acknowledged", Duration::from_secs(60), || acked.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL);
    node.kill9();
    rt.block_on(writer).unwrap();
    let acknowledged = acked.load(Ordering::SeqCst);

    node.restart();
    let missing: Vec<usize> = rt.block_on(async {
        let client = Client::connect([node.addr.as_str()]).await.unwrap();
        let mut missing = Vec::new();
        for i in 0..acknowledged {
            let key = format!("crash-{i:06}");
            let got = client.get(key.as_bytes(), Options::level(Level::One)).await.expect("read after restart");
            if !got.siblings.iter().any(|s| s.value == key.as_bytes()) {
                missing.push(i);
            }
        }
        missing
    });
    assert!(
        missing.is_empty(),
        "{storage}/{durability}: {} of {acknowledged} acknowledged writes lost, first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        node.log()
    );
}

#[test]
fn redb_fsync_keeps_acknowledged_writes_across_kill_9() {
    kill_9_keeps_every_acknowledged_write("redb", "fsync");
}

#[test]
fn redb_group_keeps_acknowledged_writes_across_kill_9() {
    kill_9_keeps_every_acknowledged_write("redb", "group");
}

#[test]
fn redb_group_without_the_commit_log_keeps_acknowledged_writes_across_kill_9() {
    kill_9_keeps_every_acknowledged_write_with("redb", "group", "off");
}

#[test]
fn fjall_group_keeps_acknowledged_writes_across_kill_9() {
    kill_9_keeps_every_acknowledged_write("fjall", "group");
}

#[test]
fn fjall_fsync_keeps_acknowledged_writes_across_kill_9() {
    kill_9_keeps_every_acknowledged_write("fjall", "fsync");
}
