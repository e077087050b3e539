//! The slow-operation log line. In its own test binary because it installs a global tracing
//! subscriber to capture the output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bson::doc;
use folio::MemoryEngine;
use folio::{Mvcc, MvccOptions};
use folio::{Service, ServiceOptions};
use folio_server::{Server, ServerConfig};
use folio_wire::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

async fn command(stream: &mut TcpStream, id: i32, body: bson::Document) -> bson::Document {
    let bytes = folio_wire::encode(&Message::msg(id, 0, 0, body)).expect("encode");
    stream.write_all(&bytes).await.expect("write");
    let mut buf = Vec::new();
    loop {
        if let Some((reply, _)) = folio_wire::decode(&buf).expect("valid reply") {
            let folio_wire::Op::Msg(m) = reply.op else { panic!("expected OP_MSG") };
            return m.body;
        }
        let mut chunk = [0_u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_commands_are_logged_with_name_namespace_and_duration() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let options = ServiceOptions { test_commands: true, ..ServiceOptions::default() };
    let service = Arc::new(Service::new(store, options).expect("service"));
    let config = ServerConfig { port: 0, ..ServerConfig::default() };
    let server = Server::bind(service, config).await.expect("bind");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let mut s = TcpStream::connect(addr).await.expect("connect");
    let fast = command(&mut s, 1, doc! { "find": "fastcoll", "filter": {}, "$db": "shop" }).await;
    assert_eq!(fast.get_f64("ok").ok(), Some(1.0), "{fast}");
    let configure = doc! {
        "configureFailPoint": "failCommand",
        "mode": { "times": 1 },
        "data": { "failCommands": ["find"], "blockConnection": true, "blockTimeMS": 250 },
        "$db": "admin",
    };
    let r = command(&mut s, 2, configure).await;
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let slow = command(&mut s, 3, doc! { "find": "slowcoll", "filter": {}, "$db": "shop" }).await;
    assert_eq!(slow.get_f64("ok").ok(), Some(1.0), "{slow}");

    // A slow insert of many documents: its command is logged cut to 10 KiB, with the cut named.
    let configure = doc! {
        "configureFailPoint": "failCommand",
        "mode": { "times": 1 },
        "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": 250 },
        "$db": "admin",
    };
    let r = command(&mut s, 4, configure).await;
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let docs: Vec<bson::Document> =
        (0..500).map(|i| doc! { "_id": i, "pad": "x".repeat(100) }).collect();
    let insert = doc! { "insert": "bigcoll", "documents": docs, "$db": "shop" };
    let r = command(&mut s, 5, insert).await;
    assert_eq!(r.get_i32("n").ok(), Some(500), "{r}");

    let _ = stop.send(());
    task.await.expect("join").expect("run");

    let log = captured.text();
    // Only the blocked find is certainly slow (the others could be too on a loaded machine).
    let line = log
        .lines()
        .find(|l| l.contains("Slow query") && l.contains("slowcoll"))
        .unwrap_or_else(|| panic!("no slow-operation line for the blocked find:\n{log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("log_id=51803"), "{line}");
    // The attributes are MongoDB's, as one JSON object.
    let attr = line.split("attr=").nth(1).expect("attr field");
    let attr: serde_json::Value = serde_json::from_str(attr.trim()).expect("attr is JSON");
    assert_eq!(attr["ns"], "shop.slowcoll", "{line}");
    assert_eq!(attr["command"]["find"], "slowcoll", "{line}");
    assert_eq!(attr["type"], "command", "{line}");
    let ms = attr["durationMillis"].as_i64().expect("durationMillis");
    assert!(ms >= 250, "{line}");

    let line = log
        .lines()
        .find(|l| l.contains("Slow query") && l.contains("bigcoll"))
        .unwrap_or_else(|| panic!("no slow-operation line for the blocked insert:\n{log}"));
    let attr = line.split("attr=").nth(1).expect("attr field");
    let attr: serde_json::Value = serde_json::from_str(attr.trim()).expect("attr is JSON");
    assert_eq!(attr["command"]["insert"], "bigcoll", "{line}");
    let kept = attr["command"]["documents"].as_array().expect("documents kept in part").len();
    assert!(kept > 0 && kept < 500, "{kept} documents kept: {line}");
    let cut = &attr["truncated"]["command"]["documents"][kept.to_string()];
    assert_eq!(cut["type"], "object", "{line}");
    assert!(attr["size"]["command"].as_i64().expect("full size") > 50_000, "{line}");
    assert!(line.len() < 16 * 1024, "the line stays near the limit: {} bytes", line.len());
    assert_eq!(attr["ninserted"], 500, "{line}");
}
