//! Data-driven command tests: scripts of commands sent through `Service::dispatch`, each followed
//! by the reply it must produce.
//!
//! Script format (`tests/commands/*.txt`):
//!
//! ```text
//! # a comment
//! > {"insert": "c", "documents": [{"_id": 1}]}
//! {"n": 1, "ok": 1.0}
//! s1> {"find": "c", "txnNumber": 1, "startTransaction": true, "autocommit": false}
//! {"ok": 1.0}
//! ```
//!
//! A line starting with `>` is a command (relaxed Extended JSON); `NAME>` sends it with the lsid of
//! session NAME (a top-level value `"$$lsids"` becomes `[that lsid]`). `$db` defaults to `test`. The next line is the expected reply: every field it names
//! must be present with an equal value (numbers compare by value; nested documents are compared
//! the same way, arrays element by element); fields it does not name are ignored. The special value
//! `"$$exists"` only checks presence, `"$$absent"` checks absence. `$$cursor`, in a command or an
//! expected reply, stands for the id of the last cursor a reply left open (as a quoted value it
//! becomes that id as a long, inside a string its digits). After each script, `verify`
//! must find every index in agreement with the documents.
//!
//! With `UPDATE_GOLDENFILES=1` (the switch every golden test of the workspace uses), a script
//! whose replies differ is rewritten instead of failing: each mismatching expectation becomes
//! the actual reply seen through the expectation's shape (the same fields, `$$exists` and
//! `$$absent` kept where they still hold, differing values replaced), and matching lines stay
//! as written. Review the diff by hand.
//!
//! Directives (lines starting with `%`):
//! - `% auth` (before any command): the service runs with `--auth`;
//! - `% connection NAME [REMOTE]`: later commands go through connection NAME, created on first
//!   use with peer address REMOTE (default `127.0.0.1:40000`, a loopback address);
//! - `% login USER PASSWORD MECHANISM DB`: a full SCRAM conversation on the current connection
//!   (`saslStart`, `saslContinue`, the final empty step), which must succeed and prove the
//!   server's signature;
//! - `% login-fails USER PASSWORD MECHANISM DB`: the same, which must fail with
//!   AuthenticationFailed (18).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bson::{Bson, Document, doc};
use folio::MemoryEngine;
use folio::{Mvcc, MvccOptions};
use folio::{Service, ServiceOptions};

/// A connection as the server's transport has it: replies may carry a find's stored
/// documents apart from the body ([`folio::Reply::raw_batch`]).
fn transport(mut conn: folio::Connection) -> folio::Connection {
    conn.raw_batches = true;
    conn
}

/// The reply a client reads: the body as the transport encodes it (stored documents written
/// into their batch as they are), decoded again.
fn transported(reply: folio::Reply) -> Document {
    let bytes = reply.encode_body().expect("encode reply");
    let decoded = Document::from_reader(bytes.as_slice()).expect("decode reply");
    if reply.raw_batch.is_none() {
        let mut merged = reply.clone();
        merged.merge_times();
        assert_eq!(
            decoded, merged.body,
            "a reply without stored documents encodes as its body, then its cluster time"
        );
    }
    decoded
}

fn service(auth: bool) -> Service {
    let store =
        Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("open mvcc");
    let options = ServiceOptions { test_commands: true, auth, ..ServiceOptions::default() };
    Service::new(store, options).expect("service")
}

/// Runs a SCRAM conversation as a driver does; returns the error reply of the step that failed.
fn scram_login(
    svc: &Service,
    conn: &mut folio::Connection,
    user: &str,
    password: &str,
    mechanism: &str,
    db: &str,
) -> Result<(), Document> {
    use folio::testing::{Mechanism, ScramClient as Client};
    let mech = Mechanism::from_name(mechanism).expect("mechanism");
    let mut client = Client::new(mech, user, password);
    let bin = |bytes: Vec<u8>| bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes };
    let payload = |reply: &Document| match reply.get("payload") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        _ => Vec::new(),
    };
    let ok = |reply: &Document| number(reply.get("ok").unwrap_or(&Bson::Null)) == Some(1.0);
    let start =
        doc! { "saslStart": 1, "mechanism": mechanism, "payload": bin(client.first()), "$db": db };
    let reply = svc.dispatch(conn, start).body;
    if !ok(&reply) {
        return Err(reply);
    }
    let last = client.last(&payload(&reply)).expect("client-final");
    let cont = doc! { "saslContinue": 1, "conversationId": 1, "payload": bin(last), "$db": db };
    let reply = svc.dispatch(conn, cont).body;
    if !ok(&reply) {
        return Err(reply);
    }
    assert!(client.verify_server(&payload(&reply)), "the server's signature does not verify");
    assert_eq!(reply.get_bool("done").ok(), Some(false));
    let end =
        doc! { "saslContinue": 1, "conversationId": 1, "payload": bin(Vec::new()), "$db": db };
    let reply = svc.dispatch(conn, end).body;
    if !ok(&reply) || reply.get_bool("done").ok() != Some(true) {
        return Err(reply);
    }
    Ok(())
}

