//! Indexes: specifications ([`spec`]), key generation ([`keygen`]), MongoDB's value hash for
//! hashed indexes ([`hash`]) and MongoDB-style printing of
//! key values in messages ([`fmt`]).

pub mod fmt;
pub mod hash;
pub mod keygen;
pub mod spec;

pub use spec::{IndexSpec, Plugin};
