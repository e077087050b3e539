//! The query language: pure functions on documents, no storage.
//!
//! - [`filter`] parses a filter document into a validated AST ([`Filter`]); every MongoDB parse
//!   error (`unknown operator: $foo`, `$in needs an array`, ...) is raised there, so matching
//!   cannot fail. [`matcher`] evaluates it, with MongoDB's array semantics, and reports the array
//!   position a match went through for the positional operator ([`Filter::matches_with_key`]).
//!   [`expr`] holds what `$expr` and computed projections parse (with [`crate::expr`] evaluating
//!   the general operators) and [`schema`] the `$jsonSchema`
//!   keywords.
//! - [`bounds`] reads a filter for planning: top-level equalities (upsert seeds, point lookups)
//!   and per-field value intervals ([`Filter::bounds`]) that an index scan can use; the matcher
//!   re-checks every fetched document, so bounds only need to be a superset.
//! - [`projection`] implements find's `projection`; its `sort` is [`SortSpec`], which lives in
//!   [`crate::doc::sort`] because `$sortArray` and the aggregation stages sort too.
//!
//! All comparisons go through [`crate::doc::compare::cmp_bson`], MongoDB's total order over
//! BSON values.

pub mod bounds;
pub mod expr;
pub mod filter;
pub mod geo;
pub mod matcher;
pub mod projection;
pub mod schema;
pub mod text;

pub use crate::doc::sort::SortSpec;
pub use filter::{Filter, Pred};
pub use projection::Projection;

#[cfg(test)]
mod tests {
    use crate::doc::golden::{self, Input, error_line};

    use super::Filter;

