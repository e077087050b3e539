//! `$densify`: fills gaps in a numeric or date sequence with generated documents.
//!
//! ```text
//! {$densify: {field: "t", partitionByFields: ["p"],
//!             range: {step: 1, unit: "hour", bounds: "full" | "partition" | [lo, hi]}}}
//! ```
//!
//! MongoDB runs the stage as a `$sort` (by the partition fields, unless the bounds are
//! `"full"`, then by `field`) followed by one pass over the sorted stream, and Folio does the
//! same so that the output order matches. Every value the stage generates lies on a *grid*
//! of `step`s (added one at a time, like MongoDB, so that floating-point steps drift the same
//! way and month steps clamp the day the same way):
//!
//! - `"partition"`: each partition's grid starts at its own first (smallest) value and runs up
//!   to its last one;
//! - `"full"`: every partition's grid starts at the smallest value of the whole input and runs
//!   up to the largest, inclusive;
//! - `[lo, hi]`: the grid starts at `lo` and stops before `hi`; values outside pass through.
//!
//! A document whose value is on the grid is kept and not generated again; a document between
//! grid points is kept as is. A generated document holds only the partition fields (copied
//! from its partition) and `field`. Documents whose `field` is null or missing pass through
//! untouched and belong to no partition.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::Context;
use super::group::Key;
use super::stage::set_path;
use crate::doc::compare::{Number, cmp_bson};
use crate::error::{Error, Result};
use crate::expr::ops::arith;
use crate::expr::{loc, type_name};
use crate::query::SortSpec;
use crate::{bail, err};

/// The most documents one `$densify` may generate (MongoDB's
/// `internalQueryMaxAllowedDensifyDocs` default).
pub const MAX_GENERATED: usize = 500_000;

/// The bounds of a `range`.
#[derive(Clone, Debug)]
enum Bounds {
    Full,
    Partition,
    /// `[lo, hi]`
    Explicit(Box<(Bson, Bson)>),
}

/// A parsed `$densify`.
#[derive(Clone, Debug)]
pub struct Densify {
    field: Vec<String>,
    partitions: Vec<Vec<String>>,
    step: Bson,
    unit: Option<String>,
    bounds: Bounds,
    sort: SortSpec,
    /// The aggregate's collation: partitions are told apart, and sorted, as it compares them.
    collation: Option<crate::collation::CollationRef>,
}

fn field_path(s: &str) -> Result<Vec<String>> {
    if s.is_empty() || s.split('.').any(str::is_empty) {
        return Err(loc(40352, "FieldPath cannot be constructed with empty string"));
    }
    if s.starts_with('$') {
        return Err(loc(
            16410,
            "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
        ));
    }
    Ok(s.split('.').map(str::to_string).collect())
}

fn unknown_field(name: &str) -> Error {
    Error::unknown_field(name)
}

fn missing_field(name: &str) -> Error {
    loc(40414, format!("BSON field '{name}' is missing but a required field"))
}

fn wrong_type(name: &str, v: &Bson, expected: &str) -> Error {
    err!(
        TypeMismatch,
        "BSON field '{}' is the wrong type '{}', expected type '{}'",
        name,
        type_name(v),
        expected
    )
}

impl Densify {
    /// Parses the stage's argument.
    pub fn parse(arg: &Bson) -> Result<Densify> {
        let Bson::Document(spec) = arg else {
            bail!(
                FailedToParse,
                "The $densify stage specification must be an object, found {}",
                type_name(arg)
            );
        };
        let (mut field, mut partitions, mut range) = (None, Vec::new(), None);
        for (k, v) in spec {
            match k.as_str() {
                "field" => match v {
                    Bson::String(s) => field = Some(field_path(s)?),
                    other => return Err(wrong_type("$densify.field", other, "string")),
                },
                "partitionByFields" => {
                    let Bson::Array(items) = v else {
                        return Err(wrong_type("$densify.partitionByFields", v, "array"));
                    };
                    for i in items {
                        match i {
                            Bson::String(s) => partitions.push(field_path(s)?),
                            other => {
                                return Err(wrong_type(
                                    "$densify.partitionByFields.0",
                                    other,
                                    "string",
                                ));
                            }
                        }
                    }
                }
                "range" => match v {
                    Bson::Document(r) => range = Some(r),
                    other => return Err(wrong_type("$densify.range", other, "object")),
                },
                other => return Err(unknown_field(&format!("$densify.{other}"))),
            }
        }
        let field = field.ok_or_else(|| missing_field("$densify.field"))?;
        let range = range.ok_or_else(|| missing_field("$densify.range"))?;
        let (step, unit, bounds) = parse_range(range)?;
        if matches!(bounds, Bounds::Partition) && partitions.is_empty() {
            return Err(loc(
                5733408,
                "One cannot specify the bounds as 'partition' without specifying a non-empty array of partitionByFields. You may have meant to specify 'full' bounds.",
            ));
        }
        let mut sort_doc = Document::new();
        if !matches!(bounds, Bounds::Full) {
            for p in &partitions {
                sort_doc.insert(p.join("."), 1);
            }
        }
        sort_doc.insert(field.join("."), 1);
        let sort = SortSpec::parse(&sort_doc)?;
        Ok(Densify { field, partitions, step, unit, bounds, sort, collation: None })
    }

