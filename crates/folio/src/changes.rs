//! Change streams: `$changeStream` cursors over the durable change log.
//!
//! Every committed transaction that changed data has one change-log record, written by the MVCC
//! layer in the same atomic batch as the data and keyed by the commit timestamp
//! ([`crate::mvcc::Txn::append_log`]); its entries, in the order the transaction made them, are
//! described in [`crate::exec::changelog`]. A change stream is a position in that log and a
//! filter: each `getMore` reads the records after the position ([`TxnStore::read_log`]), turns
//! the entries that concern the stream's collection, database or deployment into MongoDB's change
//! events, runs the stream's later stages on them, and advances the position. Readers take no
//! lock a writer needs and the log is read only below the published commit, so a stream never
//! slows a writer and never sees part of a transaction.
//!
//! # Positions and resume tokens
//!
//! An event's position is `(commit timestamp, index of the entry in its transaction, invalidate
//! flag)`; events are delivered in this order. The resume token's `_data` is the position as a
//! fixed-width upper-case hex string (16 + 8 + 2 digits), so tokens compare as strings in event
//! order, as MongoDB's do. `postBatchResumeToken` is the position the stream has read to: the
//! last event returned, or `(majority commit point, FFFFFFFF)` when the stream has caught up
//! (events are read only up to the majority commit point, [`TxnStore::majority_committed`]:
//! none that a crash could take back, as MongoDB's streams return only majority-committed
//! events). Resuming
//! from a position whose events may have been trimmed from the log (`TxnStore::log_floor`) fails
//! with ChangeStreamHistoryLost (286).
//!
//! # Waiting
//!
//! A `getMore` that finds no event waits on the store's commit notification
//! ([`TxnStore::wait_commit_after`]) until a new commit is majority-committed or `maxTimeMS` (the
//! driver's `maxAwaitTimeMS`, default one second) passes; it never polls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use parking_lot::Mutex;

use crate::agg::{Context, Pipeline};
use crate::error::{Code, Error, Result};
use crate::exec::{self, FindSpec};
use crate::mvcc::{Ts, TxnStore};
use crate::{bail, err};

/// How many change-log records one read takes at most.
const READ_CHUNK: usize = 256;
/// The await time of a `getMore` without `maxTimeMS`.
pub const DEFAULT_AWAIT: Duration = Duration::from_secs(1);

/// What a stream watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One collection (`db.coll.watch()`).
    Collection(String, String),
    /// Every collection of a database (`db.watch()`).
    Database(String),
    /// Every database but `admin`, `config` and `local` (`client.watch()`).
    Deployment,
}

/// `fullDocument` / `fullDocumentBeforeChange` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Image {
    /// `default` (post-image) / `off` (pre-image): no image.
    Off,
    /// `updateLookup`: the current version of the document, read when the event is returned.
    UpdateLookup,
    /// `whenAvailable`: the recorded image, or null.
    WhenAvailable,
    /// `required`: the recorded image, or an error.
    Required,
}

/// A position in the change log (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The commit timestamp.
    pub ts: Ts,
    /// The entry's index in its transaction; `u32::MAX` is after every entry of `ts`.
    pub index: u32,
    /// 1 for the invalidate event that follows the entry.
    pub invalidate: u8,
}

impl Position {
    /// The resume token `{_data: hex}`.
    pub fn token(&self) -> Document {
        doc! { "_data": format!("{:016X}{:08X}{:02X}", self.ts.0, self.index, self.invalidate) }
    }

    /// Parses a resume token.
    pub fn from_token(token: &Bson) -> Result<Position> {
        let bad = || err!(BadValue, "invalid resume token: {}", token);
        let Bson::Document(d) = token else { return Err(bad()) };
        let Some(Bson::String(data)) = d.get("_data") else { return Err(bad()) };
        if data.len() != 26 || !data.is_ascii() {
            return Err(bad());
        }
        let ts = u64::from_str_radix(&data[..16], 16).map_err(|_| bad())?;
        let index = u32::from_str_radix(&data[16..24], 16).map_err(|_| bad())?;
        let invalidate = u8::from_str_radix(&data[24..], 16).map_err(|_| bad())?;
        Ok(Position { ts: Ts(ts), index, invalidate })
    }
}

