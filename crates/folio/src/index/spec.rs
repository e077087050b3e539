//! Index specifications: parsing and validating `createIndexes` entries the way MongoDB does, and
//! deciding whether a requested index conflicts with an existing one.
//!
//! MongoDB identifies an index by its *signature*: the key pattern plus the options that change
//! which keys exist or what they mean (`unique`, `sparse`, `partialFilterExpression`,
//! `collation`). Two specs with the same signature describe the same index; with the same
//! signature but other differing options (`expireAfterSeconds`, `hidden`) they are *equivalent*;
//! otherwise they are *different*. [`IndexSpec::check_conflict`] turns those three outcomes into
//! MongoDB's errors: IndexKeySpecsConflict (86) when a name is reused for a different index,
//! IndexOptionsConflict (85) when an equivalent index exists under another name or with other
//! options, and "already exists" (not an error) for an identical request.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::fmt::{format_document, format_value};
use crate::doc::compare::cmp_documents;
use crate::doc::validate::type_name;
use crate::error::{Error, Result};

/// The name of the `_id` index.
pub const ID_INDEX_NAME: &str = "_id_";

/// The index version Folio writes (`v: 2`, MongoDB's default since 3.4).
pub const INDEX_VERSION: i32 = 2;

/// Fields a `createIndexes` entry may carry. Options Folio does not act on (`background`,
/// `storageEngine`, text and geo parameters) are accepted and kept so `listIndexes` returns them.
const ALLOWED_FIELDS: &[&str] = &[
    "v",
    "key",
    "name",
    "ns",
    "unique",
    "sparse",
    "partialFilterExpression",
    "background",
    "hidden",
    "expireAfterSeconds",
    "collation",
    "storageEngine",
    "weights",
    "default_language",
    "language_override",
    "textIndexVersion",
    "2dsphereIndexVersion",
    "bits",
    "min",
    "max",
    "wildcardProjection",
    "prepareUnique",
    "dropDups",
];

/// Index plugin names MongoDB knows (string values in a key pattern).
const KNOWN_PLUGINS: &[&str] = &["2d", "2dsphere", "text", "hashed", "geoHaystack", "columnstore"];

/// One component of a key pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyField {
    /// The dotted path, e.g. `b.c`.
    pub path: String,
    /// Whether the component is descending (a negative number in the pattern).
    pub descending: bool,
    /// The index plugin of the component (a string in the pattern), `None` for an ordinary
    /// ascending or descending component.
    pub plugin: Option<Plugin>,
}

/// An index plugin: a key-pattern component whose keys are not the field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plugin {
    /// `"hashed"`: MongoDB's 64-bit hash of the value (see [`super::hash`]).
    Hashed,
    /// `"2dsphere"` (version 3): S2 cell ids of the locations (see [`crate::query::geo`]).
    Sphere,
    /// `"2d"`: Morton codes of flat legacy points.
    Flat,
    /// `"text"` (the normalized `_fts` field; `_ftsx` after it holds the term's score).
    Text,
}

impl Plugin {
    fn of(v: &Bson) -> Option<Plugin> {
        match v {
            Bson::String(s) if s == "hashed" => Some(Plugin::Hashed),
            Bson::String(s) if s == "2dsphere" => Some(Plugin::Sphere),
            Bson::String(s) if s == "2d" => Some(Plugin::Flat),
            Bson::String(s) if s == "text" => Some(Plugin::Text),
            _ => None,
        }
    }
}

/// How a requested index relates to an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same key pattern and options.
    Identical,
    /// Same signature (key pattern, unique, sparse, partial filter, collation), other options
    /// differ.
    Equivalent,
    /// Different signatures.
    Different,
}

