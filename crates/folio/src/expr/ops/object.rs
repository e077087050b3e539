//! Object operators: merging, conversion to and from key-value arrays, and reading, setting
//! and removing a field by name (any name, dots and dollars included).

use bson::{Bson, Document};

use super::{Args, MANY, NamedOperator, Operator, array_arg, fixed, get, named, null, op};
use crate::doc::fmt::value_string;
use crate::error::Result;
use crate::expr::{Value, loc, type_name, value_type};

/// The object operators with positional arguments, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$mergeObjects", 0, MANY, |v| merge_objects(&v)),
    op("$objectToArray", 1, 1, |v| {
        let [x] = fixed(v);
        object_to_array(&x)
    }),
    op("$arrayToObject", 1, 1, |v| {
        let [x] = fixed(v);
        array_to_object(&x)
    }),
];

/// The field operators, with their argument names and the location codes of a malformed
/// argument object.
pub(super) const NAMED: &[NamedOperator] = &[
    named("$getField", &["field"], &["input"], [3041703, 3041701, 3041702], get_field),
    named("$setField", &["field", "input", "value"], &[], SET_CODES, |a| {
        set_field("$setField", a, true)
    }),
    named("$unsetField", &["field", "input"], &[], SET_CODES, |a| {
        set_field("$unsetField", a, false)
    }),
];

const SET_CODES: [i32; 3] = [4161100, 4161101, 4161102];

/// The `field` argument, which must evaluate to a string (`code` and `op` for the error).
fn field_name(args: &Args, op: &str, code: i32) -> Result<String> {
    match get(args, "field") {
        Some(Bson::String(f)) => Ok(f),
        other => Err(loc(
            code,
            format!(
                "{op} requires 'field' to evaluate to type String, but got {}",
                value_type(&other)
            ),
        )),
    }
}

fn get_field(args: &Args) -> Result<Value> {
    let field = field_name(args, "$getField", 3041704)?;
    match get(args, "input") {
        Some(Bson::Document(d)) => Ok(d.get(&field).cloned()),
        None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
        Some(_) => Ok(None),
    }
}

/// `$setField` (`set`: a missing value removes the field) or `$unsetField`.
fn set_field(op: &str, args: &Args, set: bool) -> Result<Value> {
    // `$unsetField` reports this error as `$setField`, as MongoDB does.
    let field = field_name(args, "$setField", 4161106)?;
    match get(args, "input") {
        Some(Bson::Document(mut d)) => {
            match get(args, "value").filter(|_| set) {
                Some(v) => {
                    d.insert(field, v);
                }
                None => {
                    d.remove(&field);
                }
            }
            Ok(Some(Bson::Document(d)))
        }
        None | Some(Bson::Null) | Some(Bson::Undefined) => null(),
        Some(other) => Err(loc(
            4161105,
            format!(
                "{op} requires 'input' to evaluate to type Object, but got {}",
                type_name(&other)
            ),
        )),
    }
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
                        value_string(&Bson::Int32(i as i32)),
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
