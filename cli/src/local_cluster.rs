//! Local clusters of `ringkv serve` child processes, for `ringkv cluster`
//! and `ringkv demo`.
//!
//! Nodes start one at a time, each once the previous has joined. A joining
//! node picks its tokens from the ring it sees, so two nodes joining at the
//! same instant would see the same ring and pick alike. Children get
//! SIGTERM if this process dies (PR_SET_PDEATHSIG), and are stopped on drop.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringkv_client::Client;

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
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
}

/// A set of child nodes.
pub struct LocalCluster {
    /// The nodes, n1 first.
    pub nodes: Vec<LocalNode>,
}

impl LocalCluster {
    /// Starts `ports.len()` nodes on 127.0.0.1 with data under `root`.
    pub async fn start(ports: &[u16], root: &Path, extra: &[String], mut progress: impl FnMut(&str)) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the ringkv executable")?;
        let seed = format!("127.0.0.1:{}", ports[0]);
        let mut cluster = LocalCluster { nodes: Vec::new() };
        for (i, port) in ports.iter().enumerate() {
            let id = format!("n{}", i + 1);
            let addr = format!("127.0.0.1:{port}");
            let dir = root.join(&id);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let log = root.join(format!("{id}.log"));
            let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.args(["serve", "--id", &id, "--listen", &addr, "--seeds", &seed])
                .arg("--data-dir")
                .arg(&dir)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            // SAFETY: prctl is async-signal-safe and touches only this child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn().with_context(|| format!("cannot start {id}"))?;
            cluster.nodes.push(LocalNode { id: id.clone(), addr: addr.clone(), log: log.clone(), child: Some(child) });
            progress(&format!("started {id} on {addr} (log: {})", log.display()));
            cluster.wait_joined(i + 1).await.with_context(|| format!("{id} did not join; see {}", log.display()))?;
        }
        Ok(cluster)
    }

    /// Waits until every node sees the first `count` nodes as normal and up.
    pub async fn wait_joined(&mut self, count: usize) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(exit) = self.exited() {
                bail!("{exit}");
            }
            let mut ready = true;
            for node in self.nodes.iter().take(count) {
                ready &= match Client::connect([node.addr.as_str()]).await?.status().await {
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

    /// Every node that has exited, described.
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

    /// SIGTERM every node, wait, and kill any that linger.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                // SAFETY: sending a signal to a child we own.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
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
