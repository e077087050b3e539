//! Handshake and diagnostic commands: what drivers, shells and tools send when they connect.
//!
//! Folio presents itself as a one-member replica set primary, because that is the topology in
//! which drivers enable sessions, retryable writes and transactions (a standalone refuses
//! transactions). Everything here follows what a `mongod --replSet rs0` after `rs.initiate()`
//! answers, with Folio's name and version only in extra fields (`folioVersion`) so that version
//! checks in drivers and test runners see MongoDB 8.0 (wire version 25).
//!
//! Handlers return the reply's own fields; the dispatcher adds `ok`, `operationTime` and
//! `$clusterTime`.
//!
//! # Awaitable hello
//!
//! `hello` reports a `topologyVersion` (`processId`, an id drawn when the service starts, and
//! `counter`, which stays 0: a single node's topology never changes while it runs). Drivers
//! that see it monitor the server with the streaming protocol: a `hello` carrying the
//! `topologyVersion` it was last given and `maxAwaitTimeMS` is answered when the topology
//! changes or when that time has passed, and with the OP_MSG `exhaustAllowed` flag the server
//! goes on answering every `maxAwaitTimeMS` without further requests. The waiting happens in
//! the wire server ([`Service::hello_await`] tells it how long), not on a command thread; the
//! embedded API, which has no monitors, answers such a `hello` at once.

use std::sync::atomic::Ordering;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};

use super::args::Request;
use super::{Connection, Service};
use crate::error::Result;
use crate::{bail, err};

/// The MongoDB version Folio reports.
pub const MONGODB_VERSION: &str = "8.0.0";
/// The wire version of MongoDB 8.0.
pub const MAX_WIRE_VERSION: i32 = 25;
/// `maxBsonObjectSize`.
pub const MAX_BSON_OBJECT_SIZE: i32 = 16 * 1024 * 1024;
/// `maxMessageSizeBytes`.
pub const MAX_MESSAGE_SIZE_BYTES: i32 = 48_000_000;
/// `maxWriteBatchSize`.
pub const MAX_WRITE_BATCH_SIZE: i32 = 100_000;
/// `logicalSessionTimeoutMinutes`; without it drivers disable sessions.
pub const LOGICAL_SESSION_TIMEOUT_MINUTES: i32 = 30;

/// Whether `name` is the handshake (`hello`, or its legacy names).
pub(super) fn is_hello(name: &str) -> bool {
    matches!(name, "hello" | "isMaster" | "ismaster")
}

/// The constant election id of the single member.
fn election_id() -> ObjectId {
    ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1])
}

/// The optime of the last commit, as replica set status fields show it.
fn last_optime(svc: &Service) -> (Document, DateTime) {
    let ts = svc.store.last_committed();
    let date = DateTime::from_millis(i64::from(ts.secs()) * 1000);
    (doc! { "ts": ts.to_bson(), "t": 1_i64 }, date)
}

/// `hello`, `isMaster`, `ismaster`: the server's role, limits and negotiated compression.
pub fn hello(req: &mut Request<'_>) -> Result<Document> {
    let legacy = req.name != "hello";
    awaited_topology(req.svc, req.cmd)?;
    record_client_metadata(req.conn, req.cmd)?;
    let compression = negotiate_compression(req.conn, req.cmd)?;
    let opts = req.svc.options();
    let host = opts.advertise_host.clone();
    let (optime, date) = last_optime(req.svc);

    let mut d = doc! {
        "hosts": [host.clone()],
        "setName": opts.repl_set_name.clone(),
        "setVersion": 1,
    };
    d.insert("topologyVersion", topology_version(req.svc));
    d.insert(if legacy { "ismaster" } else { "isWritablePrimary" }, true);
    d.insert("secondary", false);
    d.insert("primary", host.clone());
    d.insert("me", host);
    d.insert("electionId", election_id());
    d.insert(
        "lastWrite",
        doc! {
            "opTime": optime.clone(),
            "lastWriteDate": date,
            "majorityOpTime": optime,
            "majorityWriteDate": date,
        },
    );
    d.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE);
    d.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE_BYTES);
    d.insert("maxWriteBatchSize", MAX_WRITE_BATCH_SIZE);
    d.insert("localTime", DateTime::now());
    d.insert("logicalSessionTimeoutMinutes", LOGICAL_SESSION_TIMEOUT_MINUTES);
    d.insert("connectionId", req.conn.id as i64);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", MAX_WIRE_VERSION);
    d.insert("readOnly", false);
    if let Some(list) = compression {
        d.insert("compression", list);
    }
    if req.cmd.get("helloOk").is_some_and(crate::doc::truthy) {
        d.insert("helloOk", true);
    }
    if let Some(mechs) = sasl_supported_mechs(req.svc, req.cmd)? {
        d.insert("saslSupportedMechs", mechs);
    }
    if let Some(reply) = speculative_authenticate(req.svc, req.conn, req.cmd) {
        d.insert("speculativeAuthenticate", reply);
    }
    load_balanced_hello(req.svc, req.conn, req.cmd, &mut d)?;
    Ok(d)
}

