//! What the tests that start the `folio` binary share: a free port, and waiting for the ready
//! line. (Each test binary uses part of it.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Child;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
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
