//! Access-path planning: which documents to fetch before the filter re-checks them.
//!
//! The planner looks at the filter and the collection's indexes and picks one of:
//!
//! - **`_id` points**: an `_id` equality or `$in` becomes point reads of the document keys;
//! - **an index scan** of a secondary index, bounded as MongoDB bounds it: every leading field
//!   of the key pattern with equality (or `$in`) bounds, then at most one field with range
//!   bounds; the fields after that are unbounded (`[MinKey, MaxKey]`). `{a: 1, b: 1}` with
//!   `{a: 5, b: {$gt: 3}}` scans the keys from `[5, 3]` to `[5, MaxKey]`. The key ranges are the
//!   cartesian product of the point fields' values with the range field's intervals;
//! - **a union** for an `$or` whose every branch can use an index or `_id` points on its own
//!   (MongoDB's `OR` stage), when no index serves the filter as a whole;
//! - **a collection scan** in `_id` order otherwise.
//!
//! Candidates are scored by how many fields they bound with points, then whether they bound a
//! range, then whether they give the sort order. An index scan yields documents in key order,
//! so a sort whose keys are the index's fields from some position on, after fields bound to a
//! single value, in the index's direction or exactly reversed, needs no sorting, and a limit can
//! stop the scan early. Bounds are always a superset of what matches: the caller re-checks every
//! candidate with the filter, so an index is only a speed-up.
//!
//! # Multikey indexes
//!
//! A document with an array on an indexed path has several keys. Bounds stay a superset because
//! each field's bounds come from one predicate on that field (see [`Filter::bounds`]), and two
//! fields are bounded together only when their paths do not go through the same parent (`a.x`
//! and `a.y` may be satisfied by different elements of `a`). A scan in index order visits a
//! document first at its smallest (or largest) key, which is MongoDB's sort key only when the
//! bounds did not skip some of its keys and the sorted fields do not share an array; so when a
//! fetched document has an array on a sorted path, the fetch falls back to a full scan and an
//! in-memory sort.
//!
//! # Collations
//!
//! An index with a collation holds collation keys of strings. Its bounds come from
//! [`Filter::bounds_for_index`], which uses only comparisons under that same collation for
//! strings; and it gives a sort order only to a sort under the same collation.
//!
//! # Hashed indexes
//!
//! A hashed field holds the hash of each value, so only equality and `$in` bound it (with the
//! hashes of their values); it never bounds a range nor gives a sort order.
//!
//! Sparse and partial indexes are never used, since they lack entries for some documents.
//!
//! # `apiStrict`
//!
//! Under `apiStrict: true` (see [`crate::api_strict`]) the planner does not see the indexes
//! outside API version 1, text and sparse ones, as MongoDB's planner is not given them: a hint
//! naming one fails as for an index that does not exist (BadValue 2), and a `$text` query finds
//! no text index to use (NoQueryExecutionPlans 291).

use std::collections::HashSet;
use std::ops::Bound;

use bson::{Bson, Document, RawDocumentBuf};

use super::{Found, get_document, id_key, scan_collection};
use crate::catalog::{CollectionMeta, keys, keys::Key};
use crate::encoding::encode_key_component;
use crate::error::Result;
use crate::index::hash::hashed_key;
use crate::index::{IndexSpec, Plugin};
use crate::mvcc::Txn;
use crate::query::bounds::{Endpoint, Interval};
use crate::query::geo::{self, GeoPred, Near};
use crate::query::{Filter, Pred, SortSpec};

/// The most key ranges one index scan may have before the planner bounds fewer fields.
const MAX_RANGES: usize = 4096;

/// The chosen access path.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Point reads of these `_id` values.
    IdPoints(Vec<Bson>),
    /// Scans of key ranges of one index.
    IndexScan {
        /// The index's id in the collection.
        index: u32,
        /// The index's name (for `explain`).
        name: String,
        /// Encoded key ranges, in scan order, each `(start inclusive, end exclusive)`.
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        /// The intervals of each key-pattern field, in index order (for `explain`).
        bounds: Vec<(String, Vec<Interval>)>,
        /// Scan from the high end (a descending sort on an ascending index, or vice versa).
        reverse: bool,
        /// Whether the scan's order satisfies the requested sort.
        sorted: bool,
    },
    /// The union of the plans of each branch of an `$or` (every branch has an index or `_id`
    /// plan), fetched once each and re-checked with the whole filter.
    Or(Vec<Plan>),
    /// A scan of the whole collection.
    CollectionScan,
}

/// An operation's `hint`: the access path it asks for instead of the planner's choice.
#[derive(Clone, Debug, PartialEq)]
pub enum Hint {
    /// `{$natural: 1}` or `{$natural: -1}`: a collection scan.
    Natural,
    /// An index by name.
    Name(String),
    /// An index by key pattern.
    Keys(Document),
}

impl Hint {
    /// Parses a `hint` argument; `None` for no hint (absent, `{}` or `""`, as MongoDB treats them).
    pub fn parse(v: Option<&Bson>) -> Result<Option<Hint>> {
        Ok(match v {
            None | Some(Bson::Null) => None,
            Some(Bson::String(s)) if s.is_empty() => None,
            Some(Bson::String(s)) => Some(Hint::Name(s.clone())),
            Some(Bson::Document(d)) if d.is_empty() => None,
            Some(Bson::Document(d)) if d.contains_key("$natural") => Some(Hint::Natural),
            Some(Bson::Document(d)) => Some(Hint::Keys(d.clone())),
            Some(_) => crate::bail!(
                FailedToParse,
                "hint must be a string or an object, not {}",
                crate::doc::type_name(v.unwrap_or(&Bson::Null))
            ),
        })
    }

