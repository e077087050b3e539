//! Collection operations inside one transaction.
//!
//! Every function here takes the transaction it runs in. Whether that transaction is a
//! single-statement autocommit transaction, one statement of a multi-document transaction, or a
//! retryable write is the session layer's business; this layer only reads and writes documents and
//! keeps indexes in step with them.
//!
//! A write updates the document key and every index entry in the same transaction, so indexes can
//! never disagree with documents after a commit. Uniqueness is checked against the transaction's
//! snapshot *and* enforced by the MVCC conflict rule: two transactions inserting the same unique key
//! both write the same index key, so the second one gets a write conflict at once, and after the
//! first commits, a retry sees the key and reports DuplicateKey.
//!
//! Reads plan an access path ([`plan`]), fetch candidate documents through MVCC, and always re-check
//! them with the filter, so an index is only ever a speed-up.
//!
//! A read whose results go straight into a reply ([`find_rows`]) may skip decoding them: when
//! nothing is projected and the plan yields the results in the order asked for, the stored
//! bytes are re-checked with [`Filter::matches_raw`] (decoding only a document whose paths
//! reach an array) and handed on as they are ([`plan::fetch_raw`]). Decoding a document into a
//! tree and encoding it again for the reply was a quarter of a range query's instructions.

pub mod aggregate;
pub mod capped;
pub mod changelog;
pub mod opstats;
pub mod plan;
pub mod stats;
mod write;

use std::cmp::Ordering;
use std::ops::Bound;

use bson::{Bson, Document, RawDocumentBuf};

use crate::catalog::{self, CollectionMeta, keys};
use crate::collation::Requested;
use crate::error::Result;
use crate::mvcc::Txn;
use crate::query::{Filter, Projection, SortSpec, text};

pub use write::{
    DeleteOp, FindAndModify, Inserter, UpdateDoc, UpdateOp, UpdateResult, create_collection,
    create_indexes, delete, drop_collection, drop_database, drop_indexes, find_and_modify,
    insert_one, rename_collection, trim_capped, update,
};

/// What a find reads: filter, sort, projection, skip and limit.
#[derive(Clone, Debug, Default)]
pub struct FindSpec {
    /// The filter document (`{}` matches everything).
    pub filter: Document,
    /// The sort specification, if any.
    pub sort: Option<Document>,
    /// The projection, if any.
    pub projection: Option<Document>,
    /// Documents to skip.
    pub skip: u64,
    /// Maximum documents to return (0: no limit).
    pub limit: u64,
    /// The command's evaluated `let` variables, for `$expr` in the filter.
    pub let_vars: Option<Document>,
    /// The memory budget of a blocking sort, and whether it may spill (`allowDiskUse`).
    pub memory_limit: crate::agg::MemoryLimit,
    /// The requested collation, for the filter and the sort.
    pub collation: Requested,
    /// `hint`: the index (or `$natural` scan) to use instead of the planner's choice.
    pub hint: Option<plan::Hint>,
}

/// The encoded `_id` key of a document value.
pub fn id_key(id: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    crate::encoding::value::encode_value(id, &mut out);
    out
}

/// One document found by a scan, with its storage key.
#[derive(Clone, Debug)]
pub struct Found {
    /// The document's storage key.
    pub key: Vec<u8>,
    /// The document.
    pub doc: Document,
}

/// Reads a document by its storage key.
pub fn get_document(txn: &dyn Txn, key: &[u8]) -> Result<Option<Document>> {
    match txn.get(key)? {
        Some(bytes) => {
            opstats::add_docs(1);
            Ok(Some(crate::error::stored_document(&bytes, "document")?))
        }
        None => Ok(None),
    }
}

/// Scans a whole collection in `_id` order.
pub fn scan_collection(txn: &dyn Txn, meta: &CollectionMeta) -> Result<Vec<Found>> {
    let prefix = keys::document_prefix(meta.id);
    let end = keys::prefix_end(&prefix);
    let mut out = Vec::new();
    for item in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
        let (key, value) = item?;
        out.push(Found { key, doc: crate::error::stored_document(&value, "document")? });
    }
    opstats::add_docs(out.len() as u64);
    Ok(out)
}

/// How many views deep a view may be defined on other views.
const MAX_VIEW_DEPTH: usize = 20;

/// The documents of a view: its source collection's documents (or source view's, recursively)
/// through the view's pipeline, at the transaction's snapshot.
pub fn view_documents(txn: &dyn Txn, meta: &CollectionMeta) -> Result<Vec<Document>> {
    view_documents_at(txn, meta, 0)
}

