//! The redb engine's tables: which table holds a key, and reads and writes across tables.
//!
//! # Why more than one table
//!
//! A redb table is one copy-on-write B-tree. With every key in one table, a collection's newest
//! document sits in the middle of the tree (other collections' documents, every index and the
//! session records come after it), and redb inserts such a key by rebuilding its leaf, splitting
//! a full leaf in two halves and rebuilding the parent branch. An ascending load (ObjectId
//! `_id`s, a bulk insert) then leaves half-full leaves behind it and splits every few keys.
//! redb has a fast path for a key past every key of its table: the full leaf stays packed and
//! the key starts a new one. So the engine keeps one table per prefix a [`Layout`] names (Folio's
//! names one per collection's documents and one per index), and every other key in the shared
//! table: each collection's and each index's newest key is then its table's last, and a lookup
//! descends a tree of that collection's keys only.
//!
//! # One keyspace still
//!
//! The engine's interface is unchanged: one ordered keyspace. A key's table is found from the
//! key alone ([`Layout::table_prefix`]), so a get opens one table. A scan whose two bounds lie in
//! one table's prefix reads that table; any other scan merges, in key order, the shared table's
//! range with the ranges of every table whose prefix the bounds may reach, opened one after the
//! other (their key ranges are disjoint and ordered, and the shared table holds no key inside
//! them). A table that a flush empties is deleted, so that dropped collections leave no tables
//! for wide scans to open.
//!
//! # Layout changes
//!
//! The file records the name of the layout it was written under (files from before layouts
//! have one table and none). Opening it under another layout moves every key to the table the
//! new layout names, in the same transaction that replays the write-ahead log, before anything
//! reads it. (A build from before layouts reads only the shared table: it must not open a file
//! written under a layout that spreads keys.)

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableError, WriteTransaction};

use super::Layout;
use crate::error::{Error, Result};

/// The shared table: every key no other table takes (all keys under [`Layout::SINGLE`]).
const SHARED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("folio");

/// The engine's own records: the layout the file was written under.
const META: TableDefinition<&str, &str> = TableDefinition::new("folio_meta");

/// [`META`]'s key of the layout's name.
const LAYOUT_KEY: &str = "layout";

/// The name of a prefix's table: this, then the prefix in hexadecimal.
const TABLE_NAME_PREFIX: &str = "t:";

/// A read view of one table.
pub(super) type ReadView = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A table as a snapshot holds it.
pub(super) struct TableView {
    /// The table.
    pub table: ReadView,
    /// Its greatest key (`None` when it is empty): a lookup past it needs no descent, and a
    /// table's new keys are most often past it (an insert's check that its `_id` is new).
    pub last: Option<Vec<u8>>,
}

impl TableView {
    fn new(table: ReadView) -> Result<TableView> {
        let last = table.last().map_err(|e| internal("last", e))?.map(|(k, _)| k.value().to_vec());
        Ok(TableView { table, last })
    }

    /// Whether the table may hold keys at or after `key`.
    pub fn reaches(&self, key: &[u8]) -> bool {
        self.last.as_deref().is_some_and(|last| key <= last)
    }
}

/// An owned iterator over stored pairs.
pub(super) type StoredIter = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;

/// Turns any redb error into an internal error naming what failed.
pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(crate::error::Code::InternalError, format!("storage: {what}: {e}"))
}

/// The name of the table holding the keys that start with `prefix`.
fn table_name(prefix: &[u8]) -> String {
    format!("{TABLE_NAME_PREFIX}{}", hex::encode(prefix))
}

/// The prefix whose table has this name (`None` for any other table).
fn prefix_of(name: &str) -> Option<Vec<u8>> {
    hex::decode(name.strip_prefix(TABLE_NAME_PREFIX)?).ok().filter(|p| !p.is_empty())
}

/// The prefix of `key`'s table (empty for the shared table).
pub(super) fn prefix<'k>(layout: &Layout, key: &'k [u8]) -> &'k [u8] {
    &key[..(layout.table_prefix)(key).min(key.len())]
}

/// The prefixes of the tables a write transaction sees.
fn list_prefixes(txn: &WriteTransaction) -> Result<BTreeSet<Vec<u8>>> {
    use redb::TableHandle;
    Ok(txn
        .list_tables()
        .map_err(|e| internal("list tables", e))?
        .filter_map(|t| prefix_of(t.name()))
        .collect())
}

