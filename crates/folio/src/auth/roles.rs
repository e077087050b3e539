//! Roles: MongoDB's built-in roles as a data table, user-defined roles from `admin.system.roles`,
//! and the resolution of a set of roles into privileges.
//!
//! A built-in role is a list of grants — a resource *shape* (this database, any database, the
//! cluster, one named collection) and the actions on it — plus the built-in roles it includes.
//! Database roles (`read`, `readWrite`, `dbAdmin`, `dbOwner`, `userAdmin`) exist in every
//! database and apply to that database; the others exist only in `admin`. The action sets follow
//! MongoDB's documentation of each role (actions of commands Folio does not have are kept, so that
//! `rolesInfo` shows what MongoDB shows). `root` holds `anyAction` on `anyResource`
//! (docs/compatibility.md).
//!
//! A user-defined role lists privileges and roles it inherits (built-in or user-defined, from
//! any database). Resolution walks the inheritance graph breadth-first, visiting each role once,
//! so a cycle ends instead of looping (`createRole`/`updateRole` also refuse to create one).

use std::collections::VecDeque;

use bson::{Bson, Document};

use super::{Privilege, Resource, UserName};
use crate::error::Result;
use crate::mvcc::Txn;

/// The shape of a built-in grant's resource.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// The role's own database (non-system collections and the database itself).
    ThisDb,
    /// A named collection of the role's own database.
    ThisDbCollection(&'static str),
    /// Any database's non-system collections.
    AnyDb,
    /// A named collection in every database.
    AnyDbCollection(&'static str),
    /// One namespace.
    Exact(&'static str, &'static str),
    /// The cluster.
    Cluster,
    /// Everything.
    AnyResource,
}

/// A built-in role.
struct BuiltinRole {
    name: &'static str,
    /// Exists only in `admin`.
    admin_only: bool,
    /// Built-in roles (of the same database) whose privileges it includes.
    includes: &'static [&'static str],
    grants: &'static [(Shape, &'static [&'static str])],
}

const READ: &[&str] = &[
    "changeStream",
    "collStats",
    "dbHash",
    "dbStats",
    "find",
    "killCursors",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
];

const READ_WRITE: &[&str] = &[
    "changeStream",
    "collStats",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createSearchIndexes",
    "dbHash",
    "dbStats",
    "dropCollection",
    "dropIndex",
    "dropSearchIndex",
    "find",
    "insert",
    "killCursors",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
    "remove",
    "renameCollectionSameDB",
    "update",
    "updateSearchIndex",
];

const DB_ADMIN: &[&str] = &[
    "bypassDocumentValidation",
    "collMod",
    "collStats",
    "compact",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "dbStats",
    "dropCollection",
    "dropDatabase",
    "dropIndex",
    "enableProfiler",
    "listCollections",
    "listIndexes",
    "planCacheIndexFilter",
    "planCacheRead",
    "planCacheWrite",
    "reIndex",
    "renameCollectionSameDB",
    "storageDetails",
    "validate",
];

const DB_ADMIN_PROFILE: &[&str] = &[
    "changeStream",
    "collStats",
    "convertToCapped",
    "createCollection",
    "dbHash",
    "dbStats",
    "dropCollection",
    "find",
    "killCursors",
    "listCollections",
    "listIndexes",
    "planCacheRead",
];

const USER_ADMIN: &[&str] = &[
    "changeCustomData",
    "changePassword",
    "createRole",
    "createUser",
    "dropRole",
    "dropUser",
    "grantRole",
    "revokeRole",
    "setAuthenticationRestriction",
    "viewRole",
    "viewUser",
];

const CLUSTER_MONITOR: &[&str] = &[
    "checkFreeMonitoringStatus",
    "connPoolStats",
    "getCmdLineOpts",
    "getDefaultRWConcern",
    "getLog",
    "getParameter",
    "getShardMap",
    "hostInfo",
    "inprog",
    "listDatabases",
    "listSessions",
    "listShards",
    "netstat",
    "replSetGetConfig",
    "replSetGetStatus",
    "serverStatus",
    "shardingState",
    "top",
    "useUUID",
];

const CLUSTER_MONITOR_ANY_DB: &[&str] =
    &["collStats", "dbHash", "dbStats", "getShardVersion", "indexStats", "useUUID"];

const HOST_MANAGER: &[&str] = &[
    "applicationMessage",
    "connPoolSync",
    "flushRouterConfig",
    "fsync",
    "invalidateUserCache",
    "killAnyCursor",
    "killAnySession",
    "killop",
    "logRotate",
    "resync",
    "setParameter",
    "shutdown",
    "touch",
    "unlock",
];

const CLUSTER_MANAGER: &[&str] = &[
    "addShard",
    "appendOplogNote",
    "applicationMessage",
    "cleanupOrphaned",
    "flushRouterConfig",
    "getDefaultRWConcern",
    "listSessions",
    "listShards",
    "removeShard",
    "replSetConfigure",
    "replSetGetConfig",
    "replSetGetStatus",
    "replSetStateChange",
    "resync",
    "setDefaultRWConcern",
    "setFeatureCompatibilityVersion",
];

const SYSTEM_AUTH_READ: &[&str] = &["collStats", "dbHash", "dbStats", "find", "killCursors"];

const RESTORE_ANY_DB: &[&str] = &[
    "bypassDocumentValidation",
    "changeCustomData",
    "changePassword",
    "collMod",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createRole",
    "createUser",
    "dropCollection",
    "dropRole",
    "dropUser",
    "grantRole",
    "insert",
    "revokeRole",
    "viewRole",
    "viewUser",
];

const SYSTEM_AUTH_WRITE: &[&str] = &[
    "collStats",
    "createCollection",
    "createIndex",
    "dropCollection",
    "dbStats",
    "find",
    "insert",
    "remove",
    "update",
];

/// MongoDB's built-in roles.
const BUILTIN: &[BuiltinRole] = &[
    BuiltinRole {
        name: "read",
        admin_only: false,
        includes: &[],
        grants: &[(Shape::ThisDb, READ)],
    },
    BuiltinRole {
        name: "readWrite",
        admin_only: false,
        includes: &[],
        grants: &[(Shape::ThisDb, READ_WRITE)],
    },
    BuiltinRole {
        name: "dbAdmin",
        admin_only: false,
        includes: &[],
        grants: &[
            (Shape::ThisDb, DB_ADMIN),
            (Shape::ThisDbCollection("system.profile"), DB_ADMIN_PROFILE),
        ],
    },
    BuiltinRole {
        name: "userAdmin",
        admin_only: false,
        includes: &[],
        grants: &[(Shape::ThisDb, USER_ADMIN)],
    },
    BuiltinRole {
        name: "dbOwner",
        admin_only: false,
        includes: &["readWrite", "dbAdmin", "userAdmin"],
        grants: &[],
    },
    BuiltinRole {
        name: "clusterMonitor",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::Cluster, CLUSTER_MONITOR), (Shape::AnyDb, CLUSTER_MONITOR_ANY_DB)],
    },
    BuiltinRole {
        name: "hostManager",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::Cluster, HOST_MANAGER), (Shape::AnyDb, &["killCursors"])],
    },
    BuiltinRole {
        name: "clusterManager",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::Cluster, CLUSTER_MANAGER), (Shape::AnyDb, &["killCursors"])],
    },
    BuiltinRole {
        name: "clusterAdmin",
        admin_only: true,
        includes: &["clusterManager", "clusterMonitor", "hostManager"],
        grants: &[(Shape::AnyDb, &["dropDatabase"])],
    },
    BuiltinRole {
        name: "readAnyDatabase",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::AnyDb, READ), (Shape::Cluster, &["listDatabases"])],
    },
    BuiltinRole {
        name: "readWriteAnyDatabase",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::AnyDb, READ_WRITE), (Shape::Cluster, &["listDatabases"])],
    },
    BuiltinRole {
        name: "userAdminAnyDatabase",
        admin_only: true,
        includes: &[],
        grants: &[
            (Shape::AnyDb, USER_ADMIN),
            (Shape::Cluster, &["authSchemaUpgrade", "invalidateUserCache", "listDatabases"]),
            (Shape::Exact("admin", "system.users"), SYSTEM_AUTH_READ),
            (Shape::Exact("admin", "system.roles"), SYSTEM_AUTH_READ),
        ],
    },
    BuiltinRole {
        name: "dbAdminAnyDatabase",
        admin_only: true,
        includes: &[],
        grants: &[
            (Shape::AnyDb, DB_ADMIN),
            (Shape::AnyDbCollection("system.profile"), DB_ADMIN_PROFILE),
            (Shape::Cluster, &["listDatabases"]),
        ],
    },
    BuiltinRole {
        name: "backup",
        admin_only: true,
        includes: &[],
        grants: &[
            (Shape::Cluster, &["appendOplogNote", "getParameter", "listDatabases", "serverStatus"]),
            (
                Shape::AnyDb,
                &["collStats", "dbStats", "find", "killCursors", "listCollections", "listIndexes"],
            ),
            (Shape::Exact("admin", "system.users"), SYSTEM_AUTH_READ),
            (Shape::Exact("admin", "system.roles"), SYSTEM_AUTH_READ),
            (Shape::Exact("admin", "system.version"), SYSTEM_AUTH_READ),
        ],
    },
    BuiltinRole {
        name: "restore",
        admin_only: true,
        includes: &[],
        grants: &[
            (Shape::AnyDb, RESTORE_ANY_DB),
            (Shape::Cluster, &["getParameter"]),
            (Shape::Exact("admin", "system.users"), SYSTEM_AUTH_WRITE),
            (Shape::Exact("admin", "system.roles"), SYSTEM_AUTH_WRITE),
        ],
    },
    BuiltinRole {
        name: "root",
        admin_only: true,
        includes: &[],
        grants: &[(Shape::AnyResource, &["anyAction"])],
    },
];

