//! Type operators: `$type`, `$isNumber`, sizes, `$rand`, and conversions (`$convert` and the
//! `$toX` shorthands).
//!
//! A conversion that cannot be made fails with ConversionFailure (241), which `$convert`'s
//! `onError` catches; a null or missing input gives `onNull` (null by default). The target
//! type is resolved once per evaluation into a [`Target`], and the `$toX` shorthands name
//! theirs at parse time.

use bson::{Bson, Decimal128};

use super::arith::decimal;
use super::string::{double_string, number_string};
use super::{
    Args, NamedOperator, Operator, as_int, b, fixed, get, given, is_nullish, named, null, op,
};
use crate::doc::compare::Number;
use crate::error::{Code, Error, Result};
use crate::expr::{Value, date, decimal as dec, loc, type_name, value_type};

/// The type operators with positional arguments, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$type", 1, 1, |v| {
        let [x] = fixed(v);
        Ok(Some(Bson::String(value_type(&x).to_string())))
    }),
    op("$isNumber", 1, 1, |v| {
        let [x] = fixed(v);
        b(x.as_ref().is_some_and(|v| Number::of(v).is_some()))
    }),
    op("$bsonSize", 1, 1, |v| {
        let [x] = fixed(v);
        match &x {
            None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
            Some(Bson::Document(d)) => {
                let n = crate::doc::validate::bson_size(d)?;
                Ok(Some(Bson::Int32(n as i32)))
            }
            Some(other) => Err(loc(
                31393,
                format!("$bsonSize requires a document input, found: {}", type_name(other)),
            )),
        }
    }),
    op("$binarySize", 1, 1, |v| {
        let [x] = fixed(v);
        match &x {
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
        }
    }),
    op("$rand", 0, 0, |_| Ok(Some(Bson::Double(rand::random::<f64>())))),
    op("$toString", 1, 1, |v| to(v, Target::String)),
    op("$toInt", 1, 1, |v| to(v, Target::Int)),
    op("$toLong", 1, 1, |v| to(v, Target::Long)),
    op("$toDouble", 1, 1, |v| to(v, Target::Double)),
    op("$toDecimal", 1, 1, |v| to(v, Target::Decimal)),
    op("$toBool", 1, 1, |v| to(v, Target::Bool)),
    op("$toDate", 1, 1, |v| to(v, Target::Date)),
    op("$toObjectId", 1, 1, |v| to(v, Target::ObjectId)),
];

/// `$convert`, with its argument names and the location codes of a malformed argument object.
pub(super) const NAMED: &[NamedOperator] = &[named(
    "$convert",
    &["input", "to"],
    &["onError", "onNull", "format", "base"],
    [34391, 34392, 34393],
    convert_op,
)];

/// A `$toX` shorthand: `$convert` without fallbacks.
fn to(vals: Vec<Value>, target: Target) -> Result<Value> {
    let [x] = fixed(vals);
    convert(x, target, None, None)
}

/// The types a value converts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `"double"` (1).
    Double,
    /// `"string"` (2).
    String,
    /// `"objectId"` (7).
    ObjectId,
    /// `"bool"` (8).
    Bool,
    /// `"date"` (9).
    Date,
    /// `"int"` (16).
    Int,
    /// `"long"` (18).
    Long,
    /// `"decimal"` (19).
    Decimal,
}

impl Target {
    /// The target a type name names.
    fn named(name: &str) -> Result<Target> {
        Ok(match name {
            "double" => Target::Double,
            "string" => Target::String,
            "objectId" => Target::ObjectId,
            "bool" => Target::Bool,
            "date" => Target::Date,
            "int" => Target::Int,
            "long" => Target::Long,
            "decimal" => Target::Decimal,
            other => return Err(loc(BAD_TYPE, format!("Unknown type name: {other}"))),
        })
    }

    /// The type's name in error messages.
    fn name(self) -> &'static str {
        match self {
            Target::Double => "double",
            Target::String => "string",
            Target::ObjectId => "objectId",
            Target::Bool => "bool",
            Target::Date => "date",
            Target::Int => "int",
            Target::Long => "long",
            Target::Decimal => "decimal",
        }
    }
}

/// The location code of a `to` that names no type.
const BAD_TYPE: i32 = 50946;