/// `saslSupportedMechs: "db.user"`: the mechanisms that user has credentials for (absent when
/// the user does not exist, as in MongoDB).
fn sasl_supported_mechs(svc: &Service, cmd: &Document) -> Result<Option<Vec<String>>> {
    let Some(v) = cmd.get("saslSupportedMechs") else {
        return Ok(None);
    };
    let Bson::String(name) = v else {
        bail!(
            TypeMismatch,
            "BSON field 'saslSupportedMechs' is the wrong type, expected type 'string'"
        );
    };
    let Some((db, user)) = name.split_once('.') else {
        bail!(BadValue, "saslSupportedMechs must be of the form 'db.user'");
    };
    let txn = svc.store.begin()?;
    let found = crate::auth::find_user(txn.as_ref(), &crate::auth::UserName::new(user, db));
    txn.abort();
    let Some(user) = found? else {
        return Ok(None);
    };
    let creds = user.get_document("credentials").cloned().unwrap_or_default();
    let mut mechs: Vec<String> = svc
        .options()
        .auth_mechanisms
        .iter()
        .filter(|m| creds.contains_key(m.as_str()))
        .cloned()
        .collect();
    mechs.sort();
    Ok(Some(mechs))
}

/// `speculativeAuthenticate`: the first SASL step (or an X.509 `authenticate`) carried in
/// `hello`, saving a round trip. A failure only leaves the field out of the reply; the driver
/// then authenticates the ordinary way and gets the error there.
fn speculative_authenticate(
    svc: &Service,
    conn: &mut Connection,
    cmd: &Document,
) -> Option<Document> {
    let Ok(inner) = cmd.get_document("speculativeAuthenticate") else {
        return None;
    };
    let db = inner.get_str("db").unwrap_or("admin").to_string();
    let mut inner = inner.clone();
    inner.insert("$db", db.clone());
    let out = if inner.contains_key("saslStart") {
        super::users::sasl_start_in(svc, conn, &inner, &db)
    } else if inner.contains_key("authenticate") {
        super::users::authenticate(&mut Request {
            svc,
            conn,
            cmd: &inner,
            documents: None,
            name: "authenticate",
            db: &db,
        })
    } else {
        return None;
    };
    out.ok()
}

/// Load-balanced mode, as mongos on its `loadBalancerPort`: the first `hello` of a connection
/// must declare `loadBalanced: true` (a driver that does not know it is behind a load balancer
/// would spread one transaction or cursor over several front ends) and is answered with the
/// `serviceId` the driver pins transactions and cursors to. Later hellos are plain. A server not
/// in this mode ignores `loadBalanced: true`, as MongoDB does: the reply has no `serviceId`,
/// and the driver refuses the server.
fn load_balanced_hello(
    svc: &Service,
    conn: &mut Connection,
    cmd: &Document,
    reply: &mut Document,
) -> Result<()> {
    let first = !conn.said_hello;
    conn.said_hello = true;
    if !svc.options().load_balanced || !first {
        return Ok(());
    }
    if !cmd.get("loadBalanced").is_some_and(crate::doc::truthy) {
        bail!(
            LoadBalancerSupportMismatch,
            "The server is being accessed through a load balancer, but this driver does not have \
             load balancing enabled"
        );
    }
    reply.insert("serviceId", svc.service_id);
    // A load balancer hides the topology: answer as mongos does, not as a replica set member,
    // so that no driver tries to monitor the members behind it.
    for field in ["hosts", "setName", "setVersion", "secondary", "primary", "me", "electionId"] {
        reply.remove(field);
    }
    reply.insert("msg", "isdbgrid");
    Ok(())
}

