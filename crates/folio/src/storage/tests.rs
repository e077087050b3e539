//! One test suite run against every engine.

use std::ops::Bound;

use super::{DEFAULT_CACHE_BYTES, Engine, Layout, MemoryEngine, RedbEngine, WriteBatch};

/// A layout for the tests, spreading their keys over tables and the shared table: keys
/// starting `k` and an odd byte ("k1", "k3": the model's keys) by those two bytes; other keys
/// starting with an odd byte by that byte (`a`, `c`); keys starting with an even byte whose
/// third byte is odd (big-endian numbers from 256 to 511, 768 to 1023...) by three bytes; the
/// rest in the shared table.
const TEST_LAYOUT: Layout = Layout {
    name: "test",
    table_prefix: |k| match k {
        [b'k', d, ..] if d % 2 == 1 => 2,
        [b'k', ..] => 0,
        [b, ..] if b % 2 == 1 => 1,
        [_, _, z, ..] if z % 2 == 1 => 3,
        _ => 0,
    },
};

/// Opens a redb engine under [`TEST_LAYOUT`].
fn open_spread(dir: &std::path::Path) -> RedbEngine {
    RedbEngine::open_with(dir, DEFAULT_CACHE_BYTES, TEST_LAYOUT).expect("open redb")
}

/// Runs `check` against a fresh engine of each kind, against redb flushing its pending writes
/// every three keys (so that every check also meets pending writes over redb's), and against
/// redb spreading keys over tables, flushing at once and every three keys.
fn each_engine(check: impl Fn(&dyn Engine)) {
    check(&MemoryEngine::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = RedbEngine::open(dir.path()).expect("open redb");
    check(&redb);
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = RedbEngine::open(dir.path()).expect("open redb").with_flush_ops(3);
    check(&redb);
    let dir = tempfile::tempdir().expect("tempdir");
    check(&open_spread(dir.path()).with_flush_ops(1));
    let dir = tempfile::tempdir().expect("tempdir");
    check(&open_spread(dir.path()).with_flush_ops(3));
}

/// The redb engine's pending writes over its stored ones, against a model: random batches of
/// puts and deletes (synced, deferred and unlogged), gets, and scans in both directions over
/// random bounds, with flushes every few keys, checkpoints and restarts in between; every
/// answer must be the model's. A restart keeps what was logged (everything here but the
/// unlogged batches, which the model drops at a restart only when no checkpoint took them).
#[test]
fn redb_pending_writes_match_a_model() {
    use std::collections::BTreeMap;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let key = |i: u64| format!("k{i:02}").into_bytes();
    let dir = tempfile::tempdir().expect("tempdir");
    // Checkpoints come every few flushes, so that they run among the writes (in the
    // background, see the redb engine's "Checkpoints"). Restarts switch between one table and
    // several at random, so that the file's keys move between tables while the log replays.
    let open = |ops: usize, spread: bool| {
        let layout = if spread { TEST_LAYOUT } else { Layout::SINGLE };
        RedbEngine::open_with(dir.path(), DEFAULT_CACHE_BYTES, layout)
            .expect("open")
            .with_flush_ops(ops)
            .with_checkpoint_flushes(1 + ops as u64 % 5)
    };
    let mut engine = open(4, true);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // The model as the log and redb's durable state would bring it back after a restart.
    let mut durable = model.clone();
    let mut unlogged_since_checkpoint = false;
    for step in 0..3_000 {
        match rand(20) {
            0..=9 => {
                let mut batch = WriteBatch::new();
                let mut next = model.clone();
                for _ in 0..1 + rand(4) {
                    let k = key(rand(40));
                    if rand(3) == 0 {
                        batch.delete(k.clone());
                        next.remove(&k);
                    } else {
                        let v = format!("v{step}").into_bytes();
                        batch.put(k.clone(), v.clone());
                        next.insert(k, v);
                    }
                }
                match rand(3) {
                    0 => engine.write(batch, true).unwrap(),
                    1 => {
                        engine.write_deferred(batch).unwrap();
                        engine.upkeep();
                    }
                    _ => {
                        engine.write(batch, false).unwrap();
                        unlogged_since_checkpoint = true;
                    }
                }
                model = next;
                if !unlogged_since_checkpoint {
                    durable = model.clone();
                }
            }
            10..=12 => {
                let k = key(rand(40));
                assert_eq!(engine.get(&k).unwrap(), model.get(&k).cloned(), "step {step}");
                let (a, b) = (key(rand(42)), key(rand(42)));
                let want = if a > b {
                    None
                } else {
                    model
                        .range::<[u8], _>((Bound::Included(&a[..]), Bound::Included(&b[..])))
                        .next_back()
                        .map(|(k, v)| (k.clone(), v.clone()))
                };
                assert_eq!(
                    engine.last_in(&a, &b).unwrap(),
                    want,
                    "step {step}: last in {a:?}..={b:?}"
                );
            }
            13..=17 => {
                let (a, b) = (key(rand(42)), key(rand(42)));
                let reverse = rand(2) == 0;
                let start = if rand(4) == 0 { Bound::Unbounded } else { Bound::Included(&a[..]) };
                let end = if rand(4) == 0 { Bound::Unbounded } else { Bound::Excluded(&b[..]) };
                let got: Vec<(Vec<u8>, Vec<u8>)> =
                    engine.scan(start, end, reverse).unwrap().map(|r| r.unwrap()).collect();
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = if super::range_is_empty(start, end) {
                    Vec::new()
                } else {
                    model
                        .range::<[u8], _>((start, end))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want, "step {step}: scan {start:?}..{end:?} reverse={reverse}");
            }
            18 => {
                engine.flush().unwrap();
                durable = model.clone();
                unlogged_since_checkpoint = false;
            }
            _ => {
                // A restart without a checkpoint, as after a crash: what the log holds returns.
                drop(engine);
                engine = open(1 + rand(6) as usize, rand(2) == 0);
                if unlogged_since_checkpoint {
                    // Unlogged writes may or may not have reached redb: resynchronise the model
                    // with what came back, which must hold every logged write.
                    let back: BTreeMap<Vec<u8>, Vec<u8>> = engine
                        .scan(Bound::Unbounded, Bound::Unbounded, false)
                        .unwrap()
                        .map(|r| r.unwrap())
                        .collect();
                    model = back;
                    engine.flush().unwrap();
                    unlogged_since_checkpoint = false;
                } else {
                    assert_eq!(
                        engine
                            .scan(Bound::Unbounded, Bound::Unbounded, false)
                            .unwrap()
                            .map(|r| r.unwrap())
                            .collect::<BTreeMap<_, _>>(),
                        durable,
                        "step {step}: after a restart"
                    );
                    model = durable.clone();
                }
                durable = model.clone();
            }
        }
    }
}

fn batch(puts: &[(&str, &str)], deletes: &[&str]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in puts {
        b.put(k.as_bytes(), v.as_bytes());
    }
    for k in deletes {
        b.delete(k.as_bytes());
    }
    b
}

fn keys(engine: &dyn Engine, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Vec<String> {
    engine
        .scan(start, end, reverse)
        .expect("scan")
        .map(|r| {
            let (k, v) = r.expect("item");
            format!("{}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v))
        })
        .collect()
}

#[test]
fn get_put_delete() {
    each_engine(|e| {
        assert_eq!(e.get(b"a").unwrap(), None);
        e.write(batch(&[("a", "1"), ("b", "2")], &[]), true).unwrap();
        assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()));
        // Later operations in a batch win.
        let mut b = batch(&[("a", "3")], &["a"]);
        b.put(b"c".to_vec(), b"4".to_vec());
        e.write(b, false).unwrap();
        assert_eq!(e.get(b"a").unwrap(), None);
        assert_eq!(e.get(b"c").unwrap(), Some(b"4".to_vec()));
        e.flush().unwrap();
        let status = e.status().unwrap();
        assert_eq!(status.keys, 2);
    });
}

#[test]
fn scans_in_both_directions() {
    each_engine(|e| {
        e.write(batch(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")], &[]), true).unwrap();
        let inc = |k: &'static str| Bound::Included(k.as_bytes());
        let exc = |k: &'static str| Bound::Excluded(k.as_bytes());
        assert_eq!(
            keys(e, Bound::Unbounded, Bound::Unbounded, false),
            ["a=1", "b=2", "c=3", "d=4"]
        );
        assert_eq!(keys(e, Bound::Unbounded, Bound::Unbounded, true), ["d=4", "c=3", "b=2", "a=1"]);
        assert_eq!(keys(e, inc("b"), exc("d"), false), ["b=2", "c=3"]);
        assert_eq!(keys(e, exc("a"), inc("c"), true), ["c=3", "b=2"]);
        // Empty and inverted ranges yield nothing instead of panicking.
        assert!(keys(e, exc("b"), exc("b"), false).is_empty());
        assert!(keys(e, inc("c"), inc("b"), true).is_empty());
    });
}

#[test]
fn long_scans_cross_chunks_and_do_not_block_writers() {
    each_engine(|e| {
        let mut b = WriteBatch::new();
        for i in 0..1000u32 {
            b.put(i.to_be_bytes().to_vec(), vec![1]);
        }
        e.write(b, false).unwrap();
        let mut it = e.scan(Bound::Unbounded, Bound::Unbounded, true).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!(first.0, 999u32.to_be_bytes());
        // A write while the scan is open must not deadlock.
        e.write(batch(&[("zz", "1")], &[]), true).unwrap();
        assert_eq!(it.count(), 999);
        let fwd = e.scan(Bound::Unbounded, Bound::Unbounded, false).unwrap();
        let all: Vec<_> = fwd.map(|r| r.unwrap().0).collect();
        assert_eq!(all.len(), 1001);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    });
}

#[test]
fn scans_see_one_consistent_state() {
    each_engine(|e| {
        let mut b = WriteBatch::new();
        for i in 0..1000u32 {
            b.put(i.to_be_bytes().to_vec(), vec![1]);
        }
        e.write(b, false).unwrap();
        let mut it = e.scan(Bound::Unbounded, Bound::Unbounded, false).unwrap();
        assert_eq!(it.next().unwrap().unwrap().0, 0u32.to_be_bytes());
        // Deleting and adding keys ahead of the scan must not show through it.
        let mut b = WriteBatch::new();
        for i in 500..1000u32 {
            b.delete(i.to_be_bytes().to_vec());
        }
        b.put(2000u32.to_be_bytes().to_vec(), vec![2]);
        e.write(b, false).unwrap();
        let rest: Vec<_> = it.map(|r| r.unwrap().0).collect();
        assert_eq!(rest.len(), 999);
        assert_eq!(rest.last().unwrap(), &999u32.to_be_bytes());
    });
}

#[test]
fn redb_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RedbEngine::open(dir.path()).unwrap();
        e.write(batch(&[("k", "v")], &[]), true).unwrap();
    }
    let e = RedbEngine::open(dir.path()).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn deferred_writes_are_visible_at_once_and_durable_after_sync() {
    each_engine(|e| {
        e.write_deferred(batch(&[("d1", "1"), ("d2", "2")], &[])).unwrap();
        assert_eq!(e.get(b"d1").unwrap(), Some(b"1".to_vec()));
        e.write_deferred(batch(&[], &["d1"])).unwrap();
        assert_eq!(keys(e, Bound::Unbounded, Bound::Unbounded, false), vec!["d2=2"]);
        e.sync().unwrap();
    });
}

#[test]
fn a_checkpoint_cut_short_leaves_two_segments_replayed_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_segment = dir.path().join("folio.wal.old");
    {
        let e = RedbEngine::open(dir.path())
            .expect("open")
            .with_flush_ops(1)
            .with_checkpoint_flushes(2);
        e.stall_checkpoints();
        e.write(batch(&[("a", "1"), ("b", "1")], &[]), true).unwrap();
        e.write(batch(&[("c", "1")], &[]), true).unwrap();
        assert!(old_segment.exists(), "the checkpoint started: the log rotated");
        // In the new segment: a delete and an overwrite of what the old one logged.
        e.write(batch(&[("b", "2")], &["a"]), true).unwrap();
        e.write_deferred(batch(&[("d", "2")], &[])).unwrap();
        e.sync().unwrap();
        assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), ["b=2", "c=1", "d=2"]);
    }
    assert!(old_segment.exists(), "the checkpoint never finished");
    let e = RedbEngine::open(dir.path()).expect("reopen");
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), ["b=2", "c=1", "d=2"]);
    assert!(!old_segment.exists(), "the replay's checkpoint retired the old segment");
}

