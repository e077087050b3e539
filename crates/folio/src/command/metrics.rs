//! Operation metrics: the counters behind `serverStatus`'s `opcounters`, `opLatencies`,
//! `network`, `metrics.commands`, `metrics.document`, `metrics.operation` and
//! `metrics.queryExecutor`, and behind the Prometheus endpoint (which renders the same numbers).
//!
//! Every command passes `Metrics::record` once, after it ran, from [`super::Service::dispatch`]:
//! the one path of the wire server and the embedded API. Everything is a relaxed atomic counter
//! (a scrape may see one counter a command ahead of another, which monitoring tolerates) so that
//! recording costs a few uncontended increments. What a command did is read from the command and
//! its reply as MongoDB counts it (`opcounters.insert` counts documents, `update` and `delete`
//! count statements, `document.*` counts documents changed or returned) plus the keys and
//! documents the executor examined (`exec::opstats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, Document, doc};

use crate::exec::opstats::OpStats;

/// Upper bounds (microseconds) of the latency histogram buckets; a last bucket counts the rest.
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// MongoDB's latency classes (`opLatencies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyClass {
    /// `find`, `getMore`, `count`, `distinct`, and aggregations that write nothing.
    Reads = 0,
    /// `insert`, `update`, `delete`, `findAndModify`, `bulkWrite`, writing aggregations.
    Writes = 1,
    /// Every other command.
    Commands = 2,
    /// `commitTransaction` and `abortTransaction`.
    Transactions = 3,
}

impl LatencyClass {
    /// Every class, in `opLatencies` order.
    pub const ALL: [LatencyClass; 4] = [
        LatencyClass::Reads,
        LatencyClass::Writes,
        LatencyClass::Commands,
        LatencyClass::Transactions,
    ];

    /// The class's name in `opLatencies` and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            LatencyClass::Reads => "reads",
            LatencyClass::Writes => "writes",
            LatencyClass::Commands => "commands",
            LatencyClass::Transactions => "transactions",
        }
    }

    /// The class of a command.
    pub fn of(name: &str, writes: bool) -> LatencyClass {
        match name {
            "find" | "getMore" | "count" | "distinct" => LatencyClass::Reads,
            "aggregate" if writes => LatencyClass::Writes,
            "aggregate" => LatencyClass::Reads,
            "insert" | "update" | "delete" | "findAndModify" | "findandmodify" | "bulkWrite" => {
                LatencyClass::Writes
            }
            "commitTransaction" | "abortTransaction" => LatencyClass::Transactions,
            _ => LatencyClass::Commands,
        }
    }
}

/// Latency totals and a histogram of one class.
#[derive(Default)]
pub struct Latency {
    micros: AtomicU64,
    ops: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
}

