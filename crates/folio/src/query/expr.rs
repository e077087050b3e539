//! Expressions for `$expr`, computed projections and update pipelines. Field paths, literals,
//! comparisons (`$eq $ne $gt $gte $lt $lte $cmp`), `$and`, `$or`, `$not` and `$setField` are
//! represented here directly (the planner inspects them); every other operator is parsed and
//! evaluated by the expression module's full evaluator ([`crate::expr::Expression`]).
//!
//! Unlike query predicates, expression comparisons are *not* type-bracketed: they use the total
//! BSON order, so `{$gt: ["$a", 5]}` is true for a string `a`. A missing field evaluates to
//! "missing", which sorts below null and is not equal to it.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::filter::truthy;
use crate::bail;
use crate::error::Result;

/// A parsed expression.
#[derive(Clone, Debug)]
pub enum Expr {
    /// `"$a.b"`: the value at a field path, one name per component (arrays on the way are
    /// mapped over).
    Field(Vec<String>),
    /// A constant (also `{$literal: v}`).
    Literal(Bson),
    /// A comparison of two expressions.
    Cmp(CmpKind, Box<Expr>, Box<Expr>),
    /// `$and` of expressions (truthiness).
    And(Vec<Expr>),
    /// `$or` of expressions (truthiness).
    Or(Vec<Expr>),
    /// `$not` of an expression (truthiness).
    Not(Box<Expr>),
    /// An array of expressions, evaluated element by element.
    Array(Vec<Expr>),
    /// A document of expressions.
    Object(Vec<(String, Expr)>),
    /// `$$ROOT` / `$$CURRENT`: the whole document.
    Root,
    /// `$$REMOVE`: the missing value.
    Missing,
    /// `$setField`: a copy of `input` with `field` set to `value` (removed when missing).
    SetField {
        /// The field name (any string, dots and dollars included).
        field: String,
        /// The document to change.
        input: Box<Expr>,
        /// The new value.
        value: Box<Expr>,
    },
    /// Any other aggregation expression, evaluated by the expression module's evaluator
    /// ([`crate::expr::Expression`]); the original spec is kept for explain output.
    Full(Bson, Box<crate::expr::Expression>),
    /// An operand of a comparison under a collation: the inner value with its strings replaced
    /// by collation keys ([`Expr::with_collation`]).
    Collated(crate::collation::CollationRef, Box<Expr>),
}

/// An expression comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpKind {
    /// `$eq`
    Eq,
    /// `$ne`
    Ne,
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
    /// `$cmp` (returns -1, 0 or 1)
    Cmp,
}

impl Expr {
    /// Parses an expression.
    pub fn parse(v: &Bson) -> Result<Expr> {
        match v {
            Bson::String(s) if s.starts_with("$$") => {
                // `let` variables were substituted before parsing (see `substitute_vars`); what
                // is left are the system variables.
                let (name, rest) = match s[2..].split_once('.') {
                    Some((n, r)) => (n, Some(r)),
                    None => (&s[2..], None),
                };
                match (name, rest) {
                    ("ROOT" | "CURRENT", None) => Ok(Expr::Root),
                    ("ROOT" | "CURRENT", Some(path)) => Ok(Expr::Field(components(path))),
                    ("REMOVE", None) => Ok(Expr::Missing),
                    // `$$NOW`, `$$CLUSTER_TIME`; anything else is an undefined variable there.
                    _ => Ok(Expr::Full(v.clone(), Box::new(crate::expr::Expression::parse(v)?))),
                }
            }
            Bson::String(s) if s.starts_with('$') => {
                let path = &s[1..];
                if path.is_empty() {
                    bail!(Location16872, "'$' by itself is not a valid FieldPath");
                }
                Ok(Expr::Field(components(path)))
            }
            Bson::Array(items) => {
                Ok(Expr::Array(items.iter().map(Expr::parse).collect::<Result<_>>()?))
            }
            Bson::Document(d) => Self::parse_doc(d),
            other => Ok(Expr::Literal(other.clone())),
        }
    }

