//! Order-preserving encoding of BSON values: the bytes of index keys.
//!
//! An index is a range of storage keys, and storage keys compare as raw bytes. For an index scan to
//! return documents in MongoDB's order, and for range predicates (`$gt`, `$lt`, …) to become key
//! ranges, the byte order of encoded values must be exactly MongoDB's comparison order of values
//! (the order `doc::compare` defines for sort): first the canonical type rank
//! ([`canonical_rank`]), then a comparison within the type. [`encode_value`] writes:
//!
//! ```text
//! [rank byte] [type-specific payload]
//! ```
//!
//! Every encoding is prefix-free (see [`keycode`]), so the encodings of the
//! components of a compound key can simply be concatenated, and a descending component is the
//! byte-wise inversion of its ascending encoding ([`encode_key_component`]).
//!
//! # Numbers
//!
//! MongoDB compares int32, int64, double and decimal128 by value, so `1`, `NumberLong(1)` and
//! `1.0` are the same index key (a unique index rejects the second of them). Folio therefore
//! encodes the *value*, never the type: every finite non-zero number is written as a sign and a
//! normalized binary magnitude `1.f × 2^e`:
//!
//! ```text
//! 0x00 NaN (lowest number, equal to every NaN)   0x03 zero (+0 and -0 are equal)
//! 0x01 -Infinity                                  0x04 positive: e (u16, biased) f (u64)
//! 0x02 negative: !e !f (inverted)                 0x05 +Infinity
//! ```
//!
//! `e` ranges over -1074..=1023 for doubles (subnormals included) and 0..=63 for 64-bit integers;
//! `f` holds the bits after the leading one, left-aligned in 64 bits. A double has at most 52 such
//! bits and an int64 at most 63, so both are exact: `2^53 + 1` as int64 stays distinct from the
//! double `2^53`, and `2^53` as int64 and as double encode identically. Larger magnitudes have
//! larger exponents, equal exponents compare by fraction, and negative numbers invert both so that
//! more negative sorts first.
//!
//! Decimal128 values are converted to this form when they are integers that fit an int64 (exact),
//! and otherwise through the nearest double. Consequently decimals that are exactly representable
//! as doubles (`1.5`, `0.25`, `1E+3`) compare correctly with every other number, but two decimals
//! that round to the same double encode equally (`0.1` and `0.1000000000000000001`), a decimal
//! such as `0.1` equals the double nearest to it (MongoDB keeps them apart), and decimals beyond
//! the double range encode as ±Infinity. These limits are documented in the compatibility notes.
//!
//! # Strings, documents, arrays
//!
//! Strings (and symbols, which MongoDB compares as strings) are escaped, terminated bytes: byte
//! order is MongoDB's simple-collation order. Documents compare element by element (type rank,
//! then field name, then value), with a shorter document first; each element is written as
//! `rank + 1`, the escaped field name and the value, and the document ends with `0x00`, which sorts
//! below every element marker. Arrays are written the same way without field names.
//!
//! # Other types
//!
//! Binary data is ordered as MongoDB orders it: by length first, then subtype, then bytes.
//! ObjectIds are their 12 bytes, booleans one byte, dates a sign-flipped i64, timestamps a u64
//! (seconds, increment), regular expressions the pattern then the flags, DBPointers the namespace
//! length, namespace and id, code the code string, code-with-scope the code then the scope
//! document. MinKey, MaxKey, null and undefined are only their rank byte.
//!
//! # No decoding
//!
//! The encoding is deliberately not decodable: it forgets the numeric type, and index entries
//! never need their values back (documents are stored separately and re-checked by the matcher).
//! The same holds for `_id`: a record key is the encoded `_id`, and the record's value is the whole
//! document, `_id` included, so the original `_id` with its exact type is always available.

use bson::{Bson, Document};

use super::keycode;
use crate::doc::canonical_rank;

/// Number sub-tags, in order (see the module documentation).
const NUM_NAN: u8 = 0x00;
const NUM_NEG_INF: u8 = 0x01;
const NUM_NEG: u8 = 0x02;
const NUM_ZERO: u8 = 0x03;
const NUM_POS: u8 = 0x04;
const NUM_POS_INF: u8 = 0x05;

/// The bias added to binary exponents so that they encode as a u16 in order.
const EXP_BIAS: i32 = 2048;

