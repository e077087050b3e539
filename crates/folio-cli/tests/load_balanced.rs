//! Scale-out end to end (#17): three `folio serve --storage postgresql://... --loadBalanced`
//! front ends over one throwaway PostgreSQL cluster, behind nginx's TCP (`stream`) proxy on
//! loopback; 8 clients of the Rust driver (`loadBalanced=true`) move money between accounts in
//! transactions, through the driver's `withTransaction` (`and_run`), while one front end is
//! killed with SIGKILL at random moments and restarted, twice.
//!
//! Checked: the total balance is constant; every acknowledged transfer appears exactly once in
//! the transfer log (written in the same transaction as the balances); every account's balance
//! equals its initial balance plus the log's movements (so no transfer was applied twice or
//! half); and transfers keep being acknowledged after the kills. Meanwhile three more clients run
//! a list-append check through the same balancer: transactions that read a list and append a
//! unique item to it; every acknowledged append must be in its list exactly once, and what it
//! read followed by its item must be a prefix of the final list (no lost update, no anomaly).
//!
//! Skipped with a loud message when PostgreSQL or nginx is not installed (`scripts/test`
//! installs both).

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT;
use mongodb::{Client, ClientSession, Collection};

const ACCOUNTS: i64 = 10;
const INITIAL: i64 = 1_000;
const CLIENTS: u64 = 8;
const TRANSFERS_PER_CLIENT: u64 = 40;
/// The list-append check: clients appending to lists, appends each, lists.
const APPENDERS: u64 = 3;
const APPENDS_PER_CLIENT: u64 = 25;
const LISTS: i64 = 3;

/// One `folio serve` front end on a fixed port (so that nginx finds it again after a restart).
struct FrontEnd {
    port: u16,
    url: String,
    child: Option<Child>,
}

impl FrontEnd {
    fn start(port: u16, url: &str) -> FrontEnd {
        let mut fe = FrontEnd { port, url: url.to_string(), child: None };
        fe.restart();
        fe
    }

    fn restart(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(["serve", "--loadBalanced", "--port", &self.port.to_string()])
            .args(["--storage", &self.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn folio");
        assert_eq!(common::wait_ready(&mut child), self.port);
        self.child = Some(child);
    }

    /// SIGKILL: nothing of the shutdown path runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
    }
}

impl Drop for FrontEnd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What one client saw of one transfer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Acknowledged,
    /// The commit's outcome is unknown to the client (it may or may not have applied).
    Unknown,
}

/// One attempt of a transaction's body, over the session it runs in.
type Body<'s, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = mongodb::error::Result<T>> + Send + 's>>;

/// Runs `body` in a transaction through the driver's `withTransaction` (`and_run`: the whole
/// transaction again on TransientTransactionError, the commit alone again on
/// UnknownTransactionCommitResult, for up to 120 s). Returns how the commit ended and what the
/// body of the committed attempt returned (the default when the outcome is unknown).
async fn with_transaction<T: Default>(
    client: &Client,
    id: &str,
    mut body: impl for<'s> FnMut(&'s mut ClientSession) -> Body<'s, T>,
) -> (Outcome, T) {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        assert!(std::time::Instant::now() < deadline, "transaction {id} kept failing");
        // Starting a session needs no server; a failure here is before any transaction.
        let Ok(mut session) = client.start_session().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match session.start_transaction().and_run((), |s, _| body(s)).await {
            Ok(value) => return (Outcome::Acknowledged, value),
            // Out of time while the commit's outcome was unknown: it may have applied.
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    || matches!(*e.kind, mongodb::error::ErrorKind::Transaction { .. }) =>
            {
                return (Outcome::Unknown, T::default());
            }
            // A network error outside the transaction's statements (starting it): nothing ran.
            Err(e) if is_network(&e) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("transaction {id}: {e}"),
        }
    }
}

/// Moves `amount` from account `from` to `to` and logs it, in one transaction.
async fn transfer(
    client: &Client,
    accounts: &Collection<Document>,
    log: &Collection<Document>,
    id: &str,
    movement: (i64, i64, i64),
) -> Outcome {
    with_transaction(client, id, |s| {
        transfer_attempt(s, accounts.clone(), log.clone(), id, movement)
    })
    .await
    .0
}

/// One attempt of a transfer in `session`'s transaction.
fn transfer_attempt<'s>(
    session: &'s mut ClientSession,
    accounts: Collection<Document>,
    log: Collection<Document>,
    id: &str,
    (from, to, amount): (i64, i64, i64),
) -> Body<'s, ()> {
    let id = id.to_string();
    Box::pin(async move {
        accounts
            .update_one(doc! { "_id": from }, doc! { "$inc": { "bal": -amount } })
            .session(&mut *session)
            .await?;
        accounts
            .update_one(doc! { "_id": to }, doc! { "$inc": { "bal": amount } })
            .session(&mut *session)
            .await?;
        let entry = doc! {
            "_id": ObjectId::new(), "transfer": id, "from": from, "to": to, "amount": amount,
        };
        log.insert_one(entry).session(&mut *session).await?;
        Ok(())
    })
}

