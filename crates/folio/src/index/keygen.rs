//! Index key generation: the keys one document contributes to one index.
//!
//! A key is the tuple of the values at the key pattern's paths, encoded with
//! [`encode_key_component`] (descending components inverted) and concatenated. MongoDB's rules,
//! which Folio follows:
//!
//! - **Missing fields** index as `null`. A **sparse** index leaves out a key when *every* field
//!   of it is missing (an explicit `null` counts as present), so a document with none of the
//!   fields is not indexed at all.
//! - **Arrays** make the index *multikey*: a path that reaches an array contributes one key per
//!   element (the element itself when the path ends there, or the rest of the path applied to
//!   each element, where scalars have no fields and give `null`). An empty array contributes
//!   `undefined` where the path ends at it and `null` where the path continues below it. A
//!   numeric path component applied to an array selects that element (`a.0`) instead of
//!   expanding the array; unlike MongoDB, such a positional path does not count as reaching the
//!   array for the parallel-arrays rule.
//! - **Parallel arrays**: a compound key may expand at most one array per document, or the
//!   cartesian product of keys would explode; a document whose fields reach two different arrays
//!   fails with CannotIndexParallelArrays (171, `cannot index parallel arrays [b] [a]`). Two
//!   fields reaching the *same* array (`{"a.x": 1, "a.y": 1}` over `a: [{x, y}, …]`) are fine and
//!   pair up element by element.
//! - Keys are **deduplicated** by their encoding, so `[1, 1.0]` yields one key.
//!
//! The recursion keeps one *slot* per key-pattern field: either a resolved value or a pending
//! path below some base document. Each step resolves every pending path until it ends, is missing,
//! or hits an array; if exactly one array was hit, the step is repeated once per element with the
//! fields that went through it re-based on that element.
//!
//! Partial filters are not applied here: whether a document belongs to a partial index is the
//! matcher's decision, taken by the caller before asking for keys.

use bson::{Bson, Document};

use super::fmt::{format_document, format_value};
use super::hash::hashed_key;
use super::spec::{IndexSpec, Plugin};
use crate::encoding::encode_key_component;
use crate::error::{Code, Error, Result};

/// One index key of a document: its encoding and the values it was built from (one per key
/// pattern field, in order), which duplicate-key errors report.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexKey {
    /// The order-preserving encoding of the key (components concatenated).
    pub bytes: Vec<u8>,
    /// The key's values, one per key-pattern field.
    pub values: Vec<Bson>,
}

/// The keys one document contributes to one index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexKeys {
    /// Distinct keys, sorted by encoding. Empty when a sparse index skips the document.
    pub keys: Vec<IndexKey>,
    /// Whether an array was expanded (the index becomes multikey).
    pub multikey: bool,
}

/// A key-pattern field during generation.
#[derive(Clone, Debug)]
enum Slot<'a> {
    /// A value, and whether it was present in the document (missing fields are `null`).
    Done(Bson, bool),
    /// A path still to follow below a base document.
    Todo(&'a Document, &'a [&'a str]),
}

/// Where following a path ended.
enum Walk<'a> {
    Value(&'a Bson),
    Missing,
    /// An array was reached; `rest` is the remainder of the path (empty when the array is the
    /// value at the path's end) and `name` the array's field name.
    Array {
        arr: &'a [Bson],
        name: &'a str,
        rest: &'a [&'a str],
    },
}

/// A slot after one resolution step.
enum Resolved<'a> {
    Done(Bson, bool),
    Array { arr: &'a [Bson], name: &'a str, rest: &'a [&'a str] },
}

impl IndexSpec {
    /// The encoded keys `doc` contributes to this index (see the module documentation).
    #[cfg(test)]
    pub fn keys_for(&self, doc: &Document) -> Result<Vec<Vec<u8>>> {
        Ok(self.entries_for(doc)?.keys.into_iter().map(|k| k.bytes).collect())
    }

