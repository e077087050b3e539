//! Authentication, authorization and TLS through the official `mongodb` crate against the real
//! `folio` binary (issue #12): the driver's SCRAM-SHA-256 and SCRAM-SHA-1 conversations
//! (speculative and not), wrong passwords, unauthenticated and unprivileged commands, sessions
//! and cursors that belong to their user, and TLS with certificates generated here (`rcgen`),
//! with and without client certificates, and MONGODB-X509's user-name checks.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::Server;
use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;

/// An in-memory server on loopback, with `extra` arguments.
fn start(extra: &[&str]) -> Server {
    Server::start(&[&["--in-memory", "--bind_ip", "127.0.0.1"], extra].concat())
}

async fn client(uri: String) -> Client {
    Client::with_uri_str(uri).await.expect("client")
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// The first of `connectionStatus`'s authenticated users.
fn authenticated_user(status: &Document) -> Option<Document> {
    let users = status.get_document("authInfo").and_then(|a| a.get_array("authenticatedUsers"));
    users.ok()?.first()?.as_document().cloned()
}

/// Creates the first user through the localhost exception, then the test's other users.
async fn create_users(port: u16) {
    let open = client(format!("mongodb://127.0.0.1:{port}/?directConnection=true")).await;
    let admin = open.database("admin");
    admin
        .run_command(doc! { "createUser": "admin", "pwd": "adminpw", "roles": ["root"] })
        .await
        .expect("the first user, through the localhost exception");
    // The exception is over.
    let e = admin
        .run_command(doc! { "createUser": "late", "pwd": "x", "roles": [] })
        .await
        .expect_err("a second user without authenticating");
    assert_eq!(code(&e), Some(13), "{e}");
    let root = client(format!(
        "mongodb://admin:adminpw@127.0.0.1:{port}/?authSource=admin&directConnection=true"
    ))
    .await;
    root.database("shop")
        .run_command(doc! { "createUser": "reader", "pwd": "readpw", "roles": ["read"] })
        .await
        .expect("reader");
    root.database("admin")
        .run_command(doc! {
            "createUser": "writer",
            "pwd": "writepw",
            "roles": [{ "role": "readWrite", "db": "shop" }],
        })
        .await
        .expect("writer");
    root.database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! { "_id": 1, "total": 5 })
        .await
        .expect("seed");
    root.database("vault")
        .collection::<Document>("secrets")
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("seed");
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_sha_256_and_sha_1_with_the_rust_driver() {
    let server = start(&["--auth"]);
    let port = server.port;
    create_users(port).await;

    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-1", ""] {
        let mech = if mechanism.is_empty() {
            String::new()
        } else {
            format!("&authMechanism={mechanism}")
        };
        let c = client(format!(
            "mongodb://writer:writepw@127.0.0.1:{port}/shop?authSource=admin&directConnection=true{mech}"
        ))
        .await;
        let orders = c.database("shop").collection::<Document>("orders");
        orders.insert_one(doc! { "mechanism": mechanism }).await.expect("insert");
        let n = orders.count_documents(doc! {}).await.expect("count");
        assert!(n >= 2, "{mechanism}: {n}");
        let status = c
            .database("admin")
            .run_command(doc! { "connectionStatus": 1 })
            .await
            .expect("connectionStatus");
        assert_eq!(
            authenticated_user(&status),
            Some(doc! { "user": "writer", "db": "admin" }),
            "{mechanism}"
        );
        // readWrite on shop does not reach another database, nor user management.
        let e = c
            .database("vault")
            .collection::<Document>("secrets")
            .find_one(doc! {})
            .await
            .expect_err("another database");
        assert_eq!(code(&e), Some(13), "{e}");
        let e = c
            .database("shop")
            .run_command(doc! { "dropUser": "reader" })
            .await
            .expect_err("dropUser");
        assert_eq!(code(&e), Some(13), "{e}");
        let e = c.database("shop").drop().await.expect_err("dropDatabase");
        assert_eq!(code(&e), Some(13), "{e}");
    }

    // A read user reads and cannot write.
    let reader =
        client(format!("mongodb://reader:readpw@127.0.0.1:{port}/shop?directConnection=true"))
            .await;
    let orders = reader.database("shop").collection::<Document>("orders");
    assert!(orders.find_one(doc! { "_id": 1 }).await.expect("read").is_some());
    let e = orders.insert_one(doc! { "x": 1 }).await.expect_err("read user inserts");
    assert_eq!(code(&e), Some(13), "{e}");
    let names = reader.list_database_names().await.expect("listDatabases");
    assert_eq!(names, vec!["shop".to_string()]);

    // Wrong passwords and unknown users fail authentication.
    for uri in [
        format!("mongodb://writer:nope@127.0.0.1:{port}/?authSource=admin&directConnection=true"),
        format!(
            "mongodb://writer:nope@127.0.0.1:{port}/?authSource=admin&directConnection=true&authMechanism=SCRAM-SHA-1"
        ),
        format!("mongodb://ghost:writepw@127.0.0.1:{port}/?authSource=admin&directConnection=true"),
    ] {
        let c = client(uri.clone()).await;
        let e = c.list_database_names().await.expect_err("wrong credentials");
        assert!(matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }), "{uri}: {e}");
        assert!(e.to_string().contains("Authentication failed"), "{uri}: {e}");
    }

    // No credentials: only the handshake-level commands.
    let anonymous = client(format!("mongodb://127.0.0.1:{port}/?directConnection=true")).await;
    anonymous.database("admin").run_command(doc! { "ping": 1 }).await.expect("ping");
    let e = anonymous
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! {})
        .await
        .expect_err("find without authenticating");
    assert_eq!(code(&e), Some(13), "{e}");
    assert!(e.to_string().contains("requires authentication"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_cursors_belong_to_their_user() {
    let server = start(&["--auth"]);
    let port = server.port;
    create_users(port).await;
    let root = client(format!(
        "mongodb://admin:adminpw@127.0.0.1:{port}/?authSource=admin&directConnection=true"
    ))
    .await;
    for user in ["alice", "bob"] {
        root.database("admin")
            .run_command(doc! {
                "createUser": user,
                "pwd": format!("{user}pw"),
                "roles": [{ "role": "readWrite", "db": "own" }],
            })
            .await
            .expect("createUser");
    }
    let user = |name: &str| {
        format!(
            "mongodb://{name}:{name}pw@127.0.0.1:{port}/?authSource=admin&directConnection=true"
        )
    };
    let (alice, bob) = (client(user("alice")).await, client(user("bob")).await);
    let docs: Vec<Document> = (0..5).map(|i| doc! { "_id": i }).collect();
    let alice_coll = alice.database("own").collection::<Document>("c");
    alice_coll.insert_many(docs).await.expect("seed");
    let bob_db = bob.database("own");

    // Alice's open transaction: bob naming its lsid reaches a session of his own, so neither
    // killSessions nor endSessions nor a commit of his touches it.
    let mut session = alice.start_session().await.expect("session");
    session.start_transaction().await.expect("start");
    alice_coll.insert_one(doc! { "_id": 100 }).session(&mut session).await.expect("insert");
    let lsid = session.id().clone();
    let admin = bob.database("admin");
    admin.run_command(doc! { "killSessions": [lsid.clone()] }).await.expect("killSessions");
    admin.run_command(doc! { "endSessions": [lsid.clone()] }).await.expect("endSessions");
    admin.run_command(doc! { "killSessions": [] }).await.expect("killSessions of his own");
    session.commit_transaction().await.expect("alice's transaction survives bob");
    assert!(alice_coll.find_one(doc! { "_id": 100 }).await.expect("find").is_some());

    // Alice's cursor: bob can neither continue nor kill it; she can, in her session.
    let alice_db = alice.database("own");
    let mut session = alice.start_session().await.expect("session");
    let find = doc! { "find": "c", "batchSize": 2 };
    let reply = alice_db.run_command(find.clone()).session(&mut session).await.expect("find");
    let id = reply.get_document("cursor").and_then(|c| c.get_i64("id")).expect("cursor id");
    assert_ne!(id, 0, "the cursor stays open after the first batch");
    let e = bob_db
        .run_command(doc! { "getMore": id, "collection": "c" })
        .await
        .expect_err("bob continues alice's cursor");
    assert_eq!(code(&e), Some(13), "{e}");
    let e = bob_db
        .run_command(doc! { "killCursors": "c", "cursors": [id] })
        .await
        .expect_err("bob kills alice's cursor");
    assert_eq!(code(&e), Some(13), "{e}");
    assert!(e.to_string().contains("not authorized to kill cursor on own.c"), "{e}");
    let reply = alice_db
        .run_command(doc! { "getMore": id, "collection": "c", "batchSize": 2 })
        .session(&mut session)
        .await
        .expect("alice continues her cursor");
    let batch = reply.get_document("cursor").and_then(|c| c.get_array("nextBatch"));
    assert_eq!(batch.map(Vec::len).ok(), Some(2), "{reply}");

    // Root (killAnyCursor) may kill anyone's cursor.
    let reply = root
        .database("own")
        .run_command(doc! { "killCursors": "c", "cursors": [id] })
        .await
        .expect("root kills alice's cursor");
    assert_eq!(reply.get_array("cursorsKilled").map(Vec::len).ok(), Some(1), "{reply}");
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn generate() -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Folio test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write pem");
        };
        write("ca.pem", ca_cert.pem());
        for (name, sans, cn) in [
            ("server.pem", vec!["localhost".to_string(), "127.0.0.1".to_string()], "localhost"),
            ("client.pem", Vec::new(), "folio-test-client"),
            ("stranger.pem", Vec::new(), "folio-stranger"),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            write(name, format!("{}{}", cert.pem(), key.serialize_pem()));
        }
        Certificates { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The path as a connection string option's value.
    fn uri_path(&self, name: &str) -> String {
        self.path(name).replace('/', "%2F")
    }
}

/// Whether a plaintext `hello` gets an answer.
fn plaintext_answered(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let msg = folio_wire::Message::msg(1, 0, 0, doc! { "hello": 1, "$db": "admin" });
    if s.write_all(&folio_wire::encode(&msg).expect("encode")).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_rust_driver() {
    let certs = Certificates::generate();
    let (server_pem, ca) = (certs.path("server.pem"), certs.path("ca.pem"));
    let ca_q = certs.uri_path("ca.pem");

    // requireTLS: the driver connects with tls=true&tlsCAFile; plaintext is refused.
    let server =
        start(&["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", &server_pem, "--auth"]);
    let port = server.port;
    let open = client(format!(
        "mongodb://localhost:{port}/?directConnection=true&tls=true&tlsCAFile={ca_q}"
    ))
    .await;
    open.database("admin")
        .run_command(doc! { "createUser": "admin", "pwd": "adminpw", "roles": ["root"] })
        .await
        .expect("createUser over TLS");
    let c = client(format!(
        "mongodb://admin:adminpw@localhost:{port}/?authSource=admin&directConnection=true&tls=true&tlsCAFile={ca_q}"
    ))
    .await;
    let coll = c.database("t").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert over TLS");
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), 1);
    assert!(!plaintext_answered(port), "plaintext was served under requireTLS");
    drop(server);

    // preferTLS with client certificates: TLS with a certificate, and plaintext, are served;
    // TLS without a client certificate is not.
    let server = start(&[
        "--tlsMode",
        "preferTLS",
        "--tlsCertificateKeyFile",
        &server_pem,
        "--tlsCAFile",
        &ca,
    ]);
    let port = server.port;
    assert!(plaintext_answered(port), "plaintext refused under preferTLS");
    let with_cert = client(format!(
        "mongodb://localhost:{port}/?directConnection=true&tls=true&tlsCAFile={ca_q}&tlsCertificateKeyFile={}",
        certs.uri_path("client.pem")
    ))
    .await;
    with_cert.database("admin").run_command(doc! { "ping": 1 }).await.expect("client certificate");
    let without = client(format!(
        "mongodb://localhost:{port}/?directConnection=true&tls=true&tlsCAFile={ca_q}&serverSelectionTimeoutMS=2000"
    ))
    .await;
    without
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect_err("TLS without a client certificate");
    drop(server);

    let server = start(&[
        "--tlsMode",
        "requireTLS",
        "--tlsCertificateKeyFile",
        &server_pem,
        "--tlsCAFile",
        &ca,
        "--tlsAllowConnectionsWithoutCertificates",
    ]);
    let port = server.port;
    let without = client(format!(
        "mongodb://localhost:{port}/?directConnection=true&tls=true&tlsCAFile={ca_q}"
    ))
    .await;
    without.database("admin").run_command(doc! { "ping": 1 }).await.expect("optional certificate");
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_x509_authenticates_the_client_certificate() {
    let certs = Certificates::generate();
    let server = start(&[
        "--auth",
        "--tlsMode",
        "requireTLS",
        "--tlsCertificateKeyFile",
        &certs.path("server.pem"),
        "--tlsCAFile",
        &certs.path("ca.pem"),
    ]);
    let port = server.port;
    let tls = format!(
        "tls=true&tlsCAFile={}&tlsCertificateKeyFile={}",
        certs.uri_path("ca.pem"),
        certs.uri_path("client.pem")
    );
    let open = client(format!("mongodb://localhost:{port}/?directConnection=true&{tls}")).await;
    open.database("$external")
        .run_command(doc! {
            "createUser": "CN=folio-test-client",
            "roles": [{ "role": "readWrite", "db": "x509db" }],
        })
        .await
        .expect("an $external user, through the localhost exception");
    let c = client(format!(
        "mongodb://localhost:{port}/?directConnection=true&authMechanism=MONGODB-X509&{tls}"
    ))
    .await;
    let coll = c.database("x509db").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert as the certificate's user");
    let status =
        c.database("admin").run_command(doc! { "connectionStatus": 1 }).await.expect("status");
    assert_eq!(
        authenticated_user(&status),
        Some(doc! { "user": "CN=folio-test-client", "db": "$external" })
    );
    let e = c
        .database("other")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1 })
        .await
        .expect_err("outside the user's roles");
    assert_eq!(code(&e), Some(13), "{e}");
    // `authenticate`'s `user`, when given, must be the certificate's subject. (The Rust driver
    // sends the connection string's user as `username`, which the server ignores as MongoDB
    // does, so the command is sent by hand on a connection that has not authenticated.)
    let anonymous =
        client(format!("mongodb://localhost:{port}/?directConnection=true&{tls}")).await;
    let external = anonymous.database("$external");
    let authenticate = |user: &str| {
        doc! { "authenticate": 1, "mechanism": "MONGODB-X509", "user": user.to_string() }
    };
    let e = external
        .run_command(authenticate("CN=someone-else"))
        .await
        .expect_err("a user other than the certificate's subject");
    assert_eq!(code(&e), Some(18), "{e}");
    assert!(e.to_string().contains("no x.509 client certificate matching the user"), "{e}");
    let reply = external
        .run_command(authenticate("CN=folio-test-client"))
        .await
        .expect("the certificate's own subject as the user");
    assert_eq!(reply.get_str("user").ok(), Some("CN=folio-test-client"), "{reply}");

    // A certificate of the same CA whose subject is no user of $external is refused.
    x509_refused(format!(
        "mongodb://localhost:{port}/?directConnection=true&authMechanism=MONGODB-X509&tls=true&tlsCAFile={}&tlsCertificateKeyFile={}",
        certs.uri_path("ca.pem"),
        certs.uri_path("stranger.pem")
    ))
    .await;

    // Without --tlsCAFile-verified certificates there is no subject: X.509 is refused.
    drop(server);
    let server = start(&[
        "--auth",
        "--tlsMode",
        "requireTLS",
        "--tlsCertificateKeyFile",
        &certs.path("server.pem"),
    ]);
    let port = server.port;
    x509_refused(format!(
        "mongodb://localhost:{port}/?directConnection=true&authMechanism=MONGODB-X509&tls=true&tlsCAFile={}",
        certs.uri_path("ca.pem")
    ))
    .await;
}

