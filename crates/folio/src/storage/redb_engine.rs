//! The redb engine: one database file in a data directory, one table of byte keys and values.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::{Engine, KvIter, Status, WriteBatch, WriteOp, range_is_empty};
use crate::error::{Error, Result};

/// The one table holding every key.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("folio");

/// The database file's name inside the data directory.
const FILE_NAME: &str = "folio.redb";

/// An engine storing everything in one redb file. Writes with `sync` commit with
/// `Durability::Immediate` (fsync before returning); others with `Durability::None`, which redb
/// makes durable with the next immediate commit.
pub struct RedbEngine {
    db: Database,
    path: PathBuf,
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
    /// Opens (creating if needed) the database in directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbEngine> {
        std::fs::create_dir_all(dir.as_ref())?;
        let path = dir.as_ref().join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| internal("open", e))?;
        // Create the table up front so readers never see it missing.
        let txn = db.begin_write().map_err(|e| internal("begin write", e))?;
        txn.open_table(TABLE).map_err(|e| internal("open table", e))?;
        txn.commit().map_err(|e| internal("commit", e))?;
        Ok(RedbEngine { db, path })
    }

    fn read_table(&self) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        let txn = self.db.begin_read().map_err(|e| internal("begin read", e))?;
        txn.open_table(TABLE).map_err(|e| internal("open table", e))
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
        let mut txn = self.db.begin_write().map_err(|e| internal("begin write", e))?;
        let durability = if sync { Durability::Immediate } else { Durability::None };
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
        txn.commit().map_err(|e| internal("commit", e))
    }

    fn flush(&self) -> Result<()> {
        // An empty immediate commit makes every earlier non-durable commit durable.
        self.write(WriteBatch::new(), true)
    }

    fn status(&self) -> Result<Status> {
        let table = self.read_table()?;
        let keys = table.len().map_err(|e| internal("len", e))?;
        let stats = table.stats().map_err(|e| internal("stats", e))?;
        let disk_size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(Status { name: "redb".into(), keys, size: stats.stored_bytes(), disk_size })
    }
}
