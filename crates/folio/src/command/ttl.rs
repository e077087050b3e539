//! The TTL monitor: deletes documents whose TTL index says they expired.
//!
//! As MongoDB's TTL monitor does, a background pass runs every `ttlMonitorSleepSecs` (60 by
//! default; `--setParameter ttlMonitorSleepSecs=N`, or `ttlMonitorEnabled=false` to stop it).
//! For each collection and each index with `expireAfterSeconds` on a single field, it deletes the
//! documents whose field holds a date older than `now - expireAfterSeconds`; for an array of
//! dates the earliest counts, which is what `{field: {$lt: cutoff}}` matches, so the pass is that
//! delete. Documents whose field is missing or holds no date never expire. Each index's deletions
//! commit in bounded batches of ordinary writes (maintaining every index and appearing in change
//! streams as deletes); a batch that meets a transaction in progress is skipped and retried by
//! the next pass. `ttlMonitorEnabled` and `ttlMonitorSleepSecs` can also be changed at runtime
//! with `setParameter`. Deletion is not immediate: a document lives
//! up to one period past its expiry, as in MongoDB.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bson::{Bson, doc};

use super::Service;
use crate::catalog;
use crate::collation::Requested;
use crate::error::Result;
use crate::exec;

/// One TTL index: the namespace, its field and its lifetime.
struct TtlIndex {
    db: String,
    coll: String,
    field: String,
    expire_after: Duration,
}

/// The TTL indexes of every collection (views have none).
fn ttl_indexes(svc: &Service) -> Result<Vec<TtlIndex>> {
    let txn = svc.store.begin()?;
    let metas = catalog::list_collections(txn.as_ref(), None);
    txn.abort();
    let mut out = Vec::new();
    for meta in metas? {
        if meta.is_view() {
            continue;
        }
        for index in &meta.indexes {
            let secs = match index.spec().get("expireAfterSeconds") {
                Some(Bson::Int32(n)) => f64::from(*n),
                Some(Bson::Int64(n)) => *n as f64,
                Some(Bson::Double(d)) => *d,
                _ => continue,
            };
            // MongoDB ignores TTL options on compound indexes and on `_id`.
            let Ok(key) = index.spec().get_document("key") else { continue };
            if key.len() != 1 || key.contains_key("_id") || !secs.is_finite() || secs < 0.0 {
                continue;
            }
            let Some(field) = key.keys().next() else { continue };
            out.push(TtlIndex {
                db: meta.db.clone(),
                coll: meta.name.clone(),
                field: field.clone(),
                expire_after: Duration::from_secs_f64(secs),
            });
        }
    }
    Ok(out)
}

/// How many documents one TTL transaction deletes at most.
const BATCH: usize = 500;

/// Runs one TTL pass now and returns how many documents it deleted.
pub fn pass(svc: &Service) -> Result<u64> {
    let now = bson::DateTime::now().timestamp_millis();
    let mut deleted = 0;
    for ttl in ttl_indexes(svc)? {
        let expire_ms = i64::try_from(ttl.expire_after.as_millis()).unwrap_or(i64::MAX);
        let cutoff = bson::DateTime::from_millis(now.saturating_sub(expire_ms));
        let expired = doc! { ttl.field.as_str(): { "$lt": cutoff } };
        // Bounded batches: each transaction deletes at most BATCH documents, found by a read
        // that holds no write lock, so no transaction stays open long and a large backlog
        // never becomes one huge commit.
        loop {
            let find = exec::FindSpec {
                filter: expired.clone(),
                projection: Some(doc! { "_id": 1 }),
                limit: BATCH as u64,
                ..exec::FindSpec::default()
            };
            let reader = svc.store.begin()?;
            let ids = exec::find(reader.as_ref(), &ttl.db, &ttl.coll, &find);
            reader.abort();
            let ids: Vec<Bson> = ids?.into_iter().filter_map(|d| d.get("_id").cloned()).collect();
            if ids.is_empty() {
                break;
            }
            let full = ids.len() >= BATCH;
            // The expiry is checked again in the deleting transaction.
            let filter = doc! { "$and": [{ "_id": { "$in": ids } }, expired.clone()] };
            let op = exec::DeleteOp {
                filter: &filter,
                limit_one: false,
                let_vars: None,
                collation: &Requested::Simple,
                hint: None,
            };
            let mut txn = svc.store.begin()?;
            match exec::delete(txn.as_mut(), &ttl.db, &ttl.coll, &op) {
                Ok(r) => {
                    txn.commit()?;
                    deleted += r.deleted;
                }
                Err(e) => {
                    txn.abort();
                    // A conflict with a transaction in progress: the next pass tries again.
                    if !e.is_write_conflict() {
                        tracing::warn!("TTL deletion in {}.{} failed: {e}", ttl.db, ttl.coll);
                    }
                    break;
                }
            }
            if !full {
                break;
            }
        }
    }
    svc.stats.ttl_passes.fetch_add(1, Ordering::Relaxed);
    svc.stats.ttl_deleted.fetch_add(deleted, Ordering::Relaxed);
    Ok(deleted)
}