    /// The keys `doc` contributes, with their values and the multikey flag.
    pub fn entries_for(&self, doc: &Document) -> Result<IndexKeys> {
        let paths: Vec<Vec<&str>> =
            self.fields.iter().map(|f| f.path.split('.').collect()).collect();
        let mut slots = Vec::with_capacity(paths.len());
        // The keys of each geo field (by position); their product with the other fields' keys
        // is taken after expansion, since a location's cells are not array elements.
        let mut geo: Vec<(usize, Vec<Bson>)> = Vec::new();
        let mut text: Option<(usize, Vec<(String, f64)>)> = None;
        for (n, (f, p)) in self.fields.iter().zip(&paths).enumerate() {
            slots.push(match f.plugin {
                Some(Plugin::Hashed) => self.hashed_slot(doc, p)?,
                Some(plugin @ (Plugin::Sphere | Plugin::Flat)) => {
                    geo.push((n, geo_keys(doc, plugin, &f.path, &self.options)?));
                    Slot::Done(Bson::Null, true)
                }
                Some(Plugin::Text) => {
                    let spec = crate::query::text::TextSpec::from_index(&self.options)?;
                    let mut terms: Vec<(String, f64)> = spec.scores(doc)?.into_iter().collect();
                    terms.sort_by(|a, b| a.0.cmp(&b.0));
                    text = Some((n, terms));
                    Slot::Done(Bson::Null, true)
                }
                None => Slot::Todo(doc, p.as_slice()),
            });
        }
        if !geo.is_empty() && geo.iter().all(|(_, keys)| keys.is_empty()) {
            // A document without locations is not in a geo index.
            return Ok(IndexKeys::default());
        }
        if text.as_ref().is_some_and(|(_, terms)| terms.is_empty()) {
            // Nor is a document without terms in a text index.
            return Ok(IndexKeys::default());
        }
        // The `_ftsx` slot after `_fts` is filled with each term's score below.
        if let Some((n, _)) = &text
            && let Some(s) = slots.get_mut(n + 1)
        {
            *s = Slot::Done(Bson::Null, true);
        }
        let mut raw = Vec::new();
        let mut multikey = false;
        expand(slots, &mut raw, &mut multikey)?;
        if let Some((n, terms)) = text {
            multikey |= terms.len() > 1;
            raw = raw
                .into_iter()
                .flat_map(|(values, present)| {
                    terms.iter().map(move |(term, score)| {
                        let mut v = values.clone();
                        v[n] = Bson::String(term.clone());
                        if n + 1 < v.len() {
                            v[n + 1] = Bson::Double(*score);
                        }
                        (v, present)
                    })
                })
                .collect();
        }
        for (n, keys) in geo {
            if keys.len() > 1 {
                multikey = true;
            }
            let keys = if keys.is_empty() { vec![Bson::Null] } else { keys };
            raw = raw
                .into_iter()
                .flat_map(|(values, present)| {
                    keys.iter().map(move |k| {
                        let mut v = values.clone();
                        v[n] = k.clone();
                        (v, present)
                    })
                })
                .collect();
        }
        let mut keys: Vec<IndexKey> = raw
            .into_iter()
            // A sparse index leaves out keys whose fields were all missing.
            .filter(|(_, present)| *present || !self.sparse)
            .map(|(values, _)| IndexKey { bytes: self.encode_collated(&values), values })
            .collect();
        keys.sort_by(|a, b| a.bytes.cmp(&b.bytes));
        keys.dedup_by(|a, b| a.bytes == b.bytes);
        Ok(IndexKeys { keys, multikey })
    }

