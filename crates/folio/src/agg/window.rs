//! `$setWindowFields`: accumulators over a window of neighbouring documents.
//!
//! Documents are partitioned by `partitionBy` (partitions come out in key order), sorted by
//! `sortBy` within a partition, and each output field is computed per document from a window
//! of the partition: `documents: [lo, hi]` (positions relative to the current document),
//! `range: [lo, hi]` (values relative to the current sort value, optionally in a date `unit`),
//! or the whole partition when no window is given. The rank operators (`$rank`, `$denseRank`,
//! `$documentNumber`) and `$shift` look at positions instead of windows.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::Context;
use super::group::{Acc, AccSpec, Key};
use crate::bail;
use crate::doc::compare::Number;
use crate::error::Result;
use crate::expr::ops::arith;
use crate::expr::{Expression, Scope, Value, Vars, loc, type_name};
use crate::query::SortSpec;

/// One bound of a window.
#[derive(Clone, Copy, Debug)]
enum Bound {
    Unbounded,
    Current,
    Offset(f64),
}

/// A window specification.
#[derive(Clone, Debug)]
enum Window {
    /// The whole partition.
    All,
    /// Positions relative to the current document.
    Documents(Bound, Bound),
    /// Sort values relative to the current one (milliseconds when `unit` is given).
    Range(Bound, Bound, f64),
}

/// What an output field computes.
#[derive(Clone, Debug)]
enum Func {
    Acc(AccSpec, Window),
    Rank,
    DenseRank,
    DocumentNumber,
    Shift(Expression, i64, Option<Expression>),
    /// `$locf`: the value, or the last non-null one before it in the partition.
    Locf(Expression),
    /// `$linearFill`: null values interpolated between the non-null neighbours.
    LinearFill(Expression),
}

/// A parsed `$setWindowFields`.
#[derive(Clone, Debug)]
pub struct SetWindowFields {
    partition_by: Option<Expression>,
    sort_by: Option<(SortSpec, Vec<String>)>,
    output: Vec<(String, Func)>,
    /// The aggregate's collation: partitions, the sort and the ranks follow it.
    collation: Option<crate::collation::CollationRef>,
}

impl Func {
    fn with_collation(self, c: &crate::collation::CollationRef) -> Func {
        match self {
            Func::Acc(spec, w) => Func::Acc(spec.with_collation(c), w),
            Func::Shift(e, by, default) => {
                Func::Shift(e.with_collation(c), by, default.map(|d| d.with_collation(c)))
            }
            Func::Locf(e) => Func::Locf(e.with_collation(c)),
            Func::LinearFill(e) => Func::LinearFill(e.with_collation(c)),
            f @ (Func::Rank | Func::DenseRank | Func::DocumentNumber) => f,
        }
    }
}

fn parse_bound(v: &Bson) -> Result<Bound> {
    match v {
        Bson::String(s) if s == "unbounded" => Ok(Bound::Unbounded),
        Bson::String(s) if s == "current" => Ok(Bound::Current),
        other => match Number::of(other) {
            Some(n) => Ok(Bound::Offset(n.to_f64())),
            None => Err(loc(
                5371000,
                format!(
                    "Window bounds must be 'unbounded', 'current', or a number, found {}",
                    type_name(other)
                ),
            )),
        },
    }
}

fn unit_ms(unit: &str) -> Result<f64> {
    Ok(match unit {
        "week" => 604_800_000.0,
        "day" => 86_400_000.0,
        "hour" => 3_600_000.0,
        "minute" => 60_000.0,
        "second" => 1000.0,
        "millisecond" => 1.0,
        other => return Err(loc(5397904, format!("unsupported window unit: {other}"))),
    })
}

