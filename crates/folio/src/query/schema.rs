//! `$jsonSchema` with the keywords collection validators commonly use.
//!
//! Supported: `bsonType`, `type`, `required`, `properties`, `additionalProperties`,
//! `patternProperties` is not; `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `enum`, `minLength`, `maxLength`, `pattern`, `items`, `minItems`, `maxItems`, `uniqueItems`,
//! `allOf`, `anyOf`, `oneOf`, `not`, and the annotations `title` and `description`.
//!
//! As in JSON Schema, a keyword that constrains one kind of value does not apply to others:
//! `minimum` ignores strings, `properties` ignores non-documents, and a property that is absent
//! passes its subschema (only `required` demands presence).

use bson::{Bson, Document};

use super::filter::{Regex, TypeSel, parse_type_sel, type_code};
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::error::Result;
use crate::{bail, err};

/// A parsed schema.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    /// The schema as written (for explain output).
    source: Document,
    types: Option<Vec<TypeSel>>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    additional: Option<Additional>,
    minimum: Option<(Bson, bool)>,
    maximum: Option<(Bson, bool)>,
    enumeration: Option<Vec<Bson>>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    items: Option<Items>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    unique_items: bool,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Box<Schema>>,
}

#[derive(Clone, Debug)]
enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

#[derive(Clone, Debug)]
enum Items {
    All(Box<Schema>),
    Tuple(Vec<Schema>, Option<Additional>),
}

/// JSON Schema `type` names and the BSON types they cover.
fn json_type(name: &str) -> Result<Vec<TypeSel>> {
    Ok(match name {
        "object" => vec![TypeSel::Code(3)],
        "array" => vec![TypeSel::Code(4)],
        "number" => vec![TypeSel::Number],
        "boolean" => vec![TypeSel::Code(8)],
        "string" => vec![TypeSel::Code(2)],
        "null" => vec![TypeSel::Code(10)],
        "integer" => bail!(BadValue, "$jsonSchema type 'integer' is not currently supported."),
        other => bail!(BadValue, "Unknown type name alias: {other}"),
    })
}

fn names(v: &Bson, kw: &str) -> Result<Vec<Bson>> {
    match v {
        Bson::Array(a) => {
            if a.is_empty() {
                bail!(FailedToParse, "${kw} must be a non-empty array");
            }
            Ok(a.clone())
        }
        other => Ok(vec![other.clone()]),
    }
}

fn non_negative(v: &Bson, kw: &str) -> Result<usize> {
    let n = Number::of(v).ok_or_else(|| err!(TypeMismatch, "${kw} must be a number"))?;
    let f = n.to_f64();
    if f < 0.0 || f.fract() != 0.0 || !f.is_finite() {
        bail!(FailedToParse, "${kw} must be representable as a non-negative integer");
    }
    Ok(f as usize)
}

fn subschema(v: &Bson, kw: &str) -> Result<Schema> {
    match v {
        Bson::Document(d) => Schema::parse(d),
        _ => bail!(TypeMismatch, "${kw} must be an object"),
    }
}

fn schema_list(v: &Bson, kw: &str) -> Result<Vec<Schema>> {
    match v {
        Bson::Array(a) if !a.is_empty() => a.iter().map(|s| subschema(s, kw)).collect(),
        _ => bail!(FailedToParse, "${kw} must be a non-empty array"),
    }
}

fn additional(v: &Bson) -> Result<Additional> {
    match v {
        Bson::Boolean(b) => Ok(Additional::Allowed(*b)),
        Bson::Document(d) => Ok(Additional::Schema(Box::new(Schema::parse(d)?))),
        _ => bail!(
            TypeMismatch,
            "$jsonSchema keyword 'additionalProperties' must be either an object or a boolean"
        ),
    }
}

