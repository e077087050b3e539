//! Folio embedded: the workloads through the in-process API (`folio::api`), on a temporary
//! data directory with the redb engine, one OS thread per client.
//!
//! The calls and the retry rules are the same as over the wire ([`crate::wire`]); every commit
//! is durable before it returns, whatever the write concern, so the embedded numbers show what
//! the network and the driver cost on top of the same engine.

use std::path::Path;

use bson::{Document, doc};
use folio::api::options::{ReadConcern, TransactionOptions, WriteConcern};
use folio::api::{Client, ClientSession, Collection};

use crate::runner::SyncClient;
use crate::workload::{self, Choice, names};

/// Opens a fresh instance in `dir`.
pub fn open(dir: &Path) -> Result<Client, String> {
    Client::open(dir.join("folio-embedded")).map_err(|e| e.to_string())
}

/// The collections of the main workloads, with data.
pub fn load(client: &Client) -> Result<(), String> {
    let db = client.database(names::DB);
    let e = |e: folio::api::Error| e.to_string();
    let inventory: Vec<Document> = (0..workload::SKUS)
        .map(
            |i| doc! { "_id": i, "sku": i, "name": format!("sku {i}"), "qty": workload::START_QTY },
        )
        .collect();
    insert_batched(client, names::INVENTORY, inventory)?;
    db.run_command(doc! {
        "createIndexes": names::INVENTORY,
        "indexes": [{ "key": { "sku": 1 }, "name": "sku_1", "unique": true }],
    })
    .run()
    .map_err(e)?;
    let customers: Vec<Document> =
        (0..workload::CUSTOMERS).map(|i| doc! { "_id": i, "orders": [] }).collect();
    insert_batched(client, names::CUSTOMERS, customers)?;
    let accounts: Vec<Document> = (0..workload::ACCOUNTS)
        .map(|i| doc! { "_id": i, "balance": workload::START_BALANCE })
        .collect();
    insert_batched(client, names::ACCOUNTS, accounts)?;
    db.collection::<Document>(names::COUNTERS)
        .insert_one(doc! { "_id": "hot", "n": 0i64 })
        .run()
        .map_err(e)?;
    for c in [names::ORDERS, names::EVENTS] {
        db.create_collection(c).run().map_err(e)?;
    }
    load_items(client, workload::ITEMS)
}

