//! Command dispatch: the one path every command takes, from the wire server and the embedded API.
//!
//! # Request flow
//!
//! 1. The caller (a server connection task, or the embedded API) hands [`Service::dispatch`] a
//!    command document: the first key is the command name, `$db` names the database, and
//!    OP_MSG document sequences have already been merged into the body as arrays, except an
//!    `insert`'s `documents`, which come beside it still in their wire bytes ([`Incoming`]) so
//!    that a document needing no change is stored as it came.
//! 2. The name is looked up in the command table (`table::COMMANDS`), which says whether the command may
//!    run in a transaction, whether it writes, and whether it must run against `admin`.
//! 3. The generic arguments are parsed ([`runner::OpContext`]) and, with test commands on, the
//!    `failCommand` fail point gets its chance to fail or delay the command.
//! 4. A [`runner::Runner`] checks out the session and decides how statements run: in the
//!    session's transaction, as retryable writes, or as autocommit statements.
//! 5. The handler receives the command as an [`args::Request`] (the service, the connection,
//!    the command, its name and database) and parses its own arguments, whose names the table
//!    has already checked ([`fields`]); it calls `exec` through the runner.
//! 6. One place ([`labels`]) adds error labels exactly as MongoDB does, an error in a transaction
//!    aborts it, the write concern is checked, and the reply gets `ok`, `operationTime` and
//!    `$clusterTime`.

mod admin;
mod args;
pub mod authz;
mod bulk;
mod crud;
mod ddl;
mod failpoint;
pub mod fields;
mod handshake;
mod inprog;
pub mod labels;
pub mod metrics;
pub mod profile;
pub mod recent_log;
pub mod runner;
mod runtime;
mod session_cmds;
pub mod ttl;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, Document, doc};

use crate::cursor::CursorRegistry;
use crate::error::{Error, Result};
use crate::mvcc::TxnStore;
use crate::session::SessionRegistry;

use args::Request;
use failpoint::FailPoints;
use runner::{Mode, OpContext, Runner};

/// Settings of a running Folio instance that commands can see.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The replica set name reported by `hello` (`--replSet`, default `rs0`).
    pub repl_set_name: String,
    /// The `host:port` reported in `hosts`, `me` and `primary`.
    pub advertise_host: String,
    /// Whether test-only commands (`configureFailPoint`) exist.
    pub test_commands: bool,
    /// `transactionLifetimeLimitSeconds`.
    pub transaction_lifetime_secs: u64,
    /// Maximum number of connections (`--maxConns`).
    pub max_conns: u32,
    /// The parsed command line, for `getCmdLineOpts`.
    pub cmd_line: Document,
    /// `ttlMonitorEnabled`: whether the TTL monitor deletes expired documents.
    pub ttl_monitor_enabled: bool,
    /// `ttlMonitorSleepSecs`: the seconds between TTL passes.
    pub ttl_monitor_sleep_secs: u64,
    /// `--slowms`: operations at least this long are logged (and profiled at level 1).
    pub slow_ms: u64,
    /// `--slowOpSampleRate`: the fraction of slow operations logged and profiled.
    pub slow_op_sample_rate: f64,
    /// `--profile`: the profiling level of every database until `profile` changes it.
    pub profile_level: i32,
    /// `--auth` / `security.authorization: enabled`: network connections must authenticate and
    /// every command is checked against the user's privileges (see `command::authz`).
    pub auth: bool,
    /// `authenticationMechanisms`: the mechanisms `saslStart`/`authenticate` accept.
    pub auth_mechanisms: Vec<String>,
    /// `enableLocalhostAuthBypass`: while no user or role exists, a loopback connection may run
    /// anything (to create the first user).
    pub localhost_auth_bypass: bool,
    /// The change log's retention size in megabytes (`--oplogSize`,
    /// `replication.oplogSizeMB`); `None` keeps the store's default (1 GiB).
    pub oplog_size_mb: Option<f64>,
    /// The change log's minimum retention in hours (`--oplogMinRetentionHours`): records younger
    /// than this are kept whatever the size.
    pub oplog_min_retention_hours: f64,
    /// `--loadBalanced`: every connection comes through a load balancer, so its first `hello`
    /// must say `loadBalanced: true` and is answered with this front end's `serviceId`
    /// (MongoDB's load-balancer specification; mongos's `loadBalancerPort`).
    pub load_balanced: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            repl_set_name: "rs0".into(),
            advertise_host: "localhost:27017".into(),
            test_commands: false,
            transaction_lifetime_secs: 60,
            max_conns: 1_000_000,
            cmd_line: Document::new(),
            ttl_monitor_enabled: true,
            ttl_monitor_sleep_secs: 60,
            slow_ms: 100,
            slow_op_sample_rate: 1.0,
            profile_level: 0,
            auth: false,
            auth_mechanisms: vec!["SCRAM-SHA-1".into(), "SCRAM-SHA-256".into()],
            localhost_auth_bypass: true,
            oplog_size_mb: None,
            oplog_min_retention_hours: 0.0,
            load_balanced: false,
        }
    }
}

/// The state of one client connection (for the embedded API: one per client handle).
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The connection id reported by `hello` and `currentOp`.
    pub id: u64,
    /// The peer address, for `whatsmyuri` and logs.
    pub remote: String,
    /// `client.application.name` from the first `hello`, used by fail points.
    pub app_name: Option<String>,
    /// The compressors the transport supports (set by the server before dispatch).
    pub supported_compressors: Vec<String>,
    /// The compressor negotiated in `hello`, if any (read by the server after the reply).
    pub compressor: Option<String>,
    /// Who is authenticated on the connection, and a SASL conversation in progress.
    pub auth: crate::auth::AuthState,
    /// An in-process connection (the embedded API): never checked for privileges.
    pub trusted: bool,
    /// The subject of the client certificate the TLS layer verified, for MONGODB-X509.
    pub client_certificate_subject: Option<String>,
    /// Whether the connection has had its first `hello` (in load-balanced mode only that one
    /// carries the `serviceId`; only that one may carry `client` metadata).
    pub said_hello: bool,
    /// Whether replies may carry their cursor batch as stored documents in
    /// [`Reply::raw_batch`] (set by a transport that encodes replies with
    /// [`Reply::encode_body`]); otherwise every reply is whole in [`Reply::body`].
    pub raw_batches: bool,
}

/// What dispatch produced for one command.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The reply document.
    pub body: Document,
    /// Close the connection instead of replying (the `closeConnection` fail point).
    pub close_connection: bool,
    /// The newest commit the reply acknowledges that is not durable yet (only from
    /// [`Service::dispatch_on_event_loop`]): the reply may be sent only once
    /// [`Service::when_durable`] calls back with success.
    pub unsynced: Option<crate::mvcc::Ts>,
    /// Stored documents of the cursor batch, when the connection takes them apart from the
    /// body ([`Connection::raw_batches`]); the body's batch array is then empty.
    pub raw_batch: Option<RawBatch>,
    /// The reply's `operationTime`, which is also its `$clusterTime`: kept apart from the body
    /// and written after its fields when the reply is encoded ([`Reply::encode_body`]) or put
    /// in it ([`Reply::merge_times`]). Every command's reply carries both, and building them as
    /// documents (three maps and a byte vector) cost more than the whole reply of a `ping`;
    /// the embedded API reads neither.
    pub operation_time: Option<bson::Timestamp>,
}

