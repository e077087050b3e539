//! Matching documents against a parsed [`Filter`].
//!
//! # Values at a path
//!
//! A path predicate is tested against every value the path reaches, and matches when one of
//! them does (negations match when none does). The values are found by walking the path:
//!
//! - a document is followed by field name; a missing field yields a *missing* value, which
//!   `null` equality and `$exists: false` treat specially;
//! - an array in the middle of the path is walked into: each document element is searched for
//!   the rest of the path, and a numeric component (`items.0.qty`) also selects that element.
//!   Scalar elements yield nothing at all, so `{"a.b": null}` does not match `{a: [1]}` while
//!   `{"a.b": {$exists: false}}` does;
//! - an array at the end of the path yields each of its elements and then the array itself, so
//!   `{tags: "x"}` matches `{tags: ["x", "y"]}` and `{tags: ["x", "y"]}` matches it too. Only
//!   one level is expanded. `$size` and `$elemMatch` see the array alone.
//!
//! # The matched array position
//!
//! The positional update operator (`items.$.qty`) and projection need the index of the array
//! element that made the filter match: the first array the path went through. The walk carries
//! that index along and [`Filter::matches_with_key`] returns it (MongoDB's `elemMatchKey`).
//!
//! # Comparisons
//!
//! `$gt` and friends use type bracketing: a value of another canonical type never matches
//! (`{$gt: 5}` does not match strings), except that MinKey and MaxKey operands compare across
//! types. NaN is only equal to NaN (so `$gte: NaN` matches NaN and `$lt: 5` does not). A missing
//! value compares as null.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::filter::{
    BitsTest, CmpOp, Collated, ElemMatcher, Filter, InList, Pred, Regex, TypeSel, type_code,
};
use crate::doc::canonical_rank;
use crate::doc::compare::{Number, cmp_bson};
use crate::doc::path::{RawReach, array_index};

/// One value reached by a path: `None` when the path is missing there, plus the index in the
/// first array traversed.
type Visit<'a> = (Option<&'a Bson>, Option<usize>);

impl Filter {
    /// Whether the document matches.
    pub fn matches(&self, doc: &Document) -> bool {
        self.eval(doc, &mut None)
    }

    /// Whether the document matches, and the array position the match went through (for the
    /// positional `$` operator), if any.
    pub fn matches_with_key(&self, doc: &Document) -> (bool, Option<usize>) {
        let mut key = None;
        let m = self.eval(doc, &mut key);
        (m, if m { key } else { None })
    }

    fn eval(&self, doc: &Document, key: &mut Option<usize>) -> bool {
        match self {
            Filter::And(children) => children.iter().all(|c| c.eval(doc, key)),
            Filter::Or(children) => children.iter().any(|c| c.eval(doc, key)),
            Filter::Nor(children) => !children.iter().any(|c| c.eval(doc, &mut None)),
            Filter::Path { path, pred } => pred_on_path(doc, path, pred, key),
            Filter::Expr(e) => e.matches(doc),
            Filter::Schema(s) => s.matches(doc),
            Filter::Text(t) => t.matches(doc),
            Filter::Const(b) => *b,
        }
    }