/// A validated index specification.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexSpec {
    /// The index name.
    pub name: String,
    /// The key pattern as given, e.g. `{a: 1, "b.c": -1}`.
    pub key: Document,
    /// The key pattern's components, in order.
    pub fields: Vec<KeyField>,
    /// Whether keys must be unique (always true for the `_id` index).
    pub unique: bool,
    /// Whether documents missing every indexed field are left out.
    pub sparse: bool,
    /// The partial filter; the caller decides with the matcher which documents it admits.
    pub partial_filter: Option<Document>,
    /// Whether the index is hidden from the planner.
    pub hidden: bool,
    /// The index's collation (`None`: simple). Its keys hold collation keys of strings.
    pub collation: Option<crate::collation::CollationRef>,
    /// The remaining options, in request order (`expireAfterSeconds`, `collation`, …), returned by
    /// `listIndexes` as given.
    pub options: Document,
}

impl IndexSpec {
    /// The `_id` index every collection has: `{v: 2, key: {_id: 1}, name: "_id_"}`.
    pub fn id_index() -> IndexSpec {
        let mut key = Document::new();
        key.insert("_id", 1);
        IndexSpec {
            name: ID_INDEX_NAME.to_string(),
            key,
            fields: vec![KeyField { path: "_id".into(), descending: false, plugin: None }],
            unique: true,
            sparse: false,
            partial_filter: None,
            hidden: false,
            collation: None,
            options: Document::new(),
        }
    }

    /// Whether the index has a geo field (2d or 2dsphere): a document whose geo fields are all
    /// missing has no keys, so the index answers only geo predicates.
    pub fn is_geo(&self) -> bool {
        self.fields.iter().any(|f| matches!(f.plugin, Some(Plugin::Sphere | Plugin::Flat)))
    }

    /// Whether this is a text index.
    pub fn is_text(&self) -> bool {
        self.fields.iter().any(|f| f.plugin == Some(Plugin::Text))
    }

    /// Whether this is the `_id` index (key pattern exactly `{_id: 1}`).
    pub fn is_id_index(&self) -> bool {
        is_id_pattern(&self.key)
    }

    /// Under `apiStrict: true`, refuses a spec MongoDB will not create in API version 1 (a text
    /// index) with APIStrictError, where MongoDB's validation meets its key pattern: an error of
    /// a field before it comes first (and is left to [`IndexSpec::parse`]).
    pub fn check_api_strict(spec: &Document) -> Result<()> {
        match parse_fields(spec, true) {
            Err(e) if e.code == crate::Code::APIStrictError => Err(in_specification(spec, e)),
            _ => Ok(()),
        }
    }

