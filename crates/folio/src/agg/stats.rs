//! `$collStats` and `$indexStats`: statistics of the pipeline's own collection.
//!
//! Both must be the first stage and ignore the pipeline's input: they describe the collection
//! the `aggregate` names, which they learn from [`Context::collection`], through the
//! [`Source`](super::Source) (the command layer reads the catalog and sizes at the command's
//! snapshot). Their shapes are MongoDB's, with the fields drivers and ODMs read: `count`,
//! `storageStats.{size, count, avgObjSize, storageSize, nindexes, totalIndexSize, indexSizes,
//! totalSize, scaleFactor}`, and per index `{name, key, host, accesses: {ops, since}, spec}`.
//! Sizes are the BSON bytes of the documents and the bytes of the index entries (Folio's
//! storage does not report per-collection disk usage, so `storageSize` is the data size);
//! latency and access counters are zeros.

use bson::{Bson, Document, doc};

use super::Context;
use crate::error::{Error, Result};
use crate::expr::{loc, type_name};
use crate::{bail, err};

/// One index's specification and the bytes its entries take.
#[derive(Clone, Debug, Default)]
pub struct IndexStats {
    /// The index specification as `listIndexes` reports it (`v`, `key`, `name`, options).
    pub spec: Document,
    /// The total size of the index's keys and values, in bytes.
    pub size: u64,
}

/// What a [`Source`](super::Source) knows about a namespace.
#[derive(Clone, Debug)]
pub enum Namespace {
    /// No such collection or view.
    Missing,
    /// A view (statistics of storage do not apply).
    View,
    /// A collection.
    Collection(CollectionStats),
}

/// A collection's document count and sizes.
#[derive(Clone, Debug, Default)]
pub struct CollectionStats {
    /// The number of documents.
    pub count: u64,
    /// The total BSON size of the documents, in bytes.
    pub size: u64,
    /// Whether the collection is capped.
    pub capped: bool,
    /// The indexes, `_id_` first.
    pub indexes: Vec<IndexStats>,
}

/// A parsed `$collStats`: which sections to produce.
#[derive(Clone, Debug, Default)]
pub struct CollStats {
    latency: Option<bool>,
    storage: Option<i64>,
    count: bool,
    query_exec: bool,
}

fn unknown(field: &str) -> Error {
    Error::unknown_field(&format!("$collStats.{field}"))
}

fn wrong_type(field: &str, v: &Bson, expected: &str) -> Error {
    err!(
        TypeMismatch,
        "BSON field '$collStats.{}' is the wrong type '{}', expected type '{}'",
        field,
        type_name(v),
        expected
    )
}

/// A number as MongoDB appends a count or size: an int when it fits, else a long.
fn number(n: u64) -> Bson {
    match i32::try_from(n) {
        Ok(i) => Bson::Int32(i),
        Err(_) => Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)),
    }
}

impl CollStats {
    /// Parses the stage's argument.
    pub fn parse(arg: &Bson) -> Result<CollStats> {
        let Bson::Document(spec) = arg else {
            bail!(
                FailedToParse,
                "$collStats must take a nested object but found: {}",
                crate::doc::fmt::value_string(arg)
            );
        };
        let mut out = CollStats::default();
        for (k, v) in spec {
            let Bson::Document(sub) = v else {
                return Err(wrong_type(k, v, "object"));
            };
            match k.as_str() {
                "latencyStats" => {
                    let mut histograms = false;
                    for (f, x) in sub {
                        match (f.as_str(), x) {
                            ("histograms", Bson::Boolean(b)) => histograms = *b,
                            ("histograms", other) => {
                                return Err(wrong_type("latencyStats.histograms", other, "bool"));
                            }
                            (other, _) => return Err(unknown(&format!("latencyStats.{other}"))),
                        }
                    }
                    out.latency = Some(histograms);
                }
                "storageStats" => {
                    let mut scale = 1;
                    for (f, x) in sub {
                        match f.as_str() {
                            "scale" => {
                                let n = crate::expr::as_int(x)
                                    .ok_or_else(|| wrong_type("storageStats.scale", x, "int"))?;
                                if n < 1 {
                                    return Err(loc(
                                        51024,
                                        format!(
                                            "BSON field 'scale' value must be >= 1, actual value '{n}'"
                                        ),
                                    ));
                                }
                                scale = n;
                            }
                            "verbose" | "waitForLock" | "numericOnly" => {}
                            other => return Err(unknown(&format!("storageStats.{other}"))),
                        }
                    }
                    out.storage = Some(scale);
                }
                "count" => out.count = true,
                "queryExecStats" => out.query_exec = true,
                other => return Err(unknown(other)),
            }
        }
        Ok(out)
    }

