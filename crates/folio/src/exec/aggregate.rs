//! Running an aggregation pipeline over a transaction: reading its input, giving its stages
//! access to other collections, and writing `$out` / `$merge` results.
//!
//! The command layer parses the `aggregate` command into an [`Aggregate`] and decides the
//! transaction (a read for an ordinary pipeline, one write transaction for a pipeline ending in
//! `$out` or `$merge`); this module does the rest inside that transaction:
//!
//! - the input is the collection read through the planner ([`super::find_for_pipeline`]), with
//!   a leading `$match` (or `$geoNear`'s `query`) given to the scan so it can use an index;
//! - `$lookup`, `$unionWith`, `$collStats`, `$indexStats` and `$geoNear` reach other
//!   collections through `TxnSource`, at the same snapshot as the input;
//! - `$out` and `$merge` write through `TxnTarget` with the executor's own insert, update and
//!   delete, so indexes, validation and the change log are maintained as for any write.
//!
//! The pipeline's [`Context`] is built in one place (`Aggregate::context`) for both the
//! stages and the output.

use bson::{Bson, Document, doc};

use super::FindSpec;
use super::plan::Hint;
use crate::agg::output::{self, Sink};
use crate::agg::{Context, MemoryLimit, NoSource, Pipeline, Source};
use crate::collation::{CollationRef, Requested};
use crate::error::Result;
use crate::mvcc::Txn;

/// An `aggregate` command, parsed, ready to run in a transaction.
pub struct Aggregate {
    /// The database the command runs against.
    pub db: String,
    /// The collection it reads (`None` for `aggregate: 1`).
    pub coll: Option<String>,
    /// The parsed pipeline.
    pub pipeline: Pipeline,
    /// The pipeline's first stage as written: a leading `$match` or `$geoNear` selects the
    /// input through the planner.
    pub first_stage: Option<Document>,
    /// The command's `let` variables, evaluated.
    pub vars: Document,
    /// Whether the command gave `let` (a leading `$match` may then use its variables, so it is
    /// not given to the scan).
    pub has_let: bool,
    /// Whether the pipeline runs inside a multi-document transaction.
    pub in_transaction: bool,
    /// The memory budget of each blocking stage.
    pub memory_limit: MemoryLimit,
    /// The collation the command asked for.
    pub collation: Requested,
    /// The command's `hint`.
    pub hint: Option<Hint>,
    /// The sessions `$listLocalSessions` lists (gathered before the read).
    pub sessions: Option<Vec<Document>>,
    /// The operations `$currentOp` reports (gathered before the read).
    pub current_ops: Option<Vec<Document>>,
    /// The `host:port` `$collStats` and `$indexStats` report.
    pub host: String,
    /// `bypassDocumentValidation` for the documents `$out` / `$merge` write.
    pub bypass_validation: bool,
}

