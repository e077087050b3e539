//! Authentication and authorization: who a connection is, and what it may do.
//!
//! # Where things live
//!
//! Users are documents of `admin.system.users` and user-defined roles documents of
//! `admin.system.roles`, shaped as MongoDB shapes them (`_id: "db.name"`, `user`, `db`,
//! `credentials`, `roles: [{role, db}]`; `privileges`, `roles` for roles). They are written by the
//! user and role commands through the ordinary transactional write path, so a user exists
//! durably once `createUser` has answered, and never half-written. A password is never stored:
//! [`scram`] keeps salted keys per mechanism.
//!
//! # Authentication
//!
//! A connection authenticates with a SASL conversation (`saslStart`, `saslContinue`, or the
//! `speculativeAuthenticate` field of `hello`), carried in its [`AuthState`]. Success adds the user
//! to the connection's authenticated users; `logout` removes them.
//!
//! # Authorization
//!
//! A user's roles resolve, through [`roles`], into a set of [`Privilege`]s: a [`Resource`] and
//! the actions allowed on it. MongoDB's built-in roles are a data table there; user-defined roles
//! are read from `admin.system.roles`, inheriting transitively. Each command names the
//! `(target, action)` pairs it needs (`command/authz.rs`, the one place dispatch checks), and a
//! connection may run it when some privilege of one of its users covers each pair.
//!
//! A connection caches its users' resolved privileges together with the service's *user
//! generation*, a counter every user or role change bumps: the next command of every
//! connection then resolves again, so a revoked role takes effect at once.
//!
//! # Sessions and cursors belong to users
//!
//! With authorization on, a command's `lsid` gets the `uid` MongoDB gives it, the digest of the
//! authenticated user ([`UserName::session_digest`]; `command::authz::owned_lsid`), and the
//! session's key includes it, so the same lsid `id` sent by two users names two sessions. A
//! client may send a `uid` only if it is its own (or it holds `impersonate`; `killSessions` also
//! accepts `killAnySession`). Cursors remember the user that opened them, and only that user may
//! continue or kill them (`crate::cursor`).
//!
//! The embedded API runs in the caller's process and is never checked (a caller that can call it
//! can read the files anyway); only network connections are.

pub mod roles;
pub mod scram;

use std::fmt;
use std::time::Instant;

use bson::{Bson, Document, doc};

use crate::error::Result;
use crate::exec::{self, FindSpec};
use crate::mvcc::Txn;
use crate::{bail, err};

/// The database that holds users and roles.
pub const ADMIN_DB: &str = "admin";
/// The collection of users.
pub const USERS_COLLECTION: &str = "system.users";
/// The collection of user-defined roles.
pub const ROLES_COLLECTION: &str = "system.roles";

/// A user (or role) name qualified by its database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName {
    /// The name.
    pub name: String,
    /// The database it is defined in.
    pub db: String,
}

impl UserName {
    /// A name in a database.
    pub fn new(name: impl Into<String>, db: impl Into<String>) -> Self {
        UserName { name: name.into(), db: db.into() }
    }

    /// The `_id` of its document: `db.name`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The digest MongoDB puts in the `uid` of the user's logical sessions: SHA-256 of the full
    /// name `user@db`.
    pub fn session_digest(&self) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(self.to_string().as_bytes()).to_vec()
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.db)
    }
}

/// What a privilege applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `{anyResource: true}`: everything, system collections and the cluster included.
    Any,
    /// `{cluster: true}`: server-wide operations.
    Cluster,
    /// `{db, collection}`, where an empty string matches any database or any non-system
    /// collection.
    Namespace {
        /// The database, or "" for any.
        db: String,
        /// The collection, or "" for any non-system collection (and the database itself).
        collection: String,
    },
}

/// What a command needs a privilege on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The cluster.
    Cluster,
    /// Every database (`forAllDBs`, `listDatabases` of all).
    AnyDatabase,
    /// A database as a whole.
    Database(String),
    /// One collection.
    Namespace(String, String),
}

impl Target {
    /// A collection target.
    pub fn ns(db: &str, coll: &str) -> Target {
        Target::Namespace(db.to_string(), coll.to_string())
    }

    /// A database target.
    pub fn db(db: &str) -> Target {
        Target::Database(db.to_string())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cluster => write!(f, "cluster"),
            Target::AnyDatabase => write!(f, "any database"),
            Target::Database(db) => write!(f, "database {db}"),
            Target::Namespace(db, c) => write!(f, "{db}.{c}"),
        }
    }
}

/// Whether a collection is a system collection, which database-wide privileges do not cover.
fn is_system(coll: &str) -> bool {
    coll.starts_with("system.")
}

