//! `$unwind`: one output document per array element.

use bson::{Bson, Document};

use super::stage::{Stage, set_path};
use crate::error::Result;
use crate::expr::{loc, type_name};

pub(super) fn parse_unwind(arg: &Bson) -> Result<Stage> {
    let (path, index, preserve) = match arg {
        Bson::String(p) => (p.clone(), None, false),
        Bson::Document(d) => {
            let mut path = None;
            let mut index = None;
            let mut preserve = false;
            for (k, v) in d {
                match k.as_str() {
                    "path" => match v {
                        Bson::String(p) => path = Some(p.clone()),
                        other => {
                            return Err(loc(
                                28808,
                                format!(
                                    "expected a string as the path for $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "includeArrayIndex" => match v {
                        Bson::String(i) if !i.is_empty() => {
                            if i.starts_with('$') {
                                return Err(loc(
                                    28822,
                                    format!(
                                        "includeArrayIndex option to $unwind stage should not be prefixed with a '$': {i}"
                                    ),
                                ));
                            }
                            index = Some(i.clone());
                        }
                        other => {
                            return Err(loc(
                                28810,
                                format!(
                                    "expected a non-empty string for the includeArrayIndex  option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "preserveNullAndEmptyArrays" => match v {
                        Bson::Boolean(b) => preserve = *b,
                        other => {
                            return Err(loc(
                                28809,
                                format!(
                                    "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    other => {
                        return Err(loc(
                            28811,
                            format!("unrecognized option to $unwind stage: {other}"),
                        ));
                    }
                }
            }
            let Some(path) = path else {
                return Err(loc(28812, "no path specified to $unwind stage"));
            };
            (path, index, preserve)
        }
        other => {
            return Err(loc(
                15981,
                format!(
                    "expected either a string or an object as specification for $unwind stage, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    let Some(p) = path.strip_prefix('$') else {
        return Err(loc(
            28818,
            format!("path option to $unwind stage should be prefixed with a '$': {path}"),
        ));
    };
    if p.is_empty() || p.split('.').any(str::is_empty) {
        return Err(loc(40352, "FieldPath cannot be constructed with empty string"));
    }
    Ok(Stage::Unwind(p.to_string(), index, preserve))
}

pub(super) fn unwind(
    d: Document,
    path: &str,
    index: Option<&str>,
    preserve: bool,
    out: &mut Vec<Document>,
) {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    let value = crate::expr::field_path(&d, &parts);
    let idx_parts: Option<Vec<&str>> = index.map(|i| i.split('.').collect());
    let with_index = |mut doc: Document, i: Option<usize>| {
        if let Some(ip) = &idx_parts {
            let v = i.map_or(Bson::Null, |n| Bson::Int64(n as i64));
            set_path(&mut doc, ip, Some(v));
        }
        doc
    };
    let path_parts: Vec<&str> = path.split('.').collect();
    match value {
        Some(Bson::Array(items)) if !items.is_empty() => {
            for (i, item) in items.into_iter().enumerate() {
                let mut nd = d.clone();
                set_path(&mut nd, &path_parts, Some(item));
                out.push(with_index(nd, Some(i)));
            }
        }
        Some(Bson::Array(_)) => {
            if preserve {
                let mut nd = d;
                // An empty array is removed from the preserved document, as in MongoDB.
                set_path(&mut nd, &path_parts, None);
                out.push(with_index(nd, None));
            }
        }
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            if preserve {
                out.push(with_index(d, None));
            }
        }
        // A non-array value passes through as if it were a one-element array, with a null index.
        Some(_) => out.push(with_index(d, None)),
    }
}
