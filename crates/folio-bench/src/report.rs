//! The results: rows, the Folio/PostgreSQL ratios, the printed tables and the JSON file.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::runner::Measured;
use crate::workload::Workload;

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// `folio serve` through the MongoDB driver.
    Folio,
    /// The in-process API.
    FolioEmbedded,
    /// PostgreSQL through tokio-postgres.
    Postgres,
    /// `folio serve --storage postgresql://...` through the MongoDB driver: one front end.
    FolioPg,
    /// The same with two front ends over the one database, the clients spread over both.
    FolioPg2,
}

impl System {
    /// Every system, in run order.
    pub const ALL: [System; 5] =
        [System::Folio, System::FolioEmbedded, System::Postgres, System::FolioPg, System::FolioPg2];

    /// The name on the command line and in the JSON rows.
    pub fn name(self) -> &'static str {
        match self {
            System::Folio => "folio",
            System::FolioEmbedded => "folio-embedded",
            System::Postgres => "postgres",
            System::FolioPg => "folio-pg",
            System::FolioPg2 => "folio-pg-2",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<System, String> {
        System::ALL.into_iter().find(|x| x.name() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = System::ALL.iter().map(|x| x.name()).collect();
            format!("unknown system {s:?} (expected one of {})", names.join(", "))
        })
    }
}

/// One measured run of the main matrix.
#[derive(Clone, Debug)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// The system.
    pub system: System,
    /// The measurements.
    pub m: Measured,
}

/// One measured run of the scaling series (one client).
#[derive(Clone, Debug)]
pub struct ScaleRow {
    /// Point read or range.
    pub workload: Workload,
    /// Documents in the collection.
    pub docs: i64,
    /// The system.
    pub system: System,
    /// The measurements.
    pub m: Measured,
    /// The server's peak RSS after loading, restarting and running, bytes.
    pub peak_rss: Option<u64>,
}

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Median latency of a 4 KiB write plus fdatasync in the temporary directory, ms.
    pub fsync_p50_ms: f64,
    /// The main matrix.
    pub rows: Vec<Row>,
    /// The scaling series.
    pub scaling: Vec<ScaleRow>,
    /// The 1-minute load average when the run started and when it ended (other work on the
    /// machine shows here).
    pub loadavg: (f64, f64),
    /// Systems skipped or failed, with why.
    pub notes: Vec<String>,
}

impl Report {
    /// Folio's throughput over PostgreSQL's for the same workload and clients.
    pub fn ratio(&self, row: &Row) -> Option<f64> {
        if row.system == System::Postgres {
            return None;
        }
        let pg = self.rows.iter().find(|r| {
            r.system == System::Postgres && r.workload == row.workload && r.clients == row.clients
        })?;
        (pg.m.tps > 0.0).then(|| row.m.tps / pg.m.tps)
    }

    /// The tables, as Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "machine: {} logical CPUs; fsync (4 KiB write + fdatasync, median of 200): {:.3} ms; \
             load average {:.2} at start, {:.2} at end\n",
            self.cores, self.fsync_p50_ms, self.loadavg.0, self.loadavg.1
        );
        out.push_str("| workload | clients | system | ops/s | p50 ms | p99 ms | retries/op | CPU s/1k ops | client CPU s/1k ops | errors | vs PostgreSQL |\n");
        out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                r.workload.name(),
                r.clients,
                r.system.name(),
                r.m.tps,
                r.m.p50_ms,
                r.m.p99_ms,
                retry_rate(&r.m),
                opt(r.m.cpu_s_per_1k, 3),
                opt(r.m.client_cpu_s_per_1k, 3),
                r.m.errors,
                self.ratio(r).map_or("-".to_string(), |x| format!("{x:.2}x")),
            );
        }
        if !self.scaling.is_empty() {
            out.push_str("\nScaling (1 client):\n\n");
            out.push_str(
                "| workload | documents | system | ops/s | p50 ms | p99 ms | peak RSS MiB |\n",
            );
            out.push_str("|---|---:|---|---:|---:|---:|---:|\n");
            for s in &self.scaling {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} |",
                    s.workload.name(),
                    s.docs,
                    s.system.name(),
                    s.m.tps,
                    s.m.p50_ms,
                    s.m.p99_ms,
                    s.peak_rss.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1048576.0)),
                );
            }
        }
        for r in self.rows.iter().filter(|r| r.m.errors > 0) {
            let _ = writeln!(
                out,
                "\n{} {} x{}: {} errors, first: {}",
                r.system.name(),
                r.workload.name(),
                r.clients,
                r.m.errors,
                r.m.first_error.as_deref().unwrap_or("?")
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\nnote: {n}");
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload.name(),
                    "clients": r.clients,
                    "system": r.system.name(),
                    "tps": r.m.tps,
                    "p50_ms": r.m.p50_ms,
                    "p99_ms": r.m.p99_ms,
                    "retries": r.m.retries,
                    "ops": r.m.ops,
                    "errors": r.m.errors,
                    "cpu_s_per_1k_ops": r.m.cpu_s_per_1k,
                    "client_cpu_s_per_1k_ops": r.m.client_cpu_s_per_1k,
                    "ratio_vs_postgres": self.ratio(r),
                })
            })
            .collect();
        let scaling: Vec<Value> = self
            .scaling
            .iter()
            .map(|s| {
                json!({
                    "workload": s.workload.name(),
                    "documents": s.docs,
                    "clients": 1,
                    "system": s.system.name(),
                    "tps": s.m.tps,
                    "p50_ms": s.m.p50_ms,
                    "p99_ms": s.m.p99_ms,
                    "peak_rss_bytes": s.peak_rss,
                })
            })
            .collect();
        json!({
            "command": self.command,
            "machine": {
                "cores": self.cores,
                "fsync_p50_ms": self.fsync_p50_ms,
                "loadavg_start": self.loadavg.0,
                "loadavg_end": self.loadavg.1,
            },
            "rows": rows,
            "scaling": scaling,
            "notes": self.notes,
        })
    }

    /// Each row next to the same row (workload, clients, system) of `baseline`, a JSON file an
    /// earlier run wrote with `--json`: throughput and server CPU per operation, before, now
    /// and the change. Rows the baseline lacks show `-`.
    pub fn compare(&self, baseline: &Value) -> String {
        let base_rows = baseline["rows"].as_array().cloned().unwrap_or_default();
        let find = |r: &Row| {
            base_rows.iter().find(|b| {
                b["workload"] == r.workload.name()
                    && b["clients"].as_u64() == Some(r.clients as u64)
                    && b["system"] == r.system.name()
            })
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Compared with {}:\n",
            baseline["command"].as_str().unwrap_or("the baseline")
        );
        out.push_str("| workload | clients | system | ops/s before | ops/s now | change | CPU s/1k ops before | now | change |\n");
        out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let base = find(r);
            let tps = base.and_then(|b| b["tps"].as_f64());
            let cpu = base.and_then(|b| b["cpu_s_per_1k_ops"].as_f64());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                r.workload.name(),
                r.clients,
                r.system.name(),
                opt(tps, 0),
                r.m.tps,
                change(tps, Some(r.m.tps)),
                opt(cpu, 3),
                opt(r.m.cpu_s_per_1k, 3),
                change(cpu, r.m.cpu_s_per_1k),
            );
        }
        out
    }
}

