//! CRUD commands: insert, update, delete, findAndModify, find, getMore, killCursors, count,
//! distinct, aggregate.

use std::time::Instant;

use bson::{Bson, Document, doc};

use super::args::Request;
use super::args::{doc_array, doc_refs, opt_bool, opt_doc, opt_i64};
use super::runner::{Mode, Runner};
use super::{Connection, Service};
use crate::collation::Requested;
use crate::cursor::{Batch, Cursor, Owner, Remaining, check_get_more, take_batch};
use crate::error::{Code, Error, Result};
use crate::exec::plan::Hint;
use crate::exec::{self, FindSpec, Rows};
use crate::{bail, err};

/// The command's `let` option, evaluated once (`$$NOW` and friends included).
pub(crate) fn command_let(cmd: &Document, command: &str) -> Result<Option<Document>> {
    match opt_doc(cmd, "let", command)? {
        Some(vars) => Ok(Some(crate::agg::eval_let(&vars)?)),
        None => Ok(None),
    }
}

/// The default size of a first batch.
const DEFAULT_FIRST_BATCH: usize = 101;

/// The statement id of the `i`th statement of a write command.
pub(crate) fn stmt_id(cmd: &Document, i: usize) -> i32 {
    // `get`, not `get_array`/`get_i32`: an absent field is the usual case, and those build an
    // error (with an allocated key) to say so.
    if let Some(Bson::Array(ids)) = cmd.get("stmtIds")
        && let Some(Bson::Int32(n)) = ids.get(i)
    {
        return *n;
    }
    let base = match cmd.get("stmtId") {
        Some(Bson::Int32(n)) => *n,
        _ => 0,
    };
    base.saturating_add(i as i32)
}

/// Errors that end the whole command rather than becoming a per-statement write error.
pub(crate) fn is_command_level(e: &Error, run: &Runner) -> bool {
    let in_txn = matches!(run.op.mode(), Mode::Transaction(_));
    e.code.is(crate::error::Category::EndsCommand)
        || (in_txn && e.code.is(crate::error::Category::EndsCommandInTxn))
}

/// A `writeErrors` entry.
fn write_error(index: usize, e: &Error) -> Bson {
    Bson::Document(write_error_doc_at(index, e))
}

/// The fields of a write error (without its index).
pub(crate) fn write_error_doc(e: &Error) -> Document {
    write_error_doc_at(0, e)
}

fn write_error_doc_at(index: usize, e: &Error) -> Document {
    let mut d = doc! { "index": index as i32 };
    super::insert_code(&mut d, e);
    d.insert("errmsg", e.message.clone());
    super::insert_extra(&mut d, e);
    d
}

/// Runs the statements of a write command as MongoDB does: an ordered batch stops at the first
/// write error; inside a transaction the first error aborts the transaction; an error that ends
/// the command (see [`is_command_level`]) is returned after the statements that committed are
/// made durable. `record` sees each statement's output or write error, by position.
pub(super) fn run_batch<T>(
    run: &mut Runner,
    cmd: &Document,
    ordered: bool,
    items: &[T],
    mut each: impl FnMut(&mut Runner, i32, &T) -> Result<Document>,
    mut record: impl FnMut(usize, std::result::Result<Document, &Error>),
) -> Result<()> {
    let in_txn = matches!(run.op.mode(), Mode::Transaction(_));
    if items.len() > 1 {
        // One transaction for the statements, committed and synced once before the reply.
        run.batch_statements();
    }
    let mut outcome = Ok(());
    for (i, item) in items.iter().enumerate() {
        match each(run, stmt_id(cmd, i), item) {
            Ok(out) => record(i, Ok(out)),
            Err(e) if is_command_level(&e, run) => {
                outcome = Err(e);
                break;
            }
            Err(e) => {
                record(i, Err(&e));
                if in_txn {
                    run.abort_on_error();
                    break;
                }
                if ordered {
                    break;
                }
            }
        }
    }
    // The statements that committed are made durable whatever happened to the others.
    run.sync_deferred()?;
    outcome
}

/// [`run_batch`] for `insert`, `update` and `delete`: `add` sees each statement's output, and
/// the write errors are returned as the reply's `writeErrors`.
fn run_statements<T>(
    run: &mut Runner,
    cmd: &Document,
    items: &[T],
    each: impl FnMut(&mut Runner, i32, &T) -> Result<Document>,
    mut add: impl FnMut(usize, &Document),
) -> Result<Vec<Bson>> {
    let ordered = opt_bool(cmd, "ordered", "write")?.unwrap_or(true);
    let mut errors = Vec::new();
    run_batch(run, cmd, ordered, items, each, |i, outcome| match outcome {
        Ok(out) => add(i, &out),
        Err(e) => errors.push(write_error(i, e)),
    })?;
    Ok(errors)
}

/// Writes to a capped collection inside a transaction are refused, as MongoDB refuses them.
fn reject_capped_in_txn(run: &mut Runner, coll: &str) -> Result<()> {
    if !matches!(run.op.mode(), Mode::Transaction(_)) {
        return Ok(());
    }
    let db = run.op.db.clone();
    let capped = run.read(|txn| {
        Ok(crate::catalog::get_collection(txn, &db, coll)?
            .is_some_and(|m| exec::capped::is_capped(&m)))
    })?;
    if capped {
        bail!(
            OperationNotSupportedInTransaction,
            "Collection '{}.{}' is a capped collection. Writes in transactions are not allowed on \
             capped collections.",
            db,
            coll
        );
    }
    Ok(())
}

fn reject_write_concern_in_txn(run: &Runner) -> Result<()> {
    if matches!(run.op.mode(), Mode::Transaction(_)) && run.op.write_concern.is_some() {
        bail!(InvalidOptions, "Cannot set write concern after starting a transaction.");
    }
    Ok(())
}