    fn parse_doc(d: &Document) -> Result<Expr> {
        let Some(first) = d.keys().next() else {
            return Ok(Expr::Object(Vec::new()));
        };
        if !first.starts_with('$') {
            let mut fields = Vec::with_capacity(d.len());
            for (k, v) in d {
                if k.starts_with('$') {
                    bail!(Location16410, "FieldPath field names may not start with '$'");
                }
                fields.push((k.clone(), Expr::parse(v)?));
            }
            return Ok(Expr::Object(fields));
        }
        if d.len() != 1 {
            bail!(
                Location15983,
                "an expression specification must contain exactly one field, the name of the expression. Found {} fields in {}",
                d.len(),
                crate::doc::fmt::doc_string(d)
            );
        }
        let arg = d.get(first).unwrap_or(&Bson::Null);
        let kind = match first.as_str() {
            "$literal" => return Ok(Expr::Literal(arg.clone())),
            "$setField" => return Self::parse_set_field(arg),
            "$and" => return Ok(Expr::And(Self::args(arg)?)),
            "$or" => return Ok(Expr::Or(Self::args(arg)?)),
            "$not" => {
                let mut args = Self::args(arg)?;
                if args.len() != 1 {
                    bail!(
                        Location16020,
                        "Expression $not takes exactly 1 arguments. {} were passed in.",
                        args.len()
                    );
                }
                return Ok(Expr::Not(Box::new(args.remove(0))));
            }
            "$eq" => CmpKind::Eq,
            "$ne" => CmpKind::Ne,
            "$gt" => CmpKind::Gt,
            "$gte" => CmpKind::Gte,
            "$lt" => CmpKind::Lt,
            "$lte" => CmpKind::Lte,
            "$cmp" => CmpKind::Cmp,
            _ => {
                let spec = Bson::Document(d.clone());
                let full = crate::expr::Expression::parse(&spec)?;
                return Ok(Expr::Full(spec, Box::new(full)));
            }
        };
        let mut args = Self::args(arg)?;
        if args.len() != 2 {
            bail!(
                Location16020,
                "Expression {first} takes exactly 2 arguments. {} were passed in.",
                args.len()
            );
        }
        let b = args.pop().unwrap_or(Expr::Literal(Bson::Null));
        let a = args.pop().unwrap_or(Expr::Literal(Bson::Null));
        Ok(Expr::Cmp(kind, Box::new(a), Box::new(b)))
    }

    fn parse_set_field(arg: &Bson) -> Result<Expr> {
        let Bson::Document(spec) = arg else {
            bail!(Location4161100, "$setField only supports an object as its argument");
        };
        let mut field = None;
        let mut input = None;
        let mut value = None;
        for (k, v) in spec {
            match k.as_str() {
                "field" => {
                    field = Some(match v {
                        Bson::String(f) if !f.starts_with('$') => f.clone(),
                        Bson::Document(d) => match d.get("$literal") {
                            Some(Bson::String(f)) if d.len() == 1 => f.clone(),
                            _ => bail!(
                                Location4161106,
                                "$setField requires 'field' to evaluate to a constant, but got a non-constant argument"
                            ),
                        },
                        _ => bail!(
                            Location4161106,
                            "$setField requires 'field' to evaluate to type String, but got a non-constant argument"
                        ),
                    })
                }
                "input" => input = Some(Expr::parse(v)?),
                "value" => value = Some(Expr::parse(v)?),
                other => bail!(Location4161101, "$setField found an unknown argument: {other}"),
            }
        }
        let (Some(field), Some(input), Some(value)) = (field, input, value) else {
            bail!(
                Location4161102,
                "$setField requires 'field', 'input' and 'value' to be specified"
            );
        };
        Ok(Expr::SetField { field, input: Box::new(input), value: Box::new(value) })
    }

    /// Operator arguments: an array is the argument list, anything else one argument.
    fn args(v: &Bson) -> Result<Vec<Expr>> {
        match v {
            Bson::Array(items) => items.iter().map(Expr::parse).collect(),
            other => Ok(vec![Expr::parse(other)?]),
        }
    }

    /// Evaluates the expression on a document (`None` = missing). A runtime error (such as a
    /// type mismatch inside a full aggregation expression) evaluates to missing, which makes
    /// `$expr` not match; [`Expr::try_eval`] reports it instead.
    pub fn eval(&self, doc: &Document) -> Option<Bson> {
        self.try_eval(doc).ok().flatten()
    }

