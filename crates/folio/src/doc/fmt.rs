//! Text forms of BSON values as MongoDB prints them in error messages (`{ _id: 1, a: "x" }`).
//!
//! Two styles: [`Style::Mongo`] follows the server's `BSONObj::toString` (int64 prints like an
//! int32), [`Style::Typed`] tags every numeric type (`NumberLong(2)`, `2.0`) so that tests can see
//! the difference between `$inc` results of different widths.

use std::fmt::Write;

use bson::{Bson, Document};

/// How to print numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// As the server's error messages do.
    Mongo,
    /// With every numeric type visible.
    #[cfg(test)]
    Typed,
}

/// A value in MongoDB's error-message style.
pub fn value_string(v: &Bson) -> String {
    let mut s = String::new();
    write_value(&mut s, v, Style::Mongo);
    s
}

/// A document in MongoDB's error-message style.
pub fn doc_string(d: &Document) -> String {
    let mut s = String::new();
    write_doc(&mut s, d, Style::Mongo);
    s
}

/// A value in the given style.
#[cfg(test)]
pub fn value_string_styled(v: &Bson, style: Style) -> String {
    let mut s = String::new();
    write_value(&mut s, v, style);
    s
}

/// A document in the given style.
#[cfg(test)]
pub fn doc_string_styled(d: &Document, style: Style) -> String {
    let mut s = String::new();
    write_doc(&mut s, d, style);
    s
}

fn write_doc(out: &mut String, d: &Document, style: Style) {
    if d.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{ ");
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push_str(": ");
        write_value(out, v, style);
    }
    out.push_str(" }");
}

fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("nan.0");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "inf.0" } else { "-inf.0" });
    } else if d == d.trunc() && d.abs() < 1e15 {
        let _ = write!(out, "{d:.1}");
    } else if d.abs() < 1e16 && d.abs() >= 1e-4 {
        let _ = write!(out, "{d}");
    } else {
        // Where C switches to an exponent, so does the server: it prints `%.16g` and appends
        // ".0" when the result has neither '.' nor 'E' (`appendDoubleNice`), which includes C's
        // lower-case exponent form: 1e300 prints as "1e+300.0" (Rust's `{}` would print 301
        // digits).
        let g = format_g(d, 16);
        out.push_str(&g);
        if !g.contains(['.', 'E', 'N']) {
            out.push_str(".0");
        }
    }
}

/// `x` as C's `printf("%.{precision}g", x)` prints it: `precision` significant digits, trailing
/// zeros dropped, scientific notation (`1e+300`, at least two exponent digits) when the exponent
/// is below -4 or at least `precision`. MongoDB's messages print doubles this way.
pub fn format_g(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let precision = precision.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{:.*e}", precision - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.unsigned_abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{x:.decimals$}"))
    }
}

/// An element as the server's `BSONElement::toString(true, true)` prints it in messages:
/// `name: value`.
pub fn element_string(name: &str, v: &Bson) -> String {
    format!("{name}: {}", value_string(v))
}

fn write_value(out: &mut String, v: &Bson, style: Style) {
    match v {
        Bson::Double(d) => write_double(out, *d),
        Bson::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        Bson::Document(d) => write_doc(out, d, style),
        Bson::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push_str("[ ");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, x, style);
            }
            out.push_str(" ]");
        }
        Bson::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        Bson::Null => out.push_str("null"),
        Bson::RegularExpression(r) => {
            let _ = write!(out, "/{}/{}", r.pattern, r.options);
        }
        Bson::JavaScriptCode(c) => {
            let _ = write!(out, "{c}");
        }
        Bson::JavaScriptCodeWithScope(c) => {
            let _ = write!(out, "CodeWScope( {}, ", c.code);
            write_doc(out, &c.scope, style);
            out.push(')');
        }
        Bson::Int32(i) => {
            let _ = write!(out, "{i}");
        }
        Bson::Int64(i) => match style {
            Style::Mongo => {
                let _ = write!(out, "{i}");
            }
            #[cfg(test)]
            Style::Typed => {
                let _ = write!(out, "NumberLong({i})");
            }
        },
        Bson::Timestamp(t) => {
            let _ = write!(out, "Timestamp({}, {})", t.time, t.increment);
        }
        Bson::Binary(b) => {
            let _ = write!(out, "BinData({}, ", u8::from(b.subtype));
            for byte in &b.bytes {
                let _ = write!(out, "{byte:02X}");
            }
            out.push(')');
        }
        Bson::ObjectId(o) => {
            let _ = write!(out, "ObjectId('{o}')");
        }
        Bson::DateTime(d) => {
            let _ = write!(out, "new Date({})", d.timestamp_millis());
        }
        Bson::Symbol(s) => {
            let _ = write!(out, "Symbol({s:?})");
        }
        Bson::Decimal128(d) => {
            let _ = write!(out, "NumberDecimal(\"{d}\")");
        }
        Bson::Undefined => out.push_str("undefined"),
        Bson::MaxKey => out.push_str("MaxKey"),
        Bson::MinKey => out.push_str("MinKey"),
        Bson::DbPointer(p) => {
            let _ = write!(out, "{p:?}");
        }
    }
}

/// A double as C++ streams print it (`%g`: six significant digits, exponent notation outside
/// 1e-4 to 1e6), the form of MongoDB's messages that stream a double (`3e+09`, `-180`, `0.5`).
pub fn cpp_double(x: f64) -> String {
    format_g(x, 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn mongo_style() {
        let d = doc! {"_id": 1, "a": "x", "b": [1_i64, 2.5, 3.0], "c": {}};
        assert_eq!(doc_string(&d), r#"{ _id: 1, a: "x", b: [ 1, 2.5, 3.0 ], c: {} }"#);
        assert_eq!(
            doc_string_styled(&d, Style::Typed),
            r#"{ _id: 1, a: "x", b: [ NumberLong(1), 2.5, 3.0 ], c: {} }"#
        );
    }

    #[test]
    fn cpp_double_prints_as_a_cpp_stream() {
        use super::cpp_double;
        for (x, s) in [
            (-180.0, "-180"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (3e9, "3e+09"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.333333"),
            (0.0, "0"),
        ] {
            assert_eq!(cpp_double(x), s, "{x}");
        }
    }
}
