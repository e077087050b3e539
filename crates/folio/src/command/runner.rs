//! The per-command context: generic arguments and the statement runner.
//!
//! Every command may carry the same generic arguments (`lsid`, `txnNumber`, `autocommit`,
//! `startTransaction`, `readConcern`, `writeConcern`, `maxTimeMS`). [`OpContext`] parses them once,
//! and [`Runner`] turns them into the right way of running the command's reads and writes:
//!
//! - **in a transaction** (`txnNumber` + `autocommit: false`): every statement uses the session's
//!   open MVCC transaction; a write conflict fails the statement at once;
//! - **retryable write** (`txnNumber` alone): each statement runs in its own storage transaction
//!   that records its outcome, and a retried statement replays the record;
//! - **autocommit**: each statement runs in its own storage transaction; a write conflict with an
//!   in-flight transaction waits for it and retries, so it is never reported.
//!
//! # Batches
//!
//! The statements of a write command outside a transaction (`insert` of many documents,
//! `update`/`delete` with many statements, `bulkWrite`) share one storage transaction
//! ([`Runner::batch_statements`]): each statement runs after a savepoint, a statement that fails
//! is rolled back to it alone (the others stand, as MongoDB's ordered and unordered semantics
//! say), and the batch commits once, after the handler, so a thousand documents cost one commit
//! round and one log record instead of a thousand. A statement that meets a write conflict is
//! rolled back, the batch so far committed, and the statement run in its own transaction with
//! the usual waiting; the next statements open a new batch. Other connections see a batch's
//! statements together, when it commits.
//!
//! # Durability
//!
//! Every commit a command makes (its statements', and `commitTransaction`'s) is visible at once
//! and *owed* durability: nothing is acknowledged before it is durable, and the command path
//! syncs once, after the handler ([`Runner::sync_deferred`]), so a batch of statements shares one
//! sync. A command run on an event loop ([`Runner::new`] with a would-block flag) does not sync
//! at all: it hands the owed timestamp over with its reply ([`Runner::take_unsynced`]) and the
//! server sends the reply once [`crate::TxnStore::when_durable`] says so. Such a command must
//! not block either: where a write would wait for another transaction (or the session is busy),
//! it raises the flag instead, and the server runs the command again on a thread that may
//! wait. That is only sound while nothing was committed, so the flag is raised only then;
//! after a commit the write waits in place (the server sends only single-statement writes this
//! way, so that does not happen in practice).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bson::{Bson, Document};
use parking_lot::RawMutex;
use parking_lot::lock_api::ArcMutexGuard;

use super::Service;
use crate::catalog::keys::Key;
use crate::error::Result;
use crate::mvcc::OrConflict;
use crate::mvcc::{Ts, Txn};
use crate::session::Session;
use crate::session::durable::{RecordKind, stmt_outcome, stmt_record};
use crate::{bail, err};

/// How long an autocommit write waits for conflicting transactions without `maxTimeMS`.
const DEFAULT_CONFLICT_WAIT: Duration = Duration::from_secs(60);

/// How a command's statements run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each statement in its own transaction.
    Autocommit,
    /// A retryable write with this transaction number.
    Retryable(i64),
    /// A statement of the multi-document transaction with this number.
    Transaction(i64),
}

/// The generic arguments of a command, borrowing what it can from the command document (`'c`):
/// a command's `lsid`, `readConcern` and `writeConcern` are read where they are, not copied.
#[derive(Clone, Debug)]
pub struct OpContext<'c> {
    /// The command name (first key).
    pub name: String,
    /// `$db`.
    pub db: String,
    /// `lsid`: the command's own, or an owned one with the user's digest added
    /// (`authz::bind_session`).
    pub lsid: Option<Cow<'c, Document>>,
    /// `txnNumber`.
    pub txn_number: Option<i64>,
    /// `autocommit` (only ever `false` when present and valid).
    pub autocommit: Option<bool>,
    /// `startTransaction`.
    pub start_transaction: bool,
    /// `readConcern`.
    pub read_concern: Option<&'c Document>,
    /// `writeConcern`.
    pub write_concern: Option<&'c Document>,
    /// When `maxTimeMS` runs out.
    pub deadline: Option<Instant>,
    /// Set by `killOp` while the command runs.
    pub killed: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Whether the command is checked for privileges (`--auth`, a network connection); set by
    /// dispatch after the privilege check (`authz::bind_session`).
    pub authorization: bool,
    /// The authenticated user (`user@db`) when `authorization` is on: the owner of the cursors
    /// the command opens.
    pub user: Option<String>,
    /// The versioned-API parameters (`apiVersion`, `apiStrict`, `apiDeprecationErrors`).
    pub api: ApiParams,
}

/// The versioned-API parameters a command declared. Folio knows API version 1 only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiParams {
    /// `apiVersion` (always `"1"` once parsed).
    pub version: Option<String>,
    /// `apiStrict`: refuse commands outside the declared version.
    pub strict: Option<bool>,
    /// `apiDeprecationErrors`: refuse commands deprecated in the declared version (none are in
    /// version 1).
    pub deprecation_errors: Option<bool>,
}

