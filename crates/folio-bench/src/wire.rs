//! Folio over the wire: a `folio serve` child process, and the workloads through the official
//! MongoDB driver.
//!
//! The server runs on a free port of 127.0.0.1 with a temporary data directory and the default
//! engine (redb, durable commits), or, for the `folio-pg` systems, with `--storage` on a
//! throwaway PostgreSQL cluster (each commit a PostgreSQL commit, durable when acknowledged). Every client writes with `w: "majority", j: true` and runs
//! its transactions with snapshot read concern, as seed 002's `placeOrder` does. A transaction
//! that fails with the `TransientTransactionError` label (a write conflict) is retried whole,
//! after a short random wait ([`crate::runner::backoff`]); a
//! commit that fails with `UnknownTransactionCommitResult` is retried alone, as MongoDB's
//! documentation recommends.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bson::{Document, doc};
use mongodb::error::{
    ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT, WriteFailure,
};
use mongodb::options::{
    Acknowledgment, ClientOptions, ReadConcern, TransactionOptions, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection};

use crate::runner::{AsyncClient, procfs};
use crate::workload::{self, Choice, names};

/// The `folio` binary: `$FOLIO_BIN`, else next to this executable.
///
/// Under `cargo run` (which sets `$CARGO`) the server is built first with the same profile, so
/// that `cargo run --release -p folio-bench` never measures a missing or stale server.
pub fn folio_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FOLIO_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let bin = me.with_file_name("folio");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = me.parent().and_then(Path::file_name).is_some_and(|d| d == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "folio-cli"]);
        if release {
            cmd.arg("--release");
        }
        if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
            cmd.current_dir(dir);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the folio server failed ({status})"));
        }
    }
    if bin.is_file() {
        return Ok(bin);
    }
    Err(format!(
        "{} not found: build it first with `cargo build --release -p folio-cli` (or set FOLIO_BIN)",
        bin.display()
    ))
}

/// A running `folio serve` process.
pub struct Server {
    child: Child,
    /// Where the data is (`--dbpath DIR` or `--storage URL`), kept across restarts.
    storage: [OsString; 2],
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Starts a server on a fresh data directory inside `dir`.
    pub fn start(bin: &Path, dir: &Path) -> Result<Server, String> {
        Server::start_on(bin, ["--dbpath".into(), dir.join("folio-data").into()])
    }

    /// Starts a front end on a PostgreSQL database (`folio serve --storage URL`).
    pub fn start_pg(bin: &Path, url: &str) -> Result<Server, String> {
        Server::start_on(bin, ["--storage".into(), url.into()])
    }

    fn start_on(bin: &Path, storage: [OsString; 2]) -> Result<Server, String> {
        let port = crate::free_port()?;
        let child = spawn(bin, &storage, port)?;
        Ok(Server { child, storage, bin: bin.to_path_buf(), port })
    }

    /// Stops the server and starts it again on the same data (so that peak RSS starts again).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.port = crate::free_port()?;
        self.child = spawn(&self.bin, &self.storage, self.port)?;
        Ok(())
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds of the server so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.pid())
    }

    /// Peak RSS of the server.
    pub fn peak_rss(&self) -> Option<u64> {
        procfs::peak_rss(self.pid())
    }

    /// Stops the server with SIGTERM (a clean shutdown), killing it if it does not exit.
    fn stop(&mut self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).output();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::cleanup::unregister_folio(pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::cleanup::unregister_folio(pid);
    }

    /// A driver client with a pool for `clients` connections.
    pub async fn client(&self, clients: usize) -> Result<Client, String> {
        let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port);
        let mut options = ClientOptions::parse(&uri).await.map_err(|e| e.to_string())?;
        options.write_concern = Some(durable());
        options.max_pool_size = Some(clients as u32 + 2);
        Client::with_options(options).map_err(|e| e.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `folio serve` and waits for its "listening" line.
fn spawn(bin: &Path, storage: &[OsString], port: u16) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .args(["serve", "--bind_ip", "127.0.0.1", "--port", &port.to_string()])
        .args(storage)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    crate::cleanup::register_folio(child.id());
    let stdout = child.stdout.take().ok_or("no stdout from folio serve")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("folio listening on") => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("reading folio serve's output: {e}")),
            None => {
                let status = child.wait().map_err(|e| e.to_string())?;
                crate::cleanup::unregister_folio(child.id());
                return Err(format!("folio serve exited before listening ({status})"));
            }
        }
    }
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

