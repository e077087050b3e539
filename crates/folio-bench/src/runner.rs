//! Runs N clients against a system for a warm-up and a measured window, and measures the
//! server process from `/proc`.
//!
//! Every client loops over operations until the window ends. Only operations that start after
//! the warm-up and finish inside the window count: their latencies, their number (the
//! throughput) and their retries. The server's CPU time is read at the two ends of the window,
//! so loading and warm-up never count.
//!
//! Two drivers: [`run_async`] for systems reached through an async client (the MongoDB driver,
//! tokio-postgres), one tokio task per client; [`run_threads`] for the embedded API, which is
//! synchronous, one OS thread per client.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::workload::{Choice, Workload, choose};

/// The warm-up and the measured window of one run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Operations run but not counted.
    pub warmup: Duration,
    /// Operations counted.
    pub duration: Duration,
}

/// What one client measured.
#[derive(Default)]
struct ClientTally {
    /// Latency of each counted operation, in microseconds.
    latencies_us: Vec<u32>,
    /// Conflict retries of the counted operations.
    retries: u64,
    /// Operations that failed for another reason.
    errors: u64,
    /// The first such failure.
    first_error: Option<String>,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Operations completed in the window.
    pub ops: u64,
    /// Operations per second.
    pub tps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Conflict retries (a retried transaction counts once per extra attempt).
    pub retries: u64,
    /// Failed operations (not counted in `ops`).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Server CPU seconds per 1,000 operations, when the server could be measured.
    pub cpu_s_per_1k: Option<f64>,
    /// The benchmark client's own CPU seconds per 1,000 operations (the driver's share), for a
    /// system in another process; `None` for the embedded API, whose client is the server.
    pub client_cpu_s_per_1k: Option<f64>,
}

/// How long to wait before retry number `retries` (1 for the first) of a conflicted operation:
/// a random time up to 0.5 ms, doubling with each retry up to 16 ms.
///
/// Every system's clients wait the same way. It matters most where a conflict is reported
/// while the winning transaction is still open (Folio: first writer wins, detected at the
/// write): retrying at once would mostly meet the same open transaction again and spin. A
/// PostgreSQL writer instead waits on the row lock and fails only once the winner commits.
pub fn backoff(retries: u32) -> Duration {
    use rand::Rng;
    let cap_us = 500u64 << retries.saturating_sub(1).min(5);
    Duration::from_micros(rand::rng().random_range(0..=cap_us))
}

/// The random generator of client `i`: fixed seeds, so runs draw the same operations.
fn client_rng(i: usize) -> StdRng {
    StdRng::seed_from_u64(0x5eed_0000 + i as u64)
}

/// One client of an async system: runs one operation and returns its retries.
pub trait AsyncClient: Send + 'static {
    /// Runs `choice`, retrying on the system's conflict error; returns the number of retries.
    fn run(&mut self, choice: &Choice) -> impl Future<Output = Result<u32, String>> + Send;
}

/// One client of a synchronous system.
pub trait SyncClient: Send + 'static {
    /// Runs `choice`, retrying on the system's conflict error; returns the number of retries.
    fn run(&mut self, choice: &Choice) -> Result<u32, String>;
}

/// Records one operation's outcome if it started after `counted_from` and ended by `end`.
fn tally(t: &mut ClientTally, r: Result<u32, String>, start: Instant, bounds: (Instant, Instant)) {
    let now = Instant::now();
    if start < bounds.0 || now > bounds.1 {
        return;
    }
    match r {
        Ok(retries) => {
            t.latencies_us.push(now.duration_since(start).as_micros().min(u32::MAX as u128) as u32);
            t.retries += u64::from(retries);
        }
        Err(e) => {
            t.errors += 1;
            t.first_error.get_or_insert(e);
        }
    }
}

