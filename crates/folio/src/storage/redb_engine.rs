//! The redb engine: one database file in a data directory, its tables of byte keys and values
//! (one shared table, and one per prefix a [`Layout`] names: see [`super::redb_tables`]), and a
//! write-ahead log beside it for synced batches (see [`super::wal`] for why and how).
//!
//! # Pending writes
//!
//! A redb commit rewrites and checksums a root-to-leaf path of its copy-on-write B-tree for
//! every leaf it touches, and allocates and zeroes fresh pages for them: about 180k instructions
//! per commit, most of an insert's cost, whatever the commit's size. Folio's durability comes
//! from the write-ahead log, not from redb, so a batch need not reach redb at once: a write is
//! logged (that is what makes it durable), then kept in memory among the *pending* writes, which
//! reads consult before redb. When the pending writes reach [`FLUSH_OPS`] keys or
//! [`FLUSH_BYTES`], they go to redb in one commit, and a checkpoint flushes them before it makes
//! redb durable and empties the log. A thousand single-document inserts thus cost about a dozen
//! redb commits, not a thousand.
//!
//! Reads stay consistent and never wait for redb: a flush moves the pending writes aside as
//! *flushing* (still read, under newer pending writes) while redb commits them outside the lock,
//! so a scan that copies its range of the pending writes and opens its redb view under the lock
//! sees the same state whether that commit has happened yet or not. Writes do not wait for it
//! either: the writer whose batch fills the pending writes flushes them after it has released
//! the log's lock, one flush at a time, while the others go on logging and staging newer
//! writes. A write is logged before it becomes pending, and the pending writes are flushed as
//! soon as a batch fills them (so a bulk load's last batch does not stay pending for every
//! later scan to copy). A failure leaves nothing half-done: a write whose log append failed is
//! reported failed and was never visible; a flush that fails after its batch was staged leaves
//! the writes pending, and once they are twice a flush's worth the next write flushes them,
//! under the log's lock, before it is logged, failing if that fails again.
//!
//! # Checkpoints
//!
//! Every [`CHECKPOINT_FLUSHES`] flushes (or [`CHECKPOINT_BYTES`] of log) a write checkpoints:
//! one durable redb commit, after which the log's records are redundant. That commit writes out
//! every page dirtied since the last one and syncs the data file, milliseconds during which a
//! writer holding the log's lock would stall all the others (it set the writes' p99 at 32
//! clients). So only the start runs under the lock: the pending writes are flushed, so redb
//! holds everything logged so far, and the log starts a new segment (`Wal::rotate`). The durable
//! commit then runs without the lock, and the old segment is deleted once it has succeeded.
//! Meanwhile writers go on logging and staging; they do not flush (a flush would wait for the
//! checkpoint's redb transaction while holding the log's lock) unless the pending writes reach
//! [`FLUSH_BYTES`]. A crash in between leaves both segments, replayed in order. A checkpoint
//! that fails leaves the old segment in place; the next one commits again and retires it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability};

use super::redb_tables::{self, Route, Snapshot, internal};
use super::wal::Wal;
use super::{Engine, KvIter, Layout, Status, WriteBatch, WriteOp, range_is_empty};
use crate::error::Result;

/// The page cache's size when none is given: PostgreSQL's default `shared_buffers`. The kernel
/// caches the file beyond it, as it does for PostgreSQL; a larger cache trades memory for fewer
/// copies from the kernel (`--wiredTigerCacheSizeGB`).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// The database file's name inside the data directory.
const FILE_NAME: &str = "folio.redb";
/// The write-ahead log's name inside the data directory.
const WAL_NAME: &str = "folio.wal";
/// A checkpoint follows this many flushes of pending writes (non-durable redb commits): redb
/// frees the pages that non-durable commits replace only at a durable commit, so the file grows
/// until the next checkpoint. Counted in flushes, not log records: commits are appended without
/// waiting for a sync, so a record holds one or two commits. A checkpoint's durable commit
/// takes 15-50 ms (longer the rarer it is); at 1,024 rather than 256 they came a
/// quarter as often under 32 writers, the writes' p99 fell, and neither the data directory
/// (136 → 142 MB) nor the peak RSS (138 → 126 MB) grew measurably.
const CHECKPOINT_FLUSHES: u64 = 1024;
/// A checkpoint also follows once the log is this long.
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Pending writes go to redb once they hold this many keys... A redb commit costs per page it
/// rewrites, and the more keys one commit takes, the more of them share a leaf or a branch:
/// an update (three keys) spent 59 K instructions in flushes at 64 keys a flush, 41 K at 512.
/// Not many more: a scan copies the pending writes of its range (with 4,096, a hot counter's
/// reads spent half their time copying, when they still scanned), and a flush's commit is
/// one writer's wait.
pub const FLUSH_OPS: usize = 256;
/// ...or this many bytes of keys and values.
const FLUSH_BYTES: usize = 4 << 20;

