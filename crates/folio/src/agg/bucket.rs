//! `$bucket` and `$bucketAuto`: grouping by ranges of a value.

use std::borrow::Cow;
use std::cmp::Ordering;

use bson::{Bson, Document};

use super::Context;
use super::granularity::Granularity;
use super::group::{AccSpec, group_by};
use super::stage::Stage;
use crate::collation::{Collation, CollationRef, has_strings, transform_opt};
use crate::doc::compare::Number;
use crate::doc::fmt::value_string;
use crate::error::Result;
use crate::expr::{Expression, Scope, Value, Vars, loc, type_name};

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
    /// The stage comparing strings under the aggregate's collation, whose order its boundaries
    /// must follow (see [`Bucket::check_order`]).
    pub(super) fn with_collation(self, c: &CollationRef) -> Result<Bucket> {
        check_order(&self.boundaries, self.default.as_ref(), Some(c.as_ref()))?;
        Ok(Bucket {
            group_by: self.group_by.with_collation(c),
            output: self.output.into_iter().map(|a| a.with_collation(c)).collect(),
            collation: Some(c.clone()),
            ..self
        })
    }

    /// Checks that the boundaries ascend, and where the default falls, under the simple
    /// collation (the aggregate has none). Boundaries without strings are checked when the stage
    /// is parsed; those with strings only here or in [`Bucket::with_collation`], once the
    /// collation the comparisons follow is known.
    pub(super) fn check_order(&self) -> Result<()> {
        check_order(&self.boundaries, self.default.as_ref(), None)
    }
}

/// A parsed `$bucketAuto`.
#[derive(Clone, Debug)]
pub struct BucketAuto {
    group_by: Expression,
    buckets: usize,
    output: Vec<AccSpec>,
    /// `granularity`: the series boundaries are rounded to.
    granularity: Option<Granularity>,
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
    }
    // MongoDB checks the order with the aggregate's collation, which strings depend on; it is
    // known once the pipeline runs (`Bucket::with_collation`, `Bucket::check_order`).
    if !boundaries.iter().chain(default.as_ref()).any(has_strings) {
        check_order(&boundaries, default.as_ref(), None)?;
    }
    let output = output.unwrap_or_else(|| vec![AccSpec::count("count")]);
    Ok(Stage::Bucket(Bucket { group_by, boundaries, default, output, collation: None }))
}

/// Checks that `$bucket`'s boundaries ascend (40194) and that its default falls outside them
/// (40199), comparing as `collation` orders values (`None`: simple), as MongoDB compares them.
fn check_order(
    boundaries: &[Bson],
    default: Option<&Bson>,
    collation: Option<&Collation>,
) -> Result<()> {
    let key = |v: &Bson| transform_opt(collation, v).into_owned();
    let keys: Vec<Bson> = boundaries.iter().map(key).collect();
    for (i, w) in keys.windows(2).enumerate() {
        if crate::doc::compare::cmp_bson(&w[0], &w[1]) != Ordering::Less {
            return Err(loc(
                40194,
                format!(
                    "The 'boundaries' option to $bucket must be sorted, but elements {} and {} are not in ascending order ({} is not less than {}).",
                    i,
                    i + 1,
                    value_string(&boundaries[i]),
                    value_string(&boundaries[i + 1])
                ),
            ));
        }
    }
    if let (Some(d), Some(first), Some(last)) = (default, keys.first(), keys.last()) {
        let d = key(d);
        if crate::doc::canonical_rank(&d) == crate::doc::canonical_rank(first)
            && crate::doc::compare::cmp_bson(&d, first) != Ordering::Less
            && crate::doc::compare::cmp_bson(&d, last) == Ordering::Less
        {
            return Err(loc(
                40199,
                "The $bucket 'default' field must be less than the lowest boundary or greater than or equal to the highest boundary.",
            ));
        }
    }
    Ok(())
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
    let (mut group, mut buckets, mut output, mut granularity) = (None, None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            "groupBy" => {
                let ok = match v {
                    Bson::Document(d) => d.keys().next().is_some_and(|k| k.starts_with('$')),
                    Bson::String(s) => s.len() > 1 && s.starts_with('$'),
                    _ => false,
                };
                if !ok {
                    return Err(loc(
                        40239,
                        format!(
                            "The $bucketAuto 'groupBy' field must be defined as a $-prefixed path or an expression object, but found: {}",
                            value_string(v)
                        ),
                    ));
                }
                group = Some(Expression::parse_in(v, scope)?);
            }
            "buckets" => buckets = Some(bucket_count(v)?),
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
            "granularity" => match v {
                Bson::String(name) => granularity = Some(Granularity::named(name)?),
                other => {
                    return Err(loc(
                        40261,
                        format!(
                            "The $bucketAuto 'granularity' field must be a string, but found type: {}",
                            type_name(other)
                        ),
                    ));
                }
            },
            other => {
                return Err(loc(40245, format!("Unrecognized option to $bucketAuto: {other}")));
            }
        }
    }
    let (Some(group_by), Some(buckets)) = (group, buckets) else {
        return Err(loc(40246, "$bucketAuto requires 'groupBy' and 'buckets' to be specified"));
    };
    if buckets <= 0 {
        return Err(loc(
            40243,
            format!("The $bucketAuto 'buckets' field must be greater than 0, but found: {buckets}"),
        ));
    }
    let output = output.unwrap_or_else(|| vec![AccSpec::count("count")]);
    Ok(Stage::BucketAuto(Box::new(BucketAuto {
        group_by,
        buckets: buckets as usize,
        output,
        granularity,
        collation: None,
    })))
}

