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
//! - `verify` finds indexes and documents in agreement;
//! - every retryable write was applied exactly once;
//! - every acknowledged multi-document insert outside a transaction (whose statements commit
//!   with deferred durability and share one sync before the reply) is wholly present.
//!
//! Each restarted child first does what a driver does after a network error: it re-sends the
//! last `commitTransaction` it sent (same lsid and txnNumber) and the last retryable write (same
//! lsid, txnNumber and statement). A committed transaction's commit must answer ok, one the kill
//! interrupted answers NoSuchTransaction and the transfer is run again under a new number (as
//! `withTransaction` does), so every transfer is applied exactly once (its ledger `_id` is unique,
//! so a double transfer fails the run); a retryable write is answered without applying it twice,
//! and a lower `txnNumber` is TransactionTooOld as before the crash.
//!
//! The child is this same test binary, started with `FOLIO_CRASH_CHILD` set. `FOLIO_CRASH_CYCLES`
//! sets the number of kills (default 20), for longer runs:
//! `FOLIO_CRASH_CYCLES=500 cargo test --release -p folio --test crash`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, doc};
use folio::RedbEngine;
use folio::{Connection, Service, ServiceOptions};
use folio::{Mvcc, MvccOptions, TxnStore};
use rand::Rng;

const ACCOUNTS: i32 = 20;
const OPENING_BALANCE: i64 = 1_000;
const KILLS: usize = 20;

