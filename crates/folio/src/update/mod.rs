//! Update documents: parsing (operator or replacement), applying to a document, upserts.
//!
//! # Shape
//!
//! An update is either a *replacement* (`{a: 1}`: the new document, keeping `_id`) or an
//! *operator document* (`{$set: {a: 1}, $inc: {n: 1}}`). [`UpdateSpec::parse`] decides which,
//! validates everything that does not depend on the target document (operator names, argument
//! types, conflicting paths, array filters) and reports MongoDB's errors. [`UpdateSpec::apply`]
//! then changes a document in place and says whether anything changed (MongoDB's `nModified`).
//!
//! # Paths
//!
//! Each operator names target paths. A path may contain the positional operators: `$` (the
//! array position the query matched, passed in [`UpdateContext::match_position`]), `$[]` (every
//! element) and `$[id]` (the elements that match the array filter `id`). Before an operator runs,
//! its path is *resolved* against the current document into concrete paths.
//!
//! Two paths of one update conflict when one is a prefix of the other (`a` and `a.b`), which
//! MongoDB rejects with ConflictingUpdateOperators before touching the document. As in MongoDB
//! 5.0+, operations are applied in lexicographic order of their paths (numeric components in
//! numeric order), so new fields appear in that order whatever order the update listed them.
//!
//! # Creating paths
//!
//! Operators that write (`$set`, `$inc`, `$push`, ...) create missing documents along the path,
//! and pad arrays with nulls when a numeric component is past the end. A path that runs into a
//! scalar, or into an array with a non-numeric component, is PathNotViable (28): `Cannot create
//! field 'b' in element {a: 1}`. Operators that only remove (`$unset`, `$pull`, `$pop`) do nothing
//! on a missing path.
//!
//! After the operators ran, `_id` must be unchanged (ImmutableField, 66) and is moved back to the
//! front of the document if an operation displaced it.
//!
//! # Using it
//!
//! The executor parses once per statement ([`UpdateSpec::parse`], or
//! [`UpdateSpec::parse_pipeline`] for an array), then for each matched document takes the array
//! position from [`crate::query::Filter::matches_with_key`], applies the update to a copy
//! ([`UpdateSpec::apply`] may leave a document half-updated when it fails), validates the result
//! for storage and counts it in `nModified` when `apply` returned true. An upsert that matched
//! nothing inserts [`UpdateSpec::upsert_document`] (after generating an ObjectId `_id` if it has
//! none).

mod apply;
mod arith;
mod parse;
pub mod pipeline;
mod resolve;
mod upsert;

#[cfg(test)]
mod tests;

use bson::{Bson, Document};

use crate::doc::sort::SortSpec;
use crate::query::filter::{ElemMatcher, Filter};

/// What [`UpdateSpec::apply`] needs to know besides the document.
#[derive(Clone, Debug)]
pub struct UpdateContext {
    /// The array position the query matched (for the positional `$` operator).
    pub match_position: Option<usize>,
    /// Whether the document is being inserted by an upsert (enables `$setOnInsert`).
    pub is_upsert_insert: bool,
    /// The current time, for `$currentDate` with `$type: "date"` (and `true`).
    pub now: bson::DateTime,
    /// The timestamp for `$currentDate` with `$type: "timestamp"`.
    pub now_timestamp: bson::Timestamp,
}

impl Default for UpdateContext {
    fn default() -> Self {
        UpdateContext {
            match_position: None,
            is_upsert_insert: false,
            now: bson::DateTime::from_millis(0),
            now_timestamp: bson::Timestamp { time: 0, increment: 0 },
        }
    }
}

/// A parsed update.
#[derive(Clone, Debug)]
pub enum UpdateSpec {
    /// A replacement document (without `$` operators).
    Replacement(Document),
    /// Operator updates, sorted by path.
    Operators(Operators),
    /// An update pipeline (`[{$set: ...}, ...]`).
    Pipeline(pipeline::Pipeline),
}