impl ApiParams {
    /// Parses and validates the parameters as MongoDB does before running a command: the
    /// types, that `apiStrict` and `apiDeprecationErrors` come with an `apiVersion` (4886600),
    /// and that the version is one the server knows (APIVersionError). The values are the
    /// three fields' in the command, as [`Generic`] found them.
    fn parse(
        api_version: Option<&Bson>,
        api_strict: Option<&Bson>,
        api_deprecation_errors: Option<&Bson>,
    ) -> Result<ApiParams> {
        const PATH: &str = "APIParametersFromClient";
        let version = match api_version {
            None => None,
            Some(Bson::String(v)) => Some(v.clone()),
            Some(other) => bail!(
                TypeMismatch,
                "BSON field '{PATH}.apiVersion' is the wrong type '{}', expected type 'string'",
                crate::doc::type_name(other)
            ),
        };
        let flag = |key: &str, value: Option<&Bson>| -> Result<Option<bool>> {
            match value {
                None => Ok(None),
                Some(Bson::Boolean(b)) => Ok(Some(*b)),
                Some(other) => bail!(
                    TypeMismatch,
                    "BSON field '{PATH}.{key}' is the wrong type '{}', expected type 'bool'",
                    crate::doc::type_name(other)
                ),
            }
        };
        let strict = flag("apiStrict", api_strict)?;
        let deprecation_errors = flag("apiDeprecationErrors", api_deprecation_errors)?;
        match &version {
            None if strict.is_some() => {
                bail!(Location4886600, "Provided apiStrict without passing apiVersion")
            }
            None if deprecation_errors.is_some() => {
                bail!(Location4886600, "Provided apiDeprecationErrors without passing apiVersion")
            }
            Some(v) if v != "1" => bail!(APIVersionError, "API version must be \"1\""),
            _ => {}
        }
        Ok(ApiParams { version, strict, deprecation_errors })
    }

    /// The parameters as a document (as MongoDB prints them in a mismatch error; sessions keep
    /// their transaction's first parameters in this form).
    pub fn describe(&self) -> Document {
        let mut d = Document::new();
        if let Some(v) = &self.version {
            d.insert("apiVersion", v.clone());
        }
        if let Some(s) = self.strict {
            d.insert("apiStrict", s);
        }
        if let Some(e) = self.deprecation_errors {
            d.insert("apiDeprecationErrors", e);
        }
        d
    }

    /// Refuses `command` under `apiStrict: true` when it is not part of API version 1.
    pub fn check_strict(&self, command: &str, in_v1: bool) -> Result<()> {
        if self.strict == Some(true) && !in_v1 {
            bail!(
                APIStrictError,
                "Provided apiStrict:true, but the command {} is not in API Version 1. \
                 Information on supported commands and migrations in API Version 1 can be \
                 found at https://dochub.mongodb.org/core/manual-versioned-api",
                command
            );
        }
        Ok(())
    }

    /// Refuses a transaction statement whose parameters differ from the first statement's
    /// (`first`), as MongoDB does: a transaction runs under one API version.
    pub fn check_same_as(&self, command: &str, first: &Document) -> Result<()> {
        let mine = self.describe();
        if &mine != first {
            bail!(
                APIMismatchError,
                "API parameter mismatch: {} used params {}, the transaction's first command \
                 used {}",
                command,
                mine,
                first
            );
        }
        Ok(())
    }
}

/// The generic arguments of a command as it holds them, found in one pass over its fields: a
/// command has a few fields and OpContext reads a dozen names, each of which a lookup would
/// hash.
#[derive(Default)]
struct Generic<'a> {
    db: Option<&'a Bson>,
    lsid: Option<&'a Bson>,
    txn_number: Option<&'a Bson>,
    autocommit: Option<&'a Bson>,
    start_transaction: Option<&'a Bson>,
    api_version: Option<&'a Bson>,
    api_strict: Option<&'a Bson>,
    api_deprecation: Option<&'a Bson>,
    read_concern: Option<&'a Bson>,
    write_concern: Option<&'a Bson>,
    max_time_ms: Option<&'a Bson>,
}

