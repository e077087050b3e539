//! Multi-version concurrency control: snapshot-isolation transactions over an ordered KV engine.
//!
//! This file holds the *interface* every upper layer uses to reach storage: [`TxnStore`] begins
//! transactions, [`Txn`] reads and writes inside one. Nothing above this module touches the storage
//! engine directly, so a later backend that brings its own transactions (a distributed SQL engine,
//! TiKV) can implement these two traits and carry the whole database.
//!
//! A write conflict is a *value* ([`Conflict`]), not an error: the caller decides what it means.
//! Inside a multi-document transaction it becomes WriteConflict (112) with
//! TransientTransactionError; a single-statement write instead waits for the holder
//! ([`TxnStore::wait_for`]) and retries.

use std::ops::Bound;
use std::time::Instant;

use crate::error::Result;

mod cache;
pub mod keys;
mod store;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod script_tests;

pub use store::{Clock, Mvcc, MvccOptions};

/// A cluster time: a BSON timestamp packed as `seconds << 32 | increment`, so that the natural
/// integer order is the timestamp order. Commit timestamps strictly increase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub u64);

impl Ts {
    /// The smallest timestamp; no commit has it.
    pub const ZERO: Ts = Ts(0);

    /// Builds a timestamp from seconds and increment.
    pub fn new(secs: u32, inc: u32) -> Ts {
        Ts((u64::from(secs) << 32) | u64::from(inc))
    }

    /// The seconds part.
    pub fn secs(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The increment part.
    pub fn inc(self) -> u32 {
        self.0 as u32
    }

    /// As a BSON timestamp.
    pub fn to_bson(self) -> bson::Timestamp {
        bson::Timestamp { time: self.secs(), increment: self.inc() }
    }

    /// From a BSON timestamp.
    pub fn from_bson(t: bson::Timestamp) -> Ts {
        Ts::new(t.time, t.increment)
    }
}

/// Identifies a transaction while it is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub u64);

/// A write that lost under first-writer-wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The key that was written.
    pub key: Vec<u8>,
    /// The in-flight transaction that holds the key, or `None` when the key was committed by
    /// another transaction after this one's snapshot.
    pub holder: Option<TxnId>,
}

/// The outcome of a write: `Ok(())`, or the conflict that prevented it. The transaction is still
/// usable after a conflict (the write was not applied); callers normally abort it.
pub type WriteResult = std::result::Result<(), Conflict>;

/// Turns a lost write into the WriteConflict error (112) for callers that give up on a conflict
/// (every write of the layers above). The [`Conflict`] itself stays with the transaction
/// ([`Txn::last_conflict`]), for the layer that decides what to do about it: the autocommit
/// runner waits for the holder and retries.
pub trait OrConflict {
    /// `Ok(())`, or WriteConflict naming `what` conflicted.
    fn or_conflict(self, what: &str) -> Result<()>;

    /// [`OrConflict::or_conflict`] with the name made only on a conflict (a write's common
    /// case has none, and formatting a namespace and an `_id` costs more than the write's
    /// bookkeeping).
    fn or_conflict_with(self, what: impl FnOnce() -> String) -> Result<()>;
}

impl OrConflict for WriteResult {
    fn or_conflict_with(self, what: impl FnOnce() -> String) -> Result<()> {
        match self {
            Ok(()) => Ok(()),
            Err(_) => self.or_conflict(&what()),
        }
    }

    fn or_conflict(self, what: &str) -> Result<()> {
        match self {
            Ok(()) => Ok(()),
            Err(conflict) => Err(crate::Error::new(
                crate::Code::WriteConflict,
                format!(
                    "Write conflict during plan execution and yielding is disabled. :: Please retry \
                     your operation or multi-document transaction. (conflict on {what}{})",
                    match conflict.holder {
                        Some(_) => ", written by a transaction in progress",
                        None => ", written by a transaction that committed after this one started",
                    }
                ),
            )),
        }
    }
}

/// An iterator over `(key, value)` pairs of a scan, in key order (or reverse order).
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a>;

/// Called once the commits it waited for are durable, or with the error that kept them from
/// becoming so (see [`TxnStore::when_durable`]).
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// Begins transactions. Implemented by Folio's MVCC over a storage engine; a distributed backend
/// may implement it too.
pub trait TxnStore: Send + Sync {
    /// Begins a read-write transaction whose snapshot is the latest committed state.
    fn begin(&self) -> Result<Box<dyn Txn>>;

