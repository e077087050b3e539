//! Folio's wire-protocol server: TCP listeners, one task per connection, commands on the core.
//!
//! # Request flow
//!
//! 1. A listener (one per `--bind_ip` address) accepts a socket, refusing it when `--maxConns`
//!    connections are already open, and spawns a connection task.
//! 2. The connection task reads bytes into a buffer and asks [`folio_wire::decode_request`]
//!    for whole frames (a body's gossiped `$clusterTime` is checked and dropped). Requests on
//!    one connection are handled strictly in order, like MongoDB does: the
//!    next frame is not looked at until the previous reply is written.
//! 3. An OP_MSG's document sequences are merged into its body (what MongoDB does), except an
//!    `insert`'s `documents`, handed over beside the body as they came ([`folio::Incoming`]:
//!    stored without being built as `Document`s and encoded again when they need no change), a legacy
//!    OP_QUERY on `db.$cmd` is unwrapped and given `$db`, and the command document goes to
//!    [`Service::dispatch`]: on the connection's task when it cannot wait on anything
//!    ([`Service::never_waits_on_others`]: reads, statements inside a transaction), otherwise on
//!    tokio's blocking pool, because the core is synchronous and may wait on another transaction.
//!    A single write or the end of a transaction is tried on the task first
//!    ([`Service::dispatch_on_event_loop`]): its reply owes its commit's sync, which the task
//!    awaits ([`Service::when_durable`]) without holding a thread, and if it would have to wait
//!    for another transaction it stops before committing anything and goes to the pool.
//! 4. The reply is encoded as OP_MSG (or OP_REPLY for OP_QUERY), compressed with the negotiated
//!    compressor when the request was compressed, and written back. `moreToCome` requests get no
//!    reply; a reply marked `close_connection` closes the socket instead.
//! 5. Exhaust: a `getMore` or an awaitable `hello` sent with the `exhaustAllowed` flag is
//!    answered by replies flagged `moreToCome`, each answering the previous one, the server
//!    running the command again until the cursor is exhausted or an error ends the stream
//!    (drivers' streaming monitors and exhaust cursors). An awaitable `hello` waits for
//!    `maxAwaitTimeMS` on the connection's task before it is answered.
//!
//! # TLS
//!
//! With [`ServerConfig::tls`], a connection whose first byte is a TLS handshake record (0x16)
//! is wrapped in a rustls server session ([`tls`]); a plaintext one is served as before under
//! `allowTLS`/`preferTLS` and closed under `requireTLS`. Which is which is decided by peeking
//! at the first byte, so one port serves both, as mongod does.
//!
//! # Errors on the wire
//!
//! Broken framing (bad length, oversized message, bad checksum, unknown opcode) closes the
//! connection: after it, frame boundaries cannot be trusted. A frame whose content is bad
//! (invalid BSON, a top-level field named twice) gets an `ok: 0` reply and the connection lives
//! on. A peer that sends part of a frame and then nothing for
//! [`ServerConfig::partial_message_timeout`] is disconnected; an idle connection between
//! messages is not.
//!
//! # Shutdown
//!
//! [`Server::run`] starts the service's housekeeping ([`Service::start_background`]: transaction
//! lifetime limit, session and cursor expiry).
//!
//! When the shutdown future completes, listeners stop accepting and idle connections close.
//! A connection in the middle of a command finishes it and writes its reply first (an in-flight
//! commit is never cut off), bounded by [`ServerConfig::shutdown_grace`]. Then the service's
//! shutdown hook runs.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use bson::{Document, doc};
use folio::{Code, Error};
use folio::{Connection, Incoming, Reply, Service, error_reply};
use folio_wire::{
    Compressor, EncodeError, Malformed, MalformedKind, Message, Op, OpMsg, OpQuery, WireError,
    msg_flags, op_code,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, trace, warn};

pub mod tls;

pub use tls::{TlsConfig, TlsMode};

