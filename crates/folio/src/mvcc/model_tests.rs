//! Model-based tests: random interleaved histories checked against a serial reference.
//!
//! A seeded generator interleaves several transactions doing gets, scans, puts, deletes,
//! commits and aborts (plus read-only snapshots at earlier times, clock ticks and garbage
//! collection). Every operation and its observed result is recorded, then checked:
//!
//! 1. Every transaction's reads (committed or not) equal what it reads in the serial history:
//!    the committed write sets with commit ts <= its snapshot, applied in commit-ts order, plus
//!    its own earlier writes.
//! 2. The final state equals all committed write sets applied in commit-ts order.
//! 3. First writer wins: no two committed transactions that wrote a common key overlap (each
//!    committed after the other's snapshot).
//! 4. A conflict without holder is justified by a commit of that key after the snapshot.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Clock, Mvcc, MvccOptions, Ts, Txn, TxnStore};
use crate::storage::{Engine, MemoryEngine, RedbEngine};

type State = BTreeMap<Vec<u8>, Vec<u8>>;
type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// One recorded operation with what the store answered.
#[derive(Clone, Debug)]
enum Op {
    Get(Vec<u8>, Option<Vec<u8>>),
    Scan(Range, bool, Vec<(Vec<u8>, Vec<u8>)>),
    /// A successful write (`None` deletes).
    Write(Vec<u8>, Option<Vec<u8>>),
    /// A write refused because the key was committed after the snapshot.
    ConflictCommitted(Vec<u8>),
}

#[derive(Debug)]
struct Record {
    snapshot: Ts,
    ops: Vec<Op>,
    commit: Option<Ts>,
}

impl Record {
    fn writes(&self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut w = BTreeMap::new();
        for op in &self.ops {
            if let Op::Write(k, v) = op {
                w.insert(k.clone(), v.clone());
            }
        }
        w
    }
}

fn apply(state: &mut State, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    for (k, v) in writes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

fn random_key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{}", rng.random_range(0..8)).into_bytes()
}

fn random_bound(rng: &mut StdRng) -> Bound<Vec<u8>> {
    match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(random_key(rng)),
        _ => Bound::Excluded(random_key(rng)),
    }
}

fn scan_model(state: &State, range: &Range, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (s, e) = (range.0.as_ref().map(Vec::as_slice), range.1.as_ref().map(Vec::as_slice));
    if crate::storage::range_is_empty(s, e) {
        return Vec::new();
    }
    let items = state.range::<[u8], _>((s, e)).map(|(k, v)| (k.clone(), v.clone()));
    if reverse { items.rev().collect() } else { items.collect() }
}

/// Generates and runs one random history; returns the records and the final state read back.
fn run_history(seed: u64, engine: Arc<dyn Engine>, steps: usize) -> (Vec<Record>, State) {
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = Arc::new(AtomicU32::new(1000));
    let options = MvccOptions {
        history_window: Duration::from_secs(2),
        gc_interval: None,
        gc_batch: 5,
        clock: Clock::manual(clock.clone()),
        // Small, so that entries age out while the model runs.
        version_cache_bytes: 16 * 1024,
    };
    let mvcc = Mvcc::open(engine, options).expect("open");
    let mut open: Vec<(Box<dyn Txn>, Record)> = Vec::new();
    let mut done: Vec<Record> = Vec::new();
    let mut value_seq = 0u32;
    for _ in 0..steps {
        match rng.random_range(0..100) {
            0..10 if open.len() < 5 => {
                let txn = mvcc.begin().expect("begin");
                let rec = Record { snapshot: txn.snapshot(), ops: Vec::new(), commit: None };
                open.push((txn, rec));
            }
            10..13 if open.len() < 5 => {
                // A read-only snapshot at an earlier commit time, if still available.
                let commits: Vec<Ts> = done.iter().filter_map(|r| r.commit).collect();
                if commits.is_empty() {
                    continue;
                }
                let at = commits[rng.random_range(0..commits.len())];
                if let Ok(txn) = mvcc.begin_read_only_at(at) {
                    let rec = Record { snapshot: txn.snapshot(), ops: Vec::new(), commit: None };
                    open.push((txn, rec));
                }
            }
            13..15 => {
                clock.fetch_add(1, Ordering::SeqCst);
            }
            15..18 => {
                mvcc.gc().expect("gc");
            }
            _ if !open.is_empty() => {
                let i = rng.random_range(0..open.len());
                let finish = step_txn(&mut rng, &mut open[i], &mut value_seq);
                if let Some(commit) = finish {
                    let (txn, mut rec) = open.swap_remove(i);
                    if commit {
                        // A transaction without writes commits at its snapshot and adds
                        // nothing to the serial history.
                        let wrote = txn.has_writes();
                        let ts = txn.commit().expect("commit");
                        if wrote {
                            rec.commit = Some(ts);
                        }
                    } else {
                        txn.abort();
                    }
                    done.push(rec);
                }
            }
            _ => {}
        }
    }
    for (txn, rec) in open {
        txn.abort();
        done.push(rec);
    }
    let reader = mvcc.begin().expect("begin");
    let fin = reader
        .scan(Bound::Unbounded, Bound::Unbounded, false)
        .expect("scan")
        .map(|r| r.expect("item"))
        .collect();
    (done, fin)
}