/// `buckets`: a number representable as a 32-bit integer (40241, 40242), as MongoDB reads it.
fn bucket_count(v: &Bson) -> Result<i32> {
    let Some(n) = Number::of(v) else {
        return Err(loc(
            40241,
            format!(
                "The $bucketAuto 'buckets' field must be a numeric value, but found type: {}",
                type_name(v)
            ),
        ));
    };
    let x = n.to_f64();
    let exact = match n {
        Number::Int(i) => Some(i),
        Number::Long(l) => i32::try_from(l).ok(),
        Number::Double(_) | Number::Decimal(..) => {
            (x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX))
                .then_some(x as i32)
        }
    };
    exact.ok_or_else(|| {
        loc(
            40242,
            format!(
                "The $bucketAuto 'buckets' field must be representable as a 32-bit integer, but found {}",
                crate::doc::fmt::cpp_double(x)
            ),
        )
    })
}

/// A sorted document of `$bucketAuto`: its groupBy value and the document.
type Entry = (Bson, Document);

/// One bucket being filled.
struct Filling<'a> {
    min: Bson,
    max: Bson,
    members: Vec<&'a Document>,
}

/// `$bucketAuto`: sorts by the groupBy value and cuts the documents into `n` buckets of about
/// equal size (the last takes what remains), never splitting equal values; each bucket's `max`
/// is the next bucket's `min`, and the last bucket's `max` is its largest value. With a
/// `granularity`, every value must be a non-negative number, and boundaries are rounded to the
/// series: a bucket's `max` is its largest value rounded up (absorbing the values below it),
/// the next bucket's `min` is that `max`, and the first bucket's `min` is its smallest value
/// rounded down, as MongoDB does.
pub(super) fn bucket_auto(
    docs: Vec<Document>,
    b: &BucketAuto,
    ctx: &Context,
) -> Result<Vec<Document>> {
    let c = b.collation.as_deref();
    // Sort `{k, d}` pairs by key within the stage's memory budget (spilling past it).
    let mut pairs = Vec::with_capacity(docs.len());
    for d in docs {
        let k = b.group_by.eval(&mut Vars::with_let(&d, &ctx.vars))?;
        if b.granularity.is_some() {
            check_granular(&k)?;
        }
        pairs.push(bson::doc! {"k": k.unwrap_or(Bson::Null), "d": d});
    }
    let by_key = |a: &Document, b: &Document| {
        let null = Bson::Null;
        let (x, y) = (a.get("k").unwrap_or(&null), b.get("k").unwrap_or(&null));
        crate::doc::compare::cmp_bson(&transform_opt(c, x), &transform_opt(c, y))
    };
    let pairs = super::spill::sort(pairs, by_key, ctx.memory_limit, "$bucketAuto")?;
    let sorted: Vec<Entry> = pairs
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
    let same = |x: &Bson, y: &Bson| {
        crate::doc::compare::bson_eq(&transform_opt(c, x), &transform_opt(c, y))
    };
    let size = ((sorted.len() as f64) / (b.buckets as f64)).round().max(1.0) as usize;
    let mut buckets: Vec<Filling> = Vec::new();
    let mut next = 0;
    let mut previous_max: Option<Bson> = None;
    while next < sorted.len() && buckets.len() < b.buckets {
        let last = buckets.len() + 1 == b.buckets;
        let first = &sorted[next].0;
        let min = match (&b.granularity, previous_max.take()) {
            (Some(_), Some(p)) => p,
            (Some(g), None) => g.round_down(first)?,
            (None, _) => first.clone(),
        };
        let mut bucket = Filling { min, max: first.clone(), members: Vec::new() };
        let end = if last { sorted.len() } else { (next + size).min(sorted.len()) };
        for (k, d) in &sorted[next..end] {
            bucket.max = k.clone();
            bucket.members.push(d);
        }
        next = end;
        match &b.granularity {
            Some(g) => {
                let boundary = g.round_up(&bucket.max)?;
                // Values below the rounded boundary, or equal to the largest, join this bucket.
                while let Some((k, d)) = sorted.get(next) {
                    let below = crate::doc::compare::cmp_bson(&boundary, k) == Ordering::Greater;
                    if !below && !same(&bucket.max, k) {
                        break;
                    }
                    bucket.max = k.clone();
                    bucket.members.push(d);
                    next += 1;
                }
                // A boundary of zero would be both this bucket's exclusive end and the next
                // one's inclusive start: the next value rounded down ends this bucket instead.
                let zero = Number::of(&boundary).is_some_and(|n| n.to_f64() == 0.0);
                bucket.max = match sorted.get(next) {
                    Some((k, _)) if zero => g.round_down(k)?,
                    _ => boundary,
                };
            }
            None => {
                while let Some((k, d)) = sorted.get(next) {
                    if !same(&bucket.max, k) {
                        break;
                    }
                    bucket.members.push(d);
                    next += 1;
                }
                if let Some((k, _)) = sorted.get(next) {
                    bucket.max = k.clone();
                }
            }
        }
        previous_max = Some(bucket.max.clone());
        buckets.push(bucket);
    }
    let mut out = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let members: Vec<Document> = bucket.members.into_iter().cloned().collect();
        let groups = group_by(&members, |_| Ok(Bson::Null), &b.output, &ctx.vars)?;
        let mut d = Document::new();
        d.insert("_id", bson::doc! {"min": bucket.min, "max": bucket.max});
        if let Some((_, vals)) = groups.into_iter().next() {
            for (spec, v) in b.output.iter().zip(vals) {
                d.insert(spec.field.clone(), v);
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// A groupBy value `$bucketAuto` can round: a number that is neither NaN nor negative.
fn check_granular(k: &Value) -> Result<()> {
    let Some(n) = k.as_ref().and_then(Number::of) else {
        return Err(loc(
            40258,
            format!(
                "$bucketAuto can specify a 'granularity' with numeric boundaries only, but found a value with type: {}",
                crate::expr::value_type(k)
            ),
        ));
    };
    let x = n.to_f64();
    if x.is_nan() {
        return Err(loc(
            40259,
            "$bucketAuto can specify a 'granularity' with numeric boundaries only, but found a NaN",
        ));
    }
    if x < 0.0 {
        return Err(loc(
            40260,
            "$bucketAuto can specify a 'granularity' with non-negative numbers only, but found a negative number",
        ));
    }
    Ok(())
}
