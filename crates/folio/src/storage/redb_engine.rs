//! The redb engine: one database file in a data directory, one table of byte keys and values,
//! and a write-ahead log beside it for synced batches (see [`super::wal`] for why and how).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::wal::Wal;
use super::{Engine, KvIter, Status, WriteBatch, WriteOp, range_is_empty};
use crate::error::{Error, Result};

/// The one table holding every key.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("folio");

/// A read view of [`TABLE`].
type ReadView = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The page cache's size when none is given: PostgreSQL's default `shared_buffers`. The kernel
/// caches the file beyond it, as it does for PostgreSQL; a larger cache trades memory for fewer
/// copies from the kernel (`--wiredTigerCacheSizeGB`).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// The database file's name inside the data directory.
const FILE_NAME: &str = "folio.redb";
/// The write-ahead log's name inside the data directory.
const WAL_NAME: &str = "folio.wal";
/// A checkpoint follows this many logged batches: redb frees the pages that non-durable commits
/// replace only at a durable commit, so the file grows until the next checkpoint.
const CHECKPOINT_BATCHES: u64 = 512;
/// A checkpoint also follows once the log is this long.
const CHECKPOINT_BYTES: u64 = 64 << 20;

/// An engine storing everything in one redb file. A write with `sync` is appended to the
/// write-ahead log and synced, then committed to redb with `Durability::None`; a periodic
/// checkpoint (one `Durability::Immediate` commit) makes redb itself durable and empties the log.
/// Writes without `sync` go to redb with `Durability::None` only.
pub struct RedbEngine {
    db: Database,
    path: PathBuf,
    /// The log, locked across append + apply so that redb sees logged batches in log order.
    wal: Mutex<Wal>,
    /// Counts the commits to redb, bumped after each one.
    generation: AtomicU64,
    /// The last read view opened, with the generation read just before opening it: every read
    /// until the next commit shares it. Opening a view (a redb read transaction and its table)
    /// costs more than the lookup itself, and a statement makes several lookups.
    view: Mutex<Option<(u64, Arc<ReadView>)>>,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbEngine").field("path", &self.path).finish()
    }
}

/// Turns any redb error into an internal error naming what failed.
fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(crate::error::Code::InternalError, format!("storage: {what}: {e}"))
}