fn parse_window(v: &Bson) -> Result<Window> {
    let Bson::Document(w) = v else {
        return Err(loc(5371001, "'window' field must be an object"));
    };
    let pair = |b: &Bson| -> Result<(Bound, Bound)> {
        match b {
            Bson::Array(items) if items.len() == 2 => {
                Ok((parse_bound(&items[0])?, parse_bound(&items[1])?))
            }
            _ => Err(loc(5371002, "Window bounds must be a 2-element array")),
        }
    };
    match (w.get("documents"), w.get("range")) {
        (Some(d), None) => {
            let (lo, hi) = pair(d)?;
            Ok(Window::Documents(lo, hi))
        }
        (None, Some(r)) => {
            let (lo, hi) = pair(r)?;
            let scale = match w.get("unit") {
                Some(Bson::String(u)) => unit_ms(u)?,
                None => 1.0,
                Some(other) => {
                    return Err(loc(
                        5397903,
                        format!("'unit' must be a string, found {}", type_name(other)),
                    ));
                }
            };
            Ok(Window::Range(lo, hi, scale))
        }
        _ => Err(loc(5371003, "'window' requires exactly one of 'documents' or 'range'")),
    }
}

impl SetWindowFields {
    /// Parses the stage's argument.
    pub fn parse(arg: &Bson, scope: &Scope) -> Result<SetWindowFields> {
        let Bson::Document(spec) = arg else {
            return Err(loc(5339103, "the $setWindowFields stage specification must be an object"));
        };
        let mut partition_by = None;
        let mut sort_by = None;
        let mut output = Vec::new();
        for (k, v) in spec {
            match k.as_str() {
                "partitionBy" => partition_by = Some(Expression::parse_in(v, scope)?),
                "sortBy" => match v {
                    Bson::Document(s) => {
                        sort_by = Some((SortSpec::parse(s)?, s.keys().cloned().collect()));
                    }
                    other => {
                        return Err(loc(
                            5339104,
                            format!("'sortBy' must be an object, found {}", type_name(other)),
                        ));
                    }
                },
                "output" => match v {
                    Bson::Document(o) => {
                        for (field, f) in o {
                            output.push((
                                field.clone(),
                                parse_func(field, f, scope, sort_keys(&sort_by))?,
                            ));
                        }
                    }
                    other => {
                        return Err(loc(
                            5339105,
                            format!("'output' must be an object, found {}", type_name(other)),
                        ));
                    }
                },
                other => {
                    return Err(crate::Error::unknown_field(&format!("$setWindowFields.{other}")));
                }
            }
        }
        Ok(SetWindowFields { partition_by, sort_by, output, collation: None })
    }

    /// The stage comparing strings under the aggregate's collation.
    pub(super) fn with_collation(self, c: &crate::collation::CollationRef) -> SetWindowFields {
        SetWindowFields {
            partition_by: self.partition_by.map(|e| e.with_collation(c)),
            sort_by: self.sort_by.map(|(s, fields)| (s.with_collation(Some(c)), fields)),
            output: self.output.into_iter().map(|(k, f)| (k, f.with_collation(c))).collect(),
            collation: Some(c.clone()),
        }
    }

    /// Runs the stage.
    pub fn execute(&self, docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        let mut partitions: BTreeMap<Key, Vec<Document>> = BTreeMap::new();
        for d in docs {
            let key = match &self.partition_by {
                Some(e) => e.eval(&mut Vars::with_let(&d, &ctx.vars))?.unwrap_or(Bson::Null),
                None => Bson::Null,
            };
            let key = match &self.collation {
                Some(c) if crate::collation::has_strings(&key) => c.transform(&key),
                _ => key,
            };
            partitions.entry(Key(key)).or_default().push(d);
        }
        let mut out = Vec::new();
        for (_, mut part) in partitions {
            if let Some((s, _)) = &self.sort_by {
                part = super::spill::sort(part, |a, b| s.compare(a, b), ctx.memory_limit, "$sort")?;
            }
            out.extend(self.compute(part, ctx)?);
        }
        Ok(out)
    }

