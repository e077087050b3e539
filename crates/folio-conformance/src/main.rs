//! `folio-conformance`: runs MongoDB's unified-format driver specification tests against a Folio server.
//!
//! Usage: `folio-conformance [SPEC_DIR] [--filter TEXT] [--area NAME]... [--write-expected-failures]
//! [--auth | --postgresql | --load-balanced]`.
//!
//! The spec tests are not part of the repository (their license forbids it): they are read from `SPEC_DIR`,
//! else `$FOLIO_SPEC_TESTS`, else `../shared/spec-tests` next to the repository; when none exists the run is
//! skipped with a message and exit code 0 (an error under `FOLIO_REQUIRE_SPEC_TESTS=1`, as in CI). The
//! server is a separate process of the built binary (`$FOLIO_BIN`, default `target/release/folio`), started
//! once for the whole run.
//!
//! The output is one line per test, a summary line per area and a closing total, plus a JSON report in
//! `target/conformance/report.json`. With `--auth` the server runs with `--auth`, only the tests
//! that require authentication run, and the report is `target/conformance/report-auth.json`.
//!
//! Storage and topology (see [`server::Deployment`]): in memory by default. `--postgresql` runs the
//! server on PostgreSQL (`FOLIO_STORAGE=postgresql://...`, else a throwaway cluster the runner
//! starts); `--load-balanced` runs the `load-balancers` area through nginx in front of two
//! `--loadBalanced` front ends on PostgreSQL. Both compare with `expected-failures-postgresql.txt`
//! (the by-design differences of that backend) and report to `report-postgresql.json` /
//! `report-load-balanced.json`; without PostgreSQL or nginx installed they print a SKIP line and
//! exit 0. `--area` limits a run to some areas.
//!
//! The exit code compares the run with the checked-in expected failures: it is non-zero when a
//! test outside the list fails, and also when a listed test passes, so that the list can only
//! shrink.

mod expected;
mod matcher;
mod model;
mod ops;
mod requirements;
mod retry;
mod runner;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::expected::ExpectedFailures;
use crate::runner::{Outcome, Runner};

/// How long one test may take before it counts as failed.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The repository root (this crate lives in `crates/folio-conformance`).
fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Command-line options.
struct Cli {
    spec_dir: PathBuf,
    filter: Option<String>,
    write_expected: bool,
    /// `--auth`: the server runs with `--auth` and only tests that need authentication run.
    auth: bool,
    /// The deployment under test.
    mode: server::Mode,
    /// `--area`: the areas to run (all of the mode's when empty).
    areas: Vec<String>,
}

const USAGE: &str = "usage: folio-conformance [SPEC_DIR] [--filter TEXT] [--area NAME]... \
                     [--write-expected-failures] [--auth | --postgresql | --load-balanced]";

fn parse_cli() -> Result<Cli, String> {
    let mut spec_dir = None;
    let mut filter = None;
    let mut write_expected = false;
    let mut auth = false;
    let mut mode = server::Mode::InMemory;
    let mut areas = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--write-expected-failures" => write_expected = true,
            "--auth" => auth = true,
            "--postgresql" => mode = server::Mode::Postgresql,
            "--load-balanced" => mode = server::Mode::LoadBalanced,
            "--filter" => filter = Some(args.next().ok_or("--filter needs a value")?),
            "--area" => areas.push(args.next().ok_or("--area needs a value")?),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => spec_dir = Some(PathBuf::from(s)),
        }
    }
    // FOLIO_STORAGE alone runs the ordinary pass on that database, as before.
    if mode == server::Mode::InMemory && std::env::var("FOLIO_STORAGE").is_ok_and(|u| !u.is_empty())
    {
        mode = server::Mode::Postgresql;
    }
    if auth && mode != server::Mode::InMemory {
        return Err("--auth runs in memory only".into());
    }
    let known = mode.areas();
    if let Some(a) = areas.iter().find(|a| !known.contains(&a.as_str())) {
        return Err(format!("unknown area {a} for this mode (areas: {})", known.join(", ")));
    }
    let spec_dir = spec_dir
        .or_else(|| std::env::var_os("FOLIO_SPEC_TESTS").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("../shared/spec-tests"));
    Ok(Cli { spec_dir, filter, write_expected, auth, mode, areas })
}

