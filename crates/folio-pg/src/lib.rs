//! Folio's transaction store over PostgreSQL (and, through the same SQL subset, CockroachDB or
//! YugabyteDB): stateless front ends over one shared, replicated storage engine.
//!
//! Everything above Folio's `mvcc` layer reaches storage only through the
//! [`TxnStore`]/[`Txn`] traits: the catalog, the documents, the index entries, the session
//! records and the retryable-write statement records are all keys of one ordered byte key space.
//! This crate implements those two traits over one SQL table, so the whole database — DDL,
//! unique indexes, transactions, exactly-once retries — is shared by every front end that opens
//! the same database. Nothing of the data lives in a front end; cursors and open transactions do
//! (they belong to a connection, which the load balancer pins; see docs/design/scale-out.md).
//!
//! # The mapping
//!
//! * **The key space** is the table `folio_kv (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)`. `BYTEA`
//!   compares byte-wise, so a range scan of Folio's keys is an index range scan of the primary
//!   key, in the same order.
//! * **A Folio transaction** is one SQL transaction at `REPEATABLE READ`, which PostgreSQL
//!   implements as snapshot isolation (CockroachDB and YugabyteDB give at least that). The
//!   snapshot is taken by the first statement, which [`PgStore::begin`] sends together with
//!   `BEGIN` in one round trip.
//! * **First writer wins, at once.** Every transaction sets `lock_timeout` to 1 ms, so a write
//!   to a row another open transaction has written fails (`55P03 lock_not_available`) instead of
//!   waiting; a write to a row committed by another transaction after this snapshot fails with
//!   `40001 serialization_failure` (the engine's own first-updater-wins rule), and an insert of a
//!   key another transaction inserted and committed after the snapshot fails with `23505
//!   unique_violation`. All of these, and `40P01 deadlock_detected`, are reported as a
//!   [`Conflict`], which the layers above turn into WriteConflict (112) with
//!   TransientTransactionError, or retry for a single statement. The SQL transaction is then
//!   aborted, so the Folio transaction is *poisoned*: every later call fails with WriteConflict
//!   (the callers abort it anyway).
//! * **Durability**: a commit returns once PostgreSQL reports `COMMIT`, which with
//!   `synchronous_commit = on` (the default, never changed here) means flushed (and replicated
//!   synchronously when the operator configured that). [`TxnStore::sync`] and `flush` have
//!   nothing to do.
//! * **Cluster time** comes from the database, so it is one clock for all front ends: a
//!   timestamp is `(seconds of the engine's clock_timestamp(), increment)`, where the increment
//!   is the low 32 bits of the sequence `folio_ts`. A commit takes `nextval` inside its
//!   transaction just before `COMMIT`; a snapshot reads the sequence's `last_value` in the
//!   statement that takes the snapshot. So a commit acknowledged before another transaction
//!   begins has a smaller timestamp than that transaction's snapshot and every later commit,
//!   on any front end (`afterClusterTime` holds across front ends).
//! * **Historical snapshots** (`atClusterTime`) are served only when no commit has taken a
//!   timestamp since the requested one (the latest snapshot is then the requested one);
//!   otherwise the answer is SnapshotTooOld (239): the SQL engine keeps no history we can
//!   address by timestamp.
//!
//! The SQL used is listed in docs/design/scale-out.md; it is the subset CockroachDB and
//! YugabyteDB also accept.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use folio::owned_bound;
use folio::{Code, Error, Result};
use folio::{Conflict, ScanIter, Ts, Txn, TxnId, TxnStats, TxnStore, WriteResult};
use postgres::error::SqlState;
use postgres::types::Type;
use postgres::{NoTls, SimpleQueryMessage};
use r2d2_postgres::PostgresConnectionManager;

pub mod testing;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// The statements that create the schema (idempotent; run by every front end at start).
const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS folio_kv (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS folio_ts",
];

/// Starts a transaction and takes its snapshot, answering the cluster time of the snapshot.
const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ; \
     SET LOCAL lock_timeout = '1ms'; \
     SELECT ((floor(extract(epoch FROM clock_timestamp())))::INT8 << 32) \
        | (last_value % 4294967295 + 1) FROM folio_ts";

/// Takes the commit timestamp and commits.
const COMMIT: &str = "SELECT ((floor(extract(epoch FROM clock_timestamp())))::INT8 << 32) \
        | (nextval('folio_ts') % 4294967295 + 1); \
     COMMIT";

