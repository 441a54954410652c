//! Distrust: the one check every version from another node passes before
//! this node merges it, stores it or answers with it.
//!
//! A peer may be buggy, misconfigured or hostile, and one bad version is
//! enough to do lasting harm. A timestamp an hour ahead, once stored,
//! makes every coordinator that later writes the key jump its HLC (it
//! observes the key's timestamps before stamping), and then every peer
//! rejects that coordinator's writes as skewed. A DVV entry with more
//! siblings than dots breaks the dot arithmetic of every later merge. A
//! value over `max_value_bytes` is one the client API would have refused.
//!
//! So [`Admit::check`] is applied to every incoming version on every path
//! that merges or keeps one:
//! - pushed at this node: `Replicate`, `ReplicateBatch` (per item),
//!   `PushKeys` (anti-entropy, decommission and hint replay alike) and
//!   `StoreHint` (`service/peer.rs`);
//! - pulled by this node: keys fetched by anti-entropy
//!   (`antientropy/sync.rs`), ranges streamed by a join
//!   (`membership/lifecycle.rs`), and the answers a coordinator's reads and
//!   scans receive (`coordinator.rs`).
//!
//! It checks, in order: the key's size (1..=`max_key_bytes`), the DVV's
//! shape ([`DvvSet::check_shape`]), every value's size
//! (≤ `max_value_bytes`), every expiry (after its write, within
//! `MAX_TTL_MS` of it: `Sibling::check_expiry`), and the newest timestamp, floor included, against
//! the local clock plus `max_clock_skew` ([`HlcClock::check`], the check
//! `Replicate` always made). Timestamps in the past are never refused: old
//! data is honest.
//!
//! What a refusal does depends on who sent it. A version pushed at this
//! node fails the call (a whole `PushKeys` page, nothing merged), so the
//! sender hears why. A version this node pulled is skipped and logged, and
//! the rest of the page is merged: one bad key on a peer must not stall a
//! join or a range's repair. A read or scan answer that fails counts as
//! that replica failing.
//!
//! Client contexts are checked separately (`version::check_context`), and
//! the RPC arguments that size an answer are bounded where they are read
//! (`service/peer.rs`).

use std::sync::Arc;

use ringkv_proto::v1 as pb;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::record;
use crate::version::{DvvSet, HlcClock};

/// Most items one peer message may carry: keys a `FetchKeys` names,
/// entries of a `PushKeys`, items of a `ReplicateBatch`. Senders use 256
/// (anti-entropy, hints, decommission) and 128 (replicate batches); four
/// times the larger leaves room, and bounds the work one call makes.
pub const MAX_ITEMS_PER_MESSAGE: usize = 1024;

/// Checks a key against `max_key_bytes`.
pub fn check_key(key: &[u8], max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > max {
        return Err(Error::InvalidArgument(format!("key is {} bytes; the limit is {max} bytes (max_key_bytes)", key.len())));
    }
    Ok(())
}

/// Checks a value against `max_value_bytes`.
pub fn check_value(value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidArgument(format!("value is {} bytes; the limit is {max} bytes (max_value_bytes)", value.len())));
    }
    Ok(())
}

/// Checks a count of items in one message against [`MAX_ITEMS_PER_MESSAGE`].
pub fn check_items(what: &str, n: usize) -> Result<()> {
    if n > MAX_ITEMS_PER_MESSAGE {
        return Err(Error::InvalidArgument(format!("{what}: {n} in one message, more than the {MAX_ITEMS_PER_MESSAGE} allowed")));
    }
    Ok(())
}

/// The node's admission check for incoming versions.
pub struct Admit {
    hlc: Arc<HlcClock>,
    clock: Arc<dyn Clock>,
    max_key_bytes: usize,
    max_value_bytes: usize,
}

impl Admit {
    /// The check for a node running `config`, with its HLC and wall clock.
    pub fn new(config: &Config, hlc: Arc<HlcClock>, clock: Arc<dyn Clock>) -> Self {
        Self { hlc, clock, max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes }
    }

