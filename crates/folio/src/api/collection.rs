//! [`Collection`] and its action builders.
//!
//! Every operation is an action: `coll.find(filter).sort(..).limit(..).run()?`. Each builds the
//! command document a driver sends for it (`find`, `insert`, `update`, `delete`,
//! `findAndModify`, `aggregate`, `distinct`, `count`, `createIndexes`, `listIndexes`,
//! `dropIndexes`), runs it through [`Client`]'s one shared path, and parses the reply as a driver
//! does. `.session(&mut session)` runs the operation in that session and its transaction.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{Bson, Document, RawDocumentBuf, doc, rawdoc};
use folio_wire::SequenceDocument;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::Client;
use super::cursor::{Cursor, SessionCursor};
use super::error::{
    Error, ErrorKind, InsertManyError, Result, check_single_write, reply_i64, reply_labels,
    write_concern_error, write_errors,
};
use super::options::{IndexModel, ReturnDocument, WriteConcern};
use super::results::{
    CreateIndexResult, CreateIndexesResult, DeleteResult, InsertManyResult, InsertOneResult,
    UpdateResult,
};
use super::session::ClientSession;
use crate::command::Incoming;

/// The most documents one `insert` command carries (MongoDB's `maxWriteBatchSize`).
const MAX_WRITE_BATCH: usize = 100_000;

/// A collection's full name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// The database name.
    pub db: String,
    /// The collection name.
    pub coll: String,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// An update: an update-operator document or an aggregation pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateModifications {
    /// `{$set: {...}, ...}`.
    Document(Document),
    /// `[{$set: ...}, ...]`.
    Pipeline(Vec<Document>),
}

impl From<Document> for UpdateModifications {
    fn from(d: Document) -> Self {
        UpdateModifications::Document(d)
    }
}

impl From<Vec<Document>> for UpdateModifications {
    fn from(p: Vec<Document>) -> Self {
        UpdateModifications::Pipeline(p)
    }
}

impl UpdateModifications {
    /// The `u` / `update` value sent to the server, after the check drivers make: an update
    /// document must consist of update operators.
    pub(crate) fn into_bson(self) -> Result<Bson> {
        match self {
            UpdateModifications::Document(d) => {
                if !d.keys().next().is_some_and(|k| k.starts_with('$')) {
                    return Err(Error::invalid_argument(
                        "update document must have first key starting with '$'",
                    ));
                }
                Ok(Bson::Document(d))
            }
            UpdateModifications::Pipeline(p) => {
                Ok(Bson::Array(p.into_iter().map(Bson::Document).collect()))
            }
        }
    }
}

/// Adds `writeConcern` to a write command when one was set.
fn add_write_concern(cmd: &mut Document, wc: Option<&WriteConcern>) {
    if let Some(wc) = wc {
        cmd.insert("writeConcern", wc.to_document());
    }
}

/// Serializes a replacement document and checks it has no update operators.
pub(crate) fn replacement_document<T: Serialize>(r: &T) -> Result<Document> {
    let d = bson::serialize_to_document(r).map_err(Error::serialization)?;
    if d.keys().next().is_some_and(|k| k.starts_with('$')) {
        return Err(Error::invalid_argument(
            "replacement document must not contain update modifiers",
        ));
    }
    Ok(d)
}

/// Gives a document an ObjectId `_id` (first) when it has none, as drivers do, and returns it.
pub(crate) fn ensure_id(d: Document) -> (Document, Bson) {
    if let Some(id) = d.get("_id") {
        let id = id.clone();
        return (d, id);
    }
    let id = Bson::ObjectId(ObjectId::new());
    let mut out = doc! { "_id": id.clone() };
    out.extend(d);
    (out, id)
}

/// [`ensure_id`] for a document already encoded, made ready to be sent apart from its
/// `insert` command (as a driver sends it, in an OP_MSG document sequence), so that the service
/// stores its bytes as they are rather than decoding and encoding it again.
fn ensure_raw_id(raw: RawDocumentBuf) -> Result<(SequenceDocument, Bson)> {
    let given = raw.get("_id").map_err(Error::serialization)?;
    let (raw, id) = match given {
        Some(id) => {
            let id = folio_wire::to_bson(id).map_err(Error::serialization)?;
            (raw, id)
        }
        None => {
            // The new `_id` element, then the given document's elements and terminator.
            let oid = ObjectId::new();
            let mut bytes = rawdoc! { "_id": oid }.into_bytes();
            bytes.pop();
            bytes.extend_from_slice(raw.as_bytes().get(4..).unwrap_or_default());
            let len = i32::try_from(bytes.len()).map_err(Error::serialization)?;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
            let raw = RawDocumentBuf::from_bytes(bytes).map_err(Error::serialization)?;
            (raw, Bson::ObjectId(oid))
        }
    };
    Ok((SequenceDocument::from_raw(raw).map_err(Error::serialization)?, id))
}

/// A handle to a collection whose documents are (de)serialized as `T`.
pub struct Collection<T: Send + Sync> {
    client: Client,
    ns: Namespace,
    _type: PhantomData<fn() -> T>,
}