/// `insert`.
pub fn insert(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    // The documents are borrowed from the command, or come as they arrived on the wire: most
    // are stored as they came.
    let (db, coll, docs): (_, _, Vec<Inserted<'_>>) = match req.documents {
        Some(raw) => {
            let (db, coll) = write_target(run, req.collection()?)?;
            (db, coll, raw.iter().map(Inserted::Raw).collect())
        }
        None => {
            let (db, coll, docs) = write_statements(req, run, "documents")?;
            (db, coll, docs.into_iter().map(Inserted::Decoded).collect())
        }
    };
    if docs.is_empty() {
        bail!(InvalidLength, "Write batch sizes must be between 1 and 100000. Got 0 operations.");
    }
    if docs.len() > 100_000 {
        bail!(
            InvalidLength,
            "Write batch sizes must be between 1 and 100000. Got {} operations.",
            docs.len()
        );
    }
    let bypass = bypass_validation(req.cmd, "insert")?;
    let mut n = 0i32;
    let mut inserter = exec::Inserter::new(&db, &coll, bypass);
    let errors = run_statements(
        run,
        req.cmd,
        &docs,
        |run, stmt, d| {
            run.write(stmt, |txn| {
                match d {
                    Inserted::Decoded(d) => inserter.insert(txn, d)?,
                    Inserted::Raw(d) => inserter.insert_raw(txn, d)?,
                };
                Ok(doc! { "n": 1 })
            })
        },
        |_, _| n += 1,
    )?;
    let mut reply = doc! { "n": n };
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// One document of an `insert`.
enum Inserted<'a> {
    /// A document of the command's `documents` array.
    Decoded(&'a Document),
    /// A document that came in an OP_MSG document sequence, as it came.
    Raw(&'a folio_wire::SequenceDocument),
}

/// `bypassDocumentValidation`: whether the collection's validator is skipped for this command.
fn bypass_validation(cmd: &Document, command: &str) -> Result<bool> {
    Ok(opt_bool(cmd, "bypassDocumentValidation", command)?.unwrap_or(false))
}

/// The `q` of an `updates` or `deletes` entry (`path` names the array in messages).
fn statement_filter(entry: &Document, path: &str) -> Result<Document> {
    match entry.get("q") {
        Some(Bson::Document(q)) => Ok(q.clone()),
        Some(_) => {
            bail!(TypeMismatch, "BSON field '{}.q' is the wrong type, expected type 'object'", path)
        }
        None => bail!(FailedToParse, "BSON field '{}.q' is missing but a required field", path),
    }
}

/// Parses one `updates` entry. A bad `collation` fails only its statement (a write error), as
/// in MongoDB, so it comes back beside the statement.
fn parse_update(u: &Document) -> Result<(exec::UpdateOp, Option<Error>)> {
    let filter = statement_filter(u, "update.updates")?;
    let update = match u.get("u") {
        Some(Bson::Document(d)) => exec::UpdateDoc::Modifiers(d.clone()),
        Some(Bson::Array(_)) => exec::UpdateDoc::Pipeline(doc_array(u, "u", "update.updates")?),
        Some(_) => bail!(FailedToParse, "Update argument must be either an object or an array"),
        None => {
            bail!(FailedToParse, "BSON field 'update.updates.u' is missing but a required field")
        }
    };
    let multi = opt_bool(u, "multi", "update.updates")?.unwrap_or(false);
    let upsert = opt_bool(u, "upsert", "update.updates")?.unwrap_or(false);
    let is_replacement = matches!(&update, exec::UpdateDoc::Modifiers(d) if d.keys().next().is_some_and(|k| !k.starts_with('$')));
    if multi && is_replacement {
        bail!(FailedToParse, "multi update is not supported for replacement-style update");
    }
    let array_filters = match u.get("arrayFilters") {
        Some(Bson::Array(_)) => Some(doc_array(u, "arrayFilters", "update.updates")?),
        _ => None,
    };
    let sort = opt_doc(u, "sort", "update.updates")?;
    if sort.is_some() && multi {
        bail!(FailedToParse, "Cannot specify sort with multi=true");
    }
    let let_vars = opt_doc(u, "c", "update.updates")?;
    let (collation, bad) = match Requested::from_field(u, "collation", "update.updates") {
        Ok(c) => (c, None),
        Err(e) => (Requested::CollectionDefault, Some(e)),
    };
    let op = exec::UpdateOp {
        filter,
        update,
        let_vars,
        multi,
        upsert,
        array_filters,
        sort,
        collation,
        bypass_validation: false,
        hint: Hint::parse(u.get("hint"))?,
    };
    Ok((op, bad))
}

fn update_outcome(r: &exec::UpdateResult) -> Document {
    let mut d = doc! { "n": r.matched as i64, "nModified": r.modified as i64 };
    if let Some(id) = &r.upserted_id {
        d.insert("n", 1_i64);
        d.insert("upserted", id.clone());
    }
    d
}

/// The database, collection and statements (the `array` field, borrowed from the command) of an
/// insert, update or delete, after the checks they share: no write concern inside a
/// transaction, no capped collection inside a transaction.
fn write_statements<'a>(
    req: &Request<'a>,
    run: &mut Runner,
    array: &str,
) -> Result<(String, String, Vec<&'a Document>)> {
    // The collection's name is checked before the statements, and they before the rest.
    let coll = req.collection()?;
    let statements = doc_refs(req.cmd, array, req.name)?;
    let (db, coll) = write_target(run, coll)?;
    Ok((db, coll, statements))
}

/// The database and collection a write command writes to, after the checks every write
/// command makes: no write concern inside a transaction, no capped collection in one.
fn write_target(run: &mut Runner, coll: String) -> Result<(String, String)> {
    reject_write_concern_in_txn(run)?;
    reject_capped_in_txn(run, &coll)?;
    Ok((run.op.db.clone(), coll))
}

/// `update`.
pub fn update(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let (db, coll, raw) = write_statements(req, run, "updates")?;
    let mut n = 0i64;
    let mut modified = 0i64;
    let mut upserted = Vec::new();
    // The statements are parsed up front: a malformed one fails the whole command, as in MongoDB.
    let mut ops: Vec<(exec::UpdateOp, Option<Error>)> =
        raw.iter().copied().map(parse_update).collect::<Result<_>>()?;
    let collated = ops.iter().any(|(op, bad)| op.collation.is_given() || bad.is_some());
    refuse_unacknowledged_collation(run, collated)?;
    let let_vars = command_let(req.cmd, "update")?;
    let bypass = bypass_validation(req.cmd, "update")?;
    for (op, _) in &mut ops {
        if op.let_vars.is_none() {
            op.let_vars = let_vars.clone();
        }
        op.bypass_validation = bypass;
    }
    let errors = run_statements(
        run,
        req.cmd,
        &ops,
        |run, stmt, (op, bad)| {
            if let Some(e) = bad {
                return Err(e.clone());
            }
            run.write(stmt, |txn| Ok(update_outcome(&exec::update(txn, &db, &coll, op)?)))
        },
        |i, out| {
            n += out.get_i64("n").unwrap_or(0);
            modified += out.get_i64("nModified").unwrap_or(0);
            if let Some(id) = out.get("upserted") {
                upserted.push(Bson::Document(doc! { "index": i as i32, "_id": id.clone() }));
            }
        },
    )?;
    let mut reply = doc! { "n": n as i32, "nModified": modified as i32 };
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// `delete`.
pub fn delete(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let (db, coll, raw) = write_statements(req, run, "deletes")?;
    let mut n = 0i64;
    let deletes: Vec<DeleteStatement> =
        raw.iter().copied().map(parse_delete).collect::<Result<_>>()?;
    let collated = deletes.iter().any(|d| d.2.as_ref().map_or(true, Requested::is_given));
    refuse_unacknowledged_collation(run, collated)?;
    let let_vars = command_let(req.cmd, "delete")?;
    let errors = run_statements(
        run,
        req.cmd,
        &deletes,
        |run, stmt, (filter, limit, collation, hint)| {
            let collation = collation.as_ref().map_err(Clone::clone)?;
            run.write(stmt, |txn| {
                let lv = let_vars.as_ref();
                let op = exec::DeleteOp {
                    filter,
                    limit_one: *limit,
                    let_vars: lv,
                    collation,
                    hint: hint.as_ref(),
                };
                let r = exec::delete(txn, &db, &coll, &op)?;
                Ok(doc! { "n": r.deleted as i64 })
            })
        },
        |_, out| n += out.get_i64("n").unwrap_or(0),
    )?;
    let mut reply = doc! { "n": n as i32 };
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// One parsed `deletes` entry: filter, `limit: 1`, collation (a bad one fails only the
/// statement), hint.
type DeleteStatement = (Document, bool, Result<Requested>, Option<Hint>);

/// Parses one `deletes` entry into its filter, whether it deletes one document, its collation
/// (a bad one fails only its statement, as in MongoDB) and its hint.
fn parse_delete(d: &Document) -> Result<DeleteStatement> {
    let filter = statement_filter(d, "delete.deletes")?;
    let limit = match opt_i64(d, "limit", "delete.deletes")? {
        Some(0) => false,
        Some(1) => true,
        Some(l) => {
            bail!(FailedToParse, "The limit field in delete objects must be 0 or 1. Got {}", l)
        }
        None => bail!(
            FailedToParse,
            "BSON field 'delete.deletes.limit' is missing but a required field"
        ),
    };
    let hint = Hint::parse(d.get("hint"))?;
    Ok((filter, limit, Requested::from_field(d, "collation", "delete.deletes"), hint))
}

/// A collation cannot be used with an unacknowledged (`w: 0`) write, as in MongoDB's drivers:
/// the client could never learn that the collation was refused.
pub(crate) fn refuse_unacknowledged_collation(run: &Runner, has_collation: bool) -> Result<()> {
    let unacknowledged = run
        .op
        .write_concern
        .is_some_and(|wc| matches!(wc.get("w"), Some(Bson::Int32(0)) | Some(Bson::Int64(0))));
    if has_collation && unacknowledged {
        bail!(InvalidOptions, "Collation is unsupported for unacknowledged writes.");
    }
    Ok(())
}

/// `findAndModify`.
pub fn find_and_modify(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    reject_write_concern_in_txn(run)?;
    reject_capped_in_txn(run, &coll)?;
    let update = match req.cmd.get("update") {
        None | Some(Bson::Null) => None,
        Some(Bson::Document(d)) => Some(exec::UpdateDoc::Modifiers(d.clone())),
        Some(Bson::Array(_)) => {
            Some(exec::UpdateDoc::Pipeline(doc_array(req.cmd, "update", "findAndModify")?))
        }
        Some(_) => bail!(FailedToParse, "Update argument must be either an object or an array"),
    };
    let fam = exec::FindAndModify {
        query: opt_doc(req.cmd, "query", "findAndModify")?.unwrap_or_default(),
        sort: opt_doc(req.cmd, "sort", "findAndModify")?,
        remove: opt_bool(req.cmd, "remove", "findAndModify")?.unwrap_or(false),
        update,
        let_vars: command_let(req.cmd, "findAndModify")?,
        new: opt_bool(req.cmd, "new", "findAndModify")?.unwrap_or(false),
        fields: opt_doc(req.cmd, "fields", "findAndModify")?,
        upsert: opt_bool(req.cmd, "upsert", "findAndModify")?.unwrap_or(false),
        array_filters: match req.cmd.get("arrayFilters") {
            Some(Bson::Array(_)) => Some(doc_array(req.cmd, "arrayFilters", "findAndModify")?),
            _ => None,
        },
        collation: Requested::from_field(req.cmd, "collation", "findAndModify")?,
        bypass_validation: bypass_validation(req.cmd, "findAndModify")?,
        hint: Hint::parse(req.cmd.get("hint"))?,
    };
    refuse_unacknowledged_collation(run, fam.collation.is_given())?;
    let db = run.op.db.clone();
    let out = run.write(stmt_id(req.cmd, 0), |txn| {
        let r = exec::find_and_modify(txn, &db, &coll, &fam)?;
        let mut leo = doc! { "n": r.n as i32 };
        if fam.update.is_some() {
            leo.insert("updatedExisting", r.updated_existing);
        }
        if let Some(id) = r.upserted {
            leo.insert("upserted", id);
        }
        Ok(doc! {
            "lastErrorObject": leo,
            "value": r.value.map(Bson::Document).unwrap_or(Bson::Null),
        })
    })?;
    Ok(out)
}

/// A reply's batch array: the decoded documents, or an empty array whose documents the
/// runner carries as stored, to be written in when the reply is encoded.
fn batch_array(run: &Runner, field: &'static str, batch: Batch) -> Vec<Bson> {
    match batch {
        Batch::Docs(docs) => docs,
        Batch::Raw(docs) => {
            run.set_raw_batch(super::RawBatch { field, docs });
            Vec::new()
        }
    }
}

/// Builds a cursor reply: the first batch, and a cursor for the rest.
pub(super) fn cursor_reply(
    svc: &Service,
    run: &Runner,
    ns: String,
    docs: impl Into<Rows>,
    batch_size: Option<usize>,
    single_batch: bool,
    no_timeout: bool,
) -> Result<Document> {
    let mut remaining = match docs.into() {
        Rows::Docs(docs) => Remaining::Docs(docs.into()),
        Rows::Raw(docs) => Remaining::Raw(docs.into()),
    };
    // `batchSize: 0` asks for an empty first batch and a cursor to fetch everything through
    // (drivers use it to open a cursor cheaply); the cursor stays open even if nothing matched.
    let zero = batch_size == Some(0);
    let first = if zero {
        Vec::new()
    } else {
        let batch = take_batch(&mut remaining, batch_size.unwrap_or(DEFAULT_FIRST_BATCH))?;
        batch_array(run, "firstBatch", batch)
    };
    let at = run.at_cluster_time.map(|t| t.to_bson());
    let id = if (remaining.is_empty() && !zero) || single_batch {
        0i64
    } else {
        svc.cursors.open(Cursor {
            ns: ns.clone(),
            remaining,
            owner: run.owner(),
            last_use: Instant::now(),
            at_cluster_time: at,
            no_timeout,
        })
    };
    let mut cursor = doc! { "firstBatch": first, "id": id, "ns": ns };
    if let Some(at) = at {
        cursor.insert("atClusterTime", at);
    }
    Ok(doc! { "cursor": cursor })
}

pub(super) fn batch_size(cmd: &Document, key: &str, command: &str) -> Result<Option<usize>> {
    match opt_i64(cmd, key, command)? {
        Some(n) if n < 0 => {
            bail!(BadValue, "Batch size for {} must be non-negative, but received: {}", command, n)
        }
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// `min` and `max` (index bounds given by hand) are not implemented: refused rather than
/// ignored.
fn refuse_min_max(cmd: &Document, command: &str) -> Result<()> {
    for key in ["min", "max"] {
        if cmd.get(key).is_some_and(|v| !matches!(v, Bson::Document(d) if d.is_empty())) {
            bail!(NotImplemented, "{}.{} is not supported", command, key);
        }
    }
    Ok(())
}

/// `find`.
pub fn find(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    // Out-of-range doubles saturate (MongoDB's `safeInt64`), so -1e300 is i64::MIN and then
    // fails the `>= 0` check like any negative number, with the saturated value in the message.
    let skip = opt_i64(req.cmd, "skip", "find")?.unwrap_or(0);
    if skip < 0 {
        return Err(Error::new(
            Code::Location51024,
            format!("BSON field 'skip' value must be >= 0, actual value '{skip}'"),
        ));
    }
    let limit = opt_i64(req.cmd, "limit", "find")?.unwrap_or(0);
    if limit < 0 {
        // Drivers turn a negative limit into `singleBatch: true` and its absolute value.
        return Err(Error::new(
            Code::Location51024,
            format!("BSON field 'limit' value must be >= 0, actual value '{limit}'"),
        ));
    }
    let single_batch = opt_bool(req.cmd, "singleBatch", "find")?.unwrap_or(false);
    let no_timeout = opt_bool(req.cmd, "noCursorTimeout", "find")?.unwrap_or(false);
    // `allowPartialResults` (answer from the shards that are up) and `readOnce` (a cache hint)
    // change nothing on a single node; `oplogReplay` is a no-op in MongoDB itself. They are
    // still type-checked.
    for flag in ["allowPartialResults", "readOnce", "oplogReplay"] {
        opt_bool(req.cmd, flag, "find")?;
    }
    let spec = FindSpec {
        filter: opt_doc(req.cmd, "filter", "find")?.unwrap_or_default(),
        sort: opt_doc(req.cmd, "sort", "find")?,
        projection: opt_doc(req.cmd, "projection", "find")?,
        skip: skip as u64,
        limit: limit.unsigned_abs(),
        let_vars: command_let(req.cmd, "find")?,
        memory_limit: crate::agg::MemoryLimit::from_command(req.cmd),
        collation: Requested::from_field(req.cmd, "collation", "find")?,
        hint: Hint::parse(req.cmd.get("hint"))?,
    };
    refuse_min_max(req.cmd, "find")?;
    let batch = batch_size(req.cmd, "batchSize", "find")?;
    let tailable = opt_bool(req.cmd, "tailable", "find")?.unwrap_or(false);
    let await_data = opt_bool(req.cmd, "awaitData", "find")?.unwrap_or(false);
    if await_data && !tailable {
        bail!(FailedToParse, "Cannot set 'awaitData' without also setting 'tailable'");
    }
    if tailable {
        return tailable_find(req.svc, run, &db, &coll, &spec, batch, await_data);
    }
    // Stored documents pay off only where the reply is encoded with them as they are; an
    // in-process caller would have them decoded at once.
    let raw = req.conn.raw_batches;
    let rows = run.read(|txn| match raw {
        true => exec::find_rows(txn, &db, &coll, &spec),
        false => exec::find(txn, &db, &coll, &spec).map(Rows::Docs),
    })?;
    let ns = crate::catalog::join_namespace(&db, &coll);
    cursor_reply(req.svc, run, ns, rows, batch, single_batch, no_timeout)
}

/// `find` with `tailable` on a capped collection: a cursor that stays open at the end of the
/// collection and returns what is inserted later (see [`crate::changes::CappedTail`]).
fn tailable_find(
    svc: &Service,
    run: &mut Runner,
    db: &str,
    coll: &str,
    spec: &FindSpec,
    batch: Option<usize>,
    await_data: bool,
) -> Result<Document> {
    if spec.sort.as_ref().is_some_and(|s| s != &doc! { "$natural": 1 }) {
        bail!(BadValue, "cannot use tailable option with a sort other than {{$natural: 1}}");
    }
    if spec.skip > 0 || spec.limit > 0 {
        bail!(NotImplemented, "skip and limit are not supported on tailable cursors");
    }
    let owner = run.owner();
    let mut tail = run.read(|txn| {
        crate::changes::CappedTail::open(
            txn,
            db,
            coll,
            &spec.filter,
            spec.projection.as_ref(),
            await_data,
            owner.clone(),
        )
    })?;
    let first = tail.next_batch(svc.store.as_ref(), batch.unwrap_or(0), None)?;
    let ns = tail.ns.clone();
    let id = svc.streams.open_tail(tail);
    Ok(doc! { "cursor": {
        "firstBatch": first.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        "id": id,
        "ns": ns,
    } })
}

/// `getMore`.
pub fn get_more(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let id = match req.cmd.get("getMore") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => bail!(
            TypeMismatch,
            "BSON field 'getMore.getMore' is the wrong type, expected type 'long'"
        ),
    };
    let coll = match req.cmd.get("collection") {
        Some(Bson::String(s)) => s.clone(),
        _ => bail!(
            TypeMismatch,
            "BSON field 'getMore.collection' is the wrong type, expected type 'string'"
        ),
    };
    let batch = batch_size(req.cmd, "batchSize", "getMore")?.unwrap_or(0);
    let ns = crate::catalog::join_namespace(&run.op.db, &coll);
    let caller = run.owner();
    let authorization = run.op.authorization;
    if let Some(stream) = req.svc.streams.get(id) {
        let mut stream = stream.lock();
        check_get_more(id, &ns, &stream.ns, &stream.owner, &caller, authorization)?;
        return change_stream_get_more(req.svc, req.cmd, id, &ns, batch, &mut stream);
    }
    if let Some(tail) = req.svc.streams.get_tail(id) {
        let mut tail = tail.lock();
        check_get_more(id, &ns, &tail.ns, &tail.owner, &caller, authorization)?;
        let docs = tail.next_batch(req.svc.store.as_ref(), batch, Some(await_deadline(req.cmd)))?;
        return Ok(doc! { "cursor": {
            "nextBatch": docs.into_iter().map(Bson::Document).collect::<Vec<_>>(),
            "id": id,
            "ns": ns,
        } });
    }
    let ((batch_docs, at), open) =
        req.svc.cursors.with_cursor(id, &ns, &caller, authorization, |c| {
            (take_batch(&mut c.remaining, batch), c.at_cluster_time)
        })?;
    // A document too large to return ends the cursor, as a failed getMore does in MongoDB.
    let batch_docs = batch_docs.inspect_err(|_| {
        req.svc.cursors.kill(&[id]);
    })?;
    let batch_docs = batch_array(run, "nextBatch", batch_docs);
    let mut cursor = doc! { "nextBatch": batch_docs, "id": if open { id } else { 0 }, "ns": ns };
    if let Some(at) = at {
        cursor.insert("atClusterTime", at);
    }
    Ok(doc! { "cursor": cursor })
}

/// Whether the caller may kill a cursor of `ns` opened by `owner`, as MongoDB's
/// `checkAuthForKillCursors`: its own cursors, or any with `killAnyCursor` on the cluster or on
/// the cursor's namespace (its database for a `listCollections` cursor). Otherwise the whole
/// command fails with Unauthorized.
fn may_kill_cursor(c: &Connection, ns: &str, owner: &Owner, caller: &Owner) -> Result<()> {
    use crate::auth::Target;
    if owner.user == caller.user || c.auth.allows(&Target::Cluster, "killAnyCursor") {
        return Ok(());
    }
    let target = match ns.split_once('.') {
        Some((db, "$cmd.listCollections")) => Target::db(db),
        Some((db, coll)) => Target::ns(db, coll),
        None => Target::db(ns),
    };
    if c.auth.allows(&target, "killAnyCursor") {
        return Ok(());
    }
    bail!(Unauthorized, "not authorized to kill cursor on {}", ns)
}

/// `killCursors`: with authorization on, every cursor named must be one the caller may kill
/// ([`may_kill_cursor`]) before any is killed.
pub fn kill_cursors(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    req.collection()?;
    let ids: Vec<i64> = match req.cmd.get("cursors") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|v| match v {
                Bson::Int64(n) => Ok(*n),
                Bson::Int32(n) => Ok(i64::from(*n)),
                _ => Err(err!(TypeMismatch, "cursor ids must be longs")),
            })
            .collect::<Result<_>>()?,
        _ => {
            bail!(FailedToParse, "BSON field 'killCursors.cursors' is missing but a required field")
        }
    };
    if run.op.authorization {
        for id in &ids {
            // A cursor that does not exist is no authorization matter: it is reported as not
            // found below.
            let Some((ns, owner)) =
                req.svc.cursors.owner(*id).or_else(|| req.svc.streams.owner(*id))
            else {
                continue;
            };
            may_kill_cursor(req.conn, &ns, &owner, &run.owner())?;
        }
    }
    let (mut killed, missing) = req.svc.cursors.kill(&ids);
    let missing: Vec<i64> = missing
        .into_iter()
        .filter(|id| {
            let stream = req.svc.streams.kill(*id);
            if stream {
                killed.push(*id);
            }
            !stream
        })
        .collect();
    Ok(doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": missing,
        "cursorsAlive": Vec::<i64>::new(),
        "cursorsUnknown": Vec::<i64>::new(),
    })
}

/// `count`.
pub fn count(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let filter = opt_doc(req.cmd, "query", "count")?.unwrap_or_default();
    let (skip, limit) = count_skip_limit(req.cmd)?;
    let collation = Requested::from_field(req.cmd, "collation", "count")?;
    let spec = FindSpec {
        filter,
        skip: skip as u64,
        limit,
        collation,
        hint: Hint::parse(req.cmd.get("hint"))?,
        ..FindSpec::default()
    };
    let n = run.read(|txn| exec::count(txn, &db, &coll, &spec))?;
    Ok(doc! { "n": n as i32 })
}

/// `distinct`.
pub fn distinct(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let coll = req.collection()?;
    let db = run.op.db.clone();
    let key = match req.cmd.get("key") {
        Some(Bson::String(k)) => k.clone(),
        Some(_) => bail!(
            TypeMismatch,
            "BSON field 'distinct.key' is the wrong type, expected type 'string'"
        ),
        None => bail!(FailedToParse, "BSON field 'distinct.key' is missing but a required field"),
    };
    let filter = opt_doc(req.cmd, "query", "distinct")?.unwrap_or_default();
    let collation = Requested::from_field(req.cmd, "collation", "distinct")?;
    let hint = Hint::parse(req.cmd.get("hint"))?;
    let values =
        run.read(|txn| exec::distinct(txn, &db, &coll, &key, &filter, &collation, hint.as_ref()))?;
    // The values travel in one reply document: MongoDB refuses a list past 16 MB.
    let mut size = 0usize;
    for (i, v) in values.iter().enumerate() {
        size += 2 + i.to_string().len() + crate::memory::value_bson_size(v);
        if size >= crate::memory::MAX_USER_DOC_BYTES {
            bail!(Location17217, "distinct too big, 16mb cap");
        }
    }
    Ok(doc! { "values": values })
}

/// `count`'s `skip` and `limit`, read as MongoDB's count parser reads them: exact integers
/// (1e300 or 2.5 fail, they are not clamped or truncated), `skip` non-negative, and `limit`'s
/// sign ignored, which leaves no room for the one long without an absolute value.
fn count_skip_limit(cmd: &Document) -> Result<(i64, u64)> {
    let skip = match cmd.get("skip") {
        None | Some(Bson::Null) => 0,
        Some(v) if crate::doc::canonical_rank(v) != 10 => {
            bail!(BadValue, "skip value is not a valid number")
        }
        Some(v) => crate::doc::parse_non_negative_integer_element("skip", v)
            .map_err(|reason| Error::new(Code::FailedToParse, reason))?,
    };
    let limit = match cmd.get("limit") {
        None | Some(Bson::Null) => 0,
        Some(v) if crate::doc::canonical_rank(v) != 10 => {
            bail!(BadValue, "limit value is not a valid number")
        }
        Some(v) => crate::doc::parse_integer_element("limit", v)
            .map_err(|reason| Error::new(Code::FailedToParse, reason))?,
    };
    if limit == i64::MIN {
        bail!(BadValue, "limit value for count cannot be min long");
    }
    Ok((skip, limit.unsigned_abs()))
}

/// The stages outside API version 1 (diagnostics whose output may change between releases).
const STAGES_OUTSIDE_API_V1: &[&str] = &[
    "$currentOp",
    "$listLocalSessions",
    "$listSessions",
    "$collStats",
    "$indexStats",
    "$planCacheStats",
];

/// Under `apiStrict: true`, a pipeline stage outside API version 1 fails with APIStrictError,
/// as MongoDB refuses it.
fn refuse_unstable_stages(run: &Runner, pipeline: &[Document]) -> Result<()> {
    if run.op.api.strict != Some(true) {
        return Ok(());
    }
    for stage in pipeline {
        if let Some(name) =
            stage.keys().next().filter(|n| STAGES_OUTSIDE_API_V1.contains(&n.as_str()))
        {
            bail!(
                APIStrictError,
                "{} is not allowed with 'apiStrict: true' in API Version 1",
                name
            );
        }
    }
    Ok(())
}

/// `aggregate`.
pub fn aggregate(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    // `explain: true` asks for the plan instead of the results, as the `explain` command with
    // the `queryPlanner` verbosity.
    if opt_bool(req.cmd, "explain", "aggregate")?.unwrap_or(false) {
        let inner: Document = req
            .cmd
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "explain" | "cursor" | "$db"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let explain_cmd = doc! { "explain": inner, "verbosity": "queryPlanner" };
        let mut explain_req = Request {
            svc: req.svc,
            conn: &mut *req.conn,
            cmd: &explain_cmd,
            documents: None,
            name: "explain",
            db: req.db,
        };
        return explain(&mut explain_req, run);
    }
    let db = run.op.db.clone();
    let coll = match req.cmd.get("aggregate") {
        Some(Bson::String(s)) => Some(s.clone()),
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(_)) => None,
        _ => bail!(FailedToParse, "Invalid aggregate namespace"),
    };
    let pipeline = doc_array(req.cmd, "pipeline", "aggregate")?;
    refuse_unstable_stages(run, &pipeline)?;
    let cursor_opts = match req.cmd.get("cursor") {
        Some(Bson::Document(d)) => d.clone(),
        None if req.cmd.get_bool("explain").unwrap_or(false) => Document::new(),
        None => bail!(
            FailedToParse,
            "The 'cursor' option is required, except for aggregate with the explain argument"
        ),
        Some(_) => bail!(TypeMismatch, "cursor field must be missing or an object"),
    };
    let batch = batch_size(&cursor_opts, "batchSize", "aggregate")?;
    if pipeline.first().is_some_and(|s| s.contains_key("$changeStream")) {
        return change_stream(req.svc, run, coll.as_deref(), &pipeline, batch);
    }
    let hint = Hint::parse(req.cmd.get("hint"))?;
    let vars = crate::agg::eval_let(&opt_doc(req.cmd, "let", "aggregate")?.unwrap_or_default())?;
    let parsed = crate::agg::Pipeline::parse(&pipeline, &vars)?;
    crate::agg::Pipeline::check_geo_near_metadata(&pipeline)?;
    let collation = Requested::from_field(req.cmd, "collation", "aggregate")?;
    let bypass = match parsed.sink() {
        Some(_) => bypass_validation(req.cmd, "aggregate")?,
        None => false,
    };
    let sessions = pipeline
        .first()
        .is_some_and(|s| s.contains_key("$listLocalSessions"))
        .then(|| local_sessions(req.svc, run));
    let current_ops = match parsed.current_op() {
        Some(options) => Some(current_ops(req.svc, options)?),
        None => None,
    };
    let agg = exec::aggregate::Aggregate {
        db: db.clone(),
        coll: coll.clone(),
        pipeline: parsed,
        first_stage: pipeline.first().cloned(),
        vars,
        has_let: req.cmd.contains_key("let"),
        in_transaction: matches!(run.op.mode(), Mode::Transaction(_)),
        // MongoDB 8.0 spills blocking stages to disk unless told not to.
        memory_limit: crate::agg::MemoryLimit::from_command(req.cmd),
        collation,
        hint,
        sessions,
        current_ops,
        host: req.svc.options().advertise_host.clone(),
        bypass_validation: bypass,
    };
    let ns = format!("{db}.{}", coll.as_deref().unwrap_or("$cmd.aggregate"));
    if let Some(sink) = agg.pipeline.sink() {
        if run.op.read_concern_level() == Some("linearizable") {
            bail!(
                InvalidOptions,
                "readConcern level 'linearizable' is not allowed with $out or $merge"
            );
        }
        // `$out` / `$merge`: run the pipeline and write its results in one write transaction.
        sink.check_target(&db)?;
        run.write(stmt_id(req.cmd, 0), |txn| agg.run_into(txn, sink).map(|()| Document::new()))?;
        // A pipeline that wrote its results returns no cursor, whatever the batch size.
        return cursor_reply(req.svc, run, ns, Vec::new(), None, false, false);
    }
    let docs = run.read(|txn| agg.run(txn))?;
    cursor_reply(req.svc, run, ns, docs, batch, false, false)
}