fn builtin(role: &UserName) -> Option<&'static BuiltinRole> {
    BUILTIN.iter().find(|r| r.name == role.name && (!r.admin_only || role.db == "admin"))
}

/// Whether a role name is a built-in role in its database.
pub fn is_builtin(role: &UserName) -> bool {
    builtin(role).is_some()
}

/// Whether a name is taken by a built-in role in any database (user-defined roles may not use
/// it).
pub fn is_builtin_name(name: &str) -> bool {
    BUILTIN.iter().any(|r| r.name == name)
}

/// Whether `name` is an action MongoDB knows (for user-defined privileges).
pub fn is_action(name: &str) -> bool {
    const OTHER: &[&str] = &[
        "anyAction",
        "internal",
        "validate",
        "authSchemaUpgrade",
        "configureFailPoint",
        "bypassWriteBlockingMode",
        "indexStats",
        "impersonate",
    ];
    OTHER.contains(&name)
        || BUILTIN.iter().flat_map(|r| r.grants).any(|(_, actions)| actions.contains(&name))
}

/// The privileges of a built-in role (its includes expanded).
fn builtin_privileges(role: &UserName, def: &BuiltinRole, out: &mut Vec<Privilege>) {
    for inc in def.includes {
        if let Some(sub) = BUILTIN.iter().find(|r| r.name == *inc) {
            builtin_privileges(role, sub, out);
        }
    }
    for (shape, actions) in def.grants {
        let ns = |db: &str, c: &str| Resource::Namespace { db: db.into(), collection: c.into() };
        let resource = match shape {
            Shape::ThisDb => ns(&role.db, ""),
            Shape::ThisDbCollection(c) => ns(&role.db, c),
            Shape::AnyDb => ns("", ""),
            Shape::AnyDbCollection(c) => ns("", c),
            Shape::Exact(db, c) => ns(db, c),
            Shape::Cluster => Resource::Cluster,
            Shape::AnyResource => Resource::Any,
        };
        merge(
            out,
            Privilege { resource, actions: actions.iter().map(|a| a.to_string()).collect() },
        );
    }
}