/// Runs `clients` on `workload` over `items` items, one tokio task each. `cpu` reads the
/// server's CPU seconds so far. The clients come back (those whose task did not fail), so that a
/// caller can measure the server while their connections are still open.
pub async fn run_async<C: AsyncClient>(
    clients: Vec<C>,
    workload: Workload,
    items: i64,
    timing: Timing,
    cpu: impl Fn() -> Option<f64>,
) -> (Measured, Vec<C>) {
    let t0 = Instant::now();
    let bounds = (t0 + timing.warmup, t0 + timing.warmup + timing.duration);
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut rng = client_rng(i);
            let mut t = ClientTally::default();
            while Instant::now() < bounds.1 {
                let choice = choose(workload, items, &mut rng);
                let start = Instant::now();
                let r = client.run(&choice).await;
                tally(&mut t, r, start, bounds);
            }
            (t, client)
        }));
    }
    let me = std::process::id();
    tokio::time::sleep_until(bounds.0.into()).await;
    let cpu_start = cpu();
    let client_start = procfs::cpu_seconds(me);
    tokio::time::sleep_until(bounds.1.into()).await;
    let cpu_end = cpu();
    let client_end = procfs::cpu_seconds(me);
    let mut tallies = Vec::new();
    let mut clients = Vec::new();
    for task in tasks {
        match task.await {
            Ok((t, client)) => {
                tallies.push(t);
                clients.push(client);
            }
            Err(e) => tallies.push(ClientTally {
                errors: 1,
                first_error: Some(format!("client task failed: {e}")),
                ..ClientTally::default()
            }),
        }
    }
    let mut m = summarize(tallies, timing.duration, cpu_start.zip(cpu_end));
    m.client_cpu_s_per_1k = per_1k(client_start.zip(client_end), m.ops);
    (m, clients)
}

/// Runs `clients` on `workload`, one OS thread each.
pub fn run_threads<C: SyncClient>(
    clients: Vec<C>,
    workload: Workload,
    items: i64,
    timing: Timing,
    cpu: impl Fn() -> Option<f64>,
) -> Measured {
    let t0 = Instant::now();
    let bounds = (t0 + timing.warmup, t0 + timing.warmup + timing.duration);
    let mut threads = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        threads.push(std::thread::spawn(move || {
            let mut rng = client_rng(i);
            let mut t = ClientTally::default();
            while Instant::now() < bounds.1 {
                let choice = choose(workload, items, &mut rng);
                let start = Instant::now();
                let r = client.run(&choice);
                tally(&mut t, r, start, bounds);
            }
            t
        }));
    }
    sleep_until(bounds.0);
    let cpu_start = cpu();
    sleep_until(bounds.1);
    let cpu_end = cpu();
    let tallies = threads
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| ClientTally {
                errors: 1,
                first_error: Some("client thread panicked".to_string()),
                ..ClientTally::default()
            })
        })
        .collect();
    summarize(tallies, timing.duration, cpu_start.zip(cpu_end))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Merges the clients' tallies.
fn summarize(tallies: Vec<ClientTally>, window: Duration, cpu: Option<(f64, f64)>) -> Measured {
    let mut latencies: Vec<u32> = Vec::new();
    let (mut retries, mut errors, mut first_error) = (0, 0, None);
    for t in tallies {
        latencies.extend(t.latencies_us);
        retries += t.retries;
        errors += t.errors;
        if first_error.is_none() {
            first_error = t.first_error;
        }
    }
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let cpu_s_per_1k = per_1k(cpu, ops);
    Measured {
        ops,
        tps: ops as f64 / window.as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        retries,
        errors,
        first_error,
        cpu_s_per_1k,
        client_cpu_s_per_1k: None,
    }
}

/// CPU seconds per 1,000 operations from readings at the two ends of the window.
fn per_1k(cpu: Option<(f64, f64)>, ops: u64) -> Option<f64> {
    match cpu {
        Some((a, b)) if ops > 0 => Some((b - a) * 1000.0 / ops as f64),
        _ => None,
    }
}

