//! Fail points for tests: `configureFailPoint` with `failCommand`,
//! `onPrimaryTransactionalWrite`, `failGetMoreAfterCursorCheckout` and `maxTimeAlwaysTimeOut`,
//! as MongoDB's test commands provide them.
//!
//! They exist only when the node runs with test commands enabled; otherwise
//! `configureFailPoint` is CommandNotFound. A fail point has a mode (`alwaysOn`, `off`,
//! `{times: n}`, `{skip: n}`) and data; each time it fires it consumes one of its `times`.

use std::collections::HashMap;
use std::time::Duration;

use bson::{Bson, Document, doc};
use parking_lot::Mutex;

use crate::bail;
use crate::doc::compare::as_f64;
use crate::error::Result;

#[derive(Clone, Debug)]
enum FpMode {
    AlwaysOn,
    Times(u64),
    Skip(u64),
}

#[derive(Clone, Debug)]
struct FailPoint {
    mode: FpMode,
    data: Document,
}

impl FailPoint {
    /// Decides whether the fail point fires now, consuming a `times` or a `skip`.
    fn fire(&mut self) -> (bool, bool) {
        match &mut self.mode {
            FpMode::AlwaysOn => (true, false),
            FpMode::Times(n) => {
                *n -= 1;
                (true, *n == 0)
            }
            FpMode::Skip(n) if *n > 0 => {
                *n -= 1;
                (false, false)
            }
            FpMode::Skip(_) => (true, false),
        }
    }
}

/// What a `failCommand` fail point does to a command.
#[derive(Clone, Debug, Default)]
pub struct FailCommand {
    /// Fail with this code.
    pub error_code: Option<i32>,
    /// Exactly these labels (when given; an empty list means none).
    pub error_labels: Option<Vec<String>>,
    /// Close the connection instead of replying.
    pub close_connection: bool,
    /// Block this long first.
    pub block: Option<Duration>,
    /// Run the command, then attach this writeConcernError.
    pub write_concern_error: Option<Document>,
    /// An error message to use instead of the default.
    pub errmsg: Option<String>,
}

/// What `onPrimaryTransactionalWrite` does to a retryable write statement.
#[derive(Clone, Debug, Default)]
pub struct TransactionalWrite {
    /// Close the connection after the write commits (the default).
    pub close_connection: bool,
    /// Fail the statement with this code before it commits.
    pub fail_before_commit: Option<i32>,
}

/// The fail points of a node.
#[derive(Default)]
pub struct FailPoints {
    points: Mutex<HashMap<String, FailPoint>>,
}

impl FailPoints {
    /// `configureFailPoint`.
    pub fn configure(&self, cmd: &Document) -> Result<Document> {
        let name = match cmd.get("configureFailPoint") {
            Some(Bson::String(s)) => s.clone(),
            _ => bail!(TypeMismatch, "configureFailPoint must be a string"),
        };
        if !matches!(
            name.as_str(),
            "failCommand"
                | "onPrimaryTransactionalWrite"
                | "failGetMoreAfterCursorCheckout"
                | "maxTimeAlwaysTimeOut"
        ) {
            bail!(FailPointSetFailed, "Unknown fail point: {}", name);
        }
        let mode = match cmd.get("mode") {
            Some(Bson::String(s)) if s == "alwaysOn" => Some(FpMode::AlwaysOn),
            Some(Bson::String(s)) if s == "off" => None,
            Some(Bson::Document(d)) => {
                if let Some(n) = d.get("times").and_then(as_f64) {
                    if n <= 0.0 { None } else { Some(FpMode::Times(n as u64)) }
                } else if let Some(n) = d.get("skip").and_then(as_f64) {
                    Some(FpMode::Skip(n.max(0.0) as u64))
                } else {
                    bail!(BadValue, "mode must be 'alwaysOn', 'off', {{times: n}} or {{skip: n}}");
                }
            }
            _ => bail!(BadValue, "mode must be 'alwaysOn', 'off', {{times: n}} or {{skip: n}}"),
        };
        let data = match cmd.get("data") {
            Some(Bson::Document(d)) => d.clone(),
            None => Document::new(),
            Some(_) => bail!(TypeMismatch, "data must be an object"),
        };
        let mut points = self.points.lock();
        let count = if points.contains_key(&name) { 1 } else { 0 };
        match mode {
            Some(mode) => {
                points.insert(name, FailPoint { mode, data });
            }
            None => {
                points.remove(&name);
            }
        }
        Ok(doc! { "count": count })
    }