fn view_documents_at(txn: &dyn Txn, meta: &CollectionMeta, depth: usize) -> Result<Vec<Document>> {
    if depth > MAX_VIEW_DEPTH {
        crate::bail!(
            ViewDepthLimitExceeded,
            "View depth too deep or view cycle detected. Maximum depth is {}",
            MAX_VIEW_DEPTH
        );
    }
    let on = meta.options.get_str("viewOn").unwrap_or_default();
    let pipeline: Vec<Document> = meta
        .options
        .get_array("pipeline")
        .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
        .unwrap_or_default();
    let source = match catalog::get_collection(txn, &meta.db, on)? {
        None => Vec::new(),
        Some(src) if src.is_view() => view_documents_at(txn, &src, depth + 1)?,
        Some(src) => scan_collection(txn, &src)?.into_iter().map(|f| f.doc).collect(),
    };
    crate::agg::run(source, &pipeline)
}

/// The documents that match, sorted when a sort is given, stopping early when an index scan
/// already yields the sort order and only `limit` documents are needed (0: all).
pub fn matching_sorted(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
    hint: Option<&plan::Hint>,
) -> Result<Vec<Found>> {
    if meta.is_view() {
        if let Some(hint) = hint {
            hint.check(meta)?;
        }
        if filter.text().is_some() {
            // A view has no text index.
            crate::bail!(IndexNotFound, "text index required for $text query");
        }
        // A view has no keys of its own: its documents are computed, then filtered and sorted.
        let mut found: Vec<Found> = view_documents(txn, meta)?
            .into_iter()
            .filter(|d| filter.matches(d))
            .map(|doc| Found { key: Vec::new(), doc })
            .collect();
        if let Some(sort) = sort {
            found.sort_by(|a, b| sort.compare(&a.doc, &b.doc));
        }
        return Ok(found);
    }
    if sort.is_none() && capped::is_capped(meta) {
        // Natural order of a capped collection is insertion order.
        let (found, _) = plan::fetch(txn, meta, filter, None, 0, hint)?;
        return capped::natural_order(txn, meta, found);
    }
    let (mut found, sorted) = plan::fetch(txn, meta, filter, sort, limit, hint)?;
    if let (Some(sort), false) = (sort, sorted) {
        found.sort_by(|a, b| sort.compare(&a.doc, &b.doc));
    }
    Ok(found)
}

/// Runs a find and returns every result (sorted, skipped, limited and projected).
pub fn find(txn: &dyn Txn, db: &str, coll: &str, spec: &FindSpec) -> Result<Vec<Document>> {
    find_impl(txn, db, coll, spec, false, false)?.into_documents()
}

/// The results of a find: decoded documents, or documents as they are stored.
#[derive(Debug)]
pub enum Rows {
    /// Decoded documents.
    Docs(Vec<Document>),
    /// Stored documents, unchanged.
    Raw(Vec<RawDocumentBuf>),
}

impl From<Vec<Document>> for Rows {
    fn from(docs: Vec<Document>) -> Self {
        Rows::Docs(docs)
    }
}

impl Rows {
    /// The documents, decoded.
    pub fn into_documents(self) -> Result<Vec<Document>> {
        match self {
            Rows::Docs(docs) => Ok(docs),
            Rows::Raw(raw) => raw
                .iter()
                .map(|d| crate::error::stored_document(d.as_bytes(), "document"))
                .collect(),
        }
    }
}

/// [`find`] for a reader that can pass stored documents on as they are (a command's reply):
/// a find with no projection whose plan gives its results in order, with no array on the
/// sort's path, returns them without decoding them ([`plan::fetch_raw`]); any other returns
/// them decoded, as [`find`] does.
pub fn find_rows(txn: &dyn Txn, db: &str, coll: &str, spec: &FindSpec) -> Result<Rows> {
    find_impl(txn, db, coll, spec, false, true)
}

/// [`find`] for a pipeline's input: a `$text` query's score stays in each document (in
/// [`text::SCORE_FIELD`]) for the pipeline's `{$meta: "textScore"}`; the pipeline removes it
/// from its output.
pub fn find_for_pipeline(
    txn: &dyn Txn,
    db: &str,
    coll: &str,
    spec: &FindSpec,
) -> Result<Vec<Document>> {
    find_impl(txn, db, coll, spec, true, false)?.into_documents()
}

