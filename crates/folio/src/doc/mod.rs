//! Document helpers shared by every layer: MongoDB's cross-type order, field paths, validation.

use bson::Bson;

pub mod validate;

/// MongoDB's canonical type rank (`canonicalizeBSONType`): values of different ranks compare by
/// rank; numbers of all kinds share one rank and compare by value, as do strings and symbols.
pub fn canonical_rank(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined => 1,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

pub mod compare;
pub mod fmt;
pub mod path;
pub mod sort;

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
pub(crate) mod random;

/// A numeric argument as an exact 64-bit integer, as the server's
/// `BSONElement::parseIntegerElementToLong` reads one (`$limit`, `$skip`, count's `limit`):
/// a double or decimal must be integral and within the `long` range; anything else fails with
/// the server's reason, which callers wrap in their own message.
pub fn parse_integer_element(name: &str, v: &Bson) -> Result<i64, String> {
    let elem = || fmt::element_string(name, v);
    let f = match v {
        Bson::Int32(n) => return Ok(i64::from(*n)),
        Bson::Int64(n) => return Ok(*n),
        Bson::Double(d) => *d,
        Bson::Decimal128(d) => d.to_string().parse::<f64>().unwrap_or(f64::NAN),
        _ => return Err(format!("Expected a number in: {}", elem())),
    };
    if f.is_nan() {
        return Err(match v {
            Bson::Double(_) => format!("Expected an integer, but found NaN in: {}", elem()),
            _ => format!("Cannot represent as a 64-bit integer: {}", elem()),
        });
    }
    // 2^63 itself is out of range; `i64::MIN as f64` is exactly -2^63, which is in range.
    if f >= 9_223_372_036_854_775_808.0 || f < i64::MIN as f64 {
        return Err(format!("Cannot represent as a 64-bit integer: {}", elem()));
    }
    if f.fract() != 0.0 {
        return Err(match v {
            Bson::Double(_) => format!("Expected an integer: {}", elem()),
            _ => format!("Cannot represent as a 64-bit integer: {}", elem()),
        });
    }
    Ok(f as i64)
}

/// [`parse_integer_element`] that also refuses negative numbers
/// (`parseIntegerElementToNonNegativeLong`).
pub fn parse_non_negative_integer_element(name: &str, v: &Bson) -> Result<i64, String> {
    let n = parse_integer_element(name, v)?;
    if n < 0 {
        return Err(format!("Expected a non-negative number in: {}", fmt::element_string(name, v)));
    }
    Ok(n)
}

/// MongoDB's truthiness (`$exists` and other flags, `$cond`, `$and`): false, 0, null and
/// undefined are false; every other value is true.
pub fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Int32(i) => *i != 0,
        Bson::Int64(i) => *i != 0,
        Bson::Double(d) => *d != 0.0,
        Bson::Decimal128(d) => compare::decimal_to_f64(d) != 0.0,
        Bson::Null | Bson::Undefined => false,
        Bson::String(_)
        | Bson::Symbol(_)
        | Bson::Document(_)
        | Bson::Array(_)
        | Bson::Binary(_)
        | Bson::ObjectId(_)
        | Bson::DateTime(_)
        | Bson::Timestamp(_)
        | Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::DbPointer(_)
        | Bson::MinKey
        | Bson::MaxKey => true,
    }
}

/// An empty raw document whose buffer has room for `room` more bytes: a document appended
/// field by field on a hot path (a change-log entry, a session record) is allocated once
/// rather than grown by each field.
pub fn raw_with_room(room: usize) -> bson::RawDocumentBuf {
    let mut bytes = Vec::with_capacity(5 + room);
    // `{}`: its length (five bytes) and the terminating nul.
    bytes.extend_from_slice(&[5, 0, 0, 0, 0]);
    bson::RawDocumentBuf::from_bytes(bytes).unwrap_or_default()
}

/// MongoDB's name for a value's BSON type (`typeName`), as used in error messages and `$type`.
pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_with_room_is_an_empty_document_with_its_room_allocated() {
        assert!(super::raw_with_room(64).into_bytes().capacity() >= 5 + 64);
        let mut d = super::raw_with_room(64);
        assert_eq!(d.as_bytes(), bson::rawdoc! {}.as_bytes());
        d.append(bson::raw::cstr!("a"), 1_i32);
        d.append(bson::raw::cstr!("b"), "text");
        assert_eq!(d, bson::rawdoc! { "a": 1_i32, "b": "text" });
    }
}
