//! MongoDB's total order over BSON values.
//!
//! Every comparison in the query language (sort, `$gt`, `$min`, `$max`, index keys, `$addToSet`
//! equality) goes through [`cmp_bson`]. The order is MongoDB's `woCompare`:
//!
//! 1. Values of different *canonical* types compare by [`canonical_rank`]: MinKey < undefined <
//!    null < numbers < strings/symbols < documents < arrays < binary < ObjectId < bool < date <
//!    timestamp < regex < DBPointer < code < code with scope < MaxKey.
//! 2. Numbers of all four BSON kinds compare by mathematical value. NaN is smaller than every other
//!    number and equal to itself (so sorting is total). int64 against double is exact: we never
//!    round the integer through `f64`, which would make `2^53 + 1 == 2^53`.
//! 3. Strings compare by their UTF-8 bytes (no collation), documents field by field (canonical type
//!    of the element, then name, then value; a prefix is smaller), arrays element by element,
//!    binary by length, then subtype, then bytes.
//!
//! Decimal128 values are compared exactly, as coefficient and exponent, against decimals,
//! integers and doubles; a double is first rounded to 34 significant digits as MongoDB converts
//! it, so `NumberDecimal("0.1")` is smaller than the double `0.1`. Decimal NaN equals double NaN,
//! and decimal infinities compare through `f64`.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::canonical_rank;

