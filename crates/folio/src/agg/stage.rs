//! Pipeline stages: parsing and execution.
//!
//! Every stage takes the whole vector of documents and returns a new one. Streaming stages
//! (`$match`, `$project`, `$addFields`, `$unwind`, ...) map or filter; blocking stages (`$group`,
//! `$sort`, `$bucket`, `$facet`) need everything first anyway, so one in-memory representation
//! serves both.

use std::cmp::Ordering;

use bson::{Bson, Document};
use rand::seq::SliceRandom;

use super::expr::{Expression, Scope, Vars, loc, type_name};
use super::group::{AccSpec, group_by};
use super::{Context, Pipeline};
use crate::doc::fmt::{doc_string, value_string};
use crate::error::{Code, Error, Result};
use crate::query::{Filter, SortSpec};
use crate::{bail, err};

/// A parsed stage.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `$match`
    Match(Filter),
    /// `$project` and `$unset`.
    Project(super::project::Projection),
    /// `$addFields` / `$set`: dotted paths and values.
    AddFields(Vec<(String, Expression)>),
    /// `$group`: key expression and accumulators.
    Group(Expression, Vec<AccSpec>),
    /// `$sort`
    Sort(SortSpec),
    /// `$skip`
    Skip(usize),
    /// `$limit`
    Limit(usize),
    /// `$count`: output field.
    Count(String),
    /// `$unwind`: path, includeArrayIndex, preserveNullAndEmptyArrays.
    Unwind(String, Option<String>, bool),
    /// `$replaceRoot` / `$replaceWith`.
    ReplaceRoot(Expression),
    /// `$sortByCount`: the grouping expression.
    SortByCount(Expression),
    /// `$bucket`
    Bucket(Bucket),
    /// `$facet`: named sub-pipelines.
    Facet(Vec<(String, Pipeline)>),
    /// `$sample`: size.
    Sample(usize),
    /// `$documents`: the documents expression.
    Documents(Expression),
    /// `$lookup`
    Lookup(Box<Lookup>),
    /// `$graphLookup`
    GraphLookup(Box<GraphLookup>),
    /// `$listLocalSessions` (the sessions come from the [`super::Source`]).
    ListLocalSessions,
    /// `$bucketAuto`: groupBy, bucket count, output.
    BucketAuto(Expression, usize, Vec<AccSpec>),
    /// `$setWindowFields`
    SetWindowFields(Box<super::window::SetWindowFields>),
    /// `$unionWith`: collection and pipeline.
    UnionWith(String, Option<Pipeline>),
    /// `$out` / `$merge`: the results are written by the command layer (see [`super::output`]).
    Output(super::output::Sink),
}

/// A parsed `$bucket`.
#[derive(Clone, Debug)]
pub struct Bucket {
    group_by: Expression,
    boundaries: Vec<Bson>,
    default: Option<Bson>,
    output: Vec<AccSpec>,
}

/// A parsed `$graphLookup`.
#[derive(Clone, Debug)]
pub struct GraphLookup {
    from: String,
    start_with: Expression,
    connect_from: String,
    connect_to: String,
    as_field: String,
    max_depth: Option<i64>,
    depth_field: Option<String>,
    restrict: Option<Filter>,
}

/// A parsed `$lookup`.
#[derive(Clone, Debug)]
pub struct Lookup {
    from: Option<String>,
    local_field: Option<String>,
    foreign_field: Option<String>,
    as_field: String,
    let_vars: Vec<(String, Expression)>,
    pipeline: Option<Vec<Document>>,
}

fn stage_name_error() -> Error {
    loc(40323, "A pipeline stage specification object must contain exactly one field.")
}

