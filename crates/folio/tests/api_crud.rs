//! The embedded API's CRUD, index, count and bulk operations, with serde types, end to end
//! through the command service.

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use folio::api::error::{ErrorKind, WriteFailure};
use folio::api::options::{IndexOptions, ReturnDocument};
use folio::api::{Client, Collection, IndexModel};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Person {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<ObjectId>,
    name: String,
    age: i32,
    #[serde(default)]
    tags: Vec<String>,
}

fn person(name: &str, age: i32) -> Person {
    Person { id: None, name: name.to_string(), age, tags: vec!["t".to_string()] }
}

fn people(client: &Client) -> Collection<Person> {
    client.database("app").collection("people")
}

fn raw(client: &Client, name: &str) -> Collection<Document> {
    client.database("app").collection(name)
}

#[test]
fn insert_one_and_find_one_round_trip_a_serde_type() {
    let client = Client::in_memory().unwrap();
    let coll = people(&client);
    let ada = person("ada", 36);
    let r = coll.insert_one(&ada).run().unwrap();
    let Bson::ObjectId(id) = r.inserted_id else {
        panic!("expected an ObjectId, got {:?}", r.inserted_id)
    };

    let found = coll.find_one(doc! { "name": "ada" }).run().unwrap().expect("found");
    assert_eq!(found, Person { id: Some(id), ..ada });
    // The generated _id comes first, as drivers put it.
    let stored = raw(&client, "people").find_one(doc! {}).run().unwrap().unwrap();
    assert_eq!(stored.keys().next().map(String::as_str), Some("_id"));
    assert!(coll.find_one(doc! { "name": "bob" }).run().unwrap().is_none());

    // A given _id is kept.
    let r = raw(&client, "things").insert_one(doc! { "_id": 7, "x": 1 }).run().unwrap();
    assert_eq!(r.inserted_id, Bson::Int32(7));
}

#[test]
fn find_with_filter_sort_projection_skip_limit_and_small_batches() {
    let client = Client::in_memory().unwrap();
    let coll = people(&client);
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let r = coll
        .insert_many(names.iter().enumerate().map(|(i, n)| person(n, 20 + i as i32)))
        .run()
        .unwrap();
    assert_eq!(r.inserted_ids.len(), 7);

    // Seven documents in batches of two: the cursor must fetch the rest with getMore.
    let all: Vec<Person> = coll
        .find(doc! {})
        .sort(doc! { "age": -1 })
        .batch_size(2)
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let got: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(got, ["g", "f", "e", "d", "c", "b", "a"]);

    let some: Vec<Document> = raw(&client, "people")
        .find(doc! { "age": { "$gte": 22 } })
        .sort(doc! { "age": 1 })
        .projection(doc! { "_id": 0, "name": 1 })
        .skip(1)
        .limit(3)
        .batch_size(1)
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(some, vec![doc! { "name": "d" }, doc! { "name": "e" }, doc! { "name": "f" }]);

    // A negative limit is one batch of at most that many: no cursor stays open.
    let cursor = raw(&client, "people").find(doc! {}).limit(-2).run().unwrap();
    assert_eq!(cursor.id(), 0);
    assert_eq!(cursor.count(), 2);
}

#[test]
fn cursors_left_half_read_are_killed_and_the_next_query_still_works() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "many");
    coll.insert_many((0..10).map(|i| doc! { "_id": i })).run().unwrap();
    let mut cursor = coll.find(doc! {}).batch_size(3).run().unwrap();
    assert_ne!(cursor.id(), 0, "more documents remain on the server");
    assert_eq!(cursor.next().unwrap().unwrap(), doc! { "_id": 0 });
    drop(cursor);
    assert_eq!(coll.find(doc! {}).run().unwrap().count(), 10);
}

