//! `folio dump`: mongodump's flags and output.
//!
//! The dump first gathers every collection's metadata (`listDatabases`, `listCollections`,
//! `listIndexes`), then reads the documents of each collection at one snapshot (see the module
//! essay in [`super`]) and hands them to a [`Sink`]: the directory layout or the archive.

use std::path::{Path, PathBuf};

use bson::{Bson, Document, Timestamp, doc};
use clap::Args;

use super::format::{ArchiveWriter, Metadata, Output, escape_name};
use super::{Local, NsFilter, Remote, Runner, is_internal_db};

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
    let entries = collect_metadata(runner, filter)?;
    let mut summary = Summary::default();
    let mut at: Option<Timestamp> = None;
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
                let n = read_collection(runner, m, &mut at, &mut |bytes| {
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
                    let n =
                        read_collection(runner, m, &mut at, &mut |bytes| archive.document(bytes))?;
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

/// The server's version for the archive header (empty when it does not say).
fn server_version(runner: &mut dyn Runner) -> String {
    runner
        .run("admin", doc! { "buildInfo": 1 })
        .ok()
        .and_then(|r| r.get_str("version").ok().map(String::from))
        .unwrap_or_default()
}

/// Lists the collections and views `filter` takes, with their options and indexes, sorted by
/// namespace.
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
            let indexes = if kind == "view" {
                Vec::new()
            } else {
                let first = runner.run(&db, doc! { "listIndexes": name })?;
                drain_cursor(runner, &db, first)?
            };
            entries.push(Metadata {
                db: db.clone(),
                name: name.to_string(),
                kind,
                options,
                indexes,
                uuid,
            });
        }
    }
    entries.sort_by(|a, b| (&a.db, &a.name).cmp(&(&b.db, &b.name)));
    Ok(entries)
}

/// All documents of a cursor reply, following `getMore` to the end.
fn drain_cursor(
    runner: &mut dyn Runner,
    db: &str,
    reply: Document,
) -> Result<Vec<Document>, String> {
    let mut out = Vec::new();
    let mut at = None;
    for_each_in_cursor(runner, db, reply, &mut at, &mut |d| {
        out.push(d);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every document of a cursor reply, following `getMore` to the end. Records
/// the cursor's `atClusterTime` in `at` when the server reports one.
fn for_each_in_cursor(
    runner: &mut dyn Runner,
    db: &str,
    reply: Document,
    at: &mut Option<Timestamp>,
    f: &mut dyn FnMut(Document) -> Result<(), String>,
) -> Result<(), String> {
    let mut cursor = reply.get_document("cursor").map_err(|_| "a reply without a cursor")?.clone();
    if let Some(Bson::Timestamp(t)) =
        cursor.get("atClusterTime").or_else(|| reply.get("atClusterTime"))
    {
        *at = Some(*t);
    }
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
        let more = runner.run(db, doc! { "getMore": id, "collection": coll.as_str() })?;
        cursor =
            more.get_document("cursor").map_err(|_| "getMore: a reply without a cursor")?.clone();
        key = "nextBatch";
    }
}

/// Reads every document of collection `m` at the dump's snapshot, passing each one's bytes to
/// `sink`. The first collection read fixes the snapshot (`at`). Returns the document count.
fn read_collection(
    runner: &mut dyn Runner,
    m: &Metadata,
    at: &mut Option<Timestamp>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut read_concern = doc! { "level": "snapshot" };
    if let Some(t) = at {
        read_concern.insert("atClusterTime", *t);
    }
    let first_read = at.is_none();
    // Natural order, as mongodump reads (a hint would force an index scan).
    let reply = runner.run(&m.db, doc! { "find": m.name.as_str(), "readConcern": read_concern })?;
    let mut n = 0;
    let mut buf = Vec::new();
    let mut seen = None;
    for_each_in_cursor(runner, &m.db, reply, &mut seen, &mut |d| {
        buf.clear();
        d.to_writer(&mut buf).map_err(|e| format!("cannot encode a document: {e}"))?;
        n += 1;
        sink(&buf)
    })?;
    if first_read {
        let t = seen.ok_or_else(|| {
            format!("{}.{}: the server did not report the snapshot's atClusterTime", m.db, m.name)
        })?;
        tracing::info!("dumping at cluster time Timestamp({}, {})", t.time, t.increment);
        *at = Some(t);
    }
    Ok(n)
}
