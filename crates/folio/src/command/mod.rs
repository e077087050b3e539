//! Command dispatch: the one path every command takes, from the wire server and the embedded API.
//!
//! A command is a BSON document whose first key is the command name and whose `$db` field names
//! the database. [`Service::dispatch`] looks the name up in the command table, runs the handler and
//! turns the outcome into a reply document (`ok: 1` plus fields, or `ok: 0, errmsg, code,
//! codeName, errorLabels`), always with `operationTime` and `$clusterTime`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bson::{Document, doc};

use crate::error::{Error, Result};
use crate::mvcc::TxnStore;

pub mod handshake;

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
}

/// What dispatch produced for one command.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The reply document.
    pub body: Document,
    /// Close the connection instead of replying (the `closeConnection` fail point).
    pub close_connection: bool,
}

/// The command service: everything a command needs, shared by all connections.
pub struct Service {
    store: Arc<dyn TxnStore>,
    options: ServiceOptions,
    next_connection_id: AtomicU64,
    handshake: handshake::State,
}

impl Service {
    /// Creates the service over a transaction store.
    pub fn new(store: Arc<dyn TxnStore>, options: ServiceOptions) -> Result<Self> {
        Ok(Service {
            store,
            options,
            next_connection_id: AtomicU64::new(1),
            handshake: handshake::State::new(),
        })
    }

    /// The options the service runs with.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// A new connection state with a fresh id.
    pub fn connect(&self, remote: impl Into<String>) -> Connection {
        self.handshake.connected();
        Connection {
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            remote: remote.into(),
            ..Connection::default()
        }
    }

    /// Forgets a connection that has closed (for `serverStatus` connection counts).
    pub fn disconnect(&self, conn: &Connection) {
        let _ = conn;
        self.handshake.disconnected();
    }

    /// Called once when the server shuts down, after in-flight commands have finished.
    pub fn shutdown(&self) {
        // TODO(#2): abort open transactions and flush the store.
    }

    /// Runs one command and returns its reply. Never panics on client input.
    pub fn dispatch(&self, conn: &mut Connection, cmd: Document) -> Reply {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let result: Result<Document> = match handshake::lookup(&name) {
            Some(handler) => handler(self, conn, &cmd),
            None => Err(crate::err!(CommandNotFound, "no such command: '{name}'")),
        };
        let body = match result {
            Ok(mut body) => {
                body.insert("ok", 1.0);
                body
            }
            Err(e) => error_reply(&e),
        };
        let mut body = body;
        let ts = self.store.last_committed().to_bson();
        body.insert("operationTime", ts);
        body.insert(
            "$clusterTime",
            doc! {
                "clusterTime": ts,
                "signature": {
                    "hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] },
                    "keyId": 0_i64,
                },
            },
        );
        Reply { body, close_connection: false }
    }
}

/// The reply document of a failed command.
pub fn error_reply(e: &Error) -> Document {
    let mut d = doc! { "ok": 0.0, "errmsg": e.message.clone(), "code": e.code_number() };
    if !e.code_name().is_empty() {
        d.insert("codeName", e.code_name());
    }
    if !e.labels.is_empty() {
        d.insert("errorLabels", e.labels.clone());
    }
    if let Some(extra) = &e.extra {
        for (k, v) in extra {
            d.insert(k.clone(), v.clone());
        }
    }
    d
}
