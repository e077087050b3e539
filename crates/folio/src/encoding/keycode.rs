//! Order-preserving byte encodings for the components of storage keys.
//!
//! Storage keys are byte strings compared with `memcmp`. A key is built by concatenating
//! *components* (a keyspace tag, a collection id, an index id, an encoded value, a record id…),
//! and the byte order of two keys must equal the tuple order of their components. Two properties
//! make that work:
//!
//! 1. Each encoding preserves the order of its own type: integers are written big-endian (signed
//!    ones with the sign bit flipped, so that negatives sort first).
//! 2. Each encoding is *prefix-free*: no encoding is a proper prefix of another one of the same
//!    type, so the comparison of two tuples is decided inside the first component that differs
//!    and never spills into the next component. Fixed-width integers are prefix-free by
//!    construction. Variable-length byte strings are escaped: every `0x00` byte becomes
//!    `0x00 0xFF`, and the string ends with `0x00 0x00`. The terminator sorts below any escaped
//!    byte, so `"a"` sorts before `"a\0"` and before `"ab"`, as in plain byte order.
//!
//! Decoding reads the same components back with a [`Decoder`] cursor. Corrupt input is reported
//! as [`Code::InternalError`](crate::error::Code::InternalError): keys are written only by Folio,
//! so a decoding failure means damaged data, never a client mistake.

#[cfg(test)]
use crate::error::Result;

/// Appends a `u8`.
#[cfg(test)]
pub fn encode_u8(v: u8, out: &mut Vec<u8>) {
    out.push(v);
}

/// Appends a `u32`, big-endian.
pub fn encode_u32(v: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a `u64`, big-endian.
pub fn encode_u64(v: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends an `i64` so that byte order is numeric order: big-endian with the sign bit flipped.
pub fn encode_i64(v: i64, out: &mut Vec<u8>) {
    encode_u64((v as u64) ^ (1 << 63), out);
}

/// Appends an escaped, terminated byte string (`0x00` → `0x00 0xFF`, then `0x00 0x00`).
pub fn encode_bytes(v: &[u8], out: &mut Vec<u8>) {
    out.reserve(v.len() + 2);
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Appends an escaped, terminated string (its UTF-8 bytes, as [`encode_bytes`]).
pub fn encode_str(v: &str, out: &mut Vec<u8>) {
    encode_bytes(v.as_bytes(), out);
}

/// Inverts every byte of `bytes` in place, which reverses the order of a prefix-free encoding.
/// Used for descending index components.
pub fn invert(bytes: &mut [u8]) {
    for b in bytes {
        *b = !*b;
    }
}

/// The smallest key that is greater than every key starting with `prefix`, for the exclusive end
/// of a prefix scan; `None` when no such key exists (the prefix is all `0xFF`).
#[cfg(test)]
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A cursor that decodes components from the front of a key.
#[derive(Clone, Debug)]
#[cfg(test)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

#[cfg(test)]
impl<'a> Decoder<'a> {
    /// Starts decoding `key`.
    pub fn new(key: &'a [u8]) -> Self {
        Decoder { rest: key }
    }

    /// Whether every byte has been decoded.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Takes `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            crate::bail!(
                InternalError,
                "corrupt key: expected {} more bytes, found {}",
                n,
                self.rest.len()
            );
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Decodes a `u8`.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Decodes a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    /// Decodes a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    /// Decodes an `i64` written by [`encode_i64`].
    pub fn i64(&mut self) -> Result<i64> {
        Ok((self.u64()? ^ (1 << 63)) as i64)
    }

    /// Decodes a byte string written by [`encode_bytes`].
    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let Some(&b) = self.rest.get(i) else {
                crate::bail!(InternalError, "corrupt key: unterminated byte string");
            };
            if b != 0 {
                out.push(b);
                i += 1;
                continue;
            }
            match self.rest.get(i + 1) {
                Some(0x00) => {
                    self.rest = &self.rest[i + 2..];
                    return Ok(out);
                }
                Some(0xFF) => {
                    out.push(0);
                    i += 2;
                }
                Some(other) => {
                    crate::bail!(InternalError, "corrupt key: invalid escape 0x00 0x{:02x}", other)
                }
                None => crate::bail!(InternalError, "corrupt key: unterminated byte string"),
            }
        }
    }

    /// Decodes a string written by [`encode_str`].
    pub fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| crate::err!(InternalError, "corrupt key: string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: Copy>(f: fn(T, &mut Vec<u8>), v: T) -> Vec<u8> {
        let mut out = Vec::new();
        f(v, &mut out);
        out
    }

    #[test]
    fn integers_sort_numerically_and_round_trip() {
        let ints = [i64::MIN, -1_000_000, -2, -1, 0, 1, 2, 255, 256, i64::MAX];
        for w in ints.windows(2) {
            assert!(enc(encode_i64, w[0]) < enc(encode_i64, w[1]), "{} < {}", w[0], w[1]);
        }
        for v in ints {
            assert_eq!(Decoder::new(&enc(encode_i64, v)).i64().unwrap(), v);
        }
        let uints = [0u64, 1, 255, 256, u64::MAX];
        for w in uints.windows(2) {
            assert!(enc(encode_u64, w[0]) < enc(encode_u64, w[1]));
        }
        assert_eq!(Decoder::new(&enc(encode_u64, 77)).u64().unwrap(), 77);
        assert_eq!(Decoder::new(&enc(encode_u32, 77)).u32().unwrap(), 77);
        assert_eq!(Decoder::new(&enc(encode_u8, 7)).u8().unwrap(), 7);
    }

    #[test]
    fn byte_strings_keep_tuple_order() {
        // Tuples (string, u8) must sort as tuples even when one string prefixes another.
        let strings: [&[u8]; 7] = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"ab"];
        let mut keys = Vec::new();
        for s in strings {
            for n in [0u8, 255] {
                let mut k = Vec::new();
                encode_bytes(s, &mut k);
                encode_u8(n, &mut k);
                keys.push(k);
            }
        }
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
        }
        for s in strings {
            let mut k = Vec::new();
            encode_bytes(s, &mut k);
            encode_u8(9, &mut k);
            let mut d = Decoder::new(&k);
            assert_eq!(d.bytes().unwrap(), s);
            assert_eq!(d.u8().unwrap(), 9);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn strings_round_trip_and_corruption_is_an_error() {
        let mut k = Vec::new();
        encode_str("héllo\0world", &mut k);
        assert_eq!(Decoder::new(&k).string().unwrap(), "héllo\0world");
        assert!(Decoder::new(b"abc").bytes().is_err());
        assert!(Decoder::new(b"a\x00\x01").bytes().is_err());
        assert!(Decoder::new(b"\x01").u64().is_err());
    }

    #[test]
    fn inversion_reverses_order() {
        let mut a = enc(encode_i64, 1);
        let mut b = enc(encode_i64, 2);
        invert(&mut a);
        invert(&mut b);
        assert!(a > b);
    }

    #[test]
    fn prefix_end_bounds_a_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
