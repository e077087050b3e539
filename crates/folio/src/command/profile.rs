//! Watching operations: the slow-operation log line and the database profiler.
//!
//! After every command [`super::Service::dispatch`] hands `Service::observe` the command, its
//! reply, how long it took and what it examined ([`crate::exec::opstats`]). As in MongoDB:
//!
//! - an operation at or above `slowms` (100 ms by default; `--slowms`, or the `profile` command
//!   on any database, which sets it for the server) is logged as one `Slow query` line, sampled
//!   by `slowOpSampleRate` (`--slowOpSampleRate`, `profile`'s `sampleRate`);
//! - a database's profiling level (`profile: 0 | 1 | 2`, `--profile` for every database) decides
//!   what goes into its `system.profile` collection: nothing, slow operations, or all;
//! - a profile `filter` (a query on the entry, e.g. `{millis: {$gt: 5}}`) replaces the slowms and
//!   sample-rate test for both the log and the profiler of that database.
//!
//! Entries and log lines carry MongoDB's fields (`op`, `ns`, `command`, `keysExamined`,
//! `docsExamined`, `nreturned`, `planSummary`, `responseLength`, `millis`, `ts`, `client`,
//! `appName`...). Credentials never appear: [`redact`] replaces passwords and SASL payloads.
//!
//! `system.profile` is a capped collection of 1 MB in MongoDB. Folio writes each entry as its
//! own non-durable commit (the entries are diagnostics: losing the last few to a crash is
//! acceptable, slowing every profiled operation by a disk sync is not) and trims the collection
//! to its newest [`PROFILE_MAX_ENTRIES`] entries. Operations on `system.profile` itself are
//! never profiled, so reading the profile does not grow it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, DateTime, Document, doc};
use parking_lot::Mutex;

use super::Connection;
use super::args::Request;
use crate::error::Result;
use crate::exec::opstats::OpStats;
use crate::memory::{bson_size, value_bson_size};
use crate::query::Filter;

/// The most entries a `system.profile` collection keeps (the oldest go first).
pub const PROFILE_MAX_ENTRIES: u64 = 1000;

/// Per-database profiling settings.
#[derive(Clone, Debug, Default)]
struct DbProfile {
    level: i32,
    filter: Option<(Document, Filter)>,
}

/// The server's slow-operation and profiling settings.
pub struct Profiler {
    default_level: i32,
    slow_ms: AtomicU64,
    /// `f64` bits.
    sample_rate: AtomicU64,
    dbs: Mutex<HashMap<String, DbProfile>>,
    /// Whether any database profiles or filters (else only slowness needs looking at, and the
    /// common case of a fast operation costs one comparison).
    any_db: std::sync::atomic::AtomicBool,
    /// Entries written per database since start, to trim now and then rather than each time.
    written: Mutex<HashMap<String, u64>>,
}

