//! Arithmetic, rounding, exponential, trigonometric and bitwise operators.
//!
//! Integers stay integers while they fit (int32 widens to int64, int64 to double on
//! overflow); a double operand makes a double and a decimal operand a decimal. `$add`,
//! `$subtract`, `$multiply`, `$divide`, `$mod`, `$abs`, `$round`, `$trunc`, `$ceil` and
//! `$floor`, `$pow`, `$sqrt`, `$exp`, the logarithms and trigonometry compute decimals in
//! decimal128 ([`crate::expr::decimal`]); a decimal NaN or infinity goes through doubles.

use bson::{Bson, Decimal128};

use super::{MANY, Operator, fixed, is_nullish, null, op};
use crate::doc::compare::Number;
use crate::error::{Code, Error, Result};
use crate::expr::{Value, decimal as dec, loc, type_name};

/// The arithmetic operators, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$add", 0, MANY, add),
    op("$subtract", 2, 2, |v| {
        let [a, b] = fixed(v);
        subtract(a, b)
    }),
    op("$multiply", 0, MANY, multiply),
    op("$divide", 2, 2, |v| {
        let [a, b] = fixed(v);
        divide(a, b)
    }),
    op("$mod", 2, 2, |v| {
        let [a, b] = fixed(v);
        modulo(a, b)
    }),
    op("$abs", 1, 1, |v| {
        let [x] = fixed(v);
        decimal_or(x, dec::abs, |x| unary_num("$abs", x, f64::abs, Some(i64::checked_abs)))
    }),
    op("$ceil", 1, 1, |v| {
        let [x] = fixed(v);
        decimal_or(
            x,
            |n| dec::quantize(n, 0, dec::Rounding::Ceiling, true),
            |x| unary_num("$ceil", x, f64::ceil, Some(Some)),
        )
    }),
    op("$floor", 1, 1, |v| {
        let [x] = fixed(v);
        decimal_or(
            x,
            |n| dec::quantize(n, 0, dec::Rounding::Floor, true),
            |x| unary_num("$floor", x, f64::floor, Some(Some)),
        )
    }),
    op("$round", 1, 2, |v| round_like("$round", v, false)),
    op("$trunc", 1, 2, |v| round_like("$trunc", v, true)),
    op("$pow", 2, 2, |v| {
        let [a, b] = fixed(v);
        pow(a, b)
    }),
    op("$sqrt", 1, 1, |v| {
        let [x] = fixed(v);
        if let Some(n) = x.as_ref().and_then(Number::of)
            && n.to_f64() < 0.0
        {
            return Err(loc(28714, "$sqrt's argument must be greater than or equal to 0"));
        }
        decimal_or(x, dec::sqrt, |x| unary_num("$sqrt", x, f64::sqrt, None))
    }),
    op("$exp", 1, 1, |v| float_fn("$exp", v, dec::exp, f64::exp)),
    op("$ln", 1, 1, |v| logarithm("$ln", 28766, v, dec::ln, f64::ln)),
    op("$log10", 1, 1, |v| logarithm("$log10", 28761, v, dec::log10, f64::log10)),
    op("$log", 2, 2, log),
    op("$sin", 1, 1, |v| float_fn("$sin", v, |n| dec::trig(dec::Trig::Sin, n), f64::sin)),
    op("$cos", 1, 1, |v| float_fn("$cos", v, |n| dec::trig(dec::Trig::Cos, n), f64::cos)),
    op("$tan", 1, 1, |v| float_fn("$tan", v, |n| dec::trig(dec::Trig::Tan, n), f64::tan)),
    op("$asin", 1, 1, |v| float_fn("$asin", v, |n| dec::trig(dec::Trig::Asin, n), f64::asin)),
    op("$acos", 1, 1, |v| float_fn("$acos", v, |n| dec::trig(dec::Trig::Acos, n), f64::acos)),
    op("$atan", 1, 1, |v| float_fn("$atan", v, |n| dec::trig(dec::Trig::Atan, n), f64::atan)),
    op("$atan2", 2, 2, |v| binary_float("$atan2", v, dec::atan2, |y, x| Ok(y.atan2(x)))),
    op("$degreesToRadians", 1, 1, |v| {
        float_fn("$degreesToRadians", v, |n| dec::degrees_radians(n, true), f64::to_radians)
    }),
    op("$radiansToDegrees", 1, 1, |v| {
        float_fn("$radiansToDegrees", v, |n| dec::degrees_radians(n, false), f64::to_degrees)
    }),
    op("$bitAnd", 0, MANY, |v| bitwise("$bitAnd", &v, -1, |a, x| a & x)),
    op("$bitOr", 0, MANY, |v| bitwise("$bitOr", &v, 0, |a, x| a | x)),
    op("$bitXor", 0, MANY, |v| bitwise("$bitXor", &v, 0, |a, x| a ^ x)),
    op("$bitNot", 1, 1, |v| bitwise("$bitNot", &v, 0, |_, x| !x)),
];

