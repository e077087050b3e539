//! Arithmetic for `$inc`, `$mul` and `$bit` with MongoDB's type rules.
//!
//! The result type is the "widest" of the operands: decimal over double over int64 over int32.
//! int32 arithmetic that overflows widens to int64; int64 arithmetic that overflows is an error
//! (the caller reports it), as in MongoDB. With a decimal operand the arithmetic is decimal128's
//! ([`crate::expr::decimal`], as for the `$add` and `$multiply` expressions): exact, rounded
//! once to 34 digits, a double operand converted as MongoDB's `SafeNum` converts it (rounded to
//! 15 digits); NaN and infinities go through `f64`, which gives the same results.

use bson::Bson;

use super::BitOp;
use crate::doc::compare::Number;

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
            let exact = match op {
                Arith::Add => crate::expr::decimal::add(a, b),
                Arith::Mul => crate::expr::decimal::multiply(a, b),
            };
            Some(exact.unwrap_or_else(|| decimal(float(a.to_f64(), b.to_f64()))))
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
