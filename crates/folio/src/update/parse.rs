//! Parsing and validating update documents and array filters.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{BitOp, Op, OpKind, Operators, Push, PushSort, UpdateSpec};
use crate::doc::compare::Number;
use crate::doc::fmt::value_string;
use crate::doc::path::{array_index, is_prefix};
use crate::doc::sort::SortSpec;
pub(super) use crate::doc::type_name;
use crate::error::Result;
use crate::query::filter::{Filter, parse_pull_condition};
use crate::{bail, err};

impl UpdateSpec {
    /// Parses an update document (operators or a replacement) with optional array filters.
    /// An update given as an array is a pipeline: use [`UpdateSpec::parse_pipeline`].
    pub fn parse(update: &Document, array_filters: Option<&[Document]>) -> Result<UpdateSpec> {
        let is_ops = update.keys().next().is_some_and(|k| k.starts_with('$'));
        if !is_ops {
            if array_filters.is_some_and(|f| !f.is_empty()) {
                bail!(
                    FailedToParse,
                    "arrayFilters may not be specified for replacement-style updates"
                );
            }
            validate_replacement(update)?;
            return Ok(UpdateSpec::Replacement(update.clone()));
        }
        let mut ops = Vec::new();
        for (name, arg) in update {
            let Bson::Document(fields) = arg else {
                if !name.starts_with('$') {
                    bail!(
                        FailedToParse,
                        "Unknown modifier: {name}. Expected a valid update modifier or pipeline-style update specified as an array"
                    );
                }
                bail!(
                    FailedToParse,
                    "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{name}: {}}}",
                    type_name(arg),
                    value_string(arg)
                );
            };
            for (path, value) in fields {
                ops.push(parse_op(name, path, value)?);
            }
        }
        check_conflicts(&ops)?;
        let array_filters = parse_array_filters(array_filters.unwrap_or(&[]))?;
        check_identifiers(&ops, &array_filters, update)?;
        ops.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        Ok(UpdateSpec::Operators(Operators { ops, array_filters, collation: None }))
    }
}

/// A replacement may not contain `$`-prefixed top-level fields (DBRefs aside).
fn validate_replacement(doc: &Document) -> Result<()> {
    for k in doc.keys() {
        if k.starts_with('$') && !matches!(k.as_str(), "$ref" | "$id" | "$db") {
            bail!(
                DollarPrefixedFieldName,
                "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."
            );
        }
    }
    Ok(())
}

fn validate_path(op: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        bail!(EmptyFieldName, "An empty update path is not valid.");
    }
    for (i, part) in path.split('.').enumerate() {
        if part.is_empty() {
            bail!(
                EmptyFieldName,
                "The update path '{path}' contains an empty field name, which is not allowed."
            );
        }
        // A `$`-prefixed field name is a path like any other (MongoDB 5.0+ stores such names;
        // whether one may be written at the top level is decided when the update is applied),
        // but a positional element cannot come first.
        if i == 0 && (part == "$" || part.starts_with("$[")) {
            bail!(
                DollarPrefixedFieldName,
                "The update path '{path}' contains an illegal field name, which is not allowed."
            );
        }
    }
    let positional = path.split('.').filter(|p| *p == "$").count();
    if positional > 1 {
        bail!(BadValue, "Too many positional (i.e. '$') elements found in path '{path}'");
    }
    let _ = op;
    Ok(())
}

