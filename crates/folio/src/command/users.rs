//! Authentication and user/role management commands: `saslStart`, `saslContinue`,
//! `authenticate`, `logout`, `createUser`, `updateUser`, `dropUser`, `dropAllUsersFromDatabase`,
//! `usersInfo`, `grantRolesToUser`, `revokeRolesFromUser`, `createRole`, `updateRole`,
//! `dropRole`, `dropAllRolesFromDatabase`, `rolesInfo`, `grantPrivilegesToRole`,
//! `revokePrivilegesFromRole`, `grantRolesToRole`, `revokeRolesFromRole`.
//!
//! Users and roles are documents of `admin.system.users` and `admin.system.roles` (see
//! [`crate::auth`]); every change is one autocommit write through the runner, so it is atomic and
//! durable before the reply, and bumps the service's user generation so that connections resolve
//! their privileges again.
//!
//! A failed authentication is logged at warning level with the connection's remote address, the
//! user and the mechanism — never the password or the SASL payloads — and counts against the
//! connection: after [`FREE_FAILURES`] failures, each further attempt must wait out a doubling
//! delay (capped at [`MAX_BACKOFF`]) or is refused without being checked.

use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};

use super::args::Request;
use super::args::{opt_bool, opt_doc, required};
use super::runner::Runner;
use super::{Connection, Service};
use crate::auth::scram::{self, Credential, Mechanism};
use crate::auth::{self, ADMIN_DB, Privilege, ROLES_COLLECTION, USERS_COLLECTION, UserName, roles};
use crate::error::{Error, Result};
use crate::exec::{self, DeleteOp, FindSpec, UpdateDoc, UpdateOp};
use crate::{bail, err};

/// Failed authentications a connection may make before attempts are delayed.
pub const FREE_FAILURES: u32 = 3;
/// The longest delay between failed attempts on one connection.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The only conversation id: a connection has at most one conversation at a time.
const CONVERSATION_ID: i32 = 1;

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })
}

fn payload(cmd: &Document, command: &str) -> Result<Vec<u8>> {
    match required(cmd, "payload", command)? {
        Bson::Binary(b) => Ok(b.bytes.clone()),
        Bson::String(s) => Ok(s.clone().into_bytes()),
        _ => bail!(
            TypeMismatch,
            "BSON field '{}.payload' is the wrong type, expected type 'binData'",
            command
        ),
    }
}

fn auth_failed() -> Error {
    err!(AuthenticationFailed, "Authentication failed.")
}

/// Records a failed authentication: logs it and counts it against the connection.
fn record_failure(conn: &mut Connection, user: &str, db: &str, mechanism: &str, why: &str) {
    conn.auth.failures = conn.auth.failures.saturating_add(1);
    conn.auth.last_failure = Some(Instant::now());
    conn.auth.conversation = None;
    tracing::warn!(
        remote = %conn.remote,
        connection = conn.id,
        user = %user,
        db = %db,
        mechanism = %mechanism,
        "authentication failed: {why}"
    );
}

/// Refuses an attempt made too soon after repeated failures on this connection.
fn rate_limit(conn: &Connection) -> Result<()> {
    if conn.auth.failures < FREE_FAILURES {
        return Ok(());
    }
    let exp = (conn.auth.failures - FREE_FAILURES).min(16);
    let backoff = (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_BACKOFF);
    if conn.auth.last_failure.is_some_and(|t| t.elapsed() < backoff) {
        tracing::warn!(remote = %conn.remote, connection = conn.id, failures = conn.auth.failures,
            "authentication attempt refused: too many failures on this connection");
        return Err(auth_failed());
    }
    Ok(())
}

/// The mechanisms the server accepts (`authenticationMechanisms`).
fn enabled(svc: &Service, mechanism: &str) -> bool {
    svc.options().auth_mechanisms.iter().any(|m| m == mechanism)
}

