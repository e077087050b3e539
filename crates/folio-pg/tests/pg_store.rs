//! The PostgreSQL store against a throwaway cluster: the `Txn` contract (reads, ordered scans,
//! first-writer-wins conflicts, timestamps, snapshots), then two front ends — two command
//! services over two stores on the same database — running transactions against each other.
//!
//! Every test starts its own cluster; without PostgreSQL installed they print a loud SKIPPED
//! message (`scripts/test` installs it).

use std::ops::Bound;
use std::sync::Arc;

use bson::{Bson, Document, doc};
use folio::{Connection, Service, ServiceOptions};
use folio::{Ts, TxnStore};
use folio_pg::testing::cluster_or_skip;
use folio_pg::{PgOptions, PgStore};

fn store(url: &str) -> Arc<PgStore> {
    Arc::new(PgStore::connect(url, PgOptions::default()).expect("connect"))
}

fn scan_keys(
    txn: &dyn folio::Txn,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    rev: bool,
) -> Vec<Vec<u8>> {
    txn.scan(start, end, rev).expect("scan").map(|r| r.expect("row").0).collect()
}

/// A server shutting down drops its store on a thread that drives its async runtime; the
/// synchronous client's connections must still close without a panic.
#[test]
fn a_store_dropped_inside_an_async_runtime_closes_its_connections() {
    let Some(cluster) = cluster_or_skip("a_store_dropped_inside_an_async_runtime") else { return };
    let s = store(&cluster.url());
    let mut t = s.begin().unwrap();
    t.put(b"k", b"v").unwrap().unwrap();
    t.commit().unwrap();
    // Used from blocking threads, as the server does; dropped on the runtime's own thread.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async move { drop(s) });
    // The connections are closed, not leaked: a new store sees the committed write.
    let s = store(&cluster.url());
    assert_eq!(s.begin().unwrap().get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn reads_writes_and_ordered_scans() {
    let Some(cluster) = cluster_or_skip("reads_writes_and_ordered_scans") else { return };
    let s = store(&cluster.url());
    let mut t = s.begin().unwrap();
    // 100 keys whose byte order differs from their text order of numbers, with 0x00 and 0xff
    // bytes, and a paged scan (pages start at 16 rows).
    for i in 0u8..100 {
        t.put(&[0x02, i, 0x00, 0xff], &[i]).unwrap().unwrap();
    }
    t.put(b"\x01a", b"A").unwrap().unwrap();
    assert_eq!(t.get(&[0x02, 7, 0x00, 0xff]).unwrap(), Some(vec![7]), "own write visible");
    t.commit().unwrap();

    let t = s.begin().unwrap();
    let all = scan_keys(t.as_ref(), Bound::Included(&[0x02]), Bound::Excluded(&[0x03]), false);
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "byte order");
    let rev = scan_keys(t.as_ref(), Bound::Included(&[0x02]), Bound::Excluded(&[0x03]), true);
    assert_eq!(rev, all.iter().rev().cloned().collect::<Vec<_>>());
    let mid = scan_keys(
        t.as_ref(),
        Bound::Excluded(&[0x02, 10, 0x00, 0xff]),
        Bound::Included(&[0x02, 20, 0x00, 0xff]),
        false,
    );
    assert_eq!(mid.first().unwrap(), &vec![0x02, 11, 0x00, 0xff]);
    assert_eq!(mid.len(), 10);
    let everything = scan_keys(t.as_ref(), Bound::Unbounded, Bound::Unbounded, false);
    assert_eq!(everything.len(), 101);
    assert_eq!(everything[0], b"\x01a".to_vec());
    t.abort();

    let mut t = s.begin().unwrap();
    t.delete(&[0x02, 7, 0x00, 0xff]).unwrap().unwrap();
    assert_eq!(t.get(&[0x02, 7, 0x00, 0xff]).unwrap(), None);
    t.commit().unwrap();
    let t = s.begin().unwrap();
    assert_eq!(t.get(&[0x02, 7, 0x00, 0xff]).unwrap(), None);
    assert_eq!(t.get(b"\x01a").unwrap(), Some(b"A".to_vec()));
}

#[test]
fn first_writer_wins_across_front_ends() {
    let Some(cluster) = cluster_or_skip("first_writer_wins_across_front_ends") else { return };
    let (a, b) = (store(&cluster.url()), store(&cluster.url()));
    let mut setup = a.begin().unwrap();
    setup.put(b"k", b"0").unwrap().unwrap();
    setup.commit().unwrap();

    // An open transaction on front end A holds k: B's write fails at once, naming a holder.
    let mut t1 = a.begin().unwrap();
    let mut t2 = b.begin().unwrap();
    let old_snapshot = b.begin().unwrap();
    t1.put(b"k", b"1").unwrap().unwrap();
    let started = std::time::Instant::now();
    let conflict = t2.put(b"k", b"2").unwrap().unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "did not wait");
    assert!(conflict.holder.is_some(), "{conflict:?}");
    // The failed transaction is unusable now, as a WriteConflict.
    assert_eq!(t2.get(b"k").unwrap_err().code, folio::Code::WriteConflict);
    t2.abort();
    let ts1 = t1.commit().unwrap();

    // Committed after the snapshot: a conflict without holder, for update and delete.
    let mut old = old_snapshot;
    assert_eq!(old.get(b"k").unwrap(), Some(b"0".to_vec()), "snapshot isolation");
    let conflict = old.put(b"k", b"3").unwrap().unwrap_err();
    assert_eq!(conflict.holder, None);
    old.abort();
    let mut old = b.begin().unwrap();
    let mut t3 = a.begin().unwrap();
    t3.delete(b"k").unwrap().unwrap();
    t3.commit().unwrap();
    assert!(old.put(b"k", b"4").unwrap().is_err(), "a write after a committed delete conflicts");
    old.abort();

    // Two inserts of a new key: the second fails whether the first is open or committed.
    let mut i1 = a.begin().unwrap();
    let mut i2 = b.begin().unwrap();
    let mut i3 = b.begin().unwrap();
    i1.put(b"new", b"1").unwrap().unwrap();
    assert!(i2.put(b"new", b"2").unwrap().is_err());
    i1.commit().unwrap();
    assert!(i3.put(b"new", b"3").unwrap().is_err(), "inserted and committed after the snapshot");
    drop(i2);
    drop(i3);

    // Timestamps: from the database, so monotonic across the two front ends.
    let t = b.begin().unwrap();
    assert!(t.snapshot() >= ts1, "{:?} < {ts1:?}", t.snapshot());
    let mut w = b.begin().unwrap();
    w.put(b"x", b"1").unwrap().unwrap();
    let ts2 = w.commit().unwrap();
    assert!(ts2 > t.snapshot() && ts2 > ts1);
    let mut w = a.begin().unwrap();
    w.put(b"y", b"1").unwrap().unwrap();
    let ts3 = w.commit().unwrap();
    assert!(ts3 > ts2, "{ts3:?} after {ts2:?} on the other front end");
    assert!(a.last_committed() >= ts3);
    let stats = b.stats();
    assert!(stats.conflicts >= 3, "{stats:?}");
}

