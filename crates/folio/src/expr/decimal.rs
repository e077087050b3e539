//! Decimal128 arithmetic for `$add`, `$subtract`, `$multiply`, `$divide`, `$mod`, `$abs`,
//! `$sum`, `$avg` and the rounding operators (`$round`, `$trunc`, `$ceil`, `$floor`).
//!
//! When an operand is a Decimal128, MongoDB computes in IEEE 754-2008 decimal128 (34
//! significant digits, round half to even), not in doubles: `0.1 + 0.2` of decimals is exactly
//! `0.3`, and `1 / 3` has 34 threes. Folio does the same with exact integer arithmetic
//! (`num-bigint`) on the coefficient and exponent of each operand, then one rounding step to
//! decimal128:
//!
//! - sums and products are exact before rounding; the result keeps IEEE's *ideal exponent*
//!   (the smaller operand exponent for a sum, their sum for a product), so `1.50 + 1` is `2.50`;
//! - a quotient is computed to at least 35 digits with its remainder, so the rounding sees
//!   whether the discarded part is below, at or above one half; an exact quotient drops the
//!   trailing zeros down to the ideal exponent (`10 / 4` is `2.5`, `1.0 / 2` is `0.5`);
//! - results beyond decimal128's exponent range overflow to infinity, or round towards zero
//!   below it.
//!
//! Integers convert exactly; a double converts the way MongoDB's `Decimal128(double)` does,
//! rounded to 15 significant digits (so `$toDecimal: 2.5` is `2.50000000000000`). NaN and
//! infinite operands are left to the caller's double arithmetic.

use bson::{Bson, Decimal128};
use num_bigint::BigUint;

use crate::doc::compare::Number;

/// Significant digits of a decimal128.
const DIGITS: usize = 34;
/// The smallest and largest exponent of a decimal128 coefficient.
const MIN_EXP: i64 = -6176;
const MAX_EXP: i64 = 6111;

/// A finite decimal `(-1)^neg * coef * 10^exp`.
#[derive(Clone, Debug)]
struct Dec {
    neg: bool,
    coef: BigUint,
    exp: i64,
}

fn pow10(n: u64) -> BigUint {
    BigUint::from(10u32).pow(u32::try_from(n).unwrap_or(u32::MAX))
}

fn digits(c: &BigUint) -> usize {
    c.to_string().len()
}

fn is_zero(c: &BigUint) -> bool {
    c.bits() == 0
}

impl Dec {
    /// A finite number as a decimal (`None` for NaN and infinities).
    fn of(n: Number) -> Option<Dec> {
        match n {
            Number::Int(i) => Some(Dec::int(i64::from(i))),
            Number::Long(i) => Some(Dec::int(i)),
            Number::Double(f) => Dec::double(f),
            Number::Decimal(_, d) => Dec::parse(&d.to_string()),
        }
    }

    fn int(i: i64) -> Dec {
        Dec { neg: i < 0, coef: BigUint::from(i.unsigned_abs()), exp: 0 }
    }

    /// A double rounded to 15 significant digits, as MongoDB converts it.
    fn double(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        if f == 0.0 {
            return Some(Dec { neg: f.is_sign_negative(), coef: BigUint::from(0u32), exp: 0 });
        }
        let s = format!("{:.14e}", f.abs());
        let (mantissa, exp) = s.split_once('e')?;
        let coef: BigUint = mantissa.replace('.', "").parse().ok()?;
        let exp: i64 = exp.parse().ok()?;
        Some(Dec { neg: f < 0.0, coef, exp: exp - 14 })
    }

    /// Parses a Decimal128's string form (`-1.50`, `1.5E+3`, `0E-6176`).
    fn parse(s: &str) -> Option<Dec> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exp) = match body.find(['E', 'e']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i64>().ok()?),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let coef: BigUint = format!("{int}{frac}").parse().ok()?;
        Some(Dec { neg, coef, exp: exp - frac.len() as i64 })
    }

    /// Rounds to decimal128 and encodes it; `sticky` says that a non-zero remainder was
    /// already discarded below the coefficient's last digit (an inexact quotient).
    fn into_bson(self, sticky: bool) -> Bson {
        let Dec { neg, mut coef, mut exp } = self;
        let n = digits(&coef);
        if n > DIGITS {
            (coef, exp) = round(coef, exp, (n - DIGITS) as u64, sticky);
            if digits(&coef) > DIGITS {
                // Rounding carried into a new digit (999.. -> 1000..): drop the zero it added.
                coef /= 10u32;
                exp += 1;
            }
        }
        if exp < MIN_EXP {
            (coef, exp) = round(coef, exp, (MIN_EXP - exp) as u64, sticky);
        }
        if exp > MAX_EXP {
            let pad = (exp - MAX_EXP) as usize;
            if is_zero(&coef) {
                exp = MAX_EXP;
            } else if digits(&coef) + pad <= DIGITS {
                coef *= pow10(pad as u64);
                exp = MAX_EXP;
            } else {
                return decimal_str(if neg { "-Infinity" } else { "Infinity" });
            }
        }
        let sign = if neg { "-" } else { "" };
        decimal_str(&format!("{sign}{coef}E{exp:+}"))
    }

    /// The coefficient scaled to exponent `exp` (not above this one's).
    fn scaled_to(&self, exp: i64) -> BigUint {
        &self.coef * pow10(self.exp.abs_diff(exp))
    }
}