/// Documents a reply's cursor batch (`cursor.firstBatch` or `cursor.nextBatch`) carries as
/// they are stored: a find passes them on without decoding them (`exec::find_rows`),
/// and the transport writes them into the reply's array as it encodes the reply
/// ([`Reply::encode_body`]), without encoding them again.
#[derive(Clone, Debug)]
pub struct RawBatch {
    /// The batch's field in the reply's `cursor` document.
    pub field: &'static str,
    /// The documents, in order.
    pub docs: Vec<bson::RawDocumentBuf>,
}

/// A command as it arrived. An `insert` whose documents came as an OP_MSG document sequence
/// keeps them apart, in their wire bytes (`cmd` then has no `documents` field): a document that
/// needs no change is stored as it came, without being built as a `Document` and encoded again
/// (`doc::validate::prepare_raw_insert`). Every other command, and the embedded API's, is its
/// document alone.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The command document.
    pub cmd: Document,
    /// An `insert`'s documents as they came, if they came apart from `cmd`.
    pub documents: Option<Vec<folio_wire::SequenceDocument>>,
}

impl From<Document> for Incoming {
    fn from(cmd: Document) -> Incoming {
        Incoming { cmd, documents: None }
    }
}

impl Incoming {
    /// The command as one document, with documents kept apart put back in.
    #[cfg(test)]
    pub(crate) fn whole(&self) -> std::borrow::Cow<'_, Document> {
        Received { cmd: &self.cmd, documents: self.documents.as_deref() }.whole()
    }
}

/// An [`Incoming`] command as the metrics and the profiler read it.
#[derive(Clone, Copy)]
pub(crate) struct Received<'a> {
    /// The command document.
    pub cmd: &'a Document,
    /// An `insert`'s documents, when they came apart from `cmd`.
    pub documents: Option<&'a [folio_wire::SequenceDocument]>,
}

impl<'a> Received<'a> {
    /// The command as one document, with documents kept apart put back in: the profiler and
    /// the slow-operation log show a command whole (cut to their size limit).
    pub(crate) fn whole(self) -> std::borrow::Cow<'a, Document> {
        self.whole_within(usize::MAX).0
    }

    /// [`Received::whole`] for a reader that keeps at most `budget` bytes of it (the slow-operation
    /// log): of the documents kept apart, only the first ones up to just past `budget` bytes of
    /// them are decoded (a cut at `budget` falls among them), so a slow insert of many
    /// documents is not decoded whole to log a few. Also returns the BSON size of the whole
    /// command, measured from the documents' bytes.
    pub(crate) fn whole_within(self, budget: usize) -> (std::borrow::Cow<'a, Document>, usize) {
        let Some(docs) = self.documents else {
            return (std::borrow::Cow::Borrowed(self.cmd), crate::memory::bson_size(self.cmd));
        };
        // `whole` appends the array last: its element header, then the array itself.
        let mut size = crate::memory::bson_size(self.cmd) + 2 + "documents".len() + 5;
        let mut decoded = Vec::new();
        let mut taken = 0usize;
        for (i, d) in docs.iter().enumerate() {
            let bytes = d.raw.as_bytes().len();
            size += 2 + crate::memory::decimal_digits(i) + bytes;
            if taken <= budget {
                taken += bytes;
                if let Ok(doc) = d.to_document() {
                    decoded.push(Bson::Document(doc));
                }
            }
        }
        let mut whole = self.cmd.clone();
        whole.insert("documents", decoded);
        (std::borrow::Cow::Owned(whole), size)
    }

    /// How many statements a write command's array holds (`documents`, `updates`, ...).
    pub(crate) fn statements(&self, field: &str) -> u64 {
        match (field, self.documents) {
            ("documents", Some(docs)) => docs.len() as u64,
            _ => match self.cmd.get(field) {
                Some(Bson::Array(a)) => a.len() as u64,
                _ => 0,
            },
        }
    }
}

/// A command's reply as the metrics and the profiler read it: the body and its stored
/// documents, if any.
#[derive(Clone, Copy)]
pub(crate) struct Outcome<'a> {
    /// The reply's body.
    pub body: &'a Document,
    /// The stored documents of its cursor batch.
    pub raw_batch: Option<&'a RawBatch>,
}

impl RawBatch {
    /// Decodes the documents into the body's (empty) batch array.
    pub(crate) fn decode_into(&self, body: &mut Document) -> Result<()> {
        let docs = self
            .docs
            .iter()
            .map(|d| crate::error::stored_document(d.as_bytes(), "document").map(Bson::Document))
            .collect::<Result<Vec<_>>>()?;
        if let Ok(cursor) = body.get_document_mut("cursor") {
            cursor.insert(self.field, docs);
        }
        Ok(())
    }
}

impl Reply {
    /// A reply of `body` alone: an error the transport answers by itself.
    pub fn bare(body: Document) -> Reply {
        Reply {
            body,
            close_connection: false,
            unsynced: None,
            raw_batch: None,
            operation_time: None,
        }
    }

    /// Puts the reply's `operationTime` and `$clusterTime` ([`Reply::operation_time`]) into
    /// the body, after its other fields, for a transport that encodes the body itself.
    pub fn merge_times(&mut self) {
        if let Some(ts) = self.operation_time.take() {
            // Built as the encoder writes them, then decoded: one definition of the fields.
            let mut times = bson::RawDocumentBuf::new().into_bytes();
            if folio_wire::append_times(&mut times, ts).is_ok()
                && let Ok(times) = bson::RawDocumentBuf::from_bytes(times)
                && let Ok(times) = folio_wire::to_document(&times)
            {
                self.body.extend(times);
            }
        }
    }

    /// Moves a raw batch into the body as decoded documents: the reply is then whole in
    /// [`Reply::body`]. A document that cannot be decoded turns the reply into its error.
    pub fn decode_raw_batch(&mut self) {
        if let Some(batch) = self.raw_batch.take()
            && let Err(e) = batch.decode_into(&mut self.body)
        {
            self.body = error_reply(&e);
        }
    }