#[test]
fn snapshot_reads_at_a_cluster_time() {
    let Some(cluster) = cluster_or_skip("snapshot_reads_at_a_cluster_time") else { return };
    let s = store(&cluster.url());
    let mut w = s.begin().unwrap();
    w.put(b"k", b"1").unwrap().unwrap();
    let ts = w.commit().unwrap();
    let now = s.begin().unwrap().snapshot();
    // The latest time is served; a time in the future is refused as MongoDB does.
    let mut r = s.begin_read_only_at(now).unwrap();
    assert_eq!(r.get(b"k").unwrap(), Some(b"1".to_vec()));
    assert_eq!(r.snapshot(), now);
    assert_eq!(r.put(b"k", b"2").unwrap_err().code, folio::Code::IllegalOperation);
    let future = Ts::new(now.secs() + 3600, 1);
    assert_eq!(s.begin_read_only_at(future).err().unwrap().code, folio::Code::InvalidOptions);
    // Once another commit took a timestamp, the older time is gone: SnapshotTooOld.
    let mut w = s.begin().unwrap();
    w.put(b"k", b"2").unwrap().unwrap();
    w.commit().unwrap();
    assert_eq!(s.begin_read_only_at(ts).err().unwrap().code, folio::Code::SnapshotTooOld);
}

// ---- two front ends: command services over two stores on one database ----

struct FrontEnd {
    svc: Arc<Service>,
    conn: Connection,
}

impl FrontEnd {
    fn new(url: &str) -> FrontEnd {
        let store: Arc<dyn TxnStore> = store(url);
        let svc = Arc::new(Service::new(store, ServiceOptions::default()).unwrap());
        let conn = svc.connect("test");
        FrontEnd { svc, conn }
    }