#[test]
fn background_checkpoints_retire_their_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e =
        RedbEngine::open(dir.path()).expect("open").with_flush_ops(2).with_checkpoint_flushes(3);
    let mut want = Vec::new();
    for i in 0..200 {
        let k = format!("k{i:03}");
        if i % 2 == 0 {
            e.write(batch(&[(&k, "v")], &[]), true).unwrap();
        } else {
            e.write_deferred(batch(&[(&k, "v")], &[])).unwrap();
            e.upkeep();
        }
        want.push(format!("{k}=v"));
    }
    e.sync().unwrap();
    assert!(!dir.path().join("folio.wal.old").exists(), "every checkpoint finished");
    // The records end where the preallocated zeros begin (the last byte of a record is part of
    // a value, never zero here).
    let bytes = std::fs::read(dir.path().join("folio.wal")).expect("log");
    let log = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert!(log < 200 * 20, "checkpoints emptied the log: {log} bytes of records");
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), want);
    drop(e);
    let e = RedbEngine::open(dir.path()).expect("reopen");
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), want);
}

#[test]
fn deferred_writes_come_back_from_the_log_after_a_restart() {
    // The engine is dropped without a checkpoint, as a killed process would leave it: the
    // deferred records (synced by the later sync) are replayed from the write-ahead log.
    let dir = tempfile::tempdir().expect("tempdir");
    let log_len = || {
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    {
        let e = RedbEngine::open(dir.path()).expect("open");
        let before = log_len();
        e.write_deferred(batch(&[("a", "1")], &[])).unwrap();
        assert_eq!(log_len(), before, "a deferred batch waits in the log's buffer");
        e.write_deferred(batch(&[("b", "2")], &["a"])).unwrap();
        e.sync().unwrap();
        assert!(log_len() > before, "the sync writes the buffer to the log");
        // A deferred write followed by a synced one is covered by that sync.
        e.write_deferred(batch(&[("c", "3")], &[])).unwrap();
        e.write(batch(&[("d", "4")], &[]), true).unwrap();
    }
    let e = RedbEngine::open(dir.path()).expect("reopen");
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), vec!["b=2", "c=3", "d=4"]);
}