/// A pending write: the key and its newest value, `None` for a deletion.
type PendingWrite = (Vec<u8>, Option<Vec<u8>>);

/// Pending writes by key.
type PendingMap = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes made (and logged, when they asked for durability) but not yet committed to redb: each
/// key's newest value, `None` for a deletion.
#[derive(Default)]
struct Pending {
    writes: PendingMap,
    /// The bytes of the keys and values held.
    bytes: usize,
    /// The writes a flush is committing to redb right now, older than `writes`: readers still
    /// consult them (redb's commit runs outside the lock, so that reads never wait for it).
    flushing: Option<Arc<PendingMap>>,
    /// Flushes since the last checkpoint.
    flushes: u64,
}

impl Pending {
    fn stage(&mut self, batch: WriteBatch) {
        for op in batch.ops {
            let (key, value) = match op {
                WriteOp::Put(k, v) => (k, Some(v)),
                WriteOp::Delete(k) => (k, None),
            };
            self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            if let Some(Some(old)) = self.writes.insert(key, value) {
                // The key itself was counted by the write it replaces.
                self.bytes = self.bytes.saturating_sub(old.len());
            }
        }
    }

    /// The pending value of a key: `Some(None)` for a pending deletion.
    fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.writes.get(key).or_else(|| self.flushing.as_ref().and_then(|f| f.get(key))).cloned()
    }

    /// The pending write with the greatest key in `start..upper` (a newer write over a
    /// flushing one of the same key).
    fn last_in<'a>(
        &'a self,
        start: &[u8],
        upper: Bound<&[u8]>,
    ) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        let newest = |m: &'a PendingMap| {
            m.range::<[u8], _>((Bound::Included(start), upper))
                .next_back()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
        };
        match (newest(&self.writes), self.flushing.as_deref().and_then(newest)) {
            (Some(w), Some(f)) => Some(if f.0 > w.0 { f } else { w }),
            (w, f) => w.or(f),
        }
    }

    /// The pending writes of a range, in key order (a newer write over a flushing one).
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<PendingWrite> {
        let copy = |m: &PendingMap| -> Vec<PendingWrite> {
            m.range::<[u8], _>((start, end)).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let newer = copy(&self.writes);
        let Some(flushing) = &self.flushing else { return newer };
        let mut merged: PendingMap = copy(flushing).into_iter().collect();
        merged.extend(newer);
        merged.into_iter().collect()
    }
}

/// An engine storing everything in one redb file. A write with `sync` is appended to the
/// write-ahead log and synced, then becomes pending and reaches redb with the next flush
/// (`Durability::None`); a periodic checkpoint (one `Durability::Immediate` commit) makes redb
/// itself durable and empties the log. Writes without `sync` skip the log.
pub struct RedbEngine {
    db: Database,
    path: PathBuf,
    /// The log, locked across append + staging so that batches become pending in log order.
    wal: Mutex<Wal>,
    /// Writes not yet in redb (see the module documentation); taken after `wal`.
    pending: RwLock<Pending>,
    /// Held for the whole of a checkpoint (taken before `wal`): one at a time.
    checkpoint: Mutex<()>,
    /// Held for the whole of a flush of the pending writes (taken after `wal` when both are):
    /// one at a time, so that at most one set of writes is `flushing`.
    flush: Mutex<()>,
    /// A checkpoint's durable commit is running without the log's lock (see "Checkpoints").
    checkpointing: AtomicBool,
    /// Flushes before a checkpoint ([`CHECKPOINT_FLUSHES`]; smaller in tests).
    checkpoint_flushes: u64,
    /// For tests: checkpoints start but never finish, as when the process dies in between.
    #[cfg(test)]
    stall_checkpoints: AtomicBool,
    /// The number of pending keys that triggers a flush ([`FLUSH_OPS`]; smaller in tests).
    flush_ops: usize,
    /// Which table holds each key.
    layout: Layout,
    /// The prefixes of the tables other than the shared one, as of the last commit: changed
    /// only by commits (one at a time), before their generation is published.
    tables: RwLock<BTreeSet<Vec<u8>>>,
    /// Counts the commits to redb, bumped after each one.
    generation: AtomicU64,
    /// The last snapshot opened, with the generation read just before opening it: every read
    /// until the next commit shares it. Opening one (a redb read transaction and its tables)
    /// costs more than the lookup itself, and a statement makes several lookups.
    view: Mutex<Option<(u64, Arc<Snapshot>)>>,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbEngine").field("path", &self.path).finish()
    }
}

