//! Accumulators for `$group` and `$bucket`.
//!
//! An accumulator is parsed once ([`AccSpec`]) and then instantiated per group ([`Acc`]), which
//! folds the values of the group's documents in input order and produces the output value at the
//! end. Groups are found with an ordered map keyed by MongoDB's value order, so `1` and `1.0` fall
//! in the same group as they do in MongoDB; output is in order of first appearance.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::spill::{approx_doc_size, approx_size};
use crate::collation::{Collation, CollationRef, has_strings, transform_opt};
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::error::{Code, Error, Result};
use crate::expr::{Expression, Scope, Value, Vars, loc, type_name};
use crate::expr::{add_numbers, std_dev};
use crate::memory;

/// The accumulator operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccOp {
    /// `$sum`
    Sum,
    /// `$avg`
    Avg,
    /// `$min`
    Min,
    /// `$max`
    Max,
    /// `$first`
    First,
    /// `$last`
    Last,
    /// `$push`
    Push,
    /// `$addToSet`
    AddToSet,
    /// `$count`
    Count,
    /// `$mergeObjects`
    MergeObjects,
    /// `$stdDevPop`
    StdDevPop,
    /// `$stdDevSamp`
    StdDevSamp,
    /// `$firstN`
    FirstN,
    /// `$lastN`
    LastN,
    /// `$maxN`
    MaxN,
    /// `$minN`
    MinN,
    /// `$top`
    Top,
    /// `$bottom`
    Bottom,
    /// `$topN`
    TopN,
    /// `$bottomN`
    BottomN,
}

/// A parsed accumulator: output field, operator and argument expression.
#[derive(Clone, Debug)]
pub struct AccSpec {
    /// The output field name.
    pub field: String,
    /// The operator.
    pub op: AccOp,
    /// The argument, evaluated per document (`input` / `output` for the N and top/bottom
    /// accumulators).
    pub arg: Expression,
    /// `n` of the N accumulators (a constant).
    pub n: Option<usize>,
    /// `sortBy` of `$top`/`$bottom`/`$topN`/`$bottomN`.
    pub sort: Option<crate::query::SortSpec>,
    /// The operation's collation: `$min`, `$max`, `$minN`, `$maxN` and the top/bottom family
    /// order strings by it, and `$addToSet` keeps one of the strings it calls equal.
    pub collation: Option<CollationRef>,
}

impl AccSpec {
    /// `field: {$sum: 1}`, the count that `$sortByCount` and `$bucket` produce by default.
    pub fn count(field: &str) -> AccSpec {
        AccSpec {
            field: field.to_string(),
            op: AccOp::Sum,
            arg: Expression::Const(Bson::Int32(1)),
            n: None,
            sort: None,
            collation: None,
        }
    }

    /// The accumulator comparing strings under `c`, in its argument expression too.
    pub fn with_collation(self, c: &CollationRef) -> AccSpec {
        AccSpec {
            arg: self.arg.with_collation(c),
            sort: self.sort.map(|s| s.with_collation(Some(c))),
            collation: Some(c.clone()),
            ..self
        }
    }

