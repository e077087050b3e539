//! [`ClientSession`]: logical sessions and the driver side of transactions.
//!
//! The server keeps the authoritative transaction state; the session here keeps what a driver
//! keeps: the lsid, the current `txnNumber`, and a small state machine that decides which fields
//! a command carries:
//!
//! ```text
//!   None ──start_transaction──▶ Starting ──first command──▶ InProgress
//!                                  │                            │
//!                                  │ commit (nothing sent)      │ commit / abort (sent)
//!                                  ▼                            ▼
//!                            Committed / Aborted ◀──────────────┘
//! ```
//!
//! The first command of a transaction carries `startTransaction: true` and the transaction's
//! `readConcern`; every command of it carries `txnNumber` and `autocommit: false`; the commit
//! carries the write concern. A transaction that never ran a command commits and aborts without
//! contacting the server, as the drivers do.
//!
//! [`StartTransaction::and_run`] (and [`ClientSession::with_transaction`]) implement the drivers'
//! convenient transaction API: the callback is retried as a whole after a
//! TransientTransactionError, and the commit alone after an UnknownTransactionCommitResult, until
//! 120 seconds have passed since the first attempt.

use std::time::{Duration, Instant};

use bson::{Document, doc};

use super::client::Client;
use super::error::{
    Error, ErrorKind, Result, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
    WriteFailure, write_concern_error,
};
use super::options::{ReadConcern, SessionOptions, TransactionOptions, WriteConcern};

/// How long the convenient transaction API keeps retrying.
pub const WITH_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The `wtimeout` drivers use when they retry a commit with `w: majority`.
const COMMIT_RETRY_WTIMEOUT: Duration = Duration::from_secs(10);

/// Where the session's current transaction stands, as the driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// No transaction (none started, or the last one ended and a command ran since).
    None,
    /// Started, but no command has been sent yet.
    Starting,
    /// At least one command has been sent.
    InProgress,
    /// Committed (or commit attempted). `data_committed` is false when no command was ever sent.
    Committed {
        /// Whether the server was involved.
        data_committed: bool,
    },
    /// Aborted.
    Aborted,
}

/// A logical session: orders a sequence of operations and carries transactions.
///
/// Dropping the session aborts its open transaction and ends it on the server (`endSessions`).
pub struct ClientSession {
    client: Client,
    lsid: Document,
    txn_number: i64,
    state: TransactionState,
    options: Option<SessionOptions>,
    /// The options of the current transaction.
    txn_options: TransactionOptions,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("lsid", &self.lsid)
            .field("txn_number", &self.txn_number)
            .field("state", &self.state)
            .finish()
    }
}

impl ClientSession {
    pub(crate) fn new(client: Client, options: Option<SessionOptions>) -> Self {
        ClientSession {
            client,
            lsid: doc! { "id": bson::Uuid::new() },
            txn_number: 0,
            state: TransactionState::None,
            options,
            txn_options: TransactionOptions::default(),
        }
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The session id (`lsid`).
    pub fn id(&self) -> &Document {
        &self.lsid
    }

    /// The session's options.
    pub fn options(&self) -> Option<&SessionOptions> {
        self.options.as_ref()
    }

    /// The number of the current (or last) transaction.
    pub fn txn_number(&self) -> i64 {
        self.txn_number
    }

    /// The state of the current transaction.
    pub fn transaction_state(&self) -> TransactionState {
        self.state
    }

    /// Whether a transaction is open (started and neither committed nor aborted).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, TransactionState::Starting | TransactionState::InProgress)
    }

