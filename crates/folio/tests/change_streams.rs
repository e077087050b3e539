//! Change streams through `Service::dispatch`: event shapes, scopes, resume tokens, transactions,
//! waiting getMores, retention (ChangeStreamHistoryLost) and the log surviving a reopen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use folio::{Connection, Service, ServiceOptions};
use folio::{Engine, MemoryEngine};
use folio::{Mvcc, MvccOptions, TxnStore};

fn service_on(engine: Arc<dyn Engine>, options: ServiceOptions) -> Service {
    let store = Mvcc::open(engine, MvccOptions::default()).expect("open mvcc");
    Service::new(store, options).expect("service")
}

fn service() -> Service {
    service_on(Arc::new(MemoryEngine::new()), ServiceOptions::default())
}

fn run(svc: &Service, conn: &mut Connection, mut cmd: Document) -> Document {
    if !cmd.contains_key("$db") {
        cmd.insert("$db", "test");
    }
    svc.dispatch(conn, cmd).body
}

fn ok(r: &Document) {
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
}

/// Opens a stream; returns (cursor id, first batch, postBatchResumeToken).
fn watch(
    svc: &Service,
    conn: &mut Connection,
    db: &str,
    target: Bson,
    stage: Document,
    rest: Vec<Document>,
) -> (i64, Vec<Document>, Document) {
    let mut pipeline = vec![doc! { "$changeStream": stage }];
    pipeline.extend(rest);
    let r =
        run(svc, conn, doc! { "aggregate": target, "pipeline": pipeline, "cursor": {}, "$db": db });
    batch(&r, "firstBatch")
}

/// A successful cursor reply's (cursor id, `batch` events, postBatchResumeToken).
fn batch(r: &Document, batch: &str) -> (i64, Vec<Document>, Document) {
    ok(r);
    let c = r.get_document("cursor").expect("cursor");
    (
        c.get_i64("id").expect("id"),
        docs(c.get_array(batch).expect("batch")),
        c.get_document("postBatchResumeToken").expect("pbrt").clone(),
    )
}

fn docs(a: &[Bson]) -> Vec<Document> {
    a.iter().filter_map(|b| b.as_document().cloned()).collect()
}

/// One getMore; returns (cursor id, events, postBatchResumeToken).
fn more(
    svc: &Service,
    conn: &mut Connection,
    db: &str,
    coll: &str,
    id: i64,
    wait_ms: i64,
) -> (i64, Vec<Document>, Document) {
    let r =
        run(svc, conn, doc! { "getMore": id, "collection": coll, "maxTimeMS": wait_ms, "$db": db });
    batch(&r, "nextBatch")
}

fn types(events: &[Document]) -> Vec<String> {
    events.iter().map(|e| e.get_str("operationType").unwrap_or("?").to_string()).collect()
}