/// A connection's byte stream: a TCP socket, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Settings of the network server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses to listen on (host names or IPs; `--bind_ip` split at commas).
    pub bind_ips: Vec<String>,
    /// The port (0 picks a free one, for tests).
    pub port: u16,
    /// Maximum simultaneously open connections.
    pub max_conns: u32,
    /// How long shutdown waits for in-flight commands.
    pub shutdown_grace: Duration,
    /// How long a connection may sit on part of a message: once some bytes of a frame have
    /// arrived, the rest must follow within this time (measured from the last bytes received)
    /// or the connection is closed. A connection idle *between* messages is never closed for
    /// this: drivers keep pooled connections open and silent for minutes.
    pub partial_message_timeout: Duration,
    /// TLS, when enabled (`--tlsMode` other than `disabled`).
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind_ips: vec!["127.0.0.1".into()],
            port: 27017,
            max_conns: 1_000_000,
            shutdown_grace: Duration::from_secs(10),
            partial_message_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
}

/// What every connection task shares.
struct Shared {
    service: Arc<Service>,
    config: ServerConfig,
    open_connections: AtomicU32,
    next_request_id: AtomicI32,
}

impl Server {
    /// Binds every configured address. Fails if any cannot be bound.
    pub async fn bind(service: Arc<Service>, config: ServerConfig) -> io::Result<Server> {
        Server::bind_then(config, |_| Ok(service)).await
    }

    /// Binds first, then builds the service knowing the addresses actually bound (with
    /// `port: 0`, the port the system chose, which `hello` must advertise).
    pub async fn bind_then(
        config: ServerConfig,
        make_service: impl FnOnce(&[SocketAddr]) -> io::Result<Arc<Service>>,
    ) -> io::Result<Server> {
        let mut listeners = Vec::new();
        for ip in &config.bind_ips {
            let listener = TcpListener::bind((ip.as_str(), config.port)).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {ip}:{}: {e}", config.port))
            })?;
            listeners.push(listener);
        }
        if listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on"));
        }
        let addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let service = make_service(&addrs)?;
        let shared = Arc::new(Shared {
            service,
            config,
            open_connections: AtomicU32::new(0),
            next_request_id: AtomicI32::new(1),
        });
        Ok(Server { listeners, shared })
    }

    /// The service the server runs.
    pub fn service(&self) -> &Arc<Service> {
        &self.shared.service
    }

    /// The addresses actually bound (with the real port when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every task holds a clone of `alive`; when all are dropped, `recv` returns None.
        let (alive, mut all_done) = mpsc::channel::<()>(1);
        for listener in self.listeners {
            let shared = self.shared.clone();
            tokio::spawn(accept_loop(listener, shared, stop_rx.clone(), alive.clone()));
        }
        self.shared.service.start_background();
        drop(alive);
        shutdown.await;
        info!("shutting down: no new connections, waiting for in-flight commands");
        let _ = stop_tx.send(true);
        let grace = self.shared.config.shutdown_grace;
        if tokio::time::timeout(grace, all_done.recv()).await.is_err() {
            warn!(?grace, "connections still busy after the shutdown grace period");
        }
        let service = self.shared.service.clone();
        let _ = tokio::task::spawn_blocking(move || service.shutdown()).await;
        info!("shutdown complete");
        Ok(())
    }
}

