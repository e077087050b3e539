//! Times `insert_many` of a batch of documents through the embedded API, in memory and on disk
//! (a data directory in a temporary folder), and prints both times and their ratio.
//!
//! The statements of one `insert` command commit separately (each document succeeds or fails on
//! its own) but share one durable sync, so on disk the batch should cost little more than in
//! memory. Run it with `cargo run --release --example bulk_insert [DOCUMENTS] [ROUNDS]`
//! (defaults: 10000 documents, 3 rounds; the best round of each is reported).

use std::time::{Duration, Instant};

use bson::doc;
use folio::api::Client;

fn time_insert(client: &Client, docs: usize, round: usize) -> Duration {
    let coll = client.database("bench").collection::<bson::Document>(&format!("bulk{round}"));
    let batch: Vec<bson::Document> = (0..docs)
        .map(|i| doc! { "_id": i as i64, "k": (i % 97) as i32, "pad": "x".repeat(64) })
        .collect();
    let start = Instant::now();
    let result = coll.insert_many(batch).run().expect("insert_many");
    let elapsed = start.elapsed();
    assert_eq!(result.inserted_ids.len(), docs);
    elapsed
}

fn best(client: &Client, docs: usize, rounds: usize) -> Duration {
    (0..rounds).map(|r| time_insert(client, docs, r)).min().unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let docs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let memory = best(&Client::in_memory().expect("in-memory client"), docs, rounds);
    let dir = tempfile::tempdir().expect("temporary directory");
    let disk = best(&Client::open(dir.path()).expect("open data directory"), docs, rounds);
    println!("insert_many of {docs} documents (best of {rounds}):");
    println!("  in memory  {:>9.1} ms", memory.as_secs_f64() * 1e3);
    println!("  on disk    {:>9.1} ms", disk.as_secs_f64() * 1e3);
    println!("  disk / memory {:.2}x", disk.as_secs_f64() / memory.as_secs_f64());
}
