//! Golden tests for updates: each block gives an update (and optionally a filter for the
//! positional operator, array filters), then documents to update or an upsert.

use bson::{Bson, Document};

use super::{UpdateContext, UpdateSpec};
use crate::doc::fmt::{Style, doc_string_styled};
use crate::doc::golden::{self, Input, error_line};
use crate::query::filter::Filter;

fn context() -> UpdateContext {
    UpdateContext {
        match_position: None,
        is_upsert_insert: false,
        now: bson::DateTime::from_millis(1_700_000_000_000),
        now_timestamp: bson::Timestamp { time: 1_700_000_000, increment: 1 },
    }
}

fn run_update_file(file: &str) {
    golden::run(file, |inputs: &[Input]| {
        let mut filter = None;
        let mut update = None;
        let mut array_filters: Option<Vec<Document>> = None;
        let mut spec: Option<UpdateSpec> = None;
        let mut out = Vec::new();
        for input in inputs {
            match input.name.as_str() {
                "filter" => filter = Some(Filter::parse(&input.doc()).expect("test filter")),
                "update" => update = Some(input.doc()),
                "arrayFilters" => {
                    let Bson::Array(items) = input.json() else {
                        panic!("arrayFilters must be an array")
                    };
                    array_filters = Some(
                        items
                            .into_iter()
                            .map(|f| f.as_document().cloned().expect("filter doc"))
                            .collect(),
                    );
                }
                "doc" | "upsert" => {
                    if spec.is_none() {
                        let u = update.as_ref().expect("update first");
                        match UpdateSpec::parse(u, array_filters.as_deref()) {
                            Ok(s) => spec = Some(s),
                            Err(e) => return vec![error_line(&e)],
                        }
                    }
                    let spec = spec.as_ref().expect("parsed");
                    if input.name == "upsert" {
                        let f = filter.as_ref().expect("upsert needs a filter");
                        out.push(match spec.upsert_document(f, &context()) {
                            Ok(d) => doc_string_styled(&d, Style::Typed),
                            Err(e) => error_line(&e),
                        });
                        continue;
                    }
                    let mut doc = input.doc();
                    let mut ctx = context();
                    if let Some(f) = &filter {
                        let (m, pos) = f.matches_with_key(&doc);
                        if !m {
                            out.push("no match".to_string());
                            continue;
                        }
                        ctx.match_position = pos;
                    }
                    out.push(match spec.apply(&mut doc, &ctx) {
                        Ok(modified) => format!(
                            "{}{}",
                            doc_string_styled(&doc, Style::Typed),
                            if modified { "" } else { " (not modified)" }
                        ),
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
fn update_fields() {
    run_update_file("src/update/testdata/fields.txt");
}

#[test]
fn update_arrays() {
    run_update_file("src/update/testdata/arrays.txt");
}

#[test]
fn update_positional() {
    run_update_file("src/update/testdata/positional.txt");
}

#[test]
fn update_validation() {
    run_update_file("src/update/testdata/validation.txt");
}

#[test]
fn update_upsert() {
    run_update_file("src/update/testdata/upsert.txt");
}