    /// Parses `field: {$op: expr}`.
    pub fn parse(field: &str, spec: &Bson, scope: &Scope) -> Result<AccSpec> {
        if field.contains('.') {
            return Err(loc(40235, format!("The field name '{field}' cannot contain '.'")));
        }
        if field.starts_with('$') {
            return Err(loc(40236, format!("The field name '{field}' cannot be an operator name")));
        }
        let Bson::Document(d) = spec else {
            return Err(loc(40234, format!("The field '{field}' must be an accumulator object")));
        };
        if d.len() != 1 {
            return Err(loc(40238, format!("The field '{field}' must specify one accumulator")));
        }
        let Some((name, arg)) = d.iter().next() else {
            return Err(loc(40234, format!("The field '{field}' must be an accumulator object")));
        };
        let op = match name.as_str() {
            "$sum" => AccOp::Sum,
            "$avg" => AccOp::Avg,
            "$min" => AccOp::Min,
            "$max" => AccOp::Max,
            "$first" => AccOp::First,
            "$last" => AccOp::Last,
            "$push" => AccOp::Push,
            "$addToSet" => AccOp::AddToSet,
            "$count" => AccOp::Count,
            "$mergeObjects" => AccOp::MergeObjects,
            "$stdDevPop" => AccOp::StdDevPop,
            "$stdDevSamp" => AccOp::StdDevSamp,
            "$firstN" => AccOp::FirstN,
            "$lastN" => AccOp::LastN,
            "$maxN" => AccOp::MaxN,
            "$minN" => AccOp::MinN,
            "$top" => AccOp::Top,
            "$bottom" => AccOp::Bottom,
            "$topN" => AccOp::TopN,
            "$bottomN" => AccOp::BottomN,
            other => return Err(loc(15952, format!("unknown group operator '{other}'"))),
        };
        if op == AccOp::Count && !matches!(arg, Bson::Document(a) if a.is_empty()) {
            return Err(loc(
                Code::TypeMismatch.number(),
                "$count takes no arguments, i.e. $count:{}",
            ));
        }
        if let Bson::Array(_) = arg
            && op != AccOp::Count
        {
            return Err(loc(40237, format!("The {name} accumulator is a unary operator")));
        }
        if matches!(
            op,
            AccOp::FirstN
                | AccOp::LastN
                | AccOp::MaxN
                | AccOp::MinN
                | AccOp::Top
                | AccOp::Bottom
                | AccOp::TopN
                | AccOp::BottomN
        ) {
            return parse_n(field, name, op, arg, scope);
        }
        Ok(AccSpec {
            field: field.to_string(),
            op,
            arg: Expression::parse_in(arg, scope)?,
            n: None,
            sort: None,
            collation: None,
        })
    }
}

/// Parses the object argument of the N and top/bottom accumulators.
fn parse_n(field: &str, name: &str, op: AccOp, arg: &Bson, scope: &Scope) -> Result<AccSpec> {
    let Bson::Document(spec) = arg else {
        return Err(loc(
            5787801,
            format!("specification must be an object; found {}", type_name(arg)),
        ));
    };
    let sorted = matches!(op, AccOp::Top | AccOp::Bottom | AccOp::TopN | AccOp::BottomN);
    let needs_n = !matches!(op, AccOp::Top | AccOp::Bottom);
    let value_key = if sorted { "output" } else { "input" };
    let (mut value, mut n, mut sort) = (None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            k2 if k2 == value_key => value = Some(Expression::parse_in(v, scope)?),
            "n" if needs_n => {
                let c = Expression::parse_in(v, scope)?.eval_doc(&Document::new())?;
                n = match c.as_ref().and_then(crate::expr::as_int) {
                    Some(x) if x > 0 => Some(x as usize),
                    _ => {
                        return Err(loc(
                            5787908,
                            format!(
                                "'n' must be greater than 0, found {}",
                                c.as_ref()
                                    .map_or("missing".to_string(), crate::doc::fmt::value_string)
                            ),
                        ));
                    }
                };
            }
            "sortBy" if sorted => match v {
                Bson::Document(s) => sort = Some(crate::query::SortSpec::parse(s)?),
                other => {
                    return Err(loc(
                        5788604,
                        format!("{name} 'sortBy' must be an object, found {}", type_name(other)),
                    ));
                }
            },
            other => return Err(loc(5787901, format!("Unknown argument for '{name}': {other}"))),
        }
    }
    let Some(value) = value else {
        return Err(loc(5787907, format!("{name} requires an '{value_key}' field")));
    };
    if needs_n && n.is_none() {
        return Err(loc(5787906, format!("{name} requires an 'n' field")));
    }
    if sorted && sort.is_none() {
        return Err(loc(5788005, format!("{name} requires a 'sortBy' field")));
    }
    Ok(AccSpec { field: field.to_string(), op, arg: value, n, sort, collation: None })
}

/// The running state of one accumulator in one group.
#[derive(Clone, Debug)]
pub enum Acc {
    /// A sum (also `$count`).
    Sum(Bson),
    /// A sum and a count of numeric values.
    Avg(Bson, usize),
    /// The extreme value so far (`None` before the first non-null value).
    Extreme(Option<Bson>, bool),
    /// The first value (`None` before the first document).
    First(Option<Bson>),
    /// The last value.
    Last(Bson),
    /// Collected values (`$addToSet` when the flag is set), and their estimated size, which
    /// MongoDB caps at 100 MiB per group ([`memory::MAX_PUSH_BYTES`]).
    List(Vec<Bson>, bool, usize),
    /// Merged documents.
    Merge(Document),
    /// Numeric values for a standard deviation (sample or population).
    StdDev(Vec<f64>, bool),
    /// Values for `$firstN`/`$lastN`/`$maxN`/`$minN`.
    Values(Vec<Bson>),
    /// `(document, output)` pairs for the top/bottom accumulators.
    Ranked(Vec<(Document, Bson)>),
}

