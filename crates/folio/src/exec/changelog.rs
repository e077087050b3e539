//! Change-log entries: what every write appends to its transaction's change-log record.
//!
//! MongoDB's oplog plays this role; change streams read it. Every data and DDL write in
//! `exec::write` appends one compact entry to its MVCC transaction ([`Txn::append_log`]), and the
//! MVCC layer writes the transaction's entries as **one record** keyed by the commit timestamp in
//! the same atomic, durable batch as the data (docs/design/change-streams.md). An entry is a small
//! BSON document with short field names:
//!
//! | `op` | fields |
//! |---|---|
//! | `i` insert | `ns`, `ui` (collection UUID), `o` (the document) |
//! | `u` update | `ns`, `ui`, `k` (`{_id}`), `d` (`{u: updated, r: removed, t: truncated}`) |
//! | `r` replace | `ns`, `ui`, `k`, `o` (the new document) |
//! | `d` delete | `ns`, `ui`, `k` |
//! | `drop`, `create`, `createIndexes`, `dropIndexes`, `modify` | `ns`, `ui`, `o` (details) |
//! | `rename` | `ns`, `ui`, `to` (the new namespace) |
//! | `dropDatabase` | `ns` (the database name) |
//!
//! A collection with `changeStreamPreAndPostImages: {enabled: true}` also records `pre` (the
//! document before an update, replace or delete) and `post` (after an update), which
//! `fullDocumentBeforeChange` and `fullDocument: whenAvailable|required` need; other collections
//! pay only for the entry itself.
//!
//! The update description is computed from the old and new documents: changed fields inside an
//! embedded document are reported by dotted path when the embedded document kept all its fields,
//! arrays that only shrank are reported as truncated, appended or changed array elements by
//! index, removed fields by path.

use bson::raw::{RawBson, RawDocument, RawDocumentBuf, cstr};
use bson::{Bson, Document, doc};

use crate::catalog::CollectionMeta;
use crate::mvcc::Txn;

/// Whether the collection records pre- and post-images (`changeStreamPreAndPostImages`).
pub fn images_enabled(meta: &CollectionMeta) -> bool {
    // `get`, not `get_document`: the option is usually absent, and `get_document` builds an
    // error to say so, on every write.
    match meta.options.get("changeStreamPreAndPostImages") {
        Some(Bson::Document(d)) => matches!(d.get("enabled"), Some(Bson::Boolean(true))),
        _ => false,
    }
}

/// Appends `k`, the `{_id}` of `doc`, built as raw BSON (no `Document` to build and encode).
fn append_key(e: &mut RawDocumentBuf, doc: &Document) -> Option<()> {
    let id = RawBson::try_from(doc.get("_id").cloned().unwrap_or(Bson::Null)).ok()?;
    let mut k = RawDocumentBuf::new();
    k.append(cstr!("_id"), id);
    e.append(cstr!("k"), k);
    Some(())
}

/// Logs an insert of a document stored as `stored` (its BSON bytes, which the entry embeds as
/// they are: the document is neither copied as a tree nor encoded again).
pub fn insert(txn: &mut dyn Txn, meta: &CollectionMeta, stored: &[u8]) {
    let Ok(doc) = RawDocument::from_bytes(stored) else { return };
    let mut e = raw_base("i", meta, stored.len());
    e.append(cstr!("o"), doc);
    txn.append_log(e.as_bytes());
}

/// Logs an update (`replacement: false`) or a replacement of `old` by `new`.
pub fn update(
    txn: &mut dyn Txn,
    meta: &CollectionMeta,
    old: &Document,
    new: &Document,
    replacement: bool,
) {
    let images = images_enabled(meta);
    let mut e = raw_base(if replacement { "r" } else { "u" }, meta, ENTRY_ROOM);
    let appended = (|| {
        append_key(&mut e, old)?;
        if replacement {
            append_document(&mut e, cstr!("o"), new)?;
        } else {
            let mut d = diff(old, new);
            let paths = disambiguated_paths(&d, old, new);
            if !paths.is_empty() {
                d.insert("p", paths);
            }
            append_document(&mut e, cstr!("d"), &d)?;
            if images {
                append_document(&mut e, cstr!("post"), new)?;
            }
        }
        if images {
            append_document(&mut e, cstr!("pre"), old)?;
        }
        Some(())
    })();
    if appended.is_some() {
        txn.append_log(e.as_bytes());
    }
}

