//! The bad-peer corpus: every malformed or hostile call of issue #14 item 7
//! ("Peers that distrust"), sent to one in-process node over real gRPC;
//! and the switches that guard a node from its callers (items 5 and 6:
//! fault injection off by default, per-client rate limits).
//!
//! Each call must get a clear status (its code, and a message naming what
//! was wrong), the node must keep serving, and no stored data may be lost
//! or changed: the keys written before the corpus read back byte for byte,
//! and the keys the corpus aimed at stay absent. A far-future timestamp
//! must not move the node's HLC either: a write after it is stamped near
//! the wall clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_node::coordinator::encode_context;
use ringkv_node::record;
use ringkv_node::version::{Context, DvvSet, Entry, Hlc, Sibling};
use ringkv_node::{Config, Env};
use ringkv_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

/// The limits the node under test runs with, small so the corpus is cheap.
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 1024;
const SKEW_MS: u64 = 500;
/// Far enough ahead that no honest clock could have stamped it.
const AN_HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

struct Node {
    id: String,
    peer: pb::peer_client::PeerClient<Channel>,
    kv: pb::kv_client::KvClient<Channel>,
    admin: pb::admin_client::AdminClient<Channel>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A one-node cluster in this process, on memory storage, serving.
async fn start() -> Node {
    start_with(|_| {}).await
}

/// [`start`] with `adjust` applied to the config first.
async fn start_with(adjust: impl FnOnce(&mut Config)) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let addr = format!("127.0.0.1:{port}");
    let config = Config {
        listen: addr.clone(),
        seeds: vec![addr.clone()],
        data_dir: dir.path().into(),
        replication_factor: 1,
        storage: ringkv_node::Engine::Memory,
        max_key_bytes: MAX_KEY,
        max_value_bytes: MAX_VALUE,
        max_clock_skew: std::time::Duration::from_millis(SKEW_MS),
        ..Default::default()
    };
    let mut config = config;
    adjust(&mut config);
    let stop = CancellationToken::new();
    tokio::spawn(ringkv_node::run(config.clone(), Env::real(&config), stop.clone()));
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
    let mut node = Node {
        id: config.id.clone(),
        peer: pb::peer_client::PeerClient::new(channel.clone()),
        kv: pb::kv_client::KvClient::new(channel.clone()),
        admin: pb::admin_client::AdminClient::new(channel),
        stop,
        _dir: dir,
    };
    let t0 = Instant::now();
    while node.kv.put(put(b"ready", b"yes", None)).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the node did not start serving within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node
}

fn put(key: &[u8], value: &[u8], context: Option<Vec<u8>>) -> pb::PutRequest {
    let options = pb::RequestOptions { consistency: pb::Consistency::One as i32, ..Default::default() };
    pb::PutRequest { key: key.to_vec(), value: value.to_vec(), context, options: Some(options), ttl_ms: 0 }
}

fn get(key: &[u8]) -> pb::GetRequest {
    pb::GetRequest {
        key: key.to_vec(),
        options: Some(pb::RequestOptions { consistency: pb::Consistency::One as i32, ..Default::default() }),
    }
}

/// A version with one entry for `actor`, `counter` dots issued, and the
/// given siblings (newest first).
fn version(actor: &str, counter: u64, siblings: Vec<Sibling>) -> DvvSet {
    DvvSet { entries: BTreeMap::from([(actor.to_string(), Entry { counter, siblings })]), floor: None }
}

fn sib(wall_ms: u64, value: &[u8]) -> Sibling {
    Sibling { hlc: Hlc { wall_ms, logical: 0, node: "mallory".into() }, value: value.to_vec(), tombstone: false, expires_at_ms: None }
}

/// A well-formed version of one sibling, stamped `wall_ms`.
fn one(wall_ms: u64, value: &[u8]) -> DvvSet {
    version("mallory@1", 1, vec![sib(wall_ms, value)])
}

fn kv(key: &[u8], v: &DvvSet) -> pb::KeyVersion {
    pb::KeyVersion { key: key.to_vec(), version: record::encode(v) }
}

