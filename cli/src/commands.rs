//! The data and admin commands: put, get, delete, scan, status, ring,
//! inspect, fault (watch is in watch.rs). Each prints text, or one JSON object with `--json`.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringkv_client::policy::PolicyName;
use ringkv_client::{pb, Client, Credentials, Level, Options, ReadRepair};
use serde_json::{json, Value};

use crate::args::{Command, FaultAction, FaultTarget, LevelArg, RepairArg, RequestArgs};
use crate::output::{b64, expiry_text, hlc_json, hlc_text, receipt_json, receipt_text, sibling_json, unb64, value_json, value_text};

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::One => Level::One,
            LevelArg::Two => Level::Two,
            LevelArg::Quorum => Level::Quorum,
            LevelArg::All => Level::All,
            LevelArg::LocalQuorum => Level::LocalQuorum,
            LevelArg::Any => Level::Any,
            LevelArg::Serial => Level::Serial,
            LevelArg::LocalSerial => Level::LocalSerial,
        }
    }
}

fn options(req: &RequestArgs, repair: Option<RepairArg>) -> Options {
    Options {
        level: req.level.into(),
        read_repair: match repair {
            None | Some(RepairArg::Blocking) => ReadRepair::Blocking,
            Some(RepairArg::Async) => ReadRepair::Async,
            Some(RepairArg::Off) => ReadRepair::Off,
        },
        timeout: req.timeout,
        sloppy: req.sloppy,
    }
}

