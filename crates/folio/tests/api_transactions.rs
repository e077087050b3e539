//! Transactions through the embedded API: commit, abort, snapshot reads, write conflicts between
//! sessions, and the convenient `with_transaction` retrying after a conflict.

use std::sync::atomic::{AtomicU32, Ordering};

use bson::{Document, doc};
use folio::api::error::{
    ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use folio::api::options::{ReadConcern, TransactionOptions, WriteConcern};
use folio::api::{Client, Collection, TransactionState};

fn accounts(client: &Client) -> Collection<Document> {
    client.database("bank").collection("accounts")
}

fn balance(coll: &Collection<Document>, id: i32) -> i64 {
    let d = coll.find_one(doc! { "_id": id }).run().unwrap().expect("account exists");
    d.get_i64("bal").or_else(|_| d.get_i32("bal").map(i64::from)).unwrap()
}

fn setup() -> (Client, Collection<Document>) {
    let client = Client::in_memory().unwrap();
    let coll = accounts(&client);
    coll.insert_many([doc! { "_id": 1, "bal": 100_i64 }, doc! { "_id": 2, "bal": 0_i64 }])
        .run()
        .unwrap();
    (client, coll)
}

#[test]
fn a_committed_transaction_is_invisible_until_commit_then_all_visible() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    s.start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .run()
        .unwrap();
    assert_eq!(s.transaction_state(), TransactionState::Starting);
    coll.update_one(doc! { "_id": 1 }, doc! { "$inc": { "bal": -30_i64 } })
        .session(&mut s)
        .run()
        .unwrap();
    assert_eq!(s.transaction_state(), TransactionState::InProgress);
    coll.update_one(doc! { "_id": 2 }, doc! { "$inc": { "bal": 30_i64 } })
        .session(&mut s)
        .run()
        .unwrap();
    coll.insert_one(doc! { "_id": 3, "bal": 5_i64 }).session(&mut s).run().unwrap();

    // The transaction sees its own writes; nobody else does yet.
    assert_eq!(coll.count_documents(doc! {}).session(&mut s).run().unwrap(), 3);
    assert_eq!(balance(&coll, 1), 100);
    assert!(coll.find_one(doc! { "_id": 3 }).run().unwrap().is_none());

    s.commit_transaction().run().unwrap();
    assert_eq!(s.transaction_state(), TransactionState::Committed { data_committed: true });
    assert_eq!((balance(&coll, 1), balance(&coll, 2), balance(&coll, 3)), (70, 30, 5));
    // Committing again retries the commit, which the server accepts.
    s.commit_transaction().run().unwrap();
}

#[test]
fn an_aborted_transaction_leaves_nothing() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().run().unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "bal": 0_i64 } })
        .session(&mut s)
        .run()
        .unwrap();
    coll.insert_one(doc! { "_id": 9 }).session(&mut s).run().unwrap();
    client
        .database("bank")
        .collection::<Document>("audit")
        .insert_one(doc! { "x": 1 })
        .session(&mut s)
        .run()
        .unwrap();
    s.abort_transaction().run().unwrap();
    assert_eq!(balance(&coll, 1), 100);
    assert!(coll.find_one(doc! { "_id": 9 }).run().unwrap().is_none());
    assert_eq!(
        client
            .database("bank")
            .collection::<Document>("audit")
            .count_documents(doc! {})
            .run()
            .unwrap(),
        0
    );

    // Dropping a session with an open transaction aborts it too.
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().run().unwrap();
    coll.delete_many(doc! {}).session(&mut s).run().unwrap();
    drop(s);
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 2);
}

#[test]
fn a_transaction_reads_one_snapshot() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().read_concern(ReadConcern::snapshot()).run().unwrap();
    let first = coll.find_one(doc! { "_id": 1 }).session(&mut s).run().unwrap().unwrap();
    // A write outside the transaction commits after the snapshot...
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "bal": 1_i64 } }).run().unwrap();
    coll.insert_one(doc! { "_id": 5, "bal": 1_i64 }).run().unwrap();
    // ...and the transaction does not see it.
    assert_eq!(coll.find_one(doc! { "_id": 1 }).session(&mut s).run().unwrap().unwrap(), first);
    assert_eq!(coll.count_documents(doc! {}).session(&mut s).run().unwrap(), 2);
    s.commit_transaction().run().unwrap();
    assert_eq!(balance(&coll, 1), 1);
}

