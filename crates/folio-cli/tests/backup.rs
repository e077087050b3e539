//! `folio dump` and `folio restore` as processes, against `folio serve` processes: every BSON
//! type survives, indexes, validators, views and collation come back, the directory, gzip and
//! archive forms agree, a dump taken while transfers run restores with the bank's total
//! intact, a data directory is dumped offline, and a dump in mongodump's format built here
//! byte by byte restores.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp, doc};
use mongodb::Client;
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};

use common::Server;

/// Runs `folio ARGS`, returning its output; panics with stderr when it fails.
fn folio(args: &[&str]) -> Output {
    let out = common::folio().args(args).output().expect("run folio");
    assert!(
        out.status.success(),
        "folio {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `folio ARGS`, which must fail, and returns its stderr.
fn folio_fails(args: &[&str]) -> String {
    let out = common::folio().args(args).output().expect("run folio");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "folio {args:?} succeeded: {stderr}");
    stderr
}

/// Every document of `db.coll` in `_id` order.
async fn all(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    let reply = client
        .database(db)
        .run_command(doc! { "find": coll, "sort": { "_id": 1 }, "batchSize": 100_000 })
        .await
        .expect("find");
    let cursor = reply.get_document("cursor").expect("cursor");
    assert_eq!(cursor.get_i64("id").ok(), Some(0), "one batch");
    cursor
        .get_array("firstBatch")
        .expect("batch")
        .iter()
        .map(|d| d.as_document().expect("document").clone())
        .collect()
}

fn bytes(docs: &[Document]) -> Vec<Vec<u8>> {
    docs.iter().map(|d| d.to_vec().expect("encode")).collect()
}

/// Documents holding every BSON type (and the edge values of the numeric ones).
fn every_type() -> Vec<Document> {
    let special: Document = serde_json::from_str(
        r#"{"p": {"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}}}"#,
    )
    .expect("dbPointer");
    vec![
        doc! {
            "_id": 1,
            "double": 1.5, "neg_zero": -0.0, "inf": f64::NEG_INFINITY, "nan": f64::NAN,
            "string": "héllo\u{0}x", "doc": { "z": 1, "a": { "y": 2, "b": 3 } },
            "array": [1_i32, 2_i64, 3.0, "four", { "y": null, "b": true }, []],
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
            "function": Binary { subtype: BinarySubtype::Function, bytes: vec![1] },
            "old": Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![2, 0, 0, 0, 1, 2] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "md5": Binary { subtype: BinarySubtype::Md5, bytes: vec![9; 16] },
            "encrypted": Binary { subtype: BinarySubtype::Encrypted, bytes: vec![3; 5] },
            "user": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![4] },
            "undefined": Bson::Undefined, "bool": false, "null": null,
            "date": bson::DateTime::from_millis(-62_135_596_800_000),
            "date2": bson::DateTime::from_millis(253_402_300_799_999),
            "regex": Regex { pattern: "^a.*b$".try_into().expect("p"), options: "imsx".try_into().expect("o") },
            "dbptr": special.get("p").expect("p").clone(),
            "code": Bson::JavaScriptCode("function () { return 1; }".into()),
            "symbol": Bson::Symbol("sym".into()),
            "code_scope": JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "q": 1, "b": 2 } },
            "int32": i32::MIN, "int64": i64::MAX, "small64": 1_i64,
            "timestamp": Timestamp { time: 1_700_000_000, increment: 42 },
            "zero_ts": Timestamp { time: 0, increment: 0 },
            "decimal": "1234.5678E-3".parse::<Decimal128>().expect("decimal"),
            "dec_nan": "NaN".parse::<Decimal128>().expect("decimal"),
            "dec_neg0": "-0.00".parse::<Decimal128>().expect("decimal"),
            "min": Bson::MinKey, "max": Bson::MaxKey,
        },
        doc! { "_id": "string id", "n": 2_i64 },
        doc! { "_id": bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60719").expect("oid"), "n": 3 },
        doc! { "_id": { "compound": 1, "key": "k" }, "n": Bson::Decimal128("4".parse().expect("d")) },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bson_type_survives_every_format() {
    let source = Server::in_memory();
    let client = source.client().await;
    let docs = every_type();
    let coll = client.database("types").collection::<Document>("all");
    coll.insert_many(docs.clone()).await.expect("insert");
    let expected = all(&client, "types", "all").await;
    assert_eq!(expected.len(), docs.len());

    let dir = tempfile::tempdir().expect("tempdir");
    let uri = source.uri();
    let variants: [(&str, &[&str]); 4] = [
        ("dir", &[]),
        ("gzip", &["--gzip"]),
        ("archive", &["--archive=ARCHIVE"]),
        ("archive-gzip", &["--archive=ARCHIVE", "--gzip"]),
    ];
    for (name, flags) in variants {
        let out = dir.path().join(name);
        let archive = dir.path().join(format!("{name}.archive"));
        let flags: Vec<String> =
            flags.iter().map(|f| f.replace("ARCHIVE", &archive.display().to_string())).collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut dump = vec!["dump", "--uri", &uri];
        let out_s = out.display().to_string();
        if !name.starts_with("archive") {
            dump.extend(["--out", &out_s]);
        }
        dump.extend(&flags);
        folio(&dump);
        match name {
            "dir" => {
                assert!(out.join("types/all.bson").is_file());
                assert!(out.join("types/all.metadata.json").is_file());
                // The .bson file is the documents back to back, as the server returned them.
                let raw = std::fs::read(out.join("types/all.bson")).expect("bson");
                let mut from_file = bytes(&expected);
                from_file.sort();
                let mut split = Vec::new();
                let mut rest = &raw[..];
                while !rest.is_empty() {
                    let n = i32::from_le_bytes(rest[..4].try_into().expect("len")) as usize;
                    split.push(rest[..n].to_vec());
                    rest = &rest[n..];
                }
                split.sort();
                assert_eq!(split, from_file);
            }
            "gzip" => {
                assert!(out.join("types/all.bson.gz").is_file());
                assert!(out.join("types/all.metadata.json.gz").is_file());
                assert!(!out.join("types/all.bson").exists());
            }
            _ => assert!(archive.is_file()),
        }

        let target = Server::in_memory();
        let target_uri = target.uri();
        let mut restore = vec!["restore", "--uri", &target_uri];
        restore.extend(&flags);
        if !name.starts_with("archive") {
            restore.push(&out_s);
        }
        let output = folio(&restore);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("4 document(s) restored successfully. 0 document(s) failed"),
            "{name}: {stderr}"
        );
        let restored = all(&target.client().await, "types", "all").await;
        assert_eq!(bytes(&restored), bytes(&expected), "{name}: every type and field order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_validators_views_and_collation_come_back() {
    let source = Server::in_memory();
    let client = source.client().await;
    let db = client.database("shop");
    db.run_command(doc! {
        "create": "orders",
        "validator": { "$jsonSchema": { "required": ["qty"], "properties": { "qty": { "bsonType": "int", "minimum": 0 } } } },
        "validationLevel": "strict",
        "validationAction": "error",
    })
    .await
    .expect("create orders");
    db.run_command(doc! { "create": "names", "collation": { "locale": "fr", "strength": 2 } })
        .await
        .expect("create names");
    db.run_command(doc! {
        "createIndexes": "orders",
        "indexes": [
            { "key": { "sku": 1, "qty": -1 }, "name": "sku_1_qty_-1", "unique": true },
            { "key": { "note": 1 }, "name": "note_sparse", "sparse": true },
            { "key": { "at": 1 }, "name": "at_ttl", "expireAfterSeconds": 3600 },
            { "key": { "qty": 1 }, "name": "big", "partialFilterExpression": { "qty": { "$gt": 10 } } },
        ],
    })
    .await
    .expect("indexes");
    db.run_command(
        doc! { "createIndexes": "names", "indexes": [{ "key": { "n": 1 }, "name": "n_1" }] },
    )
    .await
    .expect("names index");
    db.run_command(doc! { "insert": "orders", "documents": [
        { "_id": 1, "sku": "a", "qty": 5 }, { "_id": 2, "sku": "b", "qty": 50 },
    ] })
    .await
    .expect("orders");
    db.run_command(doc! { "insert": "names", "documents": [{ "_id": 1, "n": "élan" }, { "_id": 2, "n": "Zoé" }] })
        .await
        .expect("names");
    db.run_command(doc! {
        "create": "big_orders", "viewOn": "orders",
        "pipeline": [{ "$match": { "qty": { "$gt": 10 } } }, { "$project": { "sku": 1 } }],
    })
    .await
    .expect("view");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dump");
    let out_s = out.display().to_string();
    folio(&["dump", "--uri", &source.uri(), "--db", "shop", "--out", &out_s]);
    assert!(out.join("shop/big_orders.metadata.json").is_file());
    assert!(!out.join("shop/big_orders.bson").exists(), "a view has no documents file");
    let meta = std::fs::read_to_string(out.join("shop/orders.metadata.json")).expect("metadata");
    assert!(meta.starts_with(r#"{"options":{"validator":"#), "{meta}");
    assert!(
        meta.contains(r#""key":{"sku":{"$numberInt":"1"},"qty":{"$numberInt":"-1"}}"#),
        "{meta}"
    );
    assert!(meta.contains(r#""collectionName":"orders","type":"collection"}"#), "{meta}");

    let target = Server::in_memory();
    folio(&["restore", "--uri", &target.uri(), &out_s]);
    let restored = target.client().await;
    let tdb = restored.database("shop");
    for coll in ["orders", "names"] {
        let indexes = |c: Client| async move {
            let r = c
                .database("shop")
                .run_command(doc! { "listIndexes": coll })
                .await
                .expect("listIndexes");
            r.get_document("cursor").expect("cursor").get_array("firstBatch").expect("b").clone()
        };
        assert_eq!(
            indexes(restored.clone()).await,
            indexes(client.clone()).await,
            "{coll} indexes"
        );
    }
    let infos = |c: Client| async move {
        let r = c.database("shop").run_command(doc! { "listCollections": 1 }).await.expect("list");
        let mut v: Vec<(String, String, Document)> = r
            .get_document("cursor")
            .expect("cursor")
            .get_array("firstBatch")
            .expect("batch")
            .iter()
            .map(|d| {
                let d = d.as_document().expect("doc");
                (
                    d.get_str("name").expect("name").to_string(),
                    d.get_str("type").expect("type").to_string(),
                    d.get_document("options").expect("options").clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(infos(restored.clone()).await, infos(client.clone()).await, "options and views");
    // The validator is enforced, the view answers, the collation orders.
    let bad = tdb
        .run_command(
            doc! { "insert": "orders", "documents": [{ "_id": 3, "sku": "c", "qty": -1 }] },
        )
        .await
        .expect("insert");
    let code =
        bad.get_array("writeErrors").expect("refused")[0].as_document().expect("e").get_i32("code");
    assert_eq!(code.ok(), Some(121), "{bad}");
    assert_eq!(all(&restored, "shop", "big_orders").await, vec![doc! { "_id": 2, "sku": "b" }]);
    let sorted = tdb
        .run_command(doc! { "find": "names", "sort": { "n": 1 }, "projection": { "_id": 1 } })
        .await
        .expect("find");
    let ids: Vec<i32> = sorted
        .get_document("cursor")
        .expect("c")
        .get_array("firstBatch")
        .expect("b")
        .iter()
        .map(|d| d.as_document().expect("d").get_i32("_id").expect("id"))
        .collect();
    assert_eq!(ids, vec![1, 2], "collection collation (fr): élan before Zoé");
    let dup = tdb
        .run_command(doc! { "insert": "orders", "documents": [{ "_id": 9, "sku": "a", "qty": 5 }] })
        .await
        .expect("insert");
    assert!(dup.get_array("writeErrors").is_ok(), "the unique index is back: {dup}");

    // Without --drop a second restore adds nothing and reports the duplicates; with --drop the
    // collections are replaced.
    let again = folio(&["restore", "--uri", &target.uri(), &out_s]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("0 document(s) restored successfully. 4 document(s) failed"),
        "{stderr}"
    );
    tdb.run_command(doc! { "insert": "names", "documents": [{ "_id": 3, "n": "extra" }] })
        .await
        .expect("extra");
    let dropped =
        folio(&["restore", "--uri", &target.uri(), "--drop", "--nsInclude", "shop.names", &out_s]);
    let stderr = String::from_utf8_lossy(&dropped.stderr);
    assert!(
        stderr.contains("2 document(s) restored successfully. 0 document(s) failed"),
        "{stderr}"
    );
    assert_eq!(all(&restored, "shop", "names").await.len(), 2);
}

fn push(d: Document, out: &mut Vec<u8>) {
    out.extend(d.to_vec().expect("encode"));
}

const ACCOUNTS: i64 = 20;
const OPENING_BALANCE: i64 = 1_000;

/// One transfer between a checking and a savings account (different collections), in a
/// transaction, retried on transient errors. Returns whether it committed.
async fn transfer(client: &Client, from_checking: bool, id: i64, amount: i64) -> bool {
    let (from, to) = if from_checking { ("checking", "savings") } else { ("savings", "checking") };
    let db = client.database("bank");
    let mut session = client.start_session().await.expect("session");
    for _ in 0..50 {
        session.start_transaction().await.expect("start");
        let run = async {
            db.collection::<Document>(from)
                .update_one(doc! { "_id": id }, doc! { "$inc": { "bal": -amount } })
                .session(&mut session)
                .await?;
            db.collection::<Document>(to)
                .update_one(doc! { "_id": (id * 7) % ACCOUNTS }, doc! { "$inc": { "bal": amount } })
                .session(&mut session)
                .await?;
            Ok::<(), mongodb::error::Error>(())
        };
        match run.await {
            Ok(()) => loop {
                match session.commit_transaction().await {
                    Ok(()) => return true,
                    Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {}
                    Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => break,
                    Err(e) => panic!("commit: {e}"),
                }
            },
            Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                let _ = session.abort_transaction().await;
            }
            Err(e) => panic!("transfer: {e}"),
        }
    }
    false
}

async fn total(client: &Client) -> (i64, usize) {
    let mut sum = 0;
    let mut n = 0;
    for coll in ["checking", "savings"] {
        for d in all(client, "bank", coll).await {
            sum += d.get_i64("bal").expect("an Int64 balance");
            n += 1;
        }
    }
    (sum, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dump_during_concurrent_transfers_keeps_the_bank_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Server::in_memory();
    let client = source.client().await;
    for coll in ["checking", "savings"] {
        let accounts: Vec<Document> =
            (0..ACCOUNTS).map(|id| doc! { "_id": id, "bal": OPENING_BALANCE }).collect();
        client
            .database("bank")
            .collection::<Document>(coll)
            .insert_many(accounts)
            .await
            .expect("open");
    }
    let expected_total = 2 * ACCOUNTS * OPENING_BALANCE;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4_i64 {
        let (client, stop, committed) = (client.clone(), stop.clone(), committed.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                if transfer(&client, i % 2 == 0, (i * 13 + w) % ACCOUNTS, 1 + i % 17).await {
                    committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the transfers get going, then dump several times while they run.
    while committed.load(std::sync::atomic::Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let uri = source.uri();
    let mut dumps = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("dump{i}"));
        let before = committed.load(std::sync::atomic::Ordering::Relaxed);
        let (uri, out_s) = (uri.clone(), out.display().to_string());
        tokio::task::spawn_blocking(move || folio(&["dump", "--uri", &uri, "--out", &out_s]))
            .await
            .expect("dump");
        dumps.push((out, committed.load(std::sync::atomic::Ordering::Relaxed) - before));
    }
    let overlapping: u64 = dumps.iter().map(|(_, during)| during).sum();
    assert!(overlapping > 0, "transfers committed while the dumps ran");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(total(&client).await, (expected_total, 2 * ACCOUNTS as usize), "the live bank");
    let changed = all(&client, "bank", "checking")
        .await
        .iter()
        .any(|d| d.get_i64("bal").ok() != Some(OPENING_BALANCE));
    assert!(changed, "the transfers moved money");

    for (out, during) in dumps {
        let target = Server::in_memory();
        folio(&["restore", "--uri", &target.uri(), &out.display().to_string()]);
        let restored = target.client().await;
        assert_eq!(
            total(&restored).await,
            (expected_total, 2 * ACCOUNTS as usize),
            "the restored copy of {} ({during} transfers committed during that dump)",
            out.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_dumped_offline_and_restored_into_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let server = Server::start(&["--dbpath", &data_s]);
    let client = server.client().await;
    client
        .database("app")
        .collection::<Document>("items")
        .insert_many(every_type())
        .await
        .expect("insert");
    client
        .database("app")
        .run_command(
            doc! { "createIndexes": "items", "indexes": [{ "key": { "n": -1 }, "name": "n_-1" }] },
        )
        .await
        .expect("index");
    let expected = all(&client, "app", "items").await;

    // While the server holds the directory, an offline dump is refused.
    let out_s = dir.path().join("dump").display().to_string();
    let held = folio_fails(&["dump", "--dbpath", &data_s, "--out", &out_s]);
    assert!(held.contains("cannot open"), "{held}");
    drop(client);
    drop(server);

    folio(&["dump", "--dbpath", &data_s, "--out", &out_s]);
    let copy = dir.path().join("copy");
    let copy_s = copy.display().to_string();
    folio(&["restore", "--dbpath", &copy_s, &out_s]);
    let verified = folio(&["verify", "--dbpath", &copy_s]);
    assert!(String::from_utf8_lossy(&verified.stdout).contains("all indexes agree"));
    let server = Server::start(&["--dbpath", &copy_s]);
    let client = server.client().await;
    assert_eq!(bytes(&all(&client, "app", "items").await), bytes(&expected));
    let (_, names) = options_and_indexes(&client, "app", "items").await;
    assert_eq!(names, vec!["_id_", "n_-1"]);

    // A missing data directory is an error, not an empty dump.
    folio_fails(&[
        "dump",
        "--dbpath",
        &dir.path().join("nope").display().to_string(),
        "--out",
        &out_s,
    ]);
}

/// `{_id: 1, name: "ada", n: NumberLong(5)}`, written out from the BSON specification: a total
/// length, then per element a type byte, a zero-terminated name and the value, then 0x00.
const ADA: &[u8] = &[
    0x27, 0x00, 0x00, 0x00, // 39 bytes
    0x10, b'_', b'i', b'd', 0x00, 0x01, 0x00, 0x00, 0x00, // int32 _id: 1
    0x02, b'n', b'a', b'm', b'e', 0x00, 0x04, 0x00, 0x00, 0x00, b'a', b'd', b'a',
    0x00, // string
    0x12, b'n', 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // int64 n: 5
    0x00,
];
/// `{_id: 2, name: "bob", n: NumberLong(7)}`.
const BOB: &[u8] = &[
    0x27, 0x00, 0x00, 0x00, //
    0x10, b'_', b'i', b'd', 0x00, 0x02, 0x00, 0x00, 0x00, //
    0x02, b'n', b'a', b'm', b'e', 0x00, 0x04, 0x00, 0x00, 0x00, b'b', b'o', b'b', 0x00, //
    0x12, b'n', 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00,
];

/// A metadata file as mongodump 100.x writes it (canonical Extended JSON, its field order).
const PEOPLE_METADATA: &str = r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},{"v":{"$numberInt":"2"},"key":{"name":{"$numberInt":"1"}},"name":"name_1","unique":true}],"uuid":"2b0d3f3e9a5c4f6e8d7c6b5a49382716","collectionName":"people","type":"collection"}"#;
const ADULTS_METADATA: &str = r#"{"options":{"viewOn":"people","pipeline":[{"$match":{"n":{"$gte":{"$numberLong":"6"}}}}]},"indexes":[],"collectionName":"adults","type":"view"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodump_directory_and_archive_built_by_hand_restore() {
    assert_eq!(ADA.len(), 39);
    assert_eq!(BOB.len(), 39);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dump");
    std::fs::create_dir_all(root.join("hr")).expect("mkdir");
    std::fs::write(root.join("hr/people.bson"), [ADA, BOB].concat()).expect("bson");
    std::fs::write(root.join("hr/people.metadata.json"), PEOPLE_METADATA).expect("meta");
    std::fs::write(root.join("hr/adults.metadata.json"), ADULTS_METADATA).expect("view");

    // The same in one archive: magic, header, prelude, terminator, a namespace block, EOF
    // blocks (the CRC is Go's crc64.ECMA of the documents' bytes), each ended by ff ff ff ff.
    let terminator = [0xff_u8; 4];
    let mut archive = vec![0x6d, 0xe2, 0x99, 0x81];
    push(
        doc! { "concurrent_collections": 4, "version": "0.1", "server_version": "7.0.12", "tool_version": "100.9.4" },
        &mut archive,
    );
    push(
        doc! { "db": "hr", "collection": "people", "metadata": PEOPLE_METADATA, "size": 78, "type": "collection" },
        &mut archive,
    );
    push(
        doc! { "db": "hr", "collection": "adults", "metadata": ADULTS_METADATA, "size": 0, "type": "view" },
        &mut archive,
    );
    archive.extend(terminator);
    push(doc! { "db": "hr", "collection": "people", "EOF": false, "CRC": 0_i64 }, &mut archive);
    archive.extend(ADA);
    archive.extend(terminator);
    // Blocks may interleave; a second block continues the namespace.
    push(doc! { "db": "hr", "collection": "people", "EOF": false, "CRC": 0_i64 }, &mut archive);
    archive.extend(BOB);
    archive.extend(terminator);
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(&[ADA, BOB].concat());
    push(doc! { "db": "hr", "collection": "people", "EOF": true, "CRC": crc as i64 }, &mut archive);
    archive.extend(terminator);
    push(doc! { "db": "hr", "collection": "adults", "EOF": true, "CRC": 0_i64 }, &mut archive);
    archive.extend(terminator);
    let archive_path = dir.path().join("hr.archive");
    std::fs::write(&archive_path, &archive).expect("archive");

    let from_dir = Server::in_memory();
    folio(&["restore", "--uri", &from_dir.uri(), &root.display().to_string()]);
    // One database's directory, named with --db, as mongorestore takes it; without --db it
    // is refused rather than restoring nothing.
    let from_db_dir = Server::in_memory();
    let hr = root.join("hr").display().to_string();
    folio(&["restore", "--uri", &from_db_dir.uri(), "--db", "hr", &hr]);
    let unnamed = folio_fails(&["restore", "--uri", &from_db_dir.uri(), &hr]);
    assert!(unnamed.contains("--db"), "{unnamed}");
    // Compressed files are read with --gzip only: without it there is nothing to restore.
    let gz_only = dir.path().join("gz-only");
    std::fs::create_dir_all(gz_only.join("hr")).expect("mkdir");
    std::fs::write(gz_only.join("hr/people.bson.gz"), b"not read").expect("write");
    let nothing =
        folio_fails(&["restore", "--uri", &from_db_dir.uri(), &gz_only.display().to_string()]);
    assert!(nothing.contains("nothing to restore"), "{nothing}");
    let from_archive = Server::in_memory();
    folio(&[
        "restore",
        "--uri",
        &from_archive.uri(),
        &format!("--archive={}", archive_path.display()),
    ]);
    for server in [&from_dir, &from_db_dir, &from_archive] {
        let client = server.client().await;
        let people = all(&client, "hr", "people").await;
        assert_eq!(bytes(&people), vec![ADA.to_vec(), BOB.to_vec()]);
        assert_eq!(
            all(&client, "hr", "adults").await,
            vec![doc! { "_id": 2, "name": "bob", "n": 7_i64 }]
        );
        let dup = client
            .database("hr")
            .run_command(doc! { "insert": "people", "documents": [{ "_id": 3, "name": "ada" }] })
            .await
            .expect("insert");
        assert!(dup.get_array("writeErrors").is_ok(), "the unique index was built: {dup}");
    }

    // A corrupted archive is refused rather than restored short.
    let mut corrupt = archive.clone();
    let at = corrupt.windows(3).position(|w| w == b"bob").expect("bob");
    corrupt[at] = b'r';
    std::fs::write(&archive_path, &corrupt).expect("archive");
    let target = Server::in_memory();
    let corrupted = folio_fails(&[
        "restore",
        "--uri",
        &target.uri(),
        &format!("--archive={}", archive_path.display()),
    ]);
    assert!(corrupted.contains("CRC mismatch"), "{corrupted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_streams_through_a_pipe() {
    let source = Server::in_memory();
    let client = source.client().await;
    let docs: Vec<Document> = (0..2500_i64).map(|i| doc! { "_id": i, "v": i * 3 }).collect();
    client.database("big").collection::<Document>("c").insert_many(docs).await.expect("insert");
    client
        .database("other")
        .collection::<Document>("d")
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("insert");
    let target = Server::in_memory();
    // folio dump --archive --gzip | folio restore --archive --gzip --nsInclude 'big.*'
    let mut dump = common::folio()
        .args(["dump", "--uri", &source.uri(), "--archive", "--gzip"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dump");
    let restore = common::folio()
        .args(["restore", "--uri", &target.uri(), "--archive", "--gzip", "--nsInclude", "big.*"])
        .stdin(dump.stdout.take().expect("pipe"))
        .output()
        .expect("restore");
    assert!(dump.wait().expect("dump").success());
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(restore.status.success(), "{stderr}");
    assert!(stderr.contains("2500 document(s) restored successfully"), "{stderr}");
    let restored = target.client().await;
    let got = all(&restored, "big", "c").await;
    assert_eq!(got.len(), 2500);
    assert_eq!(got[2499], doc! { "_id": 2499_i64, "v": 7497_i64 });
    let names = restored.list_database_names().await.expect("databases");
    assert!(!names.contains(&"other".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_names_that_are_not_file_names_round_trip() {
    let source = Server::in_memory();
    let client = source.client().await;
    let names = ["a/b c", "ünï", "50%,x"];
    for (i, name) in names.iter().enumerate() {
        client
            .database("odd")
            .collection::<Document>(name)
            .insert_one(doc! { "_id": i as i32 })
            .await
            .expect("insert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dump");
    let out_s = out.display().to_string();
    folio(&["dump", "--uri", &source.uri(), "--out", &out_s]);
    assert!(out.join("odd/a%2Fb%20c.bson").is_file());
    assert!(out.join("odd/%C3%BCn%C3%AF.metadata.json").is_file());
    assert!(out.join("odd/50%25%2Cx.bson").is_file());
    let target = Server::in_memory();
    folio(&["restore", "--uri", &target.uri(), &out_s]);
    let restored = target.client().await;
    let mut got = restored.database("odd").list_collection_names().await.expect("names");
    got.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(all(&restored, "odd", name).await, vec![doc! { "_id": i as i32 }]);
    }
}

/// Dumps database `churn` of `source` four times in a row, into `DIR/d0` to `DIR/d3`, while the
/// caller's tasks keep running; returns the four directories.
async fn dump_churn_four_times(source: &Server, dir: &Path) -> Vec<String> {
    let mut outs = Vec::new();
    for n in 0..4 {
        let out_s = dir.join(format!("d{n}")).display().to_string();
        let (uri, dumped) = (source.uri(), out_s.clone());
        tokio::task::spawn_blocking(move || {
            folio(&["dump", "--uri", &uri, "--db", "churn", "--out", &dumped])
        })
        .await
        .expect("dump");
        outs.push(out_s);
    }
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_dropped_during_the_dump_are_absent_not_empty() {
    // 150 collections of one document each; a worker drops them one by one while dumps run.
    // Every collection in a dump must hold its document: one listed but already dropped at the
    // snapshot would come back empty.
    let source = Server::in_memory();
    let client = source.client().await;
    let db = client.database("churn");
    for i in 0..150 {
        db.collection::<Document>(&format!("c{i:03}"))
            .insert_one(doc! { "_id": i })
            .await
            .expect("insert");
    }
    let dropper = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                db.collection::<Document>(&format!("c{i:03}")).drop().await.expect("drop");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let outs = dump_churn_four_times(&source, dir.path()).await;
    dropper.await.expect("dropper");
    for out in outs {
        let files: Vec<String> = match std::fs::read_dir(Path::new(&out).join("churn")) {
            Ok(rd) => {
                rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect()
            }
            Err(_) => continue, // everything was dropped before this dump
        };
        for f in files.iter().filter(|f| f.ends_with(".bson")) {
            let len = std::fs::metadata(Path::new(&out).join("churn").join(f)).expect("file").len();
            assert!(
                len > 0,
                "{out}/churn/{f} was dumped empty: listed but dropped at the snapshot"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_created_during_the_dump_match_the_snapshot() {
    // A worker creates collections one by one, each in a transaction that also counts it in
    // `churn.counter`. In a consistent dump the number of collections equals the count.
    let source = Server::in_memory();
    let client = source.client().await;
    let db = client.database("churn");
    db.collection::<Document>("counter")
        .insert_one(doc! { "_id": 1, "n": 0 })
        .await
        .expect("counter");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creator = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let db = client.database("churn");
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 1000 {
                let mut s = client.start_session().await.expect("session");
                s.start_transaction().await.expect("start");
                db.collection::<Document>(&format!("c{i:04}"))
                    .insert_one(doc! { "_id": i })
                    .session(&mut s)
                    .await
                    .expect("create in a transaction");
                db.collection::<Document>("counter")
                    .update_one(doc! { "_id": 1 }, doc! { "$inc": { "n": 1 } })
                    .session(&mut s)
                    .await
                    .expect("count");
                s.commit_transaction().await.expect("commit");
                i += 1;
                // DDL is occasional in real life: leave the dump gaps to start in.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            i
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let outs = dump_churn_four_times(&source, dir.path()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let created = creator.await.expect("creator");
    assert!(created > 0);
    for out in outs {
        let db_dir = Path::new(&out).join("churn");
        let collections = std::fs::read_dir(&db_dir)
            .expect("dump directory")
            .filter(|e| {
                let name = e.as_ref().expect("entry").file_name().to_string_lossy().into_owned();
                name.starts_with('c') && name.ends_with(".bson") && name != "counter.bson"
            })
            .count();
        let counter = std::fs::read(db_dir.join("counter.bson")).expect("counter");
        let n = Document::from_reader(&counter[..]).expect("doc").get_i32("n").expect("n");
        assert_eq!(collections, usize::try_from(n).expect("n"), "{out}: collections vs count");
    }
}

/// The options of `db.coll` as `listCollections` reports them, and its index names.
async fn options_and_indexes(client: &Client, db: &str, coll: &str) -> (Document, Vec<String>) {
    let r = client
        .database(db)
        .run_command(doc! { "listCollections": 1, "filter": { "name": coll } })
        .await
        .expect("listCollections");
    let info = r.get_document("cursor").expect("c").get_array("firstBatch").expect("b")[0]
        .as_document()
        .expect("info")
        .clone();
    let r = client.database(db).run_command(doc! { "listIndexes": coll }).await.expect("indexes");
    let names = r
        .get_document("cursor")
        .expect("c")
        .get_array("firstBatch")
        .expect("b")
        .iter()
        .map(|i| i.as_document().expect("i").get_str("name").expect("name").to_string())
        .collect();
    (info.get_document("options").expect("options").clone(), names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_flags_skip_indexes_options_and_validation() {
    let source = Server::in_memory();
    let client = source.client().await;
    let db = client.database("inv");
    db.run_command(doc! { "create": "items", "validator": { "qty": { "$gte": 0 } } })
        .await
        .expect("create");
    db.run_command(
        doc! { "createIndexes": "items", "indexes": [{ "key": { "qty": 1 }, "name": "qty_1" }] },
    )
    .await
    .expect("index");
    db.run_command(doc! { "insert": "items", "documents": [{ "_id": 1, "qty": 5 }] })
        .await
        .expect("valid");
    // A document from before the validator, kept with bypassDocumentValidation.
    db.run_command(doc! {
        "insert": "items", "documents": [{ "_id": 2, "qty": -1 }], "bypassDocumentValidation": true,
    })
    .await
    .expect("invalid, bypassed");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_s = dir.path().join("dump").display().to_string();
    folio(&["dump", "--uri", &source.uri(), "--out", &out_s]);

    // By default the validator applies to the restored documents, as with mongorestore.
    let plain = Server::in_memory();
    let out = folio(&["restore", "--uri", &plain.uri(), &out_s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 document(s) restored successfully. 1 document(s) failed"),
        "{stderr}"
    );
    let (options, indexes) = options_and_indexes(&plain.client().await, "inv", "items").await;
    assert!(options.contains_key("validator"), "{options}");
    assert_eq!(indexes, vec!["_id_", "qty_1"]);

    let bypass = Server::in_memory();
    let out = folio(&["restore", "--uri", &bypass.uri(), "--bypassDocumentValidation", &out_s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 document(s) restored successfully. 0 document(s) failed"),
        "{stderr}"
    );

    let bare = Server::in_memory();
    folio(&["restore", "--uri", &bare.uri(), "--noIndexRestore", "--noOptionsRestore", &out_s]);
    let bare_client = bare.client().await;
    let (options, indexes) = options_and_indexes(&bare_client, "inv", "items").await;
    assert_eq!(options, Document::new());
    assert_eq!(indexes, vec!["_id_"]);
    assert_eq!(all(&bare_client, "inv", "items").await.len(), 2);
}
