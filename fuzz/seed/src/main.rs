//! `folio-fuzz-seed SPEC_DIR OUT_DIR`: writes seed inputs for every fuzz target into
//! `OUT_DIR/<target>/`, extracted from MongoDB's unified-format specification tests.
//!
//! The tests themselves may not be copied into the repository, so the corpus is generated
//! (into a gitignored directory) each time the fuzzers run. From each test file it takes:
//!
//! - every command a test expects the driver to send (`expectEvents` ... `commandStartedEvent`),
//!   preceded by an `insert` of the file's initial data: seeds for `command`, and the same
//!   commands framed as OP_MSG (plain, and with the body split into a document sequence) for
//!   `wire_decode`;
//! - every operation's `filter`, with the initial documents: seeds for `filter`;
//! - every `update`/`replacement` with its filter, `arrayFilters` and `upsert`: seeds for
//!   `update`;
//! - every `pipeline`, with the initial documents: seeds for `aggregate`.
//!
//! Inputs are concatenated BSON documents, the format the targets read (see `fuzz/src/lib.rs`).
//! File names are a hash of the content, so running it twice writes nothing new.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use bson::{Bson, Document, doc};
use serde_json::Value;

/// At most this many initial documents go into one seed: the targets read 16 documents.
const MAX_INITIAL: usize = 12;

struct Out {
    dir: PathBuf,
    written: usize,
}

impl Out {
    fn write(&mut self, target: &str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let path = dir.join(format!("{:016x}", h.finish()));
        if !path.exists() {
            std::fs::create_dir_all(&dir).expect("create corpus dir");
            std::fs::write(&path, bytes).expect("write seed");
            self.written += 1;
        }
    }

    fn write_docs(&mut self, target: &str, docs: &[Document]) {
        let mut bytes = Vec::new();
        for d in docs {
            match d.to_vec() {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(_) => return,
            }
        }
        self.write(target, &bytes);
    }
}

fn to_doc(v: &Value) -> Option<Document> {
    match Bson::try_from(v.clone()).ok()? {
        Bson::Document(d) => Some(d),
        _ => None,
    }
}

fn to_bson(v: &Value) -> Option<Bson> {
    Bson::try_from(v.clone()).ok()
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

/// An OP_MSG frame around a body, optionally moving one array field into a kind-1 section.
fn op_msg(request_id: i32, body: &Document, sequence: Option<&str>) -> Option<Vec<u8>> {
    let mut body = body.clone();
    let mut section = Vec::new();
    if let Some(name) = sequence
        && let Some(Bson::Array(items)) = body.remove(name)
    {
        let mut docs = Vec::new();
        for item in items {
            docs.extend_from_slice(&item.as_document()?.to_vec().ok()?);
        }
        section.push(1);
        section.extend_from_slice(&((4 + name.len() + 1 + docs.len()) as i32).to_le_bytes());
        section.extend_from_slice(name.as_bytes());
        section.push(0);
        section.extend_from_slice(&docs);
    }
    let body = body.to_vec().ok()?;
    let mut out = Vec::new();
    let len = 16 + 4 + 1 + body.len() + section.len();
    out.extend_from_slice(&(len as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0_i32.to_le_bytes());
    out.extend_from_slice(&2013_i32.to_le_bytes());
    out.extend_from_slice(&0_u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&body);
    out.extend_from_slice(&section);
    Some(out)
}

/// Every object in `v` (depth first) that has a key `key`, with that key's value.
fn find_all<'a>(
    v: &'a Value,
    key: &str,
    found: &mut Vec<(&'a serde_json::Map<String, Value>, &'a Value)>,
) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key) {
                found.push((m, x));
            }
            for x in m.values() {
                find_all(x, key, found);
            }
        }
        Value::Array(a) => {
            for x in a {
                find_all(x, key, found);
            }
        }
        _ => {}
    }
}

