//! Validation of documents before they are stored, with MongoDB 8.0's rules and messages.
//!
//! Three paths write documents, and MongoDB checks each a little differently:
//!
//! - **Insert** ([`prepare_insert`]): the document must fit in 16 MiB (BSONObjectTooLarge) and
//!   100 levels of nesting (Overflow); `_id` may not be an array, a regex or undefined
//!   (InvalidIdField, `The '_id' value cannot be of type array`), and an embedded-document `_id`
//!   may not contain `$`-prefixed fields at any depth, except a well-formed DBRef
//!   (DollarPrefixedFieldName, `_id fields may not contain '$'-prefixed fields: $a is not valid
//!   for storage.`). Since MongoDB 5.0 other `$`-prefixed and dotted field names are stored as
//!   they are, at the top level too. The prepared document has `_id` first, an ObjectId generated
//!   when it was missing, and top-level `Timestamp(0, 0)` values replaced by the current time.
//! - **Replacement** ([`validate_replacement`]): the same `_id` rules, but `$`-prefixed fields
//!   are rejected at the top level of the document (and of an embedded `_id`) unless they form a
//!   DBRef; nested ones are allowed.
//! - **Update result** ([`validate_updated`]): what update operators produced; `_id`, nesting and
//!   size are checked, `$`-prefixed names are not (operators cannot create them by accident).
//!
//! Size errors differ by path as in MongoDB: an insert too large is BSONObjectTooLarge (10334),
//! an update whose result is too large is 17419.

use bson::raw::{RawBsonRef, RawDocument};
use bson::{Bson, Document, Timestamp, oid::ObjectId};

use crate::error::Result;

/// The largest document that may be stored, in bytes (16 MiB).
pub const MAX_DOCUMENT_SIZE: usize = 16 * 1024 * 1024;

/// The deepest nesting of documents and arrays that may be stored.
pub const MAX_DEPTH: usize = 100;

/// A document prepared for insert: the document as stored and its BSON.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The document as stored: the caller's own when it already had `_id` first and no
    /// top-level `Timestamp(0, 0)` (what drivers send), else a rewritten copy.
    pub doc: std::borrow::Cow<'a, Document>,
    /// `doc` serialised, once: the size check and the store share it.
    pub bytes: Vec<u8>,
}

/// Prepares a document for insert: validates it and returns it with `_id` first (generated when
/// missing) and top-level `Timestamp(0, 0)` values replaced by `next_timestamp()`, with its BSON.
/// A document that needs none of that is neither copied nor rebuilt.
pub fn prepare_insert<'a>(
    doc: &'a Document,
    next_timestamp: &mut dyn FnMut() -> Timestamp,
) -> Result<Prepared<'a>> {
    let zero = |v: &Bson| matches!(v, Bson::Timestamp(Timestamp { time: 0, increment: 0 }));
    let as_is = doc.keys().next().is_some_and(|k| k == "_id") && !doc.values().skip(1).any(zero);
    // The size is the document's as given (an `_id` added below does not count against it);
    // its BSON is what is stored when nothing is rewritten.
    let given = doc.to_vec()?;
    check_insert_size(given.len())?;
    if exceeds_depth(doc) {
        return Err(too_deep_to_insert());
    }
    if let Some(id) = doc.get("_id") {
        check_id_for_insert(id)?;
    }
    if as_is {
        return Ok(Prepared { doc: std::borrow::Cow::Borrowed(doc), bytes: given });
    }
    let mut out = Document::new();
    out.insert("_id", doc.get("_id").cloned().unwrap_or_else(|| Bson::ObjectId(ObjectId::new())));
    for (k, v) in doc {
        if k == "_id" {
            continue;
        }
        let v = if zero(v) { Bson::Timestamp(next_timestamp()) } else { v.clone() };
        out.insert(k.clone(), v);
    }
    let bytes = out.to_vec()?;
    Ok(Prepared { doc: std::borrow::Cow::Owned(out), bytes })
}

