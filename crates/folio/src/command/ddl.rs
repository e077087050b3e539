//! DDL and catalog commands: create, drop, dropDatabase, createIndexes, listIndexes, dropIndexes,
//! collMod, renameCollection, listDatabases, listCollections, dbStats, collStats.

use bson::{Bson, Document, doc};

use super::args::{collection, doc_array, opt_bool, opt_doc};
use super::context::{Mode, Runner};
use super::{Connection, Service};
use crate::catalog::{self, CollectionMeta};
use crate::error::Result;
use crate::exec;
use crate::query::Filter;
use crate::{bail, err};

/// `create`.
pub fn create(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "create")?;
    let db = run.op.db.clone();
    let mut options = Document::new();
    for (k, v) in cmd.iter().skip(1) {
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
pub fn drop(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "drop")?;
    let db = run.op.db.clone();
    let out = run.write(0, |txn| {
        let meta = catalog::get_collection(txn, &db, &coll)?;
        let n = meta.as_ref().map(|m| m.indexes.len()).unwrap_or(0);
        if !exec::drop_collection(txn, &db, &coll)? {
            bail!(NamespaceNotFound, "ns not found");
        }
        Ok(doc! { "nIndexesWas": n as i32, "ns": format!("{db}.{coll}") })
    })?;
    Ok(out)
}

/// `dropDatabase`.
pub fn drop_database(
    _svc: &Service,
    _c: &mut Connection,
    _cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let db = run.op.db.clone();
    run.write(0, |txn| {
        exec::drop_database(txn, &db)?;
        Ok(Document::new())
    })?;
    Ok(doc! { "dropped": db })
}

