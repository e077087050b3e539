//! `folio restore`: mongorestore's flags, reading what `folio dump` or mongodump wrote.
//!
//! A restore runs in three passes, as mongorestore does: create every collection and view
//! with its options (dropping it first with `--drop`), insert the documents in batches, then
//! build the indexes (building them last is faster than maintaining them during the inserts).
//! A directory is read collection by collection; an archive is read in one pass, its prelude
//! giving every collection's metadata before the first document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bson::{Bson, doc};
use clap::Args;

use super::format::{
    ArchiveItem, ArchiveReader, Metadata, open_input, parse_document, read_document, read_text,
    unescape_name,
};
use super::{CommandError, Local, NsFilter, Remote, Runner, is_internal_db};

/// Flags of `folio restore` (mongorestore's spelling).
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The dump directory [default: dump].
    #[arg(value_name = "DIR", conflicts_with = "archive")]
    pub dir: Option<PathBuf>,
    /// The server to restore into [default: mongodb://localhost:27017/].
    #[arg(long, value_name = "URI", conflicts_with = "dbpath")]
    pub uri: Option<String>,
    /// Restore into a data directory instead of a running server (created if missing; refused
    /// while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub dbpath: Option<PathBuf>,
    /// Drop each collection before restoring it.
    #[arg(long)]
    pub drop: bool,
    /// Read gzip-compressed files (`*.gz`) or a compressed archive.
    #[arg(long)]
    pub gzip: bool,
    /// Read one archive from FILE (standard input with a bare --archive).
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub archive: Option<String>,
    /// Only this database.
    #[arg(long, short = 'd', value_name = "NAME")]
    pub db: Option<String>,
    /// Only this collection (needs --db).
    #[arg(long, short = 'c', value_name = "NAME", requires = "db")]
    pub collection: Option<String>,
    /// Only namespaces matching this pattern (`*` matches anything), repeatable.
    #[arg(long = "nsInclude", value_name = "PATTERN")]
    pub ns_include: Vec<String>,
    /// Skip namespaces matching this pattern, repeatable.
    #[arg(long = "nsExclude", value_name = "PATTERN")]
    pub ns_exclude: Vec<String>,
    /// Do not build the dumped indexes.
    #[arg(long = "noIndexRestore")]
    pub no_index_restore: bool,
    /// Create collections without their dumped options (views keep theirs: they are options).
    #[arg(long = "noOptionsRestore")]
    pub no_options_restore: bool,
    /// Insert documents without checking the collections' validators.
    #[arg(long = "bypassDocumentValidation")]
    pub bypass_document_validation: bool,
}

/// What a restore did.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Documents inserted.
    pub restored: u64,
    /// Documents the server refused (duplicate keys, validation).
    pub failed: u64,
}

/// Options of one restore.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which namespaces.
    pub filter: NsFilter,
    /// `--drop`.
    pub drop: bool,
    /// `--noIndexRestore`.
    pub no_index_restore: bool,
    /// `--noOptionsRestore`.
    pub no_options_restore: bool,
    /// `--bypassDocumentValidation`.
    pub bypass_document_validation: bool,
}

/// Runs `folio restore`.
pub fn run(args: &RestoreArgs) -> Result<Summary, String> {
    let options = Options {
        filter: NsFilter {
            db: args.db.clone(),
            collection: args.collection.clone(),
            include: args.ns_include.clone(),
            exclude: args.ns_exclude.clone(),
        },
        drop: args.drop,
        no_index_restore: args.no_index_restore,
        no_options_restore: args.no_options_restore,
        bypass_document_validation: args.bypass_document_validation,
    };
    let source = match args.archive.as_deref() {
        Some(path) => {
            Source::Archive { path: (path != "-").then(|| PathBuf::from(path)), gzip: args.gzip }
        }
        None => {
            let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("dump"));
            if !dir.is_dir() {
                return Err(format!("{}: no such dump directory", dir.display()));
            }
            Source::Directory { dir, gzip: args.gzip }
        }
    };
    let summary = match &args.dbpath {
        Some(dbpath) => {
            let mut local = Local::open(dbpath, true)?;
            let summary = restore(&mut local, &source, &options)?;
            local.finish()?;
            summary
        }
        None => {
            let uri = args.uri.as_deref().unwrap_or("mongodb://localhost:27017/");
            restore(&mut Remote::connect(uri)?, &source, &options)?
        }
    };
    eprintln!(
        "{} document(s) restored successfully. {} document(s) failed to restore.",
        summary.restored, summary.failed
    );
    Ok(summary)
}

