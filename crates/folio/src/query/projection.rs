//! Find projections: inclusion, exclusion, `$slice`, `$elemMatch`, positional `field.$`, and
//! computed fields (literals and field paths).
//!
//! A projection is parsed into a tree keyed by path component, so `{"a.b": 1, "a.c": 1}` and
//! `{a: {b: 1, c: 1}}` are the same tree. The projection is either an *inclusion* (only the
//! named fields, plus `_id` unless excluded) or an *exclusion* (everything but the named fields);
//! mixing is an error except for `_id`. `$slice` and `$elemMatch` alone leave the projection an
//! exclusion, so all other fields are kept.
//!
//! Applying an inclusion walks the *document* in its own field order, so the output keeps the
//! stored order; arrays on a projected path are projected element by element, and scalars in an
//! array on a dotted path are dropped (`{"a.b": 1}` on `{a: [{b: 1}, 2]}` gives `{a: [{b: 1}]}`).

use bson::{Bson, Document};

use super::expr::Expr;
use super::filter::{ElemMatcher, parse_elem_match, truthy};
use crate::bail;
use crate::doc::compare::Number;
use crate::error::Result;

/// A parsed projection.
#[derive(Clone, Debug)]
pub struct Projection {
    inclusion: bool,
    root: Vec<(String, Node)>,
    /// Whether `_id` is kept (explicitly or by default).
    keep_id: bool,
    /// The path before `.$` of the positional projection, if any.
    positional: Option<String>,
    /// Whether an `$elemMatch` projection was seen (it excludes a positional one).
    has_elem_match: bool,
}

#[derive(Clone, Debug)]
enum Node {
    Include,
    Exclude,
    Children(Vec<(String, Node)>),
    Slice(i64, Option<i64>),
    ElemMatch(Box<ElemMatcher>),
    Positional,
    Computed(Expr),
}

impl Node {
    fn is_leaf(&self) -> bool {
        !matches!(self, Node::Children(_))
    }

    fn collate(self, c: &crate::collation::CollationRef) -> Node {
        match self {
            Node::Children(items) => {
                Node::Children(items.into_iter().map(|(k, n)| (k, n.collate(c))).collect())
            }
            Node::ElemMatch(m) => Node::ElemMatch(Box::new(m.collate(c))),
            Node::Computed(e) => Node::Computed(e.with_collation(c)),
            n @ (Node::Include | Node::Exclude | Node::Slice(..) | Node::Positional) => n,
        }
    }
}

impl Projection {
    /// The projection with its `$elemMatch` and computed fields comparing strings under
    /// `collation` (`None`: simple, unchanged), as the operation's collation asks.
    pub fn with_collation(mut self, collation: Option<&crate::collation::CollationRef>) -> Self {
        if let Some(c) = collation {
            self.root = self.root.into_iter().map(|(k, n)| (k, n.collate(c))).collect();
        }
        self
    }

    /// Parses a projection document.
    pub fn parse(spec: &Document) -> Result<Projection> {
        let mut p = Projection {
            inclusion: false,
            root: Vec::new(),
            keep_id: true,
            positional: None,
            has_elem_match: false,
        };
        let mut kind: Option<bool> = None;
        p.add_fields(spec, "", &mut kind)?;
        // With no field but `_id` deciding, an included `_id` (`{_id: 1}`, what ODMs' `exists()`
        // sends) or an `$elemMatch` makes an inclusion, as in MongoDB; `$slice` alone or
        // `{_id: 0}` keeps every other field.
        p.inclusion = kind.unwrap_or_else(|| {
            p.has_elem_match
                || p.root.iter().any(|(k, n)| {
                    k == "_id" && matches!(n, Node::Include | Node::Computed(_) | Node::Children(_))
                })
        });
        Ok(p)
    }

    /// Whether the projection needs the matched array position (`field.$`).
    pub fn needs_match_position(&self) -> bool {
        self.positional.is_some()
    }