/// `aggregate` with `$changeStream`: opens a change stream cursor (see [`crate::changes`]).
fn change_stream(
    svc: &Service,
    run: &mut Runner,
    coll: Option<&str>,
    pipeline: &[Document],
    batch: Option<usize>,
) -> Result<Document> {
    if matches!(run.op.mode(), Mode::Transaction(_)) {
        bail!(
            OperationNotSupportedInTransaction,
            "Operation not permitted in transaction :: caused by :: $changeStream is not allowed \
             within a multi-document transaction"
        );
    }
    let db = run.op.db.clone();
    let opened =
        crate::changes::ChangeStream::open(svc.store.as_ref(), &db, coll, pipeline, run.owner())
            .and_then(|mut stream| {
                let first = stream.next_batch(svc.store.as_ref(), batch.unwrap_or(0), None)?;
                Ok((stream, first))
            });
    let (stream, first) = opened.map_err(|mut e| {
        change_stream_labels(&mut e);
        e
    })?;
    let token = stream.post_batch_resume_token();
    let ns = stream.ns.clone();
    let id = if stream.is_closed() { 0 } else { svc.streams.open(stream) };
    Ok(doc! { "cursor": {
        "firstBatch": first.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        "postBatchResumeToken": token,
        "id": id,
        "ns": ns,
    } })
}

