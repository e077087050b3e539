//! The operations of the format, executed through the official driver.
//!
//! Each operation takes its positional arguments (filter, update, documents, ...) out of the argument
//! document; what remains, except `session`, is deserialized into the driver's options type for that
//! operation, whose serde names follow the server's (`batchSize`, `maxTimeMS`, `let`, ...). Results are turned
//! into BSON in the shape the format expects (`insertedId`, `matchedCount`, ...), so the generic matcher can
//! compare them.

use bson::{Bson, Document, doc};
use mongodb::SearchIndexModel;
use mongodb::action::Watch;
use mongodb::options::{
    AggregateOptions, ChangeStreamOptions, CountOptions, CreateCollectionOptions, DeleteManyModel,
    DeleteOneModel, DeleteOptions, DistinctOptions, EstimatedDocumentCountOptions,
    FindOneAndDeleteOptions, FindOneAndReplaceOptions, FindOneAndUpdateOptions, FindOneOptions,
    FindOptions, IndexOptions, InsertManyOptions, InsertOneModel, InsertOneOptions,
    ListCollectionsOptions, ListDatabasesOptions, ListIndexesOptions, ReplaceOneModel,
    ReplaceOptions, RunCursorCommandOptions, SelectionCriteria, TransactionOptions,
    UpdateManyModel, UpdateModifications, UpdateOneModel, UpdateOptions, WriteModel,
};
use mongodb::results::{DeleteResult, UpdateResult};
use mongodb::{ClientSession, Collection, IndexModel, Namespace};
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::collections::VecDeque;

use crate::runner::{CommandCursor, CursorEntity, Entity, OpResult, TestRun, TxnState};

/// Runs `$action` with the session when one is given.
macro_rules! with_session {
    ($session:expr, $action:expr) => {
        match $session {
            Some(s) => $action.session(s).await,
            None => $action.await,
        }
    };
}

