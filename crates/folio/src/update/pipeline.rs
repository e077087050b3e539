//! Update pipelines: `update: [{$set: ...}, {$unset: ...}, ...]`.
//!
//! An update given as an array runs aggregation stages over the document: `$set`/`$addFields`,
//! `$unset`, `$project`, `$replaceRoot`/`$replaceWith`. Values are aggregation expressions,
//! evaluated by [`crate::query::expr`] (which hands every operator it does not represent itself
//! to the aggregation evaluator); expression errors, such as `$add` of a string, fail the update. Unlike operator updates, `$set` here follows aggregation semantics: a dotted
//! path through an array sets the field in every document element, and an embedded document
//! spec `{a: {b: 1}}` merges into `a` like `{"a.b": 1}`.
//!
//! The result keeps the original `_id`: a stage that drops it (such as `$replaceRoot`) gets it
//! back, and one that changes it is an ImmutableField error.

use bson::{Bson, Document};

use super::{UpdateSpec, id_first, identical};
use crate::bail;
use crate::doc::fmt::{doc_string, value_string};
use crate::error::Result;
use crate::query::expr::{Expr, substitute_in_expr};
use crate::query::projection::Projection;

/// A parsed update pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

#[derive(Clone, Debug)]
enum Stage {
    /// `$set` / `$addFields`: `(dotted path, value)` in order.
    Set(Vec<(String, Expr)>),
    /// `$project` and `$unset`.
    Project(Projection),
    /// `$replaceRoot` / `$replaceWith`.
    ReplaceWith(Expr),
}

impl UpdateSpec {
    /// Parses an update pipeline, with the command's `let` variables if any.
    pub fn parse_pipeline(stages: &[Document], let_vars: Option<&Document>) -> Result<UpdateSpec> {
        let mut out = Vec::with_capacity(stages.len());
        for stage in stages {
            let stage = match let_vars {
                Some(vars) => match substitute_in_expr(&Bson::Document(stage.clone()), vars) {
                    Bson::Document(d) => d,
                    _ => stage.clone(),
                },
                None => stage.clone(),
            };
            out.push(parse_stage(&stage)?);
        }
        Ok(UpdateSpec::Pipeline(Pipeline { stages: out }))
    }
}

fn parse_stage(stage: &Document) -> Result<Stage> {
    if stage.len() != 1 {
        bail!(
            Location40323,
            "A pipeline stage specification object must contain exactly one field."
        );
    }
    let Some((name, arg)) = stage.iter().next() else {
        bail!(
            Location40323,
            "A pipeline stage specification object must contain exactly one field."
        );
    };
    match name.as_str() {
        "$set" | "$addFields" => {
            let Bson::Document(spec) = arg else {
                bail!(
                    Location40272,
                    "{name} specification stage must be an object, got {}",
                    value_string(arg)
                );
            };
            let mut fields = Vec::new();
            flatten_set(spec, "", &mut fields)?;
            Ok(Stage::Set(fields))
        }
        "$unset" => {
            let paths: Vec<&str> = match arg {
                Bson::String(p) => vec![p.as_str()],
                Bson::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|x| match x {
                        Bson::String(p) => Ok(p.as_str()),
                        _ => bail!(Location31120, "$unset specification must be a string or an array containing only string values"),
                    })
                    .collect::<Result<_>>()?,
                _ => bail!(Location31002, "$unset specification must be a string or an array with at least one field"),
            };
            let mut spec = Document::new();
            for p in paths {
                spec.insert(p, 0);
            }
            Ok(Stage::Project(Projection::parse(&spec)?))
        }
        "$project" => match arg {
            Bson::Document(spec) => {
                if spec.is_empty() {
                    bail!(Location51272, "projection specification must have at least one field");
                }
                Ok(Stage::Project(Projection::parse(spec)?))
            }
            _ => bail!(Location15969, "$project specification must be an object"),
        },
        "$replaceRoot" => {
            let Bson::Document(spec) = arg else {
                bail!(Location40228, "$replaceRoot specification must be an object");
            };
            match spec.get("newRoot") {
                Some(root) if spec.len() == 1 => Ok(Stage::ReplaceWith(Expr::parse(root)?)),
                _ => bail!(Location40231, "no newRoot specified for the $replaceRoot stage"),
            }
        }
        "$replaceWith" => Ok(Stage::ReplaceWith(Expr::parse(arg)?)),
        "$match" | "$group" | "$sort" | "$limit" | "$skip" | "$lookup" | "$unwind" | "$out"
        | "$merge" | "$facet" | "$count" | "$sample" => {
            bail!(InvalidOptions, "{name} is not allowed to be used within an update")
        }
        other => bail!(Location40324, "Unrecognized pipeline stage name: '{other}'"),
    }
}