#[test]
fn updates_report_matched_modified_and_upserted() {
    let client = Client::in_memory().unwrap();
    let coll = people(&client);
    coll.insert_many([person("a", 1), person("b", 2), person("c", 3)]).run().unwrap();

    let r = coll.update_one(doc! { "name": "a" }, doc! { "$set": { "age": 10 } }).run().unwrap();
    assert_eq!((r.matched_count, r.modified_count, r.upserted_id), (1, 1, None));

    let r = coll
        .update_many(doc! { "age": { "$lt": 5 } }, doc! { "$inc": { "age": 100 } })
        .run()
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (2, 2));

    // Setting a value to what it is matches but does not modify.
    let r = coll.update_one(doc! { "name": "a" }, doc! { "$set": { "age": 10 } }).run().unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 0));

    let r = coll
        .update_one(doc! { "name": "z" }, doc! { "$set": { "age": 5 } })
        .upsert(true)
        .run()
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (0, 0));
    let Some(Bson::ObjectId(upserted)) = r.upserted_id else {
        panic!("expected an upserted ObjectId")
    };
    let z = coll.find_one(doc! { "_id": upserted }).run().unwrap().unwrap();
    assert_eq!((z.name.as_str(), z.age), ("z", 5));

    let r = coll.replace_one(doc! { "name": "b" }, person("bee", 7)).run().unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    assert!(coll.find_one(doc! { "name": "b" }).run().unwrap().is_none());
    assert_eq!(coll.find_one(doc! { "name": "bee" }).run().unwrap().unwrap().age, 7);

    // An update without operators is refused before anything is sent, as drivers do.
    let e = coll.update_one(doc! {}, doc! { "age": 1 }).run().unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::InvalidArgument { .. }), "{e}");
}

#[test]
fn deletes_report_counts() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "d");
    coll.insert_many((0..5).map(|i| doc! { "_id": i, "even": i % 2 == 0 })).run().unwrap();
    assert_eq!(coll.delete_one(doc! { "even": true }).run().unwrap().deleted_count, 1);
    assert_eq!(coll.delete_many(doc! { "even": true }).run().unwrap().deleted_count, 2);
    assert_eq!(coll.delete_many(doc! { "even": true }).run().unwrap().deleted_count, 0);
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 2);
}

#[test]
fn find_one_and_modify_returns_before_or_after() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "counters");
    coll.insert_one(doc! { "_id": "orders", "seq": 1 }).run().unwrap();

    let before = coll
        .find_one_and_update(doc! { "_id": "orders" }, doc! { "$inc": { "seq": 1 } })
        .run()
        .unwrap();
    assert_eq!(before, Some(doc! { "_id": "orders", "seq": 1 }));
    let after = coll
        .find_one_and_update(doc! { "_id": "orders" }, doc! { "$inc": { "seq": 1 } })
        .return_document(ReturnDocument::After)
        .run()
        .unwrap();
    assert_eq!(after, Some(doc! { "_id": "orders", "seq": 3 }));

    // Upsert with the document after: the new document.
    let created = coll
        .find_one_and_update(doc! { "_id": "invoices" }, doc! { "$inc": { "seq": 1 } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .run()
        .unwrap();
    assert_eq!(created, Some(doc! { "_id": "invoices", "seq": 1 }));

    let replaced = coll
        .find_one_and_replace(doc! { "_id": "invoices" }, doc! { "seq": 50 })
        .return_document(ReturnDocument::After)
        .projection(doc! { "_id": 0 })
        .run()
        .unwrap();
    assert_eq!(replaced, Some(doc! { "seq": 50 }));

    let deleted = coll.find_one_and_delete(doc! {}).sort(doc! { "seq": -1 }).run().unwrap();
    assert_eq!(deleted, Some(doc! { "_id": "invoices", "seq": 50 }));
    assert_eq!(coll.find_one_and_delete(doc! { "_id": "nothing" }).run().unwrap(), None);
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 1);
}

#[test]
fn counts_distinct_and_aggregate() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "sales");
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 0, "a missing collection counts zero");
    assert_eq!(coll.estimated_document_count().run().unwrap(), 0);
    coll.insert_many([
        doc! { "item": "a", "qty": 1 },
        doc! { "item": "b", "qty": 2 },
        doc! { "item": "a", "qty": 3 },
        doc! { "item": "c", "qty": 4 },
    ])
    .run()
    .unwrap();
    assert_eq!(coll.count_documents(doc! { "item": "a" }).run().unwrap(), 2);
    assert_eq!(coll.count_documents(doc! {}).skip(1).limit(2).run().unwrap(), 2);
    assert_eq!(coll.count_documents(doc! {}).skip(3).run().unwrap(), 1);
    assert_eq!(coll.estimated_document_count().run().unwrap(), 4);

    let mut items = coll.distinct("item", doc! { "qty": { "$gt": 1 } }).run().unwrap();
    items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(items, vec![Bson::from("a"), Bson::from("b"), Bson::from("c")]);

    let totals: Vec<Document> = coll
        .aggregate([
            doc! { "$group": { "_id": "$item", "total": { "$sum": "$qty" } } },
            doc! { "$sort": { "_id": 1 } },
        ])
        .batch_size(1)
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        totals,
        vec![
            doc! { "_id": "a", "total": 4 },
            doc! { "_id": "b", "total": 2 },
            doc! { "_id": "c", "total": 4 },
        ]
    );
}

