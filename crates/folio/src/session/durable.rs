//! Durable session state: what a restart must not forget about a session.
//!
//! Drivers retry. After a network error, `commitTransaction` is sent again with the same `lsid`
//! and `txnNumber`, and a retryable write is sent again with the same `lsid`, `txnNumber` and
//! statement ids. The retry must be answered as the first attempt was, *even when the server
//! crashed in between*, or the driver re-runs the whole transaction (a committed transfer applied
//! twice) or the write is applied a second time (a `$inc` counted twice).
//!
//! MongoDB keeps this in `config.transactions`, replicated with the data. Folio keeps the
//! equivalent in its own keyspace, written **in the same storage transaction as the data it
//! describes**, so the record and the effect are committed (and made durable) atomically:
//!
//! - a *session record* (`Key::SessionRecord`, one per session) holds the session's highest
//!   `txnNumber` that changed data, whether it was a committed transaction or a retryable write,
//!   and the wall-clock time of that write;
//! - a *statement record* (`Key::StmtRecord`, one per retryable statement) holds the outcome of
//!   a retryable write's statement, replayed when the statement is retried. Consecutive
//!   statements of one command that commit together with the same outcome (the documents of an
//!   `insert`, each `{n: 1}`) share one record, kept under the first one's id and naming the
//!   last in [`RUN_END`]: a thousand-document insert writes one record, not a thousand, and
//!   the next command deletes one. A command of one statement keeps its outcome in the session
//!   record itself ([`SessionRecord::stmt`]), which its new number writes anyway: no statement
//!   record at all. [`stmt_outcome`] finds a statement's outcome in any of these places.
//!
//! When a session is first used after a restart, its record is read back
//! ([`load`]) and the in-memory state machine resumes from it: a retried `commitTransaction` of a
//! committed transaction answers ok, a statement for a lower `txnNumber` fails with
//! TransactionTooOld, and a retried retryable statement replays its record. A transaction that was
//! aborted, or never committed because of the crash, leaves no record, so its retried commit
//! answers NoSuchTransaction with TransientTransactionError and the driver runs it again — which
//! is right, since none of its writes happened.
//!
//! Only the latest `txnNumber`'s statement records are useful (a lower number is TransactionTooOld),
//! so writing a record for a new number deletes the previous number's statement records in the
//! same transaction. Records expire with their session: after `logicalSessionTimeoutMinutes`
//! without use, [`expire`] deletes them, whether or not the session came back after a restart.

use std::ops::Bound;

use bson::Bson;
use bson::raw::{RawDocumentBuf, cstr};

use crate::catalog::keys::{
    Key, decode_session_record_key, decode_stmt_record_id, prefix_end, session_record_prefix,
    stmt_record_prefix,
};
use crate::error::Result;
use crate::mvcc::OrConflict;
use crate::mvcc::{Txn, TxnStore};

/// What the latest recorded `txnNumber` of a session was used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A multi-document transaction that committed.
    Committed,
    /// Retryable writes (their statements have statement records).
    Retryable,
}

/// A session's durable record.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// The transaction number.
    pub txn_number: i64,
    /// What it was used for.
    pub kind: RecordKind,
    /// When it was written (milliseconds since the epoch), for expiry.
    pub last_write_ms: i64,
    /// The outcome of a retryable statement of `txn_number` kept in this record instead of a
    /// statement record of its own: a command of one statement writes the session record for
    /// its new number anyway, so its outcome costs no key (and the next number deletes none).
    /// Kept encoded: it is written on every such statement and read back only by a retry.
    pub stmt: Option<(i32, RawDocumentBuf)>,
}