/// Logs a delete.
pub fn delete(txn: &mut dyn Txn, meta: &CollectionMeta, old: &Document) {
    let mut e = raw_base("d", meta, ENTRY_ROOM);
    let appended = (|| {
        append_key(&mut e, old)?;
        if images_enabled(meta) {
            append_document(&mut e, cstr!("pre"), old)?;
        }
        Some(())
    })();
    if appended.is_some() {
        txn.append_log(e.as_bytes());
    }
}

/// What an entry is given room for beyond its fixed fields when its size is not known in
/// advance: an `_id` and a small update description.
const ENTRY_ROOM: usize = 128;

/// The fields every collection entry starts with, as raw BSON: each entry is appended field
/// by field, never built as a `Document` only to be encoded once. The buffer is allocated once,
/// with `room` bytes for what follows, rather than grown by each field.
fn raw_base(op: &str, meta: &CollectionMeta, room: usize) -> RawDocumentBuf {
    // The fixed fields take the namespace and under 64 bytes besides (`op`, the headers, a UUID).
    let mut e = crate::doc::raw_with_room(64 + meta.db.len() + meta.name.len() + room);
    e.append(cstr!("op"), op);
    e.append(cstr!("ns"), meta.namespace().as_str());
    // The UUID's bytes in place, without the owned binary value's own allocation.
    let uuid = meta.uuid.bytes();
    e.append(
        cstr!("ui"),
        bson::RawBsonRef::Binary(bson::RawBinaryRef {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: &uuid,
        }),
    );
    e
}

/// Appends `doc` to a raw entry under `key`, encoded once. `None` when it cannot be encoded
/// (a document that was just stored always can): the entry is then skipped rather than failing
/// the write.
fn append_document(e: &mut RawDocumentBuf, key: &bson::raw::CStr, doc: &Document) -> Option<()> {
    let bytes = doc.to_vec().ok()?;
    e.append(key, RawDocument::from_bytes(&bytes).ok()?);
    Some(())
}

/// Logs a DDL event on a collection (`drop`, `create`, `createIndexes`, `dropIndexes`,
/// `modify`) with its details.
pub fn ddl(txn: &mut dyn Txn, meta: &CollectionMeta, op: &str, details: Bson) {
    let mut e = raw_base(op, meta, ENTRY_ROOM);
    // Details that cannot be encoded skip the entry, as in `append_document`.
    let Ok(details) = RawBson::try_from(details) else { return };
    e.append(cstr!("o"), details);
    txn.append_log(e.as_bytes());
}

/// Logs a rename of `meta` (the collection as it was) to `to` (`db.coll`); `dropped` is the
/// UUID of the target collection `dropTarget` replaced.
pub fn rename(txn: &mut dyn Txn, meta: &CollectionMeta, to: &str, dropped: Option<bson::Uuid>) {
    let mut e = raw_base("rename", meta, ENTRY_ROOM);
    e.append(cstr!("to"), to);
    if let Some(uuid) = dropped {
        e.append(cstr!("dropTarget"), bson::Binary::from_uuid(uuid));
    }
    txn.append_log(e.as_bytes());
}

/// Logs a dropDatabase (after the drops of its collections).
pub fn drop_database(txn: &mut dyn Txn, db: &str) {
    let mut e = RawDocumentBuf::new();
    e.append(cstr!("op"), "dropDatabase");
    e.append(cstr!("ns"), db);
    txn.append_log(e.as_bytes());
}

/// The update description of `old` → `new`: `{u: updatedFields, r: removedFields, t:
/// truncatedArrays}`.
pub fn diff(old: &Document, new: &Document) -> Document {
    let mut updated = Document::new();
    let mut removed = Vec::new();
    let mut truncated = Vec::new();
    diff_docs("", old, new, &mut updated, &mut removed, &mut truncated);
    doc! { "u": updated, "r": removed, "t": truncated }
}