impl<'a> Generic<'a> {
    fn of(cmd: &'a Document) -> Generic<'a> {
        let mut g = Generic::default();
        for (key, value) in cmd {
            let slot = match key.as_str() {
                "$db" => &mut g.db,
                "lsid" => &mut g.lsid,
                "txnNumber" => &mut g.txn_number,
                "autocommit" => &mut g.autocommit,
                "startTransaction" => &mut g.start_transaction,
                "apiVersion" => &mut g.api_version,
                "apiStrict" => &mut g.api_strict,
                "apiDeprecationErrors" => &mut g.api_deprecation,
                "readConcern" => &mut g.read_concern,
                "writeConcern" => &mut g.write_concern,
                "maxTimeMS" => &mut g.max_time_ms,
                _ => continue,
            };
            *slot = Some(value);
        }
        g
    }
}

impl<'c> OpContext<'c> {
    /// Parses the generic arguments of a command.
    pub fn parse(cmd: &'c Document) -> Result<OpContext<'c>> {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let generic = Generic::of(cmd);
        let db = match generic.db {
            Some(Bson::String(s)) => s.clone(),
            Some(_) => {
                bail!(TypeMismatch, "BSON field '$db' is the wrong type, expected type 'string'")
            }
            // Every OP_MSG carries `$db`; MongoDB refuses a command without one rather than
            // guess a database.
            None => {
                return Err(crate::Error::new(
                    crate::Code::Location40571,
                    "OP_MSG requests require a $db argument",
                ));
            }
        };
        let lsid = match generic.lsid {
            Some(Bson::Document(d)) => {
                validate_lsid(d)?;
                Some(Cow::Borrowed(d))
            }
            Some(_) => {
                bail!(TypeMismatch, "BSON field 'lsid' is the wrong type, expected type 'object'")
            }
            None => None,
        };
        let txn_number = match generic.txn_number {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Double(d)) if d.fract() == 0.0 => Some(*d as i64),
            Some(_) => bail!(
                TypeMismatch,
                "BSON field 'txnNumber' is the wrong type, expected type 'long'"
            ),
            None => None,
        };
        let autocommit = match generic.autocommit {
            Some(Bson::Boolean(b)) => Some(*b),
            Some(_) => bail!(
                TypeMismatch,
                "BSON field 'autocommit' is the wrong type, expected type 'bool'"
            ),
            None => None,
        };
        let start_transaction = match generic.start_transaction {
            Some(Bson::Boolean(b)) => *b,
            Some(_) => bail!(
                TypeMismatch,
                "BSON field 'startTransaction' is the wrong type, expected type 'bool'"
            ),
            None => false,
        };
        let api =
            ApiParams::parse(generic.api_version, generic.api_strict, generic.api_deprecation)?;
        let read_concern = doc_arg(generic.read_concern, "readConcern")?;
        let write_concern = doc_arg(generic.write_concern, "writeConcern")?;
        let deadline = match generic.max_time_ms {
            None | Some(Bson::Null) => None,
            Some(v) => match crate::doc::compare::as_f64(v) {
                Some(ms) if ms < 0.0 => {
                    bail!(BadValue, "{} value for maxTimeMS is out of range", ms)
                }
                Some(0.0) => None,
                Some(ms) => Some(Instant::now() + Duration::from_millis(ms as u64)),
                None => bail!(BadValue, "maxTimeMS must be a number"),
            },
        };
        if txn_number.is_some() && lsid.is_none() {
            bail!(InvalidOptions, "Transaction number requires a session ID to also be specified");
        }
        if txn_number.is_some_and(|n| n < 0) {
            bail!(InvalidOptions, "Transaction number cannot be negative");
        }
        if autocommit == Some(true) {
            bail!(InvalidOptions, "Specifying autocommit=true is not allowed.");
        }
        if autocommit.is_some() && txn_number.is_none() {
            bail!(
                InvalidOptions,
                "'autocommit' field requires a transaction number to also be specified"
            );
        }
        if start_transaction && autocommit.is_none() {
            bail!(
                InvalidOptions,
                "'startTransaction' field requires 'autocommit' field to also be specified"
            );
        }
        Ok(OpContext {
            name,
            db,
            lsid,
            txn_number,
            autocommit,
            start_transaction,
            read_concern,
            write_concern,
            deadline,
            killed: None,
            api,
            authorization: false,
            user: None,
        })
    }

    /// How this command's statements run.
    pub fn mode(&self) -> Mode {
        match (self.txn_number, self.autocommit) {
            (Some(n), Some(false)) => Mode::Transaction(n),
            (Some(n), _) => Mode::Retryable(n),
            (None, _) => Mode::Autocommit,
        }
    }

    /// The read concern level, if given.
    pub fn read_concern_level(&self) -> Option<&str> {
        self.read_concern.as_ref().and_then(|rc| rc.get_str("level").ok())
    }

