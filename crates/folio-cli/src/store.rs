//! Store construction for `folio serve`.
//!
//! [`open_store`] is the one place that decides what backs the server. Until the MVCC layer over
//! the storage engines lands, it returns [`PlaceholderStore`], a deliberately simple in-memory
//! [`TxnStore`] (copy-on-write snapshots, no conflict detection, nothing on disk) that lets the
//! server run end to end.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use folio::mvcc::{ScanIter, Ts, Txn, TxnId, TxnStore, WriteResult};
use folio::{Result, err};

/// Opens the store the server runs on: in memory, or in `dbpath` (created if missing).
pub fn open_store(dbpath: &Path, in_memory: bool) -> Result<Arc<dyn TxnStore>> {
    if !in_memory {
        std::fs::create_dir_all(dbpath).map_err(|e| {
            err!(InternalError, "cannot create the data directory {}: {e}", dbpath.display())
        })?;
    }
    // TODO(#2): replace with Mvcc over RedbEngine/MemoryEngine
    Ok(Arc::new(PlaceholderStore::new()))
}

/// Committed data: key to value.
type Data = BTreeMap<Vec<u8>, Vec<u8>>;

/// A minimal in-memory [`TxnStore`]: each transaction reads a shared copy of the data as of its
/// begin and applies its writes at commit. It detects no conflicts (the last committer wins) and
/// keeps nothing across restarts.
// TODO(#2): replace with Mvcc over RedbEngine/MemoryEngine
pub struct PlaceholderStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    next_txn: AtomicU64,
}

struct State {
    data: Arc<Data>,
    last: Ts,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (writes are applied by one
        // assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_secs() -> u32 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl PlaceholderStore {
    /// An empty store.
    pub fn new() -> Self {
        PlaceholderStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    data: Arc::new(Data::new()),
                    last: Ts::new(now_secs(), 1),
                }),
                next_txn: AtomicU64::new(1),
            }),
        }
    }

    fn begin_txn(&self) -> Box<dyn Txn> {
        let state = self.shared.lock();
        Box::new(PlaceholderTxn {
            shared: self.shared.clone(),
            id: TxnId(self.shared.next_txn.fetch_add(1, Ordering::Relaxed)),
            snapshot: state.data.clone(),
            ts: state.last,
            writes: BTreeMap::new(),
        })
    }
}

impl Default for PlaceholderStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TxnStore for PlaceholderStore {
    fn begin(&self) -> Result<Box<dyn Txn>> {
        Ok(self.begin_txn())
    }

    fn begin_read_only_at(&self, ts: Ts) -> Result<Box<dyn Txn>> {
        if ts > self.last_committed() {
            return Err(err!(SnapshotUnavailable, "Requested snapshot is in the future"));
        }
        // Without history, the latest state is the only snapshot there is.
        Ok(self.begin_txn())
    }

    fn last_committed(&self) -> Ts {
        self.shared.lock().last
    }

    fn wait_for(&self, _: TxnId, _: Option<Instant>) -> bool {
        true
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// A transaction of [`PlaceholderStore`].
struct PlaceholderTxn {
    shared: Arc<Shared>,
    id: TxnId,
    snapshot: Arc<Data>,
    ts: Ts,
    /// Pending writes; `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Txn for PlaceholderTxn {
    fn id(&self) -> TxnId {
        self.id
    }

    fn snapshot(&self) -> Ts {
        self.ts
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(w) => Ok(w.clone()),
            None => Ok(self.snapshot.get(key).cloned()),
        }
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<ScanIter<'_>> {
        let range = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.snapshot.range(range.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, w) in self.writes.range(range) {
            match w {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let items: Vec<_> = merged.into_iter().map(Ok).collect();
        if reverse {
            Ok(Box::new(items.into_iter().rev()))
        } else {
            Ok(Box::new(items.into_iter()))
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteResult> {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(Ok(()))
    }

    fn delete(&mut self, key: &[u8]) -> Result<WriteResult> {
        self.writes.insert(key.to_vec(), None);
        Ok(Ok(()))
    }

    fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    fn commit(self: Box<Self>) -> Result<Ts> {
        if self.writes.is_empty() {
            return Ok(self.ts);
        }
        let mut state = self.shared.lock();
        let mut data = (*state.data).clone();
        for (k, w) in self.writes {
            match w {
                Some(v) => data.insert(k, v),
                None => data.remove(&k),
            };
        }
        let now = now_secs();
        let ts = if now > state.last.secs() {
            Ts::new(now, 1)
        } else {
            Ts::new(state.last.secs(), state.last.inc().saturating_add(1))
        };
        state.data = Arc::new(data);
        state.last = ts;
        Ok(ts)
    }

    fn abort(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_commits() {
        let store = PlaceholderStore::new();
        let before = store.last_committed();
        let mut t1 = store.begin().expect("begin");
        t1.put(b"a", b"1").expect("put").expect("no conflict");
        t1.put(b"b", b"2").expect("put").expect("no conflict");
        let reader = store.begin().expect("begin");
        let ts = t1.commit().expect("commit");
        assert!(ts > before);
        assert_eq!(store.last_committed(), ts);
        assert_eq!(reader.get(b"a").expect("get"), None, "reader keeps its snapshot");

        let mut t2 = store.begin().expect("begin");
        t2.delete(b"a").expect("delete").expect("no conflict");
        t2.put(b"c", b"3").expect("put").expect("no conflict");
        let keys: Vec<Vec<u8>> = t2
            .scan(Bound::Unbounded, Bound::Unbounded, true)
            .expect("scan")
            .map(|r| r.expect("item").0)
            .collect();
        assert_eq!(keys, vec![b"c".to_vec(), b"b".to_vec()]);
        t2.abort();
        assert_eq!(store.begin().expect("begin").get(b"a").expect("get"), Some(b"1".to_vec()));
    }

    #[test]
    fn open_store_creates_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("data");
        open_store(&path, false).expect("open");
        assert!(path.is_dir());
        let mem = dir.path().join("unused");
        open_store(&mem, true).expect("open");
        assert!(!mem.exists());
    }
}