/// A table open for writing.
type WriteView<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Opens the table of `prefix` (creating it) in a write transaction.
fn open_mut<'t>(txn: &'t WriteTransaction, prefix: &[u8]) -> Result<WriteView<'t>> {
    let opened = if prefix.is_empty() {
        txn.open_table(SHARED)
    } else {
        txn.open_table(TableDefinition::new(&table_name(prefix)))
    };
    opened.map_err(|e| internal("open table", e))
}

/// Deletes the table of `prefix` in a write transaction.
fn delete_table(txn: &WriteTransaction, prefix: &[u8]) -> Result<()> {
    let name = table_name(prefix);
    let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
    txn.delete_table(definition).map(drop).map_err(|e| internal("delete table", e))
}

/// What a write transaction did to the set of tables.
#[derive(Debug, Default)]
pub(super) struct TableChanges {
    /// Whether it wrote anything.
    pub wrote: bool,
    /// The prefixes of the tables it created.
    pub created: Vec<Vec<u8>>,
    /// The prefixes of the tables it emptied and deleted.
    pub deleted: Vec<Vec<u8>>,
}

impl TableChanges {
    /// Applies the changes to a set of table prefixes.
    pub fn update(&self, known: &mut BTreeSet<Vec<u8>>) {
        known.extend(self.created.iter().cloned());
        for p in &self.deleted {
            known.remove(p);
        }
    }
}

/// Writes `writes` (a value, or `None` to delete) into the tables `layout` names, in `txn`.
/// `known` holds the prefixes of the tables that exist before it: a deletion needs no table
/// that does not exist. A table emptied by deletions is deleted.
pub(super) fn write_all<'a>(
    txn: &WriteTransaction,
    layout: &Layout,
    known: &BTreeSet<Vec<u8>>,
    writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<TableChanges> {
    let mut changes = TableChanges::default();
    // Each table opened once, with whether anything was deleted from it.
    let mut open: foldhash::HashMap<&'a [u8], (WriteView<'_>, bool)> = Default::default();
    for (key, value) in writes {
        changes.wrote = true;
        let prefix = prefix(layout, key);
        if !open.contains_key(prefix) {
            let exists = prefix.is_empty() || known.contains(prefix);
            if value.is_none() && !exists {
                // Its table does not exist, so neither does the key.
                continue;
            }
            if !exists {
                changes.created.push(prefix.to_vec());
            }
            open.insert(prefix, (open_mut(txn, prefix)?, false));
        }
        if let Some((table, deleted)) = open.get_mut(prefix) {
            match value {
                Some(v) => table.insert(key, v).map(drop).map_err(|e| internal("put", e))?,
                None => {
                    table.remove(key).map(drop).map_err(|e| internal("delete", e))?;
                    *deleted = true;
                }
            }
        }
    }
    for (prefix, (table, deleted)) in open {
        if deleted && !prefix.is_empty() && table.is_empty().map_err(|e| internal("len", e))? {
            drop(table);
            delete_table(txn, prefix)?;
            changes.deleted.push(prefix.to_vec());
        }
    }
    Ok(changes)
}

/// Brings a file to `layout` in `txn`: if it was written under another layout (or before
/// layouts), moves every key whose table differs to the one `layout` names, deletes the tables
/// left empty and records the layout. Returns the prefixes of the tables that then exist.
pub(super) fn relayout(txn: &WriteTransaction, layout: &Layout) -> Result<BTreeSet<Vec<u8>>> {
    let recorded = {
        let meta = txn.open_table(META).map_err(|e| internal("open table", e))?;
        meta.get(LAYOUT_KEY).map_err(|e| internal("get", e))?.map(|v| v.value().to_string())
    };
    // Creates the shared table up front, so that readers never find it missing.
    drop(open_mut(txn, &[])?);
    let mut known = list_prefixes(txn)?;
    if recorded.as_deref() == Some(layout.name) {
        return Ok(known);
    }
    let sources: Vec<Vec<u8>> = std::iter::once(Vec::new()).chain(known.iter().cloned()).collect();
    for source in sources {
        move_misplaced(txn, layout, &mut known, &source)?;
    }
    let mut meta = txn.open_table(META).map_err(|e| internal("open table", e))?;
    meta.insert(LAYOUT_KEY, layout.name).map_err(|e| internal("put", e))?;
    Ok(known)
}