/// Where a restore reads from.
pub enum Source {
    /// A dump directory.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// `--gzip`: read the `*.gz` files.
        gzip: bool,
    },
    /// An archive (`None`: standard input).
    Archive {
        /// The archive file.
        path: Option<PathBuf>,
        /// `--gzip`.
        gzip: bool,
    },
}

/// A collection found in a dump directory: its metadata and documents files.
struct DirEntry {
    meta: Metadata,
    has_metadata: bool,
    data: Option<PathBuf>,
}

/// Restores `source` through `runner`.
pub fn restore(
    runner: &mut dyn Runner,
    source: &Source,
    options: &Options,
) -> Result<Summary, String> {
    let mut summary = Summary::default();
    match source {
        Source::Directory { dir, gzip } => {
            let entries = scan_directory(dir, *gzip, &options.filter)?;
            for e in &entries {
                prepare(runner, &e.meta, e.has_metadata, options)?;
            }
            for e in &entries {
                if let Some(path) = &e.data {
                    let mut input = open_input(Some(path), *gzip)?;
                    let mut batch = Batch::new(&e.meta.db, &e.meta.name);
                    while let Some(bytes) = read_document(&mut input)
                        .map_err(|err| format!("{}: {err}", path.display()))?
                    {
                        batch.push(runner, bytes, options, &mut summary)?;
                    }
                    batch.flush(runner, options, &mut summary)?;
                    tracing::info!("finished restoring {}.{}", e.meta.db, e.meta.name);
                }
            }
            for e in &entries {
                build_indexes(runner, &e.meta, options)?;
            }
        }
        Source::Archive { path, gzip } => {
            let input = open_input(path.as_deref(), *gzip)?;
            let (mut reader, _header, entries) = ArchiveReader::open(input)?;
            let entries: Vec<Metadata> =
                entries.into_iter().filter(|m| takes(&options.filter, &m.db, &m.name)).collect();
            for m in &entries {
                prepare(runner, m, true, options)?;
            }
            let mut batches: BTreeMap<(String, String), Batch> = BTreeMap::new();
            while let Some(item) = reader.next_item()? {
                match item {
                    ArchiveItem::Document(db, coll, bytes) => {
                        if !takes(&options.filter, &db, &coll) {
                            continue;
                        }
                        let key = (db, coll);
                        if !batches.contains_key(&key)
                            && !entries.iter().any(|m| m.db == key.0 && m.name == key.1)
                        {
                            return Err(format!(
                                "archive: documents for {}.{} without metadata in the prelude",
                                key.0, key.1
                            ));
                        }
                        let batch = batches
                            .entry(key.clone())
                            .or_insert_with(|| Batch::new(&key.0, &key.1));
                        batch.push(runner, bytes, options, &mut summary)?;
                    }
                    ArchiveItem::End(db, coll) => {
                        if let Some(mut batch) = batches.remove(&(db.clone(), coll.clone())) {
                            batch.flush(runner, options, &mut summary)?;
                            tracing::info!("finished restoring {db}.{coll}");
                        }
                    }
                }
            }
            if let Some(((db, coll), _)) = batches.into_iter().next() {
                return Err(format!("truncated archive: {db}.{coll} has no end"));
            }
            for m in &entries {
                build_indexes(runner, m, options)?;
            }
        }
    }
    Ok(summary)
}

