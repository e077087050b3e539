//! What the tests that start the `folio` binary share: a free port, starting a server and
//! waiting for its ready line, one OP_MSG round trip. (Each test binary uses part of it.)
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

/// A `folio serve` process, killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `folio serve --port 0 ARGS` and waits until it listens.
    pub fn serve(args: &[&str]) -> Server {
        Server::spawn(
            Command::new(env!("CARGO_BIN_EXE_folio")).args(["serve", "--port", "0"]).args(args),
        )
    }

    /// Spawns a command that runs `folio serve` (stdout piped for the ready line, stderr
    /// discarded) and waits until it listens.
    pub fn spawn(command: &mut Command) -> Server {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn folio");
        let port = wait_ready(&mut child);
        Server { child, port }
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