fn parse_json(line: &str, file: &Path, lineno: usize) -> Document {
    let value: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}:{lineno}: bad JSON: {e}", file.display()));
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => d,
        other => panic!("{}:{lineno}: expected a document, got {other:?}", file.display()),
    }
}

fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

/// Checks that `actual` has every field of `expected`; returns the first difference.
fn matches(expected: &Bson, actual: Option<&Bson>, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Bson::String(s), a) if s == "$$exists" => {
            a.map(|_| ()).ok_or_else(|| format!("{path}: expected a value, found none"))
        }
        (Bson::String(s), a) if s == "$$absent" => match a {
            None => Ok(()),
            Some(v) => Err(format!("{path}: expected no value, found {v}")),
        },
        (_, None) => Err(format!("{path}: missing, expected {expected}")),
        (Bson::Document(e), Some(Bson::Document(a))) => {
            for (k, v) in e {
                matches(v, a.get(k), &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Bson::Array(e), Some(Bson::Array(a))) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected {} elements, found {}: {:?}",
                    e.len(),
                    a.len(),
                    a
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(ev, Some(av), &format!("{path}.{i}"))?;
            }
            Ok(())
        }
        (e, Some(a)) => match (number(e), number(a)) {
            (Some(x), Some(y)) if x == y => Ok(()),
            (Some(_), Some(_)) => Err(format!("{path}: expected {e}, found {a}")),
            _ if e == a => Ok(()),
            _ => Err(format!("{path}: expected {e}, found {a}")),
        },
    }
}

/// The reply seen through the expectation's shape: what a mismatching expectation line is
/// rewritten to under `UPDATE_GOLDENFILES=1` (values that match stay as written).
fn regenerate(expected: &Bson, actual: Option<&Bson>) -> Bson {
    let absent = || Bson::String("$$absent".to_string());
    match (expected, actual) {
        (Bson::String(s), Some(_)) if s == "$$exists" => expected.clone(),
        (Bson::String(s), None) if s == "$$absent" => expected.clone(),
        (_, None) => absent(),
        (Bson::Document(e), Some(Bson::Document(a))) => {
            let mut out = Document::new();
            for (k, v) in e {
                out.insert(k.clone(), regenerate(v, a.get(k)));
            }
            Bson::Document(out)
        }
        (Bson::Array(e), Some(Bson::Array(a))) if e.len() == a.len() => {
            Bson::Array(e.iter().zip(a).map(|(ev, av)| regenerate(ev, Some(av))).collect())
        }
        (e, Some(a)) if matches(e, Some(a), "").is_ok() => e.clone(),
        (_, Some(a)) => a.clone(),
    }
}

/// serde_json's compact output with a space after `:` and `,`, as the scripts are written.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.begin_array_value(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// A document as one script line (relaxed Extended JSON).
fn script_line(d: Document) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    serde::Serialize::serialize(&Bson::Document(d).into_relaxed_extjson(), &mut ser)
        .expect("serialize");
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn update_golden() -> bool {
    std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1")
}