/// Collects all documents of a driver cursor.
macro_rules! drain {
    ($cursor:expr) => {{
        let mut c = $cursor;
        let mut out = Vec::new();
        loop {
            match c.advance().await {
                Ok(true) => match c.deserialize_current() {
                    Ok(d) => out.push(Bson::Document(d)),
                    Err(e) => break Err(e),
                },
                Ok(false) => break Ok(Some(Bson::Array(out))),
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Collects all documents of a session cursor.
macro_rules! drain_session {
    ($cursor:expr, $session:expr) => {{
        let mut c = $cursor;
        let mut out = Vec::new();
        loop {
            match c.advance(&mut *$session).await {
                Ok(true) => match c.deserialize_current() {
                    Ok(d) => out.push(Bson::Document(d)),
                    Err(e) => break Err(e),
                },
                Ok(false) => break Ok(Some(Bson::Array(out))),
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Runs a cursor-returning action and collects its documents, with or without a session.
macro_rules! collect_cursor {
    ($session:expr, $action:expr) => {
        match $session {
            Some(s) => match $action.session(&mut *s).await {
                Ok(c) => drain_session!(c, s),
                Err(e) => Err(e),
            },
            None => match $action.await {
                Ok(c) => drain!(c),
                Err(e) => Err(e),
            },
        }
    };
}

/// Runs an action that returns a typed cursor (collection specifications, index models) and
/// collects it as BSON documents, with or without a session.
macro_rules! collect_typed {
    ($session:expr, $action:expr) => {
        match $session {
            Some(s) => match $action.session(&mut *s).await {
                Ok(c) => drain_session_typed(c, s).await,
                Err(e) => Err(e),
            },
            None => match $action.await {
                Ok(c) => drain_typed(c).await,
                Err(e) => Err(e),
            },
        }
    };
}

thread_local! {
    /// Arguments the driver's options types did not take, noted so a failure can say the runner dropped them.
    static IGNORED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes the arguments dropped since the last call (see [`Args::options`]).
pub(crate) fn take_ignored_arguments() -> Vec<String> {
    IGNORED.with(|i| std::mem::take(&mut *i.borrow_mut()))
}

/// The arguments of one operation.
struct Args {
    op: String,
    doc: Document,
}

impl Args {
    fn take(&mut self, k: &str) -> Option<Bson> {
        self.doc.remove(k)
    }
    fn req(&mut self, k: &str) -> Result<Bson, String> {
        self.take(k).ok_or_else(|| format!("{}: missing argument {k}", self.op))
    }
    fn doc(&mut self, k: &str) -> Result<Document, String> {
        match self.req(k)? {
            Bson::Document(d) => Ok(d),
            other => Err(format!("{}: {k} is not a document: {other}", self.op)),
        }
    }
    fn docs(&mut self, k: &str) -> Result<Vec<Document>, String> {
        match self.req(k)? {
            Bson::Array(a) => a
                .into_iter()
                .map(|b| match b {
                    Bson::Document(d) => Ok(d),
                    other => Err(format!("{}: {k} holds a non-document {other}", self.op)),
                })
                .collect(),
            other => Err(format!("{}: {k} is not an array: {other}", self.op)),
        }
    }
    fn string(&mut self, k: &str) -> Result<String, String> {
        match self.req(k)? {
            Bson::String(s) => Ok(s),
            other => Err(format!("{}: {k} is not a string: {other}", self.op)),
        }
    }
    /// Fails when arguments remain that the operation did not take (besides `session`).
    fn finish(mut self) -> Result<(), String> {
        self.doc.remove("session");
        match self.doc.keys().next() {
            Some(k) => Err(format!("{}: unsupported argument {k}", self.op)),
            None => Ok(()),
        }
    }
    /// The remaining arguments as the driver's options type.
    fn options<T: DeserializeOwned>(self) -> Result<T, String> {
        let mut d = self.doc;
        d.remove("session");
        // Client-side operation timeouts are not part of what these areas test against the server.
        d.remove("timeoutMS");
        // Drivers send `rawData` only to servers of 8.2 and later; Folio reports 8.0, so a driver
        // leaves it out (the tests for 8.2 are skipped by their version requirement).
        d.remove("rawData");
        let mut ignored = Vec::new();
        let de = bson::Deserializer::new(Bson::Document(d));
        let options = serde_ignored::deserialize(de, |path| ignored.push(path.to_string()))
            .map_err(|e| format!("{}: options: {e}", self.op))?;
        if !ignored.is_empty() {
            IGNORED.with(|i| {
                i.borrow_mut().extend(ignored.into_iter().map(|p| format!("{}.{p}", self.op)))
            });
        }
        Ok(options)
    }
}

fn update_mods(b: Bson) -> Result<UpdateModifications, String> {
    match b {
        Bson::Document(d) => Ok(UpdateModifications::Document(d)),
        Bson::Array(a) => Ok(UpdateModifications::Pipeline(
            a.into_iter().filter_map(|b| b.as_document().cloned()).collect(),
        )),
        other => Err(format!("update is neither a document nor a pipeline: {other}")),
    }
}

fn update_result(r: UpdateResult) -> Bson {
    let mut d = doc! {
        "matchedCount": r.matched_count as i64,
        "modifiedCount": r.modified_count as i64,
        "upsertedCount": i64::from(r.upserted_id.is_some()),
    };
    if let Some(id) = r.upserted_id {
        d.insert("upsertedId", id);
    }
    Bson::Document(d)
}

/// An update result inside a verbose `clientBulkWrite` result, which has no `upsertedCount`.
fn client_update_result(r: &UpdateResult) -> Bson {
    let mut d =
        doc! {"matchedCount": r.matched_count as i64, "modifiedCount": r.modified_count as i64};
    if let Some(id) = &r.upserted_id {
        d.insert("upsertedId", id.clone());
    }
    Bson::Document(d)
}

fn delete_result(r: DeleteResult) -> Bson {
    Bson::Document(doc! {"deletedCount": r.deleted_count as i64})
}

fn ids_doc(ids: impl IntoIterator<Item = (usize, Bson)>) -> Document {
    let mut v: Vec<_> = ids.into_iter().collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(i, id)| (i.to_string(), id)).collect()
}

impl TestRun<'_> {
    /// Executes a non-special operation on entity `object`. `Err` is a test failure (unknown entity or
    /// operation, malformed arguments); a driver error is returned inside the [`OpResult`].
    pub(crate) async fn execute(
        &mut self,
        name: &str,
        object: &str,
        args: Document,
    ) -> Result<OpResult, String> {
        let a = Args { op: name.to_string(), doc: args };
        let session_name = a.doc.get_str("session").ok().map(String::from);
        let sn = session_name.as_deref();
        match self.entities.get(object) {
            Some(Entity::Collection(_)) => self.collection_op(name, object, a, sn).await,
            Some(Entity::Database(_)) => self.database_op(name, object, a, sn).await,
            Some(Entity::Client(_)) => self.client_op(name, object, a, sn).await,
            Some(Entity::Session(_)) => self.session_op(name, object, a).await,
            Some(Entity::Cursor(_)) => self.cursor_op(name, object).await,
            Some(Entity::Bucket(b)) => bucket_op(b.clone(), name, a).await,
            Some(Entity::Value(_)) | None => Err(format!("no entity {object:?} to run {name} on")),
        }
    }

    async fn collection_op(
        &mut self,
        name: &str,
        object: &str,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let coll = self.collection(object)?;
        // In a transaction the collection's write concern does not apply; the driver handles those writes.
        let in_txn = match sn {
            Some(n) => {
                matches!(self.session_entity(n)?.state, TxnState::Starting | TxnState::InProgress)
            }
            None => false,
        };
        if !in_txn && is_unacknowledged(&coll, &a.doc) && UNACKNOWLEDGED_WRITES.contains(&name) {
            return unacknowledged_write(&coll, name, a.doc).await;
        }
        Ok(match name {
            "insertOne" => {
                let d = a.doc("document")?;
                let o: InsertOneOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.insert_one(d).with_options(o))
                    .map(|r| Some(Bson::Document(doc! {"insertedId": r.inserted_id})))
            }
            "insertMany" => {
                let d = a.docs("documents")?;
                let n = d.len();
                let o: InsertManyOptions = a.options()?;
                let ordered = o.ordered.unwrap_or(true);
                let s = self.session_mut(sn)?;
                let r = with_session!(s, coll.insert_many(d).with_options(o))
                    .map(|r| Some(Bson::Document(doc! {"insertedIds": ids_doc(r.inserted_ids)})));
                if let Err(e) = &r {
                    let inserted = inserted_before_error(e, n, ordered);
                    self.pending_partial =
                        Some(bulk_result_doc(&[inserted, 0, 0, 0, 0], Vec::new(), Vec::new()));
                }
                r
            }
            "updateOne" | "updateMany" | "replaceOne" | "deleteOne" | "deleteMany" => {
                return self.write_one(&coll, name, a, sn).await;
            }
            "find" => {
                let f = a.take("filter").and_then(|b| b.as_document().cloned()).unwrap_or_default();
                let o: FindOptions = a.options()?;
                let s = self.session_mut(sn)?;
                collect_cursor!(s, coll.find(f).with_options(o))
            }
            "findOne" => {
                let f = a.take("filter").and_then(|b| b.as_document().cloned()).unwrap_or_default();
                let o: FindOneOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.find_one(f).with_options(o))
                    .map(|r| Some(r.map_or(Bson::Null, Bson::Document)))
            }
            "createChangeStream" => return self.create_change_stream(coll.watch(), a, sn).await,
            "rename" => {
                let to = a.string("to")?;
                let drop_target = matches!(a.take("dropTarget"), Some(Bson::Boolean(true)));
                let ns = coll.namespace();
                let cmd = doc! {
                    "renameCollection": format!("{}.{}", ns.db, ns.coll),
                    "to": format!("{}.{to}", ns.db),
                    "dropTarget": drop_target,
                };
                let s = self.session_mut(sn)?;
                let admin = coll.client().database("admin");
                with_session!(s, admin.run_command(cmd)).map(|_| None)
            }
            "dropIndex" => {
                let name = a.string("name")?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.drop_index(name)).map(|_| None)
            }
            "createFindCursor" => {
                let f = a.take("filter").and_then(|b| b.as_document().cloned()).unwrap_or_default();
                let o: FindOptions = a.options()?;
                let cursor = match sn {
                    Some(n) => {
                        let s = self.session_mut(Some(n))?.ok_or("no session")?;
                        coll.find(f)
                            .with_options(o)
                            .session(s)
                            .await
                            .map(|c| CursorEntity::Session(c, n.into()))
                    }
                    None => coll.find(f).with_options(o).await.map(CursorEntity::Plain),
                };
                cursor.map(|c| {
                    self.pending_entity = Some(Entity::Cursor(Box::new(c)));
                    None
                })
            }
            "findOneAndUpdate" => {
                let f = a.doc("filter")?;
                let u = update_mods(a.req("update")?)?;
                let o: FindOneAndUpdateOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.find_one_and_update(f, u).with_options(o))
                    .map(|r| Some(r.map_or(Bson::Null, Bson::Document)))
            }
            "findOneAndReplace" => {
                let f = a.doc("filter")?;
                let r = a.doc("replacement")?;
                let o: FindOneAndReplaceOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.find_one_and_replace(f, r).with_options(o))
                    .map(|r| Some(r.map_or(Bson::Null, Bson::Document)))
            }
            "findOneAndDelete" => {
                let f = a.doc("filter")?;
                let o: FindOneAndDeleteOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.find_one_and_delete(f).with_options(o))
                    .map(|r| Some(r.map_or(Bson::Null, Bson::Document)))
            }
            "aggregate" => {
                let p = a.docs("pipeline")?;
                let o: AggregateOptions = a.options()?;
                let s = self.session_mut(sn)?;
                collect_cursor!(s, coll.aggregate(p).with_options(o))
            }
            "countDocuments" => {
                let f = a.doc("filter")?;
                let o: CountOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.count_documents(f).with_options(o))
                    .map(|n| Some(Bson::Int64(n as i64)))
            }
            "estimatedDocumentCount" => {
                let o: EstimatedDocumentCountOptions = a.options()?;
                coll.estimated_document_count()
                    .with_options(o)
                    .await
                    .map(|n| Some(Bson::Int64(n as i64)))
            }
            "count" => {
                // The legacy `count` helper is gone from the driver; send the same command it would.
                let mut cmd = doc! {"count": coll.name()};
                if let Some(f) = a.take("filter") {
                    cmd.insert("query", f);
                }
                let _ = a.take("session");
                // Drivers send `rawData` only to 8.2+ servers; Folio reports 8.0.
                let _ = a.take("rawData");
                cmd.extend(a.doc);
                let db = self.runner_db(&coll);
                let s = self.session_mut(sn)?;
                with_session!(s, db.run_command(cmd)).map(|r| r.get("n").cloned())
            }
            "distinct" => {
                let field = a.string("fieldName")?;
                let f = a.take("filter").and_then(|b| b.as_document().cloned()).unwrap_or_default();
                let o: DistinctOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.distinct(field, f).with_options(o))
                    .map(|v| Some(Bson::Array(v)))
            }
            "bulkWrite" => return self.collection_bulk_write(coll, a, sn).await,
            "createIndex" => {
                let keys = a.doc("keys")?;
                let _ = a.take("session");
                let o: IndexOptions = a.options()?;
                let model = IndexModel::builder().keys(keys).options(o).build();
                let s = self.session_mut(sn)?;
                with_session!(s, coll.create_index(model)).map(|r| Some(Bson::String(r.index_name)))
            }
            "listIndexes" => {
                // Through the driver's helper (its retry rules and getMores apply); its index models
                // serialize back to the server's index documents.
                let o: ListIndexesOptions = a.options()?;
                let s = self.session_mut(sn)?;
                collect_typed!(s, coll.list_indexes().with_options(o))
            }
            "listIndexNames" => {
                let o: ListIndexesOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.list_index_names().with_options(o)).map(names_result)
            }
            "createSearchIndex" => {
                let model = search_index_model(a.doc("model")?)?;
                let _: mongodb::options::CreateSearchIndexOptions = a.options()?;
                coll.create_search_index(model).await.map(|name| Some(Bson::String(name)))
            }
            "createSearchIndexes" => {
                let models = a
                    .docs("models")?
                    .into_iter()
                    .map(search_index_model)
                    .collect::<Result<Vec<_>, _>>()?;
                let _: mongodb::options::CreateSearchIndexOptions = a.options()?;
                coll.create_search_indexes(models).await.map(names_result)
            }
            "updateSearchIndex" => {
                let name = a.string("name")?;
                let definition = a.doc("definition")?;
                let _: mongodb::options::UpdateSearchIndexOptions = a.options()?;
                coll.update_search_index(name, definition).await.map(|_| None)
            }
            "dropSearchIndex" => {
                let name = a.string("name")?;
                let _: mongodb::options::DropSearchIndexOptions = a.options()?;
                coll.drop_search_index(name).await.map(|_| None)
            }
            "listSearchIndexes" => {
                let name = match a.take("name") {
                    Some(Bson::String(n)) => Some(n),
                    None => None,
                    Some(other) => return Err(format!("listSearchIndexes: name {other}")),
                };
                let agg: AggregateOptions = match a.take("aggregationOptions") {
                    Some(o) => {
                        Args { op: "listSearchIndexes".into(), doc: as_doc(o)? }.options()?
                    }
                    None => AggregateOptions::default(),
                };
                let _: mongodb::options::ListSearchIndexOptions = a.options()?;
                let action = coll.list_search_indexes().aggregate_options(agg);
                let action = match name {
                    Some(n) => action.name(n),
                    None => action,
                };
                match action.await {
                    Ok(c) => drain!(c),
                    Err(e) => Err(e),
                }
            }
            "mapReduce" => {
                // The driver has no mapReduce helper: the command a driver's helper sends.
                let cmd = map_reduce_command(coll.name(), a)?;
                let db = self.runner_db(&coll);
                let s = self.session_mut(sn)?;
                with_session!(s, db.run_command(cmd)).map(|r| r.get("results").cloned())
            }
            "dropIndexes" => {
                let _ = a.take("session");
                let s = self.session_mut(sn)?;
                with_session!(s, coll.drop_indexes()).map(|_| None)
            }
            other => return Err(format!("unsupported collection operation {other}")),
        })
    }

    /// Boxes [`TestRun::execute`] for the one place it recurses (a `withTransaction` callback).
    fn execute_boxed<'a>(
        &'a mut self,
        name: &'a str,
        object: &'a str,
        args: Document,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<OpResult, String>> + 'a>> {
        Box::pin(self.execute(name, object, args))
    }

    /// The single-document writes, shared by their operations and the emulated `bulkWrite`.
    async fn write_one(
        &mut self,
        coll: &Collection<Document>,
        name: &str,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        Ok(match name {
            "updateOne" | "updateMany" => {
                let f = a.doc("filter")?;
                let u = update_mods(a.req("update")?)?;
                let o: UpdateOptions = a.options()?;
                let s = self.session_mut(sn)?;
                let r = if name == "updateOne" {
                    with_session!(s, coll.update_one(f, u).with_options(o))
                } else {
                    with_session!(s, coll.update_many(f, u).with_options(o))
                };
                r.map(|r| Some(update_result(r)))
            }
            "replaceOne" => {
                let f = a.doc("filter")?;
                let r = a.doc("replacement")?;
                let o: ReplaceOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, coll.replace_one(f, r).with_options(o))
                    .map(|r| Some(update_result(r)))
            }
            "deleteOne" | "deleteMany" => {
                let f = a.doc("filter")?;
                let o: DeleteOptions = a.options()?;
                let s = self.session_mut(sn)?;
                let r = if name == "deleteOne" {
                    with_session!(s, coll.delete_one(f).with_options(o))
                } else {
                    with_session!(s, coll.delete_many(f).with_options(o))
                };
                r.map(|r| Some(delete_result(r)))
            }
            other => return Err(format!("unsupported write {other}")),
        })
    }

    fn runner_db(&self, coll: &Collection<Document>) -> mongodb::Database {
        let ns = coll.namespace();
        coll.client().database(&ns.db)
    }

    async fn database_op(
        &mut self,
        name: &str,
        object: &str,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let db = self.database(object)?;
        Ok(match name {
            "createChangeStream" => return self.create_change_stream(db.watch(), a, sn).await,
            "runCommand" => {
                let cmd = a.doc("command")?;
                let _ = a.take("commandName");
                let rp = match a.take("readPreference") {
                    Some(b) => Some(SelectionCriteria::ReadPreference(
                        bson::deserialize_from_bson(b)
                            .map_err(|e| format!("readPreference: {e}"))?,
                    )),
                    None => None,
                };
                let s = self.session_mut(sn)?;
                let action = match rp {
                    Some(rp) => db.run_command(cmd).selection_criteria(rp),
                    None => db.run_command(cmd),
                };
                with_session!(s, action).map(|d| Some(Bson::Document(d)))
            }
            "aggregate" => {
                let p = a.docs("pipeline")?;
                let o: AggregateOptions = a.options()?;
                let s = self.session_mut(sn)?;
                collect_cursor!(s, db.aggregate(p).with_options(o))
            }
            "createCollection" => {
                let c = a.string("collection")?;
                let o: CreateCollectionOptions = a.options()?;
                let s = self.session_mut(sn)?;
                let r = with_session!(s, db.create_collection(&c).with_options(o)).map(|_| None);
                // The result is the collection, which `saveResultAsEntity` may name.
                if r.is_ok() {
                    self.pending_entity = Some(Entity::Collection(db.collection(&c)));
                }
                r
            }
            "dropCollection" => {
                let c = a.string("collection")?;
                let s = self.session_mut(sn)?;
                with_session!(s, db.collection::<Document>(&c).drop()).map(|_| None)
            }
            "listCollections" | "listCollectionObjects" => {
                let o: ListCollectionsOptions = a.options()?;
                let s = self.session_mut(sn)?;
                collect_typed!(s, db.list_collections().with_options(o))
            }
            "listCollectionNames" => {
                let o: ListCollectionsOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, db.list_collection_names().with_options(o)).map(names_result)
            }
            "runCursorCommand" => {
                let (cmd, o) = cursor_command(a)?;
                let s = self.session_mut(sn)?;
                collect_cursor!(s, db.run_cursor_command(cmd).with_options(o))
            }
            "createCommandCursor" => {
                let (cmd, o) = cursor_command(a)?;
                let cursor = match sn {
                    Some(n) => {
                        let s = self.session_mut(Some(n))?.ok_or("no session")?;
                        db.run_cursor_command(cmd).with_options(o).session(s).batch().await.map(
                            |c| {
                                CursorEntity::Command(
                                    Box::new(CommandCursor::Session(c, n.into())),
                                    Default::default(),
                                )
                            },
                        )
                    }
                    None => db.run_cursor_command(cmd).with_options(o).batch().await.map(|c| {
                        CursorEntity::Command(Box::new(CommandCursor::Plain(c)), Default::default())
                    }),
                };
                cursor.map(|c| {
                    self.pending_entity = Some(Entity::Cursor(Box::new(c)));
                    None
                })
            }
            "dropDatabase" => {
                let s = self.session_mut(sn)?;
                with_session!(s, db.drop()).map(|_| None)
            }
            "modifyCollection" => {
                let c = a.string("collection")?;
                let _ = a.take("session");
                let mut cmd = doc! {"collMod": c};
                cmd.extend(a.doc);
                db.run_command(cmd).await.map(|d| Some(Bson::Document(d)))
            }
            other => return Err(format!("unsupported database operation {other}")),
        })
    }

    async fn client_op(
        &mut self,
        name: &str,
        object: &str,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let client = self.client(object)?.client.clone();
        Ok(match name {
            "clientBulkWrite" => {
                let models = a.docs("models")?;
                let verbose = a.take("verboseResults").and_then(|b| b.as_bool()).unwrap_or(false);
                let models = models.into_iter().map(write_model).collect::<Result<Vec<_>, _>>()?;
                let o: mongodb::options::BulkWriteOptions = a.options()?;
                let s = self.session_mut(sn)?;
                if verbose {
                    with_session!(s, client.bulk_write(models).with_options(o).verbose_results())
                        .map(|r| Some(verbose_result(&r)))
                } else {
                    with_session!(s, client.bulk_write(models).with_options(o))
                        .map(|r| Some(summary_result(&r)))
                }
            }
            "createChangeStream" => return self.create_change_stream(client.watch(), a, sn).await,
            "listDatabases" | "listDatabaseObjects" => {
                let o: ListDatabasesOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, client.list_databases().with_options(o))
                    .map(|v| Some(Bson::Array(v.iter().map(typed_to_bson).collect())))
            }
            "listDatabaseNames" => {
                let o: ListDatabasesOptions = a.options()?;
                let s = self.session_mut(sn)?;
                with_session!(s, client.list_database_names().with_options(o)).map(names_result)
            }
            "dropDatabase" => {
                let name = a.string("database")?;
                let s = self.session_mut(sn)?;
                with_session!(s, client.database(&name).drop()).map(|_| None)
            }
            other => return Err(format!("unsupported client operation {other}")),
        })
    }

    async fn session_op(&mut self, name: &str, object: &str, a: Args) -> Result<OpResult, String> {
        match name {
            "startTransaction" => {
                let o: TransactionOptions = a.options()?;
                let entity = self.session_entity(object)?;
                let s = entity.session.as_mut().ok_or("session has ended")?;
                let r = s.start_transaction().with_options(o).await.map(|_| None);
                if r.is_ok() {
                    entity.state = TxnState::Starting;
                }
                Ok(r)
            }
            "commitTransaction" => {
                let entity = self.session_entity(object)?;
                let s = entity.session.as_mut().ok_or("session has ended")?;
                let r = s.commit_transaction().await.map(|_| None);
                if entity.state != TxnState::None {
                    entity.state = TxnState::Committed;
                }
                Ok(r)
            }
            "abortTransaction" => {
                let entity = self.session_entity(object)?;
                let s = entity.session.as_mut().ok_or("session has ended")?;
                let r = s.abort_transaction().await.map(|_| None);
                if matches!(entity.state, TxnState::Starting | TxnState::InProgress) {
                    entity.state = TxnState::Aborted;
                }
                Ok(r)
            }
            "endSession" => {
                self.session_entity(object)?.session = None;
                Ok(Ok(None))
            }
            "getSnapshotTime" => {
                let entity = self.session_entity(object)?;
                let s = entity.session.as_ref().ok_or("session has ended")?;
                Ok(Ok(s.snapshot_time().map(Bson::Timestamp)))
            }
            "withTransaction" => self.with_transaction(object, a).await,
            other => Err(format!("unsupported session operation {other}")),
        }
    }

    async fn cursor_op(&mut self, name: &str, object: &str) -> Result<OpResult, String> {
        let Some(Entity::Cursor(mut cursor)) = self.entities.remove(object) else {
            return Err(format!("no cursor entity {object:?}"));
        };
        if let CursorEntity::Stream(c) = &mut *cursor {
            let result = self.stream_op(name, c).await;
            self.entities.insert(object.to_string(), Entity::Cursor(cursor));
            return result;
        }
        if let CursorEntity::Command(c, buffer) = &mut *cursor {
            let result = self.command_cursor_op(name, c, buffer).await;
            // `close` drops the cursor, which kills it on the server.
            if name != "close" {
                self.entities.insert(object.to_string(), Entity::Cursor(cursor));
            }
            return result;
        }
        let result = match name {
            "iterateUntilDocumentOrError" | "iterateOnce" => match &mut *cursor {
                CursorEntity::Plain(c) => match c.advance().await {
                    Ok(true) => c.deserialize_current().map(|d| Some(Bson::Document(d))),
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                },
                CursorEntity::Stream(_) | CursorEntity::Command(..) => Ok(None),
                CursorEntity::Session(c, sname) => {
                    let sname = sname.clone();
                    let s = self.session_mut(Some(&sname))?.ok_or("no session")?;
                    match c.advance(s).await {
                        Ok(true) => c.deserialize_current().map(|d| Some(Bson::Document(d))),
                        Ok(false) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            },
            "close" => return Ok(Ok(None)),
            other => return Err(format!("unsupported cursor operation {other}")),
        };
        self.entities.insert(object.to_string(), Entity::Cursor(cursor));
        Ok(result)
    }

    /// `iterateOnce`, `iterateUntilDocumentOrError` and `close` on a `createCommandCursor`
    /// cursor: the first sends at most one getMore (a tailable cursor's empty batch leaves it
    /// open), the second sends getMores until a document, the end or an error comes.
    async fn command_cursor_op(
        &mut self,
        name: &str,
        c: &mut CommandCursor,
        buffer: &mut VecDeque<Document>,
    ) -> Result<OpResult, String> {
        match name {
            "iterateOnce" => {
                if buffer.is_empty()
                    && let Err(e) = self.next_batch(c, buffer).await?
                {
                    return Ok(Err(e));
                }
                Ok(Ok(buffer.pop_front().map(Bson::Document)))
            }
            "iterateUntilDocumentOrError" => loop {
                if let Some(d) = buffer.pop_front() {
                    return Ok(Ok(Some(Bson::Document(d))));
                }
                match self.next_batch(c, buffer).await? {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(None)),
                    Err(e) => return Ok(Err(e)),
                }
            },
            "close" => Ok(Ok(None)),
            other => Err(format!("unsupported cursor operation {other}")),
        }
    }

    /// Fetches the next batch of a command cursor (its first batch, then one getMore each) into
    /// `buffer`; `Ok(false)` once the cursor is exhausted.
    async fn next_batch(
        &mut self,
        c: &mut CommandCursor,
        buffer: &mut VecDeque<Document>,
    ) -> Result<Result<bool, mongodb::error::Error>, String> {
        use futures_util::StreamExt;
        let batch = match c {
            CommandCursor::Plain(c) => c.next().await,
            CommandCursor::Session(c, sname) => {
                let sname = sname.clone();
                let s = self.session_mut(Some(&sname))?.ok_or("no session")?;
                c.stream(s).next().await
            }
        };
        let batch = match batch {
            None => return Ok(Ok(false)),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(b)) => b,
        };
        let items = match batch.doc_slices() {
            Ok(items) => items,
            Err(e) => return Ok(Err(e)),
        };
        for item in items {
            let doc = item
                .ok()
                .and_then(|i| i.as_document().map(Document::try_from))
                .and_then(Result::ok)
                .ok_or("a cursor batch holds something other than a document")?;
            buffer.push_back(doc);
        }
        Ok(Ok(true))
    }

    /// `createChangeStream` on a collection, a database or the whole deployment (`watch` is
    /// theirs): opens the stream and keeps it for `saveResultAsEntity`; an error is the result.
    async fn create_change_stream(
        &mut self,
        watch: Watch<'_>,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let p = a.docs("pipeline")?;
        let o: ChangeStreamOptions = a.options()?;
        if sn.is_some() {
            return Err("createChangeStream in a session is not supported by the runner".into());
        }
        Ok(watch.pipeline(p).with_options(o).await.map(|c| {
            self.pending_entity = Some(Entity::Cursor(Box::new(CursorEntity::Stream(Box::new(
                c.with_type::<Document>(),
            )))));
            None
        }))
    }

    /// `iterateUntilDocumentOrError` and `iterateOnce` on a change stream: the first waits
    /// (getMore after getMore) until an event or an error comes; the second sends at most one
    /// getMore.
    async fn stream_op(
        &mut self,
        name: &str,
        c: &mut mongodb::change_stream::ChangeStream<Document>,
    ) -> Result<OpResult, String> {
        Ok(match name {
            "iterateUntilDocumentOrError" => loop {
                match c.next_if_any().await {
                    Ok(Some(d)) => break Ok(Some(Bson::Document(d))),
                    Ok(None) if c.is_alive() => continue,
                    Ok(None) => break Ok(None),
                    Err(e) => break Err(e),
                }
            },
            "iterateOnce" => c.next_if_any().await.map(|d| d.map(Bson::Document)),
            "close" => Ok(None),
            other => return Err(format!("unsupported change stream operation {other}")),
        })
    }

    /// The convenient transaction API (`withTransaction`), written out over the driver's
    /// start/commit/abort as its specification gives it; what follows an error is decided in
    /// [`crate::retry`]: an error from the callback aborts the transaction (when one is still
    /// open) and is raised, unless it is labelled `TransientTransactionError`, which retries the
    /// whole transaction; a commit labelled `UnknownTransactionCommitResult` (and not a time
    /// limit) is retried alone. Retries of the transaction wait a jittered, growing backoff, and
    /// everything stops after 120 seconds with the last error.
    async fn with_transaction(&mut self, object: &str, mut a: Args) -> Result<OpResult, String> {
        use crate::retry::{Failure, Next};
        let callback: Vec<crate::model::Operation> = match a.take("callback") {
            Some(b) => bson::deserialize_from_bson(b)
                .map_err(|e| format!("withTransaction callback: {e}"))?,
            None => Vec::new(),
        };
        let o: TransactionOptions = a.options()?;
        let started = std::time::Instant::now();
        let mut attempt: i32 = 0;
        let mut last_error: Option<mongodb::error::Error> = None;
        'retry: loop {
            if attempt > 0 {
                let backoff = crate::retry::backoff(attempt, rand::random::<f64>());
                if !crate::retry::may_wait(started.elapsed(), backoff)
                    && let Some(e) = last_error
                {
                    return Ok(Err(e));
                }
                tokio::time::sleep(backoff).await;
            }
            let entity = self.session_entity(object)?;
            let s = entity.session.as_mut().ok_or("session has ended")?;
            if let Err(e) = s.start_transaction().with_options(o.clone()).await {
                return Ok(Err(e));
            }
            entity.state = TxnState::Starting;
            attempt += 1;
            let mut failure = None;
            for op in &callback {
                if let Err(e) = self.run_callback_op(op).await? {
                    failure = Some(e);
                    break;
                }
            }
            if let Some(e) = failure {
                let entity = self.session_entity(object)?;
                if matches!(entity.state, TxnState::Starting | TxnState::InProgress)
                    && let Some(s) = entity.session.as_mut()
                {
                    let _ = s.abort_transaction().await;
                    entity.state = TxnState::Aborted;
                }
                match crate::retry::after_callback_error(Failure::of(&e), started.elapsed()) {
                    Next::RetryTransaction => {
                        last_error = Some(e);
                        continue 'retry;
                    }
                    Next::RetryCommit | Next::Raise => return Ok(Err(e)),
                }
            }
            let entity = self.session_entity(object)?;
            if !matches!(entity.state, TxnState::Starting | TxnState::InProgress) {
                // The callback ended the transaction itself.
                return Ok(Ok(None));
            }
            loop {
                let entity = self.session_entity(object)?;
                let s = entity.session.as_mut().ok_or("session has ended")?;
                let r = s.commit_transaction().await;
                entity.state = TxnState::Committed;
                let Err(e) = r else { return Ok(Ok(None)) };
                match crate::retry::after_commit_error(Failure::of(&e), started.elapsed()) {
                    Next::RetryCommit => continue,
                    Next::RetryTransaction => {
                        last_error = Some(e);
                        continue 'retry;
                    }
                    Next::Raise => return Ok(Err(e)),
                }
            }
        }
    }

    /// Runs one operation of a `withTransaction` callback: its expectations are checked, and any
    /// error it raised ends the callback with that error, expected or not, as the format requires
    /// (so that `withTransaction` sees it too).
    async fn run_callback_op(
        &mut self,
        op: &crate::model::Operation,
    ) -> Result<Result<(), mongodb::error::Error>, String> {
        let args = op.arguments.clone().unwrap_or_default();
        let r = self.execute_boxed(&op.name, &op.object, args).await?;
        let raised = r.as_ref().err().cloned();
        if raised.is_none() || op.expect_error.is_some() {
            let mut one = op.clone();
            one.arguments = None;
            self.check_op(&one, r)?;
        }
        Ok(raised.map_or(Ok(()), Err))
    }

    /// A collection-level `bulkWrite` as the driver-spec batches (one write command per run of same-kind
    /// requests), sent as commands in the session. Used when a batch holds several updates or deletes, so
    /// command shapes match, and no fail point is set (the driver would not retry these commands).
    async fn batched_bulk_write(
        &mut self,
        coll: &Collection<Document>,
        requests: Vec<Document>,
        ordered: bool,
        common: Document,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let mut batches: Vec<(&'static str, Vec<Bson>, usize)> = Vec::new();
        for (i, r) in requests.into_iter().enumerate() {
            let (kind, spec) = r.into_iter().next().ok_or("empty bulkWrite request")?;
            let mut spec = spec.as_document().cloned().unwrap_or_default();
            if kind == "insertOne"
                && let Ok(d) = spec.get_document_mut("document")
                && !d.contains_key("_id")
            {
                // As a driver does, so the inserted ids are known.
                let mut with_id = doc! {"_id": bson::oid::ObjectId::new()};
                with_id.extend(std::mem::take(d));
                *d = with_id;
            }
            let (cmd, stmt) = statement(&kind, spec)?;
            match batches.last_mut() {
                Some((c, stmts, _)) if *c == cmd => stmts.push(stmt),
                _ => batches.push((cmd, vec![stmt], i)),
            }
        }
        let db = coll.client().database(&coll.namespace().db);
        let mut counts = [0_i64; 5];
        let (mut inserted, mut upserted) = (Vec::new(), Vec::new());
        let mut first_error = None;
        for (cmd_name, stmts, offset) in batches {
            if cmd_name == "insert" {
                for (j, d) in stmts.iter().enumerate() {
                    if let Some(id) = d.as_document().and_then(|d| d.get("_id")) {
                        inserted.push((offset + j, id.clone()));
                    }
                }
            }
            let mut cmd = batch_command(coll, cmd_name, stmts);
            cmd.insert("ordered", ordered);
            for k in ["let", "comment", "bypassDocumentValidation"] {
                if let Some(v) = common.get(k) {
                    cmd.insert(k, v.clone());
                }
            }
            let s = self.session_mut(sn)?;
            let reply = match with_session!(s, db.run_command(cmd)) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let n =
                reply.get("n").and_then(|b| b.as_i32().map(i64::from).or(b.as_i64())).unwrap_or(0);
            match cmd_name {
                "insert" => counts[0] += n,
                "update" => {
                    let ups = reply.get_array("upserted").cloned().unwrap_or_default();
                    for u in &ups {
                        if let Some(u) = u.as_document() {
                            let idx = u.get("index").and_then(|b| b.as_i32()).unwrap_or(0).max(0)
                                as usize;
                            upserted
                                .push((offset + idx, u.get("_id").cloned().unwrap_or(Bson::Null)));
                        }
                    }
                    counts[1] += n - ups.len() as i64;
                    counts[2] += reply
                        .get("nModified")
                        .and_then(|b| b.as_i32().map(i64::from).or(b.as_i64()))
                        .unwrap_or(0);
                    counts[4] += ups.len() as i64;
                }
                _ => counts[3] += n,
            }
            if let Some(errs) = reply.get("writeErrors").or(reply.get("writeConcernError")) {
                let e =
                    mongodb::error::Error::custom(format!("{cmd_name} reported errors: {errs}"));
                if ordered {
                    self.pending_partial = Some(bulk_result_doc(&counts, inserted, upserted));
                    return Ok(Err(e));
                }
                first_error.get_or_insert(e);
            }
        }
        let result = bulk_result_doc(&counts, inserted, upserted);
        if let Some(e) = first_error {
            self.pending_partial = Some(result);
            return Ok(Err(e));
        }
        Ok(Ok(Some(result)))
    }

    /// The collection-level `bulkWrite`, which the driver lacks, as the equivalent single operations.
    async fn collection_bulk_write(
        &mut self,
        coll: Collection<Document>,
        mut a: Args,
        sn: Option<&str>,
    ) -> Result<OpResult, String> {
        let requests = a.docs("requests")?;
        let ordered = a.take("ordered").and_then(|b| b.as_bool()).unwrap_or(true);
        let _ = a.take("session");
        let common = a.doc;
        if has_multi_statement_batch(&requests) && !self.runner.has_fail_points() {
            return self.batched_bulk_write(&coll, requests, ordered, common, sn).await;
        }
        let mut counts = [0_i64; 5]; // inserted, matched, modified, deleted, upserted
        let mut inserted = Vec::new();
        let mut upserted = Vec::new();
        let mut first_error = None;
        let mut i = 0;
        while i < requests.len() {
            let (kind, spec) = requests[i].iter().next().ok_or("empty bulkWrite request")?;
            let spec = spec.as_document().cloned().unwrap_or_default();
            let mut opts = common.clone();
            let (r, consumed): (OpResult, usize) = if kind == "insertOne" {
                let mut docs = Vec::new();
                while let Some((k, v)) = requests.get(i + docs.len()).and_then(|r| r.iter().next())
                    && k == "insertOne"
                {
                    let d = v.as_document().and_then(|v| v.get_document("document").ok()).cloned();
                    docs.push(d.ok_or("insertOne without document")?);
                }
                let n = docs.len();
                opts.insert("ordered", ordered);
                let o: InsertManyOptions = Args { op: "bulkWrite".into(), doc: opts }.options()?;
                let s = self.session_mut(sn)?;
                let r = with_session!(s, coll.insert_many(docs).with_options(o));
                if let Err(e) = &r {
                    counts[0] += inserted_before_error(e, n, ordered);
                }
                (
                    r.map(|r| {
                        counts[0] += r.inserted_ids.len() as i64;
                        inserted.extend(r.inserted_ids.into_iter().map(|(k, v)| (k + i, v)));
                        None
                    }),
                    n,
                )
            } else {
                let mut args = spec.clone();
                args.extend(opts.into_iter().filter(|(k, _)| k != "ordered"));
                let r =
                    self.write_one(&coll, kind, Args { op: kind.clone(), doc: args }, sn).await?;
                let r = r.map(|v| {
                    if let Some(Bson::Document(d)) = &v {
                        let n = |k: &str| {
                            d.get(k)
                                .and_then(|b| b.as_i64().or(b.as_i32().map(i64::from)))
                                .unwrap_or(0)
                        };
                        counts[1] += n("matchedCount");
                        counts[2] += n("modifiedCount");
                        counts[3] += n("deletedCount");
                        counts[4] += n("upsertedCount");
                        if let Some(id) = d.get("upsertedId") {
                            upserted.push((i, id.clone()));
                        }
                    }
                    None
                });
                (r, 1)
            };
            if let Err(e) = r {
                if ordered {
                    self.pending_partial = Some(bulk_result_doc(&counts, inserted, upserted));
                    return Ok(Err(e));
                }
                first_error.get_or_insert(e);
            }
            i += consumed;
        }
        let result = bulk_result_doc(&counts, inserted, upserted);
        if let Some(e) = first_error {
            self.pending_partial = Some(result);
            return Ok(Err(e));
        }
        Ok(Ok(Some(result)))
    }
}