/// The SASL start step shared by `saslStart` and `hello`'s `speculativeAuthenticate`.
pub(crate) fn sasl_start_in(
    svc: &Service,
    conn: &mut Connection,
    cmd: &Document,
    db: &str,
) -> Result<Document> {
    let mechanism = match required(cmd, "mechanism", "saslStart")? {
        Bson::String(m) => m.clone(),
        _ => bail!(
            TypeMismatch,
            "BSON field 'saslStart.mechanism' is the wrong type, expected type 'string'"
        ),
    };
    let mech = match Mechanism::from_name(&mechanism) {
        Some(m) if enabled(svc, &mechanism) => m,
        _ => bail!(
            MechanismUnavailable,
            "Received authentication for mechanism {} which is unknown or not enabled",
            mechanism
        ),
    };
    let data = payload(cmd, "saslStart")?;
    rate_limit(conn)?;
    conn.auth.conversation = None;
    let first = scram::parse_client_first(&data)?;
    let name = UserName::new(first.user.clone(), db);
    let txn = svc.store.begin()?;
    let user = auth::find_user(txn.as_ref(), &name);
    txn.abort();
    let credential = user?.and_then(|u| {
        u.get_document("credentials")
            .ok()
            .and_then(|c| c.get_document(mechanism.as_str()).ok())
            .and_then(Credential::from_document)
    });
    let Some(credential) = credential else {
        record_failure(
            conn,
            &name.name,
            db,
            &mechanism,
            "no such user or no credential for the mechanism",
        );
        return Err(auth_failed());
    };
    let (mut conversation, server_first) = scram::Conversation::start(mech, db, first, credential);
    conversation.skip_empty_exchange = cmd
        .get_document("options")
        .ok()
        .and_then(|o| o.get("skipEmptyExchange"))
        .is_some_and(|v| matches!(v, Bson::Boolean(true)));
    conn.auth.conversation = Some(conversation);
    Ok(doc! { "conversationId": CONVERSATION_ID, "done": false, "payload": binary(server_first) })
}

/// `saslStart`.
pub fn sasl_start(req: &mut Request<'_>) -> Result<Document> {
    let db = req.db.to_string();
    sasl_start_in(req.svc, req.conn, req.cmd, &db)
}

/// `saslContinue`.
pub fn sasl_continue(req: &mut Request<'_>) -> Result<Document> {
    let id = req.cmd.get("conversationId").and_then(crate::doc::compare::as_f64);
    let data = payload(req.cmd, "saslContinue")?;
    let Some(mut conv) = req.conn.auth.conversation.take() else {
        bail!(ProtocolError, "No SASL session state found");
    };
    if id != Some(f64::from(CONVERSATION_ID)) {
        bail!(ProtocolError, "sasl: Mismatched conversation id");
    }
    if req.db != conv.db {
        bail!(ProtocolError, "Attempt to switch database target during SASL authentication.");
    }
    if conv.proven {
        // The client's empty last step: the exchange is over.
        return finish(req.svc, req.conn, conv, Vec::new());
    }
    match conv.finish(&data) {
        Ok(server_final) => {
            if conv.skip_empty_exchange {
                finish(req.svc, req.conn, conv, server_final)
            } else {
                let out = doc! {
                    "conversationId": CONVERSATION_ID,
                    "done": false,
                    "payload": binary(server_final),
                };
                req.conn.auth.conversation = Some(conv);
                Ok(out)
            }
        }
        Err(e) => {
            let (user, db, mech) = (conv.user.clone(), conv.db.clone(), conv.mechanism.name());
            record_failure(req.conn, &user, &db, mech, &e.message);
            Err(if e.code == crate::Code::AuthenticationFailed { e } else { auth_failed() })
        }
    }
}

/// Ends a proven conversation: the connection is now authenticated as its user.
fn finish(
    svc: &Service,
    conn: &mut Connection,
    conv: scram::Conversation,
    server_final: Vec<u8>,
) -> Result<Document> {
    let name = UserName::new(conv.user.clone(), conv.db.clone());
    login(svc, conn, &name, conv.mechanism.name())?;
    Ok(doc! { "conversationId": CONVERSATION_ID, "done": true, "payload": binary(server_final) })
}

/// Adds a user (already proven) to the connection's authenticated users.
pub(crate) fn login(
    svc: &Service,
    conn: &mut Connection,
    name: &UserName,
    mechanism: &str,
) -> Result<()> {
    let txn = svc.store.begin()?;
    let resolved = auth::load_user(txn.as_ref(), name);
    txn.abort();
    let Some(user) = resolved? else {
        record_failure(
            conn,
            &name.name,
            &name.db,
            mechanism,
            "the user was dropped during authentication",
        );
        return Err(auth_failed());
    };
    // One user per connection, as in MongoDB since 6.0: a new login replaces the previous one.
    conn.auth.users = vec![user];
    conn.auth.generation = svc.user_generation();
    conn.auth.failures = 0;
    tracing::info!(remote = %conn.remote, connection = conn.id, user = %name, mechanism = %mechanism,
        "successfully authenticated");
    Ok(())
}

