//! The server spoken to with raw wire-protocol bytes: handshakes over every opcode and
//! compressor, `moreToCome`, malformed and oversized messages, connection limits and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Document, doc};
use folio::MemoryEngine;
use folio::{Mvcc, MvccOptions, Ts, Txn, TxnId, TxnStore};
use folio::{Service, ServiceOptions};
use folio_server::{Server, ServerConfig};
use folio_wire::{Compressor, Message, Op, OpQuery, msg_flags, op_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A store that only tells time; the handshake never begins a transaction.
struct ClockStore;

impl TxnStore for ClockStore {
    fn begin(&self) -> folio::Result<Box<dyn Txn>> {
        Err(folio::err!(InternalError, "no transactions in this test"))
    }
    fn begin_read_only_at(&self, _: Ts) -> folio::Result<Box<dyn Txn>> {
        Err(folio::err!(InternalError, "no transactions in this test"))
    }
    fn last_committed(&self) -> Ts {
        Ts::new(1_700_000_000, 1)
    }
    fn wait_for(&self, _: TxnId, _: Option<Instant>) -> bool {
        true
    }
    fn flush(&self) -> folio::Result<()> {
        Ok(())
    }
}

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(max_conns: u32) -> TestServer {
        TestServer::start_with(Arc::new(ClockStore), max_conns).await
    }

    /// A server over a real in-memory store.
    async fn start_mvcc() -> TestServer {
        let store =
            Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
        TestServer::start_with(store, 100).await
    }

    async fn start_with(store: Arc<dyn TxnStore>, max_conns: u32) -> TestServer {
        let config = ServerConfig { max_conns, ..ServerConfig::default() };
        TestServer::start_config(store, config).await
    }

    /// A server with the given settings, listening on a free port of 127.0.0.1.
    async fn start_config(store: Arc<dyn TxnStore>, config: ServerConfig) -> TestServer {
        let options = ServiceOptions { test_commands: true, ..ServiceOptions::default() };
        let service = Service::new(store, options).expect("service");
        let config = ServerConfig { bind_ips: vec!["127.0.0.1".into()], port: 0, ..config };
        let server = Server::bind(Arc::new(service), config).await.expect("bind");
        let addr = server.local_addrs()[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer { addr, stop: Some(stop), task }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(20), self.task).await;
        result.expect("shutdown in time").expect("join").expect("run");
    }
}

async fn send(stream: &mut TcpStream, msg: &Message) {
    let bytes = folio_wire::encode(msg).expect("encode");
    stream.write_all(&bytes).await.expect("write");
}

/// Reads frames as they arrive, keeping the bytes of later frames for the next call (exhaust
/// replies may come in one read).
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame; `None` when the server closed the connection.
    async fn read(&mut self, stream: &mut TcpStream) -> Option<Message> {
        loop {
            if let Some((msg, used)) = folio_wire::decode(&self.buf).expect("a valid frame") {
                self.buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0_u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk));
            match read.await.expect("a frame in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame, which must come.
    async fn next(&mut self, stream: &mut TcpStream) -> Message {
        self.read(stream).await.expect("the server closed the connection")
    }
}

/// Reads the one reply to a request; `None` when the server closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<Message> {
    let mut frames = Frames::default();
    let msg = frames.read(stream).await;
    assert!(frames.buf.is_empty(), "one reply per request");
    msg
}

fn body_of(msg: &Message) -> &Document {
    match &msg.op {
        Op::Msg(m) => &m.body,
        Op::Reply(r) => &r.documents[0],
        Op::Query(_) => panic!("server sent OP_QUERY"),
    }
}

fn hello(extra: Document) -> Document {
    let mut d = doc! { "hello": 1, "$db": "admin" };
    d.extend(extra);
    d
}

