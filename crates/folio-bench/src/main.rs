//! `folio-bench`: Folio over the wire, Folio embedded and PostgreSQL, side by side, measured in
//! the same run on the same machine; and Folio over PostgreSQL storage (`folio-pg`: one front
//! end; `folio-pg-2`: two front ends over the one database, the clients spread over both), which
//! shows what the extra layer costs over PostgreSQL itself and how throughput grows with front
//! ends.
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
//! All the systems are started on temporary directories and loaded first; idle, they cost
//! nothing. Then for each workload and client count every system runs back to back, a warm-up
//! and a measured window each ([`runner`]), with the server's CPU time read from `/proc` at both
//! ends of the window: on a machine shared with other work, a change of load falls on all the
//! systems alike instead of on whichever ran at the time. Then the scaling series: point read
//! and range at one client over 10k, 100k and 1M documents, each server restarted after its
//! load so that its peak RSS reflects the reads. PostgreSQL is skipped with a message when it is not
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

/// The allocator the `folio` binary uses, so that the embedded rows measure what the server
/// runs (docs/performance.md, "Eighth round").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Workloads, comma-separated: ping, order, transfer, insert, bulk-insert, update,
    /// point-read, range, hot-counter.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ping,order,transfer,insert,bulk-insert,update,point-read,range,hot-counter"
    )]
    workloads: Vec<String>,
    /// Systems, comma-separated: folio, folio-embedded, postgres, folio-pg, folio-pg-2.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "folio,folio-embedded,postgres,folio-pg,folio-pg-2"
    )]
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
    /// Also print each row's change against this JSON file of an earlier run (`--json`).
    #[arg(long)]
    compare: Option<std::path::PathBuf>,
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
    // The baseline is read first, so that a wrong path fails before the run, not after it.
    let baseline =
        match &args.compare {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    format!("{} is not a folio-bench JSON file: {e}", path.display())
                })?)
            }
            None => None,
        };
    let systems: Vec<System> =
        args.systems.iter().map(|s| System::parse(s)).collect::<Result<_, _>>()?;
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..Report::default()
    };
    report.fsync_p50_ms = fsync_latency_ms()?;
    report.loadavg.0 = loadavg();
    progress(&format!("{} logical CPUs, fsync median {:.3} ms", report.cores, report.fsync_p50_ms));
    let mut failed = Vec::new();
    let mut running = Systems::start(&systems, &plan, &mut report, &mut failed).await;
    bench(&plan, &mut running, &mut report, &mut failed).await;
    drop(running);
    report.loadavg.1 = loadavg();
    for r in report.rows.iter().filter(|r| r.m.errors > 0) {
        failed.push(format!("{} {} x{}", r.system.name(), r.workload.name(), r.clients));
    }
    for s in report.scaling.iter().filter(|s| s.m.errors > 0) {
        failed.push(format!("{} {} at {} documents", s.system.name(), s.workload.name(), s.docs));
    }
    let table = report.table();
    println!("{table}");
    if let Some(baseline) = &baseline {
        println!("{}", report.compare(baseline));
    }
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

/// The 1-minute load average (0 when unknown).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
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

/// The systems under test, started and loaded.
#[derive(Default)]
struct Systems {
    /// `folio serve` and a driver client with a pool for the most clients.
    folio: Option<(wire::Server, mongodb::Client)>,
    /// The embedded instance.
    embedded: Option<folio::api::Client>,
    /// The PostgreSQL cluster.
    postgres: Option<pg::Cluster>,
    /// Folio front ends over their own PostgreSQL cluster, and which of the two systems on them
    /// were selected.
    folio_pg: Option<PgFrontEnds>,
    pg_systems: Vec<System>,
    /// Data directories, removed when the run ends (after the servers stop).
    _dirs: Vec<tempfile::TempDir>,
}

impl Systems {
    /// Starts every selected system and loads the main data. A system that cannot start is
    /// left out with a note; PostgreSQL missing from the machine is a skip, not a failure.
    async fn start(
        selected: &[System],
        plan: &Plan,
        report: &mut Report,
        failed: &mut Vec<String>,
    ) -> Systems {
        let mut systems = Systems::default();
        for &system in selected {
            let r = match system {
                System::Folio => systems.start_folio(plan).await,
                System::FolioEmbedded => systems.start_embedded().await,
                System::Postgres => systems.start_postgres(report).await,
                System::FolioPg | System::FolioPg2 => {
                    systems.pg_systems.push(system);
                    systems.start_folio_pg(plan, report).await
                }
            };
            if let Err(e) = r {
                let note = format!("{}: {e}", system.name());
                progress(&note);
                report.notes.push(note);
                failed.push(system.name().to_string());
            }
        }
        systems
    }