/// `authenticate`: MONGODB-X509 with the client certificate the TLS layer verified.
pub fn authenticate(req: &mut Request<'_>) -> Result<Document> {
    let mechanism = req.cmd.get_str("mechanism").unwrap_or_default().to_string();
    if mechanism != "MONGODB-X509" || !enabled(req.svc, &mechanism) {
        bail!(
            MechanismUnavailable,
            "Received authentication for mechanism {} which is unknown or not enabled",
            mechanism
        );
    }
    let db = req.db;
    if db != "$external" {
        bail!(ProtocolError, "X.509 authentication must always use the $external database.");
    }
    rate_limit(req.conn)?;
    let Some(subject) = req.conn.client_certificate_subject.clone() else {
        record_failure(req.conn, "", db, &mechanism, "no verified client certificate");
        bail!(AuthenticationFailed, "No verified subject name available from client");
    };
    if let Ok(user) = req.cmd.get_str("user")
        && user != subject
    {
        record_failure(
            req.conn,
            user,
            db,
            &mechanism,
            "user does not match the certificate subject",
        );
        bail!(AuthenticationFailed, "There is no x.509 client certificate matching the user.");
    }
    login(req.svc, req.conn, &UserName::new(subject.clone(), "$external"), &mechanism)?;
    Ok(doc! { "dbname": "$external", "user": subject })
}

/// `logout`: forgets the connection's user.
pub fn logout(req: &mut Request<'_>) -> Result<Document> {
    req.conn.auth.users.clear();
    req.conn.auth.conversation = None;
    Ok(Document::new())
}

// --- users ---------------------------------------------------------------------------------

fn name_arg(cmd: &Document, command: &str) -> Result<String> {
    match cmd.get(command) {
        Some(Bson::String(s)) if s.is_empty() => bail!(BadValue, "User name must not be empty"),
        Some(Bson::String(s)) if s.contains('\0') => {
            bail!(BadValue, "Username cannot contain NULL characters")
        }
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => bail!(
            TypeMismatch,
            "BSON field '{}' is the wrong type, expected type 'string'",
            command
        ),
    }
}

/// Every enabled SCRAM mechanism: what a user gets without a `mechanisms` argument.
fn default_mechanisms(svc: &Service) -> Vec<Mechanism> {
    Mechanism::ALL.into_iter().filter(|m| enabled(svc, m.name())).collect()
}

/// The `mechanisms` argument, when given.
fn mechanisms_arg(svc: &Service, cmd: &Document) -> Result<Option<Vec<Mechanism>>> {
    let Some(v) = cmd.get("mechanisms") else {
        return Ok(None);
    };
    let Bson::Array(list) = v else {
        bail!(TypeMismatch, "BSON field 'mechanisms' is the wrong type, expected type 'array'");
    };
    if list.is_empty() {
        bail!(BadValue, "mechanisms field must not be empty");
    }
    let mut out = Vec::new();
    for m in list {
        match m.as_str().and_then(Mechanism::from_name) {
            Some(m) if enabled(svc, m.name()) => out.push(m),
            _ => bail!(BadValue, "Unknown auth mechanism '{}'", m),
        }
    }
    Ok(Some(out))
}

fn password_arg(cmd: &Document, db: &str) -> Result<Option<String>> {
    if cmd.get("digestPassword").is_some_and(|v| matches!(v, Bson::Boolean(false))) {
        bail!(BadValue, "Use of SCRAM-SHA-256 requires undigested passwords");
    }
    match cmd.get("pwd") {
        None => Ok(None),
        Some(_) if db == "$external" => {
            bail!(BadValue, "Cannot set the password for users defined on the '$external' database")
        }
        Some(Bson::String(p)) if p.is_empty() => {
            bail!(BadValue, "User passwords must not be empty")
        }
        Some(Bson::String(p)) => Ok(Some(p.clone())),
        Some(_) => {
            bail!(TypeMismatch, "BSON field 'pwd' is the wrong type, expected type 'string'")
        }
    }
}

fn credentials(user: &str, password: &str, mechanisms: &[Mechanism]) -> Result<Document> {
    let mut d = Document::new();
    for m in mechanisms {
        d.insert(m.name(), Credential::derive(*m, user, password)?.to_document());
    }
    Ok(d)
}

