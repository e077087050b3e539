//! Cursors: results held between `find`/`aggregate` and `getMore`.
//!
//! A cursor here holds the remaining result documents of its query, computed against the
//! snapshot the query ran on, so `getMore` returns exactly what that snapshot contained. A cursor
//! remembers the session (and transaction number) it was opened in: a `getMore` from another
//! session is refused, as MongoDB does. Idle cursors are reaped after ten minutes.
//!
//! TODO(#11): stream large results from a held read snapshot instead of materializing them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bson::{Bson, Document};
use parking_lot::Mutex;

use crate::bail;
use crate::error::Result;

/// How long a cursor may sit unused.
pub const CURSOR_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The most bytes of documents one batch carries (MongoDB's 16 MiB reply budget, less room for
/// the reply's own fields).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// An open cursor.
pub struct Cursor {
    /// `db.collection` the cursor reads.
    pub ns: String,
    /// The documents not yet returned.
    pub remaining: VecDeque<Document>,
    /// The session key (lsid id bytes) the cursor belongs to, if any.
    pub session: Option<Vec<u8>>,
    /// The transaction number the cursor was opened in, if in a transaction.
    pub txn_number: Option<i64>,
    /// When the cursor was last used.
    pub last_use: Instant,
    /// The `atClusterTime` of a snapshot read, echoed in replies.
    pub at_cluster_time: Option<bson::Timestamp>,
    /// `noCursorTimeout`: never reaped for idleness (only killed, exhausted, or ended with its
    /// session).
    pub no_timeout: bool,
}

/// All open cursors.
pub struct CursorRegistry {
    cursors: Mutex<HashMap<i64, Cursor>>,
}

impl Default for CursorRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes up to `batch_size` documents (0: no count limit) within the byte budget. The first
/// document always goes, so a batch is never empty while documents remain; a document larger
/// than the server may hand out fails the batch with BSONObjectTooLarge (10334) before any reply
/// is built, as MongoDB fails it. Sizes are computed, not encoded.
pub fn take_batch(docs: &mut VecDeque<Document>, batch_size: usize) -> Result<Vec<Bson>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(d) = docs.front() {
        if batch_size > 0 && out.len() >= batch_size {
            break;
        }
        let size = crate::memory::check_document(d)?;
        if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        if let Some(d) = docs.pop_front() {
            out.push(Bson::Document(d));
        }
    }
    Ok(out)
}

impl CursorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        CursorRegistry { cursors: Mutex::new(HashMap::new()) }
    }

    /// Registers a cursor and returns its id (positive, never 0).
    pub fn open(&self, cursor: Cursor) -> i64 {
        let mut cursors = self.cursors.lock();
        loop {
            let id = (rand::random::<u64>() >> 2) as i64;
            if id != 0 && !cursors.contains_key(&id) {
                cursors.insert(id, cursor);
                return id;
            }
        }
    }

    /// Runs `f` on a cursor after checking its namespace and session; removes the cursor when it
    /// is exhausted. Returns `f`'s result and whether the cursor is still open.
    pub fn with_cursor<T>(
        &self,
        id: i64,
        ns: &str,
        session: Option<&[u8]>,
        f: impl FnOnce(&mut Cursor) -> T,
    ) -> Result<(T, bool)> {
        let mut cursors = self.cursors.lock();
        let Some(c) = cursors.get_mut(&id) else {
            bail!(CursorNotFound, "cursor id {} not found", id);
        };
        if c.ns != ns {
            bail!(
                Unauthorized,
                "Requested getMore on namespace '{}', but cursor belongs to a different namespace {}",
                ns,
                c.ns
            );
        }
        if c.session.as_deref() != session {
            bail!(
                Unauthorized,
                "Cannot run getMore on cursor {}, which was created in session {}, {}",
                id,
                if c.session.is_some() { "a different session" } else { "no session" },
                if session.is_some() { "in another session" } else { "without an lsid" }
            );
        }
        c.last_use = Instant::now();
        let out = f(c);
        let open = !c.remaining.is_empty();
        if !open {
            cursors.remove(&id);
        }
        Ok((out, open))
    }

    /// Closes cursors; returns `(killed, not found)`.
    pub fn kill(&self, ids: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let mut cursors = self.cursors.lock();
        let mut killed = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            if cursors.remove(id).is_some() {
                killed.push(*id);
            } else {
                missing.push(*id);
            }
        }
        (killed, missing)
    }

    /// Closes every cursor of a session (when the session ends or its transaction finishes).
    pub fn kill_session(&self, session: &[u8]) {
        self.cursors.lock().retain(|_, c| c.session.as_deref() != Some(session));
    }

    /// Closes cursors idle for longer than the timeout.
    pub fn reap(&self) {
        let now = Instant::now();
        self.cursors
            .lock()
            .retain(|_, c| c.no_timeout || now.duration_since(c.last_use) < CURSOR_IDLE_TIMEOUT);
    }

    /// The number of open cursors.
    pub fn len(&self) -> usize {
        self.cursors.lock().len()
    }

    /// Whether no cursor is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Instant;

    use bson::doc;

    use super::{CURSOR_IDLE_TIMEOUT, Cursor, CursorRegistry, MAX_BATCH_BYTES, take_batch};
    use crate::error::Code;

    #[test]
    fn batches_stop_at_the_byte_budget_and_refuse_oversized_documents() {
        let chunk = "c".repeat(4 * 1024 * 1024);
        let mut docs: VecDeque<_> = (0..10).map(|i| doc! {"_id": i, "s": &chunk}).collect();
        let first = take_batch(&mut docs, 0).expect("batch");
        assert_eq!(first.len(), 3, "three 4 MiB documents fit in {MAX_BATCH_BYTES} bytes");
        assert_eq!(docs.len(), 7);

        let mut docs: VecDeque<_> =
            [doc! {"_id": 0, "s": "c".repeat(17 * 1024 * 1024)}].into_iter().collect();
        let e = take_batch(&mut docs, 0).expect_err("over 16 MiB");
        assert_eq!(e.code, Code::BSONObjectTooLarge);
        assert!(e.message.starts_with("BSONObj size: 17825"), "{}", e.message);
    }

    #[test]
    fn idle_cursors_are_reaped_unless_no_cursor_timeout() {
        let registry = CursorRegistry::new();
        let long_ago = Instant::now()
            .checked_sub(CURSOR_IDLE_TIMEOUT * 2)
            .expect("the clock is past twenty minutes");
        let cursor = |no_timeout| Cursor {
            ns: "db.c".into(),
            remaining: VecDeque::from([doc! { "_id": 1 }]),
            session: None,
            txn_number: None,
            last_use: long_ago,
            at_cluster_time: None,
            no_timeout,
        };
        let idle = registry.open(cursor(false));
        let kept = registry.open(cursor(true));
        registry.reap();
        assert_eq!(registry.kill(&[idle, kept]), (vec![kept], vec![idle]));
    }
}