    /// Starts a transaction: `session.start_transaction().run()?`. Options not given fall back to
    /// the session's default transaction options.
    pub fn start_transaction(&mut self) -> StartTransaction<'_> {
        StartTransaction { session: self, options: None }
    }

    /// Commits the transaction: `session.commit_transaction().run()?`.
    pub fn commit_transaction(&mut self) -> CommitTransaction<'_> {
        CommitTransaction { session: self }
    }

    /// Aborts the transaction: `session.abort_transaction().run()?`.
    pub fn abort_transaction(&mut self) -> AbortTransaction<'_> {
        AbortTransaction { session: self }
    }

    /// Runs `callback` in a transaction with the session's default options, retrying as the
    /// drivers' convenient API does (see [`StartTransaction::and_run`]).
    pub fn with_transaction<R, F>(&mut self, mut callback: F) -> Result<R>
    where
        F: FnMut(&mut ClientSession) -> Result<R>,
    {
        self.start_transaction().and_run((), |session, _| callback(session))
    }

    /// Adds the session fields to a command: `lsid` always; inside a transaction `txnNumber` and
    /// `autocommit: false`, and on its first command `startTransaction` and `readConcern`.
    pub(crate) fn prepare_command(&mut self, cmd: &mut Document) {
        cmd.insert("lsid", self.lsid.clone());
        match self.state {
            TransactionState::Starting => {
                cmd.insert("txnNumber", self.txn_number);
                cmd.insert("startTransaction", true);
                cmd.insert("autocommit", false);
                if let Some(rc) = &self.txn_options.read_concern {
                    cmd.insert("readConcern", rc.to_document());
                }
                self.state = TransactionState::InProgress;
            }
            TransactionState::InProgress => {
                cmd.insert("txnNumber", self.txn_number);
                cmd.insert("autocommit", false);
            }
            // A command after the transaction ended runs outside any transaction.
            TransactionState::Committed { .. } | TransactionState::Aborted => {
                self.state = TransactionState::None
            }
            TransactionState::None => {}
        }
    }

    /// The `commitTransaction` / `abortTransaction` command for the current transaction.
    fn end_command(&self, name: &str, write_concern: Option<WriteConcern>) -> Document {
        let mut cmd = doc! {
            name: 1,
            "lsid": self.lsid.clone(),
            "txnNumber": self.txn_number,
            "autocommit": false,
        };
        if let Some(wc) = write_concern {
            let wc = wc.to_document();
            if !wc.is_empty() {
                cmd.insert("writeConcern", wc);
            }
        }
        cmd
    }

    /// Sends `commitTransaction`, retrying once after a retryable error, and labels an uncertain
    /// outcome with UnknownTransactionCommitResult.
    fn send_commit(&mut self, retry: bool) -> Result<()> {
        let mut wc = self.txn_options.write_concern.clone();
        if retry {
            wc = Some(majority_for_retry(wc));
        }
        let command = |wc: Option<WriteConcern>| {
            let mut cmd = self.end_command("commitTransaction", wc);
            if let Some(t) = self.txn_options.max_commit_time {
                cmd.insert("maxTimeMS", t.as_millis() as i64);
            }
            cmd
        };
        let mut result = self
            .client
            .send("admin", command(wc.clone()))
            .and_then(|reply| check_commit_reply(&reply));
        if let Err(e) = &result
            && e.contains_label(super::error::RETRYABLE_WRITE_ERROR)
        {
            // The retry of a commit asks for majority, as the retryable-writes rules say. The
            // command is built again rather than copied for a retry that seldom comes.
            let retry = command(Some(majority_for_retry(wc)));
            result = self.client.send("admin", retry).and_then(|reply| check_commit_reply(&reply));
        }
        result.map_err(label_commit_error)
    }

    /// Sends `abortTransaction`. Errors are ignored, as the drivers ignore them: the server aborts
    /// the transaction on its own when it cannot be reached or has already given up on it.
    fn send_abort(&mut self) {
        let command =
            || self.end_command("abortTransaction", self.txn_options.write_concern.clone());
        if let Err(e) = self.client.send("admin", command())
            && e.contains_label(super::error::RETRYABLE_WRITE_ERROR)
        {
            let _ = self.client.send("admin", command());
        }
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        if self.state == TransactionState::InProgress {
            self.send_abort();
        }
        // The session may never have reached the server; ending an unknown lsid is harmless.
        let _ = self.client.send("admin", doc! { "endSessions": [self.lsid.clone()] });
    }
}

/// A write concern of `w: majority` that keeps the other fields, for commit retries.
fn majority_for_retry(wc: Option<WriteConcern>) -> WriteConcern {
    let mut wc = wc.unwrap_or_default();
    wc.w = Some(super::options::Acknowledgment::Majority);
    wc.w_timeout.get_or_insert(COMMIT_RETRY_WTIMEOUT);
    wc
}

