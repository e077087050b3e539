//! Decimal128 arithmetic for `$add`, `$subtract`, `$multiply`, `$divide`, `$mod`, `$abs`,
//! `$sum`, `$avg`, the rounding operators (`$round`, `$trunc`, `$ceil`, `$floor`), and the
//! functions `$sqrt`, `$pow`, `$exp`, `$ln`, `$log10`, `$log` and trigonometry.
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
//!
//! The functions are computed by `dashu-float` at 34 significant digits, round half to even,
//! correctly rounded (MongoDB's Intel library goes through binary128 for the transcendental
//! ones, which can differ in the last digit in rare cases). An inexact result has all 34
//! digits (`$exp: 1` is `2.718281828459045235360287471352662`); an exact one is written with
//! the fewest digits, an integer without exponent (`$log10: 1000` is `3`, `$pow: [2, 10]` is
//! `1024`), except a square root, which keeps IEEE's ideal exponent (`$sqrt: 4.00` is `2.0`).
//! `$log` divides the two natural logarithms, each rounded, as MongoDB does.

use bson::{Bson, Decimal128};
use dashu_float::round::{Rounded, mode::HalfEven};
use dashu_float::{Context, FBig};
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

/// A decimal of arbitrary precision (base 10, ties to even) for the functions.
type Big = FBig<HalfEven, 10>;

/// Beyond these magnitudes of `$exp`'s argument (and of a power's base-10 logarithm) the
/// result is out of decimal128's range: answered without computing it.
const EXP_LIMIT: f64 = 14_200.0;
const LOG10_LIMIT: f64 = 6_200.0;

impl Dec {
    fn to_big(&self) -> Option<Big> {
        let sign = if self.neg { "-" } else { "" };
        let significand = format!("{sign}{}", self.coef).parse().ok()?;
        Some(Big::from_parts(significand, isize::try_from(self.exp).ok()?))
    }

    fn from_big(b: &Big) -> Option<Dec> {
        let r = b.repr();
        if r.is_infinite() {
            return None;
        }
        let s = r.significand().to_string();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        Some(Dec { neg, coef: digits.parse().ok()?, exp: r.exponent() as i64 })
    }

    /// An exact value with the fewest digits, an integer of up to 34 digits without exponent.
    fn canonical(mut self) -> Dec {
        if is_zero(&self.coef) {
            return Dec { exp: 0, ..self };
        }
        let ten = BigUint::from(10u32);
        while (&self.coef % &ten).bits() == 0 {
            self.coef /= 10u32;
            self.exp += 1;
        }
        while self.exp > 0 && digits(&self.coef) < DIGITS {
            self.coef *= 10u32;
            self.exp -= 1;
        }
        self
    }

    fn is_integral(&self) -> bool {
        self.exp >= 0 || {
            let scale = pow10(self.exp.unsigned_abs());
            (&self.coef % scale).bits() == 0
        }
    }
}

/// The base-10 logarithm of a positive decimal, to a double's precision (for range checks).
fn log10_of(d: &Dec) -> f64 {
    let s = d.coef.to_string();
    let lead: f64 = format!("0.{}", &s[..s.len().min(17)]).parse().unwrap_or(1.0);
    (s.len() as f64 + d.exp as f64) + lead.log10()
}

fn context() -> Context<HalfEven> {
    Context::new(DIGITS)
}

/// A function's result as a decimal128: all 34 digits when inexact, canonical when exact, NaN
/// outside the function's domain.
fn finish(r: Result<Rounded<Big>, dashu_float::FpError>) -> Option<Bson> {
    match r {
        Ok(Rounded::Exact(v)) => Some(Dec::from_big(&v)?.canonical().into_bson(false)),
        Ok(Rounded::Inexact(v, _)) => {
            let mut d = Dec::from_big(&v)?;
            let n = digits(&d.coef);
            if n < DIGITS && !is_zero(&d.coef) {
                d.coef *= pow10((DIGITS - n) as u64);
                d.exp -= (DIGITS - n) as i64;
            }
            Some(d.into_bson(true))
        }
        Err(_) => Some(decimal_str("NaN")),
    }
}

/// The square root of a non-negative decimal (the caller refuses negative ones); an exact root
/// takes the ideal exponent, half the operand's rounded down.
pub fn sqrt(a: Number) -> Option<Bson> {
    let x = Dec::of(a)?;
    let r = context().sqrt(&x.to_big()?.repr().clone());
    if let Ok(Rounded::Exact(v)) = &r {
        let root = Dec::from_big(v)?.canonical();
        let ideal = x.exp.div_euclid(2);
        if root.exp >= ideal && digits(&root.coef) + (root.exp - ideal) as usize <= DIGITS {
            let coef = root.coef * pow10((root.exp - ideal) as u64);
            return Some(Dec { neg: false, coef, exp: ideal }.into_bson(false));
        }
        return Some(root.into_bson(false));
    }
    finish(r)
}

/// `e` to the power of a decimal.
pub fn exp(a: Number) -> Option<Bson> {
    let x = Dec::of(a)?;
    let f = a.to_f64();
    if f > EXP_LIMIT {
        return Some(decimal_str("Infinity"));
    }
    if f < -EXP_LIMIT {
        return Some(decimal_str("0E-6176"));
    }
    finish(context().exp(x.to_big()?.repr(), None))
}

