//! The nemesis: a seeded schedule of faults, each started and healed
//! against a [`LocalCluster`], and logged into the history with its time.
//!
//! The schedule is pure ([`schedule`]): the same seed, node count and
//! duration give the same faults at the same offsets. One fault is active
//! at a time; every fault is healed before the next starts and before the
//! run's final checks.
//!
//! A partition is one of a few shapes ([`Partition`]), each defined once
//! here by the links it cuts; the simulation sweep in `ringkv-tests` cuts
//! the same shapes between turmoil hosts.
//!
//! Partitions go through each node's fault layer (any user), or with
//! `--net iptables` (root) through kernel DROP rules between the nodes'
//! 127.0.0.x addresses, in a chain of their own that is always removed.

use std::collections::BTreeSet;
use std::fmt;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringkv_client::{pb, Client, Credentials};
use ringkv_harness::cluster::LocalCluster;
use serde::Serialize;

/// The kinds of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// kill -9, restart at heal.
    Kill,
    /// SIGSTOP, SIGCONT at heal.
    Pause,
    /// Network partitions of several shapes.
    Partition,
    /// Added delay on one node's links.
    Latency,
    /// One node's wall clock shifted.
    Clock,
}

impl FaultKind {
    /// Every kind, for `--nemesis all`.
    pub const ALL: [FaultKind; 5] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition, FaultKind::Latency, FaultKind::Clock];

    /// The kind's name, as `--nemesis` takes it.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Clock => "clock",
        }
    }
}

/// A set of fault kinds, parsed from `all`, `none` or a comma list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kinds(pub BTreeSet<FaultKind>);

impl FromStr for Kinds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => out.extend(FaultKind::ALL),
                "none" => {}
                other => match FaultKind::ALL.iter().find(|k| k.name() == other) {
                    Some(k) => {
                        out.insert(*k);
                    }
                    None => {
                        return Err(format!(
                            "unknown nemesis {other:?}; use all, none, or a comma list of kill, pause, partition, latency, clock"
                        ))
                    }
                },
            }
        }
        Ok(Kinds(out))
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(if names.is_empty() { "none" } else { "" })?;
        f.write_str(&names.join(","))
    }
}

/// How partitions are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// The nodes' own fault layer (Admin SetFault); works as any user.
    Fault,
    /// Kernel DROP rules (iptables); needs root.
    Iptables,
}

/// A partition shape, on 0-based node indices. This is the one definition
/// of each shape: jepsen-lite's nemesis and the simulation sweep both cut
/// the links [`Partition::cut_links`] gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Partition {
    /// Cut one node off from all others.
    Isolate(usize),
    /// Cut these nodes (a minority) off from the rest.
    Split(Vec<usize>),
    /// Every node sees a majority, but no two see the same one.
    MajoritiesRing,
    /// Traffic from the first node to the second is dropped.
    OneWay(usize, usize),
}

impl Partition {
    /// Directed links (from, to) this partition cuts among `n` nodes.
    pub fn cut_links(&self, n: usize) -> Vec<(usize, usize)> {
        let both = |a: usize, b: usize| [(a, b), (b, a)];
        match self {
            Partition::Isolate(x) => (0..n).filter(|o| o != x).flat_map(|o| both(*x, o)).collect(),
            Partition::Split(minority) => {
                (0..n).filter(|o| !minority.contains(o)).flat_map(|o| minority.iter().flat_map(move |m| both(*m, o))).collect()
            }
            Partition::MajoritiesRing if n <= 3 => both(0, n - 1).to_vec(),
            Partition::MajoritiesRing => {
                // Keep links to ring neighbours within `reach`: each node
                // then sees itself plus 2 * reach others, a bare majority.
                let reach = (n / 2).div_ceil(2);
                let dist = |a: usize, b: usize| a.abs_diff(b).min(n - a.abs_diff(b));
                (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).filter(|&(a, b)| a != b && dist(a, b) > reach).collect()
            }
            Partition::OneWay(a, b) => vec![(*a, *b)],
        }
    }

    /// A short description with node ids, e.g. "isolate n3".
    pub fn describe(&self) -> String {
        let id = |i: &usize| format!("n{}", i + 1);
        match self {
            Partition::Isolate(x) => format!("isolate {}", id(x)),
            Partition::Split(m) => format!("split {} | rest", m.iter().map(id).collect::<Vec<_>>().join(",")),
            Partition::MajoritiesRing => "majorities ring".into(),
            Partition::OneWay(a, b) => format!("one-way {} -> {} dropped", id(a), id(b)),
        }
    }
}