fn find_impl(
    txn: &dyn Txn,
    db: &str,
    coll: &str,
    spec: &FindSpec,
    keep_text_score: bool,
    raw: bool,
) -> Result<Rows> {
    let filter = Filter::parse_with_let(&spec.filter, spec.let_vars.as_ref())?;
    let sort = spec.sort.as_ref().map(SortSpec::parse).transpose()?;
    let projection = spec.projection.as_ref().map(Projection::parse).transpose()?;
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        return Ok(Rows::Docs(Vec::new()));
    };
    let collation = spec.collation.resolve(&meta.options)?;
    let filter = filter.with_collation(collation.as_ref());
    let sort = sort.map(|s| s.with_collation(collation.as_ref()));
    let projection = projection.map(|p| p.with_collation(collation.as_ref()));
    let hint = spec.hint.as_ref();
    let skip = usize::try_from(spec.skip).unwrap_or(usize::MAX);
    let limit = if spec.limit == 0 { usize::MAX } else { spec.limit as usize };
    let wanted = if spec.limit == 0 { 0 } else { skip.saturating_add(limit) };
    if filter.text().is_some() && !meta.is_view() {
        return find_text(
            txn,
            &meta,
            &filter,
            sort.as_ref(),
            projection.as_ref(),
            spec,
            keep_text_score,
        )
        .map(Rows::Docs);
    }
    let uses_score =
        sort.as_ref().is_some_and(|s| s.keys.iter().any(|(k, _)| k == text::SCORE_FIELD))
            || spec.projection.as_ref().is_some_and(mentions_text_score);
    if uses_score {
        return Err(crate::error::Error::new(
            crate::error::Code::Other(40218),
            "query requires text score metadata, but it is not available",
        ));
    }
    // `{$meta: "geoNearDistance"}` and `{$meta: "geoNearPoint"}` are the `$near` query's
    // distance and the location it measured; without a `$near` there are none (40218).
    let geo_meta = spec.projection.as_ref().is_some_and(|p| {
        let p = Bson::Document(p.clone());
        crate::expr::mentions_meta(&p, "geoNearDistance")
            || crate::expr::mentions_meta(&p, "geoNearPoint")
    });
    if sort
        .as_ref()
        .is_some_and(|s| s.keys.iter().any(|(k, _)| k == crate::expr::GEO_NEAR_DISTANCE_FIELD))
    {
        crate::bail!(
            NotImplemented,
            "a find sorted by {{$meta: \"geoNearDistance\"}} is not supported; $near already returns the nearest first"
        );
    }
    let near = match (geo_meta, filter.near()) {
        (false, _) => None,
        (true, Some(near)) => Some(near),
        (true, None) => {
            return Err(crate::error::Error::new(
                crate::error::Code::Other(40218),
                "query requires $geoNear metadata, but it is not available: the filter has no $near or $nearSphere",
            ));
        }
    };
    if raw
        && projection.is_none()
        && near.is_none()
        && let Some(found) = plan::fetch_raw(txn, &meta, &filter, sort.as_ref(), wanted, hint)?
    {
        return Ok(Rows::Raw(found.into_iter().skip(skip).take(limit).collect()));
    }
    let docs = match &sort {
        // A blocking sort of every match keeps the same memory budget as an aggregation's
        // `$sort`: past it, it spills to disk, or fails with 292 under `allowDiskUse: false`.
        Some(sort) if wanted == 0 && !meta.is_view() => {
            let (found, sorted) = plan::fetch(txn, &meta, &filter, Some(sort), 0, hint)?;
            let docs = found.into_iter().map(|f| f.doc).collect();
            if sorted {
                docs
            } else {
                crate::agg::spill::sort(docs, |a, b| sort.compare(a, b), spec.memory_limit, "$sort")
                    .map_err(|mut e| {
                        e.message = format!(
                            "Executor error during find command :: caused by :: {}",
                            e.message
                        );
                        e
                    })?
            }
        }
        _ => matching_sorted(txn, &meta, &filter, sort.as_ref(), wanted, hint)?
            .into_iter()
            .map(|f| f.doc)
            .collect::<Vec<_>>(),
    };
    let mut out = Vec::new();
    for mut doc in docs.into_iter().skip(skip).take(limit) {
        if let Some((path, near)) = near
            && let Some((d, location)) = crate::agg::geonear::nearest(&doc, path, near)
        {
            doc.insert(crate::expr::GEO_NEAR_DISTANCE_FIELD, d);
            doc.insert(crate::expr::GEO_NEAR_POINT_FIELD, location);
        }
        let mut d = match &projection {
            Some(p) => p.apply(&doc, match_position(p, &filter, &doc))?,
            None => doc,
        };
        if near.is_some() {
            d.remove(crate::expr::GEO_NEAR_DISTANCE_FIELD);
            d.remove(crate::expr::GEO_NEAR_POINT_FIELD);
        }
        out.push(d);
    }
    Ok(Rows::Docs(out))
}

