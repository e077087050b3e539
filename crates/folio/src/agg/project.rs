//! `$project` and `$unset` with aggregation semantics.
//!
//! A pipeline projection differs from a find projection: every operator document is an
//! expression (`{$slice: ["$a", 2]}` is the array expression, not find's `$slice` operator),
//! `$elemMatch` and positional `$` do not exist, and expressions see the stage's variables.
//! The spec becomes a tree of [`Node`]s. An inclusion projection copies the included fields in
//! the input's order and then sets the computed fields in the spec's order (replacing a field in
//! place when it already exists); an exclusion projection copies everything but the excluded
//! paths. Arrays on a path are projected element by element, as in MongoDB.

use bson::{Bson, Document};

use crate::error::Result;
use crate::expr::{Expression, Scope, Vars, loc};

/// A node of the projection tree.
#[derive(Clone, Debug)]
pub enum Node {
    /// `field: 1`
    Include,
    /// `field: 0`
    Exclude,
    /// `field: <expression>`
    Computed(Expression),
    /// `field: {sub-projection}` or the parent of a dotted path.
    Sub(Vec<(String, Node)>),
}

/// A parsed pipeline projection.
#[derive(Clone, Debug)]
pub struct Projection {
    fields: Vec<(String, Node)>,
    inclusion: bool,
}

fn invalid(code: i32, msg: String) -> crate::error::Error {
    loc(code, format!("Invalid $project :: caused by :: {msg}"))
}

impl Node {
    fn with_collation(self, c: &crate::collation::CollationRef) -> Node {
        match self {
            Node::Computed(e) => Node::Computed(e.with_collation(c)),
            Node::Sub(items) => {
                Node::Sub(items.into_iter().map(|(k, n)| (k, n.with_collation(c))).collect())
            }
            n @ (Node::Include | Node::Exclude) => n,
        }
    }
}

impl Projection {
    /// The projection with its computed fields comparing strings under `c`.
    pub fn with_collation(self, c: &crate::collation::CollationRef) -> Projection {
        Projection {
            fields: self.fields.into_iter().map(|(k, n)| (k, n.with_collation(c))).collect(),
            ..self
        }
    }

    /// Parses a `$project` spec.
    pub fn parse(spec: &Document, scope: &Scope) -> Result<Projection> {
        if spec.is_empty() {
            return Err(invalid(
                51272,
                "projection specification must have at least one field".to_string(),
            ));
        }
        let mut fields = Vec::new();
        let mut mode: Option<bool> = None;
        add_spec(spec, "", scope, &mut fields, &mut mode)?;
        let inclusion = mode.unwrap_or(true);
        // `_id` is kept unless excluded; `{_id: 0}` alone is an exclusion projection.
        let id_given = fields.iter().any(|(k, _)| k == "_id");
        let inclusion = if mode.is_none() {
            !matches!(fields.iter().find(|(k, _)| k == "_id"), Some((_, Node::Exclude)))
        } else {
            inclusion
        };
        if inclusion {
            fields.retain(|(k, n)| !(k == "_id" && matches!(n, Node::Exclude)));
            if !id_given {
                fields.insert(0, ("_id".to_string(), Node::Include));
            }
        }
        Ok(Projection { fields, inclusion })
    }

    /// `$unset`: an exclusion of the given paths.
    pub fn exclusion(paths: &[&str]) -> Result<Projection> {
        let mut fields = Vec::new();
        for p in paths {
            let parts: Vec<&str> = p.split('.').collect();
            insert(&mut fields, &parts, Node::Exclude, p)?;
        }
        Ok(Projection { fields, inclusion: false })
    }

    /// Whether the projection computes values (rather than only keeping or dropping fields).
    pub fn computes(&self) -> bool {
        self.inclusion && has_computed(&self.fields)
    }

    /// Applies the projection to a document.
    pub fn apply(&self, doc: &Document, vars: &mut Vars) -> Result<Document> {
        if !self.inclusion {
            return Ok(exclude(doc, &self.fields));
        }
        let mut out = include(doc, &self.fields);
        add_computed(&mut out, &self.fields, vars)?;
        Ok(out)
    }
}