#[test]
fn a_session_cursor_fetches_its_batches_inside_the_transaction() {
    let client = Client::in_memory().unwrap();
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many((0..7).map(|i| doc! { "_id": i })).run().unwrap();
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().run().unwrap();
    coll.insert_one(doc! { "_id": 7 }).session(&mut s).run().unwrap();
    let mut cursor =
        coll.find(doc! {}).sort(doc! { "_id": 1 }).batch_size(2).session(&mut s).run().unwrap();
    let ids: Vec<i32> = cursor.iter(&mut s).map(|d| d.unwrap().get_i32("_id").unwrap()).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    s.commit_transaction().run().unwrap();
}

#[test]
fn two_sessions_writing_one_document_conflict_at_the_write() {
    let (client, coll) = setup();
    let mut a = client.start_session().run().unwrap();
    let mut b = client.start_session().run().unwrap();
    a.start_transaction().run().unwrap();
    b.start_transaction().run().unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$inc": { "bal": 1_i64 } })
        .session(&mut a)
        .run()
        .unwrap();

    // First writer wins: b fails at once, not at commit.
    let e = coll
        .update_one(doc! { "_id": 1 }, doc! { "$inc": { "bal": 2_i64 } })
        .session(&mut b)
        .run()
        .unwrap_err();
    assert_eq!(e.code(), Some(112), "{e}");
    assert_eq!(e.code_name(), Some("WriteConflict"));
    assert!(e.contains_label(TRANSIENT_TRANSACTION_ERROR), "{e}");
    assert!(e.has_error_label(TRANSIENT_TRANSACTION_ERROR));
    assert!(matches!(*e.kind, ErrorKind::Command(_)));

    // The server aborted b's transaction: its commit fails with NoSuchTransaction.
    let e = b.commit_transaction().run().unwrap_err();
    assert_eq!(e.code(), Some(251), "{e}");
    assert!(e.contains_label(TRANSIENT_TRANSACTION_ERROR));
    assert!(!e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT));

    a.commit_transaction().run().unwrap();
    assert_eq!(balance(&coll, 1), 101);
}

#[test]
fn with_transaction_retries_the_callback_after_a_conflict() {
    let (client, coll) = setup();
    // Session `holder` keeps account 1 written in an open transaction.
    let mut holder = client.start_session().run().unwrap();
    holder.start_transaction().run().unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$inc": { "bal": -50_i64 } })
        .session(&mut holder)
        .run()
        .unwrap();

    let attempts = AtomicU32::new(0);
    let mut s = client.start_session().run().unwrap();
    let options = TransactionOptions::builder().read_concern(ReadConcern::snapshot()).build();
    let value = s
        .start_transaction()
        .with_options(options)
        .and_run(&mut holder, |s, holder| {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 2 {
                // The holder finishes between the attempts, so the retry succeeds.
                holder.commit_transaction().run()?;
            }
            coll.update_one(doc! { "_id": 2 }, doc! { "$inc": { "bal": 50_i64 } })
                .session(s)
                .run()?;
            coll.update_one(doc! { "_id": 1 }, doc! { "$inc": { "bal": 1_i64 } })
                .session(s)
                .run()?;
            Ok(n)
        })
        .unwrap();
    assert_eq!(value, 2, "the first attempt conflicted, the second committed");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The failed attempt left nothing: account 2 got 50 once.
    assert_eq!((balance(&coll, 1), balance(&coll, 2)), (51, 50));
}