    /// The first sort field's value (under a collation, what it compares as: ranks tie on
    /// values the collation calls equal).
    fn sort_value(&self, d: &Document) -> Value {
        let (_, fields) = self.sort_by.as_ref()?;
        let path: Vec<String> = fields.first()?.split('.').map(str::to_string).collect();
        let v = crate::expr::field_path(d, &path)?;
        Some(match &self.collation {
            Some(c) if crate::collation::has_strings(&v) => c.transform(&v),
            _ => v,
        })
    }

    fn compute(&self, part: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        let n = part.len();
        let keys: Vec<Value> = part.iter().map(|d| self.sort_value(d)).collect();
        let mut results: Vec<Vec<Value>> = vec![Vec::with_capacity(self.output.len()); n];
        let mut held = crate::memory::Reservation::new("$setWindowFields");
        for (_, func) in &self.output {
            let column = match func {
                Func::Acc(spec, window) => {
                    let values: Vec<Value> = part
                        .iter()
                        .map(|d| spec.arg.eval(&mut Vars::with_let(d, &ctx.vars)))
                        .collect::<Result<_>>()?;
                    let mut col = Vec::with_capacity(n);
                    for i in 0..n {
                        let (lo, hi) = window_range(window, i, n, &keys)?;
                        let mut acc = Acc::new(spec.op);
                        for j in lo..hi {
                            acc.add_ranked(spec, &part[j], values[j].clone())?;
                        }
                        let v = acc.finish_with(spec);
                        // A `$push` over an unbounded window gives every document a copy of the
                        // whole partition: hold the outputs against the operation's memory.
                        if matches!(v, Bson::Array(_) | Bson::Document(_) | Bson::String(_)) {
                            held.grow(crate::memory::heap_size(&v))?;
                        }
                        col.push(Some(v));
                    }
                    col
                }
                Func::DocumentNumber => (0..n).map(|i| Some(Bson::Int32(i as i32 + 1))).collect(),
                Func::Locf(e) => {
                    let mut last = Bson::Null;
                    let mut col = Vec::with_capacity(n);
                    for d in &part {
                        match e.eval(&mut Vars::with_let(d, &ctx.vars))? {
                            None | Some(Bson::Null) | Some(Bson::Undefined) => {
                                col.push(Some(last.clone()))
                            }
                            Some(v) => {
                                last = v.clone();
                                col.push(Some(v));
                            }
                        }
                    }
                    col
                }
                Func::LinearFill(e) => {
                    let values: Vec<Value> = part
                        .iter()
                        .map(|d| e.eval(&mut Vars::with_let(d, &ctx.vars)))
                        .collect::<Result<_>>()?;
                    linear_fill(&keys, values)?
                }
                Func::Rank | Func::DenseRank => {
                    let mut col = Vec::with_capacity(n);
                    let (mut rank, mut dense) = (0usize, 0usize);
                    for i in 0..n {
                        if i == 0
                            || crate::expr::cmp_values(&keys[i], &keys[i - 1])
                                != std::cmp::Ordering::Equal
                        {
                            rank = i + 1;
                            dense += 1;
                        }
                        let r = if matches!(func, Func::Rank) { rank } else { dense };
                        col.push(Some(Bson::Int32(r as i32)));
                    }
                    col
                }
                Func::Shift(e, by, default) => {
                    let mut col = Vec::with_capacity(n);
                    for i in 0..n {
                        let j = i as i64 + by;
                        let v = if (0..n as i64).contains(&j) {
                            e.eval(&mut Vars::with_let(&part[j as usize], &ctx.vars))?
                        } else {
                            match default {
                                Some(d) => d.eval(&mut Vars::with_let(&part[i], &ctx.vars))?,
                                None => Some(Bson::Null),
                            }
                        };
                        col.push(Some(v.unwrap_or(Bson::Null)));
                    }
                    col
                }
            };
            for (row, v) in results.iter_mut().zip(column) {
                row.push(v);
            }
        }
        let mut out = Vec::with_capacity(n);
        for (mut d, row) in part.into_iter().zip(results) {
            for ((field, _), v) in self.output.iter().zip(row) {
                let parts: Vec<&str> = field.split('.').collect();
                super::stage::set_path(&mut d, &parts, v);
            }
            out.push(d);
        }
        held.hand_on();
        Ok(out)
    }
}

