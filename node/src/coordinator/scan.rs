//! Scans: one page of live keys under a prefix, merged across nodes.
//!
//! Every live node lists a page of its own keys, deleted ones included (a
//! tombstone on one replica may hide a live sibling on another), and the
//! pages are merged per key. A level means, for a scan, that every token
//! range must have that many of its replicas answering (ARCHITECTURE.md,
//! Deviations). Below the *horizon*, the least last key of the node pages
//! that were cut short, every answering node has listed every key it
//! holds, so merged versions there are complete. Tombstoned keys, and keys
//! whose every value has expired by this coordinator's clock, are
//! dropped before the page is cut to `limit` keys and [`PAGE_BYTES`]
//! bytes, and the page names the key to resume after, which may lie past
//! its last entry: a run of deleted keys yields a short or empty page that
//! still moves on.

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::receipt::{self, report_for};
use crate::error::{Error, Result};
use crate::paging::{Page, PAGE_BYTES};
use crate::quorum::Level;
use crate::record;
use crate::ring::Ring;
use crate::version::DvvSet;

/// One page of a scan: live keys with their merged versions.
pub struct ScanResult {
    /// Keys in order, with merged versions; each has a live sibling.
    pub entries: Vec<(Vec<u8>, DvvSet)>,
    /// More keys may follow; resume after `next_start_after`.
    pub more: bool,
    /// When `more`: the last key this page accounts for, deleted ones
    /// included. It is past every entry and past the request's
    /// `start_after`, so paging always advances.
    pub next_start_after: Vec<u8>,
    /// Which nodes answered.
    pub receipt: pb::Receipt,
    /// The instant (this node's wall ms) expiry was judged at: the
    /// entries' siblings live at it are the ones to return.
    pub now_ms: u64,
}

/// One page of live keys under `prefix`, merged across replicas.
pub(super) async fn scan(
    ctx: &Ctx,
    prefix: Vec<u8>,
    start_after: Vec<u8>,
    limit: usize,
    level: Level,
    timeout: Duration,
) -> Result<ScanResult> {
    let start = Instant::now();
    let ring = ctx.ring();
    let nodes = ring.nodes();
    let n = ctx.n();
    let required = level.required(n);
    let req = pb::ScanLocalRequest { prefix: prefix.clone(), start_after: start_after.clone(), limit: limit as u32 };
    let asks = nodes.iter().filter(|id| ctx.is_up(id)).map(|id| ctx.scan_local(id.clone(), req.clone(), timeout));
    let results = tokio::time::timeout(timeout, futures::future::join_all(asks)).await.map_err(|_| Error::Timeout {
        what: "scan".into(),
        answered: 0,
        required: required as u32,
        timeout_ms: timeout.as_millis() as u64,
    })?;

    let mut receipt = receipt::new(ctx.me(), level, required, &nodes, |id| ctx.is_up(id));
    let mut answered = Vec::new();
    let mut merged: BTreeMap<Vec<u8>, DvvSet> = Default::default();
    let mut horizon: Option<Vec<u8>> = None;
    for (id, result, latency) in results {
        let report = report_for(&mut receipt, &id);
        report.latency_us = latency.as_micros() as u64;
        // A peer's answer is admitted whole, or counts as not answering.
        let result = result.and_then(|kv| {
            let entries: Vec<(Vec<u8>, DvvSet)> = if id == ctx.me() {
                kv.entries.into_iter().map(|e| record::decode(&e.key, &e.version).map(|v| (e.key, v))).collect::<Result<_>>()?
            } else {
                ctx.admit_answer(kv.entries, &id)?
            };
            Ok((kv.more, entries))
        });
        match result {
            Ok((more, entries)) => {
                report.answered = true;
                answered.push(id);
                if let Some((last, _)) = entries.last().filter(|_| more) {
                    if horizon.as_ref().is_none_or(|h| last < h) {
                        horizon = Some(last.clone());
                    }
                }
                for (key, v) in entries {
                    merged.entry(key).and_modify(|m: &mut DvvSet| m.merge(&v)).or_insert(v);
                }
            }
            Err(e) => report.error = e.to_string(),
        }
    }
    check_coverage(&ring, n, level, &answered)?;
    let now_ms = ctx.wall_ms();
    let (entries, next_start_after) = cut_page(merged, horizon, limit, now_ms);
    receipt.acked = answered.len() as u32;
    receipt.latency_us = start.elapsed().as_micros() as u64;
    Ok(ScanResult { entries, more: next_start_after.is_some(), next_start_after: next_start_after.unwrap_or_default(), receipt, now_ms })
}

/// `Unavailable` unless every token range of `ring` has `level` of its
/// replicas among `answered`.
fn check_coverage(ring: &Ring, n: usize, level: Level, answered: &[String]) -> Result<()> {
    let required = level.required(n);
    for (_, end, _) in ring.ranges() {
        let replicas = ring.replicas_of(end, n);
        let got = replicas.iter().filter(|r| answered.contains(r)).count();
        if got < required.min(replicas.len().max(1)) || replicas.len() < required {
            return Err(Error::Unavailable {
                level: level.as_str().into(),
                required: required as u32,
                alive: got as u32,
                hint: format!("; a token range replicated on {} has too few answering replicas for the scan", replicas.join(", ")),
            });
        }
    }
    Ok(())
}