#[test]
fn with_transaction_gives_up_on_other_errors_and_rolls_back() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    let mut calls = 0;
    let e = s
        .with_transaction(|s| {
            calls += 1;
            coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "bal": 0_i64 } })
                .session(s)
                .run()?;
            Err::<(), _>(folio::api::Error::custom("out of stock"))
        })
        .unwrap_err();
    assert_eq!(calls, 1);
    assert_eq!(e.get_custom::<&str>(), Some(&"out of stock"));
    assert_eq!(s.transaction_state(), TransactionState::Aborted);
    assert_eq!(balance(&coll, 1), 100);

    // A callback that commits itself is not committed again.
    let n = s
        .with_transaction(|s| {
            coll.insert_one(doc! { "_id": 4 }).session(s).run()?;
            s.commit_transaction().run()?;
            Ok(4)
        })
        .unwrap();
    assert_eq!(n, 4);
    assert!(coll.find_one(doc! { "_id": 4 }).run().unwrap().is_some());
}

#[test]
fn transaction_methods_check_the_state_like_drivers() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    assert!(matches!(
        *s.commit_transaction().run().unwrap_err().kind,
        ErrorKind::Transaction { .. }
    ));
    assert!(matches!(
        *s.abort_transaction().run().unwrap_err().kind,
        ErrorKind::Transaction { .. }
    ));

    s.start_transaction().run().unwrap();
    assert!(s.start_transaction().run().is_err(), "a transaction is already in progress");
    // A transaction without statements commits without the server.
    s.commit_transaction().run().unwrap();
    assert_eq!(s.transaction_state(), TransactionState::Committed { data_committed: false });
    assert!(s.abort_transaction().run().is_err());

    s.start_transaction().run().unwrap();
    coll.insert_one(doc! { "_id": 50 }).session(&mut s).run().unwrap();
    s.abort_transaction().run().unwrap();
    assert!(s.abort_transaction().run().is_err());
    assert!(s.commit_transaction().run().is_err());

    // After the transaction, the session runs plain commands again.
    coll.insert_one(doc! { "_id": 51 }).session(&mut s).run().unwrap();
    assert_eq!(s.transaction_state(), TransactionState::None);
    assert!(coll.find_one(doc! { "_id": 51 }).run().unwrap().is_some());
    assert!(coll.find_one(doc! { "_id": 50 }).run().unwrap().is_none());

    // Transaction numbers grow with each transaction.
    let before = s.txn_number();
    s.start_transaction().run().unwrap();
    assert_eq!(s.txn_number(), before + 1);
}

#[test]
fn a_session_of_another_client_is_refused() {
    let (client, coll) = setup();
    let other = Client::in_memory().unwrap();
    let mut s = other.start_session().run().unwrap();
    let e = coll.insert_one(doc! { "_id": 99 }).session(&mut s).run().unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::InvalidArgument { .. }), "{e}");
    drop(client);
}

#[test]
fn concurrent_with_transaction_increments_lose_no_update() {
    const THREADS: usize = 4;
    const INCREMENTS: usize = 25;
    let (client, coll) = setup();
    let retries = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let mut s = client.start_session().run().unwrap();
                for _ in 0..INCREMENTS {
                    let mut attempt = 0;
                    s.with_transaction(|s| {
                        attempt += 1;
                        // Read, then write what was read plus one: a lost update unless the
                        // conflicting writers are retried.
                        let bal = coll.find_one(doc! { "_id": 1 }).session(s).run()?.unwrap();
                        let bal = bal.get_i64("bal").unwrap();
                        coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "bal": bal + 1 } })
                            .session(s)
                            .run()?;
                        Ok(())
                    })
                    .unwrap();
                    retries.fetch_add(attempt - 1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(balance(&coll, 1), 100 + (THREADS * INCREMENTS) as i64);
    // Not asserted (it depends on scheduling), but worth seeing when the test is run verbosely.
    println!("retried {} times", retries.load(Ordering::Relaxed));
}