/// Whether consecutive requests of a `bulkWrite` put several updates or deletes into one write command.
fn has_multi_statement_batch(requests: &[Document]) -> bool {
    let kind = |r: &Document| match r.keys().next().map(String::as_str) {
        Some("updateOne" | "updateMany" | "replaceOne") => "update",
        Some("deleteOne" | "deleteMany") => "delete",
        _ => "insert",
    };
    requests.windows(2).any(|w| kind(&w[0]) == kind(&w[1]) && kind(&w[0]) != "insert")
}

/// The writes that `unacknowledged_write` can send.
const UNACKNOWLEDGED_WRITES: [&str; 11] = [
    "insertOne",
    "insertMany",
    "updateOne",
    "updateMany",
    "replaceOne",
    "deleteOne",
    "deleteMany",
    "findOneAndUpdate",
    "findOneAndReplace",
    "findOneAndDelete",
    "bulkWrite",
];

/// Whether a write on `coll` with these arguments asks for `w: 0`.
fn is_unacknowledged(coll: &Collection<Document>, args: &Document) -> bool {
    let w0 = |wc: &mongodb::options::WriteConcern| {
        matches!(wc.w, Some(mongodb::options::Acknowledgment::Nodes(0))) && wc.journal != Some(true)
    };
    match args.get("writeConcern") {
        Some(b) => bson::deserialize_from_bson::<mongodb::options::WriteConcern>(b.clone())
            .is_ok_and(|wc| w0(&wc)),
        None => coll.write_concern().is_some_and(w0),
    }
}

