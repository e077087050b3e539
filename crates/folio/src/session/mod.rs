//! Logical sessions, the transaction state machine, and retryable-write history.
//!
//! Drivers send `lsid` on every command. The [`SessionRegistry`] keeps one [`Session`] per lsid,
//! checked out under a mutex for the duration of a command, so the statements of one session run
//! one at a time (as MongoDB's session checkout does) while different sessions run in parallel.
//!
//! # Transaction state machine
//!
//! A session has a current transaction number (`txnNumber`, only ever increasing) and the state of
//! the multi-document transaction with that number:
//!
//! ```text
//!            startTransaction (txnNumber > current)
//!   None ─────────────────────────────────────────▶ InProgress ──commit──▶ Committed
//!                                                      │                   (commit again: ok)
//!                                                      └──abort / any statement error /
//!                                                         lifetime limit──▶ Aborted
//! ```
//!
//! - a statement for an older `txnNumber` fails with TransactionTooOld (225);
//! - a statement for an aborted or unknown transaction fails with NoSuchTransaction (251);
//! - a statement other than commit for a committed transaction fails with TransactionCommitted
//!   (256), while commit succeeds again (drivers retry commits after network errors);
//! - abort after commit fails with TransactionCommitted, abort after abort with NoSuchTransaction.
//!
//! The MVCC transaction ([`crate::mvcc::Txn`]) is begun at the first statement, so its snapshot is
//! taken then, and it lives in the session between statements.
//!
//! # Retryable writes
//!
//! A write with `txnNumber` but no `autocommit` is a retryable write. Each statement runs in its own
//! storage transaction that also records the statement's outcome under
//! `(lsid, txnNumber, stmtId)`. A retry of the same statement finds the record and replays the
//! outcome instead of applying the write again: exactly once, even across a crash, because the
//! record commits atomically with the write.
//!
//! # Across restarts
//!
//! The in-memory state is rebuilt from durable records ([`durable`]) the first time a session is
//! used after a restart: a committed transaction's commit and a retryable write's statements are
//! recorded in the same storage transaction as their data, so a retry after a crash is answered
//! exactly as before it.

pub mod durable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document};
use parking_lot::Mutex;

use crate::error::Result;
use crate::mvcc::{Ts, Txn, TxnStore};
use crate::{bail, err};
use durable::{RecordKind, SessionRecord};

/// How long an unused session lives (MongoDB's `logicalSessionTimeoutMinutes`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The state of a session's current multi-document transaction, with the data each state has:
/// only an open transaction has an MVCC transaction, a start time and a read concern, so no
/// combination of fields can contradict the state.
pub enum TxnState {
    /// No multi-document transaction with the current number (none yet, or a retryable write).
    None,
    /// Started and not yet committed or aborted.
    InProgress {
        /// The open MVCC transaction (begun at the first statement, so its snapshot is taken
        /// then).
        txn: Box<dyn Txn>,
        /// When the transaction started.
        started: Instant,
        /// The transaction's `readConcern`.
        read_concern: Option<Document>,
    },
    /// Committed.
    Committed {
        /// The commit timestamp (unknown for a commit recorded before a restart).
        commit_ts: Option<Ts>,
    },
    /// Aborted (explicitly, by a failed statement, or by the lifetime limit).
    Aborted {
        /// Why, when not at the client's request.
        reason: Option<String>,
    },
}

impl TxnState {
    /// Whether a transaction is open.
    pub fn is_in_progress(&self) -> bool {
        matches!(self, TxnState::InProgress { .. })
    }
}