    /// Fails with Interrupted when `killOp` killed the command, and with MaxTimeMSExpired when
    /// the deadline has passed.
    pub fn check_deadline(&self) -> Result<()> {
        if self.killed.as_ref().is_some_and(|k| k.load(std::sync::atomic::Ordering::Relaxed)) {
            bail!(Interrupted, "operation was interrupted");
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(MaxTimeMSExpired, "operation exceeded time limit");
        }
        Ok(())
    }
}

/// A statement, commit or abort of transaction `n` must declare the API parameters its first
/// statement declared (APIMismatchError otherwise).
fn check_txn_api(s: &Session, n: i64, op: &OpContext) -> Result<()> {
    match &s.txn_api {
        Some(first) if s.txn_number == Some(n) => op.api.check_same_as(&op.name, first),
        _ => Ok(()),
    }
}

/// Checks an `lsid` the way MongoDB's strict `LogicalSessionFromClient` parser does: `id` is
/// required and must be a 16-byte UUID (binary subtype 4), and no field is unknown. Session
/// keys are the id's bytes, so anything looser would let clients share or forge sessions with
/// ids of any length.
fn validate_lsid(lsid: &Document) -> Result<()> {
    const PATH: &str = "OperationSessionInfo.lsid";
    for (k, v) in lsid {
        match k.as_str() {
            "id" => {}
            "uid" => match v {
                Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Generic => {}
                other => bail!(
                    TypeMismatch,
                    "BSON field '{PATH}.uid' is the wrong type '{}', expected type 'binData'",
                    crate::doc::type_name(other)
                ),
            },
            "txnNumber" | "txnUUID" => {}
            _ => {
                return Err(crate::Error::unknown_field(&format!("{PATH}.{k}")));
            }
        }
    }
    match lsid.get("id") {
        None | Some(Bson::Null | Bson::Undefined) => Err(crate::Error::new(
            crate::Code::Other(40414),
            format!("BSON field '{PATH}.id' is missing but a required field"),
        )),
        Some(Bson::Binary(b)) if b.subtype != bson::spec::BinarySubtype::Uuid => bail!(
            TypeMismatch,
            "BSON field '{PATH}.id' is the wrong binData type '{}', expected type 'UUID'",
            bin_data_type_name(b.subtype)
        ),
        Some(Bson::Binary(b)) if b.bytes.len() != 16 => {
            bail!(InvalidUUID, "uuid must be a 16-byte binary field with UUID (4) subtype")
        }
        Some(Bson::Binary(_)) => Ok(()),
        Some(other) => bail!(
            TypeMismatch,
            "BSON field '{PATH}.id' is the wrong type '{}', expected type 'binData'",
            crate::doc::type_name(other)
        ),
    }
}

/// MongoDB's name for a binary subtype (`typeName(BinDataType)`).
fn bin_data_type_name(t: bson::spec::BinarySubtype) -> &'static str {
    use bson::spec::BinarySubtype as T;
    match t {
        T::Generic => "BinDataGeneric",
        T::Function => "Function",
        T::BinaryOld => "ByteArrayDeprecated",
        T::UuidOld => "UUIDDeprecated",
        T::Uuid => "UUID",
        T::Md5 => "MD5",
        T::Encrypted => "Encrypt",
        T::Column => "Column",
        T::Sensitive => "Sensitive",
        T::UserDefined(_) => "Custom",
        _ => "Invalid",
    }
}

fn doc_arg<'c>(value: Option<&'c Bson>, key: &str) -> Result<Option<&'c Document>> {
    match value {
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(Bson::Null) | None => Ok(None),
        Some(_) => {
            bail!(TypeMismatch, "BSON field '{}' is the wrong type, expected type 'object'", key)
        }
    }
}

/// Runs a command's reads and writes in the way its context asks for.
pub struct Runner<'a> {
    svc: &'a Service,
    /// The command's generic arguments.
    pub op: &'a OpContext<'a>,
    session: Option<ArcMutexGuard<RawMutex, Session>>,
    /// Set when a fail point asks to close the connection after the write.
    pub close_connection: bool,
    /// The snapshot timestamp of a snapshot read, for `atClusterTime` in the reply.
    pub at_cluster_time: Option<Ts>,
    /// Stored documents the reply's cursor batch carries unchanged (see [`super::RawBatch`]).
    raw_batch: std::cell::Cell<Option<super::RawBatch>>,
    /// The newest commit of this command that is not known durable yet (see "Durability").
    unsynced: std::cell::Cell<Option<Ts>>,
    /// Raised when the command would have to wait but must not (see "Durability"); `None` when
    /// it may wait.
    would_block: Option<&'a std::cell::Cell<bool>>,
    /// Whether autocommit statements share a transaction (see "Batches").
    batching: std::cell::Cell<bool>,
    /// The open batch transaction, if any.
    batch: std::cell::RefCell<Option<Box<dyn Txn>>>,
    /// The statement record this command wrote last, which the next statement may extend.
    last_record: std::cell::RefCell<Option<LastRecord>>,
}

/// The statement record a retryable statement wrote: records of consecutive statements with the
/// same outcome written in one transaction are one record (see `session::durable`).
struct LastRecord {
    /// The transaction that wrote it: only a statement in the same one extends it, so a run
    /// never claims statements whose commit failed.
    txn: crate::mvcc::TxnId,
    /// The transaction number, and the run's first and last statement ids.
    number: i64,
    first: i32,
    last: i32,
    /// The outcome every statement of the run had.
    outcome: Document,
    /// The record's storage key (under the run's first statement).
    key: Vec<u8>,
    /// Whether the run was extended past what its stored record says: statements of one batch
    /// extend it in memory only, and [`Runner::commit_batch`] (or the statement that starts the
    /// next run) writes it once, with its last statement, before the batch commits. A
    /// thousand-document insert thus encodes and writes the record once, not a thousand times.
    unwritten: bool,
}

