//! The embedded API: Folio in-process, named like the official `mongodb` crate's synchronous API
//! so that code ports between the two.
//!
//! ```no_run
//! use bson::doc;
//! use folio::api::Client;
//!
//! # fn main() -> folio::api::error::Result<()> {
//! let client = Client::in_memory()?;
//! let orders = client.database("shop").collection::<bson::Document>("orders");
//! orders.insert_one(doc! { "sku": 5432, "qty": 1 }).run()?;
//!
//! let mut session = client.start_session().run()?;
//! session.with_transaction(|s| {
//!     orders.update_one(doc! { "sku": 5432 }, doc! { "$inc": { "qty": 1 } }).session(s).run()?;
//!     Ok(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! # One path, like a driver
//!
//! The API does not call the execution layer directly. Every operation builds the command
//! document a MongoDB driver would send (`insert`, `find`, `findAndModify`, `aggregate`...,
//! with `lsid`, `txnNumber`, `autocommit`, `startTransaction` and `readConcern` where a driver
//! puts them), hands it to [`crate::command::Service::dispatch`], and parses the reply the way a
//! driver does. The wire server runs the same dispatch, so an embedded program and a remote
//! driver see the same semantics, errors and labels, and everything the conformance tests prove
//! for one holds for the other. The cost is building and parsing a few small documents per
//! call, which is small next to the work of the call itself.
//!
//! # Differences from the `mongodb` crate
//!
//! - A client opens a data directory ([`Client::open`]) or lives in memory
//!   ([`Client::in_memory`]) instead of connecting to a URI; there is no server selection, read
//!   preference, connection pool or network retry.
//! - Operations outside a session run without an implicit session: nothing to retry over a
//!   network, so writes carry no `txnNumber`.
//! - `list_indexes` yields [`IndexModel`]s through an [`IndexCursor`]; [`Error::code`] and
//!   [`Error::code_name`] are public; write errors carry `key_pattern` and `key_value` for
//!   duplicate keys; [`results::SummaryBulkWriteResult`] also has the inserted and upserted ids.
//! - Options are set on the action builders (`.sort(..)`, `.upsert(..)`); the option structs
//!   exist only where a whole set is commonly passed around ([`FindOptions`],
//!   [`options::TransactionOptions`], [`options::IndexOptions`]).
//!
//! # Layout
//!
//! - [`Client`], [`Database`]: entry points; [`Client::open`] a data directory,
//!   [`Client::in_memory`], or [`Client::with_service`] to share a service with a server.
//! - [`Collection`]: CRUD, aggregation, counts, indexes, as action builders finished by `.run()`.
//! - [`Cursor`], [`SessionCursor`]: batches fetched with `getMore`.
//! - [`ClientSession`]: sessions and transactions, including the convenient
//!   [`ClientSession::with_transaction`].
//! - [`bulk`]: bulk writes over insert, update, replace and delete models.
//! - [`error`], [`options`], [`results`]: as in the `mongodb` crate.

pub mod bulk;
mod client;
mod collection;
mod cursor;
pub mod error;
pub mod options;
pub mod results;
mod session;
#[cfg(test)]
mod tests;

pub use bulk::{
    BulkWrite, DeleteManyModel, DeleteOneModel, InsertOneModel, ReplaceOneModel, UpdateManyModel,
    UpdateOneModel, WriteModel,
};
pub use client::{Client, CreateCollection, Database, RunCommand, StartSession};
pub use collection::{
    Aggregate, Collection, CountDocuments, CreateIndex, CreateIndexes, Delete, Distinct, DropIndex,
    EstimatedDocumentCount, ExplicitSession, Find, FindAndModify, FindOne, FindOptions,
    ImplicitSession, IndexCursor, InsertMany, InsertOne, ListIndexes, Namespace, Update,
    UpdateModifications,
};
pub use cursor::{Cursor, SessionCursor, SessionCursorIter};
pub use error::{Error, Result};
pub use options::{IndexModel, ReturnDocument};
pub use session::{
    AbortTransaction, ClientSession, CommitTransaction, StartTransaction, TransactionState,
    WITH_TRANSACTION_TIMEOUT,
};