/// An open change stream.
pub struct ChangeStream {
    scope: Scope,
    full_document: Image,
    before: Image,
    show_expanded: bool,
    /// The later stages, if any.
    pipeline: Option<Pipeline>,
    /// Everything up to and including this position has been read.
    pos: Position,
    /// The stream was invalidated: the batch that returned the invalidate event is the last.
    closed: bool,
    /// Who opened the cursor (its session and user).
    pub owner: crate::cursor::Owner,
    /// The cursor's namespace (`db.coll`, or `db.$cmd.aggregate`).
    pub ns: String,
    last_use: Instant,
}

fn image(v: Option<&Bson>, field: &str, off: &str) -> Result<Image> {
    match v {
        None => Ok(Image::Off),
        Some(Bson::String(s)) => match s.as_str() {
            s if s == off => Ok(Image::Off),
            "updateLookup" if field == "fullDocument" => Ok(Image::UpdateLookup),
            "whenAvailable" => Ok(Image::WhenAvailable),
            "required" => Ok(Image::Required),
            other => {
                Err(err!(BadValue, "'{}' is not a valid value for $changeStream.{}", other, field))
            }
        },
        Some(_) => Err(err!(
            TypeMismatch,
            "BSON field '$changeStream.{}' is the wrong type, expected type 'string'",
            field
        )),
    }
}

/// The later stages a change stream accepts (MongoDB's list).
const ALLOWED_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
];

impl ChangeStream {
    /// Opens a stream for `aggregate` with a pipeline starting with `$changeStream`, on
    /// collection `coll` of `db` (`None`: `aggregate: 1`).
    pub fn open(
        store: &dyn TxnStore,
        db: &str,
        coll: Option<&str>,
        pipeline: &[Document],
        owner: crate::cursor::Owner,
    ) -> Result<ChangeStream> {
        let spec = match pipeline.first().and_then(|s| s.get("$changeStream")) {
            Some(Bson::Document(d)) => d.clone(),
            Some(_) => {
                bail!(TypeMismatch, "the $changeStream stage specification must be an object")
            }
            None => bail!(InternalError, "not a change stream"),
        };
        let mut all_cluster = false;
        let mut show_expanded = false;
        let mut start: Option<(Position, &str)> = None;
        for (k, v) in &spec {
            match k.as_str() {
                "fullDocument" | "fullDocumentBeforeChange" => {}
                "allChangesForCluster" => all_cluster = truthy_bool(k, v)?,
                "showExpandedEvents" => show_expanded = truthy_bool(k, v)?,
                "resumeAfter" | "startAfter" => {
                    if start.is_some() {
                        bail!(
                            Location40674,
                            "Only one type of resume option is allowed, but multiple were found."
                        );
                    }
                    start = Some((Position::from_token(v)?, k.as_str()));
                }
                "startAtOperationTime" => {
                    let Bson::Timestamp(t) = v else {
                        bail!(
                            TypeMismatch,
                            "BSON field '$changeStream.startAtOperationTime' is the wrong type, \
                             expected type 'timestamp'"
                        );
                    };
                    if start.is_some() {
                        bail!(
                            Location40674,
                            "Only one type of resume option is allowed, but multiple were found."
                        );
                    }
                    let ts = Ts::from_bson(*t);
                    let before =
                        Position { ts: Ts(ts.0.saturating_sub(1)), index: u32::MAX, invalidate: 0 };
                    start = Some((before, "startAtOperationTime"));
                }
                "allowToRunOnConfigDB" | "allowToRunOnSystemNS" => {
                    truthy_bool(k, v)?;
                }
                other => {
                    return Err(Error::unknown_field(&format!("$changeStream.{other}")));
                }
            }
        }
        let full_document = image(spec.get("fullDocument"), "fullDocument", "default")?;
        let before =
            image(spec.get("fullDocumentBeforeChange"), "fullDocumentBeforeChange", "off")?;
        let scope = match (coll, all_cluster) {
            (Some(c), false) => Scope::Collection(db.to_string(), c.to_string()),
            (None, false) if db == "admin" => bail!(
                InvalidNamespace,
                "$changeStream on the admin database requires allChangesForCluster: true"
            ),
            (None, false) => Scope::Database(db.to_string()),
            (None, true) if db == "admin" => Scope::Deployment,
            _ => bail!(
                InvalidOptions,
                "A $changeStream with 'allChangesForCluster:true' may only be opened on the \
                 'admin' database, and with no collection name"
            ),
        };
        if matches!(db, "config" | "local") || (db == "admin" && coll.is_some()) {
            bail!(
                InvalidNamespace,
                "$changeStream may not be opened on the internal {} database",
                db
            );
        }
        let rest = &pipeline[1..];
        for stage in rest {
            let name = stage.keys().next().map(String::as_str).unwrap_or("");
            if name == "$changeStream" {
                bail!(
                    Location40602,
                    "$changeStream is only valid as the first stage in a pipeline"
                );
            }
        }
        let parsed =
            if rest.is_empty() { None } else { Some(Pipeline::parse(rest, &Document::new())?) };
        for stage in rest {
            let name = stage.keys().next().map(String::as_str).unwrap_or("");
            if !ALLOWED_STAGES.contains(&name) {
                bail!(IllegalOperation, "{} is not permitted in a $changeStream pipeline", name);
            }
        }
        let pos = match start {
            Some((p, "resumeAfter")) if p.invalidate == 1 => bail!(
                InvalidResumeToken,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed from an \
                 invalidate notification."
            ),
            Some((p, _)) => p,
            None => Position { ts: store.last_committed(), index: u32::MAX, invalidate: 0 },
        };
        let ns = match &scope {
            Scope::Collection(d, c) => format!("{d}.{c}"),
            _ => format!("{db}.$cmd.aggregate"),
        };
        let stream = ChangeStream {
            scope,
            full_document,
            before,
            show_expanded,
            pipeline: parsed,
            pos,
            closed: false,
            owner,
            ns,
            last_use: Instant::now(),
        };
        stream.check_history(store)?;
        Ok(stream)
    }