/// [`prepare_insert`] for a document given as its BSON, as it came in an OP_MSG document
/// sequence, without decoding it: the `_id` when the bytes can be stored as they are (their
/// encoding is the one their decoded form would have, `_id` comes first, no top-level
/// `Timestamp(0, 0)` is to be replaced), after the checks [`prepare_insert`] makes, with its
/// errors; `None` when the document needs [`prepare_insert`] (which then makes the checks).
pub fn prepare_raw_insert(raw: &RawDocument, shape: folio_wire::Shape) -> Result<Option<Bson>> {
    // A repeated name or an oddly numbered array: the decoded form differs, and is what counts.
    if !shape.canonical {
        return Ok(None);
    }
    check_insert_size(raw.as_bytes().len())?;
    // The level of the deepest element: past MAX_DEPTH exactly when `exceeds_depth` says so.
    if shape.levels > MAX_DEPTH {
        return Err(too_deep_to_insert());
    }
    let mut elements = raw.iter();
    let id = match elements.next() {
        Some(Ok((name, value))) if name.as_str() == "_id" => {
            folio_wire::to_bson(value).map_err(|e| crate::err!(InvalidBSON, "{}", e))?
        }
        _ => return Ok(None),
    };
    check_id_for_insert(&id)?;
    for element in elements {
        let (_, value) = element.map_err(|e| crate::err!(InvalidBSON, "{}", e))?;
        if matches!(value, RawBsonRef::Timestamp(Timestamp { time: 0, increment: 0 })) {
            return Ok(None);
        }
    }
    Ok(Some(id))
}

/// An insert's size limit (BSONObjectTooLarge).
fn check_insert_size(size: usize) -> Result<()> {
    if size > MAX_DOCUMENT_SIZE {
        crate::bail!(
            BSONObjectTooLarge,
            "object to insert too large. size in bytes: {}, max size: {}",
            size,
            MAX_DOCUMENT_SIZE
        );
    }
    Ok(())
}

/// An insert's nesting limit (Overflow).
fn too_deep_to_insert() -> crate::error::Error {
    crate::err!(
        Overflow,
        "cannot insert document because it exceeds {} levels of nesting",
        MAX_DEPTH
    )
}

/// Validates a replacement document (a replace-style update or `findAndModify` replacement).
#[cfg(test)]
pub fn validate_replacement(doc: &Document) -> Result<()> {
    for (name, value) in doc {
        if name == "_id" {
            check_id_for_update(value)?;
        } else if name.starts_with('$') {
            check_top_level_dollar(doc, name, name)?;
        }
    }
    check_update_shape(doc)
}

/// Validates a document produced by update operators before it is stored.
#[cfg(test)]
pub fn validate_updated(doc: &Document) -> Result<()> {
    if let Some(id) = doc.get("_id") {
        check_id_for_update(id)?;
    }
    check_update_shape(doc)
}

/// Moves `_id` to the front of `doc` (MongoDB stores it first), keeping the other fields' order.
#[cfg(test)]
pub fn with_id_first(doc: Document) -> Document {
    if doc.keys().next().is_none_or(|k| k == "_id") || !doc.contains_key("_id") {
        return doc;
    }
    let mut rest = doc;
    let mut out = Document::new();
    if let Some(id) = rest.remove("_id") {
        out.insert("_id", id);
    }
    out.extend(rest);
    out
}

/// The serialized BSON size of `doc`.
pub fn bson_size(doc: &Document) -> Result<usize> {
    Ok(doc.to_vec()?.len())
}

/// Whether `doc` nests documents or arrays deeper than [`MAX_DEPTH`] levels (the top-level
/// document being level 1; empty containers at the limit are allowed, as in MongoDB).
pub fn exceeds_depth(doc: &Document) -> bool {
    doc.values().any(|v| value_exceeds(v, 1))
}

/// Whether the container `v`, an element at `level`, has children beyond the limit.
fn value_exceeds(v: &Bson, level: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Bson>> = match v {
        Bson::Document(d) => Box::new(d.values()),
        Bson::Array(a) => Box::new(a.iter()),
        _ => return false,
    };
    let mut children = children.peekable();
    if children.peek().is_none() {
        return false;
    }
    level >= MAX_DEPTH || children.any(|c| value_exceeds(c, level + 1))
}

/// Size and depth checks for update results.
#[cfg(test)]
fn check_update_shape(doc: &Document) -> Result<()> {
    if exceeds_depth(doc) {
        crate::bail!(Overflow, "Document exceeds maximum nesting depth of {}", MAX_DEPTH);
    }
    if bson_size(doc)? > MAX_DOCUMENT_SIZE {
        crate::bail!(
            Location17419,
            "Resulting document after update is larger than {}",
            MAX_DOCUMENT_SIZE
        );
    }
    Ok(())
}

/// The `_id` type rule shared by every path.
fn check_id_type(id: &Bson) -> Result<()> {
    if matches!(id, Bson::Array(_) | Bson::RegularExpression(_) | Bson::Undefined) {
        crate::bail!(InvalidIdField, "The '_id' value cannot be of type {}", type_name(id));
    }
    Ok(())
}