/// `isMaster` / `ismaster`: `hello` with the legacy `ismaster` field.
pub fn is_master(req: &mut Request<'_>) -> Result<Document> {
    hello(req)
}

/// The topology version `hello` reports (see the module documentation).
fn topology_version(svc: &Service) -> Document {
    doc! { "processId": svc.service_id, "counter": 0_i64 }
}

/// Validates an awaitable hello's `topologyVersion` and `maxAwaitTimeMS` as MongoDB does (both
/// or neither, a non-negative counter and wait, a counter no greater than the server's for the
/// same process), and returns how long the request asks to wait: `Some` when its topology
/// version is the current one, `None` when the answer is due at once.
fn awaited_topology(svc: &Service, cmd: &Document) -> Result<Option<std::time::Duration>> {
    let wait = match cmd.get("maxAwaitTimeMS") {
        None => None,
        Some(v) => match crate::doc::compare::as_f64(v) {
            Some(ms) if ms.fract() == 0.0 && ms >= 0.0 => Some(ms as u64),
            Some(ms) if ms.fract() == 0.0 => bail!(
                Location51024,
                "BSON field 'maxAwaitTimeMS' value must be >= 0, actual value '{}'",
                ms
            ),
            _ => bail!(
                TypeMismatch,
                "BSON field 'hello.maxAwaitTimeMS' is the wrong type '{}', expected types \
                 '[long, int, decimal, double]'",
                crate::doc::type_name(v)
            ),
        },
    };
    let version = match cmd.get("topologyVersion") {
        None => None,
        Some(Bson::Document(d)) => Some(d),
        Some(other) => bail!(
            TypeMismatch,
            "BSON field 'hello.topologyVersion' is the wrong type '{}', expected type 'object'",
            crate::doc::type_name(other)
        ),
    };
    let (version, wait) = match (version, wait) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            bail!(Location31368, "A request with a 'topologyVersion' must include 'maxAwaitTimeMS'")
        }
        (None, Some(_)) => {
            bail!(Location31368, "A request with 'maxAwaitTimeMS' must include a 'topologyVersion'")
        }
        (Some(v), Some(w)) => (v, w),
    };
    let process = match version.get("processId") {
        Some(Bson::ObjectId(id)) => *id,
        Some(_) => bail!(
            TypeMismatch,
            "BSON field 'TopologyVersion.processId' is the wrong type, expected type 'objectId'"
        ),
        None => bail!(
            Location40414,
            "BSON field 'TopologyVersion.processId' is missing but a required field"
        ),
    };
    let counter = match version.get("counter").and_then(crate::doc::compare::as_f64) {
        Some(n) => n as i64,
        None => bail!(
            Location40414,
            "BSON field 'TopologyVersion.counter' is missing but a required field"
        ),
    };
    if counter < 0 {
        bail!(Location31372, "topologyVersion must have a non-negative counter");
    }
    if process != svc.service_id {
        // Another process (a restart): the client's view is stale, answer at once.
        return Ok(None);
    }
    if counter > 0 {
        bail!(
            Location31382,
            "Received a topology version with counter: {} which is greater than the server \
             topology version counter: 0",
            counter
        );
    }
    Ok(Some(std::time::Duration::from_millis(wait)))
}

impl Service {
    /// How long the server must wait before it answers `cmd`: for an awaitable `hello`
    /// (`topologyVersion` and `maxAwaitTimeMS`) whose topology version is the current one,
    /// `maxAwaitTimeMS`, since Folio's topology never changes; `None` for anything else, and
    /// for a request that is invalid (dispatching it reports the error).
    pub fn hello_await(&self, cmd: &Document) -> Option<std::time::Duration> {
        if !cmd.keys().next().is_some_and(|name| is_hello(name)) {
            return None;
        }
        awaited_topology(self, cmd).ok().flatten()
    }
}