/// One test's result, as printed and reported.
struct TestRecord {
    area: String,
    key: String,
    outcome: Outcome,
}

#[tokio::main]
async fn main() {
    let code = match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("folio-conformance: {e}");
            2
        }
    };
    std::process::exit(code);
}

async fn run() -> Result<i32, String> {
    let cli = parse_cli()?;
    if !cli.spec_dir.is_dir() {
        // CI sets FOLIO_REQUIRE_SPEC_TESTS=1: there, every pass must run them, not skip.
        if std::env::var("FOLIO_REQUIRE_SPEC_TESTS").is_ok_and(|v| v == "1") {
            return Err(format!(
                "no spec tests at {} and FOLIO_REQUIRE_SPEC_TESTS=1",
                cli.spec_dir.display()
            ));
        }
        println!(
            "SKIP conformance: no spec tests at {} (set FOLIO_SPEC_TESTS or pass SPEC_DIR)",
            cli.spec_dir.display()
        );
        return Ok(0);
    }
    let root = repo_root();
    let bin = std::env::var_os("FOLIO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/folio"));
    if !bin.is_file() {
        return Err(format!(
            "no server binary at {} (build it with `cargo build --release -p folio-cli` or set FOLIO_BIN)",
            bin.display()
        ));
    }
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(cli.mode.expected_failures());
    let expected = ExpectedFailures::load(&expected_path)?;
    let areas: Vec<&str> = if cli.areas.is_empty() {
        cli.mode.areas().to_vec()
    } else {
        cli.mode.areas().iter().copied().filter(|a| cli.areas.iter().any(|x| x == a)).collect()
    };

    let mut deployment = match server::Deployment::start(&bin, cli.mode, cli.auth)? {
        Some(d) => d,
        None => return Ok(0),
    };
    if cli.auth {
        deployment.create_root_user().await?;
    }
    let mut runner = Runner::connect(&deployment.uris()).await?;
    runner.server.auth = cli.auth;
    if cli.mode == server::Mode::LoadBalanced {
        runner.server.topology = "load-balanced".into();
    }
    eprintln!(
        "folio-conformance: server at {} reports version {:?}, topology {}",
        deployment.uris().uri,
        runner.server.version,
        runner.server.topology
    );
    let mut records = Vec::new();
    for &area in &areas {
        for path in model::area_files(&cli.spec_dir, area)? {
            let file_name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let file = model::load(&path)?;
            for test in &file.tests {
                let key = format!("{area}/{file_name}: {}", test.description);
                if cli.filter.as_ref().is_some_and(|f| !key.contains(f.as_str())) {
                    continue;
                }
                // The auth pass runs only the tests that need authentication; the others ran in
                // the ordinary pass.
                if cli.auth && !model::requires_auth(&file, test) {
                    continue;
                }
                let outcome = run_one(&runner, &mut deployment, &file, test).await;
                let outcome = match outcome {
                    Outcome::Fail(m) if deployment.exited() && !m.contains("had exited") => {
                        Outcome::Fail(format!("{m} (the server process exited)"))
                    }
                    o => o,
                };
                print_record(&key, &outcome);
                records.push(TestRecord { area: area.to_string(), key, outcome });
            }
        }
    }
    drop(deployment);
    summarize(&areas, &records);
    // The auth pass has its own report, beside the ordinary pass's, as have the other modes.
    let report = if cli.auth { "report-auth.json" } else { cli.mode.report() };
    write_report(&root.join("target/conformance").join(report), &areas, &records)?;

    let failing: Vec<&str> = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.key.as_str())
        .collect();
    if cli.write_expected {
        let ran: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        // The auth pass runs a part of the tests: the entries of the others stay.
        let partial = cli.filter.is_some() || cli.auth || !cli.areas.is_empty();
        expected.rewrite(&expected_path, &failing, &ran, partial || cli.mode.shares_its_list())?;
        println!("wrote {}", expected_path.display());
        return Ok(0);
    }
    let passing: Vec<&str> =
        records.iter().filter(|r| r.outcome == Outcome::Pass).map(|r| r.key.as_str()).collect();
    let verdict = expected.compare(&failing, &passing);
    for k in &verdict.unexpected_failures {
        println!("UNEXPECTED FAILURE {k}");
    }
    for k in &verdict.unexpected_passes {
        println!("UNEXPECTED PASS {k} (remove it from {})", cli.mode.expected_failures());
    }
    if verdict.unexpected_failures.is_empty() && verdict.unexpected_passes.is_empty() {
        println!("conformance: results match {}", cli.mode.expected_failures());
        Ok(0)
    } else {
        println!(
            "conformance: {} unexpected failures, {} unexpected passes",
            verdict.unexpected_failures.len(),
            verdict.unexpected_passes.len()
        );
        Ok(1)
    }
}

