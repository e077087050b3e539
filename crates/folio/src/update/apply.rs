//! Applying parsed updates to a document.

use bson::{Bson, Document};

use super::arith::{self, Arith};
use super::parse::type_name;
use super::resolve::resolve;
use super::{
    OpKind, Operators, Push, PushSort, UpdateContext, UpdateSpec, id_first, identical,
    identical_docs,
};
use crate::bail;
use crate::collation::{Collation, transform_opt};
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::doc::fmt::value_string;
use crate::doc::path::{array_index, child};
use crate::error::Result;

impl UpdateSpec {
    /// Applies the update to `doc` in place; returns whether the document changed.
    ///
    /// On error the document may be partly updated: callers apply updates to a copy.
    pub fn apply(&self, doc: &mut Document, ctx: &UpdateContext) -> Result<bool> {
        match self {
            UpdateSpec::Replacement(r) => replace(doc, r),
            UpdateSpec::Operators(ops) => {
                let before = doc.clone();
                ops.apply(&before, doc, ctx)
            }
            UpdateSpec::Pipeline(p) => p.apply(doc),
        }
    }

    /// [`UpdateSpec::apply`] to `doc`, a copy of `original` the caller keeps: update operators
    /// resolve their paths against `original` instead of a second copy of it.
    pub fn apply_to(
        &self,
        original: &Document,
        doc: &mut Document,
        ctx: &UpdateContext,
    ) -> Result<bool> {
        match self {
            UpdateSpec::Operators(ops) => ops.apply(original, doc, ctx),
            _ => self.apply(doc, ctx),
        }
    }
}

fn immutable_id() -> crate::error::Error {
    crate::err!(
        ImmutableField,
        "Performing an update on the path '_id' would modify the immutable field '_id'"
    )
}

fn replace(doc: &mut Document, replacement: &Document) -> Result<bool> {
    let old_id = doc.get("_id").cloned();
    if let (Some(new), Some(old)) = (replacement.get("_id"), &old_id)
        && !identical(new, old)
    {
        bail!(
            ImmutableField,
            "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
            value_string(new)
        );
    }
    let mut out = Document::new();
    if let Some(id) = old_id.or_else(|| replacement.get("_id").cloned()) {
        out.insert("_id", id);
    }
    for (k, v) in replacement {
        if k != "_id" {
            out.insert(k.clone(), v.clone());
        }
    }
    let modified = !identical_docs(doc, &out);
    *doc = out;
    Ok(modified)
}

impl Operators {
    /// Applies the operators to `doc`, which starts as a copy of `before`.
    fn apply(&self, before: &Document, doc: &mut Document, ctx: &UpdateContext) -> Result<bool> {
        let original_id = doc.get("_id").cloned();
        // Positional paths are resolved against the document as it was, like MongoDB's update
        // tree; two operations that land on overlapping concrete paths conflict.
        let mut resolved = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            for parts in resolve(before, &op.path, ctx, &self.array_filters)? {
                resolved.push((op, parts));
            }
        }
        if self.ops.iter().any(|op| op.path.contains('$')) {
            check_resolved_conflicts(&resolved)?;
        }
        for (op, parts) in &resolved {
            check_top_level_dollar(parts, &op.kind, ctx)?;
            apply_op(doc, parts, &op.kind, ctx, self.collation.as_deref())?;
        }
        if let Some(id) = &original_id {
            match doc.get("_id") {
                Some(now) if identical(now, id) => {}
                _ => return Err(immutable_id()),
            }
        }
        id_first(doc);
        Ok(!identical_docs(before, doc))
    }
}

/// MongoDB stores a `$`-prefixed field written by an update operator only below the top level,
/// or at the top level of the document an upsert inserts (which is validated as an insert);
/// writing one at the top level of an existing document is refused as not valid for storage.
/// Removing one (`$unset`) is always allowed, and `$setOnInsert` writes only on insert.
fn check_top_level_dollar(parts: &[String], kind: &OpKind, ctx: &UpdateContext) -> Result<()> {
    let writes = !matches!(kind, OpKind::Unset | OpKind::SetOnInsert(_));
    match parts.first() {
        Some(first) if first.starts_with('$') && writes && !ctx.is_upsert_insert => bail!(
            DollarPrefixedFieldName,
            "The dollar ($) prefixed field '{first}' in '{first}' is not valid for storage."
        ),
        _ => Ok(()),
    }
}

