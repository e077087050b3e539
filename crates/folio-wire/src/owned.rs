//! Raw BSON to owned [`Document`]s, element by element.
//!
//! The `bson` crate converts a [`RawDocument`] by first copying every value into an owned raw
//! value (an embedded document becomes a fresh byte buffer) and then parsing that copy, once
//! per nesting level. Commands and stored documents are converted on every request, so this
//! walks the raw document once and builds each owned value straight from the borrowed one;
//! only the rare types take the crate's own path.

use bson::raw::{RawArray, RawBson, RawBsonRef, RawDocument};
use bson::{Binary, Bson, Document};

/// The owned form of a raw document. The raw document is validated as it is walked, as the
/// `bson` crate's conversion does.
pub fn to_document(raw: &RawDocument) -> Result<Document, bson::error::Error> {
    let mut doc = Document::new();
    for element in raw {
        let (key, value) = element?;
        doc.insert(key.as_str(), to_bson(value)?);
    }
    Ok(doc)
}

/// The owned form of a raw array.
fn to_array(raw: &RawArray) -> Result<Vec<Bson>, bson::error::Error> {
    raw.into_iter().map(|value| to_bson(value?)).collect()
}

/// The owned form of one raw value.
pub fn to_bson(value: RawBsonRef<'_>) -> Result<Bson, bson::error::Error> {
    Ok(match value {
        RawBsonRef::Double(d) => Bson::Double(d),
        RawBsonRef::String(s) => Bson::String(s.to_owned()),
        RawBsonRef::Document(d) => Bson::Document(to_document(d)?),
        RawBsonRef::Array(a) => Bson::Array(to_array(a)?),
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
        // Rare types (regular expressions, code, symbols, pointers, the min/max keys and
        // undefined): the crate's conversion, which copies nothing large for them.
        other => Bson::try_from(RawBson::from(other))?,
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