fn add_spec(
    spec: &Document,
    prefix: &str,
    scope: &Scope,
    fields: &mut Vec<(String, Node)>,
    mode: &mut Option<bool>,
) -> Result<()> {
    for (k, v) in spec {
        if k.is_empty() {
            return Err(invalid(
                40352,
                "FieldPath cannot be constructed with empty string".to_string(),
            ));
        }
        if k.starts_with('$') {
            return Err(invalid(
                16410,
                format!(
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField. (found '{k}')"
                ),
            ));
        }
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let node = match v {
            Bson::Boolean(_)
            | Bson::Int32(_)
            | Bson::Int64(_)
            | Bson::Double(_)
            | Bson::Decimal128(_) => {
                if crate::doc::truthy(v) {
                    Node::Include
                } else {
                    Node::Exclude
                }
            }
            Bson::Document(d) if d.is_empty() => {
                return Err(invalid(
                    51270,
                    format!(
                        "An empty sub-projection is not a valid value. Found empty object at path {path}"
                    ),
                ));
            }
            Bson::Document(d) if !d.keys().next().is_some_and(|f| f.starts_with('$')) => {
                add_spec(d, &path, scope, fields, mode)?;
                continue;
            }
            other => Node::Computed(Expression::parse_in(other, scope)?),
        };
        if path != "_id" {
            let is_inclusion = !matches!(node, Node::Exclude);
            match mode {
                None => *mode = Some(is_inclusion),
                Some(true) if !is_inclusion => {
                    return Err(invalid(
                        31254,
                        format!("Cannot do exclusion on field {path} in inclusion projection"),
                    ));
                }
                Some(false) if is_inclusion => {
                    let what = if matches!(node, Node::Computed(_)) {
                        "computed field"
                    } else {
                        "inclusion"
                    };
                    return Err(invalid(
                        31253,
                        format!("Cannot do {what} on field {path} in exclusion projection"),
                    ));
                }
                Some(_) => {}
            }
        }
        let parts: Vec<&str> = path.split('.').collect();
        insert(fields, &parts, node, &path)?;
    }
    Ok(())
}

fn insert(fields: &mut Vec<(String, Node)>, parts: &[&str], node: Node, full: &str) -> Result<()> {
    let Some((head, rest)) = parts.split_first() else { return Ok(()) };
    let collision = || invalid(31250, format!("Path collision at {full}"));
    let pos = fields.iter().position(|(k, _)| k == head);
    if rest.is_empty() {
        if pos.is_some() {
            return Err(collision());
        }
        fields.push((head.to_string(), node));
        return Ok(());
    }
    let idx = match pos {
        Some(i) => i,
        None => {
            fields.push((head.to_string(), Node::Sub(Vec::new())));
            fields.len() - 1
        }
    };
    match &mut fields[idx].1 {
        Node::Sub(children) => insert(children, rest, node, full),
        _ => Err(collision()),
    }
}

fn find<'a>(fields: &'a [(String, Node)], name: &str) -> Option<&'a Node> {
    fields.iter().find(|(k, _)| k == name).map(|(_, n)| n)
}

fn include(doc: &Document, fields: &[(String, Node)]) -> Document {
    let mut out = Document::new();
    for (k, v) in doc {
        match find(fields, k) {
            Some(Node::Include) => {
                out.insert(k.clone(), v.clone());
            }
            Some(Node::Sub(children)) => match v {
                Bson::Document(d) => {
                    out.insert(k.clone(), include(d, children));
                }
                Bson::Array(items) => {
                    out.insert(k.clone(), include_array(items, children));
                }
                _ => {}
            },
            _ => {}
        }
    }
    out
}

fn include_array(items: &[Bson], children: &[(String, Node)]) -> Bson {
    Bson::Array(
        items
            .iter()
            .filter_map(|i| match i {
                Bson::Document(d) => Some(Bson::Document(include(d, children))),
                Bson::Array(inner) => Some(include_array(inner, children)),
                _ => None,
            })
            .collect(),
    )
}

fn has_computed(fields: &[(String, Node)]) -> bool {
    fields.iter().any(|(_, n)| match n {
        Node::Computed(_) => true,
        Node::Sub(children) => has_computed(children),
        Node::Include | Node::Exclude => false,
    })
}

fn add_computed(out: &mut Document, fields: &[(String, Node)], vars: &mut Vars) -> Result<()> {
    for (k, node) in fields {
        match node {
            Node::Computed(e) => match e.eval(vars)? {
                Some(v) => {
                    out.insert(k.clone(), v);
                }
                None => {
                    out.remove(k);
                }
            },
            Node::Sub(children) if has_computed(children) => match out.get_mut(k) {
                Some(Bson::Document(d)) => add_computed(d, children, vars)?,
                Some(Bson::Array(items)) => {
                    for item in items.iter_mut() {
                        if let Bson::Document(d) = item {
                            add_computed(d, children, vars)?;
                        }
                    }
                }
                _ => {
                    let mut d = Document::new();
                    add_computed(&mut d, children, vars)?;
                    out.insert(k.clone(), d);
                }
            },
            Node::Sub(_) | Node::Include | Node::Exclude => {}
        }
    }
    Ok(())
}

fn exclude(doc: &Document, fields: &[(String, Node)]) -> Document {
    let mut out = Document::new();
    for (k, v) in doc {
        match find(fields, k) {
            Some(Node::Exclude) => {}
            Some(Node::Sub(children)) => {
                let projected = match v {
                    Bson::Document(d) => Bson::Document(exclude(d, children)),
                    Bson::Array(items) => exclude_array(items, children),
                    other => other.clone(),
                };
                out.insert(k.clone(), projected);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn exclude_array(items: &[Bson], children: &[(String, Node)]) -> Bson {
    Bson::Array(
        items
            .iter()
            .map(|i| match i {
                Bson::Document(d) => Bson::Document(exclude(d, children)),
                Bson::Array(inner) => exclude_array(inner, children),
                other => other.clone(),
            })
            .collect(),
    )
}