fn parse_op(name: &str, path: &str, v: &Bson) -> Result<Op> {
    validate_path(name, path)?;
    let kind = match name {
        "$set" => OpKind::Set(v.clone()),
        "$setOnInsert" => OpKind::SetOnInsert(v.clone()),
        "$unset" => OpKind::Unset,
        "$inc" | "$mul" => {
            if Number::of(v).is_none() {
                let verb = if name == "$inc" { "increment" } else { "multiply" };
                bail!(
                    TypeMismatch,
                    "Cannot {verb} with non-numeric argument: {{{path}: {}}}",
                    value_string(v)
                );
            }
            if name == "$inc" { OpKind::Inc(v.clone()) } else { OpKind::Mul(v.clone()) }
        }
        "$min" => OpKind::Min(v.clone()),
        "$max" => OpKind::Max(v.clone()),
        "$rename" => parse_rename(path, v)?,
        "$currentDate" => parse_current_date(v)?,
        "$push" => OpKind::Push(parse_push(v)?),
        "$addToSet" => OpKind::AddToSet(parse_add_to_set(v)?),
        "$pop" => match Number::of(v).map(Number::to_f64) {
            Some(1.0) => OpKind::Pop { first: false },
            Some(-1.0) => OpKind::Pop { first: true },
            Some(_) => bail!(FailedToParse, "$pop expects 1 or -1, found: {}", value_string(v)),
            None => bail!(FailedToParse, "Expected a number in: {path}: {}", value_string(v)),
        },
        "$pull" => OpKind::Pull(Box::new(parse_pull_condition(path, v)?)),
        "$pullAll" => match v {
            Bson::Array(items) => OpKind::PullAll(items.clone()),
            other => bail!(
                BadValue,
                "$pullAll requires an array argument but was given a {}",
                type_name(other)
            ),
        },
        "$bit" => parse_bit(path, v)?,
        other => bail!(
            FailedToParse,
            "Unknown modifier: {other}. Expected a valid update modifier or pipeline-style update specified as an array"
        ),
    };
    Ok(Op { path: path.to_string(), kind })
}

fn parse_rename(from: &str, v: &Bson) -> Result<OpKind> {
    let Bson::String(to) = v else {
        bail!(BadValue, "The 'to' field for $rename must be a string: {from}: {}", value_string(v));
    };
    if to.is_empty() || to.split('.').any(str::is_empty) {
        bail!(
            BadValue,
            "The update path '{to}' contains an empty field name, which is not allowed."
        );
    }
    if from.split('.').any(|p| p.starts_with('$')) {
        bail!(BadValue, "The source field for $rename may not be dynamic: {from}");
    }
    if to.split('.').any(|p| p.starts_with('$')) {
        bail!(BadValue, "The destination field for $rename may not be dynamic: {to}");
    }
    if from == to {
        bail!(BadValue, "The source and target field for $rename must differ: {from}: \"{to}\"");
    }
    if is_prefix(from, to) || is_prefix(to, from) {
        bail!(
            BadValue,
            "The source and target field for $rename must not be on the same path: {from}: \"{to}\""
        );
    }
    Ok(OpKind::Rename(to.clone()))
}

fn parse_current_date(v: &Bson) -> Result<OpKind> {
    match v {
        Bson::Boolean(_) => Ok(OpKind::CurrentDate { timestamp: false }),
        Bson::Document(d) => {
            let mut timestamp = None;
            for (k, x) in d {
                if k != "$type" {
                    bail!(BadValue, "Unrecognized $currentDate option: {k}");
                }
                match x {
                    Bson::String(t) if t == "date" => timestamp = Some(false),
                    Bson::String(t) if t == "timestamp" => timestamp = Some(true),
                    _ => {}
                }
            }
            match timestamp {
                Some(timestamp) => Ok(OpKind::CurrentDate { timestamp }),
                None => bail!(
                    BadValue,
                    "The '$type' string field is required to be 'date' or 'timestamp': {{$currentDate: {{field : {{$type: 'date'}}}}}}"
                ),
            }
        }
        other => bail!(
            BadValue,
            "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
            type_name(other)
        ),
    }
}

/// Whether a `$push`/`$addToSet` argument uses `$each`.
fn each_doc(v: &Bson) -> Option<&Document> {
    match v {
        Bson::Document(d) if d.contains_key("$each") => Some(d),
        _ => None,
    }
}