#[test]
fn a_bulk_write_in_an_aborted_transaction_leaves_nothing() {
    let (client, coll) = setup();
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().run().unwrap();
    let models: Vec<folio::api::WriteModel> = vec![
        coll.insert_one_model(doc! { "_id": 10, "bal": 1_i64 }).unwrap().into(),
        coll.update_one_model(doc! { "_id": 1 }, doc! { "$set": { "bal": 0_i64 } }).into(),
        coll.delete_one_model(doc! { "_id": 2 }).into(),
    ];
    let r = client.bulk_write(models).session(&mut s).run().unwrap();
    assert_eq!((r.inserted_count, r.modified_count, r.deleted_count), (1, 1, 1));
    assert_eq!(coll.count_documents(doc! {}).session(&mut s).run().unwrap(), 2);
    s.abort_transaction().run().unwrap();
    assert_eq!((balance(&coll, 1), balance(&coll, 2)), (100, 0));
    assert!(coll.find_one(doc! { "_id": 10 }).run().unwrap().is_none());
}

/// A client of a service with test commands (fail points) enabled.
fn client_with_fail_points() -> Client {
    use folio::MemoryEngine;
    use folio::{Mvcc, MvccOptions};
    use folio::{Service, ServiceOptions};
    let store =
        Mvcc::open(std::sync::Arc::new(MemoryEngine::new()), MvccOptions::default()).unwrap();
    let options = ServiceOptions { test_commands: true, ..ServiceOptions::default() };
    Client::with_service(std::sync::Arc::new(Service::new(store, options).unwrap()))
}

/// Makes the next `times` commitTransaction commands fail with `data`'s error.
fn fail_commits(client: &Client, times: i32, data: Document) {
    let mut data = data;
    data.insert("failCommands", ["commitTransaction"]);
    client
        .database("admin")
        .run_command(
            doc! { "configureFailPoint": "failCommand", "mode": { "times": times }, "data": data },
        )
        .run()
        .unwrap();
}

#[test]
fn an_uncertain_commit_is_labelled_and_can_be_retried() {
    let client = client_with_fail_points();
    let coll = accounts(&client);
    // Two failures: the commit and its one automatic retry.
    fail_commits(&client, 2, doc! { "errorCode": 91 });
    let mut s = client.start_session().run().unwrap();
    s.start_transaction().run().unwrap();
    coll.insert_one(doc! { "_id": 1 }).session(&mut s).run().unwrap();
    let e = s.commit_transaction().run().unwrap_err();
    assert_eq!(e.code(), Some(91), "{e}");
    assert!(e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT), "{e}");
    assert!(!e.contains_label(TRANSIENT_TRANSACTION_ERROR), "{e}");
    assert!(coll.find_one(doc! { "_id": 1 }).run().unwrap().is_none());
    // Retrying the commit commits.
    s.commit_transaction().run().unwrap();
    assert!(coll.find_one(doc! { "_id": 1 }).run().unwrap().is_some());
}

#[test]
fn with_transaction_retries_only_the_commit_after_an_unknown_commit_result() {
    let client = client_with_fail_points();
    let coll = accounts(&client);
    fail_commits(&client, 3, doc! { "errorCode": 91 });
    let mut s = client.start_session().run().unwrap();
    let mut calls = 0;
    s.with_transaction(|s| {
        calls += 1;
        coll.insert_one(doc! { "_id": 1 }).session(s).run()?;
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 1, "the callback ran once; only the commit was retried");
    assert_eq!(coll.count_documents(doc! {}).run().unwrap(), 1);
}

#[test]
fn with_transaction_reruns_the_callback_after_a_transient_commit_error() {
    let client = client_with_fail_points();
    let coll = accounts(&client);
    fail_commits(
        &client,
        1,
        doc! { "errorCode": 251, "errorLabels": [TRANSIENT_TRANSACTION_ERROR] },
    );
    let mut s = client.start_session().run().unwrap();
    let mut calls = 0;
    s.with_transaction(|s| {
        calls += 1;
        coll.insert_one(doc! { "_id": 1, "attempt": calls }).session(s).run()?;
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 2);
    let docs: Vec<Document> = coll.find(doc! {}).run().unwrap().map(Result::unwrap).collect();
    assert_eq!(docs, vec![doc! { "_id": 1, "attempt": 2 }]);
}