#[test]
fn collection_stream_reports_crud_events_in_order_then_invalidates() {
    let svc = service();
    let mut conn = svc.connect("t");
    ok(&run(&svc, &mut conn, doc! { "create": "c" }));
    let (id, first, pbrt) = watch(&svc, &mut conn, "test", "c".into(), doc! {}, vec![]);
    assert!(first.is_empty());
    assert_ne!(id, 0);
    run(
        &svc,
        &mut conn,
        doc! { "insert": "c", "documents": [{ "_id": 1, "a": [1, 2, 3], "b": { "x": 1 } }] },
    );
    run(&svc, &mut conn, doc! { "insert": "other", "documents": [{ "_id": 1 }] });
    run(
        &svc,
        &mut conn,
        doc! { "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "b.x": 2 }, "$pop": { "a": 1 }, "$unset": { "zz": 1 } } }] },
    );
    run(
        &svc,
        &mut conn,
        doc! { "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "_id": 1, "r": true } }] },
    );
    run(&svc, &mut conn, doc! { "delete": "c", "deletes": [{ "q": { "_id": 1 }, "limit": 1 }] });
    run(&svc, &mut conn, doc! { "drop": "c" });
    let (id2, events, last) = more(&svc, &mut conn, "test", "c", id, 1000);
    assert_eq!(types(&events), ["insert", "update", "replace", "delete", "drop", "invalidate"]);
    assert_eq!(id2, 0, "an invalidated stream's cursor closes");
    let ins = &events[0];
    assert_eq!(ins.get_document("ns").unwrap(), &doc! { "db": "test", "coll": "c" });
    assert_eq!(ins.get_document("documentKey").unwrap(), &doc! { "_id": 1 });
    assert_eq!(ins.get_document("fullDocument").unwrap().get_i32("_id").ok(), Some(1));
    assert!(ins.get("clusterTime").is_some_and(|t| matches!(t, Bson::Timestamp(_))));
    assert!(ins.get("wallTime").is_some_and(|t| matches!(t, Bson::DateTime(_))));
    let desc = events[1].get_document("updateDescription").unwrap();
    assert_eq!(desc.get_document("updatedFields").unwrap(), &doc! { "b.x": 2 });
    assert_eq!(
        desc.get_array("truncatedArrays").unwrap(),
        &vec![Bson::Document(doc! { "field": "a", "newSize": 2 })]
    );
    assert!(events[1].get("fullDocument").is_none(), "default fullDocument omits it on updates");
    assert_eq!(events[2].get_document("fullDocument").unwrap(), &doc! { "_id": 1, "r": true });
    // Tokens sort in event order, starting after the opening position.
    let mut tokens: Vec<String> = events
        .iter()
        .map(|e| e.get_document("_id").unwrap().get_str("_data").unwrap().to_string())
        .collect();
    let sorted = {
        let mut t = tokens.clone();
        t.sort();
        t
    };
    assert_eq!(tokens, sorted);
    tokens.insert(0, pbrt.get_str("_data").unwrap().to_string());
    assert!(tokens[0] < tokens[1]);
    assert_eq!(last, events[5].get_document("_id").unwrap().clone());

    // resumeAfter the invalidate is refused; startAfter it continues after the drop.
    let inv = events[5].get_document("_id").unwrap().clone();
    let r = run(
        &svc,
        &mut conn,
        doc! { "aggregate": "c", "pipeline": [{ "$changeStream": { "resumeAfter": inv.clone() } }], "cursor": {} },
    );
    assert_eq!(r.get_i32("code").ok(), Some(260), "{r}");
    let (_, first, _) =
        watch(&svc, &mut conn, "test", "c".into(), doc! { "startAfter": inv }, vec![]);
    assert!(first.is_empty());
    // Resuming after the insert replays the rest.
    let after_insert = events[0].get_document("_id").unwrap().clone();
    let (_, replay, _) =
        watch(&svc, &mut conn, "test", "c".into(), doc! { "resumeAfter": after_insert }, vec![]);
    assert_eq!(types(&replay), ["update", "replace", "delete", "drop", "invalidate"]);
}

#[test]
fn database_and_deployment_streams_and_later_stages() {
    let svc = service();
    let mut conn = svc.connect("t");
    let (db_id, _, _) = watch(
        &svc,
        &mut conn,
        "app",
        Bson::Int32(1),
        doc! {},
        vec![
            doc! { "$match": { "operationType": "insert" } },
            doc! { "$project": { "documentKey": 1, "ns": 1 } },
        ],
    );
    let (all_id, _, _) = watch(
        &svc,
        &mut conn,
        "admin",
        Bson::Int32(1),
        doc! { "allChangesForCluster": true },
        vec![],
    );
    run(&svc, &mut conn, doc! { "insert": "a", "documents": [{ "_id": 1 }], "$db": "app" });
    run(&svc, &mut conn, doc! { "insert": "b", "documents": [{ "_id": 2 }], "$db": "other" });
    run(
        &svc,
        &mut conn,
        doc! { "delete": "a", "deletes": [{ "q": {}, "limit": 0 }], "$db": "app" },
    );
    let (_, events, _) = more(&svc, &mut conn, "app", "$cmd.aggregate", db_id, 1000);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].keys().collect::<Vec<_>>(), ["_id", "ns", "documentKey"]);
    let (_, events, _) = more(&svc, &mut conn, "admin", "$cmd.aggregate", all_id, 1000);
    assert_eq!(types(&events), ["insert", "insert", "delete"]);

    // Modifying _id fails the stream with 280; a stage that is not allowed fails at once.
    let (bad, _, _) =
        watch(&svc, &mut conn, "app", "a".into(), doc! {}, vec![doc! { "$project": { "_id": 0 } }]);
    run(&svc, &mut conn, doc! { "insert": "a", "documents": [{ "_id": 3 }], "$db": "app" });
    let r = run(&svc, &mut conn, doc! { "getMore": bad, "collection": "a", "$db": "app" });
    assert_eq!(r.get_i32("code").ok(), Some(280), "{r}");
    let r = run(
        &svc,
        &mut conn,
        doc! { "aggregate": "a", "pipeline": [{ "$changeStream": {} }, { "$group": { "_id": null } }], "cursor": {}, "$db": "app" },
    );
    assert_eq!(r.get_i32("code").ok(), Some(20), "{r}");
    let r = run(
        &svc,
        &mut conn,
        doc! { "aggregate": "a", "pipeline": [{ "$changeStream": { "bogus": 1 } }], "cursor": {}, "$db": "app" },
    );
    assert_eq!(r.get_i32("code").ok(), Some(40415), "{r}");
}