/// `w: "majority", j: true`.
fn durable() -> WriteConcern {
    WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build()
}

/// Whether `e` is a write conflict (code 112), inside or outside a transaction.
fn is_write_conflict(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Command(c) => c.code == 112,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 112,
        _ => false,
    }
}

/// The collections of the main workloads, with data, through `client`.
pub async fn load(client: &Client) -> Result<(), String> {
    let db = client.database(names::DB);
    let e = |e: mongodb::error::Error| e.to_string();
    let inventory: Vec<Document> = (0..workload::SKUS)
        .map(
            |i| doc! { "_id": i, "sku": i, "name": format!("sku {i}"), "qty": workload::START_QTY },
        )
        .collect();
    insert_batched(client, names::INVENTORY, inventory).await?;
    db.run_command(doc! {
        "createIndexes": names::INVENTORY,
        "indexes": [{ "key": { "sku": 1 }, "name": "sku_1", "unique": true }],
    })
    .await
    .map_err(e)?;
    let customers: Vec<Document> =
        (0..workload::CUSTOMERS).map(|i| doc! { "_id": i, "orders": [] }).collect();
    insert_batched(client, names::CUSTOMERS, customers).await?;
    let accounts: Vec<Document> = (0..workload::ACCOUNTS)
        .map(|i| doc! { "_id": i, "balance": workload::START_BALANCE })
        .collect();
    insert_batched(client, names::ACCOUNTS, accounts).await?;
    db.collection::<Document>(names::COUNTERS)
        .insert_one(doc! { "_id": "hot", "n": 0i64 })
        .await
        .map_err(e)?;
    // Create the written collections up front, as the SQL side creates its tables.
    for c in [names::ORDERS, names::EVENTS] {
        db.create_collection(c).await.map_err(e)?;
    }
    load_items(client, workload::ITEMS).await
}