/// How many fields `sortBy` has (0 without one).
fn sort_keys(sort_by: &Option<(SortSpec, Vec<String>)>) -> usize {
    sort_by.as_ref().map_or(0, |(s, _)| s.keys.len())
}

fn parse_func(field: &str, f: &Bson, scope: &Scope, sort_keys: usize) -> Result<Func> {
    let sorted = sort_keys > 0;
    let Bson::Document(d) = f else {
        return Err(loc(5371004, format!("The field '{field}' must be an object")));
    };
    let mut op_doc = Document::new();
    let mut window = Window::All;
    let mut has_window = false;
    for (k, v) in d {
        if k == "window" {
            has_window = true;
            window = parse_window(v)?;
        } else {
            op_doc.insert(k.clone(), v.clone());
        }
    }
    let Some((name, arg)) = op_doc.iter().next() else {
        return Err(loc(5371005, format!("The field '{field}' must specify a window function")));
    };
    let needs_sort = |what: &str| -> Result<()> {
        if sorted { Ok(()) } else { Err(loc(5371006, format!("{what} requires a sortBy"))) }
    };
    match name.as_str() {
        "$rank" | "$denseRank" | "$documentNumber" => {
            needs_sort(name)?;
            Ok(match name.as_str() {
                "$rank" => Func::Rank,
                "$denseRank" => Func::DenseRank,
                _ => Func::DocumentNumber,
            })
        }
        "$locf" | "$linearFill" => {
            if has_window {
                bail!(FailedToParse, "'window' field is not allowed in {}", name);
            }
            let input = Expression::parse_in(arg, scope)?;
            if name == "$locf" {
                return Ok(Func::Locf(input));
            }
            if sort_keys == 0 {
                bail!(FailedToParse, "$linearFill requires a sortBy");
            }
            if sort_keys > 1 {
                bail!(FailedToParse, "$linearFill requires a non-compound sortBy");
            }
            Ok(Func::LinearFill(input))
        }
        "$shift" => {
            needs_sort("$shift")?;
            let Bson::Document(s) = arg else {
                return Err(loc(5433000, "$shift requires an object"));
            };
            let output = s
                .get("output")
                .ok_or_else(|| loc(5433001, "$shift requires an 'output' expression"))?;
            let by = s
                .get("by")
                .and_then(crate::expr::as_int)
                .ok_or_else(|| loc(5433002, "$shift requires an integer 'by'"))?;
            let default = match s.get("default") {
                Some(v) => Some(Expression::parse_in(v, scope)?),
                None => None,
            };
            Ok(Func::Shift(Expression::parse_in(output, scope)?, by, default))
        }
        _ => {
            if matches!(window, Window::Range(..)) {
                needs_sort("a range window")?;
            }
            let spec = AccSpec::parse(field, &Bson::Document(op_doc.clone()), scope)?;
            Ok(Func::Acc(spec, window))
        }
    }
}

