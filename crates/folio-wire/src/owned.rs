//! Raw BSON to owned [`Document`]s, element by element.
//!
//! The `bson` crate converts a [`RawDocument`] by first copying every value into an owned raw
//! value (an embedded document becomes a fresh byte buffer) and then parsing that copy, once
//! per nesting level. Commands and stored documents are converted on every request, so this
//! walks the raw document once and builds each owned value straight from the borrowed one;
//! only the rare types take the crate's own path.

use bson::raw::{RawArray, RawBson, RawBsonRef, RawDocument};
use bson::{Binary, Bson, Document, JavaScriptCodeWithScope};

use crate::MAX_BSON_DEPTH;

/// The owned form of a raw document, validated as it is walked (as the `bson` crate's
/// conversion validates), and refused past [`MAX_BSON_DEPTH`] levels of nesting: the walk
/// recurses, so the bound is what keeps a hostile document from exhausting the stack.
pub fn to_document(raw: &RawDocument) -> Result<Document, String> {
    document_at(raw, 1)
}

/// [`to_document`], and whether the raw document held a field name twice (the owned one then
/// has fewer fields than the raw one had elements: a repeated name keeps one value), found
/// without a second walk. A top-level embedded document named `skip` is validated as the rest
/// is (unless it is a `$clusterTime` as this server writes them, [`crate::is_own_cluster_time`],
/// which is known to be well-formed), but left out of the owned document.
pub fn to_document_checking_duplicates(
    raw: &RawDocument,
    skip: Option<&str>,
) -> Result<(Document, bool), String> {
    let (doc, elements, skipped) = counted_document_at(raw, 1, skip)?;
    let repeated = skipped > 1 || doc.len() + skipped != elements;
    Ok((doc, repeated))
}

/// Walks a raw document `depth` deep as [`to_document`] would, building nothing: the same
/// errors for the same bytes ([`inspect`]'s walk, its shape unused).
fn validate_at(raw: &RawDocument, depth: usize) -> Result<(), String> {
    inspect_document(raw, depth, &mut Shape { levels: 0, canonical: true })
}

/// What [`inspect`] learns of a raw document besides its validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The nesting level of the deepest element: 1 when every element is at the top level (an
    /// empty embedded document or array adds no level), 0 for an empty document.
    pub levels: usize,
    /// Whether the owned form encodes back to these very bytes: no field name twice within a
    /// document (the owned form keeps one), every array's keys `0`, `1`, ... in order (the
    /// owned form renumbers them), and none of the rare types whose owned form may be written
    /// differently (regular expressions, code with scope, pointers, old-style binary ...).
    pub canonical: bool,
}

/// Validates a raw document as [`to_document`] would (the same errors for the same bytes, the
/// same bound on nesting) without building anything, and returns its [`Shape`].
pub fn inspect(raw: &RawDocument) -> Result<Shape, String> {
    let mut shape = Shape { levels: 0, canonical: true };
    inspect_document(raw, 1, &mut shape)?;
    Ok(shape)
}

/// [`inspect`] of a document whose elements are at level `depth`.
fn inspect_document(raw: &RawDocument, depth: usize, shape: &mut Shape) -> Result<(), String> {
    // The names seen, for the repeated-name check: the first few on the stack, compared one by
    // one as they come; past those, all of them in a vector sorted once at the end (a document
    // of a million fields must not cost a million squared comparisons).
    const FEW: usize = 16;
    let mut few = [""; FEW];
    let mut many: Vec<&str> = Vec::new();
    for (i, element) in raw.into_iter().enumerate() {
        let (key, value) = element.map_err(|e| e.to_string())?;
        shape.levels = shape.levels.max(depth);
        let name = key.as_str();
        if i < FEW {
            if few[..i].contains(&name) {
                shape.canonical = false;
            }
            few[i] = name;
        } else {
            if many.is_empty() {
                many.extend_from_slice(&few);
            }
            many.push(name);
        }
        inspect_value(value, depth, shape)?;
    }
    if !many.is_empty() && shape.canonical {
        many.sort_unstable();
        if many.windows(2).any(|w| w[0] == w[1]) {
            shape.canonical = false;
        }
    }
    Ok(())
}

