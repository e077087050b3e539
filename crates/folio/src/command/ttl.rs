//! The TTL monitor: deletes documents whose TTL index says they expired.
//!
//! As MongoDB's TTL monitor does, a background pass runs every `ttlMonitorSleepSecs` (60 by
//! default; `--setParameter ttlMonitorSleepSecs=N`, or `ttlMonitorEnabled=false` to stop it).
//! For each collection and each index with `expireAfterSeconds` on a single field, it deletes the
//! documents whose field holds a date older than `now - expireAfterSeconds`; for an array of
//! dates the earliest counts, which is what `{field: {$lt: cutoff}}` matches, so the pass is that
//! delete. Documents whose field is missing or holds no date never expire. Each index's deletions
//! commit as one ordinary write (maintaining every index); one that meets a transaction in
//! progress is skipped and retried by the next pass. Deletion is not immediate: a document lives
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
            let secs = match index.spec.get("expireAfterSeconds") {
                Some(Bson::Int32(n)) => f64::from(*n),
                Some(Bson::Int64(n)) => *n as f64,
                Some(Bson::Double(d)) => *d,
                _ => continue,
            };
            // MongoDB ignores TTL options on compound indexes and on `_id`.
            let Ok(key) = index.spec.get_document("key") else { continue };
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

/// Runs one TTL pass now and returns how many documents it deleted.
pub fn pass(svc: &Service) -> Result<u64> {
    let now = bson::DateTime::now().timestamp_millis();
    let mut deleted = 0;
    for ttl in ttl_indexes(svc)? {
        let expire_ms = i64::try_from(ttl.expire_after.as_millis()).unwrap_or(i64::MAX);
        let cutoff = bson::DateTime::from_millis(now.saturating_sub(expire_ms));
        let filter = doc! { ttl.field.as_str(): { "$lt": cutoff } };
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
            }
        }
    }
    svc.stats.ttl_passes.fetch_add(1, Ordering::Relaxed);
    svc.stats.ttl_deleted.fetch_add(deleted, Ordering::Relaxed);
    Ok(deleted)
}