impl Schema {
    /// Parses a `$jsonSchema` document.
    pub fn parse(d: &Document) -> Result<Schema> {
        let mut s = Schema { source: d.clone(), ..Schema::default() };
        let mut additional_items = None;
        for (kw, v) in d {
            match kw.as_str() {
                "bsonType" => {
                    if s.types.is_some() {
                        bail!(
                            FailedToParse,
                            "Cannot specify both $jsonSchema keywords 'type' and 'bsonType'"
                        );
                    }
                    s.types =
                        Some(names(v, kw)?.iter().map(parse_type_sel).collect::<Result<_>>()?);
                }
                "type" => {
                    if s.types.is_some() {
                        bail!(
                            FailedToParse,
                            "Cannot specify both $jsonSchema keywords 'type' and 'bsonType'"
                        );
                    }
                    let mut types = Vec::new();
                    for n in names(v, kw)? {
                        let Bson::String(n) = n else {
                            bail!(
                                TypeMismatch,
                                "$jsonSchema keyword 'type' must be a string or an array of strings"
                            );
                        };
                        types.extend(json_type(&n)?);
                    }
                    s.types = Some(types);
                }
                "required" => {
                    let Bson::Array(a) = v else {
                        bail!(TypeMismatch, "$jsonSchema keyword 'required' must be an array");
                    };
                    for f in a {
                        match f {
                            Bson::String(f) => s.required.push(f.clone()),
                            _ => bail!(
                                TypeMismatch,
                                "$jsonSchema keyword 'required' must contain only strings"
                            ),
                        }
                    }
                }
                "properties" => {
                    let Bson::Document(props) = v else {
                        bail!(TypeMismatch, "$jsonSchema keyword 'properties' must be an object");
                    };
                    for (name, sub) in props {
                        s.properties.push((name.clone(), subschema(sub, "properties")?));
                    }
                }
                "additionalProperties" => s.additional = Some(additional(v)?),
                "minimum" | "maximum" => {
                    if Number::of(v).is_none() {
                        bail!(TypeMismatch, "$jsonSchema keyword '{kw}' must be a number");
                    }
                    let slot = if kw == "minimum" { &mut s.minimum } else { &mut s.maximum };
                    let exclusive = slot.as_ref().is_some_and(|(_, e)| *e);
                    *slot = Some((v.clone(), exclusive));
                }
                "exclusiveMinimum" | "exclusiveMaximum" => {
                    let Bson::Boolean(b) = v else {
                        bail!(TypeMismatch, "$jsonSchema keyword '{kw}' must be a boolean");
                    };
                    let slot =
                        if kw == "exclusiveMinimum" { &mut s.minimum } else { &mut s.maximum };
                    match slot {
                        Some((_, e)) => *e = *b,
                        None => *slot = Some((Bson::Null, *b)),
                    }
                }
                "enum" => match v {
                    Bson::Array(a) if !a.is_empty() => s.enumeration = Some(a.clone()),
                    _ => {
                        bail!(FailedToParse, "$jsonSchema keyword 'enum' must be a non-empty array")
                    }
                },
                "minLength" => s.min_length = Some(non_negative(v, kw)?),
                "maxLength" => s.max_length = Some(non_negative(v, kw)?),
                "minItems" => s.min_items = Some(non_negative(v, kw)?),
                "maxItems" => s.max_items = Some(non_negative(v, kw)?),
                "uniqueItems" => s.unique_items = matches!(v, Bson::Boolean(true)),
                "pattern" => match v {
                    Bson::String(p) => s.pattern = Some(Regex::new(p, "")?),
                    _ => bail!(TypeMismatch, "$jsonSchema keyword 'pattern' must be a string"),
                },
                "items" => {
                    s.items = Some(match v {
                        Bson::Document(d) => Items::All(Box::new(Schema::parse(d)?)),
                        Bson::Array(_) => Items::Tuple(schema_list(v, kw)?, None),
                        _ => bail!(
                            TypeMismatch,
                            "$jsonSchema keyword 'items' must be an array or an object"
                        ),
                    })
                }
                "additionalItems" => additional_items = Some(additional(v)?),
                "allOf" => s.all_of = schema_list(v, kw)?,
                "anyOf" => s.any_of = schema_list(v, kw)?,
                "oneOf" => s.one_of = schema_list(v, kw)?,
                "not" => s.not = Some(Box::new(subschema(v, kw)?)),
                "title" | "description" => {
                    if !matches!(v, Bson::String(_)) {
                        bail!(TypeMismatch, "$jsonSchema keyword '{kw}' must be a string");
                    }
                }
                other => bail!(FailedToParse, "Unknown $jsonSchema keyword: {other}"),
            }
        }
        if let (Some(Items::Tuple(_, slot)), Some(a)) = (&mut s.items, additional_items) {
            *slot = Some(a);
        }
        for bound in [&s.minimum, &s.maximum].into_iter().flatten() {
            if matches!(bound.0, Bson::Null) {
                bail!(FailedToParse, "exclusiveMinimum/exclusiveMaximum need minimum/maximum");
            }
        }
        Ok(s)
    }

