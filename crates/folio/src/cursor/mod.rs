//! Cursors: results held between `find`/`aggregate` and `getMore`.
//!
//! A cursor here holds the remaining result documents of its query, computed against the
//! snapshot the query ran on, so `getMore` returns exactly what that snapshot contained. Idle
//! cursors are reaped after ten minutes. A `find` that passes stored documents on unchanged
//! leaves its cursor holding those bytes ([`Remaining::Raw`]), so its `getMore`s copy them into
//! their replies as its first batch did.
//!
//! # Who may use a cursor
//!
//! A cursor remembers its [`Owner`]: the session (and transaction number) it was opened in and,
//! with authorization on, the user that opened it. As in MongoDB, a `getMore` must come from the
//! same session and the same user ([`check_get_more`]), and `killCursors` may close only the
//! caller's own cursors unless the caller holds `killAnyCursor` (the command checks that through
//! [`Owner::user`]). Session keys carry the user's digest when authorization is on
//! (`session::lsid_key`), so two users' sessions never share a key even when a client reuses an
//! lsid id: the session check already tells them apart, and the user check covers cursors
//! opened without a session.
//!
//! TODO(#11): stream large results from a held read snapshot instead of materializing them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bson::{Bson, Document, RawDocumentBuf};
use parking_lot::Mutex;

use crate::bail;
use crate::error::{Code, Error, Result};

/// How long a cursor may sit unused.
pub const CURSOR_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The most bytes of documents one batch carries (MongoDB's 16 MiB reply budget, less room for
/// the reply's own fields).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// Who opened a cursor, or who asks to use one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// The session key (`session::lsid_key`: the lsid's id bytes, then its user digest when
    /// authorization is on), if the command had a session.
    pub session: Option<Vec<u8>>,
    /// The authenticated user's full name (`user@db`) when authorization is on (`None` with it
    /// off, and for a connection using the localhost exception).
    pub user: Option<String>,
}

/// A session key as MongoDB prints a logical session id in messages: `id - uid -  - ` (the
/// empty fields are the internal `txnNumber` and `txnUUID`), or `none`.
pub fn describe_session(key: Option<&[u8]>) -> String {
    use base64::Engine;
    let Some(key) = key else {
        return "none".into();
    };
    let (id, uid) = key.split_at(key.len().min(16));
    let id = bson::Uuid::from_bytes(id.try_into().unwrap_or([0; 16]));
    let uid = if uid.is_empty() { &crate::session::NO_USER_DIGEST[..] } else { uid };
    format!("{id} - {} -  - ", base64::engine::general_purpose::STANDARD.encode(uid))
}

/// Checks that `caller` may run `getMore` on cursor `id` (namespace `cursor_ns`, opened by
/// `owner`) through namespace `ns`, with MongoDB's errors in MongoDB's order: with
/// authorization on, a session other than the cursor's is Unauthorized ("Cursor session id
/// ... is not the same as the operation context's session id ..."); without, codes 50736-50738;
/// then a user other than the cursor's is Unauthorized ("cursor id N was not created by the
/// authenticated user"); then a namespace other than the cursor's.
pub fn check_get_more(
    id: i64,
    ns: &str,
    cursor_ns: &str,
    owner: &Owner,
    caller: &Owner,
    authorization: bool,
) -> Result<()> {
    let (mine, theirs) = (caller.session.as_deref(), owner.session.as_deref());
    if mine != theirs {
        if authorization {
            bail!(
                Unauthorized,
                "Cursor session id ({}) is not the same as the operation context's session id ({})",
                describe_session(theirs),
                describe_session(mine)
            );
        }
        let (code, msg) = match (theirs, mine) {
            (None, _) => (
                50736,
                format!(
                    "Cannot run getMore on cursor {id}, which was not created in a session, in \
                     session {}",
                    describe_session(mine)
                ),
            ),
            (Some(_), None) => (
                50737,
                format!(
                    "Cannot run getMore on cursor {id}, which was created in session {}, without \
                     an lsid",
                    describe_session(theirs)
                ),
            ),
            (Some(_), Some(_)) => (
                50738,
                format!(
                    "Cannot run getMore on cursor {id}, which was created in session {}, in \
                     session {}",
                    describe_session(theirs),
                    describe_session(mine)
                ),
            ),
        };
        return Err(Error::new(Code::from_number(code), msg));
    }
    if owner.user != caller.user {
        bail!(Unauthorized, "cursor id {} was not created by the authenticated user", id);
    }
    if cursor_ns != ns {
        bail!(
            Unauthorized,
            "Requested getMore on namespace '{}', but cursor belongs to a different namespace {}",
            ns,
            cursor_ns
        );
    }
    Ok(())
}

