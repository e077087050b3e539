//! The MongoDB 8.0 `bulkWrite` admin command: mixed inserts, updates and deletes across
//! namespaces in one command, with per-operation results returned through a cursor.

use bson::{Bson, Document, doc};

use super::args::Request;
use super::args::{doc_array, opt_bool, opt_doc};
use super::crud::{run_batch, write_error_doc};
use super::runner::Runner;
use crate::bail;
use crate::error::Result;
use crate::exec;

/// One parsed operation of `ops`.
enum Op {
    Insert {
        ns: usize,
        doc: Document,
    },
    Update {
        ns: usize,
        op: Box<exec::UpdateOp>,
    },
    Delete {
        ns: usize,
        filter: Document,
        multi: bool,
        collation: crate::collation::Requested,
        hint: Option<crate::exec::plan::Hint>,
    },
}

fn ns_index(op: &Document, key: &str, count: usize) -> Result<usize> {
    let n = match op.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => bail!(
            TypeMismatch,
            "BSON field 'bulkWrite.ops.{}' is the wrong type, expected type 'int'",
            key
        ),
    };
    if n < 0 || n as usize >= count {
        bail!(BadValue, "BulkWrite ops entry {} has an invalid nsInfo index {}", key, n);
    }
    Ok(n as usize)
}

fn parse_op(op: &Document, namespaces: usize) -> Result<Op> {
    let Some(kind) = op.keys().next() else {
        bail!(FailedToParse, "Empty bulkWrite operation");
    };
    match kind.as_str() {
        "insert" => {
            let doc = opt_doc(op, "document", "bulkWrite.ops")?.ok_or_else(|| {
                crate::err!(
                    FailedToParse,
                    "BSON field 'bulkWrite.ops.document' is missing but a required field"
                )
            })?;
            Ok(Op::Insert { ns: ns_index(op, "insert", namespaces)?, doc })
        }
        "update" => {
            let filter = opt_doc(op, "filter", "bulkWrite.ops")?.unwrap_or_default();
            let update = match op.get("updateMods") {
                Some(Bson::Document(d)) => exec::UpdateDoc::Modifiers(d.clone()),
                Some(Bson::Array(_)) => {
                    exec::UpdateDoc::Pipeline(doc_array(op, "updateMods", "bulkWrite.ops")?)
                }
                _ => bail!(
                    FailedToParse,
                    "BSON field 'bulkWrite.ops.updateMods' is missing but a required field"
                ),
            };
            let multi = opt_bool(op, "multi", "bulkWrite.ops")?.unwrap_or(false);
            let array_filters = match op.get("arrayFilters") {
                Some(Bson::Array(_)) => Some(doc_array(op, "arrayFilters", "bulkWrite.ops")?),
                _ => None,
            };
            Ok(Op::Update {
                ns: ns_index(op, "update", namespaces)?,
                op: Box::new(exec::UpdateOp {
                    filter,
                    update,
                    let_vars: None,
                    multi,
                    upsert: opt_bool(op, "upsert", "bulkWrite.ops")?.unwrap_or(false),
                    array_filters,
                    sort: opt_doc(op, "sort", "bulkWrite.ops")?,
                    collation: crate::collation::Requested::from_field(
                        op,
                        "collation",
                        "bulkWrite.ops",
                    )?,
                    bypass_validation: false,
                    hint: crate::exec::plan::Hint::parse(op.get("hint"))?,
                }),
            })
        }
        "delete" => Ok(Op::Delete {
            ns: ns_index(op, "delete", namespaces)?,
            filter: opt_doc(op, "filter", "bulkWrite.ops")?.unwrap_or_default(),
            multi: opt_bool(op, "multi", "bulkWrite.ops")?.unwrap_or(false),
            collation: crate::collation::Requested::from_field(op, "collation", "bulkWrite.ops")?,
            hint: crate::exec::plan::Hint::parse(op.get("hint"))?,
        }),
        other => bail!(FailedToParse, "Unrecognized bulkWrite operation: {}", other),
    }
}