fn seed_file(path: &Path, out: &mut Out) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let Ok(json) = serde_json::from_str::<Value>(&text) else { return };
    let mut initial: Vec<Document> = Vec::new();
    let mut setup: Vec<Document> = Vec::new();
    if let Some(Value::Array(data)) = json.get("initialData") {
        for coll in data {
            let (Some(name), Some(db), Some(Value::Array(docs))) = (
                coll.get("collectionName").and_then(Value::as_str),
                coll.get("databaseName").and_then(Value::as_str),
                coll.get("documents"),
            ) else {
                continue;
            };
            let docs: Vec<Document> = docs.iter().filter_map(to_doc).collect();
            initial.extend(docs.iter().take(MAX_INITIAL).cloned());
            if !docs.is_empty() {
                let docs: Vec<Bson> = docs.into_iter().map(Bson::Document).collect();
                setup.push(doc! { "insert": name, "documents": docs, "$db": db });
            }
        }
    }
    initial.truncate(MAX_INITIAL);

    // Commands, as the tests expect drivers to send them.
    let mut events = Vec::new();
    find_all(&json, "commandStartedEvent", &mut events);
    let mut request_id = 1;
    for (_, event) in events {
        let Some(mut cmd) = event.get("command").and_then(to_doc) else { continue };
        if let Some(db) = event.get("databaseName").and_then(Value::as_str) {
            cmd.insert("$db", db);
        }
        let mut seq = setup.clone();
        seq.push(cmd.clone());
        out.write_docs("command", &seq);
        out.write_docs("command", std::slice::from_ref(&cmd));
        request_id += 1;
        if let Some(frame) = op_msg(request_id, &cmd, None) {
            out.write("wire_decode", &frame);
        }
        for field in ["documents", "updates", "deletes", "ops"] {
            if matches!(cmd.get(field), Some(Bson::Array(_)))
                && let Some(frame) = op_msg(request_id, &cmd, Some(field))
            {
                out.write("wire_decode", &frame);
            }
        }
    }

    // Filters.
    let mut filters = Vec::new();
    find_all(&json, "filter", &mut filters);
    for (_, f) in &filters {
        if let Some(f) = to_doc(f) {
            let mut docs = vec![f];
            docs.extend(initial.iter().cloned());
            out.write_docs("filter", &docs);
        }
    }

    // Updates, with the filter and options of the same arguments.
    for key in ["update", "replacement"] {
        let mut updates = Vec::new();
        find_all(&json, key, &mut updates);
        for (args, u) in updates {
            let Some(u) = to_bson(u) else { continue };
            if !matches!(u, Bson::Document(_) | Bson::Array(_)) {
                continue;
            }
            let mut stmt = doc! { "u": u };
            if let Some(q) = args.get("filter").and_then(to_doc) {
                stmt.insert("q", q);
            }
            if let Some(af) = args.get("arrayFilters").and_then(to_bson) {
                stmt.insert("arrayFilters", af);
            }
            if let Some(Value::Bool(b)) = args.get("upsert") {
                stmt.insert("upsert", *b);
            }
            let mut docs = vec![stmt];
            docs.extend(initial.iter().cloned());
            out.write_docs("update", &docs);
        }
    }

    // Pipelines.
    let mut pipelines = Vec::new();
    find_all(&json, "pipeline", &mut pipelines);
    for (_, p) in pipelines {
        let Some(p @ Bson::Array(_)) = to_bson(p) else { continue };
        let mut docs = vec![doc! { "pipeline": p }];
        docs.extend(initial.iter().cloned());
        out.write_docs("aggregate", &docs);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, spec, dest] = args.as_slice() else {
        eprintln!("usage: folio-fuzz-seed SPEC_TESTS_DIR CORPUS_DIR");
        std::process::exit(2);
    };
    let mut files = Vec::new();
    json_files(Path::new(spec), &mut files);
    let mut out = Out { dir: PathBuf::from(dest), written: 0 };
    // A few inputs that need no spec tests, so that every target has a seed.
    out.write_docs("command", &[doc! { "hello": 1, "$db": "admin" }]);
    out.write_docs("filter", &[doc! { "a": { "$gt": 1 } }, doc! { "a": 2 }]);
    out.write_docs("update", &[doc! { "q": {}, "u": { "$inc": { "a": 1 } } }, doc! { "a": 2 }]);
    out.write_docs("aggregate", &[doc! { "pipeline": [{ "$match": {} }] }, doc! { "a": 1 }]);
    if let Some(frame) = op_msg(1, &doc! { "hello": 1, "$db": "admin" }, None) {
        out.write("wire_decode", &frame);
    }
    for f in &files {
        seed_file(f, &mut out);
    }
    println!("{} spec test files read, {} new seed inputs in {dest}", files.len(), out.written);
}