/// Marks the end of a document or array; element markers are `rank + 1`, always above it.
const END: u8 = 0x00;

/// Appends the order-preserving encoding of `v` (see the module documentation).
pub fn encode_value(v: &Bson, out: &mut Vec<u8>) {
    out.push(canonical_rank(v));
    encode_payload(v, out);
}

/// The encoding of `v` as a new vector.
#[cfg(test)]
pub fn encoded(v: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, &mut out);
    out
}

/// Appends `v` as one component of a compound key: its encoding, inverted when `descending`.
pub fn encode_key_component(v: &Bson, descending: bool, out: &mut Vec<u8>) {
    let start = out.len();
    encode_value(v, out);
    if descending {
        keycode::invert(&mut out[start..]);
    }
}

/// The key range holding every value of one canonical type (`rank` from [`canonical_rank`]):
/// `[start, end)` in ascending encoding. Range predicates are type-bracketed in MongoDB (`$gt: 5`
/// matches numbers only), so a scan for `$gt: 5` runs from after `encoded(5)` to the end of the
/// number range.
#[cfg(test)]
pub fn rank_range(rank: u8) -> (Vec<u8>, Vec<u8>) {
    // Ranks are at most 127 (MaxKey), so `rank + 1` cannot overflow.
    (vec![rank], vec![rank + 1])
}

/// Writes the type-specific part of the encoding, after the rank byte.
fn encode_payload(v: &Bson, out: &mut Vec<u8>) {
    match v {
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
        Bson::Int32(i) => encode_number(Num::from_i64(i64::from(*i)), out),
        Bson::Int64(i) => encode_number(Num::from_i64(*i), out),
        Bson::Double(d) => encode_number(Num::from_f64(*d), out),
        Bson::Decimal128(d) => encode_number(Num::from_decimal(d), out),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => keycode::encode_str(s, out),
        Bson::Document(d) => encode_document(d, out),
        Bson::Array(a) => {
            for item in a {
                out.push(canonical_rank(item) + 1);
                encode_value(item, out);
            }
            out.push(END);
        }
        Bson::Binary(b) => {
            // The length of a BSON binary is an int32, so it always fits a u32.
            keycode::encode_u32(b.bytes.len() as u32, out);
            out.push(u8::from(b.subtype));
            out.extend_from_slice(&b.bytes);
        }
        Bson::ObjectId(oid) => out.extend_from_slice(&oid.bytes()),
        Bson::Boolean(b) => out.push(u8::from(*b)),
        Bson::DateTime(dt) => keycode::encode_i64(dt.timestamp_millis(), out),
        Bson::Timestamp(ts) => {
            keycode::encode_u32(ts.time, out);
            keycode::encode_u32(ts.increment, out);
        }
        Bson::RegularExpression(re) => {
            keycode::encode_str(re.pattern.as_str(), out);
            keycode::encode_str(re.options.as_str(), out);
        }
        Bson::DbPointer(_) => {
            let (ns, id) = db_pointer_parts(v);
            keycode::encode_u32(ns.len() as u32, out);
            out.extend_from_slice(ns.as_bytes());
            out.extend_from_slice(&id);
        }
        Bson::JavaScriptCodeWithScope(cws) => {
            keycode::encode_str(&cws.code, out);
            encode_document(&cws.scope, out);
        }
    }
}

/// Writes a document's elements (marker, name, value) and the end marker.
fn encode_document(d: &Document, out: &mut Vec<u8>) {
    for (name, value) in d {
        out.push(canonical_rank(value) + 1);
        keycode::encode_str(name, out);
        encode_value(value, out);
    }
    out.push(END);
}

/// The namespace and id of a DBPointer. The `bson` crate keeps these fields private, so they are
/// read back from the value's BSON serialization (type 0x0C: string, then 12 id bytes).
fn db_pointer_parts(v: &Bson) -> (String, [u8; 12]) {
    let mut doc = Document::new();
    doc.insert("p", v.clone());
    let bytes = doc.to_vec().unwrap_or_default();
    // Layout: i32 doc length, type byte, "p\0", i32 string length (with NUL), string, NUL, id.
    let parse = || -> Option<(String, [u8; 12])> {
        let len_at = 4 + 1 + 2;
        let slen = i32::from_le_bytes(bytes.get(len_at..len_at + 4)?.try_into().ok()?) as usize;
        let s_at = len_at + 4;
        let ns = std::str::from_utf8(bytes.get(s_at..s_at + slen.checked_sub(1)?)?).ok()?;
        let id: [u8; 12] = bytes.get(s_at + slen..s_at + slen + 12)?.try_into().ok()?;
        Some((ns.to_string(), id))
    };
    parse().unwrap_or_default()
}