impl Profiler {
    /// Settings from the command line: `--profile`, `--slowms`, `--slowOpSampleRate`.
    pub fn new(default_level: i32, slow_ms: u64, sample_rate: f64) -> Self {
        Profiler {
            default_level,
            slow_ms: AtomicU64::new(slow_ms),
            sample_rate: AtomicU64::new(sample_rate.to_bits()),
            dbs: Mutex::new(HashMap::new()),
            any_db: std::sync::atomic::AtomicBool::new(default_level != 0),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The slow-operation threshold in milliseconds.
    pub fn slow_ms(&self) -> u64 {
        self.slow_ms.load(Ordering::Relaxed)
    }

    fn sample_rate(&self) -> f64 {
        f64::from_bits(self.sample_rate.load(Ordering::Relaxed))
    }

    fn db(&self, db: &str) -> DbProfile {
        self.dbs
            .lock()
            .get(db)
            .cloned()
            .unwrap_or(DbProfile { level: self.default_level, filter: None })
    }
}

/// Replaces credentials in a command with `"xxx"`, as MongoDB's logs do: passwords of user
/// commands and SASL conversation payloads.
pub fn redact(cmd: &Document) -> Document {
    super::authz::mask_secrets(cmd, "xxx")
}

/// `profile`: reads (`-1`) or sets a database's profiling level, and the server's `slowms`,
/// `sampleRate`, and the database's `filter`. Answers the settings as they were.
pub fn profile(req: &mut Request<'_>) -> Result<Document> {
    let p = &req.svc.profiler;
    let db = req.db.to_string();
    let level = match req.cmd.get("profile") {
        Some(v) => crate::doc::compare::as_f64(v)
            .filter(|n| n.fract() == 0.0 && (-1.0..=2.0).contains(n))
            .ok_or_else(|| crate::err!(BadValue, "Invalid profiling level: {}", v))?
            as i32,
        None => crate::bail!(BadValue, "profile requires a level"),
    };
    let slow_ms = match req.cmd.get("slowms") {
        None => None,
        Some(v) => Some(
            crate::doc::compare::as_f64(v)
                .filter(|n| n.fract() == 0.0)
                .ok_or_else(|| crate::err!(TypeMismatch, "'slowms' must be a number: {}", v))?,
        ),
    };
    let sample_rate = match req.cmd.get("sampleRate") {
        None => None,
        Some(v) => {
            Some(crate::doc::compare::as_f64(v).filter(|n| (0.0..=1.0).contains(n)).ok_or_else(
                || crate::err!(BadValue, "'sampleRate' must be between 0.0 and 1.0 inclusive"),
            )?)
        }
    };
    let filter = match req.cmd.get("filter") {
        None => None,
        Some(Bson::String(s)) if s == "unset" => Some(None),
        Some(Bson::Document(d)) => Some(Some((d.clone(), Filter::parse(d)?))),
        Some(other) => crate::bail!(
            TypeMismatch,
            "'filter' must be an object or the string 'unset', not {}",
            other
        ),
    };
    let before = p.db(&db);
    let mut reply = doc! {
        "was": before.level,
        "slowms": i64::try_from(p.slow_ms()).unwrap_or(i64::MAX),
        "sampleRate": p.sample_rate(),
    };
    if let Some((f, _)) = &before.filter {
        reply.insert("filter", f.clone());
    }
    if level >= 0 || filter.is_some() {
        let mut dbs = p.dbs.lock();
        let entry = dbs.entry(db.clone()).or_insert_with(|| before.clone());
        if level >= 0 {
            entry.level = level;
        }
        if let Some(f) = filter {
            entry.filter = f;
        }
        p.any_db.store(true, Ordering::Relaxed);
    }
    if let Some(ms) = slow_ms {
        // A negative slowms is accepted by MongoDB and logs nothing as slow.
        p.slow_ms.store(if ms < 0.0 { u64::MAX } else { ms as u64 }, Ordering::Relaxed);
    }
    if let Some(rate) = sample_rate {
        p.sample_rate.store(rate.to_bits(), Ordering::Relaxed);
    }
    if before.filter.is_some() || req.cmd.contains_key("filter") {
        reply.insert(
            "note",
            "When a filter expression is set, slowms and sampleRate are not used for profiling and slow-query log lines.",
        );
    }
    Ok(reply)
}

/// The profiler's name for a command (`op` of an entry).
fn op_name(cmd_name: &str) -> &'static str {
    match cmd_name {
        "find" => "query",
        "insert" => "insert",
        "update" => "update",
        "delete" => "remove",
        "getMore" => "getmore",
        _ => "command",
    }
}

impl super::Service {
    /// Logs a slow operation and writes a profile entry, as the settings say (see the module
    /// docs).
    pub(crate) fn observe(
        &self,
        conn: &Connection,
        received: super::Received<'_>,
        outcome: super::Outcome<'_>,
        elapsed: Duration,
        stats: &OpStats,
    ) {
        let p = &self.profiler;
        let cmd = received.cmd;
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if millis < p.slow_ms() && !p.any_db.load(Ordering::Relaxed) {
            return;
        }
        let Some(name) = cmd.keys().next() else { return };
        let db = cmd.get_str("$db").unwrap_or("");
        let ns = super::namespace_of(cmd, db);
        // Never profile the profile itself, nor the commands of the profiler.
        if ns.ends_with(".system.profile") || name == "profile" {
            return;
        }
        let settings = p.db(db);
        let slow = settings.filter.is_none() && millis >= p.slow_ms();
        if !slow && settings.level < 2 && settings.filter.is_none() {
            return;
        }
        // The entry counts and measures the batch as returned.
        let whole;
        let reply = match outcome.raw_batch {
            Some(batch) => {
                let mut body = outcome.body.clone();
                if batch.decode_into(&mut body).is_err() {
                    return;
                }
                whole = body;
                &whole
            }
            None => outcome.body,
        };
        let sampled = || p.sample_rate() >= 1.0 || rand::random::<f64>() < p.sample_rate();
        if settings.level < 2 && settings.filter.is_none() {
            // Only the log line (the operation is slow, or it would have returned above): the
            // command goes there cut to its size limit, so it is cut before it is copied (an
            // insert of many documents is never copied whole).
            if sampled() {
                self.metrics.slow_operations.fetch_add(1, Ordering::Relaxed);
                // Of documents sent apart, only those the cut can keep are decoded.
                let (sent, size) = received.whole_within(MAX_LOG_ATTR_BYTES);
                let (command, cut) = match truncate_for_log(&sent, size, MAX_LOG_ATTR_BYTES) {
                    Some((kept, truncated, size)) => (kept, Some((truncated, size))),
                    None => (sent.into_owned(), None),
                };
                let entry = self.profile_entry(conn, &command, reply, &ns, elapsed, stats);
                log_slow(conn, &entry, cut);
            }
            return;
        }
        // The command as the client sent it, documents kept apart included.
        let sent = received.whole();
        let entry = self.profile_entry(conn, &sent, reply, &ns, elapsed, stats);
        let chosen = match &settings.filter {
            Some((_, f)) => f.matches(&entry),
            None => slow && sampled(),
        };
        if chosen {
            self.metrics.slow_operations.fetch_add(1, Ordering::Relaxed);
            log_slow(conn, &entry, None);
        }
        let profiled = match settings.level {
            2 => settings.filter.as_ref().is_none_or(|(_, f)| f.matches(&entry)),
            1 => chosen,
            _ => false,
        };
        if profiled
            && !db.is_empty()
            && let Err(e) = self.write_profile_entry(db, entry)
        {
            tracing::warn!("cannot write a profile entry to {db}.system.profile: {e}");
        }
    }