    /// Parses one entry of `createIndexes.indexes` with MongoDB's validation and messages.
    pub fn parse(spec: &Document) -> Result<IndexSpec> {
        if let Some(Bson::String(name)) = spec.get("name")
            && name == "*"
        {
            crate::bail!(BadValue, "The index name '*' is not valid.");
        }
        parse_fields(spec, false).map_err(|e| in_specification(spec, e))?;
        let normalized_text;
        let spec = match normalize_text(spec)? {
            Some(n) => {
                normalized_text = n;
                &normalized_text
            }
            None => spec,
        };
        let key = match spec.get("key") {
            Some(Bson::Document(k)) => k.clone(),
            _ => unreachable_key(spec)?,
        };
        let name = match spec.get("name") {
            Some(Bson::String(n)) => n.clone(),
            _ => {
                return Err(in_specification(
                    spec,
                    crate::err!(
                        FailedToParse,
                        "The 'name' field is a required property of an index specification"
                    ),
                ));
            }
        };
        let normalized = normalized_spec(spec);
        check_name(&name).map_err(|e| in_specification(&normalized, e))?;
        let unique = spec.get("unique").is_some_and(truthy);
        let sparse = spec.get("sparse").is_some_and(truthy);
        let partial_filter = match spec.get("partialFilterExpression") {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        };
        if sparse && partial_filter.is_some() {
            return Err(in_specification(
                &normalized,
                crate::err!(
                    CannotCreateIndex,
                    "cannot mix \"partialFilterExpression\" and \"sparse\" options"
                ),
            ));
        }
        if is_id_pattern(&key) {
            check_id_index_options(spec, sparse, partial_filter.is_some())
                .map_err(|e| in_specification(&normalized, e))?;
        }
        if key.values().any(|v| Plugin::of(v) == Some(Plugin::Hashed)) {
            // MongoDB raises these when it builds the index, so they name no specification.
            check_hashed(&key, unique)?;
        }
        if key.values().any(|v| Plugin::of(v) == Some(Plugin::Flat)) {
            check_flat(&key, spec)?;
        }
        if key.values().any(|v| Plugin::of(v) == Some(Plugin::Sphere)) {
            check_sphere(spec)?;
        }
        if let Some(ttl) = spec.get("expireAfterSeconds") {
            check_ttl(ttl, &key).map_err(|e| in_specification(&normalized, e))?;
        }
        let fields = key
            .iter()
            .map(|(path, v)| KeyField {
                path: path.clone(),
                descending: is_descending(v),
                plugin: Plugin::of(v),
            })
            .collect();
        let collation = parse_collation(spec, &normalized)?;
        let mut options = Document::new();
        if key.values().any(|v| Plugin::of(v) == Some(Plugin::Sphere))
            && !spec.contains_key("2dsphereIndexVersion")
        {
            // MongoDB records the version it built, and `listIndexes` shows it.
            options.insert("2dsphereIndexVersion", 3);
        }
        for (k, v) in spec {
            if k == "collation" {
                // Stored resolved, as `listIndexes` shows it; a simple collation is no option.
                if let Some(c) = &collation {
                    options.insert("collation", c.to_document());
                }
                continue;
            }
            if !matches!(
                k.as_str(),
                "v" | "key"
                    | "name"
                    | "ns"
                    | "unique"
                    | "sparse"
                    | "partialFilterExpression"
                    | "hidden"
            ) {
                options.insert(k.clone(), v.clone());
            }
        }
        Ok(IndexSpec {
            name,
            unique: unique || is_id_pattern(&key),
            key,
            fields,
            sparse,
            partial_filter,
            hidden: spec.get("hidden").is_some_and(truthy),
            collation,
            options,
        })
    }

    /// The spec as `listIndexes` returns it: `{v: 2, key, name, unique?, sparse?, hidden?,
    /// partialFilterExpression?, …options}`.
    pub fn to_document(&self) -> Document {
        let mut d = Document::new();
        d.insert("v", INDEX_VERSION);
        d.insert("key", self.key.clone());
        d.insert("name", self.name.clone());
        if self.unique && !self.is_id_index() {
            d.insert("unique", true);
        }
        if self.sparse {
            d.insert("sparse", true);
        }
        if self.hidden {
            d.insert("hidden", true);
        }
        if let Some(p) = &self.partial_filter {
            d.insert("partialFilterExpression", p.clone());
        }
        for (k, v) in &self.options {
            d.insert(k.clone(), v.clone());
        }
        d
    }

    /// Compares this (requested) spec with an existing one.
    pub fn compare(&self, existing: &IndexSpec) -> Comparison {
        // Documents compare as MongoDB compares them, so `{a: 1}` and `{a: 1.0}` are one pattern.
        let same_doc = |a: Option<&Document>, b: Option<&Document>| match (a, b) {
            (Some(a), Some(b)) => cmp_documents(a, b) == Ordering::Equal,
            (None, None) => true,
            _ => false,
        };
        let collation = |s: &IndexSpec| match s.options.get("collation") {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        };
        let signature_equal = same_doc(Some(&self.key), Some(&existing.key))
            && self.unique == existing.unique
            && self.sparse == existing.sparse
            && same_doc(self.partial_filter.as_ref(), existing.partial_filter.as_ref())
            && same_doc(collation(self).as_ref(), collation(existing).as_ref());
        if !signature_equal {
            Comparison::Different
        } else if self.hidden == existing.hidden
            && self.options.get("expireAfterSeconds") == existing.options.get("expireAfterSeconds")
        {
            Comparison::Identical
        } else {
            Comparison::Equivalent
        }
    }