/// One logical session.
pub struct Session {
    /// The lsid document as the client sent it.
    pub lsid: Document,
    /// The lsid's key ([`lsid_key`]: the `id` UUID bytes, then the owner's digest).
    pub key: Vec<u8>,
    /// When a command last used the session.
    pub last_use: Instant,
    /// The highest transaction number seen.
    pub txn_number: Option<i64>,
    /// The state of the transaction with `txn_number`.
    pub state: TxnState,
    /// The versioned-API parameters the transaction's first statement declared, as a document
    /// (every later statement must declare the same).
    pub txn_api: Option<Document>,
    /// Whether the durable record has been read since this process started.
    loaded: bool,
    /// The transaction number of the session's durable record, and what it was used for.
    durable: Option<(i64, RecordKind)>,
    /// The statements recorded under the durable number of a retryable write, as runs of ids
    /// `(first, last)` that each have one record (keyed by `first`, see
    /// [`durable::stmt_record`]), when known (`None` after a restart: the records are then
    /// found by a scan when they go stale).
    recorded_stmts: Option<Vec<(i32, i32)>>,
    /// The statement of the durable number whose outcome the session record itself holds (a
    /// command of one statement; see [`durable::SessionRecord::stmt`]), when known.
    inline_stmt: Option<i32>,
}

impl Session {
    fn new(lsid: Document, key: Vec<u8>) -> Self {
        Session {
            lsid,
            key,
            last_use: Instant::now(),
            txn_number: None,
            state: TxnState::None,
            txn_api: None,
            loaded: false,
            durable: None,
            recorded_stmts: Some(Vec::new()),
            inline_stmt: None,
        }
    }

    /// Resumes from the session's durable record the first time the session is used with a
    /// transaction number in this process: the latest recorded transaction number, and whether
    /// it was a committed transaction. Over a shared store ([`TxnStore::remote`]) other front
    /// ends may have used the session since, so the record is read again at every such use.
    pub fn load_durable(&mut self, store: &dyn TxnStore) -> Result<()> {
        if self.loaded && !store.remote() {
            return Ok(());
        }
        let record = durable::load(store, &self.key)?;
        self.resume(record);
        Ok(())
    }

    /// Before answering `commitTransaction` for transaction `number` that this process does not
    /// hold open, reads the durable record again, waiting for a commit of it still in flight
    /// ([`durable::load_settled`]): over a shared store the transaction may have been committing
    /// on another front end that died, and the retried commit must answer what that commit did.
    pub fn settle_commit(&mut self, store: &dyn TxnStore, number: i64) -> Result<()> {
        let held = self.txn_number == Some(number)
            && matches!(self.state, TxnState::InProgress { .. } | TxnState::Committed { .. });
        if held || !store.remote() {
            return Ok(());
        }
        let record = durable::load_settled(store, &self.key)?;
        self.resume(record);
        Ok(())
    }

    /// Moves the state machine forward to a durable record read from the store.
    fn resume(&mut self, record: Option<durable::SessionRecord>) {
        if let Some(record) = record {
            // A newer number, or the committed outcome of the current number when this process
            // does not hold that transaction (it ran on another front end).
            let newer = self.txn_number.is_none_or(|n| n < record.txn_number);
            let committed_elsewhere = self.txn_number == Some(record.txn_number)
                && record.kind == RecordKind::Committed
                && matches!(self.state, TxnState::None | TxnState::Aborted { .. });
            if newer || committed_elsewhere {
                self.txn_number = Some(record.txn_number);
                self.state = match record.kind {
                    RecordKind::Committed => TxnState::Committed { commit_ts: None },
                    RecordKind::Retryable => TxnState::None,
                };
            }
            self.durable = Some((record.txn_number, record.kind));
            self.recorded_stmts = match record.kind {
                RecordKind::Committed => Some(Vec::new()),
                RecordKind::Retryable => None,
            };
            self.inline_stmt = None;
        }
        self.loaded = true;
    }

    /// Whether statement `stmt_id` of retryable write `number` may have a record: only when the
    /// durable record is for that number (records are written together with it), and, when this
    /// process knows which statements it recorded under that number, only for one of those.
    /// The first run of an `insert` of a thousand documents thus looks up no record at all; a
    /// retry, or a session resumed after a restart, looks them up.
    pub fn may_have_stmt_record(&self, number: i64, stmt_id: i32) -> bool {
        self.durable == Some((number, RecordKind::Retryable))
            && (self.inline_stmt == Some(stmt_id)
                || self.recorded_stmts.as_ref().is_none_or(|runs| {
                    runs.iter().any(|&(first, last)| (first..=last).contains(&stmt_id))
                }))
    }

