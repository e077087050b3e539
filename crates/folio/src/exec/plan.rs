//! Access-path planning: which documents to fetch before the filter re-checks them.
//!
//! The planner looks at the filter and the collection's indexes and picks one of:
//!
//! - **`_id` points**: an `_id` equality or `$in` becomes point reads of the document keys;
//! - **an index scan**: the filter's bounds on the first field of a secondary index
//!   ([`Filter::bounds`]) become key ranges of that index; equality bounds are preferred over
//!   ranges, and ranges over nothing;
//! - **a collection scan** in `_id` order otherwise.
//!
//! An index scan also yields documents in the index's order, so a sort on exactly the index's
//! first field (in either direction) needs no sorting, and a limit can stop the scan early. Bounds
//! are always a superset of what matches: the caller re-checks every candidate with the filter, so
//! an index is only a speed-up. Sparse and partial indexes are never used, since they lack
//! entries for some documents.

use std::collections::HashSet;
use std::ops::Bound;

use bson::{Bson, Document};

use super::{Found, get_document, id_key, scan_collection};
use crate::catalog::{CollectionMeta, keys, keys::Key};
use crate::encoding::encode_key_component;
use crate::error::Result;
use crate::index::IndexSpec;
use crate::mvcc::Txn;
use crate::query::plan::Interval;
use crate::query::{Filter, Pred, SortSpec};

/// The chosen access path.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Point reads of these `_id` values.
    IdPoints(Vec<Bson>),
    /// Scans of key ranges of one index.
    IndexScan {
        /// The index's id in the collection.
        index: u32,
        /// The index's name (for `explain`).
        name: String,
        /// Encoded key ranges, in index order, each `(start inclusive, end exclusive)`.
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        /// Scan from the high end (a descending sort on an ascending index, or vice versa).
        reverse: bool,
        /// Whether the scan's order satisfies the requested sort.
        sorted: bool,
    },
    /// A scan of the whole collection.
    CollectionScan,
}

/// Chooses the access path for a filter (and optional sort) over a collection.
pub fn plan(meta: &CollectionMeta, filter: &Filter, sort: Option<&SortSpec>) -> Plan {
    if let Some(ids) = id_points(filter) {
        return Plan::IdPoints(ids);
    }
    let mut best: Option<(u8, Plan)> = None;
    for i in &meta.indexes {
        if i.name() == "_id_" {
            continue;
        }
        let Ok(spec) = IndexSpec::parse(&i.spec) else { continue };
        if spec.sparse || spec.partial_filter.is_some() || spec.hidden {
            continue;
        }
        let Some(first) = spec.fields.first() else { continue };
        // Whether scanning this index gives the requested order (one sort key on the first field).
        let order = sort.and_then(|s| match s.keys.as_slice() {
            [(path, asc)] if *path == first.path => Some(*asc != first.descending),
            _ => None,
        });
        // Multikey is assumed, which keeps the bounds a superset for array fields.
        let bounds = filter.bounds(&first.path, true);
        let (score, intervals) = match bounds {
            Some(iv) if iv.iter().all(Interval::is_point) => (3, iv),
            Some(iv) => (2, iv),
            None if order.is_some() => (1, vec![Interval::all()]),
            None => continue,
        };
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> =
            intervals.iter().map(|iv| encode_interval(iv, first.descending)).collect();
        ranges.sort();
        let reverse = order == Some(false);
        if reverse {
            ranges.reverse();
        }
        let candidate = Plan::IndexScan {
            index: i.id,
            name: i.name().to_string(),
            ranges,
            reverse,
            sorted: order.is_some(),
        };
        let score = score * 2 + u8::from(order.is_some());
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, p)| p).unwrap_or(Plan::CollectionScan)
}

/// Encodes an interval of values as a byte range of index keys whose first component lies in it.
/// Component encodings are prefix-free, so every key whose first component equals `v` starts with
/// `encode(v)` and sorts below `prefix_end(encode(v))`.
fn encode_interval(iv: &Interval, descending: bool) -> (Vec<u8>, Vec<u8>) {
    let enc = |v: &Bson| {
        let mut out = Vec::new();
        encode_key_component(v, descending, &mut out);
        out
    };
    // In a descending index the high value encodes lowest.
    let (low, high) = if descending { (&iv.high, &iv.low) } else { (&iv.low, &iv.high) };
    let start = if low.inclusive { enc(&low.value) } else { keys::prefix_end(&enc(&low.value)) };
    let end = if high.inclusive { keys::prefix_end(&enc(&high.value)) } else { enc(&high.value) };
    (start, end)
}

/// The `_id` values a filter restricts documents to, when a top-level conjunct is an `_id`
/// equality or an `$in` of plain values.
fn id_points(filter: &Filter) -> Option<Vec<Bson>> {
    match filter {
        Filter::Path { path, pred } if path == "_id" => pred_points(pred),
        Filter::And(children) => children.iter().find_map(id_points),
        _ => None,
    }
}

