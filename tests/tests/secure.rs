//! Security (#14), end to end over real sockets: TLS with the cluster CA,
//! mutual TLS between peers, tokens with roles, and the gate in front of
//! each surface.
//!
//! In-process nodes (`ringkv_node::run` on 127.0.0.1) carry the refusal
//! matrix; real `ringkv` processes carry what only a process can show: the
//! README's "Secure cluster" commands, and a token file re-read on SIGHUP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringkv_client::{Client, Credentials, Error, Level, Options};
use ringkv_node::security::ca::CaFiles;
use ringkv_node::security::identity::CertKind;
use ringkv_node::security::tokens::TokenFile;
use ringkv_node::{Config, Env};
use ringkv_proto::v1 as pb;
use ringkv_tests::process::{free_port, ringkv_bin, wait_until};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// The files of one secured test cluster, and the tokens it issued.
struct Files {
    dir: tempfile::TempDir,
    admin: String,
    writer: String,
    web: String,
    auditor: String,
}

impl Files {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = CaFiles::new(dir.path());
        ca.init().expect("CA");
        for n in ["n1", "n2", "n3"] {
            ca.issue(CertKind::Node, n, &[]).expect("node certificate");
        }
        ca.issue(CertKind::Client, "web", &[]).expect("client certificate");
        ca.issue(CertKind::Client, "stranger", &[]).expect("client certificate");
        // Another CA, and a "node" certificate it signed.
        let other = CaFiles::new(dir.path().join("other"));
        other.init().expect("other CA");
        other.issue(CertKind::Node, "n9", &[]).expect("foreign node certificate");
        other.issue(CertKind::Client, "web", &[]).expect("foreign client certificate");

        let mut tokens: TokenFile =
            toml::from_str("[roles.app]\nread = [\"app/\"]\nwrite = [\"app/\"]\n[roles.logs]\nread = [\"logs/\"]\n").expect("roles");
        let admin = tokens.add("ops", &["admin".into()]).expect("admin");
        let writer = tokens.add("writer", &["readwrite".into()]).expect("writer");
        let web = tokens.add("web", &["app".into()]).expect("web");
        let auditor = tokens.add("auditor", &["logs".into()]).expect("auditor");
        tokens.write(&dir.path().join("tokens.toml")).expect("token file");
        Self { dir, admin, writer, web, auditor }
    }

    fn client(&self, token: Option<&str>) -> Credentials {
        Credentials::from_files(Some(&self.path("ca.crt")), None, None, token.map(String::from)).expect("credentials")
    }
}