    /// Whether a statement of retryable write `number` writes the session record (the first
    /// statement of a new number does), and so can keep its outcome there.
    pub fn writes_record_for(&self, number: i64) -> bool {
        self.durable != Some((number, RecordKind::Retryable))
    }

    /// Writes the durable record for retryable write `number` with the outcome of its statement
    /// `stmt_id` in it, in place of a statement record. Only when the statement writes the
    /// session record anyway ([`Session::writes_record_for`]).
    pub fn write_durable_with_outcome(
        &self,
        txn: &mut dyn Txn,
        number: i64,
        stmt_id: i32,
        outcome: &Document,
    ) -> Result<()> {
        debug_assert!(self.writes_record_for(number), "the record would not be written");
        let mut record = SessionRecord::now(number, RecordKind::Retryable);
        record.stmt = Some((stmt_id, bson::RawDocumentBuf::try_from(outcome)?));
        durable_write(&self.key, self.durable, self.recorded_stmts.as_deref(), txn, &record)
    }

    /// Notes that statement `stmt_id` of retryable write `number` committed with its outcome in
    /// the session record.
    pub fn recorded_inline_stmt(&mut self, number: i64, stmt_id: i32) {
        self.durable = Some((number, RecordKind::Retryable));
        self.recorded_stmts = Some(Vec::new());
        self.inline_stmt = Some(stmt_id);
    }

    /// Writes the durable record for `number` into `txn`, dropping the statement records of an
    /// older retryable number. Skipped when the record already says exactly this.
    pub fn write_durable(&self, txn: &mut dyn Txn, number: i64, kind: RecordKind) -> Result<()> {
        let record = SessionRecord::now(number, kind);
        durable_write(&self.key, self.durable, self.recorded_stmts.as_deref(), txn, &record)
    }

    /// Notes that a retryable statement of `number` committed with its record: a record of its
    /// own, or (`extended`) the record of the run of statements just before it.
    pub fn recorded_stmt(&mut self, number: i64, stmt_id: i32, extended: bool) {
        if self.durable != Some((number, RecordKind::Retryable)) {
            self.durable = Some((number, RecordKind::Retryable));
            self.recorded_stmts = Some(Vec::new());
            self.inline_stmt = None;
        }
        if let Some(runs) = &mut self.recorded_stmts {
            match runs.last_mut() {
                Some(run) if extended && run.1.checked_add(1) == Some(stmt_id) => run.1 = stmt_id,
                _ => runs.push((stmt_id, stmt_id)),
            }
        }
    }

    /// Aborts the open transaction, if any, recording why.
    pub fn abort_open(&mut self, reason: Option<String>) {
        if self.state.is_in_progress() {
            let TxnState::InProgress { txn, .. } =
                std::mem::replace(&mut self.state, TxnState::Aborted { reason })
            else {
                return;
            };
            txn.abort();
        }
    }

    /// When the open transaction started, if one is open.
    pub fn open_since(&self) -> Option<Instant> {
        match &self.state {
            TxnState::InProgress { started, .. } => Some(*started),
            _ => None,
        }
    }

    fn too_old(&self, number: i64) -> Result<()> {
        if let Some(current) = self.txn_number
            && number < current
        {
            bail!(
                TransactionTooOld,
                "Cannot start transaction {} on session {} because a newer transaction {} has \
                     already started",
                number,
                describe_lsid(&self.lsid),
                current
            );
        }
        Ok(())
    }

