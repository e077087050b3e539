//! DDL and catalog commands: create, drop, dropDatabase, createIndexes, listIndexes, dropIndexes,
//! collMod, renameCollection, listDatabases, listCollections, dbStats, collStats.

use bson::{Bson, Document, doc};

use super::Service;
use super::args::Request;
use super::args::{doc_array, opt_bool, opt_doc};
use super::runner::{Mode, Runner};
use crate::catalog::{self, CollectionMeta};
use crate::error::Result;
use crate::exec;
use crate::query::Filter;
use crate::query::filter::truthy;
use crate::{bail, err};

/// `create`.
pub fn create(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let mut options = Document::new();
    for (k, v) in req.cmd.iter().skip(1) {
        match k.as_str() {
            "validator"
            | "validationLevel"
            | "validationAction"
            | "viewOn"
            | "pipeline"
            | "capped"
            | "size"
            | "max"
            | "collation"
            | "storageEngine"
            | "indexOptionDefaults"
            | "timeseries"
            | "expireAfterSeconds"
            | "clusteredIndex"
            | "changeStreamPreAndPostImages" => {
                options.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    // Time-series and clustered collections are not implemented: refused rather than created as
    // plain collections that would behave differently (docs/compatibility.md).
    for unsupported in ["timeseries", "clusteredIndex", "expireAfterSeconds"] {
        if options.contains_key(unsupported) {
            bail!(
                NotImplemented,
                "create option '{}' is not supported: Folio has no time-series or clustered \
                 collections",
                unsupported
            );
        }
    }
    if options.get("capped").is_some_and(truthy) {
        options.insert("capped", true);
        exec::capped::normalize_options(&mut options)?;
    } else {
        options.remove("capped");
        options.remove("size");
        options.remove("max");
    }
    if let Some(Bson::Document(v)) = options.get("validator") {
        Filter::parse(v)?;
    }
    if options.contains_key("viewOn") && matches!(run.op.mode(), Mode::Transaction(_)) {
        bail!(
            OperationNotSupportedInTransaction,
            "Cannot create a view in a multi-document transaction."
        );
    }
    let in_txn = matches!(run.op.mode(), Mode::Transaction(_));
    run.write(0, |txn| {
        if in_txn && let Some(existing) = catalog::get_collection(txn, &db, &coll)? {
            let _ = existing;
            bail!(NamespaceExists, "Collection {}.{} already exists.", db, coll);
        }
        exec::create_collection(txn, &db, &coll, options.clone())?;
        Ok(Document::new())
    })?;
    Ok(Document::new())
}

/// `drop`.
pub fn drop(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let out = run.write(0, |txn| {
        let meta = catalog::get_collection(txn, &db, &coll)?;
        let n = meta.as_ref().map(|m| m.indexes.len()).unwrap_or(0);
        // Since MongoDB 7.0, dropping a collection that does not exist succeeds (and still
        // waits for the write concern).
        if !exec::drop_collection(txn, &db, &coll)? {
            return Ok(Document::new());
        }
        Ok(doc! { "nIndexesWas": n as i32, "ns": format!("{db}.{coll}") })
    })?;
    Ok(out)
}

/// `dropDatabase`.
pub fn drop_database(_: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    run.write(0, |txn| {
        exec::drop_database(txn, &db)?;
        Ok(Document::new())
    })?;
    Ok(doc! { "dropped": db })
}

/// `createIndexes`.
pub fn create_indexes(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let specs = doc_array(req.cmd, "indexes", "createIndexes")?;
    if specs.is_empty() {
        bail!(BadValue, "Must specify at least one index to create");
    }
    if crate::api_strict::active() {
        for spec in &specs {
            crate::index::IndexSpec::check_api_strict(spec)?;
        }
    }
    let db = run.op.db.clone();
    let in_txn = matches!(run.op.mode(), Mode::Transaction(_));
    let out = run.write(0, |txn| {
        // In a transaction, only a collection the transaction creates (now, or earlier in it)
        // may get indexes, as in MongoDB: one that existed when the transaction's snapshot was
        // taken may not, empty or not.
        if in_txn && catalog::get_collection(txn, &db, &coll)?.is_some() {
            let before = req.svc.store.begin_read_only_at(txn.snapshot())?;
            let existed = catalog::get_collection(before.as_ref(), &db, &coll);
            before.abort();
            if existed?.is_some() {
                bail!(
                    OperationNotSupportedInTransaction,
                    "Cannot create new indexes on existing collection {}.{} in a multi-document transaction.",
                    db,
                    coll
                );
            }
        }
        let (before, after, created) = exec::create_indexes(txn, &db, &coll, &specs)?;
        let mut d = doc! {
            "numIndexesBefore": before as i32,
            "numIndexesAfter": after as i32,
            "createdCollectionAutomatically": created,
        };
        if before == after {
            d.insert("note", "all indexes already exist");
        }
        Ok(d)
    })?;
    Ok(out)
}

/// `dropIndexes`.
pub fn drop_indexes(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let names: Vec<String> = match req.cmd.get("index") {
        Some(Bson::String(s)) => vec![s.clone()],
        Some(Bson::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        Some(Bson::Document(key)) => {
            let key = key.clone();
            let found = run.read(|txn| {
                let meta = catalog::get_collection(txn, &db, &coll)?
                    .ok_or_else(|| err!(NamespaceNotFound, "ns not found {}.{}", db, coll))?;
                Ok(meta
                    .indexes
                    .iter()
                    .find(|i| i.spec().get("key") == Some(&Bson::Document(key.clone())))
                    .map(|i| i.name().to_string()))
            })?;
            match found {
                Some(n) => vec![n],
                None => bail!(IndexNotFound, "can't find index with key: {}", key),
            }
        }
        _ => bail!(FailedToParse, "BSON field 'dropIndexes.index' is missing but a required field"),
    };
    let out = run.write(0, |txn| {
        let before = exec::drop_indexes(txn, &db, &coll, &names)?;
        Ok(doc! { "nIndexesWas": before as i32 })
    })?;
    Ok(out)
}

/// `createSearchIndexes`, `updateSearchIndex`, `dropSearchIndex` and `listSearchIndexes`:
/// Atlas Search indexes live in a search service beside the server, which Folio has not; a
/// mongod without one refuses these commands with SearchNotEnabled, and so does Folio.
pub fn search_index_command(_: &mut Request<'_>) -> Result<Document> {
    bail!(SearchNotEnabled, "{}", crate::agg::SEARCH_INDEXES_UNAVAILABLE)
}

/// `collMod` (validator and validation options).
pub fn coll_mod(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    run.write(0, |txn| {
        let Some(meta) = catalog::get_collection(txn, &db, &coll)? else {
            bail!(NamespaceNotFound, "ns does not exist: {}.{}", db, coll);
        };
        let mut meta = std::sync::Arc::unwrap_or_clone(meta);
        let mut reply = Document::new();
        let mut resized = false;
        for (k, v) in req.cmd.iter().skip(1) {
            match k.as_str() {
                "validator" | "validationLevel" | "validationAction" | "viewOn" | "pipeline" => {
                    if k == "validator"
                        && let Bson::Document(f) = v
                    {
                        Filter::parse(f)?;
                    }
                    meta.options.insert(k.clone(), v.clone());
                }
                "changeStreamPreAndPostImages" => {
                    let enabled = match v {
                        Bson::Document(d) => match d.get("enabled") {
                            Some(Bson::Boolean(b)) if d.len() == 1 => *b,
                            _ => bail!(
                                FailedToParse,
                                "BSON field 'changeStreamPreAndPostImages.enabled' is missing \
                                 but a required field"
                            ),
                        },
                        _ => bail!(
                            TypeMismatch,
                            "BSON field 'collMod.changeStreamPreAndPostImages' is the wrong \
                             type, expected type 'object'"
                        ),
                    };
                    if enabled {
                        meta.options.insert(k.clone(), doc! { "enabled": true });
                    } else {
                        meta.options.remove(k);
                    }
                }
                "index" => coll_mod_index(&mut meta, v, &mut reply)?,
                "cappedSize" | "cappedMax" => {
                    if !exec::capped::is_capped(&meta) {
                        bail!(
                            InvalidOptions,
                            "collMod {} is only allowed on a capped collection: {}",
                            k,
                            meta.namespace()
                        );
                    }
                    let mut options = meta.options.clone();
                    options.insert(if k == "cappedSize" { "size" } else { "max" }, v.clone());
                    exec::capped::normalize_options(&mut options)?;
                    meta.options = options;
                    resized = true;
                }
                _ => {}
            }
        }
        catalog::put_collection(txn, &meta)?;
        if resized {
            // A smaller size or count drops the oldest documents now.
            exec::trim_capped(txn, &db, &coll)?;
        }
        let mut details = req.cmd.clone();
        details.remove("collMod");
        exec::changelog::ddl(txn, &meta, "modify", Bson::Document(details));
        Ok(reply)
    })
}

/// `collMod`'s `index: {keyPattern | name, expireAfterSeconds}`: changes a TTL index's expiry,
/// and reports the old and new values as MongoDB does.
fn coll_mod_index(meta: &mut CollectionMeta, spec: &Bson, reply: &mut Document) -> Result<()> {
    let Bson::Document(spec) = spec else {
        bail!(TypeMismatch, "BSON field 'collMod.index' is the wrong type, expected type 'object'");
    };
    let ns = meta.namespace();
    let position = match (spec.get("name"), spec.get("keyPattern")) {
        (Some(Bson::String(name)), None) => meta.indexes.iter().position(|i| i.name() == name),
        (None, Some(Bson::Document(key))) => {
            meta.indexes.iter().position(|i| i.spec().get_document("key").is_ok_and(|k| k == key))
        }
        _ => bail!(InvalidOptions, "must specify either index name or key pattern for collMod"),
    };
    let Some(position) = position else {
        bail!(IndexNotFound, "cannot find index {} for ns {}", spec, ns);
    };
    for (k, v) in spec {
        match k.as_str() {
            "name" | "keyPattern" => {}
            "expireAfterSeconds" => {
                let secs = match v {
                    Bson::Int32(n) => i64::from(*n),
                    Bson::Int64(n) => *n,
                    Bson::Double(d) if d.fract() == 0.0 => *d as i64,
                    _ => bail!(TypeMismatch, "expireAfterSeconds must be a number"),
                };
                if !(0..=i64::from(i32::MAX)).contains(&secs) {
                    bail!(
                        InvalidOptions,
                        "TTL index 'expireAfterSeconds' option must be within an acceptable \
                         range, try a lower number"
                    );
                }
                let index = &mut meta.indexes[position];
                let Some(old) = index.spec().get("expireAfterSeconds").cloned() else {
                    bail!(InvalidOptions, "no expireAfterSeconds field to update");
                };
                index.spec_mut().insert("expireAfterSeconds", secs);
                reply.insert("expireAfterSeconds_old", old);
                reply.insert("expireAfterSeconds_new", secs);
            }
            other => bail!(NotImplemented, "collMod index option '{}' is not supported", other),
        }
    }
    Ok(())
}

fn split_ns(ns: &str) -> Result<(String, String)> {
    match ns.split_once('.') {
        Some((db, coll)) if !db.is_empty() && !coll.is_empty() => {
            Ok((db.to_string(), coll.to_string()))
        }
        _ => bail!(InvalidNamespace, "Invalid namespace specified '{}'", ns),
    }
}

/// `renameCollection`.
pub fn rename_collection(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let from = match req.cmd.get("renameCollection") {
        Some(Bson::String(s)) => split_ns(s)?,
        _ => bail!(TypeMismatch, "renameCollection must be a string"),
    };
    let to = match req.cmd.get("to") {
        Some(Bson::String(s)) => split_ns(s)?,
        _ => bail!(TypeMismatch, "'to' must be a string"),
    };
    let drop_target = opt_bool(req.cmd, "dropTarget", "renameCollection")?.unwrap_or(false);
    run.write(0, |txn| {
        exec::rename_collection(txn, (&from.0, &from.1), (&to.0, &to.1), drop_target)?;
        Ok(Document::new())
    })?;
    Ok(Document::new())
}

fn collection_info(meta: &CollectionMeta) -> Document {
    let kind = if meta.is_view() { "view" } else { "collection" };
    let mut info = doc! { "readOnly": meta.is_view() };
    if !meta.is_view() {
        info.insert("uuid", meta.uuid);
    }
    let mut d = doc! { "name": meta.name.clone(), "type": kind, "options": meta.options.clone(), "info": info };
    if let Some(id) = meta.index("_id_") {
        d.insert("idIndex", id.spec().clone());
    }
    d
}

/// `listCollections`.
pub fn list_collections(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let filter =
        Filter::parse(&opt_doc(req.cmd, "filter", "listCollections")?.unwrap_or_default())?;
    let name_only = opt_bool(req.cmd, "nameOnly", "listCollections")?.unwrap_or(false);
    let batch = list_batch_size(req.cmd, "listCollections")?;
    let mut metas = run.read(|txn| catalog::list_collections(txn, Some(&db)))?;
    // `authorizedCollections` (with `nameOnly`) lists only the collections the user holds some
    // privilege on, instead of needing `listCollections` on the database.
    let authorized =
        opt_bool(req.cmd, "authorizedCollections", "listCollections")?.unwrap_or(false);
    if authorized
        && name_only
        && super::authz::enforced(req.svc, req.conn)
        && !req.conn.auth.allows(&crate::auth::Target::db(&db), "listCollections")
    {
        metas.retain(|m| req.conn.auth.has_any_privilege_on_collection(&db, &m.name));
    }
    let mut docs = Vec::new();
    for m in metas {
        let info = collection_info(&m);
        if filter.matches(&info) {
            docs.push(if name_only { doc! { "name": m.name.clone(), "type": info.get_str("type").unwrap_or("collection") } } else { info });
        }
    }
    let ns = format!("{db}.$cmd.listCollections");
    list_reply(req.svc, run, ns, docs, batch)
}

/// The `cursor.batchSize` of `listCollections`, `listIndexes` and `bulkWrite` (MongoDB's
/// `SimpleCursorOptions`); `None` when not given.
pub(super) fn list_batch_size(cmd: &Document, command: &str) -> Result<Option<usize>> {
    match cmd.get("cursor") {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(opts)) => {
            if let Some(k) = opts.keys().find(|k| k.as_str() != "batchSize") {
                return Err(crate::Error::unknown_field(&format!("{command}.cursor.{k}")));
            }
            super::crud::batch_size(opts, "batchSize", command)
        }
        Some(v) => bail!(
            TypeMismatch,
            "BSON field '{}.cursor' is the wrong type '{}', expected type 'object'",
            command,
            crate::doc::type_name(v)
        ),
    }
}

/// The cursor reply of `listCollections`, `listIndexes` and `bulkWrite`: the first batch holds
/// `batch` documents (all of them by default, up to 16 MiB), and a cursor is left open for
/// `getMore` when more remain, as in MongoDB. With a batch size of 0 the first batch is empty
/// and the cursor stays open unless there is nothing to return.
pub(super) fn list_reply(
    svc: &Service,
    run: &Runner,
    ns: String,
    docs: Vec<Document>,
    batch: Option<usize>,
) -> Result<Document> {
    if docs.is_empty() {
        return Ok(doc! { "cursor": { "id": 0_i64, "ns": ns, "firstBatch": [] } });
    }
    super::crud::cursor_reply(svc, run, ns, docs, Some(batch.unwrap_or(usize::MAX)), false, false)
}

/// `listIndexes`.
pub fn list_indexes(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let batch = list_batch_size(req.cmd, "listIndexes")?;
    let db = run.op.db.clone();
    let meta = run.read(|txn| catalog::get_collection(txn, &db, &coll))?;
    let Some(meta) = meta else {
        bail!(NamespaceNotFound, "ns does not exist: {}.{}", db, coll);
    };
    let docs = meta.indexes.iter().map(|i| i.spec().clone()).collect();
    list_reply(req.svc, run, format!("{db}.{coll}"), docs, batch)
}

/// `listDatabases`. `admin` is always listed, as in MongoDB (where it holds `system.version`).
pub fn list_databases(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let name_only = opt_bool(req.cmd, "nameOnly", "listDatabases")?.unwrap_or(false);
    // Without the `listDatabases` privilege, a user sees only the databases it holds some
    // privilege on (`authorizedDatabases`, true by default then); asking for all is refused.
    let restricted = super::authz::enforced(req.svc, req.conn)
        && req.conn.auth.is_authenticated()
        && !req.conn.auth.allows(&crate::auth::Target::Cluster, "listDatabases");
    let authorized_only = match opt_bool(req.cmd, "authorizedDatabases", "listDatabases")? {
        Some(false) if restricted => bail!(
            Unauthorized,
            "not authorized on admin to execute command {}",
            super::authz::redacted(req.cmd)
        ),
        Some(b) => b && restricted,
        None => restricted,
    };
    let filter = Filter::parse(&opt_doc(req.cmd, "filter", "listDatabases")?.unwrap_or_default())?;
    let sizes = run.read(|txn| {
        let mut names = catalog::list_databases(txn)?;
        if !names.iter().any(|n| n == "admin") {
            names.push("admin".to_string());
            names.sort();
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let size = if name_only { 0 } else { database_stats(txn, &name)?.total_size() };
            out.push((name, size));
        }
        Ok(out)
    })?;
    let mut dbs = Vec::new();
    let mut total = 0i64;
    for (name, size) in sizes {
        let d = if name_only {
            doc! { "name": name }
        } else {
            doc! { "name": name, "sizeOnDisk": size as i64, "empty": size == 0 }
        };
        if authorized_only
            && !req.conn.auth.has_any_privilege_on_db(d.get_str("name").unwrap_or_default())
        {
            continue;
        }
        if filter.matches(&d) {
            total += size as i64;
            dbs.push(Bson::Document(d));
        }
    }
    let mut reply = doc! { "databases": dbs };
    if !name_only {
        reply.insert("totalSize", total);
        reply.insert("totalSizeMb", total / (1024 * 1024));
    }
    Ok(reply)
}

/// The sizes of a database's collections, from the same counts `$collStats` reports.
#[derive(Default)]
struct DatabaseStats {
    collections: i64,
    views: i64,
    objects: u64,
    data_size: u64,
    indexes: i64,
    index_size: u64,
}

impl DatabaseStats {
    fn total_size(&self) -> u64 {
        self.data_size + self.index_size
    }
}

fn database_stats(txn: &dyn crate::mvcc::Txn, db: &str) -> Result<DatabaseStats> {
    let mut out = DatabaseStats::default();
    for meta in catalog::list_collections(txn, Some(db))? {
        match exec::stats::namespace_stats(txn, db, &meta.name)? {
            crate::agg::stats::Namespace::Collection(c) => {
                out.collections += 1;
                out.objects += c.count;
                out.data_size += c.size;
                out.indexes += c.indexes.len() as i64;
                out.index_size += c.indexes.iter().map(|i| i.size).sum::<u64>();
            }
            crate::agg::stats::Namespace::View => out.views += 1,
            crate::agg::stats::Namespace::Missing => {}
        }
    }
    Ok(out)
}

/// The `scale` argument of `dbStats` / `collStats`: sizes are divided by it (MongoDB's codes
/// for a bad one).
fn scale(cmd: &Document) -> Result<u64> {
    match cmd.get("scale") {
        None | Some(Bson::Null) => Ok(1),
        Some(v) => match crate::doc::compare::as_f64(v) {
            Some(n) if n >= 1.0 => Ok(n as u64),
            Some(_) => Err(crate::Error::new(crate::Code::Other(4390200), "scale has to be >= 1")),
            None if matches!(v, Bson::Boolean(false)) => Ok(1),
            None => {
                Err(crate::Error::new(crate::Code::Other(4390201), "scale has to be a number >= 1"))
            }
        },
    }
}

/// `dbStats`.
pub fn db_stats(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let scale = scale(req.cmd)?;
    let s = run.read(|txn| database_stats(txn, &db))?;
    let scaled = |n: u64| (n / scale) as f64;
    Ok(doc! {
        "db": db,
        "collections": s.collections,
        "views": s.views,
        "objects": s.objects as i64,
        "avgObjSize": if s.objects > 0 { s.data_size as f64 / s.objects as f64 } else { 0.0 },
        "dataSize": scaled(s.data_size),
        "storageSize": scaled(s.data_size),
        "indexes": s.indexes,
        "indexSize": scaled(s.index_size),
        "totalSize": scaled(s.total_size()),
        "scaleFactor": scale as i64,
    })
}

/// `collStats`.
pub fn coll_stats(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let scale = scale(req.cmd)?;
    let stats = run.read(|txn| exec::stats::namespace_stats(txn, &db, &coll))?;
    let c = match stats {
        crate::agg::stats::Namespace::Collection(c) => c,
        crate::agg::stats::Namespace::View => {
            bail!(
                CommandNotSupportedOnView,
                "Namespace {}.{} is a view, not a collection",
                db,
                coll
            )
        }
        crate::agg::stats::Namespace::Missing => {
            bail!(NamespaceNotFound, "Collection [{}.{}] not found.", db, coll)
        }
    };
    let scaled = |n: u64| (n / scale) as i64;
    let mut index_sizes = Document::new();
    let mut total_index = 0u64;
    for i in &c.indexes {
        let name = i.spec.get_str("name").unwrap_or_default().to_string();
        index_sizes.insert(name, scaled(i.size));
        total_index += i.size;
    }
    Ok(doc! {
        "ns": format!("{db}.{coll}"),
        "count": c.count as i64,
        "size": scaled(c.size),
        "avgObjSize": c.size.checked_div(c.count).unwrap_or(0) as i64,
        "storageSize": scaled(c.size),
        "capped": c.capped,
        "nindexes": c.indexes.len() as i64,
        "totalIndexSize": scaled(total_index),
        "indexSizes": index_sizes,
        "totalSize": scaled(c.size + total_index),
        "scaleFactor": scale as i64,
    })
}

/// The `size` and `max` of `convertToCapped` / `cloneCollectionAsCapped`, as capped `create`
/// options.
fn capped_options(cmd: &Document, command: &str) -> Result<Document> {
    let mut options = doc! { "capped": true };
    match cmd.get("size") {
        Some(size) => options.insert("size", size.clone()),
        None => {
            bail!(Location40414, "BSON field '{}.size' is missing but a required field", command)
        }
    };
    if let Some(max) = cmd.get("max") {
        options.insert("max", max.clone());
    }
    exec::capped::normalize_options(&mut options)?;
    Ok(options)
}

/// Copies every document of `meta` (in natural order when it is capped, else `_id` order) into
/// the new capped collection `db.to`, whose limits drop the oldest as it fills.
fn copy_into_capped(
    txn: &mut dyn crate::mvcc::Txn,
    meta: &CollectionMeta,
    to: &str,
    options: Document,
) -> Result<()> {
    if meta.is_view() {
        bail!(CommandNotSupportedOnView, "{} is a view", meta.namespace());
    }
    exec::create_collection(txn, &meta.db, to, options)?;
    let mut found = exec::scan_collection(txn, meta)?;
    if exec::capped::is_capped(meta) {
        found = exec::capped::natural_order(txn, meta, found)?;
    }
    for f in found {
        exec::insert_one(txn, &meta.db, to, &f.doc, true)?;
    }
    Ok(())
}

/// `cloneCollectionAsCapped`: a new capped collection `toCollection` holding the newest
/// documents of the source that fit its `size` (and `max`); the source is unchanged, and its
/// indexes are not copied (as in MongoDB).
pub fn clone_collection_as_capped(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let from = req.collection()?;
    let to = match req.cmd.get("toCollection") {
        Some(Bson::String(s)) if !s.is_empty() => s.clone(),
        Some(Bson::String(_)) | None => {
            bail!(InvalidNamespace, "cloneCollectionAsCapped needs a toCollection name")
        }
        Some(_) => bail!(
            TypeMismatch,
            "BSON field 'cloneCollectionAsCapped.toCollection' is the wrong type, expected type \
             'string'"
        ),
    };
    let options = capped_options(req.cmd, "cloneCollectionAsCapped")?;
    let db = run.op.db.clone();
    run.write(0, |txn| {
        let Some(meta) = catalog::get_collection(txn, &db, &from)? else {
            bail!(NamespaceNotFound, "source collection {}.{} does not exist", db, from);
        };
        copy_into_capped(txn, &meta, &to, options.clone())?;
        Ok(Document::new())
    })
}

/// `convertToCapped`: the collection becomes capped with `size` (and `max`), keeping its newest
/// documents that fit; as in MongoDB its indexes other than `_id` are dropped. Done as MongoDB
/// does it, in one transaction: a capped copy under a temporary name replaces the collection.
pub fn convert_to_capped(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let options = capped_options(req.cmd, "convertToCapped")?;
    let db = run.op.db.clone();
    let tmp = format!("tmp.convertToCapped.{coll}");
    run.write(0, |txn| {
        let Some(meta) = catalog::get_collection(txn, &db, &coll)? else {
            bail!(NamespaceNotFound, "source collection {}.{} does not exist", db, coll);
        };
        copy_into_capped(txn, &meta, &tmp, options.clone())?;
        exec::rename_collection(txn, (&db, &tmp), (&db, &coll), true)?;
        Ok(Document::new())
    })
}
