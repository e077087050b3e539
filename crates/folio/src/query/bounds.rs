//! What a planner and an upsert need to know about a filter without running it: its top-level
//! equality predicates ([`Filter::equalities`]) and the ranges of values a field may take
//! ([`Filter::bounds`]).
//!
//! # Bounds
//!
//! [`Filter::bounds`] returns, for one path, a set of [`Interval`]s of BSON values (in MongoDB's
//! order, [`cmp_bson`]) such that *every* document the filter matches has a value at that path
//! inside one of them — or `None` when the filter does not constrain the path in a way we can
//! express. A missing field counts as `null`, as in MongoDB's indexes. Only predicates that must
//! all hold (the top-level conjunction) are used; `$or`, negations and `$expr` are ignored, which
//! keeps the bounds a superset: the matcher always re-checks the fetched documents.
//!
//! Type bracketing shows in the intervals: `{$gt: 5}` is `(5, +inf]` among numbers, not up to
//! MaxKey. For a multikey index (some document has an array at the path), the predicates on one
//! path may be satisfied by different elements, so the bounds of only one predicate may be used
//! (`multikey = true`); otherwise they are intersected.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::filter::{CmpOp, ElemMatcher, Filter, Pred};
use crate::collation::{Collation, has_strings};
use crate::doc::canonical_rank;
use crate::doc::compare::{Number, cmp_bson};

/// One end of an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The value.
    pub value: Bson,
    /// Whether the value itself is in the interval.
    pub inclusive: bool,
}

/// An interval of BSON values in MongoDB's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// The lower end.
    pub low: Endpoint,
    /// The upper end.
    pub high: Endpoint,
}

impl Interval {
    /// The single value `v`.
    pub fn point(v: Bson) -> Interval {
        Interval {
            low: Endpoint { value: v.clone(), inclusive: true },
            high: Endpoint { value: v, inclusive: true },
        }
    }

    /// Every value, MinKey to MaxKey.
    pub fn all() -> Interval {
        Interval {
            low: Endpoint { value: Bson::MinKey, inclusive: true },
            high: Endpoint { value: Bson::MaxKey, inclusive: true },
        }
    }

    /// Whether this interval is a single value.
    pub fn is_point(&self) -> bool {
        self.low.inclusive
            && self.high.inclusive
            && cmp_bson(&self.low.value, &self.high.value) == Ordering::Equal
    }

    /// Whether `v` lies in the interval.
    pub fn contains(&self, v: &Bson) -> bool {
        let lo = cmp_bson(v, &self.low.value);
        let hi = cmp_bson(v, &self.high.value);
        (lo == Ordering::Greater || (lo == Ordering::Equal && self.low.inclusive))
            && (hi == Ordering::Less || (hi == Ordering::Equal && self.high.inclusive))
    }

    fn is_empty(&self) -> bool {
        match cmp_bson(&self.low.value, &self.high.value) {
            Ordering::Greater => true,
            Ordering::Equal => !(self.low.inclusive && self.high.inclusive),
            Ordering::Less => false,
        }
    }

    fn intersect(&self, other: &Interval) -> Option<Interval> {
        let low = match cmp_bson(&self.low.value, &other.low.value) {
            Ordering::Greater => self.low.clone(),
            Ordering::Less => other.low.clone(),
            Ordering::Equal => Endpoint {
                value: self.low.value.clone(),
                inclusive: self.low.inclusive && other.low.inclusive,
            },
        };
        let high = match cmp_bson(&self.high.value, &other.high.value) {
            Ordering::Less => self.high.clone(),
            Ordering::Greater => other.high.clone(),
            Ordering::Equal => Endpoint {
                value: self.high.value.clone(),
                inclusive: self.high.inclusive && other.high.inclusive,
            },
        };
        let i = Interval { low, high };
        (!i.is_empty()).then_some(i)
    }
}

/// The smallest and largest values of a canonical type, as interval ends.
fn type_range(v: &Bson) -> (Endpoint, Endpoint) {
    let incl = |value: Bson| Endpoint { value, inclusive: true };
    let excl = |value: Bson| Endpoint { value, inclusive: false };
    match canonical_rank(v) {
        10 => (incl(Bson::Double(f64::NAN)), incl(Bson::Double(f64::INFINITY))),
        15 => (incl(Bson::String(String::new())), excl(Bson::Document(Document::new()))),
        20 => (incl(Bson::Document(Document::new())), excl(Bson::Array(Vec::new()))),
        25 => (
            incl(Bson::Array(Vec::new())),
            excl(Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: Vec::new(),
            })),
        ),
        30 => (
            incl(Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: Vec::new(),
            })),
            excl(Bson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12]))),
        ),
        35 => (
            incl(Bson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12]))),
            incl(Bson::ObjectId(bson::oid::ObjectId::from_bytes([0xff; 12]))),
        ),
        40 => (incl(Bson::Boolean(false)), incl(Bson::Boolean(true))),
        45 => {
            (incl(Bson::DateTime(bson::DateTime::MIN)), incl(Bson::DateTime(bson::DateTime::MAX)))
        }
        47 => (
            incl(Bson::Timestamp(bson::Timestamp { time: 0, increment: 0 })),
            incl(Bson::Timestamp(bson::Timestamp { time: u32::MAX, increment: u32::MAX })),
        ),
        _ => (incl(v.clone()), incl(v.clone())),
    }
}

