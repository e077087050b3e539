//! The versioned keyspace: how user keys, versions and metadata are laid out in the engine.
//!
//! Every engine key starts with a one-byte prefix naming its kind:
//!
//! - `0x01 name`: metadata, each a timestamp as 8 bytes big-endian: `0x01 "last_commit_ts"`
//!   (the last commit) and `0x01 "gc_floor"` (the highest watermark garbage collection used).
//! - `0x02 escape(user key) 0x00 0x00 ts`: one version of a user key, committed at `ts` (8 bytes
//!   big-endian). The value is `0x00` for a tombstone (a delete) or `0x01` followed by the user
//!   value.
//! - `0x03 ts`: the change-log record of the transaction committed at `ts` (see
//!   [`crate::mvcc::Txn::append_log`]); not versioned, written once, deleted only by trimming.
//!   `0x01 "log_floor"` is the newest timestamp trimming deleted.
//!
//! `escape` writes `0x00` as `0x00 0xff` and ends the key with `0x00 0x00`, so no encoded key is
//! a prefix of another and byte order of encoded keys equals byte order of user keys (the same
//! trick as toydb's keycode). All versions of one key are therefore contiguous, sorted by commit
//! timestamp, and user-key order is preserved for scans.

use crate::error::{Error, Result};
use crate::mvcc::Ts;

/// Metadata prefix.
pub const META: u8 = 0x01;
/// Version prefix.
pub const VERSION: u8 = 0x02;
/// The byte after [`VERSION`], bounding the version area from above.
pub const VERSION_END: u8 = 0x03;

/// Change-log prefix.
pub const LOG: u8 = 0x03;
/// The byte after [`LOG`], bounding the log from above.
pub const LOG_END: u8 = 0x04;

/// The engine key of the change-log record committed at `ts`.
pub fn log_key(ts: Ts) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LOG);
    k.extend_from_slice(&ts.0.to_be_bytes());
    k
}

/// The timestamp of a change-log key.
pub fn decode_log_key(raw: &[u8]) -> Result<Ts> {
    match raw.split_first() {
        Some((&LOG, rest)) if rest.len() == 8 => {
            Ok(Ts(u64::from_be_bytes(rest.try_into().unwrap_or_default())))
        }
        _ => Err(Error::new(crate::error::Code::InternalError, "corrupt change-log key")),
    }
}

/// The metadata key of the newest change-log timestamp trimming has deleted: a resume point at
/// or before it may have lost events.
pub fn log_floor_key() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"log_floor");
    k
}

/// The metadata key of the last commit timestamp.
pub fn last_commit_ts_key() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"last_commit_ts");
    k
}

/// The metadata key of the highest watermark garbage collection has deleted versions below, so
/// that after a restart reads older than it are refused even if the history window grew.
pub fn gc_floor_key() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"gc_floor");
    k
}

/// The encoded prefix shared by every version of `key`: `0x02 escape(key) 0x00 0x00`.
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 11);
    out.push(VERSION);
    // Copied a run at a time: each 0x00 between two runs is written as 0x00 0xff.
    let mut runs = key.split(|&b| b == 0x00);
    out.extend_from_slice(runs.next().unwrap_or_default());
    for run in runs {
        out.extend_from_slice(&[0x00, 0xff]);
        out.extend_from_slice(run);
    }
    out.extend_from_slice(&[0x00, 0x00]);
    out
}

/// The length of the prefix of an engine key that encodes the first `n` bytes of its user key;
/// `None` when it is not a version key or its user key is shorter. Every engine key that starts
/// with that prefix encodes a user key that starts with the same `n` bytes.
pub fn encoded_prefix_len(raw: &[u8], n: usize) -> Option<usize> {
    if raw.first() != Some(&VERSION) {
        return None;
    }
    let (mut at, mut decoded) = (1, 0);
    while decoded < n {
        match *raw.get(at)? {
            // An escaped zero; `0x00 0x00` ends the user key.
            0x00 if *raw.get(at + 1)? == 0xff => at += 2,
            0x00 => return None,
            _ => at += 1,
        }
        decoded += 1;
    }
    Some(at)
}

