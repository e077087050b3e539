//! Capped collections: a size (and optionally a count) limit enforced in insertion order.
//!
//! Documents are keyed by `_id` like in any collection; a capped collection also keeps its
//! insertion order in its own key range (`catalog::keys`): `(collection, insertion number) →
//! _id` for the order, `(collection, _id) → insertion number` to find a document's place when it
//! is deleted, and one totals record `{next, count, bytes}`. Every insert updates the totals in
//! its transaction, so inserts into one capped collection are serialized by first-writer-wins (as
//! MongoDB serializes them), and after the insert the oldest documents are deleted until the
//! collection is within `size` bytes and `max` documents again; the newest document always stays.
//! Updates may change a document's size, as in MongoDB since 6.0: the excess goes at the next
//! insert. Reads without a sort return insertion order (natural order); tailable cursors follow
//! the order past the last document they returned.

use std::ops::Bound;

use bson::{Bson, Document, doc};

use super::Found;
use crate::catalog::CollectionMeta;
use crate::catalog::keys::{
    self, capped_order_key, capped_order_prefix, capped_position_key, capped_state_key,
};
use crate::error::Result;
use crate::mvcc::OrConflict;
use crate::mvcc::Txn;
use crate::{bail, err};

/// Whether the collection is capped.
pub fn is_capped(meta: &CollectionMeta) -> bool {
    matches!(meta.options.get("capped"), Some(Bson::Boolean(true)))
}

fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(d) if d.is_finite() => Some(*d as i64),
        _ => None,
    }
}

/// Checks and normalizes `create`'s capped options: `size` is required and positive (rounded up
/// to a multiple of 256, as MongoDB does), `max` is a document count (0 or negative: no limit).
pub fn normalize_options(options: &mut Document) -> Result<()> {
    let size = match options.get("size") {
        None => bail!(InvalidOptions, "the 'size' field is required when 'capped' is true"),
        Some(v) => number(Some(v)).ok_or_else(|| err!(TypeMismatch, "'size' must be a number"))?,
    };
    if size <= 0 {
        bail!(BadValue, "size must be greater than 0, found: {}", size);
    }
    if size > 1i64 << 50 {
        bail!(BadValue, "size cannot exceed 1 PB");
    }
    let rounded = (size + 255) / 256 * 256;
    options.insert("size", rounded);
    if let Some(v) = options.get("max") {
        let max = number(Some(v)).ok_or_else(|| err!(TypeMismatch, "'max' must be a number"))?;
        if max >= 1 << 31 {
            bail!(BadValue, "max in a capped collection has to be < 2^31 or not set");
        }
        options.insert("max", max);
    }
    Ok(())
}

/// The limits `(size in bytes, max documents)` of a capped collection.
fn limits(meta: &CollectionMeta) -> (i64, Option<i64>) {
    let size = number(meta.options.get("size")).unwrap_or(i64::MAX);
    let max = number(meta.options.get("max")).filter(|m| *m > 0);
    (size, max)
}

/// A capped collection's totals.
#[derive(Default)]
struct Totals {
    next: i64,
    count: i64,
    bytes: i64,
}

fn load(txn: &dyn Txn, coll: u64) -> Result<Totals> {
    Ok(match txn.get(&capped_state_key(coll))? {
        None => Totals::default(),
        Some(b) => {
            let d = crate::error::stored_document(&b, "capped collection state")?;
            Totals {
                next: d.get_i64("next").unwrap_or(0),
                count: d.get_i64("count").unwrap_or(0),
                bytes: d.get_i64("bytes").unwrap_or(0),
            }
        }
    })
}

fn store(txn: &mut dyn Txn, meta: &CollectionMeta, t: &Totals) -> Result<()> {
    let d = doc! { "next": t.next, "count": t.count, "bytes": t.bytes };
    txn.put(&capped_state_key(meta.id), &d.to_vec()?)?.or_conflict(&meta.namespace())
}

