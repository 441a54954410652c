//! Real `ringkv serve` processes on 127.0.0.1, and the `ringkv` CLI against them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the `ringkv` binary once per test process and returns its path.
pub fn ringkv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "ringkv", "--bin", "ringkv"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the ringkv binary failed");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("ringkv")
    })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` every 50 ms until it holds, panicking after `within`.
pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not true within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `ringkv serve` child process.
pub struct NodeProc {
    /// Node id.
    pub id: String,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Its data directory.
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts node `id` on a free port, with data under `root`, joining
    /// through `seed` (its own address when `None`), plus `extra` flags.
    pub fn start(root: &Path, id: &str, seed: Option<&str>, extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = root.join(id);
        // Tests inject faults (`ringkv fault`), which a node refuses unless
        // started with the switch.
        let mut args: Vec<String> = ["serve", "--id", id, "--listen", &addr, "--seeds", seed.unwrap_or(&addr), "--enable-fault-injection"]
            .map(String::from)
            .to_vec();
        args.push("--data-dir".into());
        args.push(dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Self { id: id.into(), addr, dir, args, child: None };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let log = File::options().create(true).append(true).open(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(ringkv_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ringkv serve");
        self.child = Some(child);
        let addr = self.addr.clone();
        wait_until(&format!("{} serves", self.id), Duration::from_secs(30), || cli(&addr, &["status"]).status.success());
    }

    /// SIGKILL, like `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// Starts the same node again, with the same data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The node's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `n` nodes one at a time, each joining through the first, and
/// waits until the first sees them all normal and up.
pub fn cluster(root: &Path, n: usize, extra: &[&str]) -> Vec<NodeProc> {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 1..=n {
        let seed = nodes.first().map(|f| f.addr.clone());
        nodes.push(NodeProc::start(root, &format!("n{i}"), seed.as_deref(), extra));
        let first = nodes[0].addr.clone();
        wait_until(&format!("n{i} joins"), Duration::from_secs(30), || up_count(&first) == i);
    }
    nodes
}

/// How many nodes `endpoint` sees as normal and up.
pub fn up_count(endpoint: &str) -> usize {
    let out = cli(endpoint, &["status", "--json"]);
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nodes"].as_array().map_or(0, |a| a.iter().filter(|n| n["state"] == "normal" && n["liveness"] == "up").count())
}

/// `liveness` of `node` as `endpoint` sees it.
pub fn liveness(endpoint: &str, node: &str) -> String {
    let out = cli(endpoint, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == node))
        .map_or(String::new(), |n| n["liveness"].as_str().unwrap_or("").into())
}

/// Runs `ringkv --endpoints endpoint args...`.
pub fn cli(endpoint: &str, args: &[&str]) -> Output {
    Command::new(ringkv_bin()).arg("--endpoints").arg(endpoint).args(args).output().expect("run ringkv")
}

/// Runs the CLI and parses its JSON output, asserting success.
pub fn cli_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(endpoint, &all);
    assert!(out.status.success(), "ringkv {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}
