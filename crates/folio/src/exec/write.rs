//! Writes: inserts, updates, deletes, findAndModify, and DDL that touches data.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use bson::{Bson, Document, doc};

use super::{Found, id_key};
use crate::catalog::{self, CollectionMeta, IndexMeta, keys, keys::Key};
use crate::collation::Requested;
use crate::doc::validate::Prepared;
use crate::error::Result;
use crate::index::IndexSpec;
use crate::mvcc::OrConflict;
use crate::mvcc::Txn;
use crate::query::{Filter, Projection, SortSpec};
use crate::update::{UpdateContext, UpdateSpec};
use crate::{bail, err};

/// A collection loaded for writing: its metadata and its parsed secondary indexes.
pub struct CollectionHandle {
    /// The collection's metadata.
    pub meta: Arc<CollectionMeta>,
    indexes: Vec<LoadedIndex>,
    validator: Option<Filter>,
    /// `bypassDocumentValidation: true`: the validator is not applied.
    bypass_validation: bool,
}

/// One index entry of a document: the index's position, the storage key, the key values.
type Entry = (usize, Vec<u8>, Vec<Bson>);

struct LoadedIndex {
    /// The id that keys the index's entries.
    id: u32,
    spec: Arc<IndexSpec>,
    partial: Option<Filter>,
}

impl CollectionHandle {
    /// Loads a collection, or returns None when it does not exist.
    pub fn load(txn: &dyn Txn, db: &str, coll: &str) -> Result<Option<Self>> {
        match catalog::get_collection(txn, db, coll)? {
            Some(meta) => Ok(Some(Self::from_meta(meta)?)),
            None => Ok(None),
        }
    }

    /// Loads a collection, creating it when it does not exist (writes create collections
    /// implicitly, as in MongoDB).
    pub fn load_or_create(txn: &mut dyn Txn, db: &str, coll: &str) -> Result<Self> {
        if let Some(h) = Self::load(txn, db, coll)? {
            refuse_view(&h.meta)?;
            return Ok(h);
        }
        let meta = catalog::new_collection(db, coll, Document::new())?;
        catalog::put_collection(txn, &meta)?;
        super::changelog::ddl(txn, &meta, "create", Bson::Document(Document::new()));
        Self::from_meta(Arc::new(meta))
    }

    fn from_meta(meta: Arc<CollectionMeta>) -> Result<Self> {
        let mut indexes = Vec::new();
        for i in &meta.indexes {
            if i.name() == "_id_" {
                continue; // The document keys are the `_id` index.
            }
            let spec = i.parsed()?;
            // The partial filter is read under the index's collation, as in MongoDB.
            let partial = match i.spec().get("partialFilterExpression") {
                Some(Bson::Document(f)) => {
                    Some(Filter::parse(f)?.with_collation(spec.collation.as_ref()))
                }
                _ => None,
            };
            indexes.push(LoadedIndex { id: i.id, spec, partial });
        }
        // The validator compares under the collection's default collation.
        let collation = Requested::CollectionDefault.resolve(&meta.options)?;
        let validator = match meta.options.get("validator") {
            Some(Bson::Document(v)) if !v.is_empty() => {
                Some(Filter::parse(v)?.with_collation(collation.as_ref()))
            }
            _ => None,
        };
        Ok(CollectionHandle { meta, indexes, validator, bypass_validation: false })
    }

    /// Loads a collection's indexes for `verify`.
    pub(crate) fn from_meta_for_verify(meta: Arc<CollectionMeta>) -> Result<Self> {
        Self::from_meta(meta)
    }

    /// The storage keys of a document's index entries.
    pub(crate) fn entry_keys(&self, doc: &Document) -> Result<Vec<Vec<u8>>> {
        Ok(self.entries(doc)?.into_iter().map(|(_, k, _)| k).collect())
    }

    fn namespace(&self) -> String {
        self.meta.namespace()
    }

    /// Checks the collection validator (validationAction "error", level "strict").
    fn validate(&self, doc: &Document) -> Result<()> {
        let Some(v) = &self.validator else { return Ok(()) };
        if self.bypass_validation {
            return Ok(());
        }
        let action = self.meta.options.get_str("validationAction").unwrap_or("error");
        let level = self.meta.options.get_str("validationLevel").unwrap_or("strict");
        if action == "warn" || level == "off" || v.matches(doc) {
            return Ok(());
        }
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        Err(err!(DocumentValidationFailure, "Document failed validation").with_extra(
            doc! { "errInfo": { "failingDocumentId": id, "details": { "operatorName": "$jsonSchema" } } },
        ))
    }

