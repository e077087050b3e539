//! Matching actual values against the expectations of a test (the format's "evaluating matches").
//!
//! The rules, in the order they are tried for each expected value:
//!
//! - A one-key document whose key starts with `$$` is a special operator: `$$exists`, `$$type`,
//!   `$$unsetOrMatches`, `$$sessionLsid`, `$$matchesEntity`, `$$matchesHexBytes`, `$$lte`,
//!   `$$matchAsDocument`, `$$matchAsRoot`. Operators see whether the field was present at all, which is why
//!   the actual value is an `Option`.
//! - Documents match key by key. A root-level document (a command in an event, a reply, an element of a
//!   result array) may have fields the expectation does not mention; a nested one may not.
//! - Arrays must have the same length and match element by element.
//! - Numbers match by value across `int`, `long` and `double` (a driver may send `1` as either); everything
//!   else must be equal.
//!
//! A mismatch is reported as the path of the first difference, which is what the runner prints.

use bson::{Bson, Document};

/// Resolves the entity references some operators make.
pub trait Entities {
    /// The value of a BSON-valued (or result) entity, for `$$matchesEntity`.
    fn entity_value(&self, name: &str) -> Option<Bson>;
    /// The `lsid` document of a session entity, for `$$sessionLsid`.
    fn session_lsid(&self, name: &str) -> Option<Document>;
}

/// Matches `actual` (absent when `None`) against `expected`; `root` says whether documents at this level may
/// have extra fields. `Err` describes the first difference.
pub fn matches(
    expected: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn Entities,
) -> Result<(), String> {
    match_at(expected, actual, root, ents, "")
}

/// Compares two plain values with numeric leniency (no operators).
pub fn values_equal(expected: &Bson, actual: Option<&Bson>) -> Result<(), String> {
    struct NoEntities;
    impl Entities for NoEntities {
        fn entity_value(&self, _: &str) -> Option<Bson> {
            None
        }
        fn session_lsid(&self, _: &str) -> Option<Document> {
            None
        }
    }
    matches(expected, actual, false, &NoEntities)
}