    /// Starts a multi-document transaction with `number` (a statement with
    /// `startTransaction: true`).
    pub fn start_transaction(
        &mut self,
        store: &dyn TxnStore,
        number: i64,
        read_concern: Option<Document>,
    ) -> Result<()> {
        self.too_old(number)?;
        if self.txn_number == Some(number) {
            bail!(
                ConflictingOperationInProgress,
                "Cannot start a transaction with txnNumber {} on session {} because it has already \
                 been used",
                number,
                describe_lsid(&self.lsid)
            );
        }
        self.abort_open(None);
        let txn = store.begin()?;
        self.txn_number = Some(number);
        self.state = TxnState::InProgress { txn, started: Instant::now(), read_concern };
        Ok(())
    }

    /// Checks that a statement (not commit/abort) may continue transaction `number`, and returns
    /// its MVCC transaction.
    pub fn continue_transaction(&mut self, number: i64) -> Result<&mut Box<dyn Txn>> {
        self.too_old(number)?;
        if self.txn_number != Some(number) {
            return Err(self.no_such_transaction(number));
        }
        if let TxnState::Committed { .. } = self.state {
            bail!(
                TransactionCommitted,
                "Transaction with txnNumber {} has been committed.",
                number
            );
        }
        if !self.state.is_in_progress() {
            return Err(self.no_such_transaction(number));
        }
        match &mut self.state {
            TxnState::InProgress { txn, .. } => Ok(txn),
            _ => Err(err!(InternalError, "the transaction is not in progress")),
        }
    }

    /// The NoSuchTransaction error for `number`.
    pub fn no_such_transaction(&self, number: i64) -> crate::Error {
        let mut msg = format!(
            "Transaction with {{ txnNumber: {} }} has been aborted.",
            self.txn_number.unwrap_or(number)
        );
        if self.txn_number != Some(number) || matches!(self.state, TxnState::None) {
            msg = format!(
                "Given transaction number {} does not match any in-progress transactions. The \
                 active transaction number is {}",
                number,
                self.txn_number.unwrap_or(-1)
            );
        } else if let TxnState::Aborted { reason: Some(reason) } = &self.state {
            msg = format!("{msg} {reason}");
        }
        err!(NoSuchTransaction, "{}", msg)
    }

    /// Commits transaction `number`. Committing a committed transaction again succeeds. The
    /// commit is visible when this returns but durable only at the next sync: the caller owes
    /// it (`Runner::owe_durability`) before acknowledging.
    pub fn commit_transaction(&mut self, number: i64) -> Result<Ts> {
        self.too_old(number)?;
        if self.txn_number != Some(number) {
            return Err(self.no_such_transaction(number));
        }
        match self.state {
            TxnState::Committed { commit_ts } => return Ok(commit_ts.unwrap_or_default()),
            TxnState::Aborted { .. } | TxnState::None => {
                return Err(self.no_such_transaction(number));
            }
            TxnState::InProgress { .. } => {}
        }
        let TxnState::InProgress { mut txn, .. } =
            std::mem::replace(&mut self.state, TxnState::Aborted { reason: None })
        else {
            return Err(self.no_such_transaction(number));
        };
        // The outcome is recorded in the same commit as the writes, so a commit retried after a
        // crash finds it. A transaction without writes leaves nothing to protect.
        let wrote = txn.has_writes();
        if wrote {
            let recorded = durable_write(
                &self.key,
                self.durable,
                self.recorded_stmts.as_deref(),
                txn.as_mut(),
                &SessionRecord::now(number, RecordKind::Committed),
            );
            if let Err(e) = recorded {
                txn.abort();
                return Err(e);
            }
        }
        // Every change event of the transaction carries who ran it (its change-log header).
        if wrote
            && let Ok(header) =
                bson::doc! { "lsid": self.lsid.clone(), "txnNumber": number }.to_vec()
        {
            txn.set_log_header(&header);
        }
        // On failure the state stays Aborted, as set above.
        let ts = txn.commit_deferred()?;
        self.state = TxnState::Committed { commit_ts: Some(ts) };
        if wrote {
            self.durable = Some((number, RecordKind::Committed));
            self.recorded_stmts = Some(Vec::new());
            self.inline_stmt = None;
        }
        Ok(ts)
    }