    /// Checks a requested index against a collection's indexes. Returns `Ok(true)` when an
    /// identical index already exists (nothing to build), `Ok(false)` when the index is new, and
    /// MongoDB's conflict errors otherwise.
    pub fn check_conflict(&self, existing: &[IndexSpec]) -> Result<bool> {
        if self.is_text()
            && let Some(other) = existing.iter().find(|e| e.is_text() && e.name != self.name)
        {
            // One text index per collection, as in MongoDB.
            crate::bail!(
                IndexOptionsConflict,
                "An equivalent index already exists with a different name and options. Requested \
                 index: {}, existing index: {}",
                format_document(&self.to_document()),
                format_document(&other.to_document())
            );
        }
        if let Some(same_name) = existing.iter().find(|e| e.name == self.name) {
            return match self.compare(same_name) {
                Comparison::Identical => Ok(true),
                Comparison::Different => Err(key_specs_conflict(self, same_name)),
                Comparison::Equivalent => Err(crate::err!(
                    IndexOptionsConflict,
                    "An equivalent index already exists with the same name but different \
                     options. Requested index: {}, existing index: {}",
                    format_document(&self.to_document()),
                    format_document(&same_name.to_document())
                )),
            };
        }
        for other in existing {
            match self.compare(other) {
                Comparison::Different => {}
                Comparison::Equivalent => {
                    crate::bail!(
                        IndexOptionsConflict,
                        "An equivalent index already exists with a different name and options. \
                         Requested index: {}, existing index: {}",
                        format_document(&self.to_document()),
                        format_document(&other.to_document())
                    )
                }
                Comparison::Identical => crate::bail!(
                    IndexOptionsConflict,
                    "Index already exists with a different name: {}",
                    other.name
                ),
            }
        }
        Ok(false)
    }
}

/// IndexKeySpecsConflict (86): `requested` reuses the name of a different index `existing`.
pub fn key_specs_conflict(requested: &IndexSpec, existing: &IndexSpec) -> Error {
    crate::err!(
        IndexKeySpecsConflict,
        "An existing index has the same name as the requested index. When index names are not \
         specified, they are auto generated and can cause conflicts. Please refer to our \
         documentation. Requested index: {}, existing index: {}",
        format_document(&requested.to_document()),
        format_document(&existing.to_document())
    )
}

/// The name MongoDB generates for a key pattern: `a_1_b.c_-1`, `t_text`.
#[cfg(test)]
pub fn default_name(key: &Document) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::String(s) => s.clone(),
                Bson::Double(d) if d.fract() == 0.0 && d.abs() < 1e15 => format!("{}", *d as i64),
                other => format_value(other),
            };
            format!("{k}_{v}")
        })
        .collect();
    parts.join("_")
}

/// Validates a key pattern (MongoDB's `validateKeyPattern`), errors are CannotCreateIndex (67).
pub fn validate_key_pattern(key: &Document) -> Result<()> {
    if key.is_empty() {
        crate::bail!(CannotCreateIndex, "Index keys cannot be empty.");
    }
    let plugin = key.values().find_map(|v| v.as_str());
    if let Some(p) = plugin
        && !p.is_empty()
        && !KNOWN_PLUGINS.contains(&p)
    {
        crate::bail!(CannotCreateIndex, "Unknown index plugin '{}'", p);
    }
    for (path, v) in key {
        check_key_value(v, plugin)?;
        check_key_path(path)?;
    }
    if let Some(p) = plugin
        && !matches!(p, "hashed" | "2dsphere" | "2d" | "text")
    {
        crate::bail!(CannotCreateIndex, "Index type '{}' is not supported", p);
    }
    Ok(())
}

