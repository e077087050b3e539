//! The `folio` binary: `folio serve` runs the MongoDB-compatible server; `folio dump` and
//! `folio restore` back up and restore in mongodump's formats ([`backup`]); `folio verify`
//! checks a data directory offline.
//!
//! Startup is: parse flags and the config file ([`config::resolve`]), open the store
//! ([`store::open_store`]), build the command service, bind the listeners, print one
//! `folio listening on ADDR` line on stdout (scripts and tests wait for it) and then one JSON
//! ready line for programs (`{"ready":true,"uri":...,"port":...,"pid":...}`), then serve until
//! SIGTERM or SIGINT (or, with `--exit-on-stdin-close`, until standard input ends). Logs go to
//! stderr through `tracing`; `RUST_LOG` adjusts the level.

mod backup;
mod config;
mod exporter;
mod log;
mod offline;
mod store;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use folio::{Service, ServiceOptions};
use folio_server::{Server, ServerConfig};

/// mimalloc rather than the C library's allocator: a command builds and drops many small
/// values (documents, keys, replies), and glibc's malloc and free were a third of the server's
/// instructions (docs/performance.md, "Eighth round"). Its defaults for large values and arena
/// sizes are set at build time in `.cargo/config.toml`, so that a capped address space holds
/// (crates/folio-cli/tests/memory_limits.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Folio: a MongoDB-compatible document database with multi-document ACID transactions.
#[derive(Parser, Debug)]
#[command(name = "folio", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (mongod-like flags).
    Serve(Box<config::ServeArgs>),
    /// Back up a server (--uri) or a data directory (--dbpath) in mongodump's formats.
    Dump(backup::dump::DumpArgs),
    /// Restore a dump in mongodump's formats into a server (--uri) or a data directory.
    Restore(backup::restore::RestoreArgs),
    /// Check that every index of a data directory agrees with its documents.
    Verify {
        /// The data directory.
        #[arg(long, value_name = "DIR", default_value = "./data")]
        dbpath: PathBuf,
    },
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(&args, &argv),
        Command::Dump(args) => dump(&args),
        Command::Restore(args) => backup::restore::run(&args).map(|_| ()),
        Command::Verify { dbpath } => verify(&dbpath),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("folio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Rotates the log file on SIGUSR1, as mongod does.
fn spawn_log_rotation_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    match folio::recent_log::rotate() {
                        Ok(()) => tracing::info!(log_id = 23166, "Log rotation initiated"),
                        Err(e) => tracing::warn!("log rotation failed: {e}"),
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot handle SIGUSR1 for log rotation: {e}"),
    }
}

/// `folio dump`.
fn dump(args: &backup::dump::DumpArgs) -> Result<(), String> {
    let summary = backup::dump::run(args)?;
    eprintln!("dumped {} document(s) of {} namespace(s)", summary.documents, summary.namespaces);
    Ok(())
}

/// `folio verify`: exits with failure when any index disagrees with the documents.
fn verify(dbpath: &std::path::Path) -> Result<(), String> {
    let problems = offline::verify(dbpath)?;
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("{}: all indexes agree with the documents", dbpath.display());
        Ok(())
    } else {
        Err(format!("{} problem(s) found", problems.len()))
    }
}