impl Stage {
    /// Parses one stage in a variable scope; `let_vars` are the constant values of the
    /// variables (needed by stages that parse through the query layer).
    pub fn parse(spec: &Document, scope: &Scope, let_vars: &Document) -> Result<Stage> {
        if spec.len() != 1 {
            return Err(stage_name_error());
        }
        let Some((name, arg)) = spec.iter().next() else {
            return Err(stage_name_error());
        };
        match name.as_str() {
            "$match" => {
                let Bson::Document(f) = arg else {
                    return Err(loc(15959, "the match filter must be an expression in an object"));
                };
                Ok(Stage::Match(Filter::parse_with_let(f, Some(let_vars))?))
            }
            "$project" => {
                let Bson::Document(p) = arg else {
                    return Err(loc(15969, "$project specification must be an object"));
                };
                Ok(Stage::Project(super::project::Projection::parse(p, scope)?))
            }
            "$unset" => parse_unset(arg),
            "$addFields" | "$set" => {
                let Bson::Document(d) = arg else {
                    return Err(loc(
                        40272,
                        format!(
                            "{name} specification stage must be an object, got {}",
                            type_name(arg)
                        ),
                    ));
                };
                let mut out = Vec::new();
                flatten_fields(d, "", scope, &mut out)?;
                Ok(Stage::AddFields(out))
            }
            "$group" => parse_group(arg, scope),
            "$sort" => {
                let Bson::Document(s) = arg else {
                    return Err(loc(15973, "the $sort key specification must be an object"));
                };
                if s.is_empty() {
                    return Err(loc(15976, "$sort stage must have at least one sort key"));
                }
                Ok(Stage::Sort(SortSpec::parse(s)?))
            }
            "$skip" => Ok(Stage::Skip(non_negative(arg, "$skip")?)),
            "$limit" => {
                let n = non_negative(arg, "$limit")?;
                if n == 0 {
                    return Err(loc(15958, "the limit must be positive"));
                }
                Ok(Stage::Limit(n))
            }
            "$count" => parse_count(arg),
            "$unwind" => parse_unwind(arg),
            "$replaceRoot" => {
                let Bson::Document(d) = arg else {
                    return Err(loc(
                        40228,
                        format!(
                            "expected an object as specification for $replaceRoot stage, got {}",
                            type_name(arg)
                        ),
                    ));
                };
                for k in d.keys() {
                    if k != "newRoot" {
                        return Err(loc(
                            40415,
                            format!("BSON field '$replaceRoot.{k}' is an unknown field."),
                        ));
                    }
                }
                let Some(root) = d.get("newRoot") else {
                    return Err(loc(
                        40414,
                        "BSON field '$replaceRoot.newRoot' is missing but a required field",
                    ));
                };
                Ok(Stage::ReplaceRoot(Expression::parse_in(root, scope)?))
            }
            "$replaceWith" => Ok(Stage::ReplaceRoot(Expression::parse_in(arg, scope)?)),
            "$sortByCount" => {
                let ok = match arg {
                    Bson::String(s) => s.starts_with('$'),
                    Bson::Document(d) => {
                        d.keys().next().is_some_and(|k| k.starts_with('$')) && d.len() == 1
                    }
                    _ => false,
                };
                if !ok {
                    return Err(loc(
                        40148,
                        "the sortByCount field must be defined as a $-prefixed path or an expression inside an object",
                    ));
                }
                Ok(Stage::SortByCount(Expression::parse_in(arg, scope)?))
            }
            "$bucket" => parse_bucket(arg, scope),
            "$facet" => parse_facet(arg, let_vars),
            "$sample" => {
                let size = match arg {
                    Bson::Document(d) => match d.get("size") {
                        Some(v) if super::ops::as_int(v).is_some() => {
                            super::ops::as_int(v).unwrap_or(0)
                        }
                        Some(_) => {
                            return Err(loc(28746, "size argument to $sample must be a number"));
                        }
                        None => return Err(loc(28749, "$sample stage must specify a size")),
                    },
                    _ => {
                        return Err(loc(
                            28745,
                            "the $sample stage specification must be an object",
                        ));
                    }
                };
                if size < 0 {
                    return Err(loc(28747, "size argument to $sample must not be negative"));
                }
                Ok(Stage::Sample(size as usize))
            }
            "$documents" => Ok(Stage::Documents(Expression::parse_in(arg, scope)?)),
            "$lookup" => parse_lookup(arg, scope, let_vars),
            "$unionWith" => parse_union(arg, let_vars),
            "$graphLookup" => parse_graph_lookup(arg, scope),
            "$bucketAuto" => parse_bucket_auto(arg, scope),
            "$setWindowFields" => Ok(Stage::SetWindowFields(Box::new(
                super::window::SetWindowFields::parse(arg, scope)?,
            ))),
            "$out" => Ok(Stage::Output(super::output::parse_out(arg)?)),
            "$merge" => Ok(Stage::Output(super::output::parse_merge(arg)?)),
            // TODO(#7): stages MongoDB has that Folio does not implement yet.
            "$listLocalSessions" => match arg {
                Bson::Document(_) => Ok(Stage::ListLocalSessions),
                other => Err(err!(
                    TypeMismatch,
                    "$listLocalSessions expects an object, found {}",
                    type_name(other)
                )),
            },
            "$listSessions" | "$collStats" | "$indexStats" | "$currentOp" | "$redact"
            | "$geoNear" | "$densify" | "$fill" | "$changeStream" | "$planCacheStats" => {
                Err(err!(NotImplemented, "the {name} stage is not supported"))
            }
            other => Err(loc(40324, format!("Unrecognized pipeline stage name: '{other}'"))),
        }
    }

    /// Runs the stage.
    pub fn execute(&self, docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        match self {
            Stage::Match(f) => Ok(docs.into_iter().filter(|d| f.matches(d)).collect()),
            Stage::Project(p) => docs
                .iter()
                .map(|d| p.apply(d, &mut Vars::with_let(d, &ctx.vars)))
                .collect(),
            Stage::AddFields(fields) => docs.into_iter().map(|d| add_fields(d, fields, ctx)).collect(),
            Stage::Group(key, accs) => {
                let groups = group_by(&docs, |v| Ok(key.eval(v)?.unwrap_or(Bson::Null)), accs, &ctx.vars)?;
                let out: Vec<Document> = groups
                    .into_iter()
                    .map(|(k, vals)| {
                        let mut d = Document::new();
                        d.insert("_id", k);
                        for (spec, v) in accs.iter().zip(vals) {
                            d.insert(spec.field.clone(), v);
                        }
                        d
                    })
                    .collect();
                check_memory("$group", out.iter(), ctx)?;
                Ok(out)
            }
            Stage::Sort(s) => {
                check_memory("$sort", docs.iter(), ctx)?;
                let mut docs = docs;
                docs.sort_by(|a, b| s.compare(a, b));
                Ok(docs)
            }
            Stage::Skip(n) => Ok(docs.into_iter().skip(*n).collect()),
            Stage::Limit(n) => Ok(docs.into_iter().take(*n).collect()),
            Stage::Count(field) => {
                if docs.is_empty() {
                    return Ok(Vec::new());
                }
                let n = docs.len();
                let v = i32::try_from(n).map_or(Bson::Int64(n as i64), Bson::Int32);
                Ok(vec![bson::doc! { field.clone(): v }])
            }
            Stage::Unwind(path, index, preserve) => {
                let mut out = Vec::new();
                for d in docs {
                    unwind(d, path, index.as_deref(), *preserve, &mut out);
                }
                Ok(out)
            }
            Stage::ReplaceRoot(e) => docs
                .into_iter()
                .map(|d| {
                    let v = e.eval(&mut Vars::with_let(&d, &ctx.vars))?;
                    match v {
                        Some(Bson::Document(nd)) => Ok(nd),
                        other => Err(loc(
                            40228,
                            format!(
                                "'newRoot' expression must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                                other.as_ref().map_or("MISSING".to_string(), value_string),
                                super::expr::value_type(&other),
                                doc_string(&d)
                            ),
                        )),
                    }
                })
                .collect(),
            Stage::SortByCount(e) => {
                let count = AccSpec::count("count");
                let groups = group_by(&docs, |v| Ok(e.eval(v)?.unwrap_or(Bson::Null)), &[count], &ctx.vars)?;
                let mut out: Vec<Document> = groups
                    .into_iter()
                    .map(|(k, vals)| {
                        let mut d = Document::new();
                        d.insert("_id", k);
                        d.insert("count", vals.into_iter().next().unwrap_or(Bson::Int32(0)));
                        d
                    })
                    .collect();
                out.sort_by(|a, b| {
                    let ca = a.get("count").cloned().unwrap_or(Bson::Null);
                    let cb = b.get("count").cloned().unwrap_or(Bson::Null);
                    crate::doc::compare::cmp_bson(&cb, &ca)
                });
                Ok(out)
            }
            Stage::Bucket(b) => bucket(&docs, b, ctx),
            Stage::Facet(facets) => {
                let mut out = Document::new();
                for (name, p) in facets {
                    let res = p.execute(docs.clone(), ctx)?;
                    out.insert(name.clone(), Bson::Array(res.into_iter().map(Bson::Document).collect()));
                }
                Ok(vec![out])
            }
            Stage::Sample(n) => {
                let mut docs = docs;
                docs.shuffle(&mut rand::rng());
                docs.truncate(*n);
                Ok(docs)
            }
            Stage::Documents(e) => {
                let empty = Document::new();
                match e.eval(&mut Vars::with_let(&empty, &ctx.vars))? {
                    Some(Bson::Array(items)) => items
                        .into_iter()
                        .map(|i| match i {
                            Bson::Document(d) => Ok(d),
                            other => Err(err!(
                                TypeMismatch,
                                "$documents expected an array of objects, found element of type {}",
                                type_name(&other)
                            )),
                        })
                        .collect(),
                    other => Err(loc(
                        5858203,
                        format!("error during $documents: an array is expected, found {}", super::expr::value_type(&other)),
                    )),
                }
            }
            Stage::Lookup(l) => lookup(docs, l, ctx),
            Stage::GraphLookup(g) => graph_lookup(docs, g, ctx),
            Stage::ListLocalSessions => ctx.source.local_sessions(),
            Stage::BucketAuto(g, n, output) => bucket_auto(docs, g, *n, output, ctx),
            Stage::SetWindowFields(w) => w.execute(docs, ctx),
            Stage::UnionWith(coll, pipeline) => {
                let mut docs = docs;
                let other = ctx.source.collection(&ctx.db, coll)?;
                let other = match pipeline {
                    Some(p) => p.execute(other, ctx)?,
                    None => other,
                };
                docs.extend(other);
                Ok(docs)
            }
            // The command layer writes the results (`Pipeline::sink`).
            Stage::Output(sink) => {
                if ctx.in_transaction {
                    let name = match sink {
                        super::output::Sink::Out(..) => "$out",
                        super::output::Sink::Merge(_) => "$merge",
                    };
                    bail!(OperationNotSupportedInTransaction, "{name} cannot be used in a transaction");
                }
                Ok(docs)
            }
        }
    }
}