fn open(dir: &Path) -> (Arc<Mvcc>, Service) {
    // A checkpoint every few flushes, so that kills also land while one runs (between the
    // log's rotation and the durable commit that retires its old segment).
    let engine = RedbEngine::open_with(dir, folio::DEFAULT_CACHE_BYTES, folio::STORAGE_LAYOUT)
        .expect("open redb")
        .with_checkpoint_flushes(4);
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

/// What the parent learned from earlier children's output: the last transfer whose commit was
/// sent (and whether its reply arrived), and the last retryable write (and whether its reply
/// arrived). The next child re-sends both, as a driver does after a network error.
#[derive(Clone, Debug, Default)]
struct Pending {
    /// `(txnNumber, transfer id, acknowledged)` of the last commit sent.
    commit: Option<(i64, i64, bool)>,
    /// `(txnNumber, acknowledged)` of the last retryable write sent.
    write: Option<(i64, bool)>,
}

impl Pending {
    fn to_env(&self) -> String {
        let (m, t, a) = self.commit.unwrap_or((0, 0, false));
        let (k, ka) = self.write.unwrap_or((0, false));
        format!("{} {m} {t} {a} {} {k} {ka}", self.commit.is_some(), self.write.is_some())
    }

    fn from_env(s: &str) -> Pending {
        let f: Vec<&str> = s.split(' ').collect();
        let num = |i: usize| f[i].parse::<i64>().expect("number");
        let flag = |i: usize| f[i] == "true";
        Pending {
            commit: flag(0).then(|| (num(1), num(2), flag(3))),
            write: flag(4).then(|| (num(5), flag(6))),
        }
    }
}

fn code(reply: &Document) -> i32 {
    reply.get_i32("code").unwrap_or(0)
}

fn has_label(reply: &Document, label: &str) -> bool {
    reply.get_array("errorLabels").is_ok_and(|a| a.iter().any(|l| l.as_str() == Some(label)))
}

/// Stops the child with a message the parent turns into a test failure.
fn fail(msg: String) -> ! {
    println!("fail {msg}");
    std::process::exit(1)
}

/// The child: set up accounts if needed, re-send what the previous child may not have seen
/// answered, then transfer forever, printing what it sends and what is acknowledged.
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
    let env = |name: &str| std::env::var(name).expect(name);
    let uuid = |name: &str| {
        let hex = env(name);
        bson::Uuid::parse_str(&hex).expect("uuid")
    };
    // The same two sessions across every restart: one runs the transfers as transactions, one
    // runs retryable writes.
    let txn_lsid = doc! { "id": uuid("FOLIO_CRASH_TXN_LSID") };
    let rw_lsid = doc! { "id": uuid("FOLIO_CRASH_RW_LSID") };
    let pending = Pending::from_env(&env("FOLIO_CRASH_PENDING"));
    let mut txn_number = pending.commit.map(|c| c.0).unwrap_or(0);
    let mut rw_number = pending.write.map(|w| w.0).unwrap_or(0);
    let mut next_transfer: i64 = env("FOLIO_CRASH_SEQ").parse().expect("seq");

    let commit = |m: i64| {
        doc! {
            "commitTransaction": 1, "$db": "admin", "lsid": txn_lsid.clone(),
            "txnNumber": m, "autocommit": false,
        }
    };
    let rw_update = |k: i64| {
        doc! {
            "update": "counters",
            "updates": [{ "q": { "_id": "c" }, "u": { "$inc": { "n": 1 }, "$push": { "ks": k } }, "upsert": true }],
            "lsid": rw_lsid.clone(),
            "txnNumber": k,
        }
    };

    // One transfer as `withTransaction` runs it: statements, then commit; a transient error runs
    // it again under a new transaction number.
    let transfer = |svc: &Service, conn: &mut Connection, t: i64, m: &mut i64| {
        let mut rng = rand::rng();
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount: i64 = rng.random_range(1..50);
        loop {
            *m += 1;
            let txn = |mut c: Document, first: bool| {
                c.insert("lsid", txn_lsid.clone());
                c.insert("txnNumber", *m);
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
                    doc! { "insert": "ledger", "documents": [{ "_id": t, "from": from, "to": to, "amount": amount }] },
                    false,
                ),
            ];
            for step in steps {
                let r = run(svc, conn, step);
                if !ok(&r) {
                    fail(format!("transfer {t} (txnNumber {m}) failed: {r}"));
                }
            }
            println!("commit {m} {t}");
            let r = run(svc, conn, commit(*m));
            if ok(&r) {
                println!("ack {t}");
                return;
            }
            if !has_label(&r, "TransientTransactionError") {
                fail(format!("commit of transfer {t} failed: {r}"));
            }
        }
    };

    // After the restart: a commit whose reply may have been lost is sent again. A committed
    // transfer answers ok (the reply the previous child may never have seen); one the kill
    // interrupted answers NoSuchTransaction, and is run again as a driver would.
    if let Some((m, t, acked)) = pending.commit {
        let r = run(&svc, &mut conn, commit(m));
        if ok(&r) {
            println!("recommit-ok {t}");
            println!("ack {t}");
        } else if code(&r) == 251 && has_label(&r, "TransientTransactionError") {
            if acked {
                fail(format!("acknowledged transfer {t} forgotten: its commit retry says {r}"));
            }
            println!("recommit-rerun {t}");
            transfer(&svc, &mut conn, t, &mut txn_number);
        } else {
            fail(format!("retried commit of transfer {t} failed: {r}"));
        }
    }
    // A retryable write whose reply may have been lost is sent again: it must answer as the
    // first attempt did (or apply now, if the kill came first), never apply twice.
    if let Some((k, _)) = pending.write {
        let r = run(&svc, &mut conn, rw_update(k));
        if !ok(&r) || r.get_i32("n").ok() != Some(1) {
            fail(format!("retried retryable write {k} failed: {r}"));
        }
        println!("rwack {k}");
        // A lower transaction number is now too old, as before the restart.
        if k > 1 {
            let r = run(&svc, &mut conn, rw_update(k - 1));
            if code(&r) != 225 {
                fail(format!("retryable write {} below {k} was not TransactionTooOld: {r}", k - 1));
            }
        }
    }

    loop {
        let t = next_transfer;
        next_transfer += 1;
        transfer(&svc, &mut conn, t, &mut txn_number);
        rw_number += 1;
        println!("rw {rw_number}");
        let r = run(&svc, &mut conn, rw_update(rw_number));
        if !ok(&r) || r.get_i32("n").ok() != Some(1) {
            fail(format!("retryable write {rw_number} failed: {r}"));
        }
        println!("rwack {rw_number}");
        // A multi-statement write outside a transaction: its statements share one sync, made
        // before the reply, so an acknowledged batch is wholly present after a crash.
        let audit = doc! {
            "insert": "audit",
            "documents": (0..3).map(|j| doc! { "_id": t * 10 + j, "t": t }).collect::<Vec<_>>(),
        };
        let r = run(&svc, &mut conn, audit);
        if !ok(&r) || r.get_i32("n").ok() != Some(3) {
            fail(format!("audit insert {t} failed: {r}"));
        }
        println!("audit {t}");
    }
}