/// Does one random operation in a transaction; returns `Some(commit?)` when it should end.
fn step_txn(rng: &mut StdRng, slot: &mut (Box<dyn Txn>, Record), seq: &mut u32) -> Option<bool> {
    let (txn, rec) = slot;
    match rng.random_range(0..100) {
        0..25 => {
            let k = random_key(rng);
            let v = txn.get(&k).expect("get");
            rec.ops.push(Op::Get(k, v));
        }
        25..40 => {
            let range = (random_bound(rng), random_bound(rng));
            let reverse = rng.random_bool(0.5);
            let (s, e) = (range.0.as_ref().map(Vec::as_slice), range.1.as_ref().map(Vec::as_slice));
            let items = txn.scan(s, e, reverse).expect("scan").map(|r| r.expect("item")).collect();
            rec.ops.push(Op::Scan(range, reverse, items));
        }
        40..75 => {
            let k = random_key(rng);
            let value = if rng.random_bool(0.75) {
                *seq += 1;
                Some(format!("v{seq}").into_bytes())
            } else {
                None
            };
            let result = match &value {
                Some(v) => txn.put(&k, v),
                None => txn.delete(&k),
            };
            match result {
                // Read-only snapshots refuse writes; nothing to record.
                Err(_) => {}
                Ok(Ok(())) => rec.ops.push(Op::Write(k, value)),
                Ok(Err(conflict)) => {
                    assert_eq!(conflict.key, k);
                    if conflict.holder.is_none() {
                        rec.ops.push(Op::ConflictCommitted(k));
                    }
                    // Usually give up, as a MongoDB transaction would.
                    if rng.random_bool(0.7) {
                        return Some(false);
                    }
                }
            }
        }
        75..90 => return Some(true),
        _ => return Some(false),
    }
    None
}

/// Checks a history against the serial reference.
fn check_history(records: &[Record], fin: &State) {
    let mut committed: Vec<&Record> = records.iter().filter(|r| r.commit.is_some()).collect();
    committed.sort_by_key(|r| r.commit);
    for pair in committed.windows(2) {
        assert!(pair[0].commit < pair[1].commit, "commit timestamps must be unique");
    }
    let state_at = |ts: Ts| {
        let mut s = State::new();
        for c in committed.iter().filter(|c| c.commit.is_some_and(|t| t <= ts)) {
            apply(&mut s, &c.writes());
        }
        s
    };
    for rec in records {
        let mut state = state_at(rec.snapshot);
        for op in &rec.ops {
            match op {
                Op::Get(k, v) => assert_eq!(state.get(k), v.as_ref(), "get {k:?} in {rec:?}"),
                Op::Scan(range, rev, items) => {
                    assert_eq!(&scan_model(&state, range, *rev), items, "scan in {rec:?}")
                }
                Op::Write(k, v) => {
                    let single = BTreeMap::from([(k.clone(), v.clone())]);
                    apply(&mut state, &single);
                }
                Op::ConflictCommitted(k) => assert!(
                    committed.iter().any(|c| c.commit.is_some_and(|t| t > rec.snapshot)
                        && c.writes().contains_key(k)),
                    "unjustified conflict on {k:?} in {rec:?}"
                ),
            }
        }
    }
    for (i, a) in committed.iter().enumerate() {
        for b in &committed[i + 1..] {
            let (wa, wb) = (a.writes(), b.writes());
            if wa.keys().any(|k| wb.contains_key(k)) {
                let overlap = a.snapshot < b.commit.unwrap_or_default()
                    && b.snapshot < a.commit.unwrap_or_default();
                assert!(!overlap, "concurrent writers both committed: {a:?} {b:?}");
            }
        }
    }
    let last = committed.last().and_then(|c| c.commit).unwrap_or_default();
    assert_eq!(&state_at(last), fin, "final state");
}

#[test]
fn random_histories_memory() {
    for seed in 0..300 {
        let (records, fin) = run_history(seed, Arc::new(MemoryEngine::new()), 300);
        check_history(&records, &fin);
    }
}