fn refuse_restrictions(cmd: &Document) -> Result<()> {
    match cmd.get("authenticationRestrictions") {
        None => Ok(()),
        Some(Bson::Array(a)) if a.is_empty() => Ok(()),
        Some(_) => bail!(NotImplemented, "authenticationRestrictions are not supported"),
    }
}

/// Checks that every role exists (built-in, or user-defined in `admin.system.roles`).
fn check_roles_exist(txn: &dyn crate::mvcc::Txn, roles: &[UserName]) -> Result<()> {
    for r in roles {
        if roles::role_definition(txn, r)?.is_none() {
            bail!(RoleNotFound, "Could not find role: {}", r);
        }
    }
    Ok(())
}

fn user_not_found(name: &UserName) -> Error {
    err!(UserNotFound, "Could not find user \"{}\" for db \"{}\"", name.name, name.db)
}

/// The required `roles` argument (bare names are roles of `db`).
fn roles_arg(cmd: &Document, db: &str, command: &str) -> Result<Vec<UserName>> {
    auth::parse_role_names(required(cmd, "roles", command)?, db, "roles")
}

/// The `roles` argument, when given.
fn opt_roles_arg(cmd: &Document, db: &str) -> Result<Option<Vec<UserName>>> {
    cmd.get("roles").map(|v| auth::parse_role_names(v, db, "roles")).transpose()
}

/// Deletes the user or role documents matching `filter` (only the first with `limit_one`);
/// answers how many.
fn delete(
    txn: &mut dyn crate::mvcc::Txn,
    coll: &str,
    filter: Document,
    limit_one: bool,
) -> Result<u64> {
    let op = DeleteOp {
        filter: &filter,
        limit_one,
        let_vars: None,
        collation: &Default::default(),
        hint: None,
    };
    Ok(exec::delete(txn, ADMIN_DB, coll, &op)?.deleted)
}

/// Adds each of `given` to `list` (`grant`, once) or removes it from there.
fn grant_or_revoke(list: &mut Vec<UserName>, given: &[UserName], grant: bool) {
    for g in given {
        if !grant {
            list.retain(|x| x != g);
        } else if !list.contains(g) {
            list.push(g.clone());
        }
    }
}

/// Replaces a user or role document.
fn replace(txn: &mut dyn crate::mvcc::Txn, coll: &str, id: &str, doc: Document) -> Result<()> {
    let op = UpdateOp {
        filter: doc! { "_id": id },
        update: UpdateDoc::Modifiers(doc),
        ..UpdateOp::default()
    };
    exec::update(txn, ADMIN_DB, coll, &op)?;
    Ok(())
}

/// Runs a user/role change as one write and makes every connection re-resolve privileges.
fn change(
    svc: &Service,
    run: &mut Runner,
    f: impl FnMut(&mut dyn crate::mvcc::Txn) -> Result<Document>,
) -> Result<Document> {
    let out = run.write(0, f);
    // Bump even after a failure: a failed write changes nothing, and a spurious refresh is cheap.
    svc.bump_user_generation();
    out
}

/// `createUser`.
pub fn create_user(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let name = UserName::new(name_arg(req.cmd, "createUser")?, db.clone());
    if db == "local" {
        bail!(BadValue, "Cannot create users in the local database");
    }
    refuse_restrictions(req.cmd)?;
    let password = password_arg(req.cmd, &db)?;
    if password.is_none() && db != "$external" {
        bail!(
            BadValue,
            "Must provide a 'pwd' field for all user documents, except those with '$external' as the user's source db"
        );
    }
    let roles = roles_arg(req.cmd, &db, "createUser")?;
    let mechanisms =
        mechanisms_arg(req.svc, req.cmd)?.unwrap_or_else(|| default_mechanisms(req.svc));
    let custom = opt_doc(req.cmd, "customData", "createUser")?;
    let mut user = doc! {
        "_id": name.id(),
        "userId": bson::Uuid::new(),
        "user": name.name.clone(),
        "db": db.clone(),
    };
    if let Some(p) = &password {
        // Key derivation is deliberately slow (PBKDF2): done once, outside the write.
        user.insert("credentials", credentials(&name.name, p, &mechanisms)?);
    } else {
        user.insert("credentials", doc! { "external": true });
    }
    user.insert("roles", auth::role_documents(&roles));
    if let Some(c) = custom {
        user.insert("customData", c);
    }
    change(req.svc, run, |txn| {
        if auth::find_user(txn, &name)?.is_some() {
            bail!(Location51003, "User \"{}\" already exists", name);
        }
        check_roles_exist(txn, &roles)?;
        exec::insert_one(txn, ADMIN_DB, USERS_COLLECTION, &user, false)?;
        Ok(Document::new())
    })
}