/// Fails with QueryExceededMemoryLimitNoDiskUseAllowed when a blocking stage's documents exceed
/// the context's memory limit.
fn check_memory<'d>(
    stage: &str,
    docs: impl Iterator<Item = &'d Document>,
    ctx: &Context,
) -> Result<()> {
    let Some(limit) = ctx.memory_limit else { return Ok(()) };
    let mut used = 0usize;
    for d in docs {
        used += approx_doc_size(d);
        if used > limit {
            if stage == "$sort" {
                bail!(
                    QueryExceededMemoryLimitNoDiskUseAllowed,
                    "Sort exceeded memory limit of {limit} bytes, but did not opt in to external sorting."
                );
            }
            bail!(
                QueryExceededMemoryLimitNoDiskUseAllowed,
                "Exceeded memory limit for {stage}, but didn't allow external sort. Pass allowDiskUse:true to opt in."
            );
        }
    }
    Ok(())
}

/// The approximate in-memory size of a document (its BSON size, without encoding it).
fn approx_doc_size(d: &Document) -> usize {
    5 + d.iter().map(|(k, v)| k.len() + 2 + approx_size(v)).sum::<usize>()
}

fn approx_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => approx_doc_size(d),
        Bson::Array(items) => 5 + items.iter().map(|x| 4 + approx_size(x)).sum::<usize>(),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 5 + s.len(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        Bson::RegularExpression(r) => 2 + r.pattern.len() + r.options.len(),
        Bson::JavaScriptCodeWithScope(c) => 14 + c.code.len() + approx_doc_size(&c.scope),
        Bson::Decimal128(_) => 16,
        Bson::ObjectId(_) => 12,
        Bson::DbPointer(_) => 30,
        Bson::Int32(_) => 4,
        Bson::Boolean(_) => 1,
        Bson::Int64(_) | Bson::Double(_) | Bson::DateTime(_) | Bson::Timestamp(_) => 8,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
    }
}

/// Sorts and keeps the first `k` documents (MongoDB's `$sort` + `$limit` coalescence). A
/// stable sort keeps equal keys in input order, so the result equals sort-then-limit.
pub fn top_k(mut docs: Vec<Document>, s: &SortSpec, k: usize) -> Vec<Document> {
    docs.sort_by(|a, b| s.compare(a, b));
    docs.truncate(k);
    docs
}

fn non_negative(v: &Bson, stage: &str) -> Result<usize> {
    let n = match v {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(d) if d.fract() == 0.0 => *d as i64,
        Bson::Decimal128(_) => super::ops::as_int(v).unwrap_or(-1),
        _ => {
            return Err(loc(15957, format!("the {} must be specified as a number", &stage[1..])));
        }
    };
    if n < 0 {
        return Err(loc(15956, format!("Cannot have a negative {}", &stage[1..])));
    }
    Ok(n as usize)
}

fn parse_unset(arg: &Bson) -> Result<Stage> {
    let fields: Vec<&str> = match arg {
        Bson::String(s) => vec![s.as_str()],
        Bson::Array(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for i in items {
                match i {
                    Bson::String(s) => out.push(s.as_str()),
                    _ => {
                        return Err(loc(
                            31120,
                            "$unset specification must be a string or an array containing only string values",
                        ));
                    }
                }
            }
            out
        }
        Bson::Array(_) => {
            return Err(loc(
                31119,
                "$unset specification must be a string or an array with at least one field",
            ));
        }
        _ => return Err(loc(31002, "$unset specification must be a string or an array")),
    };
    for f in &fields {
        if f.is_empty() || f.split('.').any(str::is_empty) {
            return Err(loc(40352, "FieldPath cannot be constructed with empty string"));
        }
    }
    Ok(Stage::Project(super::project::Projection::exclusion(&fields)?))
}