/// Compares two BSON values in MongoDB's order.
pub fn cmp_bson(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (canonical_rank(a), canonical_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    cmp_same_rank(a, b)
}

/// Whether two values are equal in MongoDB's order (`1 == 1.0 == NumberLong(1)`).
pub fn bson_eq(a: &Bson, b: &Bson) -> bool {
    cmp_bson(a, b) == Ordering::Equal
}

/// Compares two documents as MongoDB's `BSONObj::woCompare` does (field order matters).
pub fn cmp_documents(a: &Document, b: &Document) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let ord = canonical_rank(va)
                    .cmp(&canonical_rank(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| cmp_same_rank(va, vb));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Compares two arrays element by element (as documents with keys "0", "1", ...).
pub fn cmp_arrays(a: &[Bson], b: &[Bson]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = cmp_bson(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Compares two values known to have the same canonical rank.
fn cmp_same_rank(a: &Bson, b: &Bson) -> Ordering {
    use Bson::*;
    match (a, b) {
        (String(x) | Symbol(x), String(y) | Symbol(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Document(x), Document(y)) => cmp_documents(x, y),
        (Array(x), Array(y)) => cmp_arrays(x, y),
        (Binary(x), Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (ObjectId(x), ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Boolean(x), Boolean(y)) => x.cmp(y),
        (DateTime(x), DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Timestamp(x), Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (RegularExpression(x), RegularExpression(y)) => x
            .pattern
            .as_str()
            .cmp(y.pattern.as_str())
            .then_with(|| x.options.as_str().cmp(y.options.as_str())),
        (JavaScriptCode(x), JavaScriptCode(y)) => x.cmp(y),
        (JavaScriptCodeWithScope(x), JavaScriptCodeWithScope(y)) => {
            x.code.cmp(&y.code).then_with(|| cmp_documents(&x.scope, &y.scope))
        }
        // DBPointer's fields are private in the bson crate; its debug form orders by namespace
        // then id, which is all that matters for a deprecated type.
        (DbPointer(x), DbPointer(y)) => format!("{x:?}").cmp(&format!("{y:?}")),
        _ => match (Number::of(a), Number::of(b)) {
            (Some(x), Some(y)) => x.total_cmp(y),
            // Same rank but not numbers: MinKey, MaxKey, null, undefined are singletons.
            _ => Ordering::Equal,
        },
    }
}

/// A numeric BSON value, for cross-type numeric comparison and arithmetic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// An int32.
    Int(i32),
    /// An int64.
    Long(i64),
    /// A double.
    Double(f64),
    /// A decimal128, carried as its nearest double (and the original for round-tripping).
    Decimal(f64, bson::Decimal128),
}

impl Number {
    /// The numeric value of `v`, if it is a number.
    pub fn of(v: &Bson) -> Option<Number> {
        match v {
            Bson::Int32(i) => Some(Number::Int(*i)),
            Bson::Int64(i) => Some(Number::Long(*i)),
            Bson::Double(d) => Some(Number::Double(*d)),
            Bson::Decimal128(d) => Some(Number::Decimal(decimal_to_f64(d), *d)),
            Bson::String(_)
            | Bson::Symbol(_)
            | Bson::Document(_)
            | Bson::Array(_)
            | Bson::Binary(_)
            | Bson::ObjectId(_)
            | Bson::Boolean(_)
            | Bson::DateTime(_)
            | Bson::Timestamp(_)
            | Bson::RegularExpression(_)
            | Bson::JavaScriptCode(_)
            | Bson::JavaScriptCodeWithScope(_)
            | Bson::DbPointer(_)
            | Bson::Null
            | Bson::Undefined
            | Bson::MinKey
            | Bson::MaxKey => None,
        }
    }

    /// The value as a double (lossy for large int64s and decimals).
    pub fn to_f64(self) -> f64 {
        match self {
            Number::Int(i) => f64::from(i),
            Number::Long(i) => i as f64,
            Number::Double(d) | Number::Decimal(d, _) => d,
        }
    }

    /// The value as an integer when it is one (int32 or int64).
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(i64::from(i)),
            Number::Long(i) => Some(i),
            Number::Double(_) | Number::Decimal(..) => None,
        }
    }

    /// Whether the value is NaN.
    pub fn is_nan(self) -> bool {
        match self {
            Number::Int(_) | Number::Long(_) => false,
            Number::Double(d) | Number::Decimal(d, _) => d.is_nan(),
        }
    }

    /// MongoDB's numeric order: by value, NaN lowest and equal to itself, int64 vs double exact,
    /// decimals exact against everything (a double is taken at 34 significant digits, as MongoDB
    /// converts it, so `NumberDecimal("0.1") < 0.1`).
    pub fn total_cmp(self, other: Number) -> Ordering {
        if matches!(self, Number::Decimal(..)) || matches!(other, Number::Decimal(..)) {
            if let (Some(x), Some(y)) = (self.decimal_parts(), other.decimal_parts()) {
                return cmp_decimal_parts(x, y);
            }
            return cmp_f64(self.to_f64(), other.to_f64());
        }
        match (self.as_i64(), other.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(x), None) => cmp_i64_f64(x, other.to_f64()),
            (None, Some(y)) => cmp_i64_f64(y, self.to_f64()).reverse(),
            (None, None) => cmp_f64(self.to_f64(), other.to_f64()),
        }
    }
}

impl Number {
    /// The value as `coefficient * 10^exponent` when it is finite (doubles rounded to 34
    /// significant digits).
    pub fn decimal_parts(self) -> Option<(i128, i32)> {
        match self {
            Number::Int(i) => Some((i128::from(i), 0)),
            Number::Long(i) => Some((i128::from(i), 0)),
            Number::Double(d) if d.is_finite() => parse_decimal_str(&format!("{d:.33e}")),
            Number::Double(_) => None,
            Number::Decimal(_, d) => parse_decimal_str(&d.to_string()),
        }
    }
}

/// Parses `[-]digits[.digits][E[+-]exp]` into coefficient and exponent; `None` for NaN,
/// infinities and anything longer than an `i128` coefficient.
pub fn parse_decimal_str(s: &str) -> Option<(i128, i32)> {
    let (mantissa, exp) = match s.find(['E', 'e']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let coef: i128 = format!("{int}{frac}").parse().ok()?;
    Some((coef, exp.checked_sub(i32::try_from(frac.len()).ok()?)?))
}

/// Compares two finite decimals given as coefficient and exponent.
fn cmp_decimal_parts((c1, e1): (i128, i32), (c2, e2): (i128, i32)) -> Ordering {
    let sign = |c: i128| c.signum();
    if sign(c1) != sign(c2) || c1 == 0 {
        return sign(c1).cmp(&sign(c2));
    }
    // Same sign, both non-zero: compare magnitudes (position of the leading digit) first.
    let magnitude = |c: i128, e: i32| i64::from(e) + i64::from(c.unsigned_abs().ilog10());
    let (m1, m2) = (magnitude(c1, e1), magnitude(c2, e2));
    let by_abs = if m1 != m2 {
        m1.cmp(&m2)
    } else {
        // Equal magnitudes: the exponents differ by at most 38 digits of coefficient, so
        // scaling the one with the larger exponent stays within i128 after comparing lengths.
        let (a, b) = (c1.unsigned_abs(), c2.unsigned_abs());
        let diff = (e1 - e2).unsigned_abs();
        let scaled = |x: u128| 10_u128.checked_pow(diff).and_then(|p| x.checked_mul(p));
        match e1.cmp(&e2) {
            Ordering::Equal => a.cmp(&b),
            Ordering::Greater => scaled(a).map_or(Ordering::Greater, |a| a.cmp(&b)),
            Ordering::Less => scaled(b).map_or(Ordering::Less, |b| a.cmp(&b)),
        }
    };
    if c1 > 0 { by_abs } else { by_abs.reverse() }
}

/// Orders doubles with NaN below everything and equal to itself, and `-0.0 == 0.0`.
pub fn cmp_f64(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Compares an int64 with a double exactly.
fn cmp_i64_f64(i: i64, d: f64) -> Ordering {
    if d.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 is exactly representable; every i64 is below it and at or above -2^63.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if d >= TWO_63 {
        return Ordering::Less;
    }
    if d < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = d.trunc();
    // `whole` is within i64's range here, so the cast is exact.
    let w = whole as i64;
    match i.cmp(&w) {
        Ordering::Equal => cmp_f64(0.0, d - whole),
        ord => ord,
    }
}

/// The nearest double to a decimal128 (through its string form, which `f64` parses exactly
/// rounded).
pub fn decimal_to_f64(d: &bson::Decimal128) -> f64 {
    let s = d.to_string();
    match s.as_str() {
        "NaN" | "-NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        other => other.parse::<f64>().unwrap_or(f64::NAN),
    }
}

/// A number as a double (decimals to their nearest double); `None` for anything else.
pub fn as_f64(v: &Bson) -> Option<f64> {
    Number::of(v).map(Number::to_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(cmp_bson(&bson!(1), &bson!(1.0)), Ordering::Equal);
        assert_eq!(cmp_bson(&bson!(1_i64), &bson!(1.5)), Ordering::Less);
        assert_eq!(cmp_bson(&bson!(f64::NAN), &bson!(i64::MIN)), Ordering::Less);
        assert_eq!(cmp_bson(&bson!(f64::NAN), &bson!(f64::NAN)), Ordering::Equal);
        // 2^53 + 1 is not representable as a double; the comparison must still see it as larger.
        let big = (1_i64 << 53) + 1;
        assert_eq!(cmp_bson(&bson!(big), &bson!((1_i64 << 53) as f64)), Ordering::Greater);
        assert_eq!(cmp_bson(&bson!(i64::MAX), &bson!(9.3e18)), Ordering::Less);
        assert_eq!(cmp_bson(&bson!(-1), &bson!(-0.5)), Ordering::Less);
        assert_eq!(cmp_bson(&bson!(-0.0), &bson!(0)), Ordering::Equal);
        let dec: bson::Decimal128 = "2.5".parse().unwrap();
        assert_eq!(cmp_bson(&Bson::Decimal128(dec), &bson!(2.5)), Ordering::Equal);
        assert_eq!(cmp_bson(&Bson::Decimal128(dec), &bson!(3)), Ordering::Less);
        let tenth: bson::Decimal128 = "0.1".parse().unwrap();
        assert_eq!(cmp_bson(&Bson::Decimal128(tenth), &bson!(0.1)), Ordering::Less);
        let a: bson::Decimal128 = "1.000000000000000000000000000000001".parse().unwrap();
        let b: bson::Decimal128 = "1.0".parse().unwrap();
        assert_eq!(cmp_bson(&Bson::Decimal128(a), &Bson::Decimal128(b)), Ordering::Greater);
        assert_eq!(cmp_bson(&Bson::Decimal128(b), &bson!(1_i64)), Ordering::Equal);
        let neg: bson::Decimal128 = "-2E+3".parse().unwrap();
        assert_eq!(cmp_bson(&Bson::Decimal128(neg), &bson!(-1999)), Ordering::Less);
        let nan: bson::Decimal128 = "NaN".parse().unwrap();
        assert_eq!(cmp_bson(&Bson::Decimal128(nan), &bson!(f64::NAN)), Ordering::Equal);
        assert_eq!(cmp_bson(&Bson::Decimal128(nan), &bson!(-1)), Ordering::Less);
    }

    #[test]
    fn types_order_by_rank() {
        let ordered = [
            Bson::MinKey,
            Bson::Null,
            bson!(5),
            bson!("a"),
            bson!({}),
            bson!([]),
            Bson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12])),
            bson!(false),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Timestamp(bson::Timestamp { time: 0, increment: 0 }),
            Bson::MaxKey,
        ];
        for w in ordered.windows(2) {
            assert_eq!(cmp_bson(&w[0], &w[1]), Ordering::Less, "{:?} < {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn documents_and_arrays() {
        assert_eq!(cmp_documents(&doc! {"a": 1, "b": 2}, &doc! {"b": 2, "a": 1}), Ordering::Less);
        assert_eq!(cmp_documents(&doc! {"a": 1}, &doc! {"a": 1, "b": 1}), Ordering::Less);
        assert_eq!(cmp_documents(&doc! {"a": 1}, &doc! {"a": 1.0}), Ordering::Equal);
        // The element's type is compared before its name.
        assert_eq!(cmp_documents(&doc! {"b": 1}, &doc! {"a": "x"}), Ordering::Less);
        assert_eq!(cmp_bson(&bson!([1, 2]), &bson!([1, 3])), Ordering::Less);
        assert_eq!(cmp_bson(&bson!([1, 2]), &bson!([1])), Ordering::Greater);
        assert_eq!(cmp_bson(&bson!("ab"), &bson!("b")), Ordering::Less);
    }

    /// The order must be total: antisymmetric and transitive on random values of all types.
    #[test]
    fn order_is_total() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let values: Vec<Bson> = (0..120).map(|_| crate::doc::random::value(&mut rng, 2)).collect();
        for a in &values {
            assert_eq!(cmp_bson(a, a), Ordering::Equal, "{a:?}");
            for b in &values {
                assert_eq!(cmp_bson(a, b), cmp_bson(b, a).reverse(), "{a:?} vs {b:?}");
                for c in values.iter().take(40) {
                    if cmp_bson(a, b).is_le() && cmp_bson(b, c).is_le() {
                        assert!(cmp_bson(a, c).is_le(), "{a:?} <= {b:?} <= {c:?}");
                    }
                }
            }
        }
    }
}
