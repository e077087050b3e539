//! Collection statistics for `$collStats` and `$indexStats`: the document count and the bytes
//! of documents and index entries, read at the transaction's snapshot.

use std::ops::Bound;

use crate::agg::stats::{CollectionStats, IndexStats, Namespace};
use crate::catalog::{self, keys};
use crate::error::Result;
use crate::mvcc::Txn;

/// Counts and measures `db.coll` (a full scan of its documents and index entries).
pub fn namespace_stats(txn: &dyn Txn, db: &str, coll: &str) -> Result<Namespace> {
    let Some(meta) = catalog::get_collection(txn, db, coll)? else {
        return Ok(Namespace::Missing);
    };
    if meta.is_view() {
        return Ok(Namespace::View);
    }
    let (count, size, id_keys) = range_size(txn, &keys::document_prefix(meta.id))?;
    let mut indexes = Vec::with_capacity(meta.indexes.len());
    for index in &meta.indexes {
        // The `_id` index is the documents' own keys (see `catalog::keys`).
        let bytes = if index.name() == "_id_" {
            id_keys
        } else {
            let (_, values, keys) = range_size(txn, &keys::index_prefix(meta.id, index.id))?;
            values + keys
        };
        indexes.push(IndexStats { spec: index.spec().clone(), size: bytes });
    }
    let capped = meta.options.get_bool("capped").unwrap_or(false);
    Ok(Namespace::Collection(CollectionStats { count, size, capped, indexes }))
}

/// The number of entries under `prefix`, the bytes of their values and of their keys.
fn range_size(txn: &dyn Txn, prefix: &[u8]) -> Result<(u64, u64, u64)> {
    let end = keys::prefix_end(prefix);
    let (mut n, mut values, mut keys) = (0u64, 0u64, 0u64);
    for item in txn.scan(Bound::Included(prefix), Bound::Excluded(&end), false)? {
        let (key, value) = item?;
        n += 1;
        values += value.len() as u64;
        keys += key.len() as u64;
    }
    Ok((n, values, keys))
}