    /// The hinted index of a collection: `None` for `$natural`; BadValue (2) when no index the
    /// planner sees has that name or key pattern, as in MongoDB.
    fn index<'a>(&self, meta: &'a CollectionMeta) -> Result<Option<&'a crate::catalog::IndexMeta>> {
        let mut visible = meta.indexes.iter().filter(|i| !hidden_by_api_strict(i));
        let found = match self {
            Hint::Natural => return Ok(None),
            Hint::Name(name) => visible.find(|i| i.name() == name),
            Hint::Keys(keys) => visible.find(|i| i.spec().get_document("key").ok() == Some(keys)),
        };
        match found {
            Some(i) => Ok(Some(i)),
            None => {
                crate::bail!(BadValue, "hint provided does not correspond to an existing index")
            }
        }
    }

    /// Checks that the hinted index exists (for operations whose access path it cannot change).
    pub fn check(&self, meta: &CollectionMeta) -> Result<()> {
        self.index(meta).map(|_| ())
    }
}

/// Whether `apiStrict: true` hides an index from the planner: MongoDB gives its planner no
/// index outside API version 1 (text and sparse indexes) under it.
fn hidden_by_api_strict(index: &crate::catalog::IndexMeta) -> bool {
    crate::api_strict::active() && index.parsed().is_ok_and(|spec| outside_api_version_1(&spec))
}

/// Whether an index is of a kind outside API version 1 (text or sparse).
fn outside_api_version_1(spec: &IndexSpec) -> bool {
    spec.sparse || spec.is_text()
}

/// The access path for a filter and sort, following `hint` when given: a hinted index is used
/// whatever its bounds (a whole-index scan when the filter bounds none of its fields), even a
/// sparse or partial one, as MongoDB does; `$natural` is a collection scan.
pub fn plan_hinted(
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    hint: Option<&Hint>,
) -> Result<Plan> {
    if let Some((path, near)) = filter.near() {
        return near_plan(meta, filter, path, near);
    }
    if filter.text().is_some() {
        return text_plan(meta, filter);
    }
    let Some(hint) = hint else { return Ok(plan(meta, filter, sort)) };
    let Some(index) = hint.index(meta)? else { return Ok(Plan::CollectionScan) };
    if index.name() == "_id_" {
        // The `_id` index is the documents' own order: points, or a scan in `_id` order.
        return Ok(match id_points(filter) {
            Some(ids) => Plan::IdPoints(ids),
            None => Plan::CollectionScan,
        });
    }
    let spec = index.parsed()?;
    Ok(index_candidate(index.id, &spec, filter, sort, true)
        .map(|c| c.plan)
        .unwrap_or(Plan::CollectionScan))
}

/// The plan of a `$near` query: a scan of a geo index that answers it, or NoQueryExecutionPlans
/// (291) when there is none, as in MongoDB.
fn near_plan(meta: &CollectionMeta, filter: &Filter, path: &str, near: &Near) -> Result<Plan> {
    let strict = crate::api_strict::active();
    for i in &meta.indexes {
        let Ok(spec) = i.parsed() else { continue };
        if spec.hidden
            || !answers_near(&spec, path, near)
            || (strict && outside_api_version_1(&spec))
        {
            continue;
        }
        if let Some(c) = index_candidate(i.id, &spec, filter, None, false) {
            return Ok(c.plan);
        }
    }
    Err(crate::error::Error::new(
        crate::error::Code::NoQueryExecutionPlans,
        format!(
            "error processing query: ns={} planner returned error :: caused by :: unable to find \
             index for $geoNear query",
            meta.namespace()
        ),
    ))
}

/// The location field `$geoNear` measures (see [`crate::agg::Source::geo_near_key`]).
pub fn geo_near_key(
    txn: &dyn Txn,
    db: &str,
    coll: &str,
    key: Option<&str>,
) -> Result<(String, bool)> {
    let none = || {
        crate::err!(IndexNotFound, "$geoNear requires a 2d or 2dsphere index, but none were found")
    };
    let meta = crate::catalog::get_collection(txn, db, coll)?.ok_or_else(none)?;
    let mut geo_fields: Vec<(String, Plugin)> = Vec::new();
    for i in &meta.indexes {
        let Ok(spec) = i.parsed() else { continue };
        for f in &spec.fields {
            if let Some(p @ (Plugin::Sphere | Plugin::Flat)) = f.plugin {
                geo_fields.push((f.path.clone(), p));
            }
        }
    }
    if let Some(key) = key {
        return match geo_fields.iter().find(|(p, _)| p == key) {
            Some((p, plugin)) => Ok((p.clone(), *plugin == Plugin::Sphere)),
            None => Err(crate::err!(
                NoQueryExecutionPlans,
                "error processing query: planner returned error :: caused by :: unable to find \
                 index for $geoNear query on field {key}"
            )),
        };
    }
    for (kind, name) in [(Plugin::Flat, "2d"), (Plugin::Sphere, "2dsphere")] {
        let of_kind: Vec<&String> =
            geo_fields.iter().filter(|(_, p)| *p == kind).map(|(f, _)| f).collect();
        match of_kind.as_slice() {
            [] => continue,
            [one] => return Ok(((*one).clone(), kind == Plugin::Sphere)),
            _ => crate::bail!(
                IndexNotFound,
                "There is more than one {} index on {}; unsure which to use for $geoNear",
                name,
                meta.namespace()
            ),
        }
    }
    Err(none())
}

/// The collection's text index configuration, when the filter has a `$text` (IndexNotFound 27
/// when the collection has no text index, as in MongoDB).
pub fn text_spec(
    meta: &CollectionMeta,
    filter: &Filter,
) -> Result<Option<std::sync::Arc<crate::query::text::TextSpec>>> {
    if filter.text().is_none() {
        return Ok(None);
    }
    for i in &meta.indexes {
        let Ok(spec) = i.parsed() else { continue };
        if spec.is_text() {
            let ts = crate::query::text::TextSpec::from_index(&spec.options)?;
            return Ok(Some(std::sync::Arc::new(ts)));
        }
    }
    crate::bail!(IndexNotFound, "text index required for $text query")
}

