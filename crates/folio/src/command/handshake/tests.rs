//! Handshake command tests, run through [`Service::dispatch`] as a client would.

use std::sync::Arc;
use std::time::Instant;

use bson::{Bson, Document, doc};

use crate::command::{Connection, Service, ServiceOptions};
use crate::error::Result;
use crate::mvcc::{Ts, Txn, TxnId, TxnStore};

/// A store that only knows its last commit time; handshake commands never begin transactions.
struct ClockStore;

impl TxnStore for ClockStore {
    fn begin(&self) -> Result<Box<dyn Txn>> {
        Err(crate::err!(InternalError, "not a real store"))
    }
    fn begin_read_only_at(&self, _: Ts) -> Result<Box<dyn Txn>> {
        Err(crate::err!(InternalError, "not a real store"))
    }
    fn last_committed(&self) -> Ts {
        Ts::new(1_700_000_000, 7)
    }
    fn wait_for(&self, _: TxnId, _: Option<Instant>) -> bool {
        true
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

fn service() -> Service {
    let options = ServiceOptions {
        repl_set_name: "rsTest".into(),
        advertise_host: "db.example:27999".into(),
        test_commands: true,
        transaction_lifetime_secs: 42,
        max_conns: 100,
        cmd_line: doc! { "argv": ["folio", "serve"], "parsed": { "net": { "port": 27999 } } },
        ..ServiceOptions::default()
    };
    Service::new(Arc::new(ClockStore), options).expect("service")
}

fn run(svc: &Service, conn: &mut Connection, cmd: Document) -> Document {
    svc.dispatch(conn, cmd).body
}

fn ok(reply: &Document) -> bool {
    reply.get("ok") == Some(&Bson::Double(1.0))
}

#[test]
fn hello_describes_a_one_member_replica_set_primary() {
    let svc = service();
    let mut conn = svc.connect("127.0.0.1:5000");
    let r = run(&svc, &mut conn, doc! { "hello": 1, "$db": "admin" });
    assert!(ok(&r), "{r}");
    assert_eq!(r.get_bool("isWritablePrimary").ok(), Some(true));
    assert!(!r.contains_key("ismaster"));
    assert_eq!(r.get_bool("secondary").ok(), Some(false));
    assert_eq!(r.get_str("setName").ok(), Some("rsTest"));
    assert_eq!(r.get_array("hosts").expect("hosts"), &vec![Bson::from("db.example:27999")]);
    assert_eq!(r.get_str("primary").ok(), Some("db.example:27999"));
    assert_eq!(r.get_str("me").ok(), Some("db.example:27999"));
    assert_eq!(r.get_i32("logicalSessionTimeoutMinutes").ok(), Some(30));
    assert_eq!(r.get_i32("minWireVersion").ok(), Some(0));
    assert_eq!(r.get_i32("maxWireVersion").ok(), Some(25));
    assert_eq!(r.get_i32("maxBsonObjectSize").ok(), Some(16_777_216));
    assert_eq!(r.get_i32("maxMessageSizeBytes").ok(), Some(48_000_000));
    assert_eq!(r.get_i32("maxWriteBatchSize").ok(), Some(100_000));
    assert_eq!(r.get_i64("connectionId").ok(), Some(conn.id as i64));
    assert_eq!(r.get_bool("readOnly").ok(), Some(false));
    assert!(r.get_datetime("localTime").is_ok());
    assert!(r.get_object_id("electionId").is_ok());
    let version = r.get_document("topologyVersion").expect("topologyVersion");
    assert_eq!(version.get_i64("counter").ok(), Some(0));
    assert!(version.get_object_id("processId").is_ok());
    assert!(!r.contains_key("helloOk"));
    assert!(!r.contains_key("compression"));
    // The cluster time is written after the body's fields as the reply is encoded, as the
    // same fields merged into the body would be.
    let reply = svc.dispatch(&mut conn, doc! { "hello": 1, "$db": "admin" });
    assert!(!reply.body.contains_key("operationTime"));
    let encoded = reply.encode_body().expect("encodes");
    let encoded = bson::RawDocument::from_bytes(&encoded).expect("valid BSON");
    let encoded = folio_wire::to_document(encoded).expect("decodes");
    let mut merged = reply.clone();
    merged.merge_times();
    assert_eq!(encoded, merged.body);
    let ts = merged.body.get_timestamp("operationTime").expect("operationTime");
    let cluster = merged.body.get_document("$clusterTime").expect("$clusterTime");
    assert_eq!(cluster.get_timestamp("clusterTime").ok(), Some(ts));
    let signature = cluster.get_document("signature").expect("signature");
    assert_eq!(signature.get_binary_generic("hash").ok(), Some(&vec![0; 20]));
    assert_eq!(signature.get_i64("keyId").ok(), Some(0));
    let keys: Vec<&str> = merged.body.keys().map(String::as_str).collect();
    assert_eq!(keys[keys.len() - 2..], ["operationTime", "$clusterTime"]);
}

#[test]
fn is_master_says_ismaster_and_hello_ok_is_echoed() {
    let svc = service();
    let mut conn = svc.connect("c");
    for name in ["isMaster", "ismaster"] {
        let r = run(&svc, &mut conn, doc! { name: 1, "helloOk": true, "$db": "admin" });
        assert!(ok(&r), "{r}");
        assert_eq!(r.get_bool("ismaster").ok(), Some(true), "{name}");
        assert!(!r.contains_key("isWritablePrimary"));
        assert_eq!(r.get_bool("helloOk").ok(), Some(true));
    }
}

#[test]
fn hello_records_app_name_and_negotiates_compression() {
    let svc = service();
    let mut conn = svc.connect("c");
    conn.supported_compressors = vec!["zstd".into(), "zlib".into()];
    let r = run(
        &svc,
        &mut conn,
        doc! {
            "hello": 1,
            "client": { "application": { "name": "myApp" }, "driver": { "name": "x" } },
            "compression": ["snappy", "zlib", "zstd", "zlib"],
            "$db": "admin",
        },
    );
    assert!(ok(&r), "{r}");
    assert_eq!(conn.app_name.as_deref(), Some("myApp"));
    assert_eq!(
        r.get_array("compression").expect("compression"),
        &vec![Bson::from("zlib"), Bson::from("zstd")]
    );
    assert_eq!(conn.compressor.as_deref(), Some("zlib"));

    let mut other = svc.connect("d");
    let r = run(&svc, &mut other, doc! { "hello": 1, "compression": ["snappy"], "$db": "admin" });
    assert!(!r.contains_key("compression"));
    assert_eq!(other.compressor, None);

    let r = run(&svc, &mut other, doc! { "hello": 1, "compression": "zlib", "$db": "admin" });
    assert_eq!(r.get_str("codeName").ok(), Some("TypeMismatch"));
}

#[test]
fn build_info_agrees_with_the_wire_version() {
    let svc = service();
    let mut conn = svc.connect("c");
    for name in ["buildInfo", "buildinfo"] {
        let r = run(&svc, &mut conn, doc! { name: 1, "$db": "test" });
        assert!(ok(&r), "{r}");
        assert_eq!(r.get_str("version").ok(), Some("8.0.0"));
        assert_eq!(
            r.get_array("versionArray").expect("versionArray"),
            &vec![Bson::Int32(8), Bson::Int32(0), Bson::Int32(0), Bson::Int32(0)]
        );
        assert_eq!(r.get_str("folioVersion").ok(), Some(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn ping_and_unknown_commands() {
    let svc = service();
    let mut conn = svc.connect("c");
    let r = run(&svc, &mut conn, doc! { "ping": 1, "$db": "admin" });
    assert!(ok(&r), "{r}");
    let r = run(&svc, &mut conn, doc! { "frobnicate": 1, "$db": "admin" });
    assert_eq!(r.get_i32("code").ok(), Some(59));
    assert_eq!(r.get_str("errmsg").ok(), Some("no such command: 'frobnicate'"));
}

#[test]
fn get_parameter_forms() {
    let svc = service();
    let mut conn = svc.connect("c");
    let r = run(
        &svc,
        &mut conn,
        doc! { "getParameter": 1, "featureCompatibilityVersion": 1, "$db": "admin" },
    );
    assert!(ok(&r), "{r}");
    assert_eq!(
        r.get_document("featureCompatibilityVersion").ok(),
        Some(&doc! { "version": "8.0" })
    );
    assert!(!r.contains_key("enableTestCommands"));

    let r = run(&svc, &mut conn, doc! { "getParameter": "*", "$db": "admin" });
    assert_eq!(r.get_bool("enableTestCommands").ok(), Some(true));
    assert_eq!(r.get_i32("transactionLifetimeLimitSeconds").ok(), Some(42));
    assert!(r.get_i64("internalQueryMaxMemoryUsageBytesAllOperations").is_ok_and(|n| n > 0), "{r}");
    assert!(r.get_i64("internalQueryMaxMemoryUsageBytesPerOperation").is_ok(), "{r}");

    let r = run(
        &svc,
        &mut conn,
        doc! { "getParameter": { "showDetails": true }, "transactionLifetimeLimitSeconds": 1, "$db": "admin" },
    );
    assert_eq!(
        r.get_document("transactionLifetimeLimitSeconds").ok(),
        Some(&doc! { "value": 42, "settableAtRuntime": true, "settableAtStartup": true })
    );

    let r = run(&svc, &mut conn, doc! { "getParameter": 1, "noSuchThing": 1, "$db": "admin" });
    assert_eq!(r.get_i32("code").ok(), Some(72));
    assert_eq!(r.get_str("errmsg").ok(), Some("no option found to get"));

    let r = run(&svc, &mut conn, doc! { "getParameter": "*", "$db": "test" });
    assert_eq!(r.get_str("codeName").ok(), Some("Unauthorized"));
    assert_eq!(
        r.get_str("errmsg").ok(),
        Some("getParameter may only be run against the admin database.")
    );
}

#[test]
fn get_cmd_line_opts_returns_the_command_line() {
    let svc = service();
    let mut conn = svc.connect("c");
    let r = run(&svc, &mut conn, doc! { "getCmdLineOpts": 1, "$db": "admin" });
    assert!(ok(&r), "{r}");
    assert_eq!(r.get_array("argv").expect("argv").len(), 2);
    assert_eq!(
        r.get_document("parsed").expect("parsed").get_document("net").ok(),
        Some(&doc! { "port": 27999 })
    );
}

#[test]
fn server_status_counts_connections() {
    let svc = service();
    let mut a = svc.connect("a");
    let b = svc.connect("b");
    let r = run(&svc, &mut a, doc! { "serverStatus": 1, "$db": "admin" });
    assert!(ok(&r), "{r}");
    assert_eq!(r.get_str("process").ok(), Some("folio"));
    assert_eq!(r.get_str("version").ok(), Some("8.0.0"));
    assert_eq!(r.get_i64("pid").ok(), Some(i64::from(std::process::id())));
    let c = r.get_document("connections").expect("connections");
    assert_eq!(c.get_i32("current").ok(), Some(2));
    assert_eq!(c.get_i32("available").ok(), Some(98));
    assert_eq!(c.get_i64("totalCreated").ok(), Some(2));
    assert_eq!(
        r.get_document("transactions").expect("transactions").get_i64("totalCommitted").ok(),
        Some(0)
    );

    svc.disconnect(&b);
    let r = run(&svc, &mut a, doc! { "serverStatus": 1, "repl": 0, "$db": "admin" });
    let c = r.get_document("connections").expect("connections");
    assert_eq!(c.get_i32("current").ok(), Some(1));
    assert_eq!(c.get_i64("totalCreated").ok(), Some(2));
    assert!(!r.contains_key("repl"));
}

#[test]
fn small_diagnostics() {
    let svc = service();
    let mut conn = svc.connect("10.1.2.3:4567");
    let r = run(&svc, &mut conn, doc! { "whatsmyuri": 1, "$db": "admin" });
    assert_eq!(r.get_str("you").ok(), Some("10.1.2.3:4567"));

    let r = run(
        &svc,
        &mut conn,
        doc! { "connectionStatus": 1, "showPrivileges": true, "$db": "admin" },
    );
    let auth = r.get_document("authInfo").expect("authInfo");
    assert_eq!(auth.get_array("authenticatedUsers").map(Vec::len).ok(), Some(0));
    assert!(auth.contains_key("authenticatedUserPrivileges"));

    let r = run(&svc, &mut conn, doc! { "hostInfo": 1, "$db": "admin" });
    assert!(r.get_document("system").expect("system").get_i32("numCores").expect("cores") >= 1);

    let r = run(&svc, &mut conn, doc! { "getLog": "startupWarnings", "$db": "admin" });
    assert_eq!(r.get_array("log").map(Vec::len).ok(), Some(0));
    assert!(r.get_i64("totalLinesWritten").is_ok(), "{r}");
    let r = run(&svc, &mut conn, doc! { "getLog": "*", "$db": "admin" });
    assert!(r.get_array("names").expect("names").contains(&Bson::from("startupWarnings")));
    let r = run(&svc, &mut conn, doc! { "getLog": 1, "$db": "admin" });
    assert_eq!(r.get_str("codeName").ok(), Some("TypeMismatch"));
}

#[test]
fn profile_reads_and_sets_levels_per_database() {
    let svc = service();
    let mut conn = svc.connect("test");
    let r = run(&svc, &mut conn, doc! { "profile": -1, "$db": "shop" });
    assert_eq!((r.get_i32("was").ok(), r.get_i64("slowms").ok()), (Some(0), Some(100)), "{r}");
    let r =
        run(&svc, &mut conn, doc! { "profile": 1, "slowms": 20, "sampleRate": 0.5, "$db": "shop" });
    assert_eq!(r.get_i32("was").ok(), Some(0), "{r}");
    let r = run(&svc, &mut conn, doc! { "profile": -1, "$db": "shop" });
    assert_eq!(r.get_i32("was").ok(), Some(1), "{r}");
    assert_eq!((r.get_i64("slowms").ok(), r.get_f64("sampleRate").ok()), (Some(20), Some(0.5)));
    // The level is per database; slowms is the server's.
    let r = run(&svc, &mut conn, doc! { "profile": -1, "$db": "other" });
    assert_eq!((r.get_i32("was").ok(), r.get_i64("slowms").ok()), (Some(0), Some(20)), "{r}");
    let r = run(
        &svc,
        &mut conn,
        doc! { "profile": 0, "filter": { "millis": { "$gt": 5 } }, "$db": "shop" },
    );
    assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
    let r = run(&svc, &mut conn, doc! { "profile": -1, "$db": "shop" });
    assert!(r.get_document("filter").is_ok() && r.contains_key("note"), "{r}");
    let r = run(&svc, &mut conn, doc! { "profile": -1, "filter": "unset", "$db": "shop" });
    assert!(r.get_document("filter").is_ok(), "{r}");
    let r = run(&svc, &mut conn, doc! { "profile": -1, "$db": "shop" });
    assert!(!r.contains_key("filter"), "{r}");
    for (bad, code) in [
        (doc! { "profile": 3, "$db": "shop" }, 2),
        (doc! { "profile": "all", "$db": "shop" }, 2),
        (doc! { "profile": 1, "sampleRate": 2.0, "$db": "shop" }, 2),
        (doc! { "profile": 1, "filter": 5, "$db": "shop" }, 14),
        (doc! { "profile": 1, "bogus": 1, "$db": "shop" }, 40415),
    ] {
        let r = run(&svc, &mut conn, bad.clone());
        assert_eq!(r.get_i32("code").ok(), Some(code), "{bad} -> {r}");
    }
}

#[test]
fn repl_set_get_status_shows_one_primary() {
    let svc = service();
    let mut conn = svc.connect("c");
    let r = run(&svc, &mut conn, doc! { "replSetGetStatus": 1, "$db": "admin" });
    assert!(ok(&r), "{r}");
    assert_eq!(r.get_str("set").ok(), Some("rsTest"));
    assert_eq!(r.get_i32("myState").ok(), Some(1));
    let members = r.get_array("members").expect("members");
    assert_eq!(members.len(), 1);
    let Some(Bson::Document(m)) = members.first() else { panic!("member") };
    assert_eq!(m.get_str("stateStr").ok(), Some("PRIMARY"));
    assert_eq!(m.get_f64("health").ok(), Some(1.0));
    assert_eq!(m.get_str("name").ok(), Some("db.example:27999"));
    assert_eq!(
        m.get_document("optime").expect("optime").get_timestamp("ts").ok(),
        Some(Ts::new(1_700_000_000, 7).to_bson())
    );
}

#[test]
fn list_commands_is_sorted_and_complete() {
    let svc = service();
    let mut conn = svc.connect("c");
    let r = run(&svc, &mut conn, doc! { "listCommands": 1, "$db": "admin" });
    let cmds = r.get_document("commands").expect("commands");
    let names: Vec<&String> = cmds.keys().collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for spec in crate::command::table::COMMANDS {
        let entry = cmds.get_document(spec.name).expect("every command is listed");
        assert_eq!(entry.get_bool("adminOnly").ok(), Some(spec.admin_only), "{}", spec.name);
    }
    assert!(cmds.contains_key("configureFailPoint"), "test commands are on");

    let plain = Service::new(Arc::new(ClockStore), ServiceOptions::default()).expect("service");
    let mut conn = plain.connect("c");
    let r = run(&plain, &mut conn, doc! { "listCommands": 1, "$db": "admin" });
    let cmds = r.get_document("commands").expect("commands");
    assert!(cmds.contains_key("hello"));
    assert!(!cmds.contains_key("configureFailPoint"), "test commands are off");
}

#[test]
fn load_balanced_mode_answers_service_id_once_and_requires_the_option() {
    let options = ServiceOptions { load_balanced: true, ..ServiceOptions::default() };
    let svc = Service::new(Arc::new(ClockStore), options).expect("service");
    // A driver that does not know it is behind a load balancer is refused at its first hello.
    let mut plain = svc.connect("127.0.0.1:5001");
    let r = run(&svc, &mut plain, doc! { "hello": 1, "$db": "admin" });
    assert_eq!(r.get_i32("code").ok(), Some(354), "{r}");
    assert_eq!(r.get_str("codeName").ok(), Some("LoadBalancerSupportMismatch"));
    // A load-balanced driver gets the serviceId in its first hello only, and no topology.
    let mut lb = svc.connect("127.0.0.1:5002");
    let r = run(&svc, &mut lb, doc! { "hello": 1, "loadBalanced": true, "$db": "admin" });
    assert!(ok(&r), "{r}");
    let id = r.get_object_id("serviceId").expect("serviceId");
    assert_eq!(r.get_str("msg").ok(), Some("isdbgrid"));
    assert!(!r.contains_key("setName") && !r.contains_key("hosts"), "{r}");
    let again = run(&svc, &mut lb, doc! { "hello": 1, "loadBalanced": true, "$db": "admin" });
    assert!(ok(&again) && !again.contains_key("serviceId"), "{again}");
    // Every connection of one front end has the same serviceId.
    let mut lb2 = svc.connect("127.0.0.1:5003");
    let r = run(&svc, &mut lb2, doc! { "isMaster": 1, "loadBalanced": true, "$db": "admin" });
    assert_eq!(r.get_object_id("serviceId").ok(), Some(id));
}

#[test]
fn a_server_not_in_load_balanced_mode_answers_without_service_id() {
    let svc = service();
    let mut conn = svc.connect("127.0.0.1:5004");
    let r = run(&svc, &mut conn, doc! { "hello": 1, "loadBalanced": true, "$db": "admin" });
    assert!(ok(&r), "{r}");
    assert!(!r.contains_key("serviceId"), "{r}");
    assert_eq!(r.get_str("setName").ok(), Some("rsTest"));
}
