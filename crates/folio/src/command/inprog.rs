//! In-flight operations: what `currentOp` lists and `killOp` interrupts, and those two commands.
//!
//! Every command registers itself for as long as it runs, with an operation id and a kill flag.
//! `killOp` sets the flag; a command checks it wherever it may wait (between statements, and while
//! an autocommit write waits for a conflicting transaction), and stops with Interrupted (11601).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use bson::{Bson, Document, doc};
use parking_lot::Mutex;

use super::Service;
use super::args::Request;
use crate::bail;
use crate::error::Result;
use crate::session::TxnState;

/// One running command.
pub(crate) struct OpEntry {
    pub(crate) opid: u32,
    pub(crate) connection: u64,
    pub(crate) client: String,
    /// The command's first field (its name and target): all of it that currentOp shows.
    pub(crate) command: Option<(String, Bson)>,
    pub(crate) ns: String,
    pub(crate) started: Instant,
    pub(crate) killed: Arc<AtomicBool>,
}

/// The registry of running commands.
#[derive(Default)]
pub(crate) struct OpRegistry {
    next: AtomicU32,
    ops: Mutex<foldhash::HashMap<u32, Arc<OpEntry>>>,
}

/// Removes its operation from the registry when dropped.
pub(crate) struct OpGuard<'a> {
    registry: &'a OpRegistry,
    opid: u32,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.registry.ops.lock().remove(&self.opid);
    }
}

impl OpRegistry {
    /// Registers a running command; returns its guard and kill flag.
    pub(crate) fn register(
        &self,
        connection: u64,
        client: &str,
        command: &Document,
        ns: String,
    ) -> (OpGuard<'_>, Arc<AtomicBool>) {
        let opid = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let killed = Arc::new(AtomicBool::new(false));
        // Only the command's name and target go into currentOp, not its (possibly large) data;
        // the document currentOp shows is built only when it asks.
        let summary = command.iter().next().map(|(k, v)| (k.clone(), v.clone()));
        let entry = OpEntry {
            opid,
            connection,
            client: client.to_string(),
            command: summary,
            ns,
            started: Instant::now(),
            killed: killed.clone(),
        };
        self.ops.lock().insert(opid, Arc::new(entry));
        (OpGuard { registry: self, opid }, killed)
    }

    /// Marks an operation killed; returns whether it was running.
    pub(crate) fn kill(&self, opid: u32) -> bool {
        match self.ops.lock().get(&opid) {
            Some(op) => {
                op.killed.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// `currentOp` entries for the running commands.
    pub(crate) fn current(&self) -> Vec<Bson> {
        let ops: Vec<Arc<OpEntry>> = self.ops.lock().values().cloned().collect();
        ops.iter()
            .map(|op| {
                let micros = op.started.elapsed().as_micros() as i64;
                Bson::Document(doc! {
                    "type": "op",
                    "opid": op.opid as i32,
                    "active": true,
                    "op": "command",
                    "ns": op.ns.clone(),
                    "command": op.command.iter().cloned().collect::<Document>(),
                    "connectionId": op.connection as i64,
                    "client": op.client.clone(),
                    "secs_running": micros / 1_000_000,
                    "microsecs_running": micros,
                    "killPending": op.killed.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// `killOp`: interrupts a running command by its `opid` (from `currentOp`).
pub fn kill_op(req: &mut Request<'_>) -> Result<Document> {
    let opid = match req.cmd.get("op").and_then(crate::doc::compare::as_f64) {
        Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u32,
        _ => bail!(TypeMismatch, "killOp requires a numeric 'op' field"),
    };
    req.svc.ops.kill(opid);
    Ok(doc! { "info": "attempting to kill op" })
}

/// `currentOp`: running commands, and open transactions as idle sessions.
pub fn current_op(req: &mut Request<'_>) -> Result<Document> {
    Ok(doc! { "inprog": in_progress(req.svc, true) })
}

/// The running operations and, with `idle_sessions`, the sessions whose transaction is open
/// between statements (`currentOp`'s `inprog`, `$currentOp`'s documents).
pub(super) fn in_progress(svc: &Service, idle_sessions: bool) -> Vec<Bson> {
    let mut inprog = svc.ops.current();
    if !idle_sessions {
        return inprog;
    }
    for s in svc.sessions.list() {
        let Some(s) = s.try_lock() else { continue };
        let TxnState::InProgress { started, read_concern, .. } = &s.state else {
            continue;
        };
        let open_micros = started.elapsed().as_micros() as i64;
        let mut params = doc! { "txnNumber": s.txn_number.unwrap_or(0), "autocommit": false };
        if let Some(rc) = read_concern {
            params.insert("readConcern", rc.clone());
        }
        inprog.push(Bson::Document(doc! {
            "type": "idleSession",
            "active": false,
            "lsid": s.lsid.clone(),
            "transaction": {
                "parameters": params,
                "timeOpenMicros": open_micros,
                "timeActiveMicros": 0_i64,
                "timeInactiveMicros": open_micros,
            },
        }));
    }
    inprog
}
