//! Arithmetic for `$inc`, `$mul` and `$bit` with MongoDB's type rules.
//!
//! The result type is the "widest" of the operands: decimal over double over int64 over int32.
//! int32 arithmetic that overflows widens to int64; int64 arithmetic that overflows is an error
//! (the caller reports it), as in MongoDB. Decimal arithmetic is exact on the decimal
//! coefficients (so `0.1 + 0.2` is `0.3`) as long as the result fits 34 digits; beyond that, and
//! for NaN and infinities, it falls back to `f64`.

use bson::Bson;

use super::BitOp;
use crate::doc::compare::{Number, parse_decimal_str};

/// The operation to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Mul,
}

fn decimal(f: f64) -> Bson {
    let s = if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() }
    } else {
        format!("{f:?}")
    };
    match s.parse::<bson::Decimal128>() {
        Ok(d) => Bson::Decimal128(d),
        Err(_) => Bson::Double(f),
    }
}

/// `a op b`, or `None` when int64 arithmetic overflows.
pub(super) fn apply(op: Arith, a: Number, b: Number) -> Option<Bson> {
    let float = |x: f64, y: f64| match op {
        Arith::Add => x + y,
        Arith::Mul => x * y,
    };
    match (a, b) {
        (Number::Decimal(..), _) | (_, Number::Decimal(..)) => {
            Some(exact_decimal(op, a, b).unwrap_or_else(|| decimal(float(a.to_f64(), b.to_f64()))))
        }
        (Number::Double(_), _) | (_, Number::Double(_)) => {
            Some(Bson::Double(float(a.to_f64(), b.to_f64())))
        }
        (Number::Int(x), Number::Int(y)) => {
            let r = match op {
                Arith::Add => x.checked_add(y),
                Arith::Mul => x.checked_mul(y),
            };
            Some(match r {
                Some(r) => Bson::Int32(r),
                None => Bson::Int64(match op {
                    Arith::Add => i64::from(x) + i64::from(y),
                    Arith::Mul => i64::from(x) * i64::from(y),
                }),
            })
        }
        _ => {
            let (x, y) = (a.as_i64()?, b.as_i64()?);
            let r = match op {
                Arith::Add => x.checked_add(y),
                Arith::Mul => x.checked_mul(y),
            };
            r.map(Bson::Int64)
        }
    }
}

/// The exact decimal form of a number, if it has one we can compute with (a double by its
/// shortest representation, which is what the user wrote).
fn as_decimal(n: Number) -> Option<(i128, i32)> {
    match n {
        Number::Double(d) if d.is_finite() => parse_decimal_str(&format!("{d:?}")),
        other => other.decimal_parts(),
    }
}

fn exact_decimal(op: Arith, a: Number, b: Number) -> Option<Bson> {
    let ((c1, e1), (c2, e2)) = (as_decimal(a)?, as_decimal(b)?);
    let (coef, exp) = match op {
        Arith::Add => {
            // When one operand is below the other's last significant digit by more than the 34
            // digits of precision, the sum rounds to the larger operand.
            let magnitude =
                |c: i128, e: i32| e + c.unsigned_abs().checked_ilog10().map_or(0, |d| d as i32);
            let (m1, m2) = (magnitude(c1, e1), magnitude(c2, e2));
            if c2 == 0 || (c1 != 0 && m1 - m2 > 35) {
                (c1, e1)
            } else if c1 == 0 || m2 - m1 > 35 {
                (c2, e2)
            } else {
                let e = e1.min(e2);
                let scale = |c: i128, from: i32| {
                    c.checked_mul(10_i128.checked_pow(u32::try_from(from - e).ok()?)?)
                };
                (scale(c1, e1)?.checked_add(scale(c2, e2)?)?, e)
            }
        }
        Arith::Mul => (c1.checked_mul(c2)?, e1.checked_add(e2)?),
    };
    if coef.unsigned_abs() >= 10_u128.pow(34) {
        return None;
    }
    format!("{coef}E{exp}").parse::<bson::Decimal128>().ok().map(Bson::Decimal128)
}

/// The zero of an operand's type (what `$mul` stores in a missing field).
pub(super) fn zero_like(n: Number) -> Bson {
    match n {
        Number::Int(_) => Bson::Int32(0),
        Number::Long(_) => Bson::Int64(0),
        Number::Double(_) => Bson::Double(0.0),
        Number::Decimal(..) => decimal(0.0),
    }
}

/// A bitwise operation on integers; the result is int64 if either side is.
pub(super) fn bit(op: BitOp, a: &Bson, b: &Bson) -> Option<Bson> {
    let f = |x: i64, y: i64| match op {
        BitOp::And => x & y,
        BitOp::Or => x | y,
        BitOp::Xor => x ^ y,
    };
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            Some(Bson::Int32(f(i64::from(*x), i64::from(*y)) as i32))
        }
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let x = Number::of(a)?.as_i64()?;
            let y = Number::of(b)?.as_i64()?;
            Some(Bson::Int64(f(x, y)))
        }
        _ => None,
    }
}