/// MongoDB's normal form of a text index: the text fields become `{_fts: "text", _ftsx: 1}`
/// between the prefix and suffix fields, and `weights` (every text field, 1 unless given),
/// `default_language`, `language_override` and `textIndexVersion: 3` are recorded. `None` when
/// the spec is no text index or is already normal.
fn normalize_text(spec: &Document) -> Result<Option<Document>> {
    let Ok(key) = spec.get_document("key") else { return Ok(None) };
    let is_text = |v: &Bson| v.as_str() == Some("text");
    if !key.values().any(is_text) {
        return Ok(None);
    }
    let mut out = spec.clone();
    if !key.contains_key("_fts") {
        let mut weights: std::collections::BTreeMap<String, Bson> =
            std::collections::BTreeMap::new();
        if let Ok(w) = spec.get_document("weights") {
            for (k, v) in w {
                weights.insert(k.clone(), v.clone());
            }
        }
        let mut new_key = Document::new();
        let mut seen_text = false;
        for (k, v) in key {
            if is_text(v) {
                weights.entry(k.clone()).or_insert(Bson::Int32(1));
                if !seen_text {
                    new_key.insert("_fts", "text");
                    new_key.insert("_ftsx", 1);
                    seen_text = true;
                }
            } else {
                new_key.insert(k.clone(), v.clone());
            }
        }
        out.insert("key", new_key);
        out.insert("weights", weights.into_iter().collect::<Document>());
    }
    if let Ok(w) = out.get_document("weights") {
        for (k, v) in w {
            match number(v) {
                Some(n) if n > 0.0 && n < 100_000.0 => {}
                _ => crate::bail!(
                    CannotCreateIndex,
                    "text index weights must be in the exclusive interval (0,100000) but found: {} for field {}",
                    format_value(v),
                    k
                ),
            }
        }
    }
    let language = match spec.get("default_language") {
        None => "english".to_string(),
        Some(Bson::String(l)) => l.clone(),
        Some(_) => crate::bail!(CannotCreateIndex, "default_language needs a string type"),
    };
    if crate::query::text::Language::parse(&language).is_none() {
        return Err(crate::query::text::Language::unsupported(&language));
    }
    match spec.get("textIndexVersion") {
        None => {}
        Some(v) if number(v) == Some(3.0) => {}
        Some(v) => crate::bail!(
            CannotCreateIndex,
            "Currently only textIndexVersion 3 is supported, not {}",
            format_value(v)
        ),
    }
    if !out.contains_key("default_language") {
        out.insert("default_language", language);
    }
    if !out.contains_key("language_override") {
        out.insert("language_override", "language");
    }
    if !out.contains_key("textIndexVersion") {
        out.insert("textIndexVersion", 3);
    }
    Ok(Some(out))
}

/// A 2d index has one 2d field, first (16801, 16800), and a valid grid: `bits` from 1 to 32,
/// `min` below `max`, both finite, over a range the 32-bit hash can scale (InvalidOptions 72,
/// with MongoDB's messages; MongoDB raises these when it builds the index).
fn check_flat(key: &Document, spec: &Document) -> Result<()> {
    let flat = key.values().filter(|v| Plugin::of(v) == Some(Plugin::Flat)).count();
    if flat > 1 {
        return Err(Error::new(crate::error::Code::Other(16800), "can't have 2 geo fields"));
    }
    if key.values().next().and_then(Plugin::of) != Some(Plugin::Flat) {
        return Err(Error::new(crate::error::Code::Other(16801), "2d has to be first in index"));
    }
    // `bits` is read as a C++ int: truncated, and anything out of range is INT_MIN.
    let bits = match spec.get("bits").and_then(number) {
        None => 26,
        Some(b)
            if b.is_finite() && b > f64::from(i32::MIN) - 1.0 && b < f64::from(i32::MAX) + 1.0 =>
        {
            b as i32
        }
        Some(_) => i32::MIN,
    };
    let min = spec.get("min").and_then(number).unwrap_or(-180.0);
    let max = spec.get("max").and_then(number).unwrap_or(180.0);
    let g = crate::doc::fmt::cpp_double;
    if !(1..=32).contains(&bits) {
        crate::bail!(
            InvalidOptions,
            "bits for hash must be > 0 and <= 32, but {} bits were specified",
            bits
        );
    }
    // NaN bounds fail this too, as `min < max` is false for them.
    let increasing = min.partial_cmp(&max) == Some(std::cmp::Ordering::Less);
    if !increasing || min.is_infinite() || max.is_infinite() {
        crate::bail!(
            InvalidOptions,
            "region for hash must be valid and have positive area, but [{}, {}] was specified",
            g(min),
            g(max)
        );
    }
    let scaling = 4.0 * 1024.0 * 1024.0 * 1024.0 / (max - min);
    let positive = scaling.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater);
    if !positive || scaling.is_infinite() {
        crate::bail!(InvalidOptions, "range [{}, {}] is too small.", g(min), g(max));
    }
    Ok(())
}