/// The filter with its `$text` bound to the collection's text index (see [`text_spec`]).
pub fn bind_text(meta: &CollectionMeta, filter: &Filter) -> Result<Option<Filter>> {
    Ok(text_spec(meta, filter)?.map(|spec| filter.bind_text(&spec)))
}

/// The plan of a `$text` query: a scan of the text index for its terms, which needs equality on
/// every prefix field (NoQueryExecutionPlans otherwise, as in MongoDB). Under `apiStrict: true` the planner
/// has no text index (NoQueryExecutionPlans, as MongoDB's planner answers then).
fn text_plan(meta: &CollectionMeta, filter: &Filter) -> Result<Plan> {
    // MongoDB's planner error, naming the namespace and the cause.
    let no_plan = |cause: &str| {
        crate::error::Error::new(
            crate::error::Code::NoQueryExecutionPlans,
            format!(
                "error processing query: ns={} planner returned error :: caused by :: {cause}",
                meta.namespace()
            ),
        )
    };
    if crate::api_strict::active() {
        return Err(no_plan("need exactly one text index for $text query"));
    }
    for i in &meta.indexes {
        let Ok(spec) = i.parsed() else { continue };
        if !spec.is_text() {
            continue;
        }
        let (fields, _, _) = index_bounds(&spec, filter);
        let text_bounded = spec.fields.iter().zip(&fields).any(|(f, iv)| {
            f.plugin == Some(Plugin::Text) && !(iv.len() == 1 && iv[0] == Interval::all())
        });
        if text_bounded && let Some(c) = index_candidate(i.id, &spec, filter, None, true) {
            return Ok(c.plan);
        }
        return Err(no_plan(
            "failed to use text index to satisfy $text query (if text index is compound, are \
             equality predicates given for all prefix fields?)",
        ));
    }
    crate::bail!(IndexNotFound, "text index required for $text query")
}

/// One candidate index scan and its score.
struct Candidate {
    score: (usize, bool, bool),
    plan: Plan,
}

/// Chooses the access path for a filter (and optional sort) over a collection.
pub fn plan(meta: &CollectionMeta, filter: &Filter, sort: Option<&SortSpec>) -> Plan {
    if let Some(ids) = id_points(filter) {
        return Plan::IdPoints(ids);
    }
    let mut best: Option<Candidate> = None;
    let strict = crate::api_strict::active();
    for i in &meta.indexes {
        if i.name() == "_id_" {
            continue;
        }
        let Ok(spec) = i.parsed() else { continue };
        if spec.sparse
            || spec.partial_filter.is_some()
            || spec.hidden
            || (strict && outside_api_version_1(&spec))
        {
            continue;
        }
        let Some(c) = index_candidate(i.id, &spec, filter, sort, false) else { continue };
        if best.as_ref().is_none_or(|b| c.score > b.score) {
            best = Some(c);
        }
    }
    match best {
        Some(c) => c.plan,
        None => or_plan(meta, filter).unwrap_or(Plan::CollectionScan),
    }
}

