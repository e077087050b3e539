//! Query filters: parsing a filter document into a validated AST.
//!
//! A filter such as `{a: {$gt: 1, $lt: 5}, $or: [{b: null}, {c: /x/i}]}` becomes a tree of
//! [`Filter`] nodes: logical nodes (`$and`, `$or`, `$nor`), path nodes that apply a [`Pred`] to
//! the values found at a dotted path, and whole-document nodes (`$expr`, `$jsonSchema`). Parsing
//! does all validation up front and reports MongoDB's errors (code and message), so that matching
//! ([`super::matcher`]) is infallible and runs without re-checking operand types.
//!
//! Several operators are desugared while parsing: `$ne`, `$nin` and `$not` become [`Pred::Not`],
//! `$all` becomes a conjunction of equalities (or of `$elemMatch`es), `{a: {$gt: 1, $lt: 5}}`
//! becomes [`Pred::And`]. Conjunctions on one path are evaluated predicate by predicate, each over
//! all values at the path, which is MongoDB's semantics: `{a: {$gt: 1, $lt: 5}}` matches
//! `{a: [0, 10]}` because some element is above 1 and some element is below 5.

use bson::{Bson, Document, Regex as BsonRegex};

use crate::error::Result;
use crate::{bail, err};

/// A parsed filter.
#[derive(Clone, Debug)]
pub enum Filter {
    /// All children match (also an empty filter, which matches everything).
    And(Vec<Filter>),
    /// Some child matches.
    Or(Vec<Filter>),
    /// No child matches.
    Nor(Vec<Filter>),
    /// A predicate on the values at a dotted path.
    Path {
        /// The dotted path.
        path: String,
        /// The predicate on its values.
        pred: Pred,
    },
    /// An `$expr` over the whole document.
    Expr(super::expr::Expr),
    /// A `$jsonSchema` over the whole document.
    Schema(Box<super::schema::Schema>),
    /// `$alwaysTrue` / `$alwaysFalse`.
    Const(bool),
    /// `$text` (`query::text`).
    Text(Box<super::text::TextQuery>),
}

/// A predicate on the values found at a path.
#[derive(Clone, Debug)]
pub enum Pred {
    /// `$eq` (and implicit equality). `null` also matches a missing field.
    Eq(Bson),
    /// `$gt`, `$gte`, `$lt`, `$lte`, with type bracketing.
    Cmp(CmpOp, Bson),
    /// `$in`: equality with any listed value, or a regex match.
    In(InList),
    /// `$exists: true` (false is `Not(Exists)`).
    Exists,
    /// `$type`.
    Type(Vec<TypeSel>),
    /// `$regex` (and regex literals).
    Regex(Box<Regex>),
    /// `$mod: [divisor, remainder]`.
    Mod(i64, i64),
    /// `$size`.
    Size(i64),
    /// `$elemMatch`: some element of an array value matches.
    ElemMatch(Box<ElemMatcher>),
    /// All predicates match (each over all values at the path).
    And(Vec<Pred>),
    /// The predicate does not match (`$ne`, `$nin`, `$not`, `$exists: false`).
    Not(Box<Pred>),
    /// `$bitsAllSet`, `$bitsAllClear`, `$bitsAnySet`, `$bitsAnyClear` over bit positions.
    Bits(BitsTest, Vec<u32>),
    /// Matches nothing (`$all: []`).
    Never,
    /// A comparison (`$eq`, `$gt`…, `$in`) whose operand has strings, under a non-simple
    /// collation ([`Filter::with_collation`]).
    Collated(Box<Collated>),
    /// `$geoWithin`, `$geoIntersects`, `$near`, `$nearSphere` ([`super::geo`]).
    Geo(Box<super::geo::GeoQuery>),
}

/// A comparison under a collation: the predicate as written, and the same predicate over
/// collation keys, which the matcher applies to the keyed values of the document.
#[derive(Clone, Debug)]
pub struct Collated {
    /// The collation.
    pub collation: crate::collation::CollationRef,
    /// The predicate as written (for explain, upsert seeds, regexes of `$in`).
    pub original: Pred,
    /// The predicate with every string operand replaced by its collation key (and no regexes).
    pub keyed: Pred,
}

/// Which bitwise test a `$bits...` operator performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitsTest {
    /// Every position is set.
    AllSet,
    /// Every position is clear.
    AllClear,
    /// Some position is set.
    AnySet,
    /// Some position is clear.
    AnyClear,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

