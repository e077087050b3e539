//! Settings changed while the server runs: `setParameter` (the TTL monitor's parameters) and
//! `replSetResizeOplog` (the change log's retention).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bson::{Bson, Document, doc};

use super::{Connection, Service};
use crate::bail;
use crate::error::Result;

/// The generic arguments every command may carry, which these commands accept and ignore.
const GENERIC_ARGS: &[&str] = &[
    "$db",
    "lsid",
    "$clusterTime",
    "comment",
    "$readPreference",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
];

fn require_admin(cmd: &Document, name: &str) -> Result<()> {
    if cmd.get_str("$db").unwrap_or("") != "admin" {
        bail!(Unauthorized, "{} may only be run against the admin database.", name);
    }
    Ok(())
}

/// `setParameter`: `ttlMonitorEnabled` and `ttlMonitorSleepSecs` change at once (the next
/// housekeeping tick uses them); the reply's `was` is the previous value, as MongoDB's.
pub fn set_parameter(svc: &Service, _: &mut Connection, cmd: &Document) -> Result<Document> {
    require_admin(cmd, "setParameter")?;
    let mut was = None;
    let mut set = 0;
    for (k, v) in cmd.iter().skip(1) {
        match k.as_str() {
            k if GENERIC_ARGS.contains(&k) || k == "writeConcern" => {}
            "ttlMonitorEnabled" => {
                let Bson::Boolean(b) = v else {
                    bail!(BadValue, "Invalid value for ttlMonitorEnabled: {}", v);
                };
                was = Some(Bson::Boolean(svc.ttl_enabled.swap(*b, Ordering::Relaxed)));
                set += 1;
            }
            "ttlMonitorSleepSecs" => {
                let secs = super::context::number(v)
                    .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= f64::from(i32::MAX))
                    .ok_or_else(|| {
                        crate::err!(BadValue, "Invalid value for ttlMonitorSleepSecs: {}", v)
                    })?;
                let old = svc.ttl_sleep_secs.swap(secs as u64, Ordering::Relaxed);
                was = Some(Bson::Int32(i32::try_from(old).unwrap_or(i32::MAX)));
                set += 1;
            }
            other => bail!(
                InvalidOptions,
                "attempted to set unrecognized parameter [{}], use help:true to see options \
                 (Folio sets ttlMonitorEnabled and ttlMonitorSleepSecs at runtime)",
                other
            ),
        }
    }
    if set == 0 {
        bail!(InvalidOptions, "no option found to set, use help:true to see options");
    }
    Ok(doc! { "was": was.unwrap_or(Bson::Null) })
}

/// `replSetResizeOplog`: `size` (megabytes, a double) and `minRetentionHours` of the change log.
/// MongoDB refuses sizes under 990 MB; Folio accepts any positive size, so tests and small
/// deployments can keep a short history (docs/compatibility.md).
pub fn repl_set_resize_oplog(
    svc: &Service,
    _: &mut Connection,
    cmd: &Document,
) -> Result<Document> {
    require_admin(cmd, "replSetResizeOplog")?;
    let (mut bytes, mut age, _) = svc.store.log_usage();
    let mut any = false;
    for (k, v) in cmd.iter().skip(1) {
        match k.as_str() {
            "size" => {
                let mb =
                    super::context::number(v).filter(|mb| *mb > 0.0 && mb.is_finite()).ok_or_else(
                        || crate::err!(BadValue, "size must be a positive number: {}", v),
                    )?;
                bytes = (mb * 1048576.0) as u64;
                any = true;
            }
            "minRetentionHours" => {
                let h =
                    super::context::number(v).filter(|h| *h >= 0.0 && h.is_finite()).ok_or_else(
                        || crate::err!(BadValue, "minRetentionHours must be non-negative: {}", v),
                    )?;
                age = Duration::from_secs_f64(h * 3600.0);
                any = true;
            }
            k if GENERIC_ARGS.contains(&k) => {}
            other => bail!(
                Location40415,
                "BSON field 'replSetResizeOplog.{}' is an unknown field.",
                other
            ),
        }
    }
    if !any {
        bail!(InvalidOptions, "replSetResizeOplog needs 'size' or 'minRetentionHours'");
    }
    svc.store.set_log_retention(bytes, age);
    Ok(Document::new())
}
