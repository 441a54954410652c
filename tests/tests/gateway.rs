//! `ringkv gateway` end to end: real `ringkv serve` processes (the
//! harness's `LocalCluster`), a real `ringkv gateway` process, HTTP from
//! `reqwest`, and the cluster page in headless Chromium driven over
//! WebDriver (`chromedriver`).
//!
//! - every route and its status codes, raw and JSON bodies, the context
//!   round trip and sibling listing, over a 3-node cluster;
//! - 503 when no node is up, and 429 with `Retry-After` per client;
//! - 401 and 403 from a secured cluster, the caller's token passed through;
//! - the page shows every node and lists a write as it happens;
//! - `/v1/watch` as Server-Sent Events and over a WebSocket: events for
//!   puts and deletes under the prefix and none outside it, resuming from a
//!   position, and 410 (or a final `error` event) for one too old.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them). Without them it fails when `CI` is set and
//! is skipped, saying why, elsewhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringkv_harness::cluster::LocalCluster;
use ringkv_harness::secure::SecureFiles;
use ringkv_node::security::tokens::TokenFile;
use ringkv_tests::process::{free_port, ringkv_bin};
use serde_json::{json, Value};

/// How long a process may take to come up.
const START: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it gives a value, failing after `within`.
async fn eventually<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not true within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect()
}

async fn three_nodes(dir: &Path) -> LocalCluster {
    LocalCluster::start(ringkv_bin(), &addrs(3), dir, &|_| vec![], |_| {}).await.expect("a 3-node cluster")
}

/// A `ringkv gateway` child process.
struct GatewayProc {
    base: String,
    log: PathBuf,
    child: Child,
}