/// Adds a privilege, merging actions into an existing privilege on the same resource.
pub fn merge(out: &mut Vec<Privilege>, p: Privilege) {
    match out.iter_mut().find(|q| q.resource == p.resource) {
        Some(q) => {
            for a in p.actions {
                if !q.actions.contains(&a) {
                    q.actions.push(a);
                }
            }
        }
        None => out.push(p),
    }
}

/// The privileges a role grants itself (not inherited), and the roles it inherits: a built-in
/// role's table entry or a user-defined role's document. `None` when the role does not exist.
pub fn role_definition(
    txn: &dyn Txn,
    role: &UserName,
) -> Result<Option<(Vec<Privilege>, Vec<UserName>)>> {
    if let Some(def) = builtin(role) {
        let mut privileges = Vec::new();
        builtin_privileges(role, def, &mut privileges);
        return Ok(Some((privileges, Vec::new())));
    }
    match super::find_role(txn, role)? {
        Some(d) => stored_definition(&d, &role.db).map(Some),
        None => Ok(None),
    }
}

/// The privileges and inherited roles of a user-defined role's document (a role of `db`).
pub fn stored_definition(d: &Document, db: &str) -> Result<(Vec<Privilege>, Vec<UserName>)> {
    let mut privileges = Vec::new();
    if let Ok(list) = d.get_array("privileges") {
        for p in list {
            if let Bson::Document(p) = p {
                merge(&mut privileges, Privilege::parse(p)?);
            }
        }
    }
    Ok((privileges, super::roles_of(d, db)?))
}