    fn profile_entry(
        &self,
        conn: &Connection,
        cmd: &Document,
        reply: &Document,
        ns: &str,
        elapsed: Duration,
        stats: &OpStats,
    ) -> Document {
        let name = cmd.keys().next().map(String::as_str).unwrap_or("");
        let mut command = redact(cmd);
        command.remove("$clusterTime");
        let mut entry = doc! {
            "op": op_name(name),
            "ns": ns,
            "command": command,
            "keysExamined": i64::try_from(stats.keys_examined).unwrap_or(i64::MAX),
            "docsExamined": i64::try_from(stats.docs_examined).unwrap_or(i64::MAX),
        };
        if stats.has_sort_stage {
            entry.insert("hasSortStage", true);
        }
        if let Ok(cursor) = reply.get_document("cursor") {
            let n = cursor
                .get_array("firstBatch")
                .or_else(|_| cursor.get_array("nextBatch"))
                .map(Vec::len)
                .unwrap_or(0);
            entry.insert("nreturned", i64::try_from(n).unwrap_or(i64::MAX));
            if let Ok(id) = cursor.get_i64("id")
                && id != 0
            {
                entry.insert("cursorid", id);
            }
        }
        match name {
            "insert" => {
                entry.insert("ninserted", reply.get("n").cloned().unwrap_or(Bson::Int32(0)));
            }
            "delete" => {
                entry.insert("ndeleted", reply.get("n").cloned().unwrap_or(Bson::Int32(0)));
            }
            "update" => {
                entry.insert("nMatched", reply.get("n").cloned().unwrap_or(Bson::Int32(0)));
                entry
                    .insert("nModified", reply.get("nModified").cloned().unwrap_or(Bson::Int32(0)));
            }
            _ => {}
        }
        if let Some(plan) = &stats.plan_summary {
            entry.insert("planSummary", plan.clone());
        }
        if !matches!(reply.get("ok"), Some(Bson::Double(d)) if *d == 1.0) {
            if let Some(code) = reply.get("code") {
                entry.insert("errCode", code.clone());
            }
            if let Some(msg) = reply.get("errmsg") {
                entry.insert("errMsg", msg.clone());
            }
            if let Some(code_name) = reply.get("codeName") {
                entry.insert("errName", code_name.clone());
            }
        }
        let response_length = reply.to_vec().map(|v| v.len()).unwrap_or(0);
        entry.insert("responseLength", i64::try_from(response_length).unwrap_or(i64::MAX));
        entry.insert("protocol", "op_msg");
        entry.insert("locks", Document::new());
        entry.insert("numYield", 0);
        entry.insert("millis", i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
        entry.insert("durationMicros", i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX));
        entry.insert("ts", DateTime::now());
        let client = conn.remote.rsplit_once(':').map_or(conn.remote.as_str(), |(host, _)| host);
        entry.insert("client", client);
        if let Some(app) = &conn.app_name {
            entry.insert("appName", app.clone());
        }
        entry.insert("allUsers", Bson::Array(Vec::new()));
        entry.insert("user", "");
        entry
    }

