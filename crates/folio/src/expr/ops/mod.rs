//! The operators of aggregation expressions, one file per family, on evaluated arguments.
//!
//! Each family file declares its operators in a table next to their implementations: an
//! [`Operator`] (arguments are a list, `{$add: [a, b]}`) carries its name, its arity and the
//! function that evaluates it; a [`NamedOperator`] (arguments are an object,
//! `{$trim: {input, chars}}`) carries its required and optional argument names and MongoDB's
//! location codes for a malformed argument object. The parser ([`super::eval`]) looks an
//! operator's name up once and keeps a reference to its table entry, so evaluating a document
//! calls the function directly: no operator name is compared per document, and the arity
//! checked at parse time is the one the implementation destructures (`fixed`).
//!
//! Arguments are values that may be missing (`None`). Numeric operators follow MongoDB's type
//! promotion: int32 widens to int64 on overflow, int64 to double on overflow, any double makes
//! the result a double, and any decimal makes it a decimal (computed in decimal128, see
//! [`super::decimal`]).
//!
//! The short-circuiting operators (`$and`, `$or`, `$ifNull`) and the ones that bind variables
//! (`$let`, `$map`, `$filter`, `$reduce`, `$cond`, `$switch`) are not here: they decide which
//! arguments to evaluate, so the evaluator implements them.

use bson::Bson;

use super::{Value, type_name};
use crate::collation::{Collation, CollationRef};
use crate::doc::compare::Number;
use crate::error::{Error, Result};

pub mod accum;
pub mod arith;
pub mod array;
pub mod compare;
pub mod convert;
pub mod object;
pub mod string;

pub use accum::std_dev;
pub use arith::{add_numbers, as_int, average};

/// No upper bound on an operator's argument count.
pub const MANY: usize = usize::MAX;

/// An operator whose arguments are a list, with its arity and implementation.
#[derive(Debug)]
pub struct Operator {
    /// The name, with its `$`.
    pub name: &'static str,
    /// The fewest arguments it takes.
    pub min: usize,
    /// The most arguments it takes ([`MANY`]: no limit).
    pub max: usize,
    /// Evaluates the operator on its evaluated arguments (as many as the arity allows).
    pub eval: fn(Vec<Value>) -> Result<Value>,
    /// What a collation changes in it.
    pub collated: Collated,
}

/// What a collation changes in an operator: MongoDB compares strings under the operation's
/// collation wherever an operator compares values (`$eq`, `$in`, the set operators, `$max`,
/// ...), and nowhere else (`$strcasecmp`, `$indexOfBytes` and `$regexMatch` compare bytes).
#[derive(Clone, Copy, Debug)]
pub enum Collated {
    /// Nothing: the operator compares no values.
    No,
    /// Its result depends on its arguments only through comparisons (a boolean, an order, a
    /// position), so it is evaluated on the arguments with their strings replaced by
    /// collation keys.
    Keys,
    /// It returns some of its arguments (`$setUnion`, `$max`): its own implementation compares
    /// keys and returns the originals.
    Own(fn(Vec<Value>, &CollationRef) -> Result<Value>),
}

impl Operator {
    /// The same entry, with what a collation changes in it.
    pub(crate) const fn collated(self, collated: Collated) -> Operator {
        Operator { collated, ..self }
    }
}

/// The arguments with their strings (at any depth) replaced by collation keys.
pub(crate) fn keyed(vals: Vec<Value>, c: &Collation) -> Vec<Value> {
    vals.into_iter()
        .map(|v| v.map(|x| if crate::collation::has_strings(&x) { c.transform(&x) } else { x }))
        .collect()
}

/// The table entry of an operator with positional arguments.
pub(crate) const fn op(
    name: &'static str,
    min: usize,
    max: usize,
    eval: fn(Vec<Value>) -> Result<Value>,
) -> Operator {
    Operator { name, min, max, eval, collated: Collated::No }
}

/// An operator whose arguments are an object, with its argument names and implementation.
#[derive(Debug)]
pub struct NamedOperator {
    /// The name, with its `$`.
    pub name: &'static str,
    /// The arguments it requires.
    pub required: &'static [&'static str],
    /// The arguments it also accepts.
    pub optional: &'static [&'static str],
    /// MongoDB's location codes for an argument that is not an object, an unknown argument and
    /// a missing required one.
    pub codes: [i32; 3],
    /// Evaluates the operator on its evaluated arguments, by name.
    pub eval: fn(&Args) -> Result<Value>,
    /// Evaluates it under a collation, for the operators that compare values (`$sortArray`).
    pub collated: Option<fn(&Args, &CollationRef) -> Result<Value>>,
}