impl Aggregate {
    /// The context the pipeline's stages (and its output) run with.
    fn context<'a>(&self, source: &'a dyn Source) -> Context<'a> {
        Context {
            db: self.db.clone(),
            source,
            vars: self.vars.clone(),
            in_transaction: self.in_transaction,
            memory_limit: self.memory_limit,
            collection: self.coll.clone().unwrap_or_default(),
            lookup_result: None,
        }
    }

    /// Runs the pipeline at `txn`'s snapshot and returns its output.
    pub fn run(&self, txn: &dyn Txn) -> Result<Vec<Document>> {
        let source = TxnSource {
            txn,
            sessions: self.sessions.as_deref(),
            current_ops: self.current_ops.as_deref(),
            host: &self.host,
        };
        let ctx = self.context(&source);
        // A leading `$match` (without `let` variables) is also given to the scan, so that it
        // can use an index; the pipeline applies it again, which changes nothing.
        let mut spec = FindSpec {
            collation: self.collation.clone(),
            hint: self.hint.clone(),
            ..FindSpec::default()
        };
        if !self.has_let
            && let Some(Bson::Document(f)) = self.first_stage.as_ref().and_then(|s| s.get("$match"))
        {
            spec.filter = f.clone();
        }
        // `$geoNear`'s own `query` selects its input the same way.
        if !self.has_let
            && let Some(Bson::Document(g)) =
                self.first_stage.as_ref().and_then(|s| s.get("$geoNear"))
            && let Some(Bson::Document(q)) = g.get("query")
        {
            spec.filter = q.clone();
        }
        let collation = self.resolve_collation(txn)?;
        let input = match &self.coll {
            Some(coll) if !self.pipeline.ignores_input() => {
                super::find_for_pipeline(txn, &self.db, coll, &spec)?
            }
            _ => Vec::new(),
        };
        self.pipeline.clone().with_collation(collation.as_ref())?.execute(input, &ctx)
    }

    /// Runs a pipeline that ends in `$out` or `$merge` (`sink`) and writes its results, all in
    /// `txn`.
    pub fn run_into(&self, txn: &mut dyn Txn, sink: &Sink) -> Result<()> {
        let collation;
        let results = {
            let reader: &dyn Txn = &*txn;
            let source = TxnSource {
                txn: reader,
                sessions: self.sessions.as_deref(),
                current_ops: self.current_ops.as_deref(),
                host: &self.host,
            };
            let ctx = self.context(&source);
            collation = self.resolve_collation(reader)?;
            let input = match &self.coll {
                Some(coll) if !self.pipeline.ignores_input() => {
                    let spec = FindSpec { hint: self.hint.clone(), ..FindSpec::default() };
                    super::find(reader, &self.db, coll, &spec)?
                }
                _ => Vec::new(),
            };
            self.pipeline.clone().with_collation(collation.as_ref())?.execute(input, &ctx)?
        };
        // The writes need the transaction mutably, so the output's own pipelines (`$merge`'s
        // `whenMatched`) read no other collection.
        let ctx = self.context(&NoSource);
        let sink = sink.clone().with_collation(collation.as_ref());
        let (db, coll) = sink.target(&self.db);
        let mut target =
            TxnTarget { txn, db: &db, coll: &coll, bypass_validation: self.bypass_validation };
        output::write(&sink, results, &mut target, &ctx)
    }

    /// The collation the pipeline runs with: the requested one, else the collection's default.
    fn resolve_collation(&self, txn: &dyn Txn) -> Result<Option<CollationRef>> {
        let options = match &self.coll {
            Some(c) => crate::catalog::get_collection(txn, &self.db, c)?.map(|m| m.options.clone()),
            None => None,
        };
        self.collation.resolve(&options.unwrap_or_default())
    }
}

/// The collection `$out` / `$merge` write to, in the aggregate's write transaction.
struct TxnTarget<'a> {
    txn: &'a mut dyn Txn,
    db: &'a str,
    coll: &'a str,
    /// `bypassDocumentValidation` of the aggregate.
    bypass_validation: bool,
}

impl output::Target for TxnTarget<'_> {
    fn documents(&mut self) -> Result<Vec<Document>> {
        super::find(&*self.txn, self.db, self.coll, &FindSpec::default())
    }

    fn insert(&mut self, doc: Document) -> Result<()> {
        super::insert_one(self.txn, self.db, self.coll, &doc, self.bypass_validation).map(|_| ())
    }

    fn replace(&mut self, id: &Bson, doc: Document) -> Result<()> {
        let op = super::UpdateOp {
            filter: doc! {"_id": id.clone()},
            update: super::UpdateDoc::Modifiers(doc),
            bypass_validation: self.bypass_validation,
            ..Default::default()
        };
        super::update(self.txn, self.db, self.coll, &op).map(|_| ())
    }

    fn clear(&mut self) -> Result<()> {
        let op = super::DeleteOp {
            filter: &Document::new(),
            limit_one: false,
            let_vars: None,
            collation: &Requested::CollectionDefault,
            hint: None,
        };
        super::delete(self.txn, self.db, self.coll, &op).map(|_| ())
    }
}

/// Lets `$lookup` and `$unionWith` read other collections in the aggregate's transaction, and
/// `$listLocalSessions` list the sessions (gathered before the read).
struct TxnSource<'a> {
    txn: &'a dyn Txn,
    sessions: Option<&'a [Document]>,
    current_ops: Option<&'a [Document]>,
    host: &'a str,
}

impl Source for TxnSource<'_> {
    fn collection(&self, db: &str, coll: &str) -> Result<Vec<Document>> {
        super::find(self.txn, db, coll, &FindSpec::default())
    }

    fn local_sessions(&self) -> Result<Vec<Document>> {
        Ok(self.sessions.map(<[Document]>::to_vec).unwrap_or_default())
    }

    fn current_ops(&self, _options: &crate::agg::CurrentOp) -> Result<Vec<Document>> {
        Ok(self.current_ops.map(<[Document]>::to_vec).unwrap_or_default())
    }

    fn namespace_stats(&self, db: &str, coll: &str) -> Result<crate::agg::stats::Namespace> {
        super::stats::namespace_stats(self.txn, db, coll)
    }

    fn geo_near_key(&self, db: &str, coll: &str, key: Option<&str>) -> Result<(String, bool)> {
        super::plan::geo_near_key(self.txn, db, coll, key)
    }

    fn host(&self) -> String {
        self.host.to_string()
    }
}