#[test]
fn unique_index_violations_are_write_errors_with_key_info() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "users");
    let index = IndexModel::builder()
        .keys(doc! { "email": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    assert_eq!(coll.create_index(index).run().unwrap().index_name, "email_1");
    let mut names = coll.list_index_names().unwrap();
    names.sort();
    assert_eq!(names, ["_id_", "email_1"]);
    let listed: Vec<IndexModel> = coll.list_indexes().run().unwrap().map(Result::unwrap).collect();
    let email = listed.iter().find(|m| m.name() == "email_1").expect("listed");
    assert_eq!(email.keys, doc! { "email": 1 });
    assert_eq!(email.options.as_ref().and_then(|o| o.unique), Some(true));

    coll.insert_one(doc! { "_id": 1, "email": "a@x" }).run().unwrap();
    let e = coll.insert_one(doc! { "_id": 2, "email": "a@x" }).run().unwrap_err();
    assert_eq!(e.code(), Some(11000));
    assert_eq!(e.code_name(), Some("DuplicateKey"));
    assert!(e.is_duplicate_key());
    let ErrorKind::Write(WriteFailure::WriteError(w)) = e.kind.as_ref() else {
        panic!("expected a write error: {e}")
    };
    assert_eq!(w.key_pattern, Some(doc! { "email": 1 }));
    assert_eq!(w.key_value, Some(doc! { "email": "a@x" }));
    assert!(
        w.message.contains("E11000 duplicate key error collection: app.users index: email_1"),
        "{}",
        w.message
    );

    // Ordered insert_many stops at the duplicate; unordered goes on.
    let e = coll
        .insert_many([
            doc! { "_id": 3, "email": "b@x" },
            doc! { "_id": 4, "email": "a@x" },
            doc! { "_id": 5, "email": "c@x" },
        ])
        .run()
        .unwrap_err();
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        panic!("expected an insert_many error: {e}")
    };
    let errors = failure.write_errors.as_ref().unwrap();
    assert_eq!(errors.iter().map(|w| (w.index, w.code)).collect::<Vec<_>>(), [(1, 11000)]);
    assert_eq!(failure.inserted_ids.keys().copied().collect::<Vec<_>>(), [0]);
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 2);

    let e = coll
        .insert_many([doc! { "_id": 6, "email": "a@x" }, doc! { "_id": 7, "email": "d@x" }])
        .ordered(false)
        .run()
        .unwrap_err();
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        panic!("expected an insert_many error: {e}")
    };
    assert_eq!(failure.inserted_ids.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 3);

    coll.drop_index("email_1").run().unwrap();
    assert_eq!(coll.list_index_names().unwrap(), ["_id_"]);
    coll.insert_one(doc! { "_id": 8, "email": "a@x" }).run().unwrap();
}

#[test]
fn bulk_write_batches_models_and_maps_errors_to_positions() {
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "bulk");
    let models: Vec<folio::api::WriteModel> = vec![
        coll.insert_one_model(doc! { "_id": 1, "n": 1 }).unwrap().into(),
        coll.insert_one_model(doc! { "_id": 2, "n": 2 }).unwrap().into(),
        coll.update_one_model(doc! { "_id": 1 }, doc! { "$inc": { "n": 10 } }).into(),
        coll.update_many_model(doc! {}, doc! { "$set": { "seen": true } }).into(),
        folio::api::WriteModel::UpdateOne(folio::api::UpdateOneModel {
            upsert: Some(true),
            ..coll.update_one_model(doc! { "_id": 3 }, doc! { "$set": { "n": 3 } })
        }),
        coll.delete_one_model(doc! { "_id": 2 }).into(),
    ];
    let r = client.bulk_write(models).run().unwrap();
    assert_eq!(r.inserted_count, 2);
    assert_eq!(r.matched_count, 3);
    assert_eq!(r.modified_count, 3);
    assert_eq!(r.upserted_count, 1);
    assert_eq!(r.upserted_ids.get(&4), Some(&Bson::Int32(3)));
    assert_eq!(r.deleted_count, 1);
    let docs: Vec<Document> =
        coll.find(doc! {}).sort(doc! { "_id": 1 }).run().unwrap().map(Result::unwrap).collect();
    assert_eq!(docs, vec![doc! { "_id": 1, "n": 11, "seen": true }, doc! { "_id": 3, "n": 3 }]);

    // A duplicate _id at position 1 stops an ordered bulk write there.
    let models: Vec<folio::api::WriteModel> = vec![
        coll.insert_one_model(doc! { "_id": 10 }).unwrap().into(),
        coll.insert_one_model(doc! { "_id": 1 }).unwrap().into(),
        coll.delete_many_model(doc! {}).into(),
    ];
    let e = client.bulk_write(models).run().unwrap_err();
    let ErrorKind::BulkWrite(failure) = e.kind.as_ref() else {
        panic!("expected a bulk write error: {e}")
    };
    assert_eq!(
        failure.write_errors.iter().map(|w| (w.index, w.code)).collect::<Vec<_>>(),
        [(1, 11000)]
    );
    assert_eq!(failure.partial_result.inserted_count, 1);
    assert_eq!(
        coll.count_documents(doc! {}).run().unwrap(),
        3,
        "the delete after the error did not run"
    );
}