impl LastRecord {
    /// Puts the extended run's record into `txn` (the run's own transaction), if it was
    /// extended since it was last written there.
    fn put_extended(&self, txn: &mut dyn Txn) -> Result<()> {
        if !self.unwritten || self.txn != txn.id() {
            return Ok(());
        }
        let value = stmt_record(&self.outcome, self.first, self.last)?;
        txn.put(&self.key, &value)?.or_conflict("statement record")?;
        Ok(())
    }
}

/// What a retryable statement did to the statement records: extended the run of the record
/// written last (only noted once the statement succeeds, so that a statement rolled back to its
/// savepoint leaves the run as it was), or wrote a record of its own.
enum Recorded {
    Extended,
    New(LastRecord),
}

impl<'a> Runner<'a> {
    /// A runner for a command; checks out the session when the command has an lsid. With
    /// `would_block`, the command must not wait (see "Durability"): the flag is raised, and an
    /// error returned, where it would.
    pub fn new(
        svc: &'a Service,
        op: &'a OpContext<'a>,
        would_block: Option<&'a std::cell::Cell<bool>>,
    ) -> Result<Self> {
        let session = match &op.lsid {
            Some(lsid) => {
                let s = svc.sessions.get_or_create(lsid)?;
                let mut guard = match would_block {
                    None => parking_lot::Mutex::lock_arc(&s),
                    Some(flag) => match parking_lot::Mutex::try_lock_arc(&s) {
                        Some(guard) => guard,
                        None => return Err(raise(flag, "the session is in use")),
                    },
                };
                guard.last_use = Instant::now();
                // Only a command with a transaction number uses the session's transaction state:
                // resume it from the durable record (what the session did before a restart, or
                // on another front end of a shared store). A command with only an lsid (a
                // driver's implicit session) costs no read.
                if op.txn_number.is_some() {
                    guard.load_durable(svc.store.as_ref())?;
                }
                Some(guard)
            }
            None => None,
        };
        Ok(Runner {
            svc,
            op,
            session,
            close_connection: false,
            at_cluster_time: None,
            raw_batch: std::cell::Cell::new(None),
            unsynced: std::cell::Cell::new(None),
            would_block,
            batching: std::cell::Cell::new(false),
            batch: std::cell::RefCell::new(None),
            last_record: std::cell::RefCell::new(None),
        })
    }

    /// From now on, statements outside a transaction share one storage transaction, committed
    /// by [`Runner::sync_deferred`] (see "Batches"). For a command of many statements; a command
    /// that must not block never batches.
    pub fn batch_statements(&mut self) {
        if self.would_block.is_none() && !matches!(self.op.mode(), Mode::Transaction(_)) {
            self.batching.set(true);
        }
    }

    /// Commits the open batch (with deferred durability, owed like any commit).
    fn commit_batch(&self) -> Result<()> {
        let open = self.batch.borrow_mut().take();
        if let Some(mut txn) = open {
            if let Some(record) = self.last_record.borrow_mut().as_mut() {
                record.put_extended(txn.as_mut())?;
                record.unwritten = false;
            }
            let ts = txn.commit_deferred()?;
            self.owe_durability(ts);
        }
        Ok(())
    }

    /// Runs a statement in the open batch (opening one if needed), after a savepoint. `None`:
    /// the statement met a write conflict and was rolled back, the batch so far is committed,
    /// and the statement must run on its own; or the store cannot batch.
    fn batched_write(
        &self,
        f: &mut impl FnMut(&mut dyn Txn) -> Result<Document>,
    ) -> Result<Option<Document>> {
        let mut slot = self.batch.borrow_mut();
        let txn = match &mut *slot {
            Some(txn) => txn,
            open => open.insert(self.svc.store.begin()?),
        };
        if !txn.set_savepoint() {
            self.batching.set(false);
            if let Some(txn) = slot.take() {
                txn.abort();
            }
            return Ok(None);
        }
        match f(txn.as_mut()) {
            Ok(out) => Ok(Some(out)),
            Err(e) => {
                txn.rollback_to_savepoint();
                if !e.is_write_conflict() {
                    return Err(e);
                }
                drop(slot);
                self.commit_batch()?;
                Ok(None)
            }
        }
    }

    /// Notes a commit of this command whose durability is owed before the reply.
    pub fn owe_durability(&self, ts: Ts) {
        self.unsynced.set(Some(self.unsynced.get().map_or(ts, |t| t.max(ts))));
    }

    /// Makes the command's commits so far durable (one sync), if any is owed; a command on an
    /// event loop leaves that to [`Runner::take_unsynced`]'s caller. A batch of statements
    /// (`insert` of many documents, `update` and `delete` with many statements, `bulkWrite`)
    /// thus costs one sync, while each statement still succeeds or fails on its own.
    pub fn sync_deferred(&mut self) -> Result<()> {
        self.commit_batch()?;
        if self.would_block.is_none()
            && let Some(ts) = self.unsynced.take()
        {
            self.svc.store.sync_until(ts)?;
        }
        Ok(())
    }

    /// Sets the stored documents of the reply's cursor batch (see [`super::RawBatch`]).
    pub fn set_raw_batch(&self, batch: super::RawBatch) {
        self.raw_batch.set(Some(batch));
    }

