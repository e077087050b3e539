//! Indexes: specifications ([`spec`]), key generation ([`keygen`]) and MongoDB-style printing of
//! key values in messages ([`fmt`]).

pub mod fmt;
pub mod keygen;
pub mod spec;

pub use keygen::{IndexKey, IndexKeys, format_dup_key};
pub use spec::{Comparison, ID_INDEX_NAME, IndexSpec, KeyField, default_name};
