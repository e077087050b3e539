//! query (to be written).