fn convert_op(args: &Args) -> Result<Value> {
    let input = get(args, "input");
    let to = match get(args, "to") {
        Some(Bson::String(s)) => s,
        Some(n) if as_int(&n).is_some() => type_alias(as_int(&n).unwrap_or(0)).to_string(),
        Some(Bson::Null) | None => return null(),
        Some(other) => {
            return Err(loc(
                BAD_TYPE,
                format!(
                    "$convert's 'to' argument must be a string or number, but is {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let on_null = given(args, "onNull").cloned();
    // A null input gives `onNull` before the type name is looked at.
    if is_nullish(&input) {
        return Ok(on_null.unwrap_or(Some(Bson::Null)));
    }
    convert(input, Target::named(&to)?, given(args, "onError").cloned(), on_null)
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

fn conversion_failure(msg: String) -> Error {
    Error::new(Code::from_number(241), msg)
}

/// `$convert` and the `$toX` shorthands. `on_error`/`on_null` are the (evaluated) fallbacks;
/// `Some(None)` means the fallback was given but evaluated to missing.
pub fn convert(
    input: Value,
    to: Target,
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

fn unsupported(v: &Bson, to: Target) -> Error {
    conversion_failure(format!(
        "Unsupported conversion from {} to {} in $convert with no onError value",
        type_name(v),
        to.name()
    ))
}

fn convert_value(v: &Bson, to: Target) -> Result<Bson> {
    let num = Number::of(v);
    match to {
        Target::Double => match (v, num) {
            (_, Some(n)) => Ok(Bson::Double(n.to_f64())),
            (Bson::Boolean(x), _) => Ok(Bson::Double(if *x { 1.0 } else { 0.0 })),
            (Bson::DateTime(d), _) => Ok(Bson::Double(d.timestamp_millis() as f64)),
            (Bson::String(s), _) => parse_number(s)
                .map(|n| Bson::Double(n.to_f64()))
                .ok_or_else(|| bad_number(s)),
            _ => Err(unsupported(v, to)),
        },
        Target::Int | Target::Long => {
            let long = to == Target::Long;
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
        Target::Decimal => match (v, num) {
            (Bson::Decimal128(d), _) => Ok(Bson::Decimal128(*d)),
            (_, Some(n)) => Ok(dec::from_number(n).unwrap_or_else(|| decimal(n.to_f64()))),
            (Bson::Boolean(x), _) => Ok(decimal(if *x { 1.0 } else { 0.0 })),
            (Bson::DateTime(d), _) => Ok(dec::from_number(Number::Long(d.timestamp_millis()))
                .unwrap_or(Bson::Null)),
            (Bson::String(s), _) => s
                .parse::<Decimal128>()
                .map(Bson::Decimal128)
                .map_err(|_| bad_number(s)),
            _ => Err(unsupported(v, to)),
        },
        Target::Bool => match (v, num) {
            (_, Some(n)) => Ok(Bson::Boolean(n.to_f64() != 0.0)),
            (Bson::Boolean(x), _) => Ok(Bson::Boolean(*x)),
            _ => Ok(Bson::Boolean(true)),
        },
        Target::String => match v {
            Bson::String(s) => Ok(Bson::String(s.clone())),
            Bson::Boolean(x) => Ok(Bson::String(x.to_string())),
            Bson::ObjectId(o) => Ok(Bson::String(o.to_hex())),
            Bson::DateTime(d) => Ok(Bson::String(date::format_utc(d.timestamp_millis(), "%Y-%m-%dT%H:%M:%S.%LZ"))),
            x if num.is_some() => Ok(Bson::String(number_string(x))),
            _ => Err(unsupported(v, to)),
        },
        Target::Date => match (v, num) {
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
        Target::ObjectId => match v {
            Bson::ObjectId(o) => Ok(Bson::ObjectId(*o)),
            Bson::String(s) => bson::oid::ObjectId::parse_str(s).map(Bson::ObjectId).map_err(|_| {
                conversion_failure(format!(
                    "Failed to parse objectId '{s}' in $convert with no onError value: Invalid string length for parsing to OID, expected 24 but found {}",
                    s.len()
                ))
            }),
            _ => Err(unsupported(v, to)),
        },
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
