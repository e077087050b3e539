//! Order-preserving key encodings: [`keycode`] for the fixed parts of storage keys (integers,
//! escaped strings), [`value`] for BSON values in MongoDB's comparison order (index keys).

pub mod keycode;
pub mod value;

#[cfg(test)]
pub(crate) mod golden;

pub use value::encode_key_component;
