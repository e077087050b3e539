//! The aggregation pipeline.
//!
//! A pipeline is a list of stages, each a one-field document (`{$match: {...}}`). [`Pipeline::
//! parse`] turns every stage into a [`Stage`] first, so that a malformed stage anywhere is
//! reported before any work is done (MongoDB also parses the whole pipeline up front); then
//! [`Pipeline::execute`] runs the stages one after the other over an in-memory vector of
//! documents. The command layer reads the input at the command's snapshot, so a pipeline sees a
//! consistent view of the data, inside a transaction or not.
//!
//! Stages that read other collections (`$lookup`, `$unionWith`) do so through a [`Source`], which
//! the command layer implements over the transaction that produced the input: every collection a
//! pipeline touches is read at the same snapshot. Without a source (plain [`run`]) those stages
//! fail with NotImplemented.
//!
//! Expressions live below this module, in [`crate::expr`] (parsing, variables, control flow,
//! the operators, calendar arithmetic), which the query layer's `$expr` shares; accumulators for
//! `$group` and `$bucket` live in [`group`].
//!
//! Blocking stages (`$sort`, `$group` and the stages built on them) keep a memory budget per
//! stage ([`spill::MemoryLimit`], 100 MiB as in MongoDB): past it they spill sorted runs to
//! temporary files, or fail with error 292 under `allowDiskUse: false` (see [`spill`]).

pub mod bucket;
pub mod densify;
pub mod fill;
pub mod geonear;
pub mod granularity;
pub mod group;
pub mod lookup;
pub mod output;
pub mod project;
pub mod spill;
mod stage;
pub mod stats;
pub mod unwind;
pub mod window;

#[cfg(test)]
mod tests;

use bson::{Bson, Document};

use crate::expr::{Expression, Scope};
use group::AccSpec;
pub use spill::MemoryLimit;
pub use stage::{CurrentOp, SEARCH_INDEXES_UNAVAILABLE, Stage};

use crate::err;
use crate::error::Result;

/// Where `$lookup` and `$unionWith` read other collections from.
pub trait Source {
    /// Every document of `db.coll` (empty if the collection does not exist), read at the same
    /// snapshot as the pipeline's input.
    fn collection(&self, db: &str, coll: &str) -> Result<Vec<Document>>;

    /// The server's sessions for `$listLocalSessions` (`{_id: lsid, lastUse}` documents).
    fn local_sessions(&self) -> Result<Vec<Document>> {
        Err(err!(NotImplemented, "$listLocalSessions is not supported here"))
    }

    /// The operations `$currentOp` reports (the `currentOp` command's `inprog` documents).
    fn current_ops(&self, _options: &CurrentOp) -> Result<Vec<Document>> {
        Err(err!(NotImplemented, "$currentOp is not supported here"))
    }

    /// Whether `db.coll` is a collection (with its count, sizes and indexes), a view or
    /// nothing, for `$collStats` and `$indexStats`.
    fn namespace_stats(&self, _db: &str, _coll: &str) -> Result<stats::Namespace> {
        Err(err!(NotImplemented, "$collStats and $indexStats are not supported here"))
    }

    /// The location field `$geoNear` measures on `db.coll`, and whether its index is 2dsphere:
    /// `key` when it has a geo index, else the field of the only 2d index, else of the only
    /// 2dsphere index (IndexNotFound otherwise).
    fn geo_near_key(&self, _db: &str, _coll: &str, _key: Option<&str>) -> Result<(String, bool)> {
        Err(err!(IndexNotFound, "$geoNear requires a 2d or 2dsphere index, but none were found"))
    }

    /// The `host:port` the server reports (`$collStats`, `$indexStats`).
    fn host(&self) -> String {
        "localhost:27017".to_string()
    }

    /// Since when index access counters count (`$indexStats`' `accesses.since`).
    fn started_at(&self) -> bson::DateTime {
        bson::DateTime::now()
    }
}

/// A [`Source`] that has no collections to offer: stages that need one fail.
pub struct NoSource;

impl Source for NoSource {
    fn collection(&self, _db: &str, coll: &str) -> Result<Vec<Document>> {
        Err(err!(
            NotImplemented,
            "reading collection '{}' from this pipeline is not supported",
            coll
        ))
    }
}