    /// The reply as a client reads it, its cluster time included.
    fn run(&mut self, cmd: Document) -> Document {
        let mut reply = self.svc.dispatch(&mut self.conn, cmd);
        reply.merge_times();
        reply.body
    }

    fn ok(&mut self, cmd: Document) -> Document {
        let reply = self.run(cmd.clone());
        assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)), "{cmd} -> {reply}");
        assert!(reply.get("writeErrors").is_none(), "{cmd} -> {reply}");
        reply
    }

    fn balance(&mut self, id: i32) -> i64 {
        let reply = self.ok(doc! { "find": "acct", "filter": { "_id": id }, "$db": "bank" });
        let batch = reply.get_document("cursor").unwrap().get_array("firstBatch").unwrap();
        let d = batch[0].as_document().unwrap();
        match d.get("balance").unwrap() {
            Bson::Int32(n) => i64::from(*n),
            Bson::Int64(n) => *n,
            other => panic!("balance {other}"),
        }
    }
}

fn lsid(n: u8) -> Document {
    doc! { "id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![n; 16] } }
}

fn txn_update(lsid: &Document, txn: i64, start: bool, id: i32, by: i32) -> Document {
    let mut cmd = doc! {
        "update": "acct",
        "updates": [{ "q": { "_id": id }, "u": { "$inc": { "balance": by } } }],
        "lsid": lsid.clone(), "txnNumber": txn, "autocommit": false, "$db": "bank",
    };
    if start {
        cmd.insert("startTransaction", true);
    }
    cmd
}

fn commit(lsid: &Document, txn: i64) -> Document {
    doc! { "commitTransaction": 1, "lsid": lsid.clone(), "txnNumber": txn, "autocommit": false, "$db": "admin" }
}

fn labels(reply: &Document) -> Vec<String> {
    reply
        .get_array("errorLabels")
        .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn transactions_across_two_front_ends() {
    let Some(cluster) = cluster_or_skip("transactions_across_two_front_ends") else { return };
    let mut a = FrontEnd::new(&cluster.url());
    let mut b = FrontEnd::new(&cluster.url());
    a.ok(doc! { "insert": "acct", "documents": [
    { "_id": 1, "balance": 100 }, { "_id": 2, "balance": 100 } ], "$db": "bank" });
    // DDL on A is visible on B at once (the catalog is in the shared key space).
    let listed = b.ok(doc! { "listCollections": 1, "$db": "bank" });
    assert!(listed.to_string().contains("\"acct\""), "{listed}");

    // A transfer in a transaction on A, a conflicting one on B: B gets WriteConflict with
    // TransientTransactionError at its first conflicting write.
    let (s1, s2) = (lsid(1), lsid(2));
    a.ok(txn_update(&s1, 1, true, 1, -10));
    a.ok(txn_update(&s1, 1, false, 2, 10));
    let lost = b.run(txn_update(&s2, 1, true, 2, -5));
    assert_eq!(lost.get_i32("code").ok(), Some(112), "{lost}");
    assert_eq!(lost.get_str("codeName").ok(), Some("WriteConflict"));
    assert!(labels(&lost).contains(&"TransientTransactionError".to_string()), "{lost}");
    let committed = a.ok(commit(&s1, 1));
    assert!(committed.get("operationTime").is_some());
    // The committed transfer is visible on B.
    assert_eq!((b.balance(1), b.balance(2)), (90, 110));

    // A retried commitTransaction on the *other* front end answers as the first did, and the
    // transfer is applied once.
    b.ok(commit(&s1, 1));
    b.ok(commit(&s1, 1));
    assert_eq!((a.balance(1), a.balance(2)), (90, 110));
    // So does a retryable write retried on the other front end.
    let s3 = lsid(3);
    let insert = doc! { "insert": "acct", "documents": [{ "_id": 3, "balance": 0 }],
    "lsid": s3.clone(), "txnNumber": 7_i64, "$db": "bank" };
    let first = a.ok(insert.clone());
    let retried = b.ok(insert);
    assert_eq!(first.get("n"), retried.get("n"));
    let update = doc! { "update": "acct", "updates": [{ "q": { "_id": 3 }, "u": { "$inc": { "balance": 1 } } }],
    "lsid": s3.clone(), "txnNumber": 8_i64, "$db": "bank" };
    a.ok(update.clone());
    b.ok(update.clone());
    a.ok(update);
    assert_eq!(b.balance(3), 1, "the retried update applied once");

    // A transaction aborted by the conflict can be retried and commits.
    b.ok(txn_update(&s2, 2, true, 2, -5));
    b.ok(txn_update(&s2, 2, false, 1, 5));
    b.ok(commit(&s2, 2));
    assert_eq!((a.balance(1), a.balance(2)), (95, 105));

    // Unique indexes hold across front ends.
    a.ok(doc! { "createIndexes": "people", "indexes": [{ "key": { "owner": 1 }, "name": "owner_1", "unique": true }], "$db": "bank" });
    b.ok(doc! { "insert": "people", "documents": [{ "_id": 10, "owner": "ann" }], "$db": "bank" });
    let dup = a.run(
        doc! { "insert": "people", "documents": [{ "_id": 11, "owner": "ann" }], "$db": "bank" },
    );
    assert!(dup.to_string().contains("11000"), "{dup}");
}

/// Makes every commit of the cluster wait (for a synchronous standby that does not exist), or
/// stops that. A commit waiting so is durable locally but not yet visible, and keeps its row
/// locks: exactly a commit in flight on a front end that died after sending it.
fn hold_commits(url: &str, hold: bool) {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let names = if hold { "'nobody'" } else { "''" };
    admin
        .batch_execute(&format!("ALTER SYSTEM SET synchronous_standby_names = {names}"))
        .expect("configure");
    admin.batch_execute("SELECT pg_reload_conf()").expect("reload");
    // The reload reaches the backends asynchronously.
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// The race of a retried `commitTransaction`: front end A sent its `COMMIT` and the commit is
/// in flight (here: waiting for a standby; in life: A was killed right after sending it), and the
/// driver retries the commit on front end B. B must not answer NoSuchTransaction (the client
/// would run the transaction a second time while A's commit lands): it waits for the commit in
/// flight and answers what it did. Checked for a session's first transaction (its record is
/// being inserted) and a later one (its record is being updated), and for a commit that fails
/// instead (B then answers NoSuchTransaction, and nothing was applied).
#[test]
fn retried_commit_on_another_front_end_waits_for_the_commit_in_flight() {
    let Some(cluster) =
        cluster_or_skip("retried_commit_on_another_front_end_waits_for_the_commit_in_flight")
    else {
        return;
    };
    let url = cluster.url();
    let mut a = FrontEnd::new(&url);
    let b = FrontEnd::new(&url);
    a.ok(doc! { "insert": "acct", "documents": [{ "_id": 1, "balance": 0 }], "$db": "bank" });
    let session = lsid(42);
    let mut b = Some(b);
    for txn in 1..=2_i64 {
        a.ok(txn_update(&session, txn, true, 1, 10));
        hold_commits(&url, true);
        let (svc, mut conn) = (a.svc.clone(), a.svc.connect("a"));
        let first =
            std::thread::spawn(move || svc.dispatch(&mut conn, commit(&lsid(42), txn)).body);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut fe_b = b.take().expect("front end B");
        let retried = std::thread::spawn(move || {
            let reply = fe_b.run(commit(&lsid(42), txn));
            (fe_b, reply)
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(
            !retried.is_finished(),
            "transaction {txn}: B answered while A's commit was in flight"
        );
        hold_commits(&url, false);
        let (fe_b, reply) = retried.join().expect("B's commit");
        b = Some(fe_b);
        assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)), "transaction {txn}: {reply}");
        let first = first.join().expect("A's commit");
        assert_eq!(first.get("ok"), Some(&Bson::Double(1.0)), "transaction {txn}: {first}");
        assert_eq!(a.balance(1), 10 * txn, "transaction {txn} applied once");
    }
    // A commit that does not happen: B's answer is NoSuchTransaction, and the balance is as it was.
    let mut fe_b = b.take().expect("front end B");
    a.ok(txn_update(&session, 3, true, 1, 10));
    a.ok(doc! { "abortTransaction": 1, "lsid": session.clone(), "txnNumber": 3_i64, "autocommit": false, "$db": "admin" });
    let reply = fe_b.run(commit(&session, 3));
    assert_eq!(reply.get_i32("code").ok(), Some(251), "{reply}");
    assert_eq!(fe_b.balance(1), 20);
}

/// The same race for a retryable write: front end A's commit of an `$inc` is in flight when the
/// driver retries the write on front end B. B's attempt conflicts with it, and its next attempt
/// must find A's statement record and replay it, not apply the `$inc` a second time.
#[test]
fn retried_write_on_another_front_end_replays_the_commit_in_flight() {
    let Some(cluster) =
        cluster_or_skip("retried_write_on_another_front_end_replays_the_commit_in_flight")
    else {
        return;
    };
    let url = cluster.url();
    let mut a = FrontEnd::new(&url);
    let mut b = FrontEnd::new(&url);
    a.ok(doc! { "insert": "acct", "documents": [{ "_id": 1, "balance": 0 }], "$db": "bank" });
    let inc = |txn: i64| {
        doc! { "update": "acct", "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "balance": 5 } } }],
        "lsid": lsid(43), "txnNumber": txn, "$db": "bank" }
    };
    // The session's first write (its record is being inserted), then a later one (updated).
    for txn in 1..=2_i64 {
        hold_commits(&url, true);
        let (svc, mut conn) = (a.svc.clone(), a.svc.connect("a"));
        let first = std::thread::spawn(move || svc.dispatch(&mut conn, inc(txn)).body);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (svc, mut conn) = (b.svc.clone(), b.svc.connect("b"));
        let retried = std::thread::spawn(move || svc.dispatch(&mut conn, inc(txn)).body);
        std::thread::sleep(std::time::Duration::from_millis(500));
        hold_commits(&url, false);
        let (first, retried) = (first.join().expect("A"), retried.join().expect("B"));
        assert_eq!(first.get("ok"), Some(&Bson::Double(1.0)), "{first}");
        assert_eq!(retried.get("ok"), Some(&Bson::Double(1.0)), "{retried}");
        assert_eq!(first.get("nModified"), retried.get("nModified"), "{first} / {retried}");
        assert_eq!(b.balance(1), 5 * txn, "write {txn} applied once");
    }
}

#[test]
fn concurrent_transfers_keep_the_total() {
    let Some(cluster) = cluster_or_skip("concurrent_transfers_keep_the_total") else { return };
    let url = cluster.url();
    let mut setup = FrontEnd::new(&url);
    let accounts = 5;
    let docs: Vec<Document> = (0..accounts).map(|i| doc! { "_id": i, "balance": 1000 }).collect();
    setup.ok(doc! { "insert": "acct", "documents": docs, "$db": "bank" });
    let front_ends: Vec<Arc<Service>> = (0..2).map(|_| FrontEnd::new(&url).svc).collect();
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let conflicts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..6u8)
        .map(|worker| {
            let svc = front_ends[usize::from(worker) % 2].clone();
            let (committed, conflicts) = (committed.clone(), conflicts.clone());
            std::thread::spawn(move || {
                let mut fe = FrontEnd { conn: svc.connect("worker"), svc };
                let session = lsid(100 + worker);
                let mut txn = 0i64;
                for round in 0..25 {
                    let from = (i32::from(worker) + round) % accounts;
                    let to = (from + 1 + round % 3) % accounts;
                    loop {
                        txn += 1;
                        let r1 = fe.run(txn_update(&session, txn, true, from, -7));
                        let r2 = if r1.get("code").is_none() { fe.run(txn_update(&session, txn, false, to, 7)) } else { r1.clone() };
                        let r3 = if r2.get("code").is_none() { fe.run(commit(&session, txn)) } else { r2.clone() };
                        if r3.get("code").is_none() {
                            committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        assert!(labels(&r3).contains(&"TransientTransactionError".to_string()), "{r3}");
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        fe.run(doc! { "abortTransaction": 1, "lsid": session.clone(), "txnNumber": txn, "autocommit": false, "$db": "admin" });
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total: i64 = (0..accounts).map(|i| setup.balance(i)).sum();
    assert_eq!(total, 1000 * i64::from(accounts));
    assert_eq!(committed.load(std::sync::atomic::Ordering::Relaxed), 150);
    eprintln!(
        "150 transfers, {} conflicts retried",
        conflicts.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A list-append check across two front ends: transactions read a list, then replace it with
/// the list plus one unique element (a read-modify-write, so a lost update under a broken
/// isolation would drop an element). At the end every acknowledged append is in the list exactly
/// once, and every list a committed transaction read is a prefix of the final list (reads never
/// saw a state that was later rewritten or reordered).
#[test]
fn list_append_has_no_lost_update_or_non_prefix_read() {
    let Some(cluster) = cluster_or_skip("list_append_has_no_lost_update_or_non_prefix_read") else {
        return;
    };
    let url = cluster.url();
    let mut setup = FrontEnd::new(&url);
    setup.ok(doc! { "insert": "lists", "documents": [{ "_id": 0, "l": [] }, { "_id": 1, "l": [] }], "$db": "la" });
    let front_ends: Vec<Arc<Service>> = (0..2).map(|_| FrontEnd::new(&url).svc).collect();
    let threads: Vec<_> = (0..6u8)
        .map(|worker| {
            let svc = front_ends[usize::from(worker) % 2].clone();
            std::thread::spawn(move || {
                let mut fe = FrontEnd { conn: svc.connect("worker"), svc };
                let session = lsid(200 + worker);
                let mut txn = 0i64;
                let mut acked = Vec::new();
                let mut reads = Vec::new();
                for n in 0..20 {
                    let key = n % 2;
                    let element = format!("w{worker}-{n}");
                    loop {
                        txn += 1;
                        let found = fe.run(doc! { "find": "lists", "filter": { "_id": key },
                            "lsid": session.clone(), "txnNumber": txn, "autocommit": false,
                            "startTransaction": true, "$db": "la" });
                        let Ok(cursor) = found.get_document("cursor") else { panic!("{found}") };
                        let list: Vec<String> = cursor.get_array("firstBatch").unwrap()[0]
                            .as_document().unwrap().get_array("l").unwrap()
                            .iter().map(|v| v.as_str().unwrap().to_string()).collect();
                        let mut new = list.clone();
                        new.push(element.clone());
                        let written = fe.run(doc! { "update": "lists",
                            "updates": [{ "q": { "_id": key }, "u": { "$set": { "l": new } } }],
                            "lsid": session.clone(), "txnNumber": txn, "autocommit": false, "$db": "la" });
                        let outcome = if written.get("code").is_none() { fe.run(commit(&session, txn)) } else { written };
                        if outcome.get("code").is_none() {
                            acked.push((key, element));
                            reads.push((key, list));
                            break;
                        }
                        assert!(labels(&outcome).contains(&"TransientTransactionError".to_string()), "{outcome}");
                        fe.run(doc! { "abortTransaction": 1, "lsid": session.clone(), "txnNumber": txn, "autocommit": false, "$db": "admin" });
                    }
                }
                (acked, reads)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut reads = Vec::new();
    for t in threads {
        let (a, r) = t.join().unwrap();
        acked.extend(a);
        reads.extend(r);
    }
    let final_list = |key: i32, fe: &mut FrontEnd| -> Vec<String> {
        let r = fe.ok(doc! { "find": "lists", "filter": { "_id": key }, "$db": "la" });
        r.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[0]
            .as_document()
            .unwrap()
            .get_array("l")
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let finals = [final_list(0, &mut setup), final_list(1, &mut setup)];
    assert_eq!(finals[0].len() + finals[1].len(), acked.len(), "no lost or extra append");
    for (key, element) in &acked {
        let count = finals[*key as usize].iter().filter(|e| *e == element).count();
        assert_eq!(count, 1, "{element} appears {count} times");
    }
    for (key, read) in &reads {
        assert_eq!(&finals[*key as usize][..read.len()], &read[..], "a read that is not a prefix");
    }
    assert_eq!(acked.len(), 120);
}

/// The TTL monitor works through the shared database: a TTL index created on one front end is
/// honoured by the pass of another, and what it deletes is gone for every front end.
#[test]
fn ttl_pass_on_one_front_end_expires_documents_for_all() {
    let Some(cluster) = cluster_or_skip("ttl_pass_on_one_front_end_expires_documents_for_all")
    else {
        return;
    };
    let url = cluster.url();
    let mut a = FrontEnd::new(&url);
    a.ok(doc! {
        "createIndexes": "events",
        "indexes": [{ "key": { "at": 1 }, "name": "at_1", "expireAfterSeconds": 0 }],
        "$db": "ttl",
    });
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 60_000);
    let future = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 3_600_000);
    a.ok(doc! {
        "insert": "events",
        "documents": [{ "_id": 1, "at": past }, { "_id": 2, "at": future }, { "_id": 3 }],
        "$db": "ttl",
    });
    // The other front end's first housekeeping tick runs a TTL pass.
    let b = FrontEnd::new(&url);
    b.svc.tick();
    let reply = a.ok(doc! { "find": "events", "sort": { "_id": 1 }, "$db": "ttl" });
    let ids: Vec<&Bson> = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get("_id").unwrap())
        .collect();
    assert_eq!(ids, vec![&Bson::Int32(2), &Bson::Int32(3)], "{reply}");
}