fn run_script(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read script");
    let mut rewritten: Vec<String> = text.lines().map(str::to_string).collect();
    let mut changed = false;
    let svc = service(text.lines().any(|l| l.trim() == "% auth"));
    let mut connections: HashMap<String, folio::Connection> = HashMap::new();
    let mut current = String::from("default");
    connections.insert(current.clone(), transport(svc.connect("127.0.0.1:40000")));
    let mut sessions: HashMap<String, Document> = HashMap::new();
    let mut failures = Vec::new();
    let mut last_reply: Option<(usize, Document)> = None;
    let mut last_cursor: Option<i64> = None;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let with_cursor;
        let line = match last_cursor {
            Some(id) if raw.contains("$$cursor") => {
                with_cursor = raw
                    .replace("\"$$cursor\"", &format!("{{\"$numberLong\": \"{id}\"}}"))
                    .replace("$$cursor", &id.to_string());
                with_cursor.trim()
            }
            _ => raw.trim(),
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(directive) = line.strip_prefix('%') {
            let words: Vec<&str> = directive.split_whitespace().collect();
            match words.as_slice() {
                ["auth"] => {}
                ["connection", name, rest @ ..] => {
                    let remote = rest.first().copied().unwrap_or("127.0.0.1:40000");
                    current = name.to_string();
                    connections
                        .entry(current.clone())
                        .or_insert_with(|| transport(svc.connect(remote)));
                }
                [verb @ ("login" | "login-fails"), user, password, mechanism, db] => {
                    let conn = connections.get_mut(&current).expect("connection");
                    let outcome = scram_login(&svc, conn, user, password, mechanism, db);
                    match (*verb, outcome) {
                        ("login", Ok(())) => {}
                        ("login", Err(reply)) => failures
                            .push(format!("{}:{lineno}: login failed: {reply}", file.display())),
                        (_, Ok(())) => failures.push(format!(
                            "{}:{lineno}: login succeeded, expected failure",
                            file.display()
                        )),
                        (_, Err(reply)) => {
                            if reply.get_i32("code").ok() != Some(18) {
                                failures.push(format!(
                                    "{}:{lineno}: expected AuthenticationFailed, got {reply}",
                                    file.display()
                                ));
                            }
                        }
                    }
                }
                _ => panic!("{}:{lineno}: unknown directive {line}", file.display()),
            }
            continue;
        }
        if let Some(pos) = line.find("> ").filter(|p| !line[..*p].contains('{')) {
            let session = &line[..pos];
            let mut cmd = parse_json(&line[pos + 2..], file, lineno);
            if !cmd.contains_key("$db") {
                cmd.insert("$db", "test");
            }
            if !session.is_empty() {
                let lsid = sessions
                    .entry(session.to_string())
                    .or_insert_with(|| doc! { "id": bson::Uuid::new() })
                    .clone();
                // `"$$lsids"` as a top-level value stands for `[this session's lsid]`.
                let placeholders: Vec<String> = cmd
                    .iter()
                    .filter(|(_, v)| v.as_str() == Some("$$lsids"))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in placeholders {
                    cmd.insert(k, vec![Bson::Document(lsid.clone())]);
                }
                cmd.insert("lsid", lsid);
            }
            let conn = connections.get_mut(&current).expect("connection");
            let reply = transported(svc.dispatch(conn, cmd));
            if let Ok(id) = reply.get_document("cursor").and_then(|c| c.get_i64("id"))
                && id != 0
            {
                last_cursor = Some(id);
            }
            last_reply = Some((lineno, reply));
        } else {
            let expected = parse_json(line, file, lineno);
            let Some((cmd_line, reply)) = last_reply.take() else {
                panic!("{}:{lineno}: expectation without a command", file.display());
            };
            let expected = Bson::Document(expected);
            let actual = Bson::Document(reply.clone());
            if let Err(diff) = matches(&expected, Some(&actual), "reply") {
                if let Bson::Document(d) = regenerate(&expected, Some(&actual)) {
                    let indent = &raw[..raw.len() - raw.trim_start().len()];
                    rewritten[i] = format!("{indent}{}", script_line(d));
                    changed = true;
                }
                failures.push(format!(
                    "{}:{cmd_line}: {diff}\n    full reply: {reply}",
                    file.display()
                ));
            }
        }
    }
    if update_golden() {
        if changed {
            let mut out = rewritten.join("\n");
            out.push('\n');
            std::fs::write(file, out).expect("rewrite script");
        }
        failures.clear();
    }
    // Whatever the script did, indexes and documents must still agree.
    let txn = svc.store().begin().expect("begin");
    for problem in folio::verify(txn.as_ref()).expect("verify") {
        failures.push(format!("{}: verify: {problem}", file.display()));
    }
    failures
}

#[test]
fn command_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/commands");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("script dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        failures.extend(run_script(f));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn regenerated_expectations_keep_their_shape() {
    let expected = doc! {
        "n": 1, "ok": 1.0, "cursor": "$$exists", "gone": "$$absent", "list": [1, 2],
        "code": 11000,
    };
    let actual = doc! {
        "n": 2_i64, "ok": 1, "cursor": {"id": 0}, "gone": "here", "list": [1, 3], "extra": true,
    };
    let got = regenerate(&Bson::Document(expected), Some(&Bson::Document(actual)));
    let Bson::Document(got) = got else { panic!("not a document: {got}") };
    assert_eq!(
        script_line(got),
        r#"{"n": 2, "ok": 1.0, "cursor": "$$exists", "gone": "here", "list": [1, 3], "code": "$$absent"}"#
    );
}