/// A one-argument function: in decimal128 for a decimal (`decimal`), else in doubles.
fn float_fn(
    op: &str,
    vals: Vec<Value>,
    decimal: impl Fn(Number) -> Option<Bson>,
    f: fn(f64) -> f64,
) -> Result<Value> {
    let [x] = fixed(vals);
    decimal_or(x, decimal, |x| unary_num(op, x, f, None))
}

/// A two-argument function (`$atan2`): in decimal128 when either is a decimal, else in doubles.
fn binary_float(
    op: &str,
    vals: Vec<Value>,
    decimal: fn(Number, Number) -> Option<Bson>,
    f: fn(f64, f64) -> Result<f64>,
) -> Result<Value> {
    let [a, b] = fixed(vals);
    let Some((x, y)) = two_numbers(op, 28756, a, b)? else {
        return null();
    };
    let w = width(x).max(width(y)).max(2);
    if w == 3
        && let Some(r) = decimal(x, y)
    {
        return Ok(Some(r));
    }
    Ok(Some(from_f64_width(f(x.to_f64(), y.to_f64())?, w)))
}

/// Whether a number is above zero; a decimal compares as a decimal (a tiny positive decimal is
/// positive even where its double is 0).
fn positive(n: Number) -> bool {
    match n {
        Number::Decimal(f, _) => dec::sign(n).map_or(f > 0.0, std::cmp::Ordering::is_gt),
        n => n.to_f64() > 0.0,
    }
}

/// Whether a number is 1 (a decimal compared as a decimal).
fn is_one(n: Number) -> bool {
    match n {
        Number::Decimal(..) => dec::is_one(n),
        n => n.to_f64() == 1.0,
    }
}

/// `$ln` and `$log10`: a positive argument (or NaN), else error `code` showing the argument as
/// a double, as MongoDB does.
fn logarithm(
    op: &str,
    code: i32,
    vals: Vec<Value>,
    decimal: fn(Number) -> Option<Bson>,
    f: fn(f64) -> f64,
) -> Result<Value> {
    let [x] = fixed(vals);
    if let Some(n) = x.as_ref().and_then(Number::of)
        && !positive(n)
        && !n.is_nan()
    {
        let shown = crate::doc::fmt::cpp_double(n.to_f64());
        return Err(loc(
            code,
            format!("{op}'s argument must be a positive number, but is {shown}"),
        ));
    }
    decimal_or(x, decimal, |x| unary_num(op, x, f, None))
}

/// `$log`: the logarithm of a positive number in a positive base other than 1.
fn log(vals: Vec<Value>) -> Result<Value> {
    let [a, b] = fixed(vals);
    if is_nullish(&a) || is_nullish(&b) {
        return null();
    }
    let (Some(a), Some(b)) = (a, b) else { return null() };
    let Some(x) = Number::of(&a) else {
        return Err(loc(28756, format!("$log's argument must be numeric, not {}", type_name(&a))));
    };
    let Some(base) = Number::of(&b) else {
        return Err(loc(28757, format!("$log's base must be numeric, not {}", type_name(&b))));
    };
    let shown = |n: Number| crate::doc::fmt::cpp_double(n.to_f64());
    if !positive(x) && !x.is_nan() {
        let message = format!("$log's argument must be a positive number, but is {}", shown(x));
        return Err(loc(28758, message));
    }
    if (!positive(base) || is_one(base)) && !base.is_nan() {
        let message =
            format!("$log's base must be a positive number not equal to 1, but is {}", shown(base));
        return Err(loc(28759, message));
    }
    let w = width(x).max(width(base)).max(2);
    if w == 3
        && let Some(r) = dec::log(x, base)
    {
        return Ok(Some(r));
    }
    Ok(Some(from_f64_width(x.to_f64().ln() / base.to_f64().ln(), w)))
}

