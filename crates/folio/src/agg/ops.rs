//! The operators of aggregation expressions, on evaluated arguments.
//!
//! [`positional`] implements operators whose arguments are a list, [`named`] those whose
//! arguments are an object. Both receive values that may be missing (`None`). Numeric
//! operators follow MongoDB's type promotion: int32 widens to int64 on overflow, int64 to double
//! on overflow, any double makes the result a double, and any decimal makes it a decimal.
//! Decimal arithmetic is carried out in doubles and converted back, which is exact for the
//! values applications usually store (TODO(#14): full 34-digit decimal arithmetic).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::rc::Rc;

use bson::{Bson, Decimal128, Document};

use super::date;
use super::expr::{Value, cmp_values, loc, truthy, type_name, value_type};
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::doc::fmt::value_string;
use crate::error::{Code, Error, Result};
use crate::memory;
use crate::query::pcre::{Found, MatchLimit, Pcre};

fn null() -> Result<Value> {
    Ok(Some(Bson::Null))
}

fn is_nullish(v: &Value) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

fn b(x: bool) -> Result<Value> {
    Ok(Some(Bson::Boolean(x)))
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

fn decimal(f: f64) -> Bson {
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
        && let Some(avg) = super::decimal::divide(t, count)
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
fn int_result(x: i64, w: u8) -> Bson {
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
        && let Some(r) = super::decimal::add(a, b)
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
        && let Some(r) = super::decimal::multiply(a, b)
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
        && let Some(r) = super::decimal::subtract(a, b)
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

fn add(vals: Vec<Value>) -> Result<Value> {
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

fn subtract(a: Value, b: Value) -> Result<Value> {
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

fn multiply(vals: Vec<Value>) -> Result<Value> {
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

fn divide(a: Value, b: Value) -> Result<Value> {
    let Some((x, y)) = two_numbers("$divide", 16609, a, b)? else { return null() };
    if y.to_f64() == 0.0 {
        return Err(loc(16608, "can't $divide by zero"));
    }
    let w = width(x).max(width(y));
    if w == 3
        && let Some(r) = super::decimal::divide(x, y)
    {
        return Ok(Some(r));
    }
    Ok(Some(from_f64_width(x.to_f64() / y.to_f64(), w.max(2))))
}

fn modulo(a: Value, b: Value) -> Result<Value> {
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
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64())
        && q >= 0
        && let Ok(q32) = u32::try_from(q)
        && let Some(r) = p.checked_pow(q32)
    {
        return Ok(Some(int_result(r, w)));
    }
    Ok(Some(from_f64_width(x.to_f64().powf(y.to_f64()), w.max(2))))
}

/// `$bitAnd`, `$bitOr`, `$bitXor`, `$bitNot` over ints and longs.
fn bitwise(op: &str, vals: &[Value]) -> Result<Value> {
    let mut acc: Option<i64> = None;
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
        acc = Some(match (op, acc) {
            ("$bitNot", _) => !x,
            (_, None) => x,
            ("$bitAnd", Some(a)) => a & x,
            ("$bitOr", Some(a)) => a | x,
            (_, Some(a)) => a ^ x,
        });
    }
    let r = acc.unwrap_or(match op {
        "$bitAnd" => -1,
        _ => 0,
    });
    Ok(Some(if long { Bson::Int64(r) } else { Bson::Int32(r as i32) }))
}

fn compare(op: &str, a: &Value, b: &Value) -> Result<Value> {
    let ord = cmp_values(a, b);
    Ok(Some(match op {
        "$eq" => Bson::Boolean(ord == Ordering::Equal),
        "$ne" => Bson::Boolean(ord != Ordering::Equal),
        "$gt" => Bson::Boolean(ord == Ordering::Greater),
        "$gte" => Bson::Boolean(ord != Ordering::Less),
        "$lt" => Bson::Boolean(ord == Ordering::Less),
        "$lte" => Bson::Boolean(ord != Ordering::Greater),
        _ => Bson::Int32(ord as i32),
    }))
}

/// A string argument: `Ok(None)` for null/missing.
fn string_arg(op: &str, code: i32, v: &Value) -> Result<Option<String>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(s)) | Some(Bson::Symbol(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(loc(code, format!("{op} only supports strings, not {}", type_name(other))))
        }
    }
}

/// The string form `$toUpper`/`$toLower`/`$substr` use: numbers and dates convert, null is "".
fn coerce_string(v: &Value) -> Result<String> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(String::new()),
        Some(Bson::String(s)) | Some(Bson::Symbol(s)) => Ok(s.clone()),
        Some(x @ (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_))) => {
            Ok(number_string(x))
        }
        Some(Bson::DateTime(d)) => {
            Ok(date::format_utc(d.timestamp_millis(), "%Y-%m-%dT%H:%M:%S.%LZ"))
        }
        Some(other) => {
            Err(loc(16007, format!("can't convert from BSON type {} to String", type_name(other))))
        }
    }
}

fn number_string(v: &Bson) -> String {
    match v {
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(d) => double_string(*d),
        Bson::Decimal128(d) => d.to_string(),
        other => value_string(other),
    }
}

fn double_string(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() }
    } else if d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

fn substr_cp(vals: &[Value]) -> Result<Value> {
    let s = match &vals[0] {
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            return Ok(Some(Bson::String(String::new())));
        }
        v => coerce_string(v)?,
    };
    let start = match &vals[1] {
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(loc(34455, "$substrCP: starting index must be non-negative")),
            None => {
                return Err(loc(
                    34451,
                    "$substrCP: starting index cannot be represented as a 32-bit integral value",
                ));
            }
        },
        v => {
            return Err(loc(
                34450,
                format!(
                    "$substrCP: starting index must be a numeric type (is BSON type {})",
                    value_type(v)
                ),
            ));
        }
    };
    let len = match &vals[2] {
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(loc(34454, "$substrCP: length must be a nonnegative integer.")),
            None => {
                return Err(loc(
                    34453,
                    "$substrCP: length cannot be represented as a 32-bit integral value",
                ));
            }
        },
        v => {
            return Err(loc(
                34452,
                format!(
                    "$substrCP: length must be a numeric type (is BSON type {})",
                    value_type(v)
                ),
            ));
        }
    };
    Ok(Some(Bson::String(s.chars().skip(start).take(len).collect())))
}