impl RedbEngine {
    /// Opens (creating if needed) the database in directory `dir`, with the default page cache
    /// (`DEFAULT_CACHE_BYTES`) and every key in one table.
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbEngine> {
        Self::open_with(dir, DEFAULT_CACHE_BYTES, Layout::SINGLE)
    }

    /// Opens (creating if needed) the database in directory `dir`, with a page cache of
    /// `cache_bytes`: the memory the engine keeps for file pages, read or written. Keys go to
    /// the tables `layout` names; files written under another layout are brought to this one
    /// first (see [`Layout`]).
    pub fn open_with(
        dir: impl AsRef<Path>,
        cache_bytes: usize,
        layout: Layout,
    ) -> Result<RedbEngine> {
        std::fs::create_dir_all(dir.as_ref())?;
        let path = dir.as_ref().join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(page_cache_budget(cache_bytes))
            .create(&path)
            .map_err(|e| internal("open", e))?;
        // Bring the file to the layout, then redo what the log holds, in order, one record at a
        // time as it is read, in one redb transaction (not durable: the checkpoint below makes
        // it so, and empties the log). The same transaction creates the shared table up front,
        // so readers never see it missing.
        let mut replay = db.begin_write().map_err(|e| internal("begin write", e))?;
        replay.set_durability(Durability::None).map_err(|e| internal("set durability", e))?;
        let mut tables = redb_tables::relayout(&replay, &layout)?;
        let mut replayed = 0u64;
        let wal = Wal::open_with(dir.as_ref().join(WAL_NAME), |batch| {
            replayed += 1;
            let writes = batch.ops.iter().map(|op| match op {
                WriteOp::Put(k, v) => (k.as_slice(), Some(v.as_slice())),
                WriteOp::Delete(k) => (k.as_slice(), None),
            });
            redb_tables::write_all(&replay, &layout, &tables, writes)?.update(&mut tables);
            Ok(())
        })?;
        replay.commit().map_err(|e| internal("commit", e))?;
        let old_segment = wal.has_old();
        let engine = RedbEngine {
            db,
            path,
            wal: Mutex::new(wal),
            pending: RwLock::new(Pending::default()),
            checkpoint: Mutex::new(()),
            flush: Mutex::new(()),
            checkpointing: AtomicBool::new(false),
            checkpoint_flushes: CHECKPOINT_FLUSHES,
            #[cfg(test)]
            stall_checkpoints: AtomicBool::new(false),
            flush_ops: FLUSH_OPS,
            layout,
            tables: RwLock::new(tables),
            generation: AtomicU64::new(0),
            view: Mutex::new(None),
        };
        if replayed > 0 || old_segment {
            tracing::info!(batches = replayed, "replayed the write-ahead log");
            engine.checkpoint()?;
        }
        Ok(engine)
    }

    /// For tests: flush pending writes once they hold `ops` keys, so that small tests mix
    /// pending writes with redb's.
    #[cfg(test)]
    pub(crate) fn with_flush_ops(mut self, ops: usize) -> Self {
        self.flush_ops = ops.max(1);
        self
    }