    /// Runs the stage: one document describing the context's collection.
    pub fn execute(&self, ctx: &Context) -> Result<Vec<Document>> {
        let ns = format!("{}.{}", ctx.db, ctx.collection);
        let mut out = doc! {
            "ns": ns.clone(),
            "host": ctx.source.host(),
            "localTime": bson::DateTime::now(),
        };
        if let Some(histograms) = self.latency {
            let op = |h: bool| {
                let mut d = doc! {"latency": 0_i64, "ops": 0_i64};
                if h {
                    d.insert("histogram", Bson::Array(Vec::new()));
                }
                d
            };
            out.insert(
                "latencyStats",
                doc! {
                    "reads": op(histograms),
                    "writes": op(histograms),
                    "commands": op(histograms),
                    "transactions": op(histograms),
                },
            );
        }
        if self.storage.is_none() && !self.count {
            return Ok(vec![self.with_query_exec(out)]);
        }
        let stats = match ctx.source.namespace_stats(&ctx.db, &ctx.collection)? {
            Namespace::Collection(s) => s,
            Namespace::Missing => {
                let section = if self.storage.is_some() { "storageStats" } else { "count" };
                bail!(
                    NamespaceNotFound,
                    "Unable to retrieve {} in $collStats stage :: caused by :: Collection [{}] not found.",
                    section,
                    ns
                );
            }
            Namespace::View => {
                bail!(CommandNotSupportedOnView, "Namespace {} is a view, not a collection", ns);
            }
        };
        if let Some(scale) = self.storage {
            out.insert("storageStats", storage_stats(&stats, scale.max(1) as u64));
        }
        if self.count {
            out.insert("count", number(stats.count));
        }
        Ok(vec![self.with_query_exec(out)])
    }

    fn with_query_exec(&self, mut out: Document) -> Document {
        if self.query_exec {
            out.insert(
                "queryExecStats",
                doc! {"collectionScans": {"total": 0_i64, "nonTailable": 0_i64}},
            );
        }
        out
    }
}

/// The `storageStats` section, sizes divided by `scale`.
fn storage_stats(s: &CollectionStats, scale: u64) -> Document {
    let index_total: u64 = s.indexes.iter().map(|i| i.size).sum();
    let mut sizes = Document::new();
    for i in &s.indexes {
        sizes.insert(i.spec.get_str("name").unwrap_or(""), number(i.size / scale));
    }
    doc! {
        "size": number(s.size / scale),
        "count": number(s.count),
        "avgObjSize": number(s.size.checked_div(s.count).unwrap_or(0)),
        "numOrphanDocs": 0,
        "storageSize": number(s.size / scale),
        "freeStorageSize": 0,
        "capped": s.capped,
        "nindexes": number(s.indexes.len() as u64),
        "indexBuilds": Bson::Array(Vec::new()),
        "totalIndexSize": number(index_total / scale),
        "totalSize": number((s.size + index_total) / scale),
        "indexSizes": sizes,
        "scaleFactor": number(scale),
    }
}

/// Parses `$indexStats` (its argument must be an empty object).
pub fn parse_index_stats(arg: &Bson) -> Result<()> {
    match arg {
        Bson::Document(d) if d.is_empty() => Ok(()),
        _ => Err(loc(28803, "The $indexStats stage specification must be an empty object")),
    }
}

/// Runs `$indexStats`: one document per index of the context's collection (none when the
/// collection does not exist).
pub fn index_stats(ctx: &Context) -> Result<Vec<Document>> {
    let stats = match ctx.source.namespace_stats(&ctx.db, &ctx.collection)? {
        Namespace::Collection(s) => s,
        Namespace::Missing => return Ok(Vec::new()),
        Namespace::View => bail!(
            CommandNotSupportedOnView,
            "Namespace {}.{} is a view, not a collection",
            ctx.db,
            ctx.collection
        ),
    };
    let host = ctx.source.host();
    let since = ctx.source.started_at();
    Ok(stats
        .indexes
        .into_iter()
        .map(|i| {
            doc! {
                "name": i.spec.get_str("name").unwrap_or(""),
                "key": i.spec.get_document("key").cloned().unwrap_or_default(),
                "host": host.clone(),
                "accesses": {"ops": 0_i64, "since": since},
                "spec": i.spec,
            }
        })
        .collect())
}
