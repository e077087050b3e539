//! `folio dump`: mongodump's flags and output.
//!
//! The dump first fixes its snapshot and gathers every collection's metadata as of it
//! (`listDatabases`, `listCollections`, `listIndexes`), then reads the documents of each
//! collection at that snapshot (see the module essay in [`super`]) and writes them to a
//! [`SinkKind`]: the directory layout or the archive.

use std::path::{Path, PathBuf};

use bson::{Bson, Document, Timestamp, doc};
use clap::Args;

use super::format::{ArchiveWriter, Metadata, Output, escape_name};
use super::{CommandError, Local, NsFilter, Remote, Runner, is_internal_db};

/// Flags of `folio dump` (mongodump's spelling).
#[derive(Args, Debug, Clone)]
pub struct DumpArgs {
    /// The server to dump [default: mongodb://localhost:27017/].
    #[arg(long, value_name = "URI", conflicts_with = "dbpath")]
    pub uri: Option<String>,
    /// Dump a data directory instead of a running server (refused while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub dbpath: Option<PathBuf>,
    /// Only this database.
    #[arg(long, short = 'd', value_name = "NAME")]
    pub db: Option<String>,
    /// Only this collection (needs --db).
    #[arg(long, short = 'c', value_name = "NAME", requires = "db")]
    pub collection: Option<String>,
    /// Output directory.
    #[arg(
        long,
        short = 'o',
        value_name = "DIR",
        default_value = "dump",
        conflicts_with = "archive"
    )]
    pub out: PathBuf,
    /// Compress the output files (or the whole archive) with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// Write one archive to FILE (standard output with a bare --archive) instead of a directory.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub archive: Option<String>,
}

/// What a dump wrote.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Collections and views written.
    pub namespaces: usize,
    /// Documents written.
    pub documents: u64,
}

/// Runs `folio dump`.
pub fn run(args: &DumpArgs) -> Result<Summary, String> {
    if args.out.as_os_str() == "-" {
        return Err("--out - (BSON on standard output) is not supported; use --archive".into());
    }
    let filter = NsFilter {
        db: args.db.clone(),
        collection: args.collection.clone(),
        ..NsFilter::default()
    };
    let mut sink = match args.archive.as_deref() {
        Some(path) => {
            let path = (path != "-").then(|| Path::new(path));
            SinkKind::Archive { path: path.map(Path::to_path_buf), gzip: args.gzip }
        }
        None => SinkKind::Directory { out: args.out.clone(), gzip: args.gzip },
    };
    match &args.dbpath {
        Some(dbpath) => {
            let mut local = Local::open(dbpath, false)?;
            let summary = dump(&mut local, &filter, &mut sink)?;
            local.finish()?;
            Ok(summary)
        }
        None => {
            let uri = args.uri.as_deref().unwrap_or("mongodb://localhost:27017/");
            dump(&mut Remote::connect(uri)?, &filter, &mut sink)
        }
    }
}

/// Where a dump goes.
pub enum SinkKind {
    /// `OUT/db/coll.bson[.gz]` and `OUT/db/coll.metadata.json[.gz]`.
    Directory {
        /// The output directory.
        out: PathBuf,
        /// `--gzip`.
        gzip: bool,
    },
    /// One archive (`None`: standard output).
    Archive {
        /// The archive file.
        path: Option<PathBuf>,
        /// `--gzip`.
        gzip: bool,
    },
}

