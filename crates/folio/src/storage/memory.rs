//! The in-memory engine: a `BTreeMap` behind a read-write lock.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Engine, KvIter, Status, WriteBatch, WriteOp, owned_bound, range_is_empty};
use crate::error::Result;

/// The most entries a scan copies per lock acquisition.
const MAX_CHUNK: usize = 256;

/// The size of a scan's first chunk. Chunks double up to [`MAX_CHUNK`], so point reads and short
/// scans (the common case: the newest version of one key) copy little.
const FIRST_CHUNK: usize = 4;

/// An engine keeping everything in memory. Nothing survives the process; `sync` is a no-op.
#[derive(Clone, Debug, Default)]
pub struct MemoryEngine {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().get(key).cloned())
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<KvIter> {
        let empty = range_is_empty(start, end);
        Ok(Box::new(ChunkedScan {
            map: self.map.clone(),
            start: owned_bound(start),
            end: owned_bound(end),
            reverse,
            chunk: Vec::new(),
            chunk_size: FIRST_CHUNK,
            done: empty,
        }))
    }

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<()> {
        let mut map = self.map.write();
        for op in batch.ops {
            match op {
                WriteOp::Put(k, v) => {
                    map.insert(k, v);
                }
                WriteOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn status(&self) -> Result<Status> {
        let map = self.map.read();
        let size = map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        Ok(Status { name: "memory".into(), keys: map.len() as u64, size, disk_size: 0 })
    }
}

/// A scan that copies a bounded chunk of entries per lock acquisition and then narrows its range
/// past the last entry it returned.
struct ChunkedScan {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
    /// The current chunk, reversed so that `pop` yields the next entry.
    chunk: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many entries the next refill copies.
    chunk_size: usize,
    done: bool,
}

impl ChunkedScan {
    fn refill(&mut self) {
        let map = self.map.read();
        let start = bound_ref(&self.start);
        let end = bound_ref(&self.end);
        if range_is_empty(start, end) {
            self.done = true;
            return;
        }
        let range = map.range::<[u8], _>((start, end));
        let mut chunk: Vec<_> = if self.reverse {
            range.rev().take(self.chunk_size).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            range.take(self.chunk_size).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        drop(map);
        if chunk.len() < self.chunk_size {
            self.done = true;
        }
        self.chunk_size = (self.chunk_size * 2).min(MAX_CHUNK);
        if let Some((last, _)) = chunk.last() {
            if self.reverse {
                self.end = Bound::Excluded(last.clone());
            } else {
                self.start = Bound::Excluded(last.clone());
            }
        }
        chunk.reverse();
        self.chunk = chunk;
    }
}

fn bound_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for ChunkedScan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.chunk.is_empty() && !self.done {
            self.refill();
        }
        self.chunk.pop().map(Ok)
    }
}