    /// The key component of a hashed field: the hash of its value (of `null` when missing, of
    /// the collation key of a string under the index's collation). An array anywhere along the
    /// path fails with 16766, as hashed keys cannot expand arrays.
    fn hashed_slot<'a>(&self, doc: &Document, path: &[&str]) -> Result<Slot<'a>> {
        let mut cur: Option<&Bson> = None;
        for (i, part) in path.iter().enumerate() {
            let next = match cur {
                None => doc.get(*part),
                Some(Bson::Document(d)) => d.get(*part),
                Some(_) => None,
            };
            match next {
                Some(Bson::Array(_)) => {
                    return Err(Error::new(
                        Code::Other(16766),
                        format!(
                            "Error: hashed indexes do not currently support array values. Found \
                             array at path: {}",
                            path[..=i].join(".")
                        ),
                    ));
                }
                Some(v) => cur = Some(v),
                None => {
                    cur = None;
                    break;
                }
            }
        }
        let present = cur.is_some();
        let value = cur.cloned().unwrap_or(Bson::Null);
        let value = match &self.collation {
            Some(c) => c.transform(&value),
            None => value,
        };
        Ok(Slot::Done(Bson::Int64(hashed_key(&value)), present))
    }

    /// Encodes a tuple of key values (one per key-pattern field) as an index key; used for
    /// lookups and range bounds as well as by key generation.
    pub fn encode(&self, values: &[Bson]) -> Vec<u8> {
        let mut out = Vec::new();
        for (v, f) in values.iter().zip(&self.fields) {
            encode_key_component(v, f.descending, &mut out);
        }
        out
    }

    /// Encodes a tuple of document values as an index key, strings replaced by their collation
    /// keys when the index has a collation.
    pub fn encode_collated(&self, values: &[Bson]) -> Vec<u8> {
        match &self.collation {
            Some(c) => {
                let keyed: Vec<Bson> = values.iter().map(|v| c.transform(v)).collect();
                self.encode(&keyed)
            }
            None => self.encode(values),
        }
    }

    /// The DuplicateKey (11000) error for `values` (one per key-pattern field) in this index of
    /// `db.coll`: `E11000 duplicate key error collection: db.coll index: a_1 dup key: { a: 1 }`,
    /// with `keyPattern` and `keyValue` as extra fields.
    pub fn duplicate_key_error(&self, db: &str, coll: &str, values: &[Bson]) -> Error {
        format_dup_key(db, coll, self, values)
    }
}