/// An integral value as i64 (ints, longs, and doubles/decimals without a fraction).
pub fn as_int(v: &Bson) -> Option<i64> {
    match Number::of(v)? {
        Number::Int(i) => Some(i64::from(i)),
        Number::Long(i) => Some(i),
        Number::Double(d) | Number::Decimal(d, _) => {
            if d.fract() == 0.0 && d.abs() < 9.2e18 {
                Some(d as i64)
            } else {
                None
            }
        }
    }
}

pub(crate) fn decimal(f: f64) -> Bson {
    let s = if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() }
    } else {
        format!("{f}")
    };
    match s.parse::<Decimal128>() {
        Ok(d) => Bson::Decimal128(d),
        Err(_) => Bson::Double(f),
    }
}

/// `total / n` for `$avg`: in decimal128 when the total is a decimal, else a double.
pub fn average(total: &Bson, n: usize) -> Bson {
    let count = Number::Long(i64::try_from(n).unwrap_or(i64::MAX));
    if let Some(t @ Number::Decimal(..)) = Number::of(total)
        && let Some(avg) = dec::divide(t, count)
    {
        return avg;
    }
    let avg = Number::of(total).map_or(0.0, Number::to_f64) / n as f64;
    if matches!(total, Bson::Decimal128(_)) { decimal(avg) } else { Bson::Double(avg) }
}

/// The widest numeric kind of two numbers: 0 int, 1 long, 2 double, 3 decimal.
fn width(n: Number) -> u8 {
    match n {
        Number::Int(_) => 0,
        Number::Long(_) => 1,
        Number::Double(_) => 2,
        Number::Decimal(..) => 3,
    }
}

fn from_f64_width(f: f64, w: u8) -> Bson {
    if w == 3 { decimal(f) } else { Bson::Double(f) }
}

/// Integer result narrowed to int32 when both inputs were int32 and it fits.
pub(crate) fn int_result(x: i64, w: u8) -> Bson {
    if w == 0
        && let Ok(i) = i32::try_from(x)
    {
        return Bson::Int32(i);
    }
    Bson::Int64(x)
}

fn num_add(a: Number, b: Number) -> Bson {
    let w = width(a).max(width(b));
    if w == 3
        && let Some(r) = dec::add(a, b)
    {
        return r;
    }
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return match x.checked_add(y) {
            Some(s) => int_result(s, w),
            None => Bson::Double(x as f64 + y as f64),
        };
    }
    from_f64_width(a.to_f64() + b.to_f64(), w)
}

fn num_mul(a: Number, b: Number) -> Bson {
    let w = width(a).max(width(b));
    if w == 3
        && let Some(r) = dec::multiply(a, b)
    {
        return r;
    }
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return match x.checked_mul(y) {
            Some(s) => int_result(s, w),
            None => Bson::Double(x as f64 * y as f64),
        };
    }
    from_f64_width(a.to_f64() * b.to_f64(), w)
}

fn num_sub(a: Number, b: Number) -> Bson {
    let w = width(a).max(width(b));
    if w == 3
        && let Some(r) = dec::subtract(a, b)
    {
        return r;
    }
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return match x.checked_sub(y) {
            Some(s) => int_result(s, w),
            None => Bson::Double(x as f64 - y as f64),
        };
    }
    from_f64_width(a.to_f64() - b.to_f64(), w)
}

/// Adds two numbers (for `$sum` and `$add`).
pub fn add_numbers(a: &Bson, b: &Bson) -> Bson {
    match (Number::of(a), Number::of(b)) {
        (Some(x), Some(y)) => num_add(x, y),
        (Some(_), None) => a.clone(),
        (None, _) => b.clone(),
    }
}

pub(crate) fn add(vals: Vec<Value>) -> Result<Value> {
    let mut total = Bson::Int32(0);
    let mut date: Option<i64> = None;
    for v in &vals {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
            Some(Bson::DateTime(d)) => {
                if date.is_some() {
                    return Err(loc(16612, "only one date allowed in an $add expression"));
                }
                date = Some(d.timestamp_millis());
            }
            Some(x) if Number::of(x).is_some() => total = add_numbers(&total, x),
            Some(x) => {
                return Err(loc(
                    16554,
                    format!("$add only supports numeric or date types, not {}", type_name(x)),
                ));
            }
        }
    }
    match date {
        Some(ms) => {
            let delta = Number::of(&total).map_or(0.0, Number::to_f64).round() as i64;
            Ok(Some(Bson::DateTime(bson::DateTime::from_millis(ms.wrapping_add(delta)))))
        }
        None => Ok(Some(total)),
    }
}