/// Checks for a refusal with `code` whose message contains `says`; any
/// other outcome is added to `wrong`, so one run lists every case missed.
fn refused<T: std::fmt::Debug>(wrong: &mut Vec<String>, what: &str, r: Result<tonic::Response<T>, tonic::Status>, code: Code, says: &str) {
    let problem = match r {
        Ok(ok) => format!("{what}: accepted ({:?}); expected {code:?}", ok.into_inner()),
        Err(s) if s.code() != code => format!("{what}: {:?} ({}); expected {code:?}", s.code(), s.message()),
        Err(s) if !s.message().contains(says) => format!("{what}: the message {:?} does not say {says:?}", s.message()),
        Err(_) => return,
    };
    wrong.push(problem);
}

async fn raw(node: &mut Node, key: &[u8]) -> Option<Vec<u8>> {
    node.peer.read(pb::ReadRequest { key: key.to_vec() }).await.expect("Peer.Read").into_inner().version
}

/// The largest wall time stamped on `key`'s stored siblings.
async fn newest_wall_ms(node: &mut Node, key: &[u8]) -> u64 {
    let got = node.kv.get(get(key)).await.expect("get").into_inner();
    got.siblings.iter().filter_map(|s| s.hlc.as_ref()).map(|h| h.wall_ms).max().expect("a sibling")
}