    /// Checkpoints after `flushes` flushes of pending writes instead of the default 1,024:
    /// for tests that must meet checkpoints often (the crash test kills the process between a
    /// checkpoint's start and its end this way).
    pub fn with_checkpoint_flushes(mut self, flushes: u64) -> Self {
        self.checkpoint_flushes = flushes.max(1);
        self
    }

    /// For tests: the prefixes of the tables besides the shared one, in key order.
    #[cfg(test)]
    pub(crate) fn table_prefixes(&self) -> Vec<Vec<u8>> {
        self.tables.read().iter().cloned().collect()
    }

    /// For tests: from now on checkpoints start (the log rotates) but never finish.
    #[cfg(test)]
    pub(crate) fn stall_checkpoints(&self) {
        self.stall_checkpoints.store(true, Ordering::Release);
    }

    /// Commits writes to redb in one transaction with the given durability.
    fn apply<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        durability: Durability,
    ) -> Result<()> {
        // Readers that load the new generation open a view that holds this commit; the old
        // view is released here so that it does not keep redb's replaced pages alive. An empty
        // commit (a checkpoint) changes no data, so the view stays valid.
        if self.write_to(writes, durability)? {
            self.generation.fetch_add(1, Ordering::Release);
            self.view.lock().take();
        }
        Ok(())
    }

    /// Commits the pending writes to redb in one transaction (not durable: the log holds them
    /// until the next checkpoint), waiting for a flush that is running first. The writes stay
    /// readable as `flushing` while redb commits them, outside the pending writes' lock: a
    /// reader then sees them there, and redb either without them or (once committed) with the
    /// same values, the same state both ways. Writes staged meanwhile are newer and read first.
    /// On failure the flushed writes are pending again, under the newer ones.
    fn flush_pending(&self) -> Result<()> {
        let _one = self.flush.lock();
        self.flush_locked()
    }

    /// [`RedbEngine::flush_pending`] unless a flush is running: that one's writer will have
    /// committed what was pending when it started, and the next write flushes the rest. Called
    /// without the log's lock, so that writers keep logging and staging while redb commits.
    fn flush_unless_running(&self) -> Result<()> {
        match self.flush.try_lock() {
            Some(_one) => self.flush_locked(),
            None => Ok(()),
        }
    }

    /// The flush itself; the caller holds `flush`.
    fn flush_locked(&self) -> Result<()> {
        let flushing = {
            let mut pending = self.pending.write();
            if pending.writes.is_empty() {
                return Ok(());
            }
            let writes = Arc::new(std::mem::take(&mut pending.writes));
            pending.bytes = 0;
            pending.flushes += 1;
            pending.flushing = Some(Arc::clone(&writes));
            writes
        };
        let applied = self
            .apply(flushing.iter().map(|(k, v)| (k.as_slice(), v.as_deref())), Durability::None);
        let mut pending = self.pending.write();
        pending.flushing = None;
        if let Err(e) = applied {
            // Back under the writes staged since.
            let newer = std::mem::take(&mut pending.writes);
            pending.writes = (*flushing).clone();
            pending.writes.extend(newer);
            pending.bytes =
                pending.writes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
            return Err(e);
        }
        Ok(())
    }

    /// Whether the pending writes are many enough to flush ([`FLUSH_OPS`], [`FLUSH_BYTES`]).
    /// While a checkpoint's durable commit runs, a flush would wait for it (redb runs one write
    /// transaction at a time) with the log's lock held, so only [`FLUSH_BYTES`] count then.
    fn pending_full(&self) -> bool {
        let pending = self.pending.read();
        pending.bytes >= FLUSH_BYTES
            || (pending.writes.len() >= self.flush_ops
                && !self.checkpointing.load(Ordering::Acquire))
    }

    /// Whether the pending writes are twice as many as a flush takes (or past [`FLUSH_BYTES`]):
    /// the last flush failed, or writers outpace it.
    fn pending_overfull(&self) -> bool {
        let pending = self.pending.read();
        pending.bytes >= FLUSH_BYTES
            || (pending.writes.len() >= 2 * self.flush_ops
                && !self.checkpointing.load(Ordering::Acquire))
    }

    /// A whole checkpoint, waiting for it: commits the pending writes, makes redb durable, then
    /// empties the log and retires any old segment. For the replay at open and
    /// [`Engine::flush`]; writes checkpoint in the background ([`RedbEngine::flush_and_checkpoint`]).
    fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpoint.lock();
        let mut wal = self.wal.lock();
        self.flush_pending()?;
        self.apply(std::iter::empty(), Durability::Immediate)?;
        self.pending.write().flushes = 0;
        wal.reset()
    }

    /// Starts a checkpoint under the log's lock: the pending writes go to redb, so that redb
    /// holds everything logged so far, and the log starts a new segment ([`Wal::rotate`]).
    /// Returns whether [`RedbEngine::finish_checkpoint`] is now due. An old segment left by a
    /// checkpoint that failed is retired by finishing again, without a new segment.
    fn start_checkpoint(&self, wal: &mut Wal) -> Result<bool> {
        if self.checkpointing.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.flush_pending()?;
        if !wal.has_old() {
            wal.rotate()?;
        }
        self.pending.write().flushes = 0;
        self.checkpointing.store(true, Ordering::Release);
        Ok(true)
    }

    /// Finishes a checkpoint without the log's lock: one durable redb commit, which makes every
    /// earlier commit durable (those of the old segment's records among them), then the old
    /// segment is deleted. Writers meanwhile append to the new segment and stage their writes;
    /// they only stop flushing them to redb (see [`RedbEngine::pending_full`]).
    fn finish_checkpoint(&self, old_segment: &Path) {
        #[cfg(test)]
        if self.stall_checkpoints.load(Ordering::Acquire) {
            return;
        }
        let _one = self.checkpoint.lock();
        let done = self
            .apply(std::iter::empty(), Durability::Immediate)
            .and_then(|()| super::wal::retire_old_segment(old_segment));
        let wal = &mut self.wal.lock();
        match done {
            Ok(()) => wal.old_removed(),
            Err(e) => tracing::warn!("checkpoint failed, the next one retries: {e}"),
        }
        self.checkpointing.store(false, Ordering::Release);
        // The writes staged meanwhile were not flushed; the next write would, but there may be
        // none for a while, and every scan of their range copies them.
        if self.pending_full()
            && let Err(e) = self.flush_pending()
        {
            tracing::warn!("flushing pending writes failed, the next write retries: {e}");
        }
    }

    /// Logs a batch in the write-ahead log (synced, unsynced, or not at all for a write that
    /// asked for no durability) and makes it pending; flushes the pending writes first when
    /// they are far too many. Flushing them when they are many, and checkpointing after many
    /// flushes or when the log is long, is [`Engine::upkeep`]'s.
    fn log_and_stage(&self, batch: WriteBatch, log: Option<bool>) -> Result<()> {
        let mut wal = self.wal.lock();
        // Normally flushed by the upkeep after the previous batch, without this lock; this
        // catches a flush that failed then, or writes that outgrew a long one: they are flushed
        // (waiting for the running flush) before more are logged, so memory stays bounded.
        if self.pending_overfull() {
            self.flush_pending()?;
        }
        match log {
            Some(true) => wal.append(&batch)?,
            Some(false) => wal.append_unsynced(&batch)?,
            None => {}
        }
        self.pending.write().stage(batch);
        Ok(())
    }

    /// [`Engine::upkeep`]: flushes the pending writes when they are many, and starts (and
    /// finishes) a checkpoint when enough flushes have run or the log is long.
    fn flush_and_checkpoint(&self) {
        let due = |wal: &Wal| {
            self.pending.read().flushes >= self.checkpoint_flushes || wal.len() >= CHECKPOINT_BYTES
        };
        let mut wal = self.wal.lock();
        if !due(&wal) {
            // Flushed now rather than before the next batch: pending writes are copied by
            // every scan of their range, so a large batch left pending (the last one of a bulk
            // load, with no write after it) would tax every read until the next write. Without
            // the log's lock: the other writers go on logging and staging while redb commits.
            drop(wal);
            if self.pending_full()
                && let Err(e) = self.flush_unless_running()
            {
                tracing::warn!("flushing pending writes failed, the next write retries: {e}");
            }
            if self.pending.read().flushes < self.checkpoint_flushes {
                return;
            }
            // That flush made a checkpoint due, unless another writer has taken it meanwhile.
            wal = self.wal.lock();
            if !due(&wal) {
                return;
            }
        }
        // The batches are durable and applied whatever happens here: a failed checkpoint must
        // not report them as failed. The log keeps everything, and the next upkeep retries.
        match self.start_checkpoint(&mut wal) {
            Ok(true) => {
                let old_segment = wal.old_path().to_path_buf();
                drop(wal);
                self.finish_checkpoint(&old_segment);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("checkpoint failed, the write-ahead log keeps growing: {e}");
            }
        }
    }

    /// Commits `writes` to redb in one transaction; whether there were any. The set of tables
    /// changes before the caller publishes the commit's generation, so that a reader of the new
    /// generation knows every table it has.
    fn write_to<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        durability: Durability,
    ) -> Result<bool> {
        let mut txn = self.db.begin_write().map_err(|e| internal("begin write", e))?;
        txn.set_durability(durability).map_err(|e| internal("set durability", e))?;
        let changes = redb_tables::write_all(&txn, &self.layout, &self.tables.read(), writes)?;
        txn.commit().map_err(|e| internal("commit", e))?;
        if !changes.created.is_empty() || !changes.deleted.is_empty() {
            changes.update(&mut self.tables.write());
        }
        Ok(changes.wrote)
    }

    /// A snapshot holding every commit that finished before this call. The generation is read
    /// before the snapshot is opened, so a snapshot is never labelled newer than what it holds:
    /// one opened during a commit carries the older generation and is not reused after the
    /// commit.
    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((g, view)) = &*self.view.lock()
            && *g == generation
        {
            return Ok(Arc::clone(view));
        }
        let view = Arc::new(Snapshot::open(&self.db)?);
        // A reader that raced a commit must not replace a newer snapshot with its older one.
        let mut cached = self.view.lock();
        if cached.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *cached = Some((generation, Arc::clone(&view)));
        }
        Ok(view)
    }

    /// Which tables a range reads.
    fn route(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Route {
        redb_tables::route(&self.layout, &self.tables.read(), start, end)
    }
}

