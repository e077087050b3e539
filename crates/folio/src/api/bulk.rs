//! Bulk writes: a list of insert, update, replace and delete models run as few commands as
//! possible.
//!
//! Consecutive models of the same kind on the same namespace become one `insert`, `update` or
//! `delete` command, as drivers batch bulk writes for servers without the `bulkWrite` command.
//! Write errors are mapped back to the position of the model in the request. An ordered bulk
//! write stops at the first error; an unordered one runs every batch.

use std::borrow::Borrow;

use bson::{Bson, Document, doc};
use serde::Serialize;

use super::client::Client;
use super::collection::{
    Collection, Namespace, UpdateModifications, ensure_id, replacement_document,
};
use super::error::{
    BulkWriteError, Error, ErrorKind, Result, reply_i64, reply_labels, write_concern_error,
    write_errors,
};
use super::results::SummaryBulkWriteResult;
use super::session::ClientSession;

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

/// The command a model belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
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

    fn kind(&self) -> Kind {
        match self {
            WriteModel::InsertOne(_) => Kind::Insert,
            WriteModel::UpdateOne(_) | WriteModel::UpdateMany(_) | WriteModel::ReplaceOne(_) => {
                Kind::Update
            }
            WriteModel::DeleteOne(_) | WriteModel::DeleteMany(_) => Kind::Delete,
        }
    }

    /// The model's statement in its command, and the `_id` of an insert.
    fn statement(&self) -> Result<(Document, Option<Bson>)> {
        fn update(
            filter: &Document,
            u: Bson,
            multi: bool,
            upsert: Option<bool>,
            af: &Option<Vec<Document>>,
        ) -> Document {
            let mut d = doc! { "q": filter.clone(), "u": u, "multi": multi, "upsert": upsert.unwrap_or(false) };
            if let Some(af) = af {
                d.insert("arrayFilters", af.clone());
            }
            d
        }
        Ok(match self {
            WriteModel::InsertOne(m) => {
                let (d, id) = ensure_id(m.document.clone());
                (d, Some(id))
            }
            WriteModel::UpdateOne(m) => {
                (update(&m.filter, m.update.to_bson()?, false, m.upsert, &m.array_filters), None)
            }
            WriteModel::UpdateMany(m) => {
                (update(&m.filter, m.update.to_bson()?, true, m.upsert, &m.array_filters), None)
            }
            WriteModel::ReplaceOne(m) => {
                let r = replacement_document(&m.replacement)?;
                (update(&m.filter, Bson::Document(r), false, m.upsert, &None), None)
            }
            WriteModel::DeleteOne(m) => (doc! { "q": m.filter.clone(), "limit": 1 }, None),
            WriteModel::DeleteMany(m) => (doc! { "q": m.filter.clone(), "limit": 0 }, None),
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

/// A run of consecutive models that go into one command.
struct Batch {
    kind: Kind,
    ns: Namespace,
    /// Position in the request of each statement.
    indexes: Vec<usize>,
    statements: Vec<Bson>,
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

    /// Runs the writes.
    pub fn run(self) -> Result<SummaryBulkWriteResult> {
        if self.models.is_empty() {
            return Err(Error::invalid_argument("a bulk write needs at least one write model"));
        }
        let mut result = SummaryBulkWriteResult::default();
        let mut batches: Vec<Batch> = Vec::new();
        for (i, m) in self.models.iter().enumerate() {
            let (stmt, id) = m.statement()?;
            if let Some(id) = id {
                result.inserted_ids.insert(i, id);
            }
            let (kind, ns) = (m.kind(), m.namespace());
            match batches.last_mut() {
                Some(b) if b.kind == kind && &b.ns == ns => {
                    b.indexes.push(i);
                    b.statements.push(Bson::Document(stmt));
                }
                _ => batches.push(Batch {
                    kind,
                    ns: ns.clone(),
                    indexes: vec![i],
                    statements: vec![Bson::Document(stmt)],
                }),
            }
        }
        let mut session = self.session;
        let mut errors = Vec::new();
        let mut wces = Vec::new();
        let mut labels = Vec::new();
        for batch in batches {
            let (name, field) = match batch.kind {
                Kind::Insert => ("insert", "documents"),
                Kind::Update => ("update", "updates"),
                Kind::Delete => ("delete", "deletes"),
            };
            let cmd = doc! { name: batch.ns.coll.clone(), field: batch.statements, "ordered": self.ordered };
            let reply = self.client.execute(&batch.ns.db, cmd, session.as_deref_mut())?;
            let mut batch_errors = write_errors(&reply);
            for e in &mut batch_errors {
                e.index = batch.indexes.get(e.index).copied().unwrap_or(e.index);
            }
            tally(&mut result, batch.kind, &batch.indexes, &reply, &batch_errors, self.ordered);
            let failed = !batch_errors.is_empty();
            errors.extend(batch_errors);
            wces.extend(write_concern_error(&reply));
            labels.extend(reply_labels(&reply));
            if failed && self.ordered {
                break;
            }
        }
        if self.ordered {
            // Nothing after the first failure ran.
            if let Some(first) = errors.first().map(|e| e.index) {
                result.inserted_ids.retain(|&i, _| i < first);
            }
        }
        if errors.is_empty() && wces.is_empty() {
            return Ok(result);
        }
        let failure = BulkWriteError {
            write_errors: errors,
            write_concern_errors: wces,
            partial_result: result,
        };
        Err(Error::new(ErrorKind::BulkWrite(failure), labels))
    }
}

/// Adds one command's counts to the result.
fn tally(
    result: &mut SummaryBulkWriteResult,
    kind: Kind,
    indexes: &[usize],
    reply: &Document,
    errors: &[super::error::IndexedWriteError],
    ordered: bool,
) {
    let n = reply_i64(reply, "n").unwrap_or(0);
    match kind {
        Kind::Insert => {
            result.inserted_count += n;
            // Forget the ids of documents that were not inserted.
            let first_failed = errors.iter().map(|e| e.index).min();
            for &i in indexes {
                let skipped = ordered && first_failed.is_some_and(|f| i > f);
                if skipped || errors.iter().any(|e| e.index == i) {
                    result.inserted_ids.remove(&i);
                }
            }
        }
        Kind::Update => {
            let upserted = reply.get_array("upserted").map(|a| a.as_slice()).unwrap_or(&[]);
            result.matched_count += n - upserted.len() as i64;
            result.modified_count += reply_i64(reply, "nModified").unwrap_or(0);
            result.upserted_count += upserted.len() as i64;
            for u in upserted.iter().filter_map(|u| u.as_document()) {
                let pos = reply_i64(u, "index").unwrap_or(0).max(0) as usize;
                if let (Some(&i), Some(id)) = (indexes.get(pos), u.get("_id")) {
                    result.upserted_ids.insert(i, id.clone());
                }
            }
        }
        Kind::Delete => result.deleted_count += n,
    }
}
