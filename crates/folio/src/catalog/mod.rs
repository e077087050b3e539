//! The catalog: databases, collections and their indexes, stored in the MVCC keyspace.
//!
//! Collection metadata lives under [`keys::Key::Collection`] and is read and written through the
//! same transaction as the data, so DDL is transactional: a collection created inside a
//! multi-document transaction exists for that transaction at once and for everyone else only when
//! it commits, and two transactions that create the same collection conflict like any other write.
//!
//! A database exists while it has collections (as in MongoDB); there is no separate database record.
//! Each collection gets a random 64-bit id at creation. Its documents and index entries are keyed by
//! that id, never by name, so `renameCollection` rewrites one metadata key and a dropped collection's
//! id is never reused.

pub mod keys;

use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use bson::{Bson, Document, doc};

use crate::error::Result;
use crate::index::spec::IndexSpec;
use crate::mvcc::OrConflict;
use crate::mvcc::Txn;
use crate::{bail, err};

use keys::Key;

/// Maximum length of `db.collection`, as MongoDB enforces.
const MAX_NAMESPACE_LEN: usize = 255;
/// Maximum length of a database name.
const MAX_DB_NAME_LEN: usize = 63;

/// One index of a collection, as stored in the catalog.
#[derive(Clone, Debug)]
pub struct IndexMeta {
    /// The id that keys this index's entries.
    pub id: u32,
    /// The index specification as `listIndexes` returns it (`v`, `key`, `name`, options).
    /// Private so that it changes only through [`IndexMeta::spec_mut`], which forgets the
    /// parsed form.
    spec: Document,
    /// The parsed specification, made at the first [`IndexMeta::parsed`]: metadata read through
    /// [`get_collection`] is shared per thread while its stored bytes are unchanged, so every
    /// statement on the collection reuses one parse (`None` inside: the spec does not parse).
    parsed: OnceLock<Option<Arc<IndexSpec>>>,
    /// The plan summary of a scan of this index (`IXSCAN { a: 1 }`), made at the first
    /// [`IndexMeta::scan_summary`] and shared like `parsed`: every operation records its plan.
    summary: OnceLock<String>,
}

impl IndexMeta {
    /// An index's metadata.
    pub fn new(id: u32, spec: Document) -> IndexMeta {
        IndexMeta { id, spec, parsed: OnceLock::new(), summary: OnceLock::new() }
    }

    /// The index specification as `listIndexes` returns it.
    pub fn spec(&self) -> &Document {
        &self.spec
    }

    /// The index name.
    pub fn name(&self) -> &str {
        self.spec.get_str("name").unwrap_or("")
    }

    /// The specification, parsed once.
    pub fn parsed(&self) -> Result<Arc<IndexSpec>> {
        match self.parsed.get_or_init(|| IndexSpec::parse(&self.spec).ok().map(Arc::new)) {
            Some(spec) => Ok(Arc::clone(spec)),
            // Parsed again for its error; stored specs were valid when written, so this is rare.
            None => IndexSpec::parse(&self.spec).map(Arc::new),
        }
    }