fn decimal_str(s: &str) -> Bson {
    match s.parse::<Decimal128>() {
        Ok(d) => Bson::Decimal128(d),
        // Unreachable for the forms built here; a double keeps the value visible.
        Err(_) => Bson::Double(f64::NAN),
    }
}

/// Drops `drop` trailing digits of `coef`, rounding half to even (`sticky`: the exact value is
/// a little above the digits given).
fn round(coef: BigUint, exp: i64, drop: u64, sticky: bool) -> (BigUint, i64) {
    let divisor = pow10(drop);
    let (mut hi, lo) = (&coef / &divisor, &coef % &divisor);
    let twice = &lo * 2u32;
    let up = match twice.cmp(&divisor) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => sticky || (&hi % 2u32).bits() != 0,
    };
    if up {
        hi += 1u32;
    }
    (hi, exp + drop as i64)
}

/// `a + b` (and `a - b` with `negate_b`).
fn sum(a: &Dec, b: &Dec, negate_b: bool) -> Dec {
    let b_neg = b.neg != negate_b;
    let exp = a.exp.min(b.exp);
    let (x, y) = (a.scaled_to(exp), b.scaled_to(exp));
    if a.neg == b_neg {
        return Dec { neg: a.neg, coef: x + y, exp };
    }
    match x.cmp(&y) {
        std::cmp::Ordering::Greater => Dec { neg: a.neg, coef: x - y, exp },
        std::cmp::Ordering::Less => Dec { neg: b_neg, coef: y - x, exp },
        std::cmp::Ordering::Equal => Dec { neg: false, coef: BigUint::from(0u32), exp },
    }
}

/// Both operands as decimals, when both are finite.
fn operands(a: Number, b: Number) -> Option<(Dec, Dec)> {
    Some((Dec::of(a)?, Dec::of(b)?))
}

/// `a + b` in decimal128; `None` when an operand is NaN or infinite.
pub fn add(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    Some(sum(&x, &y, false).into_bson(false))
}

/// `a - b` in decimal128; `None` when an operand is NaN or infinite.
pub fn subtract(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    Some(sum(&x, &y, true).into_bson(false))
}

/// `a * b` in decimal128; `None` when an operand is NaN or infinite.
pub fn multiply(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    Some(Dec { neg: x.neg != y.neg, coef: x.coef * y.coef, exp: x.exp + y.exp }.into_bson(false))
}

/// `a / b` in decimal128; `None` when an operand is NaN or infinite or `b` is zero (the
/// caller reports division by zero).
pub fn divide(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    if is_zero(&y.coef) {
        return None;
    }
    let neg = x.neg != y.neg;
    let ideal = x.exp - y.exp;
    if is_zero(&x.coef) {
        return Some(Dec { neg, coef: x.coef, exp: ideal }.into_bson(false));
    }
    // Enough extra digits that the quotient has at least DIGITS + 1 of them.
    let shift = (DIGITS + 1 + digits(&y.coef)).saturating_sub(digits(&x.coef)) as u64;
    let num = &x.coef * pow10(shift);
    let (mut q, r) = (&num / &y.coef, &num % &y.coef);
    let mut exp = ideal - shift as i64;
    let exact = is_zero(&r);
    if exact {
        // An exact quotient takes the exponent closest to the ideal one.
        while exp < ideal && (&q % 10u32).bits() == 0 {
            q /= 10u32;
            exp += 1;
        }
    }
    Some(Dec { neg, coef: q, exp }.into_bson(!exact))
}

/// `a` modulo `b` in decimal128 (the remainder of the quotient truncated towards zero, with
/// the sign of `a` and the smaller exponent of the two, as IEEE's `fmod`); `None` when an
/// operand is NaN or infinite or `b` is zero (the caller reports it).
pub fn remainder(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    if is_zero(&y.coef) {
        return None;
    }
    let exp = x.exp.min(y.exp);
    let coef = x.scaled_to(exp) % y.scaled_to(exp);
    Some(Dec { neg: x.neg, coef, exp }.into_bson(false))
}

/// `|a|` in decimal128, with `a`'s digits and exponent; `None` when `a` is NaN or infinite.
pub fn abs(a: Number) -> Option<Bson> {
    let x = Dec::of(a)?;
    Some(Dec { neg: false, ..x }.into_bson(false))
}

/// How [`quantize`] drops digits.
#[derive(Clone, Copy, Debug)]
pub enum Rounding {
    /// To the nearest, ties to the even digit (`$round`).
    HalfEven,
    /// Towards zero (`$trunc`).
    TowardZero,
    /// Towards negative infinity (`$floor`).
    Floor,
    /// Towards positive infinity (`$ceil`).
    Ceiling,
}

