//! The bytes of a backup: mongodump's metadata files, BSON streams and archive format.
//!
//! **Metadata** (`coll.metadata.json`, and the `metadata` string of an archive's prelude) is
//! one document in canonical Extended JSON v2:
//! `{"options": {...}, "indexes": [{"v": 2, "key": {...}, "name": ...}, ...],
//!   "uuid": "<32 hex digits>", "collectionName": "...", "type": "collection" | "view"}`.
//! `options` is what `listCollections` reports (validator, collation, `viewOn`, `pipeline`,
//! capped...), `indexes` what `listIndexes` reports. Field order matters inside documents (an
//! index key `{a: 1, b: -1}` is not `{b: -1, a: 1}`), so the JSON is written through the `bson`
//! crate's canonical Extended JSON with `serde_json`'s `preserve_order` (a sorted JSON map would
//! reorder the keys) and read back through the `bson` crate's order-keeping deserializer.
//!
//! **BSON files** are documents back to back, each starting with its own little-endian length.
//!
//! **Archive** (mongo-tools' `common/archive/spec.md`):
//!
//! ```text
//! archive  = magic header collection-metadata* terminator (namespace-block | eof-block)*
//! magic    = 0x8199e26d (little-endian: 6d e2 99 81)
//! header   = {concurrent_collections: int32, version: "0.1", server_version, tool_version}
//! metadata = {db, collection, metadata: <the metadata JSON as a string>, size, type}
//! namespace-block = {db, collection, EOF: false, CRC: 0} document+ terminator
//! eof-block       = {db, collection, EOF: true, CRC: <CRC-64 of the namespace's documents>}
//!                   terminator
//! terminator      = ff ff ff ff
//! ```
//!
//! The CRC is CRC-64 with the ECMA polynomial in its reflected form, initial value and final
//! XOR all ones (Go's `crc64.ECMA` table, named CRC-64/XZ in the `crc` crate's catalogue), over
//! the concatenated bytes of every document of the namespace. Blocks of different namespaces
//! may interleave; a reader keeps one running CRC per namespace.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use bson::{Bson, Document, doc};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

/// The archive's magic number.
pub const ARCHIVE_MAGIC: u32 = 0x8199_e26d;
/// Ends the prelude and every namespace block.
pub const TERMINATOR: u32 = 0xffff_ffff;
/// The archive format version mongodump writes.
pub const ARCHIVE_VERSION: &str = "0.1";
/// The largest document a BSON stream may hold (MongoDB's 16 MiB limit plus command headroom).
const MAX_DOC_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;

/// CRC-64 as mongodump's archives use it.
pub const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// One collection or view's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The database (not part of the JSON: it is the directory, or the prelude entry's `db`).
    pub db: String,
    /// `collectionName`.
    pub name: String,
    /// `type`: `collection` or `view` (`timeseries` is refused on restore).
    pub kind: String,
    /// `options`, as `create` takes them.
    pub options: Document,
    /// `indexes`, as `listIndexes` reports them.
    pub indexes: Vec<Document>,
    /// `uuid` in 32 hex digits, when the collection has one.
    pub uuid: Option<String>,
}

impl Metadata {
    /// A collection whose dump recorded no metadata: no options, no indexes, no UUID.
    pub fn bare(db: &str, name: &str) -> Metadata {
        Metadata {
            db: db.into(),
            name: name.into(),
            kind: "collection".into(),
            options: Document::new(),
            indexes: Vec::new(),
            uuid: None,
        }
    }

    /// Whether this is a view.
    pub fn is_view(&self) -> bool {
        self.kind == "view"
    }

    /// The metadata document in mongodump's field order.
    pub fn to_document(&self) -> Document {
        let mut d = Document::new();
        if !self.options.is_empty() {
            d.insert("options", self.options.clone());
        }
        d.insert("indexes", self.indexes.iter().cloned().map(Bson::Document).collect::<Vec<_>>());
        if let Some(uuid) = &self.uuid {
            d.insert("uuid", uuid.clone());
        }
        d.insert("collectionName", self.name.clone());
        d.insert("type", self.kind.clone());
        d
    }

    /// The metadata as canonical Extended JSON.
    pub fn to_json(&self) -> String {
        canonical_json(Bson::Document(self.to_document()))
    }