    fn write_profile_entry(&self, db: &str, entry: Document) -> Result<()> {
        let mut txn = self.store.begin()?;
        crate::exec::insert_one(txn.as_mut(), db, "system.profile", &entry, true)?;
        txn.commit_deferred()?;
        self.metrics.profiled.fetch_add(1, Ordering::Relaxed);
        let due = {
            let mut written = self.profiler.written.lock();
            let n = written.entry(db.to_string()).or_insert(0);
            *n += 1;
            n.is_multiple_of(PROFILE_MAX_ENTRIES / 10)
        };
        if due {
            self.trim_profile(db)?;
        }
        Ok(())
    }

    /// Deletes the oldest entries of `db.system.profile` beyond [`PROFILE_MAX_ENTRIES`].
    fn trim_profile(&self, db: &str) -> Result<()> {
        let mut txn = self.store.begin()?;
        let Some(meta) = crate::catalog::get_collection(txn.as_ref(), db, "system.profile")? else {
            txn.abort();
            return Ok(());
        };
        let all = crate::exec::scan_collection(txn.as_ref(), &meta)?;
        let excess = (all.len() as u64).saturating_sub(PROFILE_MAX_ENTRIES);
        if excess == 0 {
            txn.abort();
            return Ok(());
        }
        // `_id`s are ObjectIds made at insert time: `_id` order is insertion order.
        let ids: Vec<Bson> = all
            .iter()
            .take(usize::try_from(excess).unwrap_or(usize::MAX))
            .filter_map(|f| f.doc.get("_id").cloned())
            .collect();
        let filter = doc! { "_id": { "$in": ids } };
        let op = crate::exec::DeleteOp {
            filter: &filter,
            limit_one: false,
            let_vars: None,
            collation: &crate::collation::Requested::Simple,
            hint: None,
        };
        crate::exec::delete(txn.as_mut(), db, "system.profile", &op)?;
        txn.commit_deferred()?;
        Ok(())
    }
}

/// Writes the `Slow query` log line (MongoDB's log id 51803, component COMMAND).
/// MongoDB's default `maxLogSizeKB`: the size above which a log attribute is cut.
const MAX_LOG_ATTR_BYTES: usize = 10 * 1024;

/// Cuts `doc` to about `budget` bytes of BSON when it is larger: fields (and the elements of
/// array fields) are kept in order while they fit; the first one that does not is named in the
/// returned `truncated` document with its type and size, as MongoDB's log does. `size` is the
/// full command's BSON size: `doc` may hold only a head of its last array
/// ([`super::Received::whole_within`]), long enough for the cut to fall inside it. Returns `None`
/// when the command fits; else the kept part, `truncated` and `size`.
fn truncate_for_log(
    doc: &Document,
    size: usize,
    budget: usize,
) -> Option<(Document, Document, i64)> {
    if size <= budget {
        return None;
    }
    let mut kept = Document::new();
    let mut used = 5;
    let cut = |v: &Bson| doc! { "type": type_name(v), "size": value_bson_size(v) as i64 };
    for (key, value) in doc {
        // An array is kept element by element (only the elements looked at are measured).
        if let Bson::Array(items) = value {
            let mut head = Vec::new();
            used += 2 + key.len() + 5;
            for (i, item) in items.iter().enumerate() {
                let element = 2 + i.to_string().len() + value_bson_size(item);
                if used + element > budget {
                    kept.insert(key.clone(), head);
                    let truncated = doc! { key.clone(): { i.to_string(): cut(item) } };
                    return Some((kept, truncated, size as i64));
                }
                used += element;
                head.push(item.clone());
            }
            kept.insert(key.clone(), head);
            continue;
        }
        let field = 2 + key.len() + value_bson_size(value);
        if used + field > budget {
            return Some((kept, doc! { key.clone(): cut(value) }, size as i64));
        }
        used += field;
        kept.insert(key.clone(), value.clone());
    }
    None
}

/// The BSON type name MongoDB's truncation report uses.
fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::String(_) => "string",
        Bson::Binary(_) => "binData",
        _ => "value",
    }
}