/// Sends a `w: 0` write as the command the driver would build, through the collection's client (so its
/// events are observed). The Rust driver refuses unacknowledged writes, but they are part of what the server
/// must accept; the result is left unset, as the format allows for unacknowledged writes.
async fn unacknowledged_write(
    coll: &Collection<Document>,
    name: &str,
    mut args: Document,
) -> Result<OpResult, String> {
    args.remove("session");
    let wc = args.remove("writeConcern").unwrap_or_else(|| Bson::Document(doc! {"w": 0}));
    let mut top = Document::new();
    for k in ["let", "comment", "bypassDocumentValidation", "ordered"] {
        if let Some(v) = args.remove(k) {
            top.insert(k, v);
        }
    }
    let commands = match name {
        "bulkWrite" => {
            let requests = match args.remove("requests") {
                Some(Bson::Array(a)) => a,
                _ => return Err("bulkWrite: missing requests".into()),
            };
            let mut batches: Vec<(&'static str, Vec<Bson>)> = Vec::new();
            for r in requests {
                let r = r.as_document().cloned().unwrap_or_default();
                let (kind, spec) = r.into_iter().next().ok_or("empty bulkWrite request")?;
                let spec = spec.as_document().cloned().unwrap_or_default();
                let (cmd, stmt) = statement(&kind, spec)?;
                match batches.last_mut() {
                    Some((c, stmts)) if *c == cmd => stmts.push(stmt),
                    _ => batches.push((cmd, vec![stmt])),
                }
            }
            batches.into_iter().map(|(cmd, stmts)| batch_command(coll, cmd, stmts)).collect()
        }
        "insertMany" => {
            let docs = args.remove("documents").unwrap_or(Bson::Array(Vec::new()));
            vec![doc! {"insert": coll.name(), "documents": docs}]
        }
        "findOneAndUpdate" | "findOneAndReplace" | "findOneAndDelete" => {
            let mut cmd = doc! {"findAndModify": coll.name()};
            for (k, v) in args {
                match k.as_str() {
                    "filter" => cmd.insert("query", v),
                    "update" | "replacement" => cmd.insert("update", v),
                    "projection" => cmd.insert("fields", v),
                    "returnDocument" => cmd
                        .insert("new", v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("after"))),
                    _ => cmd.insert(k, v),
                };
            }
            if name == "findOneAndDelete" {
                cmd.insert("remove", true);
            }
            vec![cmd]
        }
        other => {
            let (cmd, stmt) = statement(other, args)?;
            vec![batch_command(coll, cmd, vec![stmt])]
        }
    };
    let db = coll.client().database(&coll.namespace().db);
    for mut cmd in commands {
        cmd.extend(top.clone());
        cmd.insert("writeConcern", wc.clone());
        if let Err(e) = db.run_command(cmd).await {
            return Ok(Err(e));
        }
    }
    Ok(Ok(None))
}