fn split(a: &Value, b: &Value) -> Result<Value> {
    let s = match a {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
        Some(Bson::String(s)) => s,
        Some(o) => {
            return Err(loc(
                40085,
                format!(
                    "$split requires an expression that evaluates to a string as a first argument, found: {}",
                    type_name(o)
                ),
            ));
        }
    };
    let sep = match b {
        Some(Bson::String(s)) => s,
        other => {
            return Err(loc(
                40086,
                format!(
                    "$split requires an expression that evaluates to a string as a second argument, found: {}",
                    value_type(other)
                ),
            ));
        }
    };
    if sep.is_empty() {
        return Err(loc(40087, "$split requires a non-empty separator"));
    }
    // A short separator can turn one string into millions of elements, each a whole `Bson`:
    // count them before building the array.
    let parts = s.matches(sep.as_str()).count() + 1;
    memory::building("$split", parts.saturating_mul(memory::heap_size(&Bson::Null)) + s.len())?;
    Ok(Some(Bson::Array(s.split(sep.as_str()).map(|p| Bson::String(p.to_string())).collect())))
}

/// MongoDB builds strings in a buffer of at most 64 MiB; a longer result fails as it does there.
fn string_limit(op: &str, len: usize) -> Result<()> {
    if len > memory::MAX_BUFFER_BYTES {
        return Err(loc(
            13548,
            format!("BufBuilder attempted to grow() to {len} bytes, past the 64MB limit."),
        ));
    }
    memory::check(op, len)
}

fn array_arg(v: &Value, err: impl Fn(&str) -> Error) -> Result<Option<&Vec<Bson>>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::Array(items)) => Ok(Some(items)),
        Some(other) => Err(err(type_name(other))),
    }
}

fn array_elem_at(a: &Value, i: &Value) -> Result<Value> {
    let Some(items) = array_arg(a, |t| {
        loc(28689, format!("$arrayElemAt's first argument must be an array, but is {t}"))
    })?
    else {
        return null();
    };
    let idx = match i {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) => n,
            None => {
                return Err(loc(
                    28691,
                    format!(
                        "$arrayElemAt's second argument must be representable as a 32-bit integer: {}",
                        value_string(v)
                    ),
                ));
            }
        },
        Some(v) => {
            return Err(loc(
                28690,
                format!(
                    "$arrayElemAt's second argument must be a numeric value, but is {}",
                    type_name(v)
                ),
            ));
        }
    };
    Ok(elem_at(items, idx))
}

fn elem_at(items: &[Bson], idx: i64) -> Value {
    let len = items.len() as i64;
    let i = if idx < 0 { len.saturating_add(idx) } else { idx };
    if i < 0 || i >= len { None } else { Some(items[i as usize].clone()) }
}

fn slice(vals: &[Value]) -> Result<Value> {
    if vals.iter().any(is_nullish) {
        return null();
    }
    let Some(items) = array_arg(&vals[0], |t| {
        loc(28724, format!("First argument to $slice must be an array, but is of type: {t}"))
    })?
    else {
        return null();
    };
    let int_arg = |v: &Value, code: i32, what: &str| -> Result<i64> {
        match v {
            Some(x) if as_int(x).is_some() => Ok(as_int(x).unwrap_or(0)),
            other => Err(loc(
                code,
                format!(
                    "{what} argument to $slice must be numeric, but is of type: {}",
                    value_type(other)
                ),
            )),
        }
    };
    let len = items.len() as i64;
    let (start, n) = if vals.len() == 2 {
        let n = int_arg(&vals[1], 28725, "Second")?;
        if n >= 0 { (0, n) } else { (len.saturating_add(n).max(0), n.saturating_neg()) }
    } else {
        let p = int_arg(&vals[1], 28725, "Second")?;
        let n = int_arg(&vals[2], 28726, "Third")?;
        if n <= 0 {
            return Err(loc(28729, format!("Third argument to $slice must be positive: {n}")));
        }
        let start = if p < 0 { len.saturating_add(p).max(0) } else { p.min(len) };
        (start, n)
    };
    Ok(Some(Bson::Array(
        items.iter().skip(start as usize).take(n.max(0) as usize).cloned().collect(),
    )))
}

fn first_last(op: &str, v: &Value, first: bool) -> Result<Value> {
    let Some(items) =
        array_arg(v, |t| loc(28689, format!("{op}'s argument must be an array, but is {t}")))?
    else {
        return null();
    };
    Ok(if first { items.first().cloned() } else { items.last().cloned() })
}

fn merge_objects(vals: &[Value]) -> Result<Value> {
    let mut out = Document::new();
    for (i, v) in vals.iter().enumerate() {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => {}
            Some(Bson::Document(d)) => {
                for (k, x) in d {
                    out.insert(k.clone(), x.clone());
                }
            }
            Some(other) => {
                return Err(loc(
                    40400,
                    format!(
                        "$mergeObjects requires object inputs, but input {} is of type {}",
                        crate::doc::fmt::value_string(&Bson::Int32(i as i32)),
                        type_name(other)
                    ),
                ));
            }
        }
    }
    Ok(Some(Bson::Document(out)))
}

fn object_to_array(v: &Value) -> Result<Value> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
        Some(Bson::Document(d)) => Ok(Some(Bson::Array(
            d.iter()
                .map(|(k, x)| Bson::Document(bson::doc! {"k": k.clone(), "v": x.clone()}))
                .collect(),
        ))),
        Some(other) => Err(loc(
            40390,
            format!("$objectToArray requires a document input, found: {}", type_name(other)),
        )),
    }
}