/// The keys of one geo field: S2 cell ids (2dsphere) or Morton codes (2d) of every location at
/// the path. Missing and null values have none; a value that is not a valid location fails with
/// MongoDB's errors (16755 for 2dsphere, 13026/13027 for 2d).
fn geo_keys(doc: &Document, plugin: Plugin, path: &str, options: &Document) -> Result<Vec<Bson>> {
    use crate::query::geo;
    let grid = match plugin {
        Plugin::Flat => geo::FlatGrid::of_index(options),
        _ => geo::FlatGrid::default(),
    };
    let values = geo::values_at(doc, path);
    let mut out: Vec<i64> = Vec::new();
    for v in values {
        if matches!(v, Bson::Null | Bson::Undefined) || matches!(&v, Bson::Array(a) if a.is_empty())
        {
            continue;
        }
        match plugin {
            Plugin::Sphere => {
                let keys = geo::shapes_of(&v).and_then(|shapes| {
                    let mut keys = Vec::new();
                    for s in &shapes {
                        keys.extend(geo::sphere_keys(s)?);
                    }
                    Ok(keys)
                });
                match keys {
                    Ok(k) => out.extend(k),
                    Err(reason) => {
                        return Err(Error::new(
                            Code::Location16755,
                            format!("Can't extract geo keys: {}  {reason}", format_document(doc)),
                        ));
                    }
                }
            }
            _ => {
                let points: Vec<bson::Bson> = match &v {
                    Bson::Array(items) if geo::legacy_pair(&v).is_none() => items.clone(),
                    other => vec![other.clone()],
                };
                for p in points {
                    let Some(c) = geo::legacy_pair(&p) else {
                        return Err(Error::new(
                            Code::Other(13026),
                            format!(
                                "geo values must be 'legacy coordinate pairs' for 2d indexes: {}",
                                format_value(&p)
                            ),
                        ));
                    };
                    out.push(
                        geo::flat_key(c, &grid).map_err(|m| Error::new(Code::Other(13027), m))?,
                    );
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out.into_iter().map(Bson::Int64).collect())
}

/// The DuplicateKey (11000) error MongoDB reports for a unique index violation.
pub fn format_dup_key(db: &str, coll: &str, spec: &IndexSpec, values: &[Bson]) -> Error {
    let mut key_value = Document::new();
    for (f, v) in spec.fields.iter().zip(values) {
        key_value.insert(f.path.clone(), v.clone());
    }
    let mut message = format!(
        "E11000 duplicate key error collection: {db}.{coll} index: {} dup key: {}",
        spec.name,
        format_document(&key_value)
    );
    if let Some(Bson::Document(c)) = spec.options.get("collation") {
        message.push_str(&format!(" collation: {}", format_document(c)));
    }
    let mut extra = Document::new();
    extra.insert("keyPattern", spec.key.clone());
    extra.insert("keyValue", key_value);
    Error::new(Code::DuplicateKey, message).with_extra(extra)
}

/// Expands slots into key tuples `(values, any component present)`.
fn expand<'a>(
    slots: Vec<Slot<'a>>,
    out: &mut Vec<(Vec<Bson>, bool)>,
    multikey: &mut bool,
) -> Result<()> {
    let resolved: Vec<Resolved<'a>> = slots.into_iter().map(resolve).collect();
    let Some((arr, _)) = single_array(&resolved)? else {
        let present = resolved.iter().any(|r| matches!(r, Resolved::Done(_, true)));
        let values = resolved
            .into_iter()
            .map(|r| match r {
                Resolved::Done(v, _) => v,
                // `single_array` found no array, so every slot is resolved.
                Resolved::Array { .. } => Bson::Null,
            })
            .collect();
        out.push((values, present));
        return Ok(());
    };
    *multikey = true;
    if arr.is_empty() {
        // An empty array indexes as undefined where the path ends at it; paths that continue
        // below it find nothing.
        let next = resolved
            .iter()
            .map(|r| match r {
                Resolved::Done(v, p) => Slot::Done(v.clone(), *p),
                Resolved::Array { rest: [], .. } => Slot::Done(Bson::Undefined, true),
                Resolved::Array { .. } => Slot::Done(Bson::Null, false),
            })
            .collect();
        return expand(next, out, multikey);
    }
    for element in arr {
        let next = resolved
            .iter()
            .map(|r| match (r, element) {
                (Resolved::Done(v, p), _) => Slot::Done(v.clone(), *p),
                (Resolved::Array { rest: [], .. }, e) => Slot::Done(e.clone(), true),
                (Resolved::Array { rest, .. }, Bson::Document(d)) => Slot::Todo(d, rest),
                // A scalar element has no fields: the rest of the path is missing (null).
                (Resolved::Array { .. }, _) => Slot::Done(Bson::Null, false),
            })
            .collect();
        expand(next, out, multikey)?;
    }
    Ok(())
}

/// The one array the resolved slots reached, if any; an error if they reached two.
fn single_array<'a>(resolved: &[Resolved<'a>]) -> Result<Option<(&'a [Bson], &'a str)>> {
    let mut found: Option<(&'a [Bson], &'a str)> = None;
    for r in resolved {
        if let Resolved::Array { arr, name, .. } = r {
            match found {
                None => found = Some((arr, name)),
                Some((a, _)) if std::ptr::eq(a, *arr) => {}
                Some((_, first)) => {
                    return Err(Error::new(
                        Code::CannotIndexParallelArrays,
                        format!("cannot index parallel arrays [{name}] [{first}]"),
                    ));
                }
            }
        }
    }
    Ok(found)
}

