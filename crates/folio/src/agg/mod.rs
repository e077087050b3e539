//! The aggregation pipeline (a first subset: `$match`, `$sort`, `$skip`, `$limit`, `$project`,
//! `$count`, and `$group` with field-path accumulators — enough for `countDocuments`).
//!
//! TODO(#7): the full stage and expression language, `$lookup`, `$facet`, views, memory bounds.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::error::Result;
use crate::query::{Filter, Projection, SortSpec};
use crate::{bail, err};

/// Runs a pipeline over input documents.
pub fn run(mut docs: Vec<Document>, pipeline: &[Document]) -> Result<Vec<Document>> {
    for stage in pipeline {
        let Some((name, arg)) = stage.iter().next() else {
            bail!(
                Location40323,
                "A pipeline stage specification object must contain exactly one field."
            );
        };
        if stage.len() != 1 {
            bail!(
                Location40323,
                "A pipeline stage specification object must contain exactly one field."
            );
        }
        docs = match (name.as_str(), arg) {
            ("$match", Bson::Document(f)) => {
                let f = Filter::parse(f)?;
                docs.into_iter().filter(|d| f.matches(d)).collect()
            }
            ("$sort", Bson::Document(s)) => {
                let s = SortSpec::parse(s)?;
                docs.sort_by(|a, b| s.compare(a, b));
                docs
            }
            ("$skip", n) => {
                let n = non_negative(n, "$skip")?;
                docs.into_iter().skip(n).collect()
            }
            ("$limit", n) => {
                let n = non_negative(n, "$limit")?;
                if n == 0 {
                    bail!(Location15958, "the limit must be positive");
                }
                docs.into_iter().take(n).collect()
            }
            ("$project", Bson::Document(p)) => {
                let p = Projection::parse(p)?;
                docs.iter().map(|d| p.apply(d, None)).collect::<Result<_>>()?
            }
            ("$count", Bson::String(field)) => {
                vec![bson::doc! { field.clone(): docs.len() as i32 }]
            }
            ("$group", Bson::Document(g)) => group(docs, g)?,
            (other, _) => bail!(Location40324, "Unrecognized pipeline stage name: '{}'", other),
        };
    }
    Ok(docs)
}

fn non_negative(v: &Bson, stage: &str) -> Result<usize> {
    let n = match v {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(d) if d.fract() == 0.0 => *d as i64,
        _ => bail!(Location15957, "the {} must be specified as a number", stage),
    };
    if n < 0 {
        bail!(Location15956, "Cannot have a negative {}", stage);
    }
    Ok(n as usize)
}

/// Evaluates a simple expression: a `$field.path`, or a literal.
fn eval(expr: &Bson, doc: &Document) -> Bson {
    match expr {
        Bson::String(s) if s.starts_with('$') => {
            crate::doc::path::get_path(doc, &s[1..]).cloned().unwrap_or(Bson::Null)
        }
        other => other.clone(),
    }
}

fn add(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => match x.checked_add(*y) {
            Some(s) => Bson::Int32(s),
            None => Bson::Int64(i64::from(*x) + i64::from(*y)),
        },
        (Bson::Int32(x), Bson::Int64(y)) | (Bson::Int64(y), Bson::Int32(x)) => {
            Bson::Int64(i64::from(*x) + y)
        }
        (Bson::Int64(x), Bson::Int64(y)) => Bson::Int64(x.wrapping_add(*y)),
        _ => Bson::Double(as_f64(a) + as_f64(b)),
    }
}

fn as_f64(v: &Bson) -> f64 {
    match v {
        Bson::Int32(n) => f64::from(*n),
        Bson::Int64(n) => *n as f64,
        Bson::Double(d) => *d,
        _ => 0.0,
    }
}

fn is_number(v: &Bson) -> bool {
    matches!(v, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
}

fn group(docs: Vec<Document>, spec: &Document) -> Result<Vec<Document>> {
    let Some(id_expr) = spec.get("_id") else {
        bail!(Location15955, "a group specification must include an _id");
    };
    let mut groups: Vec<(Bson, Vec<Document>)> = Vec::new();
    for d in docs {
        let key = match id_expr {
            Bson::Document(fields) => {
                let mut k = Document::new();
                for (f, e) in fields {
                    k.insert(f.clone(), eval(e, &d));
                }
                Bson::Document(k)
            }
            e => eval(e, &d),
        };
        match groups
            .iter_mut()
            .find(|(k, _)| crate::doc::compare::cmp_bson(k, &key) == Ordering::Equal)
        {
            Some((_, members)) => members.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let mut g = Document::new();
        g.insert("_id", key);
        for (field, acc) in spec.iter().filter(|(k, _)| k.as_str() != "_id") {
            let Bson::Document(acc) = acc else {
                bail!(Location40234, "The field '{}' must be an accumulator object", field);
            };
            let Some((op, arg)) = acc.iter().next() else {
                bail!(Location40234, "The field '{}' must be an accumulator object", field);
            };
            let values: Vec<Bson> = members.iter().map(|d| eval(arg, d)).collect();
            let v = match op.as_str() {
                "$sum" => {
                    values.iter().filter(|v| is_number(v)).fold(Bson::Int32(0), |a, v| add(&a, v))
                }
                "$avg" => {
                    let nums: Vec<f64> =
                        values.iter().filter(|v| is_number(v)).map(as_f64).collect();
                    if nums.is_empty() {
                        Bson::Null
                    } else {
                        Bson::Double(nums.iter().sum::<f64>() / nums.len() as f64)
                    }
                }
                "$min" => values
                    .into_iter()
                    .filter(|v| !matches!(v, Bson::Null))
                    .min_by(crate::doc::compare::cmp_bson)
                    .unwrap_or(Bson::Null),
                "$max" => values
                    .into_iter()
                    .filter(|v| !matches!(v, Bson::Null))
                    .max_by(crate::doc::compare::cmp_bson)
                    .unwrap_or(Bson::Null),
                "$first" => values.into_iter().next().unwrap_or(Bson::Null),
                "$last" => values.into_iter().last().unwrap_or(Bson::Null),
                "$push" => Bson::Array(values),
                "$addToSet" => {
                    let mut set: Vec<Bson> = Vec::new();
                    for v in values {
                        if !set
                            .iter()
                            .any(|s| crate::doc::compare::cmp_bson(s, &v) == Ordering::Equal)
                        {
                            set.push(v);
                        }
                    }
                    Bson::Array(set)
                }
                "$count" => Bson::Int32(members.len() as i32),
                other => return Err(err!(Location15952, "unknown group operator '{}'", other)),
            };
            g.insert(field.clone(), v);
        }
        out.push(g);
    }
    Ok(out)
}