    /// The stage with its partitions under the aggregate's collation.
    pub(super) fn with_collation(self, c: &crate::collation::CollationRef) -> Densify {
        Densify { sort: self.sort.with_collation(Some(c)), collation: Some(c.clone()), ..self }
    }

    /// Runs the stage.
    pub fn execute(&self, docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        for d in &docs {
            if let Some(v) = nested(d, &self.field) {
                self.check_value(v)?;
            }
        }
        let docs =
            super::spill::sort(docs, |a, b| self.sort.compare(a, b), ctx.memory_limit, "$sort")?;
        let mut run = Run { stage: self, out: Vec::with_capacity(docs.len()), generated: 0 };
        run.walk(docs)?;
        Ok(run.out)
    }

    /// A value of `field` must be a number (without `unit`) or a date (with one).
    fn check_value(&self, v: &Bson) -> Result<()> {
        let is_date = matches!(v, Bson::DateTime(_));
        if matches!(v, Bson::Null | Bson::Undefined) {
            return Ok(());
        }
        if Number::of(v).is_none() && !is_date {
            return Err(loc(5733201, "Densify field type must be numeric or a date"));
        }
        match (is_date, self.unit.is_some()) {
            (true, false) => Err(loc(
                6053600,
                "Encountered date densify value in collection when step does not have a date unit.",
            )),
            (false, true) => Err(loc(
                6053600,
                "Encountered numeric densify value in collection when step has a date unit.",
            )),
            _ => Ok(()),
        }
    }

    /// The next grid value after `v`.
    fn next(&self, v: &Bson) -> Result<Bson> {
        self.shift(v, 1)
    }

    /// `v` plus (`sign` 1) or minus (-1) one step.
    fn shift(&self, v: &Bson, sign: i64) -> Result<Bson> {
        match (v, &self.unit) {
            (Bson::DateTime(d), Some(unit)) => {
                let step = crate::expr::as_int(&self.step).unwrap_or(1) * sign;
                match crate::expr::date::add_units(d.timestamp_millis(), unit, step) {
                    Some(ms) => Ok(Bson::DateTime(bson::DateTime::from_millis(ms))),
                    None => Err(loc(5166406, "$densify overflowed")),
                }
            }
            _ => {
                let (v, step) = (Some(v.clone()), Some(self.step.clone()));
                let r =
                    if sign > 0 { arith::add(vec![v, step])? } else { arith::subtract(v, step)? };
                Ok(r.unwrap_or(Bson::Null))
            }
        }
    }

    /// The partition fields of a document, as a generated document starts out.
    fn partition_of(&self, d: &Document) -> Document {
        let mut key = Document::new();
        for p in &self.partitions {
            if let Some(v) = crate::expr::field_path(d, p) {
                let parts: Vec<&str> = p.iter().map(String::as_str).collect();
                set_path(&mut key, &parts, Some(v));
            }
        }
        key
    }

    /// Whether `v` is a whole number of steps above `base` (MongoDB's test for the upper end
    /// of a `"full"` range).
    fn on_step(&self, v: &Bson, base: &Bson) -> Result<bool> {
        match (v, base) {
            (Bson::DateTime(_), Bson::DateTime(_)) => {
                let mut g = base.clone();
                while lt(&g, v) {
                    g = self.next(&g)?;
                }
                Ok(cmp_bson(&g, v) == Ordering::Equal)
            }
            _ => {
                let diff = arith::subtract(Some(v.clone()), Some(base.clone()))?;
                let rem = arith::modulo(diff, Some(self.step.clone()))?;
                Ok(rem.as_ref().and_then(Number::of).is_some_and(|n| n.to_f64() == 0.0))
            }
        }
    }
}

