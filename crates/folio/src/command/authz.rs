//! The privilege check: what each command needs, and the one place dispatch checks it.
//!
//! [`required`] maps a command to the `(target, action)` pairs MongoDB checks for it (a `find` on
//! `db.c` needs `find` on `db.c`; an `aggregate` with `$out` also needs `insert` and `remove` on
//! the output; `createUser` needs `createUser` on the database and `grantRole` on the databases
//! of the roles it grants). [`check`] runs before any handler, from [`super::Service::dispatch`],
//! for network connections of a server started with `--auth`; the embedded API is in-process and
//! is never checked (see `crate::auth`).
//!
//! Three kinds of commands:
//! - those MongoDB runs without authentication (the handshake, `saslStart`/`saslContinue`,
//!   `logout`, `ping`, `buildInfo`, `connectionStatus`, `listCommands`, `endSessions`, ...);
//! - those that need only *some* authenticated user (session commands, and commands whose
//!   handler filters what it shows: `listDatabases`, `listCollections` with
//!   `authorizedCollections`, `usersInfo` of oneself);
//! - everything else, which needs privileges. A command this table does not know needs
//!   `anyAction` on `anyResource` (only `root` has it), so a new command is never open by
//!   accident.
//!
//! Unauthenticated commands fail with Unauthorized (13) `Command X requires authentication`;
//! authenticated but unprivileged ones with `not authorized on DB to execute command { ... }`.

use bson::{Bson, Document};

use super::runner::OpContext;
use super::{Connection, Service};
use crate::auth::{self, Target};
use crate::error::Result;
use crate::{bail, err};

