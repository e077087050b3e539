//! MVCC over real engines with real threads: durability across reopen, group commit, waiting
//! for conflicting transactions, concurrent increments and background garbage collection.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use folio::{Clock, Mvcc, MvccOptions, Service, ServiceOptions, Ts, TxnStore};
use folio::{Engine, KvIter, MemoryEngine, RedbEngine, Status, WriteBatch};

fn options(clock: &Arc<AtomicU32>) -> MvccOptions {
    MvccOptions {
        history_window: Duration::from_secs(60),
        gc_interval: None,
        gc_batch: 100,
        clock: Clock::manual(clock.clone()),
        version_cache_bytes: MvccOptions::default().version_cache_bytes,
    }
}

fn scan_all(store: &Mvcc) -> Vec<(String, String)> {
    let txn = store.begin().unwrap();
    let items = txn
        .scan(Bound::Unbounded, Bound::Unbounded, false)
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect();
    txn.commit().unwrap();
    items
}

#[test]
fn redb_commits_survive_reopen_and_time_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU32::new(5000));
    let last = {
        let engine = Arc::new(RedbEngine::open(dir.path()).unwrap());
        let store = Mvcc::open(engine, options(&clock)).unwrap();
        for i in 0..3 {
            let mut t = store.begin().unwrap();
            t.put(format!("k{i}").as_bytes(), b"committed").unwrap().unwrap();
            t.commit().unwrap();
        }
        let mut t = store.begin().unwrap();
        t.delete(b"k0").unwrap().unwrap();
        t.commit().unwrap();
        // In flight at shutdown: never committed, so never written.
        let mut pending = store.begin().unwrap();
        pending.put(b"uncommitted", b"x").unwrap().unwrap();
        pending.put(b"k1", b"overwritten?").unwrap().unwrap();
        let last = store.last_committed();
        drop(store);
        drop(pending);
        last
    };
    assert_eq!(last, Ts::new(5000, 4));
    // The clock went backwards across the restart; timestamps must not.
    clock.store(10, Ordering::SeqCst);
    let engine = Arc::new(RedbEngine::open(dir.path()).unwrap());
    let store = Mvcc::open(engine, options(&clock)).unwrap();
    assert_eq!(store.last_committed(), last);
    assert_eq!(
        scan_all(&store),
        [("k1".into(), "committed".into()), ("k2".into(), "committed".into())]
    );
    let mut t = store.begin().unwrap();
    t.put(b"k1", b"after restart").unwrap().unwrap();
    let ts = t.commit().unwrap();
    assert_eq!(ts, Ts::new(5000, 5));
}

/// An engine that takes a while to sync, as a disk does, so that committers pile up.
struct SlowSync(MemoryEngine);

impl Engine for SlowSync {
    fn get(&self, key: &[u8]) -> folio::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> folio::Result<KvIter> {
        self.0.scan(start, end, reverse)
    }
    fn write(&self, batch: WriteBatch, sync: bool) -> folio::Result<()> {
        if sync {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.0.write(batch, sync)
    }
    fn write_deferred(&self, batch: WriteBatch) -> folio::Result<()> {
        self.0.write(batch, false)
    }
    fn sync(&self) -> folio::Result<()> {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    }
    fn defers_sync(&self) -> bool {
        true
    }
    fn flush(&self) -> folio::Result<()> {
        self.0.flush()
    }
    fn status(&self) -> folio::Result<Status> {
        self.0.status()
    }
}

/// An engine whose syncs wait until the test opens the gate: what a commit does while its sync
/// is still running can then be checked step by step.
struct GatedSync {
    inner: MemoryEngine,
    /// Syncs begun, and whether the gate is open.
    gate: parking_lot::Mutex<(u32, bool)>,
    moved: parking_lot::Condvar,
}

impl GatedSync {
    fn new() -> Arc<GatedSync> {
        Arc::new(GatedSync {
            inner: MemoryEngine::new(),
            gate: parking_lot::Mutex::new((0, false)),
            moved: parking_lot::Condvar::new(),
        })
    }

    /// Waits until `n` syncs have begun.
    fn wait_for_syncs(&self, n: u32) {
        let mut g = self.gate.lock();
        while g.0 < n {
            self.moved.wait(&mut g);
        }
    }