    /// Begins a read-only transaction that sees the state as of `ts` (`readConcern: snapshot`
    /// with `atClusterTime`). As MongoDB: fails with SnapshotTooOld (239) when `ts` is older than
    /// the history window (or than what garbage collection kept), and with InvalidOptions (72)
    /// when `ts` is after the latest commit. Writes in such a transaction fail with
    /// IllegalOperation.
    fn begin_read_only_at(&self, ts: Ts) -> Result<Box<dyn Txn>>;

    /// The timestamp of the latest commit visible to new snapshots (the cluster time).
    fn last_committed(&self) -> Ts;

    /// The newest commit that survives a crash (MongoDB's majority commit point; on one node a
    /// commit is majority-committed once it is journaled): `readConcern: majority` reads as of
    /// it. A store whose commits are durable once visible answers [`TxnStore::last_committed`].
    fn majority_committed(&self) -> Ts {
        self.last_committed()
    }

    /// Blocks until the in-flight transaction `txn` has committed or aborted, or `deadline`
    /// passes. Returns whether it finished.
    fn wait_for(&self, txn: TxnId, deadline: Option<Instant>) -> bool;

    /// Makes everything committed so far durable (commits already are; this is for shutdown).
    fn flush(&self) -> Result<()>;

    /// Makes every commit made with [`Txn::commit_deferred`] so far durable. A store whose
    /// commits are always durable has nothing to do.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Calls `done` once every commit up to `ts` (made with [`Txn::commit_deferred`]) is
    /// durable, without making the caller wait: an event loop hands over its reply and goes on.
    /// `done` may run at once on the caller's thread, or later on another. A store without a
    /// way to wait asynchronously syncs here.
    fn when_durable(&self, ts: Ts, done: DurableCallback) {
        let _ = ts;
        done(self.sync())
    }

    /// Makes every commit up to `ts` durable: [`TxnStore::sync`], but a sync already covering
    /// `ts` is enough.
    fn sync_until(&self, ts: Ts) -> Result<()> {
        let _ = ts;
        self.sync()
    }

    /// Transaction counters for `serverStatus`; a store that keeps none reports zeros.
    fn stats(&self) -> TxnStats {
        TxnStats::default()
    }

    /// Reads up to `limit` change-log records committed after `after`, oldest first, each with
    /// its commit timestamp (see [`Txn::append_log`]). Only commits up to the majority commit
    /// point ([`TxnStore::majority_committed`]) are returned, so a later call never finds a
    /// record before the last one returned, and no crash takes a returned one back. A store
    /// without a change log refuses with NotImplemented.
    fn read_log(&self, after: Ts, limit: usize) -> Result<Vec<(Ts, Vec<u8>)>> {
        let _ = (after, limit);
        Err(crate::err!(NotImplemented, "this store keeps no change log"))
    }

    /// The newest commit timestamp whose change-log record may have been trimmed away: events
    /// after it are all still in the log.
    fn log_floor(&self) -> Ts {
        Ts::ZERO
    }

    /// Sets the change-log retention: records are trimmed, oldest first, while the log holds
    /// more than `max_bytes` and the record is older than `min_age`.
    fn set_log_retention(&self, max_bytes: u64, min_age: std::time::Duration) {
        let _ = (max_bytes, min_age);
    }

    /// The change-log retention `(max_bytes, min_age)` and the bytes the log holds now.
    fn log_usage(&self) -> (u64, std::time::Duration, u64) {
        (0, std::time::Duration::ZERO, 0)
    }

    /// Blocks until the majority commit point passes `after` or `deadline` passes, without
    /// polling; returns the majority commit point.
    fn wait_commit_after(&self, after: Ts, deadline: Instant) -> Ts {
        let _ = after;
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        self.majority_committed()
    }

    /// Whether every call may wait on the network (a store over a remote database): the
    /// server then runs every command on its blocking pool, never on a connection's task.
    fn remote(&self) -> bool {
        false
    }

    /// Reads the latest committed value of `key` once no transaction is writing it any more:
    /// a transaction whose commit is in flight (on another front end of a shared store, which
    /// may have died after sending it) is waited for, so its outcome is what this read sees.
    ///
    /// A local store needs no wait: the only writer of the keys this is used for (a session's
    /// record) is the command holding the session, so a snapshot read is already settled.
    fn get_settled(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.begin()?;
        let got = txn.get(key);
        txn.abort();
        got
    }
}

