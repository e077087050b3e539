//! Capped collections and tailable cursors through `Service::dispatch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use folio::MemoryEngine;
use folio::{Connection, Service, ServiceOptions};
use folio::{Mvcc, MvccOptions};

fn service() -> Service {
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    Service::new(store, ServiceOptions::default()).expect("service")
}

fn run(svc: &Service, conn: &mut Connection, mut cmd: Document) -> Document {
    if !cmd.contains_key("$db") {
        cmd.insert("$db", "test");
    }
    svc.dispatch(conn, cmd).body
}

fn ids(r: &Document, batch: &str) -> Vec<i32> {
    r.get_document("cursor")
        .and_then(|c| c.get_array(batch))
        .unwrap_or_else(|_| panic!("no batch: {r}"))
        .iter()
        .filter_map(|d| d.as_document().and_then(|d| d.get_i32("_id").ok()))
        .collect()
}

#[test]
fn capped_collections_keep_their_newest_documents_in_insertion_order() {
    let svc = service();
    let mut conn = svc.connect("t");
    let r = run(&svc, &mut conn, doc! { "create": "nosize", "capped": true });
    assert_eq!(r.get_i32("code").ok(), Some(72), "{r}");
    let r = run(&svc, &mut conn, doc! { "create": "log", "capped": true, "size": 4096, "max": 3 });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    // _ids out of order: natural order is insertion order, not _id order.
    for id in [5, 1, 4, 2, 3] {
        run(&svc, &mut conn, doc! { "insert": "log", "documents": [{ "_id": id }] });
    }
    let r = run(&svc, &mut conn, doc! { "find": "log", "filter": {} });
    assert_eq!(ids(&r, "firstBatch"), [4, 2, 3], "only the newest three, oldest first");
    // The size limit: 130-byte documents in a 4096-byte collection.
    run(&svc, &mut conn, doc! { "create": "big", "capped": true, "size": 4096 });
    for id in 0..200 {
        run(
            &svc,
            &mut conn,
            doc! { "insert": "big", "documents": [{ "_id": id, "pad": "x".repeat(100) }] },
        );
    }
    let r = run(&svc, &mut conn, doc! { "collStats": "big" });
    let size =
        r.get("size").and_then(Bson::as_i64).or_else(|| r.get_i32("size").ok().map(i64::from));
    let r = run(&svc, &mut conn, doc! { "find": "big", "filter": {}, "batchSize": 1000 });
    let kept = ids(&r, "firstBatch");
    assert!(kept.len() < 40 && kept.len() > 20, "{} documents kept, size {size:?}", kept.len());
    assert_eq!(*kept.last().unwrap(), 199);
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "the newest, contiguous: {kept:?}");
    // Writes in a transaction are refused.
    let lsid = doc! { "id": bson::Uuid::new() };
    let r = run(
        &svc,
        &mut conn,
        doc! { "insert": "log", "documents": [{ "_id": 9 }], "lsid": lsid, "txnNumber": 1_i64, "startTransaction": true, "autocommit": false },
    );
    assert_eq!(r.get_i32("code").ok(), Some(263), "{r}");
    // Deletes and updates keep the accounting right; dropping removes everything.
    run(&svc, &mut conn, doc! { "delete": "log", "deletes": [{ "q": { "_id": 2 }, "limit": 1 }] });
    run(
        &svc,
        &mut conn,
        doc! { "update": "log", "updates": [{ "q": { "_id": 4 }, "u": { "$set": { "grown": "y".repeat(50) } } }] },
    );
    run(&svc, &mut conn, doc! { "insert": "log", "documents": [{ "_id": 6 }, { "_id": 7 }] });
    let r = run(&svc, &mut conn, doc! { "find": "log", "filter": {} });
    assert_eq!(ids(&r, "firstBatch"), [3, 6, 7]);
    let store = svc.store();
    let txn = store.begin().expect("begin");
    assert!(folio::verify(txn.as_ref()).expect("verify").is_empty());
}

#[test]
fn a_tailable_await_cursor_returns_a_document_inserted_after_it_opened() {
    let svc = Arc::new(service());
    let mut conn = svc.connect("t");
    run(&svc, &mut conn, doc! { "create": "feed", "capped": true, "size": 100000 });
    run(
        &svc,
        &mut conn,
        doc! { "insert": "feed", "documents": [{ "_id": 1, "k": "a" }, { "_id": 2, "k": "b" }] },
    );
    let r = run(&svc, &mut conn, doc! { "find": "plain", "filter": {}, "tailable": true });
    assert_eq!(r.get_i32("code").ok(), Some(2), "tailable needs a capped collection: {r}");
    let r = run(
        &svc,
        &mut conn,
        doc! { "find": "feed", "filter": { "k": { "$ne": "skip" } }, "tailable": true, "awaitData": true },
    );
    assert_eq!(ids(&r, "firstBatch"), [1, 2]);
    let id = r.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0, "a tailable cursor stays open at the end");
    // Nothing new: an empty batch after about maxTimeMS, the cursor still open.
    let t = Instant::now();
    let r = run(&svc, &mut conn, doc! { "getMore": id, "collection": "feed", "maxTimeMS": 200 });
    assert!(ids(&r, "nextBatch").is_empty(), "{r}");
    assert!(t.elapsed() >= Duration::from_millis(190));
    assert_eq!(r.get_document("cursor").unwrap().get_i64("id").ok(), Some(id));
    let writer = {
        let svc = svc.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut conn = svc.connect("w");
            run(
                &svc,
                &mut conn,
                doc! { "insert": "feed", "documents": [{ "_id": 3, "k": "skip" }, { "_id": 4, "k": "c" }] },
            );
        })
    };
    let t = Instant::now();
    let r = run(&svc, &mut conn, doc! { "getMore": id, "collection": "feed", "maxTimeMS": 5000 });
    writer.join().unwrap();
    assert_eq!(ids(&r, "nextBatch"), [4], "{r}");
    assert!(t.elapsed() < Duration::from_secs(3), "woken by the commit, not the timeout");
    let r = run(&svc, &mut conn, doc! { "killCursors": "feed", "cursors": [id] });
    assert_eq!(r.get_array("cursorsKilled").map(Vec::len).ok(), Some(1), "{r}");
}