/// What a pipeline runs with: the database (for `$lookup`'s `from`), the collection source and
/// the command's `let` variables.
pub struct Context<'a> {
    /// The database that unqualified collection names refer to.
    pub db: String,
    /// Reads other collections.
    pub source: &'a dyn Source,
    /// The command's `let` variables (already evaluated to constants).
    pub vars: Document,
    /// Whether the pipeline runs inside a multi-document transaction.
    pub in_transaction: bool,
    /// The memory each blocking stage (`$group`, `$sort`, ...) may use, and whether it may
    /// spill to disk past it (the command's `allowDiskUse`, allowed unless `false` as in
    /// MongoDB 8.0): `MemoryLimit::from_command`.
    pub memory_limit: MemoryLimit,
    /// The collection the `aggregate` names (empty for `aggregate: 1`), which `$collStats` and
    /// `$indexStats` describe.
    pub collection: String,
    /// When this pipeline computes a `$lookup`'s `as` array: that `$lookup`'s foreign
    /// collection. A final `$lookup` stage then holds its whole output to MongoDB's 100 MiB for
    /// one joined array (Location4568) while building it, so that nested lookups fail before
    /// the outer array exists rather than after.
    pub lookup_result: Option<String>,
}

impl<'a> Context<'a> {
    /// A context with no source and no variables.
    pub fn empty() -> Context<'static> {
        Context {
            db: String::new(),
            source: &NoSource,
            vars: Document::new(),
            in_transaction: false,
            memory_limit: MemoryLimit::default(),
            collection: String::new(),
            lookup_result: None,
        }
    }
}