/// How long a `getMore` on a change stream or an `awaitData` cursor waits for new data:
/// `maxTimeMS` (the driver's `maxAwaitTimeMS`), else [`crate::changes::DEFAULT_AWAIT`].
fn await_deadline(cmd: &Document) -> Instant {
    let wait = match cmd.get("maxTimeMS").and_then(crate::doc::compare::as_f64) {
        Some(ms) if ms > 0.0 => std::time::Duration::from_millis(ms as u64),
        _ => crate::changes::DEFAULT_AWAIT,
    };
    Instant::now() + wait
}

/// MongoDB's change-stream error labels: drivers resume after a ResumableChangeStreamError and
/// give up on a NonResumableChangeStreamError.
fn change_stream_labels(e: &mut Error) {
    const RESUMABLE: &[i32] = &[
        6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435,
        13436,
    ];
    let code = e.code_number();
    if matches!(code, 280 | 286) {
        e.add_label("NonResumableChangeStreamError");
    } else if RESUMABLE.contains(&code) {
        e.add_label("ResumableChangeStreamError");
    }
}

/// `getMore` on a change stream: waits up to `maxTimeMS` (the driver's `maxAwaitTimeMS`) for
/// events.
fn change_stream_get_more(
    svc: &Service,
    cmd: &Document,
    id: i64,
    ns: &str,
    batch: usize,
    stream: &mut crate::changes::ChangeStream,
) -> Result<Document> {
    let batch = match svc.failpoints.fail_get_more() {
        Some(code) => Err(Error::new(
            Code::from_number(code),
            "Failing command via 'failGetMoreAfterCursorCheckout' failpoint",
        )),
        None => stream.next_batch(svc.store.as_ref(), batch, Some(await_deadline(cmd))),
    };
    let events = match batch {
        Ok(events) => events,
        Err(mut e) => {
            svc.streams.kill(id);
            change_stream_labels(&mut e);
            return Err(e);
        }
    };
    let open = !stream.is_closed();
    if !open {
        svc.streams.kill(id);
    }
    Ok(doc! { "cursor": {
        "nextBatch": events.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        "postBatchResumeToken": stream.post_batch_resume_token(),
        "id": if open { id } else { 0 },
        "ns": ns,
    } })
}