/// Transaction counters for `serverStatus` (see [`TxnStore::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Transactions begun since open (including read-only ones).
    pub started: u64,
    /// Transactions begun and not yet finished (including read-only ones).
    pub active: u64,
    /// Transactions committed (including those without writes).
    pub commits: u64,
    /// Transactions aborted (explicitly or by being dropped).
    pub aborts: u64,
    /// Writes refused by first-writer-wins.
    pub conflicts: u64,
    /// Engine batches written by commits (fewer than commits when group commit shares them).
    pub commit_batches: u64,
    /// Sync rounds run to make commits durable (one `fdatasync` each; fewer than commit
    /// batches when durable commits share them).
    pub syncs: u64,
    /// Versions deleted by garbage collection.
    pub gc_deleted: u64,
    /// Reads answered from the version cache ([`MvccOptions::version_cache_bytes`]).
    pub cache_hits: u64,
    /// Reads the version cache could not answer.
    pub cache_misses: u64,
    /// The latest visible commit.
    pub last_committed: Ts,
    /// The highest garbage-collection watermark used so far.
    pub gc_watermark: Ts,
}

/// A shared store is a store, so `Arc<Mvcc>` (what [`Mvcc::open`] returns) can be used wherever
/// a `TxnStore` is expected, including wrapped once more.
impl<T: TxnStore + ?Sized> TxnStore for std::sync::Arc<T> {
    fn begin(&self) -> Result<Box<dyn Txn>> {
        (**self).begin()
    }

    fn begin_read_only_at(&self, ts: Ts) -> Result<Box<dyn Txn>> {
        (**self).begin_read_only_at(ts)
    }

    fn last_committed(&self) -> Ts {
        (**self).last_committed()
    }

    fn majority_committed(&self) -> Ts {
        (**self).majority_committed()
    }

    fn wait_for(&self, txn: TxnId, deadline: Option<Instant>) -> bool {
        (**self).wait_for(txn, deadline)
    }

    fn flush(&self) -> Result<()> {
        (**self).flush()
    }

    fn sync(&self) -> Result<()> {
        (**self).sync()
    }

    fn when_durable(&self, ts: Ts, done: DurableCallback) {
        (**self).when_durable(ts, done)
    }

    fn sync_until(&self, ts: Ts) -> Result<()> {
        (**self).sync_until(ts)
    }

    fn stats(&self) -> TxnStats {
        (**self).stats()
    }

    fn read_log(&self, after: Ts, limit: usize) -> Result<Vec<(Ts, Vec<u8>)>> {
        (**self).read_log(after, limit)
    }

    fn log_floor(&self) -> Ts {
        (**self).log_floor()
    }

    fn set_log_retention(&self, max_bytes: u64, min_age: std::time::Duration) {
        (**self).set_log_retention(max_bytes, min_age)
    }

    fn log_usage(&self) -> (u64, std::time::Duration, u64) {
        (**self).log_usage()
    }

    fn wait_commit_after(&self, after: Ts, deadline: Instant) -> Ts {
        (**self).wait_commit_after(after, deadline)
    }

    fn remote(&self) -> bool {
        (**self).remote()
    }

    fn get_settled(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get_settled(key)
    }
}

/// One transaction: a snapshot to read, and a private write buffer applied atomically at commit.
pub trait Txn: Send {
    /// This transaction's id.
    fn id(&self) -> TxnId;

    /// The snapshot this transaction reads.
    fn snapshot(&self) -> Ts;

    /// Reads a key: this transaction's own write if any, else the snapshot's version.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Scans a key range as of the snapshot, merged with this transaction's own writes.
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<ScanIter<'_>>;

    /// Writes a key. Returns the conflict if another in-flight transaction holds the key or a
    /// transaction committed it after this snapshot (first writer wins, detected here).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteResult>;

    /// Deletes a key, with the same conflict rule as [`Txn::put`].
    fn delete(&mut self, key: &[u8]) -> Result<WriteResult>;

    /// Marks the point that [`Txn::rollback_to_savepoint`] goes back to, replacing an earlier
    /// mark: the statements of one write command share a transaction, and a statement that
    /// fails is undone alone. Returns false when this transaction cannot (each statement then
    /// runs in a transaction of its own).
    fn set_savepoint(&mut self) -> bool {
        false
    }

    /// Undoes the writes and change-log entries made since the savepoint and releases the keys
    /// first taken since; the mark stays where it was.
    fn rollback_to_savepoint(&mut self) {}

    /// The most recent write of this transaction that lost ([`Txn::put`], [`Txn::delete`]), so
    /// that the layer deciding what to do about a WriteConflict (wait for the holder, or retry
    /// at once) can read it after the error has travelled up. `None` when no write lost, or
    /// for a store that does not keep it (the runner then retries at once).
    fn last_conflict(&self) -> Option<Conflict> {
        None
    }