    /// MongoDB's plan summary of a scan of this index: `IXSCAN { a: 1, b: -1 }`.
    pub fn scan_summary(&self) -> &str {
        self.summary.get_or_init(|| {
            let key = self
                .spec
                .get_document("key")
                .map(|k| {
                    k.iter()
                        .map(|(f, v)| format!("{f}: {}", crate::index::fmt::format_value(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!("IXSCAN {{ {key} }}")
        })
    }

    /// The specification to change in place; its parsed form is made anew when next asked for.
    pub fn spec_mut(&mut self) -> &mut Document {
        self.parsed = OnceLock::new();
        self.summary = OnceLock::new();
        &mut self.spec
    }
}

/// Equal when the stored parts are; the parsed form is a cache.
impl PartialEq for IndexMeta {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.spec == other.spec
    }
}

/// `db.coll`, joined without the formatter: every command and every change-log entry makes one.
pub fn join_namespace(db: &str, coll: &str) -> String {
    let mut ns = String::with_capacity(db.len() + 1 + coll.len());
    ns.push_str(db);
    ns.push('.');
    ns.push_str(coll);
    ns
}

/// A collection's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionMeta {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub name: String,
    /// The id that keys the collection's documents and index entries.
    pub id: u64,
    /// The collection UUID reported by `listCollections`.
    pub uuid: bson::Uuid,
    /// Options given at creation or by `collMod` (validator, validationLevel, viewOn, ...).
    pub options: Document,
    /// The indexes, `_id_` first.
    pub indexes: Vec<IndexMeta>,
    /// The id the next index gets.
    pub next_index_id: u32,
}

impl CollectionMeta {
    /// `db.name`.
    pub fn namespace(&self) -> String {
        join_namespace(&self.db, &self.name)
    }

    /// Whether this is a view (`viewOn` option).
    pub fn is_view(&self) -> bool {
        self.options.contains_key("viewOn")
    }

    /// Finds an index by name.
    pub fn index(&self, name: &str) -> Option<&IndexMeta> {
        self.indexes.iter().find(|i| i.name() == name)
    }

    fn to_document(&self) -> Document {
        let indexes: Vec<Bson> = self
            .indexes
            .iter()
            .map(|i| Bson::Document(doc! { "id": i64::from(i.id), "spec": i.spec.clone() }))
            .collect();
        doc! {
            "id": self.id as i64,
            "uuid": self.uuid,
            "options": self.options.clone(),
            "indexes": indexes,
            "nextIndexId": i64::from(self.next_index_id),
        }
    }

    fn from_document(db: &str, name: &str, d: &Document) -> Result<Self> {
        let corrupt = || err!(InternalError, "corrupt catalog entry for {db}.{name}");
        let id = d.get_i64("id").map_err(|_| corrupt())? as u64;
        let uuid = match d.get("uuid") {
            Some(Bson::Binary(b)) => b.to_uuid().map_err(|_| corrupt())?,
            _ => return Err(corrupt()),
        };
        let options = d.get_document("options").map_err(|_| corrupt())?.clone();
        let mut indexes = Vec::new();
        for i in d.get_array("indexes").map_err(|_| corrupt())? {
            let Bson::Document(i) = i else { return Err(corrupt()) };
            let id = i.get_i64("id").map_err(|_| corrupt())? as u32;
            let spec = i.get_document("spec").map_err(|_| corrupt())?.clone();
            indexes.push(IndexMeta::new(id, spec));
        }
        let next_index_id = d.get_i64("nextIndexId").map_err(|_| corrupt())? as u32;
        Ok(CollectionMeta {
            db: db.to_string(),
            name: name.to_string(),
            id,
            uuid,
            options,
            indexes,
            next_index_id,
        })
    }
}

/// Checks a database name against MongoDB's rules.
pub fn validate_db_name(db: &str) -> Result<()> {
    if db.is_empty() {
        bail!(InvalidNamespace, "Invalid empty database name");
    }
    if db.len() > MAX_DB_NAME_LEN {
        bail!(InvalidNamespace, "db name is too long: '{db}'");
    }
    if let Some(c) = db.chars().find(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0')) {
        bail!(InvalidNamespace, "Invalid database name: '{db}' (contains '{c}')");
    }
    Ok(())
}

/// Checks a collection name against MongoDB's rules.
pub fn validate_collection_name(db: &str, coll: &str) -> Result<()> {
    validate_db_name(db)?;
    if coll.is_empty() {
        bail!(InvalidNamespace, "Invalid namespace specified '{db}.'");
    }
    if coll.contains('\0') || coll.contains('$') || coll.starts_with('.') {
        bail!(InvalidNamespace, "Invalid collection name: {coll}");
    }
    if db.len() + 1 + coll.len() > MAX_NAMESPACE_LEN {
        bail!(InvalidNamespace, "Fully qualified namespace is too long. Namespace: {db}.{coll}");
    }
    Ok(())
}

/// Reads a collection's metadata as the transaction sees it. Shared: the same stored bytes give
/// the same `Arc` on one thread, with the parsed index specifications it has gathered; change a
/// copy (`Arc::unwrap_or_clone`).
pub fn get_collection(txn: &dyn Txn, db: &str, coll: &str) -> Result<Option<Arc<CollectionMeta>>> {
    let key = Key::Collection { db, coll }.encode();
    let Some(bytes) = txn.get(&key)? else { return Ok(None) };
    if let Some(meta) = parsed::lookup(&key, &bytes) {
        return Ok(Some(meta));
    }
    let d = crate::error::stored_document(&bytes, "collection metadata")?;
    let meta = Arc::new(CollectionMeta::from_document(db, coll, &d)?);
    parsed::remember(key, bytes, &meta);
    Ok(Some(meta))
}

/// Parsed collection metadata, remembered per thread.
///
/// Every statement reads its collection's metadata through its own transaction (DDL is
/// transactional, so there is no other correct source), and decoding and parsing the stored
/// document cost more than the rest of a point read. The stored bytes are still read through
/// the transaction, so what a statement sees is exactly its snapshot's version; only the parse
/// is skipped when the bytes are the ones parsed last time for that key. The parse is a pure
/// function of the key (which names the database and collection) and the bytes, so an entry can
/// never be stale: a changed collection has other bytes and misses. Per thread, so lookups take
/// no lock; bounded, so a workload over many collections cannot grow it without limit.
mod parsed {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::CollectionMeta;

    /// Entries kept per thread; past it the map starts over (a rare event: it takes this many
    /// collections in use by one thread).
    const CAPACITY: usize = 256;

    /// Metadata key → (the stored bytes, what they parsed to).
    type Parsed = HashMap<Vec<u8>, (Vec<u8>, Arc<CollectionMeta>)>;

    thread_local! {
        static PARSED: RefCell<Parsed> = RefCell::new(HashMap::new());
    }

    /// The metadata parsed from `bytes` under `key`, if this thread parsed exactly those bytes.
    pub(super) fn lookup(key: &[u8], bytes: &[u8]) -> Option<Arc<CollectionMeta>> {
        PARSED.with(|p| match p.borrow().get(key) {
            Some((stored, meta)) if stored[..] == *bytes => Some(Arc::clone(meta)),
            _ => None,
        })
    }

    /// Remembers what `bytes` under `key` parsed to.
    pub(super) fn remember(key: Vec<u8>, bytes: Vec<u8>, meta: &Arc<CollectionMeta>) {
        PARSED.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() >= CAPACITY && !p.contains_key(&key) {
                p.clear();
            }
            p.insert(key, (bytes, Arc::clone(meta)));
        });
    }
}

/// Writes a collection's metadata (creation, index changes, collMod).
pub fn put_collection(txn: &mut dyn Txn, meta: &CollectionMeta) -> Result<()> {
    let key = Key::Collection { db: &meta.db, coll: &meta.name }.encode();
    let value = meta.to_document().to_vec()?;
    txn.put(&key, &value)?.or_conflict(&meta.namespace())
}

/// Removes a collection's metadata (not its data; see `exec::drop_collection`).
pub fn delete_collection(txn: &mut dyn Txn, meta: &CollectionMeta) -> Result<()> {
    let key = Key::Collection { db: &meta.db, coll: &meta.name }.encode();
    txn.delete(&key)?.or_conflict(&meta.namespace())
}

/// Builds the metadata of a new collection with its `_id_` index (not yet stored).
pub fn new_collection(db: &str, coll: &str, options: Document) -> Result<CollectionMeta> {
    validate_collection_name(db, coll)?;
    let mut indexes = Vec::new();
    let is_view = options.contains_key("viewOn");
    if !is_view {
        indexes.push(IndexMeta::new(1, doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }));
    }
    Ok(CollectionMeta {
        db: db.to_string(),
        name: coll.to_string(),
        // Random ids: a shared counter would make every pair of concurrent creates conflict.
        id: rand::random::<u64>() >> 1,
        uuid: bson::Uuid::new(),
        options,
        indexes,
        next_index_id: 2,
    })
}