/// The write command a single write goes into and its statement in that command.
fn statement(kind: &str, mut spec: Document) -> Result<(&'static str, Bson), String> {
    let mut take = |k: &str| spec.remove(k);
    let mut stmt = Document::new();
    let cmd = match kind {
        "insertOne" => {
            return Ok(("insert", take("document").ok_or("insertOne: missing document")?));
        }
        "updateOne" | "updateMany" | "replaceOne" => {
            stmt.insert("q", take("filter").unwrap_or(Bson::Document(Document::new())));
            stmt.insert("u", take("update").or_else(|| take("replacement")).unwrap_or(Bson::Null));
            stmt.insert("multi", kind == "updateMany");
            for k in ["upsert", "hint", "collation", "arrayFilters", "sort"] {
                if let Some(v) = take(k) {
                    stmt.insert(k, v);
                }
            }
            "update"
        }
        "deleteOne" | "deleteMany" => {
            stmt.insert("q", take("filter").unwrap_or(Bson::Document(Document::new())));
            stmt.insert("limit", i32::from(kind == "deleteOne"));
            for k in ["hint", "collation"] {
                if let Some(v) = take(k) {
                    stmt.insert(k, v);
                }
            }
            "delete"
        }
        other => return Err(format!("unsupported unacknowledged write {other}")),
    };
    Ok((cmd, Bson::Document(stmt)))
}

