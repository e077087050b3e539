//! Bulk writes: a list of insert, update, replace and delete models, over one or more
//! collections, in one `bulkWrite` command.
//!
//! Like the `mongodb` crate 3.x talking to a MongoDB 8.0 server, [`Client::bulk_write`] sends
//! the `bulkWrite` admin command: the operations in `ops`, each naming its namespace by position
//! in `nsInfo`. The per-operation results come back through a cursor (fetched with `getMore` when
//! the server keeps one open), and failed operations carry their position in the request. An
//! ordered bulk write stops at the first error; an unordered one tries every operation.

use std::borrow::Borrow;
use std::collections::HashMap;

use bson::{Bson, Document, doc};
use serde::Serialize;

use super::client::Client;
use super::collection::{
    Collection, Namespace, UpdateModifications, ensure_id, replacement_document,
};
use super::cursor::{Cursor, SessionCursor};
use super::error::{
    BulkWriteError, Error, ErrorKind, IndexedWriteError, Result, indexed_write_error, reply_i64,
    reply_labels, write_concern_error,
};
use super::results::SummaryBulkWriteResult;
use super::session::ClientSession;

/// The most operations one `bulkWrite` command carries (MongoDB's `maxWriteBatchSize`).
const MAX_BATCH: usize = 100_000;

/// Inserts one document.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertOneModel {
    /// Where.
    pub namespace: Namespace,
    /// The document (it gets an ObjectId `_id` if it has none).
    pub document: Document,
}

/// Updates the first matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateOneModel {
    /// Where.
    pub namespace: Namespace,
    /// Which document.
    pub filter: Document,
    /// The update.
    pub update: UpdateModifications,
    /// Filters of `$[<identifier>]` positional operators.
    pub array_filters: Option<Vec<Document>>,
    /// Insert when none matches.
    pub upsert: Option<bool>,
}

/// Updates every matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateManyModel {
    /// Where.
    pub namespace: Namespace,
    /// Which documents.
    pub filter: Document,
    /// The update.
    pub update: UpdateModifications,
    /// Filters of `$[<identifier>]` positional operators.
    pub array_filters: Option<Vec<Document>>,
    /// Insert when none matches.
    pub upsert: Option<bool>,
}

/// Replaces the first matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaceOneModel {
    /// Where.
    pub namespace: Namespace,
    /// Which document.
    pub filter: Document,
    /// The new document.
    pub replacement: Document,
    /// Insert when none matches.
    pub upsert: Option<bool>,
}

/// Deletes the first matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteOneModel {
    /// Where.
    pub namespace: Namespace,
    /// Which document.
    pub filter: Document,
}

/// Deletes every matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteManyModel {
    /// Where.
    pub namespace: Namespace,
    /// Which documents.
    pub filter: Document,
}

/// One write of a bulk write.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WriteModel {
    /// An insert.
    InsertOne(InsertOneModel),
    /// An update of one document.
    UpdateOne(UpdateOneModel),
    /// An update of every matching document.
    UpdateMany(UpdateManyModel),
    /// A replacement.
    ReplaceOne(ReplaceOneModel),
    /// A delete of one document.
    DeleteOne(DeleteOneModel),
    /// A delete of every matching document.
    DeleteMany(DeleteManyModel),
}

macro_rules! into_write_model {
    ($($model:ident => $variant:ident,)*) => {
        $(impl From<$model> for WriteModel {
            fn from(m: $model) -> Self {
                WriteModel::$variant(m)
            }
        })*
    };
}

into_write_model! {
    InsertOneModel => InsertOne,
    UpdateOneModel => UpdateOne,
    UpdateManyModel => UpdateMany,
    ReplaceOneModel => ReplaceOne,
    DeleteOneModel => DeleteOne,
    DeleteManyModel => DeleteMany,
}

impl WriteModel {
    /// The model's namespace.
    pub fn namespace(&self) -> &Namespace {
        match self {
            WriteModel::InsertOne(m) => &m.namespace,
            WriteModel::UpdateOne(m) => &m.namespace,
            WriteModel::UpdateMany(m) => &m.namespace,
            WriteModel::ReplaceOne(m) => &m.namespace,
            WriteModel::DeleteOne(m) => &m.namespace,
            WriteModel::DeleteMany(m) => &m.namespace,
        }
    }

