//! Bad input gets a clear error; the node keeps serving and loses nothing.

use std::io::Write;
use std::time::Duration;

use ringkv_client::{pb, Client, Error, Level, Options};
use ringkv_tests::process::NodeProc;

fn invalid(r: Result<impl std::fmt::Debug, Error>, wants: &str) {
    match r {
        Err(Error::InvalidArgument { message }) => assert!(message.contains(wants), "{message:?} should mention {wants:?}"),
        other => panic!("expected invalid argument mentioning {wants:?}, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_node_keeps_its_data() {
    let root = tempfile::tempdir().unwrap();
    let node =
        NodeProc::start(root.path(), "n1", None, &["--replication-factor", "1", "--max-key-bytes", "1024", "--max-value-bytes", "4096"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect([node.addr.as_str()]).await.unwrap();
        let one = Options::level(Level::One);
        c.put(b"keep", b"me", None, one).await.unwrap();

        invalid(c.put(b"", b"v", None, one).await, "key must not be empty");
        invalid(c.get(b"", one).await, "key must not be empty");
        invalid(c.put(&[b'k'; 1025], b"v", None, one).await, "limit is 1024 bytes (max_key_bytes)");
        invalid(c.put(b"k", &[0u8; 4097], None, one).await, "limit is 4096 bytes (max_value_bytes)");
        invalid(c.put(b"k", b"v", Some(b"not a context".to_vec()), one).await, "malformed context");

        // An unknown level, sent raw.
        let mut raw = pb::kv_client::KvClient::connect(format!("http://{}", node.addr)).await.unwrap();
        let status = raw
            .get(pb::GetRequest { key: b"k".to_vec(), options: Some(pb::RequestOptions { consistency: 99, ..Default::default() }) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("unknown consistency level 99"), "{}", status.message());

        // Garbage on the TCP port.
        let mut s = std::net::TcpStream::connect(&node.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff garbage \x16\x03\x01");
        drop(s);

        // Still serving, nothing lost.
        let got = c.get(b"keep", one).await.unwrap();
        assert_eq!(got.siblings[0].value, b"me");
        c.put(b"after", b"ok", None, one).await.unwrap();
        assert_eq!(c.get(b"after", one).await.unwrap().siblings[0].value, b"ok");
    });
}
