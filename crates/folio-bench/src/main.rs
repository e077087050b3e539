//! `folio-bench`: Folio over the wire, Folio embedded and PostgreSQL, side by side, measured in
//! the same run on the same machine.
//!
//! ```text
//! cargo run --release -p folio-bench -- --duration 10 --clients 1,8,32 --json bench.json
//! ```
//!
//! # What is compared
//!
//! The same logical work with the same durability: every Folio commit is on disk before it is
//! acknowledged (the driver also asks for `w: "majority", j: true`), and PostgreSQL runs with its
//! defaults (`fsync=on`, `synchronous_commit=on`). Transactions are snapshot-isolated on both
//! sides (PostgreSQL `REPEATABLE READ`) and retried on each side's conflict error; the table
//! shows the retries per operation. The workloads are described in [`workload`].
//!
//! # How a run goes
//!
//! The systems run one after the other, never at the same time, so each has the machine to
//! itself. For each: start it on a temporary directory, load the data, then for each workload and
//! each client count run a warm-up and a measured window ([`runner`]), reading the server's CPU
//! time from `/proc` at both ends of the window. Then the scaling series: point read and range
//! at one client over 10k, 100k and 1M documents, with the server restarted after each load so
//! that its peak RSS reflects the reads. PostgreSQL is skipped with a message when it is not
//! installed. The machine's fsync latency is measured first, in the same temporary directory
//! tree, because it bounds what a durable commit can cost.

mod cleanup;
mod embedded;
mod pg;
mod report;
mod runner;
mod wire;
mod workload;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use report::{Report, Row, ScaleRow, System};
use runner::{Measured, Timing};
use workload::Workload;

/// Benchmarks Folio (wire and embedded) side by side with PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "folio-bench")]
struct Args {
    /// Seconds measured per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Workloads, comma-separated: order, transfer, insert, point-read, range, hot-counter.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "order,transfer,insert,point-read,range,hot-counter"
    )]
    workloads: Vec<String>,
    /// Systems, comma-separated: folio, folio-embedded, postgres.
    #[arg(long, value_delimiter = ',', default_value = "folio,folio-embedded,postgres")]
    systems: Vec<String>,
    /// Collection sizes of the scaling series (point read and range at one client).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    scaling: Vec<i64>,
    /// Skip the scaling series.
    #[arg(long)]
    no_scaling: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<std::path::PathBuf>,
}

/// The parsed plan of a run.
struct Plan {
    timing: Timing,
    clients: Vec<usize>,
    workloads: Vec<Workload>,
    /// Scaling sizes (empty: no scaling series).
    scaling: Vec<i64>,
}

impl Plan {
    /// The scaling workloads among those selected.
    fn scaling_workloads(&self) -> Vec<Workload> {
        if self.scaling.is_empty() {
            return Vec::new();
        }
        self.workloads
            .iter()
            .copied()
            .filter(|w| matches!(w, Workload::PointRead | Workload::Range))
            .collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("folio-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("folio-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the servers");
            cleanup::on_interrupt();
            std::process::exit(130);
        }
    });
    let plan = plan(&args)?;
    let systems: Vec<System> =
        args.systems.iter().map(|s| System::parse(s)).collect::<Result<_, _>>()?;
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..Report::default()
    };
    report.fsync_p50_ms = fsync_latency_ms()?;
    progress(&format!("{} logical CPUs, fsync median {:.3} ms", report.cores, report.fsync_p50_ms));
    let mut failed = Vec::new();
    for system in systems {
        let r = match system {
            System::Folio => bench_folio(&plan, &mut report).await,
            System::FolioEmbedded => bench_embedded(&plan, &mut report).await,
            System::Postgres => bench_postgres(&plan, &mut report).await,
        };
        if let Err(e) = r {
            let note = format!("{}: {e}", system.name());
            progress(&note);
            report.notes.push(note);
            failed.push(system.name().to_string());
        }
    }
    for r in report.rows.iter().filter(|r| r.m.errors > 0) {
        failed.push(format!("{} {} x{}", r.system.name(), r.workload.name(), r.clients));
    }
    for s in report.scaling.iter().filter(|s| s.m.errors > 0) {
        failed.push(format!("{} {} at {} documents", s.system.name(), s.workload.name(), s.docs));
    }
    let table = report.table();
    println!("{table}");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        // Timings are never judged, but a run that could not do its work fails.
        Err(format!("failed: {}", failed.join(", ")))
    }
}