/// Closing the engine commits the pending writes to redb (without making redb durable: the log
/// keeps what was logged), so that a clean close keeps even the unlogged writes, as it did when
/// each write went to redb at once. A killed process loses them, and replays the log.
impl Drop for RedbEngine {
    fn drop(&mut self) {
        let _wal = self.wal.lock();
        if let Err(e) = self.flush_pending() {
            tracing::warn!("closing the storage engine: pending writes not committed: {e}");
        }
    }
}

/// What redb is told to cache so that its pages take `cache_bytes` of memory: redb counts a
/// cached page as its length, but each is an allocation of the page and a reference count
/// (4,096 + 16 bytes), which the allocator's size classes place in a 5,120-byte block. Without
/// this a 128 MiB cache held about 160 MiB.
fn page_cache_budget(cache_bytes: usize) -> usize {
    cache_bytes / 5 * 4
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.pending.read().get(key) {
            return Ok(value);
        }
        // Not pending now: redb holds the key's latest value, and a flush since then would only
        // have moved a newer write there, with a newer view, before emptying the pending writes.
        let prefix = redb_tables::prefix(&self.layout, key);
        let Some(table) = self.snapshot()?.table(prefix)? else { return Ok(None) };
        if !table.reaches(key) {
            return Ok(None);
        }
        let value = table.table.get(key).map_err(|e| internal("get", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if start > end {
            return Ok(None);
        }
        // Under the pending writes' lock, as `scan` (see there): the pending writes, the redb
        // snapshot and the set of tables then show one state.
        let pending = self.pending.read();
        let snapshot = self.snapshot()?;
        // One table holds the range (the versions of one key): its last entry is found without
        // building a scan. Otherwise the scan merges the tables.
        let Route::One(n) = self.route(Bound::Included(start), Bound::Included(end)) else {
            drop(pending);
            return self
                .scan(Bound::Included(start), Bound::Included(end), true)?
                .next()
                .transpose();
        };
        let table = snapshot.table(&start[..n])?;
        let mut upper: Bound<&[u8]> = Bound::Included(end);
        loop {
            let staged = pending.last_in(start, upper);
            let stored = match &table {
                // Past the table's last key (a new key, most often) there is nothing to find.
                Some(table) if table.reaches(start) => table
                    .table
                    .range::<&[u8]>((Bound::Included(start), upper))
                    .map_err(|e| internal("scan", e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| internal("scan", e))?,
                _ => None,
            };
            let stored_key = stored.as_ref().map(|(k, _)| k.value());
            match staged {
                Some((key, value)) if stored_key.is_none_or(|s| key >= s) => match value {
                    Some(v) => return Ok(Some((key.to_vec(), v.to_vec()))),
                    // A pending deletion hides the key in redb too: look below it.
                    None => upper = Bound::Excluded(key),
                },
                _ => {
                    return Ok(stored.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())));
                }
            }
        }
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<KvIter> {
        if range_is_empty(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        // The pending writes of the range and the redb view, taken under the lock: a flush
        // either has not taken the writes out (they are copied here, and redb lacks them), or
        // commits them now (they are still readable as flushing, and redb has them or not, the
        // same state either way), or has finished (redb's view, opened after its generation
        // moved, has them).
        // The set of tables is read under the same lock: a flush that creates a table commits
        // it before it empties the flushing writes.
        let (mut pending, snapshot, route) = {
            let pending = self.pending.read();
            (pending.range(start, end), self.snapshot()?, self.route(start, end))
        };
        // The ranges keep their read transaction alive on their own; they borrow nothing.
        let stored = redb_tables::stored_range(snapshot, route, start, end, reverse)?;
        if pending.is_empty() {
            return Ok(stored);
        }
        if reverse {
            pending.reverse();
        }
        Ok(Box::new(Merge::new(pending, stored, reverse)))
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.log_and_stage(batch, sync.then_some(true))?;
        self.flush_and_checkpoint();
        Ok(())
    }

    fn write_deferred(&self, batch: WriteBatch) -> Result<()> {
        self.log_and_stage(batch, Some(false))
    }

    fn upkeep(&self) {
        self.flush_and_checkpoint();
    }

    fn sync(&self) -> Result<()> {
        // Without the log's lock, so that commits go on appending during the `fdatasync`; it
        // covers every record appended before it began, which is all the caller waits for.
        let (file, path) = self.wal.lock().syncer()?;
        file.sync_data().map_err(|e| super::wal::io_error("sync", &path, e))
    }

    fn defers_sync(&self) -> bool {
        true
    }
    fn flush(&self) -> Result<()> {
        self.checkpoint()
    }

    fn status(&self) -> Result<Status> {
        // Counted in redb: the pending writes go there first.
        let log_len = {
            let wal = self.wal.lock();
            self.flush_pending()?;
            wal.len()
        };
        let tables = self.tables.read().clone();
        let (keys, size) = self.snapshot()?.totals(&tables)?;
        let disk_size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) + log_len;
        Ok(Status { name: "redb".into(), keys, size, disk_size })
    }
}

/// A scan's two sources merged: the pending writes of its range (taken whole, in scan order) and
/// redb's range, in the same order. A pending write wins over redb's value of the same key, and a
/// pending deletion hides it.
struct Merge<R: Iterator> {
    pending: std::iter::Peekable<std::vec::IntoIter<PendingWrite>>,
    stored: std::iter::Peekable<R>,
    reverse: bool,
}

impl<R: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>> Merge<R> {
    fn new(pending: Vec<PendingWrite>, stored: R, reverse: bool) -> Self {
        Merge { pending: pending.into_iter().peekable(), stored: stored.peekable(), reverse }
    }
}

impl<R: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>> Iterator for Merge<R> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // Which source holds the next key in scan order (an error from redb comes first).
            let take_pending = match (self.pending.peek(), self.stored.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) | (_, Some(Err(_))) => false,
                (Some((p, _)), Some(Ok((s, _)))) => {
                    if p == s {
                        // The pending write replaces the stored value.
                        self.stored.next();
                        true
                    } else {
                        (p < s) != self.reverse
                    }
                }
            };
            if !take_pending {
                return self.stored.next();
            }
            match self.pending.next() {
                Some((k, Some(v))) => return Some(Ok((k, v))),
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}