/// A number reduced to its exact value (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    NaN,
    NegInf,
    Zero,
    PosInf,
    /// `(-1)^neg × (1 + frac / 2^64) × 2^exp`.
    Finite {
        neg: bool,
        exp: i32,
        frac: u64,
    },
}

impl Num {
    fn from_i64(i: i64) -> Num {
        if i == 0 {
            return Num::Zero;
        }
        let (exp, frac) = normalize(i.unsigned_abs(), 0);
        Num::Finite { neg: i < 0, exp, frac }
    }

    fn from_f64(d: f64) -> Num {
        if d.is_nan() {
            return Num::NaN;
        }
        if d.is_infinite() {
            return if d < 0.0 { Num::NegInf } else { Num::PosInf };
        }
        if d == 0.0 {
            return Num::Zero;
        }
        let bits = d.to_bits();
        let biased = ((bits >> 52) & 0x7FF) as i32;
        let mantissa = bits & ((1 << 52) - 1);
        let neg = d < 0.0;
        if biased == 0 {
            // Subnormal: mantissa × 2^-1074, with leading zeros in the mantissa.
            let (exp, frac) = normalize(mantissa, -1074);
            Num::Finite { neg, exp, frac }
        } else {
            Num::Finite { neg, exp: biased - 1023, frac: mantissa << 12 }
        }
    }

    fn from_decimal(d: &bson::Decimal128) -> Num {
        let s = d.to_string();
        match s.as_str() {
            "NaN" | "-NaN" => return Num::NaN,
            "Infinity" => return Num::PosInf,
            "-Infinity" => return Num::NegInf,
            _ => {}
        }
        if let Ok(i) = s.parse::<i64>() {
            return Num::from_i64(i);
        }
        match s.parse::<f64>() {
            Ok(f) => Num::from_f64(f),
            // Display always produces a parsable number; treat anything else as NaN.
            Err(_) => Num::NaN,
        }
    }
}

/// Normalizes `m × 2^shift` (m > 0) to `(exp, frac)` with `m × 2^shift = (1 + frac/2^64) × 2^exp`.
fn normalize(m: u64, shift: i32) -> (i32, u64) {
    let lz = m.leading_zeros();
    let exp = 63 - lz as i32 + shift;
    // Drop the leading one; shifting a u128 avoids overflow when it is the only bit.
    let frac = (u128::from(m) << (lz + 1)) as u64;
    (exp, frac)
}

