//! Watching a running server: the metrics endpoint, `serverStatus`'s sections, the profiler, the
//! JSON log file and its rotation, and `getLog`, against the `folio` binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use bson::{Bson, Document, doc};
use common::{free_port, round_trip, wait_ready};

/// Scrapes `/metrics` and returns the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The value of one sample line (`name{labels} value`).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}

fn ok(r: &Document) {
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
}

fn int(d: &Document, path: &str) -> i64 {
    let mut cur = d;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur.get_document(p).unwrap_or_else(|_| panic!("no {path} in {d}"));
    }
    match cur.get(parts[parts.len() - 1]) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("{path} is {other:?} in {d}"),
    }
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with("folio.log"))
        .collect();
    names.sort();
    names
}

#[test]
fn metrics_profiler_and_json_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("folio.log");
    std::fs::write(&log, "an older log\n").expect("old log");
    let metrics_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["serve", "--in-memory", "--port", "0", "--slowms", "1000000"])
        .args(["--metricsPort", &metrics_port.to_string()])
        .arg("--logpath")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn folio");
    let port = wait_ready(&mut child);
    // Without --logappend, the older file was renamed aside.
    assert_eq!(log_files(dir.path()).len(), 2, "{:?}", log_files(dir.path()));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let before = scrape(metrics_port);

    // Profile everything on `shop`; log every operation as slow.
    let r = round_trip(&mut s, 1, doc! { "profile": 2, "slowms": 0, "$db": "shop" });
    ok(&r);
    assert_eq!(r.get_i32("was").ok(), Some(0), "{r}");
    let docs: Vec<Bson> =
        (0..50).map(|i| Bson::Document(doc! { "_id": i, "a": i % 5, "bal": 100 })).collect();
    ok(&round_trip(&mut s, 2, doc! { "insert": "acct", "documents": docs, "$db": "shop" }));
    ok(&round_trip(
        &mut s,
        3,
        doc! { "createIndexes": "acct", "indexes": [{ "key": { "a": 1 }, "name": "a_1" }], "$db": "shop" },
    ));
    let found = round_trip(&mut s, 4, doc! { "find": "acct", "filter": { "a": 3 }, "$db": "shop" });
    ok(&found);
    // A transaction, and a second one that conflicts with it.
    let (l1, l2) = (doc! { "id": bson::Uuid::new() }, doc! { "id": bson::Uuid::new() });
    let upd = |lsid: &Document, start: bool| {
        let mut c = doc! {
            "update": "acct", "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "bal": 1 } } }],
            "lsid": lsid.clone(), "txnNumber": 1_i64, "autocommit": false, "$db": "shop",
        };
        if start {
            c.insert("startTransaction", true);
        }
        c
    };
    ok(&round_trip(&mut s, 5, upd(&l1, true)));
    let conflict = round_trip(&mut s, 6, upd(&l2, true));
    assert_eq!(conflict.get_i32("code").ok(), Some(112), "{conflict}");
    ok(&round_trip(
        &mut s,
        7,
        doc! { "commitTransaction": 1, "lsid": l1, "txnNumber": 1_i64, "autocommit": false, "$db": "admin" },
    ));
    // Credentials never reach a log line or a profile entry.
    let _ = round_trip(&mut s, 8, doc! { "noSuchCommand": "u", "pwd": "hunter2", "$db": "shop" });

    // serverStatus's sections.
    let st = round_trip(&mut s, 9, doc! { "serverStatus": 1, "$db": "admin" });
    ok(&st);
    assert_eq!(int(&st, "opcounters.insert"), 50, "{st}");
    assert!(int(&st, "opcounters.query") >= 1, "{st}");
    assert!(int(&st, "opcounters.update") >= 2, "{st}");
    assert!(int(&st, "opLatencies.writes.ops") >= 3, "{st}");
    assert!(int(&st, "opLatencies.transactions.ops") >= 1, "{st}");
    assert!(int(&st, "network.numRequests") >= 9, "{st}");
    assert!(int(&st, "network.bytesIn") > 0, "{st}");
    assert!(int(&st, "mem.resident") > 0, "{st}");
    assert_eq!(int(&st, "metrics.document.inserted"), 50, "{st}");
    // The find examined 10 index keys, each update one `_id` key.
    assert_eq!(int(&st, "metrics.queryExecutor.scanned"), 12, "{st}");
    assert!(int(&st, "metrics.operation.writeConflicts") >= 1, "{st}");
    assert!(int(&st, "metrics.commands.insert.total") >= 1, "{st}");
    assert!(int(&st, "transactions.totalCommitted") >= 1, "{st}");
    // The change log grew with the writes; no change stream is open.
    assert!(int(&st, "folio.changeLog.bytes") > 0, "{st}");
    assert_eq!(int(&st, "folio.changeStreamsOpen"), 0, "{st}");
    // The find read ten documents the version cache did not hold; the second update read the
    // document the first had read (its transaction had not committed yet).
    assert!(int(&st, "folio.versionCache.misses") >= 10, "{st}");
    assert!(int(&st, "folio.versionCache.hits") >= 1, "{st}");

    // The endpoint moved with the workload.
    let after = scrape(metrics_port);
    for series in [
        "folio_opcounters_total{type=\"insert\"}",
        "folio_transactions_committed_total",
        "folio_write_conflicts_total",
        "folio_keys_examined_total",
        "folio_change_log_bytes",
        "folio_op_latency_seconds_count{class=\"writes\"}",
    ] {
        assert!(sample(&after, series) > sample(&before, series), "{series} did not move");
    }
    assert_eq!(sample(&after, "folio_opcounters_total{type=\"insert\"}"), 50.0);
    assert!(sample(&after, "folio_error_labels_total{label=\"TransientTransactionError\"}") >= 1.0);
    // Every metric the Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/folio-dashboard.json"
    ))
    .expect("dashboard");
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("folio_") && word != "folio_data_file_bytes" {
            assert!(
                after.contains(&format!("\n{word}")),
                "the dashboard queries {word}, not exported"
            );
        }
    }

    // The profiler's entry for the find, in MongoDB's shape.
    let prof = round_trip(
        &mut s,
        10,
        doc! { "find": "system.profile", "filter": { "op": "query", "ns": "shop.acct" }, "$db": "shop" },
    );
    ok(&prof);
    let entries =
        prof.get_document("cursor").and_then(|c| c.get_array("firstBatch")).expect("batch");
    let entry = entries.first().and_then(Bson::as_document).unwrap_or_else(|| panic!("{prof}"));
    assert_eq!(entry.get_str("planSummary").ok(), Some("IXSCAN { a: 1 }"), "{entry}");
    assert_eq!(int(entry, "keysExamined"), 10, "{entry}");
    assert_eq!(int(entry, "docsExamined"), 10, "{entry}");
    assert_eq!(int(entry, "nreturned"), 10, "{entry}");
    assert!(entry.get_datetime("ts").is_ok(), "{entry}");
    assert!(
        entry.get_document("command").is_ok_and(|c| c.get_str("find").ok() == Some("acct")),
        "{entry}"
    );

    // getLog shows the JSON lines, the log file has them, and both redact credentials.
    let got = round_trip(&mut s, 11, doc! { "getLog": "global", "$db": "admin" });
    ok(&got);
    let lines = got.get_array("log").expect("log");
    assert!(lines.iter().any(|l| l.as_str().is_some_and(|l| l.contains("Slow query"))), "{got}");
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(!text.contains("hunter2"), "a password reached the log");
    let slow: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("Slow query"))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let find_line = slow
        .iter()
        .find(|l| l["attr"]["command"]["find"] == "acct")
        .unwrap_or_else(|| panic!("no slow line for the find in\n{text}"));
    assert_eq!(find_line["c"], "COMMAND");
    assert_eq!(find_line["id"], 51803);
    assert_eq!(find_line["s"], "I");
    assert!(find_line["t"]["$date"].is_string());
    assert_eq!(find_line["attr"]["planSummary"], "IXSCAN { a: 1 }");
    assert_eq!(find_line["attr"]["keysExamined"], 10);
    assert!(find_line["attr"]["durationMillis"].is_number());
    // The first key of a line is `t`, as in mongod's lines.
    assert!(text.lines().next().is_some_and(|l| l.starts_with("{\"t\":")), "{text}");
    let redacted = slow
        .iter()
        .find(|l| l["attr"]["command"]["noSuchCommand"] == "u")
        .expect("bad command line");
    assert_eq!(redacted["attr"]["command"]["pwd"], "xxx");

    // Rotation by command and by SIGUSR1: each renames the file aside and starts a new one.
    ok(&round_trip(&mut s, 12, doc! { "logRotate": 1, "$db": "admin" }));
    assert_eq!(log_files(dir.path()).len(), 3, "{:?}", log_files(dir.path()));
    // The rotation's second may equal the previous one's: the name then gets a `.N` suffix.
    Command::new("kill").args(["-USR1", &child.id().to_string()]).status().expect("kill -USR1");
    let mut rotated = false;
    for _ in 0..100 {
        if log_files(dir.path()).len() == 4 {
            rotated = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(rotated, "SIGUSR1 did not rotate: {:?}", log_files(dir.path()));
    ok(&round_trip(&mut s, 13, doc! { "ping": 1, "$db": "admin" }));
    let fresh = std::fs::read_to_string(&log).expect("new log file");
    assert!(fresh.contains("\"ping\""), "the new file gets new lines: {fresh}");

    let _ = child.kill();
    let _ = child.wait();
}
