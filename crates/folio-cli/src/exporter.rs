//! The Prometheus endpoint: `GET /metrics` on `--metricsPort`, in Prometheus's text format.
//!
//! Nothing is counted twice: each scrape reads the service's own counters (the ones
//! `serverStatus` reports, see `folio::metrics`) into a fresh `prometheus` registry and
//! encodes it, so the endpoint and `serverStatus` always agree. The HTTP side is `hyper`, on the
//! server's tokio runtime, on its own port so that it can be exposed to a monitoring network
//! without exposing the database port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bson::{Bson, Document};
use bytes::Bytes;
use folio::Service;
use folio::metrics::{LATENCY_BUCKETS_MICROS, LatencyClass};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Binds the endpoint and serves it until the process ends. Returns the bound address.
pub async fn serve(
    service: Arc<Service>,
    addr: SocketAddr,
    dbpath: Option<PathBuf>,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = service.clone();
            let dbpath = dbpath.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let handler =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let dbpath = dbpath.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(respond(
                                &req,
                                &service,
                                dbpath.as_deref(),
                            ))
                        }
                    });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, handler).await;
            });
        }
    });
    Ok(bound)
}

fn respond<B>(
    req: &Request<B>,
    service: &Service,
    dbpath: Option<&std::path::Path>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", b"try /metrics\n".to_vec());
    }
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"GET only\n".to_vec());
    }
    match render(service, dbpath) {
        Ok((body, content_type)) => reply(StatusCode::OK, &content_type, body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.into_bytes()),
    }
}

/// Reads a number at a dotted path of a document.
fn num(d: &Document, path: &str) -> i64 {
    let mut cur = d;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        match (cur.get(p), parts.peek()) {
            (Some(Bson::Document(inner)), Some(_)) => cur = inner,
            (Some(Bson::Int32(n)), None) => return i64::from(*n),
            (Some(Bson::Int64(n)), None) => return *n,
            (Some(Bson::Double(f)), None) => return *f as i64,
            _ => return 0,
        }
    }
    0
}

fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, String> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(|e| e.to_string())?;
    reg.register(Box::new(c.clone())).map_err(|e| e.to_string())?;
    Ok(c)
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, String> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(|e| e.to_string())?;
    reg.register(Box::new(g.clone())).map_err(|e| e.to_string())?;
    Ok(g)
}

fn add(c: &IntCounterVec, labels: &[&str], n: i64) {
    c.with_label_values::<&str>(labels).inc_by(u64::try_from(n).unwrap_or(0));
}

