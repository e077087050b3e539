//! MongoDB's hash of a BSON value, the key of a hashed index (`{field: "hashed"}`).
//!
//! A hashed index stores, for each document, a 64-bit hash of the value at its hashed path instead
//! of the value. Folio computes exactly the hash MongoDB computes, so that the keys (visible in
//! `explain`'s bounds and through `$toHashedIndexKey`) and the distribution of a hashed shard key
//! are the same as on a MongoDB server:
//!
//! - an MD5 digest is fed the seed (a little-endian `i32`, 0 for indexes), then the value;
//! - a value contributes its *canonical type* (MongoDB's cross-type ordering rank, as a
//!   little-endian `i32`: numbers share 10, strings and symbols 15, …), then
//! - for a number, its value squashed to a little-endian `i64`: truncated toward zero, NaN as 0,
//!   clamped to the `i64` range, except that the double 2^63 becomes −2^63 (an old overflow
//!   MongoDB keeps for compatibility); so `42`, `42.123` and `NumberLong(42)` hash alike;
//! - for a document or array, each element in turn (canonical type, field name with its NUL,
//!   value) and then the terminating EOO element (canonical type 0);
//! - for any other value, its raw BSON value bytes (a string's length prefix and NUL included).
//!
//! The hash is the first 8 bytes of the digest read as a little-endian `i64`.

use bson::{Bson, Document};
use md5::{Digest, Md5};

/// The seed MongoDB's hashed indexes use.
pub const DEFAULT_SEED: i32 = 0;

/// MongoDB's `BSONElementHasher::hash64` of `v` with `seed`.
pub fn hash64(v: &Bson, seed: i32) -> i64 {
    let mut h = Md5::new();
    h.update(seed.to_le_bytes());
    hash_value(&mut h, v);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// The index key of `v` in a hashed index (seed 0).
pub fn hashed_key(v: &Bson) -> i64 {
    hash64(v, DEFAULT_SEED)
}

/// MongoDB's canonical type numbers (`canonicalizeBSONType`): Folio's ordering ranks
/// ([`crate::doc::canonical_rank`]) but for MinKey (−1) and undefined (0).
fn canonical_type(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        other => i32::from(crate::doc::canonical_rank(other)),
    }
}

fn hash_value(h: &mut Md5, v: &Bson) {
    h.update(canonical_type(v).to_le_bytes());
    hash_body(h, v);
}

fn hash_body(h: &mut Md5, v: &Bson) {
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            h.update(squash_number(v).to_le_bytes())
        }
        Bson::Document(d) => hash_elements(h, d.iter().map(|(k, v)| (k.as_str(), v))),
        Bson::Array(items) => {
            let names: Vec<String> = (0..items.len()).map(|i| i.to_string()).collect();
            hash_elements(h, names.iter().map(String::as_str).zip(items));
        }
        Bson::JavaScriptCodeWithScope(c) => {
            // The code string (with its NUL, without its length), then the scope's elements.
            h.update(c.code.as_bytes());
            h.update([0]);
            hash_elements(h, c.scope.iter().map(|(k, v)| (k.as_str(), v)));
        }
        other => h.update(raw_value_bytes(other)),
    }
}

/// The elements of a document or array, then the EOO element that ends it (canonical type 0,
/// no name, no value).
fn hash_elements<'a>(h: &mut Md5, elements: impl Iterator<Item = (&'a str, &'a Bson)>) {
    for (name, v) in elements {
        h.update(canonical_type(v).to_le_bytes());
        h.update(name.as_bytes());
        h.update([0]);
        hash_body(h, v);
    }
    h.update(0i32.to_le_bytes());
}

/// MongoDB's `safeNumberLongForHash`: truncation toward zero for doubles (NaN is 0, out of range
/// values clamp, and 2^63 exactly becomes −2^63); decimals round half to even, as
/// `Decimal128::toLong` does.
fn squash_number(v: &Bson) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        Bson::Double(d) if *d == TWO_63 => i64::MIN,
        // `as` saturates and maps NaN to 0, which is MongoDB's clamping.
        Bson::Double(d) => *d as i64,
        Bson::Decimal128(d) => {
            let text = d.to_string();
            match text.parse::<f64>() {
                Ok(x) if x.is_nan() => 0,
                Ok(x) => round_half_even(x) as i64,
                Err(_) => 0,
            }
        }
        _ => 0,
    }
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - x.signum() } else { r }
}