/// Records `client.application.name` for fail points and logs. Only the first `hello` of a
/// connection may carry `client` (ClientMetadataCannotBeMutated in any later one, as in
/// MongoDB: the metadata is fixed by the first handshake, whether it had any or not).
fn record_client_metadata(conn: &mut Connection, cmd: &Document) -> Result<()> {
    let Some(client) = cmd.get("client") else {
        return Ok(());
    };
    let Bson::Document(client) = client else {
        bail!(TypeMismatch, "BSON field 'client' is the wrong type, expected type 'object'");
    };
    if conn.said_hello {
        bail!(
            ClientMetadataCannotBeMutated,
            "The client metadata document may only be sent in the first hello"
        );
    }
    if let Ok(app) = client.get_document("application") {
        match app.get("name") {
            Some(Bson::String(name)) => conn.app_name = Some(name.clone()),
            Some(_) => bail!(TypeMismatch, "client.application.name must be a string"),
            None => {}
        }
    }
    Ok(())
}

/// Picks the compressors of the request's `compression` list that the transport supports, in the
/// client's order; the first becomes the connection's compressor. `None` when the request did not
/// ask, an empty list when nothing matched.
fn negotiate_compression(conn: &mut Connection, cmd: &Document) -> Result<Option<Vec<String>>> {
    let Some(requested) = cmd.get("compression") else {
        return Ok(None);
    };
    let Bson::Array(requested) = requested else {
        bail!(TypeMismatch, "BSON field 'compression' is the wrong type, expected type 'array'");
    };
    let mut agreed = Vec::new();
    for name in requested {
        let Bson::String(name) = name else {
            bail!(TypeMismatch, "'compression' entries must be strings");
        };
        if conn.supported_compressors.contains(name) && !agreed.contains(name) {
            agreed.push(name.clone());
        }
    }
    conn.compressor = agreed.first().cloned();
    Ok(Some(agreed).filter(|a| !a.is_empty()))
}

/// `buildInfo`: the MongoDB version Folio matches, plus Folio's own.
pub fn build_info(_: &mut Request<'_>) -> Result<Document> {
    Ok(doc! {
        "version": MONGODB_VERSION,
        "gitVersion": format!("folio-{}", env!("CARGO_PKG_VERSION")),
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": [8, 0, 0, 0],
        "openssl": { "running": "disabled", "compiled": "disabled" },
        "buildEnvironment": {
            "distmod": "",
            "distarch": std::env::consts::ARCH,
            "target_arch": std::env::consts::ARCH,
            "target_os": std::env::consts::OS,
        },
        "bits": 64,
        "debug": cfg!(debug_assertions),
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "storageEngines": ["folio"],
        "folioVersion": env!("CARGO_PKG_VERSION"),
    })
}

/// `ping`.
pub fn ping(_: &mut Request<'_>) -> Result<Document> {
    Ok(Document::new())
}

/// `getParameter`: `{getParameter: 1, name: 1, ...}`, `{getParameter: "*"}`, or
/// `{getParameter: {showDetails, allParameters}, name: 1}`.
pub fn get_parameter(req: &mut Request<'_>) -> Result<Document> {
    let (all, details) = match req.cmd.get("getParameter") {
        Some(Bson::String(s)) if s == "*" => (true, false),
        Some(Bson::Document(opts)) => (
            opts.get("allParameters").is_some_and(crate::doc::truthy),
            opts.get("showDetails").is_some_and(crate::doc::truthy),
        ),
        _ => (false, false),
    };
    let mut d = Document::new();
    for p in super::runtime::parameters(req.svc) {
        if !all && !req.cmd.contains_key(p.name) {
            continue;
        }
        let value = if details {
            Bson::Document(doc! {
                "value": p.value.clone(),
                "settableAtRuntime": p.settable_at_runtime(),
                "settableAtStartup": p.settable_at_startup,
            })
        } else {
            p.value
        };
        d.insert(p.name, value);
    }
    if d.is_empty() {
        bail!(InvalidOptions, "no option found to get");
    }
    Ok(d)
}