    /// The body encoded as BSON, with the raw batch's documents copied into their array as
    /// they are.
    ///
    /// The body (whose batch array is empty) is encoded by the `bson` crate; the documents are
    /// then spliced into the empty array's place in one pass over a buffer sized for the
    /// whole, and the lengths of the array and of the documents around it grow by what was
    /// spliced in. Appending them through the crate's raw builders instead copied each
    /// document three times, grew the buffers as it went and formatted each array index into
    /// its own string.
    pub fn encode_body(&self) -> std::result::Result<Vec<u8>, String> {
        let raw = bson::RawDocumentBuf::try_from(&self.body).map_err(|e| e.to_string())?;
        let mut encoded = raw.into_bytes();
        if let Some(ts) = self.operation_time {
            folio_wire::append_times(&mut encoded, ts)?;
        }
        let Some(batch) = &self.raw_batch else { return Ok(encoded) };
        let raw = bson::RawDocument::from_bytes(&encoded).map_err(|e| e.to_string())?;
        let cursor = raw.get_document("cursor").map_err(|e| e.to_string())?;
        let array = cursor.get_array(batch.field).map_err(|e| e.to_string())?;
        // Where the cursor document and the (empty) array sit in the encoded body.
        let offset = |bytes: &[u8]| bytes.as_ptr() as usize - encoded.as_ptr() as usize;
        let (cursor_at, array_at) = (offset(cursor.as_bytes()), offset(array.as_bytes()));
        if array.as_bytes().len() != 5 {
            return Err("the raw batch's array in the reply is not empty".into());
        }
        // Each element: the type byte, the index as a C string, the document.
        let digits = |i: usize| i.checked_ilog10().unwrap_or(0) as usize + 1;
        let spliced: usize =
            batch.docs.iter().enumerate().map(|(i, d)| 2 + digits(i) + d.as_bytes().len()).sum();
        let grown = |at: usize, out: &mut Vec<u8>| -> std::result::Result<(), String> {
            let old = i32::from_le_bytes(out[at..at + 4].try_into().unwrap_or_default());
            let new = usize::try_from(old)
                .ok()
                .and_then(|n| n.checked_add(spliced))
                .and_then(|n| i32::try_from(n).ok());
            let new = new.ok_or("the reply is too large to encode")?;
            out[at..at + 4].copy_from_slice(&new.to_le_bytes());
            Ok(())
        };
        let mut out = Vec::with_capacity(encoded.len() + spliced);
        out.extend_from_slice(&encoded[..array_at + 4]);
        let mut index = [0u8; 20];
        for (i, d) in batch.docs.iter().enumerate() {
            out.push(bson::spec::ElementType::EmbeddedDocument as u8);
            let n = digits(i);
            let mut v = i;
            for slot in index[..n].iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
            out.extend_from_slice(&index[..n]);
            out.push(0);
            out.extend_from_slice(d.as_bytes());
        }
        out.extend_from_slice(&encoded[array_at + 4..]);
        grown(array_at, &mut out)?;
        grown(cursor_at, &mut out)?;
        grown(0, &mut out)?;
        Ok(out)
    }
}

/// The command service: everything a command needs, shared by all connections.
pub struct Service {
    pub(crate) store: Arc<dyn TxnStore>,
    options: ServiceOptions,
    next_connection_id: AtomicU64,
    pub(crate) sessions: SessionRegistry,
    pub(crate) cursors: CursorRegistry,
    pub(crate) streams: crate::changes::StreamRegistry,
    pub(crate) failpoints: FailPoints,
    pub(crate) stats: Stats,
    pub(crate) ops: inprog::OpRegistry,
    /// Operation counters (`serverStatus`, the metrics endpoint).
    pub(crate) metrics: metrics::Metrics,
    /// Slow-operation logging and the profiler.
    pub(crate) profiler: profile::Profiler,
    ticks: AtomicU64,
    /// `ttlMonitorEnabled`, settable at runtime.
    pub(crate) ttl_enabled: std::sync::atomic::AtomicBool,
    /// `ttlMonitorSleepSecs`, settable at runtime.
    pub(crate) ttl_sleep_secs: AtomicU64,
    /// `transactionLifetimeLimitSeconds`, settable at runtime.
    pub(crate) txn_lifetime_secs: AtomicU64,
    /// `requireApiVersion`: commands other than `hello` must declare `apiVersion`.
    pub(crate) require_api_version: std::sync::atomic::AtomicBool,
    /// This front end's identity in load-balanced mode (`hello`'s `serviceId`).
    pub(crate) service_id: bson::oid::ObjectId,
    /// When the TTL monitor last ran (see [`ttl`]).
    ttl_last_pass: parking_lot::Mutex<Option<std::time::Instant>>,
    /// When the service started, for `uptime` and the replica set's election time.
    pub(crate) started: (std::time::Instant, bson::DateTime),
    /// Bumped by every user or role change; connections re-resolve their privileges when it
    /// moved (see [`crate::auth`]).
    user_generation: AtomicU64,
}

/// Counters for `serverStatus`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) txn_committed: AtomicU64,
    pub(crate) txn_aborted: AtomicU64,
    pub(crate) ttl_passes: AtomicU64,
    pub(crate) ttl_deleted: AtomicU64,
}

impl Service {
    /// Creates the service over a transaction store.
    pub fn new(store: Arc<dyn TxnStore>, options: ServiceOptions) -> Result<Self> {
        let profiler = profile::Profiler::new(
            options.profile_level,
            options.slow_ms,
            options.slow_op_sample_rate,
        );
        if options.oplog_size_mb.is_some() || options.oplog_min_retention_hours > 0.0 {
            let (default_bytes, _, _) = store.log_usage();
            let bytes = options.oplog_size_mb.map_or(default_bytes, |mb| (mb * 1048576.0) as u64);
            let age = Duration::from_secs_f64(options.oplog_min_retention_hours.max(0.0) * 3600.0);
            store.set_log_retention(bytes, age);
        }
        let (ttl_enabled, ttl_sleep_secs, txn_lifetime_secs) = (
            options.ttl_monitor_enabled,
            options.ttl_monitor_sleep_secs,
            options.transaction_lifetime_secs,
        );
        Ok(Service {
            store,
            options,
            next_connection_id: AtomicU64::new(1),
            sessions: SessionRegistry::new(),
            cursors: CursorRegistry::new(),
            streams: crate::changes::StreamRegistry::default(),
            failpoints: FailPoints::default(),
            stats: Stats::default(),
            ops: inprog::OpRegistry::default(),
            metrics: metrics::Metrics::new(table::COMMANDS.len()),
            profiler,
            ticks: AtomicU64::new(0),
            ttl_enabled: std::sync::atomic::AtomicBool::new(ttl_enabled),
            ttl_sleep_secs: AtomicU64::new(ttl_sleep_secs),
            txn_lifetime_secs: AtomicU64::new(txn_lifetime_secs),
            require_api_version: std::sync::atomic::AtomicBool::new(false),
            service_id: bson::oid::ObjectId::new(),
            ttl_last_pass: parking_lot::Mutex::new(None),
            started: (std::time::Instant::now(), bson::DateTime::now()),
            user_generation: AtomicU64::new(1),
        })
    }

    /// The current user generation.
    pub fn user_generation(&self) -> u64 {
        self.user_generation.load(Ordering::Acquire)
    }

    /// Records that a user or role changed.
    pub(crate) fn bump_user_generation(&self) {
        self.user_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-resolves the connection's users when a user or role changed since it last did; a
    /// user that was dropped is logged out.
    pub(crate) fn refresh_privileges(&self, conn: &mut Connection) -> Result<()> {
        let generation = self.user_generation();
        if conn.auth.generation == generation || conn.auth.users.is_empty() {
            return Ok(());
        }
        let txn = self.store.begin()?;
        let refreshed: Result<Vec<_>> = conn
            .auth
            .users
            .iter()
            .filter_map(|u| crate::auth::load_user(txn.as_ref(), &u.name).transpose())
            .collect();
        txn.abort();
        conn.auth.users = refreshed?;
        conn.auth.generation = generation;
        Ok(())
    }

    /// Whether the localhost exception lets an unauthenticated connection through: enabled,
    /// the peer is a loopback address, and no user or role exists yet.
    pub(crate) fn localhost_exception_applies(&self, conn: &Connection) -> Result<bool> {
        if !self.options.localhost_auth_bypass {
            return Ok(false);
        }
        let loopback = conn
            .remote
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback() || a.ip().to_canonical().is_loopback());
        if !loopback {
            return Ok(false);
        }
        let txn = self.store.begin()?;
        let exists = crate::auth::any_user_or_role_exists(txn.as_ref());
        txn.abort();
        Ok(!exists?)
    }

    /// The options the service runs with.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// The operation counters.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// `serverStatus` as the command answers it (for exporters; not counted as a command).
    pub fn server_status(&self) -> Result<Document> {
        handshake::server_status(&mut Request {
            svc: self,
            conn: &mut Connection::default(),
            cmd: &Document::new(),
            documents: None,
            name: "serverStatus",
            db: "admin",
        })
    }

