//! `folio dump` and `folio restore`: backups in mongodump's and mongorestore's formats.
//!
//! A backup is written in the layout MongoDB's own tools use, so that a dump taken from Folio
//! restores into MongoDB with `mongorestore` and a dump taken from MongoDB with `mongodump`
//! restores into Folio:
//!
//! - the directory layout: `OUT/<db>/<coll>.bson` (the documents, BSON back to back) and
//!   `OUT/<db>/<coll>.metadata.json` (indexes, options, UUID, name and type in canonical
//!   Extended JSON); with `--gzip` each file is gzip-compressed and named `*.gz`;
//! - the archive (`--archive[=FILE]`): one stream holding the same metadata in a prelude and the
//!   documents in namespace blocks (see [`format`]).
//!
//! Both commands speak to a database only through commands (`listCollections`, `listIndexes`,
//! `find`/`getMore`, `create`, `insert`, `createIndexes`, `drop`) sent by a [`Runner`]: either
//! [`Remote`], a running server reached through the official `mongodb` driver (`--uri`), or
//! [`Local`], a data directory opened in this process (`--dbpath`, refused while a server holds
//! it, because the store is locked). The same code therefore dumps a live Folio server, a
//! stopped data directory or a MongoDB deployment.
//!
//! Consistency: a dump reads every collection at one snapshot. A one-document read with
//! `readConcern: {level: "snapshot"}` fixes the snapshot; its `atClusterTime` is then passed
//! to every collection's `find`, so transactions that commit during the dump are either wholly
//! in it or wholly absent (a bank's total balance is the same in the dump as at that instant).
//! `listCollections` cannot read at a snapshot, so the collections are listed just before and
//! just after the snapshot is fixed, and the dump starts over until the two listings agree: the
//! collections and options written are the snapshot's. Indexes are listed afterwards (an index
//! built during the dump may or may not be in it), and a collection dropped before its indexes
//! are listed is left out, as mongodump leaves it out.

pub mod dump;
pub mod format;
pub mod restore;

use std::path::Path;
use std::sync::Arc;

use bson::{Bson, Document};
use folio::TxnStore;
use folio::{Connection, Service, ServiceOptions};

/// A command's failure: MongoDB's error code when the server gave one, and the message.
#[derive(Debug, Clone)]
pub struct CommandError {
    /// The server's error code (`None` for network or client-side failures).
    pub code: Option<i32>,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CommandError> for String {
    fn from(e: CommandError) -> String {
        e.message
    }
}

/// Runs database commands for the dump and restore pipelines.
pub trait Runner {
    /// Runs `cmd` against database `db` and returns the reply of a successful command.
    fn run(&mut self, db: &str, cmd: Document) -> Result<Document, CommandError>;
}

/// A data directory opened in this process: commands go straight to Folio's command service.
pub struct Local {
    store: Arc<dyn TxnStore>,
    service: Service,
    conn: Connection,
}

impl Local {
    /// Opens the data directory `dbpath`. With `create` a missing directory is created (a
    /// restore target); without, it must exist (a dump must not read an empty database because
    /// of a typo).
    pub fn open(dbpath: &Path, create: bool) -> Result<Local, String> {
        if !create && !dbpath.is_dir() {
            return Err(format!("no data directory at {}", dbpath.display()));
        }
        let store = crate::store::open_store(dbpath, false)
            .map_err(|e| format!("cannot open {}: {e}", dbpath.display()))?;
        // No TTL pass may delete documents while they are being restored.
        let options = ServiceOptions { ttl_monitor_enabled: false, ..ServiceOptions::default() };
        let service = Service::new(store.clone(), options).map_err(|e| e.to_string())?;
        let conn = service.connect("folio-backup");
        Ok(Local { store, service, conn })
    }

