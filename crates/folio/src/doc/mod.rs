//! doc (to be written).