    /// The model's entry in `ops`, given its namespace's position in `nsInfo`, and the `_id` of
    /// an insert.
    fn operation(&self, ns: i32) -> Result<(Document, Option<Bson>)> {
        fn update(
            ns: i32,
            filter: &Document,
            mods: Bson,
            multi: bool,
            upsert: Option<bool>,
            array_filters: &Option<Vec<Document>>,
        ) -> Document {
            let mut d =
                doc! { "update": ns, "filter": filter.clone(), "updateMods": mods, "multi": multi };
            if let Some(u) = upsert {
                d.insert("upsert", u);
            }
            if let Some(af) = array_filters {
                d.insert("arrayFilters", af.clone());
            }
            d
        }
        Ok(match self {
            WriteModel::InsertOne(m) => {
                let (d, id) = ensure_id(m.document.clone());
                (doc! { "insert": ns, "document": d }, Some(id))
            }
            WriteModel::UpdateOne(m) => {
                let u = m.update.clone().into_bson()?;
                (update(ns, &m.filter, u, false, m.upsert, &m.array_filters), None)
            }
            WriteModel::UpdateMany(m) => {
                let u = m.update.clone().into_bson()?;
                (update(ns, &m.filter, u, true, m.upsert, &m.array_filters), None)
            }
            WriteModel::ReplaceOne(m) => {
                let r = replacement_document(&m.replacement)?;
                (update(ns, &m.filter, Bson::Document(r), false, m.upsert, &None), None)
            }
            WriteModel::DeleteOne(m) => {
                (doc! { "delete": ns, "filter": m.filter.clone(), "multi": false }, None)
            }
            WriteModel::DeleteMany(m) => {
                (doc! { "delete": ns, "filter": m.filter.clone(), "multi": true }, None)
            }
        })
    }
}

impl<T: Serialize + Send + Sync> Collection<T> {
    /// An insert model for this collection.
    pub fn insert_one_model(&self, document: impl Borrow<T>) -> Result<InsertOneModel> {
        let document =
            bson::serialize_to_document(document.borrow()).map_err(Error::serialization)?;
        Ok(InsertOneModel { namespace: self.namespace(), document })
    }

    /// A replace model for this collection.
    pub fn replace_one_model(
        &self,
        filter: Document,
        replacement: impl Borrow<T>,
    ) -> Result<ReplaceOneModel> {
        let replacement = replacement_document(replacement.borrow())?;
        Ok(ReplaceOneModel { namespace: self.namespace(), filter, replacement, upsert: None })
    }
}

impl<T: Send + Sync> Collection<T> {
    /// An update-one model for this collection.
    pub fn update_one_model(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> UpdateOneModel {
        UpdateOneModel {
            namespace: self.namespace(),
            filter,
            update: update.into(),
            array_filters: None,
            upsert: None,
        }
    }

    /// An update-many model for this collection.
    pub fn update_many_model(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> UpdateManyModel {
        UpdateManyModel {
            namespace: self.namespace(),
            filter,
            update: update.into(),
            array_filters: None,
            upsert: None,
        }
    }

    /// A delete-one model for this collection.
    pub fn delete_one_model(&self, filter: Document) -> DeleteOneModel {
        DeleteOneModel { namespace: self.namespace(), filter }
    }

    /// A delete-many model for this collection.
    pub fn delete_many_model(&self, filter: Document) -> DeleteManyModel {
        DeleteManyModel { namespace: self.namespace(), filter }
    }
}

/// The action returned by [`Client::bulk_write`].
#[must_use = "actions do nothing until run"]
pub struct BulkWrite<'a> {
    client: &'a Client,
    models: Vec<WriteModel>,
    ordered: bool,
    session: Option<&'a mut ClientSession>,
}

/// What the batches of a bulk write have gathered so far.
#[derive(Default)]
struct Outcome {
    result: SummaryBulkWriteResult,
    errors: Vec<IndexedWriteError>,
    write_concern_errors: Vec<super::error::WriteConcernError>,
    labels: Vec<String>,
}

impl<'a> BulkWrite<'a> {
    pub(crate) fn new(client: &'a Client, models: Vec<WriteModel>) -> Self {
        BulkWrite { client, models, ordered: true, session: None }
    }

