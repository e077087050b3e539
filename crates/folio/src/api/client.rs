//! [`Client`] and [`Database`]: the entry points, and the one path every call takes to the
//! command service.

use std::path::Path;
use std::sync::Arc;

use bson::{Bson, Document, doc};

use super::bulk::{BulkWrite, WriteModel};
use super::collection::Collection;
use super::error::{Error, Result};
use super::options::SessionOptions;
use super::session::ClientSession;
use crate::command::{Connection, Incoming, Service, ServiceOptions};
use crate::mvcc::{Mvcc, MvccOptions, TxnStore};
use crate::storage::{Engine, MemoryEngine, RedbEngine};

/// A handle to a Folio instance. Cheap to clone; clones share the instance.
///
/// Named like `mongodb::sync::Client`: get a [`Database`] with [`Client::database`], a session
/// with [`Client::start_session`].
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    service: Arc<Service>,
    /// The connection state every call starts from. Each call runs on its own copy, so calls from
    /// different threads never wait for each other here.
    conn: Connection,
    /// Whether this client created the service (and shuts it down when the last handle drops).
    owned: bool,
    /// Every command sent, when recording (the API's own tests compare them with golden files).
    #[cfg(test)]
    pub(crate) recorded: parking_lot::Mutex<Option<Vec<Document>>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.service.disconnect(&self.conn);
        if self.owned {
            self.service.shutdown();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("connection", &self.inner.conn.id).finish()
    }
}

impl Client {
    /// Opens (or creates) a data directory with the redb engine.
    pub fn open(path: impl AsRef<Path>) -> Result<Client> {
        let (options, pages) = MvccOptions::sharing_cache(crate::storage::DEFAULT_CACHE_BYTES);
        let engine: Arc<dyn Engine> =
            Arc::new(RedbEngine::open_with(path.as_ref(), pages, crate::STORAGE_LAYOUT)?);
        Client::over_engine(engine, options)
    }

    /// A fresh instance that lives in memory only.
    pub fn in_memory() -> Result<Client> {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        Client::over_engine(engine, MvccOptions::default())
    }

    fn over_engine(engine: Arc<dyn Engine>, options: MvccOptions) -> Result<Client> {
        let store: Arc<dyn TxnStore> = Mvcc::open(engine, options)?;
        let service = Arc::new(Service::new(store, ServiceOptions::default())?);
        // Transaction lifetime limit, idle sessions and cursors, as in the server.
        service.start_background();
        Ok(Client::from_service(service, true))
    }

    /// A client of an existing service (for example the one a wire server also serves).
    pub fn with_service(service: Arc<Service>) -> Client {
        Client::from_service(service, false)
    }

    fn from_service(service: Arc<Service>, owned: bool) -> Client {
        let mut conn = service.connect("embedded");
        // In-process calls are never checked for privileges (crate::auth).
        conn.trusted = true;
        Client {
            inner: Arc::new(ClientInner {
                service,
                conn,
                owned,
                #[cfg(test)]
                recorded: parking_lot::Mutex::new(None),
            }),
        }
    }

    /// The command service this client talks to.
    pub fn service(&self) -> &Arc<Service> {
        &self.inner.service
    }

    /// A handle to a database. Databases are created by their first write.
    pub fn database(&self, name: &str) -> Database {
        Database { client: self.clone(), name: name.to_string() }
    }

    /// Starts a logical session: `client.start_session().run()?`.
    pub fn start_session(&self) -> StartSession<'_> {
        StartSession { client: self, options: None }
    }

    /// Writes to one or more collections in one call: `client.bulk_write(models).run()?`.
    pub fn bulk_write(
        &self,
        models: impl IntoIterator<Item = impl Into<WriteModel>>,
    ) -> BulkWrite<'_> {
        BulkWrite::new(self, models.into_iter().map(Into::into).collect())
    }

    /// The names of all databases.
    pub fn list_database_names(&self) -> Result<Vec<String>> {
        let reply = self.execute("admin", doc! { "listDatabases": 1, "nameOnly": true }, None)?;
        let dbs =
            reply.get_array("databases").map_err(|e| Error::invalid_response(e.to_string()))?;
        Ok(dbs
            .iter()
            .filter_map(|d| {
                d.as_document().and_then(|d| d.get_str("name").ok()).map(str::to_string)
            })
            .collect())
    }

    /// The shared path: sends one command document, as a driver would, and returns the reply of
    /// a successful command or the error of a failed one.
    ///
    /// With a session, the session adds `lsid` and, inside a transaction, `txnNumber`,
    /// `autocommit` and (on the first statement) `startTransaction` and `readConcern`.
    pub(crate) fn execute(
        &self,
        db: &str,
        cmd: impl Into<Incoming>,
        session: Option<&mut ClientSession>,
    ) -> Result<Document> {
        let mut incoming = cmd.into();
        if let Some(session) = session {
            if !Arc::ptr_eq(&session.client().inner, &self.inner) {
                return Err(Error::invalid_argument(
                    "the session provided to an operation must be created from the same client",
                ));
            }
            session.prepare_command(&mut incoming.cmd);
        }
        self.send(db, incoming)
    }

    /// Sends a command as it is (the session fields, if any, already added). An `insert`'s
    /// documents may come apart from the command, already encoded, as a driver sends them in
    /// an OP_MSG document sequence: the service then stores them as they are.
    pub(crate) fn send(&self, db: &str, cmd: impl Into<Incoming>) -> Result<Document> {
        let mut incoming = cmd.into();
        incoming.cmd.insert("$db", db);
        #[cfg(test)]
        if let Some(log) = self.inner.recorded.lock().as_mut() {
            log.push(incoming.whole().into_owned());
        }
        let mut conn = self.inner.conn.clone();
        let reply = self.inner.service.dispatch(&mut conn, incoming);
        let body = reply.body;
        if is_ok(&body) { Ok(body) } else { Err(Error::from_reply(&body)) }
    }
}