async fn assert_alive(stream: &mut TcpStream) {
    send(stream, &Message::msg(999, 0, 0, doc! { "ping": 1, "$db": "admin" })).await;
    let reply = read_frame(stream).await.expect("connection still open");
    assert_eq!(reply.response_to, 999);
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0), "{}", body_of(&reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_op_query_is_master_gets_op_reply() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    let query = Message {
        request_id: 17,
        response_to: 0,
        compressor: None,
        op: Op::Query(OpQuery {
            flags: 0,
            full_collection_name: "admin.$cmd".into(),
            number_to_skip: 0,
            number_to_return: -1,
            query: doc! { "isMaster": 1, "helloOk": true, "client": { "application": { "name": "t" } } },
            return_fields_selector: None,
        }),
    };
    send(&mut s, &query).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(reply.response_to, 17);
    let Op::Reply(r) = &reply.op else { panic!("expected OP_REPLY, got {reply:?}") };
    assert_eq!(r.documents.len(), 1);
    let body = &r.documents[0];
    assert_eq!(body.get_bool("ismaster").ok(), Some(true));
    assert_eq!(body.get_bool("helloOk").ok(), Some(true));
    assert_eq!(body.get_i32("maxWireVersion").ok(), Some(25));
    assert_eq!(body.get_str("setName").ok(), Some("rs0"));

    // Other commands are refused over OP_QUERY, and the connection goes on.
    let mut find = query.clone();
    if let Op::Query(q) = &mut find.op {
        q.query = doc! { "find": "c" };
        q.full_collection_name = "test.$cmd".into();
    }
    send(&mut s, &find).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(body_of(&reply).get_i32("code").ok(), Some(352));
    assert_alive(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_msg_hello_with_and_without_checksum() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    for (id, flags) in [(1, 0), (2, msg_flags::CHECKSUM_PRESENT)] {
        send(&mut s, &Message::msg(id, 0, flags, hello(doc! {}))).await;
        let reply = read_frame(&mut s).await.expect("reply");
        assert_eq!(reply.response_to, id);
        let Op::Msg(m) = &reply.op else { panic!("expected OP_MSG") };
        // The reply carries a checksum exactly when the request did (decode verified it).
        assert_eq!(m.checksum_present(), flags != 0);
        assert_eq!(m.body.get_bool("isWritablePrimary").ok(), Some(true));
        assert_eq!(m.body.get_f64("ok").ok(), Some(1.0));
        assert!(m.body.contains_key("$clusterTime"));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_get_compressed_replies() {
    let server = TestServer::start(100).await;
    for c in [Compressor::Snappy, Compressor::Zlib, Compressor::Zstd] {
        let mut s = server.connect().await;
        send(&mut s, &Message::msg(1, 0, 0, hello(doc! { "compression": [c.name()] }))).await;
        let reply = read_frame(&mut s).await.expect("reply");
        assert_eq!(reply.compressor, None, "an uncompressed request gets an uncompressed reply");
        assert_eq!(
            body_of(&reply).get_array("compression").expect("compression"),
            &vec![c.name().into()] as &Vec<bson::Bson>
        );

        let mut ping = Message::msg(2, 0, 0, doc! { "ping": 1, "$db": "admin" });
        ping.compressor = Some(c);
        send(&mut s, &ping).await;
        let reply = read_frame(&mut s).await.expect("reply");
        assert_eq!(reply.compressor, Some(c));
        assert_eq!(reply.response_to, 2);
        assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0));

        let mut hello_c = Message::msg(3, 0, msg_flags::CHECKSUM_PRESENT, hello(doc! {}));
        hello_c.compressor = Some(c);
        send(&mut s, &hello_c).await;
        let reply = read_frame(&mut s).await.expect("reply");
        assert_eq!(reply.compressor, Some(c));
        assert_eq!(body_of(&reply).get_bool("isWritablePrimary").ok(), Some(true));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_to_come_gets_no_reply() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    send(&mut s, &Message::msg(1, 0, msg_flags::MORE_TO_COME, doc! { "ping": 1, "$db": "admin" }))
        .await;
    send(&mut s, &Message::msg(2, 0, msg_flags::MORE_TO_COME, doc! { "nope": 1, "$db": "admin" }))
        .await;
    send(&mut s, &Message::msg(3, 0, 0, doc! { "ping": 1, "$db": "admin" })).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(
        reply.response_to, 3,
        "the first reply answers the first request without moreToCome"
    );
    server.shutdown().await;
}

/// An OP_MSG frame whose body bytes are given raw.
fn raw_msg(request_id: i32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((16 + 5 + body.len()) as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0_i32.to_le_bytes());
    out.extend_from_slice(&op_code::MSG.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bson_gets_an_error_and_the_connection_lives() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    // A document whose int32 element runs past its end.
    let bad = [13, 0, 0, 0, 0x10, b'p', b'i', b'n', b'g', 0, 1, 0, 0];
    s.write_all(&raw_msg(5, 0, &bad)).await.expect("write");
    let reply = read_frame(&mut s).await.expect("error reply");
    assert_eq!(reply.response_to, 5);
    let body = body_of(&reply);
    assert_eq!(body.get_f64("ok").ok(), Some(0.0));
    assert_eq!(body.get_i32("code").ok(), Some(22));
    assert_eq!(body.get_str("codeName").ok(), Some("InvalidBSON"));
    assert_alive(&mut s).await;

    // With moreToCome, the malformed message is dropped silently.
    s.write_all(&raw_msg(6, msg_flags::MORE_TO_COME, &bad)).await.expect("write");
    assert_alive(&mut s).await;

    // Compressed data that does not decompress: ProtocolError, answered compressed.
    let garbage = b"not zlib at all";
    let mut frame = ((16 + 9 + garbage.len()) as i32).to_le_bytes().to_vec();
    frame.extend_from_slice(&8_i32.to_le_bytes());
    frame.extend_from_slice(&0_i32.to_le_bytes());
    frame.extend_from_slice(&op_code::COMPRESSED.to_le_bytes());
    frame.extend_from_slice(&op_code::MSG.to_le_bytes());
    frame.extend_from_slice(&64_i32.to_le_bytes());
    frame.push(Compressor::Zlib.id());
    frame.extend_from_slice(garbage);
    s.write_all(&frame).await.expect("write");
    let reply = read_frame(&mut s).await.expect("error reply");
    assert_eq!(reply.response_to, 8);
    assert_eq!(reply.compressor, Some(Compressor::Zlib));
    assert_eq!(body_of(&reply).get_i32("code").ok(), Some(17));
    assert_eq!(body_of(&reply).get_str("codeName").ok(), Some("ProtocolError"));
    assert_alive(&mut s).await;

    // A document sequence that repeats a body field.
    let mut dup = Message::msg(7, 0, 0, doc! { "ping": 1, "x": 1, "$db": "admin" });
    if let Op::Msg(m) = &mut dup.op {
        m.sequences.push(folio_wire::DocumentSequence {
            identifier: "x".into(),
            documents: vec![folio_wire::SequenceDocument::from_document(&doc! {}).unwrap()],
        });
    }
    send(&mut s, &dup).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(body_of(&reply).get_i32("code").ok(), Some(40433));
    assert_alive(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_closes_the_connection() {
    let server = TestServer::start(100).await;

    let mut s = server.connect().await;
    let mut oversized = 48_000_001_i32.to_le_bytes().to_vec();
    oversized.extend_from_slice(&[0; 12]);
    s.write_all(&oversized).await.expect("write");
    assert!(read_frame(&mut s).await.is_none(), "oversized message must close the connection");

    let mut s = server.connect().await;
    let mut bytes =
        folio_wire::encode(&Message::msg(1, 0, msg_flags::CHECKSUM_PRESENT, hello(doc! {})))
            .expect("encode");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    s.write_all(&bytes).await.expect("write");
    assert!(read_frame(&mut s).await.is_none(), "bad checksum must close the connection");

    let mut s = server.connect().await;
    let mut unknown = 16_i32.to_le_bytes().to_vec();
    unknown.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    unknown.extend_from_slice(&2005_i32.to_le_bytes());
    s.write_all(&unknown).await.expect("write");
    assert!(read_frame(&mut s).await.is_none(), "unknown opcode must close the connection");

    // The server itself is unaffected.
    let mut s = server.connect().await;
    assert_alive(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_across_writes_and_pipelined() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    let mut bytes = folio_wire::encode(&Message::msg(1, 0, 0, hello(doc! {}))).expect("encode");
    bytes.extend(
        folio_wire::encode(&Message::msg(2, 0, 0, doc! { "ping": 1, "$db": "admin" }))
            .expect("encode"),
    );
    for chunk in bytes.chunks(7) {
        s.write_all(chunk).await.expect("write");
        s.flush().await.expect("flush");
    }
    // Both replies may arrive in one read: decode them from one buffer.
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        match folio_wire::decode(&buf).expect("valid reply") {
            Some((msg, used)) => {
                buf.drain(..used);
                ids.push(msg.response_to);
            }
            None => {
                let mut chunk = [0_u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk));
                let n = read.await.expect("reply in time").expect("read");
                assert!(n > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    assert_eq!(ids, vec![1, 2]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_conns_refuses_extra_connections() {
    let server = TestServer::start(1).await;
    let mut first = server.connect().await;
    assert_alive(&mut first).await;
    let mut second = server.connect().await;
    let _ = second
        .write_all(&folio_wire::encode(&Message::msg(1, 0, 0, hello(doc! {}))).expect("encode"))
        .await;
    assert!(read_frame(&mut second).await.is_none(), "over the limit the connection is closed");
    drop(first);
    // Once the first is gone, a new connection is accepted again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = server.connect().await;
        send(&mut again, &Message::msg(1, 0, 0, hello(doc! {}))).await;
        if read_frame(&mut again).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "slot was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let server = TestServer::start(100).await;
    let addr = server.addr;
    let mut idle = server.connect().await;
    assert_alive(&mut idle).await;
    server.shutdown().await;
    assert!(read_frame(&mut idle).await.is_none(), "idle connection closed at shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_sequences_are_merged_into_the_command() {
    let server = TestServer::start_mvcc().await;
    let mut s = server.connect().await;
    let mut insert = Message::msg(1, 0, 0, doc! { "insert": "things", "$db": "wiretest" });
    if let Op::Msg(m) = &mut insert.op {
        m.sequences.push(folio_wire::DocumentSequence {
            identifier: "documents".into(),
            documents: [doc! { "_id": 1, "a": "x" }, doc! { "_id": 2, "a": "y" }]
                .iter()
                .map(|d| folio_wire::SequenceDocument::from_document(d).unwrap())
                .collect(),
        });
    }
    send(&mut s, &insert).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0), "{}", body_of(&reply));
    assert_eq!(body_of(&reply).get_i32("n").ok(), Some(2), "{}", body_of(&reply));

    // A w:0 style insert (moreToCome) is applied without a reply.
    let mut quiet =
        Message::msg(2, 0, msg_flags::MORE_TO_COME, doc! { "insert": "things", "$db": "wiretest" });
    if let Op::Msg(m) = &mut quiet.op {
        m.sequences.push(folio_wire::DocumentSequence {
            identifier: "documents".into(),
            documents: vec![
                folio_wire::SequenceDocument::from_document(&doc! { "_id": 3 }).unwrap(),
            ],
        });
    }
    send(&mut s, &quiet).await;

    send(
        &mut s,
        &Message::msg(3, 0, 0, doc! { "find": "things", "filter": {}, "$db": "wiretest" }),
    )
    .await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(reply.response_to, 3);
    let batch = body_of(&reply)
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .expect("firstBatch")
        .clone();
    assert_eq!(batch.len(), 3, "{batch:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_command_finish() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    let configure = doc! {
        "configureFailPoint": "failCommand",
        "mode": "alwaysOn",
        "data": { "failCommands": ["ping"], "blockConnection": true, "blockTimeMS": 1500 },
        "$db": "admin",
    };
    send(&mut s, &Message::msg(1, 0, 0, configure)).await;
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0), "{}", body_of(&reply));

    send(&mut s, &Message::msg(2, 0, 0, doc! { "ping": 1, "$db": "admin" })).await;
    // Let the ping reach the blocking pool (generously, for loaded machines), then shut down
    // while it is blocked.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    let reply = read_frame(&mut s).await.expect("the in-flight command still gets its reply");
    assert_eq!(reply.response_to, 2);
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0));
    assert!(read_frame(&mut s).await.is_none(), "then the connection closes");
    shutdown.await.expect("shutdown");
    assert!(started.elapsed() >= Duration::from_millis(500), "shutdown waited for the command");
}

/// A raw BSON document of int32 fields, in order, duplicates allowed (`doc!` cannot build one).
fn raw_int_doc(fields: &[(&str, i32)]) -> Vec<u8> {
    let mut elems = Vec::new();
    for (k, v) in fields {
        elems.push(0x10);
        elems.extend_from_slice(k.as_bytes());
        elems.push(0);
        elems.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = ((elems.len() + 5) as i32).to_le_bytes().to_vec();
    out.extend_from_slice(&elems);
    out.push(0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_db_or_with_repeated_fields_are_refused() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;

    send(&mut s, &Message::msg(3, 0, 0, doc! { "ping": 1 })).await;
    let reply = read_frame(&mut s).await.expect("reply");
    let body = body_of(&reply);
    assert_eq!(body.get_i32("code").ok(), Some(40571), "{body}");
    assert_eq!(body.get_str("codeName").ok(), Some("Location40571"));
    assert_eq!(body.get_str("errmsg").ok(), Some("OP_MSG requests require a $db argument"));
    assert_alive(&mut s).await;

    // Two `$db` fields: a map would keep one silently, MongoDB refuses the command.
    let mut body = raw_int_doc(&[("ping", 1)]);
    let db = doc! { "$db": "admin" }.to_vec().expect("bson");
    // Splice `$db: "admin"` in twice before the terminating NUL.
    let db_elem = &db[4..db.len() - 1];
    body.pop();
    body.extend_from_slice(db_elem);
    body.extend_from_slice(db_elem);
    body.push(0);
    let len = body.len() as i32;
    body[..4].copy_from_slice(&len.to_le_bytes());
    s.write_all(&raw_msg(4, 0, &body)).await.expect("write");
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(reply.response_to, 4);
    let body = body_of(&reply);
    assert_eq!(body.get_i32("code").ok(), Some(9), "{body}");
    assert_eq!(body.get_str("codeName").ok(), Some("FailedToParse"));
    assert_eq!(
        body.get_str("errmsg").ok(),
        Some("Parsed command object contains duplicate top level key: $db")
    );
    assert_alive(&mut s).await;

    // Any other repeated top-level field too.
    let mut body = raw_int_doc(&[("ping", 1), ("x", 1), ("x", 2)]);
    body.pop();
    body.extend_from_slice(db_elem);
    body.push(0);
    let len = body.len() as i32;
    body[..4].copy_from_slice(&len.to_le_bytes());
    s.write_all(&raw_msg(5, 0, &body)).await.expect("write");
    let reply = read_frame(&mut s).await.expect("reply");
    assert_eq!(body_of(&reply).get_i32("code").ok(), Some(9));
    assert_alive(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_frame_times_out_but_an_idle_connection_does_not() {
    let config = ServerConfig {
        partial_message_timeout: Duration::from_millis(400),
        ..ServerConfig::default()
    };
    let server = TestServer::start_config(Arc::new(ClockStore), config).await;

    // Idle between messages for several timeouts: still served.
    let mut idle = server.connect().await;
    assert_alive(&mut idle).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_alive(&mut idle).await;

    // A frame whose first half arrives, then nothing: closed after the timeout.
    let mut stalled = server.connect().await;
    let bytes = folio_wire::encode(&Message::msg(1, 0, 0, doc! { "ping": 1, "$db": "admin" }))
        .expect("encode");
    let started = Instant::now();
    stalled.write_all(&bytes[..bytes.len() / 2]).await.expect("write");
    let mut chunk = [0_u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut chunk))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "expected the server to close, got {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350), "closed too early: {waited:?}");

    // A slow but steady sender is not cut off: every byte restarts the clock.
    let mut slow = server.connect().await;
    for b in &bytes {
        slow.write_all(std::slice::from_ref(b)).await.expect("write");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reply = read_frame(&mut slow).await.expect("reply to a slowly sent request");
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0));
    server.shutdown().await;
}

fn more_to_come(msg: &Message) -> bool {
    matches!(&msg.op, Op::Msg(m) if m.more_to_come())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaust_get_more_streams_batches_until_the_cursor_ends() {
    let server = TestServer::start_mvcc().await;
    let mut s = server.connect().await;
    let mut frames = Frames::default();
    let docs: Vec<Document> = (0..5).map(|i| doc! { "_id": i }).collect();
    send(&mut s, &Message::msg(1, 0, 0, doc! { "insert": "c", "documents": docs, "$db": "t" }))
        .await;
    assert_eq!(body_of(&frames.next(&mut s).await).get_i32("n").ok(), Some(5));
    send(&mut s, &Message::msg(2, 0, 0, doc! { "find": "c", "batchSize": 1, "$db": "t" })).await;
    let found = frames.next(&mut s).await;
    let id = body_of(&found).get_document("cursor").and_then(|c| c.get_i64("id")).expect("id");
    assert_ne!(id, 0);

    let get_more = doc! { "getMore": id, "collection": "c", "batchSize": 2, "$db": "t" };
    send(&mut s, &Message::msg(3, 0, msg_flags::EXHAUST_ALLOWED, get_more)).await;
    let mut response_to = 3;
    let mut seen = vec![];
    loop {
        let reply = frames.next(&mut s).await;
        assert_eq!(reply.response_to, response_to, "each reply answers the previous one");
        let cursor = body_of(&reply).get_document("cursor").expect("cursor").clone();
        let batch = cursor.get_array("nextBatch").expect("batch").clone();
        assert_eq!(batch.len(), 2);
        seen.extend(batch);
        let open = cursor.get_i64("id").expect("id") != 0;
        assert_eq!(more_to_come(&reply), open, "moreToCome exactly while the cursor is open");
        if !open {
            break;
        }
        response_to = reply.request_id;
    }
    let expected: Vec<_> = (1..5).map(|i| bson::Bson::Document(doc! { "_id": i })).collect();
    assert_eq!(seen, expected);
    // Without the flag a getMore is answered once, as before.
    send(&mut s, &Message::msg(4, 0, 0, doc! { "find": "c", "batchSize": 1, "$db": "t" })).await;
    let found = frames.next(&mut s).await;
    let id = body_of(&found).get_document("cursor").and_then(|c| c.get_i64("id")).expect("id");
    let get_more = doc! { "getMore": id, "collection": "c", "batchSize": 2, "$db": "t" };
    send(&mut s, &Message::msg(5, 0, 0, get_more)).await;
    let reply = frames.next(&mut s).await;
    assert!(!more_to_come(&reply));
    assert_alive(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaitable_hello_waits_and_streams_with_exhaust() {
    let server = TestServer::start(100).await;
    let mut s = server.connect().await;
    let mut frames = Frames::default();
    send(&mut s, &Message::msg(1, 0, 0, hello(doc! {}))).await;
    let first = frames.next(&mut s).await;
    let version = body_of(&first).get_document("topologyVersion").expect("topologyVersion");
    assert_eq!(version.get_i64("counter").ok(), Some(0));
    let process = version.get_object_id("processId").expect("processId");

    // The current topology version: answered after maxAwaitTimeMS, once without the flag.
    let awaitable = hello(doc! {
        "topologyVersion": { "processId": process, "counter": 0_i64 },
        "maxAwaitTimeMS": 300_i64,
    });
    let started = Instant::now();
    send(&mut s, &Message::msg(2, 0, 0, awaitable.clone())).await;
    let reply = frames.next(&mut s).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!((reply.response_to, more_to_come(&reply)), (2, false));
    assert_alive(&mut s).await;

    // A stale process id is answered at once.
    let stale = hello(doc! {
        "topologyVersion": { "processId": bson::oid::ObjectId::new(), "counter": 0_i64 },
        "maxAwaitTimeMS": 10_000_i64,
    });
    let started = Instant::now();
    send(&mut s, &Message::msg(3, 0, 0, stale)).await;
    let reply = frames.next(&mut s).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(body_of(&reply).get_f64("ok").ok(), Some(1.0));

    // With exhaustAllowed: a reply every maxAwaitTimeMS, each answering the previous one.
    let started = Instant::now();
    send(&mut s, &Message::msg(4, 0, msg_flags::EXHAUST_ALLOWED, awaitable)).await;
    let mut response_to = 4;
    for n in 1..=3 {
        let reply = frames.next(&mut s).await;
        assert_eq!(reply.response_to, response_to);
        assert!(more_to_come(&reply));
        assert!(started.elapsed() >= Duration::from_millis(300 * n), "{:?}", started.elapsed());
        assert!(body_of(&reply).get_bool("isWritablePrimary").unwrap_or(false));
        response_to = reply.request_id;
    }
    // Shutdown ends the stream and the connection, well within the server's grace period (a
    // stream that ignored it would keep the connection, and shutdown, waiting 10 s).
    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "{:?}", stopping.elapsed());
}

/// Sends an `insert` of `db.c` whose documents are an OP_MSG document sequence of these raw
/// documents; returns the reply's body.
async fn insert_sequence(
    s: &mut TcpStream,
    id: i32,
    extra: Document,
    docs: Vec<bson::RawDocumentBuf>,
) -> Document {
    let mut body = doc! { "insert": "c", "$db": "rawseq" };
    body.extend(extra);
    let mut msg = Message::msg(id, 0, 0, body);
    if let Op::Msg(m) = &mut msg.op {
        m.sequences.push(folio_wire::DocumentSequence {
            identifier: "documents".into(),
            documents: docs
                .into_iter()
                .map(|d| folio_wire::SequenceDocument::from_raw(d).expect("valid"))
                .collect(),
        });
    }
    send(s, &msg).await;
    body_of(&read_frame(s).await.expect("reply")).clone()
}

/// The raw BSON of `doc`.
fn raw(doc: Document) -> bson::RawDocumentBuf {
    bson::RawDocumentBuf::try_from(&doc).expect("encodable")
}

/// An insert's documents arrive as a document sequence and are stored as they came when they
/// need no change; every document that does need one (no `_id`, `_id` not first, a repeated
/// name, an array numbered oddly, a `Timestamp(0, 0)`) is stored exactly as the decoded
/// command's would be, and the checks answer with the same errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_documents_are_stored_as_an_insert_of_their_decoded_form_would_store_them() {
    use bson::raw::cstr;
    let server = TestServer::start_mvcc().await;
    let mut s = server.connect().await;

    // A repeated name: the decoded form keeps one field, with the last value.
    let mut repeated = bson::RawDocumentBuf::new();
    repeated.append(cstr!("_id"), 2);
    repeated.append(cstr!("a"), 1);
    repeated.append(cstr!("a"), 2);
    // An array whose keys are not 0, 1, ...: read by position, stored renumbered. Written as
    // a document `{"7": "x", "9": "y"}` whose type byte then says array.
    let mut odd = raw(doc! { "_id": 3, "arr": { "7": "x", "9": "y" } }).into_bytes();
    let at = odd.windows(4).position(|w| w == b"arr\0").expect("the field") - 1;
    assert_eq!(odd[at], 0x03);
    odd[at] = 0x04;
    let odd = bson::RawDocumentBuf::from_bytes(odd).expect("valid BSON");
    let docs = vec![
        raw(doc! { "_id": 1, "as": "sent", "nested": { "x": [1, { "y": 2.5 }] } }),
        repeated,
        odd,
        raw(doc! { "b": 1, "_id": 4 }),
        raw(doc! { "noid": true }),
        raw(doc! { "_id": 6, "ts": bson::Timestamp { time: 0, increment: 0 } }),
    ];
    let reply = insert_sequence(&mut s, 1, doc! {}, docs).await;
    assert_eq!(reply.get_i32("n").ok(), Some(6), "{reply}");

    send(
        &mut s,
        &Message::msg(
            2,
            0,
            0,
            doc! { "find": "c", "filter": {}, "sort": { "_id": 1 }, "$db": "rawseq" },
        ),
    )
    .await;
    let found = body_of(&read_frame(&mut s).await.expect("reply"))
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .expect("firstBatch")
        .clone();
    assert_eq!(found.len(), 6, "{found:?}");
    let by_id = |i: i32| {
        found
            .iter()
            .filter_map(|d| d.as_document())
            .find(|d| d.get_i32("_id").ok() == Some(i))
            .cloned()
            .unwrap_or_else(|| panic!("no _id {i} in {found:?}"))
    };
    assert_eq!(by_id(1), doc! { "_id": 1, "as": "sent", "nested": { "x": [1, { "y": 2.5 }] } });
    assert_eq!(by_id(2), doc! { "_id": 2, "a": 2 });
    assert_eq!(by_id(3), doc! { "_id": 3, "arr": ["x", "y"] });
    assert_eq!(by_id(4), doc! { "_id": 4, "b": 1 }, "_id moved first");
    let generated = found
        .iter()
        .filter_map(|d| d.as_document())
        .find(|d| d.contains_key("noid"))
        .expect("the document without _id");
    assert!(matches!(generated.iter().next(), Some((k, bson::Bson::ObjectId(_))) if k == "_id"));
    let ts = by_id(6).get_timestamp("ts").expect("ts");
    assert!(ts.time > 0, "Timestamp(0, 0) replaced by the time: {ts:?}");
    // Stored as sent: a query on an array element by position sees the renumbered array.
    send(
        &mut s,
        &Message::msg(3, 0, 0, doc! { "count": "c", "query": { "arr.1": "y" }, "$db": "rawseq" }),
    )
    .await;
    let count = body_of(&read_frame(&mut s).await.expect("reply")).clone();
    assert_eq!(count.get_i32("n").ok(), Some(1), "{count}");

    // The checks: a duplicate _id, an array _id, a document nested too deep.
    let mut deep = doc! { "x": 1 };
    for _ in 0..100 {
        deep = doc! { "d": deep };
    }
    let docs = vec![
        raw(doc! { "_id": 1 }),
        raw(doc! { "_id": [1, 2] }),
        raw(doc! { "_id": 7, "deep": deep }),
        raw(doc! { "_id": 8 }),
    ];
    let reply = insert_sequence(&mut s, 4, doc! { "ordered": false }, docs).await;
    assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
    let errors = reply.get_array("writeErrors").expect("writeErrors");
    let codes: Vec<i32> =
        errors.iter().filter_map(|e| e.as_document()?.get_i32("code").ok()).collect();
    assert_eq!(codes, vec![11000, 53, 15], "{reply}");

    // A unique secondary index and a validator read the raw documents too.
    send(&mut s, &Message::msg(5, 0, 0, doc! { "createIndexes": "c", "indexes": [{ "key": { "u": 1 }, "name": "u_1", "unique": true, "sparse": true }], "$db": "rawseq" })).await;
    let created = body_of(&read_frame(&mut s).await.expect("reply")).clone();
    assert_eq!(created.get_f64("ok").ok(), Some(1.0), "{created}");
    let docs = vec![raw(doc! { "_id": 10, "u": 1 }), raw(doc! { "_id": 11, "u": 1 })];
    let reply = insert_sequence(&mut s, 6, doc! {}, docs).await;
    assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
    let code =
        reply.get_array("writeErrors").ok().and_then(|e| e[0].as_document()?.get_i32("code").ok());
    assert_eq!(code, Some(11000), "{reply}");
    send(
        &mut s,
        &Message::msg(
            7,
            0,
            0,
            doc! { "collMod": "c", "validator": { "v": { "$type": "int" } }, "$db": "rawseq" },
        ),
    )
    .await;
    let modded = body_of(&read_frame(&mut s).await.expect("reply")).clone();
    assert_eq!(modded.get_f64("ok").ok(), Some(1.0), "{modded}");
    let docs = vec![raw(doc! { "_id": 12, "v": "text", "u": 12 })];
    let reply = insert_sequence(&mut s, 8, doc! {}, docs).await;
    let code =
        reply.get_array("writeErrors").ok().and_then(|e| e[0].as_document()?.get_i32("code").ok());
    assert_eq!(code, Some(121), "{reply}");
    let docs = vec![raw(doc! { "_id": 13, "v": 1, "u": 13 })];
    let reply = insert_sequence(&mut s, 9, doc! { "bypassDocumentValidation": false }, docs).await;
    assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
    server.shutdown().await;
}