/// Bounds of one leaf predicate for an index with collation `ic` (`None`: simple), or `None`
/// when it does not restrict the values usefully. The index holds collation keys of strings:
/// a comparison under the same collation is bounded by its keyed form; any other bound that
/// involves strings would compare raw strings to keys, and is not used.
fn pred_bounds(pred: &Pred, ic: Option<&Collation>) -> Option<Vec<Interval>> {
    if let Pred::Collated(c) = pred {
        return if crate::collation::same(Some(&c.collation), ic) {
            leaf_bounds(&c.keyed, ic)
        } else {
            None
        };
    }
    let b = leaf_bounds(pred, ic)?;
    let stringy = |i: &Interval| has_strings(&i.low.value) || has_strings(&i.high.value);
    if ic.is_some() && b.iter().any(stringy) { None } else { Some(b) }
}

/// Bounds of one leaf predicate as written (see [`pred_bounds`]).
fn leaf_bounds(pred: &Pred, ic: Option<&Collation>) -> Option<Vec<Interval>> {
    match pred {
        Pred::Eq(v) => Some(eq_bounds(v)),
        Pred::In(list) => {
            if !list.regexes.is_empty() {
                return None;
            }
            let mut out: Vec<Interval> = list.values.iter().flat_map(eq_bounds).collect();
            out.sort_by(|a, b| cmp_bson(&a.low.value, &b.low.value));
            out.dedup_by(|a, b| a == b);
            Some(out)
        }
        Pred::Cmp(op, v) => {
            if matches!(v, Bson::MinKey | Bson::MaxKey) {
                return None;
            }
            if Number::of(v).is_some_and(Number::is_nan) {
                // Only `$gte`/`$lte` NaN match anything (NaN itself).
                return Some(match op {
                    CmpOp::Gte | CmpOp::Lte => vec![Interval::point(Bson::Double(f64::NAN))],
                    CmpOp::Gt | CmpOp::Lt => Vec::new(),
                });
            }
            let (lo, hi) = type_range(v);
            let point = |inclusive| Endpoint { value: v.clone(), inclusive };
            let i = match op {
                CmpOp::Gt => Interval { low: point(false), high: hi },
                CmpOp::Gte => Interval { low: point(true), high: hi },
                CmpOp::Lt => Interval { low: lo, high: point(false) },
                CmpOp::Lte => Interval { low: lo, high: point(true) },
            };
            // A number range excludes NaN, which sorts below every number.
            let i = match (canonical_rank(v), op) {
                (10, CmpOp::Lt | CmpOp::Lte) => Interval {
                    low: Endpoint { value: Bson::Double(f64::NEG_INFINITY), inclusive: true },
                    high: i.high,
                },
                _ => i,
            };
            Some(if i.is_empty() { Vec::new() } else { vec![i] })
        }
        Pred::Regex(re) => {
            let prefix = re.literal_prefix()?;
            let low = Endpoint { value: Bson::String(prefix.clone()), inclusive: true };
            let high = match successor(&prefix) {
                Some(s) => Endpoint { value: Bson::String(s), inclusive: false },
                None => Endpoint { value: Bson::Document(Document::new()), inclusive: false },
            };
            // A stored regex equal to the filter's matches too.
            let stored = Bson::RegularExpression(bson::Regex {
                pattern: re.pattern.clone().try_into().ok()?,
                options: re.options.clone().try_into().ok()?,
            });
            Some(vec![Interval { low, high }, Interval::point(stored)])
        }
        Pred::Type(_)
        | Pred::Exists
        | Pred::Mod(..)
        | Pred::Size(_)
        | Pred::Bits(..)
        | Pred::Not(_)
        | Pred::And(_)
        | Pred::Geo(_) => None,
        Pred::ElemMatch(m) => match m.as_ref() {
            ElemMatcher::Value(p) => and_bounds(std::slice::from_ref(p), false, ic),
            ElemMatcher::Object(_) | ElemMatcher::Exact(..) => None,
        },
        Pred::Never => Some(Vec::new()),
        // Handled by `pred_bounds`.
        Pred::Collated(_) => None,
    }
}