#[test]
fn transaction_lifetime_limit_aborts_the_transaction() {
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let options = ServiceOptions { transaction_lifetime_secs: 1, ..ServiceOptions::default() };
    let svc = Service::new(store, options).expect("service");
    let mut conn = svc.connect("test");
    let lsid = doc! { "id": bson::Uuid::new() };
    let insert = doc! {
        "insert": "c", "documents": [{ "_id": 1 }], "$db": "test", "lsid": lsid.clone(),
        "txnNumber": 1_i64, "startTransaction": true, "autocommit": false,
    };
    let reply = svc.dispatch(&mut conn, insert).body;
    assert_eq!(reply.get_f64("ok").ok(), Some(1.0), "{reply}");
    // Still within its lifetime: the reaper leaves it alone.
    svc.tick();
    let read = doc! {
        "find": "c", "filter": {}, "$db": "test", "lsid": lsid.clone(), "txnNumber": 1_i64,
        "autocommit": false,
    };
    let reply = svc.dispatch(&mut conn, read).body;
    assert_eq!(reply.get_f64("ok").ok(), Some(1.0), "{reply}");
    let commit = doc! {
        "commitTransaction": 1, "$db": "admin", "lsid": lsid.clone(), "txnNumber": 1_i64,
        "autocommit": false,
    };
    // Past its lifetime: the reaper aborts it, and the commit finds no transaction.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    svc.tick();
    let reply = svc.dispatch(&mut conn, commit).body;
    assert_eq!(reply.get_i32("code").ok(), Some(251), "{reply}");
    assert!(
        reply.get_str("errmsg").unwrap_or("").contains("transactionLifetimeLimitSeconds"),
        "{reply}"
    );
    let find = doc! { "find": "c", "filter": {}, "$db": "test" };
    let reply = svc.dispatch(&mut conn, find).body;
    let batch =
        reply.get_document("cursor").and_then(|c| c.get_array("firstBatch")).expect("batch");
    assert!(batch.is_empty(), "the aborted transaction's insert is visible: {reply}");
}

#[test]
fn kill_op_interrupts_a_write_waiting_for_a_transaction() {
    let svc = Arc::new(service(false));
    let mut conn = svc.connect("test");
    let lsid = doc! { "id": bson::Uuid::new() };
    let run =
        |svc: &Service, conn: &mut folio::Connection, cmd: Document| svc.dispatch(conn, cmd).body;
    let r =
        run(&svc, &mut conn, doc! { "insert": "k", "documents": [{ "_id": 1 }], "$db": "test" });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    // A transaction holds the document...
    let r = run(
        &svc,
        &mut conn,
        doc! {
            "update": "k", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "a": 1 } } }],
            "$db": "test", "lsid": lsid.clone(), "txnNumber": 1_i64, "startTransaction": true,
            "autocommit": false,
        },
    );
    assert_eq!(r.get_i32("n").ok(), Some(1), "{r}");
    // ...so a plain write to it waits.
    let writer = {
        let svc = svc.clone();
        std::thread::spawn(move || {
            let mut conn = svc.connect("writer");
            let cmd = doc! {
                "update": "k", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "b": 1 } } }],
                "$db": "test",
            };
            svc.dispatch(&mut conn, cmd).body
        })
    };
    let mut opid = None;
    for _ in 0..100 {
        let r = run(&svc, &mut conn, doc! { "currentOp": 1, "$db": "admin" });
        opid = r.get_array("inprog").ok().and_then(|ops| {
            ops.iter().filter_map(Bson::as_document).find_map(|op| {
                (op.get_document("command").ok()?.get_str("update").ok() == Some("k"))
                    .then(|| op.get_i32("opid").ok())
                    .flatten()
            })
        });
        if opid.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let opid = opid.expect("the waiting update shows in currentOp");
    let r = run(&svc, &mut conn, doc! { "killOp": 1, "op": opid, "$db": "admin" });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let r = writer.join().expect("writer");
    let code = r
        .get_array("writeErrors")
        .ok()
        .and_then(|e| e.first()?.as_document()?.get_i32("code").ok())
        .or_else(|| r.get_i32("code").ok());
    assert_eq!(code, Some(11601), "the killed write reports Interrupted: {r}");
}

