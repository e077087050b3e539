//! Sort specifications and the document comparator.
//!
//! A sort key is computed per document and per field: the values at the path with arrays
//! expanded (as the matcher sees them), reduced to the smallest for an ascending field and the
//! largest for a descending one, in MongoDB's total order ([`cmp_bson`]). A missing field sorts
//! as null; an empty array sorts below null (MongoDB treats it as `undefined`). Documents with
//! equal keys keep their input order when the caller uses a stable sort.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::bail;
use crate::doc::compare::{Number, cmp_bson};
use crate::doc::path::{collect_values, get_path};
use crate::error::Result;

/// A parsed sort specification: fields with their direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SortSpec {
    /// `(path, ascending)` in priority order.
    pub keys: Vec<(String, bool)>,
    /// `{$natural: 1 | -1}`: storage order, forward when true. The comparator ignores it; the
    /// executor scans in that direction.
    pub natural: Option<bool>,
    /// The collation strings sort by (`None`: simple, by bytes). Keys hold collation keys.
    pub collation: Option<crate::collation::CollationRef>,
}

impl SortSpec {
    /// Parses `{a: 1, "b.c": -1}`.
    pub fn parse(spec: &Document) -> Result<SortSpec> {
        let mut keys = Vec::with_capacity(spec.len());
        let mut natural = None;
        for (path, dir) in spec {
            if path == "$natural" {
                match Number::of(dir).map(Number::to_f64) {
                    Some(1.0) => natural = Some(true),
                    Some(-1.0) => natural = Some(false),
                    _ => bail!(
                        BadValue,
                        "$natural sort cannot be set to a value other than -1 or 1."
                    ),
                }
                continue;
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                bail!(BadValue, "FieldPath field names may not be empty strings.");
            }
            if path.starts_with('$') {
                bail!(
                    BadValue,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField."
                );
            }
            let asc = match dir {
                Bson::Document(d) if d.get("$meta") == Some(&Bson::String("textScore".into())) => {
                    // Highest score first, as MongoDB sorts text scores.
                    keys.push((crate::expr::TEXT_SCORE_FIELD.to_string(), false));
                    continue;
                }
                Bson::Document(d)
                    if d.get("$meta") == Some(&Bson::String("geoNearDistance".into())) =>
                {
                    // Nearest first.
                    keys.push((crate::expr::GEO_NEAR_DISTANCE_FIELD.to_string(), true));
                    continue;
                }
                Bson::Document(d) if d.contains_key("$meta") => {
                    crate::expr::meta_field(d.get("$meta").unwrap_or(&Bson::Null))?;
                    bail!(NotImplemented, "$meta sort is not supported")
                }
                other => match Number::of(other).map(Number::to_f64) {
                    Some(1.0) => true,
                    Some(-1.0) => false,
                    _ => bail!(
                        Location15975,
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)"
                    ),
                },
            };
            keys.push((path.clone(), asc));
        }
        Ok(SortSpec { keys, natural, collation: None })
    }

    /// The same sort, with strings compared under `collation` (`None`: simple).
    pub fn with_collation(
        mut self,
        collation: Option<&crate::collation::CollationRef>,
    ) -> SortSpec {
        self.collation = collation.cloned();
        self
    }

    /// Whether there is no key to sort by (`$natural` aside).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// MongoDB refuses to sort a document in which two sort fields go through different arrays
    /// (`{a: [1, 2], b: [3, 4]}` sorted by `{a: 1, b: 1}`): there is no single key for it. The
    /// executor calls this on each document it sorts.
    #[cfg(test)]
    pub fn check_parallel_arrays(&self, doc: &Document) -> Result<()> {
        let mut seen: Option<&str> = None;
        for (path, _) in &self.keys {
            let Some(array_at) = first_array_prefix(doc, path) else { continue };
            match seen {
                Some(prev) if prev != array_at => {
                    bail!(BadValue, "cannot sort with keys that are parallel arrays")
                }
                _ => seen = Some(array_at),
            }
        }
        Ok(())
    }

    /// Whether a document has an array on the path of some sort key (its sort key then
    /// depends on all its elements, which an index scan in key order does not see together).
    pub fn has_array_on_key(&self, doc: &Document) -> bool {
        // An array anywhere on the path, the last field included, is what puts several values
        // on it; the walk stops at the first one.
        self.keys.iter().any(|(path, _)| first_array_prefix(doc, path).is_some())
    }

    /// [`SortSpec::has_array_on_key`] for a stored document read raw; a path that cannot be
    /// read counts as one with an array, so the caller takes the decoded path.
    pub fn has_array_on_key_raw(&self, doc: &bson::RawDocument) -> bool {
        use super::path::{RawReach, reach_raw};
        self.keys.iter().any(|(path, _)| {
            !matches!(reach_raw(doc, path), RawReach::Missing | RawReach::Value(_))
        })
    }

    /// The sort key of a document: one value per field (strings as collation keys under a
    /// collation, so that the key compares as the collation orders).
    pub fn key(&self, doc: &Document) -> Vec<Bson> {
        let c = self.collation.as_deref();
        self.keys.iter().map(|(path, asc)| field_key(doc, path, *asc, c)).collect()
    }

    /// Compares two precomputed keys.
    pub fn compare_keys(&self, a: &[Bson], b: &[Bson]) -> Ordering {
        for (((_, asc), x), y) in self.keys.iter().zip(a).zip(b) {
            let ord = cmp_bson(x, y);
            let ord = if *asc { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Compares two documents.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        self.compare_keys(&self.key(a), &self.key(b))
    }

    /// Sorts documents in place (stable).
    #[cfg(test)]
    pub fn sort(&self, docs: &mut [Document]) {
        let mut keyed: Vec<(Vec<Bson>, usize)> =
            docs.iter().enumerate().map(|(i, d)| (self.key(d), i)).collect();
        keyed.sort_by(|(a, _), (b, _)| self.compare_keys(a, b));
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut taken: Vec<Option<Document>> =
            docs.iter_mut().map(|d| Some(std::mem::take(d))).collect();
        for (slot, i) in docs.iter_mut().zip(order) {
            *slot = taken[i].take().unwrap_or_default();
        }
    }
}

/// The sort key of one field: the smallest (ascending) or largest (descending) value.
fn field_key(
    doc: &Document,
    path: &str,
    asc: bool,
    collation: Option<&crate::collation::Collation>,
) -> Bson {
    let values = collect_values(doc, path);
    let values = values.into_iter().map(|v| crate::collation::transform_opt(collation, v));
    let best = values.reduce(|best, v| {
        let ord = cmp_bson(&v, &best);
        if (asc && ord == Ordering::Less) || (!asc && ord == Ordering::Greater) { v } else { best }
    });
    match best {
        Some(v) => v.into_owned(),
        None => match get_path(doc, path) {
            Some(Bson::Array(a)) if a.is_empty() => Bson::Undefined,
            _ => Bson::Null,
        },
    }
}

/// The shortest prefix of `path` whose value in `doc` is an array, if any.
fn first_array_prefix<'a>(doc: &Document, path: &'a str) -> Option<&'a str> {
    let mut end = 0;
    let mut cur: Option<&Bson> = None;
    for (i, part) in path.split('.').enumerate() {
        end += part.len() + usize::from(i > 0);
        let next = match cur {
            None => doc.get(part),
            Some(Bson::Document(d)) => d.get(part),
            Some(_) => None,
        };
        match next {
            Some(Bson::Array(_)) => return Some(&path[..end]),
            Some(v) => cur = Some(v),
            None => return None,
        }
    }
    None
}