/// Waits, without holding a thread, until the commits a reply acknowledges are durable; a
/// failed sync turns the reply into the error.
async fn await_durable(service: &Service, mut reply: Reply) -> Reply {
    let Some(ts) = reply.unsynced.take() else { return reply };
    let (tx, rx) = tokio::sync::oneshot::channel();
    service.when_durable(
        ts,
        Box::new(move |synced| {
            let _ = tx.send(synced);
        }),
    );
    let err = match rx.await {
        Ok(Ok(())) => return reply,
        Ok(Err(e)) => e,
        Err(_) => Error::new(
            Code::InterruptedAtShutdown,
            "the server shut down before the write was durable",
        ),
    };
    Reply { close_connection: reply.close_connection, ..Reply::bare(error_reply(&err)) }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Accepts connections until shutdown.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let open = shared.open_connections.fetch_add(1, Ordering::SeqCst);
                if open >= shared.config.max_conns {
                    shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                    warn!(%peer, open, "connection refused because too many connections are open");
                    drop(stream);
                    continue;
                }
                let task = ConnectionTask {
                    shared: shared.clone(),
                    stop: stop.clone(),
                    _alive: alive.clone(),
                };
                tokio::spawn(task.run(stream, peer));
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Closed {
    /// The client closed it.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// Broken framing or an I/O error.
    Error(String),
    /// A reply asked for the connection to be closed (a fail point).
    Requested,
}

/// One connection's task.
struct ConnectionTask {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Dropped when the task ends, which is how shutdown knows it has finished.
    _alive: mpsc::Sender<()>,
}

impl ConnectionTask {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let mut conn = self.shared.service.connect(peer.to_string());
        // Replies are encoded here, with a find's stored documents written in as they are.
        conn.raw_batches = true;
        conn.supported_compressors =
            Compressor::SUPPORTED.iter().map(|c| c.name().to_string()).collect();
        debug!(id = conn.id, %peer, "connection open");
        let closed = match &self.shared.config.tls {
            None => {
                let mut stream = stream;
                self.serve(&mut stream, &mut conn).await
            }
            Some(tls) => match tls::accept(tls, stream, &mut conn).await {
                Ok(mut stream) => self.serve(&mut *stream, &mut conn).await,
                Err(e) => {
                    warn!(id = conn.id, %peer, "TLS connection refused: {e}");
                    Closed::Error(e.to_string())
                }
            },
        };
        self.shared.service.disconnect(&conn);
        self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
        match &closed {
            Closed::Error(error) => debug!(id = conn.id, %peer, %error, "connection closed"),
            Closed::Eof | Closed::Shutdown | Closed::Requested => {
                debug!(id = conn.id, %peer, reason = ?closed, "connection closed")
            }
        }
    }

    /// Reads and answers requests until the connection ends.
    async fn serve(&mut self, stream: &mut dyn Io, conn: &mut Connection) -> Closed {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            if *self.stop.borrow() {
                return Closed::Shutdown;
            }
            match folio_wire::decode_request(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    self.shared.service.metrics().record_request(used as u64);
                    // Give back the memory of a large message once it is handled.
                    if buf.is_empty() && buf.capacity() > 1024 * 1024 {
                        buf = Vec::with_capacity(16 * 1024);
                    }
                    if let Err(closed) = self.handle(stream, conn, msg).await {
                        return closed;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(WireError::Framing(m)) => {
                    warn!(id = conn.id, "closing connection: {m}");
                    return Closed::Error(m);
                }
                Err(WireError::Malformed(m)) => {
                    buf.drain(..m.frame_len.min(buf.len()));
                    debug!(id = conn.id, "malformed message: {}", m.message);
                    if let Err(closed) = self.answer_malformed(stream, conn, &m).await {
                        return closed;
                    }
                    continue;
                }
            }
            // Make room for the rest of the frame when its length is known, but at most 1 MiB
            // ahead: a header alone must not make the server allocate 48 MB.
            if let Ok(Some(len)) = folio_wire::frame_len(&buf) {
                buf.reserve(len.saturating_sub(buf.len()).min(1024 * 1024));
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            // Bytes in the buffer here are an incomplete frame: its sender owes the rest, and a
            // peer that never sends it must not hold the connection (and its buffer) forever.
            let partial = !buf.is_empty();
            let limit = self.shared.config.partial_message_timeout;
            let read = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return Closed::Shutdown,
                read = stream.read_buf(&mut buf) => read,
                // An async block, so that no timer is set up (nor the clock read) for the usual
                // read between messages, where the branch is disabled and never polled.
                _ = async { tokio::time::sleep(limit).await }, if partial => {
                    return Closed::Error(format!(
                        "incomplete message: {} bytes received, then nothing for {limit:?}",
                        buf.len()
                    ));
                }
            };
            match read {
                Ok(0) => return Closed::Eof,
                Ok(_) => {}
                Err(e) => return Closed::Error(e.to_string()),
            }
        }
    }

    /// Handles one decoded message.
    async fn handle(
        &self,
        stream: &mut dyn Io,
        conn: &mut Connection,
        msg: Message,
    ) -> Result<(), Closed> {
        trace!(id = conn.id, request_id = msg.request_id, compressor = ?msg.compressor, "request");
        let compressor = self.reply_compressor(conn, msg.compressor);
        match msg.op {
            Op::Msg(m) => self.handle_msg(stream, conn, msg.request_id, compressor, m).await,
            Op::Query(q) => self.handle_query(stream, conn, msg.request_id, compressor, q).await,
            Op::Reply(_) => Err(Closed::Error("client sent OP_REPLY".into())),
        }
    }

    /// The compressor for a reply: none for an uncompressed request, else the negotiated one
    /// (falling back to the request's own).
    fn reply_compressor(
        &self,
        conn: &Connection,
        request: Option<Compressor>,
    ) -> Option<Compressor> {
        let request = request?;
        conn.compressor.as_deref().and_then(Compressor::from_name).or(Some(request))
    }

    async fn handle_msg(
        &self,
        stream: &mut dyn Io,
        conn: &mut Connection,
        request_id: i32,
        compressor: Option<Compressor>,
        m: OpMsg,
    ) -> Result<(), Closed> {
        let more_to_come = m.more_to_come();
        let exhaust_allowed = m.exhaust_allowed();
        let flags = if m.checksum_present() { msg_flags::CHECKSUM_PRESENT } else { 0 };
        // An insert's documents stay as they came, to be stored so when they need no change.
        let is_insert_documents = |body: &Document, identifier: &str| {
            identifier == "documents" && body.keys().next().is_some_and(|k| k == "insert")
        };
        let cmd = match m.into_command_keeping(is_insert_documents) {
            Ok((cmd, documents)) => Incoming { cmd, documents: documents.map(|s| s.documents) },
            Err(e) => {
                let body = protocol_error(40433, "Location40433", e);
                if more_to_come {
                    return Ok(());
                }
                let mut out = Message::msg(self.next_request_id(), request_id, flags, body);
                out.compressor = compressor;
                return self.send(stream, &out).await;
            }
        };
        // Only a request that may be answered by a stream keeps a copy to run again; every
        // other command is handed over as it is.
        let repeat = exhaust_allowed.then(|| cmd.clone());
        let mut first = Some(cmd);
        let mut response_to = request_id;
        loop {
            let cmd = match (first.take(), &repeat) {
                (Some(cmd), _) => cmd,
                (None, Some(cmd)) => cmd.clone(),
                (None, None) => return Ok(()),
            };
            self.await_hello(&cmd.cmd).await?;
            let reply = self.run_command(conn, cmd).await;
            if reply.close_connection {
                return Err(Closed::Requested);
            }
            if more_to_come {
                return Ok(());
            }
            let stream_on = repeat.as_ref().is_some_and(|cmd| exhausts(&cmd.cmd, &reply.body));
            let flags = if stream_on { flags | msg_flags::MORE_TO_COME } else { flags };
            let id = self.next_request_id();
            self.send_msg(stream, id, response_to, flags, compressor, reply).await?;
            if !stream_on {
                return Ok(());
            }
            // Exhaust: the next reply answers this one, without a request from the client.
            response_to = id;
            if *self.stop.borrow() {
                return Err(Closed::Shutdown);
            }
        }
    }

    /// Waits as an awaitable `hello` asks (until the topology changes, which on a single node
    /// means until `maxAwaitTimeMS` has passed), off the command threads. Shutdown ends the
    /// wait and the connection.
    async fn await_hello(&self, cmd: &Document) -> Result<(), Closed> {
        let Some(wait) = self.shared.service.hello_await(cmd) else {
            return Ok(());
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => Err(Closed::Shutdown),
            _ = tokio::time::sleep(wait) => Ok(()),
        }
    }

    async fn handle_query(
        &self,
        stream: &mut dyn Io,
        conn: &mut Connection,
        request_id: i32,
        compressor: Option<Compressor>,
        q: OpQuery,
    ) -> Result<(), Closed> {
        let mut reply = match legacy_command(q) {
            Ok(cmd) => self.run_command(conn, cmd).await,
            Err(body) => Reply::bare(body),
        };
        // OP_REPLY carries whole documents only.
        reply.decode_raw_batch();
        reply.merge_times();
        if reply.close_connection {
            return Err(Closed::Requested);
        }
        let mut out = Message::reply(self.next_request_id(), request_id, reply.body);
        out.compressor = compressor;
        self.send(stream, &out).await
    }

    /// Answers a frame whose content could not be decoded.
    async fn answer_malformed(
        &self,
        stream: &mut dyn Io,
        conn: &Connection,
        m: &Malformed,
    ) -> Result<(), Closed> {
        if m.more_to_come {
            return Ok(());
        }
        let code = match m.kind {
            MalformedKind::InvalidBson => Code::InvalidBSON,
            MalformedKind::Protocol => Code::ProtocolError,
            MalformedKind::DuplicateField => Code::FailedToParse,
        };
        let body = error_reply(&Error::new(code, m.message.clone()));
        let compressor = self.reply_compressor(conn, m.compressor);
        let mut out = match m.op_code {
            op_code::MSG => Message::msg(self.next_request_id(), m.request_id, 0, body),
            op_code::QUERY => Message::reply(self.next_request_id(), m.request_id, body),
            _ => return Err(Closed::Error("malformed OP_REPLY from a client".into())),
        };
        out.compressor = compressor;
        self.send(stream, &out).await
    }

    /// Runs a command: on the connection's task when it cannot block, or until it would, and
    /// otherwise on the blocking pool.
    async fn run_command(&self, conn: &mut Connection, cmd: impl Into<Incoming>) -> Reply {
        let mut cmd: Incoming = cmd.into();
        let service = self.shared.service.clone();
        if service.never_waits_on_others(&cmd.cmd) {
            // Reads never wait on storage sync or other transactions: they run here, on the
            // connection itself, rather than on a copy handed to the blocking pool and back.
            let compressor = conn.compressor.clone();
            let reply = service.dispatch(conn, cmd);
            if conn.compressor != compressor {
                debug!(id = conn.id, compressor = ?conn.compressor, "compression negotiated");
            }
            return reply;
        }
        if service.may_try_on_event_loop(&cmd) {
            // A single write usually waits only for its sync: it runs here, and the task awaits
            // the sync without holding a thread. If it would wait for another transaction, it
            // stops before committing anything and goes to the blocking pool below. These
            // commands (writes, a transaction's end) change nothing of the connection's that
            // running them again would not set alike, so the attempt works on it directly.
            match service.dispatch_on_event_loop(conn, cmd) {
                Ok(reply) => return await_durable(&service, reply).await,
                Err(back) => cmd = back,
            }
        }
        let name = cmd.cmd.keys().next().cloned().unwrap_or_default();
        let mut moved = conn.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let reply = service.dispatch(&mut moved, cmd);
            (moved, reply)
        })
        .await;
        match joined {
            Ok((updated, reply)) => {
                if updated.compressor != conn.compressor {
                    debug!(id = conn.id, compressor = ?updated.compressor, "compression negotiated");
                }
                *conn = updated;
                reply
            }
            Err(e) => {
                // The core must not panic; if it did, answer as MongoDB does for internal failures
                // and keep the connection's previous state.
                warn!(command = %name, "command failed unexpectedly: {e}");
                let err =
                    Error::new(Code::InternalError, format!("command {name} failed unexpectedly"));
                Reply::bare(error_reply(&err))
            }
        }
    }

    /// Sends a command's reply as an OP_MSG, encoded by [`Reply::encode_body`]: with its
    /// stored documents ([`Reply::raw_batch`]) as they are and its cluster time after them.
    async fn send_msg(
        &self,
        stream: &mut dyn Io,
        request_id: i32,
        response_to: i32,
        flags: u32,
        compressor: Option<Compressor>,
        mut reply: Reply,
    ) -> Result<(), Closed> {
        let encoded = reply.encode_body().map_err(EncodeError::Bson).and_then(|body| {
            folio_wire::encode_msg_body(request_id, response_to, flags, compressor, &body)
        });
        if let Ok(bytes) = encoded {
            self.shared.service.metrics().record_reply(bytes.len() as u64);
            return stream.write_all(&bytes).await.map_err(|e| Closed::Error(e.to_string()));
        }
        // Too large, most likely: encoded whole, the reply is reported as `send` reports it.
        reply.decode_raw_batch();
        reply.merge_times();
        let mut out = Message::msg(request_id, response_to, flags, reply.body);
        out.compressor = compressor;
        self.send(stream, &out).await
    }

    async fn send(&self, stream: &mut dyn Io, msg: &Message) -> Result<(), Closed> {
        let bytes = match folio_wire::encode(msg) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Most likely a reply over the message size: report it instead of the reply.
                let err = Error::new(Code::InternalError, format!("cannot encode reply: {e}"));
                let mut fallback = msg.clone();
                match &mut fallback.op {
                    Op::Msg(m) => m.body = error_reply(&err),
                    Op::Reply(r) => r.documents = vec![error_reply(&err)],
                    Op::Query(_) => {
                        return Err(Closed::Error("server tried to send OP_QUERY".into()));
                    }
                }
                folio_wire::encode(&fallback).map_err(|e| Closed::Error(e.to_string()))?
            }
        };
        self.shared.service.metrics().record_reply(bytes.len() as u64);
        stream.write_all(&bytes).await.map_err(|e| Closed::Error(e.to_string()))
    }

    fn next_request_id(&self) -> i32 {
        self.shared.next_request_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether a request sent with `exhaustAllowed` is answered by a stream of replies flagged
/// `moreToCome`, the server running the command again for each (MongoDB's exhaust protocol):
/// a `getMore` while its cursor stays open, and an awaitable `hello` (`topologyVersion` and
/// `maxAwaitTimeMS`) while it succeeds. An error ends the stream.
fn exhausts(cmd: &Document, reply: &Document) -> bool {
    if reply.get_f64("ok").ok() != Some(1.0) {
        return false;
    }
    match cmd.keys().next().map(String::as_str) {
        Some("getMore") => {
            reply.get_document("cursor").is_ok_and(|c| c.get_i64("id").is_ok_and(|id| id != 0))
        }
        Some("hello" | "isMaster" | "ismaster") => {
            cmd.contains_key("topologyVersion") && cmd.contains_key("maxAwaitTimeMS")
        }
        _ => false,
    }
}

/// An error reply for a failure the core has no [`Code`] variant for.
fn protocol_error(code: i32, code_name: &str, message: String) -> Document {
    doc! { "ok": 0.0, "errmsg": message, "code": code, "codeName": code_name }
}

/// Turns a legacy OP_QUERY into a command document. MongoDB 8.0 accepts only the handshake over
/// OP_QUERY; anything else gets `UnsupportedOpQueryCommand` (352).
fn legacy_command(q: OpQuery) -> Result<Document, Document> {
    let Some(db) = q.full_collection_name.strip_suffix(".$cmd") else {
        return Err(protocol_error(
            5739101,
            "Location5739101",
            "OP_QUERY is no longer supported. The client driver may require an upgrade.".into(),
        ));
    };
    // Drivers wrap the command as `{$query: cmd, $readPreference: ...}` when they add a read
    // preference.
    let mut cmd = q.query;
    if let Ok(inner) = cmd.get_document("$query") {
        cmd = inner.clone();
    }
    let name = cmd.keys().next().cloned().unwrap_or_default();
    if !matches!(name.as_str(), "hello" | "isMaster" | "ismaster") {
        return Err(protocol_error(
            352,
            "UnsupportedOpQueryCommand",
            format!(
                "Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. \
                 For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"
            ),
        ));
    }
    cmd.insert("$db", db);
    Ok(cmd)
}