fn array_to_object(v: &Value) -> Result<Value> {
    let Some(items) = array_arg(v, |t| {
        loc(40386, format!("$arrayToObject requires an array input, found: {t}"))
    })?
    else {
        return null();
    };
    let mut out = Document::new();
    for item in items {
        let (k, x) = match item {
            Bson::Array(pair) if pair.len() == 2 => match &pair[0] {
                Bson::String(k) => (k.clone(), pair[1].clone()),
                other => {
                    return Err(loc(
                        40395,
                        format!(
                            "$arrayToObject requires an array of key-value pairs, where the key must be of type string. Found key type: {}",
                            type_name(other)
                        ),
                    ));
                }
            },
            Bson::Array(pair) => {
                return Err(loc(
                    40397,
                    format!(
                        "$arrayToObject requires an array of size 2 arrays,found array of size: {}",
                        pair.len()
                    ),
                ));
            }
            Bson::Document(d) if d.len() == 2 => match (d.get("k"), d.get("v")) {
                (Some(Bson::String(k)), Some(x)) => (k.clone(), x.clone()),
                (Some(other), Some(_)) => {
                    return Err(loc(
                        40394,
                        format!(
                            "$arrayToObject requires an object with keys 'k' and 'v', where the value of 'k' must be of type string. Found type: {}",
                            type_name(other)
                        ),
                    ));
                }
                _ => {
                    return Err(loc(
                        40393,
                        format!(
                            "$arrayToObject requires an object with keys 'k' and 'v'. Missing either or both keys from: {}",
                            value_string(item)
                        ),
                    ));
                }
            },
            Bson::Document(d) => {
                return Err(loc(
                    40392,
                    format!(
                        "$arrayToObject requires an object keys of 'k' and 'v'. Found incorrect number of keys:{}",
                        d.len()
                    ),
                ));
            }
            other => {
                return Err(loc(
                    40398,
                    format!(
                        "Unrecognised input type format for $arrayToObject: {}",
                        type_name(other)
                    ),
                ));
            }
        };
        if k.contains('\0') {
            return Err(loc(4940400, "Key field cannot contain an embedded null byte"));
        }
        out.insert(k, x);
    }
    Ok(Some(Bson::Document(out)))
}

fn set_of(op: &str, v: &Value, code: i32) -> Result<Option<Vec<Bson>>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::Array(items)) => {
            let mut out: Vec<Bson> = Vec::new();
            for x in items {
                if !out.iter().any(|y| bson_eq(x, y)) {
                    out.push(x.clone());
                }
            }
            Ok(Some(out))
        }
        Some(other) => Err(loc(
            code,
            format!(
                "All operands of {op} must be arrays. One argument is of type: {}",
                type_name(other)
            ),
        )),
    }
}

fn contains(set: &[Bson], x: &Bson) -> bool {
    set.iter().any(|y| bson_eq(x, y))
}

fn sum_avg(op: &str, vals: Vec<Value>) -> Value {
    // With one array argument, the operator works over the array's elements.
    let items: Vec<Bson> = match vals.as_slice() {
        [Some(Bson::Array(items))] => items.clone(),
        _ => vals.into_iter().flatten().collect(),
    };
    let nums: Vec<&Bson> = items.iter().filter(|v| Number::of(v).is_some()).collect();
    match op {
        "$sum" => Some(nums.iter().fold(Bson::Int32(0), |a, v| add_numbers(&a, v))),
        _ if nums.is_empty() => Some(Bson::Null),
        _ => {
            let total = nums.iter().fold(Bson::Int32(0), |a, v| add_numbers(&a, v));
            Some(average(&total, nums.len()))
        }
    }
}

fn min_max(vals: Vec<Value>, max: bool) -> Value {
    let items: Vec<Bson> = match vals.as_slice() {
        [Some(Bson::Array(items))] => items.clone(),
        _ => vals.into_iter().flatten().collect(),
    };
    let items = items.into_iter().filter(|v| !matches!(v, Bson::Null | Bson::Undefined));
    let r = if max { items.max_by(cmp_bson) } else { items.min_by(cmp_bson) };
    Some(r.unwrap_or(Bson::Null))
}