pub(crate) fn print(json_mode: bool, value: Value, text: impl FnOnce() -> String) {
    if json_mode {
        println!("{value}");
    } else {
        let t = text();
        if !t.is_empty() {
            println!("{t}");
        }
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Connects with the named policy ("endpoints": in the order given),
/// presenting `credentials`.
pub async fn connect(endpoints: &[String], policy: &PolicyName, credentials: &Credentials) -> Result<Client> {
    Ok(match policy.build(rand_seed()) {
        Some(p) => Client::builder().endpoints(endpoints).policy(p).credentials(credentials.clone()).build().await?,
        None => Client::connect_with(endpoints, credentials.clone()).await?,
    })
}

/// Runs one data or admin command.
pub async fn run(cmd: Command, endpoints: &[String], policy: &PolicyName, credentials: &Credentials, json_mode: bool) -> Result<()> {
    let client = connect(endpoints, policy, credentials).await?;
    match cmd {
        Command::Put { key, value, context, ttl, req } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf).context("cannot read the value from stdin")?;
                    buf
                }
            };
            let ctx = context.as_deref().map(unb64).transpose()?;
            let resp = match ttl {
                Some(ttl) => client.put_with_ttl(key.as_bytes(), &value, ctx, ttl, options(&req, None)).await?,
                None => client.put(key.as_bytes(), &value, ctx, options(&req, None)).await?,
            };
            let ttl_ms = ttl.map(|t| t.as_millis() as u64);
            print(
                json_mode,
                json!({ "ok": true, "key": key, "ttl_ms": ttl_ms, "context": b64(&resp.context), "receipt": receipt_json(resp.receipt.as_ref()) }),
                || {
                    if req.explain {
                        receipt_text(resp.receipt.as_ref())
                    } else {
                        "OK".into()
                    }
                },
            );
        }
        Command::Get { key, read_repair, req } => {
            let resp = client.get(key.as_bytes(), options(&req, Some(read_repair))).await?;
            let siblings: Vec<Value> = resp.siblings.iter().map(|s| sibling_json(s, false)).collect();
            let values: Vec<Value> = resp.siblings.iter().map(|s| value_json(&s.value)).collect();
            print(
                json_mode,
                json!({ "key": key, "values": values, "siblings": siblings, "context": b64(&resp.context), "receipt": receipt_json(resp.receipt.as_ref()) }),
                || {
                    let mut out: Vec<String> = resp.siblings.iter().map(|s| value_text(&s.value)).collect();
                    // Expiries go to stderr, like the notes below, so
                    // stdout stays the values alone.
                    let now = std::time::SystemTime::now();
                    for (s, note) in resp.siblings.iter().filter_map(|s| Some((s, expiry_text(s, now)?))) {
                        let which = if resp.siblings.len() > 1 { format!("{}: ", value_text(&s.value)) } else { String::new() };
                        eprintln!("{which}{note}");
                    }
                    if resp.siblings.is_empty() {
                        eprintln!("(not found)");
                    } else if resp.siblings.len() > 1 {
                        eprintln!("({} concurrent siblings; write back with --context to resolve)", resp.siblings.len());
                    }
                    if req.explain {
                        out.push(receipt_text(resp.receipt.as_ref()));
                    }
                    out.join("\n")
                },
            );
        }
        Command::Cas(args) => crate::cas::run(&client, args, json_mode).await?,
        Command::Delete { key, context, req } => {
            let ctx = context.as_deref().map(unb64).transpose()?;
            let resp = client.delete(key.as_bytes(), ctx, options(&req, None)).await?;
            print(json_mode, json!({ "ok": true, "key": key, "receipt": receipt_json(resp.receipt.as_ref()) }), || {
                if req.explain {
                    receipt_text(resp.receipt.as_ref())
                } else {
                    "OK".into()
                }
            });
        }
        Command::Scan { prefix, start_after, limit, req } => {
            let resp = client.scan(prefix.as_bytes(), start_after.as_bytes(), limit, options(&req, None)).await?;
            let entries: Vec<Value> = resp
                .entries
                .iter()
                .map(|e| json!({ "key": String::from_utf8_lossy(&e.key), "values": e.siblings.iter().map(|s| value_json(&s.value)).collect::<Vec<_>>() }))
                .collect();
            let next = String::from_utf8_lossy(&resp.next_start_after).into_owned();
            let doc =
                json!({ "entries": entries, "more": resp.more, "next_start_after": next, "receipt": receipt_json(resp.receipt.as_ref()) });
            print(json_mode, doc, || {
                let mut out: Vec<String> = resp
                    .entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{}\t{}",
                            String::from_utf8_lossy(&e.key),
                            e.siblings.iter().map(|s| value_text(&s.value)).collect::<Vec<_>>().join(" | ")
                        )
                    })
                    .collect();
                if resp.more {
                    // The resume key, not the last entry: deleted keys past
                    // it were already passed over.
                    out.push(format!("(more: resume with --start-after {next:?})"));
                }
                out.join("\n")
            });
        }
        Command::Watch { prefix, resume, count } => crate::watch::run(&client, &prefix, resume.as_deref(), count, json_mode).await?,
        Command::Status => {
            let s = client.status().await?;
            let nodes: Vec<Value> = s
                .nodes
                .iter()
                .map(|n| {
                    json!({ "id": n.id, "address": n.address, "zone": n.zone, "state": n.state, "liveness": n.liveness, "phi": n.phi,
                    "load": { "keys": n.keys, "in_flight": n.in_flight }, "tokens": n.tokens, "ownership": n.ownership })
                })
                .collect();
            print(
                json_mode,
                json!({ "node": s.node, "storage": s.storage, "durability": s.durability, "replication_factor": s.replication_factor, "local_keys": s.local_keys, "nodes": nodes,
                        "anti_entropy": s.anti_entropy.as_ref().map(|a| json!({
                            "passes": a.passes, "ranges_checked": a.ranges_checked, "ranges_out_of_sync": a.ranges_out_of_sync,
                            "keys_repaired": a.keys_repaired, "bytes_sent": a.bytes_sent, "bytes_received": a.bytes_received,
                            "tombstones_purged": a.tombstones_purged, "keys_cleaned": a.keys_cleaned, "trees_ready": a.trees_ready, "trees_total": a.trees_total,
                        })),
                        "hints": s.hints.iter().map(|h| json!({ "target": h.target, "count": h.count, "bytes": h.bytes, "oldest_age_ms": h.oldest_age_ms })).collect::<Vec<_>>() }),
                || {
                    let mut out = vec![format!(
                        "as seen by {} · storage {} · durability {} · replication factor {} · {} keys stored locally",
                        s.node, s.storage, s.durability, s.replication_factor, s.local_keys
                    )];
                    out.push(format!(
                        "{:<6} {:<22} {:<10} {:<8} {:<6} {:>6} {:>9}",
                        "ID", "ADDRESS", "ZONE", "STATE", "LIVE", "TOKENS", "OWNS"
                    ));
                    for n in &s.nodes {
                        out.push(format!(
                            "{:<6} {:<22} {:<10} {:<8} {:<6} {:>6} {:>8.1}%",
                            n.id,
                            n.address,
                            n.zone,
                            n.state,
                            n.liveness,
                            n.tokens,
                            n.ownership * 100.0
                        ));
                    }
                    let idle: Vec<&str> =
                        s.nodes.iter().filter(|n| n.state == "normal" && n.ownership == 0.0).map(|n| n.id.as_str()).collect();
                    if let Some(warning) = owning_nothing_warning(&idle) {
                        out.push(warning);
                    }
                    out.join("\n")
                },
            );
        }
        Command::Ring => {
            let r = client.ring().await?;
            let owners: Vec<Value> = r.owners.iter().map(|o| json!({ "node": o.node, "zone": o.zone, "ownership": o.ownership })).collect();
            let tokens: Vec<Value> = r.tokens.iter().map(|t| json!({ "token": t.token, "node": t.node })).collect();
            let idle: Vec<&str> = r.owners.iter().filter(|o| o.ownership == 0.0).map(|o| o.node.as_str()).collect();
            // JSON has no infinity: a ring with an idle node reports null.
            let skew = r.skew.is_finite().then_some(r.skew);
            print(json_mode, json!({ "skew": skew, "owning_nothing": idle, "nodes": owners, "tokens": tokens }), || {
                let mut out: Vec<String> =
                    r.owners.iter().map(|o| format!("{:<6} {:<10} {:>6.2}%", o.node, o.zone, o.ownership * 100.0)).collect();
                match skew {
                    Some(skew) => out.push(format!("{} tokens · skew (max/mean) {skew:.3}", r.tokens.len())),
                    None => out.push(format!("{} tokens · skew (max/mean) ∞", r.tokens.len())),
                }
                if let Some(warning) = owning_nothing_warning(&idle) {
                    out.push(warning);
                }
                out.join("\n")
            });
        }
        Command::Inspect { key } => {
            let r = client.inspect(key.as_bytes()).await?;
            let replicas: Vec<Value> = r
                .replicas
                .iter()
                .map(|v| {
                    json!({
                        "node": v.node, "reachable": v.reachable, "error": v.error, "present": v.present,
                        "clock": v.clock.iter().map(|d| json!({ "node": d.node, "counter": d.counter })).collect::<Vec<_>>(),
                        "siblings": v.siblings.iter().map(|s| sibling_json(s, true)).collect::<Vec<_>>(),
                        "floor": hlc_json(v.floor.as_ref()),
                    })
                })
                .collect();
            print(json_mode, json!({ "key": key, "replicas": replicas }), || {
                let mut out = Vec::new();
                for v in &r.replicas {
                    if !v.reachable {
                        out.push(format!("{:<6} unreachable: {}", v.node, v.error));
                        continue;
                    }
                    if !v.present {
                        out.push(format!("{:<6} (nothing stored)", v.node));
                        continue;
                    }
                    let clock: Vec<String> = v.clock.iter().map(|d| format!("{}:{}", d.node, d.counter)).collect();
                    out.push(format!("{:<6} clock [{}] floor {}", v.node, clock.join(" "), hlc_text(v.floor.as_ref())));
                    let now = std::time::SystemTime::now();
                    for s in &v.siblings {
                        let what = if s.tombstone { "(tombstone)".to_string() } else { value_text(&s.value) };
                        let expiry = expiry_text(s, now).map(|e| format!(" {e}")).unwrap_or_default();
                        out.push(format!("         {} {}{}", hlc_text(s.hlc.as_ref()), what, expiry));
                    }
                }
                out.join("\n")
            });
        }
        Command::Fault { action } => fault(&client, action, json_mode).await?,
        Command::Repair { node, range } => repair(&client, node, range, json_mode).await?,
        Command::Cleanup { node } => cleanup(&client, node, json_mode).await?,
        Command::Hints => hints(&client, json_mode).await?,
        Command::Decommission { node } => decommission(&client, &node, json_mode).await?,
        Command::Removenode { id } => {
            let status = client.status().await?;
            let via = status.nodes.iter().find(|n| n.id != id && n.liveness == "up").context("no live node to remove it through")?;
            client
                .admin(&via.address)?
                .remove_node(pb::RemoveNodeRequest { id: id.clone() })
                .await
                .map_err(ringkv_client::Error::from)
                .with_context(|| format!("cannot remove {id}"))?;
            if !json_mode {
                eprintln!("{id} marked left through {}; re-replicating its ranges with a repair", via.id);
            }
            // Let the ring change spread and the trees rebuild; the pass retries trees still building.
            tokio::time::sleep(Duration::from_secs(3)).await;
            repair(&client, None, None, json_mode).await?;
        }
        Command::Serve(_)
        | Command::Cluster(_)
        | Command::Demo(_)
        | Command::Bench(_)
        | Command::Cert { .. }
        | Command::Token { .. }
        | Command::Gateway(_) => {
            unreachable!("dispatched in main")
        }
    }
    Ok(())
}

