//! Updates: the first document is an update statement as the `update` command carries it
//! (`{q: filter, u: update-or-pipeline, arrayFilters: [...], upsert: bool}`), the rest are the
//! collection's documents. Every matching document is updated (with the positional `$` bound
//! to the match), and with `upsert` and no match the seed document is built and updated.

#![no_main]

use bson::{Bson, Document};
use folio::Filter;
use folio::{UpdateContext, UpdateSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut docs = folio_fuzz::documents(data).into_iter();
    let Some(stmt) = docs.next() else { return };
    let filter = match stmt.get("q") {
        Some(Bson::Document(q)) => q.clone(),
        _ => Document::new(),
    };
    let Ok(filter) = Filter::parse(&filter) else { return };
    let array_filters: Option<Vec<Document>> = match stmt.get("arrayFilters") {
        Some(Bson::Array(a)) => Some(a.iter().filter_map(|f| f.as_document().cloned()).collect()),
        _ => None,
    };
    let spec = match stmt.get("u") {
        Some(Bson::Document(u)) => UpdateSpec::parse(u, array_filters.as_deref()),
        Some(Bson::Array(stages)) => {
            let stages: Vec<Document> =
                stages.iter().filter_map(|s| s.as_document().cloned()).collect();
            UpdateSpec::parse_pipeline(&stages, None)
        }
        _ => return,
    };
    let Ok(spec) = spec else { return };
    let mut matched = false;
    for mut doc in docs {
        let (hit, position) = filter.matches_with_key(&doc);
        if !hit {
            continue;
        }
        matched = true;
        let ctx = UpdateContext { match_position: position, ..UpdateContext::default() };
        let _ = spec.apply(&mut doc, &ctx);
    }
    if !matched && stmt.get_bool("upsert").unwrap_or(false) {
        let ctx = UpdateContext { is_upsert_insert: true, ..UpdateContext::default() };
        let _ = spec.upsert_document(&filter, &ctx);
    }
});
