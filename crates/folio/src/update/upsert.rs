//! Upserts: the document inserted when an update with `upsert: true` matches nothing.
//!
//! The new document is seeded from the filter's equality predicates (`{a: 1, "b.c": 2}` gives
//! `{a: 1, b: {c: 2}}`, also through `$and` and `$eq`), then the update runs on it with
//! `$setOnInsert` enabled. A replacement upsert takes the replacement and only the `_id` of the
//! seed. `_id` is always first; when neither provides one the caller generates an ObjectId.

use bson::Document;

use super::{UpdateContext, UpdateSpec, id_first};
use crate::bail;
use crate::doc::path::is_prefix;
use crate::error::Result;
use crate::query::filter::Filter;

/// The document an upsert starts from, built from the filter's equality predicates.
pub fn upsert_seed(filter: &Filter) -> Result<Document> {
    let mut seed = Document::new();
    let eqs = filter.equalities();
    for (i, (path, _)) in eqs.iter().enumerate() {
        for (other, _) in &eqs[..i] {
            if other == path {
                bail!(
                    NotSingleValueField,
                    "cannot infer query fields to set, path '{path}' is matched twice"
                );
            }
            if is_prefix(other, path) || is_prefix(path, other) {
                bail!(
                    NotSingleValueField,
                    "cannot infer query fields to set, both paths '{other}' and '{path}' are matched"
                );
            }
        }
    }
    for (path, value) in eqs {
        if path.split('.').any(|p| p.starts_with('$')) {
            continue;
        }
        let spec = UpdateSpec::parse(&bson::doc! {"$set": {path: value}}, None)?;
        spec.apply(&mut seed, &UpdateContext::default())?;
    }
    id_first(&mut seed);
    Ok(seed)
}

impl UpdateSpec {
    /// The document to insert for an upsert that matched nothing. `ctx.is_upsert_insert` is
    /// forced on.
    pub fn upsert_document(&self, filter: &Filter, ctx: &UpdateContext) -> Result<Document> {
        let seed = upsert_seed(filter)?;
        match self {
            UpdateSpec::Replacement(r) => {
                let mut doc = Document::new();
                if let Some(id) = r.get("_id").or_else(|| seed.get("_id")) {
                    doc.insert("_id", id.clone());
                }
                for (k, v) in r {
                    if k != "_id" {
                        doc.insert(k.clone(), v.clone());
                    }
                }
                Ok(doc)
            }
            UpdateSpec::Operators(_) | UpdateSpec::Pipeline(_) => {
                let mut doc = seed;
                let ctx = UpdateContext { is_upsert_insert: true, ..ctx.clone() };
                self.apply(&mut doc, &ctx)?;
                Ok(doc)
            }
        }
    }
}
