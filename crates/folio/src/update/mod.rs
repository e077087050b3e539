//! update (to be written).