/// [`inspect`] of one value held `depth` deep.
fn inspect_value(value: RawBsonRef<'_>, depth: usize, shape: &mut Shape) -> Result<(), String> {
    match value {
        RawBsonRef::Document(d) => inspect_document(d, nested(depth)?, shape),
        RawBsonRef::Array(a) => {
            let depth = nested(depth)?;
            for (i, element) in a.iter_elements().enumerate() {
                let element = element.map_err(|e| e.to_string())?;
                shape.levels = shape.levels.max(depth);
                if !is_index(element.key().as_str(), i) {
                    shape.canonical = false;
                }
                inspect_value(element.value().map_err(|e| e.to_string())?, depth, shape)?;
            }
            Ok(())
        }
        RawBsonRef::Binary(b) => {
            if b.subtype == bson::spec::BinarySubtype::BinaryOld {
                shape.canonical = false;
            }
            Ok(())
        }
        RawBsonRef::Double(_)
        | RawBsonRef::String(_)
        | RawBsonRef::Boolean(_)
        | RawBsonRef::Null
        | RawBsonRef::Int32(_)
        | RawBsonRef::Int64(_)
        | RawBsonRef::ObjectId(_)
        | RawBsonRef::DateTime(_)
        | RawBsonRef::Timestamp(_)
        | RawBsonRef::Decimal128(_) => Ok(()),
        other => {
            shape.canonical = false;
            bson_at(other, depth).map(drop)
        }
    }
}

/// Whether an array element's key is its position, written as BSON writes it (`0`, `1`, ...).
fn is_index(key: &str, i: usize) -> bool {
    let digits = i.checked_ilog10().map_or(1, |d| d as usize + 1);
    key.len() == digits && key.bytes().all(|b| b.is_ascii_digit()) && key.parse() == Ok(i)
}

/// The depth of a value nested one level below `depth`, or the error past [`MAX_BSON_DEPTH`].
fn nested(depth: usize) -> Result<usize, String> {
    if depth >= MAX_BSON_DEPTH {
        Err(format!("BSON nesting exceeds the maximum depth of {MAX_BSON_DEPTH}"))
    } else {
        Ok(depth + 1)
    }
}

/// The owned form of one raw value found at the top level of a document, validated and
/// depth-bounded like [`to_document`].
pub fn to_bson(value: RawBsonRef<'_>) -> Result<Bson, String> {
    bson_at(value, 1)
}

/// `raw`, nested `depth` documents deep (the top level is 1).
fn document_at(raw: &RawDocument, depth: usize) -> Result<Document, String> {
    counted_document_at(raw, depth, None).map(|(doc, _, _)| doc)
}

/// [`document_at`], how many elements the raw document held, and how many of them were
/// embedded documents named `skip`, validated but left out.
fn counted_document_at(
    raw: &RawDocument,
    depth: usize,
    skip: Option<&str>,
) -> Result<(Document, usize, usize), String> {
    let mut doc = Document::new();
    let (mut elements, mut skipped) = (0usize, 0usize);
    for element in raw {
        let (key, value) = element.map_err(|e| e.to_string())?;
        elements += 1;
        if let RawBsonRef::Document(d) = value
            && skip == Some(key.as_str())
        {
            // Usually a `$clusterTime` this server wrote, known to be well-formed.
            let depth = nested(depth)?;
            if !crate::times::is_own_cluster_time(d) {
                validate_at(d, depth)?;
            }
            skipped += 1;
            continue;
        }
        doc.insert(key.as_str(), bson_at(value, depth)?);
    }
    Ok((doc, elements, skipped))
}

/// The owned form of a raw array inside a document `depth` deep.
fn array_at(raw: &RawArray, depth: usize) -> Result<Vec<Bson>, String> {
    raw.into_iter().map(|value| bson_at(value.map_err(|e| e.to_string())?, depth)).collect()
}