impl<T: Send + Sync> Clone for Collection<T> {
    fn clone(&self) -> Self {
        Collection { client: self.client.clone(), ns: self.ns.clone(), _type: PhantomData }
    }
}

impl<T: Send + Sync> std::fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection").field("namespace", &self.ns).finish()
    }
}

impl<T: Send + Sync> Collection<T> {
    pub(crate) fn new(client: Client, db: &str, coll: &str) -> Self {
        Collection {
            client,
            ns: Namespace { db: db.to_string(), coll: coll.to_string() },
            _type: PhantomData,
        }
    }

    /// The collection name.
    pub fn name(&self) -> &str {
        &self.ns.coll
    }

    /// The collection's namespace.
    pub fn namespace(&self) -> Namespace {
        self.ns.clone()
    }

    /// The client this handle belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The same collection with another document type.
    pub fn clone_with_type<U: Send + Sync>(&self) -> Collection<U> {
        Collection { client: self.client.clone(), ns: self.ns.clone(), _type: PhantomData }
    }

    fn run(
        &self,
        cmd: impl Into<Incoming>,
        session: Option<&mut ClientSession>,
    ) -> Result<Document> {
        self.client.execute(&self.ns.db, cmd, session)
    }

    /// Finds documents: `coll.find(doc! {..}).sort(..).run()?` returns a [`Cursor`]; with
    /// `.session(&mut s)` a [`SessionCursor`].
    pub fn find(&self, filter: Document) -> Find<'_, T> {
        Find { coll: self, filter, options: FindOptions::default(), session: ImplicitSession }
    }

    /// Finds the first matching document.
    pub fn find_one(&self, filter: Document) -> FindOne<'_, T> {
        FindOne { coll: self, filter, options: FindOptions::default(), session: None }
    }

    /// Updates the first matching document.
    pub fn update_one(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> Update<'_, T> {
        Update::new(self, filter, UpdateKind::Modify(update.into()), false)
    }

    /// Updates every matching document.
    pub fn update_many(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> Update<'_, T> {
        Update::new(self, filter, UpdateKind::Modify(update.into()), true)
    }

    /// Deletes the first matching document.
    pub fn delete_one(&self, filter: Document) -> Delete<'_, T> {
        Delete { coll: self, filter, limit: 1, session: None, write_concern: None }
    }

    /// Deletes every matching document.
    pub fn delete_many(&self, filter: Document) -> Delete<'_, T> {
        Delete { coll: self, filter, limit: 0, session: None, write_concern: None }
    }

    /// Deletes the first matching document and returns it.
    pub fn find_one_and_delete(&self, filter: Document) -> FindAndModify<'_, T> {
        FindAndModify::new(self, filter, Modification::Delete)
    }

    /// Updates the first matching document and returns it (as it was, or with
    /// `.return_document(ReturnDocument::After)` as it is now).
    pub fn find_one_and_update(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> FindAndModify<'_, T> {
        FindAndModify::new(self, filter, Modification::Update(update.into()))
    }

    /// Counts matching documents exactly, with the aggregation drivers send.
    pub fn count_documents(&self, filter: Document) -> CountDocuments<'_, T> {
        CountDocuments { coll: self, filter, skip: None, limit: None, session: None }
    }

    /// The collection's document count from its metadata (the `count` command without a filter).
    pub fn estimated_document_count(&self) -> EstimatedDocumentCount<'_, T> {
        EstimatedDocumentCount { coll: self, max_time: None }
    }

    /// The distinct values of a field among matching documents.
    pub fn distinct(&self, field_name: impl AsRef<str>, filter: Document) -> Distinct<'_, T> {
        Distinct { coll: self, field: field_name.as_ref().to_string(), filter, session: None }
    }

    /// Runs an aggregation pipeline; the cursor yields documents (use
    /// [`Cursor::with_type`] for another type).
    pub fn aggregate(&self, pipeline: impl IntoIterator<Item = Document>) -> Aggregate<'_, T> {
        Aggregate {
            coll: self,
            pipeline: pipeline.into_iter().collect(),
            batch_size: None,
            max_time: None,
            session: ImplicitSession,
        }
    }

    /// Creates an index.
    pub fn create_index(&self, index: IndexModel) -> CreateIndex<'_, T> {
        CreateIndex { coll: self, indexes: vec![index], session: None }
    }

    /// Creates several indexes in one command.
    pub fn create_indexes(
        &self,
        indexes: impl IntoIterator<Item = IndexModel>,
    ) -> CreateIndexes<'_, T> {
        CreateIndexes {
            inner: CreateIndex {
                coll: self,
                indexes: indexes.into_iter().collect(),
                session: None,
            },
        }
    }

    /// Lists the collection's indexes.
    pub fn list_indexes(&self) -> ListIndexes<'_, T> {
        ListIndexes { coll: self }
    }

    /// The names of the collection's indexes.
    pub fn list_index_names(&self) -> Result<Vec<String>> {
        self.list_indexes().run()?.map(|m| m.map(|m| m.name())).collect()
    }

    /// Drops an index by name.
    pub fn drop_index(&self, name: impl AsRef<str>) -> DropIndex<'_, T> {
        DropIndex { coll: self, index: name.as_ref().to_string() }
    }

    /// Drops every index but `_id`'s.
    pub fn drop_indexes(&self) -> DropIndex<'_, T> {
        DropIndex { coll: self, index: "*".to_string() }
    }

    /// Drops the collection.
    pub fn drop(&self) -> Result<()> {
        match self.run(doc! { "drop": self.ns.coll.clone() }, None) {
            // Dropping a collection that does not exist is not an error for drivers.
            Err(e) if e.code() == Some(26) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

impl<T: Serialize + Send + Sync> Collection<T> {
    /// Inserts one document; it gets an ObjectId `_id` if it has none.
    pub fn insert_one(&self, doc: impl Borrow<T>) -> InsertOne<'_, T> {
        let doc = bson::serialize_to_raw_document_buf(doc.borrow()).map_err(Error::serialization);
        InsertOne { coll: self, doc, session: None, write_concern: None }
    }

    /// Inserts documents, in order by default.
    pub fn insert_many(&self, docs: impl IntoIterator<Item = impl Borrow<T>>) -> InsertMany<'_, T> {
        let docs = docs
            .into_iter()
            .map(|d| bson::serialize_to_raw_document_buf(d.borrow()).map_err(Error::serialization))
            .collect();
        InsertMany { coll: self, docs, ordered: true, session: None, write_concern: None }
    }

    /// Replaces the first matching document.
    pub fn replace_one(&self, filter: Document, replacement: impl Borrow<T>) -> Update<'_, T> {
        let r = replacement_document(replacement.borrow());
        Update::new(self, filter, UpdateKind::Replace(r), false)
    }

    /// Replaces the first matching document and returns it.
    pub fn find_one_and_replace(
        &self,
        filter: Document,
        replacement: impl Borrow<T>,
    ) -> FindAndModify<'_, T> {
        let r = replacement_document(replacement.borrow());
        FindAndModify::new(self, filter, Modification::Replace(r))
    }
}