/// The whole exposition: every counter of `serverStatus`, the latency histograms, and the data
/// directory's file sizes.
fn render(
    service: &Service,
    dbpath: Option<&std::path::Path>,
) -> Result<(Vec<u8>, String), String> {
    let status = service.server_status().map_err(|e| e.to_string())?;
    let reg = Registry::new_custom(Some("folio".into()), None).map_err(|e| e.to_string())?;

    let ops = counter(
        &reg,
        "opcounters_total",
        "Operations by type, as serverStatus.opcounters",
        &["type"],
    )?;
    for t in folio::metrics::OPCOUNTERS {
        add(&ops, &[t], num(&status, &format!("opcounters.{t}")));
    }
    let cmds = counter(&reg, "commands_total", "Commands run, by name", &["command"])?;
    let failed = counter(&reg, "commands_failed_total", "Commands failed, by name", &["command"])?;
    if let Ok(per) = status.get_document("metrics").and_then(|m| m.get_document("commands")) {
        for (name, v) in per {
            if let Bson::Document(d) = v {
                add(&cmds, &[name], num(d, "total"));
                add(&failed, &[name], num(d, "failed"));
            }
        }
    }
    let docs = counter(
        &reg,
        "documents_total",
        "Documents deleted, inserted, returned, updated",
        &["op"],
    )?;
    for op in folio::metrics::DOCUMENT {
        add(&docs, &[op], num(&status, &format!("metrics.document.{op}")));
    }
    for (name, help, path) in [
        ("keys_examined_total", "Index keys examined by queries", "metrics.queryExecutor.scanned"),
        (
            "docs_examined_total",
            "Documents examined by queries",
            "metrics.queryExecutor.scannedObjects",
        ),
        (
            "collection_scans_total",
            "Queries answered by a collection scan",
            "metrics.queryExecutor.collectionScans.total",
        ),
        ("scan_and_order_total", "Queries sorted in memory", "metrics.operation.scanAndOrder"),
        (
            "write_conflicts_total",
            "WriteConflict errors returned",
            "metrics.operation.writeConflicts",
        ),
        ("network_bytes_in_total", "Bytes received from clients", "network.bytesIn"),
        ("network_bytes_out_total", "Bytes sent to clients", "network.bytesOut"),
        ("network_requests_total", "Requests received", "network.numRequests"),
        ("connections_created_total", "Connections accepted", "connections.totalCreated"),
        (
            "transactions_committed_total",
            "Multi-document transactions committed",
            "transactions.totalCommitted",
        ),
        (
            "transactions_aborted_total",
            "Multi-document transactions aborted",
            "transactions.totalAborted",
        ),
        (
            "transactions_started_total",
            "Multi-document transactions started",
            "transactions.totalStarted",
        ),
        (
            "storage_commits_total",
            "Storage transactions committed (durable syncs are fewer: see commit batches)",
            "folio.transactions.committed",
        ),
        (
            "storage_commit_batches_total",
            "Group-commit batches appended to storage",
            "folio.transactions.commitBatches",
        ),
        (
            "storage_syncs_total",
            "Sync rounds that made commits durable (one fdatasync each)",
            "folio.transactions.syncs",
        ),
        (
            "storage_write_conflicts_total",
            "Writes refused by first-writer-wins",
            "folio.transactions.writeConflicts",
        ),
        (
            "ttl_deleted_documents_total",
            "Documents deleted by the TTL monitor",
            "metrics.ttl.deletedDocuments",
        ),
        ("ttl_passes_total", "TTL monitor passes", "metrics.ttl.passes"),
        ("slow_operations_total", "Operations logged as slow", "folio.slowOperations"),
    ] {
        let c = counter(&reg, name, help, &[])?;
        add(&c, &[], num(&status, path));
    }
    let labels =
        counter(&reg, "error_labels_total", "Errors returned with a retry label", &["label"])?;
    let m = service.metrics();
    for (label, n) in [
        ("TransientTransactionError", &m.transient_errors),
        ("UnknownTransactionCommitResult", &m.unknown_commit_errors),
        ("RetryableWriteError", &m.retryable_errors),
    ] {
        add(
            &labels,
            &[label],
            i64::try_from(n.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0),
        );
    }
    let g = gauge(&reg, "connections", "Connections by state", &["state"])?;
    g.with_label_values(&["current"]).set(num(&status, "connections.current"));
    g.with_label_values(&["available"]).set(num(&status, "connections.available"));
    for (name, help, value) in [
        (
            "transactions_open",
            "Multi-document transactions open",
            num(&status, "transactions.currentOpen"),
        ),
        ("cursors_open", "Open cursors", i64::try_from(service.open_cursors()).unwrap_or(0)),
        ("resident_memory_bytes", "Resident set size", num(&status, "mem.resident") * 1024 * 1024),
        ("virtual_memory_bytes", "Virtual memory size", num(&status, "mem.virtual") * 1024 * 1024),
        ("uptime_seconds", "Seconds since start", num(&status, "uptime")),
        (
            "change_streams_open",
            "Open change streams and tailable cursors",
            num(&status, "folio.changeStreamsOpen"),
        ),
        ("change_log_bytes", "Bytes the change log holds", num(&status, "folio.changeLog.bytes")),
    ] {
        let g = gauge(&reg, name, help, &[])?;
        g.with_label_values::<&str>(&[]).set(value);
    }
    if let Some(dir) = dbpath {
        let files =
            gauge(&reg, "data_file_bytes", "Sizes of the data directory's files", &["file"])?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if let (Ok(meta), Some(name)) = (entry.metadata(), entry.file_name().to_str())
                    && meta.is_file()
                {
                    files.with_label_values(&[name]).set(i64::try_from(meta.len()).unwrap_or(0));
                }
            }
        }
    }
    let mut families = reg.gather();
    families.push(latency_histograms(m));
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::new();
    encoder.encode(&families, &mut out).map_err(|e| e.to_string())?;
    Ok((out, encoder.format_type().to_string()))
}

/// `folio_op_latency_seconds{class}`: the core keeps per-bucket counts (see
/// `folio::metrics`); Prometheus wants them cumulative.
fn latency_histograms(m: &folio::metrics::Metrics) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name("folio_op_latency_seconds".into());
    family.set_help("Command latency by class, as serverStatus.opLatencies".into());
    family.set_field_type(MetricType::HISTOGRAM);
    let mut metrics = Vec::new();
    for class in LatencyClass::ALL {
        let latency = &m.latencies[class as usize];
        let (micros, ops) = latency.totals();
        let counts = latency.buckets();
        let mut cumulative = 0;
        let mut buckets = Vec::new();
        for (bound, n) in LATENCY_BUCKETS_MICROS.iter().zip(&counts) {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(*bound as f64 / 1e6);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        let mut h = Histogram::default();
        h.set_sample_count(ops);
        h.set_sample_sum(micros as f64 / 1e6);
        h.set_bucket(buckets);
        let mut label = LabelPair::default();
        label.set_name("class".into());
        label.set_value(class.name().into());
        let mut metric = Metric::default();
        metric.set_label(vec![label]);
        metric.set_histogram(h);
        metrics.push(metric);
    }
    family.set_metric(metrics);
    family
}
