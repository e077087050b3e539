//! Pipeline stages: parsing and execution.
//!
//! Every stage takes the whole vector of documents and returns a new one. Streaming stages
//! (`$match`, `$project`, `$addFields`, `$unwind`, ...) map or filter; blocking stages (`$group`,
//! `$sort`, `$bucket`, `$facet`) need everything first anyway, so one in-memory representation
//! serves both.

use bson::{Bson, Document};
use rand::seq::SliceRandom;

use super::group::AccSpec;
use super::spill;
use super::{Context, Pipeline};
use crate::doc::fmt::{doc_string, value_string};
use crate::error::{Error, Result};
use crate::expr::{Expression, Scope, Vars, loc, type_name};
use crate::memory;
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
    Group(Expression, Vec<AccSpec>, Option<crate::collation::CollationRef>),
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
    /// `$sortByCount`: the grouping expression, and the collation its groups follow.
    SortByCount(Expression, Option<crate::collation::CollationRef>),
    /// `$bucket`
    Bucket(super::bucket::Bucket),
    /// `$facet`: named sub-pipelines.
    Facet(Vec<(String, Pipeline)>),
    /// `$sample`: size.
    Sample(usize),
    /// `$documents`: the documents expression.
    Documents(Expression),
    /// `$lookup`
    Lookup(Box<super::lookup::Lookup>),
    /// `$graphLookup`
    GraphLookup(Box<super::lookup::GraphLookup>),
    /// `$redact`: the expression deciding descend/prune/keep per (sub)document.
    Redact(Expression),
    /// `$listLocalSessions` (the sessions come from the [`super::Source`]).
    ListLocalSessions,
    /// `$currentOp` (the operations come from the [`super::Source`]).
    CurrentOp(CurrentOp),
    /// `$bucketAuto`
    BucketAuto(Box<super::bucket::BucketAuto>),
    /// `$setWindowFields`
    SetWindowFields(Box<super::window::SetWindowFields>),
    /// `$unionWith`: collection and pipeline.
    UnionWith(String, Option<Pipeline>),
    /// `$out` / `$merge`: the results are written by the command layer (see [`super::output`]).
    Output(super::output::Sink),
    /// `$densify`
    Densify(Box<super::densify::Densify>),
    /// `$fill`, as the stages it stands for.
    Fill(Vec<Stage>),
    /// `$collStats`
    CollStats(super::stats::CollStats),
    /// `$indexStats`
    IndexStats,
    /// `$geoNear`
    GeoNear(Box<super::geonear::GeoNear>),
}

/// MongoDB's refusal of the search index commands and `$listSearchIndexes` on a server without
/// a search index management service (SearchNotEnabled).
pub const SEARCH_INDEXES_UNAVAILABLE: &str = "Using Atlas Search Database Commands and the \
    $listSearchIndexes aggregation stage requires additional configuration. Please connect to \
    Atlas or an AtlasCLI local deployment to enable. For more information on how to connect, see \
    https://dochub.mongodb.org/core/atlas-cli-deploy-local-reqs.";