/// A successful commit reply may still carry a write concern error.
fn check_commit_reply(reply: &Document) -> Result<()> {
    match write_concern_error(reply) {
        Some(wce) => Err(Error::new(
            ErrorKind::Write(WriteFailure::WriteConcernError(wce)),
            super::error::reply_labels(reply),
        )),
        None => Ok(()),
    }
}

/// Whether a commit error leaves the outcome unknown: retryable errors, write concern errors
/// other than the ones that say the concern can never be met, and time limits.
fn label_commit_error(mut e: Error) -> Error {
    let unknown = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => !matches!(w.code, 79 | 100),
        ErrorKind::Command(c) => {
            e.contains_label(super::error::RETRYABLE_WRITE_ERROR)
                || c.code == 50
                || crate::command::labels::is_retryable_code(c.code)
        }
        _ => false,
    };
    if unknown && !e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        e.add_label(UNKNOWN_TRANSACTION_COMMIT_RESULT);
    }
    e
}

/// Whether an error is MaxTimeMSExpired, in the command or its write concern error.
fn is_max_time_expired(e: &Error) -> bool {
    e.code() == Some(50)
}

/// A random pause before retrying a transaction: jittered, growing with the attempt, at most half
/// a second, so that transactions that conflicted do not collide again in lockstep.
fn backoff(attempt: u32) {
    let cap = (5.0 * 1.5_f64.powi(attempt.min(20) as i32)).min(500.0);
    let ms = rand::random::<f64>() * cap;
    std::thread::sleep(Duration::from_micros((ms * 1000.0) as u64));
}

/// The action returned by [`ClientSession::start_transaction`].
#[must_use = "actions do nothing until run"]
pub struct StartTransaction<'a> {
    session: &'a mut ClientSession,
    options: Option<TransactionOptions>,
}

impl StartTransaction<'_> {
    /// Sets all options of the transaction.
    pub fn with_options(mut self, options: impl Into<Option<TransactionOptions>>) -> Self {
        self.options = options.into();
        self
    }

    /// Sets the read concern of the transaction.
    pub fn read_concern(mut self, rc: ReadConcern) -> Self {
        self.options.get_or_insert_with(TransactionOptions::default).read_concern = Some(rc);
        self
    }

    /// Sets the write concern of the commit.
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.options.get_or_insert_with(TransactionOptions::default).write_concern = Some(wc);
        self
    }

    /// Sets the commit's time limit.
    pub fn max_commit_time(mut self, t: Duration) -> Self {
        self.options.get_or_insert_with(TransactionOptions::default).max_commit_time = Some(t);
        self
    }

    /// Starts the transaction. Nothing is sent yet: the first command of the transaction starts
    /// it on the server.
    pub fn run(self) -> Result<()> {
        start(self.session, self.options.as_ref())
    }

    /// Runs `callback` in a transaction and commits it, retrying like the drivers' convenient
    /// transaction API:
    ///
    /// - if the callback fails, the transaction is aborted; after a TransientTransactionError the
    ///   whole callback runs again in a new transaction;
    /// - if the commit fails with UnknownTransactionCommitResult (and not a time limit), the
    ///   commit alone is retried; with TransientTransactionError, the whole callback;
    /// - retries stop 120 seconds after the first attempt, returning the last error;
    /// - if the callback committed or aborted the transaction itself, its result is returned as
    ///   it is.
    pub fn and_run<R, C, F>(self, context: C, callback: F) -> Result<R>
    where
        F: for<'b> FnMut(&'b mut ClientSession, &'b mut C) -> Result<R>,
    {
        self.and_run_within(WITH_TRANSACTION_TIMEOUT, context, callback)
    }

    /// [`StartTransaction::and_run`] with another retry budget (for tests of the budget).
    pub(crate) fn and_run_within<R, C, F>(
        self,
        budget: Duration,
        mut context: C,
        mut callback: F,
    ) -> Result<R>
    where
        F: for<'b> FnMut(&'b mut ClientSession, &'b mut C) -> Result<R>,
    {
        let session = self.session;
        let options = self.options;
        let started = Instant::now();
        let mut attempt = 0u32;
        'transaction: loop {
            start(session, options.as_ref())?;
            let value = match callback(session, &mut context) {
                Ok(v) => v,
                Err(e) => {
                    if session.in_transaction() {
                        session.abort_transaction().run()?;
                    }
                    if e.contains_label(TRANSIENT_TRANSACTION_ERROR) && started.elapsed() < budget {
                        backoff(attempt);
                        attempt += 1;
                        continue 'transaction;
                    }
                    return Err(e);
                }
            };
            if !session.in_transaction() {
                return Ok(value);
            }
            loop {
                let Err(e) = session.commit_transaction().run() else {
                    return Ok(value);
                };
                let in_time = started.elapsed() < budget;
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && !is_max_time_expired(&e)
                    && in_time
                {
                    continue;
                }
                if e.contains_label(TRANSIENT_TRANSACTION_ERROR) && in_time {
                    backoff(attempt);
                    attempt += 1;
                    continue 'transaction;
                }
                return Err(e);
            }
        }
    }
}