impl NamedOperator {
    /// The same entry, evaluated by `f` under a collation.
    pub(crate) const fn collated(
        self,
        f: fn(&Args, &CollationRef) -> Result<Value>,
    ) -> NamedOperator {
        NamedOperator { collated: Some(f), ..self }
    }
}

/// The evaluated arguments of a [`NamedOperator`], in the order they were written.
pub type Args<'a> = [(&'a str, Value)];

/// The table entry of an operator with named arguments.
pub(crate) const fn named(
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    codes: [i32; 3],
    eval: fn(&Args) -> Result<Value>,
) -> NamedOperator {
    NamedOperator { name, required, optional, codes, eval, collated: None }
}

/// Every family's operators with positional arguments.
const FAMILIES: [&[Operator]; 7] =
    [arith::OPS, compare::OPS, string::OPS, array::OPS, object::OPS, convert::OPS, accum::OPS];

/// Every family's operators with named arguments.
const NAMED_FAMILIES: [&[NamedOperator]; 5] =
    [string::NAMED, array::NAMED, object::NAMED, convert::NAMED, super::date::NAMED];

/// The operator with positional arguments called `name`.
pub fn lookup(name: &str) -> Option<&'static Operator> {
    FAMILIES.iter().flat_map(|f| f.iter()).find(|o| o.name == name)
}

/// The operator with named arguments called `name`.
pub fn lookup_named(name: &str) -> Option<&'static NamedOperator> {
    NAMED_FAMILIES.iter().flat_map(|f| f.iter()).find(|o| o.name == name)
}

/// The date-part operator called `name` (`$year`, `$hour`, ...).
pub fn lookup_date_part(name: &str) -> Option<&'static NamedOperator> {
    super::date::DATE_PARTS.iter().find(|o| o.name == name)
}

/// The arguments of a fixed-arity operator as an array. The parser has checked the count, so
/// every one is there; were one not, it would read as missing rather than panic.
pub(crate) fn fixed<const N: usize>(vals: Vec<Value>) -> [Value; N] {
    let mut it = vals.into_iter();
    std::array::from_fn(|_| it.next().flatten())
}

/// The argument called `name` of a named operator (missing when absent or evaluated to
/// missing).
pub(crate) fn get(args: &Args, name: &str) -> Value {
    args.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.clone())
}

/// The argument called `name` as written: `None` when absent, `Some(None)` when it evaluated
/// to missing.
pub(crate) fn given<'a>(args: &'a Args, name: &str) -> Option<&'a Value> {
    args.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
}

pub(crate) fn null() -> Result<Value> {
    Ok(Some(Bson::Null))
}

pub(crate) fn is_nullish(v: &Value) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

pub(crate) fn b(x: bool) -> Result<Value> {
    Ok(Some(Bson::Boolean(x)))
}

/// An array argument: `Ok(None)` for null/missing, an error built by `err` for other types.
pub(crate) fn array_arg(v: &Value, err: impl Fn(&str) -> Error) -> Result<Option<&Vec<Bson>>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::Array(items)) => Ok(Some(items)),
        Some(other) => Err(err(type_name(other))),
    }
}

/// With one array argument, an accumulator-style operator works over the array's elements;
/// otherwise over its arguments (missing ones left out).
pub(crate) fn spread(vals: Vec<Value>) -> Vec<Bson> {
    match vals.as_slice() {
        [Some(Bson::Array(items))] => items.clone(),
        _ => vals.into_iter().flatten().collect(),
    }
}

/// Whether `v` is a number.
pub(crate) fn is_number(v: &Bson) -> bool {
    Number::of(v).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_arities_ordered() {
        let mut names: Vec<&str> = FAMILIES.iter().flat_map(|f| f.iter()).map(|o| o.name).collect();
        names.extend(NAMED_FAMILIES.iter().flat_map(|f| f.iter()).map(|o| o.name));
        names.extend(super::super::date::DATE_PARTS.iter().map(|o| o.name));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "an operator is declared twice");
        for o in FAMILIES.iter().flat_map(|f| f.iter()) {
            assert!(o.min <= o.max, "{}", o.name);
            assert!(o.name.starts_with('$'), "{}", o.name);
        }
    }

    #[test]
    fn fixed_reads_absent_arguments_as_missing() {
        let [a, b, c] = fixed(vec![Some(Bson::Int32(1)), None]);
        assert_eq!(a, Some(Bson::Int32(1)));
        assert_eq!(b, None);
        assert_eq!(c, None);
    }
}