impl Resource {
    /// Whether this resource covers a target, as MongoDB's resource patterns match.
    pub fn covers(&self, target: &Target) -> bool {
        match (self, target) {
            (Resource::Any, _) => true,
            (Resource::Cluster, Target::Cluster) => true,
            (Resource::Cluster, _) => false,
            (Resource::Namespace { .. }, Target::Cluster) => false,
            (Resource::Namespace { db, collection }, Target::AnyDatabase) => {
                db.is_empty() && collection.is_empty()
            }
            (Resource::Namespace { db, collection }, Target::Database(d)) => {
                collection.is_empty() && (db.is_empty() || db == d)
            }
            (Resource::Namespace { db, collection }, Target::Namespace(d, c)) => {
                (db.is_empty() || db == d)
                    && if collection.is_empty() { !is_system(c) } else { collection == c }
            }
        }
    }

    /// Parses `{db, collection}`, `{cluster: true}` or `{anyResource: true}`.
    pub fn parse(d: &Document) -> Result<Resource> {
        if d.get_bool("anyResource").unwrap_or(false) && d.len() == 1 {
            return Ok(Resource::Any);
        }
        if d.get_bool("cluster").unwrap_or(false) && d.len() == 1 {
            return Ok(Resource::Cluster);
        }
        match (d.get("db"), d.get("collection")) {
            (Some(Bson::String(db)), Some(Bson::String(c))) if d.len() == 2 => {
                Ok(Resource::Namespace { db: db.clone(), collection: c.clone() })
            }
            _ => bail!(
                BadValue,
                "resource pattern must contain 'collection' or 'cluster' or 'anyResource' \
                 (with 'db' and 'collection' both strings): {}",
                d
            ),
        }
    }

    /// The resource as a privilege document shows it.
    pub fn to_document(&self) -> Document {
        match self {
            Resource::Any => doc! { "anyResource": true },
            Resource::Cluster => doc! { "cluster": true },
            Resource::Namespace { db, collection } => {
                doc! { "db": db.clone(), "collection": collection.clone() }
            }
        }
    }
}

/// A resource and the actions allowed on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privilege {
    /// The resource.
    pub resource: Resource,
    /// The actions (MongoDB's action type names; `anyAction` allows all).
    pub actions: Vec<String>,
}

impl Privilege {
    /// Parses `{resource, actions}`, refusing action names MongoDB does not have.
    pub fn parse(d: &Document) -> Result<Privilege> {
        let resource = match d.get("resource") {
            Some(Bson::Document(r)) => Resource::parse(r)?,
            _ => bail!(FailedToParse, "Privilege must have a 'resource' document"),
        };
        let mut actions = Vec::new();
        match d.get("actions") {
            Some(Bson::Array(a)) => {
                for v in a {
                    let Some(name) = v.as_str() else {
                        bail!(FailedToParse, "Privilege actions must be strings");
                    };
                    if !roles::is_action(name) {
                        bail!(FailedToParse, "Unrecognized action privilege string: {}", name);
                    }
                    if !actions.iter().any(|x: &String| x == name) {
                        actions.push(name.to_string());
                    }
                }
            }
            _ => bail!(FailedToParse, "Privilege must have an 'actions' array"),
        }
        Ok(Privilege { resource, actions })
    }

    /// The privilege as MongoDB shows it.
    pub fn to_document(&self) -> Document {
        doc! { "resource": self.resource.to_document(), "actions": self.actions.clone() }
    }

    /// Whether it allows `action` on `target`.
    pub fn allows(&self, target: &Target, action: &str) -> bool {
        self.resource.covers(target) && self.actions.iter().any(|a| a == action || a == "anyAction")
    }
}

/// One authenticated user with what its roles resolved to.
#[derive(Clone, Debug)]
pub struct AuthenticatedUser {
    /// Who.
    pub name: UserName,
    /// Every role the user holds, directly or inherited.
    pub roles: Vec<UserName>,
    /// The union of those roles' privileges.
    pub privileges: Vec<Privilege>,
}

/// The authentication state of a connection.
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    /// The users authenticated on the connection.
    pub users: Vec<AuthenticatedUser>,
    /// The user generation the privileges were resolved at.
    pub generation: u64,
    /// A SASL conversation in progress.
    pub conversation: Option<scram::Conversation>,
    /// Failed authentications on this connection, for rate limiting.
    pub failures: u32,
    /// When the last authentication failed.
    pub last_failure: Option<Instant>,
}