/// Evaluates an operator with positional arguments.
pub fn positional(name: &str, vals: Vec<Value>) -> Result<Value> {
    let one = || vals.first().cloned().flatten();
    match name {
        "$add" => add(vals),
        "$subtract" => subtract(vals[0].clone(), vals[1].clone()),
        "$multiply" => multiply(vals),
        "$divide" => divide(vals[0].clone(), vals[1].clone()),
        "$mod" => modulo(vals[0].clone(), vals[1].clone()),
        "$abs" => unary_num(name, one(), f64::abs, Some(i64::checked_abs)),
        "$ceil" => unary_num(name, one(), f64::ceil, Some(Some)),
        "$floor" => unary_num(name, one(), f64::floor, Some(Some)),
        "$round" => round_like(name, vals, false),
        "$trunc" => round_like(name, vals, true),
        "$pow" => pow(vals[0].clone(), vals[1].clone()),
        "$sqrt" => {
            if let Some(v) = one()
                && Number::of(&v).is_some_and(|n| n.to_f64() < 0.0)
            {
                return Err(loc(28714, "$sqrt's argument must be greater than or equal to 0"));
            }
            unary_num(name, one(), f64::sqrt, None)
        }
        "$exp" => unary_num(name, one(), f64::exp, None),
        "$sin" => unary_num(name, one(), f64::sin, None),
        "$cos" => unary_num(name, one(), f64::cos, None),
        "$tan" => unary_num(name, one(), f64::tan, None),
        "$asin" => unary_num(name, one(), f64::asin, None),
        "$acos" => unary_num(name, one(), f64::acos, None),
        "$atan" => unary_num(name, one(), f64::atan, None),
        "$degreesToRadians" => unary_num(name, one(), f64::to_radians, None),
        "$radiansToDegrees" => unary_num(name, one(), f64::to_degrees, None),
        "$log" | "$atan2" => {
            let Some((x, y)) = two_numbers(name, 28756, vals[0].clone(), vals[1].clone())? else {
                return null();
            };
            let w = width(x).max(width(y)).max(2);
            let r = if name == "$log" {
                if x.to_f64() <= 0.0 || y.to_f64() <= 0.0 || y.to_f64() == 1.0 {
                    return Err(loc(28758, "$log's base must be a positive number not equal to 1"));
                }
                x.to_f64().ln() / y.to_f64().ln()
            } else {
                x.to_f64().atan2(y.to_f64())
            };
            Ok(Some(from_f64_width(r, w)))
        }
        "$bitAnd" | "$bitOr" | "$bitXor" | "$bitNot" => bitwise(name, &vals),
        "$ln" => unary_num(name, one(), f64::ln, None),
        "$log10" => unary_num(name, one(), f64::log10, None),
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            compare(name, &vals[0], &vals[1])
        }
        "$not" => b(!truthy(&vals[0])),
        "$concat" => {
            let mut parts = Vec::with_capacity(vals.len());
            for v in &vals {
                match string_arg("$concat", 16702, v)? {
                    Some(s) => parts.push(s),
                    None => return null(),
                }
            }
            // The length is known before anything is copied: check it first.
            let len = parts.iter().map(String::len).sum();
            string_limit("$concat", len)?;
            let mut out = String::with_capacity(len);
            for p in &parts {
                out.push_str(p);
            }
            Ok(Some(Bson::String(out)))
        }
        "$substrCP" => substr_cp(&vals),
        "$substr" | "$substrBytes" => {
            let s = coerce_string(&vals[0])?;
            let start = vals[1].as_ref().and_then(as_int).unwrap_or(0).max(0) as usize;
            let len = vals[2].as_ref().and_then(as_int).unwrap_or(-1);
            let bytes = s.as_bytes();
            let start = start.min(bytes.len());
            let end = if len < 0 { bytes.len() } else { (start + len as usize).min(bytes.len()) };
            match std::str::from_utf8(&bytes[start..end]) {
                Ok(sub) => Ok(Some(Bson::String(sub.to_string()))),
                Err(_) => Err(loc(
                    28656,
                    format!("{name}:  Invalid range, starting index is a UTF-8 continuation byte."),
                )),
            }
        }
        "$toUpper" => Ok(Some(Bson::String(coerce_string(&vals[0])?.to_uppercase()))),
        "$toLower" => Ok(Some(Bson::String(coerce_string(&vals[0])?.to_lowercase()))),
        "$split" => split(&vals[0], &vals[1]),
        "$strLenCP" | "$strLenBytes" => match &vals[0] {
            Some(Bson::String(s)) => Ok(Some(Bson::Int32(if name == "$strLenCP" {
                s.chars().count() as i32
            } else {
                s.len() as i32
            }))),
            other => Err(loc(
                if name == "$strLenCP" { 34471 } else { 34473 },
                format!("{name} requires a string argument, found: {}", value_type(other)),
            )),
        },
        "$strcasecmp" => {
            let a = coerce_string(&vals[0])?.to_lowercase();
            let b2 = coerce_string(&vals[1])?.to_lowercase();
            Ok(Some(Bson::Int32(a.cmp(&b2) as i32)))
        }
        "$indexOfCP" => {
            let Some(s) = string_arg(name, 40093, &vals[0])? else { return null() };
            let Some(sub) = string_arg(name, 40094, &vals[1])? else {
                return Err(loc(
                    40094,
                    format!("{name} requires a string as the second argument, found: null"),
                ));
            };
            let chars: Vec<char> = s.chars().collect();
            let subc: Vec<char> = sub.chars().collect();
            let start = vals.get(2).cloned().flatten().as_ref().and_then(as_int).unwrap_or(0).max(0)
                as usize;
            let end = vals
                .get(3)
                .cloned()
                .flatten()
                .as_ref()
                .and_then(as_int)
                .map_or(chars.len(), |e| (e.max(0) as usize).min(chars.len()));
            let mut i = start;
            while i + subc.len() <= end {
                if chars[i..i + subc.len()] == subc[..] {
                    return Ok(Some(Bson::Int32(i as i32)));
                }
                i += 1;
            }
            Ok(Some(Bson::Int32(-1)))
        }
        "$size" => match &vals[0] {
            Some(Bson::Array(items)) => Ok(Some(Bson::Int32(items.len() as i32))),
            other => Err(loc(
                17124,
                format!(
                    "The argument to $size must be an array. Type of argument: {}",
                    value_type(other)
                ),
            )),
        },
        "$arrayElemAt" => array_elem_at(&vals[0], &vals[1]),
        "$in" => match &vals[1] {
            Some(Bson::Array(items)) => {
                let x = vals[0].clone().unwrap_or(Bson::Null);
                b(vals[0].is_some() && items.iter().any(|y| bson_eq(&x, y)))
            }
            other => Err(loc(
                40081,
                format!("$in requires an array as a second argument, found: {}", value_type(other)),
            )),
        },
        "$concatArrays" => {
            // Measure the inputs before copying them, so that a result too large for the
            // operation is refused before it exists.
            let (mut len, mut bytes) = (0usize, 0usize);
            for v in &vals {
                match array_arg(v, |t| {
                    loc(28664, format!("$concatArrays only supports arrays, not {t}"))
                })? {
                    Some(items) => {
                        len += items.len();
                        bytes = bytes.saturating_add(items.iter().map(memory::heap_size).sum());
                        memory::building("$concatArrays", bytes)?;
                    }
                    None => return null(),
                }
            }
            let mut out = Vec::with_capacity(len);
            for v in vals {
                if let Some(Bson::Array(items)) = v {
                    out.extend(items);
                }
            }
            Ok(Some(Bson::Array(out)))
        }
        "$slice" => slice(&vals),
        "$first" => first_last(name, &vals[0], true),
        "$last" => first_last(name, &vals[0], false),
        "$isArray" => b(matches!(vals[0], Some(Bson::Array(_)))),
        "$reverseArray" => match array_arg(&vals[0], |t| {
            loc(
                34435,
                format!("The argument to $reverseArray must be an array, but was of type: {t}"),
            )
        })? {
            Some(items) => Ok(Some(Bson::Array(items.iter().rev().cloned().collect()))),
            None => null(),
        },
        "$indexOfArray" => {
            let Some(items) = array_arg(&vals[0], |t| {
                loc(
                    40090,
                    format!("$indexOfArray requires an array as a first argument, found: {t}"),
                )
            })?
            else {
                return null();
            };
            let x = vals[1].clone().unwrap_or(Bson::Null);
            let start = vals.get(2).cloned().flatten().as_ref().and_then(as_int).unwrap_or(0).max(0)
                as usize;
            let end = vals
                .get(3)
                .cloned()
                .flatten()
                .as_ref()
                .and_then(as_int)
                .map_or(items.len(), |e| (e.max(0) as usize).min(items.len()));
            let pos = (start..end).find(|i| bson_eq(&items[*i], &x));
            Ok(Some(Bson::Int32(pos.map_or(-1, |p| p as i32))))
        }
        "$range" => {
            let get = |i: usize, what: &str, code: i32| -> Result<i64> {
                match vals.get(i).cloned().flatten() {
                    Some(v) if as_int(&v).is_some() => Ok(as_int(&v).unwrap_or(0)),
                    v => Err(loc(
                        code,
                        format!(
                            "$range requires a numeric {what} value, found value of type: {}",
                            value_type(&v)
                        ),
                    )),
                }
            };
            let start = get(0, "starting", 34443)?;
            let end = get(1, "ending", 34445)?;
            let step = if vals.len() > 2 { get(2, "step", 34447)? } else { 1 };
            if step == 0 {
                return Err(loc(34449, "$range requires a non-zero step value"));
            }
            // MongoDB's estimate: one 16-byte value per element (its `sizeof(Value)`) and the
            // vector, checked against `internalQueryMaxRangeBytes` before building anything.
            let steps = (i128::from(end) - i128::from(start)) / i128::from(step);
            let len = if steps >= 0 { steps + 1 } else { 0 };
            let needed = 24 + len.saturating_mul(16);
            if needed >= memory::MAX_RANGE_BYTES as i128 {
                return Err(Error::new(
                    Code::ExceededMemoryLimit,
                    format!(
                        "$range would use too much memory ({needed} bytes) and cannot spill to disk. Memory limit: {} bytes",
                        memory::MAX_RANGE_BYTES
                    ),
                ));
            }
            let len = len as usize;
            memory::check("$range", len.saturating_mul(memory::heap_size(&Bson::Int32(0))))?;
            let mut out = Vec::with_capacity(len);
            let mut i = start;
            while (step > 0 && i < end) || (step < 0 && i > end) {
                out.push(int_result(i, 0));
                match i.checked_add(step) {
                    Some(next) => i = next,
                    None => break,
                }
            }
            Ok(Some(Bson::Array(out)))
        }
        "$setUnion" | "$setIntersection" => {
            let mut acc: Option<Vec<Bson>> = None;
            for v in &vals {
                let Some(s) = set_of(name, v, if name == "$setUnion" { 17043 } else { 17047 })?
                else {
                    return null();
                };
                acc = Some(match acc {
                    None => s,
                    Some(mut a) if name == "$setUnion" => {
                        for x in s {
                            if !contains(&a, &x) {
                                a.push(x);
                            }
                        }
                        a
                    }
                    Some(a) => a.into_iter().filter(|x| contains(&s, x)).collect(),
                });
            }
            Ok(Some(Bson::Array(acc.unwrap_or_default())))
        }
        "$setDifference" => {
            let (Some(a), Some(c)) =
                (set_of(name, &vals[0], 17048)?, set_of(name, &vals[1], 17049)?)
            else {
                return null();
            };
            Ok(Some(Bson::Array(a.into_iter().filter(|x| !contains(&c, x)).collect())))
        }
        "$setIsSubset" => {
            let a = set_of(name, &vals[0], 17046)?.unwrap_or_default();
            let c = set_of(name, &vals[1], 17042)?.unwrap_or_default();
            b(a.iter().all(|x| contains(&c, x)))
        }
        "$setEquals" => {
            let mut sets = Vec::new();
            for v in &vals {
                sets.push(set_of(name, v, 17044)?.unwrap_or_default());
            }
            let first = &sets[0];
            b(sets.iter().all(|s| s.len() == first.len() && s.iter().all(|x| contains(first, x))))
        }
        "$anyElementTrue" | "$allElementsTrue" => match &vals[0] {
            Some(Bson::Array(items)) => {
                let any = name == "$anyElementTrue";
                let t = |x: &Bson| crate::query::filter::truthy(x);
                b(if any { items.iter().any(t) } else { items.iter().all(t) })
            }
            other => Err(loc(
                17041,
                format!("{name}'s argument must be an array, but is {}", value_type(other)),
            )),
        },
        "$mergeObjects" => merge_objects(&vals),
        "$objectToArray" => object_to_array(&vals[0]),
        "$arrayToObject" => array_to_object(&vals[0]),
        "$type" => Ok(Some(Bson::String(value_type(&vals[0]).to_string()))),
        "$rand" => Ok(Some(Bson::Double(rand::random::<f64>()))),
        "$bsonSize" => match &vals[0] {
            None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
            Some(Bson::Document(d)) => {
                let n = crate::doc::validate::bson_size(d)?;
                Ok(Some(Bson::Int32(n as i32)))
            }
            Some(other) => Err(loc(
                31393,
                format!("$bsonSize requires a document input, found: {}", type_name(other)),
            )),
        },
        "$binarySize" => match &vals[0] {
            None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
            Some(Bson::String(s)) => Ok(Some(Bson::Int32(s.len() as i32))),
            Some(Bson::Binary(bin)) => Ok(Some(Bson::Int32(bin.bytes.len() as i32))),
            Some(other) => Err(loc(
                51276,
                format!(
                    "$binarySize requires a string or BinData argument, found: {}",
                    type_name(other)
                ),
            )),
        },
        "$isNumber" => b(vals[0].as_ref().is_some_and(|v| Number::of(v).is_some())),
        "$toString" => convert(one(), "string", None, None),
        "$toInt" => convert(one(), "int", None, None),
        "$toLong" => convert(one(), "long", None, None),
        "$toDouble" => convert(one(), "double", None, None),
        "$toDecimal" => convert(one(), "decimal", None, None),
        "$toBool" => convert(one(), "bool", None, None),
        "$toDate" => convert(one(), "date", None, None),
        "$toObjectId" => convert(one(), "objectId", None, None),
        "$sum" | "$avg" => Ok(sum_avg(name, vals)),
        "$stdDevPop" | "$stdDevSamp" => {
            let items: Vec<Bson> = match vals.as_slice() {
                [Some(Bson::Array(items))] => items.clone(),
                _ => vals.into_iter().flatten().collect(),
            };
            let xs: Vec<f64> = items.iter().filter_map(Number::of).map(Number::to_f64).collect();
            Ok(Some(super::group::std_dev(&xs, name == "$stdDevSamp")))
        }
        "$min" => Ok(min_max(vals, false)),
        "$max" => Ok(min_max(vals, true)),
        other => Err(Error::new(
            Code::InvalidPipelineOperator,
            format!("Unrecognized expression '{other}'"),
        )),
    }
}