/// `cut`: what was cut from the command already (the `truncated` report and the full size); when
/// `None`, the entry's command is cut here if it is over the limit.
fn log_slow(conn: &Connection, entry: &Document, cut: Option<(Document, i64)>) {
    let mut attr = doc! { "type": "command" };
    for (from, to) in [
        ("ns", "ns"),
        ("appName", "appName"),
        ("command", "command"),
        ("planSummary", "planSummary"),
        ("keysExamined", "keysExamined"),
        ("docsExamined", "docsExamined"),
        ("hasSortStage", "hasSortStage"),
        ("cursorid", "cursorid"),
        ("nreturned", "nreturned"),
        ("ninserted", "ninserted"),
        ("ndeleted", "ndeleted"),
        ("nMatched", "nMatched"),
        ("nModified", "nModified"),
        ("errCode", "errCode"),
        ("errMsg", "errMsg"),
        ("errName", "errName"),
        ("responseLength", "reslen"),
        ("locks", "locks"),
        ("protocol", "protocol"),
        ("millis", "durationMillis"),
    ] {
        if let Some(v) = entry.get(from) {
            attr.insert(to, v.clone());
        }
    }
    attr.insert("remote", conn.remote.clone());
    // A large command (an insert of many documents) is logged cut to maxLogSizeKB, as MongoDB
    // cuts a log attribute, with what was cut and the full size beside it.
    let cut = cut.or_else(|| {
        let command = attr.get_document("command").ok()?;
        let (kept, truncated, size) =
            truncate_for_log(command, bson_size(command), MAX_LOG_ATTR_BYTES)?;
        attr.insert("command", kept);
        Some((truncated, size))
    });
    if let Some((truncated, size)) = cut {
        attr.insert("truncated", doc! { "command": truncated });
        attr.insert("size", doc! { "command": size });
    }
    let attr = Bson::Document(attr).into_relaxed_extjson().to_string();
    tracing::info!(
        target: "folio::command::slow",
        log_id = 51803,
        ctx = %format!("conn{}", conn.id),
        attr = %attr,
        "Slow query"
    );
}