/// Marks an action without a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImplicitSession;

/// Marks an action that runs in a session.
pub struct ExplicitSession<'a>(&'a mut ClientSession);

/// Options of `find`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindOptions {
    /// `sort`.
    pub sort: Option<Document>,
    /// `projection`.
    pub projection: Option<Document>,
    /// `skip`.
    pub skip: Option<u64>,
    /// `limit` (negative: one batch of at most that many).
    pub limit: Option<i64>,
    /// `batchSize` of the first batch and every getMore.
    pub batch_size: Option<u32>,
    /// `maxTimeMS`.
    pub max_time: Option<Duration>,
}

impl FindOptions {
    fn command(&self, coll: &str, filter: Document) -> Document {
        let mut cmd = doc! { "find": coll, "filter": filter };
        if let Some(s) = &self.sort {
            cmd.insert("sort", s.clone());
        }
        if let Some(p) = &self.projection {
            cmd.insert("projection", p.clone());
        }
        if let Some(s) = self.skip {
            cmd.insert("skip", s as i64);
        }
        match self.limit {
            // A negative limit means one batch, sent as a positive limit with singleBatch.
            Some(l) if l < 0 => {
                cmd.insert("limit", l.saturating_neg());
                cmd.insert("singleBatch", true);
            }
            Some(l) if l > 0 => {
                cmd.insert("limit", l);
            }
            _ => {}
        }
        if let Some(b) = self.batch_size {
            cmd.insert("batchSize", i64::from(b));
        }
        if let Some(t) = self.max_time {
            cmd.insert("maxTimeMS", t.as_millis() as i64);
        }
        cmd
    }
}

/// Option setters shared by `find` and `find_one`.
macro_rules! find_setters {
    () => {
        /// Sets the sort order.
        pub fn sort(mut self, sort: Document) -> Self {
            self.options.sort = Some(sort);
            self
        }

        /// Sets the projection.
        pub fn projection(mut self, projection: Document) -> Self {
            self.options.projection = Some(projection);
            self
        }

        /// Skips this many matching documents.
        pub fn skip(mut self, skip: u64) -> Self {
            self.options.skip = Some(skip);
            self
        }

        /// Sets `maxTimeMS`.
        pub fn max_time(mut self, t: Duration) -> Self {
            self.options.max_time = Some(t);
            self
        }
    };
}

/// The action returned by [`Collection::find`].
#[must_use = "actions do nothing until run"]
pub struct Find<'a, T: Send + Sync, S = ImplicitSession> {
    coll: &'a Collection<T>,
    filter: Document,
    options: FindOptions,
    session: S,
}

impl<'a, T: Send + Sync, S> Find<'a, T, S> {
    find_setters!();

    /// Returns at most this many documents (negative: in one batch).
    pub fn limit(mut self, limit: i64) -> Self {
        self.options.limit = Some(limit);
        self
    }

