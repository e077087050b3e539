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
/// without a second walk.
pub fn to_document_checking_duplicates(raw: &RawDocument) -> Result<(Document, bool), String> {
    let (doc, elements) = counted_document_at(raw, 1)?;
    let repeated = doc.len() != elements;
    Ok((doc, repeated))
}

/// The owned form of one raw value found at the top level of a document, validated and
/// depth-bounded like [`to_document`].
pub fn to_bson(value: RawBsonRef<'_>) -> Result<Bson, String> {
    bson_at(value, 1)
}

/// `raw`, nested `depth` documents deep (the top level is 1).
fn document_at(raw: &RawDocument, depth: usize) -> Result<Document, String> {
    counted_document_at(raw, depth).map(|(doc, _)| doc)
}

/// [`document_at`], and how many elements the raw document held.
fn counted_document_at(raw: &RawDocument, depth: usize) -> Result<(Document, usize), String> {
    let mut doc = Document::new();
    let mut elements = 0usize;
    for element in raw {
        let (key, value) = element.map_err(|e| e.to_string())?;
        doc.insert(key.as_str(), bson_at(value, depth)?);
        elements += 1;
    }
    Ok((doc, elements))
}

/// The owned form of a raw array inside a document `depth` deep.
fn array_at(raw: &RawArray, depth: usize) -> Result<Vec<Bson>, String> {
    raw.into_iter().map(|value| bson_at(value.map_err(|e| e.to_string())?, depth)).collect()
}

/// The owned form of one raw value held by a document `depth` deep.
fn bson_at(value: RawBsonRef<'_>, depth: usize) -> Result<Bson, String> {
    let nested = || {
        if depth >= MAX_BSON_DEPTH {
            Err(format!("BSON nesting exceeds the maximum depth of {MAX_BSON_DEPTH}"))
        } else {
            Ok(depth + 1)
        }
    };
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
}