fn at(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

fn match_at(
    expected: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn Entities,
    path: &str,
) -> Result<(), String> {
    if let Bson::Document(d) = expected
        && d.len() == 1
        && let Some((op, arg)) = d.iter().next()
        && op.starts_with("$$")
    {
        return match_operator(op, arg, actual, root, ents, path);
    }
    let Some(actual) = actual else {
        return Err(format!("{}: expected {expected}, but the field is absent", at(path)));
    };
    match expected {
        Bson::Document(exp) => {
            let Bson::Document(act) = actual else {
                return Err(format!("{}: expected a document {expected}, got {actual}", at(path)));
            };
            match_document(exp, act, root, ents, path)
        }
        Bson::Array(exp) => {
            let Bson::Array(act) = actual else {
                return Err(format!("{}: expected an array {expected}, got {actual}", at(path)));
            };
            if exp.len() != act.len() {
                return Err(format!(
                    "{}: expected an array of {} elements, got {}: {actual}",
                    at(path),
                    exp.len(),
                    act.len()
                ));
            }
            for (i, (e, a)) in exp.iter().zip(act).enumerate() {
                match_at(e, Some(a), root, ents, &format!("{path}.{i}"))?;
            }
            Ok(())
        }
        _ => {
            if scalar_equal(expected, actual) {
                Ok(())
            } else {
                Err(format!("{}: expected {expected}, got {actual}", at(path)))
            }
        }
    }
}

fn match_document(
    exp: &Document,
    act: &Document,
    root: bool,
    ents: &dyn Entities,
    path: &str,
) -> Result<(), String> {
    for (k, e) in exp {
        let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match_at(e, act.get(k), false, ents, &child)?;
    }
    if !root && let Some(extra) = act.keys().find(|k| !exp.contains_key(k.as_str())) {
        return Err(format!("{}: unexpected field {extra:?} in {act}", at(path)));
    }
    Ok(())
}

fn match_operator(
    op: &str,
    arg: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn Entities,
    path: &str,
) -> Result<(), String> {
    let p = at(path);
    match op {
        "$$exists" => {
            let want = matches!(arg, Bson::Boolean(true));
            match (want, actual) {
                (true, None) => Err(format!("{p}: expected the field to exist")),
                (false, Some(a)) => Err(format!("{p}: expected no field, got {a}")),
                _ => Ok(()),
            }
        }
        "$$type" => {
            let Some(a) = actual else {
                return Err(format!(
                    "{p}: expected a value of type {arg}, but the field is absent"
                ));
            };
            let allowed: Vec<&str> = match arg {
                Bson::String(s) => vec![s.as_str()],
                Bson::Array(a) => a.iter().filter_map(Bson::as_str).collect(),
                other => return Err(format!("{p}: bad $$type argument {other}")),
            };
            let name = type_name(a);
            if allowed.iter().any(|t| *t == name || (*t == "number" && is_number(a))) {
                Ok(())
            } else {
                Err(format!("{p}: expected type {arg}, got {name} ({a})"))
            }
        }
        "$$unsetOrMatches" => match actual {
            None => Ok(()),
            Some(a) => match_at(arg, Some(a), root, ents, path),
        },
        "$$matchesEntity" => {
            let name = arg.as_str().ok_or_else(|| format!("{p}: bad $$matchesEntity argument"))?;
            let value =
                ents.entity_value(name).ok_or_else(|| format!("{p}: no entity {name:?}"))?;
            match_at(&value, actual, root, ents, path)
        }
        "$$sessionLsid" => {
            let name = arg.as_str().ok_or_else(|| format!("{p}: bad $$sessionLsid argument"))?;
            let lsid =
                ents.session_lsid(name).ok_or_else(|| format!("{p}: no session {name:?}"))?;
            match actual {
                Some(Bson::Document(d)) if *d == lsid => Ok(()),
                Some(a) => Err(format!("{p}: expected the lsid of {name} {lsid}, got {a}")),
                None => Err(format!("{p}: expected the lsid of {name}, but the field is absent")),
            }
        }
        "$$lte" => {
            let (Some(e), Some(a)) = (as_f64(arg), actual.and_then(as_f64)) else {
                return Err(format!("{p}: expected a number <= {arg}, got {actual:?}"));
            };
            if a <= e { Ok(()) } else { Err(format!("{p}: expected <= {arg}, got {a}")) }
        }
        "$$matchesHexBytes" => {
            let hex = arg.as_str().unwrap_or_default().to_ascii_lowercase();
            match actual {
                Some(Bson::Binary(b)) if to_hex(&b.bytes) == hex => Ok(()),
                other => Err(format!("{p}: expected bytes {hex}, got {other:?}")),
            }
        }
        "$$matchAsDocument" | "$$matchAsRoot" => {
            let as_root = op == "$$matchAsRoot";
            let doc = match actual {
                Some(Bson::String(s)) if !as_root => serde_json::from_str::<serde_json::Value>(s)
                    .ok()
                    .and_then(|j| Bson::try_from(j).ok())
                    .ok_or_else(|| format!("{p}: expected a JSON document string, got {s:?}"))?,
                Some(a) => a.clone(),
                None => return Err(format!("{p}: expected a document, but the field is absent")),
            };
            match_at(arg, Some(&doc), as_root, ents, path)
        }
        other => Err(format!("{p}: unsupported operator {other}")),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_number(b: &Bson) -> bool {
    matches!(b, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_))
}

fn as_f64(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(f64::from(*i)),
        // Precision loss past 2^53 is acceptable for comparisons in tests.
        #[allow(clippy::cast_precision_loss)]
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

/// Equality for non-container values; `int`, `long` and `double` compare by value.
fn scalar_equal(expected: &Bson, actual: &Bson) -> bool {
    match (expected, actual) {
        (Bson::Int32(a), Bson::Int64(b)) | (Bson::Int64(b), Bson::Int32(a)) => i64::from(*a) == *b,
        (e, a) if is_number(e) && is_number(a) && !matches!(e, Bson::Decimal128(_)) => {
            matches!((as_f64(e), as_f64(a)), (Some(x), Some(y)) if x == y)
        }
        _ => expected == actual,
    }
}

/// The `$type` alias of a value.
pub fn type_name(b: &Bson) -> &'static str {
    match b {
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
    use super::*;
    use bson::{bson, doc};
    use std::collections::HashMap;

    #[derive(Default)]
    struct Ents {
        values: HashMap<String, Bson>,
        lsids: HashMap<String, Document>,
    }
    impl Entities for Ents {
        fn entity_value(&self, name: &str) -> Option<Bson> {
            self.values.get(name).cloned()
        }
        fn session_lsid(&self, name: &str) -> Option<Document> {
            self.lsids.get(name).cloned()
        }
    }

    fn root(e: Bson, a: Bson) -> Result<(), String> {
        matches(&e, Some(&a), true, &Ents::default())
    }

    #[test]
    fn root_documents_allow_extra_fields_nested_ones_do_not() {
        assert!(root(bson!({"a": 1}), bson!({"a": 1, "b": 2})).is_ok());
        let err = root(bson!({"x": {"a": 1}}), bson!({"x": {"a": 1, "b": 2}})).unwrap_err();
        assert!(err.contains("x") && err.contains("\"b\""), "{err}");
        assert!(
            matches(&bson!({"a": 1}), Some(&bson!({"a": 1, "b": 2})), false, &Ents::default())
                .is_err()
        );
        // Elements of a root-level array (e.g. a cursor's documents) are root-level documents.
        assert!(root(bson!([{"a": 1}]), bson!([{"a": 1, "b": 2}])).is_ok());
        assert!(root(bson!([{"a": 1}]), bson!([{"a": 1}, {"a": 2}])).is_err());
        assert!(root(bson!({"a": 1}), bson!({"b": 1})).unwrap_err().contains("absent"));
    }

    #[test]
    fn numbers_match_across_types_but_not_across_values() {
        assert!(root(bson!({"n": 1}), bson!({"n": 1_i64})).is_ok());
        assert!(root(bson!({"n": 1_i64}), bson!({"n": 1.0})).is_ok());
        assert!(root(bson!({"n": 1}), bson!({"n": 2_i64})).is_err());
        assert!(root(bson!({"n": 1}), bson!({"n": "1"})).is_err());
        assert!(root(bson!({"n": true}), bson!({"n": 1})).is_err());
    }

    #[test]
    fn exists_and_unset_or_matches_see_absence() {
        assert!(root(bson!({"a": {"$$exists": false}}), bson!({"b": 1})).is_ok());
        assert!(root(bson!({"a": {"$$exists": false}}), bson!({"a": 1})).is_err());
        assert!(root(bson!({"a": {"$$exists": true}}), bson!({"a": null})).is_ok());
        assert!(root(bson!({"a": {"$$exists": true}}), bson!({})).is_err());
        assert!(root(bson!({"a": {"$$unsetOrMatches": 5}}), bson!({})).is_ok());
        assert!(root(bson!({"a": {"$$unsetOrMatches": 5}}), bson!({"a": 5_i64})).is_ok());
        assert!(root(bson!({"a": {"$$unsetOrMatches": 5}}), bson!({"a": 6})).is_err());
        // A nested $$unsetOrMatches document is still a nested document: no extra fields.
        assert!(
            root(bson!({"a": {"$$unsetOrMatches": {"x": 1}}}), bson!({"a": {"x": 1, "y": 2}}))
                .is_err()
        );
    }

    #[test]
    fn type_accepts_one_alias_or_a_list() {
        assert!(root(bson!({"a": {"$$type": "int"}}), bson!({"a": 1})).is_ok());
        assert!(root(bson!({"a": {"$$type": "long"}}), bson!({"a": 1})).is_err());
        assert!(root(bson!({"a": {"$$type": ["int", "long"]}}), bson!({"a": 1_i64})).is_ok());
        assert!(root(bson!({"a": {"$$type": "object"}}), bson!({"a": {"z": 1}})).is_ok());
        assert!(root(bson!({"a": {"$$type": "string"}}), bson!({})).is_err());
    }

    #[test]
    fn session_lsid_and_matches_entity_resolve_entities() {
        let mut ents = Ents::default();
        ents.lsids.insert("session0".into(), doc! {"id": 7});
        ents.values.insert("id0".into(), bson!({"x": 1}));
        let exp = bson!({"lsid": {"$$sessionLsid": "session0"}});
        assert!(matches(&exp, Some(&bson!({"lsid": {"id": 7}})), true, &ents).is_ok());
        assert!(matches(&exp, Some(&bson!({"lsid": {"id": 8}})), true, &ents).is_err());
        assert!(
            matches(
                &bson!({"lsid": {"$$sessionLsid": "nope"}}),
                Some(&bson!({"lsid": {}})),
                true,
                &ents
            )
            .is_err()
        );
        let exp = bson!({"v": {"$$matchesEntity": "id0"}});
        assert!(matches(&exp, Some(&bson!({"v": {"x": 1}})), true, &ents).is_ok());
        assert!(matches(&exp, Some(&bson!({"v": {"x": 2}})), true, &ents).is_err());
    }

    #[test]
    fn lte_compares_numerically() {
        assert!(root(bson!({"t": {"$$lte": 5}}), bson!({"t": 5_i64})).is_ok());
        assert!(root(bson!({"t": {"$$lte": 5}}), bson!({"t": 4.5})).is_ok());
        assert!(root(bson!({"t": {"$$lte": 5}}), bson!({"t": 6})).is_err());
        assert!(root(bson!({"t": {"$$lte": 5}}), bson!({})).is_err());
    }
}