    fn check_history(&self, store: &dyn TxnStore) -> Result<()> {
        if self.pos.ts < store.log_floor() {
            bail!(
                ChangeStreamHistoryLost,
                "Resume of change stream was not possible, as the resume point may no longer be \
                 in the oplog."
            );
        }
        Ok(())
    }

    /// The `postBatchResumeToken`.
    pub fn post_batch_resume_token(&self) -> Document {
        self.pos.token()
    }

    /// Whether the stream was invalidated (its cursor closes after this batch).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Returns up to `batch_size` (0: no limit) events. With `wait`, waits until `wait` for an
    /// event when there is none yet.
    pub fn next_batch(
        &mut self,
        store: &dyn TxnStore,
        batch_size: usize,
        wait: Option<Instant>,
    ) -> Result<Vec<Document>> {
        self.last_use = Instant::now();
        let limit = if batch_size == 0 { 101 } else { batch_size };
        let mut out = Vec::new();
        loop {
            // The log is read up to the majority commit point, so that is how far a pass has
            // looked (commits after it are visible but may still be taken back by a crash).
            let visible = store.majority_committed();
            self.check_history(store)?;
            let records = store.read_log(Ts(self.pos.ts.0.saturating_sub(1)), READ_CHUNK)?;
            let chunk_full = records.len() >= READ_CHUNK;
            let mut last_ts = Ts::ZERO;
            for (ts, record) in records {
                last_ts = ts;
                let mut rest = &record[..];
                let header = crate::error::stored_document_from(&mut rest, "change-log record")?;
                let mut index = 0u32;
                while !rest.is_empty() {
                    let entry = crate::error::stored_document_from(&mut rest, "change-log entry")?;
                    let here = Position { ts, index, invalidate: 0 };
                    index += 1;
                    if here <= self.pos {
                        continue;
                    }
                    for (pos, event) in self.events(store, here, &header, &entry)? {
                        self.pos = pos;
                        if pos.invalidate == 1 {
                            self.closed = true;
                        }
                        if let Some(event) = self.shape(event)? {
                            out.push(event);
                        }
                        if self.closed {
                            return Ok(out);
                        }
                    }
                    // Every event of one entry goes in one batch, so the position always ends
                    // on an entry boundary.
                    self.pos = Position { ts, index: index - 1, invalidate: self.pos.invalidate };
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if chunk_full {
                continue;
            }
            let caught_up = Position { ts: visible.max(last_ts), index: u32::MAX, invalidate: 0 };
            self.pos = self.pos.max(caught_up);
            match wait {
                Some(deadline) if out.is_empty() && Instant::now() < deadline => {
                    store.wait_commit_after(self.pos.ts, deadline);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Runs the later stages on an event; `None` when they filter it out.
    fn shape(&self, event: Document) -> Result<Option<Document>> {
        let Some(p) = &self.pipeline else { return Ok(Some(event)) };
        let id = event.get("_id").cloned();
        let mut docs = p.execute(vec![event], &Context::empty())?;
        let Some(out) = docs.pop() else { return Ok(None) };
        if out.get("_id").cloned() != id {
            return Err(Error::new(
                Code::ChangeStreamFatalError,
                "Encountered an event whose _id field, which contains the resume token, was \
                 modified by the pipeline. Modifying the _id field of an event makes it \
                 impossible to resume the stream from that point. Only transformations that \
                 retain the unmodified _id field are allowed.",
            ));
        }
        Ok(Some(out))
    }

    /// Whether an entry's namespace concerns this stream.
    fn watches(&self, db: &str, coll: Option<&str>) -> bool {
        if coll.is_some_and(|c| c.starts_with("system.")) {
            return false;
        }
        match &self.scope {
            Scope::Collection(d, c) => d == db && coll == Some(c.as_str()),
            Scope::Database(d) => d == db,
            Scope::Deployment => !matches!(db, "admin" | "config" | "local"),
        }
    }

    /// The change events of one log entry (two for an entry that invalidates the stream).
    fn events(
        &self,
        store: &dyn TxnStore,
        pos: Position,
        header: &Document,
        entry: &Document,
    ) -> Result<Vec<(Position, Document)>> {
        let op = entry.get_str("op").unwrap_or("");
        let ns = entry.get_str("ns").unwrap_or("");
        let (db, coll) = match ns.split_once('.') {
            Some((d, c)) if op != "dropDatabase" => (d, Some(c)),
            _ => (ns, None),
        };
        if !self.watches(db, coll) {
            return Ok(Vec::new());
        }
        let kind = match op {
            "i" => "insert",
            "u" => "update",
            "r" => "replace",
            "d" => "delete",
            "drop" | "rename" | "dropDatabase" => op,
            "create" | "createIndexes" | "dropIndexes" | "modify" if self.show_expanded => op,
            _ => return Ok(Vec::new()),
        };
        // dropDatabase reaches a collection stream only through the drops of its collections.
        if kind == "dropDatabase" && matches!(self.scope, Scope::Collection(..)) {
            return Ok(Vec::new());
        }
        let mut e = doc! {
            "_id": pos.token(),
            "operationType": kind,
            "clusterTime": pos.ts.to_bson(),
            "wallTime": bson::DateTime::from_millis(i64::from(pos.ts.secs()) * 1000),
        };
        let ns_doc = match coll {
            Some(c) => doc! { "db": db, "coll": c },
            None => doc! { "db": db },
        };
        if self.show_expanded
            && let Some(ui) = entry.get("ui")
        {
            e.insert("collectionUUID", ui.clone());
        }
        let key = entry.get_document("k").ok().cloned();
        match op {
            "i" => {
                let doc = entry.get_document("o").cloned().unwrap_or_default();
                e.insert("fullDocument", doc.clone());
                e.insert("ns", ns_doc);
                e.insert(
                    "documentKey",
                    doc! { "_id": doc.get("_id").cloned().unwrap_or(Bson::Null) },
                );
            }
            "u" | "r" | "d" => {
                e.insert("ns", ns_doc);
                e.insert("documentKey", key.clone().unwrap_or_default());
                if op == "u" {
                    let d = entry.get_document("d").cloned().unwrap_or_default();
                    let mut desc = doc! {
                        "updatedFields": d.get_document("u").cloned().unwrap_or_default(),
                        "removedFields": d.get_array("r").cloned().unwrap_or_default(),
                        "truncatedArrays": d.get_array("t").cloned().unwrap_or_default(),
                    };
                    if self.show_expanded {
                        desc.insert(
                            "disambiguatedPaths",
                            d.get_document("p").cloned().unwrap_or_default(),
                        );
                    }
                    e.insert("updateDescription", desc);
                }
                match (op, self.full_document) {
                    ("r", _) => {
                        e.insert(
                            "fullDocument",
                            entry.get_document("o").cloned().unwrap_or_default(),
                        );
                    }
                    ("u", Image::UpdateLookup) => {
                        let current = lookup(store, db, coll.unwrap_or(""), key.as_ref())?;
                        e.insert("fullDocument", current.map(Bson::Document).unwrap_or(Bson::Null));
                    }
                    ("u", Image::WhenAvailable | Image::Required) => {
                        let post = entry.get_document("post").ok().cloned();
                        if post.is_none() && self.full_document == Image::Required {
                            return Err(missing_image("post", pos));
                        }
                        e.insert("fullDocument", post.map(Bson::Document).unwrap_or(Bson::Null));
                    }
                    _ => {}
                }
                if matches!(self.before, Image::WhenAvailable | Image::Required) {
                    let pre = entry.get_document("pre").ok().cloned();
                    if pre.is_none() && self.before == Image::Required {
                        return Err(missing_image("pre", pos));
                    }
                    e.insert(
                        "fullDocumentBeforeChange",
                        pre.map(Bson::Document).unwrap_or(Bson::Null),
                    );
                }
            }
            "rename" => {
                e.insert("ns", ns_doc);
                let to = entry.get_str("to").unwrap_or("");
                let (tdb, tcoll) = to.split_once('.').unwrap_or((to, ""));
                e.insert("to", doc! { "db": tdb, "coll": tcoll });
                if self.show_expanded {
                    let mut desc = doc! { "to": { "db": tdb, "coll": tcoll } };
                    if let Some(uuid) = entry.get("dropTarget") {
                        desc.insert("dropTarget", uuid.clone());
                    }
                    e.insert("operationDescription", desc);
                }
            }
            "create" | "createIndexes" | "dropIndexes" | "modify" => {
                e.insert("ns", ns_doc);
                let desc = match (op, entry.get("o")) {
                    ("createIndexes" | "dropIndexes", Some(Bson::Array(a))) => {
                        doc! { "indexes": a.clone() }
                    }
                    (_, Some(Bson::Document(d))) => d.clone(),
                    _ => Document::new(),
                };
                e.insert("operationDescription", desc);
                if op == "create" {
                    e.insert("nsType", "collection");
                }
            }
            _ => {
                e.insert("ns", ns_doc);
            }
        }
        if let Some(lsid) = header.get("lsid") {
            e.insert("lsid", lsid.clone());
        }
        if let Some(n) = header.get("txnNumber") {
            e.insert("txnNumber", n.clone());
        }
        let invalidates = matches!(
            (&self.scope, op),
            (Scope::Collection(..), "drop" | "rename") | (Scope::Database(_), "dropDatabase")
        );
        let mut out = vec![(pos, e)];
        if invalidates {
            let p = Position { invalidate: 1, ..pos };
            out.push((
                p,
                doc! {
                    "_id": p.token(),
                    "operationType": "invalidate",
                    "clusterTime": pos.ts.to_bson(),
                    "wallTime": bson::DateTime::from_millis(i64::from(pos.ts.secs()) * 1000),
                },
            ));
        }
        Ok(out)
    }
}

fn missing_image(which: &str, pos: Position) -> Error {
    let (what, field) = if which == "pre" {
        ("pre-image", "fullDocumentBeforeChange")
    } else {
        ("post-image", "fullDocument")
    };
    Error::new(
        Code::NoMatchingDocument,
        format!(
            "Change stream was configured to require a {what} for all update, delete and \
             replace events, but the {what} was not found for event: {} ({field}: required)",
            pos.token()
        ),
    )
}

/// The current version of a document, for `fullDocument: updateLookup`.
fn lookup(
    store: &dyn TxnStore,
    db: &str,
    coll: &str,
    key: Option<&Document>,
) -> Result<Option<Document>> {
    let Some(key) = key else { return Ok(None) };
    let txn = store.begin()?;
    let spec = FindSpec { filter: key.clone(), limit: 1, ..FindSpec::default() };
    let found = exec::find(txn.as_ref(), db, coll, &spec);
    txn.abort();
    Ok(found?.into_iter().next())
}

fn truthy_bool(k: &str, v: &Bson) -> Result<bool> {
    match v {
        Bson::Boolean(b) => Ok(*b),
        _ => Err(err!(
            TypeMismatch,
            "BSON field '$changeStream.{}' is the wrong type, expected type 'bool'",
            k
        )),
    }
}

/// Open change-stream cursors, by cursor id.
#[derive(Default)]
pub struct StreamRegistry {
    streams: Mutex<HashMap<i64, Arc<Mutex<ChangeStream>>>>,
    /// Tailable cursors on capped collections, in the same id space.
    tails: Mutex<HashMap<i64, Arc<Mutex<CappedTail>>>>,
}

impl StreamRegistry {
    /// Registers a stream; returns its cursor id.
    pub fn open(&self, stream: ChangeStream) -> i64 {
        let mut streams = self.streams.lock();
        loop {
            let id = (rand::random::<u64>() >> 2) as i64;
            if id != 0 && !streams.contains_key(&id) && !self.tails.lock().contains_key(&id) {
                streams.insert(id, Arc::new(Mutex::new(stream)));
                return id;
            }
        }
    }

    /// Registers a tailable cursor; returns its id.
    pub fn open_tail(&self, tail: CappedTail) -> i64 {
        let streams = self.streams.lock();
        let mut tails = self.tails.lock();
        loop {
            let id = (rand::random::<u64>() >> 2) as i64;
            if id != 0 && !streams.contains_key(&id) && !tails.contains_key(&id) {
                tails.insert(id, Arc::new(Mutex::new(tail)));
                return id;
            }
        }
    }

    /// The tailable cursor with this id, if it is one.
    pub fn get_tail(&self, id: i64) -> Option<Arc<Mutex<CappedTail>>> {
        self.tails.lock().get(&id).cloned()
    }

    /// The stream with this cursor id, if it is one.
    pub fn get(&self, id: i64) -> Option<Arc<Mutex<ChangeStream>>> {
        self.streams.lock().get(&id).cloned()
    }

    /// Whether `id` is a change-stream cursor.
    pub fn contains(&self, id: i64) -> bool {
        self.streams.lock().contains_key(&id) || self.tails.lock().contains_key(&id)
    }

    /// The namespace and owner of a stream or tailable cursor (for `killCursors`' check). Waits
    /// for a `getMore` that is waiting on the cursor.
    pub fn owner(&self, id: i64) -> Option<(String, crate::cursor::Owner)> {
        if let Some(s) = self.get(id) {
            let s = s.lock();
            return Some((s.ns.clone(), s.owner.clone()));
        }
        let t = self.get_tail(id)?;
        let t = t.lock();
        Some((t.ns.clone(), t.owner.clone()))
    }

    /// Closes a stream or tailable cursor; returns whether it existed.
    pub fn kill(&self, id: i64) -> bool {
        self.streams.lock().remove(&id).is_some() || self.tails.lock().remove(&id).is_some()
    }

    /// Closes every stream and tailable cursor of a session.
    pub fn kill_session(&self, session: &[u8]) {
        self.streams.lock().retain(|_, s| s.lock().owner.session.as_deref() != Some(session));
        self.tails.lock().retain(|_, s| s.lock().owner.session.as_deref() != Some(session));
    }

    /// Closes streams idle past the cursor timeout.
    pub fn reap(&self) {
        let now = Instant::now();
        let timeout = crate::cursor::CURSOR_IDLE_TIMEOUT;
        self.streams
            .lock()
            .retain(|_, s| s.try_lock().is_none_or(|s| now.duration_since(s.last_use) < timeout));
        self.tails
            .lock()
            .retain(|_, s| s.try_lock().is_none_or(|s| now.duration_since(s.last_use) < timeout));
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.streams.lock().len() + self.tails.lock().len()
    }
}

/// A tailable cursor on a capped collection (`find` with `tailable`, optionally `awaitData`):
/// it returns the documents inserted after the last one it returned, in insertion order, and
/// stays open when there are none; with `awaitData` a `getMore` waits for a commit (the same
/// notification change streams use) up to `maxTimeMS`.
pub struct CappedTail {
    db: String,
    coll: String,
    filter: crate::query::Filter,
    projection: Option<crate::query::Projection>,
    /// The insertion number of the last document read.
    last: Option<u64>,
    await_data: bool,
    /// Who opened the cursor (its session and user).
    pub owner: crate::cursor::Owner,
    /// `db.coll`.
    pub ns: String,
    last_use: Instant,
}

impl CappedTail {
    /// Opens a tailable cursor; fails when the collection is not capped, as MongoDB does.
    pub fn open(
        txn: &dyn crate::mvcc::Txn,
        db: &str,
        coll: &str,
        filter: &Document,
        projection: Option<&Document>,
        await_data: bool,
        owner: crate::cursor::Owner,
    ) -> Result<CappedTail> {
        let capped = crate::catalog::get_collection(txn, db, coll)?
            .is_some_and(|m| exec::capped::is_capped(&m));
        if !capped {
            bail!(
                BadValue,
                "error processing query: ns={}.{} tailable cursor requested on non capped collection",
                db,
                coll
            );
        }
        Ok(CappedTail {
            db: db.to_string(),
            coll: coll.to_string(),
            filter: crate::query::Filter::parse(filter)?,
            projection: projection.map(crate::query::Projection::parse).transpose()?,
            last: None,
            await_data,
            owner,
            ns: format!("{db}.{coll}"),
            last_use: Instant::now(),
        })
    }

    /// The next matching documents (up to `batch_size`, 0: 101), waiting until `wait` for one
    /// when the cursor awaits data.
    pub fn next_batch(
        &mut self,
        store: &dyn TxnStore,
        batch_size: usize,
        wait: Option<Instant>,
    ) -> Result<Vec<Document>> {
        self.last_use = Instant::now();
        let limit = if batch_size == 0 { 101 } else { batch_size };
        loop {
            let seen = store.last_committed();
            let txn = store.begin()?;
            let docs = match crate::catalog::get_collection(txn.as_ref(), &self.db, &self.coll)? {
                Some(meta) => exec::capped::documents_after(txn.as_ref(), &meta, self.last),
                None => Ok(Vec::new()),
            };
            txn.abort();
            let mut out = Vec::new();
            for (seq, doc) in docs? {
                if out.len() >= limit {
                    break;
                }
                self.last = Some(seq);
                if self.filter.matches(&doc) {
                    out.push(match &self.projection {
                        Some(p) => p.apply(&doc, None)?,
                        None => doc,
                    });
                }
            }
            match wait {
                Some(deadline)
                    if out.is_empty() && self.await_data && Instant::now() < deadline =>
                {
                    store.wait_commit_after(seen, deadline);
                }
                _ => return Ok(out),
            }
        }
    }
}
