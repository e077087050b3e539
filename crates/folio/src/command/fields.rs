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
    },
}

/// Checks `cmd`'s top-level fields against the declaration of command `name`.
pub fn check(name: &str, fields: Fields, cmd: &Document) -> Result<()> {
    let Fields::Strict { known, unsupported } = fields else {
        return Ok(());
    };
    for (key, value) in cmd.iter().skip(1) {
        let key = key.as_str();
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

    const FIND: Fields = Fields::Strict { known: &["filter"], unsupported: &["returnKey"] };

    #[test]
    fn unknown_unsupported_and_generic_fields() {
        let ok = doc! { "find": "c", "filter": {}, "lsid": {}, "$db": "x", "comment": 1 };
        assert!(check("find", FIND, &ok).is_ok());
        let e = check("find", FIND, &doc! { "find": "c", "fliter": {} }).unwrap_err();
        assert_eq!(e.code_number(), 40415);
        assert_eq!(e.message, "BSON field 'find.fliter' is an unknown field.");
        let e = check("find", FIND, &doc! { "find": "c", "returnKey": true }).unwrap_err();
        assert_eq!(e.code_number(), 238);
        assert!(check("find", FIND, &doc! { "find": "c", "returnKey": false }).is_ok());
        // The command name itself is never a field, and undeclared commands are not checked.
        assert!(check("find", FIND, &doc! { "find": "filter" }).is_ok());
        assert!(check("ping", Fields::Any, &doc! { "ping": 1, "anything": 1 }).is_ok());
        let e = check("findandmodify", FIND, &doc! { "findandmodify": "c", "x": 1 }).unwrap_err();
        assert_eq!(e.message, "BSON field 'findAndModify.x' is an unknown field.");
    }
}