    /// The one validation of an incoming version of `key`. Pure apart from
    /// reading the wall clock: the HLC does not move.
    pub fn check(&self, key: &[u8], v: &DvvSet) -> Result<()> {
        check_key(key, self.max_key_bytes)?;
        v.check_shape()?;
        for e in v.entries.values() {
            for s in &e.siblings {
                check_value(&s.value, self.max_value_bytes)?;
                s.check_expiry()?;
            }
        }
        match v.max_hlc() {
            Some(ts) => self.hlc.check(ts, self.clock.wall_ms()),
            None => Ok(()),
        }
    }

    /// Decodes and checks one version `from` pushed; once admitted, its
    /// newest timestamp is observed, as `Replicate` always did.
    pub fn pushed(&self, key: &[u8], raw: &[u8], from: &str) -> Result<DvvSet> {
        let v = self.decode(key, raw, from)?;
        self.refusing(key, &v, from)?;
        self.observe(&v);
        Ok(v)
    }

    /// Decodes and checks a page `from` pushed: every entry is admitted or
    /// the page is refused whole, naming the first key that failed, and
    /// nothing in it is observed.
    pub fn pushed_page<'a>(&self, entries: &'a [pb::KeyVersion], from: &str) -> Result<Vec<(&'a [u8], DvvSet)>> {
        check_items("PushKeys entries", entries.len())?;
        let mut page = Vec::with_capacity(entries.len());
        for e in entries {
            let v = self.decode(&e.key, &e.version, from)?;
            self.refusing(&e.key, &v, from)?;
            page.push((e.key.as_slice(), v));
        }
        for (_, v) in &page {
            self.observe(v);
        }
        Ok(page)
    }

    /// Decodes and checks a page this node pulled from `from` (fetched or
    /// streamed): entries that fail are logged and left out, the rest are
    /// admitted and observed.
    pub fn pulled_page<'a>(&self, entries: &'a [pb::KeyVersion], from: &str) -> Vec<(&'a [u8], DvvSet)> {
        let mut page = Vec::with_capacity(entries.len());
        for e in entries {
            let admitted = self.decode(&e.key, &e.version, from).and_then(|v| self.check(&e.key, &v).map(|()| v));
            match admitted {
                Ok(v) => {
                    self.observe(&v);
                    page.push((e.key.as_slice(), v));
                }
                Err(err) => {
                    tracing::warn!(peer = %from, key = %String::from_utf8_lossy(&e.key), error = %err, "skipped a version pulled from a peer")
                }
            }
        }
        page
    }

    /// Checks the versions a peer answered a scan with; one failure fails
    /// the whole answer, as if that peer had not answered.
    pub fn answer(&self, entries: Vec<pb::KeyVersion>, from: &str) -> Result<Vec<(Vec<u8>, DvvSet)>> {
        entries
            .into_iter()
            .map(|e| {
                let v = self.decode(&e.key, &e.version, from)?;
                self.check(&e.key, &v)?;
                Ok((e.key, v))
            })
            .collect()
    }

    fn decode(&self, key: &[u8], raw: &[u8], from: &str) -> Result<DvvSet> {
        record::decode(key, raw).map_err(|e| Error::InvalidArgument(format!("a version from {from} did not decode: {e}")))
    }

    /// [`Admit::check`], logging a refusal of what `from` pushed. Errors
    /// other than clock skew name the key.
    fn refusing(&self, key: &[u8], v: &DvvSet, from: &str) -> Result<()> {
        self.check(key, v).map_err(|e| {
            tracing::warn!(peer = %from, key = %String::from_utf8_lossy(key), error = %e, "refused a version from a peer");
            match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("key {:?} from {from}: {m}", String::from_utf8_lossy(&key[..key.len().min(64)])))
                }
                other => other,
            }
        })
    }

    fn observe(&self, v: &DvvSet) {
        if let Some(ts) = v.max_hlc() {
            self.hlc.observe(ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::version::{Context, Entry, Hlc, Sibling};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fixed(AtomicU64);
    impl Clock for Fixed {
        fn wall_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    const NOW: u64 = 1_000_000;

    fn admit() -> (Admit, Arc<HlcClock>) {
        let config =
            Config { max_key_bytes: 8, max_value_bytes: 16, max_clock_skew: std::time::Duration::from_millis(500), ..Default::default() };
        let hlc = Arc::new(HlcClock::new("me", crate::clock::millis(config.max_clock_skew)));
        (Admit::new(&config, hlc.clone(), Arc::new(Fixed(AtomicU64::new(NOW)))), hlc)
    }

    fn version(wall_ms: u64, value: &[u8]) -> DvvSet {
        let mut d = DvvSet::default();
        let s =
            Sibling { hlc: Hlc { wall_ms, logical: 0, node: "p".into() }, value: value.to_vec(), tombstone: false, expires_at_ms: None };
        d.update(&Context::new(), "p@1", s, false).unwrap();
        d
    }

    fn kv(key: &[u8], v: &DvvSet) -> pb::KeyVersion {
        pb::KeyVersion { key: key.to_vec(), version: record::encode(v) }
    }

    #[test]
    fn every_check_refuses_its_case_and_admits_honest_versions() {
        let (a, _) = admit();
        a.check(b"k", &version(NOW + 500, b"ok")).unwrap();
        a.check(b"k", &version(1, b"old is fine")).unwrap();
        let mut crowded = version(NOW, b"x");
        crowded.entries.insert("q".into(), Entry { counter: 0, siblings: version(NOW, b"y").entries["p@1"].siblings.clone() });
        let mut floored = version(NOW, b"x");
        floored.floor = Some(Hlc { wall_ms: NOW + 10_000, logical: 0, node: "p".into() });
        let expiring = |at: u64| {
            let mut v = version(NOW, b"x");
            v.entries.get_mut("p@1").unwrap().siblings[0].expires_at_ms = Some(at);
            v
        };
        a.check(b"k", &expiring(NOW + 30_000)).unwrap();
        a.check(b"k", &expiring(NOW + crate::version::MAX_TTL_MS)).unwrap();
        let cases: [(&[u8], DvvSet, &str); 7] = [
            (b"k", expiring(NOW), "an expiry must lie"),
            (b"k", expiring(NOW + crate::version::MAX_TTL_MS + 1), "an expiry must lie"),
            (b"", version(NOW, b"x"), "empty"),
            (b"ninebytes", version(NOW, b"x"), "max_key_bytes"),
            (b"k", version(NOW, &[0; 17]), "max_value_bytes"),
            (b"k", crowded, "siblings"),
            (b"k", version(NOW + 501, b"x"), "clock skew"),
        ];
        for (key, v, says) in cases {
            let err = a.check(key, &v).unwrap_err();
            assert!(err.to_string().contains(says), "{says}: {err}");
        }
        assert!(a.check(b"k", &floored).unwrap_err().to_string().contains("clock skew"), "the floor is a timestamp too");
        let maxed = DvvSet { entries: BTreeMap::from([("p".into(), Entry { counter: u64::MAX, siblings: vec![] })]), floor: None };
        assert!(a.check(b"k", &maxed).is_err());
    }

    #[test]
    fn a_pushed_page_is_refused_whole_and_moves_no_clock() {
        let (a, hlc) = admit();
        let page = [kv(b"good", &version(NOW, b"ok")), kv(b"bad", &version(NOW + 3_600_000, b"ahead"))];
        let err = a.pushed_page(&page, "mallory").unwrap_err();
        assert!(matches!(err, Error::ClockSkew { .. }), "{err}");
        assert!(hlc.now(NOW).wall_ms == NOW, "the HLC did not move");
        // Pulled, the same page loses only its bad entry.
        let kept = a.pulled_page(&page, "mallory");
        assert_eq!(kept.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [b"good".as_slice()]);
        assert!(hlc.now(NOW).wall_ms == NOW, "still not moved");
        let items: Vec<pb::KeyVersion> = (0..=MAX_ITEMS_PER_MESSAGE).map(|_| kv(b"k", &version(NOW, b"x"))).collect();
        assert!(a.pushed_page(&items, "mallory").unwrap_err().to_string().contains("allowed"));
    }
}
