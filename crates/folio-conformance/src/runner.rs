//! Running one unified-format test against the server: entities, operations and assertions.
//!
//! A [`Runner`] holds an internal client (for setup, `outcome` checks and cleanup, never observed) and the
//! description of the server. For each test it builds a fresh [`TestRun`]: the entity map of the file's
//! `createEntities`, with clients that record their command and connection pool events. The test's
//! operations then run in order through the official driver (see `ops.rs`), each checked against its
//! `expectResult` / `expectError` at once; afterwards the runner checks `expectEvents` and `outcome`.
//!
//! Cleanup follows the format: fail points a test set are turned off after it, and `killAllSessions` runs
//! before and after each test so an open transaction of a failed test cannot block the next one. Fail points
//! are remembered by the [`Runner`], not the test, so they are turned off even when a test times out.
//!
//! Where the driver does not expose what an assertion needs, the runner approximates and says so:
//! - a session's transaction state is tracked by the runner from the operations it issued
//!   (`startTransaction` -> starting, first operation -> in_progress, commit/abort);
//! - a session is "dirty" once an operation on it failed with a network error;
//! - sessions are never pinned on a replica set, so `assertSessionPinned` fails and `assertSessionUnpinned`
//!   passes;
//! - the driver has no collection-level `bulkWrite`: it runs as the equivalent single operations (consecutive
//!   inserts as one `insertMany`, so the driver's retries apply), or, when a batch holds several updates or
//!   deletes and no fail point is set, as the driver-spec batches sent as write commands in the session;
//! - `withTransaction` is the convenient-API loop written out over the driver's start/commit/abort, as
//!   the convenient transactions specification gives it (callback errors propagate even when a
//!   callback operation expected them, as the format requires);
//! - the driver has no legacy `count` or `mapReduce` helper: they run as the command a driver's
//!   helper sends; every other operation (`listIndexes`, the `list*Names` and `*Objects` variants,
//!   `runCursorCommand`, the search index operations) goes through the driver's own helper, so its
//!   retry and cursor rules apply;
//! - `createCommandCursor` cursors are read batch by batch (the driver's raw batch cursor), so that
//!   `iterateOnce` sends at most one getMore, as the format requires of tailable cursors;
//! - the driver refuses `w: 0` writes, so outside transactions they are sent as the equivalent write
//!   command through the same client (see `ops.rs`); `clientBulkWrite` with `w: 0` is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::event::cmap::CmapEvent;
use mongodb::event::command::CommandEvent;
use mongodb::options::{
    ClientOptions, CollectionOptions, DatabaseOptions, ReadConcern, ReadPreference,
    SelectionCriteria, SessionOptions, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, Database};

use crate::matcher::{self, Entities};
use crate::model::{CollectionData, ExpectedEventsForClient, Operation, TestCase, TestFile};
use crate::requirements::{self, ServerDescription, parse_version};

/// The result of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Pass,
    /// The first assertion that did not hold.
    Fail(String),
    /// Why the test does not apply.
    Skip(String),
}

/// Commands whose events are never recorded: runner plumbing and handshakes.
const UNOBSERVED: [&str; 8] = [
    "configureFailPoint",
    "killAllSessions",
    "hello",
    "isMaster",
    "ismaster",
    "saslStart",
    "saslContinue",
    "authenticate",
];

/// The driver's message when asked for a `w: 0` write, which it does not support.
const UNACKNOWLEDGED: &str = "Unacknowledged write concerns are not supported";

/// The driver's message for a URI option it does not implement (e.g. `socketTimeoutMS`).
const UNSUPPORTED_OPTION: &str = "the Rust driver does not support";

/// How long a cleanup command (fail point off, `killAllSessions`) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs tests against one server (or front ends behind a load balancer).
pub struct Runner {
    uris: crate::server::Uris,
    internal: Client,
    /// Clients of each front end behind a load balancer, for cleanup commands.
    cleanup_clients: Vec<Client>,
    /// What the server reported about itself.
    pub server: ServerDescription,
    /// Fail points set by the current test, turned off after it.
    fail_points: Mutex<Vec<String>>,
    /// Set once `killAllSessions` went unanswered.
    kill_sessions_hangs: std::sync::atomic::AtomicBool,
}