    /// Sets the batch size.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.options.batch_size = Some(n);
        self
    }

    /// Sets all options at once.
    pub fn with_options(mut self, options: impl Into<Option<FindOptions>>) -> Self {
        self.options = options.into().unwrap_or_default();
        self
    }
}

impl<'a, T: Send + Sync> Find<'a, T, ImplicitSession> {
    /// Runs the query in a session; the result is then a [`SessionCursor`].
    pub fn session(self, session: &'a mut ClientSession) -> Find<'a, T, ExplicitSession<'a>> {
        Find {
            coll: self.coll,
            filter: self.filter,
            options: self.options,
            session: ExplicitSession(session),
        }
    }

    /// Runs the query.
    pub fn run(self) -> Result<Cursor<T>> {
        let cmd = self.options.command(&self.coll.ns.coll, self.filter);
        let reply = self.coll.run(cmd, None)?;
        Cursor::new(self.coll.client.clone(), reply, self.options.batch_size)
    }
}

impl<'a, T: Send + Sync> Find<'a, T, ExplicitSession<'a>> {
    /// Runs the query in the session.
    pub fn run(self) -> Result<SessionCursor<T>> {
        let cmd = self.options.command(&self.coll.ns.coll, self.filter);
        let reply = self.coll.run(cmd, Some(self.session.0))?;
        SessionCursor::new(self.coll.client.clone(), reply, self.options.batch_size)
    }
}

/// The action returned by [`Collection::find_one`].
#[must_use = "actions do nothing until run"]
pub struct FindOne<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    filter: Document,
    options: FindOptions,
    session: Option<&'a mut ClientSession>,
}

impl<'a, T: Send + Sync + DeserializeOwned> FindOne<'a, T> {
    find_setters!();

    /// Runs the query in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Runs the query: the first matching document, if any.
    pub fn run(self) -> Result<Option<T>> {
        // Drivers ask for one document in a single batch.
        let options = FindOptions { limit: Some(-1), batch_size: None, ..self.options };
        let cmd = options.command(&self.coll.ns.coll, self.filter);
        let reply = self.coll.run(cmd, self.session)?;
        let first = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map_err(|e| Error::invalid_response(e.to_string()))?
            .first()
            .cloned();
        match first {
            Some(Bson::Document(d)) => {
                bson::deserialize_from_document(d).map(Some).map_err(Error::deserialization)
            }
            Some(other) => {
                Err(Error::invalid_response(format!("find returned a non-document: {other}")))
            }
            None => Ok(None),
        }
    }
}

/// The action returned by [`Collection::insert_one`].
#[must_use = "actions do nothing until run"]
pub struct InsertOne<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    doc: Result<RawDocumentBuf>,
    session: Option<&'a mut ClientSession>,
    write_concern: Option<WriteConcern>,
}

impl<'a, T: Send + Sync> InsertOne<'a, T> {
    /// Inserts in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the write concern (not inside a transaction: there the commit's applies).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Inserts the document.
    pub fn run(self) -> Result<InsertOneResult> {
        let (doc, inserted_id) = ensure_raw_id(self.doc?)?;
        let mut cmd = doc! { "insert": self.coll.ns.coll.clone(), "ordered": true };
        add_write_concern(&mut cmd, self.write_concern.as_ref());
        let reply = self.coll.run(Incoming { cmd, documents: Some(vec![doc]) }, self.session)?;
        check_single_write(&reply)?;
        Ok(InsertOneResult { inserted_id })
    }
}

/// The action returned by [`Collection::insert_many`].
#[must_use = "actions do nothing until run"]
pub struct InsertMany<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    docs: Result<Vec<RawDocumentBuf>>,
    ordered: bool,
    session: Option<&'a mut ClientSession>,
    write_concern: Option<WriteConcern>,
}

impl<'a, T: Send + Sync> InsertMany<'a, T> {
    /// Whether to stop at the first failed document (the default) or try them all.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Inserts in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the write concern (not inside a transaction: there the commit's applies).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Inserts the documents, in batches of at most 100,000.
    pub fn run(self) -> Result<InsertManyResult> {
        let docs = self.docs?;
        if docs.is_empty() {
            return Err(Error::invalid_argument("No documents provided to insert_many"));
        }
        let mut session = self.session;
        let mut inserted_ids = HashMap::new();
        let mut failure = InsertManyError {
            write_errors: None,
            write_concern_error: None,
            inserted_ids: HashMap::new(),
        };
        let mut labels = Vec::new();
        // The documents move into the commands; their ids stay for the result.
        let (docs, ids): (Vec<SequenceDocument>, Vec<Bson>) =
            docs.into_iter().map(ensure_raw_id).collect::<Result<Vec<_>>>()?.into_iter().unzip();
        let mut docs = docs.into_iter();
        for (chunk_no, chunk) in ids.chunks(MAX_WRITE_BATCH).enumerate() {
            let offset = chunk_no * MAX_WRITE_BATCH;
            let documents = Some(docs.by_ref().take(chunk.len()).collect());
            let mut cmd = doc! { "insert": self.coll.ns.coll.clone(), "ordered": self.ordered };
            add_write_concern(&mut cmd, self.write_concern.as_ref());
            let reply = self.coll.run(Incoming { cmd, documents }, session.as_deref_mut())?;
            let mut errors = write_errors(&reply);
            let failed: Vec<usize> = errors.iter().map(|e| e.index).collect();
            for (i, id) in chunk.iter().enumerate() {
                // In an ordered batch nothing after the first failure was attempted.
                let attempted = !self.ordered || failed.first().is_none_or(|&f| i < f);
                if attempted && !failed.contains(&i) {
                    inserted_ids.insert(offset + i, id.clone());
                }
            }
            for e in &mut errors {
                e.index += offset;
            }
            if !errors.is_empty() {
                failure.write_errors.get_or_insert_with(Vec::new).extend(errors);
            }
            if let Some(wce) = write_concern_error(&reply) {
                failure.write_concern_error = Some(wce);
            }
            labels.extend(reply_labels(&reply));
            if self.ordered && failure.write_errors.is_some() {
                break;
            }
        }
        if failure.write_errors.is_some() || failure.write_concern_error.is_some() {
            failure.inserted_ids = inserted_ids;
            return Err(Error::new(ErrorKind::InsertMany(failure), labels));
        }
        Ok(InsertManyResult { inserted_ids })
    }
}

