//! The storage keyspace: every key Folio writes through MVCC, as one enum.
//!
//! Keys start with a one-byte tag so each kind occupies its own contiguous range and can be scanned
//! by prefix. Names cannot contain NUL bytes (MongoDB forbids them), so a NUL separates the database
//! name from the collection name. Collection and index ids are fixed-width big-endian integers, and
//! document and index keys are order-preserving value encodings, so scans return documents in `_id`
//! order and index entries in index order.
//!
//! | tag | key | value |
//! |---|---|---|
//! | `0x01` | db `\0` collection | collection metadata (BSON) |
//! | `0x02` | collection id, encoded `_id` | the document (BSON) |
//! | `0x03` | collection id, index id, encoded index key [, encoded `_id` when not unique] | encoded `_id` |
//! | `0x04` | session id, txnNumber, stmtId | the statement's recorded outcome (BSON) |
//! | `0x05` | session id | the session's durable transaction record (BSON, `session::durable`) |
//! | `0x10` | collection id, insertion number | encoded `_id` (a capped collection's insertion order) |
//! | `0x11` | collection id | a capped collection's totals (BSON, `exec::capped`) |
//! | `0x12` | collection id, encoded `_id` | the document's insertion number (capped collections) |

use crate::storage::Layout;

/// A key in Folio's MVCC keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A collection's metadata.
    Collection {
        /// Database name.
        db: &'a str,
        /// Collection name.
        coll: &'a str,
    },
    /// A document, by collection id and encoded `_id`.
    Document {
        /// The collection id.
        coll: u64,
        /// The order-preserving encoding of `_id`.
        id: &'a [u8],
    },
    /// An index entry.
    IndexEntry {
        /// The collection id.
        coll: u64,
        /// The index id within the collection.
        index: u32,
        /// The encoded index key, followed by the encoded `_id` for non-unique indexes.
        key: &'a [u8],
    },
    /// A retryable write's recorded statement outcome.
    StmtRecord {
        /// The session key (`session::lsid_key`: the lsid's id bytes, then its owner's digest
        /// when authorization is on).
        session: &'a [u8],
        /// The transaction number.
        txn_number: i64,
        /// The statement id.
        stmt_id: i32,
    },
    /// A session's durable transaction record: its latest `txnNumber` and what became of it.
    SessionRecord {
        /// The session key (`session::lsid_key`).
        session: &'a [u8],
    },
}

const COLLECTION: u8 = 0x01;
const DOCUMENT: u8 = 0x02;
const INDEX_ENTRY: u8 = 0x03;
const STMT_RECORD: u8 = 0x04;
const SESSION_RECORD: u8 = 0x05;

impl Key<'_> {
    /// Encodes the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            Key::Collection { db, coll } => {
                out.push(COLLECTION);
                out.extend_from_slice(db.as_bytes());
                out.push(0);
                out.extend_from_slice(coll.as_bytes());
            }
            Key::Document { coll, id } => {
                out.push(DOCUMENT);
                out.extend_from_slice(&coll.to_be_bytes());
                out.extend_from_slice(id);
            }
            Key::IndexEntry { coll, index, key } => {
                out.push(INDEX_ENTRY);
                out.extend_from_slice(&coll.to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(key);
            }
            Key::StmtRecord { session, txn_number, stmt_id } => {
                out.push(STMT_RECORD);
                out.extend_from_slice(&(session.len() as u32).to_be_bytes());
                out.extend_from_slice(session);
                // Flip the sign bit so negative numbers sort first.
                out.extend_from_slice(&((*txn_number as u64) ^ (1 << 63)).to_be_bytes());
                out.extend_from_slice(&((*stmt_id as u32) ^ (1 << 31)).to_be_bytes());
            }
            Key::SessionRecord { session } => {
                out.push(SESSION_RECORD);
                out.extend_from_slice(session);
            }
        }
        out
    }
}

/// The prefix of every statement record of one session's transaction number, or of every
/// transaction number of the session when `txn_number` is None.
pub fn stmt_record_prefix(session: &[u8], txn_number: Option<i64>) -> Vec<u8> {
    let mut out = vec![STMT_RECORD];
    out.extend_from_slice(&(session.len() as u32).to_be_bytes());
    out.extend_from_slice(session);
    if let Some(n) = txn_number {
        out.extend_from_slice(&((n as u64) ^ (1 << 63)).to_be_bytes());
    }
    out
}