    /// Evaluates the expression on a document (`None` = missing), reporting runtime errors
    /// with MongoDB's codes.
    pub fn try_eval(&self, doc: &Document) -> Result<Option<Bson>> {
        Ok(match self {
            Expr::Field(path) => crate::expr::field_path(doc, path),
            Expr::Literal(v) => Some(v.clone()),
            Expr::Root => Some(Bson::Document(doc.clone())),
            Expr::Missing => None,
            Expr::SetField { field, input, value } => match input.try_eval(doc)? {
                Some(Bson::Document(mut d)) => {
                    match value.try_eval(doc)? {
                        Some(v) => {
                            d.insert(field.clone(), v);
                        }
                        None => {
                            d.remove(field);
                        }
                    }
                    Some(Bson::Document(d))
                }
                // A null or missing input gives null, as in MongoDB.
                _ => Some(Bson::Null),
            },
            Expr::Full(_, e) => e.eval_doc(doc)?,
            Expr::Collated(c, e) => e.try_eval(doc)?.map(|v| c.transform(&v)),
            Expr::Cmp(kind, a, b) => {
                let (x, y) = (a.try_eval(doc)?, b.try_eval(doc)?);
                let ord = crate::expr::cmp_values(&x, &y);
                Some(match kind {
                    CmpKind::Eq => Bson::Boolean(ord == Ordering::Equal),
                    CmpKind::Ne => Bson::Boolean(ord != Ordering::Equal),
                    CmpKind::Gt => Bson::Boolean(ord == Ordering::Greater),
                    CmpKind::Gte => Bson::Boolean(ord != Ordering::Less),
                    CmpKind::Lt => Bson::Boolean(ord == Ordering::Less),
                    CmpKind::Lte => Bson::Boolean(ord != Ordering::Greater),
                    CmpKind::Cmp => Bson::Int32(ord as i32),
                })
            }
            Expr::And(items) => {
                for e in items {
                    if !e.try_eval(doc)?.is_some_and(|v| truthy(&v)) {
                        return Ok(Some(Bson::Boolean(false)));
                    }
                }
                Some(Bson::Boolean(true))
            }
            Expr::Or(items) => {
                for e in items {
                    if e.try_eval(doc)?.is_some_and(|v| truthy(&v)) {
                        return Ok(Some(Bson::Boolean(true)));
                    }
                }
                Some(Bson::Boolean(false))
            }
            Expr::Not(e) => Some(Bson::Boolean(!e.try_eval(doc)?.is_some_and(|v| truthy(&v)))),
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for e in items {
                    out.push(e.try_eval(doc)?.unwrap_or(Bson::Null));
                }
                Some(Bson::Array(out))
            }
            Expr::Object(fields) => {
                let mut out = Document::new();
                for (k, e) in fields {
                    if let Some(v) = e.try_eval(doc)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Bson::Document(out))
            }
        })
    }

    /// The expression as an aggregation expression value (for explain output).
    pub fn to_bson(&self) -> Bson {
        let list = |items: &[Expr]| Bson::Array(items.iter().map(Expr::to_bson).collect());
        match self {
            Expr::Field(p) => Bson::String(format!("${}", p.join("."))),
            Expr::Literal(v) => match v {
                Bson::String(s) if s.starts_with('$') => {
                    Bson::Document(bson::doc! {"$literal": v.clone()})
                }
                Bson::Document(_) | Bson::Array(_) => {
                    Bson::Document(bson::doc! {"$literal": v.clone()})
                }
                other => other.clone(),
            },
            Expr::Cmp(kind, a, b) => {
                let name = match kind {
                    CmpKind::Eq => "$eq",
                    CmpKind::Ne => "$ne",
                    CmpKind::Gt => "$gt",
                    CmpKind::Gte => "$gte",
                    CmpKind::Lt => "$lt",
                    CmpKind::Lte => "$lte",
                    CmpKind::Cmp => "$cmp",
                };
                let mut d = Document::new();
                d.insert(name, Bson::Array(vec![a.to_bson(), b.to_bson()]));
                Bson::Document(d)
            }
            Expr::And(items) => Bson::Document(bson::doc! {"$and": list(items)}),
            Expr::Or(items) => Bson::Document(bson::doc! {"$or": list(items)}),
            Expr::Not(e) => Bson::Document(bson::doc! {"$not": [e.to_bson()]}),
            Expr::Array(items) => list(items),
            Expr::Object(fields) => {
                let mut d = Document::new();
                for (k, e) in fields {
                    d.insert(k.clone(), e.to_bson());
                }
                Bson::Document(d)
            }
            Expr::Full(spec, _) => spec.clone(),
            Expr::Collated(_, e) => e.to_bson(),
            Expr::Root => Bson::String("$$ROOT".to_string()),
            Expr::Missing => Bson::String("$$REMOVE".to_string()),
            Expr::SetField { field, input, value } => Bson::Document(bson::doc! {
                "$setField": {"field": {"$literal": field.clone()}, "input": input.to_bson(), "value": value.to_bson()}
            }),
        }
    }

    /// The expression with its comparisons (`$eq`, `$lt`, `$cmp`…) made under `collation`: both
    /// operands are compared as collation keys. The operators the full evaluator runs compare
    /// under it too ([`crate::expr::Expression::with_collation`]), at any depth.
    pub fn with_collation(self, c: &crate::collation::CollationRef) -> Expr {
        let rec = |e: Box<Expr>| Box::new(e.with_collation(c));
        let all = |items: Vec<Expr>| -> Vec<Expr> {
            items.into_iter().map(|e| e.with_collation(c)).collect()
        };
        match self {
            Expr::Cmp(kind, a, b) => Expr::Cmp(
                kind,
                Box::new(Expr::Collated(c.clone(), rec(a))),
                Box::new(Expr::Collated(c.clone(), rec(b))),
            ),
            Expr::And(items) => Expr::And(all(items)),
            Expr::Or(items) => Expr::Or(all(items)),
            Expr::Not(e) => Expr::Not(rec(e)),
            Expr::Array(items) => Expr::Array(all(items)),
            Expr::Object(fields) => {
                Expr::Object(fields.into_iter().map(|(k, e)| (k, e.with_collation(c))).collect())
            }
            Expr::SetField { field, input, value } => {
                Expr::SetField { field, input: rec(input), value: rec(value) }
            }
            Expr::Full(spec, e) => Expr::Full(spec, Box::new(e.with_collation(c))),
            other @ (Expr::Field(_)
            | Expr::Literal(_)
            | Expr::Root
            | Expr::Missing
            | Expr::Collated(..)) => other,
        }
    }

    /// The expression's truthiness (missing, null, false and zero are false).
    pub fn truthy(&self, doc: &Document) -> bool {
        self.eval(doc).is_some_and(|v| truthy(&v))
    }

    /// Whether a document passes `{$expr: self}`.
    pub fn matches(&self, doc: &Document) -> bool {
        self.truthy(doc)
    }
}