/// Resolves roles into every role held (direct and inherited, each once) and the union of their
/// privileges. Roles that no longer exist are skipped, as MongoDB does for a dropped role still
/// named by a user.
pub fn resolve(txn: &dyn Txn, direct: &[UserName]) -> Result<(Vec<UserName>, Vec<Privilege>)> {
    let mut seen: Vec<UserName> = Vec::new();
    let mut privileges = Vec::new();
    let mut queue: VecDeque<UserName> = direct.iter().cloned().collect();
    while let Some(role) = queue.pop_front() {
        if seen.contains(&role) {
            continue;
        }
        let Some((own, inherits)) = role_definition(txn, &role)? else {
            continue;
        };
        seen.push(role);
        for p in own {
            merge(&mut privileges, p);
        }
        queue.extend(inherits);
    }
    Ok((seen, privileges))
}

/// The names of the built-in roles that exist in `db`, for `rolesInfo` with
/// `showBuiltinRoles`.
pub fn builtin_names(db: &str) -> Vec<&'static str> {
    BUILTIN.iter().filter(|r| !r.admin_only || db == "admin").map(|r| r.name).collect()
}

/// A privilege list as documents.
pub fn privilege_documents(privileges: &[Privilege]) -> Vec<Bson> {
    privileges.iter().map(|p| Bson::Document(p.to_document())).collect()
}

#[cfg(test)]
mod tests {
    use super::super::Target;
    use super::*;

    fn privileges_of(role: &str, db: &str) -> Vec<Privilege> {
        let name = UserName::new(role, db);
        let mut out = Vec::new();
        builtin_privileges(&name, builtin(&name).expect("built-in"), &mut out);
        out
    }

    fn allows(ps: &[Privilege], target: &Target, action: &str) -> bool {
        ps.iter().any(|p| p.allows(target, action))
    }

    #[test]
    fn database_roles_stay_in_their_database() {
        let read = privileges_of("read", "shop");
        assert!(allows(&read, &Target::ns("shop", "orders"), "find"));
        assert!(!allows(&read, &Target::ns("shop", "orders"), "insert"));
        assert!(!allows(&read, &Target::ns("other", "orders"), "find"));
        assert!(!allows(&read, &Target::ns("shop", "system.users"), "find"));
        let rw = privileges_of("readWrite", "shop");
        assert!(allows(&rw, &Target::ns("shop", "orders"), "insert"));
        assert!(!allows(&rw, &Target::db("shop"), "dropDatabase"));
        assert!(!allows(&rw, &Target::db("shop"), "createUser"));
        let owner = privileges_of("dbOwner", "shop");
        assert!(allows(&owner, &Target::db("shop"), "dropDatabase"));
        assert!(allows(&owner, &Target::db("shop"), "createUser"));
        assert!(allows(&owner, &Target::ns("shop", "c"), "insert"));
    }

    #[test]
    fn cluster_and_any_database_roles() {
        assert!(builtin(&UserName::new("root", "shop")).is_none());
        let any = privileges_of("readAnyDatabase", "admin");
        assert!(allows(&any, &Target::ns("x", "y"), "find"));
        assert!(allows(&any, &Target::Cluster, "listDatabases"));
        assert!(!allows(&any, &Target::ns("x", "y"), "insert"));
        let monitor = privileges_of("clusterMonitor", "admin");
        assert!(allows(&monitor, &Target::Cluster, "serverStatus"));
        assert!(!allows(&monitor, &Target::Cluster, "killop"));
        let admin = privileges_of("clusterAdmin", "admin");
        assert!(allows(&admin, &Target::Cluster, "killop"));
        assert!(allows(&admin, &Target::Cluster, "serverStatus"));
        let root = privileges_of("root", "admin");
        assert!(allows(&root, &Target::ns("admin", "system.users"), "remove"));
        let users = privileges_of("userAdminAnyDatabase", "admin");
        assert!(allows(&users, &Target::ns("admin", "system.users"), "find"));
        assert!(allows(&users, &Target::db("anything"), "createUser"));
    }

    #[test]
    fn actions_are_known() {
        assert!(is_action("find"));
        assert!(is_action("anyAction"));
        assert!(!is_action("fly"));
    }
}