/// Records an inserted document (encoded `_id`, BSON size) at the end of the order.
pub(crate) fn inserted(
    txn: &mut dyn Txn,
    meta: &CollectionMeta,
    id: &[u8],
    size: usize,
) -> Result<()> {
    let mut t = load(txn, meta.id)?;
    let seq = t.next as u64;
    let ns = meta.namespace();
    txn.put(&capped_order_key(meta.id, seq), id)?.or_conflict(&ns)?;
    txn.put(&capped_position_key(meta.id, id), &seq.to_be_bytes())?.or_conflict(&ns)?;
    t.next += 1;
    t.count += 1;
    t.bytes += size as i64;
    store(txn, meta, &t)
}

/// Forgets a deleted document.
pub(crate) fn removed(
    txn: &mut dyn Txn,
    meta: &CollectionMeta,
    id: &[u8],
    size: usize,
) -> Result<()> {
    let ns = meta.namespace();
    let pos = capped_position_key(meta.id, id);
    if let Some(seq) = txn.get(&pos)? {
        let seq: [u8; 8] = seq
            .as_slice()
            .try_into()
            .map_err(|_| err!(InternalError, "corrupt capped position"))?;
        txn.delete(&capped_order_key(meta.id, u64::from_be_bytes(seq)))?.or_conflict(&ns)?;
        txn.delete(&pos)?.or_conflict(&ns)?;
    }
    let mut t = load(txn, meta.id)?;
    t.count = (t.count - 1).max(0);
    t.bytes = (t.bytes - size as i64).max(0);
    store(txn, meta, &t)
}

/// Accounts for an update that changed a document's size.
pub(crate) fn resized(
    txn: &mut dyn Txn,
    meta: &CollectionMeta,
    old: usize,
    new: usize,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let mut t = load(txn, meta.id)?;
    t.bytes = (t.bytes + new as i64 - old as i64).max(0);
    store(txn, meta, &t)
}

/// The oldest document to delete to bring the collection within its limits, if any (never the
/// only document left).
pub(crate) fn oldest_over_limit(txn: &dyn Txn, meta: &CollectionMeta) -> Result<Option<Vec<u8>>> {
    let (size, max) = limits(meta);
    let t = load(txn, meta.id)?;
    if t.count <= 1 || (t.bytes <= size && max.is_none_or(|m| t.count <= m)) {
        return Ok(None);
    }
    let prefix = capped_order_prefix(meta.id);
    let end = keys::prefix_end(&prefix);
    let mut it = txn.scan(Bound::Included(&prefix), Bound::Excluded(&end), false)?;
    match it.next() {
        Some(kv) => Ok(Some(kv?.1)),
        None => Ok(None),
    }
}

/// Orders found documents by insertion (natural order).
pub fn natural_order(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    found: Vec<Found>,
) -> Result<Vec<Found>> {
    let mut keyed = Vec::with_capacity(found.len());
    for f in found {
        let id = super::id_key(f.doc.get("_id").unwrap_or(&Bson::Null));
        let seq = match txn.get(&capped_position_key(meta.id, &id))? {
            Some(b) => b.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        keyed.push((seq, f));
    }
    keyed.sort_by_key(|(seq, _)| *seq);
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// The documents inserted after insertion number `after` (all with `None`), in order, with their
/// numbers: what a tailable cursor reads next.
pub fn documents_after(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    after: Option<u64>,
) -> Result<Vec<(u64, Document)>> {
    let prefix = capped_order_prefix(meta.id);
    let end = keys::prefix_end(&prefix);
    let start = match after {
        Some(seq) => capped_order_key(meta.id, seq + 1),
        None => prefix,
    };
    let mut out = Vec::new();
    for kv in txn.scan(Bound::Included(&start), Bound::Excluded(&end), false)? {
        let (k, id) = kv?;
        let Some(seq) = keys::decode_capped_order_key(&k) else { continue };
        let key = crate::catalog::keys::Key::Document { coll: meta.id, id: &id }.encode();
        if let Some(doc) = super::get_document(txn, &key)? {
            out.push((seq, doc));
        }
    }
    Ok(out)
}