/// Whether a namespace is restored: the filter takes it and it is not internal.
fn takes(filter: &NsFilter, db: &str, coll: &str) -> bool {
    if is_internal_db(db) || coll.starts_with("system.") {
        return false;
    }
    filter.takes(db, coll)
}

/// Lists the collections of a dump directory: `DIR/<db>/<coll>.metadata.json[.gz]` and
/// `DIR/<db>/<coll>.bson[.gz]`, sorted by namespace.
fn scan_directory(dir: &Path, gzip: bool, filter: &NsFilter) -> Result<Vec<DirEntry>, String> {
    let ext = if gzip { ".gz" } else { "" };
    let (bson_suffix, meta_suffix) = (format!(".bson{ext}"), format!(".metadata.json{ext}"));
    let mut found: BTreeMap<(String, String), DirEntry> = BTreeMap::new();
    let top = read_dir_sorted(dir)?;
    let is_dump_file = |p: &PathBuf| {
        let name = file_name(p);
        p.is_file() && (name.ends_with(&bson_suffix) || name.ends_with(&meta_suffix))
    };
    // `folio restore --db shop dump/shop`: the directory of one database, as mongorestore takes.
    let db_dirs: Vec<(String, PathBuf)> = if top.iter().any(is_dump_file) {
        let Some(db) = &filter.db else {
            return Err(format!(
                "{} holds collection files, not database directories: name the database with --db",
                dir.display()
            ));
        };
        vec![(db.clone(), dir.to_path_buf())]
    } else {
        top.into_iter().filter(|p| p.is_dir()).map(|p| (file_name(&p), p)).collect()
    };
    for (db, db_dir) in db_dirs {
        for file in read_dir_sorted(&db_dir)? {
            let fname = file_name(&file);
            let (stem, is_meta) = if let Some(s) = fname.strip_suffix(&meta_suffix) {
                (s, true)
            } else if let Some(s) = fname.strip_suffix(&bson_suffix) {
                (s, false)
            } else {
                continue;
            };
            let file_name = unescape_name(stem);
            let meta = if is_meta {
                Some(Metadata::from_json(&db, &file_name, &read_text(&file, gzip)?)?)
            } else {
                None
            };
            // The metadata's collectionName wins over the (possibly truncated) file name.
            let name = meta.as_ref().map_or(file_name.clone(), |m| m.name.clone());
            if !takes(filter, &db, &name) {
                continue;
            }
            let entry = found.entry((db.clone(), file_name)).or_insert_with(|| DirEntry {
                meta: Metadata::bare(&db, &name),
                has_metadata: false,
                data: None,
            });
            match meta {
                Some(m) => {
                    entry.meta = m;
                    entry.has_metadata = true;
                }
                None => entry.data = Some(file),
            }
        }
    }
    if found.is_empty() {
        return Err(format!(
            "{}: nothing to restore (no <db>/<collection>.bson{ext} or .metadata.json{ext} files{})",
            dir.display(),
            if gzip { "" } else { "; --gzip for compressed ones" }
        ));
    }
    let mut entries: Vec<DirEntry> = found.into_values().collect();
    entries.sort_by(|a, b| (&a.meta.db, &a.meta.name).cmp(&(&b.meta.db, &b.meta.name)));
    Ok(entries)
}

/// The last component of `path`, lossily as text.
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

