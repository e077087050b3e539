//! The `folio` binary: `folio serve` runs the MongoDB-compatible server; `folio dump` and
//! `folio verify` read a data directory offline.
//!
//! Startup is: parse flags and the config file ([`config::resolve`]), open the store
//! ([`store::open_store`]), build the command service, bind the listeners, print one
//! `folio listening on ADDR` line on stdout (scripts and tests wait for it), then serve until
//! SIGTERM or SIGINT. Logs go to stderr through `tracing`; `RUST_LOG` adjusts the level.

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
use folio::command::{Service, ServiceOptions};
use folio_server::{Server, ServerConfig};

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
    /// Write every document of a data directory as JSON lines: {"ns": "db.coll", "doc": {...}}.
    Dump {
        /// The data directory.
        #[arg(long, value_name = "DIR", default_value = "./data")]
        dbpath: PathBuf,
        /// Only this database.
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
    },
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
        Command::Dump { dbpath, db } => dump(&dbpath, db.as_deref()),
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
                    match folio::command::recent_log::rotate() {
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
fn dump(dbpath: &std::path::Path, db: Option<&str>) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = offline::dump(dbpath, db, &mut out)?;
    out.flush().map_err(|e| format!("cannot write the dump: {e}"))?;
    tracing::info!("dumped {n} documents");
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
    folio::memory::set_limits(settings.operation_memory_bytes, settings.server_memory_bytes);
    let store = match &settings.storage_url {
        Some(url) => store::open_shared_store(url),
        None => store::open_store(&settings.dbpath, settings.in_memory),
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
        load_balanced: settings.load_balanced,
    };
    let server_config = ServerConfig {
        bind_ips: settings.bind_ips.clone(),
        port: settings.port,
        max_conns: settings.max_conns,
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
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "folio listening on {}", addrs.join(", "));
        let _ = stdout.flush();
        log::started();
        server.run(folio_server::shutdown_signal()).await.map_err(|e| e.to_string())
    })
}