/// The nodes a per-node admin command (repair, cleanup) runs on: the
/// `eligible` ones, or only the one named by `only`; an unknown name is an
/// error that lists the eligible nodes.
fn target_nodes(
    nodes: &[pb::NodeStatus],
    only: Option<String>,
    eligible: impl Fn(&pb::NodeStatus) -> bool,
) -> Result<Vec<&pb::NodeStatus>> {
    let eligible: Vec<&pb::NodeStatus> = nodes.iter().filter(|n| eligible(n)).collect();
    let targets: Vec<&pb::NodeStatus> = eligible.iter().copied().filter(|n| only.as_ref().is_none_or(|o| *o == n.id)).collect();
    if targets.is_empty() {
        bail!(
            "unknown node {:?}; the cluster has {}",
            only.unwrap_or_default(),
            eligible.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(targets)
}

/// Runs an anti-entropy pass on one node or on each in turn, and prints
/// the totals and each node's report.
async fn repair(client: &Client, only: Option<String>, range: Option<(u64, u64)>, json_mode: bool) -> Result<()> {
    let status = client.status().await?;
    let targets = target_nodes(&status.nodes, only, |_| true)?;
    let mut reports = Vec::new();
    for n in targets {
        if n.liveness == "down" {
            eprintln!("warning: skipped {} ({}), which is down", n.id, n.address);
            continue;
        }
        if !json_mode {
            eprintln!("repairing {} ...", n.id);
        }
        let r = client
            .admin(&n.address)?
            .repair(pb::RepairRequest { start: range.map(|r| r.0), end: range.map(|r| r.1) })
            .await
            .map_err(ringkv_client::Error::from)
            .with_context(|| format!("repair on {} ({}) failed", n.id, n.address))?
            .into_inner();
        reports.push(r);
    }
    let sum = |f: fn(&pb::RepairReport) -> u64| reports.iter().map(f).sum::<u64>();
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    let value = json!({
        "ranges_checked": sum(|r| r.ranges_checked),
        "ranges_out_of_sync": sum(|r| r.ranges_out_of_sync),
        "keys_repaired": sum(|r| r.keys_repaired),
        "bytes_sent": sum(|r| r.bytes_sent),
        "bytes_received": sum(|r| r.bytes_received),
        "duration_ms": sum(|r| r.duration_ms),
        "tombstones_purged": sum(|r| r.tombstones_purged),
        "errors": errors,
        "nodes": reports.iter().map(|r| json!({
            "node": r.node, "ranges_checked": r.ranges_checked, "ranges_out_of_sync": r.ranges_out_of_sync,
            "keys_repaired": r.keys_repaired, "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received,
            "duration_ms": r.duration_ms, "tombstones_purged": r.tombstones_purged, "errors": r.errors,
        })).collect::<Vec<_>>(),
    });
    print(json_mode, value, || {
        let mut out = vec![format!(
            "{:<6} {:>7} {:>12} {:>13} {:>11} {:>11} {:>9}",
            "NODE", "RANGES", "OUT OF SYNC", "KEYS REPAIRED", "BYTES SENT", "BYTES RECV", "MS"
        )];
        for r in &reports {
            out.push(format!(
                "{:<6} {:>7} {:>12} {:>13} {:>11} {:>11} {:>9}",
                r.node, r.ranges_checked, r.ranges_out_of_sync, r.keys_repaired, r.bytes_sent, r.bytes_received, r.duration_ms
            ));
        }
        out.push(format!(
            "total: {} ranges checked, {} out of sync, {} keys repaired, {} bytes sent, {} received, {} tombstones purged",
            sum(|r| r.ranges_checked),
            sum(|r| r.ranges_out_of_sync),
            sum(|r| r.keys_repaired),
            sum(|r| r.bytes_sent),
            sum(|r| r.bytes_received),
            sum(|r| r.tombstones_purged)
        ));
        for e in &errors {
            out.push(format!("warning: {e}"));
        }
        out.join("\n")
    });
    Ok(())
}

/// Runs a cleanup on one node or on each in turn (progress on stderr), and
/// prints each node's report and the totals.
async fn cleanup(client: &Client, only: Option<String>, json_mode: bool) -> Result<()> {
    let status = client.status().await?;
    let targets = target_nodes(&status.nodes, only, |n| n.state != "left")?;
    let mut reports = Vec::new();
    for n in targets {
        if n.liveness == "down" {
            eprintln!("warning: skipped {} ({}), which is down; run cleanup on it once it is back", n.id, n.address);
            continue;
        }
        if !json_mode {
            eprintln!("cleaning up {} ...", n.id);
        }
        let r = client
            .admin(&n.address)?
            .cleanup(pb::CleanupRequest {})
            .await
            .map_err(ringkv_client::Error::from)
            .with_context(|| format!("cleanup on {} ({}) failed", n.id, n.address))?
            .into_inner();
        reports.push(r);
    }
    let sum = |f: fn(&pb::CleanupReport) -> u64| reports.iter().map(f).sum::<u64>();
    let value = json!({
        "keys_removed": sum(|r| r.keys_removed),
        "bytes_removed": sum(|r| r.bytes_removed),
        "nodes": reports.iter().map(|r| json!({
            "node": r.node, "ranges_scanned": r.ranges_scanned, "keys_removed": r.keys_removed,
            "bytes_removed": r.bytes_removed, "duration_ms": r.duration_ms,
        })).collect::<Vec<_>>(),
    });
    print(json_mode, value, || {
        let mut out = vec![format!("{:<6} {:>14} {:>12} {:>13} {:>9}", "NODE", "RANGES SCANNED", "KEYS REMOVED", "BYTES REMOVED", "MS")];
        for r in &reports {
            out.push(format!("{:<6} {:>14} {:>12} {:>13} {:>9}", r.node, r.ranges_scanned, r.keys_removed, r.bytes_removed, r.duration_ms));
        }
        out.push(format!(
            "total: {} keys ({} bytes) of ranges their nodes no longer replicate removed",
            sum(|r| r.keys_removed),
            sum(|r| r.bytes_removed)
        ));
        out.join("\n")
    });
    Ok(())
}

/// Lists the hints every node holds, per target.
async fn hints(client: &Client, json_mode: bool) -> Result<()> {
    let status = client.status().await?;
    let mut rows = Vec::new();
    let mut nodes = Vec::new();
    for n in status.nodes.iter().filter(|n| n.liveness == "up" && n.state != "left") {
        let h = client
            .admin(&n.address)?
            .hints(pb::HintsRequest {})
            .await
            .map_err(ringkv_client::Error::from)
            .with_context(|| format!("cannot read hints on {}", n.id))?
            .into_inner();
        for t in &h.targets {
            rows.push(format!("{:<8} {:<8} {:>8} {:>12} {:>10.1}", h.node, t.target, t.count, t.bytes, t.oldest_age_ms as f64 / 1000.0));
        }
        nodes.push(json!({
            "node": h.node, "replayed": h.replayed, "dropped_window": h.dropped_window, "dropped_budget": h.dropped_budget, "expired": h.expired,
            "targets": h.targets.iter().map(|t| json!({ "target": t.target, "count": t.count, "bytes": t.bytes, "oldest_age_ms": t.oldest_age_ms })).collect::<Vec<_>>(),
        }));
    }
    let pending: u64 =
        nodes.iter().flat_map(|n| n["targets"].as_array().cloned().unwrap_or_default()).map(|t| t["count"].as_u64().unwrap_or(0)).sum();
    print(json_mode, json!({ "pending": pending, "nodes": nodes }), || {
        if rows.is_empty() {
            return "no hints pending".into();
        }
        let mut out = vec![format!("{:<8} {:<8} {:>8} {:>12} {:>10}", "HOLDER", "TARGET", "HINTS", "BYTES", "OLDEST s")];
        out.extend(rows);
        out.join("\n")
    });
    Ok(())
}

/// Decommissions `node`, waiting until it has streamed its data and stopped.
async fn decommission(client: &Client, node: &str, json_mode: bool) -> Result<()> {
    let status = client.status().await?;
    let target = status.nodes.iter().find(|n| n.id == node).with_context(|| format!("unknown node {node:?}"))?;
    if !json_mode {
        eprintln!("decommissioning {node}: streaming its ranges to their next owners...");
    }
    let r = client
        .admin(&target.address)?
        .decommission(pb::DecommissionRequest {})
        .await
        .map_err(ringkv_client::Error::from)
        .with_context(|| format!("decommission of {node} failed"))?
        .into_inner();
    print(json_mode, json!({ "ok": true, "node": node, "keys_streamed": r.keys_streamed, "duration_ms": r.duration_ms }), || {
        format!("{node} decommissioned: {} keys streamed in {} ms; it has stopped", r.keys_streamed, r.duration_ms)
    });
    Ok(())
}

/// Applies a fault and prints what changed.
async fn fault(client: &Client, action: FaultAction, json_mode: bool) -> Result<()> {
    let (value, text) = apply_fault(client, action).await?;
    print(json_mode, value, || text);
    Ok(())
}

/// Applies a fault to every node's outgoing rules, as the action needs.
/// Returns the JSON and text reports.
pub async fn apply_fault(client: &Client, action: FaultAction) -> Result<(Value, String)> {
    let status = client.status().await?;
    let ids: Vec<String> = status.nodes.iter().map(|n| n.id.clone()).collect();
    if let FaultAction::Clock { node, offset_ms } = &action {
        let Some(n) = status.nodes.iter().find(|n| &n.id == node) else {
            bail!("unknown node {node:?}; the cluster has {}", ids.join(", "));
        };
        let r = client
            .admin(&n.address)?
            .set_clock(pb::SetClockRequest { offset_ms: *offset_ms })
            .await
            .map_err(ringkv_client::Error::from)
            .with_context(|| format!("cannot shift {node}'s clock ({})", n.address))?
            .into_inner();
        let text = format!("{node}'s clock is now {offset_ms:+} ms off the system clock");
        return Ok((json!({ "ok": true, "node": r.node, "offset_ms": r.offset_ms, "wall_ms": r.wall_ms }), text));
    }
    let rule = |peer: &str, a: &FaultAction| {
        let mut r = pb::FaultRule { peer: peer.into(), ..Default::default() };
        match a {
            FaultAction::Block(_) => r.block = true,
            FaultAction::Delay { ms, .. } => r.delay_ms = *ms,
            FaultAction::Drop { fraction, .. } => {
                r.drop = *fraction;
            }
            FaultAction::Clear | FaultAction::Clock { .. } => {}
        }
        r
    };
    // (node whose outgoing traffic changes, peer) pairs.
    let links: Vec<(String, String)> = match &action {
        FaultAction::Clear | FaultAction::Clock { .. } => Vec::new(),
        FaultAction::Block(t) | FaultAction::Delay { target: t, .. } | FaultAction::Drop { target: t, .. } => links_for(t, &ids)?,
    };
    if let FaultAction::Drop { fraction, .. } = &action {
        if !(0.0..=1.0).contains(fraction) {
            bail!("--fraction must be between 0 and 1, not {fraction}");
        }
    }
    let clear = matches!(action, FaultAction::Clear);
    let mut changed = Vec::new();
    for n in &status.nodes {
        let rules: Vec<pb::FaultRule> = links.iter().filter(|(from, _)| *from == n.id).map(|(_, to)| rule(to, &action)).collect();
        if rules.is_empty() && !clear {
            continue;
        }
        let mut admin = client.admin(&n.address)?;
        let resp = match admin.set_fault(pb::SetFaultRequest { rules, clear }).await {
            Ok(r) => r.into_inner(),
            // A node that is down sends nothing anyway; the rest still get their rules.
            Err(e) if n.liveness == "down" => {
                eprintln!("warning: skipped {} ({}), which is down: {}", n.id, n.address, e.message());
                continue;
            }
            Err(e) => return Err(ringkv_client::Error::from(e)).with_context(|| format!("cannot set faults on {} ({})", n.id, n.address)),
        };
        changed.push(json!({ "node": n.id, "rules": resp.rules.iter().map(|r| json!({ "peer": r.peer, "block": r.block, "delay_ms": r.delay_ms, "drop": r.drop })).collect::<Vec<_>>() }));
    }
    let text = if clear { format!("cleared faults on {} nodes", changed.len()) } else { format!("set faults on {} links", links.len()) };
    Ok((json!({ "ok": true, "nodes": changed }), text))
}

fn links_for(t: &FaultTarget, ids: &[String]) -> Result<Vec<(String, String)>> {
    let known = |id: &String| -> Result<()> {
        if !ids.contains(id) {
            bail!("unknown node {id:?}; the cluster has {}", ids.join(", "));
        }
        Ok(())
    };
    match (&t.node, &t.from, &t.to) {
        (Some(node), _, _) => {
            known(node)?;
            Ok(ids.iter().filter(|o| *o != node).flat_map(|o| [(o.clone(), node.clone()), (node.clone(), o.clone())]).collect())
        }
        (None, Some(from), Some(to)) => {
            known(from)?;
            known(to)?;
            Ok(vec![(from.clone(), to.clone())])
        }
        _ => bail!("name a node with --node, or one link with --from and --to"),
    }
}

/// The warning `ring` and `status` print when a node on the ring owns
/// nothing: its tokens are all held by another node, so skew is infinite.
fn owning_nothing_warning(idle: &[&str]) -> Option<String> {
    (!idle.is_empty()).then(|| {
        format!(
            "warning: {} own(s) no part of the ring (every token also held by another node); skew is infinite. \
             Decommission or remove the node and join it again with a fresh --data-dir",
            idle.join(", ")
        )
    })
}