/// Flattens `{a: {b: expr}}` into `("a.b", expr)`; operator objects are expressions.
fn flatten_fields(
    d: &Document,
    prefix: &str,
    scope: &Scope,
    out: &mut Vec<(String, Expression)>,
) -> Result<()> {
    for (k, v) in d {
        if k.starts_with('$') {
            return Err(loc(
                16410,
                "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
            ));
        }
        if k.is_empty() {
            return Err(loc(40352, "FieldPath cannot be constructed with empty string"));
        }
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Bson::Document(sub)
                if !sub.is_empty() && !sub.keys().next().is_some_and(|f| f.starts_with('$')) =>
            {
                flatten_fields(sub, &path, scope, out)?
            }
            other => out.push((path, Expression::parse_in(other, scope)?)),
        }
    }
    Ok(())
}

fn add_fields(d: Document, fields: &[(String, Expression)], ctx: &Context) -> Result<Document> {
    let mut values = Vec::with_capacity(fields.len());
    {
        let mut vars = Vars::with_let(&d, &ctx.vars);
        for (_, e) in fields {
            values.push(e.eval(&mut vars)?);
        }
    }
    let mut out = d;
    for ((path, _), v) in fields.iter().zip(values) {
        let parts: Vec<&str> = path.split('.').collect();
        set_path(&mut out, &parts, v);
    }
    Ok(out)
}

/// Sets (or with `None`, removes) a dotted path with aggregation semantics: arrays on the way
/// get the field set in each element, and scalars on the way become documents.
pub fn set_path(doc: &mut Document, parts: &[&str], v: Option<Bson>) {
    let Some((head, rest)) = parts.split_first() else { return };
    if rest.is_empty() {
        match v {
            Some(x) => {
                doc.insert(*head, x);
            }
            None => {
                doc.remove(*head);
            }
        }
        return;
    }
    if v.is_none() && !doc.contains_key(*head) {
        return;
    }
    let child = doc.entry(head.to_string()).or_insert_with(|| Bson::Document(Document::new()));
    set_in_value(child, rest, v);
}

fn set_in_value(child: &mut Bson, rest: &[&str], v: Option<Bson>) {
    match child {
        Bson::Document(sub) => set_path(sub, rest, v),
        Bson::Array(items) => {
            for item in items.iter_mut() {
                set_in_value(item, rest, v.clone());
            }
        }
        other => {
            if v.is_none() {
                return;
            }
            let mut sub = Document::new();
            set_path(&mut sub, rest, v);
            *other = Bson::Document(sub);
        }
    }
}

fn parse_group(arg: &Bson, scope: &Scope) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(15947, "a group's fields must be specified in an object"));
    };
    let mut id = None;
    let mut accs = Vec::new();
    for (k, v) in spec {
        if k == "_id" {
            id = Some(Expression::parse_in(v, scope)?);
        } else {
            accs.push(AccSpec::parse(k, v, scope)?);
        }
    }
    let Some(id) = id else {
        return Err(loc(15955, "a group specification must include an _id"));
    };
    Ok(Stage::Group(id, accs))
}

fn parse_count(arg: &Bson) -> Result<Stage> {
    let Bson::String(f) = arg else {
        return Err(loc(40156, "the count field must be a non-empty string"));
    };
    if f.is_empty() {
        return Err(loc(40156, "the count field must be a non-empty string"));
    }
    if f.starts_with('$') {
        return Err(loc(40158, "the count field cannot be a $-prefixed path"));
    }
    if f.contains('.') {
        return Err(loc(40160, "the count field cannot contain '.'"));
    }
    Ok(Stage::Count(f.clone()))
}

