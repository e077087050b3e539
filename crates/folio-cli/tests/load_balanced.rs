//! Scale-out end to end (#17): three `folio serve --storage postgresql://... --loadBalanced`
//! front ends over one throwaway PostgreSQL cluster, behind nginx's TCP (`stream`) proxy on
//! loopback; 8 clients of the Rust driver (`loadBalanced=true`) move money between accounts in
//! transactions while one front end is killed with SIGKILL and restarted, twice.
//!
//! Checked: the total balance is constant; every acknowledged transfer appears exactly once in
//! the transfer log (written in the same transaction as the balances); every account's balance
//! equals its initial balance plus the log's movements (so no transfer was applied twice or
//! half); and transfers keep being acknowledged after the kills.
//!
//! Skipped with a loud message when PostgreSQL or nginx is not installed (`scripts/test`
//! installs both).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::{Client, Collection};

const ACCOUNTS: i64 = 10;
const INITIAL: i64 = 1_000;
const CLIENTS: u64 = 8;
const TRANSFERS_PER_CLIENT: u64 = 40;

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

/// nginx as a TCP load balancer, in the foreground, with its files in a temporary directory.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_nginx(&mut self.child);
    }
}

/// Stops nginx with SIGTERM (fast shutdown): the master then stops its workers, where SIGKILL
/// would leave them running, still holding the listening socket.
fn stop_nginx(child: &mut Child) {
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn find_nginx() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nginx")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

impl Nginx {
    fn start(bin: &PathBuf, listen: u16, backends: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
        let load = if std::path::Path::new(module).is_file() {
            format!("load_module {module};")
        } else {
            String::new()
        };
        let servers: String = backends
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "{load}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             stream {{\n  upstream folio {{\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{listen};\n    \
             proxy_pass folio;\n    proxy_connect_timeout 1s;\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        // Ready when it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return Nginx { child, _dir: dir };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_nginx(&mut child);
        panic!("nginx did not start listening on {listen}");
    }
}

/// What one client saw of one transfer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Acknowledged,
    /// The commit's outcome is unknown to the client (it may or may not have applied).
    Unknown,
}

async fn transfer(
    client: &Client,
    accounts: &Collection<Document>,
    log: &Collection<Document>,
    id: &str,
    from: i64,
    to: i64,
    amount: i64,
) -> Outcome {
    // As `withTransaction`: retry the whole transaction on TransientTransactionError, and the
    // commit on UnknownTransactionCommitResult, for up to a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    'txn: loop {
        assert!(std::time::Instant::now() < deadline, "transfer {id} kept failing");
        let mut session = match client.start_session().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let body = async {
            session.start_transaction().await?;
            accounts
                .update_one(doc! { "_id": from }, doc! { "$inc": { "bal": -amount } })
                .session(&mut session)
                .await?;
            accounts
                .update_one(doc! { "_id": to }, doc! { "$inc": { "bal": amount } })
                .session(&mut session)
                .await?;
            log.insert_one(doc! { "_id": ObjectId::new(), "transfer": id, "from": from, "to": to, "amount": amount })
                .session(&mut session)
                .await?;
            Ok::<(), mongodb::error::Error>(())
        };
        if let Err(e) = body.await {
            let _ = session.abort_transaction().await;
            if e.contains_label(TRANSIENT_TRANSACTION_ERROR) || is_network(&e) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue 'txn;
            }
            panic!("transfer {id}: {e}");
        }
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Outcome::Acknowledged,
                Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    if std::time::Instant::now() >= deadline {
                        return Outcome::Unknown;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => continue 'txn,
                Err(e) => panic!("commit of transfer {id}: {e}"),
            }
        }
    }
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
    let Some(nginx_bin) = find_nginx() else {
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
    let _nginx = Nginx::start(&nginx_bin, lb_port, &ports);

    let uri = format!(
        "mongodb://127.0.0.1:{lb_port}/?loadBalanced=true&serverSelectionTimeoutMS=10000&maxPoolSize=4"
    );
    let setup = Client::with_uri_str(&uri).await.expect("client");
    let accounts = setup.database("bank").collection::<Document>("accounts");
    let docs: Vec<Document> = (0..ACCOUNTS).map(|i| doc! { "_id": i, "bal": INITIAL }).collect();
    accounts.insert_many(docs).await.expect("accounts");
    // The collection of the log exists before the transactions write to it.
    setup.database("bank").create_collection("log").await.expect("log");

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
                let outcome = transfer(&client, &accounts, &log, &id, from, to, amount).await;
                if outcome == Outcome::Acknowledged {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                seen.push((id, outcome));
            }
            seen
        }));
    }

    // Kill front end 1 twice at moments that depend on progress, restarting it each time.
    let mut front_ends = front_ends;
    let mut kills = 0;
    let mut at_last_kill = 0;
    for threshold in [30u64, 120] {
        while acknowledged.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
}