/// Dumps every namespace `filter` takes from `runner` into `sink`.
pub fn dump(
    runner: &mut dyn Runner,
    filter: &NsFilter,
    sink: &mut SinkKind,
) -> Result<Summary, String> {
    let (entries, at) = snapshot_and_metadata(runner, filter)?;
    let mut summary = Summary::default();
    match sink {
        SinkKind::Directory { out, gzip } => {
            let ext = if *gzip { ".gz" } else { "" };
            for m in &entries {
                let dir = out.join(&m.db);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let base = escape_name(&m.name);
                let meta_path = dir.join(format!("{base}.metadata.json{ext}"));
                let mut meta = Output::create(Some(&meta_path), *gzip)?;
                std::io::Write::write_all(&mut meta, m.to_json().as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", meta_path.display()))?;
                meta.finish().map_err(|e| format!("cannot write {}: {e}", meta_path.display()))?;
                if m.is_view() {
                    summary.namespaces += 1;
                    continue;
                }
                let data_path = dir.join(format!("{base}.bson{ext}"));
                let mut data = Output::create(Some(&data_path), *gzip)?;
                let n = read_collection(runner, m, at, &mut |bytes| {
                    std::io::Write::write_all(&mut data, bytes)
                        .map_err(|e| format!("cannot write {}: {e}", data_path.display()))
                })?;
                data.finish().map_err(|e| format!("cannot write {}: {e}", data_path.display()))?;
                tracing::info!("done dumping {}.{} ({n} documents)", m.db, m.name);
                summary.namespaces += 1;
                summary.documents += n;
            }
        }
        SinkKind::Archive { path, gzip } => {
            let version = server_version(runner);
            let out = Output::create(path.as_deref(), *gzip)?;
            let mut archive = ArchiveWriter::start(out, &version, &entries)?;
            for m in &entries {
                archive.begin(&m.db, &m.name);
                if !m.is_view() {
                    let n = read_collection(runner, m, at, &mut |bytes| archive.document(bytes))?;
                    tracing::info!("done dumping {}.{} ({n} documents)", m.db, m.name);
                    summary.documents += n;
                }
                archive.end()?;
                summary.namespaces += 1;
            }
            archive.finish()?;
        }
    }
    Ok(summary)
}

/// Fixes the dump's snapshot and reads the metadata that holds at it. `listCollections` cannot
/// read at a snapshot, so the collections are listed just before and just after the snapshot
/// time is taken (a one-document snapshot read); when the two listings agree (names, UUIDs,
/// options), they are the snapshot's, otherwise it pauses and tries again. Each attempt lists
/// afresh: reusing the previous attempt's second listing would put the pause inside the window
/// the two listings must agree over. Indexes are listed afterwards: an index built or dropped
/// while the dump starts may or may not be in it.
fn snapshot_and_metadata(
    runner: &mut dyn Runner,
    filter: &NsFilter,
) -> Result<(Vec<Metadata>, Option<Timestamp>), String> {
    const ATTEMPTS: u64 = 20;
    for attempt in 0..ATTEMPTS {
        let before = collect_metadata(runner, filter)?;
        let Some(first) = before.iter().find(|m| !m.is_view()) else {
            // Nothing to read: no snapshot needed.
            return Ok((before, None));
        };
        let reply = runner.run(
            &first.db,
            doc! {
                "find": first.name.as_str(), "limit": 1, "singleBatch": true,
                "readConcern": { "level": "snapshot" },
            },
        );
        let reply = match reply {
            Ok(r) => r,
            // Dropped between the listing and the read: list again.
            Err(CommandError { code: Some(26), .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let at = match reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get("atClusterTime"))
            .or_else(|| reply.get("atClusterTime"))
        {
            Some(Bson::Timestamp(t)) => *t,
            _ => {
                return Err(format!(
                    "{}.{}: the server did not report the snapshot's atClusterTime",
                    first.db, first.name
                ));
            }
        };
        if collect_metadata(runner, filter)? == before {
            tracing::info!("dumping at cluster time Timestamp({}, {})", at.time, at.increment);
            return Ok((add_indexes(runner, before)?, Some(at)));
        }
        tracing::info!("collections changed while the dump started; listing them again");
        std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
    }
    Err(format!("collections kept changing during {ATTEMPTS} attempts to start the dump"))
}

/// The server's version for the archive header (empty when it does not say).
fn server_version(runner: &mut dyn Runner) -> String {
    runner
        .run("admin", doc! { "buildInfo": 1 })
        .ok()
        .and_then(|r| r.get_str("version").ok().map(String::from))
        .unwrap_or_default()
}

/// Lists the collections and views `filter` takes, with their options (not yet their
/// indexes: [`add_indexes`]), sorted by namespace.
pub fn collect_metadata(
    runner: &mut dyn Runner,
    filter: &NsFilter,
) -> Result<Vec<Metadata>, String> {
    let dbs: Vec<String> = match &filter.db {
        Some(db) => vec![db.clone()],
        None => {
            let reply = runner.run("admin", doc! { "listDatabases": 1, "nameOnly": true })?;
            reply
                .get_array("databases")
                .map_err(|_| "listDatabases: no databases array")?
                .iter()
                .filter_map(|d| d.as_document().and_then(|d| d.get_str("name").ok()))
                .filter(|name| !is_internal_db(name))
                .map(String::from)
                .collect()
        }
    };
    let mut entries = Vec::new();
    for db in dbs {
        let mut cmd = doc! { "listCollections": 1 };
        if let Some(c) = &filter.collection {
            cmd.insert("filter", doc! { "name": c.as_str() });
        }
        let first = runner.run(&db, cmd)?;
        for info in drain_cursor(runner, &db, first)? {
            let name =
                info.get_str("name").map_err(|_| "listCollections: a collection without a name")?;
            if name.starts_with("system.") || !filter.takes(&db, name) {
                continue;
            }
            let kind = info.get_str("type").unwrap_or("collection").to_string();
            if kind != "collection" && kind != "view" {
                return Err(format!("{db}.{name}: cannot dump a collection of type {kind}"));
            }
            let options = info.get_document("options").cloned().unwrap_or_default();
            let uuid = match info.get_document("info").ok().and_then(|i| i.get("uuid")) {
                Some(Bson::Binary(b)) => Some(b.bytes.iter().map(|x| format!("{x:02x}")).collect()),
                _ => None,
            };
            entries.push(Metadata {
                db: db.clone(),
                name: name.to_string(),
                kind,
                options,
                indexes: Vec::new(),
                uuid,
            });
        }
    }
    entries.sort_by(|a, b| (&a.db, &a.name).cmp(&(&b.db, &b.name)));
    Ok(entries)
}

/// Reads the indexes of every collection. A collection dropped since it was listed is left out
/// of the dump, as mongodump leaves it out.
fn add_indexes(runner: &mut dyn Runner, entries: Vec<Metadata>) -> Result<Vec<Metadata>, String> {
    let mut kept = Vec::with_capacity(entries.len());
    for mut m in entries {
        if !m.is_view() {
            let first = match runner.run(&m.db, doc! { "listIndexes": m.name.as_str() }) {
                Ok(reply) => reply,
                Err(CommandError { code: Some(26), .. }) => {
                    tracing::warn!(
                        "{}.{} was dropped while the dump started: left out",
                        m.db,
                        m.name
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            m.indexes = drain_cursor(runner, &m.db, first)?;
        }
        kept.push(m);
    }
    Ok(kept)
}

/// All documents of a cursor reply, following `getMore` to the end.
fn drain_cursor(
    runner: &mut dyn Runner,
    db: &str,
    reply: Document,
) -> Result<Vec<Document>, String> {
    let mut out = Vec::new();
    for_each_in_cursor(runner, db, reply, &mut |d| {
        out.push(d);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every document of a cursor reply, following `getMore` to the end.
fn for_each_in_cursor(
    runner: &mut dyn Runner,
    db: &str,
    mut reply: Document,
    f: &mut dyn FnMut(Document) -> Result<(), String>,
) -> Result<(), String> {
    let mut cursor = take_cursor(&mut reply, "a reply without a cursor")?;
    let ns = cursor.get_str("ns").unwrap_or_default().to_string();
    let coll = ns.split_once('.').map(|(_, c)| c.to_string()).unwrap_or_default();
    let mut key = "firstBatch";
    loop {
        let batch = match cursor.remove(key) {
            Some(Bson::Array(b)) => b,
            _ => return Err(format!("a cursor reply without {key}")),
        };
        for item in batch {
            match item {
                Bson::Document(d) => f(d)?,
                other => return Err(format!("a cursor returned a non-document: {other}")),
            }
        }
        let id = match cursor.get("id") {
            Some(Bson::Int64(id)) => *id,
            Some(Bson::Int32(id)) => i64::from(*id),
            _ => 0,
        };
        if id == 0 {
            return Ok(());
        }
        let mut more = runner.run(db, doc! { "getMore": id, "collection": coll.as_str() })?;
        cursor = take_cursor(&mut more, "getMore: a reply without a cursor")?;
        key = "nextBatch";
    }
}

/// Takes the `cursor` document out of a reply (without copying its batch).
fn take_cursor(reply: &mut Document, missing: &str) -> Result<Document, String> {
    match reply.remove("cursor") {
        Some(Bson::Document(c)) => Ok(c),
        _ => Err(missing.into()),
    }
}

/// Reads every document of collection `m` at the dump's snapshot `at`, passing each one's
/// bytes to `sink`. Returns the document count.
fn read_collection(
    runner: &mut dyn Runner,
    m: &Metadata,
    at: Option<Timestamp>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let Some(t) = at else {
        return Err(format!("{}.{}: no snapshot to read at", m.db, m.name));
    };
    let read_concern = doc! { "level": "snapshot", "atClusterTime": t };
    // Natural order, as mongodump reads (a hint would force an index scan).
    let reply = runner.run(&m.db, doc! { "find": m.name.as_str(), "readConcern": read_concern })?;
    let mut n = 0;
    let mut buf = Vec::new();
    for_each_in_cursor(runner, &m.db, reply, &mut |d| {
        buf.clear();
        d.to_writer(&mut buf).map_err(|e| format!("cannot encode a document: {e}"))?;
        n += 1;
        sink(&buf)
    })?;
    Ok(n)
}