    fn open(&self) {
        self.gate.lock().1 = true;
        self.moved.notify_all();
    }

    fn close(&self) {
        self.gate.lock().1 = false;
    }

    fn syncs_begun(&self) -> u32 {
        self.gate.lock().0
    }
}

impl Engine for GatedSync {
    fn get(&self, key: &[u8]) -> folio::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> folio::Result<KvIter> {
        self.inner.scan(start, end, reverse)
    }
    fn write(&self, batch: WriteBatch, sync: bool) -> folio::Result<()> {
        self.inner.write(batch, sync)
    }
    fn write_deferred(&self, batch: WriteBatch) -> folio::Result<()> {
        self.inner.write(batch, false)
    }
    fn sync(&self) -> folio::Result<()> {
        let mut g = self.gate.lock();
        g.0 += 1;
        self.moved.notify_all();
        while !g.1 {
            self.moved.wait(&mut g);
        }
        Ok(())
    }
    fn defers_sync(&self) -> bool {
        true
    }
    fn flush(&self) -> folio::Result<()> {
        self.inner.flush()
    }
    fn status(&self) -> folio::Result<Status> {
        self.inner.status()
    }
}

/// A durable commit releases its keys before its sync: the next writer of the same key commits
/// while the first still waits for the disk, and both are acknowledged by one later sync.
#[test]
fn a_hot_key_is_released_before_the_sync() {
    let clock = Arc::new(AtomicU32::new(100));
    let engine = GatedSync::new();
    let store = Mvcc::open(engine.clone(), options(&clock)).unwrap();
    let first = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut t = store.begin().unwrap();
            t.put(b"counter", b"1").unwrap().unwrap();
            t.append_log(&[5, 0, 0, 0, 0]);
            t.commit().unwrap()
        })
    };
    engine.wait_for_syncs(1);
    assert!(!first.is_finished(), "acknowledged before its sync");
    // Visible, but not majority-committed: majority reads and the change log stay behind it.
    assert!(store.majority_committed() < store.last_committed());
    assert!(store.read_log(Ts::ZERO, 10).unwrap().is_empty(), "an event a crash could take back");
    // The first commit is visible and its key free, though not durable yet.
    let mut second = store.begin().unwrap();
    assert_eq!(second.get(b"counter").unwrap().as_deref(), Some(&b"1"[..]));
    second.put(b"counter", b"2").unwrap().expect("the key is free before the sync");
    let second_ts = second.commit_deferred().unwrap();
    // A callback waits for a sync that covers its commit, without blocking the caller.
    let (tx, rx) = std::sync::mpsc::channel();
    store.when_durable(second_ts, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    assert!(rx.try_recv().is_err(), "durable before any sync covered it");
    engine.open();
    let first_ts = first.join().unwrap();
    assert!(first_ts < second_ts);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    assert_eq!(store.majority_committed(), store.last_committed());
    assert_eq!(store.read_log(Ts::ZERO, 10).unwrap().len(), 1);
    // Already durable: the callback runs at once.
    let (tx, rx) = std::sync::mpsc::channel();
    store.when_durable(second_ts, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    assert_eq!(rx.try_recv(), Ok(true));
    assert!(store.stats().syncs >= 1);
}

/// Commits from many threads at once; returns every commit timestamp.
fn commit_from_threads(store: &Arc<Mvcc>, threads: usize, per_thread: usize) -> Vec<Ts> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let mut txn = store.begin().unwrap();
                        txn.put(format!("t{t:02}-{i:03}").as_bytes(), b"v").unwrap().unwrap();
                        txn.commit().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

#[test]
fn group_commit_shares_synced_batches() {
    let clock = Arc::new(AtomicU32::new(100));
    let store = Mvcc::open(Arc::new(SlowSync(MemoryEngine::new())), options(&clock)).unwrap();
    let mut stamps = commit_from_threads(&store, 16, 10);
    stamps.sort();
    stamps.dedup();
    assert_eq!(stamps.len(), 160, "every commit has its own timestamp");
    assert_eq!(scan_all(&store).len(), 160, "every commit is visible");
    let stats = store.stats();
    assert_eq!(stats.commits, 161);
    assert_eq!((stats.started, stats.active, stats.aborts), (161, 0, 0));
    assert_eq!(stats.last_committed, *stamps.last().unwrap());
    // Committers that arrive during a 5 ms sync share the next one.
    assert!(stats.syncs < 160, "syncs: {}", stats.syncs);
}

#[test]
fn group_commit_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU32::new(100));
    let store =
        Mvcc::open(Arc::new(RedbEngine::open(dir.path()).unwrap()), options(&clock)).unwrap();
    let stamps = commit_from_threads(&store, 8, 20);
    assert_eq!(stamps.len(), 160);
    assert_eq!(scan_all(&store).len(), 160);
    let last = store.last_committed();
    drop(store);
    let store =
        Mvcc::open(Arc::new(RedbEngine::open(dir.path()).unwrap()), options(&clock)).unwrap();
    assert_eq!(store.last_committed(), last);
    assert_eq!(scan_all(&store).len(), 160);
}