    fn add_fields(&mut self, spec: &Document, prefix: &str, kind: &mut Option<bool>) -> Result<()> {
        if spec.is_empty() && !prefix.is_empty() {
            bail!(
                Location51270,
                "An empty sub-projection is not a valid value. Found empty object at path"
            );
        }
        for (key, value) in spec {
            if key.is_empty() {
                bail!(BadValue, "FieldPath cannot be constructed with empty string");
            }
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            if key.starts_with('$') {
                bail!(
                    BadValue,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField."
                );
            }
            if let Some(base) = path.strip_suffix(".$") {
                self.add_positional(base, value, kind)?;
                continue;
            }
            if path.contains(".$") || path.split('.').any(str::is_empty) {
                bail!(
                    BadValue,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField."
                );
            }
            self.add_value(&path, value, kind)?;
        }
        Ok(())
    }

    fn add_value(&mut self, path: &str, value: &Bson, kind: &mut Option<bool>) -> Result<()> {
        let node = match value {
            Bson::Boolean(_)
            | Bson::Int32(_)
            | Bson::Int64(_)
            | Bson::Double(_)
            | Bson::Decimal128(_) => {
                if truthy(value) {
                    Node::Include
                } else {
                    Node::Exclude
                }
            }
            Bson::Document(d) => match d.keys().next().map(String::as_str) {
                Some("$slice") if d.len() == 1 => {
                    parse_slice(d.get("$slice").unwrap_or(&Bson::Null))?
                }
                Some("$elemMatch") if d.len() == 1 => {
                    if path.contains('.') {
                        bail!(Location31275, "Cannot use $elemMatch projection on a nested field.");
                    }
                    let Some(Bson::Document(m)) = d.get("$elemMatch") else {
                        let got =
                            d.get("$elemMatch").map(crate::doc::type_name).unwrap_or("missing");
                        bail!(
                            Location31274,
                            "elemMatch: Invalid argument, object required, but got {got}"
                        );
                    };
                    if self.positional.is_some() {
                        bail!(Location31255, "Cannot specify positional operator and $elemMatch.");
                    }
                    self.has_elem_match = true;
                    Node::ElemMatch(Box::new(parse_elem_match(path, m)?))
                }
                Some("$meta") => {
                    let field = crate::expr::meta_field(d.get("$meta").unwrap_or(&Bson::Null))?;
                    Node::Computed(Expr::parse(&Bson::String(format!("${field}")))?)
                }
                Some(k) if k.starts_with('$') => Node::Computed(Expr::parse(value)?),
                _ => return self.add_fields(d, path, kind),
            },
            other => Node::Computed(Expr::parse(other)?),
        };
        if path != "_id" {
            let is_incl = match node {
                Node::Include | Node::Computed(_) | Node::Positional => Some(true),
                Node::Exclude => Some(false),
                Node::Slice(..) | Node::ElemMatch(_) | Node::Children(_) => None,
            };
            if let (Node::Computed(_), Some(false)) = (&node, *kind) {
                bail!(
                    Location31252,
                    "Cannot use expression other than $meta in exclusion projection"
                );
            }
            if let Some(incl) = is_incl {
                match kind {
                    Some(true) if !incl => {
                        bail!(
                            Location31254,
                            "Cannot do exclusion on field {path} in inclusion projection"
                        )
                    }
                    Some(false) if incl => {
                        bail!(
                            Location31253,
                            "Cannot do inclusion on field {path} in exclusion projection"
                        )
                    }
                    _ => *kind = Some(incl),
                }
            }
        } else if let Node::Exclude = node {
            self.keep_id = false;
        }
        insert(&mut self.root, path, node)
    }

    fn add_positional(&mut self, base: &str, value: &Bson, kind: &mut Option<bool>) -> Result<()> {
        if !truthy(value) || matches!(value, Bson::Document(_)) {
            bail!(
                Location31395,
                "positional projection cannot be used with exclusion or literal values"
            );
        }
        if self.positional.is_some() {
            bail!(Location31276, "Cannot specify more than one positional projection per query.");
        }
        if self.has_elem_match {
            bail!(Location31256, "Cannot specify positional operator and $elemMatch.");
        }
        if base.contains(".$") {
            bail!(
                Location31394,
                "As of 4.4, it's illegal to specify positional operator in the middle of a path.Positional projection may only be used at the end, for example: a.b.$. If the query previously used a form like a.b.$.d, remove the parts following the '$' and the results will be equivalent."
            );
        }
        if let Some(false) = kind {
            bail!(Location31253, "Cannot do inclusion on field {base}.$ in exclusion projection");
        }
        *kind = Some(true);
        self.positional = Some(base.to_string());
        insert(&mut self.root, base, Node::Positional)
    }