/// The owned form of one raw value held by a document `depth` deep.
fn bson_at(value: RawBsonRef<'_>, depth: usize) -> Result<Bson, String> {
    let nested = || nested(depth);
    Ok(match value {
        RawBsonRef::Double(d) => Bson::Double(d),
        RawBsonRef::String(s) => Bson::String(s.to_owned()),
        RawBsonRef::Document(d) => Bson::Document(document_at(d, nested()?)?),
        RawBsonRef::Array(a) => Bson::Array(array_at(a, nested()?)?),
        RawBsonRef::Boolean(b) => Bson::Boolean(b),
        RawBsonRef::Null => Bson::Null,
        RawBsonRef::Int32(i) => Bson::Int32(i),
        RawBsonRef::Int64(i) => Bson::Int64(i),
        RawBsonRef::ObjectId(id) => Bson::ObjectId(id),
        RawBsonRef::DateTime(t) => Bson::DateTime(t),
        RawBsonRef::Timestamp(t) => Bson::Timestamp(t),
        RawBsonRef::Decimal128(d) => Bson::Decimal128(d),
        RawBsonRef::Binary(b) => {
            Bson::Binary(Binary { subtype: b.subtype, bytes: b.bytes.to_vec() })
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: c.code.to_owned(),
                scope: document_at(c.scope, nested()?)?,
            })
        }
        // The remaining types hold no documents (regular expressions, code, symbols,
        // pointers, the min/max keys and undefined): the crate's conversion, cheap for them.
        other => Bson::try_from(RawBson::from(other)).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId};

    use super::*;

    /// Every BSON type converts exactly as the `bson` crate converts it.
    #[test]
    fn converts_every_type_like_the_bson_crate() {
        let original = doc! {
            "double": 1.5, "string": "s", "doc": { "a": [1, { "b": null }], "c": { "d": true } },
            "array": [1i64, "x", [2.5]], "bool": false, "null": null, "int32": 7, "int64": 8i64,
            "oid": ObjectId::new(), "date": bson::DateTime::from_millis(12),
            "ts": bson::Timestamp { time: 1, increment: 2 },
            "dec": "1.25".parse::<bson::Decimal128>().expect("decimal"),
            "bin": Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] },
            "regex": bson::Regex {
                pattern: "^a".try_into().expect("pattern"),
                options: "i".try_into().expect("options"),
            },
            "code": Bson::JavaScriptCode("f()".into()),
            "scope": Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                code: "g()".into(), scope: doc! { "x": 1 },
            }),
            "symbol": Bson::Symbol("sym".into()), "undefined": Bson::Undefined,
            "max": Bson::MaxKey, "min": Bson::MinKey,
        };
        let bytes = original.to_vec().expect("encode");
        let raw = RawDocument::from_bytes(&bytes).expect("raw");
        let ours = to_document(raw).expect("converts");
        assert_eq!(ours, Document::try_from(raw).expect("the crate converts"));
        assert_eq!(ours, original);
    }

    /// A skipped field is left out, counted for the repeated-name check, and validated.
    #[test]
    fn a_skipped_field_is_left_out_but_still_checked() {
        let cluster = doc! { "clusterTime": bson::Timestamp { time: 1, increment: 2 },
        "signature": { "hash": Binary { subtype: bson::spec::BinarySubtype::Generic,
            bytes: vec![0; 20] }, "keyId": 0i64 } };
        let body = doc! { "find": "c", "$clusterTime": cluster.clone(), "$db": "d" };
        let bytes = body.to_vec().expect("encode");
        let raw = RawDocument::from_bytes(&bytes).expect("raw");
        let (kept, repeated) = to_document_checking_duplicates(raw, Some("$clusterTime")).unwrap();
        assert_eq!(kept, doc! { "find": "c", "$db": "d" });
        assert!(!repeated);
        // Without a skip everything is kept.
        let (all, _) = to_document_checking_duplicates(raw, None).unwrap();
        assert_eq!(all, body);

        // Named twice: a repeated name, even though neither is kept.
        let mut twice = bson::RawDocumentBuf::new();
        let cluster_raw = bson::RawDocumentBuf::try_from(&cluster).unwrap();
        twice.append(bson::raw::cstr!("find"), "c");
        twice.append(bson::raw::cstr!("$clusterTime"), cluster_raw.clone());
        twice.append(bson::raw::cstr!("$clusterTime"), cluster_raw);
        assert!(to_document_checking_duplicates(&twice, Some("$clusterTime")).unwrap().1);

        // Damaged inside: the same error as when it is converted.
        let body = doc! { "$clusterTime": { "s": "text", "n": 1 }, "find": "c" };
        let mut bytes = body.to_vec().expect("encode");
        let at = bytes.windows(4).position(|w| w == [5, 0, 0, 0]).expect("the string's length");
        bytes[at] = 0x7f;
        let raw = RawDocument::from_bytes(&bytes).expect("the header is intact");
        let skipped = to_document_checking_duplicates(raw, Some("$clusterTime"));
        assert!(skipped.is_err());
        assert_eq!(skipped.err(), to_document_checking_duplicates(raw, None).err());

        // Nested too deep: refused as a converted document is.
        let mut deep = doc! { "x": 1 };
        for _ in 0..crate::MAX_BSON_DEPTH + 2 {
            deep = doc! { "d": [deep] };
        }
        let bytes = doc! { "$clusterTime": deep, "find": "c" }.to_vec().expect("encode");
        let raw = RawDocument::from_bytes(&bytes).expect("raw");
        let skipped = to_document_checking_duplicates(raw, Some("$clusterTime"));
        assert!(skipped.is_err());
        assert_eq!(skipped.err(), to_document_checking_duplicates(raw, None).err());
    }

    /// A malformed element fails the conversion instead of being skipped.
    #[test]
    fn a_malformed_element_is_an_error() {
        let mut bytes = doc! { "a": "text", "b": 1 }.to_vec().expect("encode");
        // The string's length prefix now points past the document.
        bytes[7] = 0x7f;
        let raw = RawDocument::from_bytes(&bytes).expect("the header is intact");
        assert!(to_document(raw).is_err());
        assert!(Document::try_from(raw).is_err());
    }

    /// A canonical document's owned form encodes back to its bytes; each way of being
    /// otherwise is found; the levels count the deepest element.
    #[test]
    fn inspect_finds_the_shape_and_agrees_with_the_conversion() {
        let plain = doc! { "_id": 1, "a": { "b": [1, { "c": "d" }] }, "e": [], "f": {} };
        let bytes = plain.to_vec().expect("encode");
        let raw = RawDocument::from_bytes(&bytes).expect("raw");
        assert_eq!(inspect(raw), Ok(Shape { levels: 4, canonical: true }));
        assert_eq!(to_document(raw).expect("converts").to_vec().expect("encode"), bytes);
        let empty = bson::RawDocumentBuf::new();
        assert_eq!(inspect(&empty), Ok(Shape { levels: 0, canonical: true }));

        // A name repeated among the first few fields, or among many.
        let mut twice = bson::RawDocumentBuf::new();
        twice.append(bson::raw::cstr!("a"), 1);
        twice.append(bson::raw::cstr!("a"), 2);
        assert!(!inspect(&twice).expect("valid").canonical);
        let mut many = doc! {};
        for i in 0..40 {
            many.insert(format!("f{i}"), i);
        }
        let mut late = bson::RawDocumentBuf::try_from(&many).expect("encode");
        assert!(inspect(&late).expect("valid").canonical);
        late.append(bson::raw::cstr!("f3"), 0);
        assert!(!inspect(&late).expect("valid").canonical);

        // An array numbered oddly: a document `{"1": 0}` whose type byte says array.
        let mut odd = doc! { "arr": { "1": 0 } }.to_vec().expect("encode");
        odd[4] = 0x04;
        let odd = RawDocument::from_bytes(&odd).expect("raw");
        assert_eq!(inspect(odd), Ok(Shape { levels: 2, canonical: false }));
        assert!(is_index("0", 0) && is_index("10", 10));
        assert!(!is_index("01", 1) && !is_index("+1", 1) && !is_index("", 0));

        // A rare type: validated, but not canonical.
        let regex = doc! { "r": bson::Regex {
            pattern: "a".try_into().expect("pattern"), options: "mi".try_into().expect("options"),
        } };
        let bytes = regex.to_vec().expect("encode");
        assert!(!inspect(RawDocument::from_bytes(&bytes).expect("raw")).expect("valid").canonical);

        // Damage and depth: the conversion's errors.
        let mut bytes = doc! { "a": "text", "b": 1 }.to_vec().expect("encode");
        bytes[7] = 0x7f;
        let raw = RawDocument::from_bytes(&bytes).expect("the header is intact");
        assert_eq!(inspect(raw).err(), to_document(raw).err());
        let mut deep = doc! { "x": 1 };
        for _ in 0..crate::MAX_BSON_DEPTH + 2 {
            deep = doc! { "d": [deep] };
        }
        let bytes = deep.to_vec().expect("encode");
        let raw = RawDocument::from_bytes(&bytes).expect("raw");
        assert!(inspect(raw).is_err());
        assert_eq!(inspect(raw).err(), to_document(raw).err());
    }
}