/// `bulkWrite`.
pub fn bulk_write(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let raw_ops = doc_array(req.cmd, "ops", "bulkWrite")?;
    let ns_info = doc_array(req.cmd, "nsInfo", "bulkWrite")?;
    let ordered = opt_bool(req.cmd, "ordered", "bulkWrite")?.unwrap_or(true);
    let errors_only = opt_bool(req.cmd, "errorsOnly", "bulkWrite")?.unwrap_or(false);
    let batch = super::ddl::list_batch_size(req.cmd, "bulkWrite")?;
    let mut namespaces = Vec::new();
    for info in &ns_info {
        let ns = info
            .get_str("ns")
            .map_err(|_| crate::err!(FailedToParse, "nsInfo entries need an 'ns'"))?;
        match ns.split_once('.') {
            Some((db, coll)) if !db.is_empty() && !coll.is_empty() => {
                namespaces.push((db.to_string(), coll.to_string()))
            }
            _ => bail!(InvalidNamespace, "Invalid namespace specified '{}'", ns),
        }
    }
    if raw_ops.is_empty() {
        bail!(InvalidLength, "Write batch sizes must be between 1 and 100000. Got 0 operations.");
    }
    let let_vars = super::crud::command_let(req.cmd, "bulkWrite")?;
    let bypass = opt_bool(req.cmd, "bypassDocumentValidation", "bulkWrite")?.unwrap_or(false);
    let mut results = Vec::new();
    let (
        mut n_errors,
        mut n_inserted,
        mut n_matched,
        mut n_modified,
        mut n_upserted,
        mut n_deleted,
    ) = (0i32, 0i64, 0i64, 0i64, 0i64, 0i64);
    run_batch(
        run,
        req.cmd,
        ordered,
        &raw_ops,
        |run, stmt, raw| {
            let outcome = parse_op(raw, namespaces.len()).map(|mut op| {
                if let Op::Update { op, .. } = &mut op {
                    op.let_vars = let_vars.clone();
                    op.bypass_validation = bypass;
                }
                op
            });
            outcome.and_then(|op| match op {
                Op::Insert { ns, doc } => {
                    let (db, coll) = &namespaces[ns];
                    run.write(stmt, |txn| {
                        exec::insert_one(txn, db, coll, &doc, bypass)?;
                        Ok(doc! { "n": 1, "kind": "insert" })
                    })
                }
                Op::Update { ns, op } => {
                    let (db, coll) = &namespaces[ns];
                    run.write(stmt, |txn| {
                        let r = exec::update(txn, db, coll, &op)?;
                        let mut d = doc! { "n": r.matched as i64, "nModified": r.modified as i64, "kind": "update" };
                        if let Some(id) = r.upserted_id {
                            d.insert("n", 1_i64);
                            d.insert("upserted", doc! { "_id": id });
                        }
                        Ok(d)
                    })
                }
                Op::Delete { ns, filter, multi, collation, hint } => {
                    let (db, coll) = &namespaces[ns];
                    run.write(stmt, |txn| {
                        let lv = let_vars.as_ref();
                        let op = exec::DeleteOp {
                            filter: &filter,
                            limit_one: !multi,
                            let_vars: lv,
                            collation: &collation,
                            hint: hint.as_ref(),
                        };
                        let r = exec::delete(txn, db, coll, &op)?;
                        Ok(doc! { "n": r.deleted as i64, "kind": "delete" })
                    })
                }
            })
        },
        |i, outcome| match outcome {
            Ok(mut out) => {
                let kind = out
                    .remove("kind")
                    .and_then(|k| k.as_str().map(String::from))
                    .unwrap_or_default();
                let n = out.get("n").and_then(crate::doc::compare::as_f64).unwrap_or(0.0) as i64;
                match kind.as_str() {
                    "insert" => n_inserted += n,
                    "update" => {
                        if out.contains_key("upserted") {
                            n_upserted += 1;
                        } else {
                            n_matched += n;
                        }
                        n_modified += out
                            .get("nModified")
                            .and_then(crate::doc::compare::as_f64)
                            .unwrap_or(0.0) as i64;
                    }
                    _ => n_deleted += n,
                }
                if !errors_only {
                    let mut r = doc! { "ok": 1.0, "idx": i as i32, "n": n as i32 };
                    if kind == "update" {
                        r.insert(
                            "nModified",
                            out.get("nModified")
                                .and_then(crate::doc::compare::as_f64)
                                .unwrap_or(0.0) as i32,
                        );
                        if let Some(u) = out.get("upserted") {
                            r.insert("upserted", u.clone());
                        }
                    }
                    results.push(r);
                }
            }
            Err(e) => {
                n_errors += 1;
                let mut r = doc! { "ok": 0.0, "idx": i as i32 };
                for (k, v) in write_error_doc(e) {
                    if k != "index" {
                        r.insert(k, v);
                    }
                }
                results.push(r);
            }
        },
    )?;
    let mut reply =
        super::ddl::list_reply(req.svc, run, "admin.$cmd.bulkWrite".into(), results, batch)?;
    reply.extend(doc! {
        "nErrors": n_errors,
        "nInserted": n_inserted as i32,
        "nMatched": n_matched as i32,
        "nModified": n_modified as i32,
        "nUpserted": n_upserted as i32,
        "nDeleted": n_deleted as i32,
    });
    Ok(reply)
}