fn encode_number(n: Num, out: &mut Vec<u8>) {
    match n {
        Num::NaN => out.push(NUM_NAN),
        Num::NegInf => out.push(NUM_NEG_INF),
        Num::Zero => out.push(NUM_ZERO),
        Num::PosInf => out.push(NUM_POS_INF),
        Num::Finite { neg, exp, frac } => {
            out.push(if neg { NUM_NEG } else { NUM_POS });
            let start = out.len();
            // Exponents lie in -1074..=1023, so the biased value fits a u16.
            out.extend_from_slice(&((exp + EXP_BIAS) as u16).to_be_bytes());
            keycode::encode_u64(frac, out);
            if neg {
                keycode::invert(&mut out[start..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_numbers_encode_identically() {
        let groups: Vec<Vec<Bson>> = vec![
            vec![Bson::Int32(1), Bson::Int64(1), Bson::Double(1.0)],
            vec![Bson::Int32(0), Bson::Int64(0), Bson::Double(0.0), Bson::Double(-0.0)],
            vec![Bson::Int32(-7), Bson::Int64(-7), Bson::Double(-7.0)],
            vec![Bson::Int64(1 << 53), Bson::Double(9007199254740992.0)],
            vec![Bson::Int64(i64::MIN), Bson::Double(-9223372036854775808.0)],
            vec![Bson::Double(f64::NAN), Bson::Double(-f64::NAN)],
        ];
        for g in groups {
            for v in &g {
                assert_eq!(encoded(v), encoded(&g[0]), "{v:?} vs {:?}", g[0]);
            }
        }
        let dec = |s: &str| Bson::Decimal128(s.parse().unwrap());
        assert_eq!(encoded(&dec("1.0")), encoded(&Bson::Int32(1)));
        assert_eq!(encoded(&dec("-2.5")), encoded(&Bson::Double(-2.5)));
        assert_eq!(encoded(&dec("9007199254740993")), encoded(&Bson::Int64((1 << 53) + 1)));
        assert_eq!(encoded(&dec("NaN")), encoded(&Bson::Double(f64::NAN)));
        assert_eq!(encoded(&dec("-Infinity")), encoded(&Bson::Double(f64::NEG_INFINITY)));
        assert_eq!(encoded(&dec("0E-10")), encoded(&Bson::Int32(0)));
    }

    #[test]
    fn int64_is_exact_beyond_2_pow_53() {
        let a = encoded(&Bson::Int64((1 << 53) + 1));
        let b = encoded(&Bson::Double(9007199254740992.0));
        let c = encoded(&Bson::Double(9007199254740994.0));
        assert!(b < a && a < c);
        assert!(encoded(&Bson::Int64(i64::MAX - 1)) < encoded(&Bson::Int64(i64::MAX)));
        assert!(encoded(&Bson::Int64(i64::MAX)) < encoded(&Bson::Double(9223372036854775808.0)));
    }

    #[test]
    fn rank_ranges_bracket_their_type() {
        let (start, end) = rank_range(canonical_rank(&Bson::Int32(0)));
        for v in [Bson::Double(f64::NAN), Bson::Double(f64::INFINITY), Bson::Int64(i64::MIN)] {
            let e = encoded(&v);
            assert!(start <= e && e < end, "{v:?}");
        }
        assert!(encoded(&Bson::Null) < start);
        assert!(encoded(&Bson::String(String::new())) >= end);
    }

    #[test]
    fn descending_components_reverse_order() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_key_component(&Bson::Int32(1), true, &mut a);
        encode_key_component(&Bson::Int32(2), true, &mut b);
        assert!(a > b);
    }

    #[test]
    fn db_pointer_parts_are_read_back() {
        let v: Bson = bson::Bson::try_from(serde_json::json!({
            "$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "0102030405060708090a0b0c"}}
        }))
        .unwrap();
        let (ns, id) = db_pointer_parts(&v);
        assert_eq!(ns, "db.coll");
        assert_eq!(id, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    /// The hand-ordered list of values across all types encodes in increasing (or, for equal
    /// values, identical) byte order, and the encodings themselves match the golden file.
    #[test]
    fn ordered_values_encode_in_order() {
        use crate::encoding::golden;
        let input = golden::read("encoding/testdata/order.txt");
        let mut golden_out = String::new();
        let mut prev: Option<(String, Vec<u8>)> = None;
        for line in input.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (equal, text) = match line.strip_prefix('=') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let enc = encoded(&golden::parse_ext(text));
            if let Some((prev_text, prev_enc)) = &prev {
                if equal {
                    assert_eq!(&enc, prev_enc, "{text} should encode like {prev_text}");
                } else {
                    assert!(&enc > prev_enc, "{text} should sort after {prev_text}");
                }
            } else {
                assert!(!equal, "the first value cannot be marked equal");
            }
            golden_out.push_str(&format!("{} {}\n", golden::hex(&enc), text));
            prev = Some((text.to_string(), enc));
        }
        golden::check("encoding/testdata/order.golden", &golden_out);
    }

    fn random_number(rng: &mut impl rand::Rng) -> Bson {
        let edge = [0i64, 1, -1, 2, (1 << 53) - 1, 1 << 53, (1 << 53) + 1, i64::MAX, i64::MIN];
        match rng.random_range(0..8) {
            0 => Bson::Int32(rng.random_range(-5..5)),
            1 => Bson::Int32(rng.random()),
            2 => Bson::Int64(
                edge[rng.random_range(0..edge.len())].saturating_add(rng.random_range(-2..=0)),
            ),
            3 => Bson::Int64(rng.random()),
            4 => Bson::Double(f64::from(rng.random_range(-5..5)) / 2.0),
            5 => Bson::Double(edge[rng.random_range(0..edge.len())] as f64),
            6 => {
                let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 5e-324, -1e300];
                Bson::Double(specials[rng.random_range(0..specials.len())])
            }
            _ => Bson::Double(f64::from_bits(rng.random())),
        }
    }

    fn random_scalar(rng: &mut impl rand::Rng) -> Bson {
        use bson::{
            Binary, JavaScriptCodeWithScope, Regex, Timestamp, oid::ObjectId, spec::BinarySubtype,
        };
        let pick = |rng: &mut dyn rand::RngCore, items: &[&str]| -> String {
            items[(rng.next_u32() as usize) % items.len()].to_string()
        };
        let text = |rng: &mut dyn rand::RngCore| pick(rng, &["", "a", "ab", "b", "a\0", "é"]);
        match rng.random_range(0..16) {
            0 => Bson::MinKey,
            1 => Bson::MaxKey,
            2 => Bson::Undefined,
            3 => Bson::Null,
            4 => Bson::Boolean(rng.random()),
            5 => Bson::String(text(rng)),
            6 => Bson::Symbol(text(rng)),
            7 => Bson::Binary(Binary {
                subtype: [
                    BinarySubtype::Generic,
                    BinarySubtype::Function,
                    BinarySubtype::UserDefined(0x80),
                ][rng.random_range(0..3)],
                bytes: (0..rng.random_range(0..3))
                    .map(|_| [0u8, 1, 255][rng.random_range(0..3)])
                    .collect(),
            }),
            8 => {
                let mut b = [0u8; 12];
                b[11] = rng.random_range(0..3);
                b[0] = rng.random_range(0..2) * 255;
                Bson::ObjectId(ObjectId::from_bytes(b))
            }
            9 => {
                Bson::DateTime(bson::DateTime::from_millis(rng.random_range(-3..3) * 1_000_000_007))
            }
            10 => Bson::Timestamp(Timestamp {
                time: [0, 1, u32::MAX][rng.random_range(0..3)],
                increment: [0, 1, u32::MAX][rng.random_range(0..3)],
            }),
            11 => Bson::RegularExpression(Regex {
                pattern: pick(rng, &["a", "ab", "b"]).try_into().unwrap(),
                options: pick(rng, &["", "i", "im"]).try_into().unwrap(),
            }),
            12 => Bson::JavaScriptCode(text(rng)),
            13 => Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: pick(rng, &["a", "b"]),
                scope: if rng.random() {
                    Document::new()
                } else {
                    bson::doc! {"x": 1}
                },
            }),
            14 => {
                let decimals = [
                    "1.5",
                    "2",
                    "-0",
                    "0.25",
                    "NaN",
                    "-Infinity",
                    "1E+3",
                    "-7",
                    "9007199254740992",
                ];
                Bson::Decimal128(decimals[rng.random_range(0..decimals.len())].parse().unwrap())
            }
            _ => random_number(rng),
        }
    }

    fn random_value(rng: &mut impl rand::Rng, depth: u32) -> Bson {
        let top = if depth == 0 { 3 } else { 5 };
        match rng.random_range(0..top) {
            0 => random_number(rng),
            1 | 2 => random_scalar(rng),
            3 => Bson::Array(
                (0..rng.random_range(0..3)).map(|_| random_value(rng, depth - 1)).collect(),
            ),
            _ => {
                let mut d = Document::new();
                for _ in 0..rng.random_range(0..3) {
                    let k = ["a", "b", "ab"][rng.random_range(0..3)];
                    d.insert(k, random_value(rng, depth - 1));
                }
                Bson::Document(d)
            }
        }
    }

    /// Byte order of encodings equals `doc::compare::cmp_bson` on random values of every type
    /// (DBPointer aside: `cmp_bson` orders it by its debug form, the encoding by namespace length
    /// as MongoDB does).
    #[test]
    fn random_values_compare_like_cmp_bson() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let a = random_value(&mut rng, 2);
            let b = random_value(&mut rng, 2);
            let want = crate::doc::compare::cmp_bson(&a, &b);
            let got = encoded(&a).cmp(&encoded(&b));
            assert_eq!(got, want, "{a:?} vs {b:?}");
        }
    }
}