impl SessionRecord {
    /// A record for `txn_number` written now.
    pub fn now(txn_number: i64, kind: RecordKind) -> SessionRecord {
        SessionRecord {
            txn_number,
            kind,
            last_write_ms: bson::DateTime::now().timestamp_millis(),
            stmt: None,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let state = match self.kind {
            RecordKind::Committed => "committed",
            RecordKind::Retryable => "retryableWrite",
        };
        // Built as raw BSON: written by every retryable statement, never as a `Document`. The
        // buffer has room for the fixed fields (about 60 bytes) and the outcome, if any.
        let room = 96 + self.stmt.as_ref().map_or(0, |(_, outcome)| outcome.as_bytes().len());
        let mut d = crate::doc::raw_with_room(room);
        d.append(cstr!("txnNum"), self.txn_number);
        d.append(cstr!("state"), state);
        d.append(cstr!("lastWriteDate"), bson::DateTime::from_millis(self.last_write_ms));
        if let Some((stmt_id, outcome)) = &self.stmt {
            let mut stmt = RawDocumentBuf::new();
            stmt.append(cstr!("id"), *stmt_id);
            stmt.append(cstr!("outcome"), outcome);
            d.append(cstr!("stmt"), stmt);
        }
        Ok(d.into_bytes())
    }

    fn from_bytes(bytes: &[u8]) -> Result<SessionRecord> {
        let d = crate::error::stored_document(bytes, "session record")?;
        let bad = || crate::err!(InternalError, "corrupt session record: {}", d);
        let txn_number = match d.get("txnNum") {
            Some(Bson::Int64(n)) => *n,
            _ => return Err(bad()),
        };
        let kind = match d.get_str("state") {
            Ok("committed") => RecordKind::Committed,
            Ok("retryableWrite") => RecordKind::Retryable,
            _ => return Err(bad()),
        };
        let last_write_ms = match d.get("lastWriteDate") {
            Some(Bson::DateTime(t)) => t.timestamp_millis(),
            _ => return Err(bad()),
        };
        let stmt = match d.get("stmt") {
            None => None,
            Some(Bson::Document(stmt)) => match (stmt.get("id"), stmt.get("outcome")) {
                (Some(Bson::Int32(id)), Some(Bson::Document(outcome))) => {
                    Some((*id, RawDocumentBuf::try_from(outcome)?))
                }
                _ => return Err(bad()),
            },
            Some(_) => return Err(bad()),
        };
        Ok(SessionRecord { txn_number, kind, last_write_ms, stmt })
    }
}

/// Reads a session's record.
pub fn load(store: &dyn TxnStore, session: &[u8]) -> Result<Option<SessionRecord>> {
    let txn = store.begin()?;
    let got = txn.get(&Key::SessionRecord { session }.encode());
    txn.abort();
    got?.map(|b| SessionRecord::from_bytes(&b)).transpose()
}

/// Reads a session's record after any commit writing it has finished
/// ([`TxnStore::get_settled`]): over a shared store, a `commitTransaction` retried on another
/// front end must see the outcome of a commit still in flight on the one that died, or it would
/// answer NoSuchTransaction and the client would run the transaction a second time.
pub fn load_settled(store: &dyn TxnStore, session: &[u8]) -> Result<Option<SessionRecord>> {
    let got = store.get_settled(&Key::SessionRecord { session }.encode())?;
    got.map(|b| SessionRecord::from_bytes(&b)).transpose()
}

/// The field a statement record covering a run of statements holds besides the outcome: the
/// last statement id of the run (the first is the record's own). Never a field of an outcome.
pub const RUN_END: &str = "$lastStmtId";

/// The value of a statement record for statements `first..=last` (the key names `first`), all
/// with the outcome `outcome`.
pub fn stmt_record(outcome: &bson::Document, first: i32, last: i32) -> Result<Vec<u8>> {
    if first == last {
        return Ok(outcome.to_vec()?);
    }
    let mut d = outcome.clone();
    d.insert(RUN_END, last);
    Ok(d.to_vec()?)
}

/// The recorded outcome of statement `stmt_id` of retryable write `number`, if it ran: from the
/// session record (a command of one statement), from its own record, or from the record of a
/// run of statements that covers it (the nearest record at or below its id, whose [`RUN_END`]
/// reaches it).
pub fn stmt_outcome(
    txn: &dyn Txn,
    session: &[u8],
    number: i64,
    stmt_id: i32,
) -> Result<Option<bson::Document>> {
    // A command of one statement keeps its outcome in the session record.
    if let Some(bytes) = txn.get(&Key::SessionRecord { session }.encode())? {
        let record = SessionRecord::from_bytes(&bytes)?;
        if record.txn_number == number
            && let Some((id, outcome)) = record.stmt
            && id == stmt_id
        {
            return crate::error::stored_document(outcome.as_bytes(), "session record").map(Some);
        }
    }
    // Its own record, or else the nearest below it: the first key of a reverse scan that
    // ends at its own.
    let key = Key::StmtRecord { session, txn_number: number, stmt_id }.encode();
    let prefix = stmt_record_prefix(session, Some(number));
    let nearest = txn.scan(Bound::Included(&prefix), Bound::Included(&key), true)?.next();
    let Some((first, bytes)) =
        nearest.transpose()?.and_then(|(k, v)| Some((decode_stmt_record_id(&k)?, v)))
    else {
        return Ok(None);
    };
    let mut outcome = crate::error::stored_document(&bytes, "statement record")?;
    let last = match outcome.remove(RUN_END) {
        Some(Bson::Int32(last)) => last,
        Some(_) => return Err(crate::err!(InternalError, "corrupt statement record: {}", outcome)),
        None => first,
    };
    Ok((first..=last).contains(&stmt_id).then_some(outcome))
}

/// Writes a session's record in `txn`, and deletes the statement records of `stale`, an older
/// transaction number of the session whose statements are no longer needed. `stale_stmts` are
/// the statement ids known to have records under `stale`; `None` means unknown (after a restart),
/// and the records are found by a scan.
pub fn write(
    txn: &mut dyn Txn,
    session: &[u8],
    record: &SessionRecord,
    stale: Option<(i64, Option<&[i32]>)>,
) -> Result<()> {
    txn.put(&Key::SessionRecord { session }.encode(), &record.to_bytes()?)?
        .or_conflict("session record")?;
    let Some((number, known)) = stale else { return Ok(()) };
    let keys: Vec<Vec<u8>> = match known {
        Some(ids) => ids
            .iter()
            .map(|&stmt_id| Key::StmtRecord { session, txn_number: number, stmt_id }.encode())
            .collect(),
        None => {
            let prefix = stmt_record_prefix(session, Some(number));
            let end = prefix_end(&prefix);
            txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)?
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<_>>()?
        }
    };
    for key in keys {
        txn.delete(&key)?.or_conflict("statement record")?;
    }
    Ok(())
}

