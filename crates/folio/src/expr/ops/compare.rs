//! Comparison operators and `$not`.
//!
//! Expression comparisons are not type-bracketed: they use MongoDB's total order of values,
//! with missing below everything (so `{$gt: ["$a", 5]}` is true for a string `a`, and a
//! missing field is less than null). `$and` and `$or` short-circuit, so the evaluator
//! implements them. Under a collation the comparisons compare strings' collation keys
//! ([`Collated::Keys`]).

use std::cmp::Ordering;

use bson::Bson;

use super::{Collated, Operator, b, fixed, op};
use crate::error::Result;
use crate::expr::{Value, cmp_values, truthy};

/// The comparison operators, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$eq", 2, 2, |v| compare(v, |o| Bson::Boolean(o == Ordering::Equal)))
        .collated(Collated::Keys),
    op("$ne", 2, 2, |v| compare(v, |o| Bson::Boolean(o != Ordering::Equal)))
        .collated(Collated::Keys),
    op("$gt", 2, 2, |v| compare(v, |o| Bson::Boolean(o == Ordering::Greater)))
        .collated(Collated::Keys),
    op("$gte", 2, 2, |v| compare(v, |o| Bson::Boolean(o != Ordering::Less)))
        .collated(Collated::Keys),
    op("$lt", 2, 2, |v| compare(v, |o| Bson::Boolean(o == Ordering::Less)))
        .collated(Collated::Keys),
    op("$lte", 2, 2, |v| compare(v, |o| Bson::Boolean(o != Ordering::Greater)))
        .collated(Collated::Keys),
    op("$cmp", 2, 2, |v| compare(v, |o| Bson::Int32(o as i32))).collated(Collated::Keys),
    op("$not", 1, 1, |v| {
        let [x] = fixed(v);
        b(!truthy(&x))
    }),
];

/// Compares the two arguments and reports the order through `out`.
fn compare(vals: Vec<Value>, out: fn(Ordering) -> Bson) -> Result<Value> {
    let [a, b] = fixed(vals);
    Ok(Some(out(cmp_values(&a, &b))))
}