/// `now` relative to `before`, as a signed percentage.
fn change(before: Option<f64>, now: Option<f64>) -> String {
    match (before, now) {
        (Some(b), Some(n)) if b > 0.0 => format!("{:+.0}%", (n / b - 1.0) * 100.0),
        _ => "-".to_string(),
    }
}

fn retry_rate(m: &Measured) -> String {
    if m.ops == 0 {
        return "-".to_string();
    }
    format!("{:.3}", m.retries as f64 / m.ops as f64)
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(tps: f64) -> Measured {
        Measured {
            ops: (tps * 10.0) as u64,
            tps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            retries: 5,
            errors: 0,
            first_error: None,
            cpu_s_per_1k: Some(0.5),
            client_cpu_s_per_1k: Some(0.25),
        }
    }

    #[test]
    fn ratio_compares_the_same_workload_and_clients() {
        let mut report = Report::default();
        for (system, clients, tps) in [
            (System::Folio, 1, 300.0),
            (System::Postgres, 1, 100.0),
            (System::Folio, 8, 50.0),
            (System::Postgres, 8, 200.0),
            (System::FolioEmbedded, 32, 10.0),
        ] {
            report.rows.push(Row { workload: Workload::Order, clients, system, m: measured(tps) });
        }
        let ratios: Vec<Option<f64>> = report.rows.iter().map(|r| report.ratio(r)).collect();
        assert_eq!(ratios, vec![Some(3.0), None, Some(0.25), None, None]);
        let table = report.table();
        assert!(
            table.contains(
                "| order | 1 | folio | 300 | 1.00 | 2.00 | 0.002 | 0.500 | 0.250 | 0 | 3.00x |"
            ),
            "{table}"
        );
        let json = report.json();
        assert_eq!(json["rows"][0]["system"], "folio");
        assert_eq!(json["rows"][0]["workload"], "order");
        assert_eq!(json["rows"][0]["ratio_vs_postgres"], 3.0);
        assert_eq!(json["rows"][1]["ratio_vs_postgres"], Value::Null);
        assert_eq!(json["rows"][0]["client_cpu_s_per_1k_ops"], 0.25);
    }

    #[test]
    fn compare_matches_rows_of_a_baseline() {
        let mut before = Report { command: "base run".into(), ..Report::default() };
        before.rows.push(Row {
            workload: Workload::Ping,
            clients: 8,
            system: System::Folio,
            m: measured(100.0),
        });
        let baseline = before.json();
        let mut now = Report::default();
        let mut faster = measured(150.0);
        faster.cpu_s_per_1k = Some(0.25);
        now.rows.push(Row {
            workload: Workload::Ping,
            clients: 8,
            system: System::Folio,
            m: faster,
        });
        now.rows.push(Row {
            workload: Workload::Ping,
            clients: 1,
            system: System::Folio,
            m: measured(10.0),
        });
        let table = now.compare(&baseline);
        assert!(table.contains("Compared with base run"), "{table}");
        assert!(
            table.contains("| ping | 8 | folio | 100 | 150 | +50% | 0.500 | 0.250 | -50% |"),
            "{table}"
        );
        assert!(table.contains("| ping | 1 | folio | - | 10 | - | - | 0.500 | - |"), "{table}");
    }
}