/// A find with `$text`: the matches, scored, then sorted (a text score highest first), skipped,
/// limited and projected; the score stays only where the projection asks for it.
fn find_text(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    projection: Option<&Projection>,
    spec: &FindSpec,
    keep_text_score: bool,
) -> Result<Vec<Document>> {
    // `{$meta: "textScore"}` fields add the score and say nothing about which other fields are
    // kept: the rest of the projection decides that (all of them when it is empty).
    let (meta_fields, projection) = match &spec.projection {
        Some(p) => {
            let (metas, rest): (Vec<_>, Vec<_>) = p
                .iter()
                .partition(|(_, v)| matches!(v, Bson::Document(d) if d.contains_key("$meta")));
            let rest: Document = rest.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let metas: Vec<String> = metas.into_iter().map(|(k, _)| k.clone()).collect();
            let only_id = rest.keys().all(|k| k == "_id");
            let includes = rest.iter().any(|(k, v)| k != "_id" && crate::doc::truthy(v));
            match projection {
                Some(_) if !metas.is_empty() && !includes => {
                    let rest = if only_id && rest.is_empty() {
                        None
                    } else {
                        Some(Projection::parse(&rest)?)
                    };
                    (metas, rest.map(std::borrow::Cow::Owned))
                }
                Some(p) => (Vec::new(), Some(std::borrow::Cow::Borrowed(p))),
                None => (Vec::new(), None),
            }
        }
        None => (Vec::new(), None),
    };
    let projection = projection.as_deref();
    let mut docs: Vec<Document> = plan::fetch_scored(txn, meta, filter, spec.hint.as_ref())?
        .into_iter()
        .map(|f| f.doc)
        .collect();
    if let Some(sort) = sort {
        docs.sort_by(|a, b| sort.compare(a, b));
    }
    let skip = usize::try_from(spec.skip).unwrap_or(usize::MAX);
    let limit = if spec.limit == 0 { usize::MAX } else { spec.limit as usize };
    let mut out = Vec::new();
    for doc in docs.into_iter().skip(skip).take(limit) {
        let score = doc_score(&doc);
        let mut d = match projection {
            Some(p) => p.apply(&doc, match_position(p, filter, &doc))?,
            None => doc,
        };
        if let Some(score) = score {
            for m in &meta_fields {
                d.insert(m.clone(), score);
            }
        }
        if !keep_text_score {
            // A projected score has its own name; the carrier field never leaves.
            d.remove(text::SCORE_FIELD);
        }
        out.push(d);
    }
    Ok(out)
}

fn doc_score(doc: &Document) -> Option<f64> {
    doc.get_f64(text::SCORE_FIELD).ok()
}

/// Whether a projection document asks for `{$meta: "textScore"}`.
fn mentions_text_score(p: &Document) -> bool {
    p.values().any(|v| match v {
        Bson::Document(d) => {
            d.get("$meta") == Some(&Bson::String("textScore".into())) || mentions_text_score(d)
        }
        _ => false,
    })
}

/// The array position the filter matched, when the projection needs it (positional `field.$`);
/// matching again only for that avoids a second match per returned document.
pub(crate) fn match_position(p: &Projection, filter: &Filter, doc: &Document) -> Option<usize> {
    if p.needs_match_position() { filter.matches_with_key(doc).1 } else { None }
}

/// Counts the documents matching `spec.filter` (after `skip`, up to `limit`) under its collation,
/// through its `hint` when given.
pub fn count(txn: &dyn Txn, db: &str, coll: &str, spec: &FindSpec) -> Result<u64> {
    let (skip, limit, collation, hint) =
        (spec.skip, spec.limit, &spec.collation, spec.hint.as_ref());
    let filter = Filter::parse(&spec.filter)?;
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        return Ok(0);
    };
    let filter = filter.with_collation(collation.resolve(&meta.options)?.as_ref());
    let n = matching_sorted(txn, &meta, &filter, None, 0, hint)?.len() as u64;
    let n = n.saturating_sub(skip);
    Ok(if limit > 0 { n.min(limit) } else { n })
}