/// The value at a path through embedded documents only (an array on the way means missing,
/// as in MongoDB's `$densify`).
fn nested<'d>(d: &'d Document, path: &[String]) -> Option<&'d Bson> {
    let (first, rest) = path.split_first()?;
    let mut v = d.get(first)?;
    for p in rest {
        match v {
            Bson::Document(sub) => v = sub.get(p)?,
            _ => return None,
        }
    }
    Some(v)
}

fn lt(a: &Bson, b: &Bson) -> bool {
    cmp_bson(a, b) == Ordering::Less
}

fn parse_range(range: &Document) -> Result<(Bson, Option<String>, Bounds)> {
    let (mut step, mut unit, mut bounds) = (None, None, None);
    for (k, v) in range {
        match k.as_str() {
            "step" => step = Some(v.clone()),
            "unit" => match v {
                Bson::String(u) => unit = Some(u.clone()),
                other => return Err(wrong_type("$densify.range.unit", other, "string")),
            },
            "bounds" => bounds = Some(v.clone()),
            other => return Err(unknown_field(&format!("$densify.range.{other}"))),
        }
    }
    let step = step.ok_or_else(|| missing_field("$densify.range.step"))?;
    let bounds = bounds.ok_or_else(|| missing_field("$densify.range.bounds"))?;
    if !Number::of(&step).is_some_and(|n| n.to_f64() > 0.0) {
        return Err(loc(
            5733401,
            "The step parameter in a range statement must be a strictly positive numeric value",
        ));
    }
    if let Some(u) = &unit {
        if crate::expr::as_int(&step).is_none() {
            return Err(loc(
                6586400,
                "The step parameter in a range statement must be a whole number when densifying a date range",
            ));
        }
        if !matches!(
            u.as_str(),
            "year"
                | "quarter"
                | "month"
                | "week"
                | "day"
                | "hour"
                | "minute"
                | "second"
                | "millisecond"
        ) {
            bail!(FailedToParse, "unknown time unit value: {}", u);
        }
    }
    let bounds = match &bounds {
        Bson::String(s) if s == "full" => Bounds::Full,
        Bson::String(s) if s == "partition" => Bounds::Partition,
        Bson::String(_) => {
            return Err(loc(5946802, "Bounds string must either be 'full' or 'partition'"));
        }
        Bson::Array(items) => explicit_bounds(items, &step, unit.is_some())?,
        _ => {
            return Err(loc(
                5733404,
                "The bounds in a range statement must be the string 'full', 'partition', or an ascending array of two numbers or two dates",
            ));
        }
    };
    Ok((step, unit, bounds))
}

fn explicit_bounds(items: &[Bson], step: &Bson, has_unit: bool) -> Result<Bounds> {
    let [lo, hi] = items else {
        return Err(loc(
            5733403,
            "A bounding array in a range statement must have exactly two elements",
        ));
    };
    if cmp_bson(lo, hi) == Ordering::Greater {
        return Err(loc(
            5733402,
            "A bounding array must be an ascending array of either two dates or two numbers",
        ));
    }
    if Number::of(lo).is_some() {
        if has_unit {
            return Err(loc(5733409, "Numeric bounds may not have unit parameter"));
        }
        if Number::of(hi).is_none() {
            return Err(loc(
                5733406,
                "A bounding array must contain either both dates or both numeric types",
            ));
        }
        if std::mem::discriminant(lo) != std::mem::discriminant(hi)
            || std::mem::discriminant(lo) != std::mem::discriminant(step)
        {
            return Err(loc(
                5876900,
                "Upper bound, lower bound, and step must all have the same type",
            ));
        }
        return Ok(Bounds::Explicit(Box::new((lo.clone(), hi.clone()))));
    }
    if let Bson::DateTime(_) = lo {
        if !matches!(hi, Bson::DateTime(_)) {
            return Err(loc(
                5733405,
                "A bounding array must contain either both dates or both numeric types",
            ));
        }
        if !has_unit {
            return Err(loc(5733410, "A bounding array of dates must specify a unit"));
        }
        return Ok(Bounds::Explicit(Box::new((lo.clone(), hi.clone()))));
    }
    Err(loc(5946800, "Explicit bounds must be numeric or dates"))
}

/// The per-partition state: the last grid value reached (seen or generated).
#[derive(Default)]
struct PartitionState {
    template: Document,
    last: Option<Bson>,
}