#[test]
fn transaction_events_share_cluster_time_and_txn_number() {
    let svc = service();
    let mut conn = svc.connect("t");
    ok(&run(&svc, &mut conn, doc! { "create": "c" }));
    let (id, _, _) = watch(&svc, &mut conn, "test", "c".into(), doc! {}, vec![]);
    let lsid = doc! { "id": bson::Uuid::new() };
    for (i, start) in [(1, true), (2, false)] {
        let mut cmd = doc! { "insert": "c", "documents": [{ "_id": i }], "lsid": lsid.clone(), "txnNumber": 7_i64, "autocommit": false };
        if start {
            cmd.insert("startTransaction", true);
            // A change stream inside a transaction is refused.
        }
        ok(&run(&svc, &mut conn, cmd));
    }
    let r = run(
        &svc,
        &mut conn,
        doc! { "aggregate": "c", "pipeline": [{ "$changeStream": {} }], "cursor": {}, "lsid": lsid.clone(), "txnNumber": 7_i64, "autocommit": false },
    );
    assert_eq!(r.get_i32("code").ok(), Some(263), "{r}");
    // The refused statement aborted the transaction: run it again and commit.
    let lsid2 = doc! { "id": bson::Uuid::new() };
    ok(&run(
        &svc,
        &mut conn,
        doc! { "insert": "c", "documents": [{ "_id": 1 }, { "_id": 2 }], "lsid": lsid2.clone(), "txnNumber": 1_i64, "startTransaction": true, "autocommit": false },
    ));
    ok(&run(
        &svc,
        &mut conn,
        doc! { "commitTransaction": 1, "lsid": lsid2.clone(), "txnNumber": 1_i64, "autocommit": false, "$db": "admin" },
    ));
    let (_, events, _) = more(&svc, &mut conn, "test", "c", id, 1000);
    assert_eq!(types(&events), ["insert", "insert"]);
    assert_eq!(events[0].get("clusterTime"), events[1].get("clusterTime"));
    for e in &events {
        assert_eq!(e.get_i64("txnNumber").ok(), Some(1), "{e}");
        assert_eq!(e.get_document("lsid").ok(), Some(&lsid2));
    }
}

