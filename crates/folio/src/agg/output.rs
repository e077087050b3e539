//! `$out` and `$merge`: writing a pipeline's results to a collection.
//!
//! The pipeline layer decides *what* to write; the command layer owns the transaction and
//! implements [`Target`] over it (insert, replace by `_id`, clear). Keeping the decision here
//! means the `$merge` matrix (`whenMatched` × `whenNotMatched`) is tested without storage.
//!
//! `$out` replaces the target's documents with the results. `$merge` looks every result up in
//! the target by its `on` fields (default `_id`) and then merges, replaces, keeps the existing
//! document, fails, or runs an update pipeline (with `$$new` bound to the result); unmatched
//! results are inserted, discarded, or fail the command. With `whenMatched: "fail"` on `_id`, the
//! insert itself reports the DuplicateKey error, with `keyPattern`/`keyValue`, as MongoDB does.

use bson::{Bson, Document};

use super::{Context, Pipeline};
use crate::doc::compare::bson_eq;
use crate::err;
use crate::error::Result;
use crate::expr::{loc, type_name};

/// Where `$out`/`$merge` write: one collection, inside the command's write transaction.
pub trait Target {
    /// The target's current documents.
    fn documents(&mut self) -> Result<Vec<Document>>;
    /// Inserts a document (the collection is created if needed).
    fn insert(&mut self, doc: Document) -> Result<()>;
    /// Replaces the document with this `_id`.
    fn replace(&mut self, id: &Bson, doc: Document) -> Result<()>;
    /// Removes every document (keeping the collection and its indexes).
    fn clear(&mut self) -> Result<()>;
}

/// The final writing stage of a pipeline.
#[derive(Clone, Debug)]
pub enum Sink {
    /// `$out`: database (None: the command's) and collection.
    Out(Option<String>, String),
    /// `$merge`.
    Merge(Box<MergeSpec>),
}

/// When a `$merge` result matches an existing document.
#[derive(Clone, Debug)]
pub enum WhenMatched {
    /// Overwrite the existing document's top-level fields with the result's (default).
    Merge,
    /// Replace the existing document.
    Replace,
    /// Leave the existing document.
    KeepExisting,
    /// Fail the command.
    Fail,
    /// Run an update pipeline on the existing document, `$$new` being the result. The stages
    /// are validated when the `$merge` is parsed and parsed again per document, with the
    /// variables' values.
    Pipeline(Vec<Document>),
}

/// When a `$merge` result matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenNotMatched {
    /// Insert the result (default).
    Insert,
    /// Drop the result.
    Discard,
    /// Fail the command.
    Fail,
}

/// A parsed `$merge`.
#[derive(Clone, Debug)]
pub struct MergeSpec {
    /// Target database (None: the command's).
    pub db: Option<String>,
    /// Target collection.
    pub coll: String,
    /// The fields that identify a document.
    pub on: Vec<String>,
    /// What to do with matches.
    pub when_matched: WhenMatched,
    /// What to do with non-matches.
    pub when_not_matched: WhenNotMatched,
    /// `let` variables for the whenMatched pipeline (default `{new: "$$ROOT"}`).
    pub let_vars: Option<Document>,
    /// The aggregate's collation, which the whenMatched pipeline and its `let` compare under.
    pub collation: Option<crate::collation::CollationRef>,
}

impl Sink {
    /// The sink with `$merge`'s whenMatched pipeline comparing strings under the aggregate's
    /// collation (`None`: simple, unchanged).
    pub fn with_collation(self, collation: Option<&crate::collation::CollationRef>) -> Sink {
        match (self, collation) {
            (Sink::Merge(mut m), Some(c)) => {
                m.collation = Some(c.clone());
                Sink::Merge(m)
            }
            (sink, _) => sink,
        }
    }

    /// The target database and collection (the database defaulting to `db`).
    pub fn target(&self, db: &str) -> (String, String) {
        match self {
            Sink::Out(d, c) => (d.clone().unwrap_or_else(|| db.to_string()), c.clone()),
            Sink::Merge(m) => (m.db.clone().unwrap_or_else(|| db.to_string()), m.coll.clone()),
        }
    }

    /// Refuses targets MongoDB refuses: a `system.*` collection, or any collection of the
    /// internal databases (`admin`, `config`, `local`), whose contents the server itself
    /// relies on. `db` is the command's database.
    pub fn check_target(&self, db: &str) -> Result<()> {
        let (target_db, coll) = self.target(db);
        let internal = matches!(target_db.as_str(), "admin" | "config" | "local");
        match self {
            Sink::Out(..) if coll.starts_with("system.") => {
                Err(loc(17385, format!("Can't $out to special collection: {coll}")))
            }
            Sink::Out(..) if internal => {
                Err(loc(31321, format!("Can't $out to internal database: {target_db}")))
            }
            Sink::Merge(_) if coll.starts_with("system.") => {
                Err(loc(31319, format!("Cannot $merge to special collection: {coll}")))
            }
            Sink::Merge(_) if internal => {
                Err(loc(31320, format!("Cannot $merge to internal database: {target_db}")))
            }
            Sink::Out(..) | Sink::Merge(_) => Ok(()),
        }
    }
}