/// Rejects two resolved paths where one is a prefix of the other (`a.$[]` and `a.0`).
fn check_resolved_conflicts(resolved: &[(&super::Op, Vec<String>)]) -> Result<()> {
    for (i, (_, a)) in resolved.iter().enumerate() {
        for (_, b) in &resolved[..i] {
            let n = a.len().min(b.len());
            if a[..n] == b[..n] {
                let at = if a.len() <= b.len() { a } else { b };
                bail!(
                    ConflictingUpdateOperators,
                    "Update created a conflict at '{}'",
                    at.join(".")
                );
            }
        }
    }
    Ok(())
}

/// `{_id: 1}` as MongoDB prints the document in error messages.
fn id_string(doc: &Document) -> String {
    match doc.get("_id") {
        Some(id) => format!("{{_id: {}}}", value_string(id)),
        None => "{}".to_string(),
    }
}

fn apply_op(
    doc: &mut Document,
    parts: &[String],
    kind: &OpKind,
    ctx: &UpdateContext,
    collation: Option<&Collation>,
) -> Result<()> {
    let field = parts.last().map(String::as_str).unwrap_or("");
    let path = parts.join(".");
    match kind {
        OpKind::Set(v) => set_at(doc, parts, v.clone()),
        OpKind::SetOnInsert(v) => {
            if ctx.is_upsert_insert {
                set_at(doc, parts, v.clone())?;
            }
            Ok(())
        }
        OpKind::Unset => {
            unset_at(doc, parts);
            Ok(())
        }
        OpKind::Inc(arg) | OpKind::Mul(arg) => {
            let (op, name) = match kind {
                OpKind::Inc(_) => (Arith::Add, "$inc"),
                _ => (Arith::Mul, "$mul"),
            };
            let argn = Number::of(arg).unwrap_or(Number::Int(0));
            let new = match get_at(doc, parts) {
                None => match op {
                    Arith::Add => arg.clone(),
                    Arith::Mul => arith::zero_like(argn),
                },
                Some(v) => {
                    let Some(cur) = Number::of(v) else {
                        bail!(
                            TypeMismatch,
                            "Cannot apply {name} to a value of non-numeric type. {} has the field '{field}' of non-numeric type {}",
                            id_string(doc),
                            type_name(v)
                        );
                    };
                    match arith::apply(op, cur, argn) {
                        Some(r) => r,
                        None => bail!(
                            BadValue,
                            "Failed to apply {name} operations to current value (({}){}) for document {}",
                            match v {
                                Bson::Int32(_) => "NumberInt",
                                Bson::Int64(_) => "NumberLong",
                                Bson::Decimal128(_) => "NumberDecimal",
                                _ => "NumberDouble",
                            },
                            value_string(v),
                            id_string(doc)
                        ),
                    }
                }
            };
            set_at(doc, parts, new)
        }
        OpKind::Min(arg) | OpKind::Max(arg) => {
            let want = if matches!(kind, OpKind::Min(_)) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            let replace = match get_at(doc, parts) {
                None => true,
                // Under a collation, strings compare as their collation keys.
                Some(v) => {
                    cmp_bson(&transform_opt(collation, arg), &transform_opt(collation, v)) == want
                }
            };
            if replace { set_at(doc, parts, arg.clone()) } else { Ok(()) }
        }
        OpKind::Rename(to) => rename(doc, parts, to),
        OpKind::CurrentDate { timestamp } => {
            let v = if *timestamp {
                Bson::Timestamp(ctx.now_timestamp)
            } else {
                Bson::DateTime(ctx.now)
            };
            set_at(doc, parts, v)
        }
        OpKind::Push(p) => {
            let mut items = match get_at(doc, parts) {
                None => Vec::new(),
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => bail!(
                    BadValue,
                    "The field '{field}' must be an array but is of type {} in document {}",
                    type_name(other),
                    id_string(doc)
                ),
            };
            push(&mut items, p, collation);
            set_at(doc, parts, Bson::Array(items))
        }
        OpKind::AddToSet(values) => {
            let mut items = match get_at(doc, parts) {
                None => Vec::new(),
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => bail!(
                    BadValue,
                    "Cannot apply $addToSet to non-array field. Field named '{field}' has non-array type {}",
                    type_name(other)
                ),
            };
            for v in values {
                let k = transform_opt(collation, v);
                if !items.iter().any(|x| bson_eq(&transform_opt(collation, x), &k)) {
                    items.push(v.clone());
                }
            }
            set_at(doc, parts, Bson::Array(items))
        }
        OpKind::Pop { first } => {
            let items = match get_at(doc, parts) {
                None => return Ok(()),
                Some(Bson::Array(a)) => a,
                Some(other) => bail!(
                    TypeMismatch,
                    "Path '{path}' contains an element of non-array type '{}'",
                    type_name(other)
                ),
            };
            if items.is_empty() {
                return Ok(());
            }
            let mut items = items.clone();
            if *first {
                items.remove(0);
            } else {
                items.pop();
            }
            set_at(doc, parts, Bson::Array(items))
        }
        OpKind::Pull(m) => retain(doc, parts, |e| !m.matches_pull(e)),
        OpKind::PullAll(values) => {
            let values: Vec<_> = values.iter().map(|v| transform_opt(collation, v)).collect();
            retain(doc, parts, |e| {
                let e = transform_opt(collation, e);
                !values.iter().any(|v| bson_eq(v, &e))
            })
        }
        OpKind::Bit(ops) => {
            let mut cur = match get_at(doc, parts) {
                None => Bson::Int32(0),
                Some(v @ (Bson::Int32(_) | Bson::Int64(_))) => v.clone(),
                Some(other) => bail!(
                    BadValue,
                    "Cannot apply $bit to a value of non-integral type.{} has the field {field} of non-integer type {}",
                    id_string(doc),
                    type_name(other)
                ),
            };
            for (op, arg) in ops {
                cur = arith::bit(*op, &cur, arg).unwrap_or(cur);
            }
            set_at(doc, parts, cur)
        }
    }
}

