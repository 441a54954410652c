//! `Kv.Batch` and the client's coalescing, against real `ringkv serve`
//! processes on 127.0.0.1: concurrent requests through one client share
//! batch calls (the node's `ringkv_batches` counter moves, and by fewer
//! calls than requests), each keeps its own answer, receipt and error, and
//! a client with coalescing off sends none. On the wire, each item is
//! answered once by index, a bad item fails alone with its own call's
//! error, and the rate limit is charged per item.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use ringkv_client::{pb, Client, Error, Level, Options};
use ringkv_proto::v1::batch_item::Request as Item;
use ringkv_proto::v1::batch_result::Outcome;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_tests::process::{free_port, up_count, wait_until, NodeProc};
use ringkv_tests::scrape::scrape;

fn counter(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

fn at(level: Level) -> Option<pb::RequestOptions> {
    Some(pb::RequestOptions { consistency: level as i32, ..Default::default() })
}

fn one() -> Option<pb::RequestOptions> {
    at(Level::One)
}

fn put_item(key: &str, value: &str, level: Level) -> pb::BatchItem {
    pb::BatchItem {
        request: Some(Item::Put(pb::PutRequest { key: key.into(), value: value.into(), options: at(level), ..Default::default() })),
    }
}

/// Sends `items` as one raw `Kv.Batch` and collects the results by index.
async fn raw_batch(addr: &str, items: Vec<pb::BatchItem>) -> Result<BTreeMap<u32, Outcome>, tonic::Status> {
    let mut kv = KvClient::connect(format!("http://{addr}")).await.expect("connect");
    let mut results = kv.batch(pb::BatchRequest { items }).await?.into_inner();
    let mut out = BTreeMap::new();
    while let Some(r) = results.message().await? {
        assert!(out.insert(r.index, r.outcome.expect("every result has an outcome")).is_none(), "item {} answered twice", r.index);
    }
    Ok(out)
}

#[test]
fn concurrent_requests_share_batch_calls_and_each_keeps_its_own_answer() {
    let root = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let n1 = NodeProc::start(root.path(), "n1", None, &["--gossip-interval", "300ms", "--http-listen", &http]);
    let _n2 = NodeProc::start(root.path(), "n2", Some(&n1.addr), &["--gossip-interval", "300ms"]);
    let _n3 = NodeProc::start(root.path(), "n3", Some(&n1.addr), &["--gossip-interval", "300ms"]);
    wait_until("three nodes up", Duration::from_secs(30), || up_count(&n1.addr) == 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect([n1.addr.as_str()]).await.unwrap();
        let quorum = Options::level(Level::Quorum);
        // The ring may still be settling: one request at a time until a
        // QUORUM put goes through.
        let t0 = std::time::Instant::now();
        while client.put(b"warm-up", b"", None, quorum).await.is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "the cluster never took a QUORUM put");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = scrape(&http);

        // 300 puts at once, one of them at SERIAL (which Put refuses).
        let keys: Vec<String> = (0..300).map(|i| format!("b{i:03}")).collect();
        let puts = keys.iter().enumerate().map(|(i, k)| {
            let client = &client;
            async move {
                let opts = if i == 150 { Options::level(Level::Serial) } else { quorum };
                client.put(k.as_bytes(), format!("v-{k}").as_bytes(), None, opts).await
            }
        });
        let puts = join_all(puts).await;
        for (i, r) in puts.iter().enumerate() {
            if i == 150 {
                let e = r.as_ref().expect_err("a SERIAL put is refused");
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
                // The same error its own call gets.
                let alone = client.put(b"alone", b"v", None, Options::level(Level::Serial)).await.unwrap_err();
                assert_eq!(e.to_string(), alone.to_string());
                continue;
            }
            let receipt = r.as_ref().unwrap_or_else(|e| panic!("put {i}: {e}")).receipt.clone().expect("a receipt per put");
            assert!(receipt.acked >= 2 && receipt.required == 2, "put {i}: {receipt:?}");
        }

        // Every value reads back, each get with its own receipt.
        let gets = join_all(keys.iter().map(|k| client.get(k.as_bytes(), Options::level(Level::One)))).await;
        for (k, r) in keys.iter().zip(&gets) {
            let got = r.as_ref().unwrap_or_else(|e| panic!("get {k}: {e}"));
            if k == "b150" {
                assert!(got.siblings.is_empty(), "the refused put stored nothing");
                continue;
            }
            assert_eq!(got.siblings.iter().map(|s| s.value.clone()).collect::<Vec<_>>(), [format!("v-{k}").into_bytes()]);
            assert_eq!(got.receipt.as_ref().unwrap().required, 1);
        }
        let deletes = join_all(keys.iter().map(|k| client.delete(k.as_bytes(), None, quorum))).await;
        assert!(deletes.iter().all(Result::is_ok), "{:?}", deletes.iter().find(|r| r.is_err()));
        assert!(client.get(b"b001", quorum).await.unwrap().siblings.is_empty());

        let after = scrape(&http);
        let moved = |s: &str| counter(&after, s) - counter(&before, s);
        let (batches, items) = (moved("ringkv_batches_total"), moved("ringkv_batch_items_total"));
        assert!(batches >= 1.0, "900 concurrent requests to one node used no Kv.Batch");
        assert!(items > 2.0 * batches, "coalesced: {items} requests in {batches} calls");
        assert!(items <= 900.0);
        // Each item is still counted as its own request.
        assert_eq!(moved(r#"ringkv_requests_total{op="put",level="quorum",outcome="ok"}"#), 299.0);
        assert_eq!(moved(r#"ringkv_requests_total{op="get",level="one",outcome="ok"}"#), 300.0);

        // Coalescing off: the same load, not one batch.
        let plain = Client::connect([n1.addr.as_str()]).await.unwrap().coalescing(false);
        let before = scrape(&http);
        let puts = join_all(keys.iter().map(|k| plain.put(k.as_bytes(), b"again", None, quorum))).await;
        assert!(puts.iter().all(Result::is_ok));
        let after = scrape(&http);
        assert_eq!(counter(&after, "ringkv_batches_total"), counter(&before, "ringkv_batches_total"));
    });
}

#[test]
fn each_batch_item_is_answered_once_by_index_and_fails_alone_and_is_rate_limited_alone() {
    let root = tempfile::tempdir().unwrap();
    // One node: a burst of five requests per address, refilled at five a second.
    let node = NodeProc::start(root.path(), "n1", None, &["--rate-limit-per-sec", "5", "--rate-limit-burst", "5"]);
    wait_until("n1 up", Duration::from_secs(30), || up_count(&node.addr) == 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let items = vec![
            put_item("a", "1", Level::One),
            put_item("b", "2", Level::Serial),
            pb::BatchItem { request: None },
            pb::BatchItem {
                request: Some(Item::Delete(pb::DeleteRequest { key: b"a-missing".to_vec(), options: one(), ..Default::default() })),
            },
        ];
        let out = raw_batch(&node.addr, items).await.unwrap();
        assert_eq!(out.keys().copied().collect::<BTreeSet<u32>>(), (0..4).collect(), "every item answered");
        assert!(matches!(&out[&0], Outcome::Put(r) if r.receipt.as_ref().is_some_and(|r| r.acked == 1)), "{:?}", out[&0]);
        let Outcome::Error(e) = &out[&1] else { panic!("a SERIAL put fails: {:?}", out[&1]) };
        assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(e.metadata.get("x-ringkv-kind").map(String::as_str), Some("invalid_argument"), "{e:?}");
        let Outcome::Error(e) = &out[&2] else { panic!("an empty item fails: {:?}", out[&2]) };
        assert!(e.message.contains("holds no request"), "{e:?}");
        assert!(matches!(&out[&3], Outcome::Delete(_)), "a delete of a missing key is still a delete: {:?}", out[&3]);

        // An empty call is refused whole, and so is one past 1024 items,
        // each saying what to do.
        let empty = raw_batch(&node.addr, Vec::new()).await.unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert!(empty.message().contains("no items"), "{}", empty.message());
        let too_many = (0..1025).map(|i| put_item(&format!("k{i}"), "v", Level::One)).collect();
        let refused = raw_batch(&node.addr, too_many).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("at most 1024") && refused.message().contains("split"), "{}", refused.message());

        // The rate limit counts items, not calls: after the second it takes
        // to refill the burst, 20 items in one call get 5 (6 should another
        // 200 ms pass while they are admitted) through.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let out = raw_batch(&node.addr, (0..20).map(|i| put_item(&format!("r{i}"), "v", Level::One)).collect()).await.unwrap();
        let limited: Vec<&pb::BatchError> = out
            .values()
            .filter_map(|o| match o {
                Outcome::Error(e) => Some(e),
                _ => None,
            })
            .collect();
        assert!((14..=15).contains(&limited.len()), "5 of burst admitted: {} refused", limited.len());
        for e in limited {
            assert_eq!(e.metadata.get("x-ringkv-kind").map(String::as_str), Some("rate_limited"), "{e:?}");
            assert!(e.metadata.contains_key("x-ringkv-retry-after-ms"), "{e:?}");
        }
    });
}

/// A node from before `Kv.Batch`: every put is served alone, slowly
/// enough that concurrent ones queue; a batch is `Unimplemented`.
#[derive(Clone, Default)]
struct OldNode {
    puts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    batches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

type Unsupported<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl pb::kv_server::Kv for OldNode {
    type WatchStream = futures::stream::Empty<Result<pb::WatchResponse, tonic::Status>>;
    type BatchStream = futures::stream::Empty<Result<pb::BatchResult, tonic::Status>>;

    async fn put(&self, _: tonic::Request<pb::PutRequest>) -> Unsupported<pb::PutResponse> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let receipt = pb::Receipt { coordinator: "old".into(), acked: 1, required: 1, ..Default::default() };
        Ok(tonic::Response::new(pb::PutResponse { receipt: Some(receipt), ..Default::default() }))
    }
    async fn batch(&self, _: tonic::Request<pb::BatchRequest>) -> Unsupported<Self::BatchStream> {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(tonic::Status::unimplemented("this node predates Kv.Batch"))
    }
    async fn get(&self, _: tonic::Request<pb::GetRequest>) -> Unsupported<pb::GetResponse> {
        Err(tonic::Status::unimplemented("get"))
    }
    async fn delete(&self, _: tonic::Request<pb::DeleteRequest>) -> Unsupported<pb::DeleteResponse> {
        Err(tonic::Status::unimplemented("delete"))
    }
    async fn scan(&self, _: tonic::Request<pb::ScanRequest>) -> Unsupported<pb::ScanResponse> {
        Err(tonic::Status::unimplemented("scan"))
    }
    async fn cas(&self, _: tonic::Request<pb::CasRequest>) -> Unsupported<pb::CasResponse> {
        Err(tonic::Status::unimplemented("cas"))
    }
    async fn watch(&self, _: tonic::Request<pb::WatchRequest>) -> Unsupported<Self::WatchStream> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

#[test]
fn a_node_without_batch_gets_every_request_alone_and_no_more_batches() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let old = OldNode::default();
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder().add_service(pb::kv_server::KvServer::new(old.clone()));
        tokio::spawn(server.serve_with_incoming(incoming));

        let client = Client::connect([addr.as_str()]).await.unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let wave = || join_all(keys.iter().map(|k| client.put(k.as_bytes(), b"v", None, Options::level(Level::One))));
        let first = wave().await;
        assert!(first.iter().all(|r| r.as_ref().is_ok_and(|p| p.receipt.as_ref().unwrap().coordinator == "old")), "{first:?}");
        let puts = old.puts.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(puts, 40, "every put reached the old node alone, once");
        assert_eq!(old.batches.load(std::sync::atomic::Ordering::SeqCst), 1, "one batch was tried (40 puts at once queue)");
        // The link remembers: the next wave sends no batch at all.
        assert!(wave().await.iter().all(Result::is_ok));
        assert_eq!(old.batches.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(old.puts.load(std::sync::atomic::Ordering::SeqCst), 80);
    });
}