/// Lists the collections of a database (or of all databases), in name order.
pub fn list_collections(txn: &dyn Txn, db: Option<&str>) -> Result<Vec<CollectionMeta>> {
    let prefix = keys::collection_prefix(db);
    let end = keys::prefix_end(&prefix);
    let mut out = Vec::new();
    for item in txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)? {
        let (key, value) = item?;
        let Some((db, coll)) = keys::decode_collection_key(&key) else {
            bail!(InternalError, "corrupt catalog key");
        };
        let d = crate::error::stored_document(&value, "collection metadata")?;
        out.push(CollectionMeta::from_document(&db, &coll, &d)?);
    }
    Ok(out)
}

/// Lists the names of the databases that have at least one collection, sorted.
pub fn list_databases(txn: &dyn Txn) -> Result<Vec<String>> {
    let mut names: Vec<String> = list_collections(txn, None)?.into_iter().map(|c| c.db).collect();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed specification is a cache of the stored one: a change through `spec_mut` parses
    /// again, also in a copy, so a changed index is never planned or maintained by its old form.
    #[test]
    fn a_changed_or_copied_index_spec_is_parsed_again() {
        let mut index =
            IndexMeta::new(2, doc! { "v": 2, "key": { "a": 1 }, "name": "a_1", "hidden": false });
        assert!(!index.parsed().unwrap().hidden);
        assert!(Arc::ptr_eq(&index.parsed().unwrap(), &index.parsed().unwrap()));

        index.spec_mut().insert("hidden", true);
        assert!(index.parsed().unwrap().hidden);

        let mut copy = index.clone();
        copy.spec_mut().insert("hidden", false);
        assert!(!copy.parsed().unwrap().hidden);
        assert!(index.parsed().unwrap().hidden);

        let bad = IndexMeta::new(3, doc! { "v": 2, "key": { "a": "nope" }, "name": "bad" });
        assert!(bad.parsed().is_err());
    }
}