/// Insert: the type rule, and no `$`-prefixed names anywhere inside an embedded `_id` except a
/// DBRef (MongoDB's `storageValidEmbedded`).
fn check_id_for_insert(id: &Bson) -> Result<()> {
    check_id_type(id)?;
    if let Bson::Document(d) = id
        && let Some(bad) = dollar_field_in_embedded(d)
    {
        crate::bail!(
            DollarPrefixedFieldName,
            "_id fields may not contain '$'-prefixed fields: {} is not valid for storage.",
            bad
        );
    }
    Ok(())
}

/// Update and replacement: the type rule, and the DBRef rule for the immediate fields of an
/// embedded `_id`.
#[cfg(test)]
fn check_id_for_update(id: &Bson) -> Result<()> {
    check_id_type(id)?;
    if let Bson::Document(d) = id {
        for name in d.keys().filter(|k| k.starts_with('$')) {
            check_top_level_dollar(d, name, &format!("_id.{name}"))?;
        }
    }
    Ok(())
}

/// The first `$`-prefixed field name in `d` or below that is not part of a DBRef.
fn dollar_field_in_embedded(d: &Document) -> Option<String> {
    let names: Vec<&String> = d.keys().collect();
    let dbref = names.first().is_some_and(|n| *n == "$ref")
        && matches!(d.get("$ref"), Some(Bson::String(_)))
        && names.get(1).is_some_and(|n| *n == "$id");
    for (i, name) in names.iter().enumerate() {
        let allowed = dbref
            && (i < 2
                || (i == 2 && *name == "$db" && matches!(d.get("$db"), Some(Bson::String(_)))));
        if name.starts_with('$') && !allowed {
            return Some((*name).clone());
        }
    }
    d.values().find_map(|v| match v {
        Bson::Document(sub) => dollar_field_in_embedded(sub),
        Bson::Array(a) => a.iter().find_map(|item| match item {
            Bson::Document(sub) => dollar_field_in_embedded(sub),
            _ => None,
        }),
        Bson::JavaScriptCodeWithScope(cws) => dollar_field_in_embedded(&cws.scope),
        _ => None,
    })
}

/// Checks a `$`-prefixed field `name` of `parent` where only DBRef fields (`$ref`, `$id`, `$db`
/// in that order) are allowed; `full` is the field's path for the message.
#[cfg(test)]
fn check_top_level_dollar(parent: &Document, name: &str, full: &str) -> Result<()> {
    let names: Vec<&str> = parent.keys().map(String::as_str).collect();
    let pos = names.iter().position(|n| *n == name).unwrap_or(0);
    let before = |i: usize| if i == 0 { None } else { names.get(i - 1).copied() };
    let mut at = pos;
    let mut current = name;
    if current == "$db" {
        if !matches!(parent.get("$db"), Some(Bson::String(_))) {
            crate::bail!(
                InvalidDBRef,
                "The DBRef $db field must be a String, not a {}",
                parent.get("$db").map_or("missing", type_name)
            );
        }
        if before(at) != Some("$id") {
            crate::bail!(
                InvalidDBRef,
                "Found $db field without a $id before it, which is invalid."
            );
        }
        at -= 1;
        current = "$id";
    }
    if current == "$id" {
        if before(at) != Some("$ref") {
            crate::bail!(
                InvalidDBRef,
                "Found $id field without a $ref before it, which is invalid."
            );
        }
        at -= 1;
        current = "$ref";
    }
    if current == "$ref" {
        if let Some(v) = parent.get("$ref").filter(|v| !matches!(v, Bson::String(_))) {
            crate::bail!(
                InvalidDBRef,
                "The DBRef $ref field must be a String, not a {}",
                type_name(v)
            );
        }
        if names.get(at + 1) != Some(&"$id") {
            crate::bail!(InvalidDBRef, "The DBRef $ref field must be followed by a $id field");
        }
        return Ok(());
    }
    crate::bail!(
        DollarPrefixedFieldName,
        "The dollar ($) prefixed field '{}' in '{}' is not allowed in the context of an update's \
         replacement document. Consider using an aggregation pipeline with $replaceWith.",
        name,
        full
    )
}