/// `updateUser`.
pub fn update_user(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let name = UserName::new(name_arg(req.cmd, "updateUser")?, db.clone());
    refuse_restrictions(req.cmd)?;
    let password = password_arg(req.cmd, &db)?;
    let roles = opt_roles_arg(req.cmd, &db)?;
    let custom = opt_doc(req.cmd, "customData", "updateUser")?;
    let mechanisms = mechanisms_arg(req.svc, req.cmd)?;
    if password.is_none() && roles.is_none() && custom.is_none() && mechanisms.is_none() {
        bail!(BadValue, "Must specify at least one field to update in updateUser");
    }
    let new_credentials = match &password {
        Some(p) => Some(credentials(
            &name.name,
            p,
            &mechanisms.clone().unwrap_or_else(|| default_mechanisms(req.svc)),
        )?),
        None => None,
    };
    change(req.svc, run, |txn| {
        let mut user = auth::find_user(txn, &name)?.ok_or_else(|| user_not_found(&name))?;
        if let Some(c) = &new_credentials {
            user.insert("credentials", c.clone());
        } else if let Some(ms) = &mechanisms {
            // Without a new password, `mechanisms` may only narrow the stored credentials.
            let mut creds = user.get_document("credentials").cloned().unwrap_or_default();
            for m in Mechanism::ALL {
                if !ms.contains(&m) {
                    creds.remove(m.name());
                } else if !creds.contains_key(m.name()) {
                    bail!(
                        BadValue,
                        "mechanisms field must be a subset of previously set mechanisms"
                    );
                }
            }
            user.insert("credentials", creds);
        }
        if let Some(r) = &roles {
            check_roles_exist(txn, r)?;
            user.insert("roles", auth::role_documents(r));
        }
        if let Some(c) = &custom {
            user.insert("customData", c.clone());
        }
        replace(txn, USERS_COLLECTION, &name.id(), user)?;
        Ok(Document::new())
    })
}

/// `dropUser`.
pub fn drop_user(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let name = UserName::new(name_arg(req.cmd, "dropUser")?, run.op.db.clone());
    change(req.svc, run, |txn| {
        if delete(txn, USERS_COLLECTION, doc! { "_id": name.id() }, true)? == 0 {
            return Err(user_not_found(&name));
        }
        Ok(Document::new())
    })
}

/// `dropAllUsersFromDatabase`.
pub fn drop_all_users(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    change(req.svc, run, |txn| {
        let n = delete(txn, USERS_COLLECTION, doc! { "db": db.clone() }, false)?;
        Ok(doc! { "n": n as i32 })
    })
}

/// `grantRolesToUser` / `revokeRolesFromUser`.
pub fn grant_or_revoke_user(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let grant = req.name == "grantRolesToUser";
    let db = run.op.db.clone();
    let name = UserName::new(name_arg(req.cmd, req.name)?, db.clone());
    let roles = roles_arg(req.cmd, &db, req.name)?;
    change(req.svc, run, |txn| {
        let mut user = auth::find_user(txn, &name)?.ok_or_else(|| user_not_found(&name))?;
        check_roles_exist(txn, &roles)?;
        let mut current = auth::roles_of(&user, &db)?;
        grant_or_revoke(&mut current, &roles, grant);
        user.insert("roles", auth::role_documents(&current));
        replace(txn, USERS_COLLECTION, &name.id(), user)?;
        Ok(Document::new())
    })
}