    /// Whether `failCommand` fires for this command; consumes it when it does.
    pub fn fail_command(
        &self,
        command: &str,
        app_name: Option<&str>,
        ns: &str,
    ) -> Option<FailCommand> {
        if command == "configureFailPoint" {
            return None;
        }
        let mut points = self.points.lock();
        let fp = points.get_mut("failCommand")?;
        let d = &fp.data;
        let names_match = match d.get("failCommands") {
            Some(Bson::Array(a)) => a.iter().any(|n| n.as_str() == Some(command)),
            _ => false,
        };
        if !names_match {
            return None;
        }
        if let Some(Bson::String(app)) = d.get("appName")
            && app_name != Some(app.as_str())
        {
            return None;
        }
        if let Some(Bson::String(want)) = d.get("namespace")
            && want != ns
        {
            return None;
        }
        let action = FailCommand {
            error_code: d.get("errorCode").and_then(as_f64).map(|n| n as i32),
            error_labels: match d.get("errorLabels") {
                Some(Bson::Array(a)) => {
                    Some(a.iter().filter_map(|l| l.as_str().map(String::from)).collect())
                }
                _ => None,
            },
            close_connection: d.get_bool("closeConnection").unwrap_or(false),
            block: if d.get_bool("blockConnection").unwrap_or(false) {
                Some(Duration::from_millis(
                    d.get("blockTimeMS").and_then(as_f64).unwrap_or(0.0) as u64
                ))
            } else {
                None
            },
            write_concern_error: d.get_document("writeConcernError").ok().cloned(),
            errmsg: d.get_str("errmsg").ok().map(String::from),
        };
        let (fires, exhausted) = fp.fire();
        if exhausted {
            points.remove("failCommand");
        }
        fires.then_some(action)
    }

    /// Whether `failGetMoreAfterCursorCheckout` fires for a getMore: the code to fail with.
    pub fn fail_get_more(&self) -> Option<i32> {
        let mut points = self.points.lock();
        let fp = points.get_mut("failGetMoreAfterCursorCheckout")?;
        let code = fp.data.get("errorCode").and_then(as_f64).map_or(1, |n| n as i32);
        let (fires, exhausted) = fp.fire();
        if exhausted {
            points.remove("failGetMoreAfterCursorCheckout");
        }
        fires.then_some(code)
    }

    /// Whether `onPrimaryTransactionalWrite` fires for a retryable write statement.
    pub fn on_transactional_write(&self) -> Option<TransactionalWrite> {
        let mut points = self.points.lock();
        let fp = points.get_mut("onPrimaryTransactionalWrite")?;
        let action = TransactionalWrite {
            close_connection: fp.data.get_bool("closeConnection").unwrap_or(true),
            fail_before_commit: fp
                .data
                .get("failBeforeCommitExceptionCode")
                .and_then(as_f64)
                .map(|n| n as i32),
        };
        let (fires, exhausted) = fp.fire();
        if exhausted {
            points.remove("onPrimaryTransactionalWrite");
        }
        fires.then_some(action)
    }

    /// Whether `maxTimeAlwaysTimeOut` fires for a command that has a `maxTimeMS`: the command
    /// then fails with MaxTimeMSExpired as if its time had run out (drivers' tests use it to
    /// see timeouts without waiting). Commands without `maxTimeMS` never consume it.
    pub fn max_time_always_time_out(&self) -> bool {
        let mut points = self.points.lock();
        let Some(fp) = points.get_mut("maxTimeAlwaysTimeOut") else {
            return false;
        };
        let (fires, exhausted) = fp.fire();
        if exhausted {
            points.remove("maxTimeAlwaysTimeOut");
        }
        fires
    }
}
