//! Server parameters (`getParameter`, `setParameter`) and settings changed while the server
//! runs: `replSetResizeOplog` (the change log's retention).
//!
//! [`parameters`] is the one list of the parameters Folio has: each with its current value,
//! whether it may be given at startup (`--setParameter`), and, when it may change at runtime,
//! the function that changes it. `getParameter` reports the list and `setParameter` uses the
//! setters, so a parameter is settable at runtime exactly when `getParameter`'s `showDetails`
//! says so; the others are refused, never accepted and ignored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, Document, doc};

use super::Service;
use super::args::Request;
use super::fields::GENERIC as GENERIC_ARGS;
use crate::bail;
use crate::doc::compare::as_f64;
use crate::error::Result;

/// How a parameter changes at runtime: a flag, or a whole number of seconds of at least 1, each
/// kept in the service.
#[derive(Clone, Copy)]
enum Setter {
    Flag(fn(&Service) -> &AtomicBool),
    Seconds(fn(&Service) -> &AtomicU64),
}

impl Setter {
    /// The parameter's current value.
    fn value(self, svc: &Service) -> Bson {
        match self {
            Setter::Flag(f) => Bson::Boolean(f(svc).load(Ordering::Relaxed)),
            Setter::Seconds(f) => int32(f(svc).load(Ordering::Relaxed)),
        }
    }

    /// Sets the parameter `name` to `v`, or refuses the value.
    fn set(self, svc: &Service, name: &str, v: &Bson) -> Result<()> {
        match self {
            Setter::Flag(f) => f(svc).store(boolean(name, v)?, Ordering::Relaxed),
            Setter::Seconds(f) => f(svc).store(positive_int(name, v)?, Ordering::Relaxed),
        }
        Ok(())
    }
}

/// A server parameter.
pub(super) struct Parameter {
    /// Its name.
    pub name: &'static str,
    /// Its current value.
    pub value: Bson,
    /// How `setParameter` changes it; `None` when it cannot change at runtime.
    set: Option<Setter>,
    /// Whether `--setParameter` (or the config file) may give it.
    pub settable_at_startup: bool,
}

impl Parameter {
    /// Whether `setParameter` may change it.
    pub fn settable_at_runtime(&self) -> bool {
        self.set.is_some()
    }
}

/// A whole number of seconds (or another unit) of at least 1.
fn positive_int(name: &str, v: &Bson) -> Result<u64> {
    as_f64(v)
        .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= f64::from(i32::MAX))
        .map(|n| n as u64)
        .ok_or_else(|| crate::err!(BadValue, "Invalid value for {}: {}", name, v))
}

fn boolean(name: &str, v: &Bson) -> Result<bool> {
    match v {
        Bson::Boolean(b) => Ok(*b),
        _ => bail!(BadValue, "Invalid value for {}: {}", name, v),
    }
}

fn int32(n: u64) -> Bson {
    Bson::Int32(i32::try_from(n).unwrap_or(i32::MAX))
}

/// The parameters Folio has, in name order.
pub(super) fn parameters(svc: &Service) -> Vec<Parameter> {
    let opts = svc.options();
    let fixed = |name, value: Bson, startup| Parameter {
        name,
        value,
        set: None,
        settable_at_startup: startup,
    };
    let runtime = |name, startup, set: Setter| Parameter {
        name,
        value: set.value(svc),
        set: Some(set),
        settable_at_startup: startup,
    };
    vec![
        fixed(
            "authenticationMechanisms",
            Bson::Array(opts.auth_mechanisms.iter().cloned().map(Bson::String).collect()),
            true,
        ),
        fixed("enableLocalhostAuthBypass", Bson::Boolean(opts.localhost_auth_bypass), true),
        fixed("enableTestCommands", Bson::Boolean(opts.test_commands), true),
        fixed("featureCompatibilityVersion", Bson::Document(doc! { "version": "8.0" }), false),
        fixed(
            "internalQueryMaxMemoryUsageBytesAllOperations",
            Bson::Int64(i64::try_from(crate::memory::server_cap()).unwrap_or(i64::MAX)),
            true,
        ),
        fixed(
            "internalQueryMaxMemoryUsageBytesPerOperation",
            Bson::Int64(i64::try_from(crate::memory::operation_limit()).unwrap_or(i64::MAX)),
            true,
        ),
        // Folio's log has no verbosity levels and takes no locks with timeouts: these report
        // what Folio does and cannot be changed.
        fixed("logLevel", Bson::Int32(0), false),
        fixed("maxTransactionLockRequestTimeoutMillis", Bson::Int32(5), false),
        fixed("quiet", Bson::Boolean(false), false),
        runtime("requireApiVersion", false, Setter::Flag(|svc| &svc.require_api_version)),
        runtime(
            "transactionLifetimeLimitSeconds",
            true,
            Setter::Seconds(|svc| &svc.txn_lifetime_secs),
        ),
        runtime("ttlMonitorEnabled", true, Setter::Flag(|svc| &svc.ttl_enabled)),
        runtime("ttlMonitorSleepSecs", true, Setter::Seconds(|svc| &svc.ttl_sleep_secs)),
    ]
}

/// `setParameter`: changes take effect at once (the next housekeeping tick sees the TTL and
/// transaction-lifetime settings); the reply's `was` is the previous value, as MongoDB's.
pub fn set_parameter(req: &mut Request<'_>) -> Result<Document> {
    let params = parameters(req.svc);
    let mut was = None;
    for (k, v) in req.cmd.iter().skip(1) {
        if GENERIC_ARGS.contains(&k.as_str()) {
            continue;
        }
        let Some(p) = params.iter().find(|p| p.name == k) else {
            bail!(
                InvalidOptions,
                "attempted to set unrecognized parameter [{}], use help:true to see options",
                k
            );
        };
        let Some(set) = p.set else {
            bail!(IllegalOperation, "not allowed to change [{}] at runtime", k);
        };
        set.set(req.svc, p.name, v)?;
        was = Some(p.value.clone());
    }
    match was {
        Some(was) => Ok(doc! { "was": was }),
        None => bail!(InvalidOptions, "no option found to set, use help:true to see options"),
    }
}

/// `replSetResizeOplog`: `size` (megabytes, a double) and `minRetentionHours` of the change log.
/// MongoDB refuses sizes under 990 MB; Folio accepts any positive size, so tests and small
/// deployments can keep a short history (docs/compatibility.md).
pub fn repl_set_resize_oplog(req: &mut Request<'_>) -> Result<Document> {
    let (mut bytes, mut age, _) = req.svc.store.log_usage();
    let (size, hours) = (req.cmd.get("size"), req.cmd.get("minRetentionHours"));
    if size.is_none() && hours.is_none() {
        bail!(InvalidOptions, "replSetResizeOplog needs 'size' or 'minRetentionHours'");
    }
    if let Some(v) = size {
        let mb = as_f64(v)
            .filter(|mb| *mb > 0.0 && mb.is_finite())
            .ok_or_else(|| crate::err!(BadValue, "size must be a positive number: {}", v))?;
        bytes = (mb * 1048576.0) as u64;
    }
    if let Some(v) = hours {
        let h = as_f64(v).filter(|h| *h >= 0.0 && h.is_finite()).ok_or_else(|| {
            crate::err!(BadValue, "minRetentionHours must be non-negative: {}", v)
        })?;
        age = Duration::from_secs_f64(h * 3600.0);
    }
    req.svc.store.set_log_retention(bytes, age);
    Ok(Document::new())
}
