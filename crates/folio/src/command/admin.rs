//! Administration commands tools and shells call: `validate`, `dataSize`, `fsync` /
//! `fsyncUnlock` and `replSetGetConfig`.
//!
//! `validate` reads the collection at one snapshot and checks what can go wrong in Folio's
//! keyspace: every document decodes and is stored under its own `_id`, and every index holds
//! exactly the entries the documents call for (no missing entry, no entry without its
//! document). Its reply has MongoDB's shape (`nrecords`, `keysPerIndex`, `valid`, `errors`,
//! ...). `fsync` makes committed data durable (every commit is already synced; this also
//! flushes the engine); its `lock: true`, which would block all writes until `fsyncUnlock`, is
//! refused because Folio has no global write lock to hold.

use bson::{Bson, Document, doc};

use super::args::Request;
use super::args::{opt_bool, opt_doc};
use super::runner::Runner;
use crate::bail;
use crate::catalog;
use crate::error::Result;
use crate::exec;

/// `validate`.
pub fn validate(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    for flag in ["full", "background", "checkBSONConformance", "enforceFastCount"] {
        opt_bool(req.cmd, flag, "validate")?;
    }
    let db = run.op.db.clone();
    let ns = format!("{db}.{coll}");
    let (meta, check) = run.read(|txn| {
        let Some(meta) = catalog::get_collection(txn, &db, &coll)? else {
            bail!(NamespaceNotFound, "Collection '{}' does not exist to validate.", ns);
        };
        if meta.is_view() {
            bail!(CommandNotSupportedOnView, "Cannot validate a view: {}", ns);
        }
        let check = exec::validate_collection(txn, &meta)?;
        Ok((meta, check))
    })?;
    let valid = check.problems.is_empty();
    let mut keys_per_index = Document::new();
    let mut index_details = Document::new();
    for (name, n) in &check.keys_per_index {
        keys_per_index.insert(name.clone(), count(*n));
        index_details.insert(name.clone(), doc! { "valid": valid });
    }
    Ok(doc! {
        "ns": ns,
        "uuid": meta.uuid,
        "nInvalidDocuments": count(check.corrupt_records.len() as u64),
        "nNonCompliantDocuments": 0,
        "nrecords": count(check.records),
        "nIndexes": count(meta.indexes.len() as u64),
        "keysPerIndex": keys_per_index,
        "indexDetails": index_details,
        "valid": valid,
        "repaired": false,
        "warnings": Vec::<String>::new(),
        "errors": check.problems,
        "extraIndexEntries": entries(&check.extra_index_entries),
        "missingIndexEntries": entries(&check.missing_index_entries),
        "corruptRecords": entries(&check.corrupt_records),
    })
}

/// A count as MongoDB's `validate` reports it (a 32-bit integer).
fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Storage keys as `validate` lists them: Folio's keys are bytes of its own keyspace, shown
/// as hex in `{key: ...}` documents (MongoDB lists record ids and index keys).
fn entries(keys: &[Vec<u8>]) -> Vec<Document> {
    keys.iter()
        .map(|k| doc! { "key": k.iter().map(|b| format!("{b:02x}")).collect::<String>() })
        .collect()
}

/// `dataSize`: the BSON size and count of a collection's documents (`{dataSize: "db.coll"}`).
/// A key range (`keyPattern` with `min`/`max`) is refused: it would need an index scan between
/// bounds given by hand, which Folio does not offer (as with `find`'s `min`/`max`).
pub fn data_size(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let ns = match req.cmd.get("dataSize") {
        Some(Bson::String(ns)) => ns.clone(),
        Some(other) => bail!(
            TypeMismatch,
            "BSON field 'dataSize.dataSize' is the wrong type '{}', expected type 'string'",
            crate::doc::type_name(other)
        ),
        None => bail!(FailedToParse, "missing namespace"),
    };
    let Some((db, coll)) = ns.split_once('.').filter(|(d, c)| !d.is_empty() && !c.is_empty())
    else {
        bail!(InvalidNamespace, "Invalid namespace specified '{}'", ns);
    };
    for key in ["keyPattern", "min", "max"] {
        if opt_doc(req.cmd, key, "dataSize")?.is_some_and(|d| !d.is_empty()) {
            bail!(NotImplemented, "dataSize.{} is not supported by Folio", key);
        }
    }
    opt_bool(req.cmd, "estimate", "dataSize")?;
    let started = std::time::Instant::now();
    let stats = run.read(|txn| exec::stats::namespace_stats(txn, db, coll))?;
    let (size, count) = match stats {
        crate::agg::stats::Namespace::Collection(c) => (c.size, c.count),
        _ => (0, 0),
    };
    Ok(doc! {
        "size": size as i64,
        "numObjects": count as i64,
        "millis": started.elapsed().as_millis() as i64,
    })
}

/// `fsync`: flushes the storage engine. `lock: true` is refused (see the module docs).
pub fn fsync(req: &mut Request<'_>) -> Result<Document> {
    if opt_bool(req.cmd, "lock", "fsync")? == Some(true) {
        bail!(
            CommandNotSupported,
            "fsync with lock: true is not supported by Folio: it has no global write lock to \
             hold (back up with `folio dump`, which reads one snapshot)"
        );
    }
    opt_bool(req.cmd, "async", "fsync")?;
    req.svc.store.flush()?;
    Ok(doc! { "numFiles": 1 })
}

/// `fsyncUnlock`: there is never an fsync lock to release.
pub fn fsync_unlock(_: &mut Request<'_>) -> Result<Document> {
    bail!(IllegalOperation, "fsyncUnlock called when not locked");
}

/// `replSetGetConfig` (mongosh `rs.conf()`): the configuration of the one-member replica set
/// `hello` and `replSetGetStatus` describe.
pub fn repl_set_get_config(req: &mut Request<'_>) -> Result<Document> {
    let opts = req.svc.options();
    Ok(doc! { "config": {
        "_id": opts.repl_set_name.clone(),
        "version": 1,
        "term": 1_i64,
        "members": [{
            "_id": 0,
            "host": opts.advertise_host.clone(),
            "arbiterOnly": false,
            "buildIndexes": true,
            "hidden": false,
            "priority": 1.0,
            "tags": {},
            "secondaryDelaySecs": 0_i64,
            "votes": 1,
        }],
        "protocolVersion": 1_i64,
        "writeConcernMajorityJournalDefault": true,
        "settings": {
            "chainingAllowed": true,
            "heartbeatIntervalMillis": 2000,
            "heartbeatTimeoutSecs": 10,
            "electionTimeoutMillis": 10000,
            "catchUpTimeoutMillis": -1,
            "catchUpTakeoverDelayMillis": 30000,
            "getLastErrorModes": {},
            "getLastErrorDefaults": { "w": 1, "wtimeout": 0 },
            "replicaSetId": req.svc.service_id,
        },
    } })
}