/// What an update does to matching documents.
enum UpdateKind {
    Modify(UpdateModifications),
    Replace(Result<Document>),
}

/// The action returned by [`Collection::update_one`], [`Collection::update_many`] and
/// [`Collection::replace_one`].
#[must_use = "actions do nothing until run"]
pub struct Update<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    filter: Document,
    kind: UpdateKind,
    multi: bool,
    upsert: Option<bool>,
    array_filters: Option<Vec<Document>>,
    session: Option<&'a mut ClientSession>,
    write_concern: Option<WriteConcern>,
}

impl<'a, T: Send + Sync> Update<'a, T> {
    fn new(coll: &'a Collection<T>, filter: Document, kind: UpdateKind, multi: bool) -> Self {
        Update {
            coll,
            filter,
            kind,
            multi,
            upsert: None,
            array_filters: None,
            session: None,
            write_concern: None,
        }
    }

    /// Inserts a document when none matches.
    pub fn upsert(mut self, upsert: bool) -> Self {
        self.upsert = Some(upsert);
        self
    }

    /// Sets the filters of `$[<identifier>]` positional operators.
    pub fn array_filters(mut self, filters: impl IntoIterator<Item = Document>) -> Self {
        self.array_filters = Some(filters.into_iter().collect());
        self
    }

    /// Updates in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the write concern (not inside a transaction: there the commit's applies).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Runs the update.
    pub fn run(self) -> Result<UpdateResult> {
        let u = match self.kind {
            UpdateKind::Modify(m) => m.into_bson()?,
            UpdateKind::Replace(r) => Bson::Document(r?),
        };
        let mut stmt = doc! { "q": self.filter, "u": u, "multi": self.multi, "upsert": self.upsert.unwrap_or(false) };
        if let Some(af) = self.array_filters {
            stmt.insert("arrayFilters", af);
        }
        let mut cmd =
            doc! { "update": self.coll.ns.coll.clone(), "updates": [stmt], "ordered": true };
        add_write_concern(&mut cmd, self.write_concern.as_ref());
        let reply = self.coll.run(cmd, self.session)?;
        check_single_write(&reply)?;
        Ok(parse_update_reply(&reply))
    }
}

/// Reads `n`, `nModified` and `upserted` of an update reply.
pub(crate) fn parse_update_reply(reply: &Document) -> UpdateResult {
    let n = reply_i64(reply, "n").unwrap_or(0).max(0) as u64;
    let upserted_id = reply
        .get_array("upserted")
        .ok()
        .and_then(|a| a.first())
        .and_then(|u| u.as_document())
        .and_then(|u| u.get("_id"))
        .cloned();
    // `n` counts the upserted document too; matched_count does not.
    let matched_count = if upserted_id.is_some() { n.saturating_sub(1) } else { n };
    UpdateResult {
        matched_count,
        modified_count: reply_i64(reply, "nModified").unwrap_or(0).max(0) as u64,
        upserted_id,
    }
}

/// The action returned by [`Collection::delete_one`] and [`Collection::delete_many`].
#[must_use = "actions do nothing until run"]
pub struct Delete<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    filter: Document,
    limit: i32,
    session: Option<&'a mut ClientSession>,
    write_concern: Option<WriteConcern>,
}

impl<'a, T: Send + Sync> Delete<'a, T> {
    /// Deletes in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the write concern (not inside a transaction: there the commit's applies).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Runs the delete.
    pub fn run(self) -> Result<DeleteResult> {
        let stmt = doc! { "q": self.filter, "limit": self.limit };
        let mut cmd =
            doc! { "delete": self.coll.ns.coll.clone(), "deletes": [stmt], "ordered": true };
        add_write_concern(&mut cmd, self.write_concern.as_ref());
        let reply = self.coll.run(cmd, self.session)?;
        check_single_write(&reply)?;
        Ok(DeleteResult { deleted_count: reply_i64(&reply, "n").unwrap_or(0).max(0) as u64 })
    }
}