/// An open cursor.
pub struct Cursor {
    /// `db.collection` the cursor reads.
    pub ns: String,
    /// The documents not yet returned.
    pub remaining: Remaining,
    /// Who opened the cursor.
    pub owner: Owner,
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

/// The documents a cursor has not returned yet: decoded, or as they are stored (a find that
/// passes stored documents on unchanged, [`crate::exec::find_rows`]).
#[derive(Debug)]
pub enum Remaining {
    /// Decoded documents.
    Docs(VecDeque<Document>),
    /// Stored documents, unchanged.
    Raw(VecDeque<RawDocumentBuf>),
}

impl Remaining {
    /// Whether every document was returned.
    pub fn is_empty(&self) -> bool {
        match self {
            Remaining::Docs(d) => d.is_empty(),
            Remaining::Raw(d) => d.is_empty(),
        }
    }
}

/// One batch of a reply, in the form its cursor held it.
#[derive(Debug)]
pub enum Batch {
    /// Decoded documents, for the reply's array.
    Docs(Vec<Bson>),
    /// Stored documents, to be written into the reply's array unchanged.
    Raw(Vec<RawDocumentBuf>),
}

/// Takes up to `batch_size` documents (0: no count limit) within the byte budget. The first
/// document always goes, so a batch is never empty while documents remain; a document larger
/// than the server may hand out fails the batch with BSONObjectTooLarge (10334) before any reply
/// is built, as MongoDB fails it. Sizes are computed (or, for stored documents, read), not
/// encoded.
pub fn take_batch(docs: &mut Remaining, batch_size: usize) -> Result<Batch> {
    match docs {
        Remaining::Docs(docs) => {
            take(docs, batch_size, crate::memory::check_document).map(Batch::Docs)
        }
        Remaining::Raw(docs) => take(docs, batch_size, |d: &RawDocumentBuf| {
            let size = d.as_bytes().len();
            if size > crate::memory::MAX_INTERNAL_DOC_BYTES {
                let decoded = crate::error::stored_document(d.as_bytes(), "document")?;
                return Err(crate::memory::too_large(&decoded, size));
            }
            Ok(size)
        })
        .map(Batch::Raw),
    }
}

/// [`take_batch`] over one form of documents, each sized (and checked) by `size`.
fn take<T, U: From<T>>(
    docs: &mut VecDeque<T>,
    batch_size: usize,
    size: impl Fn(&T) -> Result<usize>,
) -> Result<Vec<U>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(d) = docs.front() {
        if batch_size > 0 && out.len() >= batch_size {
            break;
        }
        let size = size(d)?;
        if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        if let Some(d) = docs.pop_front() {
            out.push(U::from(d));
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

    /// Runs `f` on a cursor after checking that `caller` may use it through namespace `ns`
    /// ([`check_get_more`]); removes the cursor when it is exhausted. Returns `f`'s result and
    /// whether the cursor is still open.
    pub fn with_cursor<T>(
        &self,
        id: i64,
        ns: &str,
        caller: &Owner,
        authorization: bool,
        f: impl FnOnce(&mut Cursor) -> T,
    ) -> Result<(T, bool)> {
        let mut cursors = self.cursors.lock();
        let Some(c) = cursors.get_mut(&id) else {
            bail!(CursorNotFound, "cursor id {} not found", id);
        };
        check_get_more(id, ns, &c.ns, &c.owner, caller, authorization)?;
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

    /// The namespace and owner of an open cursor (for `killCursors`' check).
    pub fn owner(&self, id: i64) -> Option<(String, Owner)> {
        self.cursors.lock().get(&id).map(|c| (c.ns.clone(), c.owner.clone()))
    }

    /// Closes every cursor of a session (when the session ends or its transaction finishes).
    pub fn kill_session(&self, session: &[u8]) {
        self.cursors.lock().retain(|_, c| c.owner.session.as_deref() != Some(session));
    }

    /// Closes cursors idle for longer than the timeout.
    pub fn reap(&self) {
        self.reap_at(Instant::now());
    }

    /// [`CursorRegistry::reap`] as of `now`.
    fn reap_at(&self, now: Instant) {
        self.cursors
            .lock()
            .retain(|_, c| c.no_timeout || now.duration_since(c.last_use) < CURSOR_IDLE_TIMEOUT);
    }

    /// The number of open cursors.
    pub fn len(&self) -> usize {
        self.cursors.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Instant;

    use bson::{RawDocumentBuf, doc};

    use super::{
        Batch, CURSOR_IDLE_TIMEOUT, Cursor, CursorRegistry, MAX_BATCH_BYTES, Remaining, take_batch,
    };
    use crate::error::Code;

    #[test]
    fn batches_stop_at_the_byte_budget_and_refuse_oversized_documents() {
        let chunk = "c".repeat(4 * 1024 * 1024);
        let docs: VecDeque<_> = (0..10).map(|i| doc! {"_id": i, "s": &chunk}).collect();
        let raw = docs.iter().map(|d| RawDocumentBuf::try_from(d).expect("encode")).collect();
        // Decoded and stored documents are batched alike.
        for mut docs in [Remaining::Docs(docs), Remaining::Raw(raw)] {
            let first = match take_batch(&mut docs, 0).expect("batch") {
                Batch::Docs(d) => d.len(),
                Batch::Raw(d) => d.len(),
            };
            assert_eq!(first, 3, "three 4 MiB documents fit in {MAX_BATCH_BYTES} bytes");
            match take_batch(&mut docs, 2).expect("batch") {
                Batch::Docs(d) => assert_eq!(d.len(), 2),
                Batch::Raw(d) => assert_eq!(d.len(), 2),
            }
            assert!(!docs.is_empty());
        }

        let big = doc! {"_id": 0, "s": "c".repeat(17 * 1024 * 1024)};
        let raw = RawDocumentBuf::try_from(&big).expect("encode");
        for mut docs in [Remaining::Docs([big].into()), Remaining::Raw([raw].into())] {
            let e = take_batch(&mut docs, 0).expect_err("over 16 MiB");
            assert_eq!(e.code, Code::BSONObjectTooLarge);
            assert!(e.message.starts_with("BSONObj size: 17825"), "{}", e.message);
        }
    }

    #[test]
    fn idle_cursors_are_reaped_unless_no_cursor_timeout() {
        let registry = CursorRegistry::new();
        let last_use = Instant::now();
        let cursor = |no_timeout| Cursor {
            ns: "db.c".into(),
            remaining: Remaining::Docs(VecDeque::from([doc! { "_id": 1 }])),
            owner: super::Owner { session: None, user: None },
            last_use,
            at_cluster_time: None,
            no_timeout,
        };
        let idle = registry.open(cursor(false));
        let kept = registry.open(cursor(true));
        // Reaped as of a time past the idle timeout (a host's monotonic clock may be younger than
        // the timeout, so the test does not move `last_use` into the past).
        registry.reap_at(last_use + CURSOR_IDLE_TIMEOUT * 2);
        assert_eq!(registry.kill(&[idle, kept]), (vec![kept], vec![idle]));
    }
}