    /// The index entries of a document: `(index position, storage key, key values)`.
    fn entries(&self, doc: &Document) -> Result<Vec<Entry>> {
        if self.indexes.is_empty() {
            return Ok(Vec::new());
        }
        let id = id_key(doc.get("_id").unwrap_or(&Bson::Null));
        let mut out = Vec::new();
        for (i, idx) in self.indexes.iter().enumerate() {
            if let Some(p) = &idx.partial
                && !p.matches(doc)
            {
                continue;
            }
            for key in idx.spec.entries_for(doc)?.keys {
                let mut k = key.bytes;
                if !idx.spec.unique {
                    k.extend_from_slice(&id);
                }
                let storage_key =
                    Key::IndexEntry { coll: self.meta.id, index: idx.id, key: &k }.encode();
                out.push((i, storage_key, key.values));
            }
        }
        Ok(out)
    }

    /// Adds a document's index entries (those of [`Self::entries`] for it), checking unique
    /// indexes; an entry whose key is in `skip` is already there.
    fn add_entries(
        &self,
        txn: &mut dyn Txn,
        doc: &Document,
        entries: &[Entry],
        skip: &BTreeSet<&[u8]>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let id = id_key(doc.get("_id").unwrap_or(&Bson::Null));
        for (i, key, values) in entries {
            if skip.contains(key.as_slice()) {
                continue;
            }
            let idx = &self.indexes[*i];
            if idx.spec.unique
                && let Some(existing) = txn.get(key)?
                && existing != id
            {
                return Err(idx.spec.duplicate_key_error(&self.meta.db, &self.meta.name, values));
            }
            txn.put(key, &id)?
                .or_conflict_with(|| format!("{} index {}", self.namespace(), idx.spec.name))?;
        }
        Ok(())
    }

    /// Removes a document's index entries (those of [`Self::entries`] for it) except those
    /// whose key is in `keep`.
    fn remove_entries(
        &self,
        txn: &mut dyn Txn,
        entries: &[Entry],
        keep: &BTreeSet<&[u8]>,
    ) -> Result<()> {
        for (i, key, _) in entries {
            if keep.contains(key.as_slice()) {
                continue;
            }
            txn.delete(key)?.or_conflict_with(|| {
                format!("{} index {}", self.namespace(), self.indexes[*i].spec.name)
            })?;
        }
        Ok(())
    }

    fn describe_id(&self, doc: &Document) -> String {
        self.describe(doc.get("_id").unwrap_or(&Bson::Null))
    }

    fn describe(&self, id: &Bson) -> String {
        format!("{} _id {}", self.namespace(), id)
    }

    /// Inserts a prepared document (with `_id` first).
    fn insert_prepared(&self, txn: &mut dyn Txn, prepared: &Prepared<'_>) -> Result<()> {
        let (doc, bytes) = (prepared.doc.as_ref(), &prepared.bytes);
        let id = doc.get("_id").unwrap_or(&Bson::Null);
        self.insert_bytes(txn, id, bytes, Some(doc))
    }

    /// Inserts a validated document given as its BSON (with `_id` first) and its `_id`. `doc`
    /// is its decoded form when the caller has it; otherwise it is decoded here only if the
    /// collection's validator or secondary indexes need it.
    fn insert_bytes(
        &self,
        txn: &mut dyn Txn,
        id: &Bson,
        bytes: &[u8],
        doc: Option<&Document>,
    ) -> Result<()> {
        let needs_doc =
            !self.indexes.is_empty() || (self.validator.is_some() && !self.bypass_validation);
        let decoded;
        let doc = match doc {
            None if needs_doc => {
                decoded = decode_sent(bytes)?;
                Some(&decoded)
            }
            doc => doc,
        };
        if let Some(doc) = doc {
            self.validate(doc)?;
        }
        let key = Key::Document { coll: self.meta.id, id: &id_key(id) }.encode();
        if txn.get(&key)?.is_some() {
            return Err(IndexSpec::id_index().duplicate_key_error(
                &self.meta.db,
                &self.meta.name,
                std::slice::from_ref(id),
            ));
        }
        txn.put(&key, bytes)?.or_conflict_with(|| self.describe(id))?;
        if let Some(doc) = doc {
            self.add_entries(txn, doc, &self.entries(doc)?, &BTreeSet::new())?;
        }
        super::changelog::insert(txn, &self.meta, bytes);
        if super::capped::is_capped(&self.meta) {
            super::capped::inserted(txn, &self.meta, &id_key(id), bytes.len())?;
            // The oldest documents go until the collection is within its limits again.
            while let Some(oldest) = super::capped::oldest_over_limit(txn, &self.meta)? {
                let key = Key::Document { coll: self.meta.id, id: &oldest }.encode();
                let Some(doc) = super::get_document(txn, &key)? else { break };
                self.remove(txn, &Found { key, doc })?;
            }
        }
        Ok(())
    }