    /// Makes everything written durable.
    pub fn finish(self) -> Result<(), String> {
        self.store.flush().map_err(|e| format!("cannot flush the data directory: {e}"))
    }
}

impl Runner for Local {
    fn run(&mut self, db: &str, mut cmd: Document) -> Result<Document, CommandError> {
        cmd.insert("$db", db);
        let reply = self.service.dispatch(&mut self.conn, cmd).body;
        let ok = match reply.get("ok") {
            Some(Bson::Double(v)) => *v == 1.0,
            Some(Bson::Int32(v)) => *v == 1,
            _ => false,
        };
        if ok {
            Ok(reply)
        } else {
            Err(CommandError {
                code: reply.get_i32("code").ok(),
                message: format!(
                    "{} ({})",
                    reply.get_str("errmsg").unwrap_or("command failed"),
                    reply.get_str("codeName").unwrap_or("UnknownError")
                ),
            })
        }
    }
}

/// A running server reached through the `mongodb` driver. Every command runs in one explicit
/// session, so that `getMore` finds the cursor its `find` opened.
pub struct Remote {
    runtime: tokio::runtime::Runtime,
    client: mongodb::Client,
    session: mongodb::ClientSession,
}

impl Remote {
    /// Connects to `uri` and checks the server answers.
    pub fn connect(uri: &str) -> Result<Remote, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let (client, session) = runtime.block_on(async {
            let client = mongodb::Client::with_uri_str(uri)
                .await
                .map_err(|e| format!("invalid --uri {uri}: {e}"))?;
            client
                .database("admin")
                .run_command(bson::doc! { "ping": 1 })
                .await
                .map_err(|e| format!("cannot reach {uri}: {e}"))?;
            let session =
                client.start_session().await.map_err(|e| format!("cannot start a session: {e}"))?;
            Ok::<_, String>((client, session))
        })?;
        Ok(Remote { runtime, client, session })
    }
}

impl Runner for Remote {
    fn run(&mut self, db: &str, cmd: Document) -> Result<Document, CommandError> {
        let Remote { runtime, client, session } = self;
        runtime
            .block_on(async { client.database(db).run_command(cmd).session(&mut *session).await })
            .map_err(|e| {
                let code = match e.kind.as_ref() {
                    mongodb::error::ErrorKind::Command(c) => Some(c.code),
                    _ => None,
                };
                CommandError { code, message: e.to_string() }
            })
    }
}

/// Which namespaces a dump or restore takes: `--db`, `--collection`, `--nsInclude` and
/// `--nsExclude` (patterns where `*` matches any run of characters, as mongorestore's).
#[derive(Debug, Clone, Default)]
pub struct NsFilter {
    /// `--db`.
    pub db: Option<String>,
    /// `--collection`.
    pub collection: Option<String>,
    /// `--nsInclude` patterns (none: everything).
    pub include: Vec<String>,
    /// `--nsExclude` patterns.
    pub exclude: Vec<String>,
}

impl NsFilter {
    /// Whether database `db` may hold namespaces this filter takes.
    pub fn takes_db(&self, db: &str) -> bool {
        self.db.as_deref().is_none_or(|d| d == db)
    }

    /// Whether the namespace `db.coll` is taken.
    pub fn takes(&self, db: &str, coll: &str) -> bool {
        if !self.takes_db(db) || self.collection.as_deref().is_some_and(|c| c != coll) {
            return false;
        }
        let ns = format!("{db}.{coll}");
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, &ns)))
            && !self.exclude.iter().any(|p| glob(p, &ns))
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).filter(|&i| text.is_char_boundary(i)).any(|i| glob(rest, &text[i..]))
        }
    }
}

/// Databases neither tool touches: `local` holds per-node state and `config` per-cluster
/// state, as in mongodump.
pub fn is_internal_db(db: &str) -> bool {
    matches!(db, "local" | "config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_patterns() {
        assert!(glob("shop.*", "shop.orders"));
        assert!(glob("*.orders", "shop.orders"));
        assert!(glob("s*p.o*s", "shop.orders"));
        assert!(!glob("shop.*", "shopping.orders"));
        assert!(glob("shop.orders", "shop.orders"));
        assert!(!glob("shop.order", "shop.orders"));
        let f = NsFilter {
            include: vec!["shop.*".into()],
            exclude: vec!["*.tmp".into()],
            ..NsFilter::default()
        };
        assert!(f.takes("shop", "orders"));
        assert!(!f.takes("shop", "tmp"));
        assert!(!f.takes("bank", "accounts"));
        let f = NsFilter { db: Some("bank".into()), collection: Some("a".into()), ..f };
        assert!(!f.takes("bank", "b"));
    }
}