impl Runner {
    /// Connects the internal client and describes the server from `buildInfo` and `hello`.
    pub async fn connect(uris: &crate::server::Uris) -> Result<Self, String> {
        let client = |uri: &str| {
            let uri = if uris.load_balanced {
                format!("{uri}?loadBalanced=true")
            } else {
                uri.to_string()
            };
            async move {
                let mut opts =
                    ClientOptions::parse(&uri).await.map_err(|e| format!("bad uri {uri}: {e}"))?;
                opts.server_selection_timeout = Some(Duration::from_secs(10));
                Client::with_options(opts).map_err(|e| e.to_string())
            }
        };
        let internal = client(&uris.uri).await?;
        let mut cleanup_clients = Vec::new();
        for uri in &uris.cleanup {
            cleanup_clients.push(client(uri).await?);
        }
        let admin = internal.database("admin");
        let hello =
            admin.run_command(doc! {"hello": 1}).await.map_err(|e| format!("hello failed: {e}"))?;
        // A server without buildInfo is described by what its wire version claims (25 is MongoDB 8.0).
        let build = match admin.run_command(doc! {"buildInfo": 1}).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("folio-conformance: buildInfo failed ({e}); assuming version 8.0.0");
                doc! {"version": "8.0.0"}
            }
        };
        let mut version: Vec<u32> = match build.get("versionArray") {
            Some(Bson::Array(a)) => {
                let part = |v: &Bson| match v {
                    Bson::Int32(i) => u32::try_from(*i).unwrap_or(0),
                    Bson::Int64(i) => u32::try_from(*i).unwrap_or(0),
                    Bson::Double(d) if *d >= 0.0 => *d as u32,
                    _ => 0,
                };
                a.iter().take(3).map(part).collect()
            }
            _ => parse_version(build.get_str("version").unwrap_or("0.0.0")),
        };
        version.resize(3, 0);
        let topology = if hello.get_str("msg").ok() == Some("isdbgrid") {
            "sharded"
        } else if hello.contains_key("setName") {
            "replicaset"
        } else {
            "single"
        };
        // `runOnRequirements.serverParameters` is checked against what `getParameter: "*"` reports
        // (a server that refuses it has no parameters to match).
        let mut server_parameters =
            admin.run_command(doc! {"getParameter": "*"}).await.unwrap_or_default();
        for k in ["ok", "operationTime", "$clusterTime"] {
            server_parameters.remove(k);
        }
        let server = ServerDescription {
            version,
            topology: topology.into(),
            auth: false,
            serverless: false,
            server_parameters,
        };
        Ok(Self {
            uris: uris.clone(),
            internal,
            cleanup_clients,
            server,
            fail_points: Mutex::new(Vec::new()),
            kill_sessions_hangs: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs one test of a file (already known to apply) to completion.
    pub async fn run_test(&self, file: &TestFile, test: &TestCase) -> Outcome {
        if let Some(reason) = skip_reason(file, test, &self.server) {
            return Outcome::Skip(reason);
        }
        self.kill_all_sessions().await;
        let mut run = TestRun {
            runner: self,
            entities: HashMap::new(),
            pending_entity: None,
            pending_partial: None,
        };
        crate::ops::take_ignored_arguments();
        let result = run.run(file, test).await;
        run.end().await;
        let ignored = crate::ops::take_ignored_arguments();
        let result = match result {
            Err(e) if !ignored.is_empty() => Err(format!(
                "{e} (the driver's options types dropped these arguments: {})",
                ignored.join(", ")
            )),
            r => r,
        };
        match result {
            Ok(()) => Outcome::Pass,
            Err(e) if e.contains(UNACKNOWLEDGED) => Outcome::Skip(
                "needs an unacknowledged (w:0) write, which the Rust driver refuses".into(),
            ),
            Err(e) if e.contains(UNSUPPORTED_OPTION) => {
                Outcome::Skip(format!("needs a client option the Rust driver lacks: {e}"))
            }
            Err(e) => Outcome::Fail(e),
        }
    }

    /// Cleanup after every test, including one that timed out: fail points off, sessions killed.
    pub async fn cleanup(&self) {
        let names: Vec<String> = std::mem::take(&mut *lock(&self.fail_points));
        for name in names {
            let _ = self.admin_command(doc! {"configureFailPoint": name, "mode": "off"}).await;
        }
        self.kill_all_sessions().await;
    }

    /// Whether the current test has set a fail point.
    pub(crate) fn has_fail_points(&self) -> bool {
        !lock(&self.fail_points).is_empty()
    }

    async fn kill_all_sessions(&self) {
        // Errors (e.g. Interrupted, 11601) are expected and ignored, as the format prescribes. A server that
        // never answers it would cost every test the timeout, so after one silence it is not sent again.
        if self.kill_sessions_hangs.load(Ordering::Relaxed) {
            return;
        }
        if !self.admin_command(doc! {"killAllSessions": []}).await {
            eprintln!("folio-conformance: no longer sending killAllSessions in this run");
            self.kill_sessions_hangs.store(true, Ordering::Relaxed);
        }
    }

    /// Runs a cleanup command on the internal client, ignoring its outcome, within [`CLEANUP_TIMEOUT`] so a
    /// server that does not answer cannot hang the run.
    /// Returns whether a reply (of any kind) came.
    /// Behind a load balancer the command goes to every front end directly.
    async fn admin_command(&self, cmd: Document) -> bool {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let clients = if self.cleanup_clients.is_empty() {
            std::slice::from_ref(&self.internal)
        } else {
            &self.cleanup_clients[..]
        };
        let mut replied = true;
        for client in clients {
            let admin = client.database("admin");
            let run = admin.run_command(cmd.clone());
            replied &= tokio::time::timeout(CLEANUP_TIMEOUT, run).await.is_ok();
        }
        if !replied {
            eprintln!("folio-conformance: {name} got no reply within {CLEANUP_TIMEOUT:?}");
        }
        replied
    }
}

/// Why a test does not apply to `server`, if it does not.
pub fn skip_reason(file: &TestFile, test: &TestCase, server: &ServerDescription) -> Option<String> {
    if let Some(r) = &test.skip_reason {
        return Some(format!("skipReason: {r}"));
    }
    let schema = parse_version(&file.schema_version);
    if schema[0] != 1 || schema[1] > 28 {
        return Some(format!(
            "schema version {} of \"{}\" is not supported (1.0 to 1.28)",
            file.schema_version, file.description
        ));
    }
    if let Err(e) = requirements::check_any(file.run_on_requirements.as_deref(), server) {
        return Some(e);
    }
    requirements::check_any(test.run_on_requirements.as_deref(), server).err()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An event a client observed.
#[derive(Debug, Clone)]
pub(crate) enum Observed {
    Started {
        name: String,
        db: String,
        command: Document,
        request_id: i32,
        service_id: bool,
    },
    Succeeded {
        name: String,
        reply: Document,
        service_id: bool,
    },
    Failed {
        name: String,
        request_id: i32,
        network: bool,
        service_id: bool,
    },
    /// A connection pool event, and whether it carried a `serviceId` (only `poolClearedEvent`
    /// can).
    Cmap(&'static str, bool),
}

/// A client entity and what it observed.
pub(crate) struct ClientEntity {
    pub client: Client,
    events: Arc<Mutex<Vec<Observed>>>,
    observe: Vec<String>,
    ignore: Vec<String>,
    checked_out: Arc<AtomicI64>,
}

/// The runner's own record of a session's transaction state (the driver does not expose it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    None,
    Starting,
    InProgress,
    Committed,
    Aborted,
}

impl TxnState {
    fn name(self) -> &'static str {
        match self {
            TxnState::None => "none",
            TxnState::Starting => "starting",
            TxnState::InProgress => "in_progress",
            TxnState::Committed => "committed",
            TxnState::Aborted => "aborted",
        }
    }
}

/// A session entity.
pub(crate) struct SessionEntity {
    /// `None` once ended.
    pub session: Option<ClientSession>,
    pub lsid: Document,
    pub client: String,
    pub state: TxnState,
    pub dirty: bool,
}

/// A cursor entity.
pub(crate) enum CursorEntity {
    Plain(mongodb::Cursor<Document>),
    Session(mongodb::SessionCursor<Document>, String),
    /// A change stream (`createChangeStream`), its events as raw documents.
    Stream(Box<mongodb::change_stream::ChangeStream<Document>>),
    /// A `createCommandCursor` cursor, read batch by batch so that `iterateOnce` sends at most
    /// one getMore, and the documents of the last batch not yet returned.
    Command(Box<CommandCursor>, std::collections::VecDeque<Document>),
}

/// The driver's batch cursor behind a `createCommandCursor` entity.
pub(crate) enum CommandCursor {
    Plain(mongodb::raw_batch_cursor::RawBatchCursor),
    /// Opened in the named session, which each getMore uses.
    Session(mongodb::raw_batch_cursor::SessionRawBatchCursor, String),
}

/// Anything the entity map holds.
pub(crate) enum Entity {
    Client(ClientEntity),
    Database(Database),
    Collection(Collection<Document>),
    Session(Box<SessionEntity>),
    Cursor(Box<CursorEntity>),
    /// A GridFS bucket (`bucket` entity).
    Bucket(mongodb::gridfs::GridFsBucket),
    Value(Bson),
}

/// What an operation produced: a driver error is data for `expectError`, not a test failure.
pub(crate) type OpResult = Result<Option<Bson>, mongodb::error::Error>;

/// The state of one test while it runs.
pub(crate) struct TestRun<'r> {
    pub runner: &'r Runner,
    pub entities: HashMap<String, Entity>,
    /// The entity an operation produced (the cursor of `createFindCursor`, `createCommandCursor`
    /// or `createChangeStream`, the collection of `createCollection`), until `saveResultAsEntity`
    /// names it.
    pub pending_entity: Option<Entity>,
    /// The partial result of the current operation's failed write, for `expectError.expectResult` where
    /// the driver's error does not carry one.
    pub pending_partial: Option<Bson>,
}

