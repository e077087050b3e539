//! Dotted field paths (`items.0.qty`) over documents.
//!
//! Two readings of a path exist in MongoDB and both live here:
//!
//! - *Strict* lookup ([`get_path`]) follows documents, and array indexes where a component is a
//!   number, and nothing else. Updates, projections and `_id` extraction use it.
//! - *Expanding* lookup ([`collect_values`]) also walks through arrays: at an array that is not at
//!   the end of the path, each document element is searched for the rest of the path (and a
//!   numeric component selects an element too). Sorting uses it; the matcher has its own
//!   traversal with the same rules because it also needs the array position it went through.

use bson::{Bson, Document};

/// Splits a dotted path into its components.
pub fn split(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// A path component read as an array index: ASCII digits only, as MongoDB does.
pub fn array_index(part: &str) -> Option<usize> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// The value at `path`, following documents and numeric array indexes only.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get(first)?;
    for part in parts {
        cur = child(cur, part)?;
    }
    Some(cur)
}

/// The child of a value named by one path component (a field of a document, or an element of an
/// array by index).
pub fn child<'a>(v: &'a Bson, part: &str) -> Option<&'a Bson> {
    match v {
        Bson::Document(d) => d.get(part),
        Bson::Array(a) => array_index(part).and_then(|i| a.get(i)),
        _ => None,
    }
}

/// Every value reachable at `path` through arrays, with arrays at the end of the path expanded
/// into their elements (the whole array is not included). A missing path yields nothing.
pub fn collect_values<'a>(doc: &'a Document, path: &str) -> Vec<&'a Bson> {
    let parts = split(path);
    let mut out = Vec::new();
    collect_in_doc(doc, &parts, &mut out);
    out
}

fn collect_in_doc<'a>(doc: &'a Document, parts: &[&str], out: &mut Vec<&'a Bson>) {
    if let Some(v) = doc.get(parts[0]) {
        collect_in_value(v, &parts[1..], out);
    }
}

fn collect_in_value<'a>(v: &'a Bson, rest: &[&str], out: &mut Vec<&'a Bson>) {
    if rest.is_empty() {
        match v {
            Bson::Array(a) => out.extend(a.iter()),
            other => out.push(other),
        }
        return;
    }
    match v {
        Bson::Document(d) => collect_in_doc(d, rest, out),
        Bson::Array(a) => {
            if let Some(e) = array_index(rest[0]).and_then(|i| a.get(i)) {
                collect_in_value(e, &rest[1..], out);
            }
            for e in a {
                if let Bson::Document(d) = e {
                    collect_in_doc(d, rest, out);
                }
            }
        }
        _ => {}
    }
}

/// Whether `prefix` is a path prefix of `path` (`a` of `a.b`, or equal), by components.
pub fn is_prefix(prefix: &str, path: &str) -> bool {
    path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'.')
}

/// What a dotted path reaches in a raw document, read without decoding it (see [`reach_raw`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawReach<'a> {
    /// Nothing: a field is missing, or a scalar stands in the middle of the path.
    Missing,
    /// One value that is not an array.
    Value(bson::raw::RawBsonRef<'a>),
    /// An array somewhere on the path (at its end included): the path may reach several values,
    /// which only the decoded walk reads with MongoDB's rules.
    Array,
    /// The document could not be read there (it is corrupt).
    Unreadable,
}

/// The value `path` reaches in a raw document through embedded documents only. This is the
/// matcher's and the sort's walk ([`collect_values`]) for the common case with no array on the
/// path, and says [`RawReach::Array`] for the rest, so a caller falls back to the decoded
/// document instead of guessing.
pub fn reach_raw<'a>(doc: &'a bson::RawDocument, path: &str) -> RawReach<'a> {
    use bson::raw::RawBsonRef;
    let mut cur = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = match cur.get(part) {
            Ok(Some(v)) => v,
            Ok(None) => return RawReach::Missing,
            Err(_) => return RawReach::Unreadable,
        };
        match (value, parts.peek().is_some()) {
            (RawBsonRef::Array(_), _) => return RawReach::Array,
            (RawBsonRef::Document(d), true) => cur = d,
            (_, true) => return RawReach::Missing,
            (v, false) => return RawReach::Value(v),
        }
    }
    RawReach::Missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    #[test]
    fn strict_lookup() {
        let d = doc! {"a": {"b": [10, {"c": 5}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(&bson!(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(&bson!(5)));
        assert_eq!(get_path(&d, "a.b.c"), None);
        assert_eq!(get_path(&d, "a.x"), None);
    }

    #[test]
    fn expanding_lookup() {
        let d = doc! {"a": [{"b": 1}, {"b": [2, 3]}, 4, {"c": 1}]};
        let got: Vec<_> = collect_values(&d, "a.b").into_iter().cloned().collect();
        assert_eq!(got, vec![bson!(1), bson!(2), bson!(3)]);
        let got: Vec<_> = collect_values(&d, "a.1.b").into_iter().cloned().collect();
        assert_eq!(got, vec![bson!(2), bson!(3)]);
    }

    #[test]
    fn prefixes() {
        assert!(is_prefix("a", "a.b"));
        assert!(is_prefix("a.b", "a.b"));
        assert!(!is_prefix("a", "ab"));
        assert!(!is_prefix("a.b", "a"));
    }
}