/// Keys in order, with their merged versions.
type Entries = Vec<(Vec<u8>, DvvSet)>;

/// The entries of `merged` live at `now_ms`, up to the horizon, cut to
/// `limit` keys and [`PAGE_BYTES`], and the key to resume after (`None`
/// when done).
fn cut_page(merged: BTreeMap<Vec<u8>, DvvSet>, horizon: Option<Vec<u8>>, limit: usize, now_ms: u64) -> (Entries, Option<Vec<u8>>) {
    let mut entries = Vec::new();
    let mut page = Page::new(limit, PAGE_BYTES);
    // The page ends at the horizon, unless it fills first.
    let mut next_start_after = horizon.clone();
    let mut examined: Option<Vec<u8>> = None;
    for (key, version) in merged {
        if horizon.as_ref().is_some_and(|h| key > *h) {
            break;
        }
        let live = version.live(now_ms);
        if !live.is_empty() {
            let size = key.len() + live.iter().map(|s| s.value.len()).sum::<usize>();
            if !page.admit(size) {
                next_start_after = examined;
                break;
            }
            entries.push((key.clone(), version));
        }
        examined = Some(key);
    }
    (entries, next_start_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, Sibling};

    fn version(tombstone: bool) -> DvvSet {
        let mut d = DvvSet::default();
        let hlc = Hlc { wall_ms: 1, logical: 0, node: "a".into() };
        d.update(
            &Default::default(),
            "a",
            Sibling { hlc, value: if tombstone { vec![] } else { b"v".to_vec() }, tombstone, expires_at_ms: None },
            true,
        )
        .expect("an empty context");
        d
    }

    /// Keys `k0`, `k1`, … with the given liveness.
    fn keys(live: &[bool]) -> BTreeMap<Vec<u8>, DvvSet> {
        live.iter().enumerate().map(|(i, l)| (format!("k{i}").into_bytes(), version(!l))).collect()
    }

    fn names(entries: &[(Vec<u8>, DvvSet)]) -> Vec<String> {
        entries.iter().map(|(k, _)| String::from_utf8(k.clone()).unwrap()).collect()
    }

    fn key(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn a_full_page_resumes_after_the_last_key_examined() {
        // k1 is deleted: skipped, but examined.
        let (entries, next) = cut_page(keys(&[true, false, true, true]), None, 2, 0);
        assert_eq!(names(&entries), ["k0", "k2"]);
        assert_eq!(next, key("k2"));
    }

    #[test]
    fn the_page_stops_at_the_horizon_even_past_a_run_of_deleted_keys() {
        let (entries, next) = cut_page(keys(&[false, false, false, true]), key("k2"), 10, 0);
        assert!(entries.is_empty(), "every key up to the horizon is deleted");
        assert_eq!(next, key("k2"), "but the page still moves on");
    }

    #[test]
    fn everything_listed_and_no_horizon_ends_the_scan() {
        let (entries, next) = cut_page(keys(&[true, false, true]), None, 10, 0);
        assert_eq!(names(&entries), ["k0", "k2"]);
        assert_eq!(next, None);
    }

    #[test]
    fn expired_keys_are_skipped_like_deleted_ones() {
        let mut merged = keys(&[true, true, true]);
        let hlc = Hlc { wall_ms: 5, logical: 0, node: "b".into() };
        let expiring = Sibling { expires_at_ms: Some(1_000), ..Sibling::value(hlc, b"t".to_vec()) };
        merged.get_mut(b"k1".as_slice()).unwrap().update(&Default::default(), "b", expiring, true).unwrap();
        let (entries, _) = cut_page(merged.clone(), None, 10, 999);
        assert_eq!(names(&entries), ["k0", "k1", "k2"], "before its expiry");
        let (entries, next) = cut_page(merged, None, 10, 1_000);
        assert_eq!(names(&entries), ["k0", "k2"], "from its expiry on");
        assert_eq!(next, None);
    }

    #[test]
    fn every_range_needs_its_level_of_answering_replicas() {
        let ring = Ring::new([("a", &[1u64][..]), ("b", &[2][..]), ("c", &[3][..]), ("d", &[4][..])]);
        let answered = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_coverage(&ring, 3, Level::All, &answered(&["a", "b", "c", "d"])).is_ok());
        // With d silent, every range d replicates has only 2 of 3.
        assert!(check_coverage(&ring, 3, Level::Quorum, &answered(&["a", "b", "c"])).is_ok());
        let e = check_coverage(&ring, 3, Level::All, &answered(&["a", "b", "c"])).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 3, alive: 2, .. }), "{e}");
        // Two silent nodes leave some range with one replica answering.
        let e = check_coverage(&ring, 3, Level::Quorum, &answered(&["a", "b"])).unwrap_err();
        assert!(matches!(e, Error::Unavailable { required: 2, alive: 1, .. }), "{e}");
        // A ring smaller than the level cannot serve it at all.
        let small = Ring::new([("a", &[1u64][..])]);
        assert!(check_coverage(&small, 3, Level::Quorum, &answered(&["a"])).is_err());
        assert!(check_coverage(&small, 3, Level::One, &answered(&["a"])).is_ok());
    }
}