#[test]
fn wait_for_wakes_when_the_holder_finishes() {
    let clock = Arc::new(AtomicU32::new(100));
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), options(&clock)).unwrap();
    let mut holder = store.begin().unwrap();
    holder.put(b"k", b"1").unwrap().unwrap();
    let mut other = store.begin().unwrap();
    let conflict = other.put(b"k", b"2").unwrap().unwrap_err();
    assert_eq!(conflict.holder, Some(holder.id()));
    let id = holder.id();
    // A deadline in the past returns at once.
    assert!(!store.wait_for(id, Some(Instant::now())));
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.wait_for(id, Some(Instant::now() + Duration::from_secs(30)))
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    holder.commit().unwrap();
    assert!(waiter.join().unwrap());
    other.abort();
    // A shared store is a store, even wrapped again.
    let wrapped: Arc<dyn TxnStore> = Arc::new(store.clone());
    assert_eq!(wrapped.last_committed(), store.last_committed());
    assert_eq!(wrapped.stats().commits, 1);
}

#[test]
fn concurrent_increments_lose_nothing() {
    let clock = Arc::new(AtomicU32::new(100));
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), options(&clock)).unwrap();
    let (threads, per_thread) = (6, 30);
    // Every thread's first transaction reads before any of them writes, so conflicts are
    // certain, whatever the scheduling.
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                for round in 0..per_thread {
                    let mut first_attempt = true;
                    loop {
                        let mut txn = store.begin().unwrap();
                        let n: u64 = txn
                            .get(b"counter")
                            .unwrap()
                            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        if round == 0 && first_attempt {
                            barrier.wait();
                            first_attempt = false;
                        }
                        match txn.put(b"counter", (n + 1).to_string().as_bytes()).unwrap() {
                            Ok(()) => {
                                txn.commit().unwrap();
                                break;
                            }
                            Err(conflict) => {
                                txn.abort();
                                if let Some(holder) = conflict.holder {
                                    store.wait_for(holder, None);
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let txn = store.begin().unwrap();
    let value = String::from_utf8(txn.get(b"counter").unwrap().unwrap()).unwrap();
    assert_eq!(value, (threads * per_thread).to_string());
    assert!(store.stats().conflicts >= threads as u64 - 1, "{:?}", store.stats());
}

#[test]
fn background_gc_collects_old_versions() {
    let clock = Arc::new(AtomicU32::new(100));
    let options = MvccOptions {
        history_window: Duration::ZERO,
        gc_interval: Some(Duration::from_millis(5)),
        gc_batch: 7,
        clock: Clock::manual(clock.clone()),
        version_cache_bytes: MvccOptions::default().version_cache_bytes,
    };
    let engine = Arc::new(MemoryEngine::new());
    let store = Mvcc::open(engine.clone(), options).unwrap();
    for i in 0..20 {
        let mut txn = store.begin().unwrap();
        for k in 0..5 {
            txn.put(format!("k{k}").as_bytes(), i.to_string().as_bytes()).unwrap().unwrap();
        }
        txn.commit().unwrap();
    }
    clock.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    // 5 keys with one version each, plus the last-commit and GC-floor metadata.
    while engine.status().unwrap().keys > 7 {
        assert!(Instant::now() < deadline, "GC did not run: {:?}", engine.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(scan_all(&store).len(), 5);
    assert!(scan_all(&store).iter().all(|(_, v)| v == "19"));
    assert_eq!(store.stats().gc_deleted, 95);
}

#[test]
fn collected_history_stays_unreadable_after_reopen_with_a_longer_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU32::new(100));
    let short = MvccOptions { history_window: Duration::ZERO, ..options(&clock) };
    let first = {
        let store = Mvcc::open(Arc::new(RedbEngine::open(dir.path()).unwrap()), short).unwrap();
        let mut stamps = Vec::new();
        for v in [b"1", b"2"] {
            let mut t = store.begin().unwrap();
            t.put(b"k", v).unwrap().unwrap();
            stamps.push(t.commit().unwrap());
        }
        clock.fetch_add(1, Ordering::SeqCst);
        assert_eq!(store.gc_full_pass().unwrap().deleted, 1);
        stamps[0]
    };
    let long = MvccOptions { history_window: Duration::from_secs(3600), ..options(&clock) };
    let store = Mvcc::open(Arc::new(RedbEngine::open(dir.path()).unwrap()), long).unwrap();
    let err = store.begin_read_only_at(first).err().expect("the version is gone");
    assert_eq!(err.code, folio::Code::SnapshotTooOld);
    let latest = store.begin_read_only_at(store.last_committed()).unwrap();
    assert_eq!(latest.get(b"k").unwrap(), Some(b"2".to_vec()));
}

/// A change stream returns an event only once its commit is durable (majority-committed), and a
/// getMore that finds commits visible but not durable yet does not step past them.
#[test]
fn change_streams_wait_for_durable_commits_and_skip_none() {
    let clock = Arc::new(AtomicU32::new(100));
    let engine = GatedSync::new();
    engine.open();
    let store = Mvcc::open(engine.clone(), options(&clock)).unwrap();
    let svc = Arc::new(Service::new(store, ServiceOptions::default()).unwrap());
    let run = |cmd: Document| svc.dispatch(&mut svc.connect("test"), cmd).body;
    let r = run(doc! { "create": "c", "$db": "test" });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let r = run(doc! {
        "aggregate": "c", "pipeline": [{ "$changeStream": {} }], "cursor": {}, "$db": "test",
    });
    let id = r.get_document("cursor").and_then(|c| c.get_i64("id")).expect("cursor id");
    let get_more = |wait_ms: i64| {
        let r = run(doc! {
            "getMore": id, "collection": "c", "maxTimeMS": wait_ms, "$db": "test",
        });
        r.get_document("cursor").and_then(|c| c.get_array("nextBatch")).expect("batch").len()
    };

    engine.close();
    let begun = engine.syncs_begun();
    let writer = {
        let svc = svc.clone();
        std::thread::spawn(move || {
            let cmd = doc! { "insert": "c", "documents": [{ "_id": 1 }], "$db": "test" };
            svc.dispatch(&mut svc.connect("writer"), cmd).body
        })
    };
    engine.wait_for_syncs(begun + 1);
    // Committed and visible, not durable: no event yet.
    let r = run(doc! { "find": "c", "filter": {}, "$db": "test" });
    let seen = r.get_document("cursor").and_then(|c| c.get_array("firstBatch")).unwrap().len();
    assert_eq!(seen, 1, "the insert is visible before its sync");
    assert_eq!(get_more(100), 0, "an event before its commit is durable");
    engine.open();
    let r = writer.join().unwrap();
    assert_eq!(r.get_i32("n").ok(), Some(1), "{r}");
    assert_eq!(get_more(5000), 1, "the event, once durable, is not skipped");
}

/// A savepoint undoes the writes and log entries made after it and frees the keys they took;
/// what came before stays and commits.
#[test]
fn rolling_back_to_a_savepoint_undoes_only_what_followed() {
    let clock = Arc::new(AtomicU32::new(100));
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), options(&clock)).unwrap();
    let mut t = store.begin().unwrap();
    t.put(b"a", b"1").unwrap().unwrap();
    t.append_log(&[5, 0, 0, 0, 0]);
    assert!(t.set_savepoint());
    t.put(b"a", b"2").unwrap().unwrap();
    t.put(b"b", b"2").unwrap().unwrap();
    t.delete(b"a").unwrap().unwrap();
    t.append_log(&[5, 0, 0, 0, 0]);
    // Another transaction meets the key the statement took.
    let mut other = store.begin().unwrap();
    assert!(other.put(b"b", b"x").unwrap().is_err());
    other.abort();
    t.rollback_to_savepoint();
    assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(t.get(b"b").unwrap(), None);
    // The key is free again; the key written before the savepoint is not.
    let mut other = store.begin().unwrap();
    other.put(b"b", b"x").unwrap().expect("released");
    assert!(other.put(b"a", b"x").unwrap().is_err());
    other.abort();
    // The mark stays: a second statement can be undone too.
    t.put(b"c", b"3").unwrap().unwrap();
    t.rollback_to_savepoint();
    let ts = t.commit().unwrap();
    assert_eq!(scan_all(&store), [("a".into(), "1".into())]);
    let log = store.read_log(Ts::ZERO, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].0, log[0].1.len()), (ts, 10), "the header and the first entry only");
}