pub(crate) fn subtract(a: Value, b: Value) -> Result<Value> {
    if is_nullish(&a) || is_nullish(&b) {
        return null();
    }
    let (Some(a), Some(b)) = (a, b) else { return null() };
    match (&a, &b) {
        (Bson::DateTime(x), Bson::DateTime(y)) => {
            Ok(Some(Bson::Int64(x.timestamp_millis().wrapping_sub(y.timestamp_millis()))))
        }
        (Bson::DateTime(x), n) if Number::of(n).is_some() => {
            let delta = Number::of(n).map_or(0.0, Number::to_f64).round() as i64;
            Ok(Some(Bson::DateTime(bson::DateTime::from_millis(
                x.timestamp_millis().wrapping_sub(delta),
            ))))
        }
        (x, y) => match (Number::of(x), Number::of(y)) {
            (Some(p), Some(q)) => Ok(Some(num_sub(p, q))),
            _ => Err(loc(16556, format!("can't $subtract {} from {}", type_name(y), type_name(x)))),
        },
    }
}

pub(crate) fn multiply(vals: Vec<Value>) -> Result<Value> {
    let mut total = Bson::Int32(1);
    for v in &vals {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
            Some(x) => match (Number::of(&total), Number::of(x)) {
                (Some(p), Some(q)) => total = num_mul(p, q),
                _ => {
                    return Err(loc(
                        16555,
                        format!("$multiply only supports numeric types, not {}", type_name(x)),
                    ));
                }
            },
        }
    }
    Ok(Some(total))
}

fn two_numbers(op: &str, code: i32, a: Value, b: Value) -> Result<Option<(Number, Number)>> {
    if is_nullish(&a) || is_nullish(&b) {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (a, b) else { return Ok(None) };
    match (Number::of(&a), Number::of(&b)) {
        (Some(x), Some(y)) => Ok(Some((x, y))),
        _ => Err(loc(
            code,
            format!(
                "{op} only supports numeric types, not {} and {}",
                type_name(&a),
                type_name(&b)
            ),
        )),
    }
}

pub(crate) fn divide(a: Value, b: Value) -> Result<Value> {
    let Some((x, y)) = two_numbers("$divide", 16609, a, b)? else { return null() };
    if y.to_f64() == 0.0 {
        return Err(loc(16608, "can't $divide by zero"));
    }
    let w = width(x).max(width(y));
    if w == 3
        && let Some(r) = dec::divide(x, y)
    {
        return Ok(Some(r));
    }
    Ok(Some(from_f64_width(x.to_f64() / y.to_f64(), w.max(2))))
}

pub(crate) fn modulo(a: Value, b: Value) -> Result<Value> {
    let Some((x, y)) = two_numbers("$mod", 16611, a, b)? else { return null() };
    let w = width(x).max(width(y));
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        if q == 0 {
            return Err(loc(16610, "can't $mod by zero"));
        }
        return Ok(Some(int_result(p.wrapping_rem(q), w)));
    }
    if y.to_f64() == 0.0 {
        return Err(loc(16610, "can't $mod by zero"));
    }
    if w == 3
        && let Some(r) = dec::remainder(x, y)
    {
        return Ok(Some(r));
    }
    Ok(Some(from_f64_width(x.to_f64() % y.to_f64(), w)))
}

/// A one-argument numeric function; `int_op` handles integers exactly when given.
fn unary_num(
    op: &str,
    v: Value,
    f: impl Fn(f64) -> f64,
    int_op: Option<fn(i64) -> Option<i64>>,
) -> Result<Value> {
    if is_nullish(&v) {
        return null();
    }
    let Some(v) = v else { return null() };
    let Some(n) = Number::of(&v) else {
        return Err(loc(28765, format!("{op} only supports numeric types, not {}", type_name(&v))));
    };
    match (n, int_op) {
        (Number::Int(i), Some(g)) => Ok(Some(match g(i64::from(i)) {
            Some(r) => int_result(r, 0),
            None => Bson::Double(f(f64::from(i))),
        })),
        (Number::Long(i), Some(g)) => Ok(Some(match g(i) {
            Some(r) => Bson::Int64(r),
            None => Bson::Double(f(i as f64)),
        })),
        (n, _) => {
            let w = width(n).max(2);
            Ok(Some(from_f64_width(f(n.to_f64()), w)))
        }
    }
}