#[test]
fn only_commands_that_cannot_wait_may_skip_the_blocking_pool() {
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let svc = Service::new(store.clone(), ServiceOptions::default()).expect("service");
    for read in [
        doc! { "find": "c", "filter": {} },
        doc! { "getMore": 1_i64, "collection": "c" },
        doc! { "aggregate": "c", "pipeline": [{ "$match": {} }, { "$group": { "_id": "$a" } }] },
        doc! { "hello": 1 },
        doc! { "update": "c", "updates": [], "txnNumber": 1_i64, "autocommit": false },
        doc! { "insert": "c", "documents": [{}], "startTransaction": true, "autocommit": false },
    ] {
        assert!(svc.never_waits_on_others(&read), "{read}");
    }
    for may_wait in [
        doc! { "insert": "c", "documents": [{}] },
        doc! { "update": "c", "updates": [] },
        doc! { "commitTransaction": 1 },
        doc! { "commitTransaction": 1, "txnNumber": 1_i64, "autocommit": false },
        doc! { "insert": "c", "documents": [{}], "autocommit": true },
        doc! { "findAndModify": "c", "query": {} },
        doc! { "aggregate": "c", "pipeline": [{ "$match": {} }, { "$out": "d" }] },
        doc! { "aggregate": "c", "pipeline": [{ "$merge": { "into": "d" } }] },
        doc! { "aggregate": "c", "pipeline": "not an array" },
        doc! { "endSessions": [] },
        doc! { "killSessions": [] },
        doc! { "killAllSessions": [] },
        doc! {},
    ] {
        assert!(!svc.never_waits_on_others(&may_wait), "{may_wait}");
    }
    // With test commands on, a fail point may block any command.
    let options = ServiceOptions { test_commands: true, ..ServiceOptions::default() };
    let svc = Service::new(store, options).expect("service");
    assert!(!svc.never_waits_on_others(&doc! { "find": "c", "filter": {} }));
}

#[test]
fn single_writes_run_on_the_event_loop_until_they_would_wait() {
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let svc = Service::new(store.clone(), ServiceOptions::default()).expect("service");
    for one in [
        doc! { "insert": "c", "documents": [{}] },
        doc! { "update": "c", "updates": [{ "q": {}, "u": {} }] },
        doc! { "delete": "c", "deletes": [{ "q": {}, "limit": 1 }] },
        doc! { "findAndModify": "c", "query": {} },
        doc! { "commitTransaction": 1, "txnNumber": 1_i64, "autocommit": false },
        doc! { "abortTransaction": 1, "txnNumber": 1_i64, "autocommit": false },
    ] {
        assert!(svc.may_try_on_event_loop(&one.clone().into()), "{one}");
    }
    // An insert's documents kept apart as they came count the same way.
    let apart = |n: usize| folio::Incoming {
        cmd: doc! { "insert": "c" },
        documents: Some(
            (0..n)
                .map(|i| folio_wire::SequenceDocument::from_document(&doc! { "_id": i as i32 }))
                .collect::<Result<_, _>>()
                .expect("encodable"),
        ),
    };
    assert!(svc.may_try_on_event_loop(&apart(1)));
    assert!(!svc.may_try_on_event_loop(&apart(2)));
    for many in [
        doc! { "insert": "c", "documents": [{}, {}] },
        doc! { "update": "c", "updates": [] },
        doc! { "delete": "c", "deletes": "bad" },
        doc! { "bulkWrite": 1, "ops": [{ "insert": 0, "document": {} }] },
        doc! { "create": "c" },
        doc! { "aggregate": "c", "pipeline": [{ "$out": "d" }] },
    ] {
        assert!(!svc.may_try_on_event_loop(&many.clone().into()), "{many}");
    }

    let mut conn = svc.connect("event-loop");
    let mut run = |cmd: Document| svc.dispatch(&mut conn, cmd).body;
    let r = run(doc! { "insert": "c", "documents": [{ "_id": 1, "n": 0 }], "$db": "test" });
    assert_eq!(r.get_i32("n").ok(), Some(1), "{r}");
    // A transaction holds the document.
    let lsid = doc! { "id": bson::Uuid::new() };
    let txn = |extra: Document| {
        let mut cmd = extra;
        cmd.insert("lsid", lsid.clone());
        cmd.insert("txnNumber", 1_i64);
        cmd.insert("autocommit", false);
        cmd.insert("$db", "test");
        cmd
    };
    let mut first = txn(doc! {
        "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "n": 1 } } }],
    });
    first.insert("startTransaction", true);
    let r = run(first);
    assert_eq!(r.get_i32("nModified").ok(), Some(1), "{r}");

    // A write of the same document outside the transaction would wait: it is handed back
    // without having changed anything, and nothing is acknowledged.
    let inc = doc! {
        "update": "c", "updates": [{ "q": { "_id": 1 }, "u": { "$inc": { "n": 10 } } }],
        "lsid": { "id": bson::Uuid::new() }, "txnNumber": 7_i64, "$db": "test",
    };
    let mut loop_conn = svc.connect("event-loop-2");
    let back =
        svc.dispatch_on_event_loop(&mut loop_conn, inc.clone().into()).expect_err("would wait");
    assert_eq!(back.cmd, inc, "the command comes back whole");
    assert!(back.documents.is_none());
    // The transaction commits on the event loop; its reply owes the commit's durability.
    let mut commit = txn(doc! { "commitTransaction": 1 });
    commit.insert("$db", "admin");
    let reply = svc
        .dispatch_on_event_loop(&mut loop_conn, commit.into())
        .expect("a commit waits for nobody");
    assert_eq!(reply.body.get_f64("ok").ok(), Some(1.0), "{}", reply.body);
    let owed = reply.unsynced.expect("the commit's durability is owed");
    let (tx, rx) = std::sync::mpsc::channel();
    svc.when_durable(owed, Box::new(move |r| tx.send(r.is_ok()).expect("send")));
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
    // Now the handed-back write runs on the event loop, once: its retry replays the outcome,
    // and it too is acknowledged only once durable.
    for _ in 0..2 {
        let reply = svc.dispatch_on_event_loop(&mut loop_conn, inc.clone().into()).expect("runs");
        assert_eq!(reply.body.get_i32("nModified").ok(), Some(1), "{}", reply.body);
        assert!(reply.unsynced.is_some());
    }
    let r = run(doc! { "find": "c", "filter": {}, "$db": "test" });
    let n = r.get_document("cursor").and_then(|c| c.get_array("firstBatch")).expect("batch")[0]
        .as_document()
        .and_then(|d| d.get_i32("n").ok());
    assert_eq!(n, Some(11), "{r}");
}