impl RedbEngine {
    /// Opens (creating if needed) the database in directory `dir`, with the default page cache
    /// (`DEFAULT_CACHE_BYTES`).
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbEngine> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating if needed) the database in directory `dir`, with a page cache of
    /// `cache_bytes`: the memory the engine keeps for file pages, read or written.
    pub fn open_with_cache(dir: impl AsRef<Path>, cache_bytes: usize) -> Result<RedbEngine> {
        std::fs::create_dir_all(dir.as_ref())?;
        let path = dir.as_ref().join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| internal("open", e))?;
        // Create the table up front so readers never see it missing.
        let txn = db.begin_write().map_err(|e| internal("begin write", e))?;
        txn.open_table(TABLE).map_err(|e| internal("open table", e))?;
        txn.commit().map_err(|e| internal("commit", e))?;
        let (wal, logged) = Wal::open(dir.as_ref().join(WAL_NAME))?;
        let engine = RedbEngine {
            db,
            path,
            wal: Mutex::new(wal),
            generation: AtomicU64::new(0),
            view: Mutex::new(None),
        };
        if !logged.is_empty() {
            // Redo what the log holds, in order, then checkpoint so the log starts empty.
            tracing::info!(batches = logged.len(), "replaying the write-ahead log");
            for batch in &logged {
                engine.apply(batch, Durability::None)?;
            }
            engine.checkpoint(&mut engine.wal.lock())?;
        }
        Ok(engine)
    }

    /// Commits a batch to redb with the given durability.
    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| internal("begin write", e))?;
        txn.set_durability(durability).map_err(|e| internal("set durability", e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| internal("open table", e))?;
            for op in &batch.ops {
                match op {
                    WriteOp::Put(k, v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(|e| internal("put", e))?;
                    }
                    WriteOp::Delete(k) => {
                        table.remove(k.as_slice()).map_err(|e| internal("delete", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| internal("commit", e))?;
        // Readers that load the new generation open a view that holds this commit; the old
        // view is released here so that it does not keep redb's replaced pages alive. An empty
        // batch (a checkpoint) changes no data, so the view stays valid.
        if !batch.ops.is_empty() {
            self.generation.fetch_add(1, Ordering::Release);
            self.view.lock().take();
        }
        Ok(())
    }

    /// Makes every redb commit so far durable, then empties the log.
    fn checkpoint(&self, wal: &mut Wal) -> Result<()> {
        self.apply(&WriteBatch::new(), Durability::Immediate)?;
        wal.reset()
    }

    /// Logs a batch in the write-ahead log (synced or not) and applies it to redb without
    /// sync; checkpoints when the log is long.
    fn log_and_apply(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wal = self.wal.lock();
        let before = wal.len();
        if sync {
            wal.append(&batch)?;
        } else {
            wal.append_unsynced(&batch)?;
        }
        if let Err(e) = self.apply(&batch, Durability::None) {
            // The batch is reported as failed, so it must not come back at the next start.
            wal.truncate_to(before)?;
            return Err(e);
        }
        if wal.records() >= CHECKPOINT_BATCHES || wal.len() >= CHECKPOINT_BYTES {
            // The batch is durable and applied whatever happens here: a failed checkpoint must
            // not report it as failed. The log keeps everything, and the next write retries.
            if let Err(e) = self.checkpoint(&mut wal) {
                tracing::warn!("checkpoint failed, the write-ahead log keeps growing: {e}");
            }
        }
        Ok(())
    }

    /// A read view holding every commit that finished before this call. The generation is read
    /// before the view is opened, so a view is never labelled newer than what it holds: a view
    /// opened during a commit carries the older generation and is not reused after the commit.
    fn read_table(&self) -> Result<Arc<ReadView>> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((g, view)) = &*self.view.lock()
            && *g == generation
        {
            return Ok(Arc::clone(view));
        }
        let txn = self.db.begin_read().map_err(|e| internal("begin read", e))?;
        let view = Arc::new(txn.open_table(TABLE).map_err(|e| internal("open table", e))?);
        // A reader that raced a commit must not replace a newer view with its older one.
        let mut cached = self.view.lock();
        if cached.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *cached = Some((generation, Arc::clone(&view)));
        }
        Ok(view)
    }
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.read_table()?;
        let value = table.get(key).map_err(|e| internal("get", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<KvIter> {
        if range_is_empty(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let table = self.read_table()?;
        // The range keeps its read transaction alive on its own; it borrows nothing.
        let range = table.range::<&[u8]>((start, end)).map_err(|e| internal("scan", e))?;
        let map = |item: std::result::Result<_, redb::StorageError>| {
            let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                item.map_err(|e| internal("scan", e))?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        };
        if reverse { Ok(Box::new(range.rev().map(map))) } else { Ok(Box::new(range.map(map))) }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        if !sync {
            return self.apply(&batch, Durability::None);
        }
        self.log_and_apply(batch, true)
    }

    fn write_deferred(&self, batch: WriteBatch) -> Result<()> {
        self.log_and_apply(batch, false)
    }

    fn sync(&self) -> Result<()> {
        self.wal.lock().sync()
    }
    fn flush(&self) -> Result<()> {
        self.checkpoint(&mut self.wal.lock())
    }

    fn status(&self) -> Result<Status> {
        let table = self.read_table()?;
        let keys = table.len().map_err(|e| internal("len", e))?;
        let stats = table.stats().map_err(|e| internal("stats", e))?;
        let disk_size =
            std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) + self.wal.lock().len();
        Ok(Status { name: "redb".into(), keys, size: stats.stored_bytes(), disk_size })
    }
}
