//! One test suite run against every engine.

use std::ops::Bound;

use super::{Engine, MemoryEngine, RedbEngine, WriteBatch};

/// Runs `check` against a fresh engine of each kind.
fn each_engine(check: impl Fn(&dyn Engine)) {
    check(&MemoryEngine::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = RedbEngine::open(dir.path()).expect("open redb");
    check(&redb);
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
fn redb_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RedbEngine::open(dir.path()).unwrap();
        e.write(batch(&[("k", "v")], &[]), true).unwrap();
    }
    let e = RedbEngine::open(dir.path()).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
}