/// The natural logarithm of a positive decimal (the caller refuses the others).
pub fn ln(a: Number) -> Option<Bson> {
    finish(context().ln(Dec::of(a)?.to_big()?.repr(), None))
}

/// The base-10 logarithm of a positive decimal.
pub fn log10(a: Number) -> Option<Bson> {
    finish(context().log10(Dec::of(a)?.to_big()?.repr(), None))
}

/// The logarithm of `a` in `base`, as MongoDB computes it: `ln(a) / ln(base)`, each rounded to
/// decimal128.
pub fn log(a: Number, base: Number) -> Option<Bson> {
    let (x, b) = (ln(a)?, ln(base)?);
    divide(Number::of(&x)?, Number::of(&b)?)
}

/// `a` to the power `b` (the caller refuses a zero base with a negative exponent). Integer
/// powers with an exact result of at most 34 digits are computed exactly.
pub fn pow(a: Number, b: Number) -> Option<Bson> {
    let (x, y) = operands(a, b)?;
    if is_zero(&y.coef) {
        return Some(decimal_str("1"));
    }
    if is_zero(&x.coef) {
        return Some(decimal_str("0"));
    }
    let integral = y.is_integral();
    // A negative base has a real power only for an integer exponent; its sign is the parity's.
    let odd = integral && {
        let n = if y.exp >= 0 { y.scaled_to(0) } else { &y.coef / pow10(y.exp.unsigned_abs()) };
        n.bit(0)
    };
    if x.neg && !integral {
        return Some(decimal_str("NaN"));
    }
    let neg = x.neg && odd;
    let magnitude = Dec { neg: false, ..x };
    // Out of range either way: answered without computing the power.
    let log10 = match b.to_f64() * log10_of(&magnitude) {
        l if l.is_nan() => 0.0,
        l => l,
    };
    if log10.abs() > LOG10_LIMIT {
        let s = match (log10 > 0.0, neg) {
            (true, false) => "Infinity",
            (true, true) => "-Infinity",
            (false, false) => "0E-6176",
            (false, true) => "-0E-6176",
        };
        return Some(decimal_str(s));
    }
    if integral
        && let Ok(n) = i64::try_from(y.scaled_to(y.exp.min(0)) / pow10(y.exp.min(0).unsigned_abs()))
    {
        let n = if y.neg { -n } else { n };
        let k = n.unsigned_abs();
        if digits(&magnitude.coef) as u64 * k <= DIGITS as u64 {
            let exact = Dec {
                neg,
                coef: magnitude.coef.pow(u32::try_from(k).ok()?),
                exp: magnitude.exp * k as i64,
            }
            .canonical();
            if n > 0 {
                return Some(exact.into_bson(false));
            }
            let denominator = exact.into_bson(false);
            return divide(Number::Int(1), Number::of(&denominator)?);
        }
    }
    let r = context().powf(magnitude.to_big()?.repr(), y.to_big()?.repr(), None);
    let v = finish(r)?;
    if neg { multiply(Number::Int(-1), Number::of(&v)?) } else { Some(v) }
}

/// The trigonometric functions computed in decimal128.
#[derive(Clone, Copy, Debug)]
pub enum Trig {
    /// `$sin`.
    Sin,
    /// `$cos`.
    Cos,
    /// `$tan`.
    Tan,
    /// `$asin`.
    Asin,
    /// `$acos`.
    Acos,
    /// `$atan`.
    Atan,
}

/// A trigonometric function of a decimal; NaN outside its domain.
pub fn trig(f: Trig, a: Number) -> Option<Bson> {
    let x = Dec::of(a)?.to_big()?;
    let (c, x) = (context(), x.repr());
    finish(match f {
        Trig::Sin => c.sin(x, None),
        Trig::Cos => c.cos(x, None),
        Trig::Tan => c.tan(x, None),
        Trig::Asin => c.asin(x, None),
        Trig::Acos => c.acos(x, None),
        Trig::Atan => c.atan(x, None),
    })
}

/// `$atan2` of decimals: the angle of the point `(x, y)`.
pub fn atan2(y: Number, x: Number) -> Option<Bson> {
    let (y, x) = operands(y, x)?;
    finish(context().atan2(y.to_big()?.repr(), x.to_big()?.repr(), None))
}

/// `a` in degrees to radians (`to_radians`) or back, multiplied by MongoDB's 34-digit
/// constants for pi/180 and 180/pi.
pub fn degrees_radians(a: Number, to_radians: bool) -> Option<Bson> {
    let factor = if to_radians {
        "0.01745329251994329576923690768488613"
    } else {
        "57.29577951308232087679815481410517"
    };
    let factor = decimal_str(factor);
    multiply(a, Number::of(&factor)?)
}

/// The sign of a finite number compared as a decimal (`None` for NaN and infinities): a tiny
/// decimal is positive even where its double is 0.
pub fn sign(n: Number) -> Option<std::cmp::Ordering> {
    let d = Dec::of(n)?;
    Some(if is_zero(&d.coef) {
        std::cmp::Ordering::Equal
    } else if d.neg {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Greater
    })
}

/// Whether a finite number is exactly 1.
pub fn is_one(n: Number) -> bool {
    Dec::of(n).is_some_and(|d| {
        let d = d.canonical();
        !d.neg && d.exp == 0 && d.coef == BigUint::from(1u32)
    })
}