fn push(items: &mut Vec<Bson>, p: &Push, collation: Option<&Collation>) {
    let len = items.len() as i64;
    let at = match p.position {
        None => len,
        Some(pos) if pos >= 0 => pos.min(len),
        Some(pos) => (len + pos).max(0),
    } as usize;
    for (i, v) in p.each.iter().enumerate() {
        items.insert(at + i, v.clone());
    }
    match &p.sort {
        None => {}
        Some(PushSort::Whole(asc)) => items.sort_by(|a, b| {
            let o = cmp_bson(&transform_opt(collation, a), &transform_opt(collation, b));
            if *asc { o } else { o.reverse() }
        }),
        Some(PushSort::Fields(spec)) => {
            let empty = Document::new();
            items.sort_by(|a, b| {
                let da = a.as_document().unwrap_or(&empty);
                let db = b.as_document().unwrap_or(&empty);
                spec.compare(da, db)
            });
        }
    }
    if let Some(n) = p.slice {
        if n >= 0 {
            items.truncate(n as usize);
        } else {
            let keep = n.unsigned_abs() as usize;
            if items.len() > keep {
                items.drain(..items.len() - keep);
            }
        }
    }
}

fn retain(doc: &mut Document, parts: &[String], keep: impl Fn(&Bson) -> bool) -> Result<()> {
    let items = match get_at(doc, parts) {
        None => return Ok(()),
        Some(Bson::Array(a)) => a,
        Some(_) => bail!(BadValue, "Cannot apply $pull to a non-array value"),
    };
    if items.iter().all(&keep) {
        return Ok(());
    }
    let kept: Vec<Bson> = items.iter().filter(|e| keep(e)).cloned().collect();
    set_at(doc, parts, Bson::Array(kept))
}

fn rename(doc: &mut Document, from: &[String], to: &str) -> Result<()> {
    let to_parts: Vec<String> = to.split('.').map(str::to_string).collect();
    let Some(value) = rename_source(doc, from)?.cloned() else {
        return Ok(());
    };
    check_no_array(doc, from, "source")?;
    check_no_array(doc, &to_parts, "destination")?;
    unset_at(doc, from);
    set_at(doc, &to_parts, value)
}