/// Folio builds 2dsphere indexes of version 3 only.
fn check_sphere(spec: &Document) -> Result<()> {
    match spec.get("2dsphereIndexVersion") {
        None => Ok(()),
        Some(v) if number(v) == Some(3.0) => Ok(()),
        Some(v) => crate::bail!(
            CannotCreateIndex,
            "unsupported geo index version {{ 2dsphereIndexVersion : {} }}, only support versions: [3]",
            format_value(v)
        ),
    }
}

/// A hashed index has one hashed field (31303) and is never unique (16764), as in MongoDB.
fn check_hashed(key: &Document, unique: bool) -> Result<()> {
    let hashed = key.values().filter(|v| Plugin::of(v) == Some(Plugin::Hashed)).count();
    if hashed > 1 {
        return Err(Error::new(
            crate::error::Code::Other(31303),
            format!(
                "A maximum of one index field is allowed to be hashed but found {hashed} for \
                 'key' {}",
                format_document(key)
            ),
        ));
    }
    if unique {
        return Err(Error::new(
            crate::error::Code::Other(16764),
            "Currently hashed indexes cannot guarantee uniqueness. Use a regular index.",
        ));
    }
    Ok(())
}

fn check_key_value(v: &Bson, plugin: Option<&str>) -> Result<()> {
    match number(v) {
        Some(n) if n.is_nan() => {
            crate::bail!(CannotCreateIndex, "Values in the index key pattern cannot be NaN.")
        }
        Some(0.0) => {
            crate::bail!(CannotCreateIndex, "Values in the index key pattern cannot be 0.")
        }
        Some(_) => Ok(()),
        None => match v {
            Bson::String(s) if s.is_empty() => crate::bail!(
                CannotCreateIndex,
                "Values in the index key pattern cannot be empty strings"
            ),
            Bson::String(s) if Some(s.as_str()) != plugin => crate::bail!(
                CannotCreateIndex,
                "Can't use more than one index plugin for a single index."
            ),
            Bson::String(_) => Ok(()),
            other => crate::bail!(
                CannotCreateIndex,
                "Values in v:2 index key pattern cannot be of type {}. Only numbers > 0, numbers \
                 < 0, and strings are allowed.",
                type_name(other)
            ),
        },
    }
}

fn check_key_path(path: &str) -> Result<()> {
    if path.is_empty() {
        crate::bail!(CannotCreateIndex, "Index keys cannot be an empty field.");
    }
    for (i, part) in path.split('.').enumerate() {
        if part.is_empty() {
            crate::bail!(CannotCreateIndex, "Index keys cannot contain an empty field.");
        }
        // `$`-prefixed parts are allowed only where they may be DBRef fields (and `$**`, the
        // text index over every field).
        let dbref = i > 0 && matches!(part, "$id" | "$ref" | "$db");
        if part.starts_with('$') && !dbref && path != "$**" {
            crate::bail!(
                CannotCreateIndex,
                "Index key contains an illegal field name: field name starts with '$'."
            );
        }
    }
    Ok(())
}