impl Acc {
    /// A fresh accumulator for `op`.
    pub fn new(op: AccOp) -> Acc {
        match op {
            AccOp::Sum | AccOp::Count => Acc::Sum(Bson::Int32(0)),
            AccOp::Avg => Acc::Avg(Bson::Int32(0), 0),
            AccOp::Min => Acc::Extreme(None, false),
            AccOp::Max => Acc::Extreme(None, true),
            AccOp::First => Acc::First(None),
            AccOp::Last => Acc::Last(Bson::Null),
            AccOp::Push => Acc::List(Vec::new(), false, 0),
            AccOp::AddToSet => Acc::List(Vec::new(), true, 0),
            AccOp::MergeObjects => Acc::Merge(Document::new()),
            AccOp::StdDevPop => Acc::StdDev(Vec::new(), false),
            AccOp::StdDevSamp => Acc::StdDev(Vec::new(), true),
            AccOp::FirstN | AccOp::LastN | AccOp::MaxN | AccOp::MinN => Acc::Values(Vec::new()),
            AccOp::Top | AccOp::Bottom | AccOp::TopN | AccOp::BottomN => Acc::Ranked(Vec::new()),
        }
    }

    /// Folds one document in for the accumulators that look at the document itself (the
    /// top/bottom family sorts documents by `sortBy`).
    pub fn add_ranked(&mut self, spec: &AccSpec, doc: &Document, v: Value) -> Result<()> {
        match self {
            Acc::Ranked(items) => {
                items.push((doc.clone(), v.unwrap_or(Bson::Null)));
                Ok(())
            }
            _ => self.add(spec.op, v, spec.collation.as_deref()),
        }
    }

    /// The accumulated value, for accumulators that need their spec (`n`, `sortBy`).
    pub fn finish_with(self, spec: &AccSpec) -> Bson {
        let n = spec.n.unwrap_or(1);
        match (self, spec.op) {
            (Acc::Values(items), AccOp::FirstN) => Bson::Array(items.into_iter().take(n).collect()),
            (Acc::Values(items), AccOp::LastN) => {
                let skip = items.len().saturating_sub(n);
                Bson::Array(items.into_iter().skip(skip).collect())
            }
            (Acc::Values(items), op) => {
                let mut items: Vec<Bson> = items
                    .into_iter()
                    .filter(|v| !matches!(v, Bson::Null | Bson::Undefined))
                    .collect();
                match spec.collation.as_deref() {
                    None => items.sort_by(cmp_bson),
                    Some(c) => items.sort_by_cached_key(|v| Key(c.transform(v))),
                }
                if op == AccOp::MaxN {
                    items.reverse();
                }
                items.truncate(n);
                Bson::Array(items)
            }
            (Acc::Ranked(mut items), op) => {
                if let Some(s) = &spec.sort {
                    items.sort_by(|a, b| s.compare(&a.0, &b.0));
                }
                if matches!(op, AccOp::Bottom | AccOp::BottomN) {
                    items.reverse();
                }
                let mut outs: Vec<Bson> = items.into_iter().map(|(_, o)| o).take(n).collect();
                if matches!(op, AccOp::Bottom | AccOp::BottomN) {
                    outs.reverse();
                }
                match op {
                    AccOp::Top | AccOp::Bottom => outs.into_iter().next().unwrap_or(Bson::Null),
                    _ => Bson::Array(outs),
                }
            }
            (acc, _) => acc.finish(),
        }
    }

