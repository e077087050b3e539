//! Errors of the embedded API, shaped like the `mongodb` crate's `error` module.
//!
//! An [`Error`] is a boxed [`ErrorKind`] plus the error labels. Server failures are parsed from
//! the reply documents exactly as a driver parses them: a failed command (`ok: 0`) becomes
//! [`ErrorKind::Command`], a `writeErrors` entry of a single-document write becomes
//! [`ErrorKind::Write`], and so on. Labels come from the reply's `errorLabels`, plus the ones a
//! driver adds itself (UnknownTransactionCommitResult on an uncertain commit).

use std::collections::HashSet;
use std::fmt;

use bson::{Bson, Document};

use crate::error::labels as label_names;

/// The label of errors after which the whole transaction may be retried.
pub const TRANSIENT_TRANSACTION_ERROR: &str = label_names::TRANSIENT_TRANSACTION_ERROR;
/// The label of commit errors after which the commit may be retried.
pub const UNKNOWN_TRANSACTION_COMMIT_RESULT: &str = label_names::UNKNOWN_TRANSACTION_COMMIT_RESULT;
/// The label of errors after which a write may be retried.
pub const RETRYABLE_WRITE_ERROR: &str = label_names::RETRYABLE_WRITE_ERROR;

/// The result type of the embedded API.
pub type Result<T> = std::result::Result<T, Error>;

/// An error of an API call: what went wrong, and the labels attached to it.
#[derive(Clone, Debug)]
pub struct Error {
    /// What went wrong.
    pub kind: Box<ErrorKind>,
    labels: HashSet<String>,
}

/// The kinds of errors.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server answered a command with `ok: 0`.
    Command(CommandError),
    /// A single-document write failed, or its write concern could not be satisfied.
    Write(WriteFailure),
    /// Some documents of an `insert_many` failed.
    InsertMany(InsertManyError),
    /// Some writes of a `bulk_write` failed.
    BulkWrite(BulkWriteError),
    /// An argument was invalid before anything was sent.
    InvalidArgument {
        /// Why.
        message: String,
    },
    /// A transaction method was called in a state that does not allow it.
    Transaction {
        /// Why.
        message: String,
    },
    /// A value could not be turned into BSON.
    BsonSerialization {
        /// Why.
        message: String,
    },
    /// A document could not be turned into the collection's type.
    BsonDeserialization {
        /// Why.
        message: String,
    },
    /// The server's reply did not have the expected shape.
    InvalidResponse {
        /// Why.
        message: String,
    },
    /// An application's own error, returned from a transaction callback (see
    /// [`Error::custom`]).
    Custom(std::sync::Arc<dyn std::any::Any + Send + Sync>),
}

/// A command failure reported by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandError {
    /// The error code.
    pub code: i32,
    /// The codeName.
    pub code_name: String,
    /// The message (`errmsg`).
    pub message: String,
    /// Any other fields of the error reply (such as `keyPattern` and `keyValue`).
    pub details: Option<Document>,
}

/// A failure of a single-document write.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WriteFailure {
    /// The write was not applied.
    WriteError(WriteError),
    /// The write was applied but its write concern was not satisfied.
    WriteConcernError(WriteConcernError),
}

/// One write that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteError {
    /// The error code.
    pub code: i32,
    /// The codeName.
    pub code_name: Option<String>,
    /// The message.
    pub message: String,
    /// `errInfo`, if the server gave it.
    pub details: Option<Document>,
    /// For a duplicate key: the index's key pattern.
    pub key_pattern: Option<Document>,
    /// For a duplicate key: the duplicated key value.
    pub key_value: Option<Document>,
}

/// A write error of one document of a batch, with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedWriteError {
    /// The position of the failed document or operation in the batch.
    pub index: usize,
    /// The error code.
    pub code: i32,
    /// The codeName.
    pub code_name: Option<String>,
    /// The message.
    pub message: String,
    /// `errInfo`, if the server gave it.
    pub details: Option<Document>,
    /// For a duplicate key: the index's key pattern.
    pub key_pattern: Option<Document>,
    /// For a duplicate key: the duplicated key value.
    pub key_value: Option<Document>,
}

/// A write concern that could not be satisfied.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteConcernError {
    /// The error code.
    pub code: i32,
    /// The codeName.
    pub code_name: String,
    /// The message.
    pub message: String,
    /// `errInfo`.
    pub details: Option<Document>,
}

/// The failure of some documents of an `insert_many`.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertManyError {
    /// The documents that failed.
    pub write_errors: Option<Vec<IndexedWriteError>>,
    /// The write concern error, if any.
    pub write_concern_error: Option<WriteConcernError>,
    /// The ids of the documents that were inserted, by position.
    pub inserted_ids: std::collections::HashMap<usize, Bson>,
}

/// The failure of some operations of a `bulk_write`.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkWriteError {
    /// The operations that failed, by position in the request.
    pub write_errors: Vec<IndexedWriteError>,
    /// Write concern errors.
    pub write_concern_errors: Vec<WriteConcernError>,
    /// What the operations that succeeded did.
    pub partial_result: super::results::SummaryBulkWriteResult,
}