fn arg<'a>(args: &'a [(&str, Value)], name: &str) -> Option<&'a Value> {
    args.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Evaluates an operator with named arguments.
pub fn named(name: &str, args: &[(&str, Value)]) -> Result<Value> {
    let get = |k: &str| arg(args, k).cloned().flatten();
    match name {
        "$convert" => {
            let input = get("input");
            let to = match get("to") {
                Some(Bson::String(s)) => s,
                Some(n) if as_int(&n).is_some() => type_alias(as_int(&n).unwrap_or(0)).to_string(),
                Some(Bson::Null) | None => return null(),
                Some(other) => {
                    return Err(loc(
                        ConvKind::BAD_TYPE,
                        format!(
                            "$convert's 'to' argument must be a string or number, but is {}",
                            type_name(&other)
                        ),
                    ));
                }
            };
            convert(input, &to, arg(args, "onError").cloned(), arg(args, "onNull").cloned())
        }
        "$trim" | "$ltrim" | "$rtrim" => {
            let Some(s) = trim_string(name, &get("input"), "input")? else { return null() };
            let chars: Option<Vec<char>> = match arg(args, "chars") {
                None => None,
                Some(v) => match trim_string(name, v, "chars")? {
                    Some(c) => Some(c.chars().collect()),
                    None => return null(),
                },
            };
            let pred = |c: char| match &chars {
                Some(set) => set.contains(&c),
                None => c.is_whitespace() || c == '\0',
            };
            let out = match name {
                "$trim" => s.trim_matches(pred),
                "$ltrim" => s.trim_start_matches(pred),
                _ => s.trim_end_matches(pred),
            };
            Ok(Some(Bson::String(out.to_string())))
        }
        "$regexMatch" | "$regexFind" | "$regexFindAll" => regex_op(name, args),
        "$replaceOne" | "$replaceAll" => {
            let mut strs = Vec::new();
            for k in ["input", "find", "replacement"] {
                match arg(args, k).cloned().flatten() {
                    None | Some(Bson::Null) => return null(),
                    Some(Bson::String(s)) => strs.push(s),
                    Some(other) => {
                        return Err(loc(
                            51746,
                            format!(
                                "{name} requires that '{k}' be a string, found: {}",
                                value_string(&other)
                            ),
                        ));
                    }
                }
            }
            let out = if name == "$replaceOne" {
                strs[0].replacen(&strs[1], &strs[2], 1)
            } else {
                // Each match may grow the string: know the result's length before building it.
                if strs[2].len() > strs[1].len() && !strs[1].is_empty() {
                    let n = strs[0].matches(strs[1].as_str()).count();
                    string_limit(name, strs[0].len() + n * (strs[2].len() - strs[1].len()))?;
                }
                strs[0].replace(&strs[1], &strs[2])
            };
            Ok(Some(Bson::String(out)))
        }
        "$getField" => {
            let field = match get("field") {
                Some(Bson::String(f)) => f,
                other => {
                    return Err(loc(
                        3041704,
                        format!(
                            "$getField requires 'field' to evaluate to type String, but got {}",
                            value_type(&other)
                        ),
                    ));
                }
            };
            match get("input") {
                Some(Bson::Document(d)) => Ok(d.get(&field).cloned()),
                None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
                Some(_) => Ok(None),
            }
        }
        "$setField" | "$unsetField" => {
            let field = match get("field") {
                Some(Bson::String(f)) => f,
                other => {
                    return Err(loc(
                        4161106,
                        format!(
                            "$setField requires 'field' to evaluate to type String, but got {}",
                            value_type(&other)
                        ),
                    ));
                }
            };
            match get("input") {
                Some(Bson::Document(mut d)) => {
                    match (name, get("value")) {
                        ("$setField", Some(v)) => {
                            d.insert(field, v);
                        }
                        _ => {
                            d.remove(&field);
                        }
                    }
                    Ok(Some(Bson::Document(d)))
                }
                None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
                Some(other) => Err(loc(
                    4161105,
                    format!(
                        "{name} requires 'input' to evaluate to type Object, but got {}",
                        type_name(&other)
                    ),
                )),
            }
        }
        "$sortArray" => {
            let input = get("input");
            let Some(items) = array_arg(&input, |t| {
                loc(
                    2942504,
                    format!(
                        "The input argument to $sortArray must be an array, but was of type: {t}"
                    ),
                )
            })?
            else {
                return null();
            };
            let mut items = items.clone();
            match get("sortBy") {
                Some(Bson::Document(spec)) => {
                    let s = crate::query::SortSpec::parse(&spec)?;
                    items.sort_by(|x, y| match (x, y) {
                        (Bson::Document(a), Bson::Document(c)) => s.compare(a, c),
                        _ => cmp_bson(x, y),
                    });
                }
                Some(n) if as_int(&n) == Some(-1) => items.sort_by(|x, y| cmp_bson(y, x)),
                Some(_) => items.sort_by(cmp_bson),
                None => {}
            }
            Ok(Some(Bson::Array(items)))
        }
        "$zip" => {
            let Some(Bson::Array(inputs)) = get("inputs") else { return null() };
            let mut arrays = Vec::new();
            for i in &inputs {
                match i {
                    Bson::Array(a) => arrays.push(a.clone()),
                    Bson::Null => return null(),
                    other => {
                        return Err(loc(
                            34468,
                            format!(
                                "$zip found a non-array expression in input: {}",
                                value_string(other)
                            ),
                        ));
                    }
                }
            }
            let longest = truthy(&get("useLongestLength"));
            let n = if longest {
                arrays.iter().map(Vec::len).max().unwrap_or(0)
            } else {
                arrays.iter().map(Vec::len).min().unwrap_or(0)
            };
            let defaults = match get("defaults") {
                Some(Bson::Array(d)) => d,
                _ => Vec::new(),
            };
            let out = (0..n)
                .map(|i| {
                    Bson::Array(
                        arrays
                            .iter()
                            .enumerate()
                            .map(|(j, a)| {
                                a.get(i)
                                    .cloned()
                                    .or_else(|| defaults.get(j).cloned())
                                    .unwrap_or(Bson::Null)
                            })
                            .collect(),
                    )
                })
                .collect();
            Ok(Some(Bson::Array(out)))
        }
        _ => date::named(name, args),
    }
}

