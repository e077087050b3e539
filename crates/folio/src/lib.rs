//! Folio's core: a MongoDB-compatible document database engine with snapshot-isolation
//! multi-document transactions, usable in-process (the [`api`] module) or through the wire
//! protocol server, which calls the same command path ([`Service::dispatch`]).
//!
//! # Layers
//!
//! The modules are private; what other crates use is re-exported here (the command service,
//! the transaction store and engines, metrics and the in-memory log, the parsers the fuzz
//! targets drive). Lower layers never import upper ones:
//!
//! - `error`, `doc`, `encoding`: MongoDB error codes, document helpers and type order,
//!   order-preserving key encodings.
//! - `memory`: size limits per value and document, and the per-operation and server-wide
//!   memory counters that keep one request from taking the server down.
//! - `expr`: aggregation expressions (parser, evaluator, operators, dates, decimals, time
//!   zones), below both the query and the aggregation layers.
//! - `query`, `update`, `agg`: pure functions on documents (filters, projection, sort,
//!   update operators, aggregation stages).
//! - `storage`: the ordered KV [`Engine`] trait with redb and in-memory engines.
//! - `mvcc`: snapshot-isolation transactions above storage ([`TxnStore`], [`Txn`]).
//! - `catalog`, `index`: databases, collections and indexes, kept in the MVCC keyspace.
//! - `exec`: collection operations inside one transaction.
//! - `cursor`, `session`: cursors, logical sessions, the transaction state machine and
//!   retryable-write history.
//! - `auth`: SCRAM credentials and conversations, users and roles in `admin.system.users`
//!   and `admin.system.roles`, privileges.
//! - `command`: the command table and dispatch ([`Service`]), shared by the server and the
//!   embedded API.
//! - [`api`]: the embedded API, named like the official `mongodb` crate.

// Every public item says what it is, and no `unwrap` can turn bad input or a bad stored value
// into a panic (tests may unwrap: clippy.toml's allow-unwrap-in-tests).
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

mod api_strict;
mod error;

mod collation;
mod doc;
mod encoding;
mod memory;
mod pcre;

mod expr;

mod agg;
mod query;
mod update;

mod mvcc;
mod storage;

mod catalog;
mod index;

mod exec;

mod changes;
mod cursor;
mod session;

mod auth;

mod command;

pub mod api;

// What the server, the command-line tool, the PostgreSQL store, the fuzz targets and the
// tests use; everything else stays inside the crate.
pub use agg::{Context as PipelineContext, Pipeline};
pub use catalog::keys::STORAGE_LAYOUT;
pub use command::{
    Connection, Incoming, RawBatch, Reply, Service, ServiceOptions, error_reply, metrics,
    recent_log,
};
pub use error::{Code, Error, Result};
pub use exec::verify;
pub use memory::set_limits;
pub use mvcc::{
    Clock, Conflict, DurableCallback, Mvcc, MvccOptions, ScanIter, Ts, Txn, TxnId, TxnStats,
    TxnStore, WriteResult,
};
pub use query::Filter;
pub use storage::{
    DEFAULT_CACHE_BYTES, Engine, KvIter, Layout, MemoryEngine, RedbEngine, Status, WriteBatch,
    owned_bound,
};
pub use update::{UpdateContext, UpdateSpec};

/// What the tests of Folio's crates reach inside the core for: a SCRAM client, collections and
/// index key ranges to look at or damage, a TTL pass on demand. Not an interface.
#[doc(hidden)]
pub mod testing {
    pub use crate::auth::scram::Mechanism;
    pub use crate::auth::scram::client::Client as ScramClient;
    pub use crate::catalog::keys::{index_prefix, prefix_end};
    pub use crate::catalog::{get_collection, list_collections};
    pub use crate::command::ttl::pass as ttl_pass;
}