/// Drops (with `--drop`) and creates one collection or view with its options.
fn prepare(
    runner: &mut dyn Runner,
    m: &Metadata,
    has_metadata: bool,
    options: &Options,
) -> Result<(), String> {
    if !matches!(m.kind.as_str(), "collection" | "view") {
        return Err(format!("{}.{}: cannot restore a collection of type {}", m.db, m.name, m.kind));
    }
    if options.drop {
        match runner.run(&m.db, doc! { "drop": m.name.as_str() }) {
            Ok(_) => {}
            Err(CommandError { code: Some(26), .. }) => {}
            Err(e) => return Err(format!("cannot drop {}.{}: {e}", m.db, m.name)),
        }
    }
    let mut cmd = doc! { "create": m.name.as_str() };
    if has_metadata && (m.is_view() || !options.no_options_restore) {
        for (k, v) in &m.options {
            // `create` takes the options listCollections reports, less the ones it sets itself.
            if k != "uuid" {
                cmd.insert(k.clone(), v.clone());
            }
        }
    }
    match runner.run(&m.db, cmd) {
        Ok(_) => Ok(()),
        // Restoring into an existing collection (no --drop) adds to it, as mongorestore does.
        Err(CommandError { code: Some(48), .. }) => Ok(()),
        Err(e) => Err(format!("cannot create {}.{}: {e}", m.db, m.name)),
    }
}

/// Builds the dumped indexes of one collection (its `_id` index exists already).
fn build_indexes(runner: &mut dyn Runner, m: &Metadata, options: &Options) -> Result<(), String> {
    if options.no_index_restore || m.is_view() {
        return Ok(());
    }
    let specs: Vec<Bson> = m
        .indexes
        .iter()
        .filter(|spec| spec.get_str("name").ok() != Some("_id_"))
        .map(|spec| {
            let mut spec = spec.clone();
            // Dumps of old servers name the namespace in each index; the target's may differ.
            spec.remove("ns");
            Bson::Document(spec)
        })
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    runner
        .run(&m.db, doc! { "createIndexes": m.name.as_str(), "indexes": specs })
        .map_err(|e| format!("cannot build the indexes of {}.{}: {e}", m.db, m.name))?;
    Ok(())
}

/// Documents waiting to be inserted into one collection.
struct Batch {
    db: String,
    coll: String,
    docs: Vec<Bson>,
    bytes: usize,
}

/// A batch is sent at this many documents or bytes, well under the 16 MiB command limit.
const BATCH_DOCS: usize = 1000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;

impl Batch {
    fn new(db: &str, coll: &str) -> Batch {
        Batch { db: db.into(), coll: coll.into(), docs: Vec::new(), bytes: 0 }
    }

    fn push(
        &mut self,
        runner: &mut dyn Runner,
        bytes: Vec<u8>,
        options: &Options,
        summary: &mut Summary,
    ) -> Result<(), String> {
        if self.bytes + bytes.len() > BATCH_BYTES && !self.docs.is_empty() {
            self.flush(runner, options, summary)?;
        }
        self.bytes += bytes.len();
        self.docs.push(Bson::Document(parse_document(&bytes)?));
        if self.docs.len() >= BATCH_DOCS {
            self.flush(runner, options, summary)?;
        }
        Ok(())
    }

    /// Inserts the waiting documents, unordered: one refused document (a duplicate key) does
    /// not stop the others, as with mongorestore.
    fn flush(
        &mut self,
        runner: &mut dyn Runner,
        options: &Options,
        summary: &mut Summary,
    ) -> Result<(), String> {
        if self.docs.is_empty() {
            return Ok(());
        }
        let count = self.docs.len() as u64;
        let mut cmd = doc! { "insert": self.coll.as_str(), "documents": std::mem::take(&mut self.docs), "ordered": false };
        if options.bypass_document_validation {
            cmd.insert("bypassDocumentValidation", true);
        }
        self.bytes = 0;
        let reply = runner
            .run(&self.db, cmd)
            .map_err(|e| format!("cannot insert into {}.{}: {e}", self.db, self.coll))?;
        let inserted = match reply.get("n") {
            Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors.iter().take(5).filter_map(Bson::as_document) {
                tracing::warn!(
                    "{}.{}: {}",
                    self.db,
                    self.coll,
                    e.get_str("errmsg").unwrap_or("a document was refused")
                );
            }
        }
        summary.restored += inserted;
        summary.failed += count.saturating_sub(inserted);
        Ok(())
    }
}
