//! The `placeOrder` payment transaction of MongoDB's transactions guide, with the guide's sample
//! data, written with the convenient transaction API; its results are asserted against the
//! guide's "Payment Transaction Result", and an order for more than the stock leaves every
//! collection unchanged.

use bson::{Bson, Document, doc};
use folio::api::options::{ReadConcern, TransactionOptions, WriteConcern};
use folio::api::{Client, ClientSession, Collection};

/// Why an order was refused.
#[derive(Debug, PartialEq)]
struct InsufficientStock;

struct Item {
    name: &'static str,
    sku: i32,
    qty: i32,
    price: f64,
}

fn coll(client: &Client, name: &str) -> Collection<Document> {
    client.database("testdb").collection(name)
}

fn sample_data() -> Client {
    let client = Client::in_memory().unwrap();
    coll(&client, "customers").insert_one(doc! { "_id": 98765, "orders": [] }).run().unwrap();
    coll(&client, "inventory")
        .insert_many([
            doc! { "name": "sunblock", "sku": 5432, "qty": 85 },
            doc! { "name": "beach towel", "sku": 7865, "qty": 41 },
        ])
        .run()
        .unwrap();
    client
}

/// The callback of the guide's callback-API example.
fn place_order(
    client: &Client,
    session: &mut ClientSession,
    cart: &[Item],
    customer: i32,
    total: f64,
) -> folio::api::Result<Bson> {
    let items: Vec<Document> = cart
        .iter()
        .map(|i| doc! { "name": i.name, "sku": i.sku, "qty": i.qty, "price": i.price })
        .collect();
    let order = coll(client, "orders")
        .insert_one(doc! { "customer": customer, "items": items, "total": total })
        .session(session)
        .run()?;
    let inventory = coll(client, "inventory");
    for item in cart {
        let in_stock = inventory
            .find_one(doc! { "sku": item.sku, "qty": { "$gte": item.qty } })
            .session(session)
            .run()?;
        if in_stock.is_none() {
            return Err(folio::api::Error::custom(InsufficientStock));
        }
        inventory
            .update_one(doc! { "sku": item.sku }, doc! { "$inc": { "qty": -item.qty } })
            .session(session)
            .run()?;
    }
    coll(client, "customers")
        .update_one(
            doc! { "_id": customer },
            doc! { "$push": { "orders": order.inserted_id.clone() } },
        )
        .session(session)
        .run()?;
    Ok(order.inserted_id)
}

fn run_order(client: &Client, cart: &[Item], total: f64) -> folio::api::Result<Bson> {
    let options = TransactionOptions::builder()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .build();
    let mut session = client.start_session().run()?;
    session
        .start_transaction()
        .with_options(options)
        .and_run((), |s, _| place_order(client, s, cart, 98765, total))
}

fn all(client: &Client, name: &str) -> Vec<Document> {
    coll(client, name).find(doc! {}).run().unwrap().map(Result::unwrap).collect()
}

/// A document without its `_id` (the guide elides generated ids).
fn without_id(mut d: Document) -> Document {
    d.remove("_id");
    d
}

#[test]
fn place_order_commits_the_guides_payment_transaction_result() {
    let client = sample_data();
    let cart = [
        Item { name: "sunblock", sku: 5432, qty: 1, price: 5.19 },
        Item { name: "beach towel", sku: 7865, qty: 2, price: 15.99 },
    ];
    let order_id = run_order(&client, &cart, 37.17).unwrap();
    assert!(matches!(order_id, Bson::ObjectId(_)));

    assert_eq!(
        all(&client, "customers"),
        vec![doc! { "_id": 98765, "orders": [order_id.clone()] }]
    );
    let inventory: Vec<Document> = all(&client, "inventory").into_iter().map(without_id).collect();
    assert_eq!(
        inventory,
        vec![
            doc! { "name": "sunblock", "sku": 5432, "qty": 84 },
            doc! { "name": "beach towel", "sku": 7865, "qty": 39 },
        ]
    );
    assert_eq!(
        all(&client, "orders"),
        vec![doc! {
            "_id": order_id,
            "customer": 98765,
            "items": [
                { "name": "sunblock", "sku": 5432, "qty": 1, "price": 5.19 },
                { "name": "beach towel", "sku": 7865, "qty": 2, "price": 15.99 },
            ],
            "total": 37.17,
        }]
    );
}

#[test]
fn an_order_beyond_the_stock_changes_nothing() {
    let client = sample_data();
    let first = [Item { name: "sunblock", sku: 5432, qty: 1, price: 5.19 }];
    run_order(&client, &first, 5.19).unwrap();
    let before: Vec<Vec<Document>> =
        ["customers", "inventory", "orders"].iter().map(|c| all(&client, c)).collect();

    // The towel is taken before the sunblock check fails: the rollback must undo it, the order
    // insert, and leave the customer alone.
    let greedy = [
        Item { name: "beach towel", sku: 7865, qty: 1, price: 15.99 },
        Item { name: "sunblock", sku: 5432, qty: 1000, price: 5.19 },
    ];
    let e = run_order(&client, &greedy, 5205.99).unwrap_err();
    assert_eq!(e.get_custom::<InsufficientStock>(), Some(&InsufficientStock), "{e}");

    let after: Vec<Vec<Document>> =
        ["customers", "inventory", "orders"].iter().map(|c| all(&client, c)).collect();
    assert_eq!(before, after);
    assert_eq!(after[2].len(), 1, "only the first order exists");
}