/// Writes a key: updates the row this snapshot sees, or inserts it when it sees none.
const PUT: &str = "WITH u AS (UPDATE folio_kv SET v = $2 WHERE k = $1 RETURNING 1) \
     INSERT INTO folio_kv (k, v) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM u)";

const DELETE: &str = "DELETE FROM folio_kv WHERE k = $1";

const GET: &str = "SELECT v FROM folio_kv WHERE k = $1";

/// [`TxnStore::get_settled`], in a `READ COMMITTED` transaction that is rolled back: the insert
/// waits for a transaction inserting the key (a uniqueness check waits for the inserter to
/// finish) and, when it inserts, tells that the key has no committed value; the locking read
/// waits for a transaction updating or deleting the row, then reads its latest committed version.
const SETTLE_INSERT: &str =
    "INSERT INTO folio_kv (k, v) VALUES ($1, ''::BYTEA) ON CONFLICT (k) DO NOTHING";
const SETTLE_READ: &str = "SELECT v FROM folio_kv WHERE k = $1 FOR SHARE";

/// How long [`TxnStore::get_settled`] waits for a transaction in flight. A front end that died
/// mid-commit leaves it to its database session, which finishes within the commit's own time.
const SETTLE_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// Rows fetched by the first page of a scan; later pages double up to [`SCAN_PAGE_MAX`], so a
/// `find` with a small limit reads little and a collection scan few round trips.
const SCAN_PAGE_MIN: i64 = 16;
const SCAN_PAGE_MAX: i64 = 2048;

/// Options of [`PgStore::connect`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections kept in the pool (each open Folio transaction holds one).
    pub pool_size: u32,
    /// How long `begin` waits for a free connection before failing.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 32, connect_timeout: Duration::from_secs(10) }
    }
}

/// A [`TxnStore`] over a PostgreSQL-compatible database. See the module documentation.
pub struct PgStore {
    shared: Arc<Shared>,
}

/// The pool and the counters, shared by the store and its open transactions.
struct Shared {
    /// The connections; `None` only while the store is dropped (see `Drop for Shared`).
    pool: Option<Pool>,
    next_id: AtomicU64,
    /// The highest cluster time this front end has seen (snapshots and commits).
    last_seen: AtomicU64,
    started: AtomicU64,
    active: AtomicU64,
    commits: AtomicU64,
    aborts: AtomicU64,
    conflicts: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("stats", &self.stats()).finish()
    }
}

impl PgStore {
    /// Connects to `url` (`postgresql://user@host:port/db` or a libpq key-value string),
    /// creates the schema if it is missing and returns the store.
    pub fn connect(url: &str, options: PgOptions) -> Result<PgStore> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| Error::new(Code::BadValue, format!("invalid storage URL: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            // A broken connection is noticed by `is_closed` when it is returned; testing each
            // checkout would cost a round trip per transaction.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| {
                Error::new(
                    Code::HostUnreachable,
                    format!("cannot connect to the storage database: {e}"),
                )
            })?;
        let store = PgStore {
            shared: Arc::new(Shared {
                pool: Some(pool),
                next_id: AtomicU64::new(1),
                last_seen: AtomicU64::new(0),
                started: AtomicU64::new(0),
                active: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                aborts: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
            }),
        };
        store.create_schema()?;
        // Start from the database's current cluster time, not zero.
        store.begin_txn(true)?.finish(false)?;
        Ok(store)
    }

    /// Creates the table and the sequence. Front ends starting together may race on the
    /// catalog (`CREATE ... IF NOT EXISTS` is not atomic in PostgreSQL): a unique violation on
    /// the system catalog means another one won, so the statement is retried.
    fn create_schema(&self) -> Result<()> {
        let mut conn = self.shared.connection()?;
        for sql in SCHEMA {
            let mut attempts = 0;
            loop {
                match conn.batch_execute(sql) {
                    Ok(()) => break,
                    Err(e) if attempts < 5 && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(sql_error(e, "creating the schema")),
                }
            }
        }
        Ok(())
    }

    /// Begins a SQL transaction and returns it with its snapshot's cluster time.
    fn begin_txn(&self, read_only: bool) -> Result<PgTxn> {
        let shared = &self.shared;
        let mut conn = shared.connection()?;
        let messages = conn.simple_query(BEGIN).map_err(|e| sql_error(e, "beginning"))?;
        let snapshot = Ts(first_i64(&messages)? as u64);
        shared.saw(snapshot);
        shared.started.fetch_add(1, Ordering::Relaxed);
        shared.active.fetch_add(1, Ordering::Relaxed);
        Ok(PgTxn {
            shared: shared.clone(),
            conn: RefCell::new(Some(conn)),
            id: TxnId(shared.next_id.fetch_add(1, Ordering::Relaxed)),
            snapshot,
            read_only,
            has_writes: false,
            poisoned: Cell::new(false),
            last_conflict: None,
        })
    }
}