    /// Whether this transaction has written anything.
    fn has_writes(&self) -> bool;

    /// Appends one entry (a self-delimiting BSON document) to this transaction's change-log
    /// record. If the transaction commits with writes, the record (the header, then the entries
    /// in the order appended) is written in the same atomic batch as the data, under the commit
    /// timestamp, so the log holds exactly the committed transactions in commit order. A store
    /// without a change log drops the entries (its [`TxnStore::read_log`] refuses readers).
    fn append_log(&mut self, entry: &[u8]) {
        let _ = entry;
    }

    /// Sets the header of this transaction's change-log record (a BSON document: who ran the
    /// transaction). Without one the record starts with an empty document.
    fn set_log_header(&mut self, header: &[u8]) {
        let _ = header;
    }

    /// Commits atomically and durably (the commit is on disk before this returns) and returns the
    /// commit timestamp (the snapshot timestamp for a transaction without writes).
    fn commit(self: Box<Self>) -> Result<Ts>;

    /// Commits atomically like [`Txn::commit`], visible at once, but durable only at the next
    /// [`TxnStore::sync`] or durable commit: the statements of one write command commit this way
    /// and the command syncs once before it replies, so a batch costs one sync instead of one
    /// per statement. After a crash before the sync the transaction is wholly present or wholly
    /// absent. By default, the same as `commit`.
    fn commit_deferred(self: Box<Self>) -> Result<Ts> {
        self.commit()
    }

    /// Discards the transaction's writes and releases its keys.
    fn abort(self: Box<Self>);
}

#[cfg(test)]
mod conflict_tests {
    use std::sync::Arc;

    use super::{Mvcc, MvccOptions, OrConflict, TxnStore};
    use crate::storage::MemoryEngine;

    #[test]
    fn a_lost_write_stays_with_its_transaction_and_reads_as_write_conflict() {
        let store =
            Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("open");
        let mut a = store.begin().expect("a");
        let mut b = store.begin().expect("b");
        a.put(b"k", b"1").expect("put").or_conflict("k").expect("the first writer wins");
        assert_eq!(a.last_conflict(), None);
        let lost = b.put(b"k", b"2").expect("put");
        let conflict = b.last_conflict().expect("b keeps the conflict that stopped it");
        assert_eq!(conflict.holder, Some(a.id()));
        assert_eq!(conflict.key, b"k".to_vec());
        let e = lost.or_conflict("key k").expect_err("the second writer loses");
        assert!(e.is_write_conflict());
        assert!(e.message.contains("(conflict on key k, written by a transaction in progress)"));
        a.abort();
        b.abort();
    }

    /// Conflicts with commits made after a snapshot are found from the commits remembered in
    /// memory, and, for a transaction older than what memory keeps (many commits while it ran),
    /// from the engine: both ways give the same answers.
    #[test]
    fn commits_after_a_snapshot_conflict_whether_remembered_or_read_from_the_engine() {
        let store =
            Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("open");
        let commit = |key: &[u8]| {
            let mut t = store.begin().expect("begin");
            t.put(key, b"v").expect("put").or_conflict("k").expect("no conflict");
            t.commit().expect("commit");
        };
        let mut old = store.begin().expect("old");
        let mut recent = store.begin().expect("recent");
        commit(b"x");
        // Remembered: the commit is newer than `recent`'s snapshot.
        let e = recent.put(b"x", b"r").expect("put").or_conflict("x").expect_err("lost");
        assert!(e.is_write_conflict());
        assert_eq!(recent.last_conflict().expect("conflict").holder, None);
        recent.put(b"untouched", b"r").expect("put").or_conflict("u").expect("free key");
        recent.abort();
        // Far more commits than memory keeps while `old` stays open: its snapshot falls behind
        // the horizon, and its writes read the engine.
        for i in 0..1000u32 {
            commit(format!("k{i}").as_bytes());
        }
        let e = old.put(b"x", b"o").expect("put").or_conflict("x").expect_err("lost");
        assert!(e.is_write_conflict());
        let e = old.put(b"k999", b"o").expect("put").or_conflict("k").expect_err("lost");
        assert!(e.is_write_conflict());
        old.put(b"never-written", b"o").expect("put").or_conflict("n").expect("free key");
        old.abort();
        // A transaction begun after all of them conflicts with none.
        let mut new = store.begin().expect("new");
        new.put(b"x", b"n").expect("put").or_conflict("x").expect("no newer commit");
        new.put(b"k0", b"n").expect("put").or_conflict("k").expect("no newer commit");
        new.commit().expect("commit");
    }
}