fn plan(args: &Args) -> Result<Plan, String> {
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} must be a number of seconds"))
    };
    let timing =
        Timing { warmup: secs(args.warmup, "warmup")?, duration: secs(args.duration, "duration")? };
    if timing.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        return Err("--clients must list positive numbers".into());
    }
    let workloads =
        args.workloads.iter().map(|w| Workload::parse(w)).collect::<Result<Vec<_>, _>>()?;
    if args.scaling.iter().any(|&n| n < workload::RANGE_LEN) {
        return Err(format!("--scaling sizes must be at least {}", workload::RANGE_LEN));
    }
    let scaling = if args.no_scaling { Vec::new() } else { args.scaling.clone() };
    Ok(Plan { timing, clients: args.clients.clone(), workloads, scaling })
}

/// Prints a progress line on stderr.
fn progress(line: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{line}");
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Median of 200 × (write 4 KiB, fdatasync) on a file in the temporary directory, ms.
fn fsync_latency_ms() -> Result<f64, String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut file = std::fs::File::create(dir.path().join("fsync-probe"))
        .map_err(|e| format!("cannot create the fsync probe: {e}"))?;
    let block = [0x5au8; 4096];
    let mut us: Vec<u32> = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&block).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    us.sort_unstable();
    Ok(runner::percentile_ms(&us, 0.5))
}

/// Loads `what` with `f`, printing how long it took.
async fn timed<T>(what: &str, f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    let t = Instant::now();
    let r = f.await?;
    progress(&format!("{what}: {:.1} s", t.elapsed().as_secs_f64()));
    Ok(r)
}

fn show(system: System, w: Workload, label: &str, m: &Measured) {
    progress(&format!(
        "{} {} {label}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} retries, {} errors",
        system.name(),
        w.name(),
        m.tps,
        m.p50_ms,
        m.p99_ms,
        m.retries,
        m.errors
    ));
}

/// Folio over the wire.
async fn bench_folio(plan: &Plan, report: &mut Report) -> Result<(), String> {
    let bin = wire::folio_binary()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut server = wire::Server::start(&bin, dir.path())?;
    let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
    let client = server.client(max_clients).await?;
    timed("folio: load", wire::load(&client)).await?;
    for &w in &plan.workloads {
        for &n in &plan.clients {
            let mut clients = Vec::new();
            for _ in 0..n {
                clients.push(wire::WireClient::new(&client, workload::ITEMS).await?);
            }
            let (m, _) = runner::run_async(clients, w, workload::ITEMS, plan.timing, || {
                server.cpu_seconds()
            })
            .await;
            show(System::Folio, w, &format!("x{n}"), &m);
            report.rows.push(Row { workload: w, clients: n, system: System::Folio, m });
        }
    }
    drop(client);
    for &docs in &plan.scaling {
        let scaled = plan.scaling_workloads();
        if scaled.is_empty() {
            break;
        }
        if docs != workload::ITEMS {
            let client = server.client(1).await?;
            timed(&format!("folio: load {docs} items"), wire::load_items(&client, docs)).await?;
        }
        server.restart()?;
        let client = server.client(1).await?;
        let mut rows = Vec::new();
        for &w in &scaled {
            let clients = vec![wire::WireClient::new(&client, docs).await?];
            let (m, _) =
                runner::run_async(clients, w, docs, plan.timing, || server.cpu_seconds()).await;
            show(System::Folio, w, &format!("{docs} docs"), &m);
            rows.push((w, m));
        }
        let peak_rss = server.peak_rss();
        for (w, m) in rows {
            report.scaling.push(ScaleRow { workload: w, docs, system: System::Folio, m, peak_rss });
        }
    }
    Ok(())
}

/// Folio in-process, on blocking threads.
async fn bench_embedded(plan: &Plan, report: &mut Report) -> Result<(), String> {
    let timing = plan.timing;
    let workloads = plan.workloads.clone();
    let clients = plan.clients.clone();
    let scaling = plan.scaling.clone();
    let scaled = plan.scaling_workloads();
    let (rows, scale_rows) = tokio::task::spawn_blocking(move || {
        embedded_runs(timing, &workloads, &clients, &scaling, &scaled)
    })
    .await
    .map_err(|e| format!("embedded runs failed: {e}"))??;
    report.rows.extend(rows);
    report.scaling.extend(scale_rows);
    Ok(())
}