/// Transfers between accounts while readers check, at their snapshots, that the balances still
/// sum to the total: reads answered from the version cache and reads that fill it race the
/// commits that empty it, on redb and in memory, with a cache small enough to age entries out.
#[test]
fn snapshot_reads_through_the_version_cache_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let engines: Vec<Arc<dyn Engine>> =
        vec![Arc::new(RedbEngine::open(dir.path()).unwrap()), Arc::new(MemoryEngine::new())];
    for engine in engines {
        let clock = Arc::new(AtomicU32::new(100));
        let options = MvccOptions { version_cache_bytes: 32 * 1024, ..options(&clock) };
        let store = Mvcc::open(engine, options).unwrap();
        const ACCOUNTS: u64 = 40;
        const EACH: u64 = 1_000;
        fn key(i: u64) -> Vec<u8> {
            format!("account-{i:03}").into_bytes()
        }
        fn read(txn: &dyn folio::Txn, i: u64) -> u64 {
            String::from_utf8(txn.get(&key(i)).unwrap().unwrap()).unwrap().parse().unwrap()
        }
        let mut setup = store.begin().unwrap();
        for i in 0..ACCOUNTS {
            setup.put(&key(i), EACH.to_string().as_bytes()).unwrap().unwrap();
        }
        let first = setup.commit().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = w;
                    while !stop.load(Ordering::Relaxed) {
                        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let (from, to) = ((n >> 33) % ACCOUNTS, (n >> 17) % ACCOUNTS);
                        if from == to {
                            continue;
                        }
                        let mut txn = store.begin().unwrap();
                        let (a, b) = (read(txn.as_ref(), from), read(txn.as_ref(), to));
                        let moved = a.min(n % 7);
                        if txn.put(&key(from), (a - moved).to_string().as_bytes()).unwrap().is_err()
                            || txn
                                .put(&key(to), (b + moved).to_string().as_bytes())
                                .unwrap()
                                .is_err()
                        {
                            txn.abort();
                            continue;
                        }
                        txn.commit().unwrap();
                    }
                })
            })
            .collect();
        let mut checked = 0;
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            // The newest snapshot, and the first one (which every later commit is newer than).
            for txn in [store.begin().unwrap(), store.begin_read_only_at(first).unwrap()] {
                let got: Vec<u64> = (0..ACCOUNTS).map(|i| read(txn.as_ref(), i)).collect();
                let sum: u64 = got.iter().sum();
                assert_eq!(
                    sum,
                    ACCOUNTS * EACH,
                    "a snapshot at {:?} saw half a transfer",
                    txn.snapshot()
                );
                // A scan reads the engine, never the cache: both show the snapshot's state.
                let scanned: Vec<u64> = txn
                    .scan(Bound::Unbounded, Bound::Unbounded, false)
                    .unwrap()
                    .map(|r| String::from_utf8(r.unwrap().1).unwrap().parse().unwrap())
                    .collect();
                assert_eq!(got, scanned, "reads at {:?} disagree with a scan", txn.snapshot());
                // Read again: answered from the cache where the first pass filled it.
                let again: Vec<u64> = (0..ACCOUNTS).map(|i| read(txn.as_ref(), i)).collect();
                assert_eq!(again, got);
                txn.abort();
                checked += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let stats = store.stats();
        assert!(checked > 10 && stats.commits > 10, "{checked} checks, {stats:?}");
        assert!(stats.cache_hits > 0 && stats.cache_misses > 0, "{stats:?}");
    }
}
