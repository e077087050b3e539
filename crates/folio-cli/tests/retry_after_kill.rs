//! Retries after `kill -9`, over the wire, as a driver sends them: the `folio` server is killed
//! after a transaction committed and a retryable write applied, restarted on the same data
//! directory, and the same `commitTransaction` and the same retryable write (same lsid,
//! txnNumber and statement) are sent again. They must be answered as before the crash, and
//! applied once.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bson::{Bson, Document, doc};

/// A server on a data directory and one connection to it.
struct Server {
    process: common::Server,
    stream: TcpStream,
    next_id: i32,
}

impl Server {
    fn start(dbpath: &Path) -> Server {
        let process = common::Server::spawn(
            common::folio().args(["serve", "--port", "0", "--dbpath"]).arg(dbpath),
        );
        let stream = TcpStream::connect(("127.0.0.1", process.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        Server { process, stream, next_id: 1 }
    }

    fn run(&mut self, cmd: Document) -> Document {
        self.next_id += 1;
        common::round_trip(&mut self.stream, self.next_id, cmd)
    }

    /// SIGKILL: no shutdown path runs.
    fn kill9(mut self) {
        self.process.child.kill().expect("SIGKILL");
        self.process.child.wait().expect("wait");
    }
}

fn ok(r: &Document) -> bool {
    r.get_f64("ok").ok() == Some(1.0) && !r.contains_key("writeErrors")
}

fn labels(r: &Document) -> Vec<String> {
    r.get_array("errorLabels")
        .map(|a| a.iter().filter_map(|l| l.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn balance(server: &mut Server) -> i64 {
    let r = server.run(doc! { "find": "accounts", "filter": { "_id": 1 }, "$db": "bank" });
    let batch = r.get_document("cursor").and_then(|c| c.get_array("firstBatch")).expect("batch");
    match &batch[0] {
        Bson::Document(d) => d.get_i64("bal").expect("bal"),
        other => panic!("not a document: {other}"),
    }
}

fn in_txn(mut cmd: Document, lsid: &Document, n: i64, start: bool) -> Document {
    cmd.insert("lsid", lsid.clone());
    cmd.insert("txnNumber", n);
    cmd.insert("autocommit", false);
    if start {
        cmd.insert("startTransaction", true);
    }
    cmd
}

fn debit(amount: i64) -> Document {
    doc! {
        "update": "accounts",
        "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "bal": -amount } } }],
        "$db": "bank",
    }
}

fn commit(lsid: &Document, n: i64) -> Document {
    in_txn(doc! { "commitTransaction": 1, "$db": "admin" }, lsid, n, false)
}

#[test]
fn retries_after_kill9_are_answered_as_before_and_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let committed = doc! { "id": bson::Uuid::new() };
    let aborted = doc! { "id": bson::Uuid::new() };
    let retryable = doc! { "id": bson::Uuid::new() };

    let mut server = Server::start(dir.path());
    let r = server.run(
        doc! { "insert": "accounts", "documents": [{ "_id": 1, "bal": 100_i64 }], "$db": "bank" },
    );
    assert!(ok(&r), "{r}");
    // A committed transaction: 100 -> 90.
    assert!(ok(&server.run(in_txn(debit(10), &committed, 1, true))));
    assert!(ok(&server.run(commit(&committed, 1))));
    // An aborted transaction: no change.
    assert!(ok(&server.run(in_txn(debit(1_000), &aborted, 7, true))));
    let r = server.run(in_txn(doc! { "abortTransaction": 1, "$db": "admin" }, &aborted, 7, false));
    assert!(ok(&r), "{r}");
    // A retryable write: 90 -> 80.
    let rw = |n: i64| {
        let mut d = debit(10);
        d.insert("lsid", retryable.clone());
        d.insert("txnNumber", n);
        d
    };
    let first = server.run(rw(5));
    assert!(ok(&first) && first.get_i32("n").ok() == Some(1), "{first}");
    assert_eq!(balance(&mut server), 80);
    server.kill9();

    let mut server = Server::start(dir.path());
    // The retried commit of the committed transaction succeeds and changes nothing.
    let r = server.run(commit(&committed, 1));
    assert!(ok(&r), "retried commit after restart: {r}");
    // A statement of the committed transaction is TransactionCommitted, as before the crash.
    let r = server.run(in_txn(debit(10), &committed, 1, false));
    assert_eq!(r.get_i32("code").ok(), Some(256), "{r}");
    // The aborted transaction never committed: NoSuchTransaction, with the transient label so
    // that a driver runs it again.
    let r = server.run(commit(&aborted, 7));
    assert_eq!(r.get_i32("code").ok(), Some(251), "{r}");
    assert!(labels(&r).contains(&"TransientTransactionError".to_string()), "{r}");
    // The retried retryable write answers as the first attempt did, without applying again.
    let again = server.run(rw(5));
    assert!(ok(&again), "{again}");
    assert_eq!(again.get_i32("n").ok(), first.get_i32("n").ok());
    assert_eq!(again.get_i32("nModified").ok(), first.get_i32("nModified").ok());
    assert_eq!(balance(&mut server), 80, "the retried write applied twice");
    // A lower number is too old; a higher one applies.
    let r = server.run(rw(4));
    assert_eq!(r.get_i32("code").ok(), Some(225), "{r}");
    assert!(ok(&server.run(rw(6))));
    assert_eq!(balance(&mut server), 70);
    server.kill9();

    // Twice in a row: the records written after the first restart survive the second.
    let mut server = Server::start(dir.path());
    assert!(ok(&server.run(rw(6))));
    assert!(ok(&server.run(commit(&committed, 1))));
    assert_eq!(balance(&mut server), 70);
    server.kill9();
}
