//! The `placeOrder` payment transaction of MongoDB's Node.js transactions guide, ported to Folio's
//! embedded API.
//!
//! A customer buys items from a cart. One transaction records the order, takes the items out of
//! the inventory (cancelling the whole purchase if any item is short), and appends the order id
//! to the customer. The example runs an order that succeeds and prints the three collections
//! (relaxed Extended JSON, one document per line), then an order for more sunblock than there is,
//! and shows that the three collections are unchanged.
//!
//! Run it with `cargo run --release --example place_order`. It uses an in-memory instance; pass
//! a directory path to use a data directory instead.

use std::fmt;

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use folio::api::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use folio::api::options::{ReadConcern, TransactionOptions, WriteConcern};
use folio::api::{Client, Collection};
use serde::{Deserialize, Serialize};

/// One line of the cart.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CartItem {
    name: String,
    sku: i32,
    qty: i32,
    price: f64,
}

/// The payment for a cart.
#[derive(Clone, Copy, Debug)]
struct Payment {
    customer: i32,
    total: f64,
}

/// A document of `orders`.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<ObjectId>,
    customer: i32,
    items: Vec<CartItem>,
    total: f64,
}

/// A document of `inventory`.
#[derive(Debug, Serialize, Deserialize)]
struct InventoryItem {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<ObjectId>,
    name: String,
    sku: i32,
    qty: i32,
}

/// Why an order failed.
#[derive(Debug)]
enum OrderError {
    /// An item is short or unknown.
    InsufficientStock,
    /// The database failed.
    Database(folio::api::Error),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::InsufficientStock => write!(f, "Insufficient quantity or SKU not found."),
            OrderError::Database(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OrderError {}

impl From<folio::api::Error> for OrderError {
    fn from(e: folio::api::Error) -> Self {
        OrderError::Database(e)
    }
}

/// The transaction: record the order, take the items from the inventory, link the order to the
/// customer, commit. On any error the transaction is aborted and nothing of it remains.
fn place_order(client: &Client, cart: &[CartItem], payment: Payment) -> Result<(), OrderError> {
    let transaction_options = TransactionOptions::builder()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .build();

    let mut session = client.start_session().run()?;
    session.start_transaction().with_options(transaction_options).run()?;

    let db = client.database("testdb");
    let orders: Collection<Order> = db.collection("orders");
    let inventory: Collection<InventoryItem> = db.collection("inventory");
    let customers: Collection<Document> = db.collection("customers");

    let mut run = || -> Result<(), OrderError> {
        let order = Order {
            id: None,
            customer: payment.customer,
            items: cart.to_vec(),
            total: payment.total,
        };
        let order_result = orders.insert_one(&order).session(&mut session).run()?;

        for item in cart {
            // Cancel the transaction when the inventory is short.
            let check = inventory
                .find_one(doc! { "sku": item.sku, "qty": { "$gte": item.qty } })
                .session(&mut session)
                .run()?;
            if check.is_none() {
                return Err(OrderError::InsufficientStock);
            }
            inventory
                .update_one(doc! { "sku": item.sku }, doc! { "$inc": { "qty": -item.qty } })
                .session(&mut session)
                .run()?;
        }

        customers
            .update_one(
                doc! { "_id": payment.customer },
                doc! { "$push": { "orders": order_result.inserted_id } },
            )
            .session(&mut session)
            .run()?;
        session.commit_transaction().run()?;
        println!("Transaction successfully committed.");
        Ok(())
    };

    let result = run();
    if let Err(error) = &result {
        match error {
            OrderError::Database(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                // The commit may or may not have happened: an application would retry the commit.
                println!("The commit's outcome is unknown: {e}");
            }
            OrderError::Database(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                // A transient error: an application would retry the whole transaction.
                println!("A transient error aborted the transaction: {e}");
            }
            _ => println!(
                "An error occurred in the transaction, performing a data rollback: {error}"
            ),
        }
        if session.in_transaction() {
            session.abort_transaction().run()?;
        }
    }
    // Dropping the session ends it.
    result
}

/// Creates the sample data of the guide.
fn load_sample_data(client: &Client) -> folio::api::Result<()> {
    let db = client.database("testdb");
    let customers: Collection<Document> = db.collection("customers");
    customers.insert_one(doc! { "_id": 98765, "orders": [] }).run()?;
    let inventory: Collection<Document> = db.collection("inventory");
    inventory
        .insert_many([
            doc! { "name": "sunblock", "sku": 5432, "qty": 85 },
            doc! { "name": "beach towel", "sku": 7865, "qty": 41 },
        ])
        .run()?;
    // The orders collection is created by the transaction's first insert.
    Ok(())
}

/// Every document of a collection, in natural order, as relaxed Extended JSON lines.
fn dump(client: &Client, name: &str) -> folio::api::Result<Vec<String>> {
    let coll: Collection<Document> = client.database("testdb").collection(name);
    coll.find(doc! {})
        .run()?
        .map(|d| d.map(|d| Bson::Document(d).into_relaxed_extjson().to_string()))
        .collect()
}

fn print_collections(client: &Client) -> folio::api::Result<Vec<Vec<String>>> {
    let mut all = Vec::new();
    for name in ["customers", "inventory", "orders"] {
        println!("{name}:");
        let lines = dump(client, name)?;
        for line in &lines {
            println!("  {line}");
        }
        all.push(lines);
    }
    Ok(all)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = match std::env::args().nth(1) {
        Some(dir) => Client::open(dir)?,
        None => Client::in_memory()?,
    };
    load_sample_data(&client)?;

    let cart = vec![
        CartItem { name: "sunblock".into(), sku: 5432, qty: 1, price: 5.19 },
        CartItem { name: "beach towel".into(), sku: 7865, qty: 2, price: 15.99 },
    ];
    let payment = Payment { customer: 98765, total: 37.17 };

    println!("== Placing an order for 1 sunblock and 2 beach towels");
    place_order(&client, &cart, payment)?;
    println!("\n== Payment Transaction Result");
    let after_first = print_collections(&client)?;

    println!("\n== Placing an order for 1000 sunblock (only 84 in stock)");
    let greedy = vec![
        CartItem { name: "beach towel".into(), sku: 7865, qty: 1, price: 15.99 },
        CartItem { name: "sunblock".into(), sku: 5432, qty: 1000, price: 5.19 },
    ];
    match place_order(&client, &greedy, Payment { customer: 98765, total: 5205.99 }) {
        Err(OrderError::InsufficientStock) => {}
        Ok(()) => return Err("the order for 1000 sunblock should have failed".into()),
        Err(e) => return Err(e.to_string().into()),
    }
    println!("\n== After the failed order");
    let after_second = print_collections(&client)?;
    if after_first != after_second {
        return Err("the failed order changed the collections".into());
    }
    println!("\nAll three collections are unchanged.");
    Ok(())
}