/// Field-level checks of a spec (MongoDB's `validateIndexSpec`); `api_strict` refuses the key
/// patterns outside API version 1.
fn parse_fields(spec: &Document, api_strict: bool) -> Result<()> {
    for (k, v) in spec {
        if !ALLOWED_FIELDS.contains(&k.as_str()) {
            crate::bail!(
                InvalidIndexSpecificationOption,
                "The field '{}' is not valid for an index specification. Specification: {}",
                k,
                format_document(spec)
            );
        }
        match (k.as_str(), v) {
            ("key", Bson::Document(key)) => {
                // The index type is the key pattern's first string, unless a wildcard path
                // comes first (MongoDB's plugin name).
                let plugin = key
                    .iter()
                    .take_while(|(k, v)| {
                        matches!(v, Bson::String(_)) || !(*k == "$**" || k.ends_with(".$**"))
                    })
                    .find_map(|(_, v)| match v {
                        Bson::String(s) => Some(s.as_str()),
                        _ => None,
                    });
                if api_strict && plugin == Some("text") {
                    crate::bail!(
                        APIStrictError,
                        "text indexes cannot be created with apiStrict: true"
                    );
                }
                validate_key_pattern(key)?
            }
            ("key", other) => crate::bail!(
                TypeMismatch,
                "The field 'key' must be an object, but got {}",
                type_name(other)
            ),
            ("name", Bson::String(_)) => {}
            ("name", other) => crate::bail!(
                TypeMismatch,
                "The field 'name' must be a string, but got {}",
                type_name(other)
            ),
            ("v", other) => check_version(other, spec)?,
            ("unique" | "sparse" | "background" | "dropDups" | "prepareUnique", other)
                if number(other).is_none() && !matches!(other, Bson::Boolean(_)) =>
            {
                crate::bail!(
                    TypeMismatch,
                    "The field '{} has value {}: {}, which is not convertible to bool",
                    k,
                    k,
                    format_value(other)
                );
            }
            ("hidden", Bson::Boolean(_)) => {}
            ("hidden", other) => crate::bail!(
                TypeMismatch,
                "The field 'hidden' must be a bool, but got {}",
                type_name(other)
            ),
            ("bits" | "min" | "max" | "2dsphereIndexVersion" | "textIndexVersion", other)
                if number(other).is_none() =>
            {
                crate::bail!(
                    TypeMismatch,
                    "The field '{}' must be a number, but got {}",
                    k,
                    type_name(other)
                );
            }
            ("partialFilterExpression" | "collation", Bson::Document(_)) => {}
            ("partialFilterExpression" | "collation", other) => crate::bail!(
                TypeMismatch,
                "The field '{}' must be an object, but got {}",
                k,
                type_name(other)
            ),
            _ => {}
        }
    }
    if !spec.contains_key("key") {
        crate::bail!(
            FailedToParse,
            "The 'key' field is a required property of an index specification"
        );
    }
    Ok(())
}