    /// The number of open cursors.
    pub fn open_cursors(&self) -> usize {
        self.cursors.len()
    }

    /// The command table's names, in the order of [`metrics::Metrics::commands`].
    pub fn command_names() -> Vec<&'static str> {
        table::COMMANDS.iter().map(|c| c.name).collect()
    }

    /// The transaction store.
    pub fn store(&self) -> &Arc<dyn TxnStore> {
        &self.store
    }

    /// A new connection state with a fresh id.
    pub fn connect(&self, remote: impl Into<String>) -> Connection {
        self.stats.connections_current.fetch_add(1, Ordering::Relaxed);
        self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        Connection {
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            remote: remote.into(),
            ..Connection::default()
        }
    }

    /// Forgets a closed connection.
    pub fn disconnect(&self, _conn: &Connection) {
        self.stats.connections_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// Periodic housekeeping: aborts transactions past their lifetime, expires idle sessions and
    /// cursors. The server calls it about once a second.
    pub fn tick(&self) {
        let lifetime = Duration::from_secs(self.txn_lifetime_secs.load(Ordering::Relaxed));
        let aborted = self.sessions.reap(lifetime, self.store.as_ref());
        // Durable records of sessions that are not in memory are looked at once a minute.
        if self.ticks.fetch_add(1, Ordering::Relaxed).is_multiple_of(120)
            && let Err(e) = self.sessions.expire_durable(self.store.as_ref())
        {
            tracing::warn!("cannot expire old session records: {e}");
        }
        self.stats.txn_aborted.fetch_add(aborted as u64, Ordering::Relaxed);
        self.cursors.reap();
        self.streams.reap();
        if self.ttl_enabled.load(Ordering::Relaxed) {
            let mut last = self.ttl_last_pass.lock();
            let due = Duration::from_secs(self.ttl_sleep_secs.load(Ordering::Relaxed).max(1));
            if last.is_none_or(|t| t.elapsed() >= due) {
                *last = Some(std::time::Instant::now());
                drop(last);
                if let Err(e) = ttl::pass(self) {
                    tracing::warn!("TTL pass failed: {e}");
                }
            }
        }
    }

    /// Starts the housekeeping thread that calls [`Service::tick`] twice a second. The thread
    /// holds only a weak reference and ends when the service is dropped.
    pub fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned =
            std::thread::Builder::new().name("folio-housekeeping".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    match weak.upgrade() {
                        Some(svc) => svc.tick(),
                        None => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the housekeeping thread: {e}");
        }
    }

    /// Aborts every open transaction and makes committed data durable (for shutdown).
    pub fn shutdown(&self) {
        self.sessions.end_matching(|_| true);
        if let Err(e) = self.store.flush() {
            tracing::error!("flush at shutdown failed: {e}");
        }
    }

    /// Whether `cmd` never waits on anything but its own work: no commit to make durable, no
    /// conflicting writer to wait for, no session another command may hold across a commit
    /// (`endSessions`, `killSessions`), no fail point that may delay it (what the command table
    /// calls neither `write` nor `waits`, and statements inside a transaction). Its own work may
    /// still read pages from disk, or spill a large sort to a temporary file, as any query may.
    /// A server can run such a command on the thread that read it instead of handing it to a
    /// pool of threads that may block, which saves two thread switches per read. Anything this
    /// does not recognise counts as possibly waiting. (Commands of one session are not expected
    /// to run concurrently, so a statement's wait for its own session's mutex is not counted.)
    pub fn never_waits_on_others(&self, cmd: &Document) -> bool {
        let Some(spec) = cmd.keys().next().and_then(|name| table::lookup(name)) else {
            return false;
        };
        if self.options.test_commands || spec.waits || self.store.remote() {
            return false;
        }
        // A change stream's getMore waits for new events.
        if spec.name == "getMore"
            && let Some(Bson::Int64(id)) = cmd.get("getMore")
            && self.streams.contains(*id)
        {
            return false;
        }
        // A statement of a multi-document transaction never waits: a conflict fails it at once
        // (first writer wins) and nothing is synced before the commit.
        if matches!(cmd.get("autocommit"), Some(Bson::Boolean(false))) {
            return true;
        }
        let writes = spec.write || (spec.name == "aggregate" && pipeline_writes(cmd));
        !writes
    }

    /// Whether `cmd` may be tried with [`Service::dispatch_on_event_loop`]: a write of one
    /// statement (`insert` of one document, `update` or `delete` of one statement,
    /// `findAndModify`) or the end of a transaction, which usually waits for nothing but the
    /// sync of its commit. A command of many statements is not: once one statement committed,
    /// a later one that has to wait can no longer hand the command back.
    pub fn may_try_on_event_loop(&self, incoming: &Incoming) -> bool {
        let cmd = &incoming.cmd;
        let Some(name) = cmd.keys().next() else { return false };
        if self.options.test_commands || self.store.remote() {
            return false;
        }
        let single = |field: &str| matches!(cmd.get(field), Some(Bson::Array(a)) if a.len() == 1);
        match name.as_str() {
            "insert" => match &incoming.documents {
                Some(docs) => docs.len() == 1,
                None => single("documents"),
            },
            "update" => single("updates"),
            "delete" => single("deletes"),
            "findAndModify" | "findandmodify" | "commitTransaction" | "abortTransaction" => true,
            _ => false,
        }
    }

    /// Runs one command and returns its reply. Never panics on client input.
    pub fn dispatch(&self, conn: &mut Connection, cmd: impl Into<Incoming>) -> Reply {
        match self.dispatch_with(conn, cmd.into(), None) {
            Ok(reply) => reply,
            // Unreachable: nothing raises a flag that is not there.
            Err(_) => {
                Reply::bare(error_reply(&crate::err!(InternalError, "the command would block")))
            }
        }
    }

    /// Runs one command on a thread that must not block (an event loop): the command's commits
    /// are not synced here, the reply carries the timestamp whose durability it owes
    /// ([`Reply::unsynced`]), to be awaited with [`Service::when_durable`]. If the command
    /// would have to wait (for a conflicting transaction, or for its session), it stops before
    /// anything was committed and is handed back, to run again with [`Service::dispatch`] on a
    /// thread that may block. Meant for what [`Service::may_try_on_event_loop`] accepts.
    pub fn dispatch_on_event_loop(
        &self,
        conn: &mut Connection,
        cmd: Incoming,
    ) -> std::result::Result<Reply, Incoming> {
        let flag = std::cell::Cell::new(false);
        self.dispatch_with(conn, cmd, Some(&flag))
    }

    /// Calls `done` once every commit up to `ts` is durable (see [`Reply::unsynced`]), from
    /// this thread at once or later from another.
    pub fn when_durable(&self, ts: crate::mvcc::Ts, done: crate::mvcc::DurableCallback) {
        self.store.when_durable(ts, done)
    }

    fn dispatch_with(
        &self,
        conn: &mut Connection,
        incoming: Incoming,
        would_block: Option<&std::cell::Cell<bool>>,
    ) -> std::result::Result<Reply, Incoming> {
        let (cmd, documents) = (&incoming.cmd, incoming.documents.as_deref());
        let started = std::time::Instant::now();
        crate::exec::opstats::begin();
        let mut close_connection = false;
        let mut unsynced = None;
        let mut raw_batch = None;
        // A bug must not take the connection (or the server) down with it: a panic becomes an
        // InternalError reply. Open transactions stay consistent: a dropped MVCC transaction aborts.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let out = (&mut close_connection, &mut unsynced, &mut raw_batch);
            self.run(conn, cmd, documents, would_block, out)
        }));
        if would_block.is_some_and(std::cell::Cell::get) {
            // Nothing was committed (see `Runner`): the command runs again where it may wait.
            return Err(incoming);
        }
        let body = match outcome {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => error_reply(&e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!("command panicked: {what}");
                error_reply(&crate::err!(
                    InternalError,
                    "internal error while running the command: {}",
                    what
                ))
            }
        };
        let elapsed = started.elapsed();
        let stats = crate::exec::opstats::take();
        let (index, class) = match cmd.keys().next() {
            Some(name) => (
                table::index(name),
                metrics::LatencyClass::of(name, name == "aggregate" && pipeline_writes(cmd)),
            ),
            None => (None, metrics::LatencyClass::Commands),
        };
        // A batch belongs to a reply that succeeded; an error reply has none.
        let raw_batch =
            raw_batch.filter(|_| matches!(body.get("ok"), Some(Bson::Double(ok)) if *ok == 1.0));
        let outcome = Outcome { body: &body, raw_batch: raw_batch.as_ref() };
        let received = Received { cmd, documents };
        self.metrics.record(index, class, received, outcome, elapsed, &stats);
        self.observe(conn, received, outcome, elapsed, &stats);
        let operation_time = Some(self.store.last_committed().to_bson());
        let mut reply = Reply { body, close_connection, unsynced, raw_batch, operation_time };
        if !conn.raw_batches {
            reply.decode_raw_batch();
        }
        Ok(reply)
    }

    fn run(
        &self,
        conn: &mut Connection,
        cmd: &Document,
        documents: Option<&[folio_wire::SequenceDocument]>,
        would_block: Option<&std::cell::Cell<bool>>,
        (close, unsynced, raw_batch): (
            &mut bool,
            &mut Option<crate::mvcc::Ts>,
            &mut Option<RawBatch>,
        ),
    ) -> Result<Document> {
        let Some(name) = cmd.keys().next().cloned() else {
            crate::bail!(FailedToParse, "Empty command");
        };
        let Some(spec) = table::lookup(&name) else {
            crate::bail!(CommandNotFound, "no such command: '{}'", name);
        };
        if spec.test_only && !self.options.test_commands {
            crate::bail!(CommandNotFound, "no such command: '{}'", name);
        }
        let mut op = OpContext::parse(cmd)?;
        op.api.check_strict(&name, spec.api_v1)?;
        // The planner and the expression parsers follow `apiStrict` for the whole command.
        let strict = op.api.strict == Some(true);
        let _api_strict = crate::api_strict::enter(strict);
        if op.api.version.is_none()
            && !handshake::is_hello(&name)
            && self.require_api_version.load(Ordering::Relaxed)
        {
            crate::bail!(
                Location498870,
                "The apiVersion parameter is required, please configure your MongoClient's API \
                 version"
            );
        }
        fields::check(&name, spec.fields, cmd, strict)?;
        authz::check(self, conn, &name, cmd, &op.db)?;
        authz::bind_session(self, conn, &mut op)?;
        let (_op_guard, killed) =
            self.ops.register(conn.id, &conn.remote, cmd, namespace_of(cmd, &op.db));
        op.killed = Some(killed);
        // Snapshot reads outside transactions exist only for find, aggregate and distinct.
        if op.read_concern_level() == Some("snapshot")
            && !matches!(op.mode(), Mode::Transaction(_))
            && !matches!(name.as_str(), "find" | "aggregate" | "distinct" | "getMore")
            && matches!(spec.handler, table::Handler::Runner(_))
        {
            crate::bail!(
                InvalidOptions,
                "Command {} does not support {{ readConcern: {{ level: \"snapshot\" }} }}",
                name
            );
        }
        if spec.admin_only && op.db != "admin" {
            crate::bail!(Unauthorized, "{} may only be run against the admin database.", name);
        }
        // The failCommand fail point sees every command but configureFailPoint.
        let mut fail_wce = None;
        let mut forced_labels = None;
        if self.options.test_commands {
            let ns = namespace_of(cmd, &op.db);
            // A connection's first hello names its application in the same command, and a fail
            // point on that hello with the application's name applies to it (drivers' tests fail
            // the handshake so).
            let hello_app = cmd
                .get_document("client")
                .and_then(|c| c.get_document("application"))
                .and_then(|a| a.get_str("name"))
                .ok()
                .filter(|_| handshake::is_hello(&name));
            let app_name = conn.app_name.as_deref().or(hello_app);
            if let Some(fc) = self.failpoints.fail_command(&name, app_name, &ns) {
                if let Some(block) = fc.block {
                    std::thread::sleep(block);
                }
                if fc.close_connection {
                    *close = true;
                    crate::bail!(SocketException, "connection closed by fail point");
                }
                if let Some(code) = fc.error_code {
                    let msg = fc
                        .errmsg
                        .unwrap_or_else(|| "Failing command via 'failCommand' failpoint".into());
                    let mut e = Error::new(crate::Code::from_number(code), msg);
                    match fc.error_labels {
                        Some(l) => e.labels = l,
                        None => labels::add_labels(&mut e, &op, false),
                    }
                    // Like MongoDB's fail point, this fires before the command reaches its
                    // session: an open transaction stays open (drivers may retry the statement).
                    return Err(e);
                }
                forced_labels = fc.error_labels;
                fail_wce = fc.write_concern_error;
            }
        }
        // Only commands that read or write data check out their session: the session commands
        // (endSessions, killAllSessions, ...) lock sessions themselves and would otherwise wait
        // for their own.
        let mut runner = match spec.handler {
            table::Handler::Runner(_) => Some(Runner::new(self, &op, would_block)?),
            table::Handler::Simple(_) => None,
        };
        // `maxTimeAlwaysTimeOut` fails a command that has a time limit at its first check,
        // inside its session (an open transaction sees the error as MongoDB's would).
        let timed_out = || -> Result<()> {
            if self.options.test_commands
                && op.deadline.is_some()
                && spec.name != "configureFailPoint"
                && self.failpoints.max_time_always_time_out()
            {
                crate::bail!(MaxTimeMSExpired, "operation exceeded time limit");
            }
            Ok(())
        };
        let mut request = Request { svc: self, conn, cmd, documents, name: &name, db: &op.db };
        let result = match (spec.handler, runner.as_mut()) {
            (table::Handler::Runner(f), Some(runner)) => runner
                .begin(spec.in_txn)
                .and_then(|()| timed_out())
                .and_then(|()| f(&mut request, runner)),
            (table::Handler::Simple(f), _) => timed_out().and_then(|()| f(&mut request)),
            (table::Handler::Runner(_), None) => Err(crate::err!(InternalError, "no runner")),
        };
        // Nothing is acknowledged before it is durable: the commits a handler left unsynced
        // are synced here, or on an event loop handed over with the reply.
        let result = match runner.as_mut().map(Runner::sync_deferred) {
            Some(Err(e)) => Err(e),
            _ => result,
        };
        *unsynced = runner.as_mut().and_then(Runner::take_unsynced);
        *raw_batch = runner.as_mut().and_then(Runner::take_raw_batch);
        *close |= runner.as_ref().is_some_and(|r| r.close_connection);
        let at_cluster_time = runner.as_ref().and_then(|r| r.at_cluster_time);
        let result = result.map(|mut body| {
            if let Some(at) = at_cluster_time
                && !body.contains_key("cursor")
                && !body.contains_key("atClusterTime")
            {
                body.insert("atClusterTime", at.to_bson());
            }
            body
        });
        match result {
            Ok(mut body) => {
                let wce = match fail_wce {
                    Some(wce) => Some(wce),
                    None if spec.write
                        || spec.name == "commitTransaction"
                        || spec.name == "abortTransaction"
                        || (spec.name == "aggregate" && pipeline_writes(cmd)) =>
                    {
                        labels::check_write_concern(op.write_concern)
                    }
                    None => None,
                };
                if let Some(wce) = wce {
                    let code =
                        wce.get("code").and_then(crate::doc::compare::as_f64).unwrap_or(0.0) as i32;
                    let labels = match forced_labels {
                        Some(l) => l,
                        None => labels::write_concern_labels(code, &op),
                    };
                    body.insert("writeConcernError", wce);
                    if !labels.is_empty() {
                        body.insert("errorLabels", labels);
                    }
                }
                body.insert("ok", 1.0);
                Ok(body)
            }
            Err(mut e) => {
                if let Some(runner) = runner.as_mut() {
                    runner.abort_on_error();
                }
                match forced_labels {
                    Some(l) => e.labels = l,
                    None => labels::add_labels(&mut e, &op, false),
                }
                Err(e)
            }
        }
    }
}