impl Error {
    /// An error of a kind, without labels.
    pub fn new(kind: ErrorKind, labels: impl IntoIterator<Item = String>) -> Self {
        Error { kind: Box::new(kind), labels: labels.into_iter().collect() }
    }

    /// Wraps an application error, so that a transaction callback can fail with it and the
    /// caller can get it back with [`Error::get_custom`].
    pub fn custom(e: impl std::any::Any + Send + Sync) -> Self {
        Error::new(ErrorKind::Custom(std::sync::Arc::new(e)), [])
    }

    /// The application error wrapped by [`Error::custom`], if it has type `E`.
    pub fn get_custom<E: std::any::Any>(&self) -> Option<&E> {
        match self.kind.as_ref() {
            ErrorKind::Custom(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument { message: message.into() }, [])
    }

    pub(crate) fn transaction(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Transaction { message: message.into() }, [])
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidResponse { message: message.into() }, [])
    }

    pub(crate) fn serialization(e: impl fmt::Display) -> Self {
        Error::new(ErrorKind::BsonSerialization { message: e.to_string() }, [])
    }

    pub(crate) fn deserialization(e: impl fmt::Display) -> Self {
        Error::new(ErrorKind::BsonDeserialization { message: e.to_string() }, [])
    }

    /// The server error code: of the failed command, of the single write error, of the first
    /// write error of a batch, or of the write concern error. `None` for client-side errors.
    pub fn code(&self) -> Option<i32> {
        match self.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code),
            ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
            ErrorKind::InsertMany(e) => match (&e.write_errors, &e.write_concern_error) {
                (Some(errs), _) if !errs.is_empty() => Some(errs[0].code),
                (_, Some(wce)) => Some(wce.code),
                _ => None,
            },
            ErrorKind::BulkWrite(e) => e
                .write_errors
                .first()
                .map(|w| w.code)
                .or(e.write_concern_errors.first().map(|w| w.code)),
            ErrorKind::InvalidArgument { .. }
            | ErrorKind::Transaction { .. }
            | ErrorKind::BsonSerialization { .. }
            | ErrorKind::BsonDeserialization { .. }
            | ErrorKind::InvalidResponse { .. }
            | ErrorKind::Custom(_) => None,
        }
    }

    /// The codeName matching [`Error::code`], when the server gave one.
    pub fn code_name(&self) -> Option<&str> {
        match self.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code_name.as_str()),
            ErrorKind::Write(WriteFailure::WriteError(w)) => w.code_name.as_deref(),
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code_name.as_str()),
            ErrorKind::InsertMany(e) => match (&e.write_errors, &e.write_concern_error) {
                (Some(errs), _) if !errs.is_empty() => errs[0].code_name.as_deref(),
                (_, Some(wce)) => Some(wce.code_name.as_str()),
                _ => None,
            },
            ErrorKind::BulkWrite(e) => match e.write_errors.first() {
                Some(w) => w.code_name.as_deref(),
                None => e.write_concern_errors.first().map(|w| w.code_name.as_str()),
            },
            ErrorKind::InvalidArgument { .. }
            | ErrorKind::Transaction { .. }
            | ErrorKind::BsonSerialization { .. }
            | ErrorKind::BsonDeserialization { .. }
            | ErrorKind::InvalidResponse { .. }
            | ErrorKind::Custom(_) => None,
        }
    }

    /// The error's labels.
    pub fn labels(&self) -> &HashSet<String> {
        &self.labels
    }

    /// Whether the error carries `label` (the `mongodb` crate's name).
    pub fn contains_label<T: AsRef<str>>(&self, label: T) -> bool {
        self.labels.contains(label.as_ref())
    }

    /// Whether the error carries `label` (the name other drivers use).
    pub fn has_error_label(&self, label: &str) -> bool {
        self.contains_label(label)
    }

    /// Adds a label.
    pub(crate) fn add_label(&mut self, label: &str) {
        self.labels.insert(label.to_string());
    }

    /// Whether this is a write conflict (112).
    pub fn is_write_conflict(&self) -> bool {
        self.code() == Some(112)
    }

    /// Whether this is a duplicate key error (11000).
    pub fn is_duplicate_key(&self) -> bool {
        self.code() == Some(11000)
    }

    /// Parses a failed command reply (`ok: 0`).
    pub(crate) fn from_reply(reply: &Document) -> Self {
        let code = reply_i32(reply, "code").unwrap_or(8);
        let details: Document = reply
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "ok" | "code"
                        | "codeName"
                        | "errmsg"
                        | "errorLabels"
                        | "operationTime"
                        | "$clusterTime"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let err = CommandError {
            code,
            code_name: reply.get_str("codeName").unwrap_or_default().to_string(),
            message: reply.get_str("errmsg").unwrap_or_default().to_string(),
            details: if details.is_empty() { None } else { Some(details) },
        };
        Error::new(ErrorKind::Command(err), reply_labels(reply))
    }
}