/// The operand of `$in`: plain values and regexes.
#[derive(Clone, Debug)]
pub struct InList {
    /// Values compared by equality, sorted in BSON order without duplicates, so that a lookup
    /// is a binary search (`{_id: {$in: [...thousands...]}}` is common).
    pub values: Vec<Bson>,
    /// Regexes matched against strings.
    pub regexes: Vec<Regex>,
}

/// One alternative of `$type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeSel {
    /// A BSON type code (`-1` MinKey, `127` MaxKey).
    Code(i32),
    /// `"number"`: any numeric type.
    Number,
}

/// What `$elemMatch` (and `$pull` with a condition) tests on each element.
#[derive(Clone, Debug)]
pub enum ElemMatcher {
    /// The object form `{$elemMatch: {a: 1, b: {$gt: 2}}}`: a filter over document elements.
    Object(Filter),
    /// The value form `{$elemMatch: {$gte: 80, $lt: 85}}`: predicates on the element itself.
    Value(Pred),
    /// A literal (the scalar form of `$pull: {a: 5}`): whole-element equality, no traversal;
    /// under a collation (the statement's), strings compare as its collation keys.
    Exact(Bson, Option<crate::collation::CollationRef>),
}

/// A compiled regex with its original pattern and options.
#[derive(Clone, Debug)]
pub struct Regex {
    /// The pattern as written.
    pub pattern: String,
    /// The options as written (sorted).
    pub options: String,
    /// The compiled form.
    pub re: crate::pcre::Pcre,
}

impl Regex {
    /// Compiles a pattern with MongoDB's options (`i m s x u`), reporting MongoDB's errors.
    pub fn new(pattern: &str, options: &str) -> Result<Regex> {
        let mut flags = String::new();
        for c in options.chars() {
            match c {
                'i' | 'm' | 's' | 'x' => flags.push(c),
                'u' => {}
                other => bail!(Location51108, "invalid flag in regex options: {other}"),
            }
        }
        let re = crate::pcre::Pcre::compile(pattern, &flags)
            .map_err(|e| err!(Location51091, "Regular expression is invalid: {}", e))?;
        let mut sorted: Vec<char> = options.chars().collect();
        sorted.sort_unstable();
        Ok(Regex { pattern: pattern.to_string(), options: sorted.into_iter().collect(), re })
    }

    /// From a BSON regex value.
    pub fn from_bson(r: &BsonRegex) -> Result<Regex> {
        Regex::new(r.pattern.as_str(), r.options.as_str())
    }

    /// Whether the regex equals a BSON regex value (same pattern and options).
    pub fn same_as(&self, r: &BsonRegex) -> bool {
        self.pattern == r.pattern.as_str() && {
            let mut o: Vec<char> = r.options.as_str().chars().collect();
            o.sort_unstable();
            o.into_iter().collect::<String>() == self.options
        }
    }

    /// A literal prefix every match must start with, when the regex is anchored with `^` and
    /// has no options that change that (for index bounds).
    pub fn literal_prefix(&self) -> Option<String> {
        if self.options.contains('i') || self.options.contains('m') || self.options.contains('x') {
            return None;
        }
        // An alternation may match without the prefix (`^a|b`), as MongoDB's prefix analysis
        // also refuses.
        if self.pattern.contains('|') {
            return None;
        }
        let rest = self.pattern.strip_prefix('^').or_else(|| self.pattern.strip_prefix("\\A"))?;
        let prefix: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == ' ' || *c == '_' || *c == '-')
            .collect();
        // A quantifier right after the prefix would make its last character optional.
        let next = rest[prefix.len()..].chars().next();
        match next {
            Some('*' | '?' | '{') => {
                let mut p = prefix;
                p.pop();
                Some(p)
            }
            _ => Some(prefix),
        }
    }
}

impl Filter {
    /// Parses and validates a filter document.
    pub fn parse(filter: &Document) -> Result<Filter> {
        let f = parse_doc(filter)?;
        f.check_near()?;
        Ok(f)
    }

    /// The `$near`/`$nearSphere` predicate of the top-level conjunction, with its path.
    pub fn near(&self) -> Option<(&str, &super::geo::Near)> {
        let conjuncts: Vec<&Filter> = match self {
            Filter::And(children) => children.iter().collect(),
            other => vec![other],
        };
        conjuncts.into_iter().find_map(|f| match f {
            Filter::Path { path, pred } => near_of(pred).map(|n| (path.as_str(), n)),
            _ => None,
        })
    }