/// `disambiguatedPaths`: each updated, removed or truncated path with a component that looks
/// like a number, as an array of its components: array indexes as integers, field names as
/// strings. Which one a component is comes from the document the path was taken from.
fn disambiguated_paths(d: &Document, old: &Document, new: &Document) -> Document {
    let mut out = Document::new();
    let updated = d.get_document("u").map(|u| u.keys().cloned().collect::<Vec<_>>());
    let removed = d
        .get_array("r")
        .map(|r| r.iter().filter_map(|p| p.as_str().map(String::from)).collect::<Vec<_>>());
    let truncated = d.get_array("t").map(|t| {
        t.iter()
            .filter_map(|t| t.as_document().and_then(|t| t.get_str("field").ok()).map(String::from))
            .collect::<Vec<_>>()
    });
    let sources = [
        (updated.unwrap_or_default(), new),
        (removed.unwrap_or_default(), old),
        (truncated.unwrap_or_default(), new),
    ];
    for (paths, source) in sources {
        for path in paths {
            if !path.split('.').any(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())) {
                continue;
            }
            let mut parts = Vec::new();
            let mut at = Some(Bson::Document(source.clone()));
            for c in path.split('.') {
                let (part, next) = match &at {
                    Some(Bson::Array(a)) => match c.parse::<usize>() {
                        Ok(i) => (Bson::Int32(i as i32), a.get(i).cloned()),
                        Err(_) => (Bson::String(c.to_string()), None),
                    },
                    Some(Bson::Document(d)) => (Bson::String(c.to_string()), d.get(c).cloned()),
                    _ => (Bson::String(c.to_string()), None),
                };
                parts.push(part);
                at = next;
            }
            out.insert(path, parts);
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

fn diff_docs(
    prefix: &str,
    old: &Document,
    new: &Document,
    updated: &mut Document,
    removed: &mut Vec<Bson>,
    truncated: &mut Vec<Bson>,
) {
    // Most fields are unchanged: their paths are never built.
    for (k, v) in new {
        match old.get(k) {
            Some(o) if o == v => {}
            Some(o) => diff_values(&join(prefix, k), o, v, updated, removed, truncated),
            None => {
                updated.insert(join(prefix, k), v.clone());
            }
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            removed.push(Bson::String(join(prefix, k)));
        }
    }
}

fn diff_values(
    path: &str,
    old: &Bson,
    new: &Bson,
    updated: &mut Document,
    removed: &mut Vec<Bson>,
    truncated: &mut Vec<Bson>,
) {
    match (old, new) {
        // An embedded document that kept every field is described field by field; one that
        // lost fields is reported whole, as a `$set` of the field reports it.
        (Bson::Document(o), Bson::Document(n)) if o.keys().all(|k| n.contains_key(k)) => {
            diff_docs(path, o, n, updated, removed, truncated);
        }
        (Bson::Array(o), Bson::Array(n)) => {
            if n.len() < o.len() {
                truncated.push(Bson::Document(doc! { "field": path, "newSize": n.len() as i32 }));
            }
            for (i, v) in n.iter().enumerate() {
                let p = format!("{path}.{i}");
                match o.get(i) {
                    Some(ov) if ov == v => {}
                    Some(ov) => diff_values(&p, ov, v, updated, removed, truncated),
                    None => {
                        updated.insert(p, v.clone());
                    }
                }
            }
        }
        _ => {
            updated.insert(path.to_string(), new.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_report_paths_removals_and_truncations() {
        let old =
            doc! { "_id": 1, "a": 1, "b": {"c": 1, "d": 2}, "e": [1, 2, 3], "f": {"g": 1}, "h": 0 };
        let new =
            doc! { "_id": 1, "a": 2, "b": {"c": 1, "d": 3}, "e": [1, 5], "f": {"x": 1}, "i": [] };
        let d = diff(&old, &new);
        assert_eq!(
            d.get_document("u").unwrap(),
            &doc! { "a": 2, "b.d": 3, "e.1": 5, "f": {"x": 1}, "i": [] }
        );
        assert_eq!(d.get_array("r").unwrap(), &vec![Bson::String("h".into())]);
        assert_eq!(
            d.get_array("t").unwrap(),
            &vec![Bson::Document(doc! {"field": "e", "newSize": 2})]
        );
        let pushed = diff(&doc! {"a": [1]}, &doc! {"a": [1, 2]});
        assert_eq!(pushed.get_document("u").unwrap(), &doc! { "a.1": 2 });
    }
}