    /// Replaces a stored document with a new version, maintaining indexes. `replacement` says
    /// whether a replacement document (rather than update operators) made it, for the change
    /// log.
    fn replace(
        &self,
        txn: &mut dyn Txn,
        found: &Found,
        new: &Document,
        replacement: bool,
    ) -> Result<()> {
        self.validate(new)?;
        let bytes = new.to_vec()?;
        txn.put(&found.key, &bytes)?.or_conflict_with(|| self.describe_id(new))?;
        if super::capped::is_capped(&self.meta) {
            let old = found.doc.to_vec()?.len();
            super::capped::resized(txn, &self.meta, old, bytes.len())?;
        }
        // Each version's entries are computed once: the keys both have stay as they are.
        let (old_entries, new_entries) = (self.entries(&found.doc)?, self.entries(new)?);
        let old_keys: BTreeSet<&[u8]> = old_entries.iter().map(|e| e.1.as_slice()).collect();
        let new_keys: BTreeSet<&[u8]> = new_entries.iter().map(|e| e.1.as_slice()).collect();
        self.remove_entries(txn, &old_entries, &new_keys)?;
        self.add_entries(txn, new, &new_entries, &old_keys)?;
        super::changelog::update(txn, &self.meta, &found.doc, new, replacement);
        Ok(())
    }

    /// Deletes a stored document and its index entries.
    fn remove(&self, txn: &mut dyn Txn, found: &Found) -> Result<()> {
        txn.delete(&found.key)?.or_conflict_with(|| self.describe_id(&found.doc))?;
        self.remove_entries(txn, &self.entries(&found.doc)?, &BTreeSet::new())?;
        if super::capped::is_capped(&self.meta) {
            let id = id_key(found.doc.get("_id").unwrap_or(&Bson::Null));
            super::capped::removed(txn, &self.meta, &id, found.doc.to_vec()?.len())?;
        }
        super::changelog::delete(txn, &self.meta, &found.doc);
        Ok(())
    }
}

/// Deletes the oldest documents of capped collection `db.coll` until it is within its limits
/// (after its `size` or `max` shrank). Returns how many went.
pub fn trim_capped(txn: &mut dyn Txn, db: &str, coll: &str) -> Result<u64> {
    let Some(handle) = CollectionHandle::load(txn, db, coll)? else { return Ok(0) };
    let mut removed = 0;
    while let Some(oldest) = super::capped::oldest_over_limit(txn, &handle.meta)? {
        let key = Key::Document { coll: handle.meta.id, id: &oldest }.encode();
        let Some(doc) = super::get_document(txn, &key)? else { break };
        handle.remove(txn, &Found { key, doc })?;
        removed += 1;
    }
    Ok(removed)
}

/// Validates a document for insert: `_id` first, and `Timestamp(0, 0)` values at the top level
/// replaced by the current time, as MongoDB does.
fn prepare(doc: &Document) -> Result<Prepared<'_>> {
    static INCREMENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let mut next = || {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let inc = INCREMENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bson::Timestamp { time: secs, increment: inc }
    };
    crate::doc::validate::prepare_insert(doc, &mut next)
}

/// The decoded form of a document a client sent as BSON (validated on arrival, so this does
/// not fail in practice).
fn decode_sent(bytes: &[u8]) -> Result<Document> {
    folio_wire::parse_document(bytes).map_err(|e| crate::err!(InvalidBSON, "{}", e))
}

/// Inserts the documents of one command, creating the collection if needed. The collection is
/// loaded once per storage transaction (the statements of a batch share one), not once per
/// document: loading it reads and parses the catalog entry, its indexes and its validator.
pub struct Inserter<'a> {
    db: &'a str,
    coll: &'a str,
    bypass_validation: bool,
    /// The collection as loaded by the transaction with this id.
    loaded: Option<(crate::mvcc::TxnId, CollectionHandle)>,
}

impl<'a> Inserter<'a> {
    /// An inserter into `db.coll`. With `bypass_validation` (the command's
    /// `bypassDocumentValidation`), the validator is skipped.
    pub fn new(db: &'a str, coll: &'a str, bypass_validation: bool) -> Self {
        Inserter { db, coll, bypass_validation, loaded: None }
    }