/// Parses `$out`'s argument: `"coll"` or `{db, coll}`.
pub fn parse_out(arg: &Bson) -> Result<Sink> {
    match arg {
        Bson::String(c) => Ok(Sink::Out(None, c.clone())),
        Bson::Document(d) => {
            let db = match d.get("db") {
                Some(Bson::String(s)) => Some(s.clone()),
                None => None,
                Some(other) => {
                    return Err(err!(
                        TypeMismatch,
                        "BSON field '$out.db' is the wrong type '{}', expected type 'string'",
                        type_name(other)
                    ));
                }
            };
            match d.get("coll") {
                Some(Bson::String(c)) => Ok(Sink::Out(db, c.clone())),
                _ => Err(loc(40414, "BSON field '$out.coll' is missing but a required field")),
            }
        }
        other => Err(loc(
            6001700,
            format!(
                "$out stage requires a string or object argument, but found {}",
                type_name(other)
            ),
        )),
    }
}

/// Parses `$merge`'s argument.
pub fn parse_merge(arg: &Bson) -> Result<Sink> {
    let spec = match arg {
        Bson::String(c) => {
            return Ok(Sink::Merge(Box::new(MergeSpec {
                db: None,
                coll: c.clone(),
                on: vec!["_id".to_string()],
                when_matched: WhenMatched::Merge,
                when_not_matched: WhenNotMatched::Insert,
                let_vars: None,
                collation: None,
            })));
        }
        Bson::Document(d) => d,
        other => {
            return Err(loc(
                51182,
                format!(
                    "$merge only supports a string or object argument, not {}",
                    type_name(other)
                ),
            ));
        }
    };
    let (db, coll) = match spec.get("into") {
        Some(Bson::String(c)) => (None, c.clone()),
        Some(Bson::Document(d)) => match (d.get("db"), d.get("coll")) {
            (db, Some(Bson::String(c))) => {
                (db.and_then(|v| v.as_str().map(str::to_string)), c.clone())
            }
            _ => return Err(loc(40414, "BSON field 'coll' is missing but a required field")),
        },
        Some(other) => {
            return Err(loc(
                51178,
                format!(
                    "$merge 'into' field  must be either a string or an object, but found {}",
                    type_name(other)
                ),
            ));
        }
        None => return Err(loc(40414, "BSON field '$merge.into' is missing but a required field")),
    };
    let on = match spec.get("on") {
        None => vec!["_id".to_string()],
        Some(Bson::String(s)) => vec![s.clone()],
        Some(Bson::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(loc(51134, "$merge 'on' array elements must be strings")),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(loc(
                51186,
                "$merge 'on' field  must be either a string or an array of strings",
            ));
        }
    };
    let let_vars = match spec.get("let") {
        Some(Bson::Document(d)) => Some(d.clone()),
        None => None,
        Some(_) => {
            return Err(err!(
                TypeMismatch,
                "BSON field '$merge.let' is the wrong type, expected type 'object'"
            ));
        }
    };
    let when_matched = match spec.get("whenMatched") {
        None => WhenMatched::Merge,
        Some(Bson::String(s)) => match s.as_str() {
            "merge" => WhenMatched::Merge,
            "replace" => WhenMatched::Replace,
            "keepExisting" => WhenMatched::KeepExisting,
            "fail" => WhenMatched::Fail,
            other => {
                return Err(err!(
                    BadValue,
                    "Enumeration value '{other}' for field 'whenMatched' is not a valid value."
                ));
            }
        },
        Some(Bson::Array(stages)) => {
            let docs: Vec<Document> = stages
                .iter()
                .map(|s| match s {
                    Bson::Document(d) => Ok(d.clone()),
                    _ => Err(loc(51191, "$merge 'whenMatched' pipeline stages must be objects")),
                })
                .collect::<Result<_>>()?;
            for s in &docs {
                let n = s.keys().next().map_or("", String::as_str);
                if !matches!(
                    n,
                    "$addFields" | "$set" | "$project" | "$unset" | "$replaceRoot" | "$replaceWith"
                ) {
                    return Err(err!(
                        InvalidOptions,
                        "{n} is not allowed to be used within an update"
                    ));
                }
            }
            let mut names = Document::new();
            match &let_vars {
                Some(v) => {
                    for k in v.keys() {
                        names.insert(k.clone(), Bson::Null);
                    }
                }
                None => {
                    names.insert("new", Bson::Null);
                }
            }
            Pipeline::parse(&docs, &names)?;
            WhenMatched::Pipeline(docs)
        }
        Some(other) => {
            return Err(err!(
                TypeMismatch,
                "BSON field '$merge.whenMatched' is the wrong type '{}', expected types '[string, array]'",
                type_name(other)
            ));
        }
    };
    let when_not_matched = match spec.get("whenNotMatched") {
        None => WhenNotMatched::Insert,
        Some(Bson::String(s)) => match s.as_str() {
            "insert" => WhenNotMatched::Insert,
            "discard" => WhenNotMatched::Discard,
            "fail" => WhenNotMatched::Fail,
            other => {
                return Err(err!(
                    BadValue,
                    "Enumeration value '{other}' for field 'whenNotMatched' is not a valid value."
                ));
            }
        },
        Some(other) => {
            return Err(err!(
                TypeMismatch,
                "BSON field '$merge.whenNotMatched' is the wrong type '{}', expected type 'string'",
                type_name(other)
            ));
        }
    };
    for k in spec.keys() {
        if !matches!(k.as_str(), "into" | "on" | "let" | "whenMatched" | "whenNotMatched") {
            return Err(crate::Error::unknown_field(&format!("$merge.{k}")));
        }
    }
    Ok(Sink::Merge(Box::new(MergeSpec {
        db,
        coll,
        on,
        when_matched,
        when_not_matched,
        let_vars,
        collation: None,
    })))
}