fn resolve(slot: Slot<'_>) -> Resolved<'_> {
    match slot {
        Slot::Done(v, p) => Resolved::Done(v, p),
        Slot::Todo(base, path) => match walk(base, path) {
            Walk::Value(v) => Resolved::Done(v.clone(), true),
            Walk::Missing => Resolved::Done(Bson::Null, false),
            Walk::Array { arr, name, rest } => Resolved::Array { arr, name, rest },
        },
    }
}

/// Follows `path` (non-empty) from `doc` until it ends, is missing, or reaches an array.
fn walk<'a>(doc: &'a Document, path: &'a [&'a str]) -> Walk<'a> {
    let Some((&first, _)) = path.split_first() else {
        return Walk::Missing;
    };
    let Some(mut cur) = doc.get(first) else {
        return Walk::Missing;
    };
    let mut name = first;
    let mut i = 1;
    loop {
        if let Bson::Array(arr) = cur {
            match path.get(i).and_then(|p| array_index(p)).and_then(|n| arr.get(n)) {
                Some(element) => {
                    name = path[i];
                    cur = element;
                    i += 1;
                    continue;
                }
                None => return Walk::Array { arr, name, rest: &path[i..] },
            }
        }
        let Some(&part) = path.get(i) else {
            return Walk::Value(cur);
        };
        match cur {
            Bson::Document(d) => match d.get(part) {
                Some(v) => {
                    name = part;
                    cur = v;
                    i += 1;
                }
                None => return Walk::Missing,
            },
            _ => return Walk::Missing,
        }
    }
}

/// A path component used as an array index: decimal digits without a leading zero.
fn array_index(part: &str) -> Option<usize> {
    let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    part.parse().ok()
}