struct Node {
    addr: String,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An in-process node `id` with TLS from `files` (its certificate named
/// `cert`), tokens, and `seed` to join through.
fn start(files: &Files, id: &str, cert: &str, seed: Option<&str>, adjust: impl FnOnce(&mut Config)) -> Node {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut config = Config {
        id: id.into(),
        listen: addr.clone(),
        seeds: vec![seed.unwrap_or(&addr).to_string()],
        data_dir: files.path(&format!("data-{id}")),
        replication_factor: 1,
        storage: ringkv_node::Engine::Memory,
        gossip_interval: Duration::from_millis(100),
        tls_ca: Some(files.path("ca.crt")),
        tls_cert: Some(files.path(&format!("{cert}.crt"))),
        tls_key: Some(files.path(&format!("{cert}.key"))),
        tokens_file: Some(files.path("tokens.toml")),
        ..Default::default()
    };
    adjust(&mut config);
    let stop = CancellationToken::new();
    tokio::spawn(ringkv_node::run(config.clone(), Env::real(&config), stop.clone()));
    Node { addr, stop }
}

/// Polls until `check` passes, or fails the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not true within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one() -> Options {
    Options { level: Level::One, timeout: Some(Duration::from_secs(2)), ..Default::default() }
}

async fn serving(files: &Files, addr: &str) {
    let admin = Client::connect_with([addr], files.client(Some(&files.admin))).await.expect("client");
    eventually("the node serves puts", Duration::from_secs(20), || async { admin.put(b"app/warm", b"", None, one()).await.is_ok() }).await;
}

/// A raw Peer client over TLS, with an optional certificate and token.
fn peer_client(files: &Files, addr: &str, cert: Option<&str>, token: Option<&str>) -> pb::peer_client::PeerClient<ringkv_client::Channel> {
    let ca = std::fs::read(files.path("ca.crt")).expect("ca");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(name) = cert {
        let pem = |ext| std::fs::read(files.path(&format!("{name}.{ext}"))).expect("pem");
        tls = tls.identity(Identity::from_pem(pem("crt"), pem("key")));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls").connect_lazy();
    pb::peer_client::PeerClient::new(ringkv_client::Channel::new(ch, token).expect("channel"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_clients_without_the_cluster_ca_and_tokens_grant_only_their_roles() {
    let files = Files::make();
    let node = start(&files, "n1", "n1", None, |_| {});
    serving(&files, &node.addr).await;

    // TLS: plaintext, or trusting another CA, reaches nothing.
    let plain = Client::connect_with([node.addr.as_str()], Credentials::token(files.admin.clone())).await.unwrap();
    assert!(plain.get(b"app/x", one()).await.is_err(), "a plaintext client is refused by a TLS node");
    let foreign = Credentials::from_files(Some(&files.path("other/ca.crt")), None, None, Some(files.admin.clone())).unwrap();
    let foreign = Client::connect_with([node.addr.as_str()], foreign).await.unwrap();
    match foreign.get(b"app/x", one()).await {
        Err(Error::Connect { message, .. }) => assert!(message.contains("certificate"), "{message}"),
        other => panic!("a client trusting another CA must not connect: {other:?}"),
    }
    let with_foreign_cert =
        Credentials::from_files(Some(&files.path("ca.crt")), Some(&files.path("other/web.crt")), Some(&files.path("other/web.key")), None)
            .unwrap();
    let with_foreign_cert = Client::connect_with([node.addr.as_str()], with_foreign_cert).await.unwrap();
    assert!(with_foreign_cert.get(b"app/x", one()).await.is_err(), "a client certificate from another CA is refused");

    // Tokens: none, or an unknown one, is UNAUTHENTICATED.
    let anonymous = Client::connect_with([node.addr.as_str()], files.client(None)).await.unwrap();
    assert!(matches!(anonymous.get(b"app/x", one()).await, Err(Error::Unauthenticated { .. })));
    let unknown = Client::connect_with([node.addr.as_str()], files.client(Some("rkv_not_a_token"))).await.unwrap();
    assert!(matches!(unknown.get(b"app/x", one()).await, Err(Error::Unauthenticated { .. })));

    // A read-only token cannot write; it reads inside its prefix only.
    let auditor = Client::connect_with([node.addr.as_str()], files.client(Some(&files.auditor))).await.unwrap();
    match auditor.put(b"logs/1", b"x", None, one()).await {
        Err(Error::PermissionDenied { message }) => assert!(message.contains("write") && message.contains("auditor"), "{message}"),
        other => panic!("a read-only token wrote: {other:?}"),
    }
    assert!(auditor.get(b"logs/1", one()).await.is_ok());

    // A prefix token reads and writes inside its prefix, nowhere else.
    let web = Client::connect_with([node.addr.as_str()], files.client(Some(&files.web))).await.unwrap();
    web.put(b"app/1", b"hello", None, one()).await.expect("write inside the prefix");
    assert_eq!(web.get(b"app/1", one()).await.unwrap().siblings[0].value, b"hello");
    let writer = Client::connect_with([node.addr.as_str()], files.client(Some(&files.writer))).await.unwrap();
    writer.put(b"other/1", b"secret", None, one()).await.expect("readwrite writes anywhere");
    match web.get(b"other/1", one()).await {
        Err(Error::PermissionDenied { message }) => assert!(message.contains("read") && message.contains("other/1"), "{message}"),
        other => panic!("a prefix token read outside its prefix: {other:?}"),
    }
    assert!(matches!(web.delete(b"other/1", None, one()).await, Err(Error::PermissionDenied { .. })));
    // Forty requests at once travel in Kv.Batch calls (two calls out, the
    // rest queued): each item is still authorized on its own key, so the
    // ones outside the grant fail alone.
    let keys: Vec<String> = (0..40).map(|i| if i % 2 == 0 { format!("app/c{i}") } else { format!("other/c{i}") }).collect();
    let puts = futures::future::join_all(keys.iter().map(|k| web.put(k.as_bytes(), b"v", None, one()))).await;
    for (k, r) in keys.iter().zip(&puts) {
        match (k.starts_with("app/"), r) {
            (true, Ok(_)) => {}
            (false, Err(Error::PermissionDenied { message })) => assert!(message.contains(k.as_str()), "{message}"),
            other => panic!("{k}: {other:?}"),
        }
    }
    let refused = futures::future::join_all((0..10).map(|_| anonymous.get(b"app/c0", one()))).await;
    assert!(refused.iter().all(|r| matches!(r, Err(Error::Unauthenticated { .. }))), "{refused:?}");
    assert!(matches!(web.scan(b"", b"", 10, one()).await, Err(Error::PermissionDenied { .. })), "a scan wider than the grant");
    // A watch is gated like a scan: read on its whole prefix.
    match web.watch(b"", None).await.err() {
        Some(Error::PermissionDenied { message }) => assert!(message.contains("prefix"), "{message}"),
        other => panic!("a watch wider than the grant: {other:?}"),
    }
    web.watch(b"app/", None).await.expect("a watch inside the grant");
    assert_eq!(writer.get(b"other/1", one()).await.unwrap().siblings[0].value, b"secret", "nothing was lost to the refusals");

    // Admin needs admin: a write token is denied, naming what it lacks...
    match writer.inspect(b"other/1").await {
        Err(Error::PermissionDenied { message }) => assert!(message.contains("admin"), "{message}"),
        other => panic!("a write token called Admin.Inspect: {other:?}"),
    }
    // ...except the cluster view routing needs, so a policy-driven client
    // with an ordinary token discovers the ring and routes to replicas.
    assert!(writer.status().await.is_ok() && writer.ring().await.is_ok());
    let routed = Client::builder()
        .endpoints([node.addr.as_str()])
        .policy(Box::new(ringkv_client::policy::TokenAware::new(Box::new(ringkv_client::policy::LeastOutstanding))))
        .credentials(files.client(Some(&files.web)))
        .build()
        .await
        .expect("a prefix token discovers the ring");
    assert_eq!(routed.get(b"app/1", one()).await.unwrap().siblings[0].value, b"hello");
    let ops = Client::connect_with([node.addr.as_str()], files.client(Some(&files.admin))).await.unwrap();
    assert!(ops.status().await.is_ok());
    assert!(ops.get(b"logs/1", one()).await.is_ok(), "admin reads everything");

    // Peer needs a node certificate: a client certificate or a token is denied, nothing is unknown.
    for (cert, token, who) in [(Some("web"), None, "client certificate"), (None, Some(files.admin.as_str()), "admin token")] {
        let status = peer_client(&files, &node.addr, cert, token).ping(pb::PingRequest {}).await.expect_err(who);
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        assert!(status.message().contains("peer"), "{who}: {}", status.message());
    }
    let status = peer_client(&files, &node.addr, None, None).ping(pb::PingRequest {}).await.expect_err("anonymous");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(peer_client(&files, &node.addr, Some("n2"), None).ping(pb::PingRequest {}).await.is_ok(), "a node certificate may");
    // A certificate for a principal with no entry in the token file.
    let stranger =
        Credentials::from_files(Some(&files.path("ca.crt")), Some(&files.path("stranger.crt")), Some(&files.path("stranger.key")), None)
            .unwrap();
    let stranger = Client::connect_with([node.addr.as_str()], stranger).await.unwrap();
    assert!(matches!(stranger.get(b"app/1", one()).await, Err(Error::Unauthenticated { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_certificate_of_the_cluster_ca_joins() {
    let files = Files::make();
    let n1 = start(&files, "n1", "n1", None, |c| c.replication_factor = 3);
    serving(&files, &n1.addr).await;
    let ops = Client::connect_with([n1.addr.as_str()], files.client(Some(&files.admin))).await.unwrap();
    let members = |c: &Client| {
        let c = c.clone();
        async move { c.status().await.map(|s| s.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>()).unwrap_or_default() }
    };

    // Each impostor dials n1 for the whole window below.
    // - plaintext, without any certificate:
    let plaintext = start(&files, "n4", "n2", Some(&n1.addr), |c| {
        c.tls_ca = None;
        c.tls_cert = None;
        c.tls_key = None;
        c.tokens_file = None;
    });
    // - a client certificate of the cluster CA, not a node's:
    let client_cert = start(&files, "n5", "web", Some(&n1.addr), |_| {});
    // - a node certificate of another CA:
    let foreign = start(&files, "n9", "n9", Some(&n1.addr), |c| {
        c.tls_ca = Some(files.path("other/ca.crt"));
        c.tls_cert = Some(files.path("other/n9.crt"));
        c.tls_key = Some(files.path("other/n9.key"));
    });
    // And a real node, as the control: it must join while they may not.
    let n2 = start(&files, "n2", "n2", Some(&n1.addr), |c| c.replication_factor = 3);
    eventually("n2 (a node certificate of the cluster CA) joins", Duration::from_secs(30), || async {
        members(&ops).await.contains(&"n2".to_string())
    })
    .await;
    // Gossip runs every 100 ms; give the impostors 30 rounds more.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let seen = members(&ops).await;
        for impostor in ["n4", "n5", "n9"] {
            assert!(!seen.contains(&impostor.to_string()), "{impostor} joined: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((plaintext, client_cert, foreign, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_peers_sign_in_with_a_peer_token_and_a_node_without_one_cannot_join() {
    let files = Files::make();
    let mut tokens = TokenFile::read(&files.path("tokens.toml")).unwrap();
    let peer = tokens.add("nodes", &["peer".into()]).unwrap();
    tokens.write(&files.path("tokens.toml")).unwrap();
    let plain = |token: Option<String>| {
        move |c: &mut Config| {
            c.tls_ca = None;
            c.tls_cert = None;
            c.tls_key = None;
            c.replication_factor = 3;
            c.peer_token = token.map(ringkv_node::config::Secret);
        }
    };
    // A token file without TLS and without a peer token is refused at start, saying why.
    let refused = Config { tokens_file: Some(files.path("tokens.toml")), ..Default::default() };
    let e = ringkv_node::security::Security::load(&refused).err().expect("refused").to_string();
    assert!(e.contains("--peer-token") && e.contains("peer role"), "{e}");

    let n1 = start(&files, "n1", "n1", None, plain(Some(peer.clone())));
    let ops = Client::connect_with([n1.addr.as_str()], Credentials::token(files.admin.clone())).await.unwrap();
    eventually("n1 serves", Duration::from_secs(20), || async { ops.put(b"app/warm", b"", None, one()).await.is_ok() }).await;
    // The web principal's token is not a peer's: a node presenting it cannot join.
    let impostor = start(&files, "n3", "n3", Some(&n1.addr), plain(Some(files.web.clone())));
    let n2 = start(&files, "n2", "n2", Some(&n1.addr), plain(Some(peer)));
    let ids = || async { ops.status().await.map(|s| s.nodes.into_iter().map(|n| n.id).collect::<Vec<_>>()).unwrap_or_default() };
    eventually("n2 joins with the peer token", Duration::from_secs(30), || async { ids().await.contains(&"n2".to_string()) }).await;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!ids().await.contains(&"n3".to_string()), "a node with a non-peer token joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((impostor, n2));
}

/// Runs the `ringkv` binary in `dir` with `env`, returning stdout.
fn ringkv(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ringkv_bin()).current_dir(dir).envs(env.iter().copied()).args(args).output().expect("run ringkv");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The README's "Secure cluster" section, command by command, on free
/// ports; then a principal added to the token file works only after the
/// node that reads it gets SIGHUP.
#[test]
fn the_readme_secure_cluster_commands_work_and_sighup_reloads_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |args: &[&str]| {
        let (ok, out, err) = ringkv(d, &[], args);
        assert!(ok, "ringkv {args:?} failed: {err}");
        out
    };
    ok(&["cert", "init", "--dir", "certs"]);
    for n in ["n1", "n2", "n3"] {
        ok(&["cert", "issue", "node", n, "--dir", "certs"]);
    }
    let admin = ok(&["token", "add", "ops", "--role", "admin", "--file", "tokens.toml"]).trim().to_string();
    assert!(admin.starts_with("rkv_"), "{admin}");
    assert!(!std::fs::read_to_string(d.join("tokens.toml")).unwrap().contains(&admin), "only the hash is stored");

    let ports: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut children = Vec::new();
    for (i, addr) in ports.iter().enumerate() {
        let n = format!("n{}", i + 1);
        let (cert, key, data) = (format!("certs/{n}.crt"), format!("certs/{n}.key"), format!("data/{n}"));
        let args = [
            "serve",
            "--id",
            &n,
            "--listen",
            addr,
            "--seeds",
            &ports[0],
            "--data-dir",
            &data,
            "--ca",
            "certs/ca.crt",
            "--cert",
            &cert,
            "--key",
            &key,
            "--tokens-file",
            "tokens.toml",
        ];
        let log = std::fs::File::create(d.join(format!("{n}.log"))).unwrap();
        // All three at once, as the README's loop starts them.
        children
            .push(Kill(Command::new(ringkv_bin()).current_dir(d).args(args).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()));
    }
    let endpoints = ports.join(",");
    let env = [("RINGKV_CA", "certs/ca.crt"), ("RINGKV_TOKEN", admin.as_str()), ("RINGKV_ENDPOINTS", endpoints.as_str())];
    wait_until("all three normal", Duration::from_secs(60), || {
        let (ok, out, _) = ringkv(d, &env, &["--json", "status"]);
        ok && out.matches("\"normal\"").count() == 3
    });
    let run = |env: &[(&str, &str)], args: &[&str]| ringkv(d, env, args);
    let (put, _, err) = run(&env, &["put", "greeting", "hello", "-c", "quorum"]);
    assert!(put, "{err}");
    let (_, got, _) = run(&env, &["get", "greeting"]);
    assert!(got.starts_with("hello"), "{got}");

    // A new principal: unknown until the node re-reads the file.
    let reader = ok(&["token", "add", "reader", "--role", "readonly", "--file", "tokens.toml"]).trim().to_string();
    let first = [("RINGKV_CA", "certs/ca.crt"), ("RINGKV_TOKEN", reader.as_str()), ("RINGKV_ENDPOINTS", ports[0].as_str())];
    let (ok_before, _, err) = run(&first, &["get", "greeting"]);
    assert!(!ok_before && err.contains("unauthenticated"), "{err}");
    // SAFETY: signalling a child this test started and has not reaped.
    unsafe { libc::kill(children[0].0.id() as i32, libc::SIGHUP) };
    wait_until("n1 knows the new token after SIGHUP", Duration::from_secs(10), || run(&first, &["get", "greeting"]).0);
    let (wrote, _, err) = run(&first, &["put", "greeting", "bye"]);
    assert!(!wrote && err.contains("permission denied") && err.contains("write"), "read-only: {err}");
}

/// Kills a child on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
