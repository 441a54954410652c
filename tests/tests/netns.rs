//! Several hosts, for real: five `ringkv serve` processes, each in its own
//! network namespace with its own address on a bridge this test creates,
//! all started at the same moment with the same five-address seed list (as
//! an Ansible role or a StatefulSet would start them).
//!
//! The test then takes one node's link down, checks that the majority side
//! still takes QUORUM writes while the cut-off node answers Unavailable,
//! brings the link back and checks that the replicas converge.
//!
//! The nodes listen off loopback, so they run as a deployment must: with
//! TLS from a CA the test makes (`ringkv cert`), mutual TLS between the
//! peers, and the CLI trusting that CA.
//!
//! It needs root (namespaces and veth pairs) and `ip` from iproute2, which
//! CI has; without them it prints one line saying why and passes. Every
//! address is private (10.77.0.0/24) and lives only inside namespaces the
//! test made; they are deleted at the end, even on failure, and nothing
//! leaves the machine.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringkv_node::security::ca::CaFiles;
use ringkv_node::security::identity::CertKind;
use ringkv_tests::process::{ringkv_bin, wait_until};

const NODES: usize = 5;
const PORT: u16 = 7101;

/// The namespaces, bridge and processes of one run; torn down on drop.
struct Hosts {
    prefix: String,
    children: Vec<Child>,
    /// The CA and one node certificate per host (with its address).
    certs: tempfile::TempDir,
}

impl Hosts {
    fn bridge_ns(&self) -> String {
        format!("{}b", self.prefix)
    }

    fn node_ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn addr(i: usize) -> String {
        format!("10.77.0.{i}:{PORT}")
    }

    /// Creates a bridge namespace and one namespace per node, each joined to
    /// the bridge by a veth pair.
    fn create(prefix: String) -> Self {
        let certs = tempfile::tempdir().expect("certs dir");
        let ca = CaFiles::new(certs.path());
        ca.init().expect("CA");
        for i in 1..=NODES {
            ca.issue(CertKind::Node, &format!("n{i}"), &[format!("10.77.0.{i}")]).expect("node certificate");
        }
        let hosts = Self { prefix, children: Vec::new(), certs };
        let br = hosts.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 1..=NODES {
            let ns = hosts.node_ns(i);
            let veth = format!("vb{i}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["-n", &br, "link", "set", &veth, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &veth, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("10.77.0.{i}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    /// `--ca`, `--cert` and `--key` for node `i`: its TLS files when it
    /// serves, and its credentials when the CLI speaks for it.
    fn tls_args(&self, i: usize) -> [std::ffi::OsString; 6] {
        let file = |name: String| self.certs.path().join(name).into_os_string();
        ["--ca".into(), file("ca.crt".into()), "--cert".into(), file(format!("n{i}.crt")), "--key".into(), file(format!("n{i}.key"))]
    }

    /// Starts node `i` in its namespace, with every node's address as seeds.
    fn spawn(&mut self, i: usize, data: &Path) -> Child {
        let seeds: Vec<String> = (1..=NODES).map(Self::addr).collect();
        let dir = data.join(format!("n{i}"));
        let log = std::fs::File::create(data.join(format!("n{i}.log"))).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.node_ns(i)])
            .arg(ringkv_bin())
            .args(["serve", "--id", &format!("n{i}"), "--listen", &Self::addr(i), "--seeds", &seeds.join(",")])
            .args(self.tls_args(i))
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ringkv serve in a namespace")
    }

    /// Runs the CLI inside node `i`'s namespace against node `i`, with the
    /// cluster CA and node `i`'s certificate.
    fn cli(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.node_ns(i)])
            .arg(ringkv_bin())
            .args(["--endpoints", &Self::addr(i)])
            // The admin commands (status, ring, repair) need an admin: with
            // TLS and no token file, that is a node certificate.
            .args(self.tls_args(i))
            .args(args)
            .output()
            .expect("run ringkv in a namespace")
    }

    fn json(&self, i: usize, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(i, &all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("one JSON object"))
    }

    /// Takes node `i`'s link down (`up = false`) or brings it back.
    fn link(&self, i: usize, up: bool) {
        ip(&["-n", &self.bridge_ns(), "link", "set", &format!("vb{i}"), if up { "up" } else { "down" }]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes its end of each veth pair, and so the pair.
        for i in 1..=NODES {
            let _ = Command::new("ip").args(["netns", "del", &self.node_ns(i)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.bridge_ns()]).status();
    }
}

/// Runs `ip args`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    // Probe by making (and removing) a namespace: listing works without
    // the privilege to create one.
    let probe = format!("rkvprobe{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(out) => Some(format!("`ip netns add` does not work here: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("`ip` (iproute2) is not installed: {e}")),
    }
}

