//! Printing BSON values the way MongoDB prints them in error messages (`BSONElement::toString`):
//! `{ a: 1, b: "x" }`, `[ 1, 2 ]`, `ObjectId('…')`, `new Date(…)`, doubles with 16 significant
//! digits and a `.0` when they look integral. Duplicate-key and index-conflict messages embed
//! values in this form, and clients (and tests) match those messages textually.

use std::fmt::Write;

use bson::{Bson, Document};

/// A value as MongoDB prints it in messages.
pub fn format_value(v: &Bson) -> String {
    let mut s = String::new();
    write_value(v, &mut s);
    s
}

/// A document as MongoDB prints it in messages: `{ a: 1, b: "x" }`, or `{}`.
pub fn format_document(d: &Document) -> String {
    let mut s = String::new();
    write_document(d, &mut s);
    s
}

fn write_document(d: &Document, s: &mut String) {
    if d.is_empty() {
        s.push_str("{}");
        return;
    }
    s.push_str("{ ");
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str(": ");
        write_value(v, s);
    }
    s.push_str(" }");
}

fn write_value(v: &Bson, s: &mut String) {
    // `write!` into a String cannot fail.
    match v {
        Bson::Double(d) => s.push_str(&format_double(*d)),
        Bson::Int32(i) => {
            let _ = write!(s, "{i}");
        }
        Bson::Int64(i) => {
            let _ = write!(s, "{i}");
        }
        Bson::Decimal128(d) => {
            let _ = write!(s, "{d}");
        }
        Bson::String(x) => {
            let _ = write!(s, "\"{x}\"");
        }
        Bson::Symbol(x) => {
            let _ = write!(s, "Symbol(\"{x}\")");
        }
        Bson::Document(d) => write_document(d, s),
        Bson::Array(a) => {
            if a.is_empty() {
                s.push_str("[]");
                return;
            }
            s.push_str("[ ");
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_value(item, s);
            }
            s.push_str(" ]");
        }
        Bson::Binary(b) => {
            let _ = write!(s, "BinData({}, ", u8::from(b.subtype));
            for byte in &b.bytes {
                let _ = write!(s, "{byte:02X}");
            }
            s.push(')');
        }
        Bson::ObjectId(oid) => {
            let _ = write!(s, "ObjectId('{}')", oid.to_hex());
        }
        Bson::Boolean(b) => {
            let _ = write!(s, "{b}");
        }
        Bson::DateTime(dt) => {
            let _ = write!(s, "new Date({})", dt.timestamp_millis());
        }
        Bson::Timestamp(ts) => {
            let _ = write!(s, "Timestamp({}, {})", ts.time, ts.increment);
        }
        Bson::RegularExpression(re) => {
            let _ = write!(s, "/{}/{}", re.pattern.as_str(), re.options.as_str());
        }
        Bson::DbPointer(_) => {
            // The bson crate's display is `DbPointer(ns, id)`; MongoDB prints `DBRef('ns', id)`.
            let shown = v.to_string();
            let inner = shown.trim_start_matches("DbPointer(").trim_end_matches(')');
            match inner.rsplit_once(", ") {
                Some((ns, id)) => {
                    let _ = write!(s, "DBRef('{ns}', {id})");
                }
                None => s.push_str(&shown),
            }
        }
        Bson::JavaScriptCode(code) => s.push_str(code),
        Bson::JavaScriptCodeWithScope(cws) => {
            let _ = write!(s, "CodeWScope( {}, ", cws.code);
            write_document(&cws.scope, s);
            s.push(')');
        }
        Bson::Null => s.push_str("null"),
        Bson::Undefined => s.push_str("undefined"),
        Bson::MinKey => s.push_str("MinKey"),
        Bson::MaxKey => s.push_str("MaxKey"),
    }
}

/// A double as C's `%.16g`, with `.0` appended when the result has no `.`, `E` or `N` (MongoDB's
/// `appendDoubleNice`; note that `1e+20` therefore prints as `1e+20.0`, as MongoDB does).
pub fn format_double(d: f64) -> String {
    let mut s = format_g16(d);
    if !s.contains('.') && !s.contains('E') && !s.contains('N') {
        s.push_str(".0");
    }
    s
}

/// C's `%.16g`.
fn format_g16(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    const P: i32 = 16;
    // Scientific form with P significant digits tells the decimal exponent after rounding.
    let sci = format!("{:.*e}", (P - 1) as usize, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..P).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{d:.decimals$}")).to_string()
    }
}

/// Removes trailing zeros after a decimal point, and the point itself if nothing follows it.
fn strip_zeros(s: &str) -> &str {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    #[test]
    fn doubles_print_like_mongodb() {
        let cases = [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (-2.0, "-2.0"),
            (1e20, "1e+20.0"),
            (1.5e-7, "1.5e-07"),
            (123456789012.0, "123456789012.0"),
            (f64::NAN, "nan.0"),
            (f64::INFINITY, "inf.0"),
            (-0.0, "-0.0"),
        ];
        for (d, want) in cases {
            assert_eq!(format_double(d), want, "{d}");
        }
    }

    #[test]
    fn values_print_like_mongodb() {
        let oid = ObjectId::parse_str("5f1a2b3c4d5e6f7081928374").unwrap();
        let d = doc! {
            "i": 1, "l": 2i64, "s": "x", "o": oid, "n": null, "b": true,
            "a": [1, "y"], "e": [], "sub": {"k": {}},
        };
        assert_eq!(
            format_document(&d),
            "{ i: 1, l: 2, s: \"x\", o: ObjectId('5f1a2b3c4d5e6f7081928374'), n: null, \
             b: true, a: [ 1, \"y\" ], e: [], sub: { k: {} } }"
        );
        assert_eq!(
            format_value(&Bson::Timestamp(bson::Timestamp { time: 1, increment: 2 })),
            "Timestamp(1, 2)"
        );
        assert_eq!(format_value(&Bson::DateTime(bson::DateTime::from_millis(5))), "new Date(5)");
    }
}