/// One pass over the sorted input.
struct Run<'a> {
    stage: &'a Densify,
    out: Vec<Document>,
    generated: usize,
}

impl Run<'_> {
    fn walk(&mut self, docs: Vec<Document>) -> Result<()> {
        let stage = self.stage;
        let mut parts: BTreeMap<Key, PartitionState> = BTreeMap::new();
        if stage.partitions.is_empty() {
            parts.insert(Key(Bson::Document(Document::new())), PartitionState::default());
        }
        // The smallest and largest values of the whole input (for "full").
        let (mut min, mut max): (Option<Bson>, Option<Bson>) = (None, None);
        // The last grid value reached by any partition (MongoDB measures the "full" upper end
        // against it).
        let mut current: Option<Bson> = None;
        for d in docs {
            let v = match nested(&d, &stage.field) {
                None | Some(Bson::Null) | Some(Bson::Undefined) => {
                    self.out.push(d);
                    continue;
                }
                Some(v) => v.clone(),
            };
            if min.is_none() {
                min = Some(v.clone());
            }
            max = Some(v.clone());
            let template = stage.partition_of(&d);
            let key = Bson::Document(template.clone());
            let key =
                crate::collation::transform_opt(stage.collation.as_deref(), &key).into_owned();
            let st = parts.entry(Key(key)).or_default();
            st.template = template;
            // Where this partition's grid goes on from.
            let start = match (&st.last, &stage.bounds) {
                (Some(last), _) => stage.next(last)?,
                (None, Bounds::Partition) => {
                    st.last = Some(v);
                    current = st.last.clone();
                    self.out.push(d);
                    continue;
                }
                (None, Bounds::Full) => min.clone().unwrap_or(Bson::Null),
                (None, Bounds::Explicit(b)) => b.0.clone(),
            };
            if let Bounds::Explicit(b) = &stage.bounds
                && lt(&v, &b.0)
            {
                self.out.push(d);
                continue;
            }
            let limit = match &stage.bounds {
                Bounds::Explicit(b) if lt(&b.1, &v) => b.1.clone(),
                _ => v.clone(),
            };
            let mut g = start;
            while lt(&g, &limit) {
                let doc = self.generate(&st.template, &g)?;
                self.out.push(doc);
                let n = stage.next(&g)?;
                st.last = Some(g);
                g = n;
            }
            if cmp_bson(&g, &v) == Ordering::Equal {
                st.last = Some(v);
            }
            if st.last.is_some() {
                current = st.last.clone();
            }
            self.out.push(d);
        }
        self.finish(parts, max, current)
    }

    /// Generates what is left of each partition's grid after the last document.
    fn finish(
        &mut self,
        parts: BTreeMap<Key, PartitionState>,
        max: Option<Bson>,
        current: Option<Bson>,
    ) -> Result<()> {
        let stage = self.stage;
        let end = match &stage.bounds {
            Bounds::Partition => return Ok(()),
            Bounds::Full if stage.partitions.is_empty() => return Ok(()),
            Bounds::Full => {
                let (Some(max), Some(current)) = (max, current) else { return Ok(()) };
                // The largest value is generated too when it lies on the grid.
                if stage.on_step(&max, &current)? { stage.next(&max)? } else { max }
            }
            Bounds::Explicit(b) => b.1.clone(),
        };
        for (_, st) in parts {
            let mut g = match (&st.last, &stage.bounds) {
                (Some(last), _) => stage.next(last)?,
                (None, Bounds::Explicit(b)) => b.0.clone(),
                (None, _) => continue,
            };
            while lt(&g, &end) {
                let doc = self.generate(&st.template, &g)?;
                self.out.push(doc);
                g = stage.next(&g)?;
            }
        }
        Ok(())
    }

    fn generate(&mut self, template: &Document, v: &Bson) -> Result<Document> {
        self.generated += 1;
        if self.generated > MAX_GENERATED {
            return Err(loc(
                5897900,
                format!(
                    "Generated {} documents in $densify, which is over the limit of {MAX_GENERATED}. Increase the 'internalQueryMaxAllowedDensifyDocs' parameter to allow more generated documents",
                    self.generated
                ),
            ));
        }
        let mut d = template.clone();
        let parts: Vec<&str> = self.stage.field.iter().map(String::as_str).collect();
        set_path(&mut d, &parts, Some(v.clone()));
        Ok(d)
    }
}