fn trim_string(op: &str, v: &Value, what: &str) -> Result<Option<String>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(loc(
            50699,
            format!(
                "{op} requires its {what} to be a string, got {} (of type {}) instead.",
                value_string(other),
                type_name(other)
            ),
        )),
    }
}

fn regex_op(name: &str, args: &[(&str, Value)]) -> Result<Value> {
    let input = arg(args, "input").cloned().flatten();
    let (pattern, mut flags) = match arg(args, "regex").cloned().flatten() {
        Some(Bson::String(p)) => (p, String::new()),
        Some(Bson::RegularExpression(r)) => (r.pattern.to_string(), r.options.to_string()),
        None | Some(Bson::Null) => {
            return if name == "$regexMatch" {
                b(false)
            } else if name == "$regexFindAll" {
                Ok(Some(Bson::Array(Vec::new())))
            } else {
                null()
            };
        }
        Some(other) => {
            return Err(loc(51105, format!("{name} needs 'regex' to be of type string or regex")))
                .map(|_: ()| Some(other));
        }
    };
    match arg(args, "options").cloned().flatten() {
        Some(Bson::String(o)) if !o.is_empty() && !flags.is_empty() => {
            return Err(loc(
                51107,
                format!(
                    "{name} found regex option(s) specified in both 'regex' and 'option' fields"
                ),
            ));
        }
        Some(Bson::String(o)) => flags.push_str(&o),
        None | Some(Bson::Null) => {}
        Some(_) => return Err(loc(51106, format!("{name} needs 'options' to be of type string"))),
    }
    if let Some(bad) = flags.chars().find(|c| !matches!(c, 'i' | 'm' | 's' | 'x' | 'u')) {
        return Err(loc(51108, format!("{name} invalid flag in regex options: {bad}")));
    }
    let s = match input {
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            return if name == "$regexMatch" {
                b(false)
            } else if name == "$regexFindAll" {
                Ok(Some(Bson::Array(Vec::new())))
            } else {
                null()
            };
        }
        Some(Bson::String(s)) => s,
        Some(_) => return Err(loc(51104, format!("{name} needs 'input' to be of type string"))),
    };
    let re = compiled_regex(&pattern, &flags)
        .map_err(|e| loc(51111, format!("Invalid Regex in {name}: {e}")))?;
    // MongoDB reports a match's position in code points, not bytes.
    let found = |m: Found| {
        Bson::Document(bson::doc! {
            "match": m.text,
            "idx": s[..m.start].chars().count() as i32,
            "captures": m.groups.into_iter().map(|g| g.map_or(Bson::Null, Bson::String)).collect::<Vec<_>>(),
        })
    };
    let limit = |e: MatchLimit| e.error(name);
    match name {
        "$regexMatch" => b(re.is_match(&s).map_err(limit)?),
        "$regexFind" => Ok(Some(re.find(&s).map_err(limit)?.map_or(Bson::Null, found))),
        _ => {
            Ok(Some(Bson::Array(re.find_all(&s).map_err(limit)?.into_iter().map(found).collect())))
        }
    }
}