/// Finds the source of a `$rename`: a missing field is fine (nothing to do), but a path that
/// runs into a scalar, or into an array with a non-numeric component, is PathNotViable.
fn rename_source<'a>(doc: &'a Document, parts: &[String]) -> Result<Option<&'a Bson>> {
    let mut cur = match doc.get(&parts[0]) {
        Some(v) => v,
        None => return Ok(None),
    };
    let mut name = parts[0].as_str();
    for part in &parts[1..] {
        let next = match cur {
            Bson::Document(d) => d.get(part),
            Bson::Array(items) if array_index(part).is_some() => {
                array_index(part).and_then(|i| items.get(i))
            }
            other => bail!(
                PathNotViable,
                "cannot use the part ({name} of {}) to traverse the element ({{{name}: {}}})",
                parts.join("."),
                value_string(other)
            ),
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
        name = part;
    }
    Ok(Some(cur))
}

/// `$rename` may not go through arrays on either side.
fn check_no_array(doc: &Document, parts: &[String], side: &str) -> Result<()> {
    let mut cur = doc.get(&parts[0]);
    for (i, part) in parts.iter().enumerate() {
        let Some(v) = cur else { return Ok(()) };
        if let Bson::Array(_) = v
            && i + 1 < parts.len()
        {
            let id = match doc.get("_id") {
                Some(id) => format!("_id: {}", value_string(id)),
                None => "no id".to_string(),
            };
            bail!(
                BadValue,
                "The {side} field cannot be an array element, '{}' in doc with {id} has an array field called '{part}'",
                parts.join(".")
            );
        }
        cur = parts.get(i + 1).and_then(|p| child(v, p));
    }
    Ok(())
}

/// The value at concrete path components (strict lookup).
fn get_at<'a>(doc: &'a Document, parts: &[String]) -> Option<&'a Bson> {
    let mut cur = doc.get(&parts[0])?;
    for p in &parts[1..] {
        cur = child(cur, p)?;
    }
    Some(cur)
}

/// Builds `{b: {c: value}}` for the components `["b", "c"]`.
fn nested(parts: &[String], value: Bson) -> Bson {
    parts.iter().rev().fold(value, |acc, p| {
        let mut d = Document::new();
        d.insert(p.clone(), acc);
        Bson::Document(d)
    })
}

/// The most null elements a single array write may add before its target index.
const MAX_PADDING: usize = 1_500_000;

/// Sets the value at a path, creating documents and padding arrays on the way.
fn set_at(doc: &mut Document, parts: &[String], value: Bson) -> Result<()> {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return Ok(()),
    };
    if rest.is_empty() {
        doc.insert(first.clone(), value);
        return Ok(());
    }
    match doc.get_mut(first) {
        None => {
            doc.insert(first.clone(), nested(rest, value));
            Ok(())
        }
        Some(v) => set_in_value(v, first, rest, value),
    }
}

fn not_viable(name: &str, next: &str, v: &Bson) -> crate::error::Error {
    crate::err!(
        PathNotViable,
        "Cannot create field '{next}' in element {{{name}: {}}}",
        value_string(v)
    )
}

fn set_in_value(v: &mut Bson, name: &str, rest: &[String], value: Bson) -> Result<()> {
    match v {
        Bson::Document(d) => set_at(d, rest, value),
        Bson::Array(items) => {
            let Some(idx) = array_index(&rest[0]) else {
                return Err(not_viable(name, &rest[0], v));
            };
            if idx >= items.len() {
                // Padding is bounded so that a path like `a.999999999` cannot exhaust memory.
                if idx - items.len() > MAX_PADDING {
                    bail!(BadValue, "can't backfill more than {MAX_PADDING} elements");
                }
                items.resize(idx, Bson::Null);
                items.push(nested(&rest[1..], value));
                return Ok(());
            }
            if rest.len() == 1 {
                items[idx] = value;
                return Ok(());
            }
            set_in_value(&mut items[idx], &rest[0], &rest[1..], value)
        }
        other => Err(not_viable(name, &rest[0], other)),
    }
}

/// Removes the value at a path: a document field is removed, an array element becomes null.
fn unset_at(doc: &mut Document, parts: &[String]) {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        doc.remove(first);
        return;
    }
    if let Some(v) = doc.get_mut(first) {
        unset_in_value(v, rest);
    }
}

fn unset_in_value(v: &mut Bson, rest: &[String]) {
    match v {
        Bson::Document(d) => unset_at(d, rest),
        Bson::Array(items) => {
            let Some(idx) = array_index(&rest[0]) else { return };
            let Some(e) = items.get_mut(idx) else { return };
            if rest.len() == 1 {
                *e = Bson::Null;
            } else {
                unset_in_value(e, &rest[1..]);
            }
        }
        _ => {}
    }
}