    fn run_filter_file(file: &str) {
        golden::run(file, |inputs: &[Input]| {
            let mut filter = None;
            let mut let_vars = None;
            let mut out = Vec::new();
            for input in inputs {
                match input.name.as_str() {
                    "filter" => match Filter::parse_with_let(&input.doc(), let_vars.as_ref()) {
                        Ok(f) => filter = Some(f),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "let" => let_vars = Some(input.doc()),
                    "doc" => {
                        let f = filter.as_ref().expect("doc before filter");
                        let (m, key) = f.matches_with_key(&input.doc());
                        assert_eq!(m, f.matches(&input.doc()));
                        // The raw matcher answers as the decoded one wherever it answers.
                        let raw = bson::RawDocumentBuf::try_from(&input.doc()).expect("encode");
                        if let Some(r) = f.matches_raw(&raw) {
                            assert_eq!(r, m, "raw match of {} in {file}", input.value);
                        }
                        out.push(match key {
                            Some(k) => format!("{m} (array position {k})"),
                            None => m.to_string(),
                        });
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }

    /// The raw matcher decides every filter over paths that reach no array, and declines
    /// (`None`) where an array or a whole-document operator is involved.
    #[test]
    fn raw_matches_decide_without_arrays() {
        let cases: [(&str, &str, Option<bool>); 10] = [
            (r#"{"k": {"$gte": 5}}"#, r#"{"_id": 1, "k": 7}"#, Some(true)),
            (r#"{"k": {"$gte": 5}}"#, r#"{"_id": 1, "k": "7"}"#, Some(false)),
            (r#"{"k": null}"#, r#"{"_id": 1}"#, Some(true)),
            (r#"{"a.b": 1}"#, r#"{"a": {"b": 1}}"#, Some(true)),
            (r#"{"a.b": {"$exists": false}}"#, r#"{"a": 5}"#, Some(true)),
            (r#"{"a": {"$ne": 1}, "b": {"$in": [1, 2]}}"#, r#"{"a": 2, "b": 2}"#, Some(true)),
            (r#"{"$or": [{"a": 1}, {"b": 1}]}"#, r#"{"a": 2, "b": 1}"#, Some(true)),
            (r#"{"a": 1}"#, r#"{"a": [1, 2]}"#, None),
            (r#"{"a.b": 1}"#, r#"{"a": [{"b": 1}]}"#, None),
            (r#"{"$expr": {"$eq": ["$a", 1]}}"#, r#"{"a": 1}"#, None),
        ];
        for (filter, doc, want) in cases {
            let parse = |s: &str| -> bson::Document {
                let v: serde_json::Value = serde_json::from_str(s).expect("json");
                match bson::Bson::try_from(v).expect("bson") {
                    bson::Bson::Document(d) => d,
                    other => panic!("not a document: {other}"),
                }
            };
            let f = Filter::parse(&parse(filter)).expect("filter");
            let raw = bson::RawDocumentBuf::try_from(&parse(doc)).expect("encode");
            assert_eq!(f.matches_raw(&raw), want, "{filter} on {doc}");
        }
    }

    #[test]
    fn filter_comparison() {
        run_filter_file("src/query/testdata/filter_comparison.txt");
    }

    #[test]
    fn filter_logical() {
        run_filter_file("src/query/testdata/filter_logical.txt");
    }

    #[test]
    fn filter_element() {
        run_filter_file("src/query/testdata/filter_element.txt");
    }

    #[test]
    fn filter_evaluation() {
        run_filter_file("src/query/testdata/filter_evaluation.txt");
    }

    #[test]
    fn filter_array() {
        run_filter_file("src/query/testdata/filter_array.txt");
    }

    #[test]
    fn filter_schema() {
        run_filter_file("src/query/testdata/filter_schema.txt");
    }
}

#[cfg(test)]
mod projection_sort_tests {
    use bson::Bson;

    use super::{Filter, Projection, SortSpec};
    use crate::doc::fmt::{Style, doc_string_styled, value_string_styled};
    use crate::doc::golden::{self, Input, error_line};

    #[test]
    fn projection() {
        golden::run("src/query/testdata/projection.txt", |inputs: &[Input]| {
            let mut filter = None;
            let mut projection = None;
            let mut out = Vec::new();
            for input in inputs {
                match input.name.as_str() {
                    "filter" => filter = Some(Filter::parse(&input.doc()).expect("test filter")),
                    "projection" => match Projection::parse(&input.doc()) {
                        Ok(p) => projection = Some(p),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "doc" => {
                        let doc = input.doc();
                        let pos = filter.as_ref().and_then(|f| f.matches_with_key(&doc).1);
                        let p = projection.as_ref().expect("doc before projection");
                        if let Some(f) = &filter
                            && let Err(e) = p.check_positional(f)
                        {
                            out.push(error_line(&e));
                            continue;
                        }
                        out.push(match p.apply(&doc, pos) {
                            Ok(d) => doc_string_styled(&d, Style::Typed),
                            Err(e) => error_line(&e),
                        });
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }

    #[test]
    fn sort() {
        golden::run("src/query/testdata/sort.txt", |inputs: &[Input]| {
            let mut spec = None;
            let mut out = Vec::new();
            for input in inputs {
                match input.name.as_str() {
                    "sort" => match SortSpec::parse(&input.doc()) {
                        Ok(s) => spec = Some(s),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "docs" => {
                        let Bson::Array(items) = input.json() else {
                            panic!("docs must be an array")
                        };
                        let mut docs: Vec<_> = items
                            .into_iter()
                            .map(|d| d.as_document().cloned().expect("doc"))
                            .collect();
                        let s = spec.as_ref().expect("sort first");
                        if let Some(e) = docs.iter().find_map(|d| s.check_parallel_arrays(d).err())
                        {
                            out.push(error_line(&e));
                            continue;
                        }
                        s.sort(&mut docs);
                        let ids: Vec<String> = docs
                            .iter()
                            .map(|d| {
                                value_string_styled(
                                    d.get("_id").unwrap_or(&Bson::Null),
                                    Style::Typed,
                                )
                            })
                            .collect();
                        out.push(ids.join(", "));
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }
}

#[cfg(test)]
mod plan_tests {
    use super::Filter;
    use super::bounds::Interval;
    use crate::doc::fmt::{Style, value_string_styled};
    use crate::doc::golden::{self, Input, error_line};

    fn interval(i: &Interval) -> String {
        format!(
            "{}{}, {}{}",
            if i.low.inclusive { "[" } else { "(" },
            value_string_styled(&i.low.value, Style::Typed),
            value_string_styled(&i.high.value, Style::Typed),
            if i.high.inclusive { "]" } else { ")" }
        )
    }

    #[test]
    fn bounds() {
        golden::run("src/query/testdata/bounds.txt", |inputs: &[Input]| {
            let mut filter = None;
            let mut out = Vec::new();
            for input in inputs {
                let f = filter.as_ref();
                match input.name.as_str() {
                    "filter" => match Filter::parse(&input.doc()) {
                        Ok(f) => filter = Some(f),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "bounds" | "multikey" => {
                        let f: &Filter = f.expect("filter first");
                        let b = f.bounds(&input.value, input.name == "multikey");
                        out.push(match b {
                            None => format!("{} {}: none", input.name, input.value),
                            Some(list) if list.is_empty() => {
                                format!("{} {}: empty", input.name, input.value)
                            }
                            Some(list) => format!(
                                "{} {}: {}",
                                input.name,
                                input.value,
                                list.iter().map(interval).collect::<Vec<_>>().join(" U ")
                            ),
                        });
                    }
                    "parsed" => {
                        let f: &Filter = f.expect("filter first");
                        out.push(crate::doc::fmt::doc_string_styled(
                            &f.to_document(),
                            Style::Typed,
                        ));
                        // The normalized form must parse back to the same normalized form.
                        let again = Filter::parse(&f.to_document()).map(|g| g.to_document());
                        assert_eq!(again.as_ref().ok(), Some(&f.to_document()), "round trip");
                    }
                    "equalities" => {
                        let f: &Filter = f.expect("filter first");
                        for (path, v) in f.equalities() {
                            out.push(format!("{path} = {}", value_string_styled(&v, Style::Typed)));
                        }
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }
}

#[cfg(test)]
mod collation_tests {
    use bson::Bson;

    use super::{Filter, SortSpec};
    use crate::collation::Collation;
    use crate::doc::fmt::{Style, value_string_styled};
    use crate::doc::golden::{self, Input, error_line};

    /// Filters and sorts under a collation: `collation:` (first), then `filter:` with `doc:`
    /// lines (match or not), or `sort:` with `docs:` (the `_id`s in sorted order).
    #[test]
    fn collation() {
        golden::run("src/query/testdata/collation.txt", |inputs: &[Input]| {
            let mut collation = None;
            let mut filter = None;
            let mut sort = None;
            let mut out = Vec::new();
            for input in inputs {
                match input.name.as_str() {
                    "collation" => match Collation::parse(&input.doc(), "find") {
                        Ok(c) => collation = c,
                        Err(e) => return vec![error_line(&e)],
                    },
                    "filter" => match Filter::parse(&input.doc()) {
                        Ok(f) => filter = Some(f.with_collation(collation.as_ref())),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "doc" => {
                        let f: &Filter = filter.as_ref().expect("filter first");
                        out.push(f.matches(&input.doc()).to_string());
                    }
                    "sort" => {
                        let s = SortSpec::parse(&input.doc()).expect("test sort");
                        sort = Some(s.with_collation(collation.as_ref()));
                    }
                    "docs" => {
                        let Bson::Array(items) = input.json() else { panic!("docs: an array") };
                        let mut docs: Vec<_> =
                            items.into_iter().filter_map(|d| d.as_document().cloned()).collect();
                        sort.as_ref().expect("sort first").sort(&mut docs);
                        let ids: Vec<String> = docs
                            .iter()
                            .map(|d| {
                                value_string_styled(
                                    d.get("_id").unwrap_or(&Bson::Null),
                                    Style::Typed,
                                )
                            })
                            .collect();
                        out.push(ids.join(", "));
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }
}
