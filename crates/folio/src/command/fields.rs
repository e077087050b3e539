//! The top-level fields each command takes, checked in one place before its handler runs.
//!
//! MongoDB parses most commands with parsers generated from IDL descriptions marked `strict`:
//! a top-level field that is neither the command's own nor one of the generic arguments every
//! command takes (`generic_argument.idl`: `$db`, `lsid`, `txnNumber`, `readConcern`,
//! `writeConcern`, `maxTimeMS`, `comment`, `apiVersion`, ...) fails the command with
//! IDLUnknownField (40415) `BSON field 'find.foo' is an unknown field.`. A misspelt option
//! (`{find: "c", fliter: {...}}`) therefore fails instead of silently selecting everything.
//!
//! Folio declares each command's fields beside the command in the command table
//! (`table::COMMANDS`) as a [`Fields`] value, and [`check`] applies it before dispatch reaches
//! the handler, so handlers only ever see fields they were written for. A field is either
//!
//! - *known*: the handler reads and honours it;
//! - *unsupported*: MongoDB takes it but Folio does not implement it (`returnKey`,
//!   `showRecordId`, ...): refused with NotImplemented (238) rather than accepted and ignored.
//!   `false` and `null` mean "not asked for" and pass, since drivers may send defaults;
//! - anything else: 40415 as in MongoDB.
//!
//! Under `apiStrict: true` a field MongoDB's IDL marks `stability: unstable` (outside API
//! version 1: `find`'s `returnKey`, `tailable`, `min`, `aggregate`'s `explain`, `create`'s
//! `size`, ...) fails with APIStrictError (323) `BSON field 'find.tailable' is not allowed with
//! apiStrict:true.`, whatever its value, where MongoDB's generated parser meets it: fields are
//! checked in the command's order, so an unknown field before it answers 40415 first. A field's
//! own subfields can be unstable too (`collMod`'s `index.unique`), written `field.subfield`.
//!
//! Commands whose MongoDB parser is not strict (or whose fields are not declared yet) are
//! [`Fields::Any`]: their handlers read what they need and ignore the rest, as MongoDB's
//! hand-written parsers do.
//!
//! Internal fields MongoDB's routers and shards exchange (`shardVersion`, `databaseVersion`,
//! `$configTime`, `needsMerge`, `fromMongos`, ...) are not accepted: a single node never
//! receives them from a router, and accepting them would mean ignoring them.

use bson::{Bson, Document};

use crate::error::{Code, Error, Result};

/// The generic arguments every command accepts (MongoDB's `generic_args_api_v1`). Their
/// meaning is handled by [`super::runner::OpContext`] and dispatch, not by handlers.
pub const GENERIC: &[&str] = &[
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "stmtId",
    "readConcern",
    "writeConcern",
    "maxTimeMS",
    "comment",
    "$readPreference",
    "$clusterTime",
    "clientOperationKey",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
];

/// What a command takes besides its name and the generic arguments.
#[derive(Clone, Copy, Debug)]
pub enum Fields {
    /// Not checked: the handler reads what it needs.
    Any,
    /// Checked: `known` fields are handled; `unsupported` ones are MongoDB's but refused with
    /// NotImplemented when asked for; anything else is an unknown field (40415).
    Strict {
        /// Fields the handler honours.
        known: &'static [&'static str],
        /// Fields MongoDB takes that Folio refuses unless `false` or `null`.
        unsupported: &'static [&'static str],
        /// Fields (and `field.subfield`s) outside API version 1, refused under `apiStrict`.
        unstable: &'static [&'static str],
    },
}

/// Checks `cmd`'s top-level fields against the declaration of command `name`; `api_strict`
/// is the command's `apiStrict: true`.
pub fn check(name: &str, fields: Fields, cmd: &Document, api_strict: bool) -> Result<()> {
    let Fields::Strict { known, unsupported, unstable } = fields else {
        return Ok(());
    };
    for (key, value) in cmd.iter().skip(1) {
        let key = key.as_str();
        if api_strict {
            refuse_unstable(name, key, value, unstable)?;
        }
        if known.contains(&key) || GENERIC.contains(&key) {
            continue;
        }
        if unsupported.contains(&key) {
            if matches!(value, Bson::Boolean(false) | Bson::Null) {
                continue;
            }
            return Err(Error::new(
                Code::NotImplemented,
                format!("BSON field '{}.{key}' is not supported by Folio", idl_name(name)),
            ));
        }
        return Err(Error::unknown_field(&format!("{}.{key}", idl_name(name))));
    }
    Ok(())
}