fn pred_points(pred: &Pred) -> Option<Vec<Bson>> {
    // An `_id` is never an array, so an array operand (which would match array elements) cannot
    // be a point; such predicates fall back to a scan.
    let plain = |v: &Bson| !matches!(v, Bson::Array(_));
    match pred {
        Pred::Eq(v) if plain(v) => Some(vec![v.clone()]),
        Pred::In(list) if list.regexes.is_empty() && list.values.iter().all(plain) => {
            Some(list.values.clone())
        }
        Pred::And(preds) => preds.iter().find_map(pred_points),
        _ => None,
    }
}

/// Fetches the documents of a plan that match the filter, stopping after `limit` matches when the
/// plan's order is final (`limit` 0: no limit). Returns the matches and whether they are already
/// in the requested sort order.
pub fn fetch(
    txn: &dyn Txn,
    meta: &CollectionMeta,
    filter: &Filter,
    sort: Option<&SortSpec>,
    limit: usize,
) -> Result<(Vec<Found>, bool)> {
    let matches = |d: &Document| filter.matches(d);
    match plan(meta, filter, sort) {
        Plan::IdPoints(ids) => {
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for id in ids {
                let key = Key::Document { coll: meta.id, id: &id_key(&id) }.encode();
                if !seen.insert(key.clone()) {
                    continue;
                }
                if let Some(doc) = get_document(txn, &key)?
                    && matches(&doc)
                {
                    out.push(Found { key, doc });
                }
            }
            // Point reads come back in `_id` order, like a scan.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok((out, false))
        }
        Plan::IndexScan { index, ranges, reverse, sorted, .. } => {
            let prefix = keys::index_prefix(meta.id, index);
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            'ranges: for (start, end) in ranges {
                let mut lo = prefix.clone();
                lo.extend_from_slice(&start);
                let mut hi = prefix.clone();
                hi.extend_from_slice(&end);
                for item in txn.scan(Bound::Included(&lo), Bound::Excluded(&hi), reverse)? {
                    let (_, id) = item?;
                    if !seen.insert(id.clone()) {
                        continue; // A multikey document appears once per distinct key.
                    }
                    let key = Key::Document { coll: meta.id, id: &id }.encode();
                    let Some(doc) = get_document(txn, &key)? else { continue };
                    if matches(&doc) {
                        out.push(Found { key, doc });
                        if sorted && limit > 0 && out.len() >= limit {
                            break 'ranges;
                        }
                    }
                }
            }
            Ok((out, sorted))
        }
        Plan::CollectionScan => {
            let mut out: Vec<Found> =
                scan_collection(txn, meta)?.into_iter().filter(|f| matches(&f.doc)).collect();
            if sort.is_none() && limit > 0 {
                out.truncate(limit);
            }
            Ok((out, false))
        }
    }
}

/// The `queryPlanner` section of `explain`: the winning plan with MongoDB's stage names
/// (`IDHACK`, `IXSCAN` under `FETCH`, `COLLSCAN`, `SORT` when the order is not the index's).
pub fn explain(meta: &CollectionMeta, filter: &Filter, sort: Option<&SortSpec>) -> Document {
    let plan = plan(meta, filter, sort);
    let (mut winning, sorted) = match &plan {
        Plan::IdPoints(_) => (bson::doc! { "stage": "IDHACK" }, false),
        Plan::IndexScan { index, name, reverse, sorted, .. } => {
            let key = meta
                .indexes
                .iter()
                .find(|i| i.id == *index)
                .and_then(|i| i.spec.get_document("key").ok().cloned())
                .unwrap_or_default();
            let ixscan = bson::doc! {
                "stage": "IXSCAN",
                "keyPattern": key,
                "indexName": name.clone(),
                "isMultiKey": true,
                "direction": if *reverse { "backward" } else { "forward" },
            };
            let mut fetch = bson::doc! { "stage": "FETCH", "inputStage": ixscan };
            if !filter.is_trivial() {
                fetch.insert("filter", filter.to_document());
            }
            (fetch, *sorted)
        }
        Plan::CollectionScan => {
            let mut scan = bson::doc! { "stage": "COLLSCAN", "direction": "forward" };
            if !filter.is_trivial() {
                scan.insert("filter", filter.to_document());
            }
            (scan, false)
        }
    };
    if let Some(sort) = sort.filter(|s| !s.is_empty() && !sorted) {
        let pattern: Document = sort
            .keys
            .iter()
            .map(|(k, asc)| (k.clone(), Bson::Int32(if *asc { 1 } else { -1 })))
            .collect();
        winning = bson::doc! { "stage": "SORT", "sortPattern": pattern, "inputStage": winning };
    }
    bson::doc! {
        "namespace": meta.namespace(),
        "parsedQuery": filter.to_document(),
        "winningPlan": winning,
        "rejectedPlans": [],
    }
}
