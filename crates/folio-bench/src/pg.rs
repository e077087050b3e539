//! PostgreSQL: a throwaway cluster, and the workloads as SQL over JSONB documents.
//!
//! The cluster is [`folio_pg::testing::Cluster`]: `initdb -A trust` in a temporary directory,
//! then `pg_ctl start` on a free port of 127.0.0.1 with its unix socket in the same directory,
//! default settings otherwise (`fsync=on`, `synchronous_commit=on`: a commit returns once it is
//! flushed, as a Folio commit does), as the `postgres` user (or `nobody`) when run as root.
//! [`Cluster`] stops the server when dropped, and [`crate::cleanup`] stops it on Ctrl-C.
//!
//! Every collection is a table `(id <key> PRIMARY KEY, doc jsonb)`. Transactions are
//! `REPEATABLE READ` (snapshot isolation, like a Folio transaction) and are retried on
//! `serialization_failure` (40001) and `deadlock_detected` (40P01), PostgreSQL's conflict
//! errors. Single statements (*insert*, *hot counter*) run in autocommit mode, as the Folio
//! operations run outside transactions.

use std::path::Path;

use folio_pg::testing;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::runner::{AsyncClient, procfs};
use crate::workload::{self, Choice, names};

/// The server's `max_connections`.
const MAX_CONNECTIONS: u32 = 200;

/// A running throwaway cluster ([`folio_pg::testing::Cluster`]), registered for Ctrl-C.
pub struct Cluster {
    pg: testing::Cluster,
}

impl Cluster {
    /// Creates and starts a cluster, or says why it cannot (PostgreSQL not installed...).
    pub fn start() -> Result<Cluster, String> {
        let pg = testing::Cluster::create("folio-bench-pg-").map_err(|e| {
            e.unwrap_or_else(|| {
                "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)"
                    .into()
            })
        })?;
        crate::cleanup::register_dir(pg.dir());
        pg.initdb()?;
        let mut cluster = Cluster { pg };
        cluster.pg_start()?;
        Ok(cluster)
    }

    fn pg_start(&mut self) -> Result<(), String> {
        crate::cleanup::register_pg(self.pg.bin(), self.pg.user(), &self.pg.data_dir());
        self.pg.start_server(MAX_CONNECTIONS)
    }

    /// Stops the server (fast shutdown).
    fn pg_stop(&mut self) -> Result<(), String> {
        let r = self.pg.stop_server("fast");
        crate::cleanup::unregister_pg(&self.pg.data_dir());
        r
    }

    /// The connection URL of the `postgres` database (what `folio serve --storage` takes).
    pub fn url(&self) -> String {
        self.pg.url()
    }