#[test]
fn scans_see_one_consistent_state_in_both_directions() {
    // Writes made while a scan runs, ahead of it and behind it, in either direction, are
    // invisible to it: the MVCC layer's garbage collection relies on this.
    each_engine(|e| {
        let keys_in: Vec<(String, String)> =
            (0..600).map(|i| (format!("k{i:04}"), "old".to_string())).collect();
        let puts: Vec<(&str, &str)> =
            keys_in.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        e.write(batch(&puts, &[]), true).unwrap();
        for reverse in [false, true] {
            let mut it = e.scan(Bound::Unbounded, Bound::Unbounded, reverse).expect("scan");
            let first = it.next().expect("an entry").expect("ok");
            // Delete everything, rewrite a key ahead of the scan, add new keys on both sides.
            let all: Vec<&str> = keys_in.iter().map(|(k, _)| k.as_str()).collect();
            e.write(batch(&[("a-new", "x"), ("z-new", "x")], &all), true).unwrap();
            e.write(batch(&[("k0300", "new")], &[]), true).unwrap();
            let rest: Vec<(Vec<u8>, Vec<u8>)> = it.map(|r| r.expect("item")).collect();
            assert_eq!(rest.len() + 1, 600, "reverse={reverse}: the scan saw other writes");
            assert!(
                std::iter::once(&first).chain(&rest).all(|(_, v)| v == b"old"),
                "reverse={reverse}: a value written during the scan was seen"
            );
            // Restore for the other direction.
            e.write(batch(&puts, &["a-new", "z-new"]), true).unwrap();
        }
    });
}