/// What a `find_one_and_*` does.
enum Modification {
    Update(UpdateModifications),
    Replace(Result<Document>),
    Delete,
}

/// The action returned by [`Collection::find_one_and_update`],
/// [`Collection::find_one_and_replace`] and [`Collection::find_one_and_delete`].
#[must_use = "actions do nothing until run"]
pub struct FindAndModify<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    filter: Document,
    modification: Modification,
    sort: Option<Document>,
    projection: Option<Document>,
    upsert: Option<bool>,
    return_document: Option<ReturnDocument>,
    array_filters: Option<Vec<Document>>,
    session: Option<&'a mut ClientSession>,
    write_concern: Option<WriteConcern>,
}

impl<'a, T: Send + Sync> FindAndModify<'a, T> {
    fn new(coll: &'a Collection<T>, filter: Document, modification: Modification) -> Self {
        FindAndModify {
            coll,
            filter,
            modification,
            sort: None,
            projection: None,
            upsert: None,
            return_document: None,
            array_filters: None,
            session: None,
            write_concern: None,
        }
    }
}

impl<'a, T: Send + Sync + DeserializeOwned> FindAndModify<'a, T> {
    /// Chooses which document is modified when several match.
    pub fn sort(mut self, sort: Document) -> Self {
        self.sort = Some(sort);
        self
    }

    /// Sets the projection of the returned document.
    pub fn projection(mut self, projection: Document) -> Self {
        self.projection = Some(projection);
        self
    }

    /// Inserts a document when none matches (update and replace only).
    pub fn upsert(mut self, upsert: bool) -> Self {
        self.upsert = Some(upsert);
        self
    }

    /// Returns the document before (default) or after the modification.
    pub fn return_document(mut self, which: ReturnDocument) -> Self {
        self.return_document = Some(which);
        self
    }

    /// Sets the filters of `$[<identifier>]` positional operators.
    pub fn array_filters(mut self, filters: impl IntoIterator<Item = Document>) -> Self {
        self.array_filters = Some(filters.into_iter().collect());
        self
    }

    /// Runs in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the write concern (not inside a transaction: there the commit's applies).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Runs the `findAndModify` and returns the document, if one matched (or was upserted and
    /// the document after is asked for).
    pub fn run(self) -> Result<Option<T>> {
        let mut cmd = doc! { "findAndModify": self.coll.ns.coll.clone(), "query": self.filter };
        match self.modification {
            Modification::Delete => {
                cmd.insert("remove", true);
            }
            Modification::Update(m) => {
                cmd.insert("update", m.into_bson()?);
            }
            Modification::Replace(r) => {
                cmd.insert("update", r?);
            }
        }
        if let Some(s) = self.sort {
            cmd.insert("sort", s);
        }
        if let Some(p) = self.projection {
            cmd.insert("fields", p);
        }
        if let Some(u) = self.upsert {
            cmd.insert("upsert", u);
        }
        if let Some(r) = self.return_document {
            cmd.insert("new", r == ReturnDocument::After);
        }
        add_write_concern(&mut cmd, self.write_concern.as_ref());
        if let Some(af) = self.array_filters {
            cmd.insert("arrayFilters", af);
        }
        let reply = self.coll.run(cmd, self.session)?;
        check_single_write(&reply)?;
        match reply.get("value") {
            Some(Bson::Document(d)) => {
                bson::deserialize_from_document(d.clone()).map(Some).map_err(Error::deserialization)
            }
            Some(Bson::Null) | None => Ok(None),
            Some(other) => Err(Error::invalid_response(format!(
                "findAndModify returned a non-document: {other}"
            ))),
        }
    }
}

/// The action returned by [`Collection::count_documents`].
#[must_use = "actions do nothing until run"]
pub struct CountDocuments<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    filter: Document,
    skip: Option<u64>,
    limit: Option<u64>,
    session: Option<&'a mut ClientSession>,
}

impl<'a, T: Send + Sync> CountDocuments<'a, T> {
    /// Skips this many matching documents.
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = Some(skip);
        self
    }

    /// Counts at most this many.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Counts in a session (and its transaction's snapshot).
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Counts: `$match`, `$skip`, `$limit`, `$group {_id: 1, n: {$sum: 1}}`.
    pub fn run(self) -> Result<u64> {
        let mut pipeline = vec![Bson::Document(doc! { "$match": self.filter })];
        if let Some(s) = self.skip {
            pipeline.push(Bson::Document(doc! { "$skip": s as i64 }));
        }
        if let Some(l) = self.limit {
            pipeline.push(Bson::Document(doc! { "$limit": l as i64 }));
        }
        pipeline.push(Bson::Document(doc! { "$group": { "_id": 1, "n": { "$sum": 1 } } }));
        let cmd =
            doc! { "aggregate": self.coll.ns.coll.clone(), "pipeline": pipeline, "cursor": {} };
        let reply = self.coll.run(cmd, self.session)?;
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map_err(|e| Error::invalid_response(e.to_string()))?;
        // No group at all means nothing matched.
        Ok(batch
            .first()
            .and_then(|d| d.as_document())
            .and_then(|d| reply_i64(d, "n"))
            .unwrap_or(0)
            .max(0) as u64)
    }
}