    /// Whether a raw document matches, read without decoding it, or `None` when this cannot
    /// tell: a path reaches an array (whose elements only the decoded walk expands with
    /// MongoDB's rules), the filter holds `$expr`, `$jsonSchema` or `$text`, or the document
    /// is unreadable. A caller then decodes the document and uses [`Filter::matches`]; where
    /// this answers, it answers as that would, because a path that reaches no array reaches
    /// at most one value, which is what the leaf test of a path reads.
    pub fn matches_raw(&self, doc: &bson::RawDocument) -> Option<bool> {
        match self {
            Filter::And(children) => {
                for c in children {
                    if !c.matches_raw(doc)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Filter::Or(children) => {
                for c in children {
                    if c.matches_raw(doc)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Filter::Nor(children) => {
                for c in children {
                    if c.matches_raw(doc)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Filter::Path { path, pred } => match crate::doc::path::reach_raw(doc, path) {
                RawReach::Missing => Some(leaf_matches(pred, None)),
                RawReach::Value(v) => {
                    let owned = folio_wire::to_bson(v).ok()?;
                    Some(leaf_matches(pred, Some(&owned)))
                }
                RawReach::Array | RawReach::Unreadable => None,
            },
            Filter::Const(b) => Some(*b),
            Filter::Expr(_) | Filter::Schema(_) | Filter::Text(_) => None,
        }
    }

    /// The paths of the path predicates every match must satisfy: the filter's own, or those
    /// of its top-level `$and` (nested conjunctions included). A document that
    /// [`Filter::matches_raw`] decided as a match reached no array on any of them.
    pub fn conjunct_paths(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Filter::Path { path, .. } => Box::new(std::iter::once(path.as_str())),
            Filter::And(children) => Box::new(children.iter().flat_map(Filter::conjunct_paths)),
            _ => Box::new(std::iter::empty()),
        }
    }
}

impl ElemMatcher {
    /// Whether one array element (or `$pull` candidate) matches.
    pub fn matches_value(&self, v: &Bson) -> bool {
        match self {
            ElemMatcher::Object(f) => match v {
                Bson::Document(d) => f.matches(d),
                _ => false,
            },
            ElemMatcher::Value(p) => pred_on_value(p, v),
            ElemMatcher::Exact(x, None) => eq_matches(x, Some(v)),
            ElemMatcher::Exact(x, Some(c)) => eq_matches(&c.transform(x), Some(&c.transform(v))),
        }
    }

    /// Whether an array element is removed by `$pull`. Unlike `$elemMatch`, an operator or
    /// regex condition also looks inside an element that is itself an array (`{$gt: 1}` pulls
    /// `[1, 2]`), as MongoDB matches the element like a field value; a literal condition compares
    /// whole elements.
    pub fn matches_pull(&self, v: &Bson) -> bool {
        match self {
            ElemMatcher::Value(p) => {
                let mut wrapped = Document::new();
                wrapped.insert("e", v.clone());
                pred_on_path(&wrapped, "e", p, &mut None)
            }
            ElemMatcher::Object(_) | ElemMatcher::Exact(..) => self.matches_value(v),
        }
    }
}

/// Evaluates a predicate on the values at a path.
fn pred_on_path(doc: &Document, path: &str, pred: &Pred, key: &mut Option<usize>) -> bool {
    match pred {
        Pred::And(preds) => preds.iter().all(|p| pred_on_path(doc, path, p, key)),
        Pred::Not(inner) => !pred_on_path(doc, path, inner, &mut None),
        Pred::Never => false,
        leaf => {
            // A geo predicate reads an array as a location (`[x, y]`) or a list of them.
            let expand = !matches!(leaf, Pred::Size(_) | Pred::ElemMatch(_) | Pred::Geo(_));
            let mut found = None;
            let hit = walk_doc(doc, path, None, expand, &mut |(v, k)| {
                if leaf_matches(leaf, v) {
                    // `$elemMatch` reports the element it matched when no outer array did.
                    let k = match (leaf, v, k) {
                        (Pred::ElemMatch(m), Some(Bson::Array(items)), None) => {
                            items.iter().position(|e| m.matches_value(e))
                        }
                        _ => k,
                    };
                    found = Some(k);
                    true
                } else {
                    false
                }
            });
            if let Some(Some(k)) = found {
                *key = Some(k);
            }
            hit
        }
    }
}

/// A predicate on a single value, with no path walk and no array expansion (the value form of
/// `$elemMatch` and `$pull`).
pub fn pred_on_value(pred: &Pred, v: &Bson) -> bool {
    match pred {
        Pred::And(preds) => preds.iter().all(|p| pred_on_value(p, v)),
        Pred::Not(inner) => !pred_on_value(inner, v),
        Pred::Never => false,
        leaf => leaf_matches(leaf, Some(v)),
    }
}

/// Splits the first component off a dotted path (without allocating).
fn split_first(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    }
}

/// Walks the dotted `path` in `doc`, calling `f` on each value reached until it returns true.
fn walk_doc<'a>(
    doc: &'a Document,
    path: &str,
    key: Option<usize>,
    expand: bool,
    f: &mut dyn FnMut(Visit<'a>) -> bool,
) -> bool {
    let (head, rest) = split_first(path);
    match doc.get(head) {
        None => f((None, key)),
        Some(v) => walk_value(v, rest, key, expand, f),
    }
}

fn walk_value<'a>(
    v: &'a Bson,
    rest: Option<&str>,
    key: Option<usize>,
    expand: bool,
    f: &mut dyn FnMut(Visit<'a>) -> bool,
) -> bool {
    let Some(rest) = rest else {
        if let (Bson::Array(items), true) = (v, expand) {
            for (i, e) in items.iter().enumerate() {
                if f((Some(e), key.or(Some(i)))) {
                    return true;
                }
            }
        }
        return f((Some(v), key));
    };
    match v {
        Bson::Document(d) => walk_doc(d, rest, key, expand, f),
        Bson::Array(items) => {
            let (head, after) = split_first(rest);
            if let Some(e) = array_index(head).and_then(|i| items.get(i))
                && walk_value(e, after, key, expand, f)
            {
                return true;
            }
            for (i, e) in items.iter().enumerate() {
                if let Bson::Document(d) = e
                    && walk_doc(d, rest, key.or(Some(i)), expand, f)
                {
                    return true;
                }
            }
            // Scalars in the array yield nothing, not even "missing".
            false
        }
        _ => f((None, key)),
    }
}

/// Whether a leaf predicate matches one value (`None` = missing).
fn leaf_matches(pred: &Pred, v: Option<&Bson>) -> bool {
    match pred {
        Pred::Eq(target) => eq_matches(target, v),
        Pred::Cmp(op, target) => cmp_matches(*op, target, v),
        Pred::In(list) => in_matches(list, v),
        Pred::Exists => v.is_some(),
        Pred::Type(sels) => v.is_some_and(|v| sels.iter().any(|s| type_matches(*s, v))),
        Pred::Regex(re) => v.is_some_and(|v| regex_matches(re, v)),
        Pred::Mod(d, r) => v.and_then(Number::of).is_some_and(|n| mod_matches(n, *d, *r)),
        Pred::Size(n) => matches!(v, Some(Bson::Array(a)) if a.len() as i64 == *n),
        Pred::ElemMatch(m) => {
            matches!(v, Some(Bson::Array(a)) if a.iter().any(|e| m.matches_value(e)))
        }
        Pred::And(preds) => preds.iter().all(|p| leaf_matches(p, v)),
        Pred::Not(inner) => !leaf_matches(inner, v),
        Pred::Bits(test, positions) => v.is_some_and(|v| bits_match(*test, positions, v)),
        Pred::Never => false,
        Pred::Collated(c) => collated_matches(c, v),
        Pred::Geo(g) => v.is_some_and(|v| g.pred.matches(v)),
    }
}

/// A comparison under a collation: the keyed predicate on the keyed value; the regexes of an
/// `$in` still see the value as stored, since a collation does not apply to `$regex`.
fn collated_matches(c: &Collated, v: Option<&Bson>) -> bool {
    let keyed = v.map(|v| crate::collation::transform_opt(Some(&c.collation), v));
    if leaf_matches(&c.keyed, keyed.as_deref()) {
        return true;
    }
    match (&c.original, v) {
        (Pred::In(list), Some(v)) => list.regexes.iter().any(|re| regex_matches(re, v)),
        _ => false,
    }
}

/// The `$bits...` operators: numbers that are integral and fit in int64 (two's complement, so a
/// negative number has every high bit set), and BinData as little-endian bytes.
fn bits_match(test: BitsTest, positions: &[u32], v: &Bson) -> bool {
    let bit: Box<dyn Fn(u32) -> bool + '_> = match v {
        Bson::Binary(b) => Box::new(move |p: u32| {
            let p = p as usize;
            b.bytes.get(p / 8).is_some_and(|byte| byte & (1 << (p % 8)) != 0)
        }),
        other => {
            let Some(n) = Number::of(other) else { return false };
            let i = match n.as_i64() {
                Some(i) => i,
                None => {
                    let f = n.to_f64();
                    if f.fract() != 0.0
                        || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f)
                    {
                        return false;
                    }
                    f as i64
                }
            };
            Box::new(move |p: u32| if p >= 64 { i < 0 } else { i & (1_i64 << p) != 0 })
        }
    };
    match test {
        BitsTest::AllSet => positions.iter().all(|p| bit(*p)),
        BitsTest::AllClear => positions.iter().all(|p| !bit(*p)),
        BitsTest::AnySet => positions.iter().any(|p| bit(*p)),
        BitsTest::AnyClear => positions.iter().any(|p| !bit(*p)),
    }
}

fn eq_matches(target: &Bson, v: Option<&Bson>) -> bool {
    match (target, v) {
        (Bson::Null, None | Some(Bson::Null)) => true,
        (_, None) => false,
        (t, Some(v)) => canonical_rank(t) == canonical_rank(v) && cmp_bson(t, v) == Ordering::Equal,
    }
}

fn cmp_matches(op: CmpOp, target: &Bson, v: Option<&Bson>) -> bool {
    let v = v.unwrap_or(&Bson::Null);
    if canonical_rank(target) != canonical_rank(v) {
        return match target {
            Bson::MinKey => matches!(op, CmpOp::Gt | CmpOp::Gte),
            Bson::MaxKey => matches!(op, CmpOp::Lt | CmpOp::Lte),
            _ => false,
        };
    }
    let (tn, vn) = (Number::of(target), Number::of(v));
    if tn.is_some_and(Number::is_nan) || vn.is_some_and(Number::is_nan) {
        let both = tn.is_some_and(Number::is_nan) && vn.is_some_and(Number::is_nan);
        return both && matches!(op, CmpOp::Gte | CmpOp::Lte);
    }
    let ord = cmp_bson(v, target);
    match op {
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
    }
}

fn in_matches(list: &InList, v: Option<&Bson>) -> bool {
    // Values of one canonical type are equal exactly when they compare equal, so a binary
    // search over the sorted list finds a match; a missing value matches a listed null.
    let found = match v {
        None => list.values.binary_search_by(|t| cmp_bson(t, &Bson::Null)).is_ok(),
        Some(v) => list.values.binary_search_by(|t| cmp_bson(t, v)).is_ok(),
    };
    found || v.is_some_and(|v| list.regexes.iter().any(|re| regex_matches(re, v)))
}

fn type_matches(sel: TypeSel, v: &Bson) -> bool {
    match sel {
        TypeSel::Number => Number::of(v).is_some(),
        TypeSel::Code(c) => type_code(v) == c,
    }
}

fn regex_matches(re: &Regex, v: &Bson) -> bool {
    match v {
        Bson::String(s) | Bson::Symbol(s) => re.re.matches(s),
        Bson::RegularExpression(r) => re.same_as(r),
        _ => false,
    }
}

fn mod_matches(n: Number, divisor: i64, remainder: i64) -> bool {
    let x = match n.as_i64() {
        Some(i) => i,
        None => {
            let f = n.to_f64();
            if !f.is_finite() {
                return false;
            }
            f.trunc() as i64
        }
    };
    x.wrapping_rem(divisor) == remainder
}
