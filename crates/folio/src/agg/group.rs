//! Accumulators for `$group` and `$bucket`.
//!
//! An accumulator is parsed once ([`AccSpec`]) and then instantiated per group ([`Acc`]), which
//! folds the values of the group's documents in input order and produces the output value at the
//! end. Groups are found with an ordered map keyed by MongoDB's value order, so `1` and `1.0` fall
//! in the same group as they do in MongoDB; output is in order of first appearance.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::expr::{Expression, Scope, Value, Vars, loc, type_name};
use super::ops::add_numbers;
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::error::{Code, Error, Result};

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
}

/// A parsed accumulator: output field, operator and argument expression.
#[derive(Clone, Debug)]
pub struct AccSpec {
    /// The output field name.
    pub field: String,
    /// The operator.
    pub op: AccOp,
    /// The argument, evaluated per document.
    pub arg: Expression,
}

impl AccSpec {
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
        Ok(AccSpec { field: field.to_string(), op, arg: Expression::parse_in(arg, scope)? })
    }
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
    /// Collected values.
    List(Vec<Bson>, bool),
    /// Merged documents.
    Merge(Document),
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
            AccOp::Push => Acc::List(Vec::new(), false),
            AccOp::AddToSet => Acc::List(Vec::new(), true),
            AccOp::MergeObjects => Acc::Merge(Document::new()),
        }
    }

    /// Folds one document's value in.
    pub fn add(&mut self, op: AccOp, v: Value) -> Result<()> {
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
                            let o = cmp_bson(&x, b);
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
            Acc::List(items, set) => {
                if let Some(x) = v
                    && !(*set && items.iter().any(|y| bson_eq(y, &x)))
                {
                    items.push(x);
                }
            }
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
            Acc::Avg(total, n) => {
                let avg = Number::of(&total).map_or(0.0, Number::to_f64) / n as f64;
                match total {
                    Bson::Decimal128(_) => {
                        super::ops::convert(Some(Bson::Double(avg)), "decimal", None, None)
                            .ok()
                            .flatten()
                            .unwrap_or(Bson::Double(avg))
                    }
                    _ => Bson::Double(avg),
                }
            }
            Acc::Extreme(best, _) => best.unwrap_or(Bson::Null),
            Acc::First(first) => first.unwrap_or(Bson::Null),
            Acc::Last(last) => last,
            Acc::List(items, _) => Bson::Array(items),
            Acc::Merge(d) => Bson::Document(d),
        }
    }
}

/// A group key ordered by MongoDB's value order.
#[derive(Clone, Debug)]
struct Key(Bson);

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

/// Groups documents by a key function and folds accumulators; returns `(key, values)` in order
/// of first appearance.
pub fn group_by(
    docs: &[Document],
    key: impl Fn(&mut Vars) -> Result<Bson>,
    accs: &[AccSpec],
    vars: &Document,
) -> Result<Vec<(Bson, Vec<Bson>)>> {
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    let mut groups: Vec<(Bson, Vec<Acc>)> = Vec::new();
    for d in docs {
        let mut v = Vars::with_let(d, vars);
        let k = key(&mut v)?;
        let slot = match index.get(&Key(k.clone())) {
            Some(i) => *i,
            None => {
                groups.push((k.clone(), accs.iter().map(|a| Acc::new(a.op)).collect()));
                index.insert(Key(k), groups.len() - 1);
                groups.len() - 1
            }
        };
        for (spec, acc) in accs.iter().zip(groups[slot].1.iter_mut()) {
            let value = spec.arg.eval(&mut v)?;
            acc.add(spec.op, value)?;
        }
    }
    Ok(groups
        .into_iter()
        .map(|(k, accs)| (k, accs.into_iter().map(Acc::finish).collect()))
        .collect())
}