/// `folio serve`.
fn serve(args: &config::ServeArgs, argv: &[String]) -> Result<(), String> {
    let settings = config::resolve(args, argv)?;
    log::init(&settings.log)?;
    folio::set_limits(settings.operation_memory_bytes, settings.server_memory_bytes);
    let store = match &settings.storage_url {
        Some(url) => store::open_shared_store(url),
        None => {
            store::open_store_with_cache(&settings.dbpath, settings.in_memory, settings.cache_bytes)
        }
    }
    .map_err(|e| e.to_string())?;
    let mut options = ServiceOptions {
        repl_set_name: settings.repl_set.clone(),
        advertise_host: settings.advertise_host.clone(),
        test_commands: settings.test_commands,
        transaction_lifetime_secs: settings.transaction_lifetime_secs,
        max_conns: settings.max_conns,
        cmd_line: settings.cmd_line.clone(),
        ttl_monitor_enabled: settings.ttl_monitor_enabled,
        ttl_monitor_sleep_secs: settings.ttl_monitor_sleep_secs,
        slow_ms: settings.slow_ms,
        slow_op_sample_rate: settings.slow_op_sample_rate,
        profile_level: settings.profile_level,
        auth: settings.auth,
        auth_mechanisms: settings.auth_mechanisms.clone(),
        localhost_auth_bypass: settings.localhost_auth_bypass,
        oplog_size_mb: settings.oplog_size_mb,
        oplog_min_retention_hours: settings.oplog_min_retention_hours,
        load_balanced: settings.load_balanced,
    };
    let tls = match folio_server::TlsMode::parse(&settings.tls.mode)? {
        None => None,
        Some(mode) => {
            let file = settings
                .tls
                .certificate_key_file
                .as_deref()
                .ok_or("--tlsMode needs --tlsCertificateKeyFile")?;
            let clients = folio_server::tls::ClientCertificates {
                ca_file: settings.tls.ca_file.as_deref(),
                allow_without: settings.tls.allow_connections_without_certificates,
                allow_invalid: settings.tls.allow_invalid_certificates,
            };
            Some(folio_server::TlsConfig::load(mode, file, &clients).map_err(|e| e.to_string())?)
        }
    };
    let server_config = ServerConfig {
        bind_ips: settings.bind_ips.clone(),
        port: settings.port,
        max_conns: settings.max_conns,
        tls,
        ..ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("folio-net")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let server = Server::bind_then(server_config, |addrs| {
            // `--port 0` lets the system choose: advertise the port it chose, so that a driver
            // that follows `hello`'s `hosts` (no `directConnection`) can connect.
            if let (Some(host), Some(addr)) =
                (options.advertise_host.strip_suffix(":0"), addrs.first())
            {
                options.advertise_host = format!("{host}:{}", addr.port());
            }
            let service = Service::new(store, options).map_err(std::io::Error::other)?;
            Ok(Arc::new(service))
        })
        .await
        .map_err(|e| e.to_string())?;
        let advertise_host = server.service().options().advertise_host.clone();
        let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
        tracing::info!(
            dbpath = %settings.dbpath.display(),
            in_memory = settings.in_memory,
            auth = settings.auth,
            tls = %settings.tls.mode,
            repl_set = %settings.repl_set,
            advertise_host = %advertise_host,
            "folio {} starting",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(port) = settings.metrics_port {
            let ip: std::net::IpAddr = settings
                .bind_ips
                .first()
                .and_then(|ip| ip.parse().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            let dbpath = (!settings.in_memory && settings.storage_url.is_none())
                .then(|| settings.dbpath.clone());
            let bound =
                exporter::serve(server.service().clone(), (ip, port).into(), dbpath).await?;
            tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
        }
        spawn_log_rotation_signal();
        if !settings.auth && !config::loopback_only(&settings.bind_ips) {
            // mongod's startup warning for the same situation.
            tracing::warn!(
                bind_ip = %settings.bind_ips.join(","),
                "Access control is not enabled for the database. Read and write access to data \
                 and configuration is unrestricted, and this server is bound to a non-loopback \
                 address: anyone who can reach it can read and change every database. Start it \
                 with --auth (security.authorization: enabled) after creating a user."
            );
        }
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "folio listening on {}", addrs.join(", "));
        if let Some(first) = server.local_addrs().first() {
            let _ = writeln!(stdout, "{}", ready_line(first, &settings.repl_set));
        }
        let _ = stdout.flush();
        log::started();
        let stdin_closed = if args.exit_on_stdin_close { Some(watch_stdin()?) } else { None };
        let shutdown = async move {
            match stdin_closed {
                Some(closed) => tokio::select! {
                    () = folio_server::shutdown_signal() => {}
                    _ = closed => tracing::info!("standard input closed: shutting down"),
                },
                None => folio_server::shutdown_signal().await,
            }
        };
        server.run(shutdown).await.map_err(|e| e.to_string())
    })
}

/// The machine-readable ready line: the URI a driver should use, the port and the process id.
/// A wildcard listen address is reached through the loopback address.
fn ready_line(addr: &std::net::SocketAddr, repl_set: &str) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let port = addr.port();
    serde_json::json!({
        "ready": true,
        "uri": format!("mongodb://{ip}:{port}/?replicaSet={repl_set}"),
        "port": port,
        "pid": std::process::id(),
    })
    .to_string()
}

/// Resolves when standard input reaches its end or fails: a thread blocks reading it (tokio's
/// stdin is a blocking thread too), discarding what it reads.
fn watch_stdin() -> Result<tokio::sync::oneshot::Receiver<()>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("folio-stdin".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        })
        .map_err(|e| format!("cannot watch standard input: {e}"))?;
    Ok(rx)
}