fn batch_command(coll: &Collection<Document>, cmd: &str, stmts: Vec<Bson>) -> Document {
    let field = match cmd {
        "insert" => "documents",
        "update" => "updates",
        _ => "deletes",
    };
    doc! {cmd: coll.name(), field: stmts}
}

/// A `BulkWriteResult` document from counts (inserted, matched, modified, deleted, upserted) and ids.
fn bulk_result_doc(
    counts: &[i64; 5],
    inserted: Vec<(usize, Bson)>,
    upserted: Vec<(usize, Bson)>,
) -> Bson {
    Bson::Document(doc! {
        "insertedCount": counts[0],
        "matchedCount": counts[1],
        "modifiedCount": counts[2],
        "deletedCount": counts[3],
        "upsertedCount": counts[4],
        "insertedIds": ids_doc(inserted),
        "upsertedIds": ids_doc(upserted),
    })
}

/// How many documents of a failed `insertMany` of `n` were inserted: up to the first write error when
/// ordered, all but the failed ones when not.
fn inserted_before_error(e: &mongodb::error::Error, n: usize, ordered: bool) -> i64 {
    use mongodb::error::ErrorKind;
    let inserted = match &*e.kind {
        ErrorKind::InsertMany(m) => match &m.write_errors {
            Some(errors) if ordered => errors.iter().map(|w| w.index).min().unwrap_or(n),
            Some(errors) => n.saturating_sub(errors.len()),
            None => n,
        },
        _ => 0,
    };
    inserted as i64
}

