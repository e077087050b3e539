//! Stages that read other collections through the [`super::Source`]: `$lookup` (equality,
//! `let`/`pipeline`, and both), `$graphLookup` and `$unionWith`.
//!
//! Equality lookups build an ordered index of the foreign collection once per stage (every value
//! a query equality would match: array elements, the whole array, null for a missing field), so
//! a join costs a map lookup per local value instead of a scan per input document. Pipeline
//! lookups parse their sub-pipeline again for every input document, with the `let` values bound.

use bson::{Bson, Document};

use super::stage::{Stage, set_path, stage_docs};
use super::{Context, Pipeline};
use crate::collation::CollationRef;
use crate::doc::fmt::value_string;
use crate::err;
use crate::error::{Code, Error, Result};
use crate::expr::{Expression, Scope, Vars, loc, type_name};
use crate::memory::{self, bson_size};
use crate::query::Filter;

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
    /// The aggregate's collation: `connectFromField`/`connectToField` values and
    /// `restrictSearchWithMatch` compare under it.
    collation: Option<CollationRef>,
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
    /// The aggregate's collation: `localField`/`foreignField` equality and the sub-pipeline
    /// compare under it, as in MongoDB.
    collation: Option<CollationRef>,
}

impl Lookup {
    /// The stage with its comparisons under `collation`.
    pub(super) fn with_collation(mut self, collation: &CollationRef) -> Lookup {
        self.let_vars =
            self.let_vars.into_iter().map(|(k, e)| (k, e.with_collation(collation))).collect();
        self.collation = Some(collation.clone());
        self
    }
}

impl GraphLookup {
    /// The stage with its comparisons under `collation`.
    pub(super) fn with_collation(mut self, collation: &CollationRef) -> GraphLookup {
        self.start_with = self.start_with.with_collation(collation);
        self.restrict = self.restrict.map(|f| f.with_collation(Some(collation)));
        self.collation = Some(collation.clone());
        self
    }
}

/// A value as the equality index of a collated stage keys it.
fn keyed(v: Bson, collation: Option<&CollationRef>) -> Bson {
    match collation {
        Some(c) => c.transform(&v),
        None => v,
    }
}

pub(super) fn parse_lookup(arg: &Bson, scope: &Scope, outer_vars: &Document) -> Result<Stage> {
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
        collation: None,
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
                    crate::expr::validate_var_name(name)?;
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
pub(super) fn foreign_index(
    foreign: &[Document],
    field: &str,
    collation: Option<&CollationRef>,
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
            index.entry(super::group::Key(keyed(k, collation))).or_default().push(i);
        }
    }
    index
}