/// The raw BSON bytes of a scalar value, as it appears after the type byte and field name.
fn raw_value_bytes(v: &Bson) -> Vec<u8> {
    let mut d = Document::new();
    d.insert("", v.clone());
    // Layout: int32 length, type byte, "" NUL, value bytes, document NUL.
    match d.to_vec() {
        Ok(bytes) if bytes.len() >= 7 => bytes[6..bytes.len() - 1].to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Binary, Timestamp, doc, oid::ObjectId, spec::BinarySubtype};

    /// The hashes MongoDB's own unit tests pin (hasher_test.cpp), computed here.
    #[test]
    fn hashes_match_mongodb() {
        let oid = |s: &str| Bson::ObjectId(ObjectId::parse_str(s).unwrap());
        let bin = |subtype, bytes: &[u8]| Bson::Binary(Binary { subtype, bytes: bytes.to_vec() });
        let cases: Vec<(Bson, i64)> = vec![
            (Bson::Int32(42), -944302157085130861),
            (Bson::Double(42.123), -944302157085130861),
            (Bson::Int64(42), -944302157085130861),
            (Bson::Int32(0), 4854801880128277513),
            (Bson::Double(0.456), 4854801880128277513),
            (Bson::Double(f64::NAN), 4854801880128277513),
            (Bson::Int32(1), 5902408780260971510),
            (Bson::Double(1.987), 5902408780260971510),
            (Bson::Int32(-1), 1140205862565771219),
            (Bson::Double(-1.789), 1140205862565771219),
            (Bson::Int32(i32::MIN), 6165898260261354870),
            (Bson::Double(f64::from(i32::MIN)), 6165898260261354870),
            (Bson::Int32(i32::MAX), 1143184177162245883),
            (Bson::Double(f64::MAX), 921523596458303250),
            (Bson::Int64(i64::MAX), 921523596458303250),
            (Bson::Double(-f64::MAX), 4532067210535695462),
            (Bson::Int64(i64::MIN), 4532067210535695462),
            (Bson::MinKey, 7961148599568647290),
            (Bson::MaxKey, 5504842513779440750),
            (Bson::Undefined, 40158834000849533),
            (Bson::Null, 2338878944348059895),
            (Bson::String("abc".into()), 8478485326885698097),
            (Bson::Symbol("abc".into()), 8478485326885698097),
            (Bson::String(String::new()), 2049396243249673340),
            (Bson::Document(doc! {"a": "abc", "b": 123_i64}), 4771603801758380216),
            (Bson::Document(doc! {}), 7980500913326740417),
            (Bson::Array(vec!["bar".into(), "baz".into(), "qux".into()]), -2938911267422831539),
            (Bson::Array(vec![]), 8849948234993459283),
            (bin(BinarySubtype::Generic, &[0, 1, 2, 3, 4, 6]), 7252465090394235301),
            (bin(BinarySubtype::UserDefined(0x80), &[0, 1, 2, 3, 4, 6]), 5736670452907618262),
            (
                bin(BinarySubtype::Uuid, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
                6084661258071355978,
            ),
            (oid("010203040506070809101112"), -5588663249627035708),
            (oid("000000000000000000000000"), -4293118519463489418),
            (Bson::Boolean(true), 6405873908747105701),
            (Bson::Boolean(false), 6289544573401934092),
            (Bson::DateTime(bson::DateTime::from_millis(0x5566778811223344)), 4476222765095560467),
            (
                Bson::Timestamp(Timestamp { time: 0x55667788, increment: 0x11223344 }),
                4873046866288452390,
            ),
            (Bson::DateTime(bson::DateTime::from_millis(0)), -1178696894582842035),
            (Bson::Timestamp(Timestamp { time: 0, increment: 0 }), -7867208682377458672),
            (
                Bson::RegularExpression(bson::Regex {
                    pattern: ".*".to_string().try_into().unwrap(),
                    options: "i".to_string().try_into().unwrap(),
                }),
                7095855029187981886,
            ),
            (Bson::JavaScriptCode("func f() { return 1; }".into()), 6861638109178014270),
            (
                Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                    code: "func f() { return 1; }".into(),
                    scope: doc! {"c": true},
                }),
                501342939894575968,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(hashed_key(&v), want, "hash of {v:?}");
        }
        assert_eq!(hash64(&Bson::Int32(42), 40513), 4302929669663179197);
        let seeds = Bson::Array(vec!["sunflower".into(), "sesame".into(), "mustard".into()]);
        assert_eq!(hash64(&seeds, 40513), -9222615859251096151);
    }

    #[test]
    fn numbers_squash_as_mongodb_does() {
        // Nested numbers squash too, so these documents hash alike.
        let a = doc! {"a": 3, "b": [3.1, {"c": 3}]};
        let b = doc! {"a": 3.1, "b": [3, {"c": 3.0}]};
        assert_eq!(hashed_key(&Bson::Document(a)), hashed_key(&Bson::Document(b)));
        // The double 2^63 keeps its historical overflow to i64::MIN.
        assert_eq!(
            hashed_key(&Bson::Double(9_223_372_036_854_775_808.0)),
            hashed_key(&Bson::Int64(i64::MIN))
        );
        let dec = |s: &str| Bson::Decimal128(s.parse().unwrap());
        assert_eq!(hashed_key(&dec("42")), hashed_key(&Bson::Int32(42)));
        assert_eq!(hashed_key(&dec("2.5")), hashed_key(&Bson::Int32(2)));
        assert_eq!(hashed_key(&dec("3.5")), hashed_key(&Bson::Int32(4)));
        // Arrays and documents with the same elements differ.
        assert_ne!(
            hashed_key(&Bson::Document(doc! {"0": 0, "1": 1})),
            hashed_key(&Bson::Array(vec![0.into(), 1.into()]))
        );
    }
}