/// The statements of one write command share a transaction; one that meets a transaction's
/// write commits the statements before it, waits for that transaction, and goes on.
#[test]
fn a_batch_commits_what_it_did_before_waiting_for_a_conflict() {
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let svc = Arc::new(Service::new(store, ServiceOptions::default()).expect("service"));
    let run = |cmd: Document| svc.dispatch(&mut svc.connect("batch"), cmd).body;
    let r = run(doc! { "create": "c", "$db": "test" });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let lsid = doc! { "id": bson::Uuid::new() };
    let r = run(doc! {
        "insert": "c", "documents": [{ "_id": 2, "by": "txn" }], "lsid": lsid.clone(),
        "txnNumber": 1_i64, "startTransaction": true, "autocommit": false, "$db": "test",
    });
    assert_eq!(r.get_i32("n").ok(), Some(1), "{r}");
    let writer = {
        let svc = svc.clone();
        std::thread::spawn(move || {
            let cmd = doc! {
                "insert": "c", "documents": [{ "_id": 1 }, { "_id": 2 }, { "_id": 3 }],
                "ordered": false, "$db": "test",
            };
            svc.dispatch(&mut svc.connect("writer"), cmd).body
        })
    };
    // The first statement is committed while the second waits for the transaction.
    let ids = || {
        let r = run(doc! { "find": "c", "filter": {}, "sort": { "_id": 1 }, "$db": "test" });
        r.get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .expect("batch")
            .iter()
            .filter_map(|d| d.as_document()?.get_i32("_id").ok())
            .collect::<Vec<_>>()
    };
    let start = std::time::Instant::now();
    while ids() != [1] {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", ids());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!writer.is_finished());
    let r = run(doc! {
        "abortTransaction": 1, "lsid": lsid, "txnNumber": 1_i64, "autocommit": false,
        "$db": "admin",
    });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let r = writer.join().expect("writer");
    assert_eq!(r.get_i32("n").ok(), Some(3), "{r}");
    assert_eq!(ids(), [1, 2, 3]);
}

#[test]
fn ttl_pass_deletes_expired_documents_only() {
    let svc = service(false);
    let mut conn = svc.connect("ttl");
    let mut run = |mut cmd: Document| {
        if !cmd.contains_key("$db") {
            cmd.insert("$db", "test");
        }
        svc.dispatch(&mut conn, cmd).body
    };
    let now = bson::DateTime::now().timestamp_millis();
    let at = |offset_secs: i64| bson::DateTime::from_millis(now + offset_secs * 1000);
    let r = run(doc! { "insert": "sessions", "documents": [
        { "_id": 1, "at": at(-3600) },
        { "_id": 2, "at": at(0) },
        { "_id": 3, "at": [at(3600), at(-3600)] },
        { "_id": 4 },
        { "_id": 5, "at": "yesterday" },
        { "_id": 6, "at": at(-30) },
    ] });
    assert_eq!(r.get_i32("n").ok(), Some(6), "{r}");
    let r = run(doc! { "createIndexes": "sessions", "indexes": [
        { "key": { "at": 1 }, "name": "at_ttl", "expireAfterSeconds": 60 },
    ] });
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    // A compound index's TTL option is ignored, as in MongoDB.
    run(doc! { "insert": "other", "documents": [{ "_id": 1, "a": 1, "at": at(-3600) }] });
    run(doc! { "createIndexes": "other", "indexes": [
        { "key": { "at": 1, "a": 1 }, "name": "compound", "expireAfterSeconds": 1 },
    ] });

    let deleted = folio::testing::ttl_pass(&svc).expect("ttl pass");
    assert_eq!(deleted, 2, "the hour-old document and the array holding an hour-old date");
    let r = run(doc! { "find": "sessions", "filter": {}, "sort": { "_id": 1 } });
    let ids: Vec<i32> = r
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .expect("batch")
        .iter()
        .filter_map(|d| d.as_document().and_then(|d| d.get_i32("_id").ok()))
        .collect();
    assert_eq!(ids, vec![2, 4, 5, 6]);
    let r = run(doc! { "count": "other", "query": {} });
    assert_eq!(r.get_i32("n").ok(), Some(1), "{r}");
    let status = run(doc! { "serverStatus": 1, "$db": "admin" });
    let ttl = status.get_document("metrics").and_then(|m| m.get_document("ttl")).expect("ttl");
    assert_eq!(ttl.get_i64("deletedDocuments").ok(), Some(2), "{ttl}");
    assert_eq!(ttl.get_i64("passes").ok(), Some(1), "{ttl}");
    let store = svc.store();
    let txn = store.begin().expect("begin");
    assert!(folio::verify(txn.as_ref()).expect("verify").is_empty());
}

#[test]
fn validate_reports_index_entries_that_disagree_with_documents() {
    let svc = service(false);
    let mut conn = svc.connect("validate");
    let mut run = |cmd: Document| svc.dispatch(&mut conn, cmd).body;
    run(
        doc! { "insert": "v", "documents": [{ "_id": 1, "a": 1 }, { "_id": 2, "a": 2 }], "$db": "test" },
    );
    run(
        doc! { "createIndexes": "v", "indexes": [{ "key": { "a": 1 }, "name": "a_1" }], "$db": "test" },
    );
    let r = run(doc! { "validate": "v", "$db": "test" });
    assert_eq!(r.get_bool("valid").ok(), Some(true), "{r}");

    // Lose one index entry and plant one that no document calls for, behind the catalog's back.
    let store = svc.store();
    let mut txn = store.begin().expect("begin");
    let meta = folio::testing::get_collection(txn.as_ref(), "test", "v")
        .expect("catalog")
        .expect("collection");
    let index = meta.indexes.iter().find(|i| i.name() == "a_1").expect("index");
    let prefix = folio::testing::index_prefix(meta.id, index.id);
    let end = folio::testing::prefix_end(&prefix);
    let (first, value) = txn
        .scan(std::ops::Bound::Included(&prefix), std::ops::Bound::Excluded(&end), false)
        .expect("scan")
        .next()
        .expect("an entry")
        .expect("entry");
    let (first, value) = (first.to_vec(), value.to_vec());
    assert!(txn.delete(&first).expect("delete").is_ok(), "no conflict");
    let mut stray = prefix.clone();
    stray.extend_from_slice(b"\xfe\xfe");
    assert!(txn.put(&stray, b"").expect("put").is_ok(), "no conflict");
    txn.commit().expect("commit");

    let r = run(doc! { "validate": "v", "$db": "test" });
    assert_eq!(r.get_bool("valid").ok(), Some(false), "{r}");
    assert_eq!(r.get_array("missingIndexEntries").map(Vec::len).ok(), Some(1), "{r}");
    assert_eq!(r.get_array("extraIndexEntries").map(Vec::len).ok(), Some(1), "{r}");
    assert_eq!(r.get_array("errors").map(Vec::len).ok(), Some(2), "{r}");
    assert_eq!(
        r.get_document("keysPerIndex").and_then(|k| k.get_i32("a_1")).ok(),
        Some(2),
        "one entry lost, one planted: {r}"
    );
    // Undone, the collection validates again.
    let mut txn = store.begin().expect("begin");
    assert!(txn.delete(&stray).expect("delete").is_ok(), "no conflict");
    assert!(txn.put(&first, &value).expect("put").is_ok(), "no conflict");
    txn.commit().expect("commit");
    let r = run(doc! { "validate": "v", "$db": "test" });
    assert_eq!(r.get_bool("valid").ok(), Some(true), "{r}");
}

#[test]
fn fail_command_block_connection_delays_the_command_for_its_app_only() {
    let svc = service(false);
    let mut app = svc.connect("app");
    let mut other = svc.connect("other");
    let hello =
        doc! { "hello": 1, "client": { "application": { "name": "slowApp" } }, "$db": "admin" };
    assert_eq!(svc.dispatch(&mut app, hello).body.get_f64("ok").ok(), Some(1.0));
    let r = svc.dispatch(&mut other, doc! {
        "configureFailPoint": "failCommand",
        "mode": "alwaysOn",
        "data": { "failCommands": ["ping"], "blockConnection": true, "blockTimeMS": 300, "appName": "slowApp" },
        "$db": "admin",
    });
    assert_eq!(r.body.get_f64("ok").ok(), Some(1.0), "{}", r.body);
    let timed = |conn: &mut folio::Connection| {
        let started = std::time::Instant::now();
        let r = svc.dispatch(conn, doc! { "ping": 1, "$db": "admin" });
        assert_eq!(r.body.get_f64("ok").ok(), Some(1.0), "{}", r.body);
        started.elapsed()
    };
    assert!(timed(&mut app) >= std::time::Duration::from_millis(300));
    assert!(timed(&mut other) < std::time::Duration::from_millis(300));
    svc.dispatch(
        &mut other,
        doc! { "configureFailPoint": "failCommand", "mode": "off", "$db": "admin" },
    );
}

/// A find without a projection hands its documents to a transport as they are stored, apart
/// from the body; other connections, and finds that project, get them decoded in the body.
#[test]
fn finds_hand_stored_documents_to_the_transport() {
    let svc = service(false);
    let mut plain = svc.connect("embedded");
    let mut wire = transport(svc.connect("wire"));
    let insert =
        doc! { "insert": "c", "documents": [{ "_id": 1, "a": "x" }, { "_id": 2 }], "$db": "test" };
    assert_eq!(svc.dispatch(&mut plain, insert).body.get_i32("n").ok(), Some(2));
    let find = doc! { "find": "c", "filter": { "_id": { "$gte": 1 } }, "$db": "test" };
    let batch = |body: &Document| -> Vec<Bson> {
        body.get_document("cursor").expect("cursor").get_array("firstBatch").expect("batch").clone()
    };

    let returned = |svc: &Service, conn: &mut folio::Connection| {
        let status = svc.dispatch(conn, doc! { "serverStatus": 1, "$db": "admin" }).body;
        let metrics = status.get_document("metrics").expect("metrics");
        metrics.get_document("document").expect("document").get_i64("returned").expect("returned")
    };
    let before = returned(&svc, &mut plain);
    let reply = svc.dispatch(&mut wire, find.clone());
    // Stored documents count as returned, as decoded ones do.
    assert_eq!(returned(&svc, &mut plain), before + 2);
    let raw = reply.raw_batch.as_ref().expect("stored documents");
    assert_eq!(raw.field, "firstBatch");
    assert_eq!(raw.docs.len(), 2);
    assert!(batch(&reply.body).is_empty(), "the body's batch waits for the stored documents");
    let whole = transported(reply);
    let expected =
        vec![Bson::Document(doc! { "_id": 1, "a": "x" }), Bson::Document(doc! { "_id": 2 })];
    assert_eq!(batch(&whole), expected);

    let reply = svc.dispatch(&mut plain, find.clone());
    assert!(reply.raw_batch.is_none());
    assert_eq!(batch(&reply.body), expected);

    let mut projected = find;
    projected.insert("projection", doc! { "a": 1 });
    let reply = svc.dispatch(&mut wire, projected);
    assert!(reply.raw_batch.is_none());
    assert_eq!(batch(&reply.body).len(), 2);
}