    /// Folds one document's value in, comparing strings under `c`.
    pub fn add(&mut self, op: AccOp, v: Value, c: Option<&Collation>) -> Result<()> {
        match self {
            Acc::Sum(total) => {
                let v = if op == AccOp::Count { Some(Bson::Int32(1)) } else { v };
                if let Some(x) = v.filter(|x| Number::of(x).is_some()) {
                    *total = add_numbers(total, &x);
                }
            }
            Acc::Avg(total, n) => {
                if let Some(x) = v.filter(|x| Number::of(x).is_some()) {
                    *total = add_numbers(total, &x);
                    *n += 1;
                }
            }
            Acc::Extreme(best, max) => {
                if let Some(x) = v.filter(|x| !matches!(x, Bson::Null | Bson::Undefined)) {
                    let better = match best {
                        None => true,
                        Some(b) => {
                            let o = match c {
                                None => cmp_bson(&x, b),
                                Some(c) => cmp_bson(
                                    &transform_opt(Some(c), &x),
                                    &transform_opt(Some(c), b),
                                ),
                            };
                            if *max { o == Ordering::Greater } else { o == Ordering::Less }
                        }
                    };
                    if better {
                        *best = Some(x);
                    }
                }
            }
            Acc::First(first) => {
                if first.is_none() {
                    *first = Some(v.unwrap_or(Bson::Null));
                }
            }
            Acc::Last(last) => *last = v.unwrap_or(Bson::Null),
            Acc::List(items, set, used) => {
                if let Some(x) = v
                    && !(*set && contains(items, &x, c))
                {
                    // Checked before the value is kept, as MongoDB checks after each value.
                    *used = used.saturating_add(approx_size(&x) + 16);
                    if *used >= memory::MAX_PUSH_BYTES {
                        return Err(push_too_large(*set, *used));
                    }
                    items.push(x);
                }
            }
            Acc::StdDev(xs, _) => {
                if let Some(n) = v.as_ref().and_then(Number::of) {
                    xs.push(n.to_f64());
                }
            }
            Acc::Values(items) => items.push(v.unwrap_or(Bson::Null)),
            Acc::Ranked(items) => items.push((Document::new(), v.unwrap_or(Bson::Null))),
            Acc::Merge(d) => match v {
                None | Some(Bson::Null) | Some(Bson::Undefined) => {}
                Some(Bson::Document(x)) => {
                    for (k, y) in x {
                        d.insert(k, y);
                    }
                }
                Some(other) => {
                    return Err(Error::new(
                        Code::from_number(40400),
                        format!(
                            "$mergeObjects requires object inputs, but input {} is of type {}",
                            crate::doc::fmt::value_string(&other),
                            type_name(&other)
                        ),
                    ));
                }
            },
        }
        Ok(())
    }

    /// The accumulated value.
    pub fn finish(self) -> Bson {
        match self {
            Acc::Sum(total) => total,
            Acc::Avg(_, 0) => Bson::Null,
            Acc::Avg(total, n) => crate::expr::average(&total, n),
            Acc::Extreme(best, _) => best.unwrap_or(Bson::Null),
            Acc::First(first) => first.unwrap_or(Bson::Null),
            Acc::Last(last) => last,
            Acc::List(items, _, _) => Bson::Array(items),
            Acc::Merge(d) => Bson::Document(d),
            Acc::StdDev(xs, sample) => std_dev(&xs, sample),
            Acc::Values(items) => Bson::Array(items),
            Acc::Ranked(items) => Bson::Array(items.into_iter().map(|(_, o)| o).collect()),
        }
    }
}

/// Whether `items` holds a value equal to `x` under `c`.
fn contains(items: &[Bson], x: &Bson, c: Option<&Collation>) -> bool {
    match c {
        Some(c) if has_strings(x) => {
            let key = c.transform(x);
            items.iter().any(|y| bson_eq(&transform_opt(Some(c), y), &key))
        }
        _ => items.iter().any(|y| bson_eq(y, x)),
    }
}

/// ExceededMemoryLimit for a `$push` or `$addToSet` past its 100 MiB, in MongoDB's words.
fn push_too_large(set: bool, used: usize) -> Error {
    let limit = memory::MAX_PUSH_BYTES;
    let msg = if set {
        format!(
            "$addToSet used too much memory and cannot spill to disk. Used: {used} bytes. Memory limit: {limit} bytes"
        )
    } else {
        format!("$push used too much memory and cannot spill to disk. Memory limit: {limit} bytes")
    };
    Error::new(Code::ExceededMemoryLimit, msg)
}

/// A value ordered by MongoDB's value order (a map key for grouping and joins).
#[derive(Clone, Debug)]
pub(crate) struct Key(pub(crate) Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        cmp_bson(&self.0, &other.0) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        cmp_bson(&self.0, &other.0)
    }
}

/// Groups as `(key, accumulated values)` pairs, the values in the order of the accumulators.
pub type Groups = Vec<(Bson, Vec<Bson>)>;

