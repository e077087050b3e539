//! The log lines `getLog` returns, and the hook `logRotate` calls.
//!
//! MongoDB keeps its most recent log lines in memory (1024 of them, in its JSON format) so that
//! `getLog: "global"` can show them without access to the machine; warnings from startup are
//! kept apart under `startupWarnings`. The process's log output is set up by whoever embeds the
//! core (the `folio` binary formats lines and calls [`record`]); the core only keeps them. Like
//! the logging itself, these are process-wide.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The most lines each log keeps.
pub const CAPACITY: usize = 1024;

/// One in-memory log.
pub struct RecentLog {
    lines: Mutex<VecDeque<String>>,
    total: AtomicU64,
}

impl RecentLog {
    const fn new() -> Self {
        RecentLog { lines: Mutex::new(VecDeque::new()), total: AtomicU64::new(0) }
    }

    fn push(&self, line: String) {
        let mut lines = self.lines.lock();
        if lines.len() == CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// The kept lines, oldest first, and how many were ever written.
    pub fn snapshot(&self) -> (Vec<String>, u64) {
        (self.lines.lock().iter().cloned().collect(), self.total.load(Ordering::Relaxed))
    }
}

/// Every log line (`getLog: "global"`).
pub static GLOBAL: RecentLog = RecentLog::new();
/// Warnings logged while starting (`getLog: "startupWarnings"`).
pub static STARTUP_WARNINGS: RecentLog = RecentLog::new();

/// Keeps one formatted log line; `startup_warning` also keeps it under `startupWarnings`.
pub fn record(line: String, startup_warning: bool) {
    if startup_warning {
        STARTUP_WARNINGS.push(line.clone());
    }
    GLOBAL.push(line);
}

/// What rotates the process's log file.
pub type Rotator = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

static ROTATOR: OnceLock<Rotator> = OnceLock::new();

/// Installs the log-file rotation `logRotate` calls (once per process).
pub fn set_rotator(rotator: Rotator) {
    let _ = ROTATOR.set(rotator);
}

/// Rotates the log file. Without a log file there is nothing to rotate, which is not an error
/// (as with mongod logging to standard output).
pub fn rotate() -> Result<(), String> {
    match ROTATOR.get() {
        Some(rotate) => rotate(),
        None => Ok(()),
    }
}
