//! cursor (to be written).