fn parse_each(d: &Document, op: &str) -> Result<Vec<Bson>> {
    match d.get("$each") {
        Some(Bson::Array(items)) => Ok(items.clone()),
        Some(other) => bail!(
            BadValue,
            "The argument to $each in {op} must be an array but it was of type: {}",
            type_name(other)
        ),
        None => Ok(Vec::new()),
    }
}

fn int_arg(v: &Bson, what: &str) -> Result<i64> {
    let n = Number::of(v).ok_or_else(|| {
        err!(
            BadValue,
            "The value for {what} must be an integer value but was given type: {}",
            type_name(v)
        )
    })?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    let f = n.to_f64();
    if f.fract() != 0.0 || !f.is_finite() {
        bail!(
            BadValue,
            "The value for {what} must be an integer value but was given type: {}",
            type_name(v)
        );
    }
    Ok(f as i64)
}

fn parse_push(v: &Bson) -> Result<Push> {
    let Some(d) = each_doc(v) else {
        return Ok(Push { each: vec![v.clone()], position: None, slice: None, sort: None });
    };
    let mut push = Push { each: parse_each(d, "$push")?, position: None, slice: None, sort: None };
    for (k, x) in d {
        match k.as_str() {
            "$each" => {}
            "$slice" => push.slice = Some(int_arg(x, "$slice")?),
            "$position" => push.position = Some(int_arg(x, "$position")?),
            "$sort" => push.sort = Some(parse_push_sort(x)?),
            other => bail!(BadValue, "Unrecognized clause in $push: {other}"),
        }
    }
    Ok(push)
}

fn parse_push_sort(v: &Bson) -> Result<PushSort> {
    const MSG: &str = "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields";
    match v {
        Bson::Document(d) => {
            if d.is_empty() {
                bail!(BadValue, "The $sort pattern is empty when it should be a set of fields.");
            }
            for k in d.keys() {
                if k.is_empty() || k.starts_with('$') || k.split('.').any(str::is_empty) {
                    bail!(BadValue, "{MSG}");
                }
            }
            let spec = SortSpec::parse(d).map_err(|_| err!(BadValue, "{MSG}"))?;
            Ok(PushSort::Fields(spec))
        }
        other => match Number::of(other).map(Number::to_f64) {
            Some(1.0) => Ok(PushSort::Whole(true)),
            Some(-1.0) => Ok(PushSort::Whole(false)),
            _ => bail!(BadValue, "{MSG}"),
        },
    }
}

fn parse_add_to_set(v: &Bson) -> Result<Vec<Bson>> {
    match each_doc(v) {
        Some(d) => {
            if let Some(k) = d.keys().find(|k| *k != "$each") {
                bail!(BadValue, "Found unexpected fields after $each in $addToSet: {k}");
            }
            parse_each(d, "$addToSet")
        }
        None => Ok(vec![v.clone()]),
    }
}

fn parse_bit(path: &str, v: &Bson) -> Result<OpKind> {
    let Bson::Document(d) = v else {
        bail!(
            BadValue,
            "The $bit modifier is not compatible with a {}. You must pass in an embedded document: {{$bit: {{field: {{and/or/xor: #}}}}",
            type_name(v)
        );
    };
    let mut ops = Vec::new();
    for (k, x) in d {
        let op = match k.as_str() {
            "and" => BitOp::And,
            "or" => BitOp::Or,
            "xor" => BitOp::Xor,
            other => bail!(
                BadValue,
                "The $bit modifier only supports 'and', 'or', and 'xor', not '{other}' which is an unknown operator: {{{other}: {}}}",
                value_string(x)
            ),
        };
        if !matches!(x, Bson::Int32(_) | Bson::Int64(_)) {
            bail!(
                BadValue,
                "The $bit modifier field must be an Integer(32/64 bit); a '{}' is not supported here: {{{k}: {}}}",
                type_name(x),
                value_string(x)
            );
        }
        ops.push((op, x.clone()));
    }
    if ops.is_empty() {
        bail!(
            BadValue,
            "You must pass in at least one bitwise operation. The format is: {{$bit: {{field: {{and/or/xor: #}}}}"
        );
    }
    let _ = path;
    Ok(OpKind::Bit(ops))
}

