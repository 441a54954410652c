//! One value of a key ([`Sibling`]), its expiry, and its encoding.
//!
//! # Expiry (TTL)
//!
//! A put may carry a time to live. The coordinator turns it into an
//! absolute instant, `expires_at_ms` = its HLC wall time at stamping plus
//! the TTL, so every replica holds the same number and nobody adds a TTL
//! to its own clock. Whether a sibling has expired is a pure function of
//! `(expires_at_ms, now_ms)`: [`Sibling::is_expired`]. Reads call it with
//! the coordinator's wall clock.
//!
//! An expired sibling is a tombstone. Physically, it is turned into one by
//! [`Sibling::expired`], which drops the value and sets the tombstone flag
//! but keeps the HLC and the expiry. The converted form is a function of
//! the sibling alone, never of the clock that decided to convert it, so two
//! replicas that convert at different moments (or one that has not
//! converted yet) hold the same dot in one of exactly two forms, and the
//! merge settles the pair on the converted one ([`settle`]). Conversion is
//! therefore a join like any other write, and replicas converge whatever
//! order or moments they convert in. Deadness for GC
//! ([`Sibling::dead_at`]) reads the expiry, not the tombstone flag, for a
//! sibling that has one, so both forms are purged at the same cutoff.
//!
//! # Encoding
//!
//! postcard is not self-describing, and records written before TTL existed
//! must stay readable (and hash the same in Merkle trees, so an upgrade
//! causes no repair traffic). The sibling is encoded as the tuple the old
//! derive wrote, `(hlc, value, tombstone: bool)`, with the bool byte read as
//! a flags byte: bit 0 is the tombstone, bit 1 says an expiry (a varint
//! `u64`) follows. A sibling without expiry is thus byte-identical to the
//! old format, and an old record decodes as "never expires". A build
//! without TTL reading a record with an expiry fails cleanly on the flags
//! byte (postcard refuses a bool other than 0 or 1); it never misreads it.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Hlc;
use crate::error::{Error, Result};

/// Longest TTL a put may ask for: 20 years, Cassandra's `MAX_TTL`. Far
/// beyond any honest use, and far from `u64` overflow however far the
/// clock runs.
pub const MAX_TTL_MS: u64 = 20 * 365 * 24 * 3600 * 1000;

/// Flags bit: the sibling is a tombstone (the old format's bool).
const TOMBSTONE: u8 = 1;
/// Flags bit: an expiry follows the flags.
const HAS_EXPIRY: u8 = 2;

/// One value of a key, live or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// When it was written.
    pub hlc: Hlc,
    /// The bytes; empty for a tombstone.
    pub value: Vec<u8>,
    /// A delete, or an expired value converted to a tombstone.
    pub tombstone: bool,
    /// When it expires, in wall ms since the epoch; `None` never.
    pub expires_at_ms: Option<u64>,
}

impl Sibling {
    /// A value written at `hlc` that never expires.
    pub fn value(hlc: Hlc, value: Vec<u8>) -> Self {
        Self { hlc, value, tombstone: false, expires_at_ms: None }
    }

    /// A delete written at `hlc`.
    pub fn tombstone(hlc: Hlc) -> Self {
        Self { hlc, value: Vec::new(), tombstone: true, expires_at_ms: None }
    }

    /// True once `now_ms` has reached the expiry. Pure, so every node
    /// that asks with the same `now_ms` gets the same answer.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// A value a read at `now_ms` returns: not deleted, not expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.tombstone && !self.is_expired(now_ms)
    }

    /// True when this sibling has been dead since `at_ms` or earlier, for
    /// tombstone GC. A delete is dead from its write; anything with an
    /// expiry, converted or not, from its expiry, so both forms of one dot
    /// are purged at the same cutoff.
    pub fn dead_at(&self, at_ms: u64) -> bool {
        match self.expires_at_ms {
            Some(at) => at_ms >= at,
            None => self.tombstone,
        }
    }

    /// True when [`Sibling::expired`] would change it: it has an expiry
    /// and is not yet converted.
    pub fn is_unconverted(&self) -> bool {
        self.expires_at_ms.is_some() && !self.tombstone
    }

    /// The tombstone an expired value becomes: same HLC, same expiry, no
    /// value. A function of the sibling alone, never of a clock, so every
    /// replica that converts it produces the same bytes.
    pub fn expired(&self) -> Sibling {
        Sibling { hlc: self.hlc.clone(), value: Vec::new(), tombstone: true, expires_at_ms: self.expires_at_ms }
    }

    /// Checks an expiry that came from another node: after the write's own
    /// timestamp and at most [`MAX_TTL_MS`] past it, as a coordinator
    /// would have stamped it; a converted tombstone carries no value.
    pub fn check_expiry(&self) -> Result<()> {
        let Some(at) = self.expires_at_ms else { return Ok(()) };
        let written = self.hlc.wall_ms;
        if at <= written || at - written > MAX_TTL_MS {
            return Err(Error::InvalidArgument(format!(
                "malformed version: a sibling written at {written} ms expires at {at} ms; an expiry must lie 1 ms to {MAX_TTL_MS} ms after the write"
            )));
        }
        if self.tombstone && !self.value.is_empty() {
            return Err(Error::InvalidArgument("malformed version: an expired sibling still carries a value".into()));
        }
        Ok(())
    }
}