/// The distinct values of a field among matching documents (arrays contribute their elements),
/// in MongoDB's value order, under a requested collation: values the collation calls equal are
/// one value (the first found, in the collation's order), as in MongoDB.
pub fn distinct(
    txn: &dyn Txn,
    db: &str,
    coll: &str,
    key: &str,
    filter: &Document,
    collation: &Requested,
    hint: Option<&plan::Hint>,
) -> Result<Vec<Bson>> {
    let filter = Filter::parse(filter)?;
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        return Ok(Vec::new());
    };
    let collation = collation.resolve(&meta.options)?;
    let filter = filter.with_collation(collation.as_ref());
    let mut values: Vec<(Bson, Bson)> = Vec::new();
    for f in matching_sorted(txn, &meta, &filter, None, 0, hint)? {
        for v in crate::doc::path::collect_values(&f.doc, key) {
            let keyed = crate::collation::transform_opt(collation.as_deref(), v).into_owned();
            values.push((keyed, v.clone()));
        }
    }
    // A stable sort keeps the first-found spelling first among values the collation equates.
    values.sort_by(|a, b| crate::doc::compare::cmp_bson(&a.0, &b.0));
    values.dedup_by(|a, b| crate::doc::compare::cmp_bson(&a.0, &b.0) == Ordering::Equal);
    Ok(values.into_iter().map(|(_, v)| v).collect())
}

/// Checks every index of every collection against the documents: each document has exactly the
/// index entries its keys call for, and each index entry points at a document that calls for it.
/// Returns a description of each disagreement (empty when all agree).
pub fn verify(txn: &dyn Txn) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for meta in catalog::list_collections(txn, None)? {
        if meta.is_view() {
            continue;
        }
        let check = validate_collection(txn, &meta)?;
        problems.extend(check.problems.into_iter().map(|p| format!("{}: {p}", meta.namespace())));
    }
    Ok(problems)
}

/// What [`validate_collection`] found.
#[derive(Debug, Default)]
pub struct Validation {
    /// The documents (records) read.
    pub records: u64,
    /// The keys of documents that do not decode as BSON.
    pub corrupt_records: Vec<Vec<u8>>,
    /// The entries of each index, by index name (`_id_` counts the documents, which are keyed
    /// by `_id`).
    pub keys_per_index: Vec<(String, u64)>,
    /// Index entries a document calls for that are missing (their keys).
    pub missing_index_entries: Vec<Vec<u8>>,
    /// Index entries no document calls for (their keys).
    pub extra_index_entries: Vec<Vec<u8>>,
    /// A description of each problem (empty when the collection is valid).
    pub problems: Vec<String>,
}

/// Validates one collection (the `validate` command): every document decodes and is stored
/// under its own `_id`, and its indexes hold exactly the entries the documents call for.
pub fn validate_collection(txn: &dyn Txn, meta: &CollectionMeta) -> Result<Validation> {
    let mut v = Validation::default();
    let handle = write::CollectionHandle::from_meta_for_verify(std::sync::Arc::new(meta.clone()))?;
    let mut expected = std::collections::BTreeSet::new();
    let prefix = keys::document_prefix(meta.id);
    let end = keys::prefix_end(&prefix);
    for item in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
        let (key, value) = item?;
        v.records += 1;
        let doc = match Document::from_reader(&value[..]) {
            Ok(doc) => doc,
            Err(e) => {
                v.problems.push(format!("document {key:02x?} does not decode: {e}"));
                v.corrupt_records.push(key);
                continue;
            }
        };
        let id_matches = doc
            .get("_id")
            .map(|id| keys::Key::Document { coll: meta.id, id: &id_key(id) }.encode() == key);
        if id_matches != Some(true) {
            v.problems.push("document key does not match its _id".to_string());
        }
        for key in handle.entry_keys(&doc)? {
            expected.insert(key);
        }
    }
    opstats::add_docs(v.records);
    let mut actual = std::collections::BTreeSet::new();
    for i in &meta.indexes {
        if i.name() == "_id_" {
            v.keys_per_index.push((i.name().to_string(), v.records));
            continue;
        }
        let prefix = keys::index_prefix(meta.id, i.id);
        let end = keys::prefix_end(&prefix);
        let mut n = 0;
        for item in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
            actual.insert(item?.0);
            n += 1;
        }
        v.keys_per_index.push((i.name().to_string(), n));
    }
    for missing in expected.difference(&actual) {
        v.problems.push(format!("missing index entry {missing:02x?}"));
        v.missing_index_entries.push(missing.clone());
    }
    for extra in actual.difference(&expected) {
        v.problems.push(format!("index entry without document {extra:02x?}"));
        v.extra_index_entries.push(extra.clone());
    }
    Ok(v)
}