/// Runs one test with its timeout and the cleanup after it; once the server is gone, fails at once.
async fn run_one(
    runner: &Runner,
    server: &mut server::Deployment,
    file: &model::TestFile,
    test: &model::TestCase,
) -> Outcome {
    if server.exited() {
        // Without a server every test would wait out its server selection timeout.
        return match runner::skip_reason(file, test, &runner.server) {
            Some(reason) => Outcome::Skip(reason),
            None => Outcome::Fail("the server process had exited before this test".into()),
        };
    }
    let outcome = match tokio::time::timeout(TEST_TIMEOUT, runner.run_test(file, test)).await {
        Ok(o) => o,
        Err(_) => Outcome::Fail(format!("timed out after {}s", TEST_TIMEOUT.as_secs())),
    };
    runner.cleanup().await;
    outcome
}

fn print_record(key: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Pass => println!("PASS {key}"),
        Outcome::Fail(m) => println!("FAIL {key}: {}", one_line(m)),
        Outcome::Skip(m) => println!("SKIP {key}: {}", one_line(m)),
    }
}

/// Keeps a message on one line and of readable length.
fn one_line(m: &str) -> String {
    let m = m.replace('\n', " ");
    if m.chars().count() > 600 {
        format!("{}...", m.chars().take(600).collect::<String>())
    } else {
        m
    }
}

/// (passed, failed, skipped) of some records.
fn tally<'a>(records: impl Iterator<Item = &'a TestRecord>) -> (usize, usize, usize) {
    records.fold((0, 0, 0), |(p, f, s), r| match r.outcome {
        Outcome::Pass => (p + 1, f, s),
        Outcome::Fail(_) => (p, f + 1, s),
        Outcome::Skip(_) => (p, f, s + 1),
    })
}

fn summarize(areas: &[&str], records: &[TestRecord]) {
    for &area in areas {
        let (p, f, s) = tally(records.iter().filter(|r| r.area == area));
        println!("{area}: {p} passed, {f} failed, {s} skipped");
    }
    let (p, f, s) = tally(records.iter());
    println!("{p} passed, {f} failed, {s} skipped");
}

fn write_report(path: &Path, names: &[&str], records: &[TestRecord]) -> Result<(), String> {
    let mut areas = serde_json::Map::new();
    for &area in names {
        let (p, f, s) = tally(records.iter().filter(|r| r.area == area));
        areas.insert(area.into(), serde_json::json!({"passed": p, "failed": f, "skipped": s}));
    }
    let (p, f, s) = tally(records.iter());
    let tests: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let (status, reason) = match &r.outcome {
                Outcome::Pass => ("pass", None),
                Outcome::Fail(m) => ("fail", Some(m.clone())),
                Outcome::Skip(m) => ("skip", Some(m.clone())),
            };
            serde_json::json!({"area": r.area, "test": r.key, "status": status, "reason": reason})
        })
        .collect();
    let report = serde_json::json!({
        "total": {"passed": p, "failed": f, "skipped": s},
        "areas": areas,
        "tests": tests,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