/// Under `apiStrict: true`, refuses field `key` of command `name` (or the first of its subfields)
/// when it is outside API version 1.
fn refuse_unstable(name: &str, key: &str, value: &Bson, unstable: &[&str]) -> Result<()> {
    let refuse = |path: String| {
        Err(Error::new(
            Code::APIStrictError,
            format!("BSON field '{}.{path}' is not allowed with apiStrict:true.", idl_name(name)),
        ))
    };
    if unstable.contains(&key) {
        return refuse(key.to_string());
    }
    if let Bson::Document(sub) = value {
        for field in sub.keys() {
            let path = format!("{key}.{field}");
            if unstable.contains(&path.as_str()) {
                return refuse(path);
            }
        }
    }
    Ok(())
}

/// The name MongoDB's parser reports for a command reached through an alias.
fn idl_name(name: &str) -> &str {
    match name {
        "findandmodify" => "findAndModify",
        "deleteIndexes" => "dropIndexes",
        "buildinfo" => "buildInfo",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    const FIND: Fields = Fields::Strict {
        known: &["filter", "tailable", "index"],
        unsupported: &["returnKey"],
        unstable: &["tailable", "returnKey", "index.unique"],
    };

    #[test]
    fn unknown_unsupported_and_generic_fields() {
        let ok = doc! { "find": "c", "filter": {}, "lsid": {}, "$db": "x", "comment": 1 };
        assert!(check("find", FIND, &ok, false).is_ok());
        let e = check("find", FIND, &doc! { "find": "c", "fliter": {} }, false).unwrap_err();
        assert_eq!(e.code_number(), 40415);
        assert_eq!(e.message, "BSON field 'find.fliter' is an unknown field.");
        let e = check("find", FIND, &doc! { "find": "c", "returnKey": true }, false).unwrap_err();
        assert_eq!(e.code_number(), 238);
        assert!(check("find", FIND, &doc! { "find": "c", "returnKey": false }, false).is_ok());
        // The command name itself is never a field, and undeclared commands are not checked.
        assert!(check("find", FIND, &doc! { "find": "filter" }, false).is_ok());
        assert!(check("ping", Fields::Any, &doc! { "ping": 1, "anything": 1 }, false).is_ok());
        let e = check("findandmodify", FIND, &doc! { "findandmodify": "c", "x": 1 }, false)
            .unwrap_err();
        assert_eq!(e.message, "BSON field 'findAndModify.x' is an unknown field.");
    }

    #[test]
    fn unstable_fields_are_refused_under_api_strict() {
        let cmd = doc! { "find": "c", "filter": {}, "tailable": false };
        assert!(check("find", FIND, &cmd, false).is_ok());
        let e = check("find", FIND, &cmd, true).unwrap_err();
        assert_eq!(e.code_number(), 323);
        assert_eq!(e.message, "BSON field 'find.tailable' is not allowed with apiStrict:true.");
        // Unstable beats unsupported (MongoDB refuses it while parsing), and an unknown field
        // met first is still an unknown field.
        let e = check("find", FIND, &doc! { "find": "c", "returnKey": true }, true).unwrap_err();
        assert_eq!(e.code_number(), 323);
        let cmd = doc! { "find": "c", "x": 1, "tailable": true };
        assert_eq!(check("find", FIND, &cmd, true).unwrap_err().code_number(), 40415);
        let cmd = doc! { "find": "c", "index": { "name": "a", "unique": true } };
        let e = check("find", FIND, &cmd, true).unwrap_err();
        assert_eq!(e.message, "BSON field 'find.index.unique' is not allowed with apiStrict:true.");
        assert!(check("find", FIND, &doc! { "find": "c", "index": { "name": "a" } }, true).is_ok());
    }
}