/// Inserts `docs` into `coll` in transactions of 1,000 documents (see
/// [`crate::wire`]'s loader for why).
fn insert_batched(client: &Client, coll: &str, docs: Vec<Document>) -> Result<(), String> {
    let coll = client.database(names::DB).collection::<Document>(coll);
    let mut session = client.start_session().run().map_err(|e| e.to_string())?;
    for batch in docs.chunks(1_000) {
        session.start_transaction().run().map_err(|e| e.to_string())?;
        coll.insert_many(batch).session(&mut session).run().map_err(|e| e.to_string())?;
        session.commit_transaction().run().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The items collection of size `n`, with an index on `k`.
pub fn load_items(client: &Client, n: i64) -> Result<(), String> {
    let db = client.database(names::DB);
    let mut start = 0;
    while start < n {
        let end = (start + 100_000).min(n);
        let docs: Vec<Document> = (start..end)
            .map(|i| doc! { "_id": i, "k": workload::item_k(i, n), "pad": workload::ITEM_PAD })
            .collect();
        insert_batched(client, &names::items(n), docs)?;
        start = end;
    }
    db.run_command(doc! {
        "createIndexes": names::items(n),
        "indexes": [{ "key": { "k": 1 }, "name": "k_1" }],
    })
    .run()
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One benchmark client: a session of the shared instance.
pub struct EmbeddedClient {
    session: ClientSession,
    inventory: Collection<Document>,
    customers: Collection<Document>,
    orders: Collection<Document>,
    accounts: Collection<Document>,
    events: Collection<Document>,
    counters: Collection<Document>,
    items: Collection<Document>,
    admin: folio::api::Database,
}

impl EmbeddedClient {
    /// A client reading the items collection of size `items`.
    pub fn new(client: &Client, items: i64) -> Result<EmbeddedClient, String> {
        let options = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .build();
        let session = client
            .start_session()
            .default_transaction_options(options)
            .run()
            .map_err(|e| e.to_string())?;
        let db = client.database(names::DB);
        Ok(EmbeddedClient {
            session,
            inventory: db.collection(names::INVENTORY),
            customers: db.collection(names::CUSTOMERS),
            orders: db.collection(names::ORDERS),
            accounts: db.collection(names::ACCOUNTS),
            events: db.collection(names::EVENTS),
            counters: db.collection(names::COUNTERS),
            items: db.collection(&names::items(items)),
            admin: client.database("admin"),
        })
    }

    /// The body of one transaction attempt.
    fn attempt(&mut self, choice: &Choice) -> folio::api::Result<()> {
        let s = &mut self.session;
        match choice {
            Choice::Order { skus, customer } => {
                let cart: Vec<Document> = skus
                    .iter()
                    .map(|(sku, qty)| doc! { "sku": sku, "qty": qty, "price": 9.99 })
                    .collect();
                let order = doc! {
                    "customer": customer, "items": cart,
                    "total": 9.99 * (skus[0].1 + skus[1].1) as f64,
                };
                let inserted = self.orders.insert_one(order).session(s).run()?;
                for (sku, qty) in skus {
                    let found = self
                        .inventory
                        .find_one(doc! { "sku": sku, "qty": { "$gte": qty } })
                        .session(s)
                        .run()?;
                    if found.is_none() {
                        // Never happens with the seeded stock; treated like a failed order.
                        return Ok(());
                    }
                    self.inventory
                        .update_one(doc! { "sku": sku }, doc! { "$inc": { "qty": -qty } })
                        .session(s)
                        .run()?;
                }
                self.customers
                    .update_one(
                        doc! { "_id": customer },
                        doc! { "$push": { "orders": inserted.inserted_id } },
                    )
                    .session(s)
                    .run()?;
            }
            Choice::Transfer { from, to, amount } => {
                self.accounts
                    .update_one(doc! { "_id": from }, doc! { "$inc": { "balance": -amount } })
                    .session(s)
                    .run()?;
                self.accounts
                    .update_one(doc! { "_id": to }, doc! { "$inc": { "balance": amount } })
                    .session(s)
                    .run()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs a transaction until it commits; returns its retries.
    fn transaction(&mut self, choice: &Choice) -> Result<u32, String> {
        let mut retries = 0;
        loop {
            self.session.start_transaction().run().map_err(|e| e.to_string())?;
            if let Err(e) = self.attempt(choice) {
                let _ = self.session.abort_transaction().run();
                if e.contains_label("TransientTransactionError") || e.is_write_conflict() {
                    retries += 1;
                    std::thread::sleep(crate::runner::backoff(retries));
                    continue;
                }
                return Err(e.to_string());
            }
            loop {
                match self.session.commit_transaction().run() {
                    Ok(()) => return Ok(retries),
                    Err(e) if e.contains_label("UnknownTransactionCommitResult") => continue,
                    Err(e) if e.contains_label("TransientTransactionError") => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            retries += 1;
            std::thread::sleep(crate::runner::backoff(retries));
        }
    }
}

impl SyncClient for EmbeddedClient {
    fn run(&mut self, choice: &Choice) -> Result<u32, String> {
        let e = |e: folio::api::Error| e.to_string();
        match choice {
            Choice::Order { .. } | Choice::Transfer { .. } => self.transaction(choice),
            Choice::Insert { id, user } => {
                let event = doc! {
                    "_id": id, "user": user, "kind": "click", "payload": workload::EVENT_PAYLOAD,
                };
                self.events.insert_one(event).run().map_err(e)?;
                Ok(0)
            }
            Choice::Ping => {
                self.admin.run_command(doc! { "ping": 1 }).run().map_err(e)?;
                Ok(0)
            }
            Choice::BulkInsert { first_user } => {
                let events: Vec<Document> = workload::bulk_events(*first_user)
                    .into_iter()
                    .map(|(id, user)| {
                        doc! { "_id": id, "user": user, "kind": "click", "payload": workload::EVENT_PAYLOAD }
                    })
                    .collect();
                self.events.insert_many(events).run().map_err(e)?;
                Ok(0)
            }
            Choice::Update { id, by } => update_retrying(
                &self.accounts,
                doc! { "_id": id },
                doc! { "$inc": { "balance": by } },
            ),
            Choice::PointRead { id } => {
                match self.items.find_one(doc! { "_id": id }).run().map_err(e)? {
                    Some(_) => Ok(0),
                    None => Err(format!("item {id} not found")),
                }
            }
            Choice::Range { from } => {
                let cursor = self
                    .items
                    .find(doc! { "k": { "$gte": from } })
                    .sort(doc! { "k": 1 })
                    .limit(workload::RANGE_LEN)
                    .run()
                    .map_err(e)?;
                let mut n = 0;
                for d in cursor {
                    d.map_err(e)?;
                    n += 1;
                }
                if n != workload::RANGE_LEN {
                    return Err(format!("range from {from} returned {n}"));
                }
                Ok(0)
            }
            Choice::HotCounter => {
                update_retrying(&self.counters, doc! { "_id": "hot" }, doc! { "$inc": { "n": 1 } })
            }
        }
    }
}

/// `update_one` outside a transaction, retried after a write conflict; returns the retries.
fn update_retrying(
    coll: &Collection<Document>,
    filter: Document,
    update: Document,
) -> Result<u32, String> {
    let mut retries = 0;
    loop {
        match coll.update_one(filter.clone(), update.clone()).run() {
            Ok(_) => return Ok(retries),
            Err(e) if e.is_write_conflict() => {
                retries += 1;
                std::thread::sleep(crate::runner::backoff(retries));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