/// Moves the keys of `source`'s table that `layout` places elsewhere, a batch at a time (at
/// most [`MOVE_BATCH`] keys or [`MOVE_BATCH_BYTES`], so that a large file's move does not hold
/// it all in memory).
fn move_misplaced(
    txn: &WriteTransaction,
    layout: &Layout,
    known: &mut BTreeSet<Vec<u8>>,
    source: &[u8],
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (moving, done) = {
            let table = open_mut(txn, source)?;
            let lower = match &after {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => Bound::Unbounded,
            };
            let mut moving: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut bytes = 0;
            let mut done = true;
            for item in
                table.range::<&[u8]>((lower, Bound::Unbounded)).map_err(|e| internal("scan", e))?
            {
                let (k, v) = item.map_err(|e| internal("scan", e))?;
                let key = k.value();
                if prefix(layout, key) != source {
                    bytes += key.len() + v.value().len();
                    moving.push((key.to_vec(), v.value().to_vec()));
                    if moving.len() >= MOVE_BATCH || bytes >= MOVE_BATCH_BYTES {
                        // The next batch starts after this key, which is moved now; the keys
                        // before it that stay are not read again.
                        after = Some(key.to_vec());
                        done = false;
                        break;
                    }
                }
            }
            (moving, done)
        };
        if !moving.is_empty() {
            remove_from(txn, source, &moving)?;
            let puts = moving.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice())));
            write_all(txn, layout, known, puts)?.update(known);
        }
        if done {
            break;
        }
    }
    if !source.is_empty() {
        let empty = open_mut(txn, source)?.is_empty().map_err(|e| internal("len", e))?;
        if empty {
            delete_table(txn, source)?;
            known.remove(source);
        }
    }
    Ok(())
}

/// The most keys one batch of a layout change moves (few in tests, so that they meet several).
const MOVE_BATCH: usize = if cfg!(test) { 100 } else { 4096 };
/// The most bytes of keys and values one batch of a layout change moves.
const MOVE_BATCH_BYTES: usize = 16 << 20;

/// Removes `pairs`' keys from `source`'s table.
fn remove_from(txn: &WriteTransaction, source: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let mut table = open_mut(txn, source)?;
    for (k, _) in pairs {
        table.remove(k.as_slice()).map_err(|e| internal("delete", e))?;
    }
    Ok(())
}

/// One read transaction and the tables opened in it so far: every read until the next commit
/// shares it (opening a table costs more than a lookup in it).
pub(super) struct Snapshot {
    txn: redb::ReadTransaction,
    shared: Arc<TableView>,
    tables: Mutex<foldhash::HashMap<Vec<u8>, Option<Arc<TableView>>>>,
}

impl Snapshot {
    /// A snapshot of everything committed so far.
    pub fn open(db: &redb::Database) -> Result<Snapshot> {
        use redb::ReadableDatabase;
        let txn = db.begin_read().map_err(|e| internal("begin read", e))?;
        let shared = txn.open_table(SHARED).map_err(|e| internal("open table", e))?;
        let shared = Arc::new(TableView::new(shared)?);
        Ok(Snapshot { txn, shared, tables: Mutex::new(foldhash::HashMap::default()) })
    }

    /// The table of `prefix`, `None` if it does not exist in this snapshot.
    pub fn table(&self, prefix: &[u8]) -> Result<Option<Arc<TableView>>> {
        if prefix.is_empty() {
            return Ok(Some(Arc::clone(&self.shared)));
        }
        if let Some(table) = self.tables.lock().get(prefix) {
            return Ok(table.clone());
        }
        let table = match self.txn.open_table(TableDefinition::new(&table_name(prefix))) {
            Ok(t) => Some(Arc::new(TableView::new(t)?)),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(internal("open table", e)),
        };
        self.tables.lock().insert(prefix.to_vec(), table.clone());
        Ok(table)
    }

    /// The number of keys and their stored bytes, over the shared table and `prefixes`'.
    pub fn totals(&self, prefixes: &BTreeSet<Vec<u8>>) -> Result<(u64, u64)> {
        let (mut keys, mut bytes) = (0, 0);
        for p in std::iter::once(&Vec::new()).chain(prefixes) {
            if let Some(t) = self.table(p)? {
                keys += t.table.len().map_err(|e| internal("len", e))?;
                bytes += t.table.stats().map_err(|e| internal("stats", e))?.stored_bytes();
            }
        }
        Ok((keys, bytes))
    }
}

/// Which tables a range reads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// One table: the one whose prefix is the start bound's first `n` bytes (the shared table
    /// for 0).
    One(usize),
    /// The shared table and these tables, in key order.
    Many(Vec<Vec<u8>>),
}