impl Shared {
    fn connection(&self) -> Result<Conn> {
        let Some(pool) = &self.pool else {
            return Err(Error::new(Code::HostUnreachable, "the storage database's pool is closed"));
        };
        pool.get().map_err(|e| {
            Error::new(Code::HostUnreachable, format!("no connection to the storage database: {e}"))
        })
    }

    fn saw(&self, ts: Ts) {
        self.last_seen.fetch_max(ts.0, Ordering::SeqCst);
    }
}

impl TxnStore for PgStore {
    fn begin(&self) -> Result<Box<dyn Txn>> {
        Ok(Box::new(self.begin_txn(false)?))
    }

    fn begin_read_only_at(&self, ts: Ts) -> Result<Box<dyn Txn>> {
        let mut txn = self.begin_txn(true)?;
        let now = txn.snapshot;
        if ts > now {
            let _ = txn.finish(false);
            return Err(Error::new(
                Code::InvalidOptions,
                format!(
                    "readConcern atClusterTime value must not be greater than the current \
                     clusterTime. Requested clusterTime: {}; current clusterTime: {}",
                    show_ts(ts),
                    show_ts(now)
                ),
            ));
        }
        // The increment is the commit sequence: when it has not moved, no commit took a
        // timestamp since `ts`, and the latest snapshot is the snapshot at `ts`.
        if ts.inc() != now.inc() {
            let _ = txn.finish(false);
            return Err(Error::new(
                Code::SnapshotTooOld,
                format!(
                    "Read timestamp {} is older than the oldest available timestamp: the \
                     PostgreSQL storage serves only the latest snapshot.",
                    show_ts(ts)
                ),
            ));
        }
        txn.snapshot = ts;
        Ok(Box::new(txn))
    }

    fn last_committed(&self) -> Ts {
        Ts(self.shared.last_seen.load(Ordering::SeqCst))
    }

    fn wait_for(&self, _txn: TxnId, deadline: Option<Instant>) -> bool {
        // The holder is another SQL transaction, possibly on another front end: there is
        // nothing to wait on here. Back off briefly and let the caller retry.
        let until = Instant::now() + Duration::from_millis(1);
        let until = deadline.map_or(until, |d| d.min(until));
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        true
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn remote(&self) -> bool {
        true
    }

    fn get_settled(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut conn = self.shared.connection()?;
        let read = |conn: &mut Conn| -> std::result::Result<Option<Vec<u8>>, postgres::Error> {
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::ReadCommitted)
                .start()?;
            tx.batch_execute(SETTLE_TIMEOUT)?;
            let value = if tx.execute(SETTLE_INSERT, &[&key])? == 1 {
                None
            } else {
                tx.query_opt(SETTLE_READ, &[&key])?.map(|row| row.get::<_, Vec<u8>>(0))
            };
            tx.rollback()?;
            Ok(value)
        };
        read(&mut conn).map_err(|e| match e.code() {
            // Still undecided after the wait: the outcome is unknown, which the client learns as
            // a retryable error (never as a transient one, which would run the work again).
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => Error::new(
                Code::ExceededTimeLimit,
                "a commit of this session's transaction is still in flight in the storage database",
            ),
            _ => sql_error(e, "reading a session record"),
        })
    }

    fn stats(&self) -> TxnStats {
        let s = &self.shared;
        TxnStats {
            started: s.started.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            aborts: s.aborts.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            commit_batches: s.commits.load(Ordering::Relaxed),
            syncs: s.commits.load(Ordering::Relaxed),
            gc_deleted: 0,
            cache_hits: 0,
            cache_misses: 0,
            last_committed: self.last_committed(),
            gc_watermark: Ts::ZERO,
        }
    }
}

/// One Folio transaction: one SQL transaction on one pooled connection.
struct PgTxn {
    shared: Arc<Shared>,
    /// The connection, in a transaction; `None` once finished. A cell because reads take
    /// `&self` and the client needs `&mut`.
    conn: RefCell<Option<Conn>>,
    id: TxnId,
    snapshot: Ts,
    read_only: bool,
    has_writes: bool,
    /// Set when a statement failed: the SQL transaction is aborted and only a rollback is left.
    poisoned: Cell<bool>,
    /// The most recent write that lost ([`Txn::last_conflict`]).
    last_conflict: Option<Conflict>,
}

