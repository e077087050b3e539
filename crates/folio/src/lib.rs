//! Folio's core: a MongoDB-compatible document database engine with snapshot-isolation
//! multi-document transactions, usable in-process (the [`api`] module) or through the wire
//! protocol server, which calls the same [`command`] path.
//!
//! # Layers
//!
//! Lower layers never import upper ones:
//!
//! - [`error`], [`doc`], [`encoding`]: MongoDB error codes, document helpers and type order,
//!   order-preserving key encodings.
//! - [`memory`]: size limits per value and document, and the per-operation and server-wide
//!   memory counters that keep one request from taking the server down.
//! - [`expr`]: aggregation expressions (parser, evaluator, operators, dates, decimals, time
//!   zones), below both the query and the aggregation layers.
//! - [`query`], [`update`], [`agg`]: pure functions on documents (filters, projection, sort,
//!   update operators, aggregation stages).
//! - [`storage`]: the ordered KV engine trait with redb and in-memory engines.
//! - [`mvcc`]: snapshot-isolation transactions above storage ([`mvcc::TxnStore`], [`mvcc::Txn`]).
//! - [`catalog`], [`index`]: databases, collections and indexes, kept in the MVCC keyspace.
//! - [`exec`]: collection operations inside one transaction.
//! - [`cursor`], [`session`]: cursors, logical sessions, the transaction state machine and
//!   retryable-write history.
//! - [`auth`]: SCRAM credentials and conversations, users and roles in `admin.system.users`
//!   and `admin.system.roles`, privileges.
//! - [`command`]: the command table and dispatch, shared by the server and the embedded API.
//! - [`api`]: the embedded API, named like the official `mongodb` crate.

// Every public item says what it is, and no `unwrap` can turn bad input or a bad stored value
// into a panic (tests may unwrap: clippy.toml's allow-unwrap-in-tests).
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod error;

pub mod collation;
pub mod doc;
pub mod encoding;
pub mod memory;
pub mod pcre;

pub mod expr;

pub mod agg;
pub mod query;
pub mod update;

pub mod mvcc;
pub mod storage;

pub mod catalog;
pub mod index;

pub mod exec;

pub mod changes;
pub mod cursor;
pub mod session;

pub mod auth;

pub mod command;

pub mod api;

pub use error::{Code, Error, Result};
