//! Local clusters of `ringkv serve` child processes: for `ringkv cluster`,
//! `ringkv demo` and jepsen-lite's fault injection.
//!
//! Nodes start one at a time, each once the previous has joined. A joining
//! node picks its tokens from the ring it sees, so two nodes joining at the
//! same instant would see the same ring and pick alike. Children get
//! SIGTERM if this process dies (PR_SET_PDEATHSIG), and are stopped on drop
//! (a paused child is continued first). Only the PIDs started here are
//! ever signalled.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringkv_client::{Client, Credentials};

/// How long a node may take to start and join.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// One child node.
pub struct LocalNode {
    /// Node id.
    pub id: String,
    /// Its `host:port`.
    pub addr: String,
    /// Its log file (appended to across restarts).
    pub log: PathBuf,
    /// True while it is stopped by SIGSTOP.
    pub paused: bool,
    command: Vec<String>,
    child: Option<Child>,
}

impl LocalNode {
    fn spawn(&mut self, exe: &Path) -> Result<()> {
        let out =
            File::options().create(true).append(true).open(&self.log).with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(&self.command).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // SAFETY: prctl is async-signal-safe and touches only this child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().with_context(|| format!("cannot start {} ({})", self.id, exe.display()))?);
        self.paused = false;
        Ok(())
    }

    /// True while its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            // SAFETY: sending a signal to a child we own and have not reaped.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }
}

/// A set of child nodes.
pub struct LocalCluster {
    /// The nodes, n1 first.
    pub nodes: Vec<LocalNode>,
    exe: PathBuf,
    /// What clients of this cluster present (TLS, token); empty when open.
    pub credentials: Credentials,
}

impl LocalCluster {
    /// Starts one node per address (`ip:port`, n1 first) from the `ringkv`
    /// executable `exe`, with data and logs under `root`. Node `i` (0-based)
    /// also gets the flags `extra(i)`.
    pub async fn start(
        exe: &Path,
        addrs: &[String],
        root: &Path,
        extra: &dyn Fn(usize) -> Vec<String>,
        progress: impl FnMut(&str),
    ) -> Result<Self> {
        Self::start_with(exe, addrs, root, extra, Credentials::default(), progress).await
    }

    /// Like [`LocalCluster::start`], for nodes that need `credentials` (the
    /// flags that turn their security on come in `extra`).
    pub async fn start_with(
        exe: &Path,
        addrs: &[String],
        root: &Path,
        extra: &dyn Fn(usize) -> Vec<String>,
        credentials: Credentials,
        mut progress: impl FnMut(&str),
    ) -> Result<Self> {
        if !exe.is_file() {
            bail!("no ringkv executable at {}; build it with `cargo build --release -p ringkv`", exe.display());
        }
        let mut cluster = LocalCluster { nodes: Vec::new(), exe: exe.to_path_buf(), credentials };
        for (i, addr) in addrs.iter().enumerate() {
            let id = format!("n{}", i + 1);
            let dir = root.join(&id);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let log = root.join(format!("{id}.log"));
            // These clusters are for demos and tests: `ringkv fault` and
            // jepsen-lite's nemeses inject faults through the admin API.
            let mut command: Vec<String> =
                ["serve", "--id", &id, "--listen", addr, "--seeds", &addrs[0], "--enable-fault-injection"].map(String::from).to_vec();
            command.extend(["--data-dir".to_string(), dir.display().to_string()]);
            command.extend(extra(i));
            let mut node = LocalNode { id: id.clone(), addr: addr.clone(), log: log.clone(), paused: false, command, child: None };
            node.spawn(exe)?;
            cluster.nodes.push(node);
            progress(&format!("started {id} on {addr} (log: {})", log.display()));
            cluster.wait_joined(i + 1).await.with_context(|| format!("{id} did not join; see {}", log.display()))?;
        }
        Ok(cluster)
    }

    /// Waits until every running node sees the first `count` nodes as
    /// normal and up.
    pub async fn wait_joined(&mut self, count: usize) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(exit) = self.exited() {
                bail!("{exit}");
            }
            let mut ready = true;
            for node in self.nodes.iter().take(count).filter(|n| n.running()) {
                ready &= match Client::connect_with([node.addr.as_str()], self.credentials.clone()).await?.status().await {
                    Ok(s) => s.nodes.iter().filter(|n| n.state == "normal" && n.liveness == "up").count() >= count,
                    Err(_) => false,
                };
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not converge on {count} nodes within {:?}", START_DEADLINE);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A node that has exited, described.
    pub fn exited(&mut self) -> Option<String> {
        self.exited_all().into_iter().next()
    }

    /// Every node that has exited on its own, described.
    pub fn exited_all(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push(format!("{} exited with {status}; see {}", node.id, node.log.display()));
                }
            }
        }
        out
    }

    /// Comma-separated addresses.
    pub fn endpoints(&self) -> String {
        self.nodes.iter().map(|n| n.addr.as_str()).collect::<Vec<_>>().join(",")
    }

    /// `kill -9` node `i` (0-based) and reap it.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// Starts node `i` again with the same flags and data directory.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill9(i);
        let exe = self.exe.clone();
        self.nodes[i].spawn(&exe)
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
        self.nodes[i].paused = self.nodes[i].running();
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// SIGTERM every node, wait, and kill any that linger.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.signal(libc::SIGCONT);
            node.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