impl PgTxn {
    /// Runs `f` on the connection, refusing when the transaction can no longer do anything.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        if self.poisoned.get() {
            return Err(poisoned());
        }
        let mut slot = self.conn.borrow_mut();
        let conn = slot
            .as_mut()
            .ok_or_else(|| Error::new(Code::InternalError, "the transaction has finished"))?;
        let out = f(conn);
        if out.is_err() {
            self.poisoned.set(true);
        }
        out
    }

    /// Writes (`Some(value)`) or deletes (`None`) a key, turning the engine's conflict errors
    /// into a [`Conflict`].
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<WriteResult> {
        if self.read_only {
            return Err(Error::new(
                Code::IllegalOperation,
                "cannot write in a read-only snapshot transaction",
            ));
        }
        // The statement's own error is judged here, so `with_conn` sees it as a success.
        let outcome = self.with_conn(|conn| {
            Ok(match value {
                Some(v) => conn.query_typed(PUT, &[(&key, Type::BYTEA), (&v, Type::BYTEA)]),
                None => conn.query_typed(DELETE, &[(&key, Type::BYTEA)]),
            })
        })?;
        match outcome {
            Ok(_) => {
                self.has_writes = true;
                Ok(Ok(()))
            }
            Err(e) => {
                self.poisoned.set(true);
                let code = e.code().cloned();
                let holder = match code {
                    Some(SqlState::LOCK_NOT_AVAILABLE) => Some(TxnId(0)),
                    Some(SqlState::T_R_SERIALIZATION_FAILURE)
                    | Some(SqlState::T_R_DEADLOCK_DETECTED)
                    | Some(SqlState::UNIQUE_VIOLATION) => None,
                    _ => return Err(sql_error(e, "writing")),
                };
                self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                let conflict = Conflict { key: key.to_vec(), holder };
                self.last_conflict = Some(conflict.clone());
                Ok(Err(conflict))
            }
        }
    }

    /// Ends the SQL transaction: commits (answering the commit timestamp) or rolls back, and
    /// returns the connection to the pool.
    fn finish(&mut self, commit: bool) -> Result<Ts> {
        let Some(mut conn) = self.conn.get_mut().take() else {
            return Ok(self.snapshot);
        };
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        if !commit || self.poisoned.get() {
            self.shared.aborts.fetch_add(1, Ordering::Relaxed);
            // A failed rollback means a broken connection, which the pool discards.
            let _ = conn.simple_query("ROLLBACK");
            return Ok(self.snapshot);
        }
        if !self.has_writes {
            // Nothing to make durable; ending the snapshot is all.
            let _ = conn.simple_query("ROLLBACK");
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
            return Ok(self.snapshot);
        }
        match conn.simple_query(COMMIT) {
            Ok(messages) => {
                let ts = Ts(first_i64(&messages)? as u64);
                self.shared.saw(ts);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                Ok(ts)
            }
            Err(e) => {
                self.shared.aborts.fetch_add(1, Ordering::Relaxed);
                let _ = conn.simple_query("ROLLBACK");
                Err(sql_error(e, "committing"))
            }
        }
    }
}

impl Txn for PgTxn {
    fn id(&self) -> TxnId {
        self.id
    }

    fn snapshot(&self) -> Ts {
        self.snapshot
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_conn(|conn| {
            let rows = conn
                .query_typed(GET, &[(&key, Type::BYTEA)])
                .map_err(|e| sql_error(e, "reading"))?;
            Ok(rows.first().map(|row| row.get::<_, Vec<u8>>(0)))
        })
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<ScanIter<'_>> {
        Ok(Box::new(Scan {
            txn: self,
            start: owned_bound(start),
            end: owned_bound(end),
            reverse,
            page: VecDeque::new(),
            page_size: SCAN_PAGE_MIN,
            done: false,
        }))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteResult> {
        self.write(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<WriteResult> {
        self.write(key, None)
    }

    fn last_conflict(&self) -> Option<Conflict> {
        self.last_conflict.clone()
    }

    fn has_writes(&self) -> bool {
        self.has_writes
    }

    fn commit(mut self: Box<Self>) -> Result<Ts> {
        if self.poisoned.get() {
            self.finish(false)?;
            return Err(poisoned());
        }
        self.finish(true)
    }

    fn abort(mut self: Box<Self>) {
        let _ = self.finish(false);
    }
}

/// The synchronous client closes each connection by blocking on its own runtime, which panics
/// on a thread that drives an async runtime: where a server shutting down drops its store. So
/// the pool's connections are closed on a thread of their own.
impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closed = std::thread::Builder::new()
                .name("folio-pg-close".into())
                .spawn(move || drop(pool))
                .map(std::thread::JoinHandle::join);
            if !matches!(closed, Ok(Ok(()))) {
                tracing::warn!("closing the storage database's connections failed");
            }
        }
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        // A transaction dropped without commit or abort rolls back, so that its connection goes
        // back to the pool outside any transaction.
        let _ = self.finish(false);
    }
}