/// Flattens `{a: {b: 1}, "c.d": "$x"}` into `[("a.b", 1), ("c.d", "$x")]`.
fn flatten_set(spec: &Document, prefix: &str, out: &mut Vec<(String, Expr)>) -> Result<()> {
    for (k, v) in spec {
        if k.starts_with('$') {
            bail!(
                Location16410,
                "Invalid $set :: caused by :: FieldPath field names may not start with '$'. Consider using $getField or $setField."
            );
        }
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Bson::Document(d)
                if !d.is_empty() && !d.keys().next().is_some_and(|k| k.starts_with('$')) =>
            {
                flatten_set(d, &path, out)?
            }
            other => out.push((path, Expr::parse(other)?)),
        }
    }
    Ok(())
}

impl Pipeline {
    /// The pipeline with its expressions comparing strings under `c`.
    pub(super) fn with_collation(self, c: &crate::collation::CollationRef) -> Pipeline {
        let stages = self
            .stages
            .into_iter()
            .map(|st| match st {
                Stage::Set(fields) => {
                    Stage::Set(fields.into_iter().map(|(k, e)| (k, e.with_collation(c))).collect())
                }
                Stage::Project(p) => Stage::Project(p.with_collation(Some(c))),
                Stage::ReplaceWith(e) => Stage::ReplaceWith(e.with_collation(c)),
            })
            .collect();
        Pipeline { stages }
    }

    /// Runs the stages on `doc`; returns whether it changed.
    pub(super) fn apply(&self, doc: &mut Document) -> Result<bool> {
        let before = doc.clone();
        let original_id = doc.get("_id").cloned();
        let mut cur = doc.clone();
        for stage in &self.stages {
            cur = match stage {
                Stage::Set(fields) => {
                    let input = cur.clone();
                    for (path, e) in fields {
                        let parts: Vec<&str> = path.split('.').collect();
                        match e.try_eval(&input)? {
                            Some(v) => set_agg(&mut cur, &parts, v),
                            None => remove_agg(&mut cur, &parts),
                        }
                    }
                    cur
                }
                Stage::Project(p) => p.apply(&cur, None)?,
                Stage::ReplaceWith(e) => match e.try_eval(&cur)? {
                    Some(Bson::Document(d)) => d,
                    other => {
                        let v = other.unwrap_or(Bson::Null);
                        bail!(
                            Location40228,
                            "'replacement document' must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                            value_string(&v),
                            super::parse::type_name(&v),
                            doc_string(&cur)
                        );
                    }
                },
            };
        }
        match (&original_id, cur.get("_id")) {
            (Some(id), None) => {
                cur.insert("_id", id.clone());
            }
            (Some(id), Some(now)) if !identical(id, now) => {
                bail!(
                    ImmutableField,
                    "Performing an update on the path '_id' would modify the immutable field '_id'"
                )
            }
            _ => {}
        }
        id_first(&mut cur);
        *doc = cur;
        Ok(!identical(&Bson::Document(before), &Bson::Document(doc.clone())))
    }
}

/// Aggregation-style set: through arrays into every document element; a scalar or missing
/// value on the way is replaced by a document.
fn set_agg(doc: &mut Document, parts: &[&str], value: Bson) {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        doc.insert(*first, value);
        return;
    }
    match doc.get_mut(*first) {
        Some(Bson::Document(d)) => set_agg(d, rest, value),
        Some(Bson::Array(items)) => {
            for e in items.iter_mut() {
                if let Bson::Document(d) = e {
                    set_agg(d, rest, value.clone());
                }
            }
        }
        _ => {
            let mut d = Document::new();
            set_agg(&mut d, rest, value);
            doc.insert(*first, d);
        }
    }
}

/// Aggregation-style removal (for `$$REMOVE` and missing values).
fn remove_agg(doc: &mut Document, parts: &[&str]) {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        doc.remove(*first);
        return;
    }
    match doc.get_mut(*first) {
        Some(Bson::Document(d)) => remove_agg(d, rest),
        Some(Bson::Array(items)) => {
            for e in items.iter_mut() {
                if let Bson::Document(d) = e {
                    remove_agg(d, rest);
                }
            }
        }
        _ => {}
    }
}