impl AuthState {
    /// Whether some user is authenticated.
    pub fn is_authenticated(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether some authenticated user may perform `action` on `target`.
    pub fn allows(&self, target: &Target, action: &str) -> bool {
        self.users.iter().any(|u| u.privileges.iter().any(|p| p.allows(target, action)))
    }

    /// Whether some authenticated user holds any privilege on `db` or one of its collections
    /// (what `listDatabases` with `authorizedDatabases` shows).
    pub fn has_any_privilege_on_db(&self, db: &str) -> bool {
        self.users.iter().flat_map(|u| &u.privileges).any(|p| match &p.resource {
            Resource::Any => true,
            Resource::Cluster => false,
            Resource::Namespace { db: d, .. } => d.is_empty() || d == db,
        })
    }

    /// Whether some authenticated user holds any privilege on the collection `db.coll` (what
    /// `listCollections` with `authorizedCollections` shows).
    pub fn has_any_privilege_on_collection(&self, db: &str, coll: &str) -> bool {
        let target = Target::ns(db, coll);
        self.users.iter().flat_map(|u| &u.privileges).any(|p| p.resource.covers(&target))
    }
}

/// Reads a user document by name.
pub fn find_user(txn: &dyn Txn, user: &UserName) -> Result<Option<Document>> {
    let spec = FindSpec { filter: doc! { "_id": user.id() }, limit: 1, ..FindSpec::default() };
    Ok(exec::find(txn, ADMIN_DB, USERS_COLLECTION, &spec)?.into_iter().next())
}

/// Reads a user and resolves its roles (`None` when there is no such user).
pub fn load_user(txn: &dyn Txn, user: &UserName) -> Result<Option<AuthenticatedUser>> {
    find_user(txn, user)?.map(|d| resolve_user(txn, &d)).transpose()
}

/// Reads a user-defined role document by name.
pub fn find_role(txn: &dyn Txn, role: &UserName) -> Result<Option<Document>> {
    let spec = FindSpec { filter: doc! { "_id": role.id() }, limit: 1, ..FindSpec::default() };
    Ok(exec::find(txn, ADMIN_DB, ROLES_COLLECTION, &spec)?.into_iter().next())
}

/// Whether any user or user-defined role exists (the localhost exception ends with the first).
pub fn any_user_or_role_exists(txn: &dyn Txn) -> Result<bool> {
    let spec = FindSpec { limit: 1, ..FindSpec::default() };
    Ok(!exec::find(txn, ADMIN_DB, USERS_COLLECTION, &spec)?.is_empty()
        || !exec::find(txn, ADMIN_DB, ROLES_COLLECTION, &spec)?.is_empty())
}

/// Parses a list of `{role, db}` documents or bare role names (which name roles of
/// `default_db`).
pub fn parse_role_names(v: &Bson, default_db: &str, field: &str) -> Result<Vec<UserName>> {
    let Bson::Array(items) = v else {
        bail!(TypeMismatch, "BSON field '{}' is the wrong type, expected type 'array'", field);
    };
    let mut out = Vec::new();
    for item in items {
        let name = match item {
            Bson::String(s) => UserName::new(s.clone(), default_db),
            Bson::Document(d) => match (d.get_str("role"), d.get_str("db")) {
                (Ok(r), Ok(db)) => UserName::new(r, db),
                _ => bail!(
                    BadValue,
                    "Role names must be either strings or objects with 'role' and 'db' fields"
                ),
            },
            _ => bail!(
                BadValue,
                "Role names must be either strings or objects with 'role' and 'db' fields"
            ),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The roles a stored user or role document names in `roles` (bare names are roles of `db`,
/// the document's own database).
pub fn roles_of(d: &Document, db: &str) -> Result<Vec<UserName>> {
    match d.get("roles") {
        Some(v) => parse_role_names(v, db, "roles"),
        None => Ok(Vec::new()),
    }
}

/// Role names as MongoDB lists them: `[{role, db}]`.
pub fn role_documents(names: &[UserName]) -> Vec<Bson> {
    names
        .iter()
        .map(|r| Bson::Document(doc! { "role": r.name.clone(), "db": r.db.clone() }))
        .collect()
}

/// Resolves a user document into the authenticated user it stands for.
pub fn resolve_user(txn: &dyn Txn, user: &Document) -> Result<AuthenticatedUser> {
    let name = UserName::new(
        user.get_str("user").map_err(|_| err!(InternalError, "user document without 'user'"))?,
        user.get_str("db").map_err(|_| err!(InternalError, "user document without 'db'"))?,
    );
    let direct = roles_of(user, &name.db)?;
    let (roles, privileges) = roles::resolve(txn, &direct)?;
    Ok(AuthenticatedUser { name, roles, privileges })
}