/// Starts a transaction on the session: the next command carries `startTransaction`.
fn start(session: &mut ClientSession, options: Option<&TransactionOptions>) -> Result<()> {
    if session.in_transaction() {
        return Err(Error::transaction("transaction already in progress"));
    }
    let defaults = session
        .options
        .as_ref()
        .and_then(|o| o.default_transaction_options.clone())
        .unwrap_or_default();
    let given = options.cloned().unwrap_or_default();
    let merged = TransactionOptions {
        read_concern: given.read_concern.or(defaults.read_concern),
        write_concern: given.write_concern.or(defaults.write_concern),
        max_commit_time: given.max_commit_time.or(defaults.max_commit_time),
    };
    if let Some(super::options::Acknowledgment::Nodes(0)) =
        merged.write_concern.as_ref().and_then(|w| w.w.clone())
    {
        return Err(Error::transaction(
            "transactions do not support unacknowledged write concerns",
        ));
    }
    session.txn_number += 1;
    session.txn_options = merged;
    session.state = TransactionState::Starting;
    Ok(())
}

/// The action returned by [`ClientSession::commit_transaction`].
#[must_use = "actions do nothing until run"]
pub struct CommitTransaction<'a> {
    session: &'a mut ClientSession,
}

impl CommitTransaction<'_> {
    /// Commits. Committing again after a commit retries it (the server answers a repeated commit
    /// of a committed transaction with success).
    pub fn run(self) -> Result<()> {
        let session = self.session;
        match session.state {
            TransactionState::None => Err(Error::transaction("no transaction started")),
            TransactionState::Aborted => Err(Error::transaction(
                "Cannot call commitTransaction after calling abortTransaction",
            )),
            TransactionState::Starting | TransactionState::Committed { data_committed: false } => {
                session.state = TransactionState::Committed { data_committed: false };
                Ok(())
            }
            TransactionState::InProgress => {
                session.state = TransactionState::Committed { data_committed: true };
                session.send_commit(false)
            }
            TransactionState::Committed { data_committed: true } => session.send_commit(true),
        }
    }
}

/// The action returned by [`ClientSession::abort_transaction`].
#[must_use = "actions do nothing until run"]
pub struct AbortTransaction<'a> {
    session: &'a mut ClientSession,
}

impl AbortTransaction<'_> {
    /// Aborts. The server's answer is not reported (see the drivers' transactions spec).
    pub fn run(self) -> Result<()> {
        let session = self.session;
        match session.state {
            TransactionState::None => Err(Error::transaction("no transaction started")),
            TransactionState::Committed { .. } => Err(Error::transaction(
                "Cannot call abortTransaction after calling commitTransaction",
            )),
            TransactionState::Aborted => {
                Err(Error::transaction("cannot call abortTransaction twice"))
            }
            TransactionState::Starting => {
                session.state = TransactionState::Aborted;
                Ok(())
            }
            TransactionState::InProgress => {
                session.state = TransactionState::Aborted;
                session.send_abort();
                Ok(())
            }
        }
    }
}