/// Collects a typed driver cursor (collection specifications, index models, ...) as BSON documents,
/// in the shape the driver's type serializes to.
async fn drain_typed<T>(mut c: mongodb::Cursor<T>) -> Result<Option<Bson>, mongodb::error::Error>
where
    T: DeserializeOwned + Serialize + Send + Sync + Unpin,
{
    let mut out = Vec::new();
    while c.advance().await? {
        out.push(typed_to_bson(&c.deserialize_current()?));
    }
    Ok(Some(Bson::Array(out)))
}

/// [`drain_typed`] for a cursor opened in a session.
async fn drain_session_typed<T>(
    mut c: mongodb::SessionCursor<T>,
    s: &mut ClientSession,
) -> Result<Option<Bson>, mongodb::error::Error>
where
    T: DeserializeOwned + Serialize + Send + Sync + Unpin,
{
    let mut out = Vec::new();
    while c.advance(s).await? {
        out.push(typed_to_bson(&c.deserialize_current()?));
    }
    Ok(Some(Bson::Array(out)))
}

/// A list of names (of `list*Names`, `createSearchIndexes`) as an operation result.
fn names_result(names: Vec<String>) -> Option<Bson> {
    Some(Bson::Array(names.into_iter().map(Bson::String).collect()))
}

/// A driver result type as BSON (`Null` if it does not serialize, which the matcher then reports).
fn typed_to_bson<T: Serialize>(v: &T) -> Bson {
    bson::serialize_to_bson(v).unwrap_or(Bson::Null)
}

/// A search index model from its description (`definition`, and optionally `name` and `type`).
fn search_index_model(d: Document) -> Result<SearchIndexModel, String> {
    bson::deserialize_from_document(d).map_err(|e| format!("search index model: {e}"))
}

/// An argument that must be a document.
fn as_doc(b: Bson) -> Result<Document, String> {
    match b {
        Bson::Document(d) => Ok(d),
        other => Err(format!("expected a document, got {other}")),
    }
}

/// The GridFS operations of a `bucket` entity, through the driver's GridFS API.
async fn bucket_op(
    bucket: mongodb::gridfs::GridFsBucket,
    name: &str,
    mut a: Args,
) -> Result<OpResult, String> {
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};
    let io_error = |e: std::io::Error| mongodb::error::Error::custom(e.to_string());
    Ok(match name {
        "upload" => {
            let filename = a.string("filename")?;
            let bytes = hex_bytes(&a.req("source")?)?;
            let o = upload_options(&mut a)?;
            a.finish()?;
            let mut up = match bucket.open_upload_stream(filename).with_options(o).await {
                Ok(up) => up,
                Err(e) => return Ok(Err(e)),
            };
            let written = async {
                up.write_all(&bytes).await?;
                up.close().await
            };
            match written.await {
                Ok(()) => Ok(Some(up.id().clone())),
                Err(e) => Err(io_error(e)),
            }
        }
        "download" | "downloadByName" => {
            let stream = if name == "download" {
                let id = a.req("id")?;
                bucket.open_download_stream(id).await
            } else {
                let filename = a.string("filename")?;
                let mut o = mongodb::options::GridFsDownloadByNameOptions::default();
                o.revision = a.take("revision").and_then(|r| r.as_i32());
                bucket.open_download_stream_by_name(filename).with_options(o).await
            };
            a.finish()?;
            match stream {
                Ok(mut s) => {
                    let mut bytes = Vec::new();
                    match s.read_to_end(&mut bytes).await {
                        Ok(_) => Ok(Some(Bson::Binary(bson::Binary {
                            subtype: bson::spec::BinarySubtype::Generic,
                            bytes,
                        }))),
                        Err(e) => Err(io_error(e)),
                    }
                }
                Err(e) => Err(e),
            }
        }
        "delete" => {
            let id = a.req("id")?;
            bucket.delete(id).await.map(|_| None)
        }
        "deleteByName" => {
            let filename = a.string("filename")?;
            bucket.delete_by_name(filename).await.map(|_| None)
        }
        "rename" => {
            let id = a.req("id")?;
            let to = a.string("newFilename")?;
            bucket.rename(id, to).await.map(|_| None)
        }
        "renameByName" => {
            let from = a.string("filename")?;
            let to = a.string("newFilename")?;
            bucket.rename_by_name(from, to).await.map(|_| None)
        }
        "drop" => bucket.drop().await.map(|_| None),
        "find" => {
            let f = a.take("filter").and_then(|b| b.as_document().cloned()).unwrap_or_default();
            let o: mongodb::options::GridFsFindOptions = a.options()?;
            match bucket.find(f).with_options(o).await {
                Ok(c) => drain_typed(c).await,
                Err(e) => Err(e),
            }
        }
        other => return Err(format!("unsupported bucket operation {other}")),
    })
}

/// The `mapReduce` command a driver's helper sends for the operation's arguments: `map` and
/// `reduce` required, `out` inline unless given, every other argument passed on as a field of
/// the command (`session` is the runner's, not the command's).
fn map_reduce_command(coll: &str, mut a: Args) -> Result<Document, String> {
    let mut cmd = doc! {"mapReduce": coll, "map": a.req("map")?};
    cmd.insert("reduce", a.req("reduce")?);
    cmd.insert("out", a.take("out").unwrap_or(Bson::Document(doc! {"inline": 1})));
    let _ = a.take("session");
    cmd.extend(a.doc);
    Ok(cmd)
}

/// The upload options of a GridFS `upload`: `chunkSizeBytes` (a positive 32-bit integer),
/// `metadata` (a document), and `disableMD5`, which needs nothing: the driver computes no MD5.
fn upload_options(a: &mut Args) -> Result<mongodb::options::GridFsUploadOptions, String> {
    let mut o = mongodb::options::GridFsUploadOptions::default();
    if let Some(n) = a.take("chunkSizeBytes") {
        match n.as_i32().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) => o.chunk_size_bytes = Some(n),
            None => return Err(format!("{}: chunkSizeBytes must be a positive int32: {n}", a.op)),
        }
    }
    match a.take("metadata") {
        None => {}
        Some(Bson::Document(m)) => o.metadata = Some(m),
        Some(other) => return Err(format!("{}: metadata is not a document: {other}", a.op)),
    }
    let _ = a.take("disableMD5");
    Ok(o)
}

