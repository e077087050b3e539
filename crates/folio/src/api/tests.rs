//! Golden test of the wire shape of the API: the exact command documents each call sends.
//!
//! Every scenario runs against an in-memory instance with recording on; the commands are
//! rendered one per line, with session ids and generated ObjectIds replaced by stable
//! placeholders, and compared with `testdata/commands.golden`. Run with `UPDATE_GOLDENFILES=1` to
//! rewrite the file, then review the diff against what MongoDB drivers send.

use std::collections::HashMap;
use std::fmt::Write as _;

use bson::{Bson, Document, doc};

use super::options::{IndexOptions, ReadConcern, ReturnDocument, TransactionOptions, WriteConcern};
use super::{Client, Collection, IndexModel};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/testdata/commands.golden");

/// Replaces values that change from run to run with numbered placeholders.
#[derive(Default)]
struct Normalizer {
    names: HashMap<(String, String), String>,
    counts: HashMap<String, usize>,
}

impl Normalizer {
    fn name(&mut self, kind: &str, raw: String) -> Bson {
        let key = (kind.to_string(), raw);
        if let Some(name) = self.names.get(&key) {
            return Bson::String(name.clone());
        }
        let n = self.counts.entry(kind.to_string()).or_default();
        *n += 1;
        let name = format!("<{kind} {n}>");
        self.names.insert(key, name.clone());
        Bson::String(name)
    }

    fn value(&mut self, v: &Bson) -> Bson {
        match v {
            Bson::ObjectId(oid) => self.name("oid", oid.to_hex()),
            Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Uuid => {
                self.name("uuid", format!("{:?}", b.bytes))
            }
            Bson::Document(d) => Bson::Document(self.doc(d)),
            Bson::Array(a) => Bson::Array(a.iter().map(|v| self.value(v)).collect()),
            other => other.clone(),
        }
    }

    fn doc(&mut self, d: &Document) -> Document {
        d.iter()
            .map(|(k, v)| match (k.as_str(), v) {
                // Cursor ids are random.
                ("getMore", Bson::Int64(id)) => (k.clone(), self.name("cursor", id.to_string())),
                ("cursors", Bson::Array(ids)) => {
                    let ids = ids.iter().map(|id| self.name("cursor", id.to_string())).collect();
                    (k.clone(), Bson::Array(ids))
                }
                _ => (k.clone(), self.value(v)),
            })
            .collect()
    }
}

/// Runs one scenario with recording on and renders what it sent.
fn scenario(out: &mut String, norm: &mut Normalizer, title: &str, f: impl FnOnce(&Client)) {
    let client = Client::in_memory().expect("in-memory client");
    *client.inner.recorded.lock() = Some(Vec::new());
    f(&client);
    let sent = client.inner.recorded.lock().take().unwrap_or_default();
    writeln!(out, "== {title}").unwrap();
    for cmd in sent {
        writeln!(out, "{}", norm.doc(&cmd)).unwrap();
    }
    writeln!(out).unwrap();
}

fn coll(client: &Client, name: &str) -> Collection<Document> {
    client.database("db").collection(name)
}