    /// The schema document as written.
    pub fn source(&self) -> &Document {
        &self.source
    }

    /// Whether a document satisfies the schema.
    pub fn matches(&self, doc: &Document) -> bool {
        self.matches_value(&Bson::Document(doc.clone()))
    }

    fn matches_value(&self, v: &Bson) -> bool {
        self.type_ok(v)
            && self.numeric_ok(v)
            && self.string_ok(v)
            && self.object_ok(v)
            && self.array_ok(v)
            && self.enumeration.as_ref().is_none_or(|e| e.iter().any(|x| bson_eq(x, v)))
            && self.all_of.iter().all(|s| s.matches_value(v))
            && (self.any_of.is_empty() || self.any_of.iter().any(|s| s.matches_value(v)))
            && (self.one_of.is_empty()
                || self.one_of.iter().filter(|s| s.matches_value(v)).count() == 1)
            && self.not.as_ref().is_none_or(|s| !s.matches_value(v))
    }

    fn type_ok(&self, v: &Bson) -> bool {
        self.types.as_ref().is_none_or(|types| {
            types.iter().any(|t| match t {
                TypeSel::Number => Number::of(v).is_some(),
                TypeSel::Code(c) => type_code(v) == *c,
            })
        })
    }

    fn numeric_ok(&self, v: &Bson) -> bool {
        if Number::of(v).is_none() {
            return true;
        }
        let min_ok = self.minimum.as_ref().is_none_or(|(m, excl)| {
            let o = cmp_bson(v, m);
            if *excl { o.is_gt() } else { o.is_ge() }
        });
        let max_ok = self.maximum.as_ref().is_none_or(|(m, excl)| {
            let o = cmp_bson(v, m);
            if *excl { o.is_lt() } else { o.is_le() }
        });
        min_ok && max_ok
    }

    fn string_ok(&self, v: &Bson) -> bool {
        let Bson::String(s) = v else { return true };
        let len = s.chars().count();
        self.min_length.is_none_or(|m| len >= m)
            && self.max_length.is_none_or(|m| len <= m)
            && self.pattern.as_ref().is_none_or(|p| p.re.matches(s))
    }

    fn object_ok(&self, v: &Bson) -> bool {
        let Bson::Document(d) = v else { return true };
        if !self.required.iter().all(|f| d.contains_key(f)) {
            return false;
        }
        for (name, sub) in &self.properties {
            if d.get(name).is_some_and(|x| !sub.matches_value(x)) {
                return false;
            }
        }
        match &self.additional {
            None | Some(Additional::Allowed(true)) => true,
            Some(extra) => d
                .iter()
                .filter(|(k, _)| !self.properties.iter().any(|(n, _)| n == *k))
                .all(|(_, x)| match extra {
                    Additional::Allowed(b) => *b,
                    Additional::Schema(s) => s.matches_value(x),
                }),
        }
    }

    fn array_ok(&self, v: &Bson) -> bool {
        let Bson::Array(a) = v else { return true };
        if self.min_items.is_some_and(|m| a.len() < m)
            || self.max_items.is_some_and(|m| a.len() > m)
        {
            return false;
        }
        if self.unique_items {
            for (i, x) in a.iter().enumerate() {
                if a[..i].iter().any(|y| bson_eq(x, y)) {
                    return false;
                }
            }
        }
        match &self.items {
            None => true,
            Some(Items::All(s)) => a.iter().all(|x| s.matches_value(x)),
            Some(Items::Tuple(list, extra)) => {
                let head_ok = list.iter().zip(a.iter()).all(|(s, x)| s.matches_value(x));
                let rest = a.iter().skip(list.len());
                head_ok
                    && match extra {
                        None | Some(Additional::Allowed(true)) => true,
                        Some(Additional::Allowed(false)) => rest.count() == 0,
                        Some(Additional::Schema(s)) => rest.into_iter().all(|x| s.matches_value(x)),
                    }
            }
        }
    }
}