/// Groups documents by a key function and folds accumulators; returns `(key, values)` in order
/// of first appearance.
pub fn group_by(
    docs: &[Document],
    key: impl Fn(&mut Vars) -> Result<Bson>,
    accs: &[AccSpec],
    vars: &Document,
) -> Result<Vec<(Bson, Vec<Bson>)>> {
    Ok(group_by_bounded(docs, &key, accs, vars, usize::MAX, &Bson::clone)?.unwrap_or_default())
}

/// [`group_by`] within a memory budget: `Ok(None)` as soon as the group table's estimated
/// size (keys, and the values accumulators keep) passes `limit` bytes, so that the caller can
/// fail or group externally (see [`super::spill::group`]). Groups are told apart by `identity`
/// of the key (the key itself, or its collation key).
pub fn group_by_bounded<K: Fn(&mut Vars) -> Result<Bson>>(
    docs: &[Document],
    key: &K,
    accs: &[AccSpec],
    vars: &Document,
    limit: usize,
    identity: &dyn Fn(&Bson) -> Bson,
) -> Result<Option<Groups>> {
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    let mut groups: Vec<(Bson, Vec<Acc>)> = Vec::new();
    let mut used = 0usize;
    // What the group table holds, in Folio's own terms, against the operation's memory.
    let mut held = memory::Reservation::new("$group");
    for d in docs {
        let mut v = Vars::with_let(d, vars);
        let k = key(&mut v)?;
        let id = Key(identity(&k));
        let slot = match index.get(&id) {
            Some(i) => *i,
            None => {
                used = used.saturating_add(2 * approx_size(&k) + 64 + 32 * accs.len());
                held.grow(2 * memory::heap_size(&k) + 64 + 64 * accs.len())?;
                groups.push((k, accs.iter().map(|a| Acc::new(a.op)).collect()));
                index.insert(id, groups.len() - 1);
                groups.len() - 1
            }
        };
        let (bson, heap) = fold_doc(&mut groups[slot].1, accs, d, &mut v)?;
        used = used.saturating_add(bson);
        held.grow(heap)?;
        if used > limit {
            return Ok(None);
        }
    }
    held.hand_on();
    Ok(Some(
        groups
            .into_iter()
            .map(|(k, state)| {
                (k, state.into_iter().zip(accs).map(|(a, s)| a.finish_with(s)).collect())
            })
            .collect(),
    ))
}

/// Folds one document into a group's accumulators; returns what they keep of it (estimated
/// BSON size for the stage's budget, in-memory size for the operation's).
pub(crate) fn fold_doc(
    state: &mut [Acc],
    accs: &[AccSpec],
    d: &Document,
    v: &mut Vars,
) -> Result<(usize, usize)> {
    let (mut bson, mut heap) = (0usize, 0usize);
    for (spec, acc) in accs.iter().zip(state.iter_mut()) {
        let value = spec.arg.eval(v)?;
        let (b, h) = retained_size(spec.op, &value, d);
        bson = bson.saturating_add(b);
        heap = heap.saturating_add(h);
        acc.add_ranked(spec, d, value)?;
    }
    Ok((bson, heap))
}

/// The memory an accumulator keeps for one more value: the values themselves for those that
/// collect them, nothing for running totals and extremes. `(BSON estimate, in-memory estimate)`.
fn retained_size(op: AccOp, value: &Value, doc: &Document) -> (usize, usize) {
    let sizes = |v: &Value| v.as_ref().map_or((0, 0), |x| (approx_size(x), memory::heap_size(x)));
    match op {
        AccOp::Push
        | AccOp::AddToSet
        | AccOp::MergeObjects
        | AccOp::FirstN
        | AccOp::LastN
        | AccOp::MaxN
        | AccOp::MinN => {
            let (b, h) = sizes(value);
            (b + 16, h)
        }
        AccOp::Top | AccOp::Bottom | AccOp::TopN | AccOp::BottomN => {
            let (b, h) = sizes(value);
            (approx_doc_size(doc) + b + 32, memory::doc_heap_size(doc) + h)
        }
        AccOp::StdDevPop | AccOp::StdDevSamp => (8, 8),
        AccOp::Sum
        | AccOp::Avg
        | AccOp::Min
        | AccOp::Max
        | AccOp::First
        | AccOp::Last
        | AccOp::Count => (0, 0),
    }
}
