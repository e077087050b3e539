//! Storage engines: a narrow ordered byte key-value interface.
//!
//! The MVCC layer above is the only user. An engine offers point reads, ordered range scans in
//! both directions, one atomic write batch (optionally synced) and status. It knows nothing of
//! versions, transactions or documents.
