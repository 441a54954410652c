//! The on-disk and on-wire framing of every stored record.
//!
//! ```text
//! [format version: u8][payload length: u32 LE][crc32 of payload: u32 LE][postcard payload]
//! ```
//!
//! postcard (serde) encodes the payload; bincode is avoided on purpose
//! (DESIGN §8). The checksum and length turn a torn or flipped record into a
//! `Corrupt` error that names its key, never into garbage that decodes.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The current format. Bump it when a stored type changes shape, and keep a
/// decoder for every older version.
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
        let s = Sibling { hlc: Hlc { wall_ms: 7, logical: 1, node: "n1".into() }, value: b"hello".to_vec(), tombstone: false };
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

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode::<DvvSet>(b"k", &bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }
}