    /// Whether to stop at the first error (the default).
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Runs in a session (and its transaction).
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Runs the writes, in commands of at most 100,000 operations.
    pub fn run(self) -> Result<SummaryBulkWriteResult> {
        if self.models.is_empty() {
            return Err(Error::invalid_argument("a bulk write needs at least one write model"));
        }
        let mut outcome = Outcome::default();
        let mut session = self.session;
        for (chunk_no, chunk) in self.models.chunks(MAX_BATCH).enumerate() {
            let offset = chunk_no * MAX_BATCH;
            let (cmd, ids) = command(chunk, self.ordered)?;
            for (i, id) in ids {
                outcome.result.inserted_ids.insert(offset + i, id);
            }
            let reply = self.client.execute("admin", cmd, session.as_deref_mut())?;
            let failed = absorb(self.client, reply, offset, session.as_deref_mut(), &mut outcome)?;
            if failed && self.ordered {
                break;
            }
        }
        let Outcome { mut result, errors, write_concern_errors, labels } = outcome;
        // Inserts that failed, or never ran after an ordered failure, inserted nothing.
        let first_error = errors.first().map(|e| e.index);
        result.inserted_ids.retain(|i, _| {
            let failed = errors.iter().any(|e| e.index == *i);
            let skipped = self.ordered && first_error.is_some_and(|f| *i > f);
            !failed && !skipped
        });
        if errors.is_empty() && write_concern_errors.is_empty() {
            return Ok(result);
        }
        let failure =
            BulkWriteError { write_errors: errors, write_concern_errors, partial_result: result };
        Err(Error::new(ErrorKind::BulkWrite(failure), labels))
    }
}

/// The `bulkWrite` command for some models, and the `_id`s of their inserts by position.
fn command(models: &[WriteModel], ordered: bool) -> Result<(Document, HashMap<usize, Bson>)> {
    let mut namespaces: Vec<&Namespace> = Vec::new();
    let mut ops = Vec::with_capacity(models.len());
    let mut ids = HashMap::new();
    for (i, m) in models.iter().enumerate() {
        let ns = match namespaces.iter().position(|n| *n == m.namespace()) {
            Some(p) => p,
            None => {
                namespaces.push(m.namespace());
                namespaces.len() - 1
            }
        };
        let (op, id) = m.operation(ns as i32)?;
        if let Some(id) = id {
            ids.insert(i, id);
        }
        ops.push(Bson::Document(op));
    }
    let ns_info: Vec<Bson> =
        namespaces.iter().map(|n| Bson::Document(doc! { "ns": n.to_string() })).collect();
    let cmd = doc! { "bulkWrite": 1, "ops": ops, "nsInfo": ns_info, "ordered": ordered, "errorsOnly": false };
    Ok((cmd, ids))
}

/// Adds one command's reply to the outcome: its counts, and the per-operation results read from
/// its cursor (which takes the reply's batch). Returns whether an operation failed.
fn absorb(
    client: &Client,
    reply: Document,
    offset: usize,
    session: Option<&mut ClientSession>,
    outcome: &mut Outcome,
) -> Result<bool> {
    let r = &mut outcome.result;
    r.inserted_count += reply_i64(&reply, "nInserted").unwrap_or(0);
    r.matched_count += reply_i64(&reply, "nMatched").unwrap_or(0);
    r.modified_count += reply_i64(&reply, "nModified").unwrap_or(0);
    r.upserted_count += reply_i64(&reply, "nUpserted").unwrap_or(0);
    r.deleted_count += reply_i64(&reply, "nDeleted").unwrap_or(0);
    outcome.write_concern_errors.extend(write_concern_error(&reply));
    outcome.labels.extend(reply_labels(&reply));
    let entries: Vec<Document> = match session {
        Some(s) => {
            let mut cursor = SessionCursor::<Document>::new(client.clone(), reply, None)?;
            cursor.iter(s).collect::<Result<_>>()?
        }
        None => Cursor::<Document>::new(client.clone(), reply, None)?.collect::<Result<_>>()?,
    };
    let mut failed = false;
    for entry in entries {
        let index = offset + reply_i64(&entry, "idx").unwrap_or(0).max(0) as usize;
        let ok = matches!(entry.get("ok"), Some(Bson::Double(f)) if *f == 1.0)
            || matches!(entry.get("ok"), Some(Bson::Int32(1)));
        if ok {
            if let Some(id) = entry.get_document("upserted").ok().and_then(|u| u.get("_id")) {
                outcome.result.upserted_ids.insert(index, id.clone());
            }
        } else {
            failed = true;
            let mut e = indexed_write_error(&entry);
            e.index = index;
            outcome.errors.push(e);
        }
    }
    Ok(failed)
}
