//! Access-path planning: which documents to fetch before the filter re-checks them.
//!
//! The planner looks at the filter's top-level `_id` predicates: an equality or `$in` becomes point
//! reads of the document keys; anything else scans the collection in `_id` order.
//! TODO(#3): secondary-index equality/range/`$in` plans, index-ordered sorts and `explain`.

use bson::Bson;

use super::{Found, get_document, id_key, scan_collection};
use crate::catalog::{CollectionMeta, keys::Key};
use crate::error::Result;
use crate::mvcc::Txn;
use crate::query::{Filter, Pred};

/// The chosen access path.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Point reads of these `_id` values.
    IdPoints(Vec<Bson>),
    /// A scan of the whole collection.
    CollectionScan,
}

/// Chooses the access path for a filter.
pub fn plan(filter: &Filter) -> Plan {
    match id_points(filter) {
        Some(ids) => Plan::IdPoints(ids),
        None => Plan::CollectionScan,
    }
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

/// Fetches the candidate documents of a plan. The caller re-checks them with the filter.
pub fn candidates(txn: &dyn Txn, meta: &CollectionMeta, filter: &Filter) -> Result<Vec<Found>> {
    match plan(filter) {
        Plan::IdPoints(ids) => {
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for id in ids {
                let key = Key::Document { coll: meta.id, id: &id_key(&id) }.encode();
                if !seen.insert(key.clone()) {
                    continue;
                }
                if let Some(doc) = get_document(txn, &key)? {
                    out.push(Found { key, doc });
                }
            }
            // Point reads come back in `_id` order, like a scan.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        }
        Plan::CollectionScan => scan_collection(txn, meta),
    }
}