    /// Checks that a positional projection (`a.$`) refers to a field the query filters on, as
    /// MongoDB requires (error 31277 otherwise).
    #[cfg(test)]
    pub fn check_positional(&self, filter: &super::Filter) -> Result<()> {
        let Some(path) = &self.positional else { return Ok(()) };
        let field = path.split('.').next().unwrap_or("");
        if !filter_mentions(filter, field) {
            bail!(
                Location31277,
                "Positional projection '{path}.$' does not match the query document."
            );
        }
        Ok(())
    }

    /// Applies the projection. `match_position` is the array position the query matched (from
    /// [`super::Filter::matches_with_key`]), needed only for `field.$`.
    pub fn apply(&self, doc: &Document, match_position: Option<usize>) -> Result<Document> {
        let ctx = Ctx { root: doc, pos: match_position };
        if self.inclusion {
            let mut out = include_level(&self.root, doc, &ctx, true)?;
            if !self.keep_id {
                out.remove("_id");
            }
            Ok(out)
        } else {
            let mut out = doc.clone();
            exclude_level(&self.root, &mut out, &ctx);
            Ok(out)
        }
    }
}

struct Ctx<'a> {
    root: &'a Document,
    pos: Option<usize>,
}

fn parse_slice(v: &Bson) -> Result<Node> {
    // MongoDB truncates the numbers to int32 (`numberInt`).
    let int = |x: &Bson| {
        Number::of(x).map(|n| {
            n.as_i64()
                .unwrap_or_else(|| n.to_f64() as i64)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
        })
    };
    match v {
        Bson::Array(a) => {
            if a.len() != 2 {
                bail!(Location31272, "$slice array argument should be of form [skip, limit]");
            }
            let Some(skip) = int(&a[0]) else {
                bail!(
                    Location31257,
                    "$slice expects the skip argument to be a number, got {}",
                    crate::doc::type_name(&a[0])
                );
            };
            let Some(limit) = int(&a[1]) else {
                bail!(
                    Location31258,
                    "$slice expects the limit argument to be a number, got {}",
                    crate::doc::type_name(&a[1])
                );
            };
            if limit <= 0 {
                bail!(Location31259, "$slice limit must be positive, got {limit}");
            }
            Ok(Node::Slice(skip, Some(limit)))
        }
        other => match int(other) {
            Some(n) => Ok(Node::Slice(n, None)),
            None => bail!(Location31273, "$slice only supports numbers and [skip, limit] arrays"),
        },
    }
}

/// Inserts a node at a dotted path, reporting path collisions as MongoDB does.
fn insert(level: &mut Vec<(String, Node)>, path: &str, node: Node) -> Result<()> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let existing = level.iter_mut().position(|(k, _)| k == head);
    match (existing, rest) {
        (None, None) => level.push((head.to_string(), node)),
        (None, Some(rest)) => {
            let mut sub = Vec::new();
            insert(&mut sub, rest, node)?;
            level.push((head.to_string(), Node::Children(sub)));
        }
        (Some(i), Some(rest)) => match &mut level[i].1 {
            Node::Children(sub) => insert(sub, rest, node)?,
            _ => bail!(Location31249, "Path collision at {path} remaining portion {rest}"),
        },
        (Some(i), None) => {
            if level[i].1.is_leaf() || node.is_leaf() {
                bail!(Location31250, "Path collision at {path}");
            }
        }
    }
    Ok(())
}

