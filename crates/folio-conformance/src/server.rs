//! The deployment under test: Folio server processes, and what they need.
//!
//! The runner picks a free port, starts `<folio> serve --port <p> --in-memory --setParameter
//! enableTestCommands=1`, and waits for the line `folio listening on 127.0.0.1:<port>`. The process is killed
//! when the [`ServerProcess`] is dropped, so a failing run does not leave a server behind.
//!
//! With `--auth` (the runner's auth pass), the server also gets `--auth`; the runner creates a
//! root user through the localhost exception and every client it makes authenticates as it.
//!
//! The other [`Mode`]s put Folio on PostgreSQL (the scale-out backend,
//! docs/design/scale-out.md): `--storage` on `FOLIO_STORAGE=postgresql://...` when it is set,
//! else on a throwaway cluster ([`folio_pg::testing::Cluster`]) that lives as long as the run. In
//! the load-balanced mode two front ends run with `--loadBalanced` over that one database, behind
//! two nginx TCP proxies: one in front of both (the unified format's `MULTI_MONGOS_LB_URI`, used
//! by default) and one in front of the first only (`SINGLE_MONGOS_LB_URI`, for clients with
//! `useMultipleMongoses: false`, which is where tests set their fail points). Cleanup commands
//! (fail points off, `killAllSessions`) go to each front end directly, since a proxy would reach
//! only one of them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use folio_pg::testing::{Cluster, Nginx};

/// What the run is against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One server, in memory (the default).
    InMemory,
    /// One server on PostgreSQL.
    Postgresql,
    /// Two `--loadBalanced` front ends on PostgreSQL behind nginx.
    LoadBalanced,
}

impl Mode {
    /// The areas a run of this mode covers.
    pub fn areas(self) -> &'static [&'static str] {
        match self {
            Mode::InMemory | Mode::Postgresql => &crate::model::AREAS,
            Mode::LoadBalanced => &["load-balancers"],
        }
    }

    /// The list of expected failures (beside `Cargo.toml`): PostgreSQL's by-design differences
    /// are listed apart, so that a regression on either backend fails its own pass.
    pub fn expected_failures(self) -> &'static str {
        match self {
            Mode::InMemory => "expected-failures.txt",
            Mode::Postgresql | Mode::LoadBalanced => "expected-failures-postgresql.txt",
        }
    }

    /// Whether other passes' entries share this mode's list (so a rewrite keeps them).
    pub fn shares_its_list(self) -> bool {
        self != Mode::InMemory
    }

    /// The report's file name under `target/conformance`.
    pub fn report(self) -> &'static str {
        match self {
            Mode::InMemory => "report.json",
            Mode::Postgresql => "report-postgresql.json",
            Mode::LoadBalanced => "report-load-balanced.json",
        }
    }
}

/// Where the runner's clients connect.
#[derive(Clone, Debug)]
pub struct Uris {
    /// Test clients and the runner's own client (with credentials in an `--auth` pass).
    pub uri: String,
    /// For clients with `useMultipleMongoses: false`, when that is another address.
    pub single: Option<String>,
    /// Whether every client connects with `loadBalanced=true`.
    pub load_balanced: bool,
    /// Where cleanup commands go besides [`Uris::uri`]: each front end behind a proxy.
    pub cleanup: Vec<String>,
}

/// The running deployment; everything stops when it is dropped (front ends first, the database
/// last).
pub struct Deployment {
    servers: Vec<ServerProcess>,
    _proxies: Vec<Nginx>,
    _cluster: Option<Cluster>,
    uris: Uris,
}

impl Deployment {
    /// Starts the deployment of `mode` from the server binary `bin`. `Ok(None)`: PostgreSQL or
    /// nginx is not installed, which has been reported as a skip.
    pub fn start(bin: &Path, mode: Mode, auth: bool) -> Result<Option<Deployment>, String> {
        const WAIT: Duration = Duration::from_secs(30);
        let mut cluster = None;
        let storage = match mode {
            Mode::InMemory => vec!["--in-memory".to_string()],
            Mode::Postgresql | Mode::LoadBalanced => {
                let url = match std::env::var("FOLIO_STORAGE") {
                    Ok(url) if !url.is_empty() => url,
                    _ => match Cluster::start() {
                        Ok(c) => cluster.insert(c).url(),
                        Err(None) => {
                            println!(
                                "SKIP conformance ({mode:?}): PostgreSQL is not installed \
                                 (`apt-get install -y postgresql`; scripts/test-services installs it)"
                            );
                            return Ok(None);
                        }
                        Err(Some(e)) => return Err(format!("cannot start PostgreSQL: {e}")),
                    },
                };
                vec!["--storage".to_string(), url]
            }
        };
        if mode != Mode::LoadBalanced {
            let server = ServerProcess::start(bin, WAIT, auth, &storage)?;
            let uris =
                Uris { uri: server.uri(), single: None, load_balanced: false, cleanup: Vec::new() };
            return Ok(Some(Deployment {
                servers: vec![server],
                _proxies: Vec::new(),
                _cluster: cluster,
                uris,
            }));
        }
        let Some(nginx) = folio_pg::testing::find_nginx() else {
            println!(
                "SKIP conformance (LoadBalanced): nginx is not installed \
                 (`apt-get install -y nginx libnginx-mod-stream`; scripts/test-services installs it)"
            );
            return Ok(None);
        };
        let args: Vec<String> = ["--loadBalanced".to_string()].into_iter().chain(storage).collect();
        let servers = vec![
            ServerProcess::start(bin, WAIT, auth, &args)?,
            ServerProcess::start(bin, WAIT, auth, &args)?,
        ];
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        let (multi, single) = (free_port()?, free_port()?);
        let proxies =
            vec![Nginx::start(&nginx, multi, &ports)?, Nginx::start(&nginx, single, &ports[..1])?];
        let address = |port: u16| format!("mongodb://127.0.0.1:{port}/");
        let uris = Uris {
            uri: address(multi),
            single: Some(address(single)),
            load_balanced: true,
            cleanup: ports.iter().map(|p| address(*p)).collect(),
        };
        Ok(Some(Deployment { servers, _proxies: proxies, _cluster: cluster, uris }))
    }

    /// Where clients connect.
    pub fn uris(&self) -> Uris {
        self.uris.clone()
    }

    /// Creates the root user of an `--auth` pass (see [`ServerProcess::create_root_user`]).
    pub async fn create_root_user(&self) -> Result<(), String> {
        for s in &self.servers {
            s.create_root_user().await?;
        }
        Ok(())
    }

    /// Whether a server process has exited.
    pub fn exited(&mut self) -> bool {
        self.servers.iter_mut().any(ServerProcess::exited)
    }
}

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
    /// Starts the server binary with `args` (storage and topology) and waits (up to `wait`)
    /// until it reports that it listens. With `auth`, the server runs with `--auth` (see
    /// [`ServerProcess::create_root_user`]).
    pub fn start(bin: &Path, wait: Duration, auth: bool, args: &[String]) -> Result<Self, String> {
        let port = free_port()?;
        let mut child = Command::new(bin)
            .args(["serve", "--port", &port.to_string(), "--setParameter", "enableTestCommands=1"])
            .args(args)
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
