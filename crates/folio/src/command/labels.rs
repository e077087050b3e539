//! Error labels, computed in one place exactly as MongoDB's server computes them.
//!
//! - **TransientTransactionError** goes only on errors of commands inside a transaction
//!   (`txnNumber` with `autocommit: false`): write conflicts, lock timeouts, snapshot errors, and
//!   NoSuchTransaction; on statements other than commit/abort also the retryable (not-primary,
//!   shutdown, network) codes. On commit/abort, NoSuchTransaction gets it only without a
//!   writeConcernError.
//! - **RetryableWriteError** goes on retryable codes (in the error or in a writeConcernError) of
//!   retryable writes and of commit/abort — never together with TransientTransactionError.

use bson::{Bson, Document, doc};

use super::runner::{Mode, OpContext};
use crate::error::{Code, Error, labels};

/// MongoDB's RetriableError category (the `codes!` table in `error.rs`).
pub fn is_retryable_code(code: i32) -> bool {
    Code::from_number(code).is_retryable()
}

fn is_commit_or_abort(op: &OpContext) -> bool {
    matches!(op.name.as_str(), "commitTransaction" | "abortTransaction")
}

/// Whether an error with `code` in this context is a transient transaction error.
pub fn is_transient(code: i32, has_wce: bool, op: &OpContext) -> bool {
    if !matches!(op.mode(), Mode::Transaction(_)) {
        return false;
    }
    let code = Code::from_number(code);
    let mut transient = code.is_transient_in_txn();
    if is_commit_or_abort(op) {
        transient |= code == Code::NoSuchTransaction && !has_wce;
    } else {
        transient |= code.is_retryable() || code == Code::NoSuchTransaction;
    }
    transient
}

fn is_retryable_context(op: &OpContext) -> bool {
    matches!(op.mode(), Mode::Retryable(_))
        || (matches!(op.mode(), Mode::Transaction(_)) && is_commit_or_abort(op))
}

/// Adds the labels MongoDB would add to a command error.
pub fn add_labels(e: &mut Error, op: &OpContext, has_wce: bool) {
    let code = e.code_number();
    if is_transient(code, has_wce, op) {
        e.add_label(labels::TRANSIENT_TRANSACTION_ERROR);
    } else if is_retryable_context(op) && is_retryable_code(code) {
        e.add_label(labels::RETRYABLE_WRITE_ERROR);
    }
}

/// The labels of a successful reply that carries a writeConcernError with `code`.
pub fn write_concern_labels(code: i32, op: &OpContext) -> Vec<String> {
    if is_retryable_context(op) && is_retryable_code(code) {
        vec![labels::RETRYABLE_WRITE_ERROR.to_string()]
    } else {
        Vec::new()
    }
}

/// Checks a write concern against a one-member replica set: `w` above 1 cannot be satisfied, and
/// a tag other than `majority` is unknown. Returns the writeConcernError document, if any.
pub fn check_write_concern(wc: Option<&Document>) -> Option<Document> {
    let wc = wc?;
    // Built only for an error: most write concerns are satisfiable.
    let info = || doc! { "writeConcern": wc.clone() };
    match wc.get("w") {
        Some(Bson::Int32(n)) if *n > 1 => Some(unsatisfiable(info())),
        Some(Bson::Int64(n)) if *n > 1 => Some(unsatisfiable(info())),
        Some(Bson::Double(n)) if *n > 1.0 => Some(unsatisfiable(info())),
        Some(Bson::String(tag)) if tag != "majority" => Some(doc! {
            "code": Code::UnknownReplWriteConcern.number(),
            "codeName": Code::UnknownReplWriteConcern.name().as_ref(),
            "errmsg": format!("No write concern mode named '{tag}' found in replica set configuration"),
            "errInfo": info(),
        }),
        _ => None,
    }
}

fn unsatisfiable(info: Document) -> Document {
    doc! {
        "code": Code::UnsatisfiableWriteConcern.number(),
        "codeName": Code::UnsatisfiableWriteConcern.name().as_ref(),
        "errmsg": "Not enough data-bearing nodes",
        "errInfo": info,
    }
}