    /// Restarts the server (so that peak RSS starts again).
    pub fn restart(&mut self) -> Result<(), String> {
        self.pg_stop()?;
        self.pg_start()
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text =
            std::fs::read_to_string(Path::new(&self.pg.data_dir()).join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// CPU seconds of the postmaster and its children so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        procfs::tree_cpu_seconds(self.postmaster_pid()?)
    }

    /// Sum of the peak RSS of the postmaster and its children.
    pub fn peak_rss(&self) -> Option<u64> {
        procfs::tree_peak_rss(self.postmaster_pid()?)
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Client, String> {
        let conf = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.pg.port);
        let (client, connection) =
            tokio_postgres::connect(&conf, NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // The connection ends when its client drops; an error then is not interesting.
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Fast shutdown here; the inner cluster's own drop then has nothing left to stop.
        if let Err(e) = self.pg_stop() {
            eprintln!("warning: {e}");
        }
    }
}

fn sql_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Creates the tables of the main workloads and fills them.
pub async fn load(client: &Client) -> Result<(), String> {
    let sql = format!(
        "CREATE TABLE {inv} (id bigint PRIMARY KEY, doc jsonb NOT NULL);
         INSERT INTO {inv} SELECT i, jsonb_build_object('_id', i, 'sku', i, 'name', 'sku ' || i, 'qty', {qty})
           FROM generate_series(0::bigint, {skus} - 1) i;
         CREATE TABLE {cust} (id bigint PRIMARY KEY, doc jsonb NOT NULL);
         INSERT INTO {cust} SELECT i, jsonb_build_object('_id', i, 'orders', '[]'::jsonb)
           FROM generate_series(0::bigint, {customers} - 1) i;
         CREATE TABLE {orders} (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE TABLE {acc} (id bigint PRIMARY KEY, doc jsonb NOT NULL);
         INSERT INTO {acc} SELECT i, jsonb_build_object('_id', i, 'balance', {bal})
           FROM generate_series(0::bigint, {accounts} - 1) i;
         CREATE TABLE {events} (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE TABLE {counters} (id text PRIMARY KEY, doc jsonb NOT NULL);
         INSERT INTO {counters} VALUES ('hot', '{{\"_id\": \"hot\", \"n\": 0}}');",
        inv = names::INVENTORY,
        cust = names::CUSTOMERS,
        orders = names::ORDERS,
        acc = names::ACCOUNTS,
        events = names::EVENTS,
        counters = names::COUNTERS,
        qty = workload::START_QTY,
        skus = workload::SKUS,
        customers = workload::CUSTOMERS,
        bal = workload::START_BALANCE,
        accounts = workload::ACCOUNTS,
    );
    client.batch_execute(&sql).await.map_err(sql_err)?;
    // VACUUM cannot run in the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE").await.map_err(sql_err)?;
    load_items(client, workload::ITEMS).await
}

/// Creates and fills the items table of size `n`, with an expression index on `k`.
pub async fn load_items(client: &Client, n: i64) -> Result<(), String> {
    let t = names::items(n);
    let sql = format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, doc jsonb NOT NULL);
         INSERT INTO {t} SELECT i, jsonb_build_object('_id', i, 'k', (i * 7919) % {n}, 'pad', '{pad}')
           FROM generate_series(0::bigint, {n} - 1) i;
         CREATE INDEX ON {t} (((doc->>'k')::bigint));",
        pad = workload::ITEM_PAD,
    );
    client.batch_execute(&sql).await.map_err(sql_err)?;
    client.batch_execute(&format!("VACUUM ANALYZE {t}")).await.map_err(sql_err)
}

/// One benchmark client: a connection with its statements prepared.
pub struct PgClient {
    client: Client,
    items: i64,
    insert_order: Statement,
    check_sku: Statement,
    take_sku: Statement,
    push_order: Statement,
    move_balance: Statement,
    insert_event: Statement,
    point: Statement,
    range: Statement,
    bump: Statement,
    ping: Statement,
    bulk_insert: Statement,
}

impl PgClient {
    /// Connects and prepares every statement; `items` names the items table to read.
    pub async fn new(cluster: &Cluster, items: i64) -> Result<PgClient, String> {
        let client = cluster.connect().await?;
        let it = names::items(items);
        let prep = async |sql: String| client.prepare(&sql).await.map_err(sql_err);
        Ok(PgClient {
            insert_order: prep(format!(
                "INSERT INTO {} (id, doc) VALUES ($1, $2)",
                names::ORDERS
            ))
            .await?,
            check_sku: prep(format!(
                "SELECT 1 FROM {} WHERE id = $1 AND (doc->>'qty')::bigint >= $2",
                names::INVENTORY
            ))
            .await?,
            take_sku: prep(format!(
                "UPDATE {} SET doc = jsonb_set(doc, '{{qty}}', to_jsonb((doc->>'qty')::bigint - $2)) WHERE id = $1",
                names::INVENTORY
            ))
            .await?,
            push_order: prep(format!(
                "UPDATE {} SET doc = jsonb_set(doc, '{{orders}}', (doc->'orders') || to_jsonb($2::text)) WHERE id = $1",
                names::CUSTOMERS
            ))
            .await?,
            move_balance: prep(format!(
                "UPDATE {} SET doc = jsonb_set(doc, '{{balance}}', to_jsonb((doc->>'balance')::bigint + $2)) WHERE id = $1",
                names::ACCOUNTS
            ))
            .await?,
            insert_event: prep(format!(
                "INSERT INTO {} (id, doc) VALUES ($1, $2)",
                names::EVENTS
            ))
            .await?,
            point: prep(format!("SELECT doc FROM {it} WHERE id = $1")).await?,
            range: prep(format!(
                "SELECT doc FROM {it} WHERE (doc->>'k')::bigint >= $1 ORDER BY (doc->>'k')::bigint LIMIT {}",
                workload::RANGE_LEN
            ))
            .await?,
            ping: prep("SELECT 1".to_string()).await?,
            bulk_insert: prep(format!(
                "INSERT INTO {} (id, doc) SELECT * FROM unnest($1::text[], $2::jsonb[])",
                names::EVENTS
            ))
            .await?,
            bump: prep(format!(
                "UPDATE {} SET doc = jsonb_set(doc, '{{n}}', to_jsonb((doc->>'n')::bigint + 1)) WHERE id = 'hot'",
                names::COUNTERS
            ))
            .await?,
            client,
            items,
        })
    }

    /// The body of one transaction attempt.
    async fn attempt(&self, choice: &Choice, order_id: &str) -> Result<(), tokio_postgres::Error> {
        match choice {
            Choice::Order { skus, customer } => {
                let cart: Vec<serde_json::Value> = skus
                    .iter()
                    .map(|(sku, qty)| serde_json::json!({ "sku": sku, "qty": qty, "price": 9.99 }))
                    .collect();
                let doc = serde_json::json!({
                    "_id": order_id, "customer": customer, "items": cart,
                    "total": 9.99 * (skus[0].1 + skus[1].1) as f64,
                });
                self.client.execute(&self.insert_order, &[&order_id, &doc]).await?;
                for (sku, qty) in skus {
                    let found = self.client.query_opt(&self.check_sku, &[sku, qty]).await?;
                    if found.is_none() {
                        // Never happens with the seeded stock; treated like a failed order.
                        return Ok(());
                    }
                    self.client.execute(&self.take_sku, &[sku, qty]).await?;
                }
                self.client.execute(&self.push_order, &[customer, &order_id]).await?;
            }
            Choice::Transfer { from, to, amount } => {
                self.client.execute(&self.move_balance, &[from, &(-amount)]).await?;
                self.client.execute(&self.move_balance, &[to, amount]).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs a transaction until it commits; returns its retries.
    async fn transaction(&self, choice: &Choice) -> Result<u32, String> {
        let order_id = bson::oid::ObjectId::new().to_hex();
        let mut retries = 0;
        loop {
            let r = async {
                self.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
                self.attempt(choice, &order_id).await?;
                self.client.batch_execute("COMMIT").await
            }
            .await;
            match r {
                Ok(()) => return Ok(retries),
                Err(e) => {
                    // Leave the failed transaction before retrying or giving up.
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    let conflict = e.code().is_some_and(|c| {
                        *c == SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == SqlState::T_R_DEADLOCK_DETECTED
                    });
                    if !conflict {
                        return Err(sql_err(e));
                    }
                    retries += 1;
                    tokio::time::sleep(crate::runner::backoff(retries)).await;
                }
            }
        }
    }
}

impl AsyncClient for PgClient {
    async fn run(&mut self, choice: &Choice) -> Result<u32, String> {
        match choice {
            Choice::Order { .. } | Choice::Transfer { .. } => self.transaction(choice).await,
            Choice::Insert { id, user } => {
                let id = id.to_hex();
                let doc = serde_json::json!({
                    "_id": id, "user": user, "kind": "click", "payload": workload::EVENT_PAYLOAD,
                });
                self.client.execute(&self.insert_event, &[&id, &doc]).await.map_err(sql_err)?;
                Ok(0)
            }
            Choice::Ping => {
                self.client.query_one(&self.ping, &[]).await.map_err(sql_err)?;
                Ok(0)
            }
            Choice::BulkInsert { first_user } => {
                let (ids, docs): (Vec<String>, Vec<serde_json::Value>) =
                    workload::bulk_events(*first_user)
                        .into_iter()
                        .map(|(id, user)| {
                            let id = id.to_hex();
                            let doc = serde_json::json!({
                                "_id": id, "user": user, "kind": "click",
                                "payload": workload::EVENT_PAYLOAD,
                            });
                            (id, doc)
                        })
                        .unzip();
                self.client.execute(&self.bulk_insert, &[&ids, &docs]).await.map_err(sql_err)?;
                Ok(0)
            }
            Choice::Update { id, by } => {
                // Outside a transaction PostgreSQL waits on the row lock: no conflict to retry.
                self.client.execute(&self.move_balance, &[id, by]).await.map_err(sql_err)?;
                Ok(0)
            }
            Choice::PointRead { id } => {
                let row = self.client.query_opt(&self.point, &[id]).await.map_err(sql_err)?;
                match row {
                    Some(_) => Ok(0),
                    None => Err(format!("item {id} not found")),
                }
            }
            Choice::Range { from } => {
                let rows = self.client.query(&self.range, &[from]).await.map_err(sql_err)?;
                if rows.len() as i64 != workload::RANGE_LEN {
                    return Err(format!(
                        "range from {from} of {} returned {}",
                        self.items,
                        rows.len()
                    ));
                }
                Ok(0)
            }
            Choice::HotCounter => {
                self.client.execute(&self.bump, &[]).await.map_err(sql_err)?;
                Ok(0)
            }
        }
    }
}