/// The engine key of the version of `key` committed at `ts`.
pub fn version_key(key: &[u8], ts: Ts) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&ts.0.to_be_bytes());
    out
}

/// Splits an engine version key into the user key and the version's timestamp.
pub fn decode_version_key(raw: &[u8]) -> Result<(Vec<u8>, Ts)> {
    let corrupt = || Error::new(crate::error::Code::InternalError, "corrupt MVCC version key");
    let rest = match raw.split_first() {
        Some((&VERSION, rest)) => rest,
        _ => return Err(corrupt()),
    };
    // Byte by byte (keys hold many short runs between zeros, big-endian numbers, each too short
    // for a copy to pay), into a buffer as long as the rest, so that no write checks capacity.
    let mut key = vec![0u8; rest.len()];
    let mut len = 0;
    let mut bytes = rest.iter().enumerate();
    let i = loop {
        let Some((i, &b)) = bytes.next() else { return Err(corrupt()) };
        if b != 0x00 {
            key[len] = b;
            len += 1;
            continue;
        }
        match bytes.next() {
            Some((_, 0x00)) => break i,
            Some((_, 0xff)) => len += 1,
            _ => return Err(corrupt()),
        }
    };
    key.truncate(len);
    let ts: [u8; 8] = rest.get(i + 2..).and_then(|t| t.try_into().ok()).ok_or_else(corrupt)?;
    Ok((key, Ts(u64::from_be_bytes(ts))))
}

/// The commit timestamp of an engine version key: its last eight bytes.
pub fn version_key_ts(raw: &[u8]) -> Result<Ts> {
    match raw.len().checked_sub(8).filter(|&at| at > 0 && raw[0] == VERSION) {
        Some(at) => Ok(Ts(u64::from_be_bytes(raw[at..].try_into().unwrap_or_default()))),
        None => Err(Error::new(crate::error::Code::InternalError, "corrupt MVCC version key")),
    }
}

/// Encodes a version's value: `None` is a tombstone.
pub fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0x00],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(0x01);
            out.extend_from_slice(v);
            out
        }
    }
}

/// Whether an encoded version value is a tombstone.
pub fn is_tombstone(raw: &[u8]) -> bool {
    raw.first() == Some(&0x00)
}

/// Decodes a version's value: `None` is a tombstone.
pub fn decode_value(mut raw: Vec<u8>) -> Result<Option<Vec<u8>>> {
    match raw.first() {
        Some(0x00) => Ok(None),
        Some(0x01) => {
            raw.remove(0);
            Ok(Some(raw))
        }
        _ => Err(Error::new(crate::error::Code::InternalError, "corrupt MVCC version value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order_and_round_trips() {
        let keys: [&[u8]; 7] = [b"", b"\x00", b"\x00\x00", b"\x00\xff", b"a", b"a\x00", b"ab"];
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        for k in keys {
            for ts in [Ts(1), Ts(u64::MAX - 1)] {
                let e = version_key(k, ts);
                assert_eq!(decode_version_key(&e).unwrap(), (k.to_vec(), ts));
                encoded.push(e);
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded, "user-key order, then ts order");
        assert!(decode_version_key(b"\x02a\x00").is_err());
        assert!(decode_version_key(b"\x02a\x00\x01").is_err());
        assert!(decode_version_key(b"\x02a\x00\x00\x01").is_err(), "a short timestamp");
        assert!(decode_version_key(b"\x02abc").is_err());
        assert!(decode_version_key(b"\x01x").is_err());
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(decode_value(encode_value(None)).unwrap(), None);
        assert!(is_tombstone(&encode_value(None)));
        assert!(!is_tombstone(&encode_value(Some(b""))));
        assert_eq!(decode_value(encode_value(Some(b"xy"))).unwrap(), Some(b"xy".to_vec()));
        assert!(decode_value(Vec::new()).is_err());
    }
}
