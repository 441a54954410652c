//! Anti-entropy cost benchmark: two replicas with N keys, d of which
//! differ; one sync of every range; bytes exchanged against a full transfer.
//!
//! `cargo run --release -p ringkv-node --example antientropy_bytes [N...]`
//! (default N = 10000 100000 1000000; d = 0, 10, 1000 for each).
//!
//! Both stores are in memory and the peer is in-process (`LocalPeer`), so
//! the figures are the protocol's own bytes (encoded message sizes), with
//! no network. The ring is 3 nodes × 16 vnodes, so a replica holds 48
//! ranges, as in a real 3-node cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use ringkv_node::admit::Admit;
use ringkv_node::antientropy::sync::{sync_range, LocalPeer, RateLimit};
use ringkv_node::antientropy::Trees;
use ringkv_node::ring::{choose_tokens, Ring};
use ringkv_node::storage::MemoryStorage;
use ringkv_node::store::Store;
use ringkv_node::version::{Context, DvvSet, Hlc, HlcClock, Sibling};
use ringkv_node::{Config, Durability, SystemClock};
use ringkv_proto::v1 as pb;

fn ring() -> Ring {
    let mut all: Vec<(String, Vec<u64>)> = Vec::new();
    for i in 1..=3 {
        let r = Ring::new(all.iter().map(|(id, t)| (id.as_str(), t.as_slice())));
        all.push((format!("n{i}"), choose_tokens(&r, 16)));
    }
    Ring::new(all.iter().map(|(id, t)| (id.as_str(), t.as_slice())))
}

fn version(value: &str, wall: u64) -> DvvSet {
    let mut d = DvvSet::default();
    let s = Sibling {
        hlc: Hlc { wall_ms: wall, logical: 0, node: "n1".into() },
        value: value.as_bytes().to_vec(),
        tombstone: false,
        expires_at_ms: None,
    };
    d.update(&Context::new(), "n1", s, false).unwrap();
    d
}

fn store(ranges: &[(u64, u64)]) -> Store {
    let s = Store::new(Arc::new(MemoryStorage::default()), Durability::None, Duration::from_millis(1));
    s.rebuild_trees(ranges.to_vec()).expect("build");
    s
}

async fn sync_all(a: &Store, b: &Store) -> (u64, u64) {
    let (mut bytes, mut keys) = (0, 0);
    let hlc = Arc::new(HlcClock::new("n1", 500));
    let admit = Admit::new(&Config::default(), hlc, Arc::new(SystemClock::default()));
    for (start, end) in a.trees().ranges() {
        let o = sync_range(a, &admit, start, end, &LocalPeer(b, &admit), "n1", &mut RateLimit::new(0)).await.expect("sync");
        bytes += o.bytes_sent + o.bytes_received;
        keys += o.keys_repaired;
    }
    (bytes, keys)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000, 1_000_000] } else { sizes };
    let ranges = Trees::ranges_of(&ring(), "n1", 3);
    println!("{} ranges per replica; tree: {} bytes each", ranges.len(), ringkv_node::antientropy::merkle::RangeTree::memory_bytes());
    println!("{:>9} {:>6} {:>14} {:>14} {:>9} {:>10} {:>9}", "N", "d", "bytes", "full transfer", "% full", "sync ms", "repaired");
    for n in sizes {
        let (a, b) = (store(&ranges), store(&ranges));
        let mut full = 0u64;
        for i in 0..n {
            let key = format!("user:{i:012}");
            let v = version(&key, 1);
            a.merge(key.as_bytes(), &v).expect("merge");
            b.merge(key.as_bytes(), &v).expect("merge");
            let raw = a.read_raw(key.as_bytes()).expect("read").expect("present");
            full += pb::KeyVersion { key: key.into_bytes(), version: raw }.encoded_len() as u64 + 1;
        }
        let mut changed = 0;
        for d in [0usize, 10, 1000] {
            for j in 0..d {
                // Spread the divergent keys over the key space.
                let i = (changed + j) * 7919 % n;
                let key = format!("user:{i:012}");
                let newer = Sibling {
                    hlc: Hlc { wall_ms: 2 + (changed + j) as u64, logical: 0, node: "n2".into() },
                    value: b"newer".to_vec(),
                    tombstone: false,
                    expires_at_ms: None,
                };
                a.update(key.as_bytes(), |v| {
                    let ctx = v.context();
                    v.update(&ctx, "n2", newer, false)
                })
                .expect("update");
            }
            changed += d;
            let started = Instant::now();
            let (bytes, repaired) = sync_all(&a, &b).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            println!("{n:>9} {d:>6} {bytes:>14} {full:>14} {:>8.3}% {ms:>10.1} {repaired:>9}", bytes as f64 * 100.0 / full as f64);
        }
    }
}