/// The bytes of a `{$$hexBytes: "..."}` argument.
fn hex_bytes(b: &Bson) -> Result<Vec<u8>, String> {
    let hex = match b {
        Bson::Document(d) => d.get_str("$$hexBytes").map_err(|_| format!("not $$hexBytes: {b}"))?,
        other => return Err(format!("not $$hexBytes: {other}")),
    };
    if !hex.is_ascii() || hex.len() % 2 != 0 {
        return Err(format!("bad hex bytes {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("bad hex {hex:?}: {e}"))
        })
        .collect()
}

/// The command and the cursor options of `runCursorCommand` and `createCommandCursor`.
fn cursor_command(mut a: Args) -> Result<(Document, RunCursorCommandOptions), String> {
    let cmd = a.doc("command")?;
    let _ = a.take("commandName");
    Ok((cmd, a.options()?))
}

/// Builds a driver write model from a `clientBulkWrite` model description.
fn write_model(d: Document) -> Result<WriteModel, String> {
    let (kind, spec) = d.into_iter().next().ok_or("empty clientBulkWrite model")?;
    let Bson::Document(mut spec) = spec else {
        return Err(format!("clientBulkWrite model {kind} is not a document"));
    };
    let ns = spec.get_str("namespace").map_err(|_| format!("{kind}: missing namespace"))?;
    let (db, coll) = ns.split_once('.').ok_or_else(|| format!("bad namespace {ns}"))?;
    let namespace = Namespace::new(db, coll);
    let mut take_doc = |k: &str| match spec.remove(k) {
        Some(Bson::Document(d)) => Some(d),
        _ => None,
    };
    let filter = take_doc("filter").unwrap_or_default();
    let collation = take_doc("collation");
    let sort = take_doc("sort");
    let array_filters = match spec.remove("arrayFilters") {
        Some(Bson::Array(a)) => Some(a),
        _ => None,
    };
    let hint = spec.remove("hint");
    let upsert = spec.get_bool("upsert").ok();
    Ok(match kind.as_str() {
        "insertOne" => InsertOneModel::builder()
            .namespace(namespace)
            .document(
                spec.get_document("document").map_err(|_| "insertOne: missing document")?.clone(),
            )
            .build()
            .into(),
        "updateOne" => UpdateOneModel::builder()
            .namespace(namespace)
            .filter(filter)
            .update(update_mods(spec.get("update").cloned().unwrap_or(Bson::Null))?)
            .array_filters(array_filters)
            .collation(collation)
            .hint(hint)
            .upsert(upsert)
            .sort(sort)
            .build()
            .into(),
        "updateMany" => UpdateManyModel::builder()
            .namespace(namespace)
            .filter(filter)
            .update(update_mods(spec.get("update").cloned().unwrap_or(Bson::Null))?)
            .array_filters(array_filters)
            .collation(collation)
            .hint(hint)
            .upsert(upsert)
            .build()
            .into(),
        "replaceOne" => ReplaceOneModel::builder()
            .namespace(namespace)
            .filter(filter)
            .replacement(
                spec.get_document("replacement")
                    .map_err(|_| "replaceOne: missing replacement")?
                    .clone(),
            )
            .collation(collation)
            .hint(hint)
            .upsert(upsert)
            .sort(sort)
            .build()
            .into(),
        "deleteOne" => DeleteOneModel::builder()
            .namespace(namespace)
            .filter(filter)
            .collation(collation)
            .hint(hint)
            .build()
            .into(),
        "deleteMany" => DeleteManyModel::builder()
            .namespace(namespace)
            .filter(filter)
            .collation(collation)
            .hint(hint)
            .build()
            .into(),
        other => return Err(format!("unsupported clientBulkWrite model {other}")),
    })
}

fn summary_doc(s: &mongodb::results::SummaryBulkWriteResult) -> Document {
    doc! {
        "insertedCount": s.inserted_count,
        "upsertedCount": s.upserted_count,
        "matchedCount": s.matched_count,
        "modifiedCount": s.modified_count,
        "deletedCount": s.deleted_count,
    }
}

fn summary_result(s: &mongodb::results::SummaryBulkWriteResult) -> Bson {
    Bson::Document(summary_doc(s))
}

fn verbose_result(v: &mongodb::results::VerboseBulkWriteResult) -> Bson {
    let mut d = summary_doc(&v.summary);
    d.insert(
        "insertResults",
        ids_doc(
            v.insert_results
                .iter()
                .map(|(i, r)| (*i, Bson::Document(doc! {"insertedId": r.inserted_id.clone()}))),
        ),
    );
    d.insert(
        "updateResults",
        ids_doc(v.update_results.iter().map(|(i, r)| (*i, client_update_result(r)))),
    );
    d.insert(
        "deleteResults",
        ids_doc(v.delete_results.iter().map(|(i, r)| (*i, delete_result(r.clone())))),
    );
    Bson::Document(d)
}

/// The partial result of a failed `clientBulkWrite`, for `expectError.expectResult`.
pub(crate) fn partial_result(e: &mongodb::error::Error) -> Option<Bson> {
    use mongodb::error::{ErrorKind, PartialBulkWriteResult};
    match &*e.kind {
        ErrorKind::BulkWrite(b) => b.partial_result.as_ref().map(|p| match p {
            PartialBulkWriteResult::Summary(s) => summary_result(s),
            PartialBulkWriteResult::Verbose(v) => verbose_result(v),
        }),
        _ => None,
    }
}

/// The write errors of a failed `clientBulkWrite`, keyed by model index.
pub(crate) fn client_bulk_write_errors(e: &mongodb::error::Error) -> Option<Bson> {
    use mongodb::error::ErrorKind;
    match &*e.kind {
        ErrorKind::BulkWrite(b) => {
            Some(Bson::Document(ids_doc(b.write_errors.iter().map(|(i, w)| {
                let mut d = doc! {"code": w.code, "message": w.message.clone()};
                if let Some(n) = &w.code_name {
                    d.insert("codeName", n.clone());
                }
                if let Some(x) = &w.details {
                    d.insert("details", x.clone());
                }
                (*i, Bson::Document(d))
            }))))
        }
        _ => None,
    }
}

/// The write concern errors of a failed `clientBulkWrite`.
pub(crate) fn write_concern_errors(e: &mongodb::error::Error) -> Option<Bson> {
    use mongodb::error::ErrorKind;
    match &*e.kind {
        ErrorKind::BulkWrite(b) => Some(Bson::Array(
            b.write_concern_errors
                .iter()
                .map(|w| Bson::Document(doc! {"code": w.code, "message": w.message.clone()}))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(op: &str, doc: Document) -> Args {
        Args { op: op.to_string(), doc }
    }

    #[test]
    fn hex_bytes_reads_pairs_of_hex_digits() {
        let hex = |s: &str| hex_bytes(&Bson::Document(doc! {"$$hexBytes": s}));
        assert_eq!(hex(""), Ok(Vec::new()));
        assert_eq!(hex("00ff10Ab"), Ok(vec![0x00, 0xff, 0x10, 0xab]));
        assert!(hex("abc").is_err(), "odd length");
        assert!(hex("zz").is_err(), "not hex");
        assert!(hex("é1").is_err(), "not ASCII");
        assert!(hex_bytes(&Bson::String("00".into())).is_err());
        assert!(hex_bytes(&Bson::Document(doc! {"hex": "00"})).is_err());
    }

    #[test]
    fn upload_options_take_chunk_size_and_metadata() {
        let mut a = args(
            "upload",
            doc! {"filename": "f", "chunkSizeBytes": 4, "metadata": {"x": 1}, "disableMD5": true},
        );
        let o = upload_options(&mut a).expect("valid options");
        assert_eq!(o.chunk_size_bytes, Some(4));
        assert_eq!(o.metadata, Some(doc! {"x": 1}));
        // Only the filename is left for the operation itself.
        assert_eq!(a.doc, doc! {"filename": "f"});
        let o = upload_options(&mut args("upload", doc! {})).expect("no options");
        assert_eq!((o.chunk_size_bytes, o.metadata), (None, None));
        for bad in
            [doc! {"chunkSizeBytes": 0}, doc! {"chunkSizeBytes": -1}, doc! {"chunkSizeBytes": "4"}]
        {
            let e = upload_options(&mut args("upload", bad.clone())).expect_err("refused");
            assert!(e.contains("chunkSizeBytes"), "{bad}: {e}");
        }
        assert!(upload_options(&mut args("upload", doc! {"metadata": 1})).is_err());
    }

    #[test]
    fn map_reduce_sends_the_helpers_command() {
        let cmd = map_reduce_command(
            "c",
            args("mapReduce", doc! {"map": "m", "reduce": "r", "session": "s0", "query": {"a": 1}}),
        )
        .expect("a command");
        assert_eq!(
            cmd,
            doc! {"mapReduce": "c", "map": "m", "reduce": "r", "out": {"inline": 1}, "query": {"a": 1}}
        );
        let cmd = map_reduce_command(
            "c",
            args("mapReduce", doc! {"map": "m", "reduce": "r", "out": "o"}),
        )
        .expect("a command");
        assert_eq!(cmd.get("out"), Some(&Bson::String("o".into())));
        let e =
            map_reduce_command("c", args("mapReduce", doc! {"map": "m"})).expect_err("no reduce");
        assert_eq!(e, "mapReduce: missing argument reduce");
    }
}