/// `a` with exponent `exp`, as MongoDB's `Decimal128::quantize` makes it for `$round` and
/// `$trunc` (digits below the exponent dropped by `mode`, and zeros added when `a`'s exponent
/// is above it: `$round: [1, 2]` of a decimal is `1.00`); NaN when the result needs more than
/// 34 digits. With `integral`, an exponent already at or above `exp` is kept (`$ceil`,
/// `$floor`: IEEE's round-to-integral). `None` when `a` is NaN or infinite.
pub fn quantize(a: Number, exp: i64, mode: Rounding, integral: bool) -> Option<Bson> {
    let x = Dec::of(a)?;
    if x.exp >= exp {
        if integral {
            return Some(x.into_bson(false));
        }
        let coef = &x.coef * pow10(x.exp.abs_diff(exp));
        if digits(&coef) > DIGITS {
            return Some(decimal_str("NaN"));
        }
        return Some(Dec { neg: x.neg, coef, exp }.into_bson(false));
    }
    let divisor = pow10(x.exp.abs_diff(exp));
    let (mut hi, lo) = (&x.coef / &divisor, &x.coef % &divisor);
    let up = match mode {
        Rounding::HalfEven => match (&lo * 2u32).cmp(&divisor) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => (&hi % 2u32).bits() != 0,
        },
        Rounding::TowardZero => false,
        Rounding::Floor => x.neg && !is_zero(&lo),
        Rounding::Ceiling => !x.neg && !is_zero(&lo),
    };
    if up {
        hi += 1u32;
    }
    Some(Dec { neg: x.neg, coef: hi, exp }.into_bson(false))
}

/// A number converted to a Decimal128 as `$toDecimal` does (integers exactly, doubles to 15
/// significant digits); `None` for NaN and infinities.
pub fn from_number(n: Number) -> Option<Bson> {
    Some(Dec::of(n)?.into_bson(false))
}

#[cfg(test)]
mod tests {
    use bson::{Bson, Decimal128};

    use super::{add, divide, from_number, multiply, subtract};
    use crate::doc::compare::Number;

    fn d(s: &str) -> Number {
        let v: Decimal128 = s.parse().expect("decimal");
        Number::Decimal(0.0, v)
    }

    fn show(b: Option<Bson>) -> String {
        match b {
            Some(Bson::Decimal128(x)) => x.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn sums_are_exact_with_the_ideal_exponent() {
        assert_eq!(show(add(d("0.1"), d("0.2"))), "0.3");
        assert_eq!(show(add(d("1.50"), Number::Int(1))), "2.50");
        assert_eq!(show(subtract(d("1.00"), d("1.00"))), "0.00");
        assert_eq!(show(subtract(Number::Long(5), d("7.5"))), "-2.5");
        assert_eq!(
            show(add(d("9999999999999999999999999999999999"), Number::Int(1))),
            "1.000000000000000000000000000000000E+34"
        );
        // The double operand converts to 15 significant digits.
        assert_eq!(show(add(d("1"), Number::Double(0.1))), "1.100000000000000");
    }

    #[test]
    fn products_and_quotients_round_half_even() {
        assert_eq!(show(multiply(d("1.5"), d("1.5"))), "2.25");
        assert_eq!(show(divide(Number::Int(1), d("3"))), "0.3333333333333333333333333333333333");
        assert_eq!(show(divide(Number::Int(2), d("3"))), "0.6666666666666666666666666666666667");
        assert_eq!(show(divide(d("10"), Number::Int(4))), "2.5");
        assert_eq!(show(divide(d("1.0"), Number::Int(2))), "0.5");
        assert_eq!(show(divide(d("100"), Number::Int(10))), "10");
        assert_eq!(show(divide(d("1"), d("0"))), "None");
        // Ties round to the even neighbour: down here, up below.
        assert_eq!(
            show(multiply(d("1000000000000000000000000000000002"), d("1.25"))),
            "1250000000000000000000000000000002"
        );
        assert_eq!(
            show(multiply(d("1000000000000000000000000000000001"), d("1.5"))),
            "1500000000000000000000000000000002"
        );
    }

    #[test]
    fn range_limits_and_conversions() {
        // Large exponents are clamped by padding the coefficient while it fits.
        assert_eq!(show(multiply(d("1E+6111"), d("1E+10"))), "1.0000000000E+6121");
        assert_eq!(show(multiply(d("1E+6144"), Number::Int(10))), "Infinity");
        assert_eq!(show(multiply(d("-1E+6144"), Number::Int(10))), "-Infinity");
        assert_eq!(show(multiply(d("1E-6176"), d("0.1"))), "0E-6176");
        assert_eq!(show(from_number(Number::Double(2.5))), "2.50000000000000");
        assert_eq!(show(from_number(Number::Int(5))), "5");
        assert_eq!(show(from_number(Number::Long(-10000))), "-10000");
        assert_eq!(show(add(d("NaN"), Number::Int(1))), "None");
    }
}