/// Runs a `$lookup` over `docs`. With `result_of`, the output is itself the `as` array of an
/// enclosing `$lookup` on that collection, and is held to the same 100 MiB as it is built.
pub(super) fn lookup(
    docs: Vec<Document>,
    l: &Lookup,
    ctx: &Context,
    result_of: Option<&str>,
) -> Result<Vec<Document>> {
    let foreign = match &l.from {
        Some(c) => ctx.source.collection(&ctx.db, c)?,
        None => Vec::new(),
    };
    let collation = l.collation.as_ref();
    let index = l.foreign_field.as_deref().map(|f| foreign_index(&foreign, f, collation));
    let mut held = memory::Reservation::new("$lookup");
    let mut out = Vec::with_capacity(docs.len());
    let mut output_size = 0usize;
    for mut d in docs {
        if result_of.is_some() {
            output_size = output_size.saturating_add(bson_size(&d));
        }
        let mut candidates: Vec<Document> = match (&l.local_field, &l.foreign_field, &index) {
            (Some(local), Some(foreign_field), Some(index)) => {
                let parts: Vec<String> = local.split('.').map(str::to_string).collect();
                let values = match crate::expr::field_path(&d, &parts) {
                    None | Some(Bson::Null) => vec![Bson::Null],
                    Some(Bson::Array(items)) if items.is_empty() => vec![Bson::Null],
                    Some(Bson::Array(items)) => items,
                    Some(v) => vec![v],
                };
                if values.iter().any(|v| matches!(v, Bson::RegularExpression(_))) {
                    // A regex matches like a query `$in` does; the equality index cannot.
                    let mut f = Document::new();
                    f.insert(foreign_field.clone(), bson::doc! {"$in": values});
                    let filter = Filter::parse(&f)?.with_collation(collation);
                    foreign.iter().filter(|x| filter.matches(x)).cloned().collect()
                } else {
                    let mut hits: Vec<usize> = values
                        .into_iter()
                        .filter_map(|v| index.get(&super::group::Key(keyed(v, collation))))
                        .flatten()
                        .copied()
                        .collect();
                    hits.sort_unstable();
                    hits.dedup();
                    // Sized before each copy: a result past the limit is never built.
                    let mut size = 0usize;
                    let mut out = Vec::with_capacity(hits.len());
                    for i in hits {
                        size = size.saturating_add(bson_size(&foreign[i]));
                        check_lookup_size(l.from.as_deref().unwrap_or(""), size)?;
                        out.push(foreign[i].clone());
                    }
                    out
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
                collection: ctx.collection.clone(),
                lookup_result: Some(l.from.clone().unwrap_or_default()),
            };
            candidates = Pipeline::parse(stages, &sub.vars)?
                .with_collation(collation)?
                .execute(candidates, &sub)?;
            let mut size = 0usize;
            for c in &candidates {
                size = size.saturating_add(bson_size(c));
                check_lookup_size(l.from.as_deref().unwrap_or(""), size)?;
            }
        }
        if let Some(outer) = result_of {
            for c in &candidates {
                output_size = output_size.saturating_add(bson_size(c));
                check_lookup_size(outer, output_size)?;
            }
        }
        // The joined arrays are what this stage adds to its input: hold them against the
        // operation's memory (a nested `$lookup` multiplies them at every level).
        held.grow(candidates.iter().map(memory::doc_heap_size).sum())?;
        let parts: Vec<&str> = l.as_field.split('.').collect();
        set_path(
            &mut d,
            &parts,
            Some(Bson::Array(candidates.into_iter().map(Bson::Document).collect())),
        );
        out.push(d);
    }
    held.hand_on();
    Ok(out)
}

/// Location4568 once the documents joined to one input document pass MongoDB's
/// `internalLookupStageIntermediateDocumentMaxSizeBytes` (100 MiB of BSON).
fn check_lookup_size(from: &str, size: usize) -> Result<()> {
    if size > memory::MAX_LOOKUP_BYTES {
        return Err(loc(
            4568,
            format!(
                "Total size of documents in {from} matching pipeline's $lookup stage exceeds {} bytes",
                memory::MAX_LOOKUP_BYTES
            ),
        ));
    }
    Ok(())
}

pub(super) fn parse_graph_lookup(arg: &Bson, scope: &Scope) -> Result<Stage> {
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
        Some(v) => match crate::expr::as_int(v) {
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
        collation: None,
    })))
}

/// Breadth-first search from `startWith` through `connectFromField` to `connectToField`; each
/// reachable document appears once, with its depth in `depthField` if asked for.
pub(super) fn graph_lookup(
    docs: Vec<Document>,
    g: &GraphLookup,
    ctx: &Context,
) -> Result<Vec<Document>> {
    let mut foreign = ctx.source.collection(&ctx.db, &g.from)?;
    if let Some(f) = &g.restrict {
        foreign.retain(|d| f.matches(d));
    }
    let collation = g.collation.as_ref();
    let index = foreign_index(&foreign, &g.connect_to, collation);
    // Each input document may get a copy of the whole foreign collection: hold the copies
    // against the operation's memory as they are made.
    let mut held = memory::Reservation::new("$graphLookup");
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
                for &i in index.get(&super::group::Key(keyed(v, collation))).into_iter().flatten() {
                    if seen[i] {
                        continue;
                    }
                    seen[i] = true;
                    held.grow(memory::doc_heap_size(&foreign[i]))?;
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
    held.hand_on();
    Ok(out)
}

pub(super) fn parse_union(arg: &Bson, let_vars: &Document) -> Result<Stage> {
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
                    return Err(Error::unknown_field(&format!("$unionWith.{k}")));
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