#[test]
fn random_histories_redb() {
    for seed in 0..8 {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RedbEngine::open(dir.path()).expect("redb");
        let (records, fin) = run_history(1000 + seed, Arc::new(engine), 200);
        check_history(&records, &fin);
    }
}

/// Runs transactions from several threads at once, with garbage collection and clock ticks in
/// between, and returns every transaction's record and the final state. The serial check only
/// needs snapshots and commit timestamps, so it applies to truly concurrent histories too: it
/// catches a snapshot that sees part of a group commit, or misses a commit below it.
fn run_threaded_history(seed: u64, engine: Arc<dyn Engine>, threads: u64) -> (Vec<Record>, State) {
    let clock = Arc::new(AtomicU32::new(1000));
    let options = MvccOptions {
        history_window: Duration::ZERO,
        gc_interval: None,
        gc_batch: 4,
        clock: Clock::manual(clock.clone()),
        // Small, so that entries age out while the model runs.
        version_cache_bytes: 16 * 1024,
    };
    let mvcc = Mvcc::open(engine, options).expect("open");
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (mvcc, clock) = (mvcc.clone(), clock.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed * 100 + t);
                let mut records = Vec::new();
                let mut seq = (t as u32) * 1_000_000;
                for _ in 0..60 {
                    if rng.random_bool(0.1) {
                        mvcc.gc().expect("gc");
                    }
                    if rng.random_bool(0.1) {
                        clock.fetch_add(1, Ordering::SeqCst);
                    }
                    let txn = mvcc.begin().expect("begin");
                    let rec = Record { snapshot: txn.snapshot(), ops: Vec::new(), commit: None };
                    let mut slot = (txn, rec);
                    let finish = loop {
                        if let Some(commit) = step_txn(&mut rng, &mut slot, &mut seq) {
                            break commit;
                        }
                    };
                    let (txn, mut rec) = slot;
                    if finish {
                        let wrote = txn.has_writes();
                        let ts = txn.commit().expect("commit");
                        if wrote {
                            rec.commit = Some(ts);
                        }
                    } else {
                        txn.abort();
                    }
                    records.push(rec);
                }
                records
            })
        })
        .collect();
    let records: Vec<Record> =
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect();
    let reader = mvcc.begin().expect("begin");
    let fin = reader
        .scan(Bound::Unbounded, Bound::Unbounded, false)
        .expect("scan")
        .map(|r| r.expect("item"))
        .collect();
    (records, fin)
}

#[test]
fn concurrent_histories_memory() {
    for seed in 0..20 {
        let (records, fin) = run_threaded_history(seed, Arc::new(MemoryEngine::new()), 4);
        check_history(&records, &fin);
    }
}

#[test]
fn concurrent_histories_redb() {
    for seed in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RedbEngine::open(dir.path()).expect("redb");
        let (records, fin) = run_threaded_history(500 + seed, Arc::new(engine), 4);
        check_history(&records, &fin);
    }
}

/// The histories must actually exercise conflicts, commits and GC, or the checks prove little.
#[test]
fn random_histories_are_interesting() {
    let (records, _) = run_history(7, Arc::new(MemoryEngine::new()), 2000);
    let commits = records.iter().filter(|r| r.commit.is_some()).count();
    let conflicts = records
        .iter()
        .flat_map(|r| &r.ops)
        .filter(|op| matches!(op, Op::ConflictCommitted(_)))
        .count();
    let scans = records.iter().flat_map(|r| &r.ops).filter(|op| matches!(op, Op::Scan(..))).count();
    assert!(commits > 50, "commits {commits}");
    assert!(conflicts > 5, "conflicts {conflicts}");
    assert!(scans > 50, "scans {scans}");
}

/// Commits through the MVCC layer keep redb's upkeep going: each commit round runs it after
/// handing on its lead (`Engine::upkeep`), so the staged writes move into redb and the log is
/// checkpointed (here a flush every two keys and a checkpoint every three flushes) instead of
/// growing with every commit.
#[test]
fn commit_rounds_run_the_engines_upkeep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        RedbEngine::open(dir.path()).expect("redb").with_flush_ops(2).with_checkpoint_flushes(3);
    let store = Mvcc::open(Arc::new(engine), MvccOptions::default()).expect("open");
    for i in 0..200 {
        let mut t = store.begin().expect("begin");
        t.put(format!("k{i:03}").as_bytes(), b"v").expect("put").expect("no conflict");
        t.commit().expect("commit");
    }
    // The records end where the preallocated zeros begin.
    let bytes = std::fs::read(dir.path().join("folio.wal")).expect("log");
    let log = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert!(log < 200 * 20, "checkpoints emptied the log: {log} bytes of records");
    assert!(!dir.path().join("folio.wal.old").exists(), "every checkpoint finished");
}