    async fn start_folio(&mut self, plan: &Plan) -> Result<(), String> {
        let bin = wire::folio_binary()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        cleanup::register_dir(dir.path());
        let server = wire::Server::start(&bin, dir.path())?;
        self._dirs.push(dir);
        let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
        let client = server.client(max_clients).await?;
        timed("folio: load", wire::load(&client)).await?;
        self.folio = Some((server, client));
        Ok(())
    }

    async fn start_embedded(&mut self) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        cleanup::register_dir(dir.path());
        let path = dir.path().to_path_buf();
        self._dirs.push(dir);
        let client = timed("folio-embedded: load", async move {
            tokio::task::spawn_blocking(move || {
                let client = embedded::open(&path)?;
                embedded::load(&client)?;
                Ok(client)
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await?;
        self.embedded = Some(client);
        Ok(())
    }

    async fn start_postgres(&mut self, report: &mut Report) -> Result<(), String> {
        let Some(cluster) = start_cluster("postgres", report).await? else {
            return Ok(());
        };
        let admin = cluster.connect().await?;
        timed("postgres: load", pg::load(&admin)).await?;
        self.postgres = Some(cluster);
        Ok(())
    }

    /// Two front ends over one throwaway cluster, loaded once (both Folio-over-PostgreSQL systems
    /// run on them); PostgreSQL missing from the machine is a skip.
    async fn start_folio_pg(&mut self, plan: &Plan, report: &mut Report) -> Result<(), String> {
        if self.folio_pg.is_some() {
            return Ok(());
        }
        let Some(cluster) = start_cluster("folio-pg", report).await? else {
            return Ok(());
        };
        let bin = wire::folio_binary()?;
        let url = cluster.url();
        let servers =
            vec![wire::Server::start_pg(&bin, &url)?, wire::Server::start_pg(&bin, &url)?];
        let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
        let mut clients = Vec::new();
        for server in &servers {
            clients.push(server.client(max_clients).await?);
        }
        timed("folio-pg: load", wire::load(&clients[0])).await?;
        self.folio_pg =
            Some(PgFrontEnds { servers, clients, cluster, loaded: vec![workload::ITEMS] });
        Ok(())
    }

    /// The systems that started, in run order.
    fn running(&self) -> Vec<System> {
        let mut v = Vec::new();
        if self.folio.is_some() {
            v.push(System::Folio);
        }
        if self.embedded.is_some() {
            v.push(System::FolioEmbedded);
        }
        if self.postgres.is_some() {
            v.push(System::Postgres);
        }
        if self.folio_pg.is_some() {
            v.extend(&self.pg_systems);
        }
        v
    }

    /// Runs `w` with `n` clients over the items collection of size `items` on `system`. Returns
    /// the measurements and the server's peak RSS at the end of the run (for PostgreSQL read
    /// while the clients' backends still live).
    async fn run(
        &self,
        system: System,
        w: Workload,
        n: usize,
        items: i64,
        timing: Timing,
    ) -> Result<(Measured, Option<u64>), String> {
        match system {
            System::Folio => {
                let (server, client) = self.folio.as_ref().ok_or("folio is not running")?;
                let mut clients = Vec::new();
                for _ in 0..n {
                    clients.push(wire::WireClient::new(client, items).await?);
                }
                let (m, _) =
                    runner::run_async(clients, w, items, timing, || server.cpu_seconds()).await;
                Ok((m, server.peak_rss()))
            }
            System::FolioEmbedded => {
                let client = self.embedded.as_ref().ok_or("folio-embedded is not running")?;
                let clients = (0..n)
                    .map(|_| embedded::EmbeddedClient::new(client, items))
                    .collect::<Result<Vec<_>, _>>()?;
                let me = std::process::id();
                let m = tokio::task::spawn_blocking(move || {
                    runner::run_threads(clients, w, items, timing, || {
                        runner::procfs::cpu_seconds(me)
                    })
                })
                .await
                .map_err(|e| e.to_string())?;
                // The process also holds the benchmark itself: no server RSS to report.
                Ok((m, None))
            }
            System::Postgres => {
                let cluster = self.postgres.as_ref().ok_or("postgres is not running")?;
                let mut clients = Vec::new();
                for _ in 0..n {
                    clients.push(pg::PgClient::new(cluster, items).await?);
                }
                let (m, clients) =
                    runner::run_async(clients, w, items, timing, || cluster.cpu_seconds()).await;
                let rss = cluster.peak_rss();
                drop(clients);
                Ok((m, rss))
            }
            System::FolioPg | System::FolioPg2 => {
                let fe = self.folio_pg.as_ref().ok_or("folio-pg is not running")?;
                let used = if system == System::FolioPg { 1 } else { 2 };
                let mut clients = Vec::new();
                for i in 0..n {
                    clients.push(wire::WireClient::new(&fe.clients[i % used], items).await?);
                }
                let servers = &fe.servers[..used];
                // The front ends' CPU and the database's, per operation.
                let cpu = || {
                    let fronts: Option<f64> = servers.iter().map(wire::Server::cpu_seconds).sum();
                    Some(fronts? + fe.cluster.cpu_seconds()?)
                };
                let (m, _) = runner::run_async(clients, w, items, timing, cpu).await;
                let rss: Option<u64> = servers.iter().map(wire::Server::peak_rss).sum();
                Ok((m, rss))
            }
        }
    }

    /// Loads the items collection of size `docs` into `system` and restarts its server, so that
    /// the peak RSS measured next reflects the reads, not the load.
    async fn prepare_scaling(&mut self, system: System, docs: i64) -> Result<(), String> {
        let what = format!("{}: load {docs} items", system.name());
        match system {
            System::Folio => {
                let (server, client) = self.folio.as_mut().ok_or("folio is not running")?;
                if docs != workload::ITEMS {
                    timed(&what, wire::load_items(client, docs)).await?;
                }
                server.restart()?;
                *client = server.client(1).await?;
            }
            System::FolioEmbedded => {
                let client = self.embedded.clone().ok_or("folio-embedded is not running")?;
                if docs != workload::ITEMS {
                    timed(&what, async move {
                        tokio::task::spawn_blocking(move || embedded::load_items(&client, docs))
                            .await
                            .map_err(|e| e.to_string())?
                    })
                    .await?;
                }
            }
            System::Postgres => {
                let cluster = self.postgres.as_mut().ok_or("postgres is not running")?;
                if docs != workload::ITEMS {
                    let admin = cluster.connect().await?;
                    timed(&what, pg::load_items(&admin, docs)).await?;
                }
                cluster.restart()?;
            }
            System::FolioPg | System::FolioPg2 => {
                let fe = self.folio_pg.as_mut().ok_or("folio-pg is not running")?;
                // Both systems read the same database: load each size once.
                if !fe.loaded.contains(&docs) {
                    timed(&what, wire::load_items(&fe.clients[0], docs)).await?;
                    fe.loaded.push(docs);
                }
                for (server, client) in fe.servers.iter_mut().zip(&mut fe.clients) {
                    server.restart()?;
                    *client = server.client(1).await?;
                }
            }
        }
        Ok(())
    }
}

/// A throwaway PostgreSQL cluster for `system`, or `None` with a note when PostgreSQL is not
/// installed (a skip, not a failure).
async fn start_cluster(system: &str, report: &mut Report) -> Result<Option<pg::Cluster>, String> {
    match tokio::task::spawn_blocking(pg::Cluster::start).await {
        Ok(Ok(c)) => Ok(Some(c)),
        Ok(Err(e)) => {
            let note = format!("{system} skipped: {e}");
            progress(&note);
            report.notes.push(note);
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Folio over PostgreSQL storage: two `folio serve --storage` front ends over one throwaway
/// cluster, with a driver client each (the `folio-pg` system uses the first, `folio-pg-2` both).
/// The front ends stop before the cluster.
struct PgFrontEnds {
    servers: Vec<wire::Server>,
    clients: Vec<mongodb::Client>,
    cluster: pg::Cluster,
    /// The sizes of the items collections loaded so far.
    loaded: Vec<i64>,
}

/// Runs the main matrix and the scaling series, interleaving the systems: for each workload and
/// client count every system runs back to back, so that a change in the machine's load (other
/// processes, the disk) falls on all of them alike.
async fn bench(plan: &Plan, systems: &mut Systems, report: &mut Report, failed: &mut Vec<String>) {
    let running = systems.running();
    for &w in &plan.workloads {
        for &n in &plan.clients {
            for &system in &running {
                match systems.run(system, w, n, workload::ITEMS, plan.timing).await {
                    Ok((m, _)) => {
                        show(system, w, &format!("x{n}"), &m);
                        report.rows.push(Row { workload: w, clients: n, system, m });
                    }
                    Err(e) => {
                        progress(&format!("{} {} x{n}: {e}", system.name(), w.name()));
                        failed.push(format!("{} {} x{n}: {e}", system.name(), w.name()));
                    }
                }
            }
        }
    }
    let scaled = plan.scaling_workloads();
    if scaled.is_empty() {
        return;
    }
    for &docs in &plan.scaling {
        for &system in &running {
            if let Err(e) = systems.prepare_scaling(system, docs).await {
                progress(&format!("{}: {e}", system.name()));
                failed.push(format!("{} scaling at {docs}: {e}", system.name()));
                continue;
            }
            let mut rows = Vec::new();
            let mut peak_rss = None;
            for &w in &scaled {
                match systems.run(system, w, 1, docs, plan.timing).await {
                    Ok((m, rss)) => {
                        show(system, w, &format!("{docs} docs"), &m);
                        peak_rss = peak_rss.max(rss);
                        rows.push((w, m));
                    }
                    Err(e) => failed.push(format!("{} {} at {docs}: {e}", system.name(), w.name())),
                }
            }
            for (w, m) in rows {
                report.scaling.push(ScaleRow { workload: w, docs, system, m, peak_rss });
            }
        }
    }
}