    /// Reads metadata JSON as mongodump writes it. `db` and `fallback_name` (from the file name)
    /// are used when the JSON does not say (older mongodump versions omit `collectionName` and
    /// `type`).
    pub fn from_json(db: &str, fallback_name: &str, text: &str) -> Result<Metadata, String> {
        let d: Document = serde_json::from_str(text)
            .map_err(|e| format!("invalid metadata for {db}.{fallback_name}: {e}"))?;
        let options = match d.get("options") {
            None | Some(Bson::Null) => Document::new(),
            Some(Bson::Document(o)) => o.clone(),
            Some(_) => {
                return Err(format!("{db}.{fallback_name}: metadata options is not an object"));
            }
        };
        let indexes = match d.get("indexes") {
            None | Some(Bson::Null) => Vec::new(),
            Some(Bson::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Bson::Document(spec) => Ok(spec.clone()),
                    _ => Err(format!("{db}.{fallback_name}: an index is not an object")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(format!("{db}.{fallback_name}: metadata indexes is not an array"));
            }
        };
        let name = d.get_str("collectionName").unwrap_or(fallback_name).to_string();
        let kind = match d.get_str("type") {
            Ok(t) => t.to_string(),
            Err(_) if options.contains_key("viewOn") => "view".into(),
            Err(_) => "collection".into(),
        };
        let uuid = d.get_str("uuid").ok().filter(|u| !u.is_empty()).map(String::from);
        Ok(Metadata { db: db.to_string(), name, kind, options, indexes, uuid })
    }
}

/// `value` as compact canonical Extended JSON, keeping the field order of documents: the `bson`
/// crate builds a `serde_json` map per document, and this crate turns on `serde_json`'s
/// `preserve_order`, so the map keeps the order it was built in.
pub fn canonical_json(value: Bson) -> String {
    value.into_canonical_extjson().to_string()
}

/// Reads the next BSON document of a stream. `Ok(None)` at a clean end of stream.
pub fn read_document(r: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0_u8; 4];
    match read_full(r, &mut len)? {
        0 => return Ok(None),
        4 => {}
        n => return Err(format!("truncated BSON stream: {n} byte(s) of a length")),
    }
    read_document_body(r, len)
}

/// Reads the rest of a document whose 4-byte length has been read.
fn read_document_body(r: &mut impl Read, len: [u8; 4]) -> Result<Option<Vec<u8>>, String> {
    let n = i32::from_le_bytes(len);
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| (5..=MAX_DOC_BYTES).contains(&n))
        .ok_or_else(|| format!("corrupt BSON stream: a document claims to be {n} bytes long"))?;
    let mut buf = vec![0_u8; n];
    buf[..4].copy_from_slice(&len);
    if read_full(r, &mut buf[4..])? != n - 4 {
        return Err("truncated BSON stream: the last document is cut short".into());
    }
    if buf[n - 1] != 0 {
        return Err("corrupt BSON stream: a document does not end with a zero byte".into());
    }
    Ok(Some(buf))
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the backup: {e}")),
        }
    }
    Ok(done)
}

/// Parses a document's bytes, keeping every type and the field order.
pub fn parse_document(bytes: &[u8]) -> Result<Document, String> {
    Document::from_reader(bytes).map_err(|e| format!("invalid BSON document in the backup: {e}"))
}

/// A file or standard stream to write, gzip-compressed or not. Call [`Output::finish`]: it
/// writes the gzip trailer and reports errors a drop would hide.
pub enum Output {
    /// Uncompressed.
    Plain(io::BufWriter<Box<dyn Write>>),
    /// Gzip-compressed.
    Gzip(GzEncoder<io::BufWriter<Box<dyn Write>>>),
}

impl Output {
    /// Creates `path` (`None`: standard output).
    pub fn create(path: Option<&Path>, gzip: bool) -> Result<Output, String> {
        let sink: Box<dyn Write> = match path {
            Some(p) => Box::new(
                std::fs::File::create(p)
                    .map_err(|e| format!("cannot create {}: {e}", p.display()))?,
            ),
            None => Box::new(io::stdout()),
        };
        let buffered = io::BufWriter::with_capacity(1 << 16, sink);
        Ok(if gzip {
            Output::Gzip(GzEncoder::new(buffered, Compression::default()))
        } else {
            Output::Plain(buffered)
        })
    }

