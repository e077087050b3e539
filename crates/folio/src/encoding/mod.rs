//! Order-preserving key encodings: [`keycode`] for the fixed parts of storage keys (integers,
//! escaped strings), [`value`] for BSON values in MongoDB's comparison order (index keys).

// TODO(#2): drop once `Error` is smaller (its optional `extra` document makes it large).
#![allow(clippy::result_large_err)]

pub mod keycode;
pub mod value;

#[cfg(test)]
pub(crate) mod golden;

pub use value::{encode_key_component, encode_value, encoded, rank_range};