/// Projects one document level of an inclusion projection.
fn include_level(
    nodes: &[(String, Node)],
    doc: &Document,
    ctx: &Ctx,
    top: bool,
) -> Result<Document> {
    let mut out = Document::new();
    for (k, v) in doc {
        let node = nodes.iter().find(|(n, _)| n == k).map(|(_, n)| n);
        let node = match node {
            Some(n) => n,
            None if top && k == "_id" => {
                out.insert(k.clone(), v.clone());
                continue;
            }
            None => continue,
        };
        if let Some(x) = include_value(node, v, ctx)? {
            out.insert(k.clone(), x);
        }
    }
    for (k, node) in nodes {
        if let Some(v) = match node {
            Node::Computed(e) => e.eval(ctx.root),
            _ => None,
        } {
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
}

fn include_value(node: &Node, v: &Bson, ctx: &Ctx) -> Result<Option<Bson>> {
    Ok(match node {
        Node::Include => Some(v.clone()),
        Node::Exclude | Node::Computed(_) => None,
        Node::Children(sub) => match v {
            Bson::Document(d) => Some(Bson::Document(include_level(sub, d, ctx, false)?)),
            Bson::Array(items) => {
                let mut out = Vec::new();
                for e in items {
                    match e {
                        Bson::Document(_) | Bson::Array(_) => {
                            if let Some(x) = include_value(node, e, ctx)? {
                                out.push(x);
                            }
                        }
                        _ => {}
                    }
                }
                Some(Bson::Array(out))
            }
            _ => None,
        },
        Node::Slice(skip, limit) => Some(slice(v, *skip, *limit)),
        Node::ElemMatch(m) => elem_match(m, v),
        Node::Positional => Some(positional(v, ctx)?),
    })
}

fn positional(v: &Bson, ctx: &Ctx) -> Result<Bson> {
    match (v, ctx.pos) {
        (Bson::Array(items), Some(i)) if i < items.len() => Ok(Bson::Array(vec![items[i].clone()])),
        (Bson::Array(_), _) => {
            bail!(
                Location51246,
                "positional operator '.$' couldn't find a matching element in the array"
            )
        }
        (other, _) => Ok(other.clone()),
    }
}

/// Projects one document level of an exclusion projection, in place.
fn exclude_level(nodes: &[(String, Node)], doc: &mut Document, ctx: &Ctx) {
    for (k, node) in nodes {
        match node {
            Node::Exclude => {
                doc.remove(k);
            }
            Node::ElemMatch(m) => {
                let replaced = doc.get(k).map(|v| elem_match(m, v));
                match replaced {
                    Some(Some(x)) => {
                        doc.insert(k.clone(), x);
                    }
                    Some(None) => {
                        doc.remove(k);
                    }
                    None => {}
                }
            }
            _ => {
                if let Some(v) = doc.get_mut(k) {
                    exclude_value(node, v, ctx);
                }
            }
        }
    }
}

fn exclude_value(node: &Node, v: &mut Bson, ctx: &Ctx) {
    match node {
        Node::Children(sub) => match v {
            Bson::Document(d) => exclude_level(sub, d, ctx),
            Bson::Array(items) => {
                for e in items {
                    exclude_value(node, e, ctx);
                }
            }
            _ => {}
        },
        Node::Slice(skip, limit) => *v = slice(v, *skip, *limit),
        Node::Include
        | Node::Exclude
        | Node::ElemMatch(_)
        | Node::Positional
        | Node::Computed(_) => {}
    }
}

/// `$slice`: `n` first elements, `-n` last ones, or `[skip, limit]`.
fn slice(v: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(items) = v else { return v.clone() };
    let len = items.len() as i64;
    let (start, count) = match limit {
        None if skip >= 0 => (0, skip),
        None => ((len + skip).max(0), len),
        Some(l) if skip >= 0 => (skip.min(len), l),
        Some(l) => ((len + skip).max(0), l),
    };
    let end = start.saturating_add(count).min(len);
    Bson::Array(items[start as usize..end.max(start) as usize].to_vec())
}

fn elem_match(m: &ElemMatcher, v: &Bson) -> Option<Bson> {
    let Bson::Array(items) = v else { return None };
    items.iter().find(|e| m.matches_value(e)).map(|e| Bson::Array(vec![e.clone()]))
}

/// Whether some path predicate of the filter starts with the top-level `field`.
#[cfg(test)]
fn filter_mentions(filter: &super::Filter, field: &str) -> bool {
    use super::Filter;
    match filter {
        Filter::And(c) | Filter::Or(c) | Filter::Nor(c) => {
            c.iter().any(|f| filter_mentions(f, field))
        }
        Filter::Path { path, .. } => path.split('.').next() == Some(field),
        Filter::Expr(_) | Filter::Schema(_) | Filter::Const(_) | Filter::Text(_) => false,
    }
}