/// The action returned by [`Collection::estimated_document_count`].
#[must_use = "actions do nothing until run"]
pub struct EstimatedDocumentCount<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    max_time: Option<Duration>,
}

impl<T: Send + Sync> EstimatedDocumentCount<'_, T> {
    /// Sets `maxTimeMS`.
    pub fn max_time(mut self, t: Duration) -> Self {
        self.max_time = Some(t);
        self
    }

    /// Counts.
    pub fn run(self) -> Result<u64> {
        let mut cmd = doc! { "count": self.coll.ns.coll.clone() };
        if let Some(t) = self.max_time {
            cmd.insert("maxTimeMS", t.as_millis() as i64);
        }
        match self.coll.run(cmd, None) {
            Ok(reply) => Ok(reply_i64(&reply, "n").unwrap_or(0).max(0) as u64),
            // A collection that does not exist has no documents.
            Err(e) if e.code() == Some(26) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// The action returned by [`Collection::distinct`].
#[must_use = "actions do nothing until run"]
pub struct Distinct<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    field: String,
    filter: Document,
    session: Option<&'a mut ClientSession>,
}

impl<'a, T: Send + Sync> Distinct<'a, T> {
    /// Runs in a session.
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// The distinct values.
    pub fn run(self) -> Result<Vec<Bson>> {
        let cmd =
            doc! { "distinct": self.coll.ns.coll.clone(), "key": self.field, "query": self.filter };
        let reply = self.coll.run(cmd, self.session)?;
        reply.get_array("values").cloned().map_err(|e| Error::invalid_response(e.to_string()))
    }
}

/// The action returned by [`Collection::aggregate`].
#[must_use = "actions do nothing until run"]
pub struct Aggregate<'a, T: Send + Sync, S = ImplicitSession> {
    coll: &'a Collection<T>,
    pipeline: Vec<Document>,
    batch_size: Option<u32>,
    max_time: Option<Duration>,
    session: S,
}

impl<'a, T: Send + Sync, S> Aggregate<'a, T, S> {
    /// Sets the batch size.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Sets `maxTimeMS`.
    pub fn max_time(mut self, t: Duration) -> Self {
        self.max_time = Some(t);
        self
    }

    fn command(&self) -> Document {
        let mut cursor = Document::new();
        if let Some(b) = self.batch_size {
            cursor.insert("batchSize", i64::from(b));
        }
        let pipeline: Vec<Bson> = self.pipeline.iter().cloned().map(Bson::Document).collect();
        let mut cmd =
            doc! { "aggregate": self.coll.ns.coll.clone(), "pipeline": pipeline, "cursor": cursor };
        if let Some(t) = self.max_time {
            cmd.insert("maxTimeMS", t.as_millis() as i64);
        }
        cmd
    }
}

impl<'a, T: Send + Sync> Aggregate<'a, T, ImplicitSession> {
    /// Runs the pipeline in a session; the result is then a [`SessionCursor`].
    pub fn session(self, session: &'a mut ClientSession) -> Aggregate<'a, T, ExplicitSession<'a>> {
        Aggregate {
            coll: self.coll,
            pipeline: self.pipeline,
            batch_size: self.batch_size,
            max_time: self.max_time,
            session: ExplicitSession(session),
        }
    }

    /// Runs the pipeline.
    pub fn run(self) -> Result<Cursor<Document>> {
        let reply = self.coll.run(self.command(), None)?;
        Cursor::new(self.coll.client.clone(), reply, self.batch_size)
    }
}

impl<'a, T: Send + Sync> Aggregate<'a, T, ExplicitSession<'a>> {
    /// Runs the pipeline in the session.
    pub fn run(self) -> Result<SessionCursor<Document>> {
        let cmd = self.command();
        let reply = self.coll.run(cmd, Some(self.session.0))?;
        SessionCursor::new(self.coll.client.clone(), reply, self.batch_size)
    }
}

/// The action returned by [`Collection::create_index`].
#[must_use = "actions do nothing until run"]
pub struct CreateIndex<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    indexes: Vec<IndexModel>,
    session: Option<&'a mut ClientSession>,
}

impl<'a, T: Send + Sync> CreateIndex<'a, T> {
    /// Creates the index in a session (in a transaction only on a new collection, as MongoDB).
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    fn send(self) -> Result<Vec<String>> {
        if self.indexes.iter().any(|m| m.keys.is_empty()) {
            return Err(Error::invalid_argument("an index needs at least one key"));
        }
        let names = self.indexes.iter().map(IndexModel::name).collect();
        let specs: Vec<Bson> = self.indexes.iter().map(|m| Bson::Document(m.to_spec())).collect();
        let cmd = doc! { "createIndexes": self.coll.ns.coll.clone(), "indexes": specs };
        self.coll.run(cmd, self.session)?;
        Ok(names)
    }