#[test]
fn server_errors_carry_code_and_code_name() {
    let client = Client::in_memory().unwrap();
    let e = client.database("app").run_command(doc! { "noSuchCommand": 1 }).run().unwrap_err();
    assert_eq!(e.code(), Some(59));
    assert_eq!(e.code_name(), Some("CommandNotFound"));
    assert!(e.labels().is_empty());
    let reply = client.database("app").run_command(doc! { "ping": 1 }).run().unwrap();
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn a_data_directory_keeps_its_documents_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let client = Client::open(dir.path()).unwrap();
        let coll = people(&client);
        coll.insert_many([person("x", 1), person("y", 2)]).run().unwrap();
        coll.create_index(IndexModel::builder().keys(doc! { "age": 1 }).build()).run().unwrap();
    }
    let client = Client::open(dir.path()).unwrap();
    let coll = people(&client);
    let names: Vec<String> = coll
        .find(doc! {})
        .sort(doc! { "age": 1 })
        .run()
        .unwrap()
        .map(|p| p.unwrap().name)
        .collect();
    assert_eq!(names, ["x", "y"]);
    assert!(coll.list_index_names().unwrap().contains(&"age_1".to_string()));
    assert_eq!(client.database("app").list_collection_names().unwrap(), ["people"]);
}

#[test]
fn bulk_write_spans_collections_and_unordered_goes_past_errors() {
    let client = Client::in_memory().unwrap();
    let a = raw(&client, "a");
    let b = client.database("other").collection::<Document>("b");
    let models: Vec<folio::api::WriteModel> = vec![
        a.insert_one_model(doc! { "_id": 1 }).unwrap().into(),
        b.insert_one_model(doc! { "_id": 1 }).unwrap().into(),
        a.insert_one_model(doc! { "_id": 1 }).unwrap().into(),
        b.insert_one_model(doc! { "x": 2 }).unwrap().into(),
        a.replace_one_model(doc! { "_id": 1 }, doc! { "replaced": true }).unwrap().into(),
    ];
    let e = client.bulk_write(models).ordered(false).run().unwrap_err();
    let ErrorKind::BulkWrite(failure) = e.kind.as_ref() else {
        panic!("expected a bulk write error: {e}")
    };
    assert_eq!(
        failure.write_errors.iter().map(|w| (w.index, w.code)).collect::<Vec<_>>(),
        [(2, 11000)]
    );
    let r = &failure.partial_result;
    assert_eq!((r.inserted_count, r.matched_count, r.modified_count), (3, 1, 1));
    let mut inserted: Vec<usize> = r.inserted_ids.keys().copied().collect();
    inserted.sort();
    assert_eq!(inserted, [0, 1, 3]);
    assert_eq!(a.find_one(doc! {}).run().unwrap(), Some(doc! { "_id": 1, "replaced": true }));
    assert_eq!(b.count_documents(doc! {}).run().unwrap(), 2);
}

#[test]
fn an_unsatisfiable_write_concern_is_a_write_concern_error_after_the_write() {
    use folio::api::options::WriteConcern;
    let client = Client::in_memory().unwrap();
    let coll = raw(&client, "wc");
    let e =
        coll.insert_one(doc! { "_id": 1 }).write_concern(WriteConcern::nodes(2)).run().unwrap_err();
    let ErrorKind::Write(WriteFailure::WriteConcernError(wce)) = e.kind.as_ref() else {
        panic!("expected a write concern error: {e}")
    };
    assert_eq!((wce.code, wce.code_name.as_str()), (100, "UnsatisfiableWriteConcern"));
    assert_eq!(e.code(), Some(100));
    // The write itself was applied, as on a real replica set.
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 1);
    // A satisfiable one is fine.
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "a": 1 } })
        .write_concern(WriteConcern::majority())
        .run()
        .unwrap();
}