/// The statements of one write command outside a transaction commit together: their events
/// share a cluster time, carry no transaction fields, and keep their order and distinct resume
/// tokens (a deliberate difference: MongoDB gives each statement its own time).
#[test]
fn statements_of_one_command_share_a_cluster_time_without_transaction_fields() {
    let svc = service();
    let mut conn = svc.connect("t");
    ok(&run(&svc, &mut conn, doc! { "create": "c" }));
    let (id, _, _) = watch(&svc, &mut conn, "test", "c".into(), doc! {}, vec![]);
    ok(&run(
        &svc,
        &mut conn,
        doc! { "insert": "c", "documents": [{ "_id": 1 }, { "_id": 2 }, { "_id": 3 }] },
    ));
    let (_, events, _) = more(&svc, &mut conn, "test", "c", id, 1000);
    assert_eq!(types(&events), ["insert", "insert", "insert"]);
    let ids: Vec<_> = events
        .iter()
        .map(|e| e.get_document("documentKey").unwrap().get_i32("_id").unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(events.iter().all(|e| e.get("clusterTime") == events[0].get("clusterTime")));
    assert!(events.iter().all(|e| !e.contains_key("txnNumber") && !e.contains_key("lsid")));
    let tokens: Vec<_> = events
        .iter()
        .map(|e| e.get_document("_id").unwrap().get_str("_data").unwrap().to_string())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[test]
fn get_more_waits_for_a_commit_without_polling_and_times_out_empty() {
    let svc = Arc::new(service());
    let mut conn = svc.connect("t");
    ok(&run(&svc, &mut conn, doc! { "create": "c" }));
    let (id, _, pbrt) =
        watch(&svc, &mut conn, "test", "c".into(), doc! { "fullDocument": "updateLookup" }, vec![]);
    // Nothing happens: the getMore returns an empty batch after about maxTimeMS.
    let t = Instant::now();
    let (still, events, pbrt2) = more(&svc, &mut conn, "test", "c", id, 200);
    assert!(events.is_empty() && still == id);
    assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    assert!(pbrt2.get_str("_data").unwrap() >= pbrt.get_str("_data").unwrap());
    // A write from another thread wakes the waiting getMore long before its deadline.
    let writer = {
        let svc = svc.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut conn = svc.connect("w");
            run(&svc, &mut conn, doc! { "insert": "c", "documents": [{ "_id": 1, "n": 1 }] });
            run(
                &svc,
                &mut conn,
                doc! { "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "n": 1 } } }] },
            );
        })
    };
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 && t.elapsed() < Duration::from_secs(10) {
        got.extend(more(&svc, &mut conn, "test", "c", id, 5000).1);
    }
    writer.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(types(&got), ["insert", "update"]);
    assert_eq!(got[1].get_document("fullDocument").unwrap(), &doc! { "_id": 1, "n": 2 });
}

#[test]
fn pre_and_post_images_follow_the_collection_option() {
    let svc = service();
    let mut conn = svc.connect("t");
    ok(&run(&svc, &mut conn, doc! { "insert": "c", "documents": [{ "_id": 1, "x": 0 }] }));
    let stage =
        doc! { "fullDocument": "whenAvailable", "fullDocumentBeforeChange": "whenAvailable" };
    let (id, _, _) = watch(&svc, &mut conn, "test", "c".into(), stage.clone(), vec![]);
    run(
        &svc,
        &mut conn,
        doc! { "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "x": 1 } } }] },
    );
    ok(&run(
        &svc,
        &mut conn,
        doc! { "collMod": "c", "changeStreamPreAndPostImages": { "enabled": true } },
    ));
    run(
        &svc,
        &mut conn,
        doc! { "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "x": 2 } } }] },
    );
    let (_, events, _) = more(&svc, &mut conn, "test", "c", id, 1000);
    assert_eq!(types(&events), ["update", "update"]);
    assert_eq!(events[0].get("fullDocument"), Some(&Bson::Null));
    assert_eq!(events[0].get("fullDocumentBeforeChange"), Some(&Bson::Null));
    assert_eq!(events[1].get_document("fullDocument").unwrap(), &doc! { "_id": 1, "x": 2 });
    assert_eq!(
        events[1].get_document("fullDocumentBeforeChange").unwrap(),
        &doc! { "_id": 1, "x": 1 }
    );
    // `required` fails when the image was not recorded.
    let (id, _, _) = watch(
        &svc,
        &mut conn,
        "test",
        "c".into(),
        doc! { "fullDocumentBeforeChange": "required" },
        vec![],
    );
    ok(&run(
        &svc,
        &mut conn,
        doc! { "collMod": "c", "changeStreamPreAndPostImages": { "enabled": false } },
    ));
    run(&svc, &mut conn, doc! { "delete": "c", "deletes": [{ "q": {}, "limit": 0 }] });
    let r = run(&svc, &mut conn, doc! { "getMore": id, "collection": "c", "$db": "test" });
    assert_eq!(r.get_i32("code").ok(), Some(47), "{r}");
}

#[test]
fn the_log_survives_a_reopen_and_trimming_loses_history() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let token;
    {
        let svc = service_on(engine.clone(), ServiceOptions::default());
        let mut conn = svc.connect("t");
        ok(&run(&svc, &mut conn, doc! { "create": "c" }));
        let (_, _, pbrt) = watch(&svc, &mut conn, "test", "c".into(), doc! {}, vec![]);
        token = pbrt;
        run(&svc, &mut conn, doc! { "insert": "c", "documents": [{ "_id": 1 }, { "_id": 2 }] });
    }
    // A new store over the same engine (as after a restart) resumes from the saved token.
    let options = ServiceOptions { oplog_size_mb: Some(0.0001), ..ServiceOptions::default() };
    let store = Mvcc::open(engine, MvccOptions { gc_interval: None, ..MvccOptions::default() })
        .expect("mvcc");
    let svc = Service::new(store.clone(), options).expect("service");
    let mut conn = svc.connect("t");
    let (_, events, _) =
        watch(&svc, &mut conn, "test", "c".into(), doc! { "resumeAfter": token.clone() }, vec![]);
    assert_eq!(types(&events), ["insert", "insert"]);
    // Past the retention size, trimming deletes old records and the token's history is lost.
    for i in 0..20 {
        run(
            &svc,
            &mut conn,
            doc! { "insert": "c", "documents": [{ "_id": 100 + i, "pad": "x".repeat(50) }] },
        );
    }
    assert!(store.trim_log().expect("trim") > 0);
    let (max, _, used) = store.log_usage();
    assert!(used <= max, "{used} > {max}");
    let r = run(
        &svc,
        &mut conn,
        doc! { "aggregate": "c", "pipeline": [{ "$changeStream": { "resumeAfter": token } }], "cursor": {} },
    );
    assert_eq!(r.get_i32("code").ok(), Some(286), "{r}");
    assert_eq!(r.get_str("codeName").ok(), Some("ChangeStreamHistoryLost"), "{r}");
}

#[test]
fn ttl_deletes_appear_as_delete_events_and_settings_change_at_runtime() {
    let svc = service();
    let mut conn = svc.connect("t");
    let now = bson::DateTime::now().timestamp_millis();
    let hour_ago = bson::DateTime::from_millis(now - 3_600_000);
    run(
        &svc,
        &mut conn,
        doc! { "insert": "s", "documents": [{ "_id": 1, "at": hour_ago }, { "_id": 2, "at": bson::DateTime::from_millis(now) }] },
    );
    ok(&run(
        &svc,
        &mut conn,
        doc! { "createIndexes": "s", "indexes": [{ "key": { "at": 1 }, "name": "at_1", "expireAfterSeconds": 86400 }] },
    ));
    let (id, _, _) = watch(&svc, &mut conn, "test", "s".into(), doc! {}, vec![]);
    assert_eq!(folio::testing::ttl_pass(&svc).unwrap(), 0, "a day is not over yet");
    // collMod shortens the expiry; the next pass deletes the hour-old document.
    let r = run(
        &svc,
        &mut conn,
        doc! { "collMod": "s", "index": { "name": "at_1", "expireAfterSeconds": 60 } },
    );
    ok(&r);
    assert_eq!(r.get_i64("expireAfterSeconds_new").ok(), Some(60), "{r}");
    assert_eq!(folio::testing::ttl_pass(&svc).unwrap(), 1);
    let (_, events, _) = more(&svc, &mut conn, "test", "s", id, 1000);
    assert_eq!(types(&events), ["delete"], "collMod shows only with showExpandedEvents");
    assert_eq!(events[0].get_document("documentKey").unwrap(), &doc! { "_id": 1 });

    let r =
        run(&svc, &mut conn, doc! { "setParameter": 1, "ttlMonitorSleepSecs": 1, "$db": "admin" });
    assert_eq!(r.get_i32("was").ok(), Some(60), "{r}");
    let r =
        run(&svc, &mut conn, doc! { "getParameter": 1, "ttlMonitorSleepSecs": 1, "$db": "admin" });
    assert_eq!(r.get_i32("ttlMonitorSleepSecs").ok(), Some(1), "{r}");
    let r = run(&svc, &mut conn, doc! { "setParameter": 1, "noSuchParameter": 1, "$db": "admin" });
    assert_eq!(r.get_i32("code").ok(), Some(72), "{r}");
    ok(&run(
        &svc,
        &mut conn,
        doc! { "replSetResizeOplog": 1, "size": 2048.0, "minRetentionHours": 1.0, "$db": "admin" },
    ));
    assert_eq!(svc.store().log_usage().0, 2048 * 1024 * 1024);
    assert_eq!(svc.store().log_usage().1, Duration::from_secs(3600));
}