/// Whether an aggregate writes: only through a final `$out` or `$merge` (anything unreadable
/// counts as writing).
fn pipeline_writes(cmd: &Document) -> bool {
    match cmd.get("pipeline") {
        Some(Bson::Array(stages)) => stages.iter().any(|s| match s {
            Bson::Document(d) => d.contains_key("$out") || d.contains_key("$merge"),
            _ => true,
        }),
        _ => true,
    }
}

/// The namespace a command targets, for fail points and logs.
pub fn namespace_of(cmd: &Document, db: &str) -> String {
    match cmd.iter().next() {
        Some((_, Bson::String(coll))) => crate::catalog::join_namespace(db, coll),
        _ => db.to_string(),
    }
}

/// The reply document of a failed command.
pub fn error_reply(e: &Error) -> Document {
    let mut d = doc! { "ok": 0.0, "errmsg": e.message.clone() };
    insert_code(&mut d, e);
    if !e.labels.is_empty() {
        d.insert("errorLabels", e.labels.clone());
    }
    insert_extra(&mut d, e);
    d
}

/// An error's `code` and `codeName` (when it has one), as replies and write errors carry them.
fn insert_code(d: &mut Document, e: &Error) {
    d.insert("code", e.code_number());
    if !e.code_name().is_empty() {
        d.insert("codeName", e.code_name().into_owned());
    }
}