    /// Inserts one document; returns its `_id`. The document is borrowed: one that already has
    /// `_id` first is stored without a copy.
    pub fn insert(&mut self, txn: &mut dyn Txn, doc: &Document) -> Result<Bson> {
        self.with_handle(txn, |txn, handle| {
            let prepared = prepare(doc)?;
            handle.insert_prepared(txn, &prepared)?;
            Ok(prepared.doc.get("_id").cloned().unwrap_or(Bson::Null))
        })
    }

    /// Inserts one document given as it came in an OP_MSG document sequence; returns its
    /// `_id`. One that needs no change is stored as its bytes are, never decoded (unless the
    /// collection's indexes or validator read it); any other goes the way of [`Self::insert`].
    pub fn insert_raw(
        &mut self,
        txn: &mut dyn Txn,
        doc: &folio_wire::SequenceDocument,
    ) -> Result<Bson> {
        match crate::doc::validate::prepare_raw_insert(&doc.raw, doc.shape)? {
            Some(id) => self.with_handle(txn, |txn, handle| {
                handle.insert_bytes(txn, &id, doc.raw.as_bytes(), None)?;
                Ok(id)
            }),
            None => self.insert(txn, &decode_sent(doc.raw.as_bytes())?),
        }
    }

    /// Runs `insert` with the collection as this transaction loaded it (loading or creating it
    /// the first time).
    fn with_handle(
        &mut self,
        txn: &mut dyn Txn,
        insert: impl FnOnce(&mut dyn Txn, &CollectionHandle) -> Result<Bson>,
    ) -> Result<Bson> {
        let handle = match self.loaded.take() {
            Some((id, handle)) if id == txn.id() => handle,
            _ => {
                let mut handle = CollectionHandle::load_or_create(txn, self.db, self.coll)?;
                handle.bypass_validation = self.bypass_validation;
                handle
            }
        };
        let id = insert(txn, &handle)?;
        // Kept only after a success: a failed statement is rolled back, and with it a
        // collection it may have created.
        self.loaded = Some((txn.id(), handle));
        Ok(id)
    }
}

/// Inserts one document, creating the collection if needed. Returns the `_id`. With
/// `bypass_validation` (the command's `bypassDocumentValidation`), the validator is skipped.
pub fn insert_one(
    txn: &mut dyn Txn,
    db: &str,
    coll: &str,
    doc: &Document,
    bypass_validation: bool,
) -> Result<Bson> {
    Inserter::new(db, coll, bypass_validation).insert(txn, doc)
}

/// The update part of an update statement.
#[derive(Clone, Debug)]
pub enum UpdateDoc {
    /// Update operators (`{$set: ...}`) or a replacement document.
    Modifiers(Document),
    /// An aggregation pipeline (`[{$set: ...}, ...]`).
    Pipeline(Vec<Document>),
}

impl Default for UpdateDoc {
    fn default() -> Self {
        UpdateDoc::Modifiers(Document::new())
    }
}

impl UpdateDoc {
    /// Parses the update into an [`UpdateSpec`].
    pub fn parse(
        &self,
        array_filters: Option<&[Document]>,
        let_vars: Option<&Document>,
    ) -> Result<UpdateSpec> {
        match self {
            UpdateDoc::Modifiers(d) => UpdateSpec::parse(d, array_filters),
            UpdateDoc::Pipeline(stages) => {
                if array_filters.is_some() {
                    bail!(
                        FailedToParse,
                        "arrayFilters may not be specified for pipeline-style updates"
                    );
                }
                UpdateSpec::parse_pipeline(stages, let_vars)
            }
        }
    }
}

/// One update statement.
#[derive(Clone, Debug, Default)]
pub struct UpdateOp {
    /// The filter (`q`).
    pub filter: Document,
    /// The update (`u`): operators, a replacement, or a pipeline.
    pub update: UpdateDoc,
    /// Variables for pipeline updates (`let`).
    pub let_vars: Option<Document>,
    /// Update every match (`multi: true`) rather than the first.
    pub multi: bool,
    /// Insert when nothing matches.
    pub upsert: bool,
    /// `arrayFilters` for `$[<identifier>]`.
    pub array_filters: Option<Vec<Document>>,
    /// `sort` (updateOne/replaceOne in MongoDB 8.0): which match is updated.
    pub sort: Option<Document>,
    /// The statement's collation, for the filter and the sort.
    pub collation: Requested,
    /// `bypassDocumentValidation`: skip the collection's validator.
    pub bypass_validation: bool,
    /// `hint`: the index to find the documents through.
    pub hint: Option<super::plan::Hint>,
}