/// What a command needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: allowed before authentication.
    Nothing,
    /// An authenticated user, with no particular privilege.
    Authenticated,
    /// Every one of these actions on its target.
    Privileges(Vec<(Target, &'static str)>),
}

/// The `db.coll` namespace of a command whose first value is a collection name.
fn coll_target(cmd: &Document, db: &str) -> Target {
    match cmd.iter().next() {
        Some((_, Bson::String(c))) => Target::ns(db, c),
        _ => Target::db(db),
    }
}

/// Splits `db.coll`.
fn split_ns(ns: &str) -> Option<(&str, &str)> {
    ns.split_once('.')
}

/// The roles named in a field, as targets of `grantRole`/`revokeRole` on their databases.
fn role_targets(
    cmd: &Document,
    field: &str,
    db: &str,
    action: &'static str,
) -> Vec<(Target, &'static str)> {
    match cmd.get(field) {
        Some(v) => auth::parse_role_names(v, db, field)
            .map(|roles| roles.into_iter().map(|r| (Target::Database(r.db), action)).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Collects the namespaces an aggregation pipeline reads or writes besides its own.
fn pipeline_needs(pipeline: &[Bson], db: &str, out: &mut Vec<(Target, &'static str)>) {
    for stage in pipeline {
        let Bson::Document(stage) = stage else { continue };
        for (name, spec) in stage {
            match (name.as_str(), spec) {
                ("$out", Bson::String(c)) => {
                    out.push((Target::ns(db, c), "insert"));
                    out.push((Target::ns(db, c), "remove"));
                }
                ("$out", Bson::Document(d)) => {
                    let tdb = d.get_str("db").unwrap_or(db);
                    let c = d.get_str("coll").unwrap_or_default();
                    out.push((Target::ns(tdb, c), "insert"));
                    out.push((Target::ns(tdb, c), "remove"));
                }
                ("$merge", spec) => {
                    let (tdb, c) = match spec {
                        Bson::String(c) => (db.to_string(), c.clone()),
                        Bson::Document(d) => match d.get("into") {
                            Some(Bson::String(c)) => (db.to_string(), c.clone()),
                            Some(Bson::Document(i)) => (
                                i.get_str("db").unwrap_or(db).to_string(),
                                i.get_str("coll").unwrap_or_default().to_string(),
                            ),
                            _ => (db.to_string(), String::new()),
                        },
                        _ => (db.to_string(), String::new()),
                    };
                    for a in ["insert", "update"] {
                        out.push((Target::Namespace(tdb.clone(), c.clone()), a));
                    }
                }
                ("$lookup" | "$graphLookup", Bson::Document(d)) => {
                    match d.get("from") {
                        Some(Bson::String(c)) => out.push((Target::ns(db, c), "find")),
                        Some(Bson::Document(f)) => out.push((
                            Target::ns(
                                f.get_str("db").unwrap_or(db),
                                f.get_str("coll").unwrap_or_default(),
                            ),
                            "find",
                        )),
                        _ => {}
                    }
                    if let Ok(p) = d.get_array("pipeline") {
                        pipeline_needs(p, db, out);
                    }
                }
                ("$unionWith", Bson::String(c)) => out.push((Target::ns(db, c), "find")),
                ("$unionWith", Bson::Document(d)) => {
                    if let Ok(c) = d.get_str("coll") {
                        out.push((Target::ns(db, c), "find"));
                    }
                    if let Ok(p) = d.get_array("pipeline") {
                        pipeline_needs(p, db, out);
                    }
                }
                ("$facet", Bson::Document(d)) => {
                    for (_, p) in d {
                        if let Bson::Array(p) = p {
                            pipeline_needs(p, db, out);
                        }
                    }
                }
                ("$currentOp", _) => out.push((Target::Cluster, "inprog")),
                ("$listLocalSessions" | "$listSessions", _) => {
                    out.push((Target::Cluster, "listSessions"))
                }
                _ => {}
            }
        }
    }
}

/// What `cmd` (named `name`, on database `db`) needs of the connection.
pub fn required(name: &str, cmd: &Document, db: &str, conn: &Connection) -> Need {
    use Need::{Authenticated, Nothing, Privileges};
    let on = |action: &'static str| Privileges(vec![(coll_target(cmd, db), action)]);
    let cluster = |action: &'static str| Privileges(vec![(Target::Cluster, action)]);
    let on_db = |action: &'static str| Privileges(vec![(Target::db(db), action)]);
    match name {
        "hello" | "isMaster" | "ismaster" | "buildInfo" | "buildinfo" | "ping" | "saslStart"
        | "saslContinue" | "authenticate" | "logout" | "getnonce" | "connectionStatus"
        | "whatsmyuri" | "listCommands" | "endSessions" => Nothing,
        "startSession" | "refreshSessions" | "killSessions" | "commitTransaction"
        | "abortTransaction" | "listDatabases" => Authenticated,
        "find" | "count" | "distinct" => on("find"),
        "getMore" => match (cmd.get("collection"), cmd.get("getMore")) {
            // The cursors of `listCollections` (`$cmd.listCollections`) and `bulkWrite` were
            // authorized when opened; the handler checks they are the caller's, as MongoDB's
            // `checkAuthForGetMore` does for every cursor.
            (Some(Bson::String(c)), _) if c.starts_with("$cmd.") => Authenticated,
            (Some(Bson::String(c)), _) => Privileges(vec![(Target::ns(db, c), "find")]),
            _ => Authenticated,
        },
        // Which cursors the caller may kill depends on who opened them: checked per cursor by
        // the handler, as MongoDB does (`killCursors`' own privilege is not needed).
        "killCursors" => Authenticated,
        "insert" => {
            let mut v = vec![(coll_target(cmd, db), "insert")];
            if cmd.get_bool("bypassDocumentValidation").unwrap_or(false) {
                v.push((coll_target(cmd, db), "bypassDocumentValidation"));
            }
            Privileges(v)
        }
        "update" => {
            let mut v = vec![(coll_target(cmd, db), "update")];
            let upsert = cmd.get_array("updates").is_ok_and(|u| {
                u.iter().any(
                    |s| matches!(s, Bson::Document(s) if s.get_bool("upsert").unwrap_or(false)),
                )
            });
            if upsert {
                v.push((coll_target(cmd, db), "insert"));
            }
            Privileges(v)
        }
        "delete" => on("remove"),
        "findAndModify" | "findandmodify" => {
            let t = coll_target(cmd, db);
            let mut v = vec![(t.clone(), "find")];
            if cmd.get_bool("remove").unwrap_or(false) {
                v.push((t, "remove"));
            } else {
                v.push((t.clone(), "update"));
                if cmd.get_bool("upsert").unwrap_or(false) {
                    v.push((t, "insert"));
                }
            }
            Privileges(v)
        }
        "bulkWrite" => {
            let infos: Vec<String> = cmd
                .get_array("nsInfo")
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_document().and_then(|d| d.get_str("ns").ok()))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let mut v = Vec::new();
            for op in cmd.get_array("ops").map(|a| a.as_slice()).unwrap_or_default() {
                let Bson::Document(op) = op else { continue };
                for (kind, actions) in [
                    ("insert", &["insert"][..]),
                    ("update", &["update"][..]),
                    ("delete", &["remove"][..]),
                ] {
                    if let Some(i) = op.get(kind).and_then(crate::doc::compare::as_f64)
                        && let Some((d, c)) = infos.get(i as usize).and_then(|ns| split_ns(ns))
                    {
                        for a in actions {
                            v.push((Target::ns(d, c), *a));
                        }
                        if kind == "update" && op.get_bool("upsert").unwrap_or(false) {
                            v.push((Target::ns(d, c), "insert"));
                        }
                    }
                }
            }
            Privileges(v)
        }
        "aggregate" => {
            let mut v = Vec::new();
            let pipeline = cmd.get_array("pipeline").map(|a| a.as_slice()).unwrap_or_default();
            let first = pipeline.first().and_then(Bson::as_document);
            let starts_with = |s: &str| first.is_some_and(|d| d.contains_key(s));
            if starts_with("$changeStream") {
                v.push((coll_target(cmd, db), "changeStream"));
                v.push((coll_target(cmd, db), "find"));
            } else if starts_with("$collStats") {
                v.push((coll_target(cmd, db), "collStats"));
            } else if starts_with("$indexStats") {
                v.push((coll_target(cmd, db), "indexStats"));
            } else if starts_with("$currentOp") {
                v.push((Target::Cluster, "inprog"));
            } else if matches!(cmd.get("aggregate"), Some(Bson::String(_))) {
                v.push((coll_target(cmd, db), "find"));
            }
            pipeline_needs(pipeline, db, &mut v);
            if v.is_empty() { Authenticated } else { Privileges(v) }
        }
        "explain" => match cmd.get("explain") {
            Some(Bson::Document(inner)) => {
                let inner_name = inner.keys().next().cloned().unwrap_or_default();
                required(&inner_name, inner, db, conn)
            }
            _ => Authenticated,
        },
        "create" => {
            let mut v = vec![(coll_target(cmd, db), "createCollection")];
            if let Ok(source) = cmd.get_str("viewOn") {
                v.push((Target::ns(db, source), "find"));
            }
            Privileges(v)
        }
        "createIndexes" => on("createIndex"),
        "drop" => on("dropCollection"),
        "dropDatabase" => on_db("dropDatabase"),
        "dropIndexes" | "deleteIndexes" => on("dropIndex"),
        "collMod" => on("collMod"),
        "renameCollection" => {
            let from = cmd.get_str("renameCollection").unwrap_or_default();
            let to = cmd.get_str("to").unwrap_or_default();
            match (split_ns(from), split_ns(to)) {
                (Some((fd, fc)), Some((td, tc))) if fd == td => {
                    let mut v = vec![
                        (Target::ns(fd, fc), "renameCollectionSameDB"),
                        (Target::ns(td, tc), "renameCollectionSameDB"),
                    ];
                    if cmd.get_bool("dropTarget").unwrap_or(false) {
                        v.push((Target::ns(td, tc), "dropCollection"));
                    }
                    Privileges(v)
                }
                (Some((fd, fc)), Some((td, tc))) => {
                    let mut v = vec![
                        (Target::ns(fd, fc), "find"),
                        (Target::ns(fd, fc), "dropCollection"),
                        (Target::ns(td, tc), "insert"),
                        (Target::ns(td, tc), "createIndex"),
                    ];
                    if cmd.get_bool("dropTarget").unwrap_or(false) {
                        v.push((Target::ns(td, tc), "dropCollection"));
                    }
                    Privileges(v)
                }
                _ => Authenticated,
            }
        }
        "listCollections" => {
            let authorized = cmd.get_bool("authorizedCollections").unwrap_or(false)
                && cmd.get_bool("nameOnly").unwrap_or(false);
            if authorized { Authenticated } else { on_db("listCollections") }
        }
        "listIndexes" => on("listIndexes"),
        "createSearchIndexes" => on("createSearchIndexes"),
        "updateSearchIndex" => on("updateSearchIndex"),
        "dropSearchIndex" => on("dropSearchIndex"),
        "listSearchIndexes" => on("listSearchIndexes"),
        "dbStats" => on_db("dbStats"),
        "collStats" => on("collStats"),
        "killAllSessions" | "killAllSessionsByPattern" => cluster("killAnySession"),
        "currentOp" => {
            if cmd.get_bool("$ownOps").unwrap_or(false) {
                Authenticated
            } else {
                cluster("inprog")
            }
        }
        "killOp" => cluster("killop"),
        "serverStatus" => cluster("serverStatus"),
        "hostInfo" => cluster("hostInfo"),
        "getParameter" => cluster("getParameter"),
        "getCmdLineOpts" => cluster("getCmdLineOpts"),
        "getLog" => cluster("getLog"),
        "logRotate" => cluster("logRotate"),
        "convertToCapped" => on("convertToCapped"),
        "cloneCollectionAsCapped" => {
            let to = cmd.get_str("toCollection").unwrap_or_default();
            Privileges(vec![
                (coll_target(cmd, db), "find"),
                (Target::ns(db, to), "insert"),
                (Target::ns(db, to), "createCollection"),
            ])
        }
        "setParameter" => cluster("setParameter"),
        "replSetResizeOplog" => cluster("replSetResizeOplog"),
        "profile" => on_db("enableProfiler"),
        "replSetGetStatus" => cluster("replSetGetStatus"),
        "replSetGetConfig" => cluster("replSetGetConfig"),
        "fsync" => cluster("fsync"),
        "fsyncUnlock" => cluster("unlock"),
        "validate" => on("validate"),
        // MongoDB checks `find` on the namespace the command names.
        "dataSize" => match cmd.get_str("dataSize").ok().and_then(|ns| ns.split_once('.')) {
            Some((d, c)) => Privileges(vec![(Target::ns(d, c), "find")]),
            None => Authenticated,
        },
        "configureFailPoint" => cluster("configureFailPoint"),
        // User and role management.
        "createUser" => {
            let mut v = vec![(Target::db(db), "createUser")];
            v.extend(role_targets(cmd, "roles", db, "grantRole"));
            Privileges(v)
        }
        "updateUser" => {
            let user = cmd.get_str("updateUser").unwrap_or_default();
            let mut v = Vec::new();
            if cmd.contains_key("pwd") {
                // Changing one's own password needs no privilege beyond being that user
                // (MongoDB's `changeOwnPassword` is granted to every role; Folio checks identity).
                let own = conn.auth.users.iter().any(|u| u.name.name == user && u.name.db == db);
                if !own {
                    v.push((Target::db(db), "changePassword"));
                }
            }
            if cmd.contains_key("customData") {
                v.push((Target::db(db), "changeCustomData"));
            }
            if cmd.contains_key("roles") {
                v.push((Target::db(db), "grantRole"));
                v.push((Target::db(db), "revokeRole"));
                v.extend(role_targets(cmd, "roles", db, "grantRole"));
            }
            if v.is_empty() { Authenticated } else { Privileges(v) }
        }
        "dropUser" | "dropAllUsersFromDatabase" => on_db("dropUser"),
        "grantRolesToUser" => Privileges(role_targets(cmd, "roles", db, "grantRole")),
        "revokeRolesFromUser" => Privileges(role_targets(cmd, "roles", db, "revokeRole")),
        "usersInfo" => {
            let own = match cmd.get("usersInfo") {
                Some(Bson::String(u)) => {
                    conn.auth.users.iter().any(|x| x.name.name == *u && x.name.db == db)
                }
                Some(Bson::Document(d)) => conn.auth.users.iter().any(|x| {
                    d.get_str("user").ok() == Some(x.name.name.as_str())
                        && d.get_str("db").ok() == Some(x.name.db.as_str())
                }),
                _ => false,
            };
            if own {
                Authenticated
            } else if cmd
                .get("usersInfo")
                .and_then(Bson::as_document)
                .is_some_and(|d| d.get_bool("forAllDBs").unwrap_or(false))
            {
                Privileges(vec![(Target::AnyDatabase, "viewUser")])
            } else {
                on_db("viewUser")
            }
        }
        "createRole" => {
            let mut v = vec![(Target::db(db), "createRole")];
            v.extend(role_targets(cmd, "roles", db, "grantRole"));
            Privileges(v)
        }
        "updateRole" => {
            let mut v = vec![(Target::db(db), "createRole"), (Target::db(db), "dropRole")];
            v.extend(role_targets(cmd, "roles", db, "grantRole"));
            Privileges(v)
        }
        "dropRole" | "dropAllRolesFromDatabase" => on_db("dropRole"),
        "grantPrivilegesToRole" | "grantRolesToRole" => on_db("grantRole"),
        "revokePrivilegesFromRole" | "revokeRolesFromRole" => on_db("revokeRole"),
        "rolesInfo" => {
            let own = match cmd.get("rolesInfo") {
                Some(Bson::String(r)) => conn
                    .auth
                    .users
                    .iter()
                    .any(|u| u.roles.iter().any(|x| x.name == *r && x.db == db)),
                _ => false,
            };
            if own { Authenticated } else { on_db("viewRole") }
        }
        // Unknown to this table: only `anyAction` on `anyResource` (root) may run it.
        _ => Privileges(vec![(Target::Cluster, "anyAction"), (Target::AnyDatabase, "anyAction")]),
    }
}

/// Fields whose values never appear in error messages, logs or the profiler: passwords (of the
/// user commands) and SASL payloads.
const SECRET_FIELDS: &[&str] = &["pwd", "password", "digestPassword", "payload"];

/// `cmd` with the value of every secret field replaced by `mask`.
pub(crate) fn mask_secrets(cmd: &Document, mask: &str) -> Document {
    cmd.iter()
        .map(|(k, v)| {
            let secret = SECRET_FIELDS.contains(&k.as_str());
            (k.clone(), if secret { Bson::String(mask.to_string()) } else { v.clone() })
        })
        .collect()
}

/// The command as MongoDB's Unauthorized message shows it, with credentials replaced by `###`.
pub fn redacted(cmd: &Document) -> Document {
    mask_secrets(cmd, "###")
}

/// Whether the connection's commands are checked: the server runs with `--auth` and the
/// connection is a network one (not the embedded API's).
pub(crate) fn enforced(svc: &Service, conn: &Connection) -> bool {
    svc.options().auth && !conn.trusted
}

/// Checks that the connection may run the command; refreshes its users' privileges first when
/// a user or role changed since they were resolved.
pub fn check(
    svc: &Service,
    conn: &mut Connection,
    name: &str,
    cmd: &Document,
    db: &str,
) -> Result<()> {
    if !enforced(svc, conn) {
        return Ok(());
    }
    let need = required(name, cmd, db, conn);
    if need == Need::Nothing {
        return Ok(());
    }
    if !conn.auth.is_authenticated() {
        if svc.localhost_exception_applies(conn)? {
            return Ok(());
        }
        bail!(Unauthorized, "Command {} requires authentication", name);
    }
    svc.refresh_privileges(conn)?;
    if let Need::Privileges(pairs) = need
        && !pairs.iter().all(|(target, action)| conn.auth.allows(target, action))
    {
        return Err(err!(
            Unauthorized,
            "not authorized on {} to execute command {}",
            db,
            redacted(cmd)
        ));
    }
    Ok(())
}

/// The lsid a command or a session command (`endSessions`, `killSessions`, ...) names, owned by
/// the caller as MongoDB's `makeLogicalSessionId` owns it: with authorization on, its `uid` is
/// the digest of the authenticated user; a `uid` the client sent must be that digest unless the
/// caller holds `impersonate` (or `spoof`) on the cluster, else Unauthorized. `None` when
/// authorization is on and no user is authenticated (the localhost exception, or a command that
/// needs no authentication): there is no owner to give a session, so MongoDB ignores it.
pub(crate) fn owned_lsid(
    svc: &Service,
    conn: &Connection,
    mut lsid: Document,
    spoof: Option<&str>,
) -> Result<Option<Document>> {
    if !enforced(svc, conn) {
        return Ok(Some(lsid));
    }
    let Some(user) = conn.auth.users.first() else {
        return Ok(None);
    };
    let digest = user.name.session_digest();
    match lsid.get("uid") {
        Some(Bson::Binary(b)) => {
            let may = |action: &str| conn.auth.allows(&Target::Cluster, action);
            if b.bytes != digest && !may("impersonate") && !spoof.is_some_and(may) {
                bail!(Unauthorized, "Unauthorized to set user digest in LogicalSessionId");
            }
        }
        _ => {
            let uid = bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: digest };
            lsid.insert("uid", uid);
        }
    }
    Ok(Some(lsid))
}

/// After the privilege check: records whether the command is checked and who runs it (the
/// owner of the cursors it opens), and gives its session to the caller ([`owned_lsid`]). A
/// command whose session is ignored also loses its transaction fields, as in MongoDB, which
/// then runs it without session information.
pub(crate) fn bind_session(svc: &Service, conn: &Connection, op: &mut OpContext<'_>) -> Result<()> {
    if !enforced(svc, conn) {
        return Ok(());
    }
    op.authorization = true;
    op.user = conn.auth.users.first().map(|u| u.name.to_string());
    if let Some(lsid) = op.lsid.take() {
        op.lsid = owned_lsid(svc, conn, lsid.into_owned(), None)?.map(std::borrow::Cow::Owned);
        if op.lsid.is_none() {
            op.txn_number = None;
            op.autocommit = None;
            op.start_transaction = false;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn commands_map_to_actions() {
        let conn = Connection::default();
        let need = |cmd: Document| {
            let name = cmd.keys().next().cloned().unwrap_or_default();
            required(&name, &cmd, "shop", &conn)
        };
        assert_eq!(need(doc! { "hello": 1 }), Need::Nothing);
        assert_eq!(need(doc! { "saslStart": 1 }), Need::Nothing);
        assert_eq!(
            need(doc! { "find": "orders" }),
            Need::Privileges(vec![(Target::ns("shop", "orders"), "find")])
        );
        assert_eq!(
            need(
                doc! { "aggregate": "o", "pipeline": [{"$lookup": {"from": "p"}}, {"$out": "x"}] }
            ),
            Need::Privileges(vec![
                (Target::ns("shop", "o"), "find"),
                (Target::ns("shop", "p"), "find"),
                (Target::ns("shop", "x"), "insert"),
                (Target::ns("shop", "x"), "remove"),
            ])
        );
        assert_eq!(
            need(doc! { "createUser": "u", "roles": [{"role": "read", "db": "other"}] }),
            Need::Privileges(vec![
                (Target::db("shop"), "createUser"),
                (Target::db("other"), "grantRole"),
            ])
        );
        assert!(
            matches!(need(doc! { "someNewCommand": 1 }), Need::Privileges(p) if p[0].1 == "anyAction")
        );
        assert_eq!(
            redacted(&doc! { "createUser": "u", "pwd": "secret" }),
            doc! { "createUser": "u", "pwd": "###" }
        );
    }
}