/// The operations `$currentOp` reports (the `currentOp` command's `inprog` documents), gathered
/// before the pipeline's read.
fn current_ops(svc: &Service, options: &crate::agg::CurrentOp) -> Result<Vec<Document>> {
    // Operations do not record their user: with authentication on, only `allUsers: true` (which
    // needs the `inprog` privilege, checked before the command ran) can be honoured.
    if svc.options().auth && !options.all_users {
        bail!(
            NotImplemented,
            "$currentOp with allUsers: false is not supported by Folio with authentication on; \
             pass allUsers: true"
        );
    }
    Ok(super::inprog::in_progress(svc, options.idle_sessions)
        .into_iter()
        .filter_map(|b| match b {
            Bson::Document(d) => Some(d),
            _ => None,
        })
        .collect())
}

/// `{_id: lsid, lastUse}` for every session: the command's own (locked by this command) and
/// every other one not busy right now.
fn local_sessions(svc: &Service, run: &mut Runner) -> Vec<Document> {
    let now = std::time::Instant::now();
    let now_ms = bson::DateTime::now().timestamp_millis();
    let doc_of = |lsid: &Document, last_use: Instant| {
        let ago = i64::try_from(now.saturating_duration_since(last_use).as_millis()).unwrap_or(0);
        doc! {"_id": lsid.clone(), "lastUse": bson::DateTime::from_millis(now_ms - ago)}
    };
    let mut out = Vec::new();
    if let Some(s) = run.session() {
        out.push(doc_of(&s.lsid, s.last_use));
    }
    for s in svc.sessions.list() {
        if let Some(s) = s.try_lock()
            && !out.iter().any(|d| d.get_document("_id").is_ok_and(|id| *id == s.lsid))
        {
            out.push(doc_of(&s.lsid, s.last_use));
        }
    }
    out
}

