//! `$fill`: sets null and missing fields from a constant, the last value seen, or a linear
//! interpolation.
//!
//! ```text
//! {$fill: {partitionBy: <expr> | partitionByFields: [..], sortBy: {..},
//!          output: {a: {value: <expr>}, b: {method: "locf"}, c: {method: "linear"}}}}
//! ```
//!
//! Like MongoDB, Folio rewrites the stage into the stages it stands for: the `method` outputs
//! become one `$setWindowFields` (`$locf` and `$linearFill` over the partition, in `sortBy`
//! order), and the `value` outputs one `$addFields` of `{$ifNull: ["$field", <value>]}`
//! after it. So a `$fill` with only `value` outputs neither sorts nor partitions, and errors in
//! the generated stages read as MongoDB's do.

use bson::{Bson, Document, doc};

use super::stage::Stage;
use crate::error::{Error, Result};
use crate::expr::{Scope, loc, type_name};
use crate::{bail, err};

fn unknown_field(name: &str) -> Error {
    Error::unknown_field(&format!("$fill.{name}"))
}

/// Parses `$fill` into the stages it stands for.
pub fn parse(arg: &Bson, scope: &Scope, let_vars: &Document) -> Result<Vec<Stage>> {
    let Bson::Document(spec) = arg else {
        bail!(
            FailedToParse,
            "The $fill stage specification must be an object, found {}",
            type_name(arg)
        );
    };
    let (mut output, mut sort_by, mut partition_by, mut partition_fields) =
        (None, None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            "output" => match v {
                Bson::Document(o) => output = Some(o),
                other => return Err(wrong_type("$fill.output", other, "object")),
            },
            "sortBy" => match v {
                Bson::Document(s) => sort_by = Some(s),
                other => return Err(wrong_type("$fill.sortBy", other, "object")),
            },
            "partitionBy" => match v {
                Bson::String(_) | Bson::Document(_) => partition_by = Some(v),
                other => return Err(wrong_type("$fill.partitionBy", other, "[string, object]")),
            },
            "partitionByFields" => match v {
                Bson::Array(items) => {
                    let mut fields = Vec::new();
                    for i in items {
                        match i {
                            Bson::String(s) => fields.push(s.clone()),
                            other => {
                                return Err(wrong_type(
                                    "$fill.partitionByFields.0",
                                    other,
                                    "string",
                                ));
                            }
                        }
                    }
                    partition_fields = Some(fields);
                }
                other => return Err(wrong_type("$fill.partitionByFields", other, "array")),
            },
            other => return Err(unknown_field(other)),
        }
    }
    let Some(output) = output else {
        return Err(loc(40414, "BSON field '$fill.output' is missing but a required field"));
    };
    if output.is_empty() {
        return Err(loc(
            6050203,
            "The output field in '$fill' must contain an object with at least one element",
        ));
    }
    let mut window_output = Document::new();
    let mut add_fields = Document::new();
    for (field, f) in output {
        let Bson::Document(f) = f else {
            return Err(loc(
                6050200,
                "Each fill output specification must be an object with exactly one field",
            ));
        };
        let (mut method, mut value) = (None, None);
        for (k, v) in f {
            match k.as_str() {
                "method" => match v {
                    Bson::String(m) => method = Some(m.as_str()),
                    other => return Err(wrong_type("$fill.method", other, "string")),
                },
                "value" => value = Some(v),
                other => return Err(unknown_field(other)),
            }
        }
        if let Some(m) = method {
            if value.is_some() {
                return Err(loc(
                    6050201,
                    "Each fill output specification must have exactly one of 'method' or 'value' fields, not both",
                ));
            }
            let op = match m {
                "locf" => "$locf",
                "linear" => "$linearFill",
                _ => return Err(loc(6050202, "Method must be either locf or linear")),
            };
            window_output.insert(field.clone(), doc! { op: format!("${field}") });
        }
        if let Some(v) = value {
            add_fields.insert(field.clone(), doc! { "$ifNull": [format!("${field}"), v.clone()] });
        }
    }
    if partition_by.is_some() && partition_fields.is_some() {
        return Err(loc(
            6050204,
            "Maximum one of 'partitionBy' and 'partitionByFields can be specified in '$fill'",
        ));
    }
    let mut stages = Vec::new();
    if !window_output.is_empty() {
        let mut window = Document::new();
        if let Some(s) = sort_by {
            window.insert("sortBy", s.clone());
        }
        if let Some(p) = partition_by {
            window.insert("partitionBy", p.clone());
        }
        if let Some(fields) = &partition_fields {
            let mut by = Document::new();
            for f in fields {
                by.insert(f.clone(), format!("${f}"));
            }
            window.insert("partitionBy", by);
        }
        window.insert("output", window_output);
        stages.push(Stage::parse(&doc! {"$setWindowFields": window}, scope, let_vars)?);
    }
    if !add_fields.is_empty() {
        stages.push(Stage::parse(&doc! {"$addFields": add_fields}, scope, let_vars)?);
    }
    Ok(stages)
}

fn wrong_type(name: &str, v: &Bson, expected: &str) -> Error {
    err!(
        TypeMismatch,
        "BSON field '{}' is the wrong type '{}', expected type '{}'",
        name,
        type_name(v),
        expected
    )
}