/// Makes sure a result has an `_id` (generated if missing), first.
fn with_id(doc: Document) -> Document {
    if doc.contains_key("_id") {
        return doc;
    }
    let mut out = Document::new();
    out.insert("_id", bson::oid::ObjectId::new());
    out.extend(doc);
    out
}

/// Writes results to the target.
pub fn write(
    sink: &Sink,
    results: Vec<Document>,
    target: &mut dyn Target,
    ctx: &Context,
) -> Result<()> {
    match sink {
        Sink::Out(..) => {
            target.clear()?;
            for d in results {
                target.insert(with_id(d))?;
            }
            Ok(())
        }
        Sink::Merge(m) => merge(m, results, target, ctx),
    }
}

/// The values of the `on` fields of a result; each must be present and not null or an array.
fn on_key(doc: &Document, on: &[String]) -> Result<Vec<Bson>> {
    on.iter()
        .map(|f| match crate::doc::path::get_path(doc, f) {
            None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Array(_)) => Err(loc(
                51132,
                "$merge write error: 'on' field cannot be missing, null, undefined or an array",
            )),
            Some(v) => Ok(v.clone()),
        })
        .collect()
}

fn merge(
    m: &MergeSpec,
    results: Vec<Document>,
    target: &mut dyn Target,
    ctx: &Context,
) -> Result<()> {
    let existing = target.documents()?;
    let on_id = m.on.len() == 1 && m.on[0] == "_id";
    for result in results {
        let result = if on_id { with_id(result) } else { result };
        let key = on_key(&result, &m.on)?;
        let found = existing.iter().find(|e| {
            m.on.iter()
                .zip(&key)
                .all(|(f, k)| crate::doc::path::get_path(e, f).is_some_and(|v| bson_eq(v, k)))
        });
        match found {
            None => match m.when_not_matched {
                WhenNotMatched::Insert => target.insert(with_id(result))?,
                WhenNotMatched::Discard => {}
                WhenNotMatched::Fail => {
                    return Err(loc(
                        13113,
                        "$merge could not find a matching document in the target collection for at least one document in the source collection",
                    ));
                }
            },
            Some(old) => {
                let id = old.get("_id").cloned().unwrap_or(Bson::Null);
                match &m.when_matched {
                    WhenMatched::KeepExisting => {}
                    // Inserting reports the DuplicateKey error with its key pattern and value.
                    WhenMatched::Fail => target.insert(result)?,
                    WhenMatched::Replace => {
                        let mut new = Document::new();
                        new.insert("_id", id.clone());
                        new.extend(result.into_iter().filter(|(k, _)| k != "_id"));
                        target.replace(&id, new)?;
                    }
                    WhenMatched::Merge => {
                        let mut new = old.clone();
                        for (k, v) in result {
                            if k != "_id" {
                                new.insert(k, v);
                            }
                        }
                        target.replace(&id, new)?;
                    }
                    WhenMatched::Pipeline(p) => {
                        let vars = match &m.let_vars {
                            None => bson::doc! {"new": result.clone()},
                            Some(lv) => {
                                let mut out = Document::new();
                                let mut v = crate::expr::Vars::new(&result);
                                for (name, e) in lv {
                                    let mut e = crate::expr::Expression::parse(e)?;
                                    if let Some(c) = &m.collation {
                                        e = e.with_collation(c);
                                    }
                                    out.insert(name.clone(), e.eval(&mut v)?.unwrap_or(Bson::Null));
                                }
                                out
                            }
                        };
                        let sub = Context {
                            db: ctx.db.clone(),
                            source: ctx.source,
                            vars,
                            in_transaction: ctx.in_transaction,
                            memory_limit: ctx.memory_limit,
                            collection: ctx.collection.clone(),
                            lookup_result: None,
                        };
                        let mut out = Pipeline::parse(p, &sub.vars)?
                            .with_collation(m.collation.as_ref())?
                            .execute(vec![old.clone()], &sub)?;
                        let mut new = out.pop().unwrap_or_default();
                        if !new.contains_key("_id") {
                            new = with_id_value(new, id.clone());
                        }
                        target.replace(&id, new)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn with_id_value(doc: Document, id: Bson) -> Document {
    let mut out = Document::new();
    out.insert("_id", id);
    out.extend(doc);
    out
}