/// The tables that may hold keys of the range: when both bounds start with one table's
/// prefix, every key between them does too; otherwise every known table whose keys may lie in
/// the range, with the shared table.
pub(super) fn route(
    layout: &Layout,
    known: &BTreeSet<Vec<u8>>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
) -> Route {
    let (s, e) = (bound_key(start), bound_key(end));
    if let (Some(s), Some(e)) = (s, e) {
        let n = prefix(layout, s).len();
        if n > 0 && e.starts_with(&s[..n]) {
            return Route::One(n);
        }
    }
    // The table holding the start key, if any, then every one whose prefix lies in the range.
    let from = match s {
        Some(s) => known.range::<[u8], _>((Bound::Unbounded, Bound::Included(s))).next_back(),
        None => None,
    };
    let from: Bound<&[u8]> = match from {
        // Its keys reach the range when the start key is one of them (or lies before them).
        Some(p) if s.is_some_and(|s| s.starts_with(p)) => Bound::Included(p),
        _ => match s {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        },
    };
    let to: Bound<&[u8]> = match e {
        Some(e) => Bound::Included(e),
        None => Bound::Unbounded,
    };
    if crate::storage::range_is_empty(from, to) {
        return Route::One(0);
    }
    let tables: Vec<Vec<u8>> = known.range::<[u8], _>((from, to)).cloned().collect();
    if tables.is_empty() { Route::One(0) } else { Route::Many(tables) }
}

/// The stored pairs of a range (redb's, without the pending writes) from one snapshot, read
/// from the tables `route` names.
pub(super) fn stored_range(
    snapshot: Arc<Snapshot>,
    route: Route,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
) -> Result<StoredIter> {
    match route {
        Route::One(n) => {
            let prefix = bound_key(start).map_or(&[][..], |k| &k[..n]);
            match snapshot.table(prefix)? {
                Some(table) => table_range(&table.table, start, end, reverse),
                None => Ok(Box::new(std::iter::empty())),
            }
        }
        Route::Many(tables) => merged_range(snapshot, tables, start, end, reverse),
    }
}

/// The key of a bound, if it has one.
fn bound_key(b: Bound<&[u8]>) -> Option<&[u8]> {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => Some(k),
        Bound::Unbounded => None,
    }
}

/// A table's range as owned pairs.
fn table_range(
    table: &ReadView,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
) -> Result<StoredIter> {
    let range = table.range::<&[u8]>((start, end)).map_err(|e| internal("scan", e))?;
    let map = |item: std::result::Result<_, redb::StorageError>| {
        let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
            item.map_err(|e| internal("scan", e))?;
        Ok((k.value().to_vec(), v.value().to_vec()))
    };
    // The range keeps its read transaction alive on its own; it borrows nothing.
    if reverse { Ok(Box::new(range.rev().map(map))) } else { Ok(Box::new(range.map(map))) }
}

/// A range over the shared table and `tables` (in key order), merged in scan order. The
/// tables are opened one after the other as the scan reaches them.
fn merged_range(
    snapshot: Arc<Snapshot>,
    mut tables: Vec<Vec<u8>>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
) -> Result<StoredIter> {
    let shared = table_range(&snapshot.shared.table, start, end, reverse)?;
    if reverse {
        tables.reverse();
    }
    let chain = Chain {
        snapshot,
        tables: tables.into_iter(),
        start: super::owned_bound(start),
        end: super::owned_bound(end),
        reverse,
        current: None,
    };
    Ok(Box::new(Interleave { a: shared.peekable(), b: chain.peekable(), reverse }))
}

/// The ranges of several tables, one after the other.
struct Chain {
    snapshot: Arc<Snapshot>,
    tables: std::vec::IntoIter<Vec<u8>>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
    current: Option<StoredIter>,
}

impl Iterator for Chain {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            let prefix = self.tables.next()?;
            let opened = self.snapshot.table(&prefix).and_then(|table| match table {
                Some(t) => table_range(
                    &t.table,
                    self.start.as_ref().map(Vec::as_slice),
                    self.end.as_ref().map(Vec::as_slice),
                    self.reverse,
                )
                .map(Some),
                // Not in this snapshot: created since.
                None => Ok(None),
            });
            match opened {
                Ok(range) => self.current = range,
                Err(e) => {
                    self.tables = Vec::new().into_iter();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Two ordered sources of distinct keys merged in scan order (an error comes first).
struct Interleave<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    reverse: bool,
}

impl<A, B> Iterator for Interleave<A, B>
where
    A: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    B: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
{
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => true,
            (_, Some(Err(_))) | (None, Some(_)) => false,
            (Some(Ok((x, _))), Some(Ok((y, _)))) => (x < y) != self.reverse,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}