    /// The stored documents of the reply's cursor batch, taken away.
    pub fn take_raw_batch(&mut self) -> Option<super::RawBatch> {
        self.raw_batch.take()
    }

    /// The newest commit whose durability the reply still owes, taken away.
    pub fn take_unsynced(&mut self) -> Option<Ts> {
        self.unsynced.take()
    }

    /// Raises the would-block flag if the command must not wait and nothing was committed yet;
    /// returns the error to stop with then. `None`: wait.
    fn must_not_wait(&self, why: &str) -> Option<crate::Error> {
        match self.would_block {
            Some(flag) if self.unsynced.get().is_none() => Some(raise(flag, why)),
            _ => None,
        }
    }

    /// The checked-out session.
    pub fn session(&mut self) -> Option<&mut Session> {
        self.session.as_deref_mut()
    }

    /// The session key (`session::lsid_key`), if any.
    pub fn session_key(&self) -> Option<Vec<u8>> {
        self.session.as_ref().map(|s| s.key.clone())
    }

    /// The command's session and user: the owner of the cursors it opens, and who asks when it
    /// continues or kills one.
    pub fn owner(&self) -> crate::cursor::Owner {
        crate::cursor::Owner { session: self.session_key(), user: self.op.user.clone() }
    }

    /// Prepares the session for the command: starts or continues a transaction, or registers a
    /// retryable write. Called once before the handler runs.
    pub fn begin(&mut self, allowed_in_txn: bool) -> Result<()> {
        let svc = self.svc;
        match self.op.mode() {
            Mode::Autocommit => Ok(()),
            Mode::Retryable(n) => match self.session.as_deref_mut() {
                Some(s) => s.begin_retryable(n),
                None => bail!(InvalidOptions, "Transaction number requires a session ID"),
            },
            Mode::Transaction(n) => {
                let Some(s) = self.session.as_deref_mut() else {
                    bail!(InvalidOptions, "Transaction number requires a session ID");
                };
                let is_end =
                    matches!(self.op.name.as_str(), "commitTransaction" | "abortTransaction");
                if self.op.start_transaction {
                    if is_end {
                        bail!(
                            OperationNotSupportedInTransaction,
                            "Cannot start a transaction with {}",
                            self.op.name
                        );
                    }
                    if !allowed_in_txn {
                        return Err(not_in_transaction(&self.op.name, &self.op.db));
                    }
                    validate_txn_read_concern(self.op.read_concern)?;
                    s.start_transaction(svc.store.as_ref(), n, self.op.read_concern.cloned())?;
                    s.txn_api = Some(self.op.api.describe());
                    Ok(())
                } else if is_end {
                    check_txn_api(s, n, self.op)
                } else {
                    if self.op.read_concern.is_some() {
                        // Check the number first so stale statements get the right error.
                        s.continue_transaction(n)?;
                        bail!(
                            InvalidOptions,
                            "Only the first command in a transaction may specify a readConcern"
                        );
                    }
                    s.continue_transaction(n)?;
                    if !allowed_in_txn {
                        return Err(not_in_transaction(&self.op.name, &self.op.db));
                    }
                    check_txn_api(s, n, self.op)
                }
            }
        }
    }

    /// Aborts the session's transaction after a failed statement (any error inside a transaction
    /// aborts it, as in MongoDB).
    pub fn abort_on_error(&mut self) {
        if let Mode::Transaction(n) = self.op.mode()
            && let Some(s) = self.session.as_deref_mut()
        {
            // Only the transaction the statement belonged to; a stale statement must not
            // abort a newer transaction.
            if s.txn_number == Some(n) {
                s.abort_open(None);
            }
        }
    }

    /// Runs a read: in the session's transaction, at a snapshot (`readConcern: snapshot`), or in
    /// a fresh read-only transaction.
    pub fn read<T>(&mut self, f: impl FnOnce(&dyn Txn) -> Result<T>) -> Result<T> {
        self.op.check_deadline()?;
        // A read sees the command's own statements.
        self.commit_batch()?;
        if let Mode::Transaction(n) = self.op.mode() {
            let s = self.session.as_deref_mut().ok_or_else(|| err!(InternalError, "no session"))?;
            let txn = s.continue_transaction(n)?;
            return f(txn.as_ref());
        }
        let txn = if self.op.read_concern_level() == Some("snapshot") {
            match self.op.read_concern.as_ref().and_then(|rc| rc.get("atClusterTime")) {
                Some(Bson::Timestamp(t)) => {
                    let at = Ts::from_bson(*t);
                    self.at_cluster_time = Some(at);
                    self.svc.store.begin_read_only_at(at)?
                }
                Some(_) => bail!(TypeMismatch, "atClusterTime must be a timestamp"),
                // The latest snapshot, whose time is answered as atClusterTime. (A shared store
                // cannot tell its latest commit without beginning a snapshot.)
                None => {
                    let txn = self.svc.store.begin()?;
                    self.at_cluster_time = Some(txn.snapshot());
                    txn
                }
            }
        } else if self.op.read_concern_level() == Some("majority")
            && let majority = self.svc.store.majority_committed()
            && majority < self.svc.store.last_committed()
        {
            // As of the majority commit point: never a commit that a crash could take back
            // (commits are visible before they are durable; see `crate::mvcc`).
            self.svc.store.begin_read_only_at(majority)?
        } else {
            self.svc.store.begin()?
        };
        let out = f(txn.as_ref());
        txn.abort();
        out
    }