fn embedded_runs(
    timing: Timing,
    workloads: &[Workload],
    client_counts: &[usize],
    scaling: &[i64],
    scaled: &[Workload],
) -> Result<(Vec<Row>, Vec<ScaleRow>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let client = embedded::open(dir.path())?;
    let t = Instant::now();
    embedded::load(&client)?;
    progress(&format!("folio-embedded: load: {:.1} s", t.elapsed().as_secs_f64()));
    let me = std::process::id();
    let cpu = || runner::procfs::cpu_seconds(me);
    let mut rows = Vec::new();
    for &w in workloads {
        for &n in client_counts {
            let clients = (0..n)
                .map(|_| embedded::EmbeddedClient::new(&client, workload::ITEMS))
                .collect::<Result<Vec<_>, _>>()?;
            let m = runner::run_threads(clients, w, workload::ITEMS, timing, cpu);
            show(System::FolioEmbedded, w, &format!("x{n}"), &m);
            rows.push(Row { workload: w, clients: n, system: System::FolioEmbedded, m });
        }
    }
    let mut scale_rows = Vec::new();
    for &docs in scaling {
        if scaled.is_empty() {
            break;
        }
        if docs != workload::ITEMS {
            let t = Instant::now();
            embedded::load_items(&client, docs)?;
            progress(&format!(
                "folio-embedded: load {docs} items: {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
        for &w in scaled {
            let clients = vec![embedded::EmbeddedClient::new(&client, docs)?];
            let m = runner::run_threads(clients, w, docs, timing, cpu);
            show(System::FolioEmbedded, w, &format!("{docs} docs"), &m);
            // The process also holds the benchmark itself: no server RSS to report.
            scale_rows.push(ScaleRow {
                workload: w,
                docs,
                system: System::FolioEmbedded,
                m,
                peak_rss: None,
            });
        }
    }
    Ok((rows, scale_rows))
}

/// PostgreSQL, when installed.
async fn bench_postgres(plan: &Plan, report: &mut Report) -> Result<(), String> {
    let mut cluster = match tokio::task::spawn_blocking(pg::Cluster::start).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let note = format!("postgres skipped: {e}");
            progress(&note);
            report.notes.push(note);
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    {
        let admin = cluster.connect().await?;
        timed("postgres: load", pg::load(&admin)).await?;
    }
    for &w in &plan.workloads {
        for &n in &plan.clients {
            let mut clients = Vec::new();
            for _ in 0..n {
                clients.push(pg::PgClient::new(&cluster, workload::ITEMS).await?);
            }
            let (m, _) = runner::run_async(clients, w, workload::ITEMS, plan.timing, || {
                cluster.cpu_seconds()
            })
            .await;
            show(System::Postgres, w, &format!("x{n}"), &m);
            report.rows.push(Row { workload: w, clients: n, system: System::Postgres, m });
        }
    }
    for &docs in &plan.scaling {
        let scaled = plan.scaling_workloads();
        if scaled.is_empty() {
            break;
        }
        if docs != workload::ITEMS {
            let admin = cluster.connect().await?;
            timed(&format!("postgres: load {docs} items"), pg::load_items(&admin, docs)).await?;
        }
        cluster.restart()?;
        let mut rows = Vec::new();
        // The backends' peak RSS counts only while they live: keep the connections until read.
        let mut connections = Vec::new();
        for &w in &scaled {
            let clients = vec![pg::PgClient::new(&cluster, docs).await?];
            let (m, clients) =
                runner::run_async(clients, w, docs, plan.timing, || cluster.cpu_seconds()).await;
            show(System::Postgres, w, &format!("{docs} docs"), &m);
            rows.push((w, m));
            connections.extend(clients);
        }
        let peak_rss = cluster.peak_rss();
        drop(connections);
        for (w, m) in rows {
            report.scaling.push(ScaleRow {
                workload: w,
                docs,
                system: System::Postgres,
                m,
                peak_rss,
            });
        }
    }
    drop(cluster);
    Ok(())
}