fn check_version(v: &Bson, spec: &Document) -> Result<()> {
    let Some(n) = number(v) else {
        crate::bail!(TypeMismatch, "The field 'v' must be a number, but got {}", type_name(v));
    };
    if n.fract() != 0.0 || n < f64::from(i32::MIN) || n > f64::from(i32::MAX) {
        crate::bail!(
            BadValue,
            "Index version must be representable as a 32-bit integer, but got {}",
            format_value(v)
        );
    }
    if n != 1.0 && n != 2.0 {
        crate::bail!(
            CannotCreateIndex,
            "Invalid index specification {}; cannot create an index with v={}",
            format_document(spec),
            n
        );
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if name.contains('\0') {
        crate::bail!(CannotCreateIndex, "index name cannot contain NUL bytes");
    }
    if name.is_empty() {
        crate::bail!(CannotCreateIndex, "index name cannot be empty");
    }
    Ok(())
}

fn check_id_index_options(spec: &Document, sparse: bool, partial: bool) -> Result<()> {
    if spec.get("unique").is_some_and(|u| !truthy(u)) {
        crate::bail!(CannotCreateIndex, "_id index cannot be non-unique");
    }
    if partial {
        crate::bail!(CannotCreateIndex, "_id index cannot be a partial index");
    }
    if sparse {
        crate::bail!(CannotCreateIndex, "_id index cannot be sparse");
    }
    Ok(())
}

/// TTL options: a non-negative 32-bit number of seconds on a single-field, non-`_id` index.
fn check_ttl(ttl: &Bson, key: &Document) -> Result<()> {
    let Some(n) = number(ttl) else {
        crate::bail!(
            CannotCreateIndex,
            "TTL index 'expireAfterSeconds' option must be numeric, but received a type of '{}'.",
            type_name(ttl)
        );
    };
    if n.is_nan() || !(0.0..=f64::from(i32::MAX)).contains(&n) {
        crate::bail!(
            CannotCreateIndex,
            "TTL index 'expireAfterSeconds' option must be within an acceptable range, try a \
             non-negative number less than 2147483648."
        );
    }
    if is_id_pattern(key) {
        crate::bail!(
            InvalidIndexSpecificationOption,
            "The field 'expireAfterSeconds' is not valid for an _id index specification."
        );
    }
    if key.len() != 1 {
        crate::bail!(
            CannotCreateIndex,
            "TTL indexes are single-field indexes, compound indexes do not support TTL."
        );
    }
    Ok(())
}

/// `parse_fields` has already rejected a missing or non-document key.
fn unreachable_key(spec: &Document) -> Result<Document> {
    Err(in_specification(
        spec,
        crate::err!(
            FailedToParse,
            "The 'key' field is a required property of an index specification"
        ),
    ))
}

/// Wraps a spec error as MongoDB's createIndexes does: `Error in specification <spec> :: caused
/// by :: <reason>`.
/// The index's `collation` option, validated (MongoDB's messages name the whole spec).
fn parse_collation(
    spec: &Document,
    normalized: &Document,
) -> Result<Option<crate::collation::CollationRef>> {
    let Some(Bson::Document(c)) = spec.get("collation") else { return Ok(None) };
    if c.is_empty() {
        return Err(in_specification(
            normalized,
            crate::err!(BadValue, "The field 'collation' cannot be an empty object."),
        ));
    }
    crate::collation::Collation::parse(c, "createIndexes.indexes").map_err(|e| {
        let message = format!(
            "failed to add collation information to index spec for index creation: {} :: caused by :: {}",
            format_document(normalized),
            e.message
        );
        Error { message, ..e }
    })
}

fn in_specification(spec: &Document, e: Error) -> Error {
    let message =
        format!("Error in specification {} :: caused by :: {}", format_document(spec), e.message);
    Error { message, ..e }
}

/// The spec with `v: 2` appended when absent, as MongoDB prints it after normalization.
fn normalized_spec(spec: &Document) -> Document {
    let mut d = spec.clone();
    if !d.contains_key("v") {
        d.insert("v", INDEX_VERSION);
    }
    d
}

fn is_id_pattern(key: &Document) -> bool {
    key.len() == 1 && key.get("_id").and_then(number) == Some(1.0)
}

fn is_descending(v: &Bson) -> bool {
    number(v).is_some_and(|n| n < 0.0)
}

use crate::doc::compare::as_f64 as number;
/// MongoDB's `trueValue` for option fields: numbers are true when non-zero.
use crate::doc::truthy;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn default_names_follow_mongodb() {
        let cases = [
            (doc! {"a": 1, "b.c": -1}, "a_1_b.c_-1"),
            (doc! {"t": "text"}, "t_text"),
            (doc! {"a": -1.0}, "a_-1"),
            (doc! {"a": 1.5}, "a_1.5"),
            (doc! {"a": 1_i64, "_id": 1}, "a_1__id_1"),
        ];
        for (key, name) in cases {
            assert_eq!(default_name(&key), name, "{key}");
        }
    }

    #[test]
    fn id_index_is_unique_and_identical_to_a_parsed_one() {
        let id = IndexSpec::id_index();
        assert!(id.unique && id.is_id_index());
        let parsed = IndexSpec::parse(&doc! {"key": {"_id": 1}, "name": "_id_", "v": 2}).unwrap();
        assert_eq!(parsed.compare(&id), Comparison::Identical);
        assert_eq!(id.to_document(), doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"});
        let desc = IndexSpec::parse(&doc! {"key": {"_id": -1}, "name": "_id_-1"}).unwrap();
        assert!(!desc.is_id_index() && !desc.unique);
    }
}