/// MongoDB's refusal of `$search`, `$searchMeta` and `$vectorSearch` on a server without a
/// search service (SearchNotEnabled).
pub const SEARCH_UNAVAILABLE: &str = "Using $search and $vectorSearch aggregation stages \
    requires additional configuration. Please connect to Atlas or an AtlasCLI local deployment \
    to enable. For more information on how to connect, see \
    https://dochub.mongodb.org/core/atlas-cli-deploy-local-reqs.";

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
            "$skip" => Ok(Stage::Skip(non_negative(arg, "$skip", 5107200)?)),
            "$limit" => {
                let n = non_negative(arg, "$limit", 5107201)?;
                if n == 0 {
                    return Err(loc(15958, "the limit must be positive"));
                }
                Ok(Stage::Limit(n))
            }
            "$count" => parse_count(arg),
            "$unwind" => super::unwind::parse_unwind(arg),
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
                        return Err(Error::unknown_field(&format!("$replaceRoot.{k}")));
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
                Ok(Stage::SortByCount(Expression::parse_in(arg, scope)?, None))
            }
            "$bucket" => super::bucket::parse_bucket(arg, scope),
            "$facet" => parse_facet(arg, let_vars),
            "$sample" => {
                let size = match arg {
                    Bson::Document(d) => match d.get("size") {
                        Some(v) if crate::expr::as_int(v).is_some() => {
                            crate::expr::as_int(v).unwrap_or(0)
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
            "$lookup" => super::lookup::parse_lookup(arg, scope, let_vars),
            "$unionWith" => super::lookup::parse_union(arg, let_vars),
            "$graphLookup" => super::lookup::parse_graph_lookup(arg, scope),
            "$bucketAuto" => super::bucket::parse_bucket_auto(arg, scope),
            "$setWindowFields" => Ok(Stage::SetWindowFields(Box::new(
                super::window::SetWindowFields::parse(arg, scope)?,
            ))),
            "$out" => Ok(Stage::Output(super::output::parse_out(arg)?)),
            "$merge" => Ok(Stage::Output(super::output::parse_merge(arg)?)),
            "$redact" => Ok(Stage::Redact(Expression::parse_in(arg, scope)?)),
            "$listLocalSessions" => match arg {
                Bson::Document(_) => Ok(Stage::ListLocalSessions),
                other => Err(err!(
                    TypeMismatch,
                    "$listLocalSessions expects an object, found {}",
                    type_name(other)
                )),
            },
            "$currentOp" => Ok(Stage::CurrentOp(CurrentOp::parse(arg)?)),
            "$densify" => Ok(Stage::Densify(Box::new(super::densify::Densify::parse(arg)?))),
            "$fill" => Ok(Stage::Fill(super::fill::parse(arg, scope, let_vars)?)),
            "$collStats" => Ok(Stage::CollStats(super::stats::CollStats::parse(arg)?)),
            "$indexStats" => {
                super::stats::parse_index_stats(arg)?;
                Ok(Stage::IndexStats)
            }
            "$geoNear" => Ok(Stage::GeoNear(Box::new(super::geonear::GeoNear::parse(arg)?))),
            // Server diagnostics Folio does not keep (listed in docs/compatibility.md, "Not
            // implemented"). `$changeStream` opens a change stream only as the first stage of
            // an `aggregate` (see `crate::changes`), never inside a pipeline.
            "$listSessions" | "$changeStream" | "$planCacheStats" => {
                Err(err!(NotImplemented, "the {name} stage is not supported"))
            }
            // Atlas Search lives in a separate service (mongot) that Folio, like a mongod
            // without one, does not have: refused as such a mongod refuses them.
            "$listSearchIndexes" => Err(err!(SearchNotEnabled, "{}", SEARCH_INDEXES_UNAVAILABLE)),
            "$search" | "$searchMeta" | "$vectorSearch" => {
                Err(err!(SearchNotEnabled, "{}", SEARCH_UNAVAILABLE))
            }
            other => Err(loc(40324, format!("Unrecognized pipeline stage name: '{other}'"))),
        }
    }

    /// Whether the stage's output replaces its input documents (rather than passing them on or
    /// extending them), so that what earlier stages built no longer lives on after it.
    pub(super) fn replaces_input(&self) -> bool {
        matches!(
            self,
            Stage::Project(_)
                | Stage::ReplaceRoot(_)
                | Stage::Group(..)
                | Stage::SortByCount(..)
                | Stage::Bucket(_)
                | Stage::BucketAuto(..)
                | Stage::Count(_)
                | Stage::Facet(_)
        )
    }

    /// Runs the stage.
    pub fn execute(&self, docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        match self {
            Stage::Match(f) => Ok(docs.into_iter().filter(|d| f.matches(d)).collect()),
            Stage::GeoNear(g) => g.execute(docs, ctx),
            Stage::Project(p) if p.computes() => {
                // Computed documents are new data: hold them against the operation's memory.
                let mut held = memory::Reservation::new("$project");
                let out = docs
                    .iter()
                    .map(|d| {
                        let out = p.apply(d, &mut Vars::with_let(d, &ctx.vars))?;
                        held.grow(memory::doc_heap_size(&out))?;
                        Ok(out)
                    })
                    .collect::<Result<Vec<_>>>()?;
                held.hand_on();
                Ok(out)
            }
            Stage::Project(p) => {
                docs.iter().map(|d| p.apply(d, &mut Vars::with_let(d, &ctx.vars))).collect()
            }
            Stage::AddFields(fields) => {
                let mut held = memory::Reservation::new("$addFields");
                let out = docs
                    .into_iter()
                    .map(|d| add_fields(d, fields, ctx, &mut held))
                    .collect::<Result<Vec<_>>>()?;
                held.hand_on();
                Ok(out)
            }
            Stage::Group(key, accs, collation) => {
                let key = |v: &mut Vars| Ok(key.eval(v)?.unwrap_or(Bson::Null));
                let identity = |k: &Bson| match collation {
                    Some(c) => c.transform(k),
                    None => k.clone(),
                };
                let groups = spill::group(
                    docs,
                    key,
                    &identity,
                    accs,
                    &ctx.vars,
                    ctx.memory_limit,
                    "$group",
                )?;
                Ok(groups
                    .into_iter()
                    .map(|(k, vals)| {
                        let mut d = Document::new();
                        d.insert("_id", k);
                        for (spec, v) in accs.iter().zip(vals) {
                            d.insert(spec.field.clone(), v);
                        }
                        d
                    })
                    .collect())
            }
            Stage::Sort(s) => spill::sort(docs, |a, b| s.compare(a, b), ctx.memory_limit, "$sort"),
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
                let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                let mut held = memory::Reservation::new("$unwind");
                for d in docs {
                    // Every element becomes a copy of the rest of the document: hold what the
                    // copies will take before making them.
                    if let Some(Bson::Array(items)) = crate::expr::field_path(&d, &parts)
                        && items.len() > 1
                    {
                        let array = items.iter().map(memory::heap_size).sum::<usize>();
                        let rest = memory::doc_heap_size(&d).saturating_sub(array);
                        held.grow(rest.saturating_mul(items.len() - 1))?;
                    }
                    super::unwind::unwind(d, path, index.as_deref(), *preserve, &mut out);
                }
                held.hand_on();
                Ok(out)
            }
            Stage::ReplaceRoot(e) => {
                let mut held = memory::Reservation::new("$replaceRoot");
                let out = docs
                    .into_iter()
                    .map(|d| {
                        let v = e.eval(&mut Vars::with_let(&d, &ctx.vars))?;
                        match v {
                            Some(Bson::Document(nd)) => {
                                held.grow(memory::doc_heap_size(&nd))?;
                                Ok(nd)
                            }
                            other => Err(loc(
                                40228,
                                format!(
                                    "'newRoot' expression must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                                    other.as_ref().map_or("MISSING".to_string(), value_string),
                                    crate::expr::value_type(&other),
                                    doc_string(&d)
                                ),
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                held.hand_on();
                Ok(out)
            }
            Stage::SortByCount(e, collation) => {
                let count = AccSpec::count("count");
                let key = |v: &mut Vars| Ok(e.eval(v)?.unwrap_or(Bson::Null));
                let identity = |k: &Bson| match collation {
                    Some(c) => c.transform(k),
                    None => k.clone(),
                };
                let groups = spill::group(
                    docs,
                    key,
                    &identity,
                    &[count],
                    &ctx.vars,
                    ctx.memory_limit,
                    "$group",
                )?;
                let out: Vec<Document> = groups
                    .into_iter()
                    .map(|(k, vals)| {
                        let mut d = Document::new();
                        d.insert("_id", k);
                        d.insert("count", vals.into_iter().next().unwrap_or(Bson::Int32(0)));
                        d
                    })
                    .collect();
                let by_count = |a: &Document, b: &Document| {
                    let ca = a.get("count").unwrap_or(&Bson::Null);
                    let cb = b.get("count").unwrap_or(&Bson::Null);
                    crate::doc::compare::cmp_bson(cb, ca)
                };
                spill::sort(out, by_count, ctx.memory_limit, "$sort")
            }
            Stage::Bucket(b) => super::bucket::bucket(docs, b, ctx),
            Stage::Facet(facets) => {
                // Each sub-pipeline gets its own copy of the input; hold one copy's worth.
                let mut held = memory::Reservation::new("$facet");
                if facets.len() > 1 {
                    held.grow(docs.iter().map(memory::doc_heap_size).sum())?;
                }
                let mut out = Document::new();
                let mut used = 0usize;
                for (name, p) in facets {
                    let res = p.execute(docs.clone(), ctx)?;
                    // MongoDB's `internalQueryFacetMaxOutputDocSizeBytes`, counted as each
                    // facet's results arrive, before the output document is assembled.
                    for d in &res {
                        used = used.saturating_add(memory::bson_size(d));
                        if used > memory::MAX_FACET_BYTES {
                            return Err(loc(
                                4031700,
                                format!(
                                    "document constructed by $facet is {used} bytes, which exceeds the limit of {} bytes",
                                    memory::MAX_FACET_BYTES
                                ),
                            ));
                        }
                    }
                    out.insert(
                        name.clone(),
                        Bson::Array(res.into_iter().map(Bson::Document).collect()),
                    );
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
                        format!(
                            "error during $documents: an array is expected, found {}",
                            crate::expr::value_type(&other)
                        ),
                    )),
                }
            }
            Stage::Lookup(l) => super::lookup::lookup(docs, l, ctx, None),
            Stage::GraphLookup(g) => super::lookup::graph_lookup(docs, g, ctx),
            Stage::ListLocalSessions => ctx.source.local_sessions(),
            Stage::CurrentOp(c) => {
                if ctx.db != "admin" || !ctx.collection.is_empty() {
                    return Err(err!(
                        InvalidNamespace,
                        "$currentOp must be run against the 'admin' database with {{aggregate: 1}}"
                    ));
                }
                ctx.source.current_ops(c)
            }
            Stage::Redact(e) => {
                let mut out = Vec::with_capacity(docs.len());
                for d in docs {
                    if let Some(r) = redact(&d, e, ctx)? {
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Stage::BucketAuto(b) => super::bucket::bucket_auto(docs, b, ctx),
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
            Stage::Densify(d) => d.execute(docs, ctx),
            Stage::Fill(stages) => {
                let mut docs = docs;
                for s in stages {
                    docs = s.execute(docs, ctx)?;
                }
                Ok(docs)
            }
            Stage::CollStats(c) => {
                not_in_transaction("$collStats", ctx)?;
                c.execute(ctx)
            }
            Stage::IndexStats => {
                not_in_transaction("$indexStats", ctx)?;
                super::stats::index_stats(ctx)
            }
            // The command layer writes the results (`Pipeline::sink`).
            Stage::Output(sink) => {
                if ctx.in_transaction {
                    let name = match sink {
                        super::output::Sink::Out(..) => "$out",
                        super::output::Sink::Merge(_) => "$merge",
                    };
                    bail!(
                        OperationNotSupportedInTransaction,
                        "{name} cannot be used in a transaction"
                    );
                }
                Ok(docs)
            }
        }
    }
}

/// Stages that read server state rather than the snapshot cannot run in a transaction.
fn not_in_transaction(stage: &str, ctx: &Context) -> Result<()> {
    if ctx.in_transaction {
        bail!(OperationNotSupportedInTransaction, "{stage} cannot be used in a transaction");
    }
    Ok(())
}

/// `$redact` at one level: the expression (with this level as `$$CURRENT`) says whether to
/// keep the document whole, prune it, or keep its scalar fields and descend into the
/// embedded documents (also inside arrays).
fn redact(d: &Document, e: &Expression, ctx: &Context) -> Result<Option<Document>> {
    let decision = e.eval(&mut Vars::with_let(d, &ctx.vars))?;
    match decision.as_ref().and_then(|v| v.as_str()) {
        Some("keep") => Ok(Some(d.clone())),
        Some("prune") => Ok(None),
        Some("descend") => {
            let mut out = Document::new();
            for (k, v) in d {
                match v {
                    Bson::Document(sub) => {
                        if let Some(r) = redact(sub, e, ctx)? {
                            out.insert(k.clone(), r);
                        }
                    }
                    Bson::Array(items) => {
                        out.insert(k.clone(), redact_array(items, e, ctx)?);
                    }
                    other => {
                        out.insert(k.clone(), other.clone());
                    }
                }
            }
            Ok(Some(out))
        }
        _ => Err(loc(
            17053,
            format!(
                "$redact's expression should not return anything aside from the variables $$KEEP, $$DESCEND, and $$PRUNE, but returned {}",
                decision.as_ref().map_or("missing".to_string(), value_string)
            ),
        )),
    }
}

fn redact_array(items: &[Bson], e: &Expression, ctx: &Context) -> Result<Bson> {
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        match i {
            Bson::Document(sub) => {
                if let Some(r) = redact(sub, e, ctx)? {
                    out.push(Bson::Document(r));
                }
            }
            Bson::Array(inner) => out.push(redact_array(inner, e, ctx)?),
            other => out.push(other.clone()),
        }
    }
    Ok(Bson::Array(out))
}

/// Sorts and keeps the first `k` documents (MongoDB's `$sort` + `$limit` coalescence). A
/// stable sort keeps equal keys in input order, so the result equals sort-then-limit.
pub fn top_k(mut docs: Vec<Document>, s: &SortSpec, k: usize) -> Vec<Document> {
    docs.sort_by(|a, b| s.compare(a, b));
    docs.truncate(k);
    docs
}

/// `$skip`'s and `$limit`'s argument: an exact, non-negative 64-bit integer (a double must be
/// integral and in range: `1e300` is refused rather than clamped). `code` is the stage's own.
fn non_negative(v: &Bson, stage: &str, code: i32) -> Result<usize> {
    match crate::doc::parse_non_negative_integer_element(stage, v) {
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Err(reason) => Err(loc(code, format!("invalid argument to {stage} stage: {reason}"))),
    }
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

fn add_fields(
    d: Document,
    fields: &[(String, Expression)],
    ctx: &Context,
    held: &mut memory::Reservation,
) -> Result<Document> {
    let mut values = Vec::with_capacity(fields.len());
    {
        let mut vars = Vars::with_let(&d, &ctx.vars);
        for (_, e) in fields {
            let v = e.eval(&mut vars)?;
            // Computed values are what this stage adds to its input; small scalars cost a match.
            if let Some(x @ (Bson::Array(_) | Bson::Document(_) | Bson::String(_))) = &v {
                held.grow(memory::heap_size(x))?;
            }
            values.push(v);
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
    Ok(Stage::Group(id, accs, None))
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

pub(super) fn stage_docs(stages: &[Bson], ctx: &str) -> Result<Vec<Document>> {
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

/// `$currentOp`'s options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentOp {
    /// `allUsers`: every user's operations, not only the caller's.
    pub all_users: bool,
    /// `idleSessions`: also sessions holding an open transaction between statements.
    pub idle_sessions: bool,
}

impl CurrentOp {
    /// Parses `{$currentOp: {...}}`. `idleConnections` and `idleCursors` ask for what Folio does
    /// not track (connections and cursors with no operation running) and are refused when
    /// true; `localOps`, `backtrace`, `truncateOps` and `targetAllNodes` change nothing on a
    /// single node whose operation documents are never truncated.
    fn parse(arg: &Bson) -> Result<CurrentOp> {
        let Bson::Document(d) = arg else {
            return Err(err!(
                FailedToParse,
                "$currentOp options must be specified in an object, but found: {}",
                type_name(arg)
            ));
        };
        let mut out = CurrentOp { all_users: false, idle_sessions: true };
        for (k, v) in d {
            let Bson::Boolean(b) = v else {
                return Err(err!(
                    FailedToParse,
                    "The '{}' parameter of the $currentOp stage must be a boolean value, but \
                     found: {}",
                    k,
                    type_name(v)
                ));
            };
            match k.as_str() {
                "allUsers" => out.all_users = *b,
                "idleSessions" => out.idle_sessions = *b,
                "idleConnections" | "idleCursors" if *b => {
                    return Err(err!(
                        NotImplemented,
                        "$currentOp {}: true is not supported by Folio",
                        k
                    ));
                }
                "idleConnections" | "idleCursors" | "localOps" | "backtrace" | "truncateOps"
                | "targetAllNodes" => {}
                _ => {
                    return Err(err!(
                        FailedToParse,
                        "Unrecognized option '{}' in $currentOp stage.",
                        k
                    ));
                }
            }
        }
        Ok(out)
    }
}