    /// Creates the index and returns its name.
    pub fn run(self) -> Result<CreateIndexResult> {
        let mut names = self.send()?;
        Ok(CreateIndexResult { index_name: names.pop().unwrap_or_default() })
    }
}

/// The action returned by [`Collection::create_indexes`].
#[must_use = "actions do nothing until run"]
pub struct CreateIndexes<'a, T: Send + Sync> {
    inner: CreateIndex<'a, T>,
}

impl<'a, T: Send + Sync> CreateIndexes<'a, T> {
    /// Creates the indexes in a session.
    pub fn session(self, session: &'a mut ClientSession) -> Self {
        CreateIndexes { inner: self.inner.session(session) }
    }

    /// Creates the indexes and returns their names.
    pub fn run(self) -> Result<CreateIndexesResult> {
        Ok(CreateIndexesResult { index_names: self.inner.send()? })
    }
}

/// The action returned by [`Collection::list_indexes`].
#[must_use = "actions do nothing until run"]
pub struct ListIndexes<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
}

impl<T: Send + Sync> ListIndexes<'_, T> {
    /// Lists the indexes.
    pub fn run(self) -> Result<IndexCursor> {
        let reply = self.coll.run(doc! { "listIndexes": self.coll.ns.coll.clone() }, None)?;
        Ok(IndexCursor { inner: Cursor::new(self.coll.client.clone(), reply, None)? })
    }
}

/// A cursor over index descriptions.
pub struct IndexCursor {
    inner: Cursor<Document>,
}

impl Iterator for IndexCursor {
    type Item = Result<IndexModel>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|d| d.map(|d| IndexModel::from_spec(&d)))
    }
}

/// The action returned by [`Collection::drop_index`] and [`Collection::drop_indexes`].
#[must_use = "actions do nothing until run"]
pub struct DropIndex<'a, T: Send + Sync> {
    coll: &'a Collection<T>,
    index: String,
}

impl<T: Send + Sync> DropIndex<'_, T> {
    /// Drops the index.
    pub fn run(self) -> Result<()> {
        let cmd = doc! { "dropIndexes": self.coll.ns.coll.clone(), "index": self.index };
        self.coll.run(cmd, None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_id_puts_a_new_id_first_and_keeps_a_given_one() {
        let (d, id) = ensure_id(doc! { "a": 1 });
        assert_eq!(d.keys().next().map(String::as_str), Some("_id"));
        assert_eq!(d.get("_id"), Some(&id));
        assert!(matches!(id, Bson::ObjectId(_)));
        let (d, id) = ensure_id(doc! { "a": 1, "_id": 7 });
        assert_eq!(id, Bson::Int32(7));
        assert_eq!(d, doc! { "a": 1, "_id": 7 });
    }

    #[test]
    fn ensure_raw_id_puts_a_new_id_first_and_keeps_a_given_one() {
        let (d, id) = ensure_raw_id(rawdoc! { "a": 1, "b": { "c": "x" } }).unwrap();
        let decoded = d.to_document().unwrap();
        assert!(matches!(id, Bson::ObjectId(_)));
        assert_eq!(decoded, doc! { "_id": id, "a": 1, "b": { "c": "x" } });
        assert!(d.shape.canonical);
        let (d, id) = ensure_raw_id(rawdoc! { "a": 1, "_id": 7 }).unwrap();
        assert_eq!(id, Bson::Int32(7));
        assert_eq!(d.to_document().unwrap(), doc! { "a": 1, "_id": 7 });
        let (d, id) = ensure_raw_id(rawdoc! {}).unwrap();
        assert_eq!(d.to_document().unwrap(), doc! { "_id": id });
    }

    #[test]
    fn find_command_shapes() {
        let o = FindOptions {
            limit: Some(-3),
            skip: Some(2),
            batch_size: Some(5),
            ..FindOptions::default()
        };
        assert_eq!(
            o.command("c", doc! { "x": 1 }),
            doc! { "find": "c", "filter": { "x": 1 }, "skip": 2_i64, "limit": 3_i64, "singleBatch": true, "batchSize": 5_i64 }
        );
    }

    #[test]
    fn update_documents_must_use_operators() {
        let e = UpdateModifications::from(doc! { "a": 1 }).into_bson().unwrap_err();
        assert!(matches!(*e.kind, ErrorKind::InvalidArgument { .. }));
        assert!(replacement_document(&doc! { "$set": { "a": 1 } }).is_err());
        assert!(replacement_document(&doc! { "a": 1 }).is_ok());
    }

    #[test]
    fn update_reply_counts_exclude_the_upsert() {
        let r = parse_update_reply(
            &doc! { "n": 1, "nModified": 0, "upserted": [{ "index": 0, "_id": 5 }] },
        );
        assert_eq!(
            r,
            UpdateResult { matched_count: 0, modified_count: 0, upserted_id: Some(Bson::Int32(5)) }
        );
        let r = parse_update_reply(&doc! { "n": 3, "nModified": 2 });
        assert_eq!(r, UpdateResult { matched_count: 3, modified_count: 2, upserted_id: None });
    }
}
