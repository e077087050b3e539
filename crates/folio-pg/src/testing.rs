//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, `pg_ctl start` on a free
//! port of 127.0.0.1 (its unix socket in the same directory), stopped and removed when dropped.
//! Used by the tests of this crate and of `folio-cli`, by folio-bench's PostgreSQL baseline and
//! `folio-pg` system, and by the conformance runner's PostgreSQL and load-balanced passes. Also
//! [`Nginx`], Debian's nginx as a TCP load balancer in front of front ends on loopback.
//!
//! Default settings otherwise (`fsync = on`, `synchronous_commit = on`), as a production
//! server. `initdb` refuses to run as root, so as root the programs run as the `postgres` user
//! (or `nobody`) through `runuser`, and the directory belongs to that user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the PostgreSQL binaries are: `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// The unprivileged user to run PostgreSQL as when we are root: (name, uid, gid).
fn unprivileged_user() -> Option<(String, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == wanted {
                let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else { continue };
                return Some((wanted.to_string(), uid, gid));
            }
        }
    }
    None
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running throwaway cluster.
pub struct Cluster {
    bin: PathBuf,
    /// Run the programs as this user (when we are root).
    user: Option<String>,
    /// Holds the data directory, the log and the socket; removed on drop.
    dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    running: bool,
}

impl Cluster {
    /// Creates and starts a cluster for a test, or says why it cannot (`Err(None)`: PostgreSQL
    /// is not installed; `Err(Some(reason))`: it is, but failed).
    pub fn start() -> Result<Cluster, Option<String>> {
        let mut cluster = Cluster::create("folio-pg-test-")?;
        cluster.initdb().map_err(Some)?;
        cluster.start_server(300).map_err(Some)?;
        Ok(cluster)
    }

    /// The first step of [`Cluster::start`]: the temporary directory (named `prefix…`, handed to
    /// the unprivileged user when we are root) and a free port; nothing is initialized or
    /// running yet. `Err(None)`: PostgreSQL is not installed.
    pub fn create(prefix: &str) -> Result<Cluster, Option<String>> {
        let bin = find_bin_dir().ok_or(None)?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| Some(format!("cannot create a temporary directory: {e}")))?;
        let user = if is_root() {
            let (name, uid, gid) = unprivileged_user().ok_or_else(|| {
                Some("running as root and no postgres or nobody user to run PostgreSQL as".into())
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| {
                Some(format!("cannot hand {} to {name}: {e}", dir.path().display()))
            })?;
            Some(name)
        } else {
            None
        };
        let port = free_port().map_err(|e| Some(format!("no free port: {e}")))?;
        Ok(Cluster { bin, user, dir, port, running: false })
    }

    /// Creates the database cluster in the data directory (`initdb`, trust authentication,
    /// superuser `postgres`, UTF-8, C locale).
    pub fn initdb(&self) -> Result<(), String> {
        let data = self.data_dir();
        self.pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"],
        )
    }

    /// Starts the server (`pg_ctl start`, waiting up to a minute) with at most
    /// `max_connections` connections.
    pub fn start_server(&mut self, max_connections: u32) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections={max_connections}",
            self.port,
            self.dir.path().display()
        );
        self.pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start"])?;
        self.running = true;
        Ok(())
    }

    /// Stops the server if it runs, with `pg_ctl`'s shutdown `mode` (`fast`, `immediate`).
    pub fn stop_server(&mut self, mode: &str) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let data = self.data_dir();
        self.pg("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"])
    }

    /// The connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory of the PostgreSQL programs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The user the programs run as (when we are root).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The temporary directory holding the data directory, the log and the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one PostgreSQL program, as the unprivileged user when there is one.
    fn pg(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_server("immediate") {
            eprintln!("warning: {e}");
        }
    }
}

/// Starts a cluster for a test, or returns `None` after printing a loud message when
/// PostgreSQL is not installed (`scripts/test` installs it; a failure to start is a panic).
pub fn cluster_or_skip(test: &str) -> Option<Cluster> {
    match Cluster::start() {
        Ok(c) => Some(c),
        Err(None) => {
            eprintln!(
                "\n*** SKIPPED {test}: PostgreSQL is not installed (no initdb on PATH or in \
                 /usr/lib/postgresql/*/bin); `apt-get install -y postgresql` ***\n"
            );
            None
        }
        Err(Some(reason)) => panic!("cannot start PostgreSQL for {test}: {reason}"),
    }
}

/// nginx as a TCP load balancer (its `stream` module), in the foreground, with its files in a
/// temporary directory; stopped when dropped.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_nginx(&mut self.child);
    }
}

/// Stops nginx with SIGTERM (fast shutdown): the master then stops its workers, where SIGKILL
/// would leave them running, still holding the listening socket.
fn stop_nginx(child: &mut Child) {
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The nginx program, if installed (`/usr/sbin/nginx` or on `PATH`).
pub fn find_nginx() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nginx")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

impl Nginx {
    /// Starts nginx (`bin`) listening on 127.0.0.1:`listen` and spreading connections over the
    /// `backends` ports of 127.0.0.1 (round robin; a backend that refuses a connection is left
    /// out for two seconds); returns once it accepts connections.
    pub fn start(bin: &Path, listen: u16, backends: &[u16]) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
        let load = if Path::new(module).is_file() {
            format!("load_module {module};")
        } else {
            String::new()
        };
        let servers: String = backends
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "{load}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             stream {{\n  upstream folio {{\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{listen};\n    \
             proxy_pass folio;\n    proxy_connect_timeout 1s;\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| format!("write nginx.conf: {e}"))?;
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        // Ready when it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return Ok(Nginx { child, _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_nginx(&mut child);
        Err(format!("nginx did not start listening on {listen}"))
    }
}
