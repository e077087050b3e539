//! The Folio server under test: one separate process for the whole run.
//!
//! The runner picks a free port, starts `<folio> serve --port <p> --in-memory --setParameter
//! enableTestCommands=1`, and waits for the line `folio listening on 127.0.0.1:<port>`. The process is killed
//! when the [`ServerProcess`] is dropped, so a failing run does not leave a server behind.
//!
//! With `--auth` (the runner's auth pass), the server also gets `--auth`; the runner creates a
//! root user through the localhost exception and every client it makes authenticates as it.
//! With `FOLIO_STORAGE=postgresql://...` in the environment the server runs with `--storage` on that
//! database instead of in memory (the scale-out backend, docs/design/scale-out.md).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The user the runner authenticates as in an `--auth` pass.
const ROOT_USER: &str = "folio-conformance";
/// Its password.
const ROOT_PASSWORD: &str = "folio-conformance-pw";

/// A running server process.
pub struct ServerProcess {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Whether it runs with `--auth`.
    pub auth: bool,
}

impl ServerProcess {
    /// Starts the server binary and waits (up to `wait`) until it reports that it listens.
    /// With `auth`, the server runs with `--auth` (see [`ServerProcess::create_root_user`]).
    pub fn start(bin: &Path, wait: Duration, auth: bool) -> Result<Self, String> {
        let port = free_port()?;
        let storage = match std::env::var("FOLIO_STORAGE") {
            Ok(url) if !url.is_empty() => vec!["--storage".to_string(), url],
            _ => vec!["--in-memory".to_string()],
        };
        let mut child = Command::new(bin)
            .args(["serve", "--port", &port.to_string(), "--setParameter", "enableTestCommands=1"])
            .args(&storage)
            .args(if auth { &["--auth"][..] } else { &[][..] })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from the server")?;
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout for the whole run so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("folio listening on")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let mut server = ServerProcess { child, port, auth };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if let Some(p) = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()) {
                    server.port = p;
                }
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                Err(format!(
                    "{} did not report `folio listening on` within {wait:?} (exit status: {status:?})",
                    bin.display()
                ))
            }
        }
    }

    /// The connection string for clients of this server: with the root user's credentials when
    /// it runs with `--auth` (no database in the path, so `authSource` defaults to `admin`).
    pub fn uri(&self) -> String {
        if self.auth {
            format!("mongodb://{ROOT_USER}:{ROOT_PASSWORD}@127.0.0.1:{}/", self.port)
        } else {
            self.uri_without_credentials()
        }
    }

    /// The connection string without credentials.
    pub fn uri_without_credentials(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// Creates the root user the runner authenticates as, through the localhost exception.
    pub async fn create_root_user(&self) -> Result<(), String> {
        let client = mongodb::Client::with_uri_str(self.uri_without_credentials())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! {
                "createUser": ROOT_USER,
                "pwd": ROOT_PASSWORD,
                "roles": ["root"],
            })
            .await
            .map_err(|e| format!("cannot create the root user: {e}"))?;
        Ok(())
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that is free right now on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