impl Entities for TestRun<'_> {
    fn entity_value(&self, name: &str) -> Option<Bson> {
        match self.entities.get(name)? {
            Entity::Value(b) => Some(b.clone()),
            Entity::Session(s) => Some(Bson::Document(s.lsid.clone())),
            _ => None,
        }
    }
    fn session_lsid(&self, name: &str) -> Option<Document> {
        match self.entities.get(name)? {
            Entity::Session(s) => Some(s.lsid.clone()),
            _ => None,
        }
    }
}

impl<'r> TestRun<'r> {
    async fn run(&mut self, file: &TestFile, test: &TestCase) -> Result<(), String> {
        self.setup_data(&file.initial_data).await?;
        for e in &file.create_entities {
            self.create_entity(e).await?;
        }
        for (i, op) in test.operations.iter().enumerate() {
            if test
                .operations
                .get(i + 1)
                .is_some_and(|next| next.name == "assertSameLsidOnLastTwoCommands")
            {
                // The Rust driver returns an ended (or implicit) session to its pool from a spawned task,
                // so a command started at once may not find it there and take a fresh lsid. Waiting here
                // lets that task finish; the assertion then checks the server echoed the pooled lsid.
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            self.run_operation(op)
                .await
                .map_err(|e| format!("operation {i} ({}): {e}", op.name))?;
        }
        // End sessions before events are checked would add endSessions commands; the format checks events
        // first, so only fail points are turned off here.
        self.runner.cleanup().await;
        if let Some(expected) = &test.expect_events {
            for e in expected {
                self.check_events(e).map_err(|m| format!("expectEvents for {}: {m}", e.client))?;
            }
        }
        if let Some(outcome) = &test.outcome {
            for c in outcome {
                self.check_outcome(c).await?;
            }
        }
        Ok(())
    }

    /// Drops the entities (sessions first, so they end before their clients go).
    async fn end(mut self) {
        let names: Vec<String> = self.entities.keys().cloned().collect();
        for n in names {
            if let Some(Entity::Session(s)) = self.entities.get_mut(&n) {
                s.session = None;
            }
        }
        self.entities.clear();
    }

    async fn setup_data(&self, data: &[CollectionData]) -> Result<(), String> {
        let majority = WriteConcern::majority();
        for c in data {
            let db = self.runner.internal.database(&c.database_name);
            let coll = db.collection_with_options::<Document>(
                &c.collection_name,
                CollectionOptions::builder().write_concern(majority.clone()).build(),
            );
            coll.drop()
                .await
                .map_err(|e| format!("initialData: drop {}: {e}", c.collection_name))?;
            if c.create_options.is_some() || c.documents.is_empty() {
                let mut cmd = doc! {"create": &c.collection_name};
                if let Some(o) = &c.create_options {
                    cmd.extend(o.clone());
                }
                cmd.insert("writeConcern", doc! {"w": "majority"});
                db.run_command(cmd)
                    .await
                    .map_err(|e| format!("initialData: create {}: {e}", c.collection_name))?;
            }
            if !c.documents.is_empty() {
                coll.insert_many(c.documents.clone())
                    .await
                    .map_err(|e| format!("initialData: insert into {}: {e}", c.collection_name))?;
            }
        }
        Ok(())
    }

    /// Creates one entity from its `{type: {...}}` description.
    pub(crate) async fn create_entity(&mut self, desc: &Document) -> Result<(), String> {
        let Some((kind, spec)) = desc.iter().next() else {
            return Err("empty entity description".into());
        };
        let spec = spec.as_document().ok_or("entity description is not a document")?;
        let id = spec.get_str("id").map_err(|_| "entity without id")?.to_string();
        let entity = match kind.as_str() {
            "client" => Entity::Client(self.create_client(spec).await?),
            "database" => {
                let client =
                    self.client(spec.get_str("client").unwrap_or_default())?.client.clone();
                let name =
                    spec.get_str("databaseName").map_err(|_| "database without databaseName")?;
                let opts = database_options(spec.get_document("databaseOptions").ok())?;
                Entity::Database(client.database_with_options(name, opts))
            }
            "collection" => {
                let db = self.database(spec.get_str("database").unwrap_or_default())?;
                let name = spec
                    .get_str("collectionName")
                    .map_err(|_| "collection without collectionName")?;
                let opts = collection_options(spec.get_document("collectionOptions").ok())?;
                Entity::Collection(db.collection_with_options(name, opts))
            }
            "bucket" => {
                let db = self.database(spec.get_str("database").unwrap_or_default())?;
                let opts = bucket_options(spec.get_document("bucketOptions").ok())?;
                Entity::Bucket(db.gridfs_bucket(opts))
            }
            "session" => {
                let client_name = spec.get_str("client").unwrap_or_default().to_string();
                let client = self.client(&client_name)?.client.clone();
                let opts: SessionOptions = match spec.get_document("sessionOptions") {
                    Ok(o) => {
                        let mut o = o.clone();
                        // `snapshotTime` names an entity saved by `getSnapshotTime`.
                        if let Ok(name) = o.get_str("snapshotTime") {
                            let value = self
                                .entity_value(name)
                                .ok_or_else(|| format!("no entity {name:?} for snapshotTime"))?;
                            o.insert("snapshotTime", value);
                        }
                        bson::deserialize_from_document(o)
                            .map_err(|e| format!("sessionOptions: {e}"))?
                    }
                    Err(_) => SessionOptions::default(),
                };
                let session = client
                    .start_session()
                    .with_options(opts)
                    .await
                    .map_err(|e| format!("startSession: {e}"))?;
                let lsid = session.id().clone();
                Entity::Session(Box::new(SessionEntity {
                    session: Some(session),
                    lsid,
                    client: client_name,
                    state: TxnState::None,
                    dirty: false,
                }))
            }
            other => return Err(format!("unsupported entity type {other}")),
        };
        if self.entities.insert(id.clone(), entity).is_some() {
            return Err(format!("duplicate entity id {id}"));
        }
        Ok(())
    }

    async fn create_client(&self, spec: &Document) -> Result<ClientEntity, String> {
        let uris = &self.runner.uris;
        let mut uri = match (&uris.single, spec.get_bool("useMultipleMongoses")) {
            (Some(single), Ok(false)) => single.clone(),
            _ => uris.uri.clone(),
        };
        let mut opts_given = Vec::new();
        if let Ok(o) = spec.get_document("uriOptions") {
            let parts: Vec<String> = o
                .iter()
                .map(|(k, v)| {
                    opts_given.push(k.to_ascii_lowercase());
                    let v = match v {
                        Bson::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{k}={v}")
                })
                .collect();
            if !parts.is_empty() {
                uri.push('?');
                uri.push_str(&parts.join("&"));
            }
        }
        if uris.load_balanced && !opts_given.iter().any(|k| k == "loadbalanced") {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str("loadBalanced=true");
        }
        let mut opts =
            ClientOptions::parse(&uri).await.map_err(|e| format!("client uri {uri}: {e}"))?;
        if !opts_given.iter().any(|k| k == "serverselectiontimeoutms") {
            opts.server_selection_timeout = Some(Duration::from_secs(10));
        }
        // Faster recovery after fail-point-induced network errors, as the format allows, unless the test
        // sets the heartbeat itself. 500 ms is the driver's minimum.
        if !opts_given.iter().any(|k| k == "heartbeatfrequencyms") {
            opts.heartbeat_freq = Some(Duration::from_millis(500));
        }
        if let Ok(api) = spec.get_document("serverApi") {
            opts.server_api = Some(server_api(api)?);
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let checked_out = Arc::new(AtomicI64::new(0));
        let sink = events.clone();
        opts.command_event_handler =
            Some(mongodb::event::EventHandler::callback(move |ev: CommandEvent| {
                let o = match ev {
                    CommandEvent::Started(s) => Observed::Started {
                        name: s.command_name,
                        db: s.db,
                        command: s.command,
                        request_id: s.request_id,
                        service_id: s.service_id.is_some(),
                    },
                    CommandEvent::Succeeded(s) => Observed::Succeeded {
                        name: s.command_name,
                        reply: s.reply,
                        service_id: s.service_id.is_some(),
                    },
                    CommandEvent::Failed(f) => Observed::Failed {
                        name: f.command_name,
                        request_id: f.request_id,
                        network: is_network_error(&f.failure),
                        service_id: f.service_id.is_some(),
                    },
                    _ => return,
                };
                lock(&sink).push(o);
            }));
        let sink = events.clone();
        let counter = checked_out.clone();
        opts.cmap_event_handler =
            Some(mongodb::event::EventHandler::callback(move |ev: CmapEvent| {
                let service_id = matches!(&ev, CmapEvent::PoolCleared(c) if c.service_id.is_some());
                let name = match ev {
                    CmapEvent::PoolCreated(_) => "poolCreatedEvent",
                    CmapEvent::PoolReady(_) => "poolReadyEvent",
                    CmapEvent::PoolCleared(_) => "poolClearedEvent",
                    CmapEvent::PoolClosed(_) => "poolClosedEvent",
                    CmapEvent::ConnectionCreated(_) => "connectionCreatedEvent",
                    CmapEvent::ConnectionReady(_) => "connectionReadyEvent",
                    CmapEvent::ConnectionClosed(_) => "connectionClosedEvent",
                    CmapEvent::ConnectionCheckoutStarted(_) => "connectionCheckOutStartedEvent",
                    CmapEvent::ConnectionCheckoutFailed(_) => "connectionCheckOutFailedEvent",
                    CmapEvent::ConnectionCheckedOut(_) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        "connectionCheckedOutEvent"
                    }
                    CmapEvent::ConnectionCheckedIn(_) => {
                        counter.fetch_sub(1, Ordering::SeqCst);
                        "connectionCheckedInEvent"
                    }
                    _ => return,
                };
                lock(&sink).push(Observed::Cmap(name, service_id));
            }));
        let client = Client::with_options(opts).map_err(|e| format!("client: {e}"))?;
        let strings = |k: &str| -> Vec<String> {
            spec.get_array(k)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        Ok(ClientEntity {
            client,
            events,
            observe: strings("observeEvents"),
            ignore: strings("ignoreCommandMonitoringEvents"),
            checked_out,
        })
    }

    pub(crate) fn client(&self, name: &str) -> Result<&ClientEntity, String> {
        match self.entities.get(name) {
            Some(Entity::Client(c)) => Ok(c),
            _ => Err(format!("no client entity {name:?}")),
        }
    }

    pub(crate) fn database(&self, name: &str) -> Result<Database, String> {
        match self.entities.get(name) {
            Some(Entity::Database(d)) => Ok(d.clone()),
            _ => Err(format!("no database entity {name:?}")),
        }
    }

    pub(crate) fn collection(&self, name: &str) -> Result<Collection<Document>, String> {
        match self.entities.get(name) {
            Some(Entity::Collection(c)) => Ok(c.clone()),
            _ => Err(format!("no collection entity {name:?}")),
        }
    }

    pub(crate) fn session_entity(&mut self, name: &str) -> Result<&mut SessionEntity, String> {
        match self.entities.get_mut(name) {
            Some(Entity::Session(s)) => Ok(s),
            _ => Err(format!("no session entity {name:?}")),
        }
    }

    /// The live driver session of a session entity, if `name` is given.
    pub(crate) fn session_mut(
        &mut self,
        name: Option<&str>,
    ) -> Result<Option<&mut ClientSession>, String> {
        let Some(name) = name else { return Ok(None) };
        let s = self.session_entity(name)?;
        s.session.as_mut().map(Some).ok_or_else(|| format!("session {name} has ended"))
    }

    /// Runs one operation and checks its expectations.
    pub(crate) fn run_operation<'a>(
        &'a mut self,
        op: &'a Operation,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>> {
        Box::pin(async move {
            let args = op.arguments.clone().unwrap_or_default();
            let session = args.get_str("session").ok().map(String::from);
            self.pending_partial = None;
            let result = if op.object == "testRunner" {
                self.special(&op.name, args).await?
            } else {
                self.execute(&op.name, &op.object, args).await?
            };
            self.after_op(&op.name, &op.object, session.as_deref(), &result);
            self.check_op(op, result)
        })
    }

    /// Updates the runner's view of a session after an operation used it.
    fn after_op(&mut self, name: &str, object: &str, session: Option<&str>, result: &OpResult) {
        let target =
            match name {
                "startTransaction" | "commitTransaction" | "abortTransaction"
                | "withTransaction" | "endSession" => {
                    return;
                }
                _ => session
                    .or(matches!(self.entities.get(object), Some(Entity::Session(_)))
                        .then_some(object)),
            };
        let Some(target) = target else { return };
        if let Ok(s) = self.session_entity(target) {
            // An error raised before anything was sent leaves the transaction starting.
            let sent = match result {
                Ok(_) => true,
                Err(e) => !is_client_error(e) || is_network_error(e),
            };
            if s.state == TxnState::Starting && sent {
                s.state = TxnState::InProgress;
            }
            if let Err(e) = result
                && is_network_error(e)
            {
                s.dirty = true;
            }
        }
    }

    pub(crate) fn check_op(&mut self, op: &Operation, result: OpResult) -> Result<(), String> {
        if let (Some(e), Some(name)) = (self.pending_entity.take(), &op.save_result_as_entity) {
            self.entities.insert(name.clone(), e);
            return Ok(());
        }
        if op.ignore_result_and_error {
            return Ok(());
        }
        match (&op.expect_error, result) {
            (Some(expected), Ok(v)) => Err(format!(
                "expected an error {expected}, got success {}",
                v.map(|b| b.to_string()).unwrap_or_default()
            )),
            (Some(expected), Err(e)) => self.check_error(expected, &e),
            (None, Err(e)) => Err(format!("unexpected error: {e}")),
            (None, Ok(v)) => {
                if let Some(expected) = &op.expect_result {
                    // An operation without a result (e.g. an unacknowledged write) leaves it unset.
                    matcher::matches(expected, v.as_ref(), true, self)
                        .map_err(|d| format!("result mismatch at {d}; actual: {v:?}"))?;
                }
                if let Some(name) = &op.save_result_as_entity {
                    self.entities.insert(name.clone(), Entity::Value(v.unwrap_or(Bson::Null)));
                }
                Ok(())
            }
        }
    }

    fn check_error(&self, expected: &Document, e: &mongodb::error::Error) -> Result<(), String> {
        let code = error_code(e);
        for (k, v) in expected {
            match k.as_str() {
                "isError" | "isTimeoutError" => {}
                "isClientError" => {
                    let want = v.as_bool().unwrap_or(false);
                    if want != is_client_error(e) {
                        return Err(format!("expected isClientError {want}, error: {e}"));
                    }
                }
                "errorContains" => {
                    let want = v.as_str().unwrap_or_default().to_lowercase();
                    if !e.to_string().to_lowercase().contains(&want) {
                        return Err(format!("expected the error to contain {want:?}, error: {e}"));
                    }
                }
                "errorCode" => {
                    let want = v.as_i32().or_else(|| v.as_i64().map(|i| i as i32));
                    if code != want {
                        return Err(format!("expected error code {v}, got {code:?}: {e}"));
                    }
                }
                "errorCodeName" => {
                    let got = error_code_name(e);
                    if got.as_deref() != v.as_str() {
                        return Err(format!("expected codeName {v}, got {got:?}: {e}"));
                    }
                }
                "errorLabelsContain" => {
                    for l in v.as_array().into_iter().flatten().filter_map(Bson::as_str) {
                        if !e.contains_label(l) {
                            return Err(format!(
                                "expected label {l}, labels {:?}: {e}",
                                e.labels()
                            ));
                        }
                    }
                }
                "errorLabelsOmit" => {
                    for l in v.as_array().into_iter().flatten().filter_map(Bson::as_str) {
                        if e.contains_label(l) {
                            return Err(format!(
                                "expected no label {l}, labels {:?}: {e}",
                                e.labels()
                            ));
                        }
                    }
                }
                "errorResponse" => {
                    let resp = server_response(e)
                        .ok_or_else(|| format!("no server response in error: {e}"))?;
                    matcher::matches(v, Some(&Bson::Document(resp.clone())), true, self)
                        .map_err(|d| format!("errorResponse mismatch at {d}; actual: {resp}"))?;
                }
                "expectResult" => {
                    let partial =
                        crate::ops::partial_result(e).or_else(|| self.pending_partial.clone());
                    matcher::matches(v, partial.as_ref(), true, self).map_err(|d| {
                        format!("partial result mismatch at {d}; actual: {partial:?}")
                    })?;
                }
                "writeErrors" => {
                    let actual = crate::ops::client_bulk_write_errors(e)
                        .ok_or_else(|| format!("no write errors: {e}"))?;
                    // Each write error is matched as a root document: drivers add fields such as
                    // the message that the expectations leave out.
                    let (Bson::Document(expected), Bson::Document(found)) = (v, &actual) else {
                        return Err(format!("writeErrors must be documents; actual: {actual}"));
                    };
                    if expected.len() != found.len() {
                        return Err(format!(
                            "expected {} write errors, got {}; actual: {actual}",
                            expected.len(),
                            found.len()
                        ));
                    }
                    for (index, want) in expected {
                        matcher::matches(want, found.get(index), true, self).map_err(|d| {
                            format!("writeErrors mismatch at {index}.{d}; actual: {actual}")
                        })?;
                    }
                }
                "writeConcernErrors" => {
                    let actual = crate::ops::write_concern_errors(e)
                        .ok_or_else(|| format!("no write concern errors: {e}"))?;
                    matcher::matches(v, Some(&actual), true, self).map_err(|d| {
                        format!("writeConcernErrors mismatch at {d}; actual: {actual}")
                    })?;
                }
                other => return Err(format!("unsupported expectError field {other}")),
            }
        }
        Ok(())
    }

    fn check_events(&self, expected: &ExpectedEventsForClient) -> Result<(), String> {
        let client = self.client(&expected.client)?;
        let cmap = expected.event_type.as_deref() == Some("cmap");
        let observed: Vec<Observed> =
            lock(&client.events).iter().filter(|o| observed_by(client, o, cmap)).cloned().collect();
        if observed.len() < expected.events.len()
            || (!expected.ignore_extra_events && observed.len() != expected.events.len())
        {
            return Err(format!(
                "expected {} events, observed {}: {}",
                expected.events.len(),
                observed.len(),
                summarize(&observed)
            ));
        }
        for (i, (e, o)) in expected.events.iter().zip(&observed).enumerate() {
            self.check_event(e, o)
                .map_err(|m| format!("event {i}: {m}; observed: {}", summarize(&observed)))?;
        }
        Ok(())
    }

    fn check_event(&self, expected: &Document, observed: &Observed) -> Result<(), String> {
        let (kind, spec) = expected.iter().next().ok_or("empty expected event")?;
        let empty = Document::new();
        let spec = spec.as_document().unwrap_or(&empty);
        let (okind, name) = match observed {
            Observed::Started { name, .. } => ("commandStartedEvent", Some(name)),
            Observed::Succeeded { name, .. } => ("commandSucceededEvent", Some(name)),
            Observed::Failed { name, .. } => ("commandFailedEvent", Some(name)),
            Observed::Cmap(n, _) => (*n, None),
        };
        if kind != okind {
            return Err(format!(
                "expected {kind}, observed {okind} {}",
                name.cloned().unwrap_or_default()
            ));
        }
        if let (Ok(want), Some(name)) = (spec.get_str("commandName"), name)
            && want != name
        {
            return Err(format!("expected command {want}, observed {name}"));
        }
        if let Ok(want) = spec.get_bool("hasServiceId") {
            let (Observed::Started { service_id, .. }
            | Observed::Succeeded { service_id, .. }
            | Observed::Failed { service_id, .. }
            | Observed::Cmap(_, service_id)) = observed;
            if want != *service_id {
                return Err(format!("expected hasServiceId {want}, observed {service_id}"));
            }
        }
        match observed {
            Observed::Started { db, command, .. } => {
                if let Ok(want) = spec.get_str("databaseName")
                    && want != db
                {
                    return Err(format!("expected database {want}, observed {db}"));
                }
                if let Some(c) = spec.get("command") {
                    matcher::matches(c, Some(&Bson::Document(command.clone())), true, self)
                        .map_err(|d| format!("command mismatch at {d}; actual: {command}"))?;
                }
            }
            Observed::Succeeded { reply, .. } => {
                if let Some(r) = spec.get("reply") {
                    matcher::matches(r, Some(&Bson::Document(reply.clone())), true, self)
                        .map_err(|d| format!("reply mismatch at {d}; actual: {reply}"))?;
                }
            }
            Observed::Failed { .. } | Observed::Cmap(..) => {}
        }
        Ok(())
    }

    async fn check_outcome(&self, c: &CollectionData) -> Result<(), String> {
        let coll =
            self.runner.internal.database(&c.database_name).collection_with_options::<Document>(
                &c.collection_name,
                CollectionOptions::builder()
                    .read_concern(ReadConcern::local())
                    .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                    .build(),
            );
        let mut cursor = coll
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .map_err(|e| format!("outcome: find in {}: {e}", c.collection_name))?;
        let mut actual = Vec::new();
        while cursor.advance().await.map_err(|e| format!("outcome: {e}"))? {
            actual.push(Bson::Document(
                cursor.deserialize_current().map_err(|e| format!("outcome: {e}"))?,
            ));
        }
        let expected = Bson::Array(c.documents.iter().cloned().map(Bson::Document).collect());
        let actual = Bson::Array(actual);
        matcher::matches(&expected, Some(&actual), false, self).map_err(|d| {
            format!("outcome of {}.{}: {d}; actual: {actual}", c.database_name, c.collection_name)
        })
    }

    /// The special operations of the `testRunner` object.
    async fn special(&mut self, name: &str, args: Document) -> Result<OpResult, String> {
        let s = |k: &str| args.get_str(k).map_err(|_| format!("{name}: missing argument {k}"));
        match name {
            "failPoint" => {
                let client = self.client(s("client")?)?.client.clone();
                let fp = args
                    .get_document("failPoint")
                    .map_err(|_| "failPoint: missing failPoint")?
                    .clone();
                Ok(self.set_fail_point(&client, fp).await)
            }
            "targetedFailPoint" => {
                let client_name = self.session_entity(s("session")?)?.client.clone();
                let client = self.client(&client_name)?.client.clone();
                let fp = args
                    .get_document("failPoint")
                    .map_err(|_| "failPoint: missing failPoint")?
                    .clone();
                Ok(self.set_fail_point(&client, fp).await)
            }
            "assertSessionTransactionState" => {
                let want = s("state")?.to_string();
                let got = self.session_entity(s("session")?)?.state.name();
                if got != want {
                    return Err(format!("expected transaction state {want}, runner tracked {got}"));
                }
                Ok(Ok(None))
            }
            "assertSessionPinned" => Err(
                "a session is never pinned on a replica set (pinning is for sharded/load-balanced)"
                    .into(),
            ),
            "assertSessionUnpinned" => {
                self.session_entity(s("session")?)?;
                Ok(Ok(None))
            }
            "assertSessionDirty" | "assertSessionNotDirty" => {
                let want = name == "assertSessionDirty";
                let dirty = self.session_dirty(s("session")?)?;
                if dirty != want {
                    return Err(format!(
                        "expected dirty={want}, runner tracked dirty={dirty} (dirty = a network error was seen)"
                    ));
                }
                Ok(Ok(None))
            }
            "assertSameLsidOnLastTwoCommands" | "assertDifferentLsidOnLastTwoCommands" => {
                let client = self.client(s("client")?)?;
                let lsids: Vec<Option<Bson>> = lock(&client.events)
                    .iter()
                    .filter_map(|o| match o {
                        Observed::Started { name, command, .. }
                            if !UNOBSERVED.contains(&name.as_str()) =>
                        {
                            Some(command.get("lsid").cloned())
                        }
                        _ => None,
                    })
                    .collect();
                let [.., a, b] = lsids.as_slice() else {
                    return Err("fewer than two commands observed".into());
                };
                let same = a == b;
                if same != (name == "assertSameLsidOnLastTwoCommands") {
                    return Err(format!("lsids of the last two commands: {a:?} and {b:?}"));
                }
                Ok(Ok(None))
            }
            "assertCollectionExists" | "assertCollectionNotExists" => {
                let db = self.runner.internal.database(s("databaseName")?);
                let coll = s("collectionName")?;
                let names = db
                    .list_collection_names()
                    .await
                    .map_err(|e| format!("listCollections: {e}"))?;
                let exists = names.iter().any(|n| n == coll);
                if exists != (name == "assertCollectionExists") {
                    return Err(format!("collection {coll} exists: {exists}"));
                }
                Ok(Ok(None))
            }
            "assertIndexExists" | "assertIndexNotExists" => {
                let coll = self
                    .runner
                    .internal
                    .database(s("databaseName")?)
                    .collection::<Document>(s("collectionName")?);
                let index = s("indexName")?;
                let names = coll.list_index_names().await.unwrap_or_default();
                let exists = names.iter().any(|n| n == index);
                if exists != (name == "assertIndexExists") {
                    return Err(format!("index {index} exists: {exists} (indexes: {names:?})"));
                }
                Ok(Ok(None))
            }
            "assertNumberConnectionsCheckedOut" => {
                let client = self.client(s("client")?)?;
                let want =
                    args.get("connections").and_then(|b| b.as_i32().map(i64::from)).unwrap_or(0);
                // The Rust driver checks a connection in from a task it spawns when the
                // operation's handle drops, so the event may follow the operation's end by a
                // moment: the count gets a second to settle.
                let mut got = client.checked_out.load(Ordering::SeqCst);
                for _ in 0..100 {
                    if got == want {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    got = client.checked_out.load(Ordering::SeqCst);
                }
                if got != want {
                    return Err(format!("expected {want} connections checked out, got {got}"));
                }
                Ok(Ok(None))
            }
            "createEntities" => {
                for e in
                    args.get_array("entities").map_err(|_| "createEntities: missing entities")?
                {
                    let d = e.as_document().ok_or("createEntities: entity is not a document")?;
                    self.create_entity(d).await?;
                }
                Ok(Ok(None))
            }
            other => Err(format!("unsupported test runner operation {other}")),
        }
    }

    /// Whether a session is dirty: an operation on it returned a network error, or one of the commands
    /// sent with its lsid failed with one (even if the driver then retried it successfully).
    fn session_dirty(&mut self, name: &str) -> Result<bool, String> {
        let (flag, lsid, client) = {
            let s = self.session_entity(name)?;
            (s.dirty, s.lsid.clone(), s.client.clone())
        };
        let events = lock(&self.client(&client)?.events).clone();
        let mine: Vec<i32> = events
            .iter()
            .filter_map(|o| match o {
                Observed::Started { command, request_id, .. }
                    if command.get_document("lsid").ok() == Some(&lsid) =>
                {
                    Some(*request_id)
                }
                _ => None,
            })
            .collect();
        let failed = events
            .iter()
            .any(|o| matches!(o, Observed::Failed { request_id, network: true, .. } if mine.contains(request_id)));
        Ok(flag || failed)
    }

    async fn set_fail_point(&self, client: &Client, fp: Document) -> OpResult {
        let name = fp.get_str("configureFailPoint").unwrap_or_default().to_string();
        client.database("admin").run_command(fp).await?;
        lock(&self.runner.fail_points).push(name);
        Ok(None)
    }
}

/// Whether the assertion of `client`'s events sees this event.
fn observed_by(client: &ClientEntity, o: &Observed, cmap: bool) -> bool {
    let (kind, name) = match o {
        Observed::Started { name, .. } => ("commandStartedEvent", Some(name)),
        Observed::Succeeded { name, .. } => ("commandSucceededEvent", Some(name)),
        Observed::Failed { name, .. } => ("commandFailedEvent", Some(name)),
        Observed::Cmap(n, _) => (*n, None),
    };
    if cmap != name.is_none() || !client.observe.iter().any(|k| k == kind) {
        return false;
    }
    name.is_none_or(|n| !UNOBSERVED.contains(&n.as_str()) && !client.ignore.iter().any(|i| i == n))
}

fn summarize(events: &[Observed]) -> String {
    let names: Vec<String> = events
        .iter()
        .map(|o| match o {
            Observed::Started { name, .. } => format!("started {name}"),
            Observed::Succeeded { name, .. } => format!("succeeded {name}"),
            Observed::Failed { name, .. } => format!("failed {name}"),
            Observed::Cmap(n, _) => (*n).to_string(),
        })
        .collect();
    format!("[{}]", names.join(", "))
}

/// A client entity's `serverApi` (`version`, `strict`, `deprecationErrors`) as the driver's
/// declared API version, which it then sends with every command.
fn server_api(spec: &Document) -> Result<mongodb::options::ServerApi, String> {
    let version = match spec.get_str("version") {
        Ok("1") => mongodb::options::ServerApiVersion::V1,
        _ => return Err(format!("serverApi: unsupported version in {spec}")),
    };
    let mut api = mongodb::options::ServerApi::builder().version(version).build();
    api.strict = spec.get_bool("strict").ok();
    api.deprecation_errors = spec.get_bool("deprecationErrors").ok();
    Ok(api)
}

/// A bucket entity's `bucketOptions` (`bucketName`, `chunkSizeBytes` and the concerns).
fn bucket_options(
    spec: Option<&Document>,
) -> Result<mongodb::options::GridFsBucketOptions, String> {
    let mut opts = mongodb::options::GridFsBucketOptions::default();
    let Some(spec) = spec else { return Ok(opts) };
    (opts.read_concern, opts.write_concern, opts.selection_criteria) = concerns(Some(spec))?;
    for (k, v) in spec {
        match (k.as_str(), v) {
            ("bucketName", Bson::String(name)) => opts.bucket_name = Some(name.clone()),
            ("chunkSizeBytes", v) => {
                let n = v.as_i32().and_then(|n| u32::try_from(n).ok());
                opts.chunk_size_bytes = Some(n.ok_or_else(|| format!("bad chunkSizeBytes {v}"))?);
            }
            ("readConcern" | "writeConcern" | "readPreference", _) => {}
            (other, _) => return Err(format!("unsupported bucketOptions field {other}")),
        }
    }
    Ok(opts)
}

fn database_options(spec: Option<&Document>) -> Result<DatabaseOptions, String> {
    let (rc, wc, rp) = concerns(spec)?;
    Ok(DatabaseOptions::builder().read_concern(rc).write_concern(wc).selection_criteria(rp).build())
}

fn collection_options(spec: Option<&Document>) -> Result<CollectionOptions, String> {
    let (rc, wc, rp) = concerns(spec)?;
    Ok(CollectionOptions::builder()
        .read_concern(rc)
        .write_concern(wc)
        .selection_criteria(rp)
        .build())
}

type Concerns = (Option<ReadConcern>, Option<WriteConcern>, Option<SelectionCriteria>);

/// readConcern, writeConcern and readPreference of a database or collection description.
pub(crate) fn concerns(spec: Option<&Document>) -> Result<Concerns, String> {
    let Some(spec) = spec else { return Ok((None, None, None)) };
    let rc = match spec.get("readConcern") {
        Some(b) => {
            Some(bson::deserialize_from_bson(b.clone()).map_err(|e| format!("readConcern: {e}"))?)
        }
        None => None,
    };
    let wc = match spec.get("writeConcern") {
        Some(b) => {
            Some(bson::deserialize_from_bson(b.clone()).map_err(|e| format!("writeConcern: {e}"))?)
        }
        None => None,
    };
    let rp = match spec.get("readPreference") {
        Some(b) => Some(SelectionCriteria::ReadPreference(
            bson::deserialize_from_bson(b.clone()).map_err(|e| format!("readPreference: {e}"))?,
        )),
        None => None,
    };
    Ok((rc, wc, rp))
}

/// Whether an error is a network error (the kind that marks a session dirty).
pub(crate) fn is_network_error(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(*e.kind, ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. })
        || e.contains_label("NetworkError")
}

/// Whether an error originates in the driver rather than in a server reply.
fn is_client_error(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    !matches!(
        *e.kind,
        ErrorKind::Command(_)
            | ErrorKind::Write(_)
            | ErrorKind::InsertMany(_)
            | ErrorKind::BulkWrite(_)
    )
}

/// The server error code of an error, if it came from the server.
pub(crate) fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|v| v.first())
            .map(|w| w.code)
            .or(m.write_concern_error.as_ref().map(|w| w.code)),
        ErrorKind::BulkWrite(b) => {
            let mut idx: Vec<_> = b.write_errors.keys().collect();
            idx.sort();
            idx.first()
                .and_then(|i| b.write_errors.get(i))
                .map(|w| w.code)
                .or(b.write_concern_errors.first().map(|w| w.code))
        }
        _ => server_response(e).and_then(|r| r.get("code").and_then(|c| c.as_i32())),
    }
}

fn error_code_name(e: &mongodb::error::Error) -> Option<String> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code_name.clone()),
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code_name.clone(),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code_name.clone()),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|v| v.first())
            .and_then(|w| w.code_name.clone())
            .or(m.write_concern_error.as_ref().map(|w| w.code_name.clone())),
        _ => server_response(e).and_then(|r| r.get_str("codeName").ok().map(String::from)),
    }
}

fn server_response(e: &mongodb::error::Error) -> Option<Document> {
    e.server_response().and_then(|r| Document::try_from(r.as_ref()).ok())
}