impl GatewayProc {
    /// Starts `ringkv [global] gateway --listen ... --nodes nodes [extra]`.
    fn start(dir: &Path, nodes: &str, global: &[String], extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("gateway-{}.log", addr.replace(':', "-")));
        let out = File::create(&log).expect("gateway log");
        let child = Command::new(ringkv_bin())
            .args(global)
            .args(["gateway", "--listen", &addr, "--nodes", nodes, "--log", "info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn ringkv gateway");
        Self { base: format!("http://{addr}"), log, child }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `path` answers with `status`.
    async fn wait(&mut self, http: &reqwest::Client, path: &str, status: StatusCode) {
        let url = self.url(path);
        let log = self.log.clone();
        let child = &mut self.child;
        eventually(&format!("the gateway answers {path} with {status} (log: {})", log.display()), START, async || {
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("the gateway exited with {exit}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            let r = http.get(&url).send().await.ok()?;
            (r.status() == status).then_some(())
        })
        .await;
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string()).unwrap_or_default()
}

async fn json_of(r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_round_trip_values_contexts_siblings_and_keep_error_meanings() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = three_nodes(dir.path()).await;
    let http = reqwest::Client::new();
    let mut gw = GatewayProc::start(dir.path(), &cluster.endpoints(), &[], &["--policy", "token-aware"]);
    gw.wait(&http, "/v1/cluster", StatusCode::OK).await;
    let kv = |key: &str| gw.url(&format!("/v1/kv/{key}"));

    // A raw PUT, then a raw GET: the value, the receipt headers, the context.
    let r = http.put(kv("app/greeting") + "?consistency=quorum").body("hello").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ringkv-level"), "quorum");
    assert!(!header(&r, "x-ringkv-coordinator").is_empty());
    assert!(!header(&r, "x-ringkv-context").is_empty(), "a PUT returns its new context");
    let put = json_of(r).await;
    assert_eq!(put["ok"], true);
    assert_eq!(put["receipt"]["required"], 2);
    let r = http.get(kv("app/greeting") + "?consistency=all&read_repair=blocking").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ringkv-siblings"), "1");
    assert_eq!(header(&r, "x-ringkv-level"), "all");
    assert_eq!(header(&r, "x-ringkv-replicas").split(',').count(), 3, "ALL: every replica answered");
    assert!(header(&r, "etag").starts_with('"'));
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(r.text().await.unwrap(), "hello");

    // JSON in (base64, binary) and JSON out.
    let r = http.put(kv("app/bin")).json(&json!({ "value_b64": "AP8=" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(http.get(kv("app/bin")).send().await.unwrap().bytes().await.unwrap().as_ref(), &[0u8, 255]);
    let got = json_of(http.get(kv("app/bin")).header("accept", "application/json").send().await.unwrap()).await;
    assert_eq!(got["siblings"][0]["value"], Value::Null, "not UTF-8");
    assert_eq!(got["siblings"][0]["value_b64"], "AP8=");
    assert!(got["receipt"]["replicas"].as_array().is_some_and(|a| !a.is_empty()), "{got}");

    // Context round trip: a write with the context a read returned
    // supersedes it, leaving one sibling.
    http.put(kv("cart")).body("milk").send().await.unwrap();
    let r = http.get(kv("cart")).send().await.unwrap();
    let etag = header(&r, "etag");
    let r = http.put(kv("cart")).header("if-match", &etag).body("milk,eggs").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&http.get(kv("cart")).send().await.unwrap(), "x-ringkv-siblings"), "1", "the context superseded the read");
    // Two writers with the same (now stale) context: siblings, all listed.
    let r = http.get(kv("cart")).send().await.unwrap();
    let ctx = header(&r, "x-ringkv-context");
    for v in ["milk,eggs,tea", "milk,eggs,bread"] {
        let r = http.put(kv("cart")).header("x-ringkv-context", &ctx).body(v).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let got = json_of(http.get(kv("cart")).header("accept", "application/json").send().await.unwrap()).await;
    let mut values: Vec<&str> = got["siblings"].as_array().unwrap().iter().map(|s| s["value"].as_str().unwrap()).collect();
    values.sort();
    assert_eq!(values, ["milk,eggs,bread", "milk,eggs,tea"]);
    let r = http.get(kv("cart")).send().await.unwrap();
    assert_eq!(header(&r, "x-ringkv-siblings"), "2");
    let merged_ctx = header(&r, "etag");
    let raw = r.text().await.unwrap();
    assert!(values.contains(&raw.as_str()), "raw GET answers one sibling (last writer wins): {raw}");
    // Writing back with that read's context resolves them.
    http.put(kv("cart")).header("if-match", &merged_ctx).body("milk,eggs,bread,tea").send().await.unwrap();
    let got = json_of(http.get(kv("cart")).header("accept", "application/json").send().await.unwrap()).await;
    assert_eq!(got["siblings"].as_array().unwrap().len(), 1);
    assert_eq!(got["siblings"][0]["value"], "milk,eggs,bread,tea");

    // DELETE, then 404 (with a JSON body).
    let r = http.delete(kv("app/greeting")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(kv("app/greeting")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(r).await["error"], "not_found");
    assert_eq!(http.get(kv("never/written")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Scan, paged.
    for k in ["scan/a", "scan/b", "scan/c"] {
        http.put(kv(k)).body(k.to_uppercase()).send().await.unwrap();
    }
    let page = json_of(http.get(gw.url("/v1/scan?prefix=scan/&limit=2&consistency=quorum")).send().await.unwrap()).await;
    let keys: Vec<&str> = page["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["scan/a", "scan/b"]);
    assert_eq!(page["more"], true);
    let next = page["next_start_after"].as_str().unwrap();
    let page = json_of(http.get(gw.url(&format!("/v1/scan?prefix=scan/&start_after={next}"))).send().await.unwrap()).await;
    assert_eq!(page["entries"][0]["key"], "scan/c");
    assert_eq!(page["entries"][0]["siblings"][0]["value"], "SCAN/C");

    // Bad input is 400 with a message that says what is accepted.
    let bad = [
        http.get(kv("x") + "?consistency=strong"),
        http.get(kv("x") + "?consistancy=all"),
        http.get(gw.url("/v1/scan?limit=0")),
        http.put(kv("x")).header("if-match", "\"not base64!\"").body("v"),
        http.put(kv("x")).header("content-type", "application/json").body("{\"value\": 1}"),
        // The node refuses a plain write at SERIAL (it is a cas): the
        // client's InvalidArgument, mapped to 400.
        http.put(kv("x") + "?consistency=serial").body("v"),
    ];
    for req in bad {
        let r = req.send().await.unwrap();
        let url = r.url().to_string();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
        let body = json_of(r).await;
        assert_eq!(body["error"], "invalid_argument", "{url}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(http.get(gw.url("/v2/nothing")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.post(kv("x")).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);

    // What the page and Prometheus read.
    let recent = json_of(http.get(gw.url("/v1/recent")).send().await.unwrap()).await;
    let first = &recent["requests"][0];
    assert_eq!(first["op"], "put", "newest first: {first}");
    assert_eq!(first["status"], 400);
    assert!(recent["requests"].as_array().unwrap().iter().any(|q| q["key"] == "cart" && q["siblings"] == 2));
    let metrics = http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ringkv_gateway_requests_total{op=\"get\",level=\"all\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("ringkv_gateway_request_duration_seconds_count{op=\"scan\",level=\"quorum\"} 1"), "{metrics}");
}

#[tokio::test]
async fn with_no_node_up_requests_answer_503_and_a_client_over_its_limit_429() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // Nothing listens on these: the client connects lazily, so the gateway
    // starts, and every request finds no node.
    let nowhere = addrs(2).join(",");
    let mut gw = GatewayProc::start(dir.path(), &nowhere, &[], &["--rate-limit", "3/s"]);
    gw.wait(&http, "/", StatusCode::OK).await;

    let r = http.put(gw.url("/v1/kv/k")).bearer_auth("token-a").body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after"), "1");
    let body = json_of(r).await;
    assert_eq!(body["error"], "connect");
    assert_eq!(body["may_have_applied"], false, "a refused connection delivered nothing");
    assert_eq!(http.get(gw.url("/v1/cluster")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);

    // token-a has a burst of 3 and used 1: within a few more it is refused.
    let mut limited = None;
    for _ in 0..10 {
        let r = http.get(gw.url("/v1/kv/k")).bearer_auth("token-a").send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let r = limited.expect("token-a is refused past its burst");
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(json_of(r).await["error"], "rate_limited");
    // Another token, and a caller with none (keyed by address), have their own budgets.
    let r = http.get(gw.url("/v1/kv/k")).bearer_auth("token-b").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = http.get(gw.url("/v1/kv/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A malformed Authorization header is 401 before anything else.
    let r = http.get(gw.url("/v1/kv/k")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The page's routes are not rate limited.
    for _ in 0..10 {
        assert_eq!(http.get(gw.url("/v1/recent")).send().await.unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_secured_cluster_sees_the_callers_token_401_without_one_403_without_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let secure_dir = dir.path().join("secure");
    std::fs::create_dir_all(&secure_dir).unwrap();
    let addrs = addrs(1);
    let files = SecureFiles::prepare(&secure_dir, &addrs).expect("CA, certificates, tokens");
    let tokens_path = secure_dir.join("tokens.toml");
    let mut tokens = TokenFile::read(&tokens_path).unwrap();
    let reader = tokens.add("reader", &["readonly".into()]).unwrap();
    tokens.write(&tokens_path).unwrap();
    let extra = |i: usize| {
        let mut a = files.serve_args(i);
        a.extend(["--replication-factor".into(), "1".into()]);
        a
    };
    let _cluster = LocalCluster::start_with(ringkv_bin(), &addrs, &dir.path().join("nodes"), &extra, files.credentials().unwrap(), |_| {})
        .await
        .expect("a secured node");
    // The gateway's own token (admin) is for discovery and the page only.
    let global = ["--ca".to_string(), secure_dir.join("ca.crt").display().to_string(), "--token".into(), files.admin_token.clone()];
    let http = reqwest::Client::new();
    let mut gw = GatewayProc::start(dir.path(), &addrs[0], &global, &["--policy", "round-robin"]);
    gw.wait(&http, "/v1/cluster", StatusCode::OK).await;
    let url = gw.url("/v1/kv/doc");

    let r = http.put(&url).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no token: the gateway does not lend its own");
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    assert_eq!(json_of(r).await["error"], "unauthenticated");
    let r = http.put(&url).bearer_auth(&reader).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a readonly token cannot write");
    assert_eq!(json_of(r).await["error"], "permission_denied");
    let r = http.put(&url).bearer_auth(&files.admin_token).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(&url).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a readonly token can read");
    assert_eq!(r.text().await.unwrap(), "v");
    assert_eq!(http.get(&url).bearer_auth("not-a-token").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

/// `chromedriver` on a free port, and one headless Chromium session.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
}

impl Browser {
    /// Starts one, or says why it cannot.
    async fn start(dir: &Path) -> Result<Self, String> {
        let find = |names: &[&str]| names.iter().map(|n| Path::new("/usr/bin").join(n)).find(|p| p.is_file());
        let chromium = find(&["chromium", "chromium-browser"]).ok_or("no chromium in /usr/bin")?;
        let driver_bin = find(&["chromedriver"]).ok_or("no chromedriver in /usr/bin")?;
        let port = free_port();
        let log = File::create(dir.join("chromedriver.log")).map_err(|e| e.to_string())?;
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self { http, base, session: String::new(), driver };
        let status = format!("{}/status", browser.base);
        let http = browser.http.clone();
        eventually("chromedriver is ready", START, async || {
            let v: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"],
        } } } });
        let v = browser.call(reqwest::Method::POST, "session", caps).await?;
        browser.session = v["sessionId"].as_str().ok_or(format!("no session id in {v}"))?.to_string();
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/{path}", self.base);
        let r = self.http.request(method, &url).json(&body).send().await.map_err(|e| format!("{url}: {e}"))?;
        let v: Value = r.json().await.map_err(|e| format!("{url}: {e}"))?;
        if v["value"]["error"].is_string() {
            return Err(format!("{url}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, &format!("session/{}/url", self.session), json!({ "url": url })).await.expect("navigate");
    }

    /// Runs `script` in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call(reqwest::Method::POST, &format!("session/{}/execute/sync", self.session), body).await.expect("execute script")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and Chromium) through chromedriver, then it.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async { reqwest::Client::new().delete(url).timeout(Duration::from_secs(10)).send().await })
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the rendered page shows, read from its DOM.
const READ_PAGE: &str = r#"return {
    nodes: [...document.querySelectorAll('#nodes tbody tr[data-node]')].map(r => r.dataset.node + ':' + r.dataset.liveness),
    arcs: document.querySelectorAll('#ring path[data-node]').length,
    recent: [...document.querySelectorAll('#recent li[data-key]')].map(l => ({ key: l.dataset.key, status: l.dataset.status,
        replicas: l.querySelectorAll('.replica').length, text: l.textContent })),
    updates: Number(document.body.dataset.updates),
};"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_shows_every_node_and_lists_a_write_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let browser = match Browser::start(dir.path()).await {
        Ok(b) => b,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the page test needs headless Chromium in CI: {why}; `apt-get install chromium chromium-driver` (.ci/run does)")
        }
        Err(why) => {
            eprintln!("skipped: {why}; `apt-get install chromium chromium-driver` to run this test");
            return;
        }
    };
    let cluster = three_nodes(dir.path()).await;
    let http = reqwest::Client::new();
    let mut gw = GatewayProc::start(dir.path(), &cluster.endpoints(), &[], &[]);
    gw.wait(&http, "/v1/cluster", StatusCode::OK).await;

    browser.open(&gw.url("/")).await;
    let page = eventually("the page shows three nodes, up", START, async || {
        let v = browser.eval(READ_PAGE).await;
        let mut nodes: Vec<String> = serde_json::from_value(v["nodes"].clone()).ok()?;
        nodes.sort();
        (nodes == ["n1:up", "n2:up", "n3:up"]).then_some(v)
    })
    .await;
    assert!(page["arcs"].as_u64().unwrap() >= 3, "the ring has each node's ranges: {page}");
    let before = page["updates"].as_u64().unwrap();

    // A write through the gateway appears in the open page, by polling,
    // with its receipt's replicas.
    let r = http.put(gw.url("/v1/kv/page/live-key?consistency=all")).body("seen").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let row = eventually("the page lists the write", Duration::from_secs(20), async || {
        let v = browser.eval(READ_PAGE).await;
        v["recent"].as_array()?.iter().find(|q| q["key"] == "page/live-key").cloned().map(|row| (row, v["updates"].as_u64().unwrap()))
    })
    .await;
    let (row, after) = row;
    assert!(after > before, "the page redrew without a reload: {before} -> {after}");
    assert_eq!(row["status"], "200");
    assert_eq!(row["replicas"], 3, "ALL: three replicas in the receipt: {row}");
    assert!(row["text"].as_str().unwrap().contains("coordinator n"), "{row}");
}

/// A Server-Sent Events response read event by event.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event's (type, data), within `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string());
                // Keep-alive comments carry no data.
                let Some(data) = field("data:") else { continue };
                let kind = field("event:").unwrap_or_else(|| "message".into());
                let value: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                if let Some(id) = field("id:") {
                    assert_eq!(Value::String(id), value["position"], "the SSE id is the event's resume position");
                }
                return (kind, value);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}; so far: {:?}", self.buf))
                .expect("the stream")
                .expect("the stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// Events until one for `key` arrives; fails on an event for a key
    /// not under `prefix`.
    async fn until_key(&mut self, key: &str, prefix: &str) -> Value {
        loop {
            let (kind, e) = self.next(Duration::from_secs(30)).await;
            assert_eq!(kind, "change", "{e}");
            let got = e["key"].as_str().expect("a key").to_string();
            assert!(got.starts_with(prefix), "an event outside the prefix {prefix:?}: {e}");
            if got == key {
                return e;
            }
        }
    }
}

async fn sse(http: &reqwest::Client, url: String) -> Result<Sse, reqwest::Response> {
    let resp = http.get(url).header("accept", "text/event-stream").send().await.expect("watch request");
    if resp.status() != StatusCode::OK {
        return Err(resp);
    }
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    Ok(Sse { resp, buf: String::new() })
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_changes_as_server_sent_events_and_over_a_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let cluster = three_nodes(dir.path()).await;
    let http = reqwest::Client::new();
    let mut gw = GatewayProc::start(dir.path(), &cluster.endpoints(), &[], &[]);
    gw.wait(&http, "/v1/cluster", StatusCode::OK).await;
    let kv = |key: &str| gw.url(&format!("/v1/kv/{key}?consistency=all"));

    // SSE: a put outside the prefix, then one inside; only the second shows.
    let mut events = sse(&http, gw.url("/v1/watch?prefix=w/")).await.expect("a stream");
    assert_eq!(http.put(kv("x/1")).body("outside").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(http.put(kv("w/1")).body("one").send().await.unwrap().status(), StatusCode::OK);
    let put = events.until_key("w/1", "w/").await;
    assert_eq!(put["deleted"], false);
    assert_eq!(put["siblings"][0]["value"], "one", "{put}");
    assert!(!put["context"].as_str().unwrap().is_empty());
    let after_put = put["position"].as_str().expect("a position").to_string();
    assert_eq!(http.delete(kv("w/1")).send().await.unwrap().status(), StatusCode::OK);
    let deleted = events.until_key("w/1", "w/").await;
    assert_eq!(deleted["deleted"], true, "a delete shows as a delete: {deleted}");
    drop(events);

    // Resume after the put: what happened since comes, w/2 included.
    assert_eq!(http.put(kv("w/2")).body("two").send().await.unwrap().status(), StatusCode::OK);
    let mut resumed = sse(&http, gw.url(&format!("/v1/watch?prefix=w/&resume={after_put}"))).await.expect("a resumed stream");
    let two = resumed.until_key("w/2", "w/").await;
    assert_eq!(two["siblings"][0]["value"], "two");
    drop(resumed);

    // A position from another incarnation of every node: resync.
    let mut stale = ringkv_client::WatchPosition::default();
    for n in ["n1", "n2", "n3"] {
        stale.set(&ringkv_client::pb::WatchPosition { node: n.into(), epoch: 1, seq: 1 });
    }
    match sse(&http, gw.url(&format!("/v1/watch?prefix=w/&resume={}", stale.to_token()))).await {
        Err(resp) => {
            assert_eq!(resp.status(), StatusCode::GONE);
            assert_eq!(json_of(resp).await["error"], "resync_required");
        }
        Ok(mut stream) => {
            let (kind, e) = stream.next(Duration::from_secs(30)).await;
            assert_eq!((kind.as_str(), &e["error"]), ("error", &json!("resync_required")), "{e}");
        }
    }
    // A malformed position is bad input.
    let r = http.get(gw.url("/v1/watch?resume=nonsense")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // WebSocket: one text message per event.
    let ws_url = gw.url("/v1/watch?prefix=w/").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("a WebSocket");
    // The stream is open once the gateway has subscribed to every node;
    // keep writing until the socket reports the key (a write before the
    // subscription is not promised).
    let got = eventually("the WebSocket reports w/3", Duration::from_secs(60), async || {
        assert_eq!(http.put(kv("w/3")).body("three").send().await.unwrap().status(), StatusCode::OK);
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.ok()??.expect("a message");
        let Message::Text(text) = msg else { return None };
        let e: Value = serde_json::from_str(&text).expect("JSON");
        assert!(e["key"].as_str().unwrap().starts_with("w/"), "{e}");
        (e["key"] == "w/3").then_some(e)
    })
    .await;
    assert_eq!(got["siblings"][0]["value"], "three");
    ws.send(Message::Close(None)).await.expect("close");
}
