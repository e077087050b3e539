//! Crash safety: a child process runs bank transfers in transactions against a redb data
//! directory and is killed with SIGKILL at random moments. After each kill the directory is
//! reopened and checked:
//!
//! - every transfer the child saw acknowledged (it prints `ack <seq>` after commit returns) is
//!   present in the ledger;
//! - no partial transaction is visible: each account's balance equals its opening balance plus the
//!   ledger entries that touch it, so a transfer's two updates and its ledger entry are all there
//!   or all absent;
//! - the total balance never changes;
//! - `verify` finds indexes and documents in agreement.
//!
//! The child is this same test binary, started with `FOLIO_CRASH_CHILD` set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, Document, doc};
use folio::command::{Connection, Service, ServiceOptions};
use folio::mvcc::{Mvcc, MvccOptions, TxnStore};
use folio::storage::RedbEngine;
use rand::Rng;

const ACCOUNTS: i32 = 20;
const OPENING_BALANCE: i64 = 1_000;
const KILLS: usize = 20;

fn open(dir: &Path) -> (Arc<Mvcc>, Service) {
    let engine = RedbEngine::open(dir).expect("open redb");
    let store = Mvcc::open(Arc::new(engine), MvccOptions::default()).expect("open mvcc");
    let svc = Service::new(store.clone(), ServiceOptions::default()).expect("service");
    (store, svc)
}

fn run(svc: &Service, conn: &mut Connection, mut cmd: Document) -> Document {
    if !cmd.contains_key("$db") {
        cmd.insert("$db", "bank");
    }
    svc.dispatch(conn, cmd).body
}

fn ok(reply: &Document) -> bool {
    matches!(reply.get("ok"), Some(Bson::Double(v)) if *v == 1.0)
        && !reply.contains_key("writeErrors")
}

/// The child: set up accounts if needed, then transfer forever, printing each acknowledged commit.
fn child(dir: &Path) {
    let (_store, svc) = open(dir);
    let mut conn = svc.connect("crash-child");
    let count = run(&svc, &mut conn, doc! { "count": "accounts", "query": {} });
    if count.get_i32("n").unwrap_or(0) == 0 {
        // The accounts and their index are created in one transaction, so a kill during setup
        // leaves either everything or nothing.
        let setup = doc! { "id": bson::Uuid::new() };
        let docs: Vec<Document> =
            (0..ACCOUNTS).map(|i| doc! { "_id": i, "bal": OPENING_BALANCE }).collect();
        let steps = [
            doc! {
                "createIndexes": "accounts",
                "indexes": [{ "key": { "bal": 1 }, "name": "bal_1" }],
                "startTransaction": true,
            },
            doc! { "insert": "accounts", "documents": docs },
            doc! { "commitTransaction": 1, "$db": "admin" },
        ];
        for mut step in steps {
            step.insert("lsid", setup.clone());
            step.insert("txnNumber", 1_i64);
            step.insert("autocommit", false);
            let r = run(&svc, &mut conn, step);
            assert!(ok(&r), "setup failed: {r}");
        }
    }
    let seq_base: i64 =
        std::env::var("FOLIO_CRASH_SEQ").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let lsid = doc! { "id": bson::Uuid::new() };
    let mut rng = rand::rng();
    for n in 1.. {
        let seq = seq_base + n;
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount: i64 = rng.random_range(1..50);
        let txn = |mut c: Document, first: bool| {
            c.insert("lsid", lsid.clone());
            c.insert("txnNumber", seq);
            c.insert("autocommit", false);
            if first {
                c.insert("startTransaction", true);
            }
            c
        };
        let steps = [
            txn(
                doc! { "update": "accounts", "updates": [{ "q": { "_id": from }, "u": { "$inc": { "bal": -amount } } }] },
                true,
            ),
            txn(
                doc! { "update": "accounts", "updates": [{ "q": { "_id": to }, "u": { "$inc": { "bal": amount } } }] },
                false,
            ),
            txn(
                doc! { "insert": "ledger", "documents": [{ "_id": seq, "from": from, "to": to, "amount": amount }] },
                false,
            ),
            txn(doc! { "commitTransaction": 1, "$db": "admin" }, false),
        ];
        for step in steps {
            let r = run(&svc, &mut conn, step);
            assert!(ok(&r), "transfer {seq} failed: {r}");
        }
        println!("ack {seq}");
    }
}

/// Checks the invariants of a data directory; returns the highest ledger sequence number.
fn check(dir: &Path, acked: &[i64]) -> i64 {
    let (store, svc) = open(dir);
    let mut conn = svc.connect("crash-check");
    let accounts =
        run(&svc, &mut conn, doc! { "find": "accounts", "filter": {}, "batchSize": 1000 });
    let ledger = run(&svc, &mut conn, doc! { "find": "ledger", "filter": {}, "batchSize": 100000 });
    let batch = |r: &Document| -> Vec<Document> {
        r.get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default()
    };
    let accounts = batch(&accounts);
    let ledger = batch(&ledger);
    if accounts.is_empty() {
        assert!(ledger.is_empty(), "ledger without accounts");
        return 0;
    }
    assert_eq!(accounts.len(), ACCOUNTS as usize, "accounts lost");
    let mut expected = vec![OPENING_BALANCE; ACCOUNTS as usize];
    let mut max_seq = 0;
    let mut seqs = std::collections::HashSet::new();
    for entry in &ledger {
        let seq = entry.get_i64("_id").expect("seq");
        max_seq = max_seq.max(seq);
        seqs.insert(seq);
        let amount = entry.get_i64("amount").expect("amount");
        expected[entry.get_i32("from").expect("from") as usize] -= amount;
        expected[entry.get_i32("to").expect("to") as usize] += amount;
    }
    let mut total = 0;
    for a in &accounts {
        let id = a.get_i32("_id").expect("id") as usize;
        let bal = a.get_i64("bal").expect("bal");
        assert_eq!(
            bal, expected[id],
            "account {id} disagrees with the ledger: partial transaction visible"
        );
        total += bal;
    }
    assert_eq!(total, OPENING_BALANCE * i64::from(ACCOUNTS), "total balance changed");
    for seq in acked {
        assert!(seqs.contains(seq), "acknowledged transfer {seq} is missing after the crash");
    }
    let txn = store.begin().expect("begin");
    let problems = folio::exec::verify(txn.as_ref()).expect("verify");
    assert!(problems.is_empty(), "verify found problems: {problems:?}");
    max_seq
}

#[test]
fn crash_kill9_keeps_acknowledged_transfers() {
    if let Ok(dir) = std::env::var("FOLIO_CRASH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut rng = rand::rng();
    let mut seq = 0i64;
    let total_acked = Arc::new(AtomicU64::new(0));
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_kill9_keeps_acknowledged_transfers",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FOLIO_CRASH_CHILD", dir.path())
            .env("FOLIO_CRASH_SEQ", (seq + 1_000_000 * (round as i64 + 1)).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let acked_count = total_acked.clone();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ")
                    && let Ok(n) = n.trim().parse::<i64>()
                {
                    acked.push(n);
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(150..600)));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        let acked = reader.join().expect("reader");
        seq = check(dir.path(), &acked).max(seq);
    }
    assert!(total_acked.load(Ordering::Relaxed) > 0, "the child never acknowledged a transfer");
}