/// A union plan for a top-level `$or` (or an `$or` in the top-level conjunction) whose every
/// branch can use an index or the `_id` points on its own. Each branch's candidates are a
/// superset of the documents matching that branch, so the union is a superset of the matches.
fn or_plan(meta: &CollectionMeta, filter: &Filter) -> Option<Plan> {
    let ors: Vec<&Vec<Filter>> = match filter {
        Filter::Or(children) => vec![children],
        Filter::And(children) => children
            .iter()
            .filter_map(|c| match c {
                Filter::Or(branches) => Some(branches),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    ors.into_iter().find_map(|branches| {
        branches
            .iter()
            .map(|b| match plan(meta, b, None) {
                Plan::CollectionScan => None,
                p => Some(p),
            })
            .collect::<Option<Vec<Plan>>>()
            .map(Plan::Or)
    })
}

/// The bounds of each field of an index: leading point fields, then at most one range field,
/// then unbounded fields. Returns the per-field intervals and how many fields are points.
fn index_bounds(spec: &IndexSpec, filter: &Filter) -> (Vec<Vec<Interval>>, usize, bool) {
    let ic = spec.collation.as_deref();
    let mut fields: Vec<Vec<Interval>> = Vec::new();
    let mut points = 0;
    let mut range = false;
    let mut combos = 1usize;
    let mut parents: Vec<&str> = Vec::new();
    for f in &spec.fields {
        let parent = f.path.split('.').next().unwrap_or(&f.path);
        let shares_parent = f.path.contains('.') && parents.contains(&parent);
        parents.push(parent);
        // Multikey is assumed, which keeps the bounds a superset for array fields.
        let b = if shares_parent { None } else { filter.bounds_for_index(&f.path, true, ic) };
        let b = match f.plugin {
            Some(Plugin::Hashed) => b.and_then(|iv| hashed_bounds(&iv)),
            Some(plugin @ (Plugin::Sphere | Plugin::Flat)) => {
                geo_bounds(filter, &f.path, plugin, &spec.options)
            }
            // The terms a `$text` query looks up; the matcher checks phrases and negations.
            Some(Plugin::Text) => filter.text().map(|t| {
                t.positive_terms().into_iter().map(|w| Interval::point(Bson::String(w))).collect()
            }),
            None => b,
        };
        match b {
            Some(iv)
                if iv.iter().all(Interval::is_point)
                    && !iv.is_empty()
                    && combos.saturating_mul(iv.len()) <= MAX_RANGES =>
            {
                combos *= iv.len();
                points += 1;
                fields.push(iv);
            }
            Some(iv) if combos.saturating_mul(iv.len().max(1)) <= MAX_RANGES => {
                range = true;
                fields.push(iv);
                break;
            }
            _ => break,
        }
    }
    while fields.len() < spec.fields.len() {
        fields.push(vec![Interval::all()]);
    }
    (fields, points, range)
}

/// The geo predicate on `path` in the filter's top-level conjunction.
fn geo_pred<'a>(filter: &'a Filter, path: &str) -> Option<&'a GeoPred> {
    fn in_pred(p: &Pred) -> Option<&GeoPred> {
        match p {
            Pred::Geo(g) => Some(&g.pred),
            Pred::And(preds) => preds.iter().find_map(in_pred),
            _ => None,
        }
    }
    let conjuncts: Vec<&Filter> = match filter {
        Filter::And(children) => children.iter().collect(),
        other => vec![other],
    };
    // A `$near` comes first: it decides the index.
    let mut found: Vec<&GeoPred> = conjuncts
        .into_iter()
        .filter_map(|f| match f {
            Filter::Path { path: p, pred } if p == path => in_pred(pred),
            _ => None,
        })
        .collect();
    found.sort_by_key(|g| !matches!(g, GeoPred::Near(_)));
    found.into_iter().next()
}

/// The bounds of a geo field: the key ranges of the cells covering the geo predicate on it
/// (see [`crate::query::geo`]); `None` when the filter has none this kind of index answers.
fn geo_bounds(
    filter: &Filter,
    path: &str,
    plugin: Plugin,
    options: &bson::Document,
) -> Option<Vec<Interval>> {
    let pred = geo_pred(filter, path)?;
    let ranges = match plugin {
        Plugin::Sphere => geo::sphere_ranges(pred)?,
        _ => match (geo::flat_ranges(pred, &geo::FlatGrid::of_index(options)), pred) {
            (Some(r), _) => r,
            // `$near` without `$maxDistance` reads the whole index, in distance order.
            (None, GeoPred::Near(_)) => vec![(i64::MIN, i64::MAX)],
            (None, _) => return None,
        },
    };
    Some(
        ranges
            .into_iter()
            .map(|(lo, hi)| Interval {
                low: Endpoint { value: Bson::Int64(lo), inclusive: true },
                high: Endpoint { value: Bson::Int64(hi), inclusive: true },
            })
            .collect(),
    )
}

/// Whether an index can answer `$near` on `path`: a 2dsphere index for distances on the
/// sphere, a 2d index for flat ones (and for legacy `$nearSphere`).
fn answers_near(spec: &IndexSpec, path: &str, near: &Near) -> bool {
    spec.fields.iter().any(|f| {
        f.path == path
            && match f.plugin {
                Some(Plugin::Sphere) => near.spherical,
                Some(Plugin::Flat) => !near.meters,
                _ => false,
            }
    })
}

/// The bounds of a hashed field: the hashes of the values an equality or `$in` allows (null
/// also stands for a missing field, and `undefined`); `None` for anything else, since hashing
/// keeps no order to bound a range with.
fn hashed_bounds(values: &[Interval]) -> Option<Vec<Interval>> {
    let mut points = Vec::with_capacity(values.len());
    for iv in values {
        if iv.is_point() {
            points.push(hashed_key(&iv.low.value));
        } else if iv.low.value == Bson::Undefined && iv.high.value == Bson::Null {
            points.push(hashed_key(&Bson::Null));
            points.push(hashed_key(&Bson::Undefined));
        } else {
            return None;
        }
    }
    points.sort_unstable();
    points.dedup();
    Some(points.into_iter().map(|h| Interval::point(Bson::Int64(h))).collect())
}

/// Whether an index scan gives the sort's order: `Some(forward)` when, walking the index's
/// fields in order, each is either the next sort key (all in the index's direction, or all
/// reversed) or bound to a single value (constant among the results, so it does not disturb the
/// order); sort keys on such constant fields are satisfied anywhere. `{a: 1, b: 1, c: 1}` with
/// `{a: 5, b: 6}` gives `{c: -1}` and `{b: 1, a: -1, c: 1}`.
fn sort_direction(
    spec: &IndexSpec,
    fields: &[Vec<Interval>],
    sort: Option<&SortSpec>,
) -> Option<bool> {
    let sort = sort.filter(|s| !s.is_empty())?;
    if !crate::collation::same(sort.collation.as_deref(), spec.collation.as_deref()) {
        return None;
    }
    let single = |n: usize| fields.get(n).is_some_and(|iv| iv.len() == 1 && iv[0].is_point());
    // A single hash is not a single value (3 and 3.5 hash alike), so a hashed field is never
    // constant, and never gives an order.
    let constant = |path: &str| {
        spec.fields
            .iter()
            .enumerate()
            .any(|(n, f)| f.path == path && f.plugin.is_none() && single(n))
    };
    let mut keys = sort.keys.iter().filter(|(path, _)| !constant(path)).peekable();
    let mut direction: Option<bool> = None;
    for (n, f) in spec.fields.iter().enumerate() {
        let Some((path, asc)) = keys.peek() else { break };
        if *path == f.path {
            if f.plugin.is_some() {
                return None;
            }
            let forward = *asc != f.descending;
            if direction.is_some_and(|d| d != forward) {
                return None;
            }
            direction = Some(forward);
            keys.next();
        } else if !single(n) {
            return None;
        }
    }
    if keys.peek().is_some() {
        return None;
    }
    Some(direction.unwrap_or(true))
}

/// The scan of one index for a filter and sort, if the index helps at all (or, when `forced` by
/// a hint, a scan of the whole index).
fn index_candidate(
    id: u32,
    spec: &IndexSpec,
    filter: &Filter,
    sort: Option<&SortSpec>,
    forced: bool,
) -> Option<Candidate> {
    let (fields, points, range) = index_bounds(spec, filter);
    let order = if spec.is_geo() { None } else { sort_direction(spec, &fields, sort) };
    if points == 0 && !range && order.is_none() && !forced {
        return None;
    }
    // A geo index lacks documents without locations: it answers only its geo predicate, whose
    // bounds must have been reached (a field before it left unbounded stops them).
    let geo_bounded = spec.fields.iter().zip(&fields).any(|(f, iv)| {
        matches!(f.plugin, Some(Plugin::Sphere | Plugin::Flat))
            && geo_pred(filter, &f.path).is_some()
            && !(iv.len() == 1 && iv[0] == Interval::all())
    });
    if spec.is_geo() && !geo_bounded && !forced {
        return None;
    }
    // A text index lacks documents without terms: it answers `$text` only.
    if spec.is_text() && filter.text().is_none() && !forced {
        return None;
    }
    let bounded = points + usize::from(range);
    let mut ranges = encode_ranges(spec, &fields[..bounded]);
    ranges.sort();
    let reverse = order == Some(false);
    if reverse {
        ranges.reverse();
    }
    let bounds = spec.fields.iter().map(|f| f.path.clone()).zip(fields).collect();
    Some(Candidate {
        // A geo predicate narrows the most: its index wins.
        score: (points + if geo_bounded { 1000 } else { 0 }, range, order.is_some()),
        plan: Plan::IndexScan {
            index: id,
            name: spec.name.clone(),
            ranges,
            bounds,
            reverse,
            sorted: order.is_some(),
        },
    })
}

/// The key ranges of the bounded leading fields: every combination of the point fields' values
/// followed by each interval of the last bounded field. Component encodings are prefix-free, so
/// the keys whose components lie in the intervals form one byte range per combination.
fn encode_ranges(spec: &IndexSpec, fields: &[Vec<Interval>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some((last, points)) = fields.split_last() else {
        // Nothing bounded (a scan for the sort order alone): every key.
        let descending = spec.fields.first().is_some_and(|f| f.descending);
        return vec![encode_interval(&Interval::all(), descending)];
    };
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    for (iv, f) in points.iter().zip(&spec.fields) {
        let mut next = Vec::with_capacity(prefixes.len() * iv.len());
        for p in &prefixes {
            for i in iv {
                let mut k = p.clone();
                encode_key_component(&i.low.value, f.descending, &mut k);
                next.push(k);
            }
        }
        prefixes = next;
    }
    let descending = spec.fields[points.len()].descending;
    let mut out = Vec::with_capacity(prefixes.len() * last.len());
    for p in &prefixes {
        for iv in last {
            let (start, end) = encode_interval(iv, descending);
            let mut lo = p.clone();
            lo.extend_from_slice(&start);
            let mut hi = p.clone();
            hi.extend_from_slice(&end);
            out.push((lo, hi));
        }
    }
    out
}

/// Encodes an interval of values as a byte range of index keys whose first component lies in it.
/// Component encodings are prefix-free, so every key whose first component equals `v` starts with
/// `encode(v)` and sorts below `prefix_end(encode(v))`.
fn encode_interval(iv: &Interval, descending: bool) -> (Vec<u8>, Vec<u8>) {
    let enc = |v: &Bson| {
        let mut out = Vec::new();
        encode_key_component(v, descending, &mut out);
        out
    };
    // In a descending index the high value encodes lowest.
    let (low, high) = if descending { (&iv.high, &iv.low) } else { (&iv.low, &iv.high) };
    let start = if low.inclusive { enc(&low.value) } else { keys::prefix_end(&enc(&low.value)) };
    let end = if high.inclusive { keys::prefix_end(&enc(&high.value)) } else { enc(&high.value) };
    (start, end)
}

/// The `_id` values a filter restricts documents to, when a top-level conjunct is an `_id`
/// equality or an `$in` of plain values.
fn id_points(filter: &Filter) -> Option<Vec<Bson>> {
    match filter {
        Filter::Path { path, pred } if path == "_id" => pred_points(pred),
        Filter::And(children) => children.iter().find_map(id_points),
        _ => None,
    }
}

fn pred_points(pred: &Pred) -> Option<Vec<Bson>> {
    // An `_id` is never an array, so an array operand (which would match array elements) cannot
    // be a point; such predicates fall back to a scan.
    let plain = |v: &Bson| !matches!(v, Bson::Array(_));
    match pred {
        Pred::Eq(v) if plain(v) => Some(vec![v.clone()]),
        Pred::In(list) if list.regexes.is_empty() && list.values.iter().all(plain) => {
            Some(list.values.clone())
        }
        Pred::And(preds) => preds.iter().find_map(pred_points),
        _ => None,
    }
}

/// Fetches the documents of a plan that match the filter, stopping after `limit` matches when the
/// plan's order is final (`limit` 0: no limit). Returns the matches and whether they are already
/// in the requested sort order.
pub fn fetch(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
    hint: Option<&Hint>,
) -> Result<(Vec<Found>, bool)> {
    let bound = bind_text(meta, filter)?;
    fetch_bound(txn, meta, bound.as_ref().unwrap_or(filter), sort, limit, hint)
}

/// The documents matching a `$text` filter, each with its score in
/// [`crate::query::text::SCORE_FIELD`] (unsorted).
pub fn fetch_scored(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    hint: Option<&Hint>,
) -> Result<Vec<Found>> {
    let bound = bind_text(meta, filter)?;
    let filter = bound.as_ref().unwrap_or(filter);
    let (mut found, _) = fetch_bound(txn, meta, filter, None, 0, hint)?;
    if let Some(t) = filter.text() {
        for f in &mut found {
            let score = t.score(&f.doc);
            f.doc.insert(crate::query::text::SCORE_FIELD, score);
        }
    }
    Ok(found)
}

/// [`fetch`] of a filter whose `$text`, if any, is already bound (see [`bind_text`]).
fn fetch_bound(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
    hint: Option<&Hint>,
) -> Result<(Vec<Found>, bool)> {
    let plan = plan_hinted(meta, filter, sort, hint)?;
    super::opstats::set_plan(|| summary(meta, &plan), false);
    let (mut found, sorted) = fetch_plan(txn, meta, &plan, filter, sort, limit)?;
    if sort.is_some_and(|s| !s.is_empty()) && !sorted {
        super::opstats::set_plan(String::new, true);
    }
    if let (Some((path, near)), None) = (filter.near(), sort) {
        // `$near` returns documents nearest first (ties in the order found).
        sort_by_distance(&mut found, path, near);
        return Ok((found, true));
    }
    Ok((found, sorted))
}

/// MongoDB's one-line plan summary: `IDHACK`, `COLLSCAN`, `IXSCAN { a: 1, b: -1 }`, and the
/// branches of an `$or` joined by `, `.
pub fn summary(meta: &CollectionMeta, plan: &Plan) -> String {
    match plan {
        Plan::IdPoints(_) => "IDHACK".to_string(),
        Plan::CollectionScan => "COLLSCAN".to_string(),
        Plan::IndexScan { index, .. } => match meta.indexes.iter().find(|i| i.id == *index) {
            Some(i) => i.scan_summary().to_string(),
            None => "IXSCAN {  }".to_string(),
        },
        Plan::Or(branches) => {
            branches.iter().map(|b| summary(meta, b)).collect::<Vec<_>>().join(", ")
        }
    }
}

/// The distance of a document's nearest location at `path` from a `$near` point.
pub fn distance(doc: &Document, path: &str, near: &Near) -> Option<f64> {
    geo::values_at(doc, path).iter().filter_map(|v| near.distance_to_value(v)).reduce(f64::min)
}

fn sort_by_distance(found: &mut Vec<Found>, path: &str, near: &Near) {
    let mut keyed: Vec<(f64, Found)> = std::mem::take(found)
        .into_iter()
        .map(|f| (distance(&f.doc, path, near).unwrap_or(f64::INFINITY), f))
        .collect();
    // A stable sort: ties stay in the order found.
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    *found = keyed.into_iter().map(|(_, f)| f).collect();
}

/// Fetches the documents of a chosen plan (see [`fetch`]).
fn fetch_plan(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    plan: &Plan,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
) -> Result<(Vec<Found>, bool)> {
    let matches = |d: &Document| filter.matches(d);
    match plan {
        Plan::Or(branches) => {
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for branch in branches {
                for f in fetch_plan(txn, meta, branch, filter, None, 0)?.0 {
                    if seen.insert(f.key.clone()) {
                        out.push(f);
                    }
                }
            }
            // The union comes back in `_id` order, like a scan.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok((out, false))
        }
        Plan::IdPoints(ids) => {
            let mut load = |key: &[u8]| Ok(get_document(txn, key)?.filter(|d| matches(d)));
            let out = read_points(meta, ids, &mut load)?;
            Ok((out.into_iter().map(|(key, doc)| Found { key, doc }).collect(), false))
        }
        Plan::IndexScan { index, ranges, reverse, sorted, .. } => {
            let mut load = |key: &[u8]| Ok(get_document(txn, key)?.filter(|d| matches(d)));
            let has_array = |d: &Document| *sorted && sort.is_some_and(|s| s.has_array_on_key(d));
            let mut scan = |stop_early: bool| {
                let scan = IndexScan { meta, index: *index, ranges, reverse: *reverse };
                scan.run(txn, stop_early, limit, &mut load, &has_array).map(|(found, arrays)| {
                    (found.into_iter().map(|(key, doc)| Found { key, doc }).collect(), arrays)
                })
            };
            let (out, arrays): (Vec<Found>, bool) = scan(*sorted)?;
            if !arrays {
                return Ok((out, *sorted));
            }
            // An array on a sorted path: index order is not MongoDB's sort order for it (see
            // the module docs), so every match is fetched and sorted by the caller.
            let (out, _) = if limit > 0 { scan(false)? } else { (out, true) };
            Ok((out, false))
        }
        Plan::CollectionScan => {
            let mut out: Vec<Found> =
                scan_collection(txn, meta)?.into_iter().filter(|f| matches(&f.doc)).collect();
            if sort.is_none() && limit > 0 {
                out.truncate(limit);
            }
            Ok((out, false))
        }
    }
}

/// Point reads of `_id` values, each read once: `load` reads a document by its storage key and
/// keeps it if it matches. The results come back in `_id` order, like a scan.
fn read_points<T>(
    meta: &CollectionMeta,
    ids: &[Bson],
    load: &mut dyn FnMut(&[u8]) -> Result<Option<T>>,
) -> Result<Keyed<T>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        let key = Key::Document { coll: meta.id, id: &id_key(id) }.encode();
        if !seen.insert(key.clone()) {
            continue;
        }
        super::opstats::add_keys(1);
        if let Some(doc) = load(&key)? {
            out.push((key, doc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Documents found, each with its storage key.
type Keyed<T> = Vec<(Vec<u8>, T)>;

/// The ranges of one index a plan scans.
struct IndexScan<'a> {
    meta: &'a CollectionMeta,
    index: u32,
    ranges: &'a [(Vec<u8>, Vec<u8>)],
    reverse: bool,
}

impl IndexScan<'_> {
    /// Reads the documents the ranges reach, in index order, each once: `load` reads one by
    /// its storage key and keeps it if it matches, and `has_array` says whether a match has an
    /// array on the sort's path. With `stop_early`, stops after `limit` matches (0: none)
    /// unless some match had such an array. Returns the matches and whether one had.
    fn run<T>(
        &self,
        txn: &dyn Txn,
        stop_early: bool,
        limit: usize,
        load: &mut dyn FnMut(&[u8]) -> Result<Option<T>>,
        has_array: &dyn Fn(&T) -> bool,
    ) -> Result<(Keyed<T>, bool)> {
        let prefix = keys::index_prefix(self.meta.id, self.index);
        let mut out = Vec::new();
        // Hashed once per scanned key: the standard library's SipHash costs more here than
        // the fetch's own bookkeeping.
        let mut seen = foldhash::HashSet::default();
        let mut arrays = false;
        for (start, end) in self.ranges {
            let mut lo = prefix.clone();
            lo.extend_from_slice(start);
            let mut hi = prefix.clone();
            hi.extend_from_slice(end);
            for item in txn.scan(Bound::Included(&lo), Bound::Excluded(&hi), self.reverse)? {
                let (_, id) = item?;
                super::opstats::add_keys(1);
                let key = Key::Document { coll: self.meta.id, id: &id }.encode();
                if !seen.insert(id) {
                    continue; // A multikey document appears once per distinct key.
                }
                let Some(doc) = load(&key)? else { continue };
                arrays |= has_array(&doc);
                out.push((key, doc));
                if stop_early && !arrays && limit > 0 && out.len() >= limit {
                    return Ok((out, arrays));
                }
            }
        }
        Ok((out, arrays))
    }
}

/// [`fetch`] for a reader that hands the documents on as they are stored: the matches of an
/// `_id`, index or collection scan as raw BSON, in the order [`fetch`] gives them, checked
/// with [`Filter::matches_raw`] and decoded only where that cannot decide. `None` when the
/// results need more than that: the union of an `$or`, a `$text` or `$near` query, a capped
/// collection's insertion order, a sort the scan's order does not give, or a document with
/// an array on the sort's path (the caller then runs [`fetch`]).
pub fn fetch_raw(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
    hint: Option<&Hint>,
) -> Result<Option<Vec<RawDocumentBuf>>> {
    if meta.is_view() || filter.text().is_some() || filter.near().is_some() {
        return Ok(None);
    }
    let sorting = sort.is_some_and(|s| !s.is_empty());
    if !sorting && super::capped::is_capped(meta) {
        return Ok(None);
    }
    let plan = plan_hinted(meta, filter, sort, hint)?;
    // A match with every sort path: where the raw matcher decided a document, each path of
    // the filter's conjunction reached no array, so the sort's need not be walked again.
    let sort_paths_matched = sort
        .is_some_and(|s| s.keys.iter().all(|(path, _)| filter.conjunct_paths().any(|p| p == path)));
    // Each match, and whether the raw matcher decided it.
    let mut load = |key: &[u8]| -> Result<Option<(RawDocumentBuf, bool)>> {
        let Some(bytes) = txn.get(key)? else { return Ok(None) };
        super::opstats::add_docs(1);
        let raw = crate::error::stored_raw_document(bytes, "document")?;
        let (matched, decided) = raw_matches(filter, &raw)?;
        Ok(matched.then_some((raw, decided)))
    };
    let found: Vec<RawDocumentBuf> = match &plan {
        Plan::IndexScan { index, ranges, reverse, sorted, .. } if *sorted || !sorting => {
            let has_array = |(d, decided): &(RawDocumentBuf, bool)| {
                sorting
                    && !(*decided && sort_paths_matched)
                    && sort.is_some_and(|s| s.has_array_on_key_raw(d))
            };
            let scan = IndexScan { meta, index: *index, ranges, reverse: *reverse };
            let (found, arrays) = scan.run(txn, *sorted, limit, &mut load, &has_array)?;
            if arrays {
                return Ok(None);
            }
            found.into_iter().map(|(_, (d, _))| d).collect()
        }
        // One document is in every order.
        Plan::IdPoints(ids) if !sorting || ids.len() <= 1 => {
            read_points(meta, ids, &mut load)?.into_iter().map(|(_, (d, _))| d).collect()
        }
        Plan::CollectionScan if !sorting => {
            let prefix = keys::document_prefix(meta.id);
            let end = keys::prefix_end(&prefix);
            let mut out = Vec::new();
            for item in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
                let (_, bytes) = item?;
                super::opstats::add_docs(1);
                let raw = crate::error::stored_raw_document(bytes, "document")?;
                if raw_matches(filter, &raw)?.0 {
                    out.push(raw);
                    if limit > 0 && out.len() >= limit {
                        break;
                    }
                }
            }
            out
        }
        _ => return Ok(None),
    };
    super::opstats::set_plan(|| summary(meta, &plan), false);
    Ok(Some(found))
}

/// Whether a stored document matches, read raw where [`Filter::matches_raw`] can tell, else
/// decoded; and whether it was read raw.
fn raw_matches(filter: &Filter, raw: &RawDocumentBuf) -> Result<(bool, bool)> {
    match filter.matches_raw(raw) {
        Some(m) => Ok((m, true)),
        None => {
            let doc = crate::error::stored_document(raw.as_bytes(), "document")?;
            Ok((filter.matches(&doc), false))
        }
    }
}

/// The `queryPlanner` section of `explain`: the winning plan with MongoDB's stage names
/// (`IDHACK`, `IXSCAN` under `FETCH`, `COLLSCAN`, `SORT` when the order is not the index's).
pub fn explain(
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    hint: Option<&Hint>,
) -> Result<Document> {
    let bound = bind_text(meta, filter)?;
    let filter = bound.as_ref().unwrap_or(filter);
    let plan = plan_hinted(meta, filter, sort, hint)?;
    let with_filter = |mut stage: Document| {
        if !filter.is_trivial() {
            stage.insert("filter", filter.to_document());
        }
        stage
    };
    let (mut winning, sorted) = match &plan {
        Plan::IdPoints(_) => (bson::doc! { "stage": "IDHACK" }, false),
        Plan::IndexScan { sorted, .. } => (
            with_filter(bson::doc! { "stage": "FETCH", "inputStage": scan_stage(meta, &plan) }),
            *sorted,
        ),
        Plan::Or(_) => {
            let fetch =
                with_filter(bson::doc! { "stage": "FETCH", "inputStage": scan_stage(meta, &plan) });
            (bson::doc! { "stage": "SUBPLAN", "inputStage": fetch }, false)
        }
        Plan::CollectionScan => {
            (with_filter(bson::doc! { "stage": "COLLSCAN", "direction": "forward" }), false)
        }
    };
    if let (Some((path, near)), Plan::IndexScan { index, name, .. }) = (filter.near(), &plan) {
        // MongoDB's near stages fetch and order by distance themselves.
        let key = meta
            .indexes
            .iter()
            .find(|i| i.id == *index)
            .and_then(|i| i.spec().get_document("key").ok().cloned())
            .unwrap_or_default();
        let flat = key.get(path).and_then(Bson::as_str) == Some("2d") && !near.spherical;
        let stage = if flat { "GEO_NEAR_2D" } else { "GEO_NEAR_2DSPHERE" };
        winning = bson::doc! {
            "stage": stage,
            "keyPattern": key,
            "indexName": name.clone(),
            "inputStage": winning,
        };
    } else if let (Some(_), Plan::IndexScan { name, .. }) = (filter.text(), &plan) {
        // MongoDB's text stages: the terms' index scans, then the phrase and negation checks.
        winning =
            bson::doc! { "stage": "TEXT_MATCH", "indexName": name.clone(), "inputStage": winning };
        if let Some(sort) = sort.filter(|s| !s.is_empty()) {
            winning = bson::doc! { "stage": "SORT", "sortPattern": sort_pattern(sort), "inputStage": winning };
        }
    } else if let Some(sort) = sort.filter(|s| !s.is_empty() && !sorted) {
        let pattern: Document = sort
            .keys
            .iter()
            .map(|(k, asc)| (k.clone(), Bson::Int32(if *asc { 1 } else { -1 })))
            .collect();
        winning = bson::doc! { "stage": "SORT", "sortPattern": pattern, "inputStage": winning };
    }
    Ok(bson::doc! {
        "namespace": meta.namespace(),
        "parsedQuery": filter.to_document(),
        "winningPlan": winning,
        "rejectedPlans": [],
    })
}

/// A sort as `explain` prints it (`{$meta: "textScore"}` for a text score).
fn sort_pattern(sort: &SortSpec) -> Document {
    sort.keys
        .iter()
        .map(|(k, asc)| {
            if k == crate::query::text::SCORE_FIELD {
                return ("score".to_string(), Bson::Document(bson::doc! {"$meta": "textScore"}));
            }
            (k.clone(), Bson::Int32(if *asc { 1 } else { -1 }))
        })
        .collect()
}

/// The stage that produces a plan's record ids: `IXSCAN` for an index scan (and for `_id`
/// points inside an `$or`), `OR` over the branches of a union.
fn scan_stage(meta: &CollectionMeta, plan: &Plan) -> Document {
    match plan {
        Plan::IndexScan { index, name, reverse, bounds, .. } => {
            let key = meta
                .indexes
                .iter()
                .find(|i| i.id == *index)
                .and_then(|i| i.spec().get_document("key").ok().cloned())
                .unwrap_or_default();
            bson::doc! {
                "stage": "IXSCAN",
                "keyPattern": key,
                "indexName": name.clone(),
                "isMultiKey": true,
                "direction": if *reverse { "backward" } else { "forward" },
                "indexBounds": explain_bounds(meta, *index, bounds, *reverse),
            }
        }
        Plan::IdPoints(ids) => {
            let mut points: Vec<Bson> = ids
                .iter()
                .map(|v| {
                    let v = crate::index::fmt::format_value(v);
                    Bson::String(format!("[{v}, {v}]"))
                })
                .collect();
            points.dedup();
            bson::doc! {
                "stage": "IXSCAN",
                "keyPattern": { "_id": 1 },
                "indexName": "_id_",
                "isMultiKey": false,
                "direction": "forward",
                "indexBounds": { "_id": points },
            }
        }
        Plan::Or(branches) => bson::doc! {
            "stage": "OR",
            "inputStages": branches.iter().map(|b| Bson::Document(scan_stage(meta, b))).collect::<Vec<_>>(),
        },
        Plan::CollectionScan => bson::doc! { "stage": "COLLSCAN", "direction": "forward" },
    }
}

/// `indexBounds` as MongoDB prints them: per field, its intervals as strings (`"[5, 5]"`,
/// `"(3, inf.0]"`, `"[MinKey, MaxKey]"`), high to low on a descending field, and in reverse
/// for a backward scan.
fn explain_bounds(
    meta: &CollectionMeta,
    index: u32,
    bounds: &[(String, Vec<Interval>)],
    reverse: bool,
) -> Document {
    let spec = meta.indexes.iter().find(|i| i.id == index).and_then(|i| i.parsed().ok());
    let mut out = Document::new();
    for (n, (path, intervals)) in bounds.iter().enumerate() {
        let descending = spec.as_ref().and_then(|s| s.fields.get(n)).is_some_and(|f| f.descending);
        let collated = spec.as_ref().is_some_and(|s| s.collation.is_some());
        let mut shown: Vec<Bson> = intervals
            .iter()
            .map(|iv| Bson::String(interval_string(iv, descending != reverse, collated)))
            .collect();
        if descending != reverse {
            shown.reverse();
        }
        out.insert(path.clone(), shown);
    }
    out
}

fn interval_string(iv: &Interval, flipped: bool, collated: bool) -> String {
    let (a, b) = if flipped { (&iv.high, &iv.low) } else { (&iv.low, &iv.high) };
    format!(
        "{}{}, {}{}",
        if a.inclusive { "[" } else { "(" },
        bound_value(&a.value, collated),
        bound_value(&b.value, collated),
        if b.inclusive { "]" } else { ")" }
    )
}

/// One interval end as MongoDB prints it (collation keys as `CollationKey(0x…)`).
fn bound_value(v: &Bson, collated: bool) -> String {
    match v {
        Bson::Double(d) if d.is_infinite() => {
            if *d > 0.0 {
                "inf.0".to_string()
            } else {
                "-inf.0".to_string()
            }
        }
        Bson::String(s) if collated && !s.is_empty() => {
            let hex: String = s
                .chars()
                .map(|c| format!("{:02x}", (c as u32).saturating_sub(0x100) & 0xff))
                .collect();
            format!("CollationKey(0x{hex})")
        }
        other => crate::index::fmt::format_value(other),
    }
}
