//! A command as its handler receives it ([`Request`]), and typed extraction of command
//! arguments with MongoDB's error messages.

use bson::{Bson, Document};

use super::{Connection, Service};
use crate::bail;
use crate::doc::compare::as_f64 as number;
use crate::error::Result;

/// One command as its handler receives it. Dispatch has looked the command up in the table and
/// checked its top-level fields against the table's declaration ([`super::fields`]), so a
/// handler reads only fields it was written for.
pub struct Request<'a> {
    /// The service.
    pub svc: &'a Service,
    /// The client's connection.
    pub conn: &'a mut Connection,
    /// The command document.
    pub cmd: &'a Document,
    /// An `insert`'s documents when they came apart from `cmd` ([`super::Incoming`]).
    pub documents: Option<&'a [folio_wire::SequenceDocument]>,
    /// The command's name as the client wrote it (an alias such as `findandmodify` included).
    pub name: &'a str,
    /// The database the command runs against (`$db`).
    pub db: &'a str,
}

impl Request<'_> {
    /// The collection named by the command's first field.
    pub fn collection(&self) -> Result<String> {
        collection(self.cmd, self.name)
    }
}

/// The collection name in the command's first field.
pub fn collection(cmd: &Document, name: &str) -> Result<String> {
    match cmd.get(name) {
        Some(Bson::String(s)) => {
            if s.is_empty() {
                bail!(InvalidNamespace, "Invalid namespace specified '{}.'", "");
            }
            Ok(s.clone())
        }
        Some(other) => {
            bail!(InvalidNamespace, "collection name has invalid type {}", type_name(other))
        }
        None => bail!(FailedToParse, "missing collection name"),
    }
}

/// A required argument, of any type.
pub fn required<'a>(cmd: &'a Document, key: &str, command: &str) -> Result<&'a Bson> {
    match cmd.get(key) {
        Some(v) => Ok(v),
        None => {
            bail!(Location40414, "BSON field '{}.{}' is missing but a required field", command, key)
        }
    }
}

/// An optional document argument.
pub fn opt_doc(cmd: &Document, key: &str, command: &str) -> Result<Option<Document>> {
    match cmd.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d.clone())),
        Some(other) => bail!(
            TypeMismatch,
            "BSON field '{}.{}' is the wrong type '{}', expected type 'object'",
            command,
            key,
            type_name(other)
        ),
    }
}

/// An optional boolean argument (numbers are accepted as MongoDB does).
pub fn opt_bool(cmd: &Document, key: &str, command: &str) -> Result<Option<bool>> {
    match cmd.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Boolean(b)) => Ok(Some(*b)),
        Some(v @ (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))) => {
            Ok(Some(number(v).unwrap_or(0.0) != 0.0))
        }
        Some(other) => bail!(
            TypeMismatch,
            "BSON field '{}.{}' is the wrong type '{}', expected type 'bool'",
            command,
            key,
            type_name(other)
        ),
    }
}

/// An optional integer argument.
pub fn opt_i64(cmd: &Document, key: &str, command: &str) -> Result<Option<i64>> {
    match cmd.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(v @ (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_))) => {
            let n = number(v).unwrap_or(0.0);
            if n.fract() != 0.0 {
                bail!(BadValue, "BSON field '{}.{}' must be an integer", command, key);
            }
            Ok(Some(n as i64))
        }
        Some(other) => bail!(
            TypeMismatch,
            "BSON field '{}.{}' is the wrong type '{}', expected types '[long, int, decimal, double]'",
            command,
            key,
            type_name(other)
        ),
    }
}

/// An array of documents argument.
pub fn doc_array(cmd: &Document, key: &str, command: &str) -> Result<Vec<Document>> {
    Ok(doc_refs(cmd, key, command)?.into_iter().cloned().collect())
}

/// [`doc_array`] without the copies: the documents borrowed from the command.
pub fn doc_refs<'a>(cmd: &'a Document, key: &str, command: &str) -> Result<Vec<&'a Document>> {
    match cmd.get(key) {
        Some(Bson::Array(items)) => items
            .iter()
            .map(|i| match i {
                Bson::Document(d) => Ok(d),
                other => bail!(
                    TypeMismatch,
                    "BSON field '{}.{}' items must be objects, not '{}'",
                    command,
                    key,
                    type_name(other)
                ),
            })
            .collect(),
        Some(other) => bail!(
            TypeMismatch,
            "BSON field '{}.{}' is the wrong type '{}', expected type 'array'",
            command,
            key,
            type_name(other)
        ),
        None => {
            bail!(FailedToParse, "BSON field '{}.{}' is missing but a required field", command, key)
        }
    }
}

pub use crate::doc::type_name;
