//! The on-disk and on-wire framing of every stored record.
//!
//! ```text
//! [format version: u8][payload length: u32 LE][crc32 of payload: u32 LE][postcard payload]
//! ```
//!
//! postcard (serde) encodes the payload; bincode is avoided on purpose
//! (DESIGN §8). The checksum and length turn a torn or flipped record into a
//! `Corrupt` error that names its key, never into garbage that decodes.
//!
//! TTL did not bump the format. A sibling's tombstone byte became a flags
//! byte whose second bit announces an expiry after it (`version/sibling.rs`),
//! so every record without an expiry encodes exactly as before: records
//! stored by older builds decode as never expiring, re-encode to the same
//! bytes (Merkle hashes unchanged across an upgrade), and older peers still
//! read every record that has no expiry. An older build fails cleanly, as
//! `Corrupt`, on one that has.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The current format. Bump it when a stored type changes shape in a way
/// old decoders would misread, and keep a decoder for every older version.
/// (TTL's optional expiry did not need it: see the module doc.)
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: version, length, checksum.
const HEADER_LEN: usize = 1 + 4 + 4;

/// Encodes `value` as a framed record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).expect("postcard encodes every in-memory type");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a framed record; `key` only names the record in errors.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("record is {} bytes, shorter than its {HEADER_LEN}-byte header", bytes.len())));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {} (this build reads {FORMAT_VERSION})", bytes[0])));
    }
    let len = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(corrupt(format!("payload is {} bytes, header says {len}", payload.len())));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    postcard::from_bytes(payload).map_err(|e| corrupt(format!("decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{DvvSet, Hlc, Sibling};

    fn sample() -> DvvSet {
        let mut d = DvvSet::default();
        let s = Sibling {
            hlc: Hlc { wall_ms: 7, logical: 1, node: "n1".into() },
            value: b"hello".to_vec(),
            tombstone: false,
            expires_at_ms: None,
        };
        d.update(&Default::default(), "n1", s, false).unwrap();
        d
    }

    #[test]
    fn round_trips() {
        let d = sample();
        assert_eq!(decode::<DvvSet>(b"k", &encode(&d)).unwrap(), d);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let err = decode::<DvvSet>(b"key-1", &b).unwrap_err();
            assert!(matches!(&err, Error::Corrupt { key, .. } if key == "key-1"), "bit {i}: {err}");
        }
    }

    /// The stored shapes as every build before TTL derived them.
    mod pre_ttl {
        use serde::{Deserialize, Serialize};
        use std::collections::BTreeMap;

        use crate::version::Hlc;

        #[derive(Serialize, Deserialize)]
        pub struct Sibling {
            pub hlc: Hlc,
            pub value: Vec<u8>,
            pub tombstone: bool,
        }
        #[derive(Serialize, Deserialize)]
        pub struct Entry {
            pub counter: u64,
            pub siblings: Vec<Sibling>,
        }
        #[derive(Serialize, Deserialize)]
        pub struct DvvSet {
            pub entries: BTreeMap<String, Entry>,
            pub floor: Option<Hlc>,
        }
    }

    /// `sample()` plus a tombstone and a floor, framed from verbatim copies
    /// of the pre-TTL derive shapes (`mod pre_ttl`, as of commit 22957d8):
    /// format 1, `(hlc, value, tombstone: bool)` siblings. Kept as bytes so
    /// that a change to the shapes above cannot silently change the test.
    const PRE_TTL_RECORD: &str = "012400000044649c2a02026e3101010701026e310568656c6c6f00026e3203010901026e320001010501026e32";

    #[test]
    fn a_record_written_before_ttl_decodes_as_never_expiring_and_reencodes_byte_for_byte() {
        let hlc = |wall_ms, node: &str| Hlc { wall_ms, logical: 1, node: node.into() };
        let old = pre_ttl::DvvSet {
            entries: [
                (
                    "n1".to_string(),
                    pre_ttl::Entry {
                        counter: 1,
                        siblings: vec![pre_ttl::Sibling { hlc: hlc(7, "n1"), value: b"hello".to_vec(), tombstone: false }],
                    },
                ),
                (
                    "n2".to_string(),
                    pre_ttl::Entry { counter: 3, siblings: vec![pre_ttl::Sibling { hlc: hlc(9, "n2"), value: vec![], tombstone: true }] },
                ),
            ]
            .into(),
            floor: Some(hlc(5, "n2")),
        };
        let bytes = encode(&old);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PRE_TTL_RECORD, "the test's pre-TTL shapes encode as the old build did");
        let d: DvvSet = decode(b"k", &bytes).unwrap();
        let n1 = &d.entries["n1"].siblings[0];
        assert_eq!((n1.value.as_slice(), n1.tombstone, n1.expires_at_ms), (b"hello".as_slice(), false, None));
        let n2 = &d.entries["n2"].siblings[0];
        assert_eq!((n2.tombstone, n2.expires_at_ms, d.entries["n2"].counter), (true, None, 3));
        assert_eq!(d.floor, Some(hlc(5, "n2")));
        assert_eq!(d.live(u64::MAX).len(), 1, "an old value never expires");
        // Same bytes back, so Merkle hashes do not change across the upgrade.
        assert_eq!(encode(&d), bytes);
    }

    #[test]
    fn a_record_with_an_expiry_round_trips() {
        let mut d = sample();
        let s = Sibling { expires_at_ms: Some(10_007), ..Sibling::value(Hlc { wall_ms: 8, logical: 0, node: "n2".into() }, b"x".to_vec()) };
        d.update(&Default::default(), "n2", s, true).unwrap();
        let converted = d.expired_at(10_007);
        for v in [d, converted] {
            assert_eq!(decode::<DvvSet>(b"k", &encode(&v)).unwrap(), v);
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode::<DvvSet>(b"k", &bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }
}