/// The expiry a put with `ttl_ms` stamped at `written_ms` gets: `None` for
/// 0 (no TTL). Refuses a TTL over [`MAX_TTL_MS`] (or one that would
/// overflow), and a TTL on a delete, with a message that says what to do.
pub fn expiry_for(written_ms: u64, ttl_ms: u64, tombstone: bool) -> Result<Option<u64>> {
    check_ttl(ttl_ms, tombstone)?;
    if ttl_ms == 0 {
        return Ok(None);
    }
    written_ms.checked_add(ttl_ms).map(Some).ok_or_else(|| too_long(ttl_ms))
}

/// The request-time half of [`expiry_for`]: the TTL alone, before anything
/// is stamped, so a bad request is refused before it reaches a replica.
pub fn check_ttl(ttl_ms: u64, tombstone: bool) -> Result<()> {
    if tombstone && ttl_ms > 0 {
        return Err(Error::InvalidArgument(format!(
            "a delete cannot carry a TTL (got {ttl_ms} ms); a delete takes effect at once, so send it without one"
        )));
    }
    if ttl_ms > MAX_TTL_MS {
        return Err(too_long(ttl_ms));
    }
    Ok(())
}

fn too_long(ttl_ms: u64) -> Error {
    Error::InvalidArgument(format!(
        "ttl of {ttl_ms} ms is over the maximum of {MAX_TTL_MS} ms (20 years); use a shorter TTL, or none for a value that never expires"
    ))
}

/// The one sibling two copies of the same dot settle on. Legitimately the
/// two differ only as a value and its converted tombstone, and the
/// tombstone wins. Any other difference (only a bug or a hostile peer makes
/// one) is settled by a total order, so the merge stays commutative,
/// associative and idempotent either way: this is the max of a total order.
pub fn settle(a: Sibling, b: Sibling) -> Sibling {
    fn key(s: &Sibling) -> (bool, Option<u64>, &[u8], &Hlc) {
        (s.tombstone, s.expires_at_ms, &s.value, &s.hlc)
    }
    if key(&b) > key(&a) {
        b
    } else {
        a
    }
}

impl Serialize for Sibling {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let flags = if self.tombstone { TOMBSTONE } else { 0 } | if self.expires_at_ms.is_some() { HAS_EXPIRY } else { 0 };
        let mut t = serializer.serialize_tuple(if self.expires_at_ms.is_some() { 4 } else { 3 })?;
        t.serialize_element(&self.hlc)?;
        t.serialize_element(&self.value)?;
        t.serialize_element(&flags)?;
        if let Some(at) = &self.expires_at_ms {
            t.serialize_element(at)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Sibling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_tuple(4, SiblingVisitor)
    }
}

struct SiblingVisitor;