/// The names a `usersInfo`/`rolesInfo` argument asks for; `None` means every one of the
/// database (or of every database with `forAllDBs`).
fn info_names(
    v: Option<&Bson>,
    db: &str,
    key: &str,
    command: &str,
) -> Result<Option<Vec<UserName>>> {
    let one = |v: &Bson| -> Result<UserName> {
        match v {
            Bson::String(s) => Ok(UserName::new(s.clone(), db)),
            Bson::Document(d) => match (d.get_str(key), d.get_str("db")) {
                (Ok(n), Ok(d)) => Ok(UserName::new(n, d)),
                _ => bail!(BadValue, "{} entries must have '{}' and 'db' fields", command, key),
            },
            _ => bail!(BadValue, "{} entries must be strings or documents", command),
        }
    };
    match v {
        Some(Bson::Int32(1) | Bson::Int64(1)) => Ok(None),
        Some(Bson::Double(d)) if *d == 1.0 => Ok(None),
        Some(Bson::Document(d)) if d.get_bool("forAllDBs").unwrap_or(false) => Ok(None),
        Some(Bson::Array(a)) => a.iter().map(one).collect::<Result<Vec<_>>>().map(Some),
        Some(v @ (Bson::String(_) | Bson::Document(_))) => Ok(Some(vec![one(v)?])),
        _ => bail!(BadValue, "{} must be 1, a name, a document or an array", command),
    }
}

/// `usersInfo`.
pub fn users_info(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let all_dbs =
        req.cmd.get_document("usersInfo").is_ok_and(|d| d.get_bool("forAllDBs").unwrap_or(false));
    let names = info_names(req.cmd.get("usersInfo"), &db, "user", "usersInfo")?;
    let show_credentials = opt_bool(req.cmd, "showCredentials", "usersInfo")?.unwrap_or(false);
    let show_privileges = opt_bool(req.cmd, "showPrivileges", "usersInfo")?.unwrap_or(false);
    let filter = super::args::opt_doc(req.cmd, "filter", "usersInfo")?;
    let users = run.read(|txn| {
        let mut q = match &names {
            Some(n) => doc! { "_id": { "$in": n.iter().map(|u| Bson::String(u.id())).collect::<Vec<_>>() } },
            None if all_dbs => Document::new(),
            None => doc! { "db": db.clone() },
        };
        if let Some(f) = &filter {
            q = doc! { "$and": [q, f.clone()] };
        }
        let spec = FindSpec { filter: q, sort: Some(doc! { "_id": 1 }), ..FindSpec::default() };
        let mut out = Vec::new();
        for u in exec::find(txn, ADMIN_DB, USERS_COLLECTION, &spec)? {
            let mut d = doc! {
                "_id": u.get("_id").cloned().unwrap_or(Bson::Null),
                "userId": u.get("userId").cloned().unwrap_or(Bson::Null),
                "user": u.get("user").cloned().unwrap_or(Bson::Null),
                "db": u.get("db").cloned().unwrap_or(Bson::Null),
            };
            if let Some(c) = u.get("customData") {
                d.insert("customData", c.clone());
            }
            d.insert("roles", u.get("roles").cloned().unwrap_or(Bson::Array(Vec::new())));
            let creds = u.get_document("credentials").cloned().unwrap_or_default();
            let mechs: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).filter(|m| creds.contains_key(*m)).collect();
            d.insert("mechanisms", mechs);
            if show_credentials {
                d.insert("credentials", creds);
            }
            if show_privileges {
                let resolved = auth::resolve_user(txn, &u)?;
                d.insert("inheritedRoles", auth::role_documents(&resolved.roles));
                d.insert("inheritedPrivileges", roles::privilege_documents(&resolved.privileges));
            }
            out.push(Bson::Document(d));
        }
        Ok(out)
    })?;
    Ok(doc! { "users": users })
}

// --- roles ---------------------------------------------------------------------------------

/// A `privileges` argument of a role of `db`.
fn parse_privileges(v: &Bson, db: &str) -> Result<Vec<Privilege>> {
    let Bson::Array(list) = v else {
        bail!(TypeMismatch, "BSON field 'privileges' is the wrong type, expected type 'array'");
    };
    let mut out = Vec::new();
    for p in list {
        let Bson::Document(p) = p else {
            bail!(TypeMismatch, "privileges entries must be documents");
        };
        let p = Privilege::parse(p)?;
        // Roles outside admin may only grant privileges on their own database.
        if db != ADMIN_DB {
            let own = matches!(&p.resource, auth::Resource::Namespace { db: d, .. } if d == db);
            if !own {
                bail!(
                    InvalidRoleModification,
                    "Roles on the '{}' database cannot be granted privileges that target other databases or the cluster",
                    db
                );
            }
        }
        roles::merge(&mut out, p);
    }
    Ok(out)
}

fn role_not_found(name: &UserName) -> Error {
    err!(RoleNotFound, "Role {} not found", name)
}