/// The smallest string greater than every string starting with `prefix`.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Equality bounds: the value, plus for an array its first element (an index on a multikey
/// field holds elements, not the array) and `undefined` for an empty array.
fn eq_bounds(v: &Bson) -> Vec<Interval> {
    match v {
        Bson::Array(items) => {
            let mut out = vec![Interval::point(v.clone())];
            match items.first() {
                Some(first) => out.push(Interval::point(first.clone())),
                None => out.push(Interval::point(Bson::Undefined)),
            }
            out.sort_by(|a, b| cmp_bson(&a.low.value, &b.low.value));
            out
        }
        Bson::Null => vec![Interval {
            low: Endpoint { value: Bson::Undefined, inclusive: true },
            high: Endpoint { value: Bson::Null, inclusive: true },
        }],
        other => vec![Interval::point(other.clone())],
    }
}

/// Intersects the bounds of several predicates on one path (or keeps the first when multikey).
fn and_bounds(preds: &[Pred], multikey: bool, ic: Option<&Collation>) -> Option<Vec<Interval>> {
    let mut acc: Option<Vec<Interval>> = None;
    for p in preds {
        let b = match p {
            Pred::And(inner) => and_bounds(inner, multikey, ic),
            other => pred_bounds(other, ic),
        };
        let Some(b) = b else { continue };
        acc = Some(match acc {
            None => b,
            Some(_) if multikey => continue,
            Some(prev) => {
                prev.iter().flat_map(|x| b.iter().filter_map(move |y| x.intersect(y))).collect()
            }
        });
    }
    acc
}

impl Filter {
    /// The filter in MongoDB's normalized form, as explain shows it in `parsedQuery`: `$ne` as
    /// `{$not: {$eq: v}}`, several conditions as `$and`, equality as `{$eq: v}`.
    pub fn to_document(&self) -> Document {
        match self {
            Filter::And(children) if children.is_empty() => Document::new(),
            Filter::And(children) if children.len() == 1 => children[0].to_document(),
            Filter::And(children) => logical("$and", children),
            Filter::Or(children) => logical("$or", children),
            Filter::Nor(children) => logical("$nor", children),
            Filter::Path { path, pred } => path_document(path, pred),
            Filter::Expr(e) => bson::doc! {"$expr": e.to_bson()},
            Filter::Schema(s) => bson::doc! {"$jsonSchema": s.source().clone()},
            Filter::Text(t) => bson::doc! {"$text": t.source.clone()},
            Filter::Const(true) => bson::doc! {"$alwaysTrue": 1},
            Filter::Const(false) => bson::doc! {"$alwaysFalse": 1},
        }
    }

    /// The top-level conjunction's children.
    fn conjuncts(&self) -> Vec<&Filter> {
        match self {
            Filter::And(children) => children.iter().flat_map(Filter::conjuncts).collect(),
            other => vec![other],
        }
    }

    /// The equality predicates that every matching document satisfies: `(path, value)` from
    /// `{path: value}`, `{path: {$eq: value}}` and one-element `$in`, in the top-level
    /// conjunction (through `$and`). Used to seed upserts and to plan point lookups.
    pub fn equalities(&self) -> Vec<(String, Bson)> {
        let mut out = Vec::new();
        for f in self.conjuncts() {
            if let Filter::Path { path, pred } = f {
                collect_eqs(path, pred, &mut out);
            }
        }
        out
    }

    /// Value intervals for `path` (see the module docs), sorted and non-overlapping for a
    /// single predicate; `None` when the filter does not constrain `path`.
    pub fn bounds(&self, path: &str, multikey: bool) -> Option<Vec<Interval>> {
        self.bounds_for_index(path, multikey, None)
    }

    /// [`Filter::bounds`] for an index with collation `ic` (`None`: simple): string bounds are
    /// given only by comparisons under the index's own collation, as collation keys.
    pub fn bounds_for_index(
        &self,
        path: &str,
        multikey: bool,
        ic: Option<&Collation>,
    ) -> Option<Vec<Interval>> {
        let preds: Vec<Pred> = self
            .conjuncts()
            .into_iter()
            .filter_map(|f| match f {
                Filter::Path { path: p, pred } if p == path => Some(pred.clone()),
                Filter::Const(false) => Some(Pred::Never),
                _ => None,
            })
            .collect();
        and_bounds(&preds, multikey, ic)
    }
}