#[test]
fn commands_sent_match_the_golden_file() {
    let mut out = String::new();
    let mut norm = Normalizer::default();
    let n = &mut norm;

    scenario(&mut out, n, "insert_one, find_one with sort and projection", |c| {
        let people = coll(c, "people");
        people.insert_one(doc! { "name": "ada" }).run().unwrap();
        people
            .find_one(doc! { "name": "ada" })
            .sort(doc! { "age": -1 })
            .projection(doc! { "_id": 0 })
            .run()
            .unwrap();
    });

    scenario(&mut out, n, "find in batches: getMore, killCursors when dropped early", |c| {
        let items = coll(c, "items");
        items.insert_many((0..5).map(|i| doc! { "_id": i })).ordered(false).run().unwrap();
        let mut cursor =
            items.find(doc! { "_id": { "$gte": 0 } }).skip(1).limit(4).batch_size(1).run().unwrap();
        for _ in 0..2 {
            cursor.next().unwrap().unwrap();
        }
    });

    scenario(&mut out, n, "updates and deletes", |c| {
        let items = coll(c, "items");
        items
            .update_one(doc! { "_id": 1 }, doc! { "$set": { "a": 1 } })
            .upsert(true)
            .run()
            .unwrap();
        items.update_many(doc! {}, doc! { "$inc": { "a": 1 } }).run().unwrap();
        items.replace_one(doc! { "_id": 1 }, doc! { "b": 2 }).run().unwrap();
        items.delete_one(doc! { "_id": 1 }).run().unwrap();
        items.delete_many(doc! {}).run().unwrap();
    });

    scenario(&mut out, n, "findAndModify", |c| {
        let counters = coll(c, "counters");
        counters
            .find_one_and_update(doc! { "_id": "x" }, doc! { "$inc": { "n": 1 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .run()
            .unwrap();
        counters.find_one_and_replace(doc! { "_id": "x" }, doc! { "n": 5 }).run().unwrap();
        counters.find_one_and_delete(doc! {}).sort(doc! { "n": 1 }).run().unwrap();
    });

    scenario(&mut out, n, "counts, distinct, aggregate", |c| {
        let items = coll(c, "items");
        items.insert_one(doc! { "_id": 1, "k": "a" }).run().unwrap();
        items.count_documents(doc! { "k": "a" }).skip(1).limit(5).run().unwrap();
        items.estimated_document_count().run().unwrap();
        items.distinct("k", doc! {}).run().unwrap();
        items.aggregate([doc! { "$match": { "k": "a" } }]).batch_size(10).run().unwrap().count();
    });

    scenario(&mut out, n, "indexes", |c| {
        let users = coll(c, "users");
        let unique = IndexOptions::builder().unique(true).build();
        let model = IndexModel::builder().keys(doc! { "email": 1 }).options(unique).build();
        users.create_index(model).run().unwrap();
        users.list_index_names().unwrap();
        users.drop_index("email_1").run().unwrap();
    });

    scenario(
        &mut out,
        n,
        "transaction: options on the first statement, commit, endSessions",
        |c| {
            let items = coll(c, "items");
            let mut s = c.start_session().run().unwrap();
            let options = TransactionOptions::builder()
                .read_concern(ReadConcern::snapshot())
                .write_concern(WriteConcern::majority())
                .build();
            s.start_transaction().with_options(options).run().unwrap();
            items.insert_one(doc! { "_id": 1 }).session(&mut s).run().unwrap();
            items.find_one(doc! { "_id": 1 }).session(&mut s).run().unwrap();
            s.commit_transaction().run().unwrap();
            // After the transaction, the session's commands carry only the lsid.
            items.find_one(doc! {}).session(&mut s).run().unwrap();
        },
    );

    scenario(&mut out, n, "transactions: abort, an empty one sends nothing, drop aborts", |c| {
        let items = coll(c, "items");
        let mut s = c.start_session().run().unwrap();
        s.start_transaction().run().unwrap();
        items.insert_one(doc! { "_id": 1 }).session(&mut s).run().unwrap();
        s.abort_transaction().run().unwrap();
        s.start_transaction().run().unwrap();
        s.commit_transaction().run().unwrap();
        s.start_transaction().run().unwrap();
        items.delete_many(doc! {}).session(&mut s).run().unwrap();
    });

    scenario(&mut out, n, "with_transaction and a bulk write in it", |c| {
        let items = coll(c, "items");
        let mut s = c.start_session().run().unwrap();
        s.with_transaction(|s| {
            let models: Vec<super::WriteModel> = vec![
                items.insert_one_model(doc! { "_id": 1 }).unwrap().into(),
                items.update_one_model(doc! { "_id": 1 }, doc! { "$set": { "a": 1 } }).into(),
                items.delete_many_model(doc! { "a": 2 }).into(),
            ];
            c.bulk_write(models).session(s).run()?;
            Ok(())
        })
        .unwrap();
    });

    if crate::doc::golden::update_requested() {
        std::fs::write(GOLDEN, &out).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    assert!(
        expected == out,
        "commands differ from {GOLDEN} (UPDATE_GOLDENFILES=1 rewrites it):\n{}",
        diff(&expected, &out)
    );
}

/// The lines that differ, for the failure message.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied().unwrap_or(""), a.get(i).copied().unwrap_or(""));
        if x != y {
            writeln!(out, "line {}:\n- {x}\n+ {y}", i + 1).unwrap();
        }
    }
    out
}

/// A client whose service has test commands (fail points) on.
fn client_with_fail_points() -> Client {
    use crate::command::{Service, ServiceOptions};
    use crate::mvcc::{Mvcc, MvccOptions};
    use crate::storage::MemoryEngine;
    let store =
        Mvcc::open(std::sync::Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let options = ServiceOptions { test_commands: true, ..ServiceOptions::default() };
    Client::with_service(std::sync::Arc::new(Service::new(store, options).expect("service")))
}

#[test]
fn with_transaction_stops_retrying_when_the_budget_is_spent() {
    let client = client_with_fail_points();
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["insert"], "errorCode": 112 },
        })
        .run()
        .unwrap();
    let items = coll(&client, "items");
    let mut s = client.start_session().run().unwrap();
    let budget = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let mut calls = 0;
    let e = s
        .start_transaction()
        .and_run_within(budget, (), |s, _| {
            calls += 1;
            items.insert_one(doc! { "_id": 1 }).session(s).run()?;
            Ok(())
        })
        .unwrap_err();
    assert!(started.elapsed() >= budget, "gave up after {:?}", started.elapsed());
    assert!(calls > 1, "retried before giving up");
    assert_eq!(e.code(), Some(112));
    assert!(e.contains_label(super::error::TRANSIENT_TRANSACTION_ERROR));
    assert!(!s.in_transaction(), "the last attempt was aborted");
}
