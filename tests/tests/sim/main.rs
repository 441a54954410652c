//! Deterministic simulations: nodes in one process on turmoil, with pinned
//! seeds. Override a seed with `RINGKV_SIM_SEED`; a failure prints the seed
//! to rerun. The harness (hosts on memory storage, clients, admin helpers)
//! is `tests/src/sim.rs`, and the sweep's workload and nemesis are
//! `tests/src/sweep.rs`.
//!
//! One test binary, a module per topic. Test names carry the module, so
//! `cargo test -p ringkv-tests --test sim -- failover::` runs one topic.
//!
//! - [`core`]: the read and write paths. QUORUM through another
//!   coordinator; a minority partition seen from the majority side (ALL
//!   refused, QUORUM and ONE served) and from the minority side (QUORUM
//!   refused, ONE served); blocking read repair at ALL; crash with
//!   surviving storage; no dot reused after a crash; scan paging past
//!   deleted keys.
//! - [`anti_entropy`]: repair alone catches a replica up, keys on range
//!   ends included; an interrupted pass completes on the next; tombstone GC
//!   waits for every replica; a purged delete never comes back from the
//!   node a join moved the range away from.
//! - [`membership`]: crash detection within the derived bound; no flapping
//!   under jitter; back up after heal; join and decommission under write
//!   load; removenode plus repair; a removed node restarted on its old
//!   data; 64-node convergence; join during a partition.
//! - [`failover`]: hint replay, the hint window, hints surviving a crash,
//!   sloppy quorum, speculative retry, ANY, the coordinator's deadline.
//! - [`large_values`]: 288 MiB of 3 MiB values move by repair, join and
//!   decommission, in pages bounded in bytes.
//! - [`metrics`]: per-node registries: three nodes in one process, each
//!   scraped over turmoil, count only the requests they coordinated.
//! - [`scenarios`]: each fault kind of the sweep's nemesis alone under the
//!   workload, then every checker; and targeted fault cases (a lost ack, a
//!   late release, split brain, a skewed clock).
//! - [`serial`]: SERIAL compare-and-set: concurrent cas from one value
//!   applies exactly once per round; SERIAL on the majority side of a
//!   partition, `unavailable` on the minority side.
//! - [`sweep`]: the randomized nemesis sweep, each seed in a fresh process,
//!   and the check that one seed replays the same history.
//! - [`ttl`]: expiring keys: read at once, gone after the expiry through
//!   every replica, the same tombstone everywhere, purged after the grace;
//!   a replica with a clock ahead hides the value sooner, by at most its
//!   skew, and the replicas still converge.
//! - [`watch`]: writes hint replay brings to a replica that was cut off
//!   are streamed by it and still delivered once by the client.
//!
//! This file holds the helpers that more than one topic uses.

mod anti_entropy;
mod core;
mod failover;
mod large_values;
mod membership;
mod metrics;
mod scenarios;
mod serial;
mod sweep;
mod ttl;
mod watch;

use std::time::Duration;

use ringkv_tests::sim::{client, sees, until};

/// How long a view (liveness, membership) gets to spread after a change.
const CONVERGE: Duration = Duration::from_secs(20);

/// The live sibling values of a read.
fn values(r: &ringkv_client::pb::GetResponse) -> Vec<&[u8]> {
    r.siblings.iter().map(|s| s.value.as_slice()).collect()
}

/// Waits until n1 sees all three nodes normal and up.
async fn cluster_ready() -> Result<(), Box<dyn std::error::Error>> {
    until("n1 sees 3 nodes up", CONVERGE, || async {
        sees("n1", "n2", "up").await && sees("n1", "n3", "up").await && sees("n3", "n2", "up").await
    })
    .await?;
    Ok(())
}

/// Hinted handoff off: anti-entropy tests use it so only repair can heal,
/// and others so that only the writes themselves place data.
fn no_hints(_: usize, cfg: &mut ringkv_node::Config) {
    cfg.hinted_handoff = false;
}

/// Isolates n3 and waits until n1 has noticed.
async fn isolate_n3() -> Result<(), Box<dyn std::error::Error>> {
    turmoil::partition("n3", "n1");
    turmoil::partition("n3", "n2");
    until("n1 sees n3 down", CONVERGE, || sees("n1", "n3", "down")).await?;
    Ok(())
}

/// Reconnects n3 and waits until n1 and n3 see each other up.
async fn heal_n3() -> Result<(), Box<dyn std::error::Error>> {
    turmoil::repair("n3", "n1");
    turmoil::repair("n3", "n2");
    until("n1 sees n3 up", CONVERGE, || sees("n1", "n3", "up")).await?;
    until("n3 sees n1 up", CONVERGE, || sees("n3", "n1", "up")).await?;
    Ok(())
}

/// The replicas `coordinator`'s ring names for `key`.
async fn replicas(coordinator: &str, key: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(client(&[coordinator]).inspect(key.as_bytes()).await?.replicas.into_iter().map(|r| r.node).collect())
}

/// True when `observer` sees `node` in state `state`.
async fn state_is(observer: &str, node: &str, state: &str) -> bool {
    client(&[observer]).status().await.is_ok_and(|s| s.nodes.iter().any(|n| n.id == node && n.state == state))
}

/// Keys `node` stores, or 0 if it does not answer.
async fn local_keys(node: &str) -> u64 {
    client(&[node]).status().await.map_or(0, |s| s.local_keys)
}