impl From<crate::error::Error> for Error {
    fn from(e: crate::error::Error) -> Self {
        let err = CommandError {
            code: e.code_number(),
            code_name: e.code_name().to_string(),
            message: e.message.clone(),
            details: e.extra.as_deref().cloned(),
        };
        Error::new(ErrorKind::Command(err), e.labels)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.as_ref() {
            ErrorKind::Command(c) => {
                write!(f, "Command failed: Error code {} ({}): {}", c.code, c.code_name, c.message)?
            }
            ErrorKind::Write(WriteFailure::WriteError(w)) => write!(
                f,
                "Write error: Error code {} ({}): {}",
                w.code,
                w.code_name.as_deref().unwrap_or(""),
                w.message
            )?,
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => write!(
                f,
                "Write concern error: Error code {} ({}): {}",
                w.code, w.code_name, w.message
            )?,
            ErrorKind::InsertMany(e) => {
                let n = e.write_errors.as_ref().map_or(0, Vec::len);
                write!(f, "insert_many failed: {n} write errors")?;
                if let Some(first) = e.write_errors.as_ref().and_then(|w| w.first()) {
                    write!(f, ", first at index {}: {}", first.index, first.message)?;
                }
            }
            ErrorKind::BulkWrite(e) => {
                write!(f, "bulk_write failed: {} write errors", e.write_errors.len())?;
                if let Some(first) = e.write_errors.first() {
                    write!(f, ", first at index {}: {}", first.index, first.message)?;
                }
            }
            ErrorKind::InvalidArgument { message } => write!(f, "Invalid argument: {message}")?,
            ErrorKind::Transaction { message } => write!(f, "Transaction error: {message}")?,
            ErrorKind::BsonSerialization { message } => {
                write!(f, "BSON serialization failed: {message}")?
            }
            ErrorKind::BsonDeserialization { message } => {
                write!(f, "BSON deserialization failed: {message}")?
            }
            ErrorKind::InvalidResponse { message } => {
                write!(f, "Invalid server response: {message}")?
            }
            ErrorKind::Custom(_) => write!(f, "Custom error")?,
        }
        if !self.labels.is_empty() {
            let mut labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
            labels.sort_unstable();
            write!(f, ", labels: {labels:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// An integer field of a reply, whatever its numeric type.
pub(crate) fn reply_i32(d: &Document, key: &str) -> Option<i32> {
    reply_i64(d, key).map(|n| n as i32)
}

/// An integer field of a reply, whatever its numeric type.
pub(crate) fn reply_i64(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// The `errorLabels` of a reply.
pub(crate) fn reply_labels(reply: &Document) -> Vec<String> {
    match reply.get_array("errorLabels") {
        Ok(a) => a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Parses one `writeErrors` entry.
pub(crate) fn indexed_write_error(d: &Document) -> IndexedWriteError {
    IndexedWriteError {
        index: reply_i64(d, "index").unwrap_or(0).max(0) as usize,
        code: reply_i32(d, "code").unwrap_or(8),
        code_name: d.get_str("codeName").ok().map(str::to_string),
        message: d.get_str("errmsg").unwrap_or_default().to_string(),
        details: d.get_document("errInfo").ok().cloned(),
        key_pattern: d.get_document("keyPattern").ok().cloned(),
        key_value: d.get_document("keyValue").ok().cloned(),
    }
}

/// All `writeErrors` of a reply.
pub(crate) fn write_errors(reply: &Document) -> Vec<IndexedWriteError> {
    match reply.get_array("writeErrors") {
        Ok(a) => a
            .iter()
            .filter_map(|e| match e {
                Bson::Document(d) => Some(indexed_write_error(d)),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The `writeConcernError` of a reply, if any.
pub(crate) fn write_concern_error(reply: &Document) -> Option<WriteConcernError> {
    let d = reply.get_document("writeConcernError").ok()?;
    Some(WriteConcernError {
        code: reply_i32(d, "code").unwrap_or(8),
        code_name: d.get_str("codeName").unwrap_or_default().to_string(),
        message: d.get_str("errmsg").unwrap_or_default().to_string(),
        details: d.get_document("errInfo").ok().cloned(),
    })
}

/// Turns the write errors of a single-document write's reply into an error, if any.
pub(crate) fn check_single_write(reply: &Document) -> Result<()> {
    if let Some(w) = write_errors(reply).into_iter().next() {
        let err = WriteError {
            code: w.code,
            code_name: w.code_name,
            message: w.message,
            details: w.details,
            key_pattern: w.key_pattern,
            key_value: w.key_value,
        };
        return Err(Error::new(
            ErrorKind::Write(WriteFailure::WriteError(err)),
            reply_labels(reply),
        ));
    }
    if let Some(wce) = write_concern_error(reply) {
        return Err(Error::new(
            ErrorKind::Write(WriteFailure::WriteConcernError(wce)),
            reply_labels(reply),
        ));
    }
    Ok(())
}