/// An error's extra fields (`keyPattern`, `errInfo`, ...), after the others.
fn insert_extra(d: &mut Document, e: &Error) {
    if let Some(extra) = &e.extra {
        for (k, v) in extra.iter() {
            d.insert(k.clone(), v.clone());
        }
    }
}

pub(crate) mod table {
    //! The command table: each command's handler and flags.

    use bson::Document;

    use super::args::Request;
    use super::fields::Fields;
    use super::runner::Runner;
    use super::{
        admin, bulk, crud, ddl, failpoint_cmd, handshake, inprog, profile, runtime, session_cmds,
        users,
    };
    use crate::error::Result;

    /// How a command's handler is called.
    #[derive(Clone, Copy)]
    pub enum Handler {
        /// Needs nothing but the request (the service, the connection and the command).
        Simple(fn(&mut Request<'_>) -> Result<Document>),
        /// Reads or writes data through the runner.
        Runner(fn(&mut Request<'_>, &mut Runner) -> Result<Document>),
    }

    /// One command.
    #[derive(Clone, Copy)]
    pub struct Spec {
        /// The command name.
        pub name: &'static str,
        /// The handler.
        pub handler: Handler,
        /// Allowed inside a multi-document transaction.
        pub in_txn: bool,
        /// A write (write concern applies).
        pub write: bool,
        /// Must run against `admin`.
        pub admin_only: bool,
        /// Exists only with test commands enabled.
        pub test_only: bool,
        /// Waits on something besides its own work even when it writes nothing: the end of a
        /// transaction (its commit syncs), or a session another command holds (ending and
        /// killing sessions). Writes (`write`) wait too.
        pub waits: bool,
        /// The top-level fields the command takes (checked before the handler runs).
        pub fields: Fields,
        /// Part of the versioned API's version 1 (`apiStrict: true` refuses the others).
        pub api_v1: bool,
    }

    const fn cmd(name: &'static str, handler: Handler) -> Spec {
        Spec {
            name,
            handler,
            in_txn: false,
            write: false,
            admin_only: false,
            test_only: false,
            waits: false,
            fields: Fields::Any,
            api_v1: false,
        }
    }

    /// Marks a command as part of API version 1.
    const fn v1(mut s: Spec) -> Spec {
        s.api_v1 = true;
        s
    }

    /// Declares the command's fields: `known` ones its handler honours, `unsupported` ones
    /// MongoDB takes and Folio refuses (see [`super::fields`]).
    const fn takes(
        known: &'static [&'static str],
        unsupported: &'static [&'static str],
        mut s: Spec,
    ) -> Spec {
        s.fields = Fields::Strict { known, unsupported, unstable: &[] };
        s
    }

    /// Declares which of the command's fields MongoDB's IDL marks unstable: outside API version
    /// 1, refused under `apiStrict: true` (see [`super::fields`]). Follows [`takes`].
    const fn unstable(list: &'static [&'static str], mut s: Spec) -> Spec {
        if let Fields::Strict { known, unsupported, .. } = s.fields {
            s.fields = Fields::Strict { known, unsupported, unstable: list };
        }
        s
    }

    const fn waits(mut s: Spec) -> Spec {
        s.waits = true;
        s
    }

    const fn txn(mut s: Spec) -> Spec {
        s.in_txn = true;
        s
    }

    const fn write(mut s: Spec) -> Spec {
        s.write = true;
        s
    }

    const fn admin(mut s: Spec) -> Spec {
        s.admin_only = true;
        s
    }

    use Handler::{Runner as R, Simple as S};

    /// `findAndModify`'s fields.
    const FIND_AND_MODIFY: &[&str] = &[
        "query",
        "fields",
        "sort",
        "hint",
        "collation",
        "arrayFilters",
        "remove",
        "update",
        "new",
        "upsert",
        "bypassDocumentValidation",
        "let",
    ];

    /// `find`'s fields. `allowPartialResults` (answer from the shards that are up) and
    /// `readOnce` (a cache hint) change nothing on a single node; `oplogReplay` is a no-op in
    /// MongoDB too.
    const FIND: &[&str] = &[
        "filter",
        "projection",
        "sort",
        "hint",
        "collation",
        "skip",
        "limit",
        "batchSize",
        "singleBatch",
        "allowDiskUse",
        "min",
        "max",
        "tailable",
        "awaitData",
        "let",
        "noCursorTimeout",
        "allowPartialResults",
        "oplogReplay",
        "readOnce",
    ];

    /// What MongoDB's `find` takes that Folio does not implement.
    const FIND_UNSUPPORTED: &[&str] = &[
        "returnKey",
        "showRecordId",
        "ntoreturn",
        "$queryOptions",
        "options",
        "term",
        "allowSpeculativeMajorityRead",
        "$_requestResumeToken",
        "$_resumeAfter",
        "runtimeConstants",
        "collectionUUID",
    ];