/// The outcome of an update statement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateResult {
    /// Documents matched.
    pub matched: u64,
    /// Documents actually changed.
    pub modified: u64,
    /// The `_id` of the inserted document, for an upsert that inserted.
    pub upserted_id: Option<Bson>,
}

/// Runs one update statement.
pub fn update(txn: &mut dyn Txn, db: &str, coll: &str, op: &UpdateOp) -> Result<UpdateResult> {
    let filter = Filter::parse_with_let(&op.filter, op.let_vars.as_ref())?;
    let spec = op.update.parse(op.array_filters.as_deref(), op.let_vars.as_ref())?;
    let sort = op.sort.as_ref().map(SortSpec::parse).transpose()?;
    let mut handle = match CollectionHandle::load(txn, db, coll)? {
        Some(h) => h,
        None if op.upsert => CollectionHandle::load_or_create(txn, db, coll)?,
        None => return Ok(UpdateResult::default()),
    };
    handle.bypass_validation = op.bypass_validation;
    refuse_view(&handle.meta)?;
    let collation = op.collation.resolve(&handle.meta.options)?;
    let filter = filter.with_collation(collation.as_ref());
    let sort = sort.map(|s| s.with_collation(collation.as_ref()));
    let spec = spec.with_collation(collation.as_ref());
    let mut found = super::matching_sorted(
        txn,
        &handle.meta,
        &filter,
        sort.as_ref(),
        usize::from(!op.multi),
        op.hint.as_ref(),
    )?;
    if !op.multi {
        found.truncate(1);
    }
    let mut result = UpdateResult::default();
    let now = bson::DateTime::now();
    for f in &found {
        result.matched += 1;
        let mut new = f.doc.clone();
        let ctx = update_ctx(filter.matches_with_key(&f.doc).1, false, now);
        if spec.apply_to(&f.doc, &mut new, &ctx)? && new != f.doc {
            check_immutable_id(&f.doc, &new)?;
            handle.replace(txn, f, &new, spec.is_replacement())?;
            result.modified += 1;
        }
    }
    if found.is_empty() && op.upsert {
        let doc = upsert_document(&filter, &spec, now)?;
        let prepared = prepare(&doc)?;
        handle.insert_prepared(txn, &prepared)?;
        result.upserted_id = Some(prepared.doc.get("_id").cloned().unwrap_or(Bson::Null));
    }
    Ok(result)
}

/// Builds the document an upsert inserts: the filter's equalities, then the update applied as an
/// insert (so `$setOnInsert` takes effect).
fn upsert_document(filter: &Filter, spec: &UpdateSpec, now: bson::DateTime) -> Result<Document> {
    spec.upsert_document(filter, &update_ctx(None, true, now))
}

fn update_ctx(
    match_position: Option<usize>,
    is_upsert_insert: bool,
    now: bson::DateTime,
) -> UpdateContext {
    let secs = (now.timestamp_millis() / 1000).max(0) as u32;
    UpdateContext {
        match_position,
        is_upsert_insert,
        now,
        now_timestamp: bson::Timestamp { time: secs, increment: 1 },
    }
}

fn check_immutable_id(old: &Document, new: &Document) -> Result<()> {
    if old.get("_id") != new.get("_id") {
        bail!(
            ImmutableField,
            "Performing an update on the path '_id' would modify the immutable field '_id'"
        );
    }
    Ok(())
}

/// The outcome of a delete statement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteResult {
    /// Documents deleted.
    pub deleted: u64,
}

/// One delete statement.
#[derive(Clone, Copy, Debug)]
pub struct DeleteOp<'a> {
    /// The filter (`q`).
    pub filter: &'a Document,
    /// Delete only the first match (`limit: 1`).
    pub limit_one: bool,
    /// The command's `let` variables, for `$expr`.
    pub let_vars: Option<&'a Document>,
    /// The statement's collation.
    pub collation: &'a Requested,
    /// `hint`: the index to find the documents through.
    pub hint: Option<&'a super::plan::Hint>,
}

/// Deletes the first match (`limit_one`) or every match, under a requested collation.
pub fn delete(txn: &mut dyn Txn, db: &str, coll: &str, op: &DeleteOp<'_>) -> Result<DeleteResult> {
    let DeleteOp { filter, limit_one, let_vars, collation, hint } = *op;
    let filter = Filter::parse_with_let(filter, let_vars)?;
    let Some(handle) = CollectionHandle::load(txn, db, coll)? else {
        return Ok(DeleteResult::default());
    };
    refuse_view(&handle.meta)?;
    let filter = filter.with_collation(collation.resolve(&handle.meta.options)?.as_ref());
    let mut found =
        super::matching_sorted(txn, &handle.meta, &filter, None, usize::from(limit_one), hint)?;
    if limit_one {
        found.truncate(1);
    }
    for f in &found {
        handle.remove(txn, f)?;
    }
    Ok(DeleteResult { deleted: found.len() as u64 })
}