pub use crate::doc::type_name;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Regex, doc};

    fn ts() -> Timestamp {
        Timestamp { time: 77, increment: 1 }
    }

    fn insert(d: Document) -> Result<Document> {
        let prepared = prepare_insert(&d, &mut ts)?;
        assert_eq!(prepared.bytes, prepared.doc.to_vec().unwrap(), "the BSON is the document's");
        Ok(prepared.doc.into_owned())
    }

    fn code_and_message(r: Result<impl std::fmt::Debug>) -> (i32, String) {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => (e.code_number(), e.message),
        }
    }

    /// Nests `levels` documents below the top level: `{a: {a: … {}}}`.
    fn nested(levels: usize, innermost: Document) -> Document {
        let mut d = innermost;
        for _ in 0..levels {
            d = doc! {"a": d};
        }
        d
    }

    #[test]
    fn insert_accepts_what_mongodb_8_accepts() {
        let accepted = [
            doc! {"_id": 1, "$a": 1},
            doc! {"_id": 1, "a.b": 1},
            doc! {"_id": 1, "a": {"$b": 1}},
            doc! {"_id": 1, "a": {"b.c": 1}},
            doc! {"_id": {"a.b": 1}},
            doc! {"_id": 1, "a": {"$db": "foo"}},
            doc! {"_id": {"$ref": "c", "$id": 1, "$db": "d"}},
            doc! {"_id": null},
            doc! {"": 1},
        ];
        for d in accepted {
            let prepared = insert(d.clone()).unwrap_or_else(|e| panic!("{d}: {e}"));
            assert_eq!(prepared.len(), d.len().max(1) + usize::from(!d.contains_key("_id")));
        }
    }

    #[test]
    fn insert_rejects_bad_ids() {
        let cases = [
            (doc! {"_id": [1]}, 53, "The '_id' value cannot be of type array"),
            (
                doc! {"_id": Regex { pattern: "a".try_into().unwrap(), options: "".try_into().unwrap() }},
                53,
                "The '_id' value cannot be of type regex",
            ),
            (doc! {"_id": Bson::Undefined}, 53, "The '_id' value cannot be of type undefined"),
            (
                doc! {"_id": {"$a": 1}},
                52,
                "_id fields may not contain '$'-prefixed fields: $a is not valid for storage.",
            ),
            (
                doc! {"_id": {"x": {"y": [{"$oid": 1}]}}},
                52,
                "_id fields may not contain '$'-prefixed fields: $oid is not valid for storage.",
            ),
            (
                doc! {"_id": {"$id": 1, "$ref": "c"}},
                52,
                "_id fields may not contain '$'-prefixed fields: $id is not valid for storage.",
            ),
        ];
        for (d, code, message) in cases {
            assert_eq!(code_and_message(insert(d.clone())), (code, message.to_string()), "{d}");
        }
    }

    #[test]
    fn insert_puts_id_first_and_fills_timestamps() {
        let d = insert(doc! {"a": 1, "_id": 2, "t": Timestamp { time: 0, increment: 0 }}).unwrap();
        assert_eq!(d, doc! {"_id": 2, "a": 1, "t": ts()});
        let generated = insert(doc! {"a": 1}).unwrap();
        assert_eq!(generated.keys().collect::<Vec<_>>(), ["_id", "a"]);
        assert!(matches!(generated.get("_id"), Some(Bson::ObjectId(_))));
        // Nested zero timestamps are kept.
        let nested_ts = doc! {"_id": 1, "s": {"t": Timestamp { time: 0, increment: 0 }}};
        assert_eq!(insert(nested_ts.clone()).unwrap(), nested_ts);
    }

    #[test]
    fn nesting_depth_is_limited_to_100() {
        // The top level is level 1, so 99 nested documents reach level 100.
        assert!(insert(nested(99, doc! {"x": 1})).is_ok());
        assert!(insert(nested(100, doc! {})).is_ok(), "empty containers at the limit are fine");
        assert_eq!(
            code_and_message(insert(nested(100, doc! {"x": 1}))),
            (15, "cannot insert document because it exceeds 100 levels of nesting".into())
        );
        assert_eq!(
            code_and_message(validate_updated(&nested(99, doc! {"x": [1]}))),
            (15, "Document exceeds maximum nesting depth of 100".into())
        );
        assert!(validate_updated(&nested(98, doc! {"x": [1]})).is_ok());
    }

    #[test]
    fn size_is_limited_to_16_mib() {
        let big = "x".repeat(MAX_DOCUMENT_SIZE);
        let (code, message) = code_and_message(insert(doc! {"_id": 1, "s": big.clone()}));
        assert_eq!(code, 10334);
        assert!(
            message.starts_with("object to insert too large. size in bytes: 167772"),
            "{message}"
        );
        assert_eq!(code_and_message(validate_updated(&doc! {"s": big})).0, 17419);
        let fits = "x".repeat(MAX_DOCUMENT_SIZE - 100);
        assert!(insert(doc! {"_id": 1, "s": fits}).is_ok());
    }

    #[test]
    fn replacement_rules() {
        assert!(validate_replacement(&doc! {"_id": 1, "a.b": 1, "a": {"$b": 1, "c.d": 2}}).is_ok());
        assert!(validate_replacement(&doc! {"$ref": "c", "$id": 1, "$db": "d"}).is_ok());
        let cases = [
            (
                doc! {"_id": 1, "$a": 1},
                52,
                "The dollar ($) prefixed field '$a' in '$a' is not allowed in the context of an \
                 update's replacement document. Consider using an aggregation pipeline with \
                 $replaceWith.",
            ),
            (
                doc! {"_id": {"$x": 1}},
                52,
                "The dollar ($) prefixed field '$x' in '_id.$x' is not allowed in the context of \
                 an update's replacement document. Consider using an aggregation pipeline with \
                 $replaceWith.",
            ),
            (doc! {"_id": [1, 2]}, 53, "The '_id' value cannot be of type array"),
            (doc! {"$id": 1}, 55, "Found $id field without a $ref before it, which is invalid."),
            (doc! {"$ref": 1, "$id": 1}, 55, "The DBRef $ref field must be a String, not a int"),
            (doc! {"$ref": "c"}, 55, "The DBRef $ref field must be followed by a $id field"),
            (
                doc! {"$ref": "c", "$id": 1, "$db": 2},
                55,
                "The DBRef $db field must be a String, not a int",
            ),
        ];
        for (d, code, message) in cases {
            assert_eq!(
                code_and_message(validate_replacement(&d)),
                (code, message.to_string()),
                "{d}"
            );
        }
    }

    #[test]
    fn id_is_moved_first() {
        assert_eq!(with_id_first(doc! {"a": 1, "_id": 2, "b": 3}), doc! {"_id": 2, "a": 1, "b": 3});
        assert_eq!(with_id_first(doc! {"a": 1}), doc! {"a": 1});
        let d = with_id_first(doc! {"a": 1, "_id": 2});
        assert_eq!(d.keys().next().map(String::as_str), Some("_id"));
    }

    /// A document given as BSON is stored as it came exactly when it needs no change, and
    /// otherwise goes the decoded way; the checks answer alike either way, at the limits too.
    #[test]
    fn raw_insert_agrees_with_the_decoded_insert() {
        let raw_of = |d: &Document| bson::RawDocumentBuf::try_from(d).unwrap();
        let prepare_raw = |d: &Document| {
            let raw = raw_of(d);
            prepare_raw_insert(&raw, folio_wire::inspect(&raw).unwrap())
        };
        // Stored as they came: `_id` first, nothing to replace.
        for d in [
            doc! {"_id": 1, "a": [1, {"b": 2}]},
            doc! {"_id": {"a.b": 1}, "$x": 1},
            doc! {"_id": null, "t": Timestamp { time: 0, increment: 5 }},
        ] {
            let id = d.get("_id").cloned();
            assert_eq!(prepare_raw(&d).unwrap(), id, "{d}");
            assert_eq!(insert(d.clone()).unwrap(), d, "the decoded way stores it unchanged too");
        }
        let deepest_ok = doc! {"_id": 1, "n": nested(98, doc! {"x": 1})};
        assert!(prepare_raw(&deepest_ok).unwrap().is_some());
        assert!(insert(deepest_ok).is_ok());
        // The decoded way's business: no `_id`, `_id` not first, a zero timestamp.
        for d in [
            doc! {"a": 1},
            doc! {"a": 1, "_id": 2},
            doc! {"_id": 1, "t": Timestamp { time: 0, increment: 0 }},
        ] {
            assert_eq!(prepare_raw(&d).unwrap(), None, "{d}");
        }
        // The same errors.
        for d in [
            doc! {"_id": [1]},
            doc! {"_id": {"$bad": 1}},
            doc! {"_id": 1, "n": nested(99, doc! {"x": 1})},
            doc! {"_id": 1, "big": "x".repeat(MAX_DOCUMENT_SIZE)},
        ] {
            assert_eq!(
                code_and_message(prepare_raw(&d)),
                code_and_message(insert(d.clone())),
                "{d}"
            );
        }
    }
}
