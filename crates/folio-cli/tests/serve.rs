//! `folio serve` as a process: the ready line, a handshake over the socket, SIGTERM shutdown and
//! startup errors.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use common::{Server, folio, free_port};

/// Waits for the process to exit, killing it after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("folio did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to `port` and returns the reply to `hello`.
fn hello(port: u16) -> bson::Document {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    common::round_trip(&mut stream, 1, doc! { "hello": 1, "$db": "admin" })
}

#[test]
fn serve_prints_ready_line_answers_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = folio()
        .args(["serve", "--in-memory", "--port", &port.to_string(), "--replSet", "testset"])
        .args(["--setParameter", "enableTestCommands=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn folio");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), format!("folio listening on 127.0.0.1:{port}"));

    let body = hello(port);
    assert_eq!(body.get_str("setName").ok(), Some("testset"));
    assert_eq!(body.get_str("me").ok(), Some(format!("localhost:{port}").as_str()));

    let status =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn unknown_set_parameter_is_a_startup_error() {
    let out = folio()
        .args(["serve", "--in-memory", "--port", "0", "--setParameter", "notAThing=1"])
        .output()
        .expect("run folio");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notAThing"), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line on a failed start");
}

#[test]
fn port_zero_advertises_the_port_the_system_chose() {
    let server = Server::in_memory();
    let port = server.port;
    assert_ne!(port, 0);
    let body = hello(port);
    let me = format!("localhost:{port}");
    assert_eq!(body.get_str("me").ok(), Some(me.as_str()), "{body}");
    let hosts = body.get_array("hosts").expect("hosts");
    assert_eq!(hosts.first().and_then(|h| h.as_str()), Some(me.as_str()), "{body}");
}

#[test]
fn ready_line_for_programs_and_exit_when_stdin_closes() {
    let started = Instant::now();
    let mut child = folio()
        .args(["serve", "--in-memory", "--port", "0", "--exit-on-stdin-close"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn folio");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    assert!(first.starts_with("folio listening on 127.0.0.1:"), "{first:?}");
    let mut second = String::new();
    stdout.read_line(&mut second).expect("ready line");
    let startup = started.elapsed();
    let ready: serde_json::Value = serde_json::from_str(&second).expect("JSON ready line");
    let port = ready["port"].as_u64().expect("port");
    assert_ne!(port, 0);
    assert_eq!(ready["ready"], serde_json::Value::Bool(true));
    assert_eq!(ready["pid"].as_u64(), Some(u64::from(child.id())));
    assert_eq!(
        ready["uri"].as_str(),
        Some(format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0").as_str())
    );
    assert!(first.trim().ends_with(&format!(":{port}")), "{first:?}");
    // Startup with --in-memory takes tens of milliseconds; allow for a loaded machine.
    eprintln!("startup to ready line: {startup:?}");
    assert!(startup < Duration::from_secs(5), "{startup:?}");

    let body = hello(port as u16);
    let me = format!("localhost:{port}");
    for field in ["me", "primary"] {
        assert_eq!(body.get_str(field).ok(), Some(me.as_str()), "{field}: {body}");
    }
    assert_eq!(
        body.get_array("hosts").ok().and_then(|h| h.first()).and_then(|h| h.as_str()),
        Some(me.as_str())
    );

    // Closing standard input (as a dying parent does) stops the server.
    drop(child.stdin.take());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn without_the_flag_a_closed_stdin_changes_nothing() {
    let mut server =
        Server::spawn(folio().args(["serve", "--in-memory", "--port", "0"]).stdin(Stdio::null()));
    std::thread::sleep(Duration::from_millis(300));
    server.assert_running();
    assert_eq!(hello(server.port).get_f64("ok").ok(), Some(1.0));
}