/// The `q` quantile (nearest rank) of sorted microsecond latencies, in milliseconds; 0 when
/// there are none.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

/// Process measurements from `/proc`.
pub mod procfs {
    use std::sync::OnceLock;

    /// Clock ticks per second (`getconf CLK_TCK`, 100 when that cannot be run).
    fn ticks_per_second() -> f64 {
        static TICKS: OnceLock<f64> = OnceLock::new();
        *TICKS.get_or_init(|| {
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(100.0)
        })
    }

    /// The fields of `/proc/<pid>/stat` after the command name: index 0 is the state.
    fn stat_fields(pid: u32) -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        Some(rest.split_whitespace().map(str::to_string).collect())
    }

    /// User plus system CPU seconds of `pid` so far.
    pub fn cpu_seconds(pid: u32) -> Option<f64> {
        let f = stat_fields(pid)?;
        // utime and stime are fields 14 and 15 of the stat line, 11 and 12 after the name.
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / ticks_per_second())
    }

    /// The parent of `pid`.
    fn parent(pid: u32) -> Option<u32> {
        stat_fields(pid)?.get(1)?.parse().ok()
    }

    /// Peak resident set size of `pid` (VmHWM), bytes.
    pub fn peak_rss(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// `pid` and its children (one level: a postmaster and its backends).
    pub fn with_children(pid: u32) -> Vec<u32> {
        let mut pids = vec![pid];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if parent(child) == Some(pid) {
                    pids.push(child);
                }
            }
        }
        pids
    }

    /// CPU seconds of `pid` and its children so far.
    pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
        let own = cpu_seconds(pid)?;
        let children: f64 = with_children(pid).into_iter().skip(1).filter_map(cpu_seconds).sum();
        Some(own + children)
    }

    /// Sum of the peak RSS of `pid` and its children (shared memory counts once per process).
    pub fn tree_peak_rss(pid: u32) -> Option<u64> {
        let pids = with_children(pid);
        Some(pids.into_iter().filter_map(peak_rss).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let us: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.50), 50.0);
        assert_eq!(percentile_ms(&us, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_ms(&[2500], 0.99), 2.5);
    }

    #[test]
    fn own_process_is_measurable() {
        let pid = std::process::id();
        let cpu = procfs::cpu_seconds(pid).expect("cpu");
        assert!(cpu >= 0.0);
        assert!(procfs::peak_rss(pid).expect("rss") > 1024 * 1024);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        for _ in 0..200 {
            assert!(backoff(1) <= Duration::from_micros(500));
            assert!(backoff(2) <= Duration::from_micros(1_000));
            assert!(backoff(40) <= Duration::from_micros(16_000));
        }
        // Random, not constant: 200 draws of the largest window are not all equal.
        let draws: std::collections::HashSet<Duration> = (0..200).map(|_| backoff(6)).collect();
        assert!(draws.len() > 1);
    }

    struct Counting(u32);
    impl SyncClient for Counting {
        fn run(&mut self, _: &Choice) -> Result<u32, String> {
            self.0 += 1;
            std::thread::sleep(Duration::from_millis(1));
            if self.0.is_multiple_of(10) { Err("boom".into()) } else { Ok(1) }
        }
    }

    #[test]
    fn threads_count_only_the_window() {
        let timing =
            Timing { warmup: Duration::from_millis(50), duration: Duration::from_millis(200) };
        let m =
            run_threads(vec![Counting(0), Counting(0)], Workload::PointRead, 100, timing, || {
                Some(1.0)
            });
        // Two clients at about 1 ms each over 200 ms: at most ~400 counted, and not none.
        assert!(m.ops > 20 && m.ops <= 420, "ops {}", m.ops);
        assert_eq!(m.retries, m.ops);
        assert!(m.errors > 0);
        assert_eq!(m.first_error.as_deref(), Some("boom"));
        assert!(m.p50_ms >= 1.0);
        assert_eq!(m.cpu_s_per_1k, Some(0.0));
    }
}