    /// Runs one write statement and returns its outcome document. `stmt_id` identifies the
    /// statement for retryable writes.
    pub fn write(
        &mut self,
        stmt_id: i32,
        mut f: impl FnMut(&mut dyn Txn) -> Result<Document>,
    ) -> Result<Document> {
        self.op.check_deadline()?;
        match self.op.mode() {
            Mode::Transaction(n) => {
                let s =
                    self.session.as_deref_mut().ok_or_else(|| err!(InternalError, "no session"))?;
                let txn = s.continue_transaction(n)?;
                f(txn.as_mut())
            }
            Mode::Retryable(n) => {
                let Some(session) = self.session.as_deref() else {
                    bail!(InvalidOptions, "Transaction number requires a session ID");
                };
                // A statement that already ran replays its recorded outcome. Records of `n` can
                // exist only once the session's durable record names `n`, and then only for the
                // statements this process recorded (when it knows them), so a new number or a
                // new statement (the common cases) costs no lookup. Over a shared store the
                // lookup is made inside the write's own transaction instead (below).
                let remote = self.svc.store.remote();
                if !remote && session.may_have_stmt_record(n, stmt_id) {
                    let txn = self.svc.store.begin()?;
                    let prior = stmt_outcome(txn.as_ref(), &session.key, n, stmt_id);
                    let seen = txn.snapshot();
                    txn.abort();
                    if let Some(outcome) = prior? {
                        // The first run may still be waiting for its sync (its connection gone):
                        // the replay is acknowledged only once what it read is durable.
                        self.owe_durability(seen);
                        return Ok(outcome);
                    }
                }
                // The fail point counts statements that run, not replays: taken at the first
                // attempt that runs the statement.
                let mut fp = None;
                let failpoints = &self.svc.failpoints;
                let mut attempt = 0_u32;
                let last_record = &self.last_record;
                let batching = &self.batching;
                let mut wrote: Option<Recorded> = None;
                let mut inlined = false;
                let result = self.autocommit_write(|txn| {
                    // An attempt after a write conflict looks for the record again, in its own
                    // snapshot: the conflict may have been with this very statement, run by a
                    // front end of a shared store that died while committing it (the driver
                    // retried here at once). Replaying its outcome, not running it again, keeps
                    // the write exactly once. Over a shared store the first attempt looks too:
                    // that commit may have landed since the session record was read.
                    attempt += 1;
                    wrote = None;
                    inlined = false;
                    if (attempt > 1 || remote)
                        && let Some(outcome) = stmt_outcome(txn, &session.key, n, stmt_id)?
                    {
                        return Ok(outcome);
                    }
                    let fp = fp.get_or_insert_with(|| failpoints.on_transactional_write());
                    let out = f(txn)?;
                    if !batching.get() && session.writes_record_for(n) {
                        // A command of one statement: its outcome goes into the session record,
                        // which the new number writes anyway.
                        session.write_durable_with_outcome(txn, n, stmt_id, &out)?;
                        inlined = true;
                    } else {
                        let last = last_record.borrow();
                        let last = if remote { None } else { last.as_ref() };
                        wrote = Some(record_statement(txn, &session.key, n, stmt_id, &out, last)?);
                        session.write_durable(txn, n, RecordKind::Retryable)?;
                    }
                    if let Some(code) = fp.as_ref().and_then(|fp| fp.fail_before_commit) {
                        return Err(crate::Error::new(
                            crate::Code::from_number(code),
                            "Failing command via 'onPrimaryTransactionalWrite' failpoint",
                        ));
                    }
                    Ok(out)
                });
                if result.is_ok()
                    && let Some(session) = self.session.as_deref_mut()
                {
                    if inlined {
                        session.recorded_inline_stmt(n, stmt_id);
                    } else {
                        // A replay inside the write (`wrote` is `None`) found the record there.
                        let extended = matches!(wrote, Some(Recorded::Extended));
                        session.recorded_stmt(n, stmt_id, extended);
                    }
                    let mut last = self.last_record.borrow_mut();
                    match wrote {
                        Some(Recorded::Extended) => {
                            if let Some(run) = last.as_mut() {
                                run.last = stmt_id;
                                run.unwritten = true;
                            }
                        }
                        Some(Recorded::New(record)) => *last = Some(record),
                        None => *last = None,
                    }
                }
                // The fail point closes the connection whether or not the write committed
                // (MongoDB's default), so the client sees a network error and retries.
                if fp.flatten().is_some_and(|fp| fp.close_connection) {
                    self.close_connection = true;
                }
                result
            }
            Mode::Autocommit => self.autocommit_write(f),
        }
    }

