//! Folio wire-protocol server (to be written).