/// A findAndModify request.
#[derive(Clone, Debug, Default)]
pub struct FindAndModify {
    /// The filter.
    pub query: Document,
    /// Which match to pick first.
    pub sort: Option<Document>,
    /// Delete the document.
    pub remove: bool,
    /// The update or replacement (absent when `remove`).
    pub update: Option<UpdateDoc>,
    /// Variables for pipeline updates (`let`).
    pub let_vars: Option<Document>,
    /// Return the new version rather than the old one.
    pub new: bool,
    /// The projection of the returned document.
    pub fields: Option<Document>,
    /// Insert when nothing matches.
    pub upsert: bool,
    /// `arrayFilters`.
    pub array_filters: Option<Vec<Document>>,
    /// The requested collation, for the query and the sort.
    pub collation: Requested,
    /// `bypassDocumentValidation`: skip the collection's validator.
    pub bypass_validation: bool,
    /// `hint`: the index to find the document through.
    pub hint: Option<super::plan::Hint>,
}

/// The outcome of findAndModify.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindAndModifyResult {
    /// The returned document (`value`).
    pub value: Option<Document>,
    /// `lastErrorObject.n`.
    pub n: u64,
    /// `lastErrorObject.updatedExisting`.
    pub updated_existing: bool,
    /// `lastErrorObject.upserted`.
    pub upserted: Option<Bson>,
}

/// Runs findAndModify.
pub fn find_and_modify(
    txn: &mut dyn Txn,
    db: &str,
    coll: &str,
    req: &FindAndModify,
) -> Result<FindAndModifyResult> {
    let filter = Filter::parse_with_let(&req.query, req.let_vars.as_ref())?;
    let sort = req.sort.as_ref().map(SortSpec::parse).transpose()?;
    let projection = req.fields.as_ref().map(Projection::parse).transpose()?;
    let spec = match (&req.update, req.remove) {
        (Some(_), true) => bail!(FailedToParse, "Cannot specify both an update and remove=true"),
        (None, false) => bail!(FailedToParse, "Either an update or remove=true must be specified"),
        (Some(u), false) => Some(u.parse(req.array_filters.as_deref(), req.let_vars.as_ref())?),
        (None, true) => None,
    };
    if req.remove && req.upsert {
        bail!(FailedToParse, "Cannot specify both upsert=true and remove=true");
    }
    let mut handle = match CollectionHandle::load(txn, db, coll)? {
        Some(h) => h,
        None if req.upsert => CollectionHandle::load_or_create(txn, db, coll)?,
        None => return Ok(FindAndModifyResult::default()),
    };
    handle.bypass_validation = req.bypass_validation;
    refuse_view(&handle.meta)?;
    let collation = req.collation.resolve(&handle.meta.options)?;
    let filter = filter.with_collation(collation.as_ref());
    let sort = sort.map(|s| s.with_collation(collation.as_ref()));
    let projection = projection.map(|p| p.with_collation(collation.as_ref()));
    let spec = spec.map(|s| s.with_collation(collation.as_ref()));
    let found =
        super::matching_sorted(txn, &handle.meta, &filter, sort.as_ref(), 1, req.hint.as_ref())?;
    let project = |d: Document| -> Result<Document> {
        match &projection {
            Some(p) => p.apply(&d, super::match_position(p, &filter, &d)),
            None => Ok(d),
        }
    };
    let now = bson::DateTime::now();
    match (found.into_iter().next(), spec) {
        (Some(f), None) => {
            handle.remove(txn, &f)?;
            Ok(FindAndModifyResult { value: Some(project(f.doc)?), n: 1, ..Default::default() })
        }
        (Some(f), Some(spec)) => {
            let mut new = f.doc.clone();
            let ctx = update_ctx(filter.matches_with_key(&f.doc).1, false, now);
            if spec.apply_to(&f.doc, &mut new, &ctx)? && new != f.doc {
                check_immutable_id(&f.doc, &new)?;
                handle.replace(txn, &f, &new, spec.is_replacement())?;
            }
            let value = if req.new { new } else { f.doc };
            Ok(FindAndModifyResult {
                value: Some(project(value)?),
                n: 1,
                updated_existing: true,
                upserted: None,
            })
        }
        (None, Some(spec)) if req.upsert => {
            let doc = upsert_document(&filter, &spec, now)?;
            let prepared = prepare(&doc)?;
            handle.insert_prepared(txn, &prepared)?;
            let doc = prepared.doc.into_owned();
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            let value = if req.new { Some(project(doc)?) } else { None };
            Ok(FindAndModifyResult { value, n: 1, updated_existing: false, upserted: Some(id) })
        }
        (None, _) => Ok(FindAndModifyResult::default()),
    }
}