/// Compiles a pattern of the regex operators, reusing the last one this thread compiled: the
/// operators are evaluated once per document, almost always with the same constant pattern.
fn compiled_regex(pattern: &str, flags: &str) -> std::result::Result<Rc<Pcre>, String> {
    thread_local! {
        static LAST: RefCell<Option<(String, String, Rc<Pcre>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        if let Some((p, f, re)) = &*last.borrow()
            && p == pattern
            && f == flags
        {
            return Ok(re.clone());
        }
        let re = Rc::new(Pcre::compile(pattern, flags)?);
        *last.borrow_mut() = Some((pattern.to_string(), flags.to_string(), re.clone()));
        Ok(re)
    })
}

/// The type names `$convert` accepts as numbers.
fn type_alias(n: i64) -> &'static str {
    match n {
        1 => "double",
        2 => "string",
        7 => "objectId",
        8 => "bool",
        9 => "date",
        16 => "int",
        18 => "long",
        19 => "decimal",
        _ => "unknown",
    }
}

struct ConvKind;

impl ConvKind {
    const BAD_TYPE: i32 = 50946;
}

fn conversion_failure(msg: String) -> Error {
    Error::new(Code::from_number(241), msg)
}

/// `$convert` and the `$toX` shorthands. `on_error`/`on_null` are the (evaluated) fallbacks;
/// `Some(None)` means the fallback was given but evaluated to missing.
pub fn convert(
    input: Value,
    to: &str,
    on_error: Option<Value>,
    on_null: Option<Value>,
) -> Result<Value> {
    let Some(v) = input.filter(|v| !matches!(v, Bson::Null | Bson::Undefined)) else {
        return Ok(on_null.unwrap_or(Some(Bson::Null)));
    };
    match convert_value(&v, to) {
        Ok(r) => Ok(Some(r)),
        Err(e) => match on_error {
            Some(fallback) if e.code.number() == 241 => Ok(fallback),
            _ => Err(e),
        },
    }
}

fn unsupported(v: &Bson, to: &str) -> Error {
    conversion_failure(format!(
        "Unsupported conversion from {} to {to} in $convert with no onError value",
        type_name(v)
    ))
}

