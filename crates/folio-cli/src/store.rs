//! Store construction for `folio serve`: MVCC over the redb engine in `--dbpath`, over the
//! in-memory engine with `--in-memory`, or a shared PostgreSQL-compatible database with
//! `--storage` (see `folio_pg` and docs/design/scale-out.md).

use std::path::Path;
use std::sync::Arc;

use folio::{DEFAULT_CACHE_BYTES, Engine, MemoryEngine, RedbEngine};
use folio::{Mvcc, MvccOptions, TxnStore};
use folio::{Result, err};

/// Opens the store the server runs on: in memory, or in `dbpath` (created if missing) with the
/// engine's default page cache.
pub fn open_store(dbpath: &Path, in_memory: bool) -> Result<Arc<dyn TxnStore>> {
    open_store_with_cache(dbpath, in_memory, None)
}

/// [`open_store`] with a page cache of `cache_bytes` for the data directory (`None`: the
/// default).
pub fn open_store_with_cache(
    dbpath: &Path,
    in_memory: bool,
    cache_bytes: Option<usize>,
) -> Result<Arc<dyn TxnStore>> {
    // The cache size is the whole: the version cache's share comes out of the page cache's.
    let (options, pages) = MvccOptions::sharing_cache(cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES));
    let engine: Arc<dyn Engine> = if in_memory {
        Arc::new(MemoryEngine::new())
    } else {
        std::fs::create_dir_all(dbpath).map_err(|e| {
            err!(InternalError, "cannot create the data directory {}: {e}", dbpath.display())
        })?;
        Arc::new(RedbEngine::open_with(dbpath, pages, folio::STORAGE_LAYOUT)?)
    };
    let store: Arc<dyn TxnStore> = Mvcc::open(engine, options)?;
    Ok(store)
}

/// Opens the store over a shared PostgreSQL-compatible database (`--storage URL`).
pub fn open_shared_store(url: &str) -> Result<Arc<dyn TxnStore>> {
    let store: Arc<dyn TxnStore> =
        Arc::new(folio_pg::PgStore::connect(url, folio_pg::PgOptions::default())?);
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_survives_reopening_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("data");
        let ts = {
            let store = open_store(&path, false).expect("open");
            let mut txn = store.begin().expect("begin");
            txn.put(b"k", b"v").expect("put").expect("no conflict");
            let ts = txn.commit().expect("commit");
            store.flush().expect("flush");
            ts
        };
        assert!(path.is_dir());
        let store = open_store(&path, false).expect("reopen");
        assert!(store.last_committed() >= ts);
        assert_eq!(store.begin().expect("begin").get(b"k").expect("get"), Some(b"v".to_vec()));
    }

    #[test]
    fn in_memory_touches_no_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unused = dir.path().join("unused");
        let store = open_store(&unused, true).expect("open");
        let mut txn = store.begin().expect("begin");
        txn.put(b"k", b"v").expect("put").expect("no conflict");
        txn.commit().expect("commit");
        assert!(!unused.exists());
    }
}