    /// `find`'s fields outside API version 1 (`find_command.idl`).
    const FIND_UNSTABLE: &[&str] = &[
        "ntoreturn",
        "min",
        "max",
        "returnKey",
        "showRecordId",
        "$queryOptions",
        "tailable",
        "oplogReplay",
        "noCursorTimeout",
        "awaitData",
        "options",
        "term",
        "readOnce",
        "allowSpeculativeMajorityRead",
        "$_requestResumeToken",
        "$_resumeAfter",
        "runtimeConstants",
        "collectionUUID",
    ];

    /// `aggregate`'s fields.
    const AGGREGATE: &[&str] = &[
        "pipeline",
        "explain",
        "allowDiskUse",
        "cursor",
        "bypassDocumentValidation",
        "collation",
        "hint",
        "let",
    ];

    /// What MongoDB's `aggregate` takes that Folio does not implement.
    const AGGREGATE_UNSUPPORTED: &[&str] = &[
        "exchange",
        "runtimeConstants",
        "collectionUUID",
        "$queryOptions",
        "isMapReduceCommand",
        "encryptionInformation",
    ];

    /// `aggregate`'s fields outside API version 1 (`aggregate_command.idl`; `exchange` is
    /// refused for clients under `apiStrict` too).
    const AGGREGATE_UNSTABLE: &[&str] = &[
        "explain",
        "exchange",
        "runtimeConstants",
        "collectionUUID",
        "$queryOptions",
        "isMapReduceCommand",
        "encryptionInformation",
    ];

    /// `create`'s fields (the handler refuses time-series and clustered collections with its
    /// own message).
    const CREATE: &[&str] = &[
        "capped",
        "size",
        "max",
        "validator",
        "validationLevel",
        "validationAction",
        "viewOn",
        "pipeline",
        "collation",
        "storageEngine",
        "indexOptionDefaults",
        "changeStreamPreAndPostImages",
        "timeseries",
        "clusteredIndex",
        "expireAfterSeconds",
    ];

    /// What MongoDB's `create` takes that Folio does not implement.
    const CREATE_UNSUPPORTED: &[&str] =
        &["idIndex", "encryptedFields", "temp", "recordIdsReplicated"];

    /// `create`'s fields outside API version 1 (`create.idl`: a capped collection's sizes and
    /// the storage options).
    const CREATE_UNSTABLE: &[&str] = &[
        "size",
        "max",
        "storageEngine",
        "indexOptionDefaults",
        "changeStreamPreAndPostImages",
        "temp",
    ];

    /// The write commands' fields outside API version 1 (`write_ops.idl`).
    const WRITE_UNSTABLE: &[&str] = &["collectionUUID", "encryptionInformation"];

    /// What MongoDB's write commands take that Folio does not implement.
    const WRITE_UNSUPPORTED: &[&str] =
        &["collectionUUID", "encryptionInformation", "runtimeConstants"];