    /// Aborts transaction `number` at the client's request.
    pub fn abort_transaction(&mut self, number: i64) -> Result<()> {
        self.too_old(number)?;
        if self.txn_number != Some(number) {
            return Err(self.no_such_transaction(number));
        }
        match self.state {
            TxnState::InProgress { .. } => {
                self.abort_open(None);
                Ok(())
            }
            TxnState::Committed { .. } => bail!(
                TransactionCommitted,
                "Transaction with txnNumber {} has been committed.",
                number
            ),
            TxnState::Aborted { .. } | TxnState::None => Err(self.no_such_transaction(number)),
        }
    }

    /// Registers a retryable write with `number`: older numbers fail with TransactionTooOld; a
    /// newer number ends any transaction of the previous number.
    pub fn begin_retryable(&mut self, number: i64) -> Result<()> {
        self.too_old(number)?;
        if self.txn_number == Some(number) {
            if !matches!(self.state, TxnState::None) {
                bail!(
                    IncompleteTransactionHistory,
                    "Cannot run a retryable write with txnNumber {} because it was used by a \
                     transaction",
                    number
                );
            }
            return Ok(());
        }
        self.abort_open(None);
        self.txn_number = Some(number);
        self.state = TxnState::None;
        Ok(())
    }
}

/// Writes a session's durable record for `number` into `txn` unless it already says exactly
/// this, dropping the statement records of an older retryable number (`recorded`: their ids,
/// when known).
fn durable_write(
    key: &[u8],
    current: Option<(i64, RecordKind)>,
    recorded: Option<&[(i32, i32)]>,
    txn: &mut dyn Txn,
    record: &SessionRecord,
) -> Result<()> {
    if current == Some((record.txn_number, record.kind)) {
        return Ok(());
    }
    // A run of statements has one record, under its first id (a statement kept in the session
    // record has none).
    let heads: Option<Vec<i32>>;
    let stale = match current {
        Some((old, RecordKind::Retryable)) if old != record.txn_number => {
            heads = recorded.map(|runs| runs.iter().map(|r| r.0).collect());
            Some((old, heads.as_deref()))
        }
        _ => None,
    };
    durable::write(txn, key, record, stale)
}

/// A short description of an lsid for messages.
pub fn describe_lsid(lsid: &Document) -> String {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => match b.to_uuid() {
            Ok(u) => format!("{u} - "),
            Err(_) => format!("{lsid}"),
        },
        _ => format!("{lsid}"),
    }
}

/// The registry key of an lsid: the bytes of its `id`, then those of its `uid` (the digest of
/// the user that owns the session, which dispatch adds when authorization is on; see
/// `command::authz::owned_lsid`). A session's `id` alone is therefore not enough to reach
/// another user's session: the same `id` under two users is two sessions, as in MongoDB, whose
/// logical session id is the pair. Without authorization there is no `uid` (MongoDB's digest of
/// "no user", which a client may also send, counts as none), so the key is the `id`'s bytes as
/// it always was, and durable session records written before keep their keys.
pub fn lsid_key(lsid: &Document) -> Result<Vec<u8>> {
    let mut key = match lsid.get("id") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(_) => bail!(TypeMismatch, "lsid.id must be a UUID"),
        None => bail!(
            FailedToParse,
            "BSON field 'OperationSessionInfo.lsid.id' is missing but a required field"
        ),
    };
    match lsid.get("uid") {
        // "No user" counts as none.
        None => {}
        Some(Bson::Binary(b)) if b.bytes[..] == NO_USER_DIGEST[..] => {}
        Some(Bson::Binary(b)) if b.bytes.len() == 32 => key.extend_from_slice(&b.bytes),
        Some(Bson::Binary(b)) => {
            bail!(BadValue, "Unsupported SHA256Block hash length: {}", b.bytes.len())
        }
        Some(_) => bail!(TypeMismatch, "lsid.uid must be binData"),
    }
    Ok(key)
}