/// A field path's components.
fn components(path: &str) -> Vec<String> {
    path.split('.').map(String::from).collect()
}

/// Replaces `$$name` references to `let` variables inside every `$expr` of a filter with
/// `{$literal: value}`, so that parsing needs no variable scope.
pub fn substitute_vars(filter: &Document, vars: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in filter {
        let v =
            if k == "$expr" { substitute_in_expr(v, vars) } else { substitute_in_filter(v, vars) };
        out.insert(k.clone(), v);
    }
    out
}

fn substitute_in_filter(v: &Bson, vars: &Document) -> Bson {
    match v {
        Bson::Document(d) => Bson::Document(substitute_vars(d, vars)),
        Bson::Array(items) => {
            Bson::Array(items.iter().map(|x| substitute_in_filter(x, vars)).collect())
        }
        other => other.clone(),
    }
}

/// [`substitute_vars`] for an expression (e.g. the stages of an update pipeline).
pub fn substitute_in_expr(v: &Bson, vars: &Document) -> Bson {
    match v {
        Bson::String(s) if s.starts_with("$$") => {
            let (name, rest) = match s[2..].split_once('.') {
                Some((n, r)) => (n, Some(r)),
                None => (&s[2..], None),
            };
            match (vars.get(name), rest) {
                (Some(value), None) => Bson::Document(bson::doc! {"$literal": value.clone()}),
                (Some(Bson::Document(d)), Some(path)) => {
                    let found = crate::doc::path::get_path(d, path).cloned();
                    Bson::Document(bson::doc! {"$literal": found.unwrap_or(Bson::Null)})
                }
                _ => v.clone(),
            }
        }
        Bson::Document(d) if d.contains_key("$literal") => v.clone(),
        Bson::Document(d) => {
            let mut out = Document::new();
            for (k, x) in d {
                out.insert(k.clone(), substitute_in_expr(x, vars));
            }
            Bson::Document(out)
        }
        Bson::Array(items) => {
            Bson::Array(items.iter().map(|x| substitute_in_expr(x, vars)).collect())
        }
        other => other.clone(),
    }
}