/// A range scan, fetched a page at a time by keyset pagination: each page continues after the
/// last key of the previous one, in the same snapshot, so the pages join into one consistent
/// scan without holding a server-side cursor.
struct Scan<'a> {
    txn: &'a PgTxn,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
    page: VecDeque<(Vec<u8>, Vec<u8>)>,
    page_size: i64,
    done: bool,
}

impl Scan<'_> {
    fn fetch(&mut self) -> Result<()> {
        let mut sql = String::from("SELECT k, v FROM folio_kv WHERE TRUE");
        let mut params: Vec<Vec<u8>> = Vec::new();
        for (bound, lower) in [(&self.start, true), (&self.end, false)] {
            let op = match (bound, lower) {
                (Bound::Included(_), true) => ">=",
                (Bound::Excluded(_), true) => ">",
                (Bound::Included(_), false) => "<=",
                (Bound::Excluded(_), false) => "<",
                (Bound::Unbounded, _) => continue,
            };
            if let Bound::Included(k) | Bound::Excluded(k) = bound {
                params.push(k.clone());
                sql.push_str(&format!(" AND k {op} ${}", params.len()));
            }
        }
        sql.push_str(if self.reverse { " ORDER BY k DESC" } else { " ORDER BY k" });
        sql.push_str(&format!(" LIMIT {}", self.page_size));
        let typed: Vec<(&(dyn postgres::types::ToSql + Sync), Type)> = params
            .iter()
            .map(|p| (p as &(dyn postgres::types::ToSql + Sync), Type::BYTEA))
            .collect();
        let rows = self.txn.with_conn(|conn| {
            conn.query_typed(&sql, &typed).map_err(|e| sql_error(e, "scanning"))
        })?;
        if (rows.len() as i64) < self.page_size {
            self.done = true;
        }
        self.page_size = (self.page_size * 2).min(SCAN_PAGE_MAX);
        for row in rows {
            self.page.push_back((row.get(0), row.get(1)));
        }
        if let Some((last, _)) = self.page.back() {
            if self.reverse {
                self.end = Bound::Excluded(last.clone());
            } else {
                self.start = Bound::Excluded(last.clone());
            }
        }
        Ok(())
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty()
            && !self.done
            && let Err(e) = self.fetch()
        {
            self.done = true;
            return Some(Err(e));
        }
        self.page.pop_front().map(Ok)
    }
}

/// The error of every call on a transaction whose SQL transaction failed.
fn poisoned() -> Error {
    Error::new(
        Code::WriteConflict,
        "the transaction was aborted by a write conflict in the storage database",
    )
}

/// The first column of the first row of a simple query's answer, as an integer.
fn first_i64(messages: &[SimpleQueryMessage]) -> Result<i64> {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| {
            Error::new(Code::InternalError, "the storage database answered no timestamp")
        })
}

/// A SQL error as a Folio error. Conflicts inside reads or commits (which the engine may report
/// where it detects them) are WriteConflict; a lost connection is HostUnreachable, so that a
/// driver retries; anything else is an internal error naming the SQL state.
fn sql_error(e: postgres::Error, doing: &str) -> Error {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            Error::new(
                Code::WriteConflict,
                format!("write conflict in the storage database while {doing}: {e}"),
            )
        }
        Some(c) => Error::new(
            Code::InternalError,
            format!("storage database error {} while {doing}: {e}", c.code()),
        ),
        None if e.is_closed() => Error::new(
            Code::HostUnreachable,
            format!("lost the connection to the storage database while {doing}: {e}"),
        ),
        None => {
            Error::new(Code::HostUnreachable, format!("storage database error while {doing}: {e}"))
        }
    }
}

/// Formats a timestamp as MongoDB prints it.
fn show_ts(ts: Ts) -> String {
    format!("Timestamp({}, {})", ts.secs(), ts.inc())
}