fn parse_unwind(arg: &Bson) -> Result<Stage> {
    let (path, index, preserve) = match arg {
        Bson::String(p) => (p.clone(), None, false),
        Bson::Document(d) => {
            let mut path = None;
            let mut index = None;
            let mut preserve = false;
            for (k, v) in d {
                match k.as_str() {
                    "path" => match v {
                        Bson::String(p) => path = Some(p.clone()),
                        other => {
                            return Err(loc(
                                28808,
                                format!(
                                    "expected a string as the path for $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "includeArrayIndex" => match v {
                        Bson::String(i) if !i.is_empty() => {
                            if i.starts_with('$') {
                                return Err(loc(
                                    28822,
                                    format!(
                                        "includeArrayIndex option to $unwind stage should not be prefixed with a '$': {i}"
                                    ),
                                ));
                            }
                            index = Some(i.clone());
                        }
                        other => {
                            return Err(loc(
                                28810,
                                format!(
                                    "expected a non-empty string for the includeArrayIndex  option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "preserveNullAndEmptyArrays" => match v {
                        Bson::Boolean(b) => preserve = *b,
                        other => {
                            return Err(loc(
                                28809,
                                format!(
                                    "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    other => {
                        return Err(loc(
                            28811,
                            format!("unrecognized option to $unwind stage: {other}"),
                        ));
                    }
                }
            }
            let Some(path) = path else {
                return Err(loc(28812, "no path specified to $unwind stage"));
            };
            (path, index, preserve)
        }
        other => {
            return Err(loc(
                15981,
                format!(
                    "expected either a string or an object as specification for $unwind stage, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    let Some(p) = path.strip_prefix('$') else {
        return Err(loc(
            28818,
            format!("path option to $unwind stage should be prefixed with a '$': {path}"),
        ));
    };
    if p.is_empty() || p.split('.').any(str::is_empty) {
        return Err(loc(40352, "FieldPath cannot be constructed with empty string"));
    }
    Ok(Stage::Unwind(p.to_string(), index, preserve))
}

fn unwind(d: Document, path: &str, index: Option<&str>, preserve: bool, out: &mut Vec<Document>) {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    let value = super::expr::field_path(&d, &parts);
    let idx_parts: Option<Vec<&str>> = index.map(|i| i.split('.').collect());
    let with_index = |mut doc: Document, i: Option<usize>| {
        if let Some(ip) = &idx_parts {
            let v = i.map_or(Bson::Null, |n| Bson::Int64(n as i64));
            set_path(&mut doc, ip, Some(v));
        }
        doc
    };
    let path_parts: Vec<&str> = path.split('.').collect();
    match value {
        Some(Bson::Array(items)) if !items.is_empty() => {
            for (i, item) in items.into_iter().enumerate() {
                let mut nd = d.clone();
                set_path(&mut nd, &path_parts, Some(item));
                out.push(with_index(nd, Some(i)));
            }
        }
        Some(Bson::Array(_)) => {
            if preserve {
                let mut nd = d;
                // An empty array is removed from the preserved document, as in MongoDB.
                set_path(&mut nd, &path_parts, None);
                out.push(with_index(nd, None));
            }
        }
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            if preserve {
                out.push(with_index(d, None));
            }
        }
        // A non-array value passes through as if it were a one-element array, with a null index.
        Some(_) => out.push(with_index(d, None)),
    }
}

fn parse_bucket(arg: &Bson, scope: &Scope) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(
            40201,
            format!(
                "Argument to $bucket stage must be an object, but found type: {}.",
                type_name(arg)
            ),
        ));
    };
    let (mut group, mut bounds, mut default, mut output) = (None, None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            "groupBy" => {
                let ok = match v {
                    Bson::String(s) => s.starts_with('$'),
                    Bson::Document(_) => true,
                    _ => false,
                };
                if !ok {
                    return Err(loc(
                        40202,
                        format!(
                            "The $bucket 'groupBy' field must be defined as a $-prefixed path or an expression, but found: {}.",
                            value_string(v)
                        ),
                    ));
                }
                group = Some(Expression::parse_in(v, scope)?);
            }
            "boundaries" => match v {
                Bson::Array(items) => bounds = Some(items.clone()),
                other => {
                    return Err(loc(
                        40200,
                        format!(
                            "The $bucket 'boundaries' field must be an array, but found type: {}.",
                            type_name(other)
                        ),
                    ));
                }
            },
            "default" => default = Some(v.clone()),
            "output" => match v {
                Bson::Document(o) => {
                    let mut accs = Vec::new();
                    for (f, a) in o {
                        accs.push(AccSpec::parse(f, a, scope)?);
                    }
                    output = Some(accs);
                }
                other => {
                    return Err(loc(
                        40196,
                        format!(
                            "The $bucket 'output' field must be an object, but found type: {}.",
                            type_name(other)
                        ),
                    ));
                }
            },
            other => return Err(loc(40197, format!("Unrecognized option to $bucket: {other}."))),
        }
    }
    let (Some(group_by), Some(boundaries)) = (group, bounds) else {
        return Err(loc(40198, "$bucket requires 'groupBy' and 'boundaries' to be specified."));
    };
    if boundaries.len() < 2 {
        return Err(loc(
            40192,
            format!(
                "The $bucket 'boundaries' field must have at least 2 values, but found {} value(s).",
                boundaries.len()
            ),
        ));
    }
    for w in boundaries.windows(2) {
        if crate::doc::canonical_rank(&w[0]) != crate::doc::canonical_rank(&w[1]) {
            return Err(loc(
                40193,
                format!(
                    "All values in the the 'boundaries' option to $bucket must have the same type. Found conflicting types {} and {}.",
                    type_name(&w[0]),
                    type_name(&w[1])
                ),
            ));
        }
        if crate::doc::compare::cmp_bson(&w[0], &w[1]) != Ordering::Less {
            return Err(loc(
                40194,
                format!(
                    "The 'boundaries' option to $bucket must be sorted in ascending order, but elements {} and {} are not in ascending order ({} is not less than {}).",
                    value_string(&w[0]),
                    value_string(&w[1]),
                    value_string(&w[0]),
                    value_string(&w[1])
                ),
            ));
        }
    }
    if let Some(d) = &default {
        let first = &boundaries[0];
        let last = &boundaries[boundaries.len() - 1];
        if crate::doc::canonical_rank(d) == crate::doc::canonical_rank(first)
            && crate::doc::compare::cmp_bson(d, first) != Ordering::Less
            && crate::doc::compare::cmp_bson(d, last) == Ordering::Less
        {
            return Err(loc(
                40199,
                "The $bucket 'default' field must be less than the lowest boundary or greater than or equal to the highest boundary.",
            ));
        }
    }
    let output = output.unwrap_or_else(|| vec![AccSpec::count("count")]);
    Ok(Stage::Bucket(Bucket { group_by, boundaries, default, output }))
}

fn bucket(docs: &[Document], b: &Bucket, ctx: &Context) -> Result<Vec<Document>> {
    let key = |v: &mut Vars| -> Result<Bson> {
        let x = b.group_by.eval(v)?.unwrap_or(Bson::Null);
        let n = b.boundaries.len();
        let same_type =
            crate::doc::canonical_rank(&x) == crate::doc::canonical_rank(&b.boundaries[0]);
        if same_type {
            for i in 0..n - 1 {
                if crate::doc::compare::cmp_bson(&x, &b.boundaries[i]) != Ordering::Less
                    && crate::doc::compare::cmp_bson(&x, &b.boundaries[i + 1]) == Ordering::Less
                {
                    return Ok(b.boundaries[i].clone());
                }
            }
        }
        match &b.default {
            Some(d) => Ok(d.clone()),
            None => Err(loc(
                40066,
                "$switch could not find a matching branch for an input, and no default was specified.",
            )),
        }
    };
    let groups = group_by(docs, key, &b.output, &ctx.vars)?;
    let mut out: Vec<(Bson, Document)> = groups
        .into_iter()
        .map(|(k, vals)| {
            let mut d = Document::new();
            d.insert("_id", k.clone());
            for (spec, v) in b.output.iter().zip(vals) {
                d.insert(spec.field.clone(), v);
            }
            (k, d)
        })
        .collect();
    // Buckets come out in boundary order, the default bucket last.
    let rank = |k: &Bson| {
        b.boundaries.iter().position(|x| crate::doc::compare::bson_eq(x, k)).unwrap_or(usize::MAX)
    };
    out.sort_by_key(|(k, _)| rank(k));
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

fn parse_bucket_auto(arg: &Bson, scope: &Scope) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(
            40240,
            format!(
                "The argument to $bucketAuto must be an object, but found type: {}",
                type_name(arg)
            ),
        ));
    };
    let (mut group, mut buckets, mut output) = (None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            "groupBy" => group = Some(Expression::parse_in(v, scope)?),
            "buckets" => match super::ops::as_int(v) {
                Some(n) if n > 0 && n <= i64::from(i32::MAX) => buckets = Some(n as usize),
                _ => {
                    return Err(loc(
                        40243,
                        format!(
                            "The $bucketAuto 'buckets' field must be greater than 0, but found: {}",
                            value_string(v)
                        ),
                    ));
                }
            },
            "output" => match v {
                Bson::Document(o) => {
                    let mut accs = Vec::new();
                    for (f, a) in o {
                        accs.push(AccSpec::parse(f, a, scope)?);
                    }
                    output = Some(accs);
                }
                other => {
                    return Err(loc(
                        40244,
                        format!(
                            "The $bucketAuto 'output' field must be an object, but found type: {}",
                            type_name(other)
                        ),
                    ));
                }
            },
            // TODO(#7): preferred-number granularities.
            "granularity" => {
                return Err(err!(NotImplemented, "$bucketAuto 'granularity' is not supported"));
            }
            other => {
                return Err(loc(40245, format!("Unrecognized option to $bucketAuto: {other}.")));
            }
        }
    }
    let (Some(group), Some(buckets)) = (group, buckets) else {
        return Err(loc(40246, "$bucketAuto requires 'groupBy' and 'buckets' to be specified"));
    };
    Ok(Stage::BucketAuto(group, buckets, output.unwrap_or_else(|| vec![AccSpec::count("count")])))
}

/// `$bucketAuto`: sorts by the groupBy value and cuts the documents into `n` buckets of about
/// equal size, never splitting equal values; each bucket's `max` is the next bucket's `min`.
fn bucket_auto(
    docs: Vec<Document>,
    group: &Expression,
    n: usize,
    output: &[AccSpec],
    ctx: &Context,
) -> Result<Vec<Document>> {
    let mut keyed = Vec::with_capacity(docs.len());
    for d in docs {
        let k = group.eval(&mut Vars::with_let(&d, &ctx.vars))?.unwrap_or(Bson::Null);
        keyed.push((k, d));
    }
    keyed.sort_by(|a, b| crate::doc::compare::cmp_bson(&a.0, &b.0));
    let size = ((keyed.len() as f64) / (n as f64)).round().max(1.0) as usize;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < keyed.len() {
        let mut end = (start + size).min(keyed.len());
        if ranges.len() + 1 == n {
            end = keyed.len();
        }
        while end < keyed.len() && crate::doc::compare::bson_eq(&keyed[end].0, &keyed[end - 1].0) {
            end += 1;
        }
        ranges.push((start, end));
        start = end;
    }
    let mut out = Vec::with_capacity(ranges.len());
    for (i, (lo, hi)) in ranges.iter().enumerate() {
        let min = keyed[*lo].0.clone();
        let max = match ranges.get(i + 1) {
            Some((next, _)) => keyed[*next].0.clone(),
            None => keyed[hi - 1].0.clone(),
        };
        let members: Vec<Document> = keyed[*lo..*hi].iter().map(|(_, d)| d.clone()).collect();
        let groups = group_by(&members, |_| Ok(Bson::Null), output, &ctx.vars)?;
        let mut d = Document::new();
        d.insert("_id", bson::doc! {"min": min, "max": max});
        if let Some((_, vals)) = groups.into_iter().next() {
            for (spec, v) in output.iter().zip(vals) {
                d.insert(spec.field.clone(), v);
            }
        }
        out.push(d);
    }
    Ok(out)
}

fn parse_facet(arg: &Bson, let_vars: &Document) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(15947, "the $facet specification must be a non-empty object"));
    };
    if spec.is_empty() {
        return Err(loc(40169, "the $facet specification must be a non-empty object"));
    }
    let mut out = Vec::new();
    for (name, p) in spec {
        let Bson::Array(stages) = p else {
            return Err(loc(
                40170,
                format!("arguments to $facet must be arrays, {name} is type {}", type_name(p)),
            ));
        };
        let docs = stage_docs(stages, "$facet")?;
        for s in &docs {
            let n = s.keys().next().map_or("", String::as_str);
            if matches!(n, "$facet" | "$out" | "$merge" | "$documents") {
                return Err(loc(
                    40600,
                    format!("{n} is not allowed to be used within a $facet stage"),
                ));
            }
        }
        out.push((name.clone(), Pipeline::parse(&docs, let_vars)?));
    }
    Ok(Stage::Facet(out))
}

fn stage_docs(stages: &[Bson], ctx: &str) -> Result<Vec<Document>> {
    stages
        .iter()
        .map(|s| match s {
            Bson::Document(d) => Ok(d.clone()),
            other => Err(loc(
                40171,
                format!(
                    "Each element of the '{ctx}' pipeline must be an object, found {}",
                    type_name(other)
                ),
            )),
        })
        .collect()
}

fn parse_lookup(arg: &Bson, scope: &Scope, outer_vars: &Document) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(40319, "the $lookup specification must be an Object"));
    };
    let mut l = Lookup {
        from: None,
        local_field: None,
        foreign_field: None,
        as_field: String::new(),
        let_vars: Vec::new(),
        pipeline: None,
    };
    let mut has_as = false;
    for (k, v) in spec {
        let s = || match v {
            Bson::String(s) => Ok(s.clone()),
            other => Err(loc(
                4570,
                format!(
                    "$lookup argument '{k}: {}' must be a string, is type {}",
                    value_string(other),
                    type_name(other)
                ),
            )),
        };
        match k.as_str() {
            "from" => {
                l.from = Some(match v {
                    Bson::Document(d) => match d.get("coll") {
                        Some(Bson::String(c)) => c.clone(),
                        _ => {
                            return Err(err!(
                                FailedToParse,
                                "$lookup 'from' field must specify 'coll'"
                            ));
                        }
                    },
                    _ => s()?,
                })
            }
            "localField" => l.local_field = Some(s()?),
            "foreignField" => l.foreign_field = Some(s()?),
            "as" => {
                l.as_field = s()?;
                has_as = true;
            }
            "let" => {
                let Bson::Document(vars) = v else {
                    return Err(err!(
                        FailedToParse,
                        "$lookup argument 'let: {}' must be an object, is type {}",
                        value_string(v),
                        type_name(v)
                    ));
                };
                for (name, e) in vars {
                    super::expr::validate_var_name(name)?;
                    l.let_vars.push((name.clone(), Expression::parse_in(e, scope)?));
                }
            }
            "pipeline" => {
                let Bson::Array(stages) = v else {
                    return Err(err!(
                        FailedToParse,
                        "$lookup argument 'pipeline' must be an array, is type {}",
                        type_name(v)
                    ));
                };
                l.pipeline = Some(stage_docs(stages, "$lookup")?);
            }
            other => return Err(err!(FailedToParse, "unknown argument to $lookup: {other}")),
        }
    }
    if !has_as {
        return Err(err!(FailedToParse, "must specify 'as' field for a $lookup"));
    }
    if l.pipeline.is_none() && (l.local_field.is_none() || l.foreign_field.is_none()) {
        return Err(err!(
            FailedToParse,
            "$lookup requires either 'pipeline' or both 'localField' and 'foreignField' to be specified"
        ));
    }
    if l.local_field.is_some() != l.foreign_field.is_some() {
        return Err(err!(
            FailedToParse,
            "$lookup requires both or neither of 'localField' and 'foreignField' to be specified"
        ));
    }
    if l.from.is_none() {
        let docs_first = l
            .pipeline
            .as_ref()
            .and_then(|p| p.first())
            .is_some_and(|s| s.contains_key("$documents"));
        if !docs_first {
            return Err(err!(FailedToParse, "must specify 'from' field for a $lookup"));
        }
    }
    // The sub-pipeline is parsed again per document with the variables' values; parsing it
    // now (with placeholders) reports its errors even when there is no input.
    if let Some(stages) = &l.pipeline {
        let mut names = outer_vars.clone();
        for (name, _) in &l.let_vars {
            names.insert(name.clone(), Bson::Null);
        }
        Pipeline::parse(stages, &names)?;
    }
    Ok(Stage::Lookup(Box::new(l)))
}

/// An equality index over the foreign collection for `$lookup`: every value a query equality
/// on `field` would match (array elements and the whole array; null for a missing field).
fn foreign_index(
    foreign: &[Document],
    field: &str,
) -> std::collections::BTreeMap<super::group::Key, Vec<usize>> {
    let mut index: std::collections::BTreeMap<super::group::Key, Vec<usize>> = Default::default();
    for (i, d) in foreign.iter().enumerate() {
        let mut keys: Vec<Bson> =
            crate::doc::path::collect_values(d, field).into_iter().cloned().collect();
        match crate::doc::path::get_path(d, field) {
            Some(whole @ Bson::Array(_)) => keys.push(whole.clone()),
            None if keys.is_empty() => keys.push(Bson::Null),
            _ => {}
        }
        for k in keys {
            let k = if matches!(k, Bson::Undefined) { Bson::Null } else { k };
            index.entry(super::group::Key(k)).or_default().push(i);
        }
    }
    index
}

fn lookup(docs: Vec<Document>, l: &Lookup, ctx: &Context) -> Result<Vec<Document>> {
    let foreign = match &l.from {
        Some(c) => ctx.source.collection(&ctx.db, c)?,
        None => Vec::new(),
    };
    let index = l.foreign_field.as_deref().map(|f| foreign_index(&foreign, f));
    let mut out = Vec::with_capacity(docs.len());
    for mut d in docs {
        let mut candidates: Vec<Document> = match (&l.local_field, &l.foreign_field, &index) {
            (Some(local), Some(foreign_field), Some(index)) => {
                let parts: Vec<String> = local.split('.').map(str::to_string).collect();
                let values = match super::expr::field_path(&d, &parts) {
                    None | Some(Bson::Null) => vec![Bson::Null],
                    Some(Bson::Array(items)) if items.is_empty() => vec![Bson::Null],
                    Some(Bson::Array(items)) => items,
                    Some(v) => vec![v],
                };
                if values.iter().any(|v| matches!(v, Bson::RegularExpression(_))) {
                    // A regex matches like a query `$in` does; the equality index cannot.
                    let mut f = Document::new();
                    f.insert(foreign_field.clone(), bson::doc! {"$in": values});
                    let filter = Filter::parse(&f)?;
                    foreign.iter().filter(|x| filter.matches(x)).cloned().collect()
                } else {
                    let mut hits: Vec<usize> = values
                        .into_iter()
                        .filter_map(|v| index.get(&super::group::Key(v)))
                        .flatten()
                        .copied()
                        .collect();
                    hits.sort_unstable();
                    hits.dedup();
                    hits.into_iter().map(|i| foreign[i].clone()).collect()
                }
            }
            _ => foreign.clone(),
        };
        if let Some(stages) = &l.pipeline {
            let mut vars = ctx.vars.clone();
            {
                let mut v = Vars::with_let(&d, &ctx.vars);
                for (name, e) in &l.let_vars {
                    vars.insert(name.clone(), e.eval(&mut v)?.unwrap_or(Bson::Null));
                }
            }
            let sub = Context {
                db: ctx.db.clone(),
                source: ctx.source,
                vars,
                in_transaction: ctx.in_transaction,
                memory_limit: ctx.memory_limit,
            };
            candidates = super::run_with(candidates, stages, &sub)?;
        }
        let parts: Vec<&str> = l.as_field.split('.').collect();
        set_path(
            &mut d,
            &parts,
            Some(Bson::Array(candidates.into_iter().map(Bson::Document).collect())),
        );
        out.push(d);
    }
    Ok(out)
}

fn parse_graph_lookup(arg: &Bson, scope: &Scope) -> Result<Stage> {
    let Bson::Document(spec) = arg else {
        return Err(loc(40327, "the $graphLookup stage specification must be an object"));
    };
    let string = |k: &str| -> Result<Option<String>> {
        match spec.get(k) {
            None => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(loc(
                40103,
                format!("expected string as argument for '{k}', found: {}", type_name(other)),
            )),
        }
    };
    for k in spec.keys() {
        if !matches!(
            k.as_str(),
            "from"
                | "startWith"
                | "connectFromField"
                | "connectToField"
                | "as"
                | "maxDepth"
                | "depthField"
                | "restrictSearchWithMatch"
        ) {
            return Err(loc(40104, format!("Unknown argument to $graphLookup: {k}")));
        }
    }
    let max_depth = match spec.get("maxDepth") {
        None => None,
        Some(v) => match super::ops::as_int(v) {
            Some(n) if n >= 0 => Some(n),
            _ => {
                return Err(loc(
                    40101,
                    format!("maxDepth must be nonnegative, found: {}", value_string(v)),
                ));
            }
        },
    };
    let restrict = match spec.get("restrictSearchWithMatch") {
        None => None,
        Some(Bson::Document(f)) => Some(Filter::parse(f)?),
        Some(other) => {
            return Err(loc(
                40185,
                format!("restrictSearchWithMatch must be an object, found {}", type_name(other)),
            ));
        }
    };
    let (Some(from), Some(start), Some(connect_from), Some(connect_to), Some(as_field)) = (
        string("from")?,
        spec.get("startWith"),
        string("connectFromField")?,
        string("connectToField")?,
        string("as")?,
    ) else {
        return Err(loc(
            40105,
            "from, as, startWith, connectFromField and connectToField must all be specified",
        ));
    };
    Ok(Stage::GraphLookup(Box::new(GraphLookup {
        from,
        start_with: Expression::parse_in(start, scope)?,
        connect_from,
        connect_to,
        as_field,
        max_depth,
        depth_field: string("depthField")?,
        restrict,
    })))
}

/// Breadth-first search from `startWith` through `connectFromField` to `connectToField`; each
/// reachable document appears once, with its depth in `depthField` if asked for.
fn graph_lookup(docs: Vec<Document>, g: &GraphLookup, ctx: &Context) -> Result<Vec<Document>> {
    let mut foreign = ctx.source.collection(&ctx.db, &g.from)?;
    if let Some(f) = &g.restrict {
        foreign.retain(|d| f.matches(d));
    }
    let index = foreign_index(&foreign, &g.connect_to);
    let mut out = Vec::with_capacity(docs.len());
    for mut d in docs {
        let start = g.start_with.eval(&mut Vars::with_let(&d, &ctx.vars))?;
        let mut frontier: Vec<Bson> = match start {
            None => Vec::new(),
            Some(Bson::Array(items)) => items,
            Some(v) => vec![v],
        };
        let mut seen = vec![false; foreign.len()];
        let mut found = Vec::new();
        let mut depth = 0i64;
        while !frontier.is_empty() && g.max_depth.is_none_or(|m| depth <= m) {
            let mut next = Vec::new();
            for v in frontier {
                for &i in index.get(&super::group::Key(v)).into_iter().flatten() {
                    if seen[i] {
                        continue;
                    }
                    seen[i] = true;
                    let mut hit = foreign[i].clone();
                    next.extend(
                        crate::doc::path::collect_values(&hit, &g.connect_from)
                            .into_iter()
                            .cloned(),
                    );
                    if let Some(f) = &g.depth_field {
                        let parts: Vec<&str> = f.split('.').collect();
                        set_path(&mut hit, &parts, Some(Bson::Int64(depth)));
                    }
                    found.push(Bson::Document(hit));
                }
            }
            frontier = next;
            depth += 1;
        }
        let parts: Vec<&str> = g.as_field.split('.').collect();
        set_path(&mut d, &parts, Some(Bson::Array(found)));
        out.push(d);
    }
    Ok(out)
}

fn parse_union(arg: &Bson, let_vars: &Document) -> Result<Stage> {
    match arg {
        Bson::String(c) => Ok(Stage::UnionWith(c.clone(), None)),
        Bson::Document(d) => {
            let coll = match d.get("coll") {
                Some(Bson::String(c)) => c.clone(),
                Some(other) => {
                    return Err(err!(
                        TypeMismatch,
                        "BSON field '$unionWith.coll' is the wrong type '{}', expected type 'string'",
                        type_name(other)
                    ));
                }
                None => {
                    return Err(loc(
                        40414,
                        "BSON field '$unionWith.coll' is missing but a required field",
                    ));
                }
            };
            let pipeline = match d.get("pipeline") {
                Some(Bson::Array(stages)) => {
                    Some(Pipeline::parse(&stage_docs(stages, "$unionWith")?, let_vars)?)
                }
                Some(other) => {
                    return Err(err!(
                        TypeMismatch,
                        "BSON field '$unionWith.pipeline' is the wrong type '{}', expected type 'array'",
                        type_name(other)
                    ));
                }
                None => None,
            };
            for k in d.keys() {
                if k != "coll" && k != "pipeline" {
                    return Err(loc(
                        40415,
                        format!("BSON field '$unionWith.{k}' is an unknown field."),
                    ));
                }
            }
            Ok(Stage::UnionWith(coll, pipeline))
        }
        other => Err(Error::new(
            Code::from_number(40561),
            format!(
                "the $unionWith stage specification must be an object or string, but found {}",
                type_name(other)
            ),
        )),
    }
}