/// Creates a collection explicitly (`create`). Fails with NamespaceExists when it exists.
pub fn create_collection(
    txn: &mut dyn Txn,
    db: &str,
    coll: &str,
    mut options: Document,
) -> Result<()> {
    if catalog::get_collection(txn, db, coll)?.is_some() {
        bail!(NamespaceExists, "Collection {}.{} already exists.", db, coll);
    }
    // The default collation is stored resolved (as `listCollections` shows it); a simple one
    // is no option at all.
    if options.contains_key("collation") {
        match crate::collation::Collation::from_field(&options, "collation", "create")? {
            Some(c) => {
                options.insert("collation", c.to_document());
            }
            None => {
                options.remove("collation");
            }
        }
    }
    if let Some(Bson::Document(v)) = options.get("validator") {
        Filter::parse(v)?;
    }
    let meta = catalog::new_collection(db, coll, options)?;
    catalog::put_collection(txn, &meta)?;
    super::changelog::ddl(txn, &meta, "create", Bson::Document(meta.options.clone()));
    Ok(())
}

/// Deletes every key with a prefix.
fn delete_prefix(txn: &mut dyn Txn, prefix: &[u8], what: &str) -> Result<()> {
    let end = keys::prefix_end(prefix);
    let keys: Vec<Vec<u8>> = txn
        .scan(Bound::Included(prefix), Bound::Excluded(&end), false)?
        .map(|r| r.map(|(k, _)| k))
        .collect::<Result<_>>()?;
    for k in keys {
        txn.delete(&k)?.or_conflict(what)?;
    }
    Ok(())
}

/// Drops a collection with its documents and indexes. Returns whether it existed.
pub fn drop_collection(txn: &mut dyn Txn, db: &str, coll: &str) -> Result<bool> {
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        return Ok(false);
    };
    let ns = meta.namespace();
    delete_prefix(txn, &keys::document_prefix(meta.id), &ns)?;
    for i in &meta.indexes {
        delete_prefix(txn, &keys::index_prefix(meta.id, i.id), &ns)?;
    }
    if super::capped::is_capped(&meta) {
        delete_prefix(txn, &keys::capped_order_prefix(meta.id), &ns)?;
        delete_prefix(txn, &keys::capped_position_key(meta.id, &[]), &ns)?;
        txn.delete(&keys::capped_state_key(meta.id))?.or_conflict(&ns)?;
    }
    catalog::delete_collection(txn, &meta)?;
    super::changelog::ddl(txn, &meta, "drop", Bson::Document(Document::new()));
    Ok(true)
}

/// Drops every collection of a database.
pub fn drop_database(txn: &mut dyn Txn, db: &str) -> Result<()> {
    for meta in catalog::list_collections(txn, Some(db))? {
        drop_collection(txn, db, &meta.name)?;
    }
    super::changelog::drop_database(txn, db);
    Ok(())
}

/// Renames a collection (within or across databases). Fails when the target exists unless
/// `drop_target`.
pub fn rename_collection(
    txn: &mut dyn Txn,
    from: (&str, &str),
    to: (&str, &str),
    drop_target: bool,
) -> Result<()> {
    let Some(meta) = catalog::get_collection(txn, from.0, from.1)? else {
        bail!(NamespaceNotFound, "Source collection {}.{} does not exist", from.0, from.1);
    };
    catalog::validate_collection_name(to.0, to.1)?;
    let mut dropped = None;
    if let Some(target) = catalog::get_collection(txn, to.0, to.1)? {
        if !drop_target {
            bail!(NamespaceExists, "target namespace exists");
        }
        drop_collection(txn, to.0, to.1)?;
        dropped = Some(target.uuid);
    }
    catalog::delete_collection(txn, &meta)?;
    super::changelog::rename(txn, &meta, &format!("{}.{}", to.0, to.1), dropped);
    let renamed = CollectionMeta {
        db: to.0.to_string(),
        name: to.1.to_string(),
        ..Arc::unwrap_or_clone(meta)
    };
    catalog::put_collection(txn, &renamed)
}