/// Checks the invariants of a data directory; returns the highest ledger sequence number.
fn check(dir: &Path, acked: &[i64], rw_acked: &[i64], audited: &[i64]) -> i64 {
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
    // Every retryable write applied at most once, and every acknowledged one applied.
    let counters = run(&svc, &mut conn, doc! { "find": "counters", "filter": {} });
    let counters = batch(&counters);
    let ks: Vec<i64> = counters
        .first()
        .and_then(|c| c.get_array("ks").ok())
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    let distinct: std::collections::HashSet<i64> = ks.iter().copied().collect();
    assert_eq!(distinct.len(), ks.len(), "a retryable write was applied twice: {ks:?}");
    if let Some(c) = counters.first() {
        assert_eq!(c.get_i32("n").map(i64::from).unwrap_or(-1), ks.len() as i64, "counter drifted");
    }
    for k in rw_acked {
        assert!(distinct.contains(k), "acknowledged retryable write {k} is missing");
    }
    // Every acknowledged multi-document insert is wholly present.
    let audit = run(&svc, &mut conn, doc! { "find": "audit", "filter": {}, "batchSize": 1000000 });
    let audit: std::collections::HashSet<i64> =
        batch(&audit).iter().filter_map(|d| d.get_i64("_id").ok()).collect();
    for t in audited {
        for j in 0..3 {
            assert!(audit.contains(&(t * 10 + j)), "acknowledged audit batch {t} lost a document");
        }
    }
    let txn = store.begin().expect("begin");
    let problems = folio::verify(txn.as_ref()).expect("verify");
    assert!(problems.is_empty(), "verify found problems: {problems:?}");
    max_seq
}

#[test]
fn crash_kill9_keeps_acknowledged_transfers() {
    if let Ok(dir) = std::env::var("FOLIO_CRASH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let cycles: usize =
        std::env::var("FOLIO_CRASH_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(KILLS);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut rng = rand::rng();
    let mut seq = 0i64;
    let txn_lsid = bson::Uuid::new().to_string();
    let rw_lsid = bson::Uuid::new().to_string();
    let mut pending = Pending::default();
    let mut acked = Vec::new();
    let mut rw_acked = Vec::new();
    let mut audited = Vec::new();
    let (mut recommit_ok, mut recommit_rerun) = (0, 0);
    let mut old_segments = 0;
    for round in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_kill9_keeps_acknowledged_transfers",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FOLIO_CRASH_CHILD", dir.path())
            .env("FOLIO_CRASH_SEQ", (seq + 1_000_000 * (round as i64 + 1)).to_string())
            .env("FOLIO_CRASH_TXN_LSID", &txn_lsid)
            .env("FOLIO_CRASH_RW_LSID", &rw_lsid)
            .env("FOLIO_CRASH_PENDING", pending.to_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(|l| l.ok()).collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(150..600)));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        // A kill between a checkpoint's start and its end leaves the log's old segment.
        old_segments += usize::from(dir.path().join("folio.wal.old").exists());
        for line in reader.join().expect("reader") {
            // The test harness prints its own `test NAME ... ` before the child's first line.
            let line = line.rsplit(" ... ").next().unwrap_or_default();
            let words: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok());
            match words[0] {
                "fail" => panic!("round {round}: {line}"),
                "commit" => {
                    if let (Some(m), Some(t)) = (num(1), num(2)) {
                        pending.commit = Some((m, t, false));
                    }
                }
                "ack" => {
                    if let Some(t) = num(1) {
                        acked.push(t);
                        if let Some(c) = &mut pending.commit
                            && c.1 == t
                        {
                            c.2 = true;
                        }
                    }
                }
                "rw" => pending.write = num(1).map(|k| (k, false)),
                "rwack" => {
                    if let Some(k) = num(1) {
                        rw_acked.push(k);
                        pending.write = Some((k, true));
                    }
                }
                "audit" => audited.extend(num(1)),
                "recommit-ok" => recommit_ok += 1,
                "recommit-rerun" => recommit_rerun += 1,
                _ => {}
            }
        }
        seq = check(dir.path(), &acked, &rw_acked, &audited).max(seq);
    }
    assert!(!acked.is_empty(), "the child never acknowledged a transfer");
    // Every child after the first re-sends the last commit, so the retry path ran.
    assert!(
        cycles < 2 || recommit_ok + recommit_rerun > 0,
        "commits were not retried after restarts ({recommit_ok} ok, {recommit_rerun} re-run)"
    );
    println!(
        "{cycles} kills, {} transfers and {} retryable writes acknowledged; after restarts {} \
         retried commits answered ok and {} re-ran; {old_segments} kills came during a checkpoint",
        acked.len(),
        rw_acked.len(),
        recommit_ok,
        recommit_rerun
    );
}