/// Inserts `docs` into `coll` in transactions of [`LOAD_BATCH`] documents.
///
/// Outside a transaction every document of an `insert` commits (durably) on its own, which makes
/// loading a million documents take most of an hour; one transaction per batch commits once.
async fn insert_batched(client: &Client, coll: &str, docs: Vec<Document>) -> Result<(), String> {
    let coll = client.database(names::DB).collection::<Document>(coll);
    let mut session = client.start_session().await.map_err(|e| e.to_string())?;
    for batch in docs.chunks(LOAD_BATCH) {
        session.start_transaction().await.map_err(|e| e.to_string())?;
        coll.insert_many(batch).session(&mut session).await.map_err(|e| e.to_string())?;
        session.commit_transaction().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Documents per loading transaction.
const LOAD_BATCH: usize = 1_000;

/// The items collection of size `n`, with an index on `k`.
pub async fn load_items(client: &Client, n: i64) -> Result<(), String> {
    let db = client.database(names::DB);
    let mut start = 0;
    while start < n {
        let end = (start + 100 * LOAD_BATCH as i64).min(n);
        let docs: Vec<Document> = (start..end)
            .map(|i| doc! { "_id": i, "k": workload::item_k(i, n), "pad": workload::ITEM_PAD })
            .collect();
        insert_batched(client, &names::items(n), docs).await?;
        start = end;
    }
    db.run_command(doc! {
        "createIndexes": names::items(n),
        "indexes": [{ "key": { "k": 1 }, "name": "k_1" }],
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One benchmark client: a session over the shared driver client.
pub struct WireClient {
    session: ClientSession,
    inventory: Collection<Document>,
    customers: Collection<Document>,
    orders: Collection<Document>,
    accounts: Collection<Document>,
    events: Collection<Document>,
    counters: Collection<Document>,
    items: Collection<Document>,
    admin: mongodb::Database,
}

impl WireClient {
    /// A client reading the items collection of size `items`.
    pub async fn new(client: &Client, items: i64) -> Result<WireClient, String> {
        let options = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable())
            .build();
        let session = client
            .start_session()
            .default_transaction_options(options)
            .await
            .map_err(|e| e.to_string())?;
        let db = client.database(names::DB);
        Ok(WireClient {
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
    async fn attempt(&mut self, choice: &Choice) -> mongodb::error::Result<()> {
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
                let inserted = self.orders.insert_one(order).session(&mut *s).await?;
                for (sku, qty) in skus {
                    let found = self
                        .inventory
                        .find_one(doc! { "sku": sku, "qty": { "$gte": qty } })
                        .session(&mut *s)
                        .await?;
                    if found.is_none() {
                        // Never happens with the seeded stock; treated like a failed order.
                        return Ok(());
                    }
                    self.inventory
                        .update_one(doc! { "sku": sku }, doc! { "$inc": { "qty": -qty } })
                        .session(&mut *s)
                        .await?;
                }
                self.customers
                    .update_one(
                        doc! { "_id": customer },
                        doc! { "$push": { "orders": inserted.inserted_id } },
                    )
                    .session(&mut *s)
                    .await?;
            }
            Choice::Transfer { from, to, amount } => {
                self.accounts
                    .update_one(doc! { "_id": from }, doc! { "$inc": { "balance": -amount } })
                    .session(&mut *s)
                    .await?;
                self.accounts
                    .update_one(doc! { "_id": to }, doc! { "$inc": { "balance": amount } })
                    .session(&mut *s)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs a transaction until it commits; returns its retries.
    async fn transaction(&mut self, choice: &Choice) -> Result<u32, String> {
        let mut retries = 0;
        loop {
            self.session.start_transaction().await.map_err(|e| e.to_string())?;
            if let Err(e) = self.attempt(choice).await {
                let _ = self.session.abort_transaction().await;
                if e.contains_label(TRANSIENT_TRANSACTION_ERROR) || is_write_conflict(&e) {
                    retries += 1;
                    tokio::time::sleep(crate::runner::backoff(retries)).await;
                    continue;
                }
                return Err(e.to_string());
            }
            loop {
                match self.session.commit_transaction().await {
                    Ok(()) => return Ok(retries),
                    Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
                    Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            retries += 1;
            tokio::time::sleep(crate::runner::backoff(retries)).await;
        }
    }
}

impl AsyncClient for WireClient {
    async fn run(&mut self, choice: &Choice) -> Result<u32, String> {
        match choice {
            Choice::Order { .. } | Choice::Transfer { .. } => self.transaction(choice).await,
            Choice::Insert { id, user } => {
                let event = doc! {
                    "_id": id, "user": user, "kind": "click", "payload": workload::EVENT_PAYLOAD,
                };
                self.events.insert_one(event).await.map_err(|e| e.to_string())?;
                Ok(0)
            }
            Choice::Ping => {
                self.admin.run_command(doc! { "ping": 1 }).await.map_err(|e| e.to_string())?;
                Ok(0)
            }
            Choice::BulkInsert { first_user } => {
                let events = workload::bulk_events(*first_user).into_iter().map(|(id, user)| {
                    doc! { "_id": id, "user": user, "kind": "click", "payload": workload::EVENT_PAYLOAD }
                });
                self.events.insert_many(events).await.map_err(|e| e.to_string())?;
                Ok(0)
            }
            Choice::Update { id, by } => {
                update_retrying(
                    &self.accounts,
                    doc! { "_id": id },
                    doc! { "$inc": { "balance": by } },
                )
                .await
            }
            Choice::PointRead { id } => {
                match self.items.find_one(doc! { "_id": id }).await.map_err(|e| e.to_string())? {
                    Some(_) => Ok(0),
                    None => Err(format!("item {id} not found")),
                }
            }
            Choice::Range { from } => {
                let mut cursor = self
                    .items
                    .find(doc! { "k": { "$gte": from } })
                    .sort(doc! { "k": 1 })
                    .limit(workload::RANGE_LEN)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut n = 0;
                while cursor.advance().await.map_err(|e| e.to_string())? {
                    n += 1;
                }
                if n != workload::RANGE_LEN {
                    return Err(format!("range from {from} returned {n}"));
                }
                Ok(0)
            }
            Choice::HotCounter => {
                update_retrying(&self.counters, doc! { "_id": "hot" }, doc! { "$inc": { "n": 1 } })
                    .await
            }
        }
    }
}

/// `update_one` outside a transaction, retried after a write conflict; returns the retries.
async fn update_retrying(
    coll: &Collection<Document>,
    filter: Document,
    update: Document,
) -> Result<u32, String> {
    let mut retries = 0;
    loop {
        match coll.update_one(filter.clone(), update.clone()).await {
            Ok(_) => return Ok(retries),
            Err(e) if is_write_conflict(&e) => {
                retries += 1;
                tokio::time::sleep(crate::runner::backoff(retries)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