/// Whether a reply has `ok: 1`.
fn is_ok(reply: &Document) -> bool {
    match reply.get("ok") {
        Some(Bson::Double(f)) => *f == 1.0,
        Some(Bson::Int32(n)) => *n == 1,
        Some(Bson::Int64(n)) => *n == 1,
        Some(Bson::Boolean(b)) => *b,
        _ => false,
    }
}

/// The action returned by [`Client::start_session`].
#[must_use = "actions do nothing until run"]
pub struct StartSession<'a> {
    client: &'a Client,
    options: Option<SessionOptions>,
}

impl StartSession<'_> {
    /// Sets the session options.
    pub fn with_options(mut self, options: impl Into<Option<SessionOptions>>) -> Self {
        self.options = options.into();
        self
    }

    /// Sets the options of every transaction of the session.
    pub fn default_transaction_options(
        mut self,
        options: super::options::TransactionOptions,
    ) -> Self {
        self.options.get_or_insert_with(SessionOptions::default).default_transaction_options =
            Some(options);
        self
    }

    /// Starts the session. Like the drivers, the lsid is generated here; the server learns of it
    /// with the first command.
    pub fn run(self) -> Result<ClientSession> {
        Ok(ClientSession::new(self.client.clone(), self.options))
    }
}

/// A handle to a database.
#[derive(Clone, Debug)]
pub struct Database {
    client: Client,
    name: String,
}

impl Database {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this handle belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle to a collection whose documents are (de)serialized as `T`.
    pub fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        Collection::new(self.client.clone(), &self.name, name)
    }

    /// Runs a command against this database: `db.run_command(doc! {...}).run()?`.
    pub fn run_command(&self, command: Document) -> RunCommand<'_> {
        RunCommand { db: self, command, session: None }
    }

    /// Creates a collection explicitly.
    pub fn create_collection(&self, name: &str) -> CreateCollection<'_> {
        CreateCollection {
            db: self,
            name: name.to_string(),
            options: Document::new(),
            session: None,
        }
    }

    /// The names of the database's collections.
    pub fn list_collection_names(&self) -> Result<Vec<String>> {
        let reply = self.client.execute(
            &self.name,
            doc! { "listCollections": 1, "nameOnly": true },
            None,
        )?;
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map_err(|e| Error::invalid_response(e.to_string()))?;
        Ok(batch
            .iter()
            .filter_map(|d| {
                d.as_document().and_then(|d| d.get_str("name").ok()).map(str::to_string)
            })
            .collect())
    }

    /// Drops the database.
    pub fn drop(&self) -> Result<()> {
        self.client.execute(&self.name, doc! { "dropDatabase": 1 }, None)?;
        Ok(())
    }
}

/// The action returned by [`Database::run_command`].
#[must_use = "actions do nothing until run"]
pub struct RunCommand<'a> {
    db: &'a Database,
    command: Document,
    session: Option<&'a mut ClientSession>,
}

impl<'a> RunCommand<'a> {
    /// Runs the command in a session (and its transaction, if one is open).
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Runs the command and returns the reply.
    pub fn run(self) -> Result<Document> {
        self.db.client.execute(&self.db.name, self.command, self.session)
    }
}

/// The action returned by [`Database::create_collection`].
#[must_use = "actions do nothing until run"]
pub struct CreateCollection<'a> {
    db: &'a Database,
    name: String,
    options: Document,
    session: Option<&'a mut ClientSession>,
}

impl<'a> CreateCollection<'a> {
    /// Adds `create` options as a document (for example `{capped: true, size: 4096}`).
    pub fn options(mut self, options: Document) -> Self {
        self.options = options;
        self
    }

    /// Creates the collection in a session (and its transaction, if one is open).
    pub fn session(mut self, session: &'a mut ClientSession) -> Self {
        self.session = Some(session);
        self
    }

    /// Creates the collection.
    pub fn run(self) -> Result<()> {
        let mut cmd = doc! { "create": self.name };
        cmd.extend(self.options);
        self.db.client.execute(&self.db.name, cmd, self.session)?;
        Ok(())
    }
}
