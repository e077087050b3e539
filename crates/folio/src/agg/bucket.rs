//! `$bucket` and `$bucketAuto`: grouping by ranges of a value.

use std::borrow::Cow;
use std::cmp::Ordering;

use bson::{Bson, Document};

use super::Context;
use super::group::{AccSpec, group_by};
use super::stage::Stage;
use crate::collation::{CollationRef, transform_opt};
use crate::doc::fmt::value_string;
use crate::err;
use crate::error::Result;
use crate::expr::{Expression, Scope, Vars, loc, type_name};

/// A parsed `$bucket`.
#[derive(Clone, Debug)]
pub struct Bucket {
    group_by: Expression,
    boundaries: Vec<Bson>,
    default: Option<Bson>,
    output: Vec<AccSpec>,
    /// The aggregate's collation: values fall between string boundaries as it orders them.
    collation: Option<CollationRef>,
}

impl Bucket {
    /// The stage comparing strings under the aggregate's collation.
    pub(super) fn with_collation(self, c: &CollationRef) -> Bucket {
        Bucket {
            group_by: self.group_by.with_collation(c),
            output: self.output.into_iter().map(|a| a.with_collation(c)).collect(),
            collation: Some(c.clone()),
            ..self
        }
    }
}

/// A parsed `$bucketAuto`.
#[derive(Clone, Debug)]
pub struct BucketAuto {
    group_by: Expression,
    buckets: usize,
    output: Vec<AccSpec>,
    /// The aggregate's collation: the documents are ordered, and equal values kept in one
    /// bucket, as it compares them.
    collation: Option<CollationRef>,
}

impl BucketAuto {
    /// The stage comparing strings under the aggregate's collation.
    pub(super) fn with_collation(self, c: &CollationRef) -> BucketAuto {
        BucketAuto {
            group_by: self.group_by.with_collation(c),
            output: self.output.into_iter().map(|a| a.with_collation(c)).collect(),
            collation: Some(c.clone()),
            ..self
        }
    }
}

pub(super) fn parse_bucket(arg: &Bson, scope: &Scope) -> Result<Stage> {
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
    Ok(Stage::Bucket(Bucket { group_by, boundaries, default, output, collation: None }))
}

pub(super) fn bucket(docs: Vec<Document>, b: &Bucket, ctx: &Context) -> Result<Vec<Document>> {
    // Under a collation, values are placed by their collation keys between the boundaries'.
    let c = b.collation.as_deref();
    let bounds: Vec<Cow<Bson>> = b.boundaries.iter().map(|x| transform_opt(c, x)).collect();
    let key = |v: &mut Vars| -> Result<Bson> {
        let x = b.group_by.eval(v)?.unwrap_or(Bson::Null);
        let n = b.boundaries.len();
        let same_type =
            crate::doc::canonical_rank(&x) == crate::doc::canonical_rank(&b.boundaries[0]);
        if same_type {
            let x = transform_opt(c, &x);
            for i in 0..n - 1 {
                if crate::doc::compare::cmp_bson(&x, &bounds[i]) != Ordering::Less
                    && crate::doc::compare::cmp_bson(&x, &bounds[i + 1]) == Ordering::Less
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
    let groups = super::spill::group(
        docs,
        key,
        &Bson::clone,
        &b.output,
        &ctx.vars,
        ctx.memory_limit,
        "$group",
    )?;
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

pub(super) fn parse_bucket_auto(arg: &Bson, scope: &Scope) -> Result<Stage> {
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
            "buckets" => match crate::expr::as_int(v) {
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
            // TODO(#14): preferred-number granularities.
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
    let output = output.unwrap_or_else(|| vec![AccSpec::count("count")]);
    Ok(Stage::BucketAuto(Box::new(BucketAuto {
        group_by: group,
        buckets,
        output,
        collation: None,
    })))
}

/// `$bucketAuto`: sorts by the groupBy value and cuts the documents into `n` buckets of about
/// equal size, never splitting equal values; each bucket's `max` is the next bucket's `min`.
pub(super) fn bucket_auto(
    docs: Vec<Document>,
    b: &BucketAuto,
    ctx: &Context,
) -> Result<Vec<Document>> {
    let (group, n, output) = (&b.group_by, b.buckets, b.output.as_slice());
    let c = b.collation.as_deref();
    // Sort `{k, d}` pairs by key within the stage's memory budget (spilling past it).
    let mut pairs = Vec::with_capacity(docs.len());
    for d in docs {
        let k = group.eval(&mut Vars::with_let(&d, &ctx.vars))?.unwrap_or(Bson::Null);
        pairs.push(bson::doc! {"k": k, "d": d});
    }
    let by_key = |a: &Document, b: &Document| {
        let null = Bson::Null;
        let (x, y) = (a.get("k").unwrap_or(&null), b.get("k").unwrap_or(&null));
        crate::doc::compare::cmp_bson(&transform_opt(c, x), &transform_opt(c, y))
    };
    let pairs = super::spill::sort(pairs, by_key, ctx.memory_limit, "$bucketAuto")?;
    let keyed: Vec<(Bson, Document)> = pairs
        .into_iter()
        .map(|mut p| {
            let k = p.remove("k").unwrap_or(Bson::Null);
            let d = match p.remove("d") {
                Some(Bson::Document(d)) => d,
                _ => Document::new(),
            };
            (k, d)
        })
        .collect();
    let size = ((keyed.len() as f64) / (n as f64)).round().max(1.0) as usize;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < keyed.len() {
        let mut end = (start + size).min(keyed.len());
        if ranges.len() + 1 == n {
            end = keyed.len();
        }
        while end < keyed.len()
            && crate::doc::compare::bson_eq(
                &transform_opt(c, &keyed[end].0),
                &transform_opt(c, &keyed[end - 1].0),
            )
        {
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
