//! Offline tools over a data directory: `folio dump` and `folio verify`.
//!
//! Both open the directory the way the server does (so they fail cleanly while a server holds it)
//! and read one snapshot: a dump is consistent even though it is taken document by document.

use std::io::Write;
use std::path::Path;

use bson::{Bson, Document};
use folio::mvcc::TxnStore;
use folio::{catalog, exec};

use crate::store::open_store;

/// Opens an existing data directory (never creates one: a typo must not dump an empty database).
fn open_existing(dbpath: &Path) -> Result<std::sync::Arc<dyn TxnStore>, String> {
    if !dbpath.is_dir() {
        return Err(format!("no data directory at {}", dbpath.display()));
    }
    open_store(dbpath, false).map_err(|e| format!("cannot open {}: {e}", dbpath.display()))
}

/// Writes every document of every collection (or of database `db`) as one line of relaxed
/// Extended JSON, `{"ns": "db.coll", "doc": {...}}`, in namespace and key order. Returns the
/// number of documents written.
pub fn dump(dbpath: &Path, db: Option<&str>, out: &mut impl Write) -> Result<usize, String> {
    let store = open_existing(dbpath)?;
    let txn = store.begin().map_err(|e| e.to_string())?;
    let mut written = 0;
    for meta in catalog::list_collections(txn.as_ref(), db).map_err(|e| e.to_string())? {
        if meta.is_view() {
            continue;
        }
        let ns = meta.namespace();
        for found in exec::scan_collection(txn.as_ref(), &meta).map_err(|e| e.to_string())? {
            let line = bson::doc! { "ns": ns.as_str(), "doc": found.doc };
            let mut json = String::new();
            write_json_doc(&line, &mut json);
            writeln!(out, "{json}").map_err(|e| format!("cannot write the dump: {e}"))?;
            written += 1;
        }
    }
    txn.abort();
    Ok(written)
}

/// Writes a document as relaxed Extended JSON, keeping its field order (a JSON map would sort
/// the fields, and field order is part of a MongoDB document).
fn write_json_doc(doc: &Document, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in doc.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Bson::String(key.clone()).into_relaxed_extjson().to_string());
        out.push(':');
        write_json(value, out);
    }
    out.push('}');
}

/// Writes one value as relaxed Extended JSON; documents and arrays keep their order.
fn write_json(value: &Bson, out: &mut String) {
    match value {
        Bson::Document(d) => write_json_doc(d, out),
        Bson::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        // Scalars (and the rare code-with-scope, whose wrapper keys are fixed) convert directly.
        Bson::Double(_)
        | Bson::String(_)
        | Bson::Boolean(_)
        | Bson::Null
        | Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::Int32(_)
        | Bson::Int64(_)
        | Bson::Timestamp(_)
        | Bson::Binary(_)
        | Bson::ObjectId(_)
        | Bson::DateTime(_)
        | Bson::Symbol(_)
        | Bson::Decimal128(_)
        | Bson::Undefined
        | Bson::MaxKey
        | Bson::MinKey
        | Bson::DbPointer(_) => out.push_str(&value.clone().into_relaxed_extjson().to_string()),
    }
}

/// Checks that every index agrees with the documents. Returns the disagreements (none when the
/// data is consistent).
pub fn verify(dbpath: &Path) -> Result<Vec<String>, String> {
    let store = open_existing(dbpath)?;
    let txn = store.begin().map_err(|e| e.to_string())?;
    let problems = exec::verify(txn.as_ref()).map_err(|e| e.to_string())?;
    txn.abort();
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use folio::command::{Service, ServiceOptions};

    use super::*;

    /// Fills a data directory through the command path, as a server would.
    fn populate(dir: &Path) {
        let store = open_store(dir, false).expect("open");
        let svc = Service::new(store.clone(), ServiceOptions::default()).expect("service");
        let mut conn = svc.connect("test");
        for cmd in [
            doc! { "insert": "b", "documents": [{ "_id": 2, "x": "two" }, { "_id": 1, "x": 1.5 }], "$db": "shop" },
            doc! { "insert": "a", "documents": [{ "_id": "k", "when": bson::DateTime::from_millis(0) }], "$db": "shop" },
            doc! { "insert": "z", "documents": [{ "_id": 1, "zeta": [1, { "b": 1, "a": 2 }], "alpha": null }], "$db": "other" },
            doc! { "createIndexes": "b", "indexes": [{ "key": { "x": 1 }, "name": "x_1" }], "$db": "shop" },
        ] {
            let reply = svc.dispatch(&mut conn, cmd).body;
            assert_eq!(reply.get_f64("ok").ok(), Some(1.0), "{reply}");
        }
        store.flush().expect("flush");
    }

    #[test]
    fn dump_writes_every_document_as_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        populate(&data);

        let mut out = Vec::new();
        assert_eq!(dump(&data, Some("shop"), &mut out).expect("dump"), 3);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                r#"{"ns":"shop.a","doc":{"_id":"k","when":{"$date":"1970-01-01T00:00:00Z"}}}"#,
                r#"{"ns":"shop.b","doc":{"_id":1,"x":1.5}}"#,
                r#"{"ns":"shop.b","doc":{"_id":2,"x":"two"}}"#,
            ]
        );

        let mut all = Vec::new();
        assert_eq!(dump(&data, None, &mut all).expect("dump"), 4);
        let all = String::from_utf8(all).expect("utf-8");
        assert_eq!(
            all.lines().next(),
            Some(r#"{"ns":"other.z","doc":{"_id":1,"zeta":[1,{"b":1,"a":2}],"alpha":null}}"#),
            "fields keep their order"
        );
    }

    #[test]
    fn verify_finds_consistent_data_consistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        populate(&data);
        assert_eq!(verify(&data).expect("verify"), Vec::<String>::new());
    }

    #[test]
    fn verify_reports_a_missing_index_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        populate(&data);
        // Delete one index entry behind the catalog's back.
        {
            let store = open_store(&data, false).expect("open");
            let mut txn = store.begin().expect("begin");
            let meta = catalog::list_collections(txn.as_ref(), Some("shop"))
                .expect("list")
                .into_iter()
                .find(|m| m.name == "b")
                .expect("shop.b");
            let index = meta.indexes.iter().find(|i| i.name() == "x_1").expect("x_1");
            let prefix = folio::catalog::keys::index_prefix(meta.id, index.id);
            let end = folio::catalog::keys::prefix_end(&prefix);
            let first = txn
                .scan(std::ops::Bound::Included(&prefix), std::ops::Bound::Excluded(&end), false)
                .expect("scan")
                .next()
                .expect("an entry")
                .expect("entry")
                .0;
            txn.delete(&first).expect("delete").expect("no conflict");
            txn.commit().expect("commit");
            store.flush().expect("flush");
        }
        let problems = verify(&data).expect("verify");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("shop.b: missing index entry"), "{problems:?}");
    }

    #[test]
    fn missing_directory_is_an_error_not_an_empty_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert!(dump(&missing, None, &mut Vec::new()).is_err());
        assert!(verify(&missing).is_err());
        assert!(!missing.exists());
    }
}