    /// Flushes everything (and the gzip trailer).
    pub fn finish(self) -> io::Result<()> {
        let mut inner = match self {
            Output::Plain(w) => w,
            Output::Gzip(g) => g.finish()?,
        };
        inner.flush()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(g) => g.flush(),
        }
    }
}

/// Opens `path` (`None`: standard input) for reading, decompressing gzip when `gzip`.
pub fn open_input(path: Option<&Path>, gzip: bool) -> Result<Box<dyn Read>, String> {
    let source: Box<dyn Read> = match path {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => Box::new(io::stdin()),
    };
    let buffered = BufReader::with_capacity(1 << 16, source);
    Ok(if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    })
}

/// Reads a whole (possibly gzip-compressed) text file.
pub fn read_text(path: &Path, gzip: bool) -> Result<String, String> {
    let mut text = String::new();
    open_input(Some(path), gzip)?
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// A collection name as a file name, escaped as mongodump escapes it (Go's `url.PathEscape`):
/// every byte but ASCII letters, digits and `-_.~$&+:=@` becomes `%XX`, so `a/b` is written
/// `a%2Fb`.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape_name`] (and any other percent-escape mongodump wrote).
pub fn unescape_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a mongodump archive: the prelude first, then namespace blocks.
pub struct ArchiveWriter {
    out: Output,
    /// The namespace being written, its running CRC, and whether its block is open.
    current: Option<(String, String, crc::Digest<'static, u64>, bool)>,
}

impl ArchiveWriter {
    /// Writes the magic number, the header and one prelude entry per collection or view.
    pub fn start(
        mut out: Output,
        server_version: &str,
        entries: &[Metadata],
    ) -> Result<ArchiveWriter, String> {
        let header = doc! {
            "concurrent_collections": 1_i32,
            "version": ARCHIVE_VERSION,
            "server_version": server_version,
            "tool_version": format!("folio {}", env!("CARGO_PKG_VERSION")),
        };
        let mut bytes = ARCHIVE_MAGIC.to_le_bytes().to_vec();
        header.to_writer(&mut bytes).map_err(|e| e.to_string())?;
        for m in entries {
            let entry = doc! {
                "db": m.db.clone(),
                "collection": m.name.clone(),
                "metadata": m.to_json(),
                "size": 0_i32,
                "type": m.kind.clone(),
            };
            entry.to_writer(&mut bytes).map_err(|e| e.to_string())?;
        }
        bytes.extend_from_slice(&TERMINATOR.to_le_bytes());
        out.write_all(&bytes).map_err(write_error)?;
        Ok(ArchiveWriter { out, current: None })
    }

    /// Starts the documents of `db.coll`.
    pub fn begin(&mut self, db: &str, coll: &str) {
        self.current = Some((db.to_string(), coll.to_string(), CRC64.digest(), false));
    }

    /// Writes one document of the current namespace.
    pub fn document(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some((db, coll, crc, open)) = self.current.as_mut() else {
            return Err("archive: a document outside a namespace".into());
        };
        if !*open {
            let header =
                doc! { "db": db.as_str(), "collection": coll.as_str(), "EOF": false, "CRC": 0_i64 };
            header.to_writer(&mut self.out).map_err(|e| e.to_string())?;
            *open = true;
        }
        crc.update(bytes);
        self.out.write_all(bytes).map_err(write_error)
    }

    /// Ends the current namespace: closes its block and writes its EOF block with the CRC.
    pub fn end(&mut self) -> Result<(), String> {
        let Some((db, coll, crc, open)) = self.current.take() else {
            return Err("archive: no namespace to end".into());
        };
        if open {
            self.out.write_all(&TERMINATOR.to_le_bytes()).map_err(write_error)?;
        }
        let eof = doc! { "db": db, "collection": coll, "EOF": true, "CRC": crc.finalize() as i64 };
        eof.to_writer(&mut self.out).map_err(|e| e.to_string())?;
        self.out.write_all(&TERMINATOR.to_le_bytes()).map_err(write_error)
    }

    /// Flushes the archive.
    pub fn finish(self) -> Result<(), String> {
        self.out.finish().map_err(write_error)
    }
}

fn write_error(e: io::Error) -> String {
    format!("cannot write the backup: {e}")
}

/// What an archive holds next, after its prelude.
#[derive(Debug)]
pub enum ArchiveItem {
    /// A document of namespace `db.coll`.
    Document(String, String, Vec<u8>),
    /// The last of `db.coll`'s documents has been read (and its CRC checked).
    End(String, String),
}

/// Reads a mongodump archive.
pub struct ArchiveReader {
    input: Box<dyn Read>,
    /// The namespace of the open block.
    current: Option<(String, String)>,
    /// Running CRCs per namespace.
    crcs: std::collections::HashMap<(String, String), crc::Digest<'static, u64>>,
}

impl ArchiveReader {
    /// Reads the magic number and the prelude: the header and every collection's metadata.
    pub fn open(
        mut input: Box<dyn Read>,
    ) -> Result<(ArchiveReader, Document, Vec<Metadata>), String> {
        let mut magic = [0_u8; 4];
        if read_full(&mut input, &mut magic)? != 4 || u32::from_le_bytes(magic) != ARCHIVE_MAGIC {
            return Err("the input does not look like a mongodump archive (wrong magic number; --gzip for a compressed one?)".into());
        }
        let header = read_document(&mut input)?
            .ok_or("truncated archive: no header")
            .and_then(|b| parse_document(&b).map_err(|_| "invalid archive header"))?;
        let mut entries = Vec::new();
        loop {
            match read_block_item(&mut input)? {
                Block::Terminator => break,
                Block::Eof => return Err("truncated archive: the prelude has no end".into()),
                Block::Document(bytes) => {
                    let d = parse_document(&bytes)?;
                    let db = d.get_str("db").map_err(|_| "archive prelude entry without db")?;
                    let coll = d
                        .get_str("collection")
                        .map_err(|_| "archive prelude entry without collection")?;
                    let mut meta = match d.get_str("metadata") {
                        Ok(json) if !json.is_empty() => Metadata::from_json(db, coll, json)?,
                        _ => Metadata::bare(db, coll),
                    };
                    if let Ok(t) = d.get_str("type")
                        && !t.is_empty()
                    {
                        meta.kind = t.to_string();
                    }
                    entries.push(meta);
                }
            }
        }
        let reader = ArchiveReader { input, current: None, crcs: Default::default() };
        Ok((reader, header, entries))
    }

    /// The next document or end of namespace; `None` at the end of the archive.
    pub fn next_item(&mut self) -> Result<Option<ArchiveItem>, String> {
        loop {
            let block = read_block_item(&mut self.input)?;
            match (self.current.take(), block) {
                (None, Block::Eof) => return Ok(None),
                (Some(_), Block::Eof) => {
                    return Err("truncated archive: it ends inside a namespace block".into());
                }
                (None, Block::Terminator) => {
                    return Err(
                        "corrupt archive: a terminator where a namespace header belongs".into()
                    );
                }
                (Some(_), Block::Terminator) => {}
                (None, Block::Document(bytes)) => {
                    let h = parse_document(&bytes)?;
                    let db = h.get_str("db").unwrap_or_default().to_string();
                    let coll = h
                        .get_str("collection")
                        .map_err(|_| "corrupt archive: a namespace header without a collection")?
                        .to_string();
                    let key = (db.clone(), coll.clone());
                    if h.get_bool("EOF").unwrap_or(false) {
                        let expected = match h.get("CRC") {
                            Some(Bson::Int64(c)) => *c,
                            Some(Bson::Int32(c)) => i64::from(*c),
                            _ => 0,
                        };
                        let actual = self
                            .crcs
                            .remove(&key)
                            .map_or(CRC64.digest().finalize(), |d| d.finalize());
                        if expected != 0 && expected != actual as i64 {
                            return Err(format!(
                                "CRC mismatch for namespace {db}.{coll}: the archive is corrupt"
                            ));
                        }
                        // The EOF block's own terminator.
                        match read_block_item(&mut self.input)? {
                            Block::Terminator => {}
                            _ => {
                                return Err(
                                    "corrupt archive: an EOF header without its terminator".into(),
                                );
                            }
                        }
                        return Ok(Some(ArchiveItem::End(db, coll)));
                    }
                    self.crcs.entry(key).or_insert_with(|| CRC64.digest());
                    self.current = Some((db, coll));
                }
                (Some((db, coll)), Block::Document(bytes)) => {
                    if let Some(crc) = self.crcs.get_mut(&(db.clone(), coll.clone())) {
                        crc.update(&bytes);
                    }
                    self.current = Some((db.clone(), coll.clone()));
                    return Ok(Some(ArchiveItem::Document(db, coll, bytes)));
                }
            }
        }
    }
}

/// One unit of an archive: a document, a terminator, or the end of the stream.
enum Block {
    Document(Vec<u8>),
    Terminator,
    Eof,
}

fn read_block_item(r: &mut impl Read) -> Result<Block, String> {
    let mut len = [0_u8; 4];
    match read_full(r, &mut len)? {
        0 => return Ok(Block::Eof),
        4 => {}
        _ => return Err("truncated archive".into()),
    }
    if u32::from_le_bytes(len) == TERMINATOR {
        return Ok(Block::Terminator);
    }
    Ok(read_document_body(r, len)?.map_or(Block::Eof, Block::Document))
}

#[cfg(test)]
mod tests {
    use bson::spec::BinarySubtype;
    use bson::{Binary, Decimal128, JavaScriptCodeWithScope, Regex, Timestamp, oid::ObjectId};

    use super::*;

    /// A document holding every BSON type, with nested field orders that are not sorted.
    fn every_type() -> Document {
        doc! {
            "_id": ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid"),
            "double": 1.5,
            "neg_zero": -0.0,
            "inf": f64::INFINITY,
            "nan": f64::NAN,
            "string": "héllo",
            "doc": { "z": 1, "a": 2 },
            "array": [1_i32, 2_i64, "three", { "y": null, "b": true }],
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "md5": Binary { subtype: BinarySubtype::Md5, bytes: vec![9; 16] },
            "user_bin": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![1] },
            "undefined": Bson::Undefined,
            "bool": false,
            "date": bson::DateTime::from_millis(-62_135_596_800_000),
            "null": null,
            "regex": Regex { pattern: "^a.*b$".try_into().expect("pattern"), options: "im".try_into().expect("options") },
            "dbptr": Bson::DbPointer(dbpointer()),
            "code": Bson::JavaScriptCode("function () { return 1; }".into()),
            "symbol": Bson::Symbol("sym".into()),
            "code_scope": JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "q": 1, "b": 2 } },
            "int32": 2_147_483_647_i32,
            "timestamp": Timestamp { time: 1_700_000_000, increment: 42 },
            "int64": i64::MIN,
            "decimal": "1234.5678E-3".parse::<Decimal128>().expect("decimal"),
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
        }
    }

    fn dbpointer() -> bson::DbPointer {
        // The bson crate builds a DbPointer only by parsing one.
        let d: Document = serde_json::from_str(
            r#"{"p": {"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}}}"#,
        )
        .expect("dbPointer");
        match d.get("p") {
            Some(Bson::DbPointer(p)) => p.clone(),
            other => panic!("not a dbPointer: {other:?}"),
        }
    }

    #[test]
    fn canonical_json_keeps_every_type_and_the_field_order() {
        let original = every_type();
        let json = canonical_json(Bson::Document(original.clone()));
        let back: Document = serde_json::from_str(&json).expect("parse");
        // NaN is not equal to itself: compare bytes.
        assert_eq!(back.to_vec().expect("bytes"), original.to_vec().expect("bytes"), "{json}");
        assert!(
            json.contains(r#""doc":{"z":{"$numberInt":"1"},"a":{"$numberInt":"2"}}"#),
            "{json}"
        );
    }

    #[test]
    fn metadata_round_trips_and_reads_mongodump_output() {
        let m = Metadata {
            db: "shop".into(),
            name: "orders".into(),
            kind: "collection".into(),
            options: doc! { "validator": { "qty": { "$gte": 0 } }, "collation": { "locale": "fr", "strength": 2 } },
            indexes: vec![
                doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
                doc! { "v": 2, "key": { "b": -1, "a": 1 }, "name": "b_-1_a_1", "unique": true },
            ],
            uuid: Some("0123456789abcdef0123456789abcdef".into()),
        };
        let json = m.to_json();
        assert!(json.starts_with(r#"{"options":{"validator":"#), "{json}");
        assert!(json.ends_with(r#""collectionName":"orders","type":"collection"}"#), "{json}");
        assert_eq!(Metadata::from_json("shop", "ignored", &json).expect("parse"), m);

        // What mongodump 100.x writes for a view, byte for byte in its documented shape.
        let view = r#"{"options":{"viewOn":"orders","pipeline":[{"$match":{"qty":{"$gt":{"$numberInt":"5"}}}}]},"indexes":[],"uuid":"","collectionName":"big","type":"view"}"#;
        let v = Metadata::from_json("shop", "big", view).expect("view");
        assert!(v.is_view());
        assert_eq!(v.uuid, None);
        assert_eq!(v.options.get_str("viewOn").ok(), Some("orders"));
        // Older versions wrote neither `type` nor `collectionName`.
        let old = r#"{"options":{"viewOn":"orders","pipeline":[]},"indexes":[]}"#;
        let o = Metadata::from_json("shop", "fromfile", old).expect("old view");
        assert_eq!((o.name.as_str(), o.is_view()), ("fromfile", true));
    }

    #[test]
    fn names_escape_and_unescape() {
        assert_eq!(escape_name("a/b%c"), "a%2Fb%25c");
        assert_eq!(escape_name("a b,é;x$y@z:1"), "a%20b%2C%C3%A9%3Bx$y@z:1");
        assert_eq!(unescape_name("a%20b%2C%C3%A9%3Bx$y@z:1"), "a b,é;x$y@z:1");
        assert_eq!(unescape_name("a%2Fb%25c"), "a/b%c");
        assert_eq!(unescape_name("plain.name"), "plain.name");
        assert_eq!(unescape_name("odd%"), "odd%");
    }

    #[test]
    fn crc_is_go_crc64_ecma() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ECMA)).
        assert_eq!(CRC64.checksum(b"123456789"), 0x995d_c9bb_df19_39fa);
    }

    #[test]
    fn archive_round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.archive");
        let meta = |name: &str, kind: &str| Metadata {
            db: "d".into(),
            name: name.into(),
            kind: kind.into(),
            options: Document::new(),
            indexes: vec![],
            uuid: None,
        };
        let docs = [doc! { "_id": 1 }, doc! { "_id": 2, "x": "y" }];
        let mut w = ArchiveWriter::start(
            Output::create(Some(&path), false).expect("create"),
            "8.0.0",
            &[meta("c", "collection"), meta("e", "collection"), meta("v", "view")],
        )
        .expect("start");
        w.begin("d", "c");
        for d in &docs {
            w.document(&d.to_vec().expect("bytes")).expect("doc");
        }
        w.end().expect("end");
        w.begin("d", "e");
        w.end().expect("end");
        w.begin("d", "v");
        w.end().expect("end");
        w.finish().expect("finish");

        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..4], &[0x6d, 0xe2, 0x99, 0x81]);
        let (mut r, header, entries) =
            ArchiveReader::open(Box::new(io::Cursor::new(bytes.clone()))).expect("open");
        assert_eq!(header.get_str("version").ok(), Some("0.1"));
        assert_eq!(entries.len(), 3);
        assert!(entries[2].is_view());
        let mut seen = Vec::new();
        while let Some(item) = r.next_item().expect("item") {
            seen.push(match item {
                ArchiveItem::Document(db, c, b) => {
                    format!("{db}.{c} {}", parse_document(&b).expect("doc"))
                }
                ArchiveItem::End(db, c) => format!("{db}.{c} end"),
            });
        }
        assert_eq!(
            seen,
            vec![
                "d.c { \"_id\": 1 }".to_string(),
                "d.c { \"_id\": 2, \"x\": \"y\" }".to_string(),
                "d.c end".to_string(),
                "d.e end".to_string(),
                "d.v end".to_string()
            ]
        );

        // Flip a byte inside the last document of d.c: the CRC catches it.
        let needle = b"y\0";
        let at = bytes.windows(2).position(|w| w == needle).expect("the x value");
        let mut corrupt = bytes.clone();
        corrupt[at] = b'z';
        let (mut r, _, _) = ArchiveReader::open(Box::new(io::Cursor::new(corrupt))).expect("open");
        let err = loop {
            match r.next_item() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("corruption not detected"),
                Err(e) => break e,
            }
        };
        assert!(err.contains("CRC mismatch"), "{err}");
        // Truncation is an error, not a short restore.
        let (mut r, _, _) =
            ArchiveReader::open(Box::new(io::Cursor::new(bytes[..bytes.len() - 10].to_vec())))
                .expect("open");
        let mut result = Ok(Some(ArchiveItem::End(String::new(), String::new())));
        while let Ok(Some(_)) = result {
            result = r.next_item();
        }
        assert!(result.is_err());
        assert!(
            ArchiveReader::open(Box::new(io::Cursor::new(b"not an archive".to_vec()))).is_err()
        );
    }
}