    /// The `$text` query of the top-level conjunction.
    pub fn text(&self) -> Option<&super::text::TextQuery> {
        match self {
            Filter::Text(t) => Some(t),
            Filter::And(children) => children.iter().find_map(|c| match c {
                Filter::Text(t) => Some(t.as_ref()),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The filter with its `$text` bound to the text index's configuration.
    pub fn bind_text(&self, spec: &std::sync::Arc<super::text::TextSpec>) -> Filter {
        match self {
            Filter::Text(t) => Filter::Text(Box::new(t.bound(spec.clone()))),
            Filter::And(children) => {
                Filter::And(children.iter().map(|c| c.bind_text(spec)).collect())
            }
            other => other.clone(),
        }
    }

    /// MongoDB's rules for `$near`: at most one, and only in the top-level conjunction.
    fn check_near(&self) -> Result<()> {
        fn count(f: &Filter, top: bool, n: &mut usize) -> Result<()> {
            match f {
                Filter::And(children) if top => children.iter().try_for_each(|c| count(c, true, n)),
                Filter::And(children) | Filter::Or(children) | Filter::Nor(children) => {
                    children.iter().try_for_each(|c| count(c, false, n))
                }
                Filter::Path { pred, .. } => {
                    if pred_has_near(pred) {
                        if !top || near_of(pred).is_none() {
                            bail!(BadValue, "geoNear must be top-level expr");
                        }
                        *n += 1;
                        if *n > 1 {
                            bail!(BadValue, "Too many geoNear expressions");
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        count(self, true, &mut 0)?;
        // `$text`: once, in the top-level conjunction (MongoDB's messages).
        fn texts(f: &Filter, top: bool, n: &mut usize) -> Result<()> {
            match f {
                Filter::Text(_) => {
                    if !top {
                        bail!(BadValue, "$text is not allowed in this context");
                    }
                    *n += 1;
                    if *n > 1 {
                        bail!(BadValue, "Too many text expressions");
                    }
                    Ok(())
                }
                Filter::And(children) => children.iter().try_for_each(|c| texts(c, top, n)),
                Filter::Or(children) | Filter::Nor(children) => {
                    children.iter().try_for_each(|c| texts(c, false, n))
                }
                _ => Ok(()),
            }
        }
        texts(self, true, &mut 0)
    }

    /// Parses a filter whose `$expr`s may use the variables of a command's `let` option
    /// (`{$expr: {$eq: ["$_id", "$$id"]}}` with `let: {id: 1}`).
    pub fn parse_with_let(filter: &Document, let_vars: Option<&Document>) -> Result<Filter> {
        let f = match let_vars {
            Some(vars) if !vars.is_empty() => {
                parse_doc(&super::expr::substitute_vars(filter, vars))?
            }
            _ => parse_doc(filter)?,
        };
        f.check_near()?;
        Ok(f)
    }

    /// The filter with its string comparisons made under `collation` (`None`: simple, the
    /// filter is returned as is). `$regex`, `$type`, `$exists` and the like are unaffected, as in
    /// MongoDB. `$expr` comparisons are collated too.
    pub fn with_collation(self, collation: Option<&crate::collation::CollationRef>) -> Filter {
        match collation {
            Some(c) => self.collate(c),
            None => self,
        }
    }

    fn collate(self, c: &crate::collation::CollationRef) -> Filter {
        match self {
            Filter::And(children) => {
                Filter::And(children.into_iter().map(|f| f.collate(c)).collect())
            }
            Filter::Or(children) => {
                Filter::Or(children.into_iter().map(|f| f.collate(c)).collect())
            }
            Filter::Nor(children) => {
                Filter::Nor(children.into_iter().map(|f| f.collate(c)).collect())
            }
            Filter::Path { path, pred } => Filter::Path { path, pred: pred.collate(c) },
            Filter::Expr(e) => Filter::Expr(e.with_collation(c)),
            f @ (Filter::Schema(_) | Filter::Const(_) | Filter::Text(_)) => f,
        }
    }

    /// A filter that matches every document.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// Whether this filter matches everything without looking at the document.
    pub fn is_trivial(&self) -> bool {
        match self {
            Filter::And(children) => children.iter().all(Filter::is_trivial),
            Filter::Const(b) => *b,
            Filter::Or(_)
            | Filter::Nor(_)
            | Filter::Path { .. }
            | Filter::Expr(_)
            | Filter::Schema(_)
            | Filter::Text(_) => false,
        }
    }
}

impl ElemMatcher {
    /// The matcher with its string comparisons under the collation.
    pub(crate) fn collate(self, c: &crate::collation::CollationRef) -> ElemMatcher {
        match self {
            ElemMatcher::Object(f) => ElemMatcher::Object(f.collate(c)),
            ElemMatcher::Value(p) => ElemMatcher::Value(p.collate(c)),
            ElemMatcher::Exact(v, _) => ElemMatcher::Exact(v, Some(c.clone())),
        }
    }
}

impl Pred {
    /// The predicate with its string comparisons under the collation.
    fn collate(self, c: &crate::collation::CollationRef) -> Pred {
        use crate::collation::has_strings;
        let wrap = |original: Pred, keyed: Pred| {
            Pred::Collated(Box::new(Collated { collation: c.clone(), original, keyed }))
        };
        match self {
            Pred::Eq(v) if has_strings(&v) => {
                let keyed = Pred::Eq(c.transform(&v));
                wrap(Pred::Eq(v), keyed)
            }
            Pred::Cmp(op, v) if has_strings(&v) => {
                let keyed = Pred::Cmp(op, c.transform(&v));
                wrap(Pred::Cmp(op, v), keyed)
            }
            Pred::In(list) if list.values.iter().any(has_strings) => {
                let mut values: Vec<Bson> = list.values.iter().map(|v| c.transform(v)).collect();
                values.sort_by(crate::doc::compare::cmp_bson);
                values.dedup_by(|a, b| {
                    crate::doc::compare::cmp_bson(a, b) == std::cmp::Ordering::Equal
                });
                let keyed = Pred::In(InList { values, regexes: Vec::new() });
                wrap(Pred::In(list), keyed)
            }
            Pred::And(preds) => Pred::And(preds.into_iter().map(|p| p.collate(c)).collect()),
            Pred::Not(inner) => Pred::Not(Box::new(inner.collate(c))),
            Pred::ElemMatch(m) => Pred::ElemMatch(Box::new(m.collate(c))),
            p @ (Pred::Eq(_)
            | Pred::Cmp(..)
            | Pred::In(_)
            | Pred::Exists
            | Pred::Type(_)
            | Pred::Regex(_)
            | Pred::Mod(..)
            | Pred::Size(_)
            | Pred::Bits(..)
            | Pred::Never
            | Pred::Collated(_)
            | Pred::Geo(_)) => p,
        }
    }
}

fn near_of(pred: &Pred) -> Option<&super::geo::Near> {
    match pred {
        Pred::Geo(g) => match &g.pred {
            super::geo::GeoPred::Near(n) => Some(n),
            _ => None,
        },
        Pred::And(preds) => preds.iter().find_map(near_of),
        _ => None,
    }
}

fn pred_has_near(pred: &Pred) -> bool {
    match pred {
        Pred::Geo(_) => near_of(pred).is_some(),
        Pred::And(preds) => preds.iter().any(pred_has_near),
        Pred::Not(p) => pred_has_near(p),
        Pred::ElemMatch(m) => match m.as_ref() {
            ElemMatcher::Value(p) => pred_has_near(p),
            ElemMatcher::Object(f) => f.check_near().is_err() || f.near().is_some(),
            ElemMatcher::Exact(..) => false,
        },
        _ => false,
    }
}

/// Parses a filter document (the top level, an `$and`/`$or`/`$nor` entry, or the object form of
/// `$elemMatch`).
fn parse_doc(filter: &Document) -> Result<Filter> {
    parse_doc_dbref(filter, false)
}

/// Parses a filter document in which the DBRef fields `$ref`, `$id` and `$db` are field names,
/// not operators, when the document is a DBRef (it has `$ref` and `$id`) or, with
/// `allow_incomplete`, names either (the object form of `$elemMatch`), as MongoDB's parser does.
fn parse_doc_dbref(filter: &Document, allow_incomplete: bool) -> Result<Filter> {
    let dbref = if allow_incomplete {
        filter.contains_key("$ref") || filter.contains_key("$id")
    } else {
        filter.contains_key("$ref") && filter.contains_key("$id")
    };
    let mut children = Vec::with_capacity(filter.len());
    for (key, value) in filter {
        if dbref && matches!(key.as_str(), "$ref" | "$id" | "$db") {
            children.push(Filter::Path { path: key.clone(), pred: parse_path_value(key, value)? });
        } else if let Some(op) = key.strip_prefix('$') {
            if let Some(f) = parse_top_operator(op, value)? {
                children.push(f);
            }
        } else {
            children.push(Filter::Path { path: key.clone(), pred: parse_path_value(key, value)? });
        }
    }
    if children.len() == 1 {
        return Ok(children.pop().unwrap_or_else(Filter::all));
    }
    Ok(Filter::And(children))
}

fn parse_top_operator(op: &str, value: &Bson) -> Result<Option<Filter>> {
    Ok(Some(match op {
        "and" => Filter::And(parse_logical_list(op, value)?),
        "or" => {
            let mut list = parse_logical_list(op, value)?;
            if list.len() == 1 { list.pop().unwrap_or_else(Filter::all) } else { Filter::Or(list) }
        }
        "nor" => Filter::Nor(parse_logical_list(op, value)?),
        "comment" => return Ok(None),
        "expr" => Filter::Expr(super::expr::Expr::parse(value)?),
        "jsonSchema" => match value {
            Bson::Document(d) => Filter::Schema(Box::new(super::schema::Schema::parse(d)?)),
            _ => bail!(TypeMismatch, "$jsonSchema must be an object"),
        },
        "alwaysTrue" | "alwaysFalse" => {
            if !matches!(value, Bson::Int32(1) | Bson::Int64(1) | Bson::Double(1.0)) {
                bail!(FailedToParse, "${op} must be an integer value of 1");
            }
            Filter::Const(op == "alwaysTrue")
        }
        "where" => bail!(NotImplemented, "$where is not supported"),
        "text" => Filter::Text(Box::new(super::text::TextQuery::parse(value)?)),
        "sampleRate" => bail!(NotImplemented, "$sampleRate is not supported"),
        other => bail!(
            BadValue,
            "unknown top level operator: ${other}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField."
        ),
    }))
}

fn parse_logical_list(op: &str, value: &Bson) -> Result<Vec<Filter>> {
    let Bson::Array(items) = value else {
        bail!(BadValue, "${op} must be an array");
    };
    if items.is_empty() {
        bail!(BadValue, "$and/$or/$nor must be a nonempty array");
    }
    items
        .iter()
        .map(|item| match item {
            Bson::Document(d) => parse_doc(d),
            _ => bail!(BadValue, "$or/$and/$nor entries need to be full objects"),
        })
        .collect()
}

/// Whether a document is an operator document (`{$gt: 1}`) rather than a literal to compare
/// with: its first field starts with `$` and it is not a DBRef (`{$ref, $id}`).
fn is_operator_doc(d: &Document) -> bool {
    match d.keys().next() {
        Some(k) => k.starts_with('$') && !matches!(k.as_str(), "$ref" | "$id" | "$db"),
        None => false,
    }
}

/// Parses the value of a path key: an operator document, a regex, or a literal for equality.
fn parse_path_value(path: &str, value: &Bson) -> Result<Pred> {
    match value {
        Bson::Document(d) if is_operator_doc(d) => parse_operators(path, d),
        Bson::RegularExpression(r) => Ok(Pred::Regex(Box::new(Regex::from_bson(r)?))),
        Bson::Undefined => bail!(BadValue, "cannot compare to undefined"),
        _ => Ok(Pred::Eq(value.clone())),
    }
}

/// Parses an operator document such as `{$gt: 1, $lt: 5}` for a path.
fn parse_operators(path: &str, ops: &Document) -> Result<Pred> {
    let mut preds = Vec::with_capacity(ops.len());
    // `$regex` and `$options` pair up wherever they appear in the document.
    let options = match ops.get("$options") {
        Some(Bson::String(s)) => Some(s.as_str()),
        Some(_) => bail!(BadValue, "$options has to be a string"),
        None => None,
    };
    if options.is_some() && !ops.contains_key("$regex") {
        bail!(BadValue, "$options needs a $regex");
    }
    let near = ops.contains_key("$near") || ops.contains_key("$nearSphere");
    for (op, operand) in ops {
        if op == "$options" || (near && matches!(op.as_str(), "$maxDistance" | "$minDistance")) {
            continue;
        }
        if op == "$near" || op == "$nearSphere" {
            preds.push(Pred::Geo(Box::new(super::geo::parse_near(op, operand, ops)?)));
            continue;
        }
        preds.push(parse_operator(path, op, operand, options)?);
    }
    if preds.len() == 1 {
        return Ok(preds.pop().unwrap_or(Pred::And(Vec::new())));
    }
    Ok(Pred::And(preds))
}

fn parse_operator(path: &str, op: &str, v: &Bson, options: Option<&str>) -> Result<Pred> {
    Ok(match op {
        "$eq" => {
            reject_undefined(v)?;
            Pred::Eq(v.clone())
        }
        "$ne" => {
            reject_undefined(v)?;
            if matches!(v, Bson::RegularExpression(_)) {
                bail!(BadValue, "Can't have regex as arg to $ne.");
            }
            Pred::Not(Box::new(Pred::Eq(v.clone())))
        }
        "$gt" | "$gte" | "$lt" | "$lte" => {
            reject_undefined(v)?;
            if matches!(v, Bson::RegularExpression(_)) {
                bail!(BadValue, "Can't have RegEx as arg to predicate over field '{path}'.");
            }
            let cmp = match op {
                "$gt" => CmpOp::Gt,
                "$gte" => CmpOp::Gte,
                "$lt" => CmpOp::Lt,
                _ => CmpOp::Lte,
            };
            Pred::Cmp(cmp, v.clone())
        }
        "$in" => Pred::In(parse_in_list("$in", v)?),
        "$nin" => Pred::Not(Box::new(Pred::In(parse_in_list("$nin", v)?))),
        "$exists" => {
            if truthy(v) {
                Pred::Exists
            } else {
                Pred::Not(Box::new(Pred::Exists))
            }
        }
        "$type" => Pred::Type(parse_types(v)?),
        "$regex" => Pred::Regex(Box::new(parse_regex(v, options)?)),
        "$mod" => parse_mod(v)?,
        "$size" => Pred::Size(parse_size(v)?),
        "$all" => parse_all(path, v)?,
        "$elemMatch" => match v {
            Bson::Document(d) => Pred::ElemMatch(Box::new(parse_elem_match(path, d)?)),
            _ => bail!(BadValue, "$elemMatch needs an Object"),
        },
        "$not" => Pred::Not(Box::new(parse_not(path, v)?)),
        "$comment" => Pred::And(Vec::new()),
        "$geoWithin" | "$within" => Pred::Geo(Box::new(super::geo::parse_within(op, v)?)),
        "$geoIntersects" => Pred::Geo(Box::new(super::geo::parse_intersects(v)?)),
        "$near" | "$nearSphere" => {
            Pred::Geo(Box::new(super::geo::parse_near(op, v, &Document::new())?))
        }
        "$bitsAllSet" => Pred::Bits(BitsTest::AllSet, parse_bit_positions(op, v)?),
        "$bitsAllClear" => Pred::Bits(BitsTest::AllClear, parse_bit_positions(op, v)?),
        "$bitsAnySet" => Pred::Bits(BitsTest::AnySet, parse_bit_positions(op, v)?),
        "$bitsAnyClear" => Pred::Bits(BitsTest::AnyClear, parse_bit_positions(op, v)?),
        other => bail!(BadValue, "unknown operator: {other}"),
    })
}

fn reject_undefined(v: &Bson) -> Result<()> {
    if matches!(v, Bson::Undefined) {
        bail!(BadValue, "cannot compare to undefined");
    }
    Ok(())
}

pub use crate::doc::truthy;

fn parse_in_list(op: &str, v: &Bson) -> Result<InList> {
    let Bson::Array(items) = v else {
        bail!(BadValue, "{op} needs an array");
    };
    let mut list = InList { values: Vec::new(), regexes: Vec::new() };
    for item in items {
        match item {
            Bson::RegularExpression(r) => list.regexes.push(Regex::from_bson(r)?),
            Bson::Document(d) if is_operator_doc(d) => bail!(BadValue, "cannot nest $ under {op}"),
            Bson::Undefined => bail!(BadValue, "InMatchExpression equality cannot be undefined"),
            other => list.values.push(other.clone()),
        }
    }
    list.values.sort_by(crate::doc::compare::cmp_bson);
    list.values.dedup_by(|a, b| crate::doc::compare::cmp_bson(a, b).is_eq());
    Ok(list)
}

/// `$type` aliases and their codes.
const TYPE_ALIASES: &[(&str, i32)] = &[
    ("double", 1),
    ("string", 2),
    ("object", 3),
    ("array", 4),
    ("binData", 5),
    ("undefined", 6),
    ("objectId", 7),
    ("bool", 8),
    ("date", 9),
    ("null", 10),
    ("regex", 11),
    ("dbPointer", 12),
    ("javascript", 13),
    ("symbol", 14),
    ("javascriptWithScope", 15),
    ("int", 16),
    ("timestamp", 17),
    ("long", 18),
    ("decimal", 19),
    ("minKey", -1),
    ("maxKey", 127),
];

/// Parses one `$type` alternative (alias or code).
pub fn parse_type_sel(v: &Bson) -> Result<TypeSel> {
    match v {
        Bson::String(s) if s == "number" => Ok(TypeSel::Number),
        Bson::String(s) => TYPE_ALIASES
            .iter()
            .find(|(name, _)| name == s)
            .map(|(_, code)| TypeSel::Code(*code))
            .ok_or_else(|| err!(BadValue, "Unknown type name alias: {s}")),
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            let n = crate::doc::compare::Number::of(v).map(|n| n.to_f64()).unwrap_or(f64::NAN);
            if n.fract() != 0.0 || !n.is_finite() {
                bail!(
                    BadValue,
                    "Invalid numerical type code: {}",
                    crate::doc::fmt::value_string(v)
                );
            }
            let code = n as i32;
            if !(code == -1 || code == 127 || (1..=19).contains(&code)) {
                bail!(BadValue, "Invalid numerical type code: {code}");
            }
            Ok(TypeSel::Code(code))
        }
        _ => bail!(TypeMismatch, "type must be represented as a number or a string"),
    }
}

fn parse_types(v: &Bson) -> Result<Vec<TypeSel>> {
    match v {
        Bson::Array(items) => {
            if items.is_empty() {
                bail!(FailedToParse, "$type must match at least one type");
            }
            items.iter().map(parse_type_sel).collect()
        }
        other => Ok(vec![parse_type_sel(other)?]),
    }
}

/// The BSON type code of a value, as `$type` numbers them.
pub fn type_code(v: &Bson) -> i32 {
    match v {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

fn parse_regex(v: &Bson, options: Option<&str>) -> Result<Regex> {
    match v {
        Bson::String(s) => Regex::new(s, options.unwrap_or("")),
        Bson::RegularExpression(r) => {
            if let Some(o) = options {
                if !r.options.as_str().is_empty() {
                    bail!(Location51075, "options set in both $regex and $options");
                }
                return Regex::new(r.pattern.as_str(), o);
            }
            Regex::from_bson(r)
        }
        _ => bail!(BadValue, "$regex has to be a string"),
    }
}

fn parse_mod(v: &Bson) -> Result<Pred> {
    let Bson::Array(items) = v else {
        bail!(BadValue, "malformed mod, needs to be an array");
    };
    if items.len() < 2 {
        bail!(BadValue, "malformed mod, not enough elements");
    }
    if items.len() > 2 {
        bail!(BadValue, "malformed mod, too many elements");
    }
    let num = |x: &Bson, what: &str| -> Result<i64> {
        let Some(n) = crate::doc::compare::Number::of(x) else {
            bail!(BadValue, "malformed mod, {what} not a number");
        };
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        let f = n.to_f64();
        if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            bail!(BadValue, "malformed mod, {what} value is invalid");
        }
        Ok(f.trunc() as i64)
    };
    let divisor = num(&items[0], "divisor")?;
    let remainder = num(&items[1], "remainder")?;
    if divisor == 0 {
        bail!(BadValue, "divisor cannot be 0");
    }
    Ok(Pred::Mod(divisor, remainder))
}

fn parse_size(v: &Bson) -> Result<i64> {
    let Some(n) = crate::doc::compare::Number::of(v) else {
        bail!(BadValue, "$size needs a number");
    };
    if let Some(i) = n.as_i64() {
        if i < 0 {
            bail!(BadValue, "$size may not be negative");
        }
        return Ok(i);
    }
    let f = n.to_f64();
    if f.fract() != 0.0 || !f.is_finite() {
        bail!(BadValue, "$size must be a whole number");
    }
    if f < 0.0 {
        bail!(BadValue, "$size may not be negative");
    }
    Ok(f as i64)
}

fn parse_all(path: &str, v: &Bson) -> Result<Pred> {
    let Bson::Array(items) = v else {
        bail!(BadValue, "$all needs an array");
    };
    if items.is_empty() {
        return Ok(Pred::Never);
    }
    let is_elem_match = |x: &Bson| matches!(x, Bson::Document(d) if d.keys().next().is_some_and(|k| k == "$elemMatch"));
    let first_em = is_elem_match(&items[0]);
    let mut preds = Vec::with_capacity(items.len());
    for item in items {
        if is_elem_match(item) != first_em {
            bail!(BadValue, "$all/$elemMatch has to be consistent");
        }
        let pred = match item {
            Bson::Document(d) if first_em => parse_operators(path, d)?,
            Bson::Document(d) if is_operator_doc(d) => bail!(BadValue, "no $ expressions in $all"),
            Bson::RegularExpression(r) => Pred::Regex(Box::new(Regex::from_bson(r)?)),
            other => Pred::Eq(other.clone()),
        };
        preds.push(pred);
    }
    Ok(Pred::And(preds))
}

/// Parses the operand of `$elemMatch` (also used by `$pull` conditions).
pub fn parse_elem_match(path: &str, d: &Document) -> Result<ElemMatcher> {
    // The value form is chosen when the first key is an operator that applies to a value, not a
    // logical operator over documents.
    let first = d.keys().next().map(String::as_str).unwrap_or("");
    let value_form = first.starts_with('$')
        && !matches!(
            first,
            "$and"
                | "$or"
                | "$nor"
                | "$expr"
                | "$where"
                | "$jsonSchema"
                | "$text"
                | "$comment"
                | "$ref"
                | "$id"
                | "$db"
        );
    if value_form {
        Ok(ElemMatcher::Value(parse_operators(path, d)?))
    } else {
        Ok(ElemMatcher::Object(parse_doc_dbref(d, true)?))
    }
}

/// Parses the condition of a `$pull`: a value for equality, a regex, an operator document for
/// the value form, or a document of field conditions for document elements.
pub fn parse_pull_condition(path: &str, v: &Bson) -> Result<ElemMatcher> {
    match v {
        Bson::Document(d) if !d.is_empty() => parse_elem_match(path, d),
        Bson::RegularExpression(r) => {
            Ok(ElemMatcher::Value(Pred::Regex(Box::new(Regex::from_bson(r)?))))
        }
        other => Ok(ElemMatcher::Exact(other.clone(), None)),
    }
}

fn parse_not(path: &str, v: &Bson) -> Result<Pred> {
    match v {
        Bson::RegularExpression(r) => Ok(Pred::Regex(Box::new(Regex::from_bson(r)?))),
        Bson::Document(d) => {
            if d.is_empty() {
                bail!(BadValue, "$not cannot be empty");
            }
            if let Some(k) = d.keys().find(|k| !k.starts_with('$')) {
                bail!(BadValue, "unknown operator: {k}");
            }
            parse_operators(path, d)
        }
        _ => bail!(BadValue, "$not needs a regex or a document"),
    }
}

/// The bit positions of a `$bits...` operand: a non-negative integer mask, an array of
/// positions, or BinData (little-endian bytes).
fn parse_bit_positions(op: &str, v: &Bson) -> Result<Vec<u32>> {
    let integral = |x: &Bson| -> Option<i64> {
        let n = crate::doc::compare::Number::of(x)?;
        if let Some(i) = n.as_i64() {
            return Some(i);
        }
        let f = n.to_f64();
        (f.fract() == 0.0 && (-9.2e18..9.2e18).contains(&f)).then_some(f as i64)
    };
    match v {
        Bson::Binary(b) => Ok((0..b.bytes.len() * 8)
            .filter(|p| b.bytes[p / 8] & (1 << (p % 8)) != 0)
            .map(|p| p as u32)
            .collect()),
        Bson::Array(items) => items
            .iter()
            .map(|x| match (x, integral(x)) {
                (
                    Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_),
                    Some(p),
                ) if (0..=i64::from(i32::MAX)).contains(&p) => Ok(p as u32),
                (
                    Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_),
                    Some(_),
                ) => {
                    bail!(
                        BadValue,
                        "bit positions must be >= 0 but got: {}",
                        crate::doc::fmt::value_string(x)
                    )
                }
                _ => bail!(
                    BadValue,
                    "bit positions must be an integer but got: {}",
                    crate::doc::fmt::value_string(x)
                ),
            })
            .collect(),
        other => match integral(other) {
            Some(mask) if mask >= 0 => Ok((0..63).filter(|p| mask & (1 << p) != 0).collect()),
            Some(_) => bail!(BadValue, "{op} requires a non-negative bitmask"),
            None if crate::doc::compare::Number::of(other).is_some() => {
                bail!(BadValue, "{op} requires an integral bitmask")
            }
            None => bail!(
                BadValue,
                "{op} takes an Array, a number, or a BinData but received: {}",
                crate::doc::fmt::value_string(other)
            ),
        },
    }
}