impl Latency {
    fn record(&self, micros: u64) {
        self.micros.fetch_add(micros, Ordering::Relaxed);
        self.ops.fetch_add(1, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Total microseconds and number of operations.
    pub fn totals(&self) -> (u64, u64) {
        (self.micros.load(Ordering::Relaxed), self.ops.load(Ordering::Relaxed))
    }

    /// Operations per bucket (not cumulative), the last for anything above the last bound.
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// Counters of one command (`metrics.commands.<name>`).
#[derive(Default)]
pub struct CommandCounters {
    /// Times it ran.
    pub total: AtomicU64,
    /// Times it failed.
    pub failed: AtomicU64,
}

/// All operation counters of a service.
pub struct Metrics {
    /// `opcounters`: insert, query, update, delete, getmore, command.
    pub opcounters: [AtomicU64; 6],
    /// `opLatencies` by [`LatencyClass`].
    pub latencies: [Latency; 4],
    /// Per command of the command table, in table order.
    pub commands: Vec<CommandCounters>,
    /// `metrics.document`: deleted, inserted, returned, updated.
    pub document: [AtomicU64; 4],
    /// `metrics.queryExecutor.scanned` (index keys).
    pub keys_examined: AtomicU64,
    /// `metrics.queryExecutor.scannedObjects` (documents).
    pub docs_examined: AtomicU64,
    /// `metrics.queryExecutor.collectionScans.total`.
    pub collection_scans: AtomicU64,
    /// `metrics.operation.scanAndOrder`: results sorted in memory.
    pub scan_and_order: AtomicU64,
    /// `metrics.operation.writeConflicts`: WriteConflict errors returned.
    pub write_conflicts: AtomicU64,
    /// Errors returned with `TransientTransactionError`.
    pub transient_errors: AtomicU64,
    /// Errors returned with `UnknownTransactionCommitResult`.
    pub unknown_commit_errors: AtomicU64,
    /// Errors returned with `RetryableWriteError`.
    pub retryable_errors: AtomicU64,
    /// `network`: bytes in, bytes out, requests.
    pub network: [AtomicU64; 3],
    /// Operations written to a slow-operation log line.
    pub slow_operations: AtomicU64,
    /// Profiler entries written.
    pub profiled: AtomicU64,
}

/// `opcounters` field names, in [`Metrics::opcounters`] order.
pub const OPCOUNTERS: [&str; 6] = ["insert", "query", "update", "delete", "getmore", "command"];
/// `metrics.document` field names, in [`Metrics::document`] order.
pub const DOCUMENT: [&str; 4] = ["deleted", "inserted", "returned", "updated"];

impl Metrics {
    /// Counters for a command table of `commands` entries.
    pub fn new(commands: usize) -> Self {
        Metrics {
            opcounters: Default::default(),
            latencies: Default::default(),
            commands: (0..commands).map(|_| CommandCounters::default()).collect(),
            document: Default::default(),
            keys_examined: AtomicU64::new(0),
            docs_examined: AtomicU64::new(0),
            collection_scans: AtomicU64::new(0),
            scan_and_order: AtomicU64::new(0),
            write_conflicts: AtomicU64::new(0),
            transient_errors: AtomicU64::new(0),
            unknown_commit_errors: AtomicU64::new(0),
            retryable_errors: AtomicU64::new(0),
            network: Default::default(),
            slow_operations: AtomicU64::new(0),
            profiled: AtomicU64::new(0),
        }
    }

    /// Counts one wire request of `bytes` bytes.
    pub fn record_request(&self, bytes: u64) {
        self.network[0].fetch_add(bytes, Ordering::Relaxed);
        self.network[2].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `bytes` sent to a client.
    pub fn record_reply(&self, bytes: u64) {
        self.network[1].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one command: `index` is its position in the command table (`None` for an unknown
    /// command, which counts only as a command), `class` its latency class.
    pub(crate) fn record(
        &self,
        index: Option<usize>,
        class: LatencyClass,
        received: super::Received<'_>,
        outcome: super::Outcome<'_>,
        elapsed: Duration,
        stats: &OpStats,
    ) {
        let (reply, cmd) = (outcome.body, received.cmd);
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        let name = cmd.keys().next().map(String::as_str).unwrap_or("");
        let ok = matches!(reply.get("ok"), Some(Bson::Double(d)) if *d == 1.0);
        if let Some(c) = index.and_then(|i| self.commands.get(i)) {
            add(&c.total, 1);
            add(&c.failed, u64::from(!ok));
        }
        let array_len = |field: &str| received.statements(field);
        let n = reply_number(reply, "n");
        match name {
            "insert" => {
                add(&self.opcounters[0], array_len("documents"));
                add(&self.document[1], n);
            }
            "find" => add(&self.opcounters[1], 1),
            "update" => {
                add(&self.opcounters[2], array_len("updates"));
                add(&self.document[3], reply_number(reply, "nModified"));
                add(&self.document[1], array_len_of(reply, "upserted"));
            }
            "delete" => {
                add(&self.opcounters[3], array_len("deletes"));
                add(&self.document[0], n);
            }
            "getMore" => add(&self.opcounters[4], 1),
            _ => add(&self.opcounters[5], 1),
        }
        if matches!(name, "findAndModify" | "findandmodify")
            && let Ok(last) = reply.get_document("lastErrorObject")
        {
            let n = reply_number(last, "n");
            if cmd.get("remove").and_then(crate::doc::compare::as_f64).is_some_and(|n| n != 0.0)
                || matches!(cmd.get("remove"), Some(Bson::Boolean(true)))
            {
                add(&self.document[0], n);
            } else if last.contains_key("upserted") {
                add(&self.document[1], n);
            } else {
                add(&self.document[3], n);
            }
        }
        if let Ok(cursor) = reply.get_document("cursor") {
            add(&self.document[2], array_len_of(cursor, "firstBatch"));
            add(&self.document[2], array_len_of(cursor, "nextBatch"));
            add(&self.document[2], outcome.raw_batch.map_or(0, |b| b.docs.len() as u64));
        }
        add(&self.keys_examined, stats.keys_examined);
        add(&self.docs_examined, stats.docs_examined);
        if stats.plan_summary.as_deref().is_some_and(|s| s.contains("COLLSCAN")) {
            add(&self.collection_scans, 1);
        }
        add(&self.scan_and_order, u64::from(stats.has_sort_stage));
        if !ok {
            if reply.get_i32("code").ok() == Some(112) {
                add(&self.write_conflicts, 1);
            }
            if let Ok(labels) = reply.get_array("errorLabels") {
                for label in labels {
                    match label.as_str() {
                        Some("TransientTransactionError") => add(&self.transient_errors, 1),
                        Some("UnknownTransactionCommitResult") => {
                            add(&self.unknown_commit_errors, 1)
                        }
                        Some("RetryableWriteError") => add(&self.retryable_errors, 1),
                        _ => {}
                    }
                }
            }
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latencies[class as usize].record(micros);
    }

    /// `opcounters` as `serverStatus` reports them.
    pub fn opcounters_doc(&self) -> Document {
        OPCOUNTERS
            .iter()
            .zip(&self.opcounters)
            .map(|(k, v)| ((*k).to_string(), Bson::Int64(load(v))))
            .collect()
    }

    /// `opLatencies` as `serverStatus` reports them.
    pub fn op_latencies_doc(&self) -> Document {
        LatencyClass::ALL
            .iter()
            .map(|c| {
                let (micros, ops) = self.latencies[*c as usize].totals();
                (
                    c.name().to_string(),
                    Bson::Document(doc! { "latency": i64_of(micros), "ops": i64_of(ops) }),
                )
            })
            .collect()
    }

    /// `network` as `serverStatus` reports it.
    pub fn network_doc(&self) -> Document {
        doc! {
            "bytesIn": load(&self.network[0]),
            "bytesOut": load(&self.network[1]),
            "physicalBytesIn": load(&self.network[0]),
            "physicalBytesOut": load(&self.network[1]),
            "numRequests": load(&self.network[2]),
        }
    }

    /// The operation parts of `serverStatus.metrics`.
    pub fn metrics_doc(&self, table: &[&'static str]) -> Document {
        let mut commands = Document::new();
        for (name, c) in table.iter().zip(&self.commands) {
            let total = load(&c.total);
            if total > 0 {
                commands.insert(*name, doc! { "failed": load(&c.failed), "total": total });
            }
        }
        doc! {
            "commands": commands,
            "document": DOCUMENT.iter().zip(&self.document).map(|(k, v)| ((*k).to_string(), Bson::Int64(load(v)))).collect::<Document>(),
            "operation": {
                "scanAndOrder": load(&self.scan_and_order),
                "writeConflicts": load(&self.write_conflicts),
            },
            "queryExecutor": {
                "scanned": load(&self.keys_examined),
                "scannedObjects": load(&self.docs_examined),
                "collectionScans": { "total": load(&self.collection_scans) },
            },
        }
    }
}

fn load(c: &AtomicU64) -> i64 {
    i64_of(c.load(Ordering::Relaxed))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn reply_number(d: &Document, field: &str) -> u64 {
    match d.get(field) {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(f)) if *f >= 0.0 => *f as u64,
        _ => 0,
    }
}

fn array_len_of(d: &Document, field: &str) -> u64 {
    match d.get(field) {
        Some(Bson::Array(a)) => a.len() as u64,
        _ => 0,
    }
}
