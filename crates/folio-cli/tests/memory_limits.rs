//! Requests that would need more memory than the server has fail with MongoDB's errors, and the
//! server stays up (issue #10).
//!
//! The real `folio` binary runs under a 2 GiB address-space limit (`ulimit -v`, hence Linux
//! only), so that a request that slips past the limits makes the allocator abort the process and
//! the liveness checks fail, instead of slowly eating the test machine. The same cap checks the
//! allocator's build-time defaults (`.cargo/config.toml`): without them mimalloc keeps the
//! address space of every large value it ever held, and the doubling `$concatArrays` below
//! aborts the server. The client is the official `mongodb` crate.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::{Client, Collection};

use common::Server;

/// The address-space limit, in KiB for `ulimit -v`.
const ADDRESS_SPACE_KIB: u64 = 2 * 1024 * 1024;

/// What all operations together may hold: well inside the address space, which also holds the
/// binary, the thread stacks and the allocator's slack.
const SERVER_MEMORY_BYTES: u64 = 768 * 1024 * 1024;

/// MongoDB's codes for the limits these requests hit.
const EXCEEDED_MEMORY_LIMIT: i32 = 146;
const BSON_OBJECT_TOO_LARGE: i32 = 10334;
const LOOKUP_TOO_LARGE: i32 = 4568;
const FACET_TOO_LARGE: i32 = 4031700;
const BUFFER_TOO_LARGE: i32 = 13548;
const DISTINCT_TOO_LARGE: i32 = 17217;

/// `folio serve` under the address-space limit.
fn start() -> Server {
    Server::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_folio"))
            .args(["serve", "--in-memory", "--port", "0"])
            .args([
                "--setParameter",
                &format!("internalQueryMaxMemoryUsageBytesAllOperations={SERVER_MEMORY_BYTES}"),
            ]),
    )
}

async fn connect(port: u16) -> Client {
    let uri =
        format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=10000");
    Client::with_uri_str(uri).await.expect("client")
}

/// Runs an aggregation to the end; the server's error code if it fails.
async fn aggregate_code(coll: &Collection<Document>, pipeline: Vec<Document>) -> Option<i32> {
    let run = async {
        let mut cursor = coll.aggregate(pipeline).await?;
        while cursor.advance().await? {}
        Ok::<(), mongodb::error::Error>(())
    };
    match run.await {
        Ok(()) => None,
        Err(e) => match *e.kind {
            ErrorKind::Command(ref c) => Some(c.code),
            _ => panic!("not a server error: {e}"),
        },
    }
}

/// The server answers a ping and a normal find.
async fn assert_alive(server: &mut Server, coll: &Collection<Document>) {
    server.assert_running();
    let client = connect(server.port).await;
    client.database("admin").run_command(doc! {"ping": 1}).await.expect("ping after the request");
    let n = coll.count_documents(doc! {}).await.expect("count");
    assert_eq!(n, 21);
    let mut cursor = coll.find(doc! {"_id": {"$lt": 3}}).await.expect("find");
    let mut seen = 0;
    while cursor.advance().await.expect("find batch") {
        seen += 1;
    }
    assert_eq!(seen, 3);
}

/// `depth` `$lookup`s, each the sub-pipeline of the one before, on `c` itself.
fn nested_lookup(depth: usize) -> Vec<Document> {
    let mut pipeline: Vec<Bson> = Vec::new();
    for _ in 0..depth {
        pipeline = vec![Bson::Document(
            doc! {"$lookup": {"from": "c", "pipeline": pipeline, "as": "sub"}},
        )];
    }
    pipeline.into_iter().filter_map(|s| s.as_document().cloned()).collect()
}

/// A `$reduce` over 40 steps that doubles its accumulator with `op`.
fn doubling(op: &str, initial: Bson) -> Vec<Document> {
    vec![
        doc! {"$limit": 1},
        doc! {"$project": {"v": {"$reduce": {
            "input": {"$range": [0, 40]},
            "initialValue": initial,
            "in": {op: ["$$value", "$$value"]},
        }}}},
    ]
}

/// `facets` facets, each giving every document a 1 MiB string (21 MiB per facet).
fn facet(facets: usize) -> Vec<Document> {
    let mut spec = Document::new();
    for i in 0..facets {
        spec.insert(
            format!("f{i}"),
            vec![doc! {"$project": {"s": {"$reduce": {
                "input": {"$range": [0, 10]},
                "initialValue": "$pad",
                "in": {"$concat": ["$$value", "$$value"]},
            }}}}],
        );
    }
    vec![doc! {"$facet": spec}]
}

fn push_ranges() -> Vec<Document> {
    vec![doc! {"$group": {"_id": null, "a": {"$push": {"$range": [0, 1_000_000]}}}}]
}