/// One fault, on 0-based node indices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// kill -9 a node; restart it at heal.
    Kill(usize),
    /// SIGSTOP a node; SIGCONT at heal.
    Pause(usize),
    /// A network partition of one of the shapes.
    Partition(Partition),
    /// Delay every message to and from a node by this many ms.
    Latency(usize, u32),
    /// Shift a node's wall clock by this many ms.
    Clock(usize, i64),
}

impl Fault {
    /// The kind this fault belongs to.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Partition(_) => FaultKind::Partition,
            Fault::Latency(..) => FaultKind::Latency,
            Fault::Clock(..) => FaultKind::Clock,
        }
    }

    /// Directed links (from, to) this fault cuts: a partition's
    /// ([`Partition::cut_links`]), none for the other kinds.
    pub fn cut_links(&self, n: usize) -> Vec<(usize, usize)> {
        match self {
            Fault::Partition(p) => p.cut_links(n),
            _ => Vec::new(),
        }
    }

    /// A short description with node ids, e.g. "isolate n3".
    pub fn describe(&self) -> String {
        let id = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Kill(x) => format!("kill -9 {}", id(x)),
            Fault::Pause(x) => format!("SIGSTOP {}", id(x)),
            Fault::Partition(p) => p.describe(),
            Fault::Latency(x, ms) => format!("{ms} ms on {}'s links", id(x)),
            Fault::Clock(x, ms) => format!("{}'s clock {ms:+} ms", id(x)),
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scheduled {
    /// ms after the run starts.
    pub start_ms: u64,
    /// ms after the run starts when it is healed.
    pub heal_ms: u64,
    /// The fault.
    pub fault: Fault,
}

/// Faults for a run of `duration` on `n` nodes: after a quiet start, a
/// fault every few seconds, each held 3–6 s and followed by 2–4 s healed.
/// Every kind comes once in each round of `kinds.len()` faults. The last
/// fault is held until the end of the run, where the final heal ends it.
/// The last fault heals at least 2 s before the end.
pub fn schedule(seed: u64, kinds: &Kinds, n: usize, duration: Duration) -> Vec<Scheduled> {
    let kinds: Vec<FaultKind> = kinds.0.iter().copied().collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let end = duration.as_millis() as u64;
    let mut t = 3_000;
    let mut out = Vec::new();
    // Kinds are drawn from a shuffled bag, so each shows up once per round.
    let mut bag = Vec::new();
    if kinds.is_empty() || n < 2 {
        return out;
    }
    loop {
        let mut hold = rng.random_range(3_000..=6_000);
        if t + 3_000 > end {
            break;
        }
        // The last fault lasts until the final heal, so convergence after
        // that heal measures recovery from a real fault.
        let last = t + hold + 2_000 > end;
        if last {
            hold = end - t;
        }
        if bag.is_empty() {
            bag = kinds.clone();
            bag.shuffle(&mut rng);
        }
        let node = rng.random_range(0..n);
        let fault = match bag.pop().expect("refilled") {
            FaultKind::Kill => Fault::Kill(node),
            FaultKind::Pause => Fault::Pause(node),
            FaultKind::Latency => Fault::Latency(node, rng.random_range(20..=200)),
            FaultKind::Clock => {
                let ms = rng.random_range(2_000..=10_000);
                Fault::Clock(node, if rng.random_bool(0.5) { ms } else { -ms })
            }
            FaultKind::Partition => Fault::Partition(match rng.random_range(0..4) {
                0 => Partition::Isolate(node),
                1 => {
                    let mut all: Vec<usize> = (0..n).collect();
                    let mut minority = Vec::new();
                    for _ in 0..(n - 1) / 2 {
                        minority.push(all.remove(rng.random_range(0..all.len())));
                    }
                    minority.sort();
                    Partition::Split(minority)
                }
                2 => Partition::MajoritiesRing,
                _ => Partition::OneWay(node, (node + rng.random_range(1..n)) % n),
            }),
        };
        out.push(Scheduled { start_ms: t, heal_ms: t + hold, fault });
        if last {
            break;
        }
        t += hold + rng.random_range(2_000..=4_000);
    }
    if let Some(final_fault) = out.last_mut() {
        final_fault.heal_ms = end;
    }
    out
}

/// The iptables chain jepsen-lite owns.
const CHAIN: &str = "RINGKV-JEPSEN";

fn iptables(args: &[&str]) -> Result<()> {
    let out = Command::new("iptables").args(args).output().context("cannot run iptables; install it (apt-get install iptables)")?;
    if !out.status.success() {
        bail!("iptables {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Kernel DROP rules in a chain of our own, removed on drop.
pub struct Iptables {
    installed: bool,
}

impl Iptables {
    /// Creates the chain and hooks it into INPUT. Needs root.
    pub fn install() -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--net iptables needs root; run as root, or use --net fault (the nodes' own fault layer)");
        }
        let _ = Self::remove_chain();
        iptables(&["-w", "-N", CHAIN])?;
        let guard = Iptables { installed: true };
        iptables(&["-w", "-I", "INPUT", "-j", CHAIN])?;
        Ok(guard)
    }

    fn remove_chain() -> Result<()> {
        let _ = iptables(&["-w", "-D", "INPUT", "-j", CHAIN]);
        let _ = iptables(&["-w", "-F", CHAIN]);
        iptables(&["-w", "-X", CHAIN])
    }

    /// Drops packets from `from` to `to` (IP addresses).
    pub fn drop_link(&self, from: &str, to: &str) -> Result<()> {
        iptables(&["-w", "-A", CHAIN, "-s", from, "-d", to, "-j", "DROP"])
    }

    /// Removes every DROP rule.
    pub fn flush(&self) -> Result<()> {
        iptables(&["-w", "-F", CHAIN])
    }
}

impl Drop for Iptables {
    fn drop(&mut self) {
        if self.installed {
            if let Err(e) = Self::remove_chain() {
                eprintln!("warning: could not remove iptables chain {CHAIN}: {e:#}; remove it with `iptables -D INPUT -j {CHAIN}; iptables -F {CHAIN}; iptables -X {CHAIN}`");
            }
        }
    }
}

fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
}

async fn admin(credentials: &Credentials, addr: &str) -> Result<pb::admin_client::AdminClient<ringkv_client::Channel>> {
    Ok(Client::connect_with([addr], credentials.clone()).await?.admin(addr)?)
}

/// Starts and heals faults on a cluster.
pub struct Nemesis {
    net: Net,
    iptables: Option<Iptables>,
}

impl Nemesis {
    /// A nemesis that makes partitions with `net`.
    pub fn new(net: Net) -> Result<Self> {
        let iptables = if net == Net::Iptables { Some(Iptables::install()?) } else { None };
        Ok(Self { net, iptables })
    }

    /// Applies `fault`.
    pub async fn start(&self, cluster: &mut LocalCluster, fault: &Fault) -> Result<()> {
        let creds = cluster.credentials.clone();
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
        match fault {
            Fault::Kill(x) => cluster.kill9(*x),
            Fault::Pause(x) => cluster.pause(*x),
            Fault::Latency(x, ms) => {
                for (i, addr) in addrs.iter().enumerate() {
                    let peers: Vec<usize> = if i == *x { (0..addrs.len()).filter(|o| o != x).collect() } else { vec![*x] };
                    let rules =
                        peers.iter().map(|p| pb::FaultRule { peer: ids[*p].clone(), delay_ms: *ms, ..Default::default() }).collect();
                    admin(&creds, addr)
                        .await?
                        .set_fault(pb::SetFaultRequest { rules, clear: false })
                        .await
                        .with_context(|| format!("latency on {}", ids[i]))?;
                }
            }
            Fault::Clock(x, ms) => {
                admin(&creds, &addrs[*x])
                    .await?
                    .set_clock(pb::SetClockRequest { offset_ms: *ms })
                    .await
                    .with_context(|| format!("clock on {}", ids[*x]))?;
            }
            Fault::Partition(partition) => {
                let links = partition.cut_links(addrs.len());
                match &self.iptables {
                    Some(ipt) => {
                        for (a, b) in links {
                            ipt.drop_link(ip_of(&addrs[a]), ip_of(&addrs[b]))?;
                        }
                    }
                    None => {
                        for (i, addr) in addrs.iter().enumerate() {
                            let rules: Vec<pb::FaultRule> = links
                                .iter()
                                .filter(|(a, _)| *a == i)
                                .map(|(_, b)| pb::FaultRule { peer: ids[*b].clone(), block: true, ..Default::default() })
                                .collect();
                            if !rules.is_empty() {
                                admin(&creds, addr)
                                    .await?
                                    .set_fault(pb::SetFaultRequest { rules, clear: false })
                                    .await
                                    .with_context(|| format!("partition on {}", ids[i]))?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Undoes `fault`.
    pub async fn heal(&self, cluster: &mut LocalCluster, fault: &Fault) -> Result<()> {
        let creds = cluster.credentials.clone();
        match fault {
            Fault::Kill(x) => cluster.restart(*x)?,
            Fault::Pause(x) => cluster.resume(*x),
            Fault::Clock(x, _) => {
                let addr = cluster.nodes[*x].addr.clone();
                admin(&creds, &addr).await?.set_clock(pb::SetClockRequest { offset_ms: 0 }).await.context("clock heal")?;
            }
            _ if self.net == Net::Iptables && fault.kind() == FaultKind::Partition => self.iptables.as_ref().expect("installed").flush()?,
            _ => {
                for n in &cluster.nodes {
                    admin(&creds, &n.addr)
                        .await?
                        .set_fault(pb::SetFaultRequest { rules: Vec::new(), clear: true })
                        .await
                        .with_context(|| format!("heal on {}", n.id))?;
                }
            }
        }
        Ok(())
    }

    /// Heals everything, whatever is active: every node running and
    /// continued, no fault rules, clocks back, no DROP rules.
    pub async fn heal_all(&self, cluster: &mut LocalCluster) -> Result<()> {
        let creds = cluster.credentials.clone();
        if let Some(ipt) = &self.iptables {
            ipt.flush()?;
        }
        for i in 0..cluster.nodes.len() {
            if cluster.nodes[i].paused {
                cluster.resume(i);
            }
            if !cluster.nodes[i].running() {
                cluster.restart(i)?;
            }
        }
        for n in &cluster.nodes {
            // A node just restarted may take a moment to listen.
            let mut tries = 0;
            loop {
                let r = async {
                    let mut a = admin(&creds, &n.addr).await?;
                    a.set_fault(pb::SetFaultRequest { rules: Vec::new(), clear: true }).await?;
                    a.set_clock(pb::SetClockRequest { offset_ms: 0 }).await?;
                    anyhow::Ok(())
                }
                .await;
                match r {
                    Ok(()) => break,
                    Err(e) if tries >= 100 => return Err(e.context(format!("cannot heal {}", n.id))),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_reject_typos() {
        assert_eq!("all".parse::<Kinds>().unwrap().0.len(), 5);
        assert_eq!("kill, pause".parse::<Kinds>().unwrap().to_string(), "kill,pause");
        assert!("none".parse::<Kinds>().unwrap().0.is_empty());
        assert!("kil".parse::<Kinds>().unwrap_err().contains("unknown nemesis \"kil\""));
    }

    #[test]
    fn schedule_is_seeded_sequential_and_healed_before_the_end() {
        let kinds: Kinds = "all".parse().unwrap();
        let a = schedule(7, &kinds, 5, Duration::from_secs(120));
        assert_eq!(a, schedule(7, &kinds, 5, Duration::from_secs(120)), "same seed, same faults");
        assert_ne!(a, schedule(8, &kinds, 5, Duration::from_secs(120)));
        assert!(a.len() >= 10, "a fault every few seconds: {}", a.len());
        for w in a.windows(2) {
            assert!(w[0].heal_ms < w[1].start_ms, "one fault at a time");
        }
        assert_eq!(a.last().unwrap().heal_ms, 120_000, "the last fault lasts until the final heal");
        assert!(a.last().unwrap().heal_ms - a.last().unwrap().start_ms >= 3_000);
        let seen: BTreeSet<FaultKind> = a.iter().map(|s| s.fault.kind()).collect();
        assert_eq!(seen.len(), 5, "every kind shows up in two minutes: {seen:?}");
        assert!(schedule(7, &"none".parse().unwrap(), 5, Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn partitions_cut_the_right_links() {
        let iso = Partition::Isolate(2).cut_links(5);
        assert_eq!(iso.len(), 8);
        assert!(iso.iter().all(|&(a, b)| a == 2 || b == 2));
        let split = Partition::Split(vec![0, 3]).cut_links(5);
        assert_eq!(split.len(), 2 * 2 * 3);
        assert_eq!(Partition::OneWay(1, 4).cut_links(5), vec![(1, 4)]);
        // Majorities ring on 5: each node keeps exactly its two neighbours.
        let ring = Partition::MajoritiesRing.cut_links(5);
        for a in 0..5 {
            let reachable = (0..5).filter(|&b| b != a && !ring.contains(&(a, b))).count();
            assert_eq!(reachable, 2, "node {a} sees itself and two others: a majority of 5");
        }
        let mut views: Vec<Vec<usize>> = (0..5).map(|a| (0..5).filter(|&b| b == a || !ring.contains(&(a, b))).collect()).collect();
        views.sort();
        views.dedup();
        assert_eq!(views.len(), 5, "no two nodes see the same majority");
        assert_eq!(Partition::MajoritiesRing.cut_links(3), vec![(0, 2), (2, 0)]);
        assert_eq!(Fault::Partition(Partition::OneWay(1, 4)).cut_links(5), vec![(1, 4)], "a fault cuts its shape's links");
        assert!(Fault::Kill(1).cut_links(5).is_empty());
    }
}