fn round_like(op: &str, vals: Vec<Value>, trunc: bool) -> Result<Value> {
    let mut it = vals.into_iter();
    let v = it.next().flatten();
    let place = match it.next() {
        None => 0,
        Some(p) if is_nullish(&p) => return null(),
        Some(Some(p)) => match as_int(&p) {
            Some(n) if (-20..100).contains(&n) => n as i32,
            _ => {
                return Err(loc(
                    5155301,
                    format!(
                        "{op} requires \"place\" argument to be an integer between -20 and 100"
                    ),
                ));
            }
        },
        Some(None) => return null(),
    };
    if let Some(Bson::Decimal128(_)) = &v
        && let Some(n) = v.as_ref().and_then(Number::of)
    {
        let mode = if trunc { dec::Rounding::TowardZero } else { dec::Rounding::HalfEven };
        if let Some(r) = dec::quantize(n, -i64::from(place), mode, false) {
            return Ok(Some(r));
        }
    }
    let scale = 10f64.powi(place);
    let f = move |x: f64| {
        let y = x * scale;
        let r = if trunc { y.trunc() } else { round_half_even(y) };
        r / scale
    };
    if place >= 0 {
        return unary_num(op, v, f, Some(Some));
    }
    unary_num(op, v, f, None).map(|r| match (r, place) {
        // Rounding an integer to a negative place stays an integer.
        (Some(Bson::Double(d)), _) => Some(Bson::Double(d)),
        (other, _) => other,
    })
}

/// A decimal operand computed by `decimal` (when it gives a value: not for NaN and
/// infinities), anything else by `other`.
fn decimal_or(
    v: Value,
    decimal: impl Fn(Number) -> Option<Bson>,
    other: impl Fn(Value) -> Result<Value>,
) -> Result<Value> {
    if let Some(Bson::Decimal128(_)) = &v
        && let Some(r) = v.as_ref().and_then(Number::of).and_then(&decimal)
    {
        return Ok(Some(r));
    }
    other(v)
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - x.signum() } else { r }
}

fn pow(a: Value, b: Value) -> Result<Value> {
    if is_nullish(&a) || is_nullish(&b) {
        return null();
    }
    let (Some(a), Some(b)) = (a, b) else { return null() };
    let Some(x) = Number::of(&a) else {
        return Err(loc(28762, format!("$pow's base must be numeric, not {}", type_name(&a))));
    };
    let Some(y) = Number::of(&b) else {
        return Err(loc(28763, format!("$pow's exponent must be numeric, not {}", type_name(&b))));
    };
    if x.to_f64() == 0.0 && y.to_f64() < 0.0 {
        return Err(loc(28764, "$pow cannot take a base of 0 and a negative exponent"));
    }
    let w = width(x).max(width(y));
    if w == 3
        && let Some(r) = dec::pow(x, y)
    {
        return Ok(Some(r));
    }
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64())
        && q >= 0
        && let Ok(q32) = u32::try_from(q)
        && let Some(r) = p.checked_pow(q32)
    {
        return Ok(Some(int_result(r, w)));
    }
    Ok(Some(from_f64_width(x.to_f64().powf(y.to_f64()), w.max(2))))
}

/// `$bitAnd`, `$bitOr`, `$bitXor` and `$bitNot` over ints and longs: `f` folds the arguments
/// starting from `identity` (the result without arguments); a long operand makes a long.
fn bitwise(op: &str, vals: &[Value], identity: i64, f: fn(i64, i64) -> i64) -> Result<Value> {
    let mut acc = identity;
    let mut long = false;
    for v in vals {
        let x = match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
            Some(Bson::Int32(i)) => i64::from(*i),
            Some(Bson::Int64(i)) => {
                long = true;
                *i
            }
            Some(other) => {
                return Err(Error::new(
                    Code::TypeMismatch,
                    format!("{op} only supports int and long, not: {}.", type_name(other)),
                ));
            }
        };
        acc = f(acc, x);
    }
    Ok(Some(if long { Bson::Int64(acc) } else { Bson::Int32(acc as i32) }))
}