/// Every document gets a 5-million-element array: each passes `$range`'s own limit, their sum
/// does not fit the server.
fn ranges_per_document() -> Vec<Document> {
    vec![doc! {"$project": {"r": {"$range": [0, 5_000_000]}}}]
}

fn huge_range() -> Vec<Document> {
    vec![doc! {"$limit": 1}, doc! {"$project": {"r": {"$range": [0, 1_000_000_000]}}}]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_hungry_requests_fail_with_mongodb_errors_and_the_server_stays_up() {
    let mut server = start();
    let client = connect(server.port).await;
    let coll: Collection<Document> = client.database("test").collection("c");
    let p = client
        .database("admin")
        .run_command(doc! {"getParameter": 1, "internalQueryMaxMemoryUsageBytesAllOperations": 1})
        .await
        .expect("getParameter");
    assert_eq!(
        p.get_i64("internalQueryMaxMemoryUsageBytesAllOperations").ok(),
        Some(SERVER_MEMORY_BYTES as i64)
    );
    // 21 documents of about 1 KiB: four nested lookups join 21^4 of them to one document.
    let docs: Vec<Document> = (0..21).map(|i| doc! {"_id": i, "pad": "p".repeat(1024)}).collect();
    coll.insert_many(docs).await.expect("insert");

    let cases: Vec<(&str, Vec<Document>, &[i32])> = vec![
        ("nested $lookup 4", nested_lookup(4), &[LOOKUP_TOO_LARGE]),
        ("nested $lookup 5", nested_lookup(5), &[LOOKUP_TOO_LARGE]),
        ("nested $lookup 10", nested_lookup(10), &[LOOKUP_TOO_LARGE]),
        ("nested $lookup 20", nested_lookup(20), &[LOOKUP_TOO_LARGE]),
        ("$reduce doubling with $concat", doubling("$concat", "ab".into()), &[BUFFER_TOO_LARGE]),
        (
            "$reduce doubling with $concatArrays",
            doubling("$concatArrays", Bson::Array(vec![1.into(), 2.into()])),
            &[EXCEEDED_MEMORY_LIMIT],
        ),
        ("$push of a million-element $range", push_ranges(), &[EXCEEDED_MEMORY_LIMIT]),
        ("$facet output over 16 MiB", facet(1), &[BSON_OBJECT_TOO_LARGE]),
        ("$facet output over 100 MiB", facet(5), &[FACET_TOO_LARGE]),
        ("$range of 1e9 elements", huge_range(), &[EXCEEDED_MEMORY_LIMIT]),
        ("$range of 5e6 elements per document", ranges_per_document(), &[EXCEEDED_MEMORY_LIMIT]),
    ];
    for (name, pipeline, codes) in &cases {
        let code =
            tokio::time::timeout(Duration::from_secs(120), aggregate_code(&coll, pipeline.clone()))
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer within two minutes"));
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{name}: expected one of {codes:?}, got {code:?}"
        );
        assert_alive(&mut server, &coll).await;
    }

    // `distinct` answers in one document: 20 distinct values of 1 MiB are too many.
    let wide: Collection<Document> = client.database("test").collection("wide");
    let docs: Vec<Document> =
        (0..20).map(|i| doc! {"_id": i, "v": format!("{i}{}", "w".repeat(1 << 20))}).collect();
    wide.insert_many(docs).await.expect("insert wide");
    let e = wide.distinct("v", doc! {}).await.expect_err("distinct over 16 MiB");
    match *e.kind {
        ErrorKind::Command(ref c) => assert_eq!(c.code, DISTINCT_TOO_LARGE, "{}", c.message),
        _ => panic!("not a server error: {e}"),
    }
    assert_eq!(wide.distinct("_id", doc! {}).await.expect("small distinct").len(), 20);
    assert_alive(&mut server, &coll).await;

    // Several at once: each fails on its own limit or on the server-wide one, and the server
    // survives their sum.
    let concurrent = [0, 1, 5, 6, 9, 4, 10];
    let mut tasks = Vec::new();
    for i in concurrent {
        let (name, pipeline, codes) = cases[i].clone();
        let coll = coll.clone();
        tasks.push(tokio::spawn(async move {
            let code = aggregate_code(&coll, pipeline).await;
            let mut allowed = codes.to_vec();
            allowed.push(EXCEEDED_MEMORY_LIMIT);
            assert!(
                code.is_some_and(|c| allowed.contains(&c)),
                "{name} (concurrently): expected one of {allowed:?}, got {code:?}"
            );
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("concurrent requests answered")
            .expect("concurrent request");
    }
    assert_alive(&mut server, &coll).await;
}