const CAPPED_ORDER: u8 = 0x10;
const CAPPED_STATE: u8 = 0x11;
const CAPPED_POSITION: u8 = 0x12;

/// The key of a capped collection's document inserted as number `seq`.
pub fn capped_order_key(coll: u64, seq: u64) -> Vec<u8> {
    let mut out = capped_order_prefix(coll);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The prefix of a capped collection's insertion order.
pub fn capped_order_prefix(coll: u64) -> Vec<u8> {
    let mut out = vec![CAPPED_ORDER];
    out.extend_from_slice(&coll.to_be_bytes());
    out
}

/// The insertion number of a capped-order key.
pub fn decode_capped_order_key(key: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some(u64::from_be_bytes(seq))
}

/// The key of a capped collection's totals.
pub fn capped_state_key(coll: u64) -> Vec<u8> {
    let mut out = vec![CAPPED_STATE];
    out.extend_from_slice(&coll.to_be_bytes());
    out
}

/// The key of a capped collection's document's insertion number, by encoded `_id`.
pub fn capped_position_key(coll: u64, id: &[u8]) -> Vec<u8> {
    let mut out = vec![CAPPED_POSITION];
    out.extend_from_slice(&coll.to_be_bytes());
    out.extend_from_slice(id);
    out
}

/// The prefix of every session record.
pub fn session_record_prefix() -> Vec<u8> {
    vec![SESSION_RECORD]
}

/// The session id of a session record key.
pub fn decode_session_record_key(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(&[SESSION_RECORD])
}

/// The statement id of a statement record's key (its last four bytes).
pub fn decode_stmt_record_id(key: &[u8]) -> Option<i32> {
    if key.first() != Some(&STMT_RECORD) {
        return None;
    }
    let tail = key.last_chunk::<4>()?;
    Some((u32::from_be_bytes(*tail) ^ (1 << 31)) as i32)
}

/// The prefix of all collection keys of a database (`db\0`), or of all databases when `db` is None.
pub fn collection_prefix(db: Option<&str>) -> Vec<u8> {
    let mut out = vec![COLLECTION];
    if let Some(db) = db {
        out.extend_from_slice(db.as_bytes());
        out.push(0);
    }
    out
}

/// How the redb engine spreads Folio's keys over tables: the versions of each collection's
/// documents in a table of their own, and each index's entries in one of their own; every
/// other key (collection metadata, sessions, capped collections' order, the change log,
/// metadata) in the shared table. A collection's newest document, and each index's
/// greatest entry, are then their table's last key, which an ascending insert (ObjectId
/// `_id`s, a bulk load) appends without splitting pages in two (see `storage::redb_tables`).
/// Data files record the layout's name and are brought to the layout at open when it differs:
/// the name must change whenever the tables it names do.
pub const STORAGE_LAYOUT: Layout =
    Layout { name: "collections-and-indexes", table_prefix: storage_table_prefix };

/// The length of the engine key's prefix naming its table under [`STORAGE_LAYOUT`]: the
/// encoded tag and collection id of a document's version, the tag, collection and index id of
/// an index entry's, nothing for any other key.
fn storage_table_prefix(raw: &[u8]) -> usize {
    // The tag is the user key's first byte, never zero, so never escaped.
    let user_len = match raw.get(1) {
        Some(&DOCUMENT) => 1 + 8,
        Some(&INDEX_ENTRY) => 1 + 8 + 4,
        _ => return 0,
    };
    crate::mvcc::keys::encoded_prefix_len(raw, user_len).unwrap_or(0)
}

/// The prefix of all documents of a collection.
pub fn document_prefix(coll: u64) -> Vec<u8> {
    let mut out = vec![DOCUMENT];
    out.extend_from_slice(&coll.to_be_bytes());
    out
}

/// The prefix of all entries of one index.
pub fn index_prefix(coll: u64, index: u32) -> Vec<u8> {
    let mut out = vec![INDEX_ENTRY];
    out.extend_from_slice(&coll.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// The smallest key greater than every key that starts with `prefix` (for exclusive range ends).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Splits a collection key back into `(db, coll)`.
pub fn decode_collection_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[COLLECTION])?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let db = std::str::from_utf8(&rest[..nul]).ok()?;
    let coll = std::str::from_utf8(&rest[nul + 1..]).ok()?;
    Some((db.to_string(), coll.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_layout_gives_each_collection_and_index_a_table() {
        use crate::mvcc::{Ts, keys::version_key};
        let table = |user: &[u8]| {
            let raw = version_key(user, Ts(7));
            raw[..(STORAGE_LAYOUT.table_prefix)(&raw)].to_vec()
        };
        // Collection ids are big-endian, so their zero bytes are escaped in engine keys.
        let doc = |coll, id: &[u8]| table(&Key::Document { coll, id }.encode());
        let entry = |coll, index, key: &[u8]| table(&Key::IndexEntry { coll, index, key }.encode());
        assert!(!doc(256, b"a").is_empty());
        assert_eq!(doc(256, b"a"), doc(256, b"\x00zz"));
        assert_ne!(doc(256, b"a"), doc(257, b"a"));
        assert_eq!(entry(256, 1, b"k"), entry(256, 1, b"other\x00"));
        assert_ne!(entry(256, 1, b"k"), entry(256, 2, b"k"));
        assert_ne!(entry(256, 1, b"k"), doc(256, b"k"));
        // A bound at the start of a collection's documents names the same table.
        let bound = crate::mvcc::keys::key_prefix(&document_prefix(256));
        assert_eq!(bound[..(STORAGE_LAYOUT.table_prefix)(&bound)], doc(256, b"a"));
        // Every other key is in the shared table.
        assert!(table(&Key::Collection { db: "app", coll: "orders" }.encode()).is_empty());
        assert!(table(&Key::SessionRecord { session: b"s" }.encode()).is_empty());
        assert!(table(&capped_order_key(256, 1)).is_empty());
        assert_eq!((STORAGE_LAYOUT.table_prefix)(&crate::mvcc::keys::log_key(Ts(7))), 0);
    }

    #[test]
    fn collection_keys_round_trip_and_group_by_db() {
        let k = Key::Collection { db: "app", coll: "orders" }.encode();
        assert_eq!(decode_collection_key(&k), Some(("app".into(), "orders".into())));
        assert!(k.starts_with(&collection_prefix(Some("app"))));
        assert!(!k.starts_with(&collection_prefix(Some("ap"))));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        let p = document_prefix(7);
        let inside = Key::Document { coll: 7, id: &[0xff, 0xff] }.encode();
        let next = document_prefix(8);
        assert!(inside < prefix_end(&p));
        assert!(prefix_end(&p) <= next);
    }

    #[test]
    fn stmt_record_prefixes_cover_their_records_only() {
        let rec = Key::StmtRecord { session: b"s", txn_number: 5, stmt_id: 3 }.encode();
        assert_eq!(decode_stmt_record_id(&rec), Some(3));
        let negative = Key::StmtRecord { session: b"s", txn_number: 5, stmt_id: -2 }.encode();
        assert_eq!(decode_stmt_record_id(&negative), Some(-2));
        assert_eq!(decode_stmt_record_id(&Key::SessionRecord { session: b"abcd" }.encode()), None);
        assert!(rec.starts_with(&stmt_record_prefix(b"s", Some(5))));
        assert!(rec.starts_with(&stmt_record_prefix(b"s", None)));
        assert!(!rec.starts_with(&stmt_record_prefix(b"s", Some(4))));
        // A session id that extends another is a different session (the length comes first).
        assert!(!rec.starts_with(&stmt_record_prefix(b"", None)));
        let sess = Key::SessionRecord { session: b"abc" }.encode();
        assert_eq!(decode_session_record_key(&sess), Some(&b"abc"[..]));
        assert!(sess.starts_with(&session_record_prefix()));
    }

    #[test]
    fn stmt_records_order_by_txn_number() {
        let a = Key::StmtRecord { session: b"s", txn_number: -1, stmt_id: 0 }.encode();
        let b = Key::StmtRecord { session: b"s", txn_number: 1, stmt_id: 0 }.encode();
        assert!(a < b);
    }
}