/// Reads during flushes: a writer keeps rewriting two keys together in one batch while redb
/// commits the pending writes every few keys; readers on other threads must always see the two
/// equal, by a scan and by two gets of one value that only grows.
#[test]
fn redb_reads_during_flushes_see_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = std::sync::Arc::new(RedbEngine::open(dir.path()).expect("open").with_flush_ops(4));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0u64;
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let all: Vec<(Vec<u8>, Vec<u8>)> = engine
                        .scan(Bound::Unbounded, Bound::Unbounded, checks % 2 == 0)
                        .expect("scan")
                        .map(|r| r.expect("item"))
                        .collect();
                    if !all.is_empty() {
                        assert_eq!(all.len(), 2, "{all:?}");
                        assert_eq!(all[0].1, all[1].1, "a scan saw half a batch");
                        let n = u64::from_be_bytes(all[0].1.clone().try_into().expect("8 bytes"));
                        assert!(n >= last, "a scan went back in time: {n} < {last}");
                        last = n;
                    }
                    if let Some(v) = engine.get(b"a").expect("get") {
                        let n = u64::from_be_bytes(v.try_into().expect("8 bytes"));
                        assert!(n >= last, "a get went back in time: {n} < {last}");
                        last = n;
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for i in 1..=3_000u64 {
        let mut b = WriteBatch::new();
        b.put(b"a".to_vec(), i.to_be_bytes().to_vec());
        b.put(b"b".to_vec(), i.to_be_bytes().to_vec());
        if i % 3 == 0 { engine.write_deferred(b) } else { engine.write(b, i % 3 == 1) }
            .expect("write");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
}

/// Writers on several threads fill the pending writes again and again, so that flushes run
/// (without the log's lock) while others log and stage, and checkpoints come every few
/// flushes; readers meanwhile must never see a writer's later batch without its earlier ones,
/// and nothing is lost, before or after reopening.
#[test]
fn redb_concurrent_writers_flush_without_losing_or_reordering() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const WRITERS: usize = 3;
    const BATCHES: u64 = 1_500;
    let key = |t: usize, n: u64| format!("w{t}-{n:05}").into_bytes();
    let last = |t: usize| format!("w{t}-last").into_bytes();
    let count = |engine: &RedbEngine, t: usize| -> u64 {
        let (lo, hi) = (format!("w{t}-"), format!("w{t}."));
        engine
            .scan(Bound::Included(lo.as_bytes()), Bound::Excluded(hi.as_bytes()), false)
            .expect("scan")
            .count() as u64
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = Arc::new(
            RedbEngine::open(dir.path())
                .expect("open")
                .with_flush_ops(8)
                .with_checkpoint_flushes(40),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (engine, stop) = (engine.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut checks = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for t in 0..WRITERS {
                            let Some(v) = engine.get(&last(t)).expect("get") else { continue };
                            let m = u64::from_be_bytes(v.try_into().expect("8 bytes"));
                            let got = engine.get(&key(t, m)).expect("get");
                            assert_eq!(got, Some(m.to_be_bytes().to_vec()), "w{t}: {m} is last");
                            // Every earlier batch's key, and the last key itself.
                            assert!(count(&engine, t) > m, "w{t}: a scan lost keys before {m}");
                        }
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    for n in 1..=BATCHES {
                        let mut b = WriteBatch::new();
                        b.put(key(t, n), n.to_be_bytes().to_vec());
                        b.put(last(t), n.to_be_bytes().to_vec());
                        if n % 2 == 0 {
                            engine.write_deferred(b)
                        } else {
                            engine.write(b, n % 3 == 0)
                        }
                        .expect("write");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
        for t in 0..WRITERS {
            assert_eq!(count(&engine, t), BATCHES + 1);
        }
    }
    let engine = RedbEngine::open(dir.path()).expect("reopen");
    for t in 0..WRITERS {
        assert_eq!(count(&engine, t), BATCHES + 1, "w{t} after reopening");
    }
}

/// Every pair of an engine, in key order.
fn everything(e: &dyn Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
    e.scan(Bound::Unbounded, Bound::Unbounded, false).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn redb_moves_keys_between_tables_when_the_layout_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = WriteBatch::new();
    for k in ["a1", "a2", "b1", "c1", "k10", "k20", "k31"] {
        b.put(k.as_bytes(), k.as_bytes());
    }
    for i in 0..1024u32 {
        b.put(i.to_be_bytes().to_vec(), vec![1]);
    }
    let want = {
        // Written under one table, flushed to redb and checkpointed, plus a logged write left
        // for the replay.
        let e = RedbEngine::open(dir.path()).unwrap();
        e.write(b, true).unwrap();
        e.flush().unwrap();
        e.write(batch(&[("c2", "x")], &[]), true).unwrap();
        everything(&e)
    };
    let e = open_spread(dir.path());
    assert_eq!(everything(&e), want);
    let tables: Vec<&[u8]> = vec![&[0, 0, 1], &[0, 0, 3], b"a", b"c", b"k1", b"k3"];
    assert_eq!(e.table_prefixes(), tables);
    assert_eq!(e.get(b"c2").unwrap(), Some(b"x".to_vec()));
    assert_eq!(e.status().unwrap().keys, want.len() as u64);
    drop(e);
    // The same layout again moves nothing; another one brings every key back to one table.
    let e = open_spread(dir.path());
    assert_eq!(e.table_prefixes(), tables);
    drop(e);
    let e = RedbEngine::open(dir.path()).unwrap();
    assert!(e.table_prefixes().is_empty());
    assert_eq!(everything(&e), want);
}

#[test]
fn redb_deletes_the_tables_it_empties() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_spread(dir.path()).with_flush_ops(1);
    e.write(batch(&[("a1", "1"), ("a2", "2"), ("c1", "3"), ("b", "4")], &[]), true).unwrap();
    assert_eq!(e.table_prefixes(), [b"a".to_vec(), b"c".to_vec()]);
    // A scan open before the tables go keeps seeing them.
    let before = e.scan(Bound::Unbounded, Bound::Unbounded, false).unwrap();
    e.write(batch(&[], &["a1", "a2"]), true).unwrap();
    assert_eq!(e.table_prefixes(), [b"c".to_vec()]);
    e.write(batch(&[], &["c1", "a9"]), true).unwrap();
    assert!(e.table_prefixes().is_empty());
    assert_eq!(before.count(), 4);
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, true), ["b=4"]);
    e.write(batch(&[("a3", "5")], &[]), true).unwrap();
    assert_eq!(keys(&e, Bound::Unbounded, Bound::Unbounded, false), ["a3=5", "b=4"]);
    drop(e);
    let e = open_spread(dir.path());
    assert_eq!(e.table_prefixes(), [b"a".to_vec()]);
    assert_eq!(keys(&e, Bound::Included(b"a"), Bound::Excluded(b"b"), false), ["a3=5"]);
}