/// Rejects two operations whose paths overlap.
fn check_conflicts(ops: &[Op]) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for op in ops {
        let mut paths = vec![op.path.as_str()];
        if let OpKind::Rename(to) = &op.kind {
            paths.push(to.as_str());
        }
        for p in paths {
            for s in &seen {
                if is_prefix(s, p) || is_prefix(p, s) {
                    let at = if s.len() <= p.len() { *s } else { p };
                    bail!(
                        ConflictingUpdateOperators,
                        "Updating the path '{p}' would create a conflict at '{at}'"
                    );
                }
            }
            seen.push(p);
        }
    }
    Ok(())
}

/// Array filters: each is a filter whose top-level fields all start with one identifier.
fn parse_array_filters(filters: &[Document]) -> Result<Vec<(String, Filter)>> {
    let mut out: Vec<(String, Filter)> = Vec::new();
    for f in filters {
        let mut ident: Option<String> = None;
        for key in f.keys() {
            if key.starts_with('$') {
                // Logical operators inside an array filter are allowed; their fields name the
                // identifier too, but we only need one top-level field to find it.
                continue;
            }
            let id = key.split('.').next().unwrap_or("").to_string();
            match &ident {
                Some(prev) if *prev != id => bail!(
                    FailedToParse,
                    "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{prev}' and '{id}'"
                ),
                _ => ident = Some(id),
            }
        }
        let Some(id) = ident.or_else(|| logical_identifier(f)) else {
            bail!(
                FailedToParse,
                "Cannot use an expression without a top-level field name in arrayFilters"
            );
        };
        let valid = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            bail!(
                BadValue,
                "Error parsing array filter :: caused by :: The top-level field name must be an alphanumeric string beginning with a lowercase letter, found '{id}'"
            );
        }
        if out.iter().any(|(x, _)| *x == id) {
            bail!(
                FailedToParse,
                "Found multiple array filters with the same top-level field name {id}"
            );
        }
        out.push((id, Filter::parse(f)?));
    }
    Ok(out)
}

/// The identifier used inside `$and`/`$or` of an array filter.
fn logical_identifier(f: &Document) -> Option<String> {
    for (k, v) in f {
        if let (true, Bson::Array(items)) = (k.starts_with('$'), v) {
            for item in items {
                if let Bson::Document(d) = item {
                    if let Some(k) = d.keys().find(|k| !k.starts_with('$')) {
                        return Some(k.split('.').next().unwrap_or("").to_string());
                    }
                    if let Some(id) = logical_identifier(d) {
                        return Some(id);
                    }
                }
            }
        }
    }
    None
}

/// Every `$[id]` must have a filter, and every filter must be used.
fn check_identifiers(ops: &[Op], filters: &[(String, Filter)], update: &Document) -> Result<()> {
    let mut used = vec![false; filters.len()];
    for op in ops {
        for part in op.path.split('.') {
            let Some(id) = part.strip_prefix("$[").and_then(|p| p.strip_suffix(']')) else {
                continue;
            };
            if id.is_empty() {
                continue;
            }
            match filters.iter().position(|(x, _)| x == id) {
                Some(i) => used[i] = true,
                None => bail!(
                    BadValue,
                    "No array filter found for identifier '{id}' in path '{}'",
                    op.path
                ),
            }
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        bail!(
            FailedToParse,
            "The array filter for identifier '{}' was not used in the update {}",
            filters[i].0,
            crate::doc::fmt::doc_string(update)
        );
    }
    Ok(())
}

/// Orders update paths component by component, numeric components numerically.
pub(super) fn cmp_paths(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (array_index(x), array_index(y)) {
                    (Some(i), Some(j)) => i.cmp(&j),
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}