impl UpdateSpec {
    /// The update comparing strings under `collation` (`None`: simple, unchanged), as MongoDB
    /// compares them under a statement's collation: the expressions of an update pipeline, and
    /// in an operator update `$min`, `$max`, `$addToSet`, `$pull`, `$pullAll`, `$push`'s `$sort`
    /// and the `arrayFilters`.
    pub fn with_collation(self, collation: Option<&crate::collation::CollationRef>) -> UpdateSpec {
        match (self, collation) {
            (UpdateSpec::Pipeline(p), Some(c)) => UpdateSpec::Pipeline(p.with_collation(c)),
            (UpdateSpec::Operators(o), Some(c)) => UpdateSpec::Operators(o.with_collation(c)),
            (spec, _) => spec,
        }
    }
}

/// The operations of an operator update, with their array filters.
#[derive(Clone, Debug)]
pub struct Operators {
    ops: Vec<Op>,
    array_filters: Vec<(String, Filter)>,
    /// The statement's collation: `$min`, `$max`, `$addToSet`, `$pullAll` and `$push`'s whole-
    /// element `$sort` compare strings under it (the matchers and sorts carry it themselves).
    collation: Option<crate::collation::CollationRef>,
}

impl Operators {
    fn with_collation(self, c: &crate::collation::CollationRef) -> Operators {
        let ops = self
            .ops
            .into_iter()
            .map(|op| Op {
                path: op.path,
                kind: match op.kind {
                    OpKind::Pull(m) => OpKind::Pull(Box::new(m.collate(c))),
                    OpKind::Push(Push { each, position, slice, sort }) => OpKind::Push(Push {
                        each,
                        position,
                        slice,
                        sort: sort.map(|s| match s {
                            PushSort::Fields(spec) => {
                                PushSort::Fields(spec.with_collation(Some(c)))
                            }
                            whole @ PushSort::Whole(_) => whole,
                        }),
                    }),
                    other => other,
                },
            })
            .collect();
        let array_filters = self
            .array_filters
            .into_iter()
            .map(|(name, f)| (name, f.with_collation(Some(c))))
            .collect();
        Operators { ops, array_filters, collation: Some(c.clone()) }
    }
}

/// One operation on one (possibly positional) path.
#[derive(Clone, Debug)]
struct Op {
    path: String,
    kind: OpKind,
}

/// The operator and its validated argument.
#[derive(Clone, Debug)]
enum OpKind {
    Set(Bson),
    SetOnInsert(Bson),
    Unset,
    Inc(Bson),
    Mul(Bson),
    Min(Bson),
    Max(Bson),
    /// `$rename` to the given path (the op's path is the source).
    Rename(String),
    CurrentDate {
        timestamp: bool,
    },
    Push(Push),
    AddToSet(Vec<Bson>),
    Pop {
        first: bool,
    },
    Pull(Box<ElemMatcher>),
    PullAll(Vec<Bson>),
    Bit(Vec<(BitOp, Bson)>),
}

#[derive(Clone, Debug)]
struct Push {
    each: Vec<Bson>,
    position: Option<i64>,
    slice: Option<i64>,
    sort: Option<PushSort>,
}

#[derive(Clone, Debug)]
enum PushSort {
    /// Sort whole elements, ascending when true.
    Whole(bool),
    /// Sort document elements by fields.
    Fields(SortSpec),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BitOp {
    And,
    Or,
    Xor,
}

impl UpdateSpec {
    /// Whether this is a replacement.
    pub fn is_replacement(&self) -> bool {
        matches!(self, UpdateSpec::Replacement(_))
    }
}

/// Moves `_id` to the front of a document if it is elsewhere.
pub fn id_first(doc: &mut Document) {
    if doc.keys().next().is_some_and(|k| k == "_id") {
        return;
    }
    if let Some(id) = doc.remove("_id") {
        let mut out = Document::new();
        out.insert("_id", id);
        for (k, v) in std::mem::take(doc) {
            out.insert(k, v);
        }
        *doc = out;
    }
}

/// Exact equality: same types and values (`1` and `1.0` differ), used for "modified".
fn identical(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => {
            x.to_bits() == y.to_bits() || x == y && x.signum() == y.signum()
        }
        (Bson::Document(x), Bson::Document(y)) => identical_docs(x, y),
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| identical(p, q))
        }
        _ => a == b,
    }
}

/// [`identical`] for two documents: the same fields in the same order, with identical values.
fn identical_docs(x: &Document, y: &Document) -> bool {
    x.len() == y.len()
        && x.iter().zip(y.iter()).all(|((ka, va), (kb, vb))| ka == kb && identical(va, vb))
}