/// Fails when a role would inherit itself.
fn check_no_cycle(
    txn: &dyn crate::mvcc::Txn,
    role: &UserName,
    inherits: &[UserName],
) -> Result<()> {
    let (all, _) = roles::resolve(txn, inherits)?;
    if all.contains(role) {
        bail!(
            InvalidRoleModification,
            "Granting roles to {} would introduce a cycle in the role graph",
            role
        );
    }
    Ok(())
}

fn role_name(cmd: &Document, command: &str, db: &str) -> Result<UserName> {
    let name = match cmd.get(command) {
        Some(Bson::String(s)) if !s.is_empty() => s.clone(),
        _ => bail!(BadValue, "Role name must be a non-empty string"),
    };
    let role = UserName::new(name, db);
    if roles::is_builtin_name(&role.name) {
        bail!(InvalidRoleModification, "Cannot create or modify the built-in role {}", role);
    }
    Ok(role)
}

/// `createRole`.
pub fn create_role(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let role = role_name(req.cmd, "createRole", &db)?;
    refuse_restrictions(req.cmd)?;
    let privileges = parse_privileges(required(req.cmd, "privileges", "createRole")?, &db)?;
    let inherits = roles_arg(req.cmd, &db, "createRole")?;
    change(req.svc, run, |txn| {
        if auth::find_role(txn, &role)?.is_some() {
            bail!(Location51002, "Role \"{}\" already exists", role);
        }
        check_roles_exist(txn, &inherits)?;
        check_no_cycle(txn, &role, &inherits)?;
        let d = doc! {
            "_id": role.id(),
            "role": role.name.clone(),
            "db": role.db.clone(),
            "privileges": roles::privilege_documents(&privileges),
            "roles": auth::role_documents(&inherits),
        };
        exec::insert_one(txn, ADMIN_DB, ROLES_COLLECTION, &d, false)?;
        Ok(Document::new())
    })
}

/// Applies `f` to a user-defined role's privileges and inherited roles, and stores the result.
fn modify_role(
    svc: &Service,
    run: &mut Runner,
    role: UserName,
    f: impl Fn(&mut Vec<Privilege>, &mut Vec<UserName>),
) -> Result<Document> {
    change(svc, run, |txn| {
        let mut d = auth::find_role(txn, &role)?.ok_or_else(|| role_not_found(&role))?;
        let (mut privileges, mut inherits) = roles::stored_definition(&d, &role.db)?;
        f(&mut privileges, &mut inherits);
        check_roles_exist(txn, &inherits)?;
        check_no_cycle(txn, &role, &inherits)?;
        d.insert("privileges", roles::privilege_documents(&privileges));
        d.insert("roles", auth::role_documents(&inherits));
        replace(txn, ROLES_COLLECTION, &role.id(), d)?;
        Ok(Document::new())
    })
}

/// `updateRole`: replaces the privileges and/or inherited roles given.
pub fn update_role(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let role = role_name(req.cmd, "updateRole", &db)?;
    refuse_restrictions(req.cmd)?;
    let privileges = req.cmd.get("privileges").map(|v| parse_privileges(v, &db)).transpose()?;
    let inherits = opt_roles_arg(req.cmd, &db)?;
    if privileges.is_none() && inherits.is_none() {
        bail!(BadValue, "Must specify at least one field to update in updateRole");
    }
    modify_role(req.svc, run, role, |p, r| {
        if let Some(new) = &privileges {
            *p = new.clone();
        }
        if let Some(new) = &inherits {
            *r = new.clone();
        }
    })
}

/// `grantPrivilegesToRole` / `revokePrivilegesFromRole`.
pub fn change_privileges(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let grant = req.name == "grantPrivilegesToRole";
    let db = run.op.db.clone();
    let role = role_name(req.cmd, req.name, &db)?;
    let given = parse_privileges(required(req.cmd, "privileges", req.name)?, &db)?;
    modify_role(req.svc, run, role, |p, _| {
        for g in &given {
            if grant {
                roles::merge(p, g.clone());
            } else if let Some(q) = p.iter_mut().find(|q| q.resource == g.resource) {
                q.actions.retain(|a| !g.actions.contains(a));
            }
        }
        p.retain(|q| !q.actions.is_empty());
    })
}

