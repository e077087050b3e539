//! What the tests that start the `folio` binary share: a free port, starting a server and
//! waiting for its ready line, and one OP_MSG round trip. (Each test binary uses part of it.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use bson::Document;
use folio_wire::{Message, Op};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The `folio` binary under test.
pub fn folio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_folio"))
}

/// A `folio serve` process, killed on drop (a failing test leaves no server behind).
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// `folio serve --port 0 ARGS`, once it listens.
    pub fn start(args: &[&str]) -> Server {
        Server::spawn(folio().args(["serve", "--port", "0"]).args(args))
    }

    /// `folio serve --in-memory --port 0`, once it listens.
    pub fn in_memory() -> Server {
        Server::start(&["--in-memory"])
    }

    /// Spawns `cmd`, a `folio serve` command line, with stdout piped for the ready line and
    /// stderr discarded, and waits until it listens.
    pub fn spawn(cmd: &mut Command) -> Server {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn folio");
        let port = wait_ready(&mut child);
        Server { child, port }
    }

    /// A URI that connects the driver to this server alone.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// A driver client on [`Server::uri`].
    pub async fn client(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(self.uri()).await.expect("client")
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("folio exited: {status:?}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `folio serve`'s first line (`folio listening on IP:PORT[, ...]`) on the child's
/// piped stdout, and returns the first address's port.
pub fn wait_ready(child: &mut Child) -> u16 {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready line");
    let first = line
        .trim()
        .strip_prefix("folio listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .split(", ")
        .next()
        .unwrap_or_default();
    first
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// Sends one command as OP_MSG with `request_id` and returns the reply's body.
pub fn round_trip(stream: &mut TcpStream, request_id: i32, cmd: Document) -> Document {
    let msg = Message::msg(request_id, 0, 0, cmd);
    stream.write_all(&folio_wire::encode(&msg).expect("encode")).expect("write");
    let mut buf = Vec::new();
    loop {
        if let Some((reply, _)) = folio_wire::decode(&buf).expect("valid reply") {
            let Op::Msg(m) = reply.op else { panic!("expected OP_MSG") };
            return m.body;
        }
        let mut chunk = [0_u8; 4096];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}