/// The node's own ranges, each with a built Merkle tree.
async fn a_range(node: &mut Node) -> pb::RangeRef {
    let t0 = Instant::now();
    loop {
        let roots = node.admin.roots(pb::RootsRequest {}).await.expect("roots").into_inner();
        if let Some(r) = roots.ranges.first() {
            let range = pb::RangeRef { start: r.start, end: r.end };
            let ready = node.peer.merkle_nodes(pb::MerkleNodesRequest { range: Some(range), level: 0, indices: vec![0] }).await;
            if ready.is_ok_and(|r| r.into_inner().ready) {
                return range;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no built Merkle tree within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peer_corpus_gets_clear_refusals_and_changes_no_stored_data() {
    tokio::time::timeout(Duration::from_secs(120), corpus()).await.expect("the corpus finished within 120 s");
}

async fn corpus() {
    let mut node = start().await;
    let me = node.id.clone();
    let mut wrong = Vec::new();
    // Data that must survive every call below unchanged.
    node.kv.put(put(b"kept", b"precious", None)).await.expect("put kept");
    let del = pb::DeleteRequest { key: b"gone".to_vec(), context: None, options: put(b"", b"", None).options };
    node.kv.delete(del).await.expect("delete gone");
    let kept_before = raw(&mut node, b"kept").await.expect("kept is stored");
    let gone_before = raw(&mut node, b"gone").await.expect("the tombstone is stored");
    let far = now_ms() + AN_HOUR_MS;
    let range = a_range(&mut node).await;

    // --- Versions, on every path a peer can push them. ---
    let future = one(far, b"from the future");
    let malformed = version("mallory@1", 1, vec![sib(now_ms(), b"a"), sib(now_ms(), b"b")]);
    let at_max = version("mallory@1", u64::MAX, vec![sib(now_ms(), b"max")]);
    let too_big = one(now_ms(), &vec![7u8; MAX_VALUE + 1]);
    let long_key = vec![b'k'; MAX_KEY + 1];
    let ok = one(now_ms(), b"fine");
    let expired_before_written = version("mallory@1", 1, vec![Sibling { expires_at_ms: Some(now_ms() - 1), ..sib(now_ms(), b"ttl") }]);
    let bad_versions: [(&str, &[u8], &DvvSet, Code, &str); 6] = [
        ("an expiry before its write", b"kept", &expired_before_written, Code::InvalidArgument, "expiry"),
        ("far-future timestamp", b"kept", &future, Code::FailedPrecondition, "clock skew"),
        ("more siblings than dots", b"kept", &malformed, Code::InvalidArgument, "siblings"),
        ("counter at u64::MAX", b"kept", &at_max, Code::InvalidArgument, "counter"),
        ("value over max_value_bytes", b"big", &too_big, Code::InvalidArgument, "max_value_bytes"),
        ("key over max_key_bytes", &long_key, &ok, Code::InvalidArgument, "max_key_bytes"),
    ];
    for (what, key, v, code, says) in bad_versions {
        let req = pb::ReplicateRequest { key: key.to_vec(), version: record::encode(v), from: "mallory".into() };
        refused(&mut wrong, &format!("Replicate, {what}"), node.peer.replicate(req.clone()).await, code, says);

        let batch = pb::ReplicateBatchRequest { items: vec![req] };
        let results = node.peer.replicate_batch(batch).await.expect("ReplicateBatch answers per item").into_inner().results;
        if results[0].code != code as i32 {
            wrong.push(format!("ReplicateBatch, {what}: code {} ({}); expected {code:?}", results[0].code, results[0].message));
        }

        // A good key in the same page is not merged either: the page is refused whole.
        let push = pb::PushKeysRequest { from: "mallory".into(), entries: vec![kv(b"innocent", &ok), kv(key, v)] };
        refused(&mut wrong, &format!("PushKeys, {what}"), node.peer.push_keys(push).await, code, says);

        let hint = pb::StoreHintRequest { target: me.clone(), key: key.to_vec(), version: record::encode(v), from: "mallory".into() };
        refused(&mut wrong, &format!("StoreHint, {what}"), node.peer.store_hint(hint).await, code, says);
    }
    let ghost =
        pb::StoreHintRequest { target: "ghost".into(), key: b"haunt".to_vec(), version: record::encode(&ok), from: "mallory".into() };
    refused(&mut wrong, "StoreHint for a made-up target", node.peer.store_hint(ghost).await, Code::InvalidArgument, "ghost");

    // --- RPC arguments that would build enormous answers. ---
    let many = pb::MerkleNodesRequest { range: Some(range), level: 2, indices: (0..100_000).collect() };
    refused(&mut wrong, "MerkleNodes with 100,000 indices", node.peer.merkle_nodes(many).await, Code::InvalidArgument, "indices");
    let deep = pb::MerkleNodesRequest { range: Some(range), level: 9, indices: vec![0] };
    refused(&mut wrong, "MerkleNodes below the leaves", node.peer.merkle_nodes(deep).await, Code::InvalidArgument, "level");
    let off_tree = pb::MerkleNodesRequest { range: Some(range), level: 1, indices: vec![8] };
    refused(&mut wrong, "MerkleNodes past a level's width", node.peer.merkle_nodes(off_tree).await, Code::InvalidArgument, "index");
    let leaf = pb::LeafDigestRequest { range: Some(range), leaf: u32::MAX };
    refused(&mut wrong, "LeafDigest with a huge leaf", node.peer.leaf_digest(leaf).await, Code::InvalidArgument, "leaf");
    let keys = pb::FetchKeysRequest { keys: (0..100_000u32).map(|i| i.to_be_bytes().to_vec()).collect() };
    refused(&mut wrong, "FetchKeys with 100,000 keys", node.peer.fetch_keys(keys).await, Code::InvalidArgument, "keys");
    let fetch = pb::FetchRangeRequest { start_token: 0, end_token: 0, start_after: vec![], limit: 5_000_000 };
    refused(&mut wrong, "FetchRange with a huge limit", node.peer.fetch_range(fetch).await, Code::InvalidArgument, "limit");
    let scan = pb::ScanLocalRequest { prefix: vec![], start_after: vec![], limit: 5_000_000 };
    refused(&mut wrong, "ScanLocal with a huge limit", node.peer.scan_local(scan).await, Code::InvalidArgument, "limit");
    let purge = pb::PurgeRequest { range: Some(pb::RangeRef { start: 0, end: 0 }), cutoff_wall_ms: u64::MAX };
    refused(&mut wrong, "Purge with a cutoff in the future", node.peer.purge(purge).await, Code::InvalidArgument, "cutoff");

    // --- TTLs: on a forwarded delete, and past the maximum. ---
    let delete_with_ttl = pb::ForwardWriteRequest {
        key: b"kept".to_vec(),
        tombstone: true,
        ttl_ms: 1_000,
        options: put(b"", b"", None).options,
        from: "mallory".into(),
        ..Default::default()
    };
    refused(
        &mut wrong,
        "ForwardWrite of a delete with a TTL",
        node.peer.forward_write(delete_with_ttl).await,
        Code::InvalidArgument,
        "delete",
    );
    let forever = pb::PutRequest { ttl_ms: u64::MAX, ..put(b"kept", b"lost?", None) };
    refused(&mut wrong, "Put with a TTL of u64::MAX ms", node.kv.put(forever).await, Code::InvalidArgument, "maximum");

    // --- Client contexts. ---
    let ctx_bytes = node.kv.get(get(b"kept")).await.expect("get kept").into_inner().context;
    let ctx: Context = record::decode(b"<context>", &ctx_bytes).expect("a context");
    let actor = ctx.keys().find(|a| a.starts_with(&format!("{me}@"))).expect("the coordinator's actor").clone();
    let overflow = Context::from([(actor.clone(), u64::MAX)]);
    refused(
        &mut wrong,
        "Put with a u64::MAX context",
        node.kv.put(put(b"kept", b"lost?", Some(encode_context(&overflow)))).await,
        Code::InvalidArgument,
        "context",
    );
    let crowd: Context = (0..5_000).map(|i| (format!("x{i}@1"), 1)).collect();
    refused(
        &mut wrong,
        "Put with 5,000 context entries",
        node.kv.put(put(b"kept", b"lost?", Some(encode_context(&crowd)))).await,
        Code::InvalidArgument,
        "context",
    );

    // --- The node still serves, and nothing stored changed. ---
    assert!(wrong.is_empty(), "{} call(s) not refused as expected:\n{}", wrong.len(), wrong.join("\n"));
    node.peer.ping(pb::PingRequest {}).await.expect("still answers pings");
    assert_eq!(raw(&mut node, b"kept").await, Some(kept_before), "kept is unchanged");
    assert_eq!(raw(&mut node, b"gone").await, Some(gone_before), "the tombstone was not purged");
    for key in [b"big".as_slice(), &long_key, b"innocent", b"haunt"] {
        assert_eq!(raw(&mut node, key).await, None, "{} was never stored", String::from_utf8_lossy(key));
    }
    let hints = node.admin.hints(pb::HintsRequest {}).await.expect("hints").into_inner();
    assert!(hints.targets.is_empty(), "no hint was stored: {:?}", hints.targets);
    // A write to the key the far-future version aimed at is stamped now.
    node.kv.put(put(b"kept", b"later", None)).await.expect("kept still takes writes");
    assert!(newest_wall_ms(&mut node, b"kept").await <= now_ms() + SKEW_MS, "the HLC did not jump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_push_is_rejected_and_does_not_move_the_hlc() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut node = start().await;
        let mut wrong = Vec::new();
        let push = pb::PushKeysRequest { from: "mallory".into(), entries: vec![kv(b"clock", &one(now_ms() + AN_HOUR_MS, b"future"))] };
        refused(&mut wrong, "PushKeys, far-future timestamp", node.peer.push_keys(push).await, Code::FailedPrecondition, "clock skew");
        assert!(wrong.is_empty(), "{wrong:?}");
        assert_eq!(raw(&mut node, b"clock").await, None, "nothing stored");
        // Every later write, to that key or another, is stamped near the wall clock.
        for key in [b"clock".as_slice(), b"other"] {
            node.kv.put(put(key, b"now", None)).await.expect("put");
            let stamped = newest_wall_ms(&mut node, key).await;
            assert!(
                stamped <= now_ms() + SKEW_MS,
                "{}: stamped {} ms ahead",
                String::from_utf8_lossy(key),
                stamped.saturating_sub(now_ms())
            );
        }
    })
    .await
    .expect("finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_names_no_actor_the_key_does_not_have() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut node = start().await;
        node.kv.put(put(b"cart", b"v1", None)).await.expect("put");
        let ctx_bytes = node.kv.get(get(b"cart")).await.expect("get").into_inner().context;
        let mut ctx: Context = record::decode(b"<context>", &ctx_bytes).expect("a context");
        let real: Vec<String> = ctx.keys().cloned().collect();
        ctx.insert("ghost@1".into(), 7);
        let resp = node.kv.put(put(b"cart", b"v2", Some(encode_context(&ctx)))).await.expect("a write with a padded context").into_inner();
        let after: Context = record::decode(b"<context>", &resp.context).expect("a context");
        assert_eq!(after.keys().cloned().collect::<Vec<_>>(), real, "no clock entry for an actor the key never had");
        let got = node.kv.get(get(b"cart")).await.expect("get").into_inner();
        let values: Vec<&[u8]> = got.siblings.iter().map(|s| s.value.as_slice()).collect();
        assert_eq!(values, [b"v2".as_slice()], "the real part of the context still supersedes v1");
    })
    .await
    .expect("finished within 60 s");
}

/// Issue #14 item 5: `SetFault` and `SetClock` cut links and step clocks,
/// so a node refuses them unless it was started with
/// `--enable-fault-injection`. Listing the rules changes nothing and stays
/// open.
#[tokio::test]
async fn fault_injection_is_refused_unless_the_node_was_started_with_it() {
    let mut off = start().await;
    let block = pb::FaultRule { peer: "n2".into(), block: true, ..Default::default() };
    let refused = off.admin.set_fault(pb::SetFaultRequest { rules: vec![block.clone()], clear: false }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("--enable-fault-injection"), "the message says how to turn it on: {}", refused.message());
    let cleared = off.admin.set_fault(pb::SetFaultRequest { rules: vec![], clear: true }).await.unwrap_err();
    assert_eq!(cleared.code(), Code::FailedPrecondition);
    let stepped = off.admin.set_clock(pb::SetClockRequest { offset_ms: 86_400_000 }).await.unwrap_err();
    assert_eq!(stepped.code(), Code::FailedPrecondition, "{stepped:?}");
    let listed = off.admin.set_fault(pb::SetFaultRequest::default()).await.expect("listing is allowed").into_inner();
    assert!(listed.rules.is_empty(), "nothing was set");
    // The refused clock step did not happen: writes are still stamped.
    off.kv.put(put(b"after", b"v", None)).await.expect("the node still takes writes");

    let mut on = start_with(|c| c.enable_fault_injection = true).await;
    let set = on.admin.set_fault(pb::SetFaultRequest { rules: vec![block], clear: false }).await.expect("enabled").into_inner();
    assert_eq!(set.rules.len(), 1);
    on.admin.set_clock(pb::SetClockRequest { offset_ms: 0 }).await.expect("enabled");
}

/// Issue #14 item 6: a burst past the per-client limit gets
/// `RESOURCE_EXHAUSTED` with a retry-after, nothing of the refused requests
/// is written, and the node stays healthy: after the wait it serves again.
#[tokio::test]
async fn a_burst_past_the_rate_limit_is_refused_with_a_retry_after_and_the_node_stays_healthy() {
    // `start` itself puts one key to see the node serve.
    let mut node = start_with(|c| {
        c.rate_limit_per_sec = 5;
        c.rate_limit_burst = 5;
    })
    .await;
    let mut refused = Vec::new();
    for i in 0..20 {
        if let Err(s) = node.kv.put(put(format!("burst-{i}").as_bytes(), b"v", None)).await {
            refused.push((i, s));
        }
    }
    assert!(refused.len() >= 10, "a 20-request burst against 5/s and a burst of 5: only {} refused", refused.len());
    for (_, s) in &refused {
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert_eq!(s.metadata().get("x-ringkv-kind").and_then(|v| v.to_str().ok()), Some("rate_limited"));
        let wait: u64 = s.metadata().get("x-ringkv-retry-after-ms").and_then(|v| v.to_str().ok()?.parse().ok()).expect("a retry-after");
        assert!((1..=1000).contains(&wait), "wait {wait} ms");
    }
    // After the wait, it serves again; and no refused put was written.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, _) in &refused {
        let got = node.kv.get(get(format!("burst-{i}").as_bytes())).await.expect("served after the wait").into_inner();
        assert!(got.siblings.is_empty(), "refused put burst-{i} was written");
        tokio::time::sleep(Duration::from_millis(210)).await;
    }
}