/// Asserts that a MONGODB-X509 client of `uri` fails to authenticate.
async fn x509_refused(uri: String) {
    let e = client(uri.clone()).await.list_database_names().await.expect_err("X.509 refused");
    assert!(matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }), "{uri}: {e}");
}

#[test]
fn unsupported_security_settings_are_startup_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (yaml, what) in [
        ("security:\n  keyFile: /etc/key\n", "keyFile"),
        ("security:\n  clusterAuthMode: x509\n", "x.509 cluster membership"),
        ("security:\n  ldap:\n    servers: ldap.example\n", "LDAP"),
        ("security:\n  sasl:\n    serviceName: mongodb\n", "Kerberos"),
    ] {
        let path = dir.path().join("mongod.conf");
        std::fs::write(&path, yaml).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(["serve", "--in-memory", "--port", "0", "--config"])
            .arg(&path)
            .output()
            .expect("run folio");
        assert!(!out.status.success(), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what) && err.contains("not supported"), "{yaml}: {err}");
    }
    for (mechanism, what) in [("PLAIN", "LDAP"), ("GSSAPI", "Kerberos")] {
        let out = Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(["serve", "--in-memory", "--port", "0", "--setParameter"])
            .arg(format!("authenticationMechanisms={mechanism}"))
            .output()
            .expect("run folio");
        assert!(!out.status.success(), "{mechanism}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{mechanism}: {err}");
    }
}