/// MongoDB's digest of "no user" (SHA-256 of the empty string): the `uid` of sessions of a
/// server without authorization. Computed once.
pub static NO_USER_DIGEST: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
    use sha2::Digest;
    sha2::Sha256::digest(b"").into()
});

/// All sessions of this node.
pub struct SessionRegistry {
    /// By [`lsid_key`], hashed with foldhash: every command of a session looks it up.
    sessions: Mutex<foldhash::HashMap<Vec<u8>, Arc<Mutex<Session>>>>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        SessionRegistry { sessions: Mutex::new(foldhash::HashMap::default()) }
    }

    /// The session for an lsid, created on first use.
    pub fn get_or_create(&self, lsid: &Document) -> Result<Arc<Mutex<Session>>> {
        let key = lsid_key(lsid)?;
        let mut sessions = self.sessions.lock();
        if let Some(s) = sessions.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(Mutex::new(Session::new(lsid.clone(), key.clone())));
        sessions.insert(key, s.clone());
        Ok(s)
    }

    /// Ends the session with this key ([`lsid_key`]), if it exists (`endSessions`,
    /// `killSessions`): aborts its open transaction and forgets it.
    pub fn end(&self, key: &[u8]) {
        let removed = self.sessions.lock().remove(key);
        if let Some(s) = removed {
            s.lock().abort_open(Some("The session was ended.".into()));
        }
    }

    /// Ends every session whose key satisfies `owned` (`killSessions` with no lsid ends the
    /// caller's own sessions, `killAllSessions` and shutdown every session) and returns their
    /// keys, so their cursors can be closed too.
    pub fn end_matching(&self, owned: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut ended = Vec::new();
        self.sessions.lock().retain(|key, s| {
            let keep = !owned(key);
            if !keep {
                ended.push((key.clone(), s.clone()));
            }
            keep
        });
        ended
            .into_iter()
            .map(|(key, s)| {
                s.lock().abort_open(Some("The session was killed.".into()));
                key
            })
            .collect()
    }

    /// Aborts transactions older than `lifetime` and forgets sessions idle for longer than
    /// [`SESSION_TIMEOUT`], with their durable records. Sessions busy with a command are skipped
    /// and looked at next time.
    pub fn reap(&self, lifetime: Duration, store: &dyn TxnStore) -> usize {
        let now = Instant::now();
        let all: Vec<_> =
            self.sessions.lock().iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        let mut aborted = 0;
        for (key, s) in all {
            let Some(mut session) = s.try_lock() else { continue };
            if session.open_since().is_some_and(|t| now.duration_since(t) >= lifetime) {
                session.abort_open(Some(format!(
                    "Transaction exceeded the transactionLifetimeLimitSeconds of {} seconds",
                    lifetime.as_secs()
                )));
                aborted += 1;
            }
            if now.duration_since(session.last_use) >= SESSION_TIMEOUT {
                session.abort_open(None);
                // The session expired: its retry history goes with it (MongoDB reaps
                // `config.transactions` entries of expired sessions the same way).
                if let Err(e) = durable::forget(store, &session.key, None) {
                    tracing::warn!("cannot delete an expired session's records: {e}");
                    continue;
                }
                drop(session);
                self.sessions.lock().remove(&key);
            }
        }
        aborted
    }

    /// Deletes the durable records of sessions not used for [`SESSION_TIMEOUT`] that are not in
    /// memory (sessions that never came back after a restart). Returns how many expired.
    pub fn expire_durable(&self, store: &dyn TxnStore) -> Result<usize> {
        durable::expire(store, SESSION_TIMEOUT.as_millis() as i64, |key| {
            self.sessions.lock().contains_key(key)
        })
    }

    /// Snapshot of sessions for `$listLocalSessions` and `currentOp`.
    pub fn list(&self) -> Vec<Arc<Mutex<Session>>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// The number of sessions with an open transaction.
    pub fn open_transactions(&self) -> usize {
        self.list()
            .iter()
            .filter(|s| s.try_lock().is_some_and(|s| s.state.is_in_progress()))
            .count()
    }
}