/// A key's values as MongoDB prints them in messages, e.g. `{ a: 1, b: "x" }`.
#[cfg(test)]
pub fn format_key(spec: &IndexSpec, values: &[Bson]) -> String {
    let parts: Vec<String> = spec
        .fields
        .iter()
        .zip(values)
        .map(|(f, v)| format!("{}: {}", f.path, format_value(v)))
        .collect();
    if parts.is_empty() { "{}".to_string() } else { format!("{{ {} }}", parts.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::golden;

    fn parse_doc(text: &str) -> Document {
        match golden::parse_ext(text) {
            Bson::Document(d) => d,
            other => panic!("not a document: {other:?}"),
        }
    }

    fn show_error(e: &Error) -> String {
        let mut s = format!("error {} ({}): {}", e.code_name(), e.code_number(), e.message);
        if let Some(extra) = &e.extra {
            s.push_str(&format!(" | {}", format_document(extra)));
        }
        s
    }

    fn show_keys(spec: &IndexSpec, doc: &Document) -> Vec<String> {
        match spec.entries_for(doc) {
            Err(e) => vec![show_error(&e)],
            Ok(keys) => {
                let mut lines =
                    vec![format!("multikey={} keys={}", keys.multikey, keys.keys.len())];
                for k in &keys.keys {
                    lines.push(format!(
                        "{} {}",
                        format_key(spec, &k.values),
                        golden::hex(&k.bytes)
                    ));
                }
                lines
            }
        }
    }

    fn run_command(
        cmd: &str,
        arg: &str,
        current: &mut Option<IndexSpec>,
        existing: &mut Vec<IndexSpec>,
    ) -> Vec<String> {
        let doc = parse_doc(arg);
        match cmd {
            "index" => {
                let spec = IndexSpec::parse(&doc).unwrap_or_else(|e| panic!("{arg}: {e}"));
                let line = format!("ok {}", format_document(&spec.to_document()));
                existing.push(spec.clone());
                *current = Some(spec);
                vec![line]
            }
            "spec" => match IndexSpec::parse(&doc) {
                Ok(spec) => vec![format!("ok {}", format_document(&spec.to_document()))],
                Err(e) => vec![show_error(&e)],
            },
            "create" => match IndexSpec::parse(&doc).and_then(|s| s.check_conflict(existing)) {
                Ok(true) => vec!["already exists".to_string()],
                Ok(false) => vec!["new index".to_string()],
                Err(e) => vec![show_error(&e)],
            },
            "doc" => show_keys(current.as_ref().expect("no index"), &doc),
            "dupkey" => {
                let spec = current.as_ref().expect("no index");
                match spec.entries_for(&doc) {
                    Ok(keys) => match keys.keys.first() {
                        Some(k) => {
                            vec![show_error(&spec.duplicate_key_error("test", "coll", &k.values))]
                        }
                        None => vec!["no key".to_string()],
                    },
                    Err(e) => vec![show_error(&e)],
                }
            }
            other => panic!("unknown command {other}"),
        }
    }

    /// Runs `testdata/keygen.txt` and compares with `testdata/keygen.golden`.
    #[test]
    fn keygen_golden() {
        let input = golden::read("index/testdata/keygen.txt");
        let mut out = String::new();
        let mut current = None;
        let mut existing = Vec::new();
        for line in input.lines() {
            out.push_str(line);
            out.push('\n');
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
            for result in run_command(cmd, arg.trim(), &mut current, &mut existing) {
                out.push_str(&format!("  -> {result}\n"));
            }
        }
        golden::check("index/testdata/keygen.golden", &out);
    }

    #[test]
    fn keys_for_returns_sorted_distinct_encodings() {
        let spec = IndexSpec::parse(&bson::doc! {"key": {"a": -1}, "name": "a_-1"}).unwrap();
        let keys = spec.keys_for(&bson::doc! {"a": [1, 3, 2, 3.0]}).unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Descending: the largest value has the smallest key.
        assert_eq!(keys[0], spec.encode(&[Bson::Int32(3)]));
    }

    fn random_leaf(rng: &mut impl rand::Rng) -> Bson {
        match rng.random_range(0..6) {
            0 => Bson::Int32(1),
            1 => Bson::Double(2.0),
            2 => Bson::String("x".into()),
            3 => Bson::Null,
            4 => Bson::Boolean(true),
            _ => Bson::Int64(2),
        }
    }

    fn random_field(rng: &mut impl rand::Rng, depth: u32) -> Bson {
        match rng.random_range(0..if depth == 0 { 1 } else { 4 }) {
            0 => random_leaf(rng),
            1 => Bson::Array(
                (0..rng.random_range(0..3)).map(|_| random_field(rng, depth - 1)).collect(),
            ),
            _ => {
                let mut d = Document::new();
                for k in ["b", "c"] {
                    if rng.random() {
                        d.insert(k, random_field(rng, depth - 1));
                    }
                }
                Bson::Document(d)
            }
        }
    }

    /// An index scan must never miss a document: whenever the matcher says `{path: v}` holds,
    /// the document has the key `v` (or, for `null`, a null or undefined key).
    #[test]
    fn keys_cover_every_equality_match() {
        use crate::query::filter::Filter;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut checked = 0;
        let paths = ["a", "a.b", "a.b.c"];
        let specs: Vec<IndexSpec> = paths
            .iter()
            .map(|p| IndexSpec::parse(&bson::doc! {"key": {*p: 1}, "name": *p}).unwrap())
            .collect();
        for _ in 0..3000 {
            let mut doc = Document::new();
            if rng.random_range(0..4) > 0 {
                doc.insert("a", random_field(&mut rng, 3));
            }
            for (path, spec) in paths.iter().zip(&specs) {
                let keys = spec.keys_for(&doc).unwrap();
                for v in [
                    Bson::Int32(1),
                    Bson::Int32(2),
                    Bson::String("x".into()),
                    Bson::Boolean(true),
                    Bson::Null,
                ] {
                    let filter = Filter::parse(&bson::doc! {*path: v.clone()}).unwrap();
                    if !filter.matches(&doc) {
                        continue;
                    }
                    checked += 1;
                    let wanted: Vec<Vec<u8>> = if v == Bson::Null {
                        vec![spec.encode(&[Bson::Null]), spec.encode(&[Bson::Undefined])]
                    } else {
                        vec![spec.encode(std::slice::from_ref(&v))]
                    };
                    assert!(
                        wanted.iter().any(|w| keys.contains(w)),
                        "{doc} matches {{{path}: {v}}} but its keys miss it"
                    );
                }
            }
        }
        assert!(checked > 1000, "only {checked} matches were checked");
    }
}