    /// Runs `f` in its own transaction and commits, waiting out and retrying write conflicts.
    fn autocommit_write(
        &self,
        mut f: impl FnMut(&mut dyn Txn) -> Result<Document>,
    ) -> Result<Document> {
        if let Some(flag) = self.would_block
            && flag.get()
        {
            return Err(raise(flag, "an earlier statement would have waited"));
        }
        if self.batching.get()
            && let Some(out) = self.batched_write(&mut f)?
        {
            return Ok(out);
        }
        let deadline = self.op.deadline.unwrap_or_else(|| Instant::now() + DEFAULT_CONFLICT_WAIT);
        let mut backoff = Duration::from_micros(50);
        let mut quick_retries = 0;
        loop {
            let mut txn = self.svc.store.begin()?;
            match f(txn.as_mut()) {
                Ok(out) => {
                    // Visible at once; durable before the reply (see "Durability").
                    let ts = txn.commit_deferred()?;
                    self.owe_durability(ts);
                    return Ok(out);
                }
                Err(e) if e.is_write_conflict() => {
                    // The transaction keeps the conflict that stopped it: whom to wait for.
                    let holder = txn.last_conflict().and_then(|c| c.holder);
                    txn.abort();
                    self.op.check_deadline()?;
                    if Instant::now() >= deadline {
                        bail!(
                            MaxTimeMSExpired,
                            "operation exceeded time limit while waiting for a conflicting transaction"
                        );
                    }
                    match holder {
                        Some(_) if let Some(e) = self.must_not_wait("a write conflict") => {
                            return Err(e);
                        }
                        Some(holder) => {
                            // Wait in slices so that killOp and maxTimeMS are noticed.
                            let slice = (Instant::now() + Duration::from_millis(100)).min(deadline);
                            self.svc.store.wait_for(holder, Some(slice));
                        }
                        None => {
                            // The key was committed after this attempt's snapshot and is free
                            // now: a new snapshot includes that commit, so retry at once. Back
                            // off only when others keep winning the race for the key.
                            quick_retries += 1;
                            if quick_retries > 2 {
                                if let Some(e) = self.must_not_wait("repeated write conflicts") {
                                    return Err(e);
                                }
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_millis(2));
                            }
                        }
                    }
                }
                Err(e) => {
                    txn.abort();
                    return Err(e);
                }
            }
        }
    }
}

/// Writes the statement record of statement `stmt_id` of retryable write `number`, whose
/// outcome is `out`: extending `last` (the record this command wrote last, `None` over a shared
/// store, which keeps a record per statement) when it was written in this same transaction for
/// the statement just before, with the same outcome (the documents of an insert); else a record
/// of its own.
fn record_statement(
    txn: &mut dyn Txn,
    session: &[u8],
    number: i64,
    stmt_id: i32,
    out: &Document,
    last: Option<&LastRecord>,
) -> Result<Recorded> {
    if let Some(r) = last {
        if r.txn == txn.id()
            && r.number == number
            && r.last.checked_add(1) == Some(stmt_id)
            && r.outcome == *out
        {
            // Written once the run ends (see `LastRecord::unwritten`).
            return Ok(Recorded::Extended);
        }
        // A new run: the one before is complete, and written with this statement (a rollback
        // of this statement leaves it unwritten, as the runner still holds it).
        r.put_extended(txn)?;
    }
    let key = Key::StmtRecord { session, txn_number: number, stmt_id }.encode();
    txn.put(&key, &out.to_vec()?)?.or_conflict("statement record")?;
    Ok(Recorded::New(LastRecord {
        txn: txn.id(),
        number,
        first: stmt_id,
        last: stmt_id,
        outcome: out.clone(),
        key,
        unwritten: false,
    }))
}

/// Raises the would-block flag; the error only unwinds the command, which runs again elsewhere.
fn raise(flag: &std::cell::Cell<bool>, why: &str) -> crate::Error {
    flag.set(true);
    err!(InternalError, "the command would block on an event loop ({}); it runs again", why)
}

/// OperationNotSupportedInTransaction for a command.
pub fn not_in_transaction(name: &str, db: &str) -> crate::Error {
    err!(
        OperationNotSupportedInTransaction,
        "Cannot run '{}' in a multi-document transaction.{}",
        name,
        if matches!(db, "admin" | "config" | "local") {
            format!(" Cannot run command against the '{db}' database in a transaction.")
        } else {
            String::new()
        }
    )
}

fn validate_txn_read_concern(rc: Option<&Document>) -> Result<()> {
    let Some(rc) = rc else { return Ok(()) };
    match rc.get("level") {
        None => Ok(()),
        Some(Bson::String(l)) if matches!(l.as_str(), "local" | "majority" | "snapshot") => Ok(()),
        Some(Bson::String(l)) => bail!(
            InvalidOptions,
            "The readConcern level must be either 'local' (default), 'majority' or 'snapshot' in \
             order to run in a transaction, got {}",
            l
        ),
        Some(_) => bail!(TypeMismatch, "readConcern.level must be a string"),
    }
}