/// `explain` of find, count, distinct, update, delete, findAndModify and aggregate: the
/// `queryPlanner` section with the plan the command's filter would use.
pub fn explain(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let inner = match req.cmd.get("explain") {
        Some(Bson::Document(d)) => d.clone(),
        _ => bail!(TypeMismatch, "explain command requires a nested object"),
    };
    let Some((name, target)) = inner.iter().next().map(|(k, v)| (k.clone(), v.clone())) else {
        bail!(FailedToParse, "explain command requires a nested object");
    };
    let Bson::String(coll) = target else {
        bail!(InvalidNamespace, "explain of {} needs a collection name", name);
    };
    // The explained command is parsed as strictly as if it ran.
    if let Some(spec) = super::table::lookup(&name) {
        super::fields::check(&name, spec.fields, &inner, crate::api_strict::active())?;
    }
    let (filter, sort) = match name.as_str() {
        "find" => (opt_doc(&inner, "filter", "find")?, opt_doc(&inner, "sort", "find")?),
        "count" | "distinct" => (opt_doc(&inner, "query", &name)?, None),
        "findAndModify" | "findandmodify" => {
            (opt_doc(&inner, "query", &name)?, opt_doc(&inner, "sort", &name)?)
        }
        "update" | "delete" => {
            let key = if name == "update" { "updates" } else { "deletes" };
            let first = doc_array(&inner, key, &name)?.into_iter().next().unwrap_or_default();
            (opt_doc(&first, "q", &name)?, None)
        }
        "aggregate" => {
            let pipeline = doc_array(&inner, "pipeline", "aggregate")?;
            let filter = pipeline.first().and_then(|s| s.get_document("$match").ok().cloned());
            (filter, None)
        }
        other => bail!(CommandNotFound, "Explain failed due to unknown command: {}", other),
    };
    let filter = crate::query::Filter::parse(&filter.unwrap_or_default())?;
    let sort = sort.as_ref().map(crate::query::SortSpec::parse).transpose()?;
    let db = run.op.db.clone();
    let requested = match name.as_str() {
        "update" | "delete" => {
            let key = if name == "update" { "updates" } else { "deletes" };
            let first = doc_array(&inner, key, &name)?.into_iter().next().unwrap_or_default();
            Requested::from_field(&first, "collation", &name)?
        }
        _ => Requested::from_field(&inner, "collation", &name)?,
    };
    let hint = match name.as_str() {
        "update" | "delete" => {
            let key = if name == "update" { "updates" } else { "deletes" };
            let first = doc_array(&inner, key, &name)?.into_iter().next().unwrap_or_default();
            Hint::parse(first.get("hint"))?
        }
        _ => Hint::parse(inner.get("hint"))?,
    };
    let verbosity = match req.cmd.get("verbosity") {
        None => "allPlansExecution",
        Some(Bson::String(v))
            if matches!(v.as_str(), "queryPlanner" | "executionStats" | "allPlansExecution") =>
        {
            v.as_str()
        }
        Some(_) => bail!(
            FailedToParse,
            "verbosity string must be one of {{'queryPlanner', 'executionStats', 'allPlansExecution'}}"
        ),
    };
    // A find's skip and limit bound what it returns (and a limit lets the plan stop early).
    let (skip, limit) = if name == "find" {
        let skip = opt_i64(&inner, "skip", "find")?.unwrap_or(0).max(0) as usize;
        let limit = opt_i64(&inner, "limit", "find")?.unwrap_or(0).unsigned_abs() as usize;
        (skip, limit)
    } else {
        (0, 0)
    };
    let mut stats = None;
    let planner = run.read(|txn| {
        let Some(meta) = crate::catalog::get_collection(txn, &db, &coll)? else {
            return Ok(None);
        };
        let collation = requested.resolve(&meta.options)?;
        let filter = filter.clone().with_collation(collation.as_ref());
        let sort = sort.clone().map(|s| s.with_collation(collation.as_ref()));
        let planned = exec::plan::explain(&meta, &filter, sort.as_ref(), hint.as_ref())?;
        if verbosity != "queryPlanner" && !meta.is_view() {
            // Run the plan (writes are not applied: an update or delete reports what it would
            // examine) and count what it examined.
            let before = exec::opstats::peek();
            let started = std::time::Instant::now();
            let want = if limit > 0 { skip + limit } else { 0 };
            let (found, _) =
                exec::plan::fetch(txn, &meta, &filter, sort.as_ref(), want, hint.as_ref())?;
            let after = exec::opstats::peek();
            let mut returned = found.len().saturating_sub(skip);
            if limit > 0 {
                returned = returned.min(limit);
            }
            stats = Some((
                returned,
                started.elapsed(),
                after.keys_examined - before.keys_examined,
                after.docs_examined - before.docs_examined,
            ));
        }
        Ok(Some(planned))
    })?;
    let planner = planner.unwrap_or_else(|| {
        doc! {
            "namespace": format!("{db}.{coll}"),
            "parsedQuery": filter.to_document(),
            "winningPlan": { "stage": "EOF" },
            "rejectedPlans": [],
        }
    });
    let mut reply = doc! { "queryPlanner": planner.clone() };
    if verbosity != "queryPlanner" {
        let (returned, elapsed, keys, docs) = stats.unwrap_or((0, std::time::Duration::ZERO, 0, 0));
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut stages = planner.get_document("winningPlan").cloned().unwrap_or_default();
        annotate_stages(&mut stages, returned as i64, as_i64(keys), as_i64(docs));
        let mut execution = doc! {
            "executionSuccess": true,
            "nReturned": returned as i64,
            "executionTimeMillis": i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            "totalKeysExamined": as_i64(keys),
            "totalDocsExamined": as_i64(docs),
            "executionStages": stages,
        };
        if verbosity == "allPlansExecution" {
            // One plan is ever considered, so there are no other plans' trials to show.
            execution.insert("allPlansExecution", Bson::Array(Vec::new()));
        }
        reply.insert("executionStats", execution);
    }
    reply.insert("command", inner.clone());
    reply.insert("serverInfo", doc! { "host": "localhost", "version": "8.0.0" });
    Ok(reply)
}

/// Adds execution counts to an explained plan tree: `nReturned` on the top stage, `docsExamined`
/// on the stage that reads documents (`FETCH`, `COLLSCAN`, `IDHACK`) and `keysExamined` on the
/// index stages (`IXSCAN`, `IDHACK`). Stages under an `OR` share the totals of the first.
fn annotate_stages(stage: &mut Document, returned: i64, keys: i64, docs: i64) {
    stage.insert("nReturned", returned);
    stage.insert("executionTimeMillisEstimate", 0_i64);
    let mut cur = Some(stage);
    let (mut keys_left, mut docs_left) = (Some(keys), Some(docs));
    while let Some(s) = cur {
        let kind = s.get_str("stage").unwrap_or("").to_string();
        if matches!(kind.as_str(), "FETCH" | "COLLSCAN" | "IDHACK")
            && let Some(d) = docs_left.take()
        {
            s.insert("docsExamined", d);
        }
        if matches!(kind.as_str(), "IXSCAN" | "IDHACK")
            && let Some(k) = keys_left.take()
        {
            s.insert("keysExamined", k);
        }
        cur = match s.get_mut("inputStage") {
            Some(Bson::Document(inner)) => Some(inner),
            _ => None,
        };
    }
}
