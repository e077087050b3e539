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
        let mut let_vars: Option<Document> = None;
        let mut out = Vec::new();
        for input in inputs {
            match input.name.as_str() {
                "filter" => filter = Some(Filter::parse(&input.doc()).expect("test filter")),
                "update" => update = Some(input.doc()),
                "let" => let_vars = Some(input.doc()),
                "pipeline" => {
                    let Bson::Array(items) = input.json() else {
                        panic!("pipeline must be an array")
                    };
                    let stages: Vec<Document> = items
                        .into_iter()
                        .map(|s| s.as_document().cloned().expect("stage doc"))
                        .collect();
                    match UpdateSpec::parse_pipeline(&stages, let_vars.as_ref()) {
                        Ok(p) => spec = Some(p),
                        Err(e) => return vec![error_line(&e)],
                    }
                }
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
fn update_pipeline() {
    run_update_file("src/update/testdata/pipeline.txt");
}

#[test]
fn update_upsert() {
    run_update_file("src/update/testdata/upsert.txt");
}

/// Random updates on random documents never panic, and a successful update keeps `_id` first
/// and unchanged; random filters never panic either.
#[test]
fn random_updates_do_not_panic() {
    use rand::{Rng, SeedableRng};

    use crate::doc::random;

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let ops = [
        "$set",
        "$unset",
        "$inc",
        "$mul",
        "$min",
        "$max",
        "$push",
        "$addToSet",
        "$pop",
        "$pull",
        "$pullAll",
        "$rename",
        "$currentDate",
        "$bit",
        "$setOnInsert",
    ];
    for _ in 0..3000 {
        let mut doc = random::document(&mut rng, 2);
        doc.insert("_id", 1);
        let op = ops[rng.random_range(0..ops.len())];
        let path = random::path(&mut rng, true);
        let arg = match op {
            "$rename" => Bson::String(random::path(&mut rng, false)),
            "$pop" => Bson::Int32(if rng.random() { 1 } else { -1 }),
            "$bit" => Bson::Document(bson::doc! {"and": rng.random_range(0..8)}),
            _ => random::value(&mut rng, 1),
        };
        let mut fields = Document::new();
        fields.insert(path, arg);
        let mut update = Document::new();
        update.insert(op, fields);
        let Ok(spec) = UpdateSpec::parse(&update, None) else { continue };
        let ctx = UpdateContext { match_position: Some(rng.random_range(0..3)), ..context() };
        let before = doc.clone();
        if spec.apply(&mut doc, &ctx).is_ok() {
            assert_eq!(
                doc.keys().next().map(String::as_str),
                Some("_id"),
                "{before:?} {update:?} -> {doc:?}"
            );
            assert_eq!(doc.get("_id"), Some(&Bson::Int32(1)));
        }

        let mut filter = Document::new();
        let cond = match rng.random_range(0..6) {
            0 => random::value(&mut rng, 1),
            1 => Bson::Document(bson::doc! {"$gt": random::value(&mut rng, 1)}),
            2 => Bson::Document(
                bson::doc! {"$in": [random::value(&mut rng, 1), random::value(&mut rng, 0)]},
            ),
            3 => Bson::Document(bson::doc! {"$elemMatch": {"$lte": random::value(&mut rng, 0)}}),
            4 => Bson::Document(bson::doc! {"$exists": rng.random::<bool>()}),
            _ => Bson::Document(bson::doc! {"$size": rng.random_range(0..3)}),
        };
        filter.insert(random::path(&mut rng, false), cond);
        if let Ok(f) = Filter::parse(&filter) {
            let (m, _) = f.matches_with_key(&before);
            assert_eq!(m, f.matches(&before));
        }
    }
}