/// Nodes `i` sees as normal and up.
fn normal_up(hosts: &Hosts, i: usize) -> usize {
    hosts
        .json(i, &["status"])
        .and_then(|v| v["nodes"].as_array().cloned())
        .map_or(0, |nodes| nodes.iter().filter(|n| n["state"] == "normal" && n["liveness"] == "up").count())
}

#[test]
fn five_hosts_started_at_once_with_one_seed_list_form_a_ring_survive_a_cut_link_and_converge() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    ringkv_bin();
    let data = tempfile::tempdir().expect("tempdir");
    let mut hosts = Hosts::create(format!("rkv{}", std::process::id() % 100_000));

    // All five at the same moment, the same seed list on each.
    let started = Instant::now();
    for i in 1..=NODES {
        let child = hosts.spawn(i, data.path());
        hosts.children.push(child);
    }
    let log = |i: usize| std::fs::read_to_string(data.path().join(format!("n{i}.log"))).unwrap_or_default();
    let formed = Instant::now() + Duration::from_secs(30);
    while !(1..=NODES).all(|i| normal_up(&hosts, i) == NODES) {
        if Instant::now() >= formed {
            let views: Vec<String> = (1..=NODES)
                .map(|i| {
                    let err = String::from_utf8_lossy(&hosts.cli(i, &["status"]).stderr).into_owned();
                    format!("n{i} sees {} normal and up {}", normal_up(&hosts, i), err.trim())
                })
                .collect();
            let warnings: String = (1..=NODES)
                .flat_map(|i| {
                    log(i).lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).map(|l| format!("n{i}: {l}\n")).collect::<Vec<_>>()
                })
                .collect();
            panic!("not all {NODES} normal on every node within 30 s: {views:?}\nwarnings and errors:\n{warnings}\nn1's log:\n{}", log(1));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{NODES} hosts, same seed list, started at once: all normal on every node after {:?}", started.elapsed());

    let ring = hosts.json(1, &["ring"]).expect("ring");
    assert_eq!(ring["owning_nothing"].as_array().map(Vec::len), Some(0), "{ring}");
    assert_eq!(ring["nodes"].as_array().map(Vec::len), Some(NODES), "{ring}");
    let skew = ring["skew"].as_f64().expect("finite skew");
    let token_lines = || {
        (1..=NODES)
            .flat_map(|i| {
                log(i).lines().filter(|l| l.contains("token") || l.contains("ring")).map(|l| format!("n{i}: {l}")).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(skew <= 1.25, "skew {skew}; ring {ring}\ntoken decisions:\n{}", token_lines());

    let put = |i: usize, key: &str| hosts.cli(i, &["put", key, key, "-c", "quorum", "--timeout", "2s"]);
    for k in 0..20 {
        let out = put(1, &format!("before-{k}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Cut n5 off: its link to the bridge goes down.
    hosts.link(5, false);
    // The majority side keeps taking QUORUM writes...
    for k in 0..20 {
        let key = format!("during-{k}");
        wait_until(&format!("QUORUM put of {key} on the majority side"), Duration::from_secs(20), || put(1, &key).status.success());
    }
    // ...and the cut-off node refuses QUORUM once it sees its peers down.
    wait_until("n5 answers Unavailable at QUORUM", Duration::from_secs(30), || {
        let out = put(5, "from-the-minority");
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unavailable")
    });

    // Heal, and let anti-entropy bring every replica to the same state.
    hosts.link(5, true);
    wait_until("n5 sees every node up again", Duration::from_secs(30), || normal_up(&hosts, 5) == NODES);
    wait_until("a repair pass finds every range in sync", Duration::from_secs(60), || {
        hosts.json(1, &["repair"]).is_some_and(|r| r["ranges_out_of_sync"] == 0 && r["errors"].as_array().is_some_and(Vec::is_empty))
    });
    for k in 0..20 {
        let key = format!("during-{k}");
        let got = hosts.json(5, &["get", &key, "-c", "all"]).unwrap_or_else(|| panic!("get {key} at ALL through n5"));
        assert_eq!(got["values"].as_array().map(Vec::len), Some(1), "{key}: {got}");
    }
}