/// A parsed pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    /// Parses a pipeline whose expressions may use the variables named in `let_vars`.
    pub fn parse(pipeline: &[Document], let_vars: &Document) -> Result<Pipeline> {
        let scope = Scope::with(let_vars.keys().map(String::as_str));
        let mut stages = Vec::with_capacity(pipeline.len());
        for (i, spec) in pipeline.iter().enumerate() {
            let st = Stage::parse(spec, &scope, let_vars)?;
            if matches!(st, Stage::ListLocalSessions) && i != 0 {
                return Err(crate::expr::loc(
                    40602,
                    "$listLocalSessions is only valid as the first stage in a pipeline",
                ));
            }
            if matches!(st, Stage::CurrentOp(_)) && i != 0 {
                return Err(crate::expr::loc(
                    40602,
                    "$currentOp is only valid as the first stage in a pipeline",
                ));
            }
            if matches!(
                st,
                Stage::Documents(_) | Stage::CollStats(_) | Stage::IndexStats | Stage::GeoNear(_)
            ) && i != 0
            {
                let name = spec.keys().next().map_or("", String::as_str);
                return Err(crate::expr::loc(
                    40602,
                    format!("{name} is only valid as the first stage in a pipeline"),
                ));
            }
            if matches!(&st, Stage::Match(f) if f.text().is_some()) && i != 0 {
                return Err(crate::expr::loc(
                    17313,
                    "$match with $text is only allowed as the first pipeline stage",
                ));
            }
            if matches!(st, Stage::Output(_)) && i + 1 != pipeline.len() {
                let name = spec.keys().next().map_or("", String::as_str);
                return Err(crate::expr::loc(
                    40601,
                    format!("{name} can only be the final stage in the pipeline"),
                ));
            }
            stages.push(st);
        }
        if let Some(Stage::GeoNear(g)) = stages.first_mut() {
            let later = || pipeline.iter().skip(1).map(|s| Bson::Document(s.clone()));
            if later().any(|s| {
                crate::expr::mentions_meta(&s, "geoNearDistance")
                    || crate::expr::mentions_meta(&s, "geoNearPoint")
            }) {
                g.annotate();
            }
        }
        Ok(Pipeline { stages })
    }

    /// Refuses a pipeline whose stages read `{$meta: "geoNearDistance"}` or `"geoNearPoint"`
    /// without a `$geoNear` first stage to provide them (40218, as MongoDB). Stages that carry
    /// pipelines of their own (`$lookup`, `$graphLookup`, `$unionWith`, `$facet`) are not looked
    /// into: a sub-pipeline may have its own `$geoNear`.
    pub fn check_geo_near_metadata(pipeline: &[Document]) -> Result<()> {
        if pipeline.first().is_some_and(|s| s.contains_key("$geoNear")) {
            return Ok(());
        }
        let carries_pipeline =
            |name: &str| matches!(name, "$lookup" | "$graphLookup" | "$unionWith" | "$facet");
        let reads_geo_meta = pipeline.iter().flat_map(|s| s.iter()).any(|(name, spec)| {
            !carries_pipeline(name)
                && (crate::expr::mentions_meta(spec, "geoNearDistance")
                    || crate::expr::mentions_meta(spec, "geoNearPoint"))
        });
        if reads_geo_meta {
            return Err(crate::Error::new(
                crate::Code::Other(40218),
                "query requires $geoNear metadata, but it is not available",
            ));
        }
        Ok(())
    }

    /// The pipeline comparing strings under the aggregate's collation (`None`: simple,
    /// unchanged): its `$match` filters, `$sort` keys, `$group`, `$sortByCount`, `$bucket` and
    /// `$bucketAuto` groups, `$setWindowFields` and `$densify` partitions and sorts, the accumulators that
    /// compare values, `$lookup` and `$graphLookup` equality, and every expression's
    /// comparisons (`Expression::with_collation`), in `$facet`, `$lookup` and `$unionWith`
    /// sub-pipelines too.
    ///
    /// `$bucket` boundaries that hold strings are checked here, in the collation's order, as
    /// MongoDB checks them with the aggregate's collation (40194, 40199); so every pipeline
    /// passes through this before it runs, also without a collation.
    pub fn with_collation(
        self,
        collation: Option<&crate::collation::CollationRef>,
    ) -> Result<Pipeline> {
        let Some(c) = collation else {
            self.check_bucket_order()?;
            return Ok(self);
        };
        let accs = |accs: Vec<AccSpec>| -> Vec<AccSpec> {
            accs.into_iter().map(|a| a.with_collation(c)).collect()
        };
        let stages = self
            .stages
            .into_iter()
            .map(|st| -> Result<Stage> {
                Ok(match st {
                    Stage::Match(f) => Stage::Match(f.with_collation(collation)),
                    Stage::Sort(s) => Stage::Sort(s.with_collation(collation)),
                    Stage::Project(p) => Stage::Project(p.with_collation(c)),
                    Stage::AddFields(fields) => Stage::AddFields(
                        fields.into_iter().map(|(k, e)| (k, e.with_collation(c))).collect(),
                    ),
                    Stage::Group(key, a, _) => {
                        Stage::Group(key.with_collation(c), accs(a), Some(c.clone()))
                    }
                    Stage::ReplaceRoot(e) => Stage::ReplaceRoot(e.with_collation(c)),
                    Stage::SortByCount(e, _) => {
                        Stage::SortByCount(e.with_collation(c), Some(c.clone()))
                    }
                    Stage::Bucket(b) => Stage::Bucket(b.with_collation(c)?),
                    Stage::BucketAuto(b) => Stage::BucketAuto(Box::new(b.with_collation(c))),
                    Stage::Documents(e) => Stage::Documents(e.with_collation(c)),
                    Stage::Redact(e) => Stage::Redact(e.with_collation(c)),
                    Stage::SetWindowFields(w) => {
                        Stage::SetWindowFields(Box::new(w.with_collation(c)))
                    }
                    Stage::Fill(stages) => {
                        Stage::Fill(Pipeline { stages }.with_collation(collation)?.stages)
                    }
                    Stage::GeoNear(g) => Stage::GeoNear(Box::new(g.with_collation(c))),
                    Stage::Densify(d) => Stage::Densify(Box::new(d.with_collation(c))),
                    Stage::Output(sink) => Stage::Output(sink.with_collation(collation)),
                    Stage::Facet(subs) => Stage::Facet(
                        subs.into_iter()
                            .map(|(name, p)| Ok((name, p.with_collation(collation)?)))
                            .collect::<Result<_>>()?,
                    ),
                    Stage::Lookup(l) => Stage::Lookup(Box::new(l.with_collation(c))),
                    Stage::GraphLookup(g) => Stage::GraphLookup(Box::new(g.with_collation(c))),
                    Stage::UnionWith(coll, p) => {
                        Stage::UnionWith(coll, p.map(|p| p.with_collation(collation)).transpose()?)
                    }
                    other @ (Stage::Skip(_)
                    | Stage::Limit(_)
                    | Stage::Count(_)
                    | Stage::Unwind(..)
                    | Stage::Sample(_)
                    | Stage::ListLocalSessions
                    | Stage::CurrentOp(_)
                    | Stage::CollStats(_)
                    | Stage::IndexStats) => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pipeline { stages })
    }

    /// Checks the order of the `$bucket` boundaries that hold strings under the simple
    /// collation (see [`Pipeline::with_collation`]), in sub-pipelines too (a `$lookup`'s is
    /// checked when it runs).
    fn check_bucket_order(&self) -> Result<()> {
        for st in &self.stages {
            match st {
                Stage::Bucket(b) => b.check_order()?,
                Stage::Facet(subs) => {
                    for (_, p) in subs {
                        p.check_bucket_order()?;
                    }
                }
                Stage::UnionWith(_, Some(p)) => p.check_bucket_order()?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The options of a leading `$currentOp` stage (whose operations are gathered before the
    /// pipeline runs).
    pub fn current_op(&self) -> Option<&CurrentOp> {
        match self.stages.first() {
            Some(Stage::CurrentOp(c)) => Some(c),
            _ => None,
        }
    }

    /// The final `$out`/`$merge`, if any: the command layer writes the results of
    /// [`Pipeline::execute`] there (with `agg::output::write`) and replies with an empty cursor.
    pub fn sink(&self) -> Option<&output::Sink> {
        match self.stages.last() {
            Some(Stage::Output(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether the first stage is `$documents` (the pipeline ignores its input collection).
    pub fn starts_with_documents(&self) -> bool {
        matches!(self.stages.first(), Some(Stage::Documents(_)))
    }

    /// Whether the first stage produces its own documents (`$documents`, `$collStats`,
    /// `$indexStats`), so that the input collection need not be read.
    pub fn ignores_input(&self) -> bool {
        matches!(
            self.stages.first(),
            Some(Stage::Documents(_) | Stage::CollStats(_) | Stage::IndexStats)
        )
    }

    /// Runs the pipeline over `docs`.
    pub fn execute(&self, mut docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        // What the stages built and handed on, held while their output lives on.
        let mut held = crate::memory::Reservation::new("pipeline");
        let mut i = 0;
        while i < self.stages.len() {
            // `$sort` directly followed by `$limit` keeps only the top k (a bounded sort).
            if let (Stage::Sort(s), Some(Stage::Limit(k))) =
                (&self.stages[i], self.stages.get(i + 1))
            {
                docs = stage::top_k(docs, s, *k);
                i += 2;
                continue;
            }
            let out = match &self.stages[i] {
                // The last stage's output is the whole result: see `Context::lookup_result`.
                Stage::Lookup(l) if i + 1 == self.stages.len() => {
                    lookup::lookup(docs, l, ctx, ctx.lookup_result.as_deref())
                }
                st => st.execute(docs, ctx),
            };
            // Taken before a failure returns, so that a failed stage's charges are released too.
            let built = crate::memory::carried();
            docs = out?;
            if built.bytes() > 0 && self.stages[i].replaces_input() {
                held = built;
            } else {
                held.absorb(built);
            }
            i += 1;
        }
        // A `$text` score and `$geoNear`'s distance and point are metadata, never part of the
        // output.
        for d in &mut docs {
            d.remove(crate::query::text::SCORE_FIELD);
            d.remove(crate::expr::GEO_NEAR_DISTANCE_FIELD);
            d.remove(crate::expr::GEO_NEAR_POINT_FIELD);
        }
        Ok(docs)
    }
}

/// Runs a pipeline over input documents, with no other collections and no variables.
pub fn run(docs: Vec<Document>, pipeline: &[Document]) -> Result<Vec<Document>> {
    run_with(docs, pipeline, &Context::empty())
}

/// Runs a pipeline over input documents in a context (source for `$lookup`/`$unionWith`, `let`
/// variables).
pub fn run_with(
    docs: Vec<Document>,
    pipeline: &[Document],
    ctx: &Context,
) -> Result<Vec<Document>> {
    Pipeline::parse(pipeline, &ctx.vars)?.with_collation(None)?.execute(docs, ctx)
}

/// Evaluates a command's `let` option: each value is an expression over no document
/// (`{total: {$add: [1, 2]}}` binds `$$total` to 3). The result also binds `$$NOW` and
/// `$$CLUSTER_TIME` once, so that every document of the command sees the same time, as in
/// MongoDB (user variable names cannot clash: they start with a lowercase letter).
pub fn eval_let(vars: &Document) -> Result<Document> {
    let empty = Document::new();
    let mut out = Document::new();
    let now = bson::DateTime::now();
    out.insert("NOW", now);
    out.insert(
        "CLUSTER_TIME",
        bson::Timestamp { time: (now.timestamp_millis() / 1000) as u32, increment: 1 },
    );
    for (name, v) in vars {
        crate::expr::validate_var_name(name)?;
        let value = Expression::parse(v)?.eval_doc(&empty)?;
        out.insert(name.clone(), value.unwrap_or(Bson::Null));
    }
    Ok(out)
}

/// Evaluates one expression against a document (for callers outside the pipeline).
#[cfg(test)]
pub fn evaluate(expr: &Bson, doc: &Document) -> Result<Option<Bson>> {
    Expression::parse(expr)?.eval_doc(doc)
}