/// Reads list `list` and appends `item` to it, in one transaction; returns what it read.
async fn append(
    client: &Client,
    lists: &Collection<Document>,
    list: i64,
    item: &str,
) -> (Outcome, Vec<String>) {
    with_transaction(client, item, |s| append_attempt(s, lists.clone(), list, item)).await
}

/// One attempt of an append in `session`'s transaction.
fn append_attempt<'s>(
    session: &'s mut ClientSession,
    lists: Collection<Document>,
    list: i64,
    item: &str,
) -> Body<'s, Vec<String>> {
    let item = item.to_string();
    Box::pin(async move {
        let read = lists.find_one(doc! { "_id": list }).session(&mut *session).await?;
        let items = read
            .and_then(|d| d.get_array("items").ok().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| b.as_str().map(String::from))
            .collect::<Vec<_>>();
        lists
            .update_one(doc! { "_id": list }, doc! { "$push": { "items": item } })
            .session(&mut *session)
            .await?;
        Ok(items)
    })
}

/// A failure of the connection (the front end was killed under it) rather than of the command.
fn is_network(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        *e.kind,
        ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_through_nginx_survive_a_front_end_killed_mid_run() {
    let Some(cluster) = folio_pg::testing::cluster_or_skip("load_balanced transfers") else {
        return;
    };
    let Some(nginx_bin) = folio_pg::testing::find_nginx() else {
        eprintln!(
            "\n*** SKIPPED load_balanced transfers: nginx is not installed; \
             `apt-get install -y nginx libnginx-mod-stream` ***\n"
        );
        return;
    };
    let url = cluster.url();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let front_ends: Vec<FrontEnd> = ports.iter().map(|p| FrontEnd::start(*p, &url)).collect();
    let lb_port = common::free_port();
    let _nginx = folio_pg::testing::Nginx::start(&nginx_bin, lb_port, &ports).expect("nginx");

    let uri = format!(
        "mongodb://127.0.0.1:{lb_port}/?loadBalanced=true&serverSelectionTimeoutMS=10000&maxPoolSize=4"
    );
    let setup = Client::with_uri_str(&uri).await.expect("client");
    let accounts = setup.database("bank").collection::<Document>("accounts");
    let docs: Vec<Document> = (0..ACCOUNTS).map(|i| doc! { "_id": i, "bal": INITIAL }).collect();
    accounts.insert_many(docs).await.expect("accounts");
    // The collection of the log exists before the transactions write to it.
    setup.database("bank").create_collection("log").await.expect("log");
    let lists: Vec<Document> = (0..LISTS).map(|i| doc! { "_id": i, "items": [] }).collect();
    setup.database("bank").collection("lists").insert_many(lists).await.expect("lists");

    // Beside the transfers, clients append to lists in transactions that read the list first
    // (the list-append check): each append reads the list, then pushes one unique item.
    let mut appenders = Vec::new();
    for c in 0..APPENDERS {
        let uri = uri.clone();
        appenders.push(tokio::spawn(async move {
            let client = Client::with_uri_str(&uri).await.expect("client");
            let lists = client.database("bank").collection::<Document>("lists");
            let mut seen = Vec::new();
            for n in 0..APPENDS_PER_CLIENT {
                let list = ((c + n) % LISTS as u64) as i64;
                let item = format!("a{c}-{n}");
                let (outcome, read) = append(&client, &lists, list, &item).await;
                seen.push((list, item, read, outcome));
            }
            seen
        }));
    }

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let uri = uri.clone();
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::with_uri_str(&uri).await.expect("client");
            let db = client.database("bank");
            let (accounts, log) = (db.collection("accounts"), db.collection("log"));
            let mut seen = Vec::new();
            let mut x = c * 7919 + 13;
            for n in 0..TRANSFERS_PER_CLIENT {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let from = ((x >> 33) % ACCOUNTS as u64) as i64;
                let to = (from + 1 + ((x >> 40) % (ACCOUNTS as u64 - 1)) as i64) % ACCOUNTS;
                let amount = ((x >> 50) % 10 + 1) as i64;
                let id = format!("c{c}-{n}");
                let outcome = transfer(&client, &accounts, &log, &id, (from, to, amount)).await;
                if outcome == Outcome::Acknowledged {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                seen.push((id, outcome));
            }
            seen
        }));
    }

    // Kill front end 1 twice at random moments (after a random number of acknowledged
    // transfers, then a random pause), restarting it each time. The seed is printed so that a
    // failing run can be replayed with FOLIO_KILL_SEED.
    let seed =
        std::env::var("FOLIO_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill moments from FOLIO_KILL_SEED={seed}");
    let mut x = seed | 1;
    let mut random = |below: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % below
    };
    let moments = [(10 + random(50), random(40)), (100 + random(80), random(40))];
    let mut front_ends = front_ends;
    let mut kills = 0;
    let mut at_last_kill = 0;
    for (threshold, pause_ms) in moments {
        while acknowledged.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        front_ends[1].kill9();
        kills += 1;
        at_last_kill = acknowledged.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        front_ends[1].restart();
    }

    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    for t in tasks {
        for (id, outcome) in t.await.expect("client task") {
            outcomes.insert(id, outcome);
        }
    }
    let mut appends = Vec::new();
    for t in appenders {
        appends.extend(t.await.expect("append task"));
    }
    let total_acked = acknowledged.load(Ordering::Relaxed);
    assert_eq!(kills, 2);
    assert!(total_acked > at_last_kill, "transfers went on after the last kill");

    // Verify through a fresh client (any front end).
    let check = Client::with_uri_str(&uri).await.expect("client");
    let db = check.database("bank");
    let mut balances = HashMap::new();
    let mut cursor = db.collection::<Document>("accounts").find(doc! {}).await.expect("find");
    while cursor.advance().await.expect("advance") {
        let d = cursor.deserialize_current().expect("doc");
        balances.insert(
            d.get_i64("_id").unwrap_or_else(|_| i64::from(d.get_i32("_id").unwrap())),
            d.get_i64("bal").unwrap(),
        );
    }
    let total: i64 = balances.values().sum();
    assert_eq!(total, ACCOUNTS * INITIAL, "the total balance is constant");

    let mut applied: HashMap<String, u32> = HashMap::new();
    let mut expected: HashMap<i64, i64> = (0..ACCOUNTS).map(|i| (i, INITIAL)).collect();
    let mut cursor = db.collection::<Document>("log").find(doc! {}).await.expect("find log");
    while cursor.advance().await.expect("advance") {
        let d = cursor.deserialize_current().expect("doc");
        let id = d.get_str("transfer").unwrap().to_string();
        let num = |k: &str| match d.get(k) {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            other => panic!("{k}: {other:?}"),
        };
        *expected.get_mut(&num("from")).unwrap() -= num("amount");
        *expected.get_mut(&num("to")).unwrap() += num("amount");
        *applied.entry(id).or_default() += 1;
    }
    assert_eq!(balances, expected, "balances are the initial ones plus the logged transfers");
    let mut unknown = 0;
    for (id, outcome) in &outcomes {
        let times = applied.get(id).copied().unwrap_or(0);
        match outcome {
            Outcome::Acknowledged => {
                assert_eq!(times, 1, "acknowledged transfer {id} applied {times} times")
            }
            Outcome::Unknown => {
                unknown += 1;
                assert!(times <= 1, "transfer {id} applied {times} times");
            }
        }
    }
    assert!(applied.values().all(|&n| n == 1), "no transfer applied twice");
    eprintln!(
        "{} transfers acknowledged, {unknown} with unknown outcome, {} log entries, 2 SIGKILLs",
        total_acked,
        applied.len()
    );
    assert_eq!(total_acked + unknown, CLIENTS * TRANSFERS_PER_CLIENT);

    // The list-append check: every acknowledged append is in its list exactly once, none twice;
    // and what each acknowledged append read, followed by its own item, is a prefix of the final
    // list (the transaction saw a state of the list that really existed, and no append committed
    // between its read and its write: no lost update, no read of an uncommitted or later state).
    let mut finals: HashMap<i64, Vec<String>> = HashMap::new();
    let mut cursor = db.collection::<Document>("lists").find(doc! {}).await.expect("find lists");
    while cursor.advance().await.expect("advance") {
        let d = cursor.deserialize_current().expect("doc");
        let items = d.get_array("items").expect("items");
        finals.insert(
            d.get_i64("_id").unwrap_or_else(|_| i64::from(d.get_i32("_id").unwrap())),
            items.iter().map(|b| b.as_str().expect("a string item").to_string()).collect(),
        );
    }
    let mut acked_appends = 0;
    for (list, item, read, outcome) in &appends {
        let fin = &finals[list];
        let times = fin.iter().filter(|x| *x == item).count();
        match outcome {
            Outcome::Acknowledged => {
                acked_appends += 1;
                assert_eq!(times, 1, "acknowledged append {item} is in list {list} {times} times");
                let mut expected = read.clone();
                expected.push(item.clone());
                assert!(
                    fin.starts_with(&expected),
                    "append {item} read {read:?}, not a prefix of list {list}: {fin:?}"
                );
            }
            Outcome::Unknown => assert!(times <= 1, "append {item} applied {times} times"),
        }
    }
    for (list, fin) in &finals {
        let mut unique = fin.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), fin.len(), "list {list} holds an item twice: {fin:?}");
        assert!(
            fin.iter().all(|x| appends.iter().any(|(l, i, _, _)| l == list && i == x)),
            "list {list} holds an item nobody appended to it: {fin:?}"
        );
    }
    eprintln!("{acked_appends} appends acknowledged of {}", appends.len());
    assert!(acked_appends > 0);
}