/// `getCmdLineOpts`: the command line the server was started with.
pub fn get_cmd_line_opts(req: &mut Request<'_>) -> Result<Document> {
    let mut d = req.svc.options().cmd_line.clone();
    if !d.contains_key("argv") {
        d.insert("argv", Bson::Array(Vec::new()));
    }
    if !d.contains_key("parsed") {
        d.insert("parsed", Document::new());
    }
    Ok(d)
}

/// The machine's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Total memory in MiB, when the platform tells.
fn mem_size_mb() -> Option<i64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// `serverStatus.mem`: the process's resident and virtual sizes in MiB (from `/proc`).
fn mem_section() -> Document {
    let pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| {
        let mut it = s.split_whitespace().map(|n| n.parse::<i64>().ok());
        Some((it.next()??, it.next()??))
    });
    match pages {
        // Linux pages are 4 KiB on every platform Folio is built for.
        Some((virt, resident)) => doc! {
            "bits": 64,
            "resident": i32::try_from(resident * 4 / 1024).unwrap_or(i32::MAX),
            "virtual": i32::try_from(virt * 4 / 1024).unwrap_or(i32::MAX),
            "supported": true,
        },
        None => doc! { "bits": 64, "supported": false },
    }
}

/// A counter as the `long` MongoDB reports.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `serverStatus`: process, connection and transaction statistics. Sections can be excluded
/// with `{section: 0}`.
pub fn server_status(req: &mut Request<'_>) -> Result<Document> {
    let (started, started_at) = req.svc.started;
    let uptime = started.elapsed();
    let stats = &req.svc.stats;
    let current = stats.connections_current.load(Ordering::Relaxed);
    let total = stats.connections_total.load(Ordering::Relaxed);
    let committed = stats.txn_committed.load(Ordering::Relaxed);
    let aborted = stats.txn_aborted.load(Ordering::Relaxed);
    let open = req.svc.sessions.open_transactions();
    let max = u64::from(req.svc.options().max_conns);
    let opts = req.svc.options();
    let engine = req.svc.store.stats();
    let (log_max_bytes, _, log_bytes) = req.svc.store.log_usage();
    let mut metrics = req.svc.metrics.metrics_doc(&Service::command_names());
    metrics.insert("cursor", doc! { "open": { "total": count(req.svc.cursors.len() as u64) } });
    metrics.insert(
        "ttl",
        doc! {
            "deletedDocuments": count(stats.ttl_deleted.load(Ordering::Relaxed)),
            "passes": count(stats.ttl_passes.load(Ordering::Relaxed)),
        },
    );
    let mut d = doc! {
        "host": hostname(),
        "version": MONGODB_VERSION,
        "process": "folio",
        "pid": i64::from(std::process::id()),
        "uptime": uptime.as_secs_f64().floor(),
        "uptimeMillis": i64::try_from(uptime.as_millis()).unwrap_or(i64::MAX),
        "uptimeEstimate": i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX),
        "localTime": DateTime::now(),
        "connections": {
            // int, int, long: the types MongoDB reports and typed drivers map.
            "current": i32::try_from(current).unwrap_or(i32::MAX),
            "available": i32::try_from(max.saturating_sub(current)).unwrap_or(i32::MAX),
            "totalCreated": count(total),
        },
        "repl": {
            "hosts": [opts.advertise_host.clone()],
            "setName": opts.repl_set_name.clone(),
            "setVersion": 1,
            "isWritablePrimary": true,
            "secondary": false,
            "primary": opts.advertise_host.clone(),
            "me": opts.advertise_host.clone(),
            "electionId": election_id(),
        },
        // Between statements an open transaction is "inactive"; the counters do not see the
        // instant a statement runs, so everything open is reported inactive.
        "transactions": {
            "retriedCommandsCount": 0_i64,
            "retriedStatementsCount": 0_i64,
            "transactionsCollectionWriteCount": 0_i64,
            "currentActive": 0_i64,
            "currentInactive": count(open as u64),
            "currentOpen": count(open as u64),
            "totalAborted": count(aborted),
            "totalCommitted": count(committed),
            "totalStarted": count(committed.saturating_add(aborted).saturating_add(open as u64)),
            "totalPrepared": 0_i64,
            "totalPreparedThenCommitted": 0_i64,
            "totalPreparedThenAborted": 0_i64,
            "currentPrepared": 0_i64,
        },
        "storageEngine": {
            "name": "folio",
            "supportsCommittedReads": true,
            "persistent": true,
            "startedAt": started_at,
        },
        "metrics": metrics,
        "opcounters": req.svc.metrics.opcounters_doc(),
        "opLatencies": req.svc.metrics.op_latencies_doc(),
        "network": req.svc.metrics.network_doc(),
        "mem": mem_section(),
        "folio": {
            "transactions": {
                "started": count(engine.started),
                "active": count(engine.active),
                "committed": count(engine.commits),
                "aborted": count(engine.aborts),
                "writeConflicts": count(engine.conflicts),
                "commitBatches": count(engine.commit_batches),
                "syncs": count(engine.syncs),
                "gcDeletedVersions": count(engine.gc_deleted),
            },
            "versionCache": {
                "hits": count(engine.cache_hits),
                "misses": count(engine.cache_misses),
            },
            "slowOperations": count(req.svc.metrics.slow_operations.load(Ordering::Relaxed)),
            // Open change streams and tailable cursors (each a consumer of the change log).
            "changeStreamsOpen": count(req.svc.streams.len() as u64),
            "changeLog": {
                "bytes": count(log_bytes),
                "maxBytes": count(log_max_bytes),
            },
            "profilerEntries": count(req.svc.metrics.profiled.load(Ordering::Relaxed)),
        },
        "folioVersion": env!("CARGO_PKG_VERSION"),
    };
    for section in [
        "connections",
        "repl",
        "transactions",
        "storageEngine",
        "metrics",
        "opcounters",
        "opLatencies",
        "network",
        "mem",
        "folio",
    ] {
        if req.cmd.get(section).is_some_and(|v| !crate::doc::truthy(v)) {
            d.remove(section);
        }
    }
    Ok(d)
}