fn convert_value(v: &Bson, to: &str) -> Result<Bson> {
    let num = Number::of(v);
    match to {
        "double" => match (v, num) {
            (_, Some(n)) => Ok(Bson::Double(n.to_f64())),
            (Bson::Boolean(x), _) => Ok(Bson::Double(if *x { 1.0 } else { 0.0 })),
            (Bson::DateTime(d), _) => Ok(Bson::Double(d.timestamp_millis() as f64)),
            (Bson::String(s), _) => parse_number(s)
                .map(|n| Bson::Double(n.to_f64()))
                .ok_or_else(|| bad_number(s)),
            _ => Err(unsupported(v, to)),
        },
        "int" | "long" => {
            let long = to == "long";
            let i = match (v, num) {
                (_, Some(n)) => {
                    let f = n.to_f64();
                    if let Some(i) = n.as_i64() {
                        i
                    } else if f.is_nan() || f.is_infinite() || f.abs() >= 9.223372036854776e18 {
                        return Err(conversion_failure(format!(
                            "Attempt to convert NaN or infinity value to integer type in $convert with no onError value: {}",
                            double_string(f)
                        )));
                    } else {
                        f.trunc() as i64
                    }
                }
                (Bson::Boolean(x), _) => i64::from(*x),
                (Bson::DateTime(d), _) if long => d.timestamp_millis(),
                (Bson::String(s), _) => match s.parse::<i64>() {
                    Ok(i) => i,
                    Err(_) => return Err(bad_number(s)),
                },
                _ => return Err(unsupported(v, to)),
            };
            if long {
                Ok(Bson::Int64(i))
            } else {
                i32::try_from(i).map(Bson::Int32).map_err(|_| {
                    conversion_failure(format!(
                        "Conversion would overflow target type in $convert with no onError value: {i}"
                    ))
                })
            }
        }
        "decimal" => match (v, num) {
            (Bson::Decimal128(d), _) => Ok(Bson::Decimal128(*d)),
            (_, Some(n)) => Ok(super::decimal::from_number(n).unwrap_or_else(|| decimal(n.to_f64()))),
            (Bson::Boolean(x), _) => Ok(decimal(if *x { 1.0 } else { 0.0 })),
            (Bson::DateTime(d), _) => Ok(super::decimal::from_number(Number::Long(d.timestamp_millis()))
                .unwrap_or(Bson::Null)),
            (Bson::String(s), _) => s
                .parse::<Decimal128>()
                .map(Bson::Decimal128)
                .map_err(|_| bad_number(s)),
            _ => Err(unsupported(v, to)),
        },
        "bool" => match (v, num) {
            (_, Some(n)) => Ok(Bson::Boolean(n.to_f64() != 0.0)),
            (Bson::Boolean(x), _) => Ok(Bson::Boolean(*x)),
            _ => Ok(Bson::Boolean(true)),
        },
        "string" => match v {
            Bson::String(s) => Ok(Bson::String(s.clone())),
            Bson::Boolean(x) => Ok(Bson::String(x.to_string())),
            Bson::ObjectId(o) => Ok(Bson::String(o.to_hex())),
            Bson::DateTime(d) => Ok(Bson::String(date::format_utc(d.timestamp_millis(), "%Y-%m-%dT%H:%M:%S.%LZ"))),
            x if num.is_some() => Ok(Bson::String(number_string(x))),
            _ => Err(unsupported(v, to)),
        },
        "date" => match (v, num) {
            (Bson::DateTime(d), _) => Ok(Bson::DateTime(*d)),
            (Bson::Int64(i), _) => Ok(Bson::DateTime(bson::DateTime::from_millis(*i))),
            (Bson::Double(_) | Bson::Decimal128(_), Some(n)) => {
                // Milliseconds go through the double-to-long cast, which refuses what a long
                // cannot hold instead of saturating (1e300 is no date).
                let f = n.to_f64();
                if f.is_nan() {
                    return Err(conversion_failure(
                        "Attempt to convert NaN value to integer type in $convert with no onError value".into(),
                    ));
                }
                if f.is_infinite() {
                    return Err(conversion_failure(
                        "Attempt to convert infinity value to integer type in $convert with no onError value".into(),
                    ));
                }
                if !(i64::MIN as f64..9_223_372_036_854_775_808.0).contains(&f) {
                    let shown = match v {
                        Bson::Decimal128(d) => d.to_string(),
                        _ => crate::doc::fmt::format_g(f, 6),
                    };
                    return Err(conversion_failure(format!(
                        "Conversion would overflow target type in $convert with no onError value: {shown}"
                    )));
                }
                Ok(Bson::DateTime(bson::DateTime::from_millis(f as i64)))
            }
            (Bson::ObjectId(o), _) => Ok(Bson::DateTime(bson::DateTime::from_millis(
                (o.timestamp().timestamp_millis() / 1000) * 1000,
            ))),
            (Bson::Timestamp(t), _) => Ok(Bson::DateTime(bson::DateTime::from_millis(i64::from(t.time) * 1000))),
            (Bson::String(s), _) => match date::parse(s, None) {
                Some(ms) => Ok(Bson::DateTime(bson::DateTime::from_millis(ms))),
                None => Err(conversion_failure(format!(
                    "Error parsing date string '{s}'; 0: passing a time zone identifier as part of the string is not allowed"
                ))),
            },
            _ => Err(unsupported(v, to)),
        },
        "objectId" => match v {
            Bson::ObjectId(o) => Ok(Bson::ObjectId(*o)),
            Bson::String(s) => bson::oid::ObjectId::parse_str(s).map(Bson::ObjectId).map_err(|_| {
                conversion_failure(format!(
                    "Failed to parse objectId '{s}' in $convert with no onError value: Invalid string length for parsing to OID, expected 24 but found {}",
                    s.len()
                ))
            }),
            _ => Err(unsupported(v, to)),
        },
        other => Err(loc(ConvKind::BAD_TYPE, format!("Unknown type name: {other}"))),
    }
}

fn parse_number(s: &str) -> Option<Number> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::Long(i));
    }
    let t = s.trim();
    if t != s || t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok().map(Number::Double)
}

fn bad_number(s: &str) -> Error {
    conversion_failure(format!(
        "Failed to parse number '{s}' in $convert with no onError value: Did not consume whole string."
    ))
}

/// Used by `$group`'s `$min`/`$max`: compares two possibly missing values.
pub fn cmp(a: &Value, b: &Value) -> Ordering {
    cmp_values(a, b)
}