    /// Every command Folio knows.
    pub const COMMANDS: &[Spec] = &[
        // Handshake and diagnostics.
        // The handshake takes any field: drivers add handshake fields before servers know them
        // (a newer Rust driver sends `backpressure`), and a refused hello is an unusable server.
        v1(cmd("hello", S(handshake::hello))),
        cmd("isMaster", S(handshake::is_master)),
        cmd("ismaster", S(handshake::is_master)),
        cmd("buildInfo", S(handshake::build_info)),
        cmd("buildinfo", S(handshake::build_info)),
        v1(cmd("ping", S(handshake::ping))),
        admin(cmd("getParameter", S(handshake::get_parameter))),
        admin(cmd("getCmdLineOpts", S(handshake::get_cmd_line_opts))),
        cmd("serverStatus", S(handshake::server_status)),
        cmd("hostInfo", S(handshake::host_info)),
        cmd("connectionStatus", S(handshake::connection_status)),
        cmd("whatsmyuri", S(handshake::whatsmyuri)),
        admin(cmd("getLog", S(handshake::get_log))),
        takes(&["slowms", "sampleRate", "filter"], &[], cmd("profile", S(profile::profile))),
        admin(cmd("logRotate", S(handshake::log_rotate))),
        admin(cmd("replSetGetStatus", S(handshake::repl_set_get_status))),
        admin(cmd("setParameter", S(runtime::set_parameter))),
        admin(takes(
            &["size", "minRetentionHours"],
            &[],
            cmd("replSetResizeOplog", S(runtime::repl_set_resize_oplog)),
        )),
        cmd("listCommands", S(handshake::list_commands)),
        admin(takes(&[], &[], cmd("replSetGetConfig", S(admin::repl_set_get_config)))),
        admin(takes(&["lock", "async"], &[], cmd("fsync", S(admin::fsync)))),
        admin(takes(&[], &[], cmd("fsyncUnlock", S(admin::fsync_unlock)))),
        takes(
            &["full", "background", "checkBSONConformance", "enforceFastCount"],
            &["repair", "fixMultikey", "metadata"],
            cmd("validate", R(admin::validate)),
        ),
        takes(&["keyPattern", "min", "max", "estimate"], &[], cmd("dataSize", R(admin::data_size))),
        // CRUD.
        unstable(
            WRITE_UNSTABLE,
            takes(
                &["documents", "ordered", "bypassDocumentValidation", "stmtIds"],
                WRITE_UNSUPPORTED,
                txn(write(v1(cmd("insert", R(crud::insert))))),
            ),
        ),
        unstable(
            WRITE_UNSTABLE,
            takes(
                &["updates", "ordered", "bypassDocumentValidation", "let", "stmtIds"],
                WRITE_UNSUPPORTED,
                txn(write(v1(cmd("update", R(crud::update))))),
            ),
        ),
        unstable(
            &["collectionUUID", "encryptionInformation", "runtimeConstants"],
            takes(
                &["deletes", "ordered", "bypassDocumentValidation", "let", "stmtIds"],
                WRITE_UNSUPPORTED,
                txn(write(v1(cmd("delete", R(crud::delete))))),
            ),
        ),
        unstable(
            &["encryptionInformation"],
            takes(
                FIND_AND_MODIFY,
                WRITE_UNSUPPORTED,
                txn(write(v1(cmd("findAndModify", R(crud::find_and_modify))))),
            ),
        ),
        unstable(
            &["encryptionInformation"],
            takes(
                FIND_AND_MODIFY,
                WRITE_UNSUPPORTED,
                txn(write(v1(cmd("findandmodify", R(crud::find_and_modify))))),
            ),
        ),
        unstable(FIND_UNSTABLE, takes(FIND, FIND_UNSUPPORTED, txn(v1(cmd("find", R(crud::find)))))),
        unstable(
            &["term", "lastKnownCommittedOpTime"],
            takes(
                &["collection", "batchSize"],
                &["term", "lastKnownCommittedOpTime", "includeQueryStatsMetrics"],
                txn(v1(cmd("getMore", R(crud::get_more)))),
            ),
        ),
        takes(&["cursors"], &[], txn(v1(cmd("killCursors", R(crud::kill_cursors))))),
        takes(
            &["key", "query", "collation", "hint"],
            &["$queryOptions"],
            txn(cmd("distinct", R(crud::distinct))),
        ),
        unstable(
            AGGREGATE_UNSTABLE,
            takes(AGGREGATE, AGGREGATE_UNSUPPORTED, txn(v1(cmd("aggregate", R(crud::aggregate))))),
        ),
        unstable(
            &["$queryOptions", "encryptionInformation"],
            takes(
                &["query", "limit", "skip", "hint", "collation"],
                &["$queryOptions", "encryptionInformation"],
                v1(cmd("count", R(crud::count))),
            ),
        ),
        takes(&["verbosity"], &[], v1(cmd("explain", R(crud::explain)))),
        takes(
            &[
                "ops",
                "nsInfo",
                "ordered",
                "bypassDocumentValidation",
                "let",
                "errorsOnly",
                "cursor",
            ],
            &[],
            admin(txn(write(cmd("bulkWrite", R(bulk::bulk_write))))),
        ),
        // DDL.
        unstable(
            CREATE_UNSTABLE,
            takes(CREATE, CREATE_UNSUPPORTED, txn(write(v1(cmd("create", R(ddl::create)))))),
        ),
        unstable(
            &["ignoreUnknownIndexOptions"],
            takes(
                &["indexes"],
                &["commitQuorum", "ignoreUnknownIndexOptions"],
                txn(write(v1(cmd("createIndexes", R(ddl::create_indexes))))),
            ),
        ),
        unstable(
            &["collectionUUID"],
            takes(&[], &["collectionUUID"], write(v1(cmd("drop", R(ddl::drop))))),
        ),
        takes(&[], &[], write(v1(cmd("dropDatabase", R(ddl::drop_database))))),
        unstable(
            &["collectionUUID"],
            takes(
                &["index"],
                &["collectionUUID"],
                write(v1(cmd("dropIndexes", R(ddl::drop_indexes)))),
            ),
        ),
        unstable(
            &["collectionUUID"],
            takes(
                &["index"],
                &["collectionUUID"],
                write(v1(cmd("deleteIndexes", R(ddl::drop_indexes)))),
            ),
        ),
        unstable(
            &[
                "changeStreamPreAndPostImages",
                "dryRun",
                "collectionUUID",
                "index.unique",
                "index.prepareUnique",
                "index.forceNonUnique",
            ],
            takes(
                &[
                    "index",
                    "validator",
                    "validationLevel",
                    "validationAction",
                    "viewOn",
                    "pipeline",
                    "changeStreamPreAndPostImages",
                    "cappedSize",
                    "cappedMax",
                ],
                &["expireAfterSeconds", "timeseries", "clusteredIndex", "collectionUUID", "dryRun"],
                write(v1(cmd("collMod", R(ddl::coll_mod)))),
            ),
        ),
        write(cmd("convertToCapped", R(ddl::convert_to_capped))),
        write(cmd("cloneCollectionAsCapped", R(ddl::clone_collection_as_capped))),
        takes(
            &["to", "dropTarget"],
            &["stayTemp", "collectionUUID"],
            admin(write(cmd("renameCollection", R(ddl::rename_collection)))),
        ),
        takes(
            &["filter", "nameOnly", "authorizedDatabases"],
            &[],
            admin(v1(cmd("listDatabases", R(ddl::list_databases)))),
        ),
        unstable(
            &["includePendingDrops"],
            takes(
                &["filter", "nameOnly", "authorizedCollections", "cursor"],
                &["includePendingDrops"],
                v1(cmd("listCollections", R(ddl::list_collections))),
            ),
        ),
        unstable(
            &["includeBuildUUIDs", "includeIndexBuildInfo"],
            takes(
                &["cursor"],
                &["includeBuildUUIDs", "includeIndexBuildInfo"],
                v1(cmd("listIndexes", R(ddl::list_indexes))),
            ),
        ),
        // Atlas Search index management, which Folio has not (refused as mongod refuses it).
        write(cmd("createSearchIndexes", S(ddl::search_index_command))),
        write(cmd("updateSearchIndex", S(ddl::search_index_command))),
        write(cmd("dropSearchIndex", S(ddl::search_index_command))),
        cmd("listSearchIndexes", S(ddl::search_index_command)),
        cmd("dbStats", R(ddl::db_stats)),
        cmd("collStats", R(ddl::coll_stats)),
        // Sessions and transactions.
        unstable(
            &["commitTimestamp"],
            takes(
                &["recoveryToken"],
                &["commitTimestamp"],
                admin(txn(waits(v1(cmd(
                    "commitTransaction",
                    R(session_cmds::commit_transaction),
                ))))),
            ),
        ),
        takes(
            &["recoveryToken"],
            &[],
            admin(txn(waits(v1(cmd("abortTransaction", R(session_cmds::abort_transaction)))))),
        ),
        cmd("startSession", S(session_cmds::start_session)),
        waits(v1(cmd("endSessions", S(session_cmds::end_sessions)))),
        v1(cmd("refreshSessions", S(session_cmds::refresh_sessions))),
        waits(cmd("killSessions", S(session_cmds::kill_sessions))),
        waits(cmd("killAllSessions", S(session_cmds::kill_all_sessions))),
        waits(cmd("killAllSessionsByPattern", S(session_cmds::kill_all_sessions))),
        admin(cmd("currentOp", S(inprog::current_op))),
        admin(cmd("killOp", S(inprog::kill_op))),
        // Authentication, users and roles.
        v1(cmd("saslStart", S(users::sasl_start))),
        v1(cmd("saslContinue", S(users::sasl_continue))),
        v1(cmd("authenticate", S(users::authenticate))),
        cmd("logout", S(users::logout)),
        write(cmd("createUser", R(users::create_user))),
        write(cmd("updateUser", R(users::update_user))),
        write(cmd("dropUser", R(users::drop_user))),
        write(cmd("dropAllUsersFromDatabase", R(users::drop_all_users))),
        write(cmd("grantRolesToUser", R(users::grant_or_revoke_user))),
        write(cmd("revokeRolesFromUser", R(users::grant_or_revoke_user))),
        cmd("usersInfo", R(users::users_info)),
        write(cmd("createRole", R(users::create_role))),
        write(cmd("updateRole", R(users::update_role))),
        write(cmd("dropRole", R(users::drop_role))),
        write(cmd("dropAllRolesFromDatabase", R(users::drop_all_roles))),
        write(cmd("grantPrivilegesToRole", R(users::change_privileges))),
        write(cmd("revokePrivilegesFromRole", R(users::change_privileges))),
        write(cmd("grantRolesToRole", R(users::change_inherited))),
        write(cmd("revokeRolesFromRole", R(users::change_inherited))),
        cmd("rolesInfo", R(users::roles_info)),
        // Test commands.
        Spec { test_only: true, admin_only: true, ..cmd("configureFailPoint", S(failpoint_cmd)) },
    ];

    /// Looks a command up by name.
    pub fn lookup(name: &str) -> Option<&'static Spec> {
        index(name).map(|i| &COMMANDS[i])
    }

    /// A command's position in [`COMMANDS`] (through a map built once: every command looks
    /// itself up several times).
    pub fn index(name: &str) -> Option<usize> {
        static BY_NAME: std::sync::OnceLock<foldhash::HashMap<&'static str, usize>> =
            std::sync::OnceLock::new();
        BY_NAME
            .get_or_init(|| COMMANDS.iter().enumerate().map(|(i, c)| (c.name, i)).collect())
            .get(name)
            .copied()
    }
}

fn failpoint_cmd(req: &mut Request<'_>) -> Result<Document> {
    req.svc.failpoints.configure(req.cmd)
}
