//! Storage engines: a narrow ordered byte key-value interface.
//!
//! The MVCC layer above is the only user. An engine offers point reads, ordered range scans in
//! both directions, one atomic write batch (optionally synced) and status. It knows nothing of
//! versions, transactions or documents.
//!
//! # Why so narrow
//!
//! Everything that makes Folio a database (versions, snapshots, conflicts, group commit) lives in
//! [`crate::mvcc`], above this trait. An engine only has to be an ordered map that can apply a
//! batch atomically and make it durable. That keeps the two engines small and lets tests run the
//! same suite against both:
//!
//! - [`MemoryEngine`]: a `BTreeMap` behind a read-write lock, for tests and `--in-memory`.
//! - [`RedbEngine`]: one redb file in a data directory, its keys spread over tables by a
//!   [`Layout`] (`redb_tables.rs`), with a write-ahead log (`wal.rs`) that makes synced
//!   batches durable with one sequential append.
//!
//! # Scans see one state and hold no locks
//!
//! [`Engine::scan`] returns an owned, `'static` iterator over one consistent state of the engine:
//! writes made while it runs are invisible to it. The MVCC layer relies on that (garbage
//! collection deletes a key's old version together with the tombstone after it; a scan that saw
//! the one but not the other would bring a deleted key back). The redb engine iterates over a
//! read transaction that the iterator keeps alive (redb's readers never block writers). The
//! memory engine keeps a reference to the copy-on-write map as it was when the scan began, and a
//! write that finds it shared copies it first, so a long scan never stalls writers. The shared
//! suite in `tests.rs` checks the property for every engine.

mod memory;
mod redb_engine;
mod redb_tables;
mod wal;

#[cfg(test)]
mod tests;

use std::ops::Bound;

pub use memory::MemoryEngine;
pub use redb_engine::{DEFAULT_CACHE_BYTES, RedbEngine};

use crate::error::Result;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets a key to a value.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key (a no-op if it is absent).
    Delete(Vec<u8>),
}

/// A list of writes applied atomically by [`Engine::write`], in order (a later operation on the
/// same key wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The operations, in application order.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put(key.into(), value.into()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete(key.into()));
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An owned iterator over `(key, value)` pairs of an engine scan. It borrows nothing, so it may
/// outlive the call that created it and never holds an engine-wide lock for its whole life.
pub type KvIter = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;

/// Engine statistics, for `serverStatus` and `dbStats`-style reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The engine's name (`memory`, `redb`).
    pub name: String,
    /// The number of keys (may be an estimate).
    pub keys: u64,
    /// The total size of keys and values in bytes (may be an estimate).
    pub size: u64,
    /// The size on disk in bytes (0 for the memory engine).
    pub disk_size: u64,
}

/// An ordered byte key-value store with atomic, optionally durable batches.
pub trait Engine: Send + Sync {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Scans a key range in key order, or in reverse key order when `reverse` is true. An empty
    /// or inverted range yields nothing. The iterator sees one consistent state of the engine
    /// (writes made while it runs are invisible to it), which the MVCC layer relies on.
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<KvIter>;

    /// The entry with the greatest key in `start..=end` (MVCC's "newest version of a key at a
    /// snapshot"): a reverse scan's first entry, which an engine may find without building a
    /// scan.
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.scan(Bound::Included(start), Bound::Included(end), true)?.next().transpose()
    }

    /// Applies a batch atomically: after a crash either all of it is present or none. When `sync`
    /// is true the batch is durable before this returns.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()>;

    /// Applies a batch atomically like [`Engine::write`] with `sync`, except that durability is
    /// deferred to the next [`Engine::sync`] (or synced write): after a crash before that, the
    /// batch is either wholly present or wholly absent. An engine without such a mode makes it
    /// durable at once.
    fn write_deferred(&self, batch: WriteBatch) -> Result<()> {
        self.write(batch, true)
    }

    /// The work a write made due that need not hold up the next one: for an engine that stages
    /// writes before moving them into its tree, that move, and a checkpoint. [`Engine::write`]
    /// does it itself; [`Engine::write_deferred`] leaves it to its caller, to run once the next
    /// writers may go on (the MVCC layer runs it after a commit round has handed on its lead,
    /// so that the next round's commits do not wait behind it). Failures are the engine's to
    /// report and retry: the writes are logged and readable whatever happens here. A no-op for
    /// an engine that has none.
    fn upkeep(&self) {}

    /// Makes every deferred write so far durable (a no-op for an engine that has none).
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Whether [`Engine::write_deferred`] really defers durability to [`Engine::sync`] (an
    /// engine that makes every write durable at once, or keeps nothing on disk, says no, and
    /// then nobody needs to call `sync`).
    fn defers_sync(&self) -> bool {
        false
    }

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;

    /// Statistics.
    fn status(&self) -> Result<Status>;
}

/// Which table of an engine holds a key, for an engine that keeps several (the redb engine): the
/// keys of one table form one B-tree, so that a table's newest key is often its last (an
/// ascending load then fills pages instead of splitting them) and a table's lookups descend a
/// tree of its own keys only. The engine's interface stays one ordered keyspace: scans that
/// cross tables are merged in key order.
#[derive(Clone, Copy)]
pub struct Layout {
    /// The layout's name, recorded in the engine's files: opening files written under another
    /// layout moves their keys to the tables this one names.
    pub name: &'static str,
    /// The length of the prefix of `key` that names its table, or 0 for the shared table. It
    /// must be consistent: every key that starts with a table's prefix is that table's (so a
    /// table's keys are exactly the keys with its prefix, and no table's prefix starts
    /// another's).
    pub table_prefix: fn(&[u8]) -> usize,
}

impl Layout {
    /// Every key in one table.
    pub const SINGLE: Layout = Layout { name: "single", table_prefix: |_| 0 };
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").field("name", &self.name).finish()
    }
}

/// Whether a range is empty because its bounds are inverted or exclude each other. Scans check
/// this first: ordered maps panic on such ranges, and bounds may come from client input.
pub fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
    }
}

/// Copies a borrowed bound into an owned one.
pub fn owned_bound(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