impl<'de> Visitor<'de> for SiblingVisitor {
    type Value = Sibling;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sibling: (hlc, value, flags[, expires_at_ms])")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Sibling, A::Error> {
        let missing = |i| de::Error::invalid_length(i, &self);
        let hlc: Hlc = seq.next_element()?.ok_or_else(|| missing(0))?;
        let value: Vec<u8> = seq.next_element()?.ok_or_else(|| missing(1))?;
        let flags: u8 = seq.next_element()?.ok_or_else(|| missing(2))?;
        if flags & !(TOMBSTONE | HAS_EXPIRY) != 0 {
            return Err(de::Error::custom(format!("unknown sibling flags {flags:#04x}; written by a newer build?")));
        }
        let expires_at_ms = match flags & HAS_EXPIRY {
            0 => None,
            _ => Some(seq.next_element::<u64>()?.ok_or_else(|| missing(3))?),
        };
        Ok(Sibling { hlc, value, tombstone: flags & TOMBSTONE != 0, expires_at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(wall_ms: u64) -> Hlc {
        Hlc { wall_ms, logical: 3, node: "n1".into() }
    }

    /// The sibling as every build before TTL derived it.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldSibling {
        hlc: Hlc,
        value: Vec<u8>,
        tombstone: bool,
    }

    fn expiring(wall: u64, at: u64) -> Sibling {
        Sibling { expires_at_ms: Some(at), ..Sibling::value(hlc(wall), b"v".to_vec()) }
    }

    #[test]
    fn a_sibling_without_expiry_encodes_exactly_as_before_ttl() {
        for tombstone in [false, true] {
            let old = OldSibling { hlc: hlc(7), value: if tombstone { vec![] } else { b"hello".to_vec() }, tombstone };
            let new = Sibling { hlc: old.hlc.clone(), value: old.value.clone(), tombstone, expires_at_ms: None };
            let old_bytes = postcard::to_stdvec(&old).unwrap();
            assert_eq!(postcard::to_stdvec(&new).unwrap(), old_bytes, "same bytes, so same Merkle hashes");
            assert_eq!(postcard::from_bytes::<Sibling>(&old_bytes).unwrap(), new, "old bytes read as never expiring");
        }
    }

    #[test]
    fn expiry_round_trips_and_an_old_reader_refuses_it() {
        for s in [expiring(7, 9_000), expiring(7, 9_000).expired()] {
            let bytes = postcard::to_stdvec(&s).unwrap();
            assert_eq!(postcard::from_bytes::<Sibling>(&bytes).unwrap(), s);
            assert!(postcard::from_bytes::<OldSibling>(&bytes).is_err(), "a pre-TTL build fails cleanly, never misreads");
        }
        let mut bytes = postcard::to_stdvec(&Sibling::value(hlc(1), vec![])).unwrap();
        *bytes.last_mut().unwrap() = 0x84;
        assert!(postcard::from_bytes::<Sibling>(&bytes).is_err(), "unknown flags from a newer build are refused");
    }

    #[test]
    fn expired_is_a_pure_function_of_expiry_and_now() {
        let s = expiring(100, 2_100);
        assert!(!s.is_expired(2_099) && s.is_live(2_099));
        assert!(s.is_expired(2_100) && !s.is_live(2_100), "expired at the instant itself");
        assert!(!Sibling::value(hlc(1), vec![]).is_expired(u64::MAX), "no expiry never expires");
        // Both forms of the dot are dead, for GC, from the same instant.
        for form in [s.clone(), s.expired()] {
            assert!(!form.dead_at(2_099) && form.dead_at(2_100), "{form:?}");
            assert!(!form.is_live(2_100));
        }
        assert!(Sibling::tombstone(hlc(5)).dead_at(0));
    }

    #[test]
    fn conversion_depends_on_the_sibling_alone_and_is_idempotent() {
        let s = expiring(100, 2_100);
        let c = s.expired();
        assert_eq!(c, Sibling { hlc: hlc(100), value: vec![], tombstone: true, expires_at_ms: Some(2_100) });
        assert_eq!(c.expired(), c);
        assert!(s.is_unconverted() && !c.is_unconverted());
    }

    #[test]
    fn settle_prefers_the_converted_form_whatever_the_order() {
        let s = expiring(100, 2_100);
        assert_eq!(settle(s.clone(), s.expired()), s.expired());
        assert_eq!(settle(s.expired(), s.clone()), s.expired());
        assert_eq!(settle(s.clone(), s.clone()), s);
    }

    #[test]
    fn ttl_checks_refuse_a_delete_with_ttl_and_an_overflowing_ttl() {
        assert_eq!(expiry_for(1_000, 0, false).unwrap(), None);
        assert_eq!(expiry_for(1_000, 2_000, false).unwrap(), Some(3_000));
        let err = expiry_for(1_000, 5, true).unwrap_err().to_string();
        assert!(err.contains("a delete cannot carry a TTL"), "{err}");
        let err = expiry_for(1_000, MAX_TTL_MS + 1, false).unwrap_err().to_string();
        assert!(err.contains("over the maximum"), "{err}");
        let err = expiry_for(u64::MAX - 10, 100, false).unwrap_err().to_string();
        assert!(err.contains("over the maximum"), "overflow is refused too: {err}");
    }

    #[test]
    fn incoming_expiries_are_checked_against_the_write_time() {
        expiring(100, 101).check_expiry().unwrap();
        expiring(100, 2_100).expired().check_expiry().unwrap();
        for bad in [expiring(100, 100), expiring(100, 50), expiring(100, 100 + MAX_TTL_MS + 1)] {
            assert!(bad.check_expiry().is_err(), "{bad:?}");
        }
        let mut leaky = expiring(100, 2_100).expired();
        leaky.value = b"x".to_vec();
        assert!(leaky.check_expiry().is_err());
    }
}