/// The half-open range of partition positions in document `i`'s window.
fn window_range(w: &Window, i: usize, n: usize, keys: &[Value]) -> Result<(usize, usize)> {
    let clamp = |x: i64| x.clamp(0, n as i64) as usize;
    match w {
        Window::All => Ok((0, n)),
        Window::Documents(lo, hi) => {
            let lo = match lo {
                Bound::Unbounded => 0,
                Bound::Current => i as i64,
                Bound::Offset(o) => (i as i64).saturating_add(*o as i64),
            };
            let hi = match hi {
                Bound::Unbounded => n as i64,
                Bound::Current => i as i64 + 1,
                Bound::Offset(o) => (i as i64).saturating_add(*o as i64).saturating_add(1),
            };
            Ok((clamp(lo), clamp(hi.max(lo))))
        }
        Window::Range(lo, hi, scale) => {
            let num = |v: &Value| -> Option<f64> {
                match v {
                    Some(Bson::DateTime(d)) => Some(d.timestamp_millis() as f64),
                    Some(x) => Number::of(x).map(Number::to_f64),
                    None => None,
                }
            };
            let Some(cur) = num(&keys[i]) else {
                return Err(loc(
                    5429414,
                    "Invalid range: the sortBy field must be numeric or a date",
                ));
            };
            let lo_v = match lo {
                Bound::Unbounded => f64::NEG_INFINITY,
                Bound::Current => cur,
                Bound::Offset(o) => cur + o * scale,
            };
            let hi_v = match hi {
                Bound::Unbounded => f64::INFINITY,
                Bound::Current => cur,
                Bound::Offset(o) => cur + o * scale,
            };
            let inside = |j: usize| num(&keys[j]).is_some_and(|v| v >= lo_v && v <= hi_v);
            let first = (0..n).find(|j| inside(*j)).unwrap_or(n);
            let last = (0..n).rev().find(|j| inside(*j)).map_or(first, |j| j + 1);
            Ok((first, last.max(first)))
        }
    }
}

/// `$linearFill` over one sorted partition: `keys` are the sort values, `values` the input.
/// Each run of null values between two non-null ones is interpolated on the sort values
/// (`y1 + (x - x1) * (y2 - y1) / (x2 - x1)`); nulls before the first or after the last
/// non-null value stay null. The checks are MongoDB's, in document order.
fn linear_fill(keys: &[Value], values: Vec<Value>) -> Result<Vec<Value>> {
    let is_date = |v: &Value| {
        matches!(v, Some(Bson::DateTime(_)) | Some(Bson::Timestamp(_)) | Some(Bson::ObjectId(_)))
    };
    let is_num = |v: &Value| v.as_ref().and_then(Number::of).is_some();
    for (i, (x, y)) in keys.iter().zip(&values).enumerate() {
        if !is_num(y) && !crate::expr::ops::is_nullish(y) {
            bail!(
                TypeMismatch,
                "Value to be filled must be numeric or nullish, but found {}",
                crate::expr::value_type(y)
            );
        }
        if !is_num(x) && !is_date(x) {
            bail!(
                TypeMismatch,
                "Value of the sortBy field must be numeric or a date, but found {}",
                crate::expr::value_type(x)
            );
        }
        if i > 0 {
            let prev = &keys[i - 1];
            if crate::expr::cmp_values(prev, x) == std::cmp::Ordering::Equal {
                return Err(loc(6050106, "There can be no repeated values in the sort field"));
            }
            if is_date(prev) != is_date(x) {
                bail!(
                    TypeMismatch,
                    "Conflicting sort value types, previously received type {}, but found {}",
                    crate::expr::value_type(prev),
                    crate::expr::value_type(x)
                );
            }
        }
    }
    let known: Vec<usize> =
        (0..values.len()).filter(|i| !crate::expr::ops::is_nullish(&values[*i])).collect();
    let mut out = values.clone();
    for pair in known.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let slope = arith::divide(
            arith::subtract(values[b].clone(), values[a].clone())?,
            arith::subtract(keys[b].clone(), keys[a].clone())?,
        )?;
        for i in a + 1..b {
            let dx = arith::subtract(keys[i].clone(), keys[a].clone())?;
            out[i] =
                arith::add(vec![values[a].clone(), arith::multiply(vec![dx, slope.clone()])?])?;
        }
    }
    Ok(out
        .into_iter()
        .map(|v| if crate::expr::ops::is_nullish(&v) { Some(Bson::Null) } else { v })
        .collect())
}