fn collect_eqs(path: &str, pred: &Pred, out: &mut Vec<(String, Bson)>) {
    match pred {
        Pred::Eq(v) => out.push((path.to_string(), v.clone())),
        Pred::In(list) if list.values.len() == 1 && list.regexes.is_empty() => {
            out.push((path.to_string(), list.values[0].clone()))
        }
        Pred::And(preds) => {
            for p in preds {
                collect_eqs(path, p, out);
            }
        }
        // An upsert is seeded with the value as written.
        Pred::Collated(c) => collect_eqs(path, &c.original, out),
        _ => {}
    }
}

fn logical(op: &str, children: &[Filter]) -> Document {
    let mut items = Vec::with_capacity(children.len());
    for child in children {
        let doc = child.to_document();
        // A nested `$and` inside `$and` is flattened, as MongoDB normalizes it.
        match (op, doc.get("$and")) {
            ("$and", Some(Bson::Array(inner))) if doc.len() == 1 => {
                items.extend(inner.iter().cloned())
            }
            _ => items.push(Bson::Document(doc)),
        }
    }
    let mut d = Document::new();
    d.insert(op, Bson::Array(items));
    d
}

/// `{path: <operators>}`, or an `$and` of them when one path has several predicates.
fn path_document(path: &str, pred: &Pred) -> Document {
    match pred {
        Pred::And(preds) if preds.len() != 1 => {
            let items: Vec<Bson> =
                preds.iter().map(|p| Bson::Document(path_document(path, p))).collect();
            bson::doc! {"$and": items}
        }
        Pred::And(preds) => path_document(path, &preds[0]),
        other => {
            let mut d = Document::new();
            d.insert(path, Bson::Document(pred_document(other)));
            d
        }
    }
}

/// The operator document of one predicate (`{$gt: 5}`).
fn pred_document(pred: &Pred) -> Document {
    let one = |op: &str, v: Bson| {
        let mut d = Document::new();
        d.insert(op, v);
        d
    };
    match pred {
        Pred::Eq(v) => one("$eq", v.clone()),
        Pred::Cmp(op, v) => one(
            match op {
                CmpOp::Gt => "$gt",
                CmpOp::Gte => "$gte",
                CmpOp::Lt => "$lt",
                CmpOp::Lte => "$lte",
            },
            v.clone(),
        ),
        Pred::In(list) => {
            let mut items = list.values.clone();
            items.extend(list.regexes.iter().filter_map(regex_value));
            one("$in", Bson::Array(items))
        }
        Pred::Exists => one("$exists", Bson::Boolean(true)),
        Pred::Type(sels) => one(
            "$type",
            Bson::Array(
                sels.iter()
                    .map(|s| match s {
                        super::filter::TypeSel::Code(c) => Bson::Int32(*c),
                        super::filter::TypeSel::Number => Bson::String("number".to_string()),
                    })
                    .collect(),
            ),
        ),
        Pred::Regex(re) => {
            bson::doc! {"$regex": re.pattern.clone(), "$options": re.options.clone()}
        }
        Pred::Mod(d, r) => one("$mod", Bson::Array(vec![Bson::Int64(*d), Bson::Int64(*r)])),
        Pred::Size(n) => one("$size", Bson::Int64(*n)),
        Pred::ElemMatch(m) => one(
            "$elemMatch",
            Bson::Document(match m.as_ref() {
                ElemMatcher::Object(f) => f.to_document(),
                ElemMatcher::Value(p) => pred_document(p),
                ElemMatcher::Exact(v, _) => bson::doc! {"$eq": v.clone()},
            }),
        ),
        Pred::And(preds) => {
            let mut d = Document::new();
            for p in preds {
                d.extend(pred_document(p));
            }
            d
        }
        Pred::Not(inner) => one("$not", Bson::Document(pred_document(inner))),
        Pred::Bits(test, positions) => one(
            match test {
                super::filter::BitsTest::AllSet => "$bitsAllSet",
                super::filter::BitsTest::AllClear => "$bitsAllClear",
                super::filter::BitsTest::AnySet => "$bitsAnySet",
                super::filter::BitsTest::AnyClear => "$bitsAnyClear",
            },
            Bson::Array(positions.iter().map(|p| Bson::Int64(i64::from(*p))).collect()),
        ),
        // Matches nothing, and parses back as such.
        Pred::Never => one("$in", Bson::Array(Vec::new())),
        Pred::Collated(c) => pred_document(&c.original),
        Pred::Geo(g) => g.source.clone(),
    }
}

fn regex_value(re: &super::filter::Regex) -> Option<Bson> {
    Some(Bson::RegularExpression(bson::Regex {
        pattern: re.pattern.clone().try_into().ok()?,
        options: re.options.clone().try_into().ok()?,
    }))
}