#[cfg(test)]
mod tests {
    use bson::{Document, doc};

    use super::{MAX_LOG_ATTR_BYTES, bson_size, truncate_for_log};

    #[test]
    fn a_large_command_is_cut_for_the_log_and_the_cut_is_named() {
        let small = doc! { "insert": "c", "documents": [{ "_id": 1 }] };
        assert!(truncate_for_log(&small, bson_size(&small), MAX_LOG_ATTR_BYTES).is_none());

        let docs: Vec<Document> =
            (0..1000).map(|i| doc! { "_id": i, "pad": "x".repeat(100) }).collect();
        let big = doc! { "insert": "c", "documents": docs.clone(), "ordered": true };
        let full = big.to_vec().unwrap().len() as i64;
        let (kept, truncated, size) =
            truncate_for_log(&big, bson_size(&big), MAX_LOG_ATTR_BYTES).expect("cut");
        assert_eq!(size, full);
        assert!(kept.to_vec().unwrap().len() <= MAX_LOG_ATTR_BYTES, "{}", kept.len());
        assert_eq!(kept.get_str("insert").ok(), Some("c"));
        let head = kept.get_array("documents").unwrap();
        assert!(!head.is_empty() && head.len() < 1000);
        assert_eq!(
            head[..],
            docs[..head.len()].iter().cloned().map(Into::into).collect::<Vec<_>>()[..]
        );
        // The first element left out, with its type and size; nothing after it is logged.
        let at = head.len().to_string();
        let what = truncated.get_document("documents").and_then(|d| d.get_document(&at)).unwrap();
        assert_eq!(what.get_str("type").ok(), Some("object"));
        let one = docs[head.len()].to_vec().unwrap().len() as i64;
        assert_eq!(what.get_i64("size").ok(), Some(one));
        assert!(!kept.contains_key("ordered"));
    }

    /// An insert whose documents came apart from the command is cut for the log exactly as
    /// the whole command would be, decoding only the documents the cut can reach.
    #[test]
    fn documents_sent_apart_are_cut_like_the_whole_command_without_decoding_them_all() {
        use crate::command::Received;
        use folio_wire::SequenceDocument;

        let cmd = doc! { "insert": "c", "ordered": true, "$db": "d" };
        let docs: Vec<SequenceDocument> = (0..1000)
            .map(|i| {
                SequenceDocument::from_document(
                    &doc! { "_id": i as i64, "pad": "x".repeat(i % 300) },
                )
            })
            .collect::<Result<_, _>>()
            .unwrap();
        for n in [0, 1, 3, 40, 1000] {
            let received = Received { cmd: &cmd, documents: Some(&docs[..n]) };
            let whole = received.whole();
            let (head, size) = received.whole_within(MAX_LOG_ATTR_BYTES);
            assert_eq!(size, whole.to_vec().unwrap().len(), "{n} documents");
            assert_eq!(
                truncate_for_log(&head, size, MAX_LOG_ATTR_BYTES),
                truncate_for_log(&whole, bson_size(&whole), MAX_LOG_ATTR_BYTES),
                "{n} documents"
            );
            let decoded = head.get_array("documents").unwrap().len();
            if n == 1000 {
                // The first documents (growing by a byte each) fill 10 KB after about 120.
                assert!(decoded < 150, "{decoded} decoded");
                assert!(truncate_for_log(&head, size, MAX_LOG_ATTR_BYTES).is_some());
            } else {
                assert_eq!(decoded, n);
            }
        }
    }
}
