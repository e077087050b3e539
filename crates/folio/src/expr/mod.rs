//! Aggregation expressions: the language `$project`, `$group`, `$expr`, update pipelines and
//! every other expression-taking place share.
//!
//! This module sits below both the query layer (`$expr`, computed projections) and the
//! aggregation stages, and depends only on `doc`, `collation`, `error`, `memory` and `pcre`, so
//! neither of those layers reaches into the other to evaluate an expression:
//!
//! - [`eval`]: the [`Expression`] tree, its parser and evaluator, variables and scopes;
//! - [`ops`]: the operators, one file per family, each with its arity next to its
//!   implementation;
//! - [`date`] and [`tz`]: calendar arithmetic and time zones for the date operators;
//! - [`decimal`]: decimal128 arithmetic for the numeric operators.
//!
//! Values are [`Value`]s, `Option<Bson>`: `None` is *missing*, which is different from null. A
//! field path to an absent field is missing, `$$REMOVE` is missing, and a missing value assigned
//! to a field removes the field. Most operators treat missing like null ("null in, null out").

use std::cmp::Ordering;

use bson::Bson;

use crate::doc::compare::cmp_bson;
use crate::error::{Code, Error};

pub mod date;
pub mod decimal;
pub mod eval;
pub mod ops;
pub mod tz;

#[cfg(test)]
mod tests;

pub use crate::doc::type_name;
pub use eval::{Expression, Scope, Vars, field_path, validate_var_name};
pub use ops::{add_numbers, as_int, average, std_dev};

/// A value that may be missing (`None`).
pub type Value = Option<Bson>;

/// The field a `$text` match leaves its score in for `{$meta: "textScore"}`; it never reaches a
/// client (see `query::text`).
pub const TEXT_SCORE_FIELD: &str = "__folio_textScore";

/// The fields `$geoNear` (and a find's `$near`, when its projection asks) leave the distance and
/// the location it was measured to in, for `{$meta: "geoNearDistance"}` and
/// `{$meta: "geoNearPoint"}`; they never reach a client.
pub const GEO_NEAR_DISTANCE_FIELD: &str = "__folio_geoNearDistance";
/// See [`GEO_NEAR_DISTANCE_FIELD`].
pub const GEO_NEAR_POINT_FIELD: &str = "__folio_geoNearPoint";

/// Whether `v` holds `{$meta: name}` at any depth (an expression, a projection or a sort).
pub fn mentions_meta(v: &Bson, name: &str) -> bool {
    match v {
        Bson::Document(d) => {
            matches!(d.get("$meta"), Some(Bson::String(s)) if s == name)
                || d.values().any(|v| mentions_meta(v, name))
        }
        Bson::Array(items) => items.iter().any(|v| mentions_meta(v, name)),
        _ => false,
    }
}

/// The field carrying the metadata `{$meta: name}` reads. The metadata MongoDB knows that
/// Folio does not produce fail with NotImplemented (238); a name MongoDB does not know with
/// 17308, as in MongoDB.
pub fn meta_field(name: &Bson) -> Result<&'static str, Error> {
    match name {
        Bson::String(s) => match s.as_str() {
            "textScore" => Ok(TEXT_SCORE_FIELD),
            "geoNearDistance" => Ok(GEO_NEAR_DISTANCE_FIELD),
            "geoNearPoint" => Ok(GEO_NEAR_POINT_FIELD),
            "indexKey"
            | "recordId"
            | "sortKey"
            | "randVal"
            | "searchScore"
            | "searchHighlights"
            | "searchScoreDetails"
            | "searchSequenceToken"
            | "vectorSearchScore"
            | "score"
            | "scoreDetails"
            | "stream" => {
                Err(Error::new(Code::NotImplemented, format!("$meta \"{s}\" is not supported")))
            }
            _ => Err(loc(17308, format!("Unsupported argument to $meta: {s}"))),
        },
        other => Err(loc(
            17307,
            format!("$meta only supports string arguments, not {}", type_name(other)),
        )),
    }
}

/// An error with a numbered MongoDB location code.
pub(crate) fn loc(code: i32, msg: impl Into<String>) -> Error {
    Error::new(Code::from_number(code), msg)
}

/// Truthiness: missing, null, undefined, false and zero are false.
pub fn truthy(v: &Value) -> bool {
    v.as_ref().is_some_and(crate::doc::truthy)
}

/// The type name of a possibly missing value.
pub fn value_type(v: &Value) -> &'static str {
    v.as_ref().map_or("missing", type_name)
}

/// Total order with missing below everything (including null).
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_bson(x, y),
    }
}
