//! Offline tools over a data directory: `folio verify`.
//!
//! It opens the directory the way the server does (so it fails cleanly while a server holds it)
//! and reads one snapshot. (`folio dump --dbpath` reads a data directory too: see [`crate::backup`].)

use std::path::Path;

use folio::TxnStore;

use crate::store::open_store;

/// Opens an existing data directory (never creates one: a typo must not dump an empty database).
fn open_existing(dbpath: &Path) -> Result<std::sync::Arc<dyn TxnStore>, String> {
    if !dbpath.is_dir() {
        return Err(format!("no data directory at {}", dbpath.display()));
    }
    open_store(dbpath, false).map_err(|e| format!("cannot open {}: {e}", dbpath.display()))
}

/// Checks that every index agrees with the documents. Returns the disagreements (none when the
/// data is consistent).
pub fn verify(dbpath: &Path) -> Result<Vec<String>, String> {
    let store = open_existing(dbpath)?;
    let txn = store.begin().map_err(|e| e.to_string())?;
    let problems = folio::verify(txn.as_ref()).map_err(|e| e.to_string())?;
    txn.abort();
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use folio::{Service, ServiceOptions};

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
            let meta = folio::testing::list_collections(txn.as_ref(), Some("shop"))
                .expect("list")
                .into_iter()
                .find(|m| m.name == "b")
                .expect("shop.b");
            let index = meta.indexes.iter().find(|i| i.name() == "x_1").expect("x_1");
            let prefix = folio::testing::index_prefix(meta.id, index.id);
            let end = folio::testing::prefix_end(&prefix);
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
        assert!(verify(&missing).is_err());
        assert!(!missing.exists());
    }
}
