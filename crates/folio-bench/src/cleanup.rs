//! Stops what the benchmark started when it is interrupted.
//!
//! The servers are stopped by their guards' `Drop` on every normal or error path; Ctrl-C ends
//! the process without running them, so each server is also registered here and
//! [`on_interrupt`] stops whatever is still registered, then removes the registered temporary
//! directories, before exiting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A server to stop.
enum Running {
    /// A PostgreSQL cluster: its bin directory, the user to run `pg_ctl` as, the data directory.
    Postgres { bin: PathBuf, user: Option<String>, data: String },
    /// A Folio server process.
    Folio { pid: u32 },
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

/// Temporary directories to remove on interrupt (their `TempDir` guards never drop then).
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a temporary directory to remove if the run is interrupted.
pub fn register_dir(dir: &Path) {
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).push(dir.to_path_buf());
}

fn running() -> std::sync::MutexGuard<'static, Vec<Running>> {
    RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a PostgreSQL cluster being started.
pub fn register_pg(bin: &Path, user: Option<&str>, data: &str) {
    running().push(Running::Postgres {
        bin: bin.to_path_buf(),
        user: user.map(str::to_string),
        data: data.to_string(),
    });
}

/// Forgets a stopped cluster.
pub fn unregister_pg(data_dir: &str) {
    running().retain(|r| !matches!(r, Running::Postgres { data, .. } if data == data_dir));
}

/// Registers a Folio server process.
pub fn register_folio(pid: u32) {
    running().push(Running::Folio { pid });
}

/// Forgets a stopped Folio server.
pub fn unregister_folio(pid: u32) {
    running().retain(|r| !matches!(r, Running::Folio { pid: p } if *p == pid));
}

/// Stops every registered server; called on Ctrl-C.
pub fn on_interrupt() {
    for r in running().drain(..) {
        match r {
            Running::Postgres { bin, user, data } => {
                let pg_ctl = bin.join("pg_ctl");
                let mut cmd = match &user {
                    Some(u) => {
                        let mut c = Command::new("runuser");
                        c.args(["-u", u, "--"]).arg(&pg_ctl);
                        c
                    }
                    None => Command::new(&pg_ctl),
                };
                let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
            }
            Running::Folio { pid } => {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).output();
            }
        }
    }
    // The servers are stopping; give a Folio server a moment to exit before its files go.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for dir in DIRS.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}
