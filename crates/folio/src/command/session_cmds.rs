//! The commands about logical sessions and their transactions: commitTransaction,
//! abortTransaction, startSession, endSessions, refreshSessions, killSessions,
//! killAllSessions. The sessions themselves (their state machine, retryable-write history and
//! durable records) are [`crate::session`]'s.

use std::sync::atomic::Ordering;

use bson::{Bson, Document, doc};

use super::args::Request;
use super::runner::{Mode, Runner};
use super::{Connection, Service};
use crate::bail;
use crate::error::Result;
use crate::session::SESSION_TIMEOUT;

fn txn_number(run: &Runner, name: &str) -> Result<i64> {
    match run.op.mode() {
        Mode::Transaction(n) => Ok(n),
        Mode::Retryable(_) => bail!(InvalidOptions, "{} must be run within a transaction", name),
        Mode::Autocommit => bail!(InvalidOptions, "{} must be run within a transaction", name),
    }
}

/// `commitTransaction`: idempotent for a committed transaction.
pub fn commit_transaction(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let n = txn_number(run, "commitTransaction")?;
    let Some(session) = run.session() else {
        bail!(InvalidOptions, "commitTransaction requires a session");
    };
    let was_open = session.state.is_in_progress();
    session.settle_commit(req.svc.store.as_ref(), n)?;
    match session.commit_transaction(n) {
        Ok(ts) => {
            // Durable before the reply, as a retried commit of a committed transaction is.
            run.owe_durability(ts);
            if was_open {
                req.svc.stats.txn_committed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Document::new())
        }
        Err(e) => {
            if was_open {
                req.svc.stats.txn_aborted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

/// `abortTransaction`.
pub fn abort_transaction(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let n = txn_number(run, "abortTransaction")?;
    let Some(session) = run.session() else {
        bail!(InvalidOptions, "abortTransaction requires a session");
    };
    session.abort_transaction(n)?;
    req.svc.stats.txn_aborted.fetch_add(1, Ordering::Relaxed);
    Ok(Document::new())
}

/// `startSession`: a server-generated lsid.
pub fn start_session(_: &mut Request<'_>) -> Result<Document> {
    Ok(doc! {
        "id": { "id": bson::Uuid::new() },
        "timeoutMinutes": (SESSION_TIMEOUT.as_secs() / 60) as i32,
    })
}

fn lsids(cmd: &Document, name: &str) -> Result<Vec<Document>> {
    match cmd.get(name) {
        Some(Bson::Array(a)) => Ok(a
            .iter()
            .filter_map(|v| match v {
                Bson::Document(d) => Some(d.clone()),
                _ => None,
            })
            .collect()),
        _ => bail!(TypeMismatch, "BSON field '{}' is the wrong type, expected type 'array'", name),
    }
}

/// The given lsids each owned by the caller ([`super::authz::owned_lsid`]; ignored ones are
/// left out), with their session keys.
fn owned_lsids(
    svc: &Service,
    conn: &Connection,
    given: Vec<Document>,
    spoof: Option<&str>,
) -> Result<Vec<(Document, Vec<u8>)>> {
    let mut out = Vec::new();
    for lsid in given {
        if let Some(lsid) = super::authz::owned_lsid(svc, conn, lsid, spoof)? {
            let key = crate::session::lsid_key(&lsid)?;
            out.push((lsid, key));
        }
    }
    Ok(out)
}

/// Closes the cursors and change streams of a session that has ended.
fn close_cursors(svc: &Service, key: &[u8]) {
    svc.cursors.kill_session(key);
    svc.streams.kill_session(key);
}

/// Ends a session and closes its cursors.
fn end_session(svc: &Service, key: &[u8]) {
    close_cursors(svc, key);
    svc.sessions.end(key);
}

/// `endSessions`: ends the caller's sessions (an lsid names the caller's session with that id,
/// never another user's), and closes their cursors.
pub fn end_sessions(req: &mut Request<'_>) -> Result<Document> {
    for (_, key) in owned_lsids(req.svc, req.conn, lsids(req.cmd, "endSessions")?, None)? {
        end_session(req.svc, &key);
    }
    Ok(Document::new())
}

/// `refreshSessions`.
pub fn refresh_sessions(req: &mut Request<'_>) -> Result<Document> {
    for (lsid, _) in owned_lsids(req.svc, req.conn, lsids(req.cmd, "refreshSessions")?, None)? {
        let s = req.svc.sessions.get_or_create(&lsid)?;
        if let Some(mut s) = s.try_lock() {
            s.last_use = std::time::Instant::now();
        }
    }
    Ok(Document::new())
}

/// `killSessions`: kills the named sessions of the caller (another user's with a `uid` and
/// `killAnySession`), or with an empty list every session of the caller (every session when
/// authorization is off), as MongoDB does.
pub fn kill_sessions(req: &mut Request<'_>) -> Result<Document> {
    let given = lsids(req.cmd, "killSessions")?;
    if !given.is_empty() {
        for (_, key) in owned_lsids(req.svc, req.conn, given, Some("killAnySession"))? {
            end_session(req.svc, &key);
        }
        return Ok(Document::new());
    }
    let digest = match (super::authz::enforced(req.svc, req.conn), req.conn.auth.users.first()) {
        (false, _) => None,
        (true, Some(user)) => Some(user.name.session_digest()),
        // No user: no session is the caller's.
        (true, None) => return Ok(Document::new()),
    };
    // A key is the lsid's 16 id bytes followed by its owner's digest (`session::lsid_key`).
    for key in req.svc.sessions.end_matching(|key| digest.as_ref().is_none_or(|d| key.ends_with(d)))
    {
        close_cursors(req.svc, &key);
    }
    Ok(Document::new())
}

/// `killAllSessions` (and `killAllSessionsByPattern`): aborts every open transaction.
pub fn kill_all_sessions(req: &mut Request<'_>) -> Result<Document> {
    req.svc.sessions.end_matching(|_| true);
    Ok(Document::new())
}