/// `grantRolesToRole` / `revokeRolesFromRole`.
pub fn change_inherited(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let grant = req.name == "grantRolesToRole";
    let db = run.op.db.clone();
    let role = role_name(req.cmd, req.name, &db)?;
    let given = roles_arg(req.cmd, &db, req.name)?;
    modify_role(req.svc, run, role, |_, r| grant_or_revoke(r, &given, grant))
}

/// Removes `role` from every user's and role's `roles` (what dropping a role does in MongoDB).
fn forget_role(txn: &mut dyn crate::mvcc::Txn, role: &UserName) -> Result<()> {
    let pull = doc! { "$pull": { "roles": { "role": role.name.clone(), "db": role.db.clone() } } };
    for coll in [USERS_COLLECTION, ROLES_COLLECTION] {
        let op = UpdateOp {
            filter: doc! { "roles": { "role": role.name.clone(), "db": role.db.clone() } },
            update: UpdateDoc::Modifiers(pull.clone()),
            multi: true,
            ..UpdateOp::default()
        };
        exec::update(txn, ADMIN_DB, coll, &op)?;
    }
    Ok(())
}

/// `dropRole`.
pub fn drop_role(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let role = role_name(req.cmd, "dropRole", &db)?;
    change(req.svc, run, |txn| {
        if delete(txn, ROLES_COLLECTION, doc! { "_id": role.id() }, true)? == 0 {
            return Err(role_not_found(&role));
        }
        forget_role(txn, &role)?;
        Ok(Document::new())
    })
}

/// `dropAllRolesFromDatabase`.
pub fn drop_all_roles(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    change(req.svc, run, |txn| {
        let spec = FindSpec { filter: doc! { "db": db.clone() }, ..FindSpec::default() };
        let found = exec::find(txn, ADMIN_DB, ROLES_COLLECTION, &spec)?;
        let n = delete(txn, ROLES_COLLECTION, doc! { "db": db.clone() }, false)?;
        for d in &found {
            forget_role(txn, &UserName::new(d.get_str("role").unwrap_or_default(), db.clone()))?;
        }
        Ok(doc! { "n": n as i32 })
    })
}

/// `rolesInfo`.
pub fn roles_info(req: &mut Request<'_>, run: &mut Runner) -> Result<Document> {
    let db = run.op.db.clone();
    let names = info_names(req.cmd.get("rolesInfo"), &db, "role", "rolesInfo")?;
    let show_privileges = matches!(req.cmd.get("showPrivileges"), Some(Bson::Boolean(true)))
        || matches!(req.cmd.get("showPrivileges"), Some(Bson::String(s)) if s == "asUserFragment");
    let show_builtin = opt_bool(req.cmd, "showBuiltinRoles", "rolesInfo")?.unwrap_or(false);
    let out = run.read(|txn| {
        let wanted: Vec<UserName> = match &names {
            Some(n) => n.clone(),
            None => {
                let spec = FindSpec {
                    filter: doc! { "db": db.clone() },
                    sort: Some(doc! { "_id": 1 }),
                    ..FindSpec::default()
                };
                let mut v: Vec<UserName> = Vec::new();
                if show_builtin {
                    v.extend(
                        roles::builtin_names(&db).into_iter().map(|n| UserName::new(n, db.clone())),
                    );
                }
                for d in exec::find(txn, ADMIN_DB, ROLES_COLLECTION, &spec)? {
                    v.push(UserName::new(d.get_str("role").unwrap_or_default(), db.clone()));
                }
                v
            }
        };
        let mut out = Vec::new();
        for role in wanted {
            let Some((privileges, inherits)) = roles::role_definition(txn, &role)? else {
                continue;
            };
            let (all, all_privileges) = roles::resolve(txn, std::slice::from_ref(&role))?;
            let builtin = roles::is_builtin(&role);
            let mut d =
                doc! { "role": role.name.clone(), "db": role.db.clone(), "isBuiltin": builtin };
            if !builtin {
                d.insert("_id", role.id());
            }
            d.insert("roles", auth::role_documents(&inherits));
            let inherited: Vec<UserName> = all.into_iter().filter(|r| *r != role).collect();
            d.insert("inheritedRoles", auth::role_documents(&inherited));
            if show_privileges {
                d.insert("privileges", roles::privilege_documents(&privileges));
                d.insert("inheritedPrivileges", roles::privilege_documents(&all_privileges));
            }
            out.push(Bson::Document(d));
        }
        Ok(out)
    })?;
    Ok(doc! { "roles": out })
}