/// `createIndexes`.
pub fn create_indexes(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "createIndexes")?;
    let specs = doc_array(cmd, "indexes", "createIndexes")?;
    if specs.is_empty() {
        bail!(BadValue, "Must specify at least one index to create");
    }
    let db = run.op.db.clone();
    let in_txn = matches!(run.op.mode(), Mode::Transaction(_));
    let out = run.write(0, |txn| {
        if in_txn
            && let Some(meta) = catalog::get_collection(txn, &db, &coll)? {
                let empty = exec::scan_collection(txn, &meta)?.is_empty();
                if !empty {
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
pub fn drop_indexes(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let coll = collection(cmd, &name)?;
    let db = run.op.db.clone();
    let names: Vec<String> = match cmd.get("index") {
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
                    .find(|i| i.spec.get("key") == Some(&Bson::Document(key.clone())))
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

/// `collMod` (validator and validation options).
pub fn coll_mod(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "collMod")?;
    let db = run.op.db.clone();
    let cmd = cmd.clone();
    run.write(0, |txn| {
        let Some(mut meta) = catalog::get_collection(txn, &db, &coll)? else {
            bail!(NamespaceNotFound, "ns does not exist: {}.{}", db, coll);
        };
        for (k, v) in cmd.iter().skip(1) {
            match k.as_str() {
                "validator" | "validationLevel" | "validationAction" | "viewOn" | "pipeline" => {
                    if k == "validator"
                        && let Bson::Document(f) = v
                    {
                        Filter::parse(f)?;
                    }
                    meta.options.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
        catalog::put_collection(txn, &meta)?;
        Ok(Document::new())
    })?;
    Ok(Document::new())
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
pub fn rename_collection(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let from = match cmd.get("renameCollection") {
        Some(Bson::String(s)) => split_ns(s)?,
        _ => bail!(TypeMismatch, "renameCollection must be a string"),
    };
    let to = match cmd.get("to") {
        Some(Bson::String(s)) => split_ns(s)?,
        _ => bail!(TypeMismatch, "'to' must be a string"),
    };
    let drop_target = opt_bool(cmd, "dropTarget", "renameCollection")?.unwrap_or(false);
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
        d.insert("idIndex", id.spec.clone());
    }
    d
}

/// `listCollections`.
pub fn list_collections(
    svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let db = run.op.db.clone();
    let filter = Filter::parse(&opt_doc(cmd, "filter", "listCollections")?.unwrap_or_default())?;
    let name_only = opt_bool(cmd, "nameOnly", "listCollections")?.unwrap_or(false);
    let metas = run.read(|txn| catalog::list_collections(txn, Some(&db)))?;
    let mut docs = Vec::new();
    for m in metas {
        let info = collection_info(&m);
        if filter.matches(&info) {
            docs.push(if name_only { doc! { "name": m.name.clone(), "type": info.get_str("type").unwrap_or("collection") } } else { info });
        }
    }
    let ns = format!("{db}.$cmd.listCollections");
    Ok(list_cursor(svc, ns, docs))
}

fn list_cursor(_svc: &Service, ns: String, docs: Vec<Document>) -> Document {
    let batch: Vec<Bson> = docs.into_iter().map(Bson::Document).collect();
    doc! { "cursor": { "id": 0_i64, "ns": ns, "firstBatch": batch } }
}

/// `listIndexes`.
pub fn list_indexes(
    svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "listIndexes")?;
    let db = run.op.db.clone();
    let meta = run.read(|txn| catalog::get_collection(txn, &db, &coll))?;
    let Some(meta) = meta else {
        bail!(NamespaceNotFound, "ns does not exist: {}.{}", db, coll);
    };
    let docs = meta.indexes.iter().map(|i| i.spec.clone()).collect();
    Ok(list_cursor(svc, format!("{db}.{coll}"), docs))
}

/// `listDatabases`.
pub fn list_databases(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let name_only = opt_bool(cmd, "nameOnly", "listDatabases")?.unwrap_or(false);
    let filter = Filter::parse(&opt_doc(cmd, "filter", "listDatabases")?.unwrap_or_default())?;
    let names = run.read(|txn| catalog::list_databases(txn))?;
    let mut dbs = Vec::new();
    for n in names {
        let d = if name_only {
            doc! { "name": n }
        } else {
            doc! { "name": n, "sizeOnDisk": 0_i64, "empty": false }
        };
        if filter.matches(&d) {
            dbs.push(Bson::Document(d));
        }
    }
    let mut reply = doc! { "databases": dbs };
    if !name_only {
        reply.insert("totalSize", 0_i64);
        reply.insert("totalSizeMb", 0_i64);
    }
    Ok(reply)
}

/// `dbStats`.
pub fn db_stats(
    _svc: &Service,
    _c: &mut Connection,
    _cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let db = run.op.db.clone();
    let (colls, objects, size, indexes) = run.read(|txn| {
        let metas = catalog::list_collections(txn, Some(&db))?;
        let mut objects = 0i64;
        let mut size = 0i64;
        let mut indexes = 0i64;
        for m in &metas {
            indexes += m.indexes.len() as i64;
            for f in exec::scan_collection(txn, m)? {
                objects += 1;
                size += f.doc.to_vec().map(|v| v.len() as i64).unwrap_or(0);
            }
        }
        Ok((metas.len() as i64, objects, size, indexes))
    })?;
    Ok(doc! {
        "db": db,
        "collections": colls,
        "views": 0_i64,
        "objects": objects,
        "avgObjSize": if objects > 0 { size as f64 / objects as f64 } else { 0.0 },
        "dataSize": size as f64,
        "storageSize": size as f64,
        "indexes": indexes,
        "indexSize": 0.0,
        "totalSize": size as f64,
        "scaleFactor": 1_i64,
    })
}

/// `collStats`.
pub fn coll_stats(
    _svc: &Service,
    _c: &mut Connection,
    cmd: &Document,
    run: &mut Runner,
) -> Result<Document> {
    let coll = collection(cmd, "collStats")?;
    let db = run.op.db.clone();
    let (count, size, nindexes) = run.read(|txn| {
        let Some(meta) = catalog::get_collection(txn, &db, &coll)? else {
            bail!(NamespaceNotFound, "Collection [{}.{}] not found.", db, coll);
        };
        let docs = exec::scan_collection(txn, &meta)?;
        let size: i64 =
            docs.iter().map(|f| f.doc.to_vec().map(|v| v.len() as i64).unwrap_or(0)).sum();
        Ok((docs.len() as i64, size, meta.indexes.len() as i64))
    })?;
    Ok(doc! {
        "ns": format!("{db}.{coll}"),
        "count": count,
        "size": size,
        "avgObjSize": if count > 0 { size / count } else { 0 },
        "storageSize": size,
        "nindexes": nindexes,
        "totalIndexSize": 0_i64,
        "scaleFactor": 1_i64,
    })
}
