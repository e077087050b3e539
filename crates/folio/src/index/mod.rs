//! Indexes: specifications ([`spec`]), key generation ([`keygen`]) and MongoDB-style printing of
//! key values in messages ([`fmt`]).

// TODO(#2): drop once `Error` is smaller (its optional `extra` document makes it large).
#![allow(clippy::result_large_err)]

pub mod fmt;
pub mod keygen;
pub mod spec;

pub use keygen::{IndexKey, IndexKeys, format_dup_key};
pub use spec::{Comparison, ID_INDEX_NAME, IndexSpec, KeyField, default_name};