/// `hostInfo`: the machine Folio runs on.
pub fn host_info(_: &mut Request<'_>) -> Result<Document> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = mem_size_mb().map(Bson::Int64).unwrap_or(Bson::Null);
    Ok(doc! {
        "system": {
            "currentTime": DateTime::now(),
            "hostname": hostname(),
            "cpuAddrSize": 64,
            "memSizeMB": mem.clone(),
            "memLimitMB": mem,
            "numCores": i32::try_from(cores).unwrap_or(i32::MAX),
            "cpuArch": std::env::consts::ARCH,
            "numaEnabled": false,
        },
        "os": {
            "type": if cfg!(target_os = "linux") { "Linux" } else { std::env::consts::OS },
            "name": std::env::consts::OS,
        },
        "extra": {},
    })
}

/// `connectionStatus`: who is authenticated on the connection, their roles (inherited ones
/// included) and, with `showPrivileges`, their privileges.
pub fn connection_status(req: &mut Request<'_>) -> Result<Document> {
    req.svc.refresh_privileges(req.conn)?;
    let users: Vec<Bson> = req
        .conn
        .auth
        .users
        .iter()
        .map(|u| Bson::Document(doc! { "user": u.name.name.clone(), "db": u.name.db.clone() }))
        .collect();
    let mut roles = Vec::new();
    let mut privileges = Vec::new();
    for u in &req.conn.auth.users {
        for r in &u.roles {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        for p in &u.privileges {
            crate::auth::roles::merge(&mut privileges, p.clone());
        }
    }
    let mut auth = doc! {
        "authenticatedUsers": users,
        "authenticatedUserRoles": crate::auth::role_documents(&roles),
    };
    if req.cmd.get("showPrivileges").is_some_and(crate::doc::truthy) {
        auth.insert(
            "authenticatedUserPrivileges",
            crate::auth::roles::privilege_documents(&privileges),
        );
    }
    Ok(doc! { "authInfo": auth })
}

/// `whatsmyuri`: the client's address.
pub fn whatsmyuri(req: &mut Request<'_>) -> Result<Document> {
    Ok(doc! { "you": req.conn.remote.clone() })
}

/// `getLog`: the most recent log lines in MongoDB's JSON format (see [`super::recent_log`]).
pub fn get_log(req: &mut Request<'_>) -> Result<Document> {
    let log = match req.cmd.get("getLog") {
        Some(Bson::String(s)) if s == "*" => {
            return Ok(doc! { "names": ["global", "startupWarnings"] });
        }
        Some(Bson::String(s)) if s == "global" => &super::recent_log::GLOBAL,
        Some(Bson::String(s)) if s == "startupWarnings" => &super::recent_log::STARTUP_WARNINGS,
        Some(Bson::String(s)) => return Err(err!(OperationFailed, "No log named '{s}'")),
        Some(other) => {
            return Err(err!(
                TypeMismatch,
                "Argument to getLog must be of type String; found {} of type {:?}",
                other,
                other.element_type()
            ));
        }
        None => return Err(err!(BadValue, "getLog requires an argument")),
    };
    let (lines, total) = log.snapshot();
    Ok(doc! { "totalLinesWritten": i64::try_from(total).unwrap_or(i64::MAX), "log": lines })
}

/// `logRotate`: rotates the log file (see `--logRotate`); `1` or `"server"` name the server
/// log, the only one Folio has.
pub fn log_rotate(req: &mut Request<'_>) -> Result<Document> {
    match req.cmd.get("logRotate") {
        Some(Bson::String(s)) if s == "server" => {}
        Some(Bson::String(s)) if s == "audit" => {
            return Err(err!(
                NoSuchKey,
                "Unknown log type for rotate: audit (Folio has no audit log)"
            ));
        }
        Some(Bson::String(s)) => return Err(err!(NoSuchKey, "Unknown log type for rotate: {s}")),
        _ => {}
    }
    super::recent_log::rotate().map_err(|e| err!(OperationFailed, "log rotation failed: {e}"))?;
    Ok(Document::new())
}

/// `replSetGetStatus`: one healthy PRIMARY.
pub fn repl_set_get_status(req: &mut Request<'_>) -> Result<Document> {
    let opts = req.svc.options();
    let (optime, date) = last_optime(req.svc);
    let (started, started_at) = req.svc.started;
    let uptime = count(started.elapsed().as_secs());
    let election_secs = u32::try_from(started_at.timestamp_millis() / 1000).unwrap_or(0);
    let election_time = bson::Timestamp { time: election_secs, increment: 1 };
    Ok(doc! {
        "set": opts.repl_set_name.clone(),
        "date": DateTime::now(),
        "myState": 1,
        "term": 1_i64,
        "syncSourceHost": "",
        "syncSourceId": -1,
        "heartbeatIntervalMillis": 2000_i64,
        "majorityVoteCount": 1,
        "writeMajorityCount": 1,
        "votingMembersCount": 1,
        "writableVotingMembersCount": 1,
        "optimes": {
            "lastCommittedOpTime": optime.clone(),
            "lastCommittedWallTime": date,
            "appliedOpTime": optime.clone(),
            "durableOpTime": optime.clone(),
            "lastAppliedWallTime": date,
            "lastDurableWallTime": date,
        },
        "members": [{
            "_id": 0,
            "name": opts.advertise_host.clone(),
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": uptime,
            "optime": optime,
            "optimeDate": date,
            "lastAppliedWallTime": date,
            "lastDurableWallTime": date,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": election_time,
            "electionDate": started_at,
            "configVersion": 1,
            "configTerm": 1,
            "self": true,
            "lastHeartbeatMessage": "",
        }],
    })
}

/// `listCommands`: every command in the command table, by name.
pub fn list_commands(req: &mut Request<'_>) -> Result<Document> {
    let mut commands: Vec<&super::table::Spec> = super::table::COMMANDS
        .iter()
        .filter(|c| !c.test_only || req.svc.options().test_commands)
        .collect();
    commands.sort_by_key(|c| c.name);
    let mut d = Document::new();
    for c in commands {
        d.insert(
            c.name,
            doc! {
                "help": "",
                "requiresAuth": super::authz::required(c.name, &doc! { c.name: 1 }, "admin", &Connection::default()) != super::authz::Need::Nothing,
                "secondaryOk": !c.write,
                "adminOnly": c.admin_only,
                "apiVersions": if c.api_v1 { vec!["1"] } else { Vec::new() },
                "deprecatedApiVersions": [],
            },
        );
    }
    Ok(doc! { "commands": d })
}

#[cfg(test)]
mod tests;