/// Creates indexes, building entries for existing documents. Returns the number of indexes
/// before and after, and whether the collection was created.
pub fn create_indexes(
    txn: &mut dyn Txn,
    db: &str,
    coll: &str,
    specs: &[Document],
) -> Result<(usize, usize, bool)> {
    let created = catalog::get_collection(txn, db, coll)?.is_none();
    let handle = CollectionHandle::load_or_create(txn, db, coll)?;
    let mut meta = CollectionMeta::clone(&handle.meta);
    let before = meta.indexes.len();
    let mut added = Vec::new();
    let default_collation = meta.options.get_document("collation").ok().cloned();
    for raw in specs {
        // `prepareUnique` makes new writes unique while the index may still hold duplicates,
        // which a non-unique index's layout cannot check: refused rather than ignored (here, so
        // that an index stored with it by an earlier version still loads). Listed with
        // collMod's conversion to a unique index in docs/compatibility.md, "Not implemented".
        if raw.get("prepareUnique").is_some_and(crate::query::filter::truthy) {
            crate::bail!(NotImplemented, "index option 'prepareUnique' is not supported");
        }
        // An index without a collation of its own takes the collection's default.
        let spec = match &default_collation {
            // The `_id` index never takes it here: its keys are the document keys.
            Some(c) if !raw.contains_key("collation") && !is_id_key(raw) => {
                let mut with = raw.clone();
                with.insert("collation", c.clone());
                IndexSpec::parse(&with)?
            }
            _ => IndexSpec::parse(raw)?,
        };
        let existing: Vec<IndexSpec> =
            meta.indexes.iter().map(|i| i.parsed().map(|s| (*s).clone())).collect::<Result<_>>()?;
        if spec.check_conflict(&existing)? {
            continue; // An identical index exists: nothing to do, as in MongoDB.
        }
        let normalized = spec.to_document();
        let id = meta.next_index_id;
        meta.next_index_id += 1;
        let im = IndexMeta::new(id, normalized);
        meta.indexes.push(im.clone());
        added.push(im);
    }
    if added.is_empty() {
        return Ok((before, before, created));
    }
    catalog::put_collection(txn, &meta)?;
    let specs: Vec<Bson> = added.iter().map(|i| Bson::Document(i.spec().clone())).collect();
    super::changelog::ddl(txn, &meta, "createIndexes", Bson::Array(specs));
    // Build entries for the existing documents with only the new indexes loaded.
    let mut build_meta = meta.clone();
    build_meta.indexes = added;
    let builder = CollectionHandle::from_meta(Arc::new(build_meta))?;
    for f in super::scan_collection(txn, &meta)? {
        builder.add_entries(txn, &f.doc, &builder.entries(&f.doc)?, &BTreeSet::new())?;
    }
    Ok((before, meta.indexes.len(), created))
}

/// Whether an index spec's key pattern is `{_id: 1}`.
fn is_id_key(raw: &Document) -> bool {
    raw.get_document("key").is_ok_and(|k| k.len() == 1 && k.contains_key("_id"))
}

/// Drops indexes by name (`"*"` drops all but `_id_`). Returns the index count before.
pub fn drop_indexes(txn: &mut dyn Txn, db: &str, coll: &str, names: &[String]) -> Result<usize> {
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        bail!(NamespaceNotFound, "ns not found {}.{}", db, coll);
    };
    let mut meta = Arc::unwrap_or_clone(meta);
    let before = meta.indexes.len();
    let all = names.iter().any(|n| n == "*");
    let mut to_drop = Vec::new();
    if all {
        to_drop.extend(meta.indexes.iter().filter(|i| i.name() != "_id_").cloned());
    } else {
        for n in names {
            if n == "_id_" {
                bail!(InvalidOptions, "cannot drop _id index");
            }
            match meta.index(n) {
                Some(i) => to_drop.push(i.clone()),
                None => bail!(IndexNotFound, "index not found with name [{}]", n),
            }
        }
    }
    let ns = meta.namespace();
    for i in &to_drop {
        delete_prefix(txn, &keys::index_prefix(meta.id, i.id), &ns)?;
    }
    meta.indexes.retain(|i| !to_drop.iter().any(|d| d.id == i.id));
    catalog::put_collection(txn, &meta)?;
    let specs: Vec<Bson> = to_drop.iter().map(|i| Bson::Document(i.spec().clone())).collect();
    super::changelog::ddl(txn, &meta, "dropIndexes", Bson::Array(specs));
    Ok(before)
}

/// CommandNotSupportedOnView: views are read-only.
fn refuse_view(meta: &CollectionMeta) -> Result<()> {
    if meta.is_view() {
        bail!(
            CommandNotSupportedOnView,
            "Namespace {}.{} is a view, not a collection",
            meta.db,
            meta.name
        );
    }
    Ok(())
}
