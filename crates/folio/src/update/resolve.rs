//! Resolving positional update paths (`a.$.b`, `a.$[].b`, `a.$[x].b`) into concrete paths.

use bson::{Bson, Document};

use super::UpdateContext;
use crate::bail;
use crate::doc::fmt::value_string;
use crate::doc::path::child;
use crate::error::Result;
use crate::query::filter::Filter;

/// The concrete paths (as components) that `path` names in `doc`.
pub(super) fn resolve(
    doc: &Document,
    path: &str,
    ctx: &UpdateContext,
    filters: &[(String, Filter)],
) -> Result<Vec<Vec<String>>> {
    let parts: Vec<&str> = path.split('.').collect();
    if !parts.iter().any(|p| p.starts_with('$')) {
        return Ok(vec![parts.iter().map(|p| p.to_string()).collect()]);
    }
    let mut out = Vec::new();
    let root = Bson::Document(doc.clone());
    expand(Some(&root), &parts, Vec::new(), ctx, filters, &mut out)?;
    Ok(out)
}

fn expand(
    cur: Option<&Bson>,
    rest: &[&str],
    prefix: Vec<String>,
    ctx: &UpdateContext,
    filters: &[(String, Filter)],
    out: &mut Vec<Vec<String>>,
) -> Result<()> {
    let Some((part, rest)) = rest.split_first() else {
        out.push(prefix);
        return Ok(());
    };
    let step = |idx: String, prefix: &Vec<String>, out: &mut Vec<Vec<String>>| -> Result<()> {
        let next = cur.and_then(|c| child(c, &idx));
        let mut p = prefix.clone();
        p.push(idx);
        expand(next, rest, p, ctx, filters, out)
    };
    if *part == "$" {
        let Some(i) = ctx.match_position else {
            bail!(
                BadValue,
                "The positional operator did not find the match needed from the query."
            );
        };
        return step(i.to_string(), &prefix, out);
    }
    if let Some(id) = part.strip_prefix("$[").and_then(|p| p.strip_suffix(']')) {
        let shown = prefix.join(".");
        let items = match cur {
            None => bail!(
                BadValue,
                "The path '{shown}' must exist in the document in order to apply array updates."
            ),
            Some(Bson::Array(items)) => items,
            Some(other) => bail!(
                BadValue,
                "Cannot apply array updates to non-array element {}: {}",
                prefix.last().map(String::as_str).unwrap_or(""),
                value_string(other)
            ),
        };
        let filter = if id.is_empty() { None } else { filters.iter().find(|(x, _)| x == id) };
        for (i, e) in items.iter().enumerate() {
            if let Some((name, f)) = filter {
                let mut wrapped = Document::new();
                wrapped.insert(name.clone(), e.clone());
                if !f.matches(&wrapped) {
                    continue;
                }
            }
            step(i.to_string(), &prefix, out)?;
        }
        return Ok(());
    }
    step(part.to_string(), &prefix, out)
}