/// Deletes the records of sessions whose last write is older than `max_age_ms` and for which
/// `in_use` says no (sessions still in memory expire through the registry instead). Returns how
/// many sessions were expired.
pub fn expire(
    store: &dyn TxnStore,
    max_age_ms: i64,
    in_use: impl Fn(&[u8]) -> bool,
) -> Result<usize> {
    let now = bson::DateTime::now().timestamp_millis();
    let prefix = session_record_prefix();
    let end = prefix_end(&prefix);
    let mut expired = Vec::new();
    {
        let txn = store.begin()?;
        for kv in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
            let (key, value) = kv?;
            let Some(session) = decode_session_record_key(&key) else { continue };
            // A record that cannot be read is kept: deleting it could forget a committed
            // transaction, and `folio verify` is where stored corruption gets reported.
            let Ok(record) = SessionRecord::from_bytes(&value) else { continue };
            if now - record.last_write_ms >= max_age_ms && !in_use(session) {
                expired.push(session.to_vec());
            }
        }
        txn.abort();
    }
    let mut count = 0;
    for session in expired {
        match forget(store, &session, Some(max_age_ms)) {
            Ok(true) => count += 1,
            Ok(false) => {}
            // A conflict means the session came back meanwhile: keep it.
            Err(e) if e.is_write_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// Deletes a session's record and statement records in one transaction. With `max_age_ms`, only
/// when the record is still that old when read again inside the transaction. Returns whether it
/// deleted anything.
pub fn forget(store: &dyn TxnStore, session: &[u8], max_age_ms: Option<i64>) -> Result<bool> {
    let mut txn = store.begin()?;
    let key = Key::SessionRecord { session }.encode();
    let record = txn.get(&key)?;
    if let (Some(max_age), Some(bytes)) = (max_age_ms, &record) {
        let now = bson::DateTime::now().timestamp_millis();
        if SessionRecord::from_bytes(bytes).is_ok_and(|r| now - r.last_write_ms < max_age) {
            txn.abort();
            return Ok(false);
        }
    }
    let prefix = stmt_record_prefix(session, None);
    let end = prefix_end(&prefix);
    let mut keys: Vec<Vec<u8>> = txn
        .scan(Bound::Included(&prefix), Bound::Excluded(&end), false)?
        .map(|kv| kv.map(|(k, _)| k))
        .collect::<Result<_>>()?;
    if record.is_some() {
        keys.push(key);
    }
    if keys.is_empty() {
        txn.abort();
        return Ok(false);
    }
    for key in &keys {
        txn.delete(key)?.or_conflict("session record")?;
    }
    txn.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bson::doc;

    use super::*;
    use crate::mvcc::{Mvcc, MvccOptions};
    use crate::storage::MemoryEngine;

    /// `d` encoded, as a session record keeps a statement's outcome.
    fn raw(d: bson::Document) -> RawDocumentBuf {
        RawDocumentBuf::try_from(&d).expect("encodes")
    }

    fn store() -> Arc<Mvcc> {
        Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).unwrap()
    }

    fn put_stmt(store: &dyn TxnStore, session: &[u8], n: i64, stmt_id: i32) {
        let mut txn = store.begin().unwrap();
        txn.put(&Key::StmtRecord { session, txn_number: n, stmt_id }.encode(), b"x")
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
    }

    fn stmt_count(store: &dyn TxnStore, session: &[u8]) -> usize {
        let prefix = stmt_record_prefix(session, None);
        let end = prefix_end(&prefix);
        let txn = store.begin().unwrap();
        let n = txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false).unwrap().count();
        txn.abort();
        n
    }

    fn put_raw(store: &dyn TxnStore, session: &[u8], n: i64, stmt_id: i32, value: &[u8]) {
        let mut txn = store.begin().unwrap();
        txn.put(&Key::StmtRecord { session, txn_number: n, stmt_id }.encode(), value)
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_run_record_answers_for_every_statement_it_covers_and_no_other() {
        let store = store();
        let one = doc! { "n": 1 };
        // Statements 0..=2 in one record, 3 on its own, 5..=9 in another run.
        put_raw(store.as_ref(), b"s", 7, 0, &stmt_record(&one, 0, 2).unwrap());
        put_raw(store.as_ref(), b"s", 7, 3, &stmt_record(&doc! { "n": 0 }, 3, 3).unwrap());
        put_raw(store.as_ref(), b"s", 7, 5, &stmt_record(&one, 5, 9).unwrap());
        // Another number and another session do not answer.
        put_raw(store.as_ref(), b"s", 6, 4, &stmt_record(&one, 4, 4).unwrap());
        put_raw(store.as_ref(), b"r", 7, 4, &stmt_record(&one, 4, 4).unwrap());
        let txn = store.begin().unwrap();
        let outcome = |id| stmt_outcome(txn.as_ref(), b"s", 7, id).unwrap();
        for id in [0, 1, 2, 5, 7, 9] {
            assert_eq!(outcome(id), Some(one.clone()), "statement {id}");
        }
        assert_eq!(outcome(3), Some(doc! { "n": 0 }));
        for id in [-1, 4, 10, 100] {
            assert_eq!(outcome(id), None, "statement {id}");
        }
        txn.abort();
    }

    #[test]
    fn an_insert_of_many_documents_keeps_one_statement_record() {
        let store = store();
        let svc = crate::Service::new(store.clone(), crate::ServiceOptions::default()).unwrap();
        let mut conn = svc.connect("test");
        let lsid = doc! { "id": bson::Uuid::new() };
        let insert = |ids: std::ops::Range<i32>, n: i64| {
            let docs: Vec<bson::Document> = ids.map(|i| doc! { "_id": i }).collect();
            doc! { "insert": "c", "documents": docs, "lsid": lsid.clone(), "txnNumber": n,
            "$db": "db" }
        };
        let reply = svc.dispatch(&mut conn, insert(0..100, 1)).body;
        assert_eq!(reply.get_i32("n").ok(), Some(100), "{reply}");
        let session = crate::session::lsid_key(&lsid).unwrap();
        assert_eq!(stmt_count(store.as_ref(), &session), 1, "one record for the whole run");
        // Retried with more statements: the hundred replay, the new ones run.
        let reply = svc.dispatch(&mut conn, insert(0..150, 1)).body;
        assert_eq!(reply.get_i32("n").ok(), Some(150), "{reply}");
        assert!(!reply.contains_key("writeErrors"), "nothing ran twice: {reply}");
        let count = svc.dispatch(&mut conn, doc! { "count": "c", "$db": "db" }).body;
        assert_eq!(count.get_i32("n").ok(), Some(150), "{count}");
        // A failed statement ends a run: the one after it starts another.
        let reply = svc
            .dispatch(&mut conn, {
                let mut cmd = insert(200..203, 2);
                cmd.insert(
                    "documents",
                    vec![doc! { "_id": 200 }, doc! { "_id": 0 }, doc! { "_id": 201 }],
                );
                cmd.insert("ordered", false);
                cmd
            })
            .body;
        assert_eq!(reply.get_i32("n").ok(), Some(2), "{reply}");
        assert_eq!(stmt_count(store.as_ref(), &session), 2, "the stale run went, two new ones");
        let txn = store.begin().unwrap();
        assert!(stmt_outcome(txn.as_ref(), &session, 2, 0).unwrap().is_some());
        assert!(stmt_outcome(txn.as_ref(), &session, 2, 1).unwrap().is_none());
        assert!(stmt_outcome(txn.as_ref(), &session, 2, 2).unwrap().is_some());
        txn.abort();
        // A command of one statement keeps its outcome in the session record: no statement
        // record, and the previous number's two are gone.
        let reply = svc.dispatch(&mut conn, insert(300..301, 3)).body;
        assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
        assert_eq!(stmt_count(store.as_ref(), &session), 0);
        let record = load(store.as_ref(), &session).unwrap().expect("session record");
        assert_eq!(record.stmt, Some((0, raw(doc! { "n": 1 }))));
        let reply = svc.dispatch(&mut conn, insert(300..301, 3)).body;
        assert_eq!(reply.get_i32("n").ok(), Some(1), "a retry replays: {reply}");
        assert!(!reply.contains_key("writeErrors"), "{reply}");
        // A new process (a restart) knows nothing of it and still replays it.
        let svc = crate::Service::new(store.clone(), crate::ServiceOptions::default()).unwrap();
        let mut conn = svc.connect("test");
        let reply = svc.dispatch(&mut conn, insert(300..301, 3)).body;
        assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
        assert!(!reply.contains_key("writeErrors"), "{reply}");
        let reply = svc.dispatch(&mut conn, insert(0..150, 1)).body;
        assert_eq!(reply.get_i32("code").ok(), Some(225), "an older number is too old: {reply}");
    }

    #[test]
    fn a_session_record_keeps_one_statement_outcome() {
        let store = store();
        let mut record = SessionRecord::now(9, RecordKind::Retryable);
        record.stmt = Some((4, raw(doc! { "n": 1, "nModified": 1 })));
        let mut txn = store.begin().unwrap();
        write(txn.as_mut(), b"s", &record, None).unwrap();
        txn.commit().unwrap();
        assert_eq!(load(store.as_ref(), b"s").unwrap(), Some(record));
        let txn = store.begin().unwrap();
        let outcome = |n, id| stmt_outcome(txn.as_ref(), b"s", n, id).unwrap();
        assert_eq!(outcome(9, 4), Some(doc! { "n": 1, "nModified": 1 }));
        assert_eq!(outcome(9, 3), None, "another statement");
        assert_eq!(outcome(8, 4), None, "another number");
        txn.abort();
    }

    #[test]
    fn records_round_trip_and_replace_stale_statements() {
        let store = store();
        assert_eq!(load(store.as_ref(), b"s1").unwrap(), None);
        put_stmt(store.as_ref(), b"s1", 4, 0);
        put_stmt(store.as_ref(), b"s1", 4, 1);
        put_stmt(store.as_ref(), b"s2", 4, 0);

        // Moving s1 to number 5 with unknown statements scans and deletes number 4's records.
        let rec = SessionRecord::now(5, RecordKind::Committed);
        let mut txn = store.begin().unwrap();
        write(txn.as_mut(), b"s1", &rec, Some((4, None))).unwrap();
        txn.commit().unwrap();
        assert_eq!(load(store.as_ref(), b"s1").unwrap(), Some(rec));
        assert_eq!(stmt_count(store.as_ref(), b"s1"), 0);
        assert_eq!(stmt_count(store.as_ref(), b"s2"), 1, "another session's records stay");

        // Known statement ids are deleted by key.
        put_stmt(store.as_ref(), b"s2", 6, 0);
        let mut txn = store.begin().unwrap();
        let rec = SessionRecord::now(7, RecordKind::Retryable);
        write(txn.as_mut(), b"s2", &rec, Some((4, Some(&[0])))).unwrap();
        txn.commit().unwrap();
        assert_eq!(stmt_count(store.as_ref(), b"s2"), 1, "only number 4's record was named");
    }

    #[test]
    fn expiry_deletes_old_records_of_sessions_not_in_use() {
        let store = store();
        for (session, age_ms) in [(&b"old"[..], 10_000), (b"busy", 10_000), (b"new", 0)] {
            let mut rec = SessionRecord::now(1, RecordKind::Retryable);
            rec.last_write_ms -= age_ms;
            let mut txn = store.begin().unwrap();
            write(txn.as_mut(), session, &rec, None).unwrap();
            txn.commit().unwrap();
            put_stmt(store.as_ref(), session, 1, 0);
        }
        let expired = expire(store.as_ref(), 5_000, |s| s == b"busy").unwrap();
        assert_eq!(expired, 1);
        assert_eq!(load(store.as_ref(), b"old").unwrap(), None);
        assert_eq!(stmt_count(store.as_ref(), b"old"), 0);
        assert!(load(store.as_ref(), b"busy").unwrap().is_some());
        assert!(load(store.as_ref(), b"new").unwrap().is_some());
        assert_eq!(stmt_count(store.as_ref(), b"new"), 1);
    }
}
