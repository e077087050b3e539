//! Golden tests for stages (the expressions' are in `expr/testdata`, run by `expr::tests`).
//!
//! Stage files (`testdata/stage_*.txt`): each block has `docs:` (an array of input documents), optional
//! `from:` (a document of collections for `$lookup`/`$unionWith`) and `pipeline:`; the output is
//! one line per result document, or the error.

use bson::{Bson, Document};

use super::{Context, Source};
use crate::doc::fmt::{Style, doc_string_styled};
use crate::doc::golden::{self, Input, error_line};
use crate::error::Result;

fn input<'a>(inputs: &'a [Input], name: &str) -> Option<&'a Input> {
    inputs.iter().find(|i| i.name == name)
}

/// Collections given in a test block.
struct TestSource(Document);

impl Source for TestSource {
    fn collection(&self, _db: &str, coll: &str) -> Result<Vec<Document>> {
        Ok(match self.0.get(coll) {
            Some(Bson::Array(items)) => items
                .iter()
                .filter_map(|d| match d {
                    Bson::Document(d) => Some(d.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    }
}

/// An in-memory `$out`/`$merge` target with a unique `_id`.
struct MemTarget(Vec<Document>);

impl super::output::Target for MemTarget {
    fn documents(&mut self) -> Result<Vec<Document>> {
        Ok(self.0.clone())
    }

    fn insert(&mut self, doc: Document) -> Result<()> {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        if self.0.iter().any(|d| d.get("_id").is_some_and(|x| crate::doc::compare::bson_eq(x, &id)))
        {
            return Err(crate::err!(DuplicateKey, "E11000 duplicate key error"));
        }
        self.0.push(doc);
        Ok(())
    }

    fn replace(&mut self, id: &Bson, doc: Document) -> Result<()> {
        for d in &mut self.0 {
            if d.get("_id").is_some_and(|x| crate::doc::compare::bson_eq(x, id)) {
                *d = doc;
                return Ok(());
            }
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        self.0.clear();
        Ok(())
    }
}

fn run_stage_file(file: &str) {
    golden::run(file, |inputs: &[Input]| {
        let docs: Vec<Document> = match input(inputs, "docs").map(Input::json) {
            Some(Bson::Array(items)) => items
                .into_iter()
                .filter_map(|d| match d {
                    Bson::Document(d) => Some(d),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let source = TestSource(input(inputs, "from").map(Input::doc).unwrap_or_default());
        let vars = input(inputs, "let").map(Input::doc).unwrap_or_default();
        let pipeline: Vec<Document> = match input(inputs, "pipeline").map(Input::json) {
            Some(Bson::Array(items)) => items
                .into_iter()
                .filter_map(|d| match d {
                    Bson::Document(d) => Some(d),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let in_transaction = input(inputs, "txn").is_some();
        // `memoryLimit: <bytes>` shrinks every blocking stage's budget; `allowDiskUse: false`
        // makes passing it an error instead of a spill.
        let mut memory_limit = super::MemoryLimit::default();
        if let Some(bytes) = input(inputs, "memoryLimit").and_then(|i| i.value.trim().parse().ok())
        {
            memory_limit.bytes = bytes;
        }
        if let Some(i) = input(inputs, "allowDiskUse") {
            memory_limit.allow_disk_use = i.value.trim() != "false";
        }
        let ctx = Context {
            db: "test".to_string(),
            source: &source,
            vars,
            in_transaction,
            memory_limit,
            collection: "coll".to_string(),
            lookup_result: None,
        };
        let result = super::Pipeline::parse(&pipeline, &ctx.vars).and_then(|p| {
            let p = p.with_collation(None)?;
            let out = p.execute(docs, &ctx)?;
            match p.sink() {
                None => Ok(out),
                Some(sink) => {
                    // Write to an in-memory copy of the target and show it afterwards.
                    let (_, coll) = sink.target("test");
                    let mut target = MemTarget(source.collection("test", &coll)?);
                    let written = super::output::write(sink, out, &mut target, &ctx);
                    let mut shown = target.0;
                    if let Err(e) = written {
                        shown.push(bson::doc! {"error": error_line(&e)});
                    }
                    Ok(shown)
                }
            }
        });
        match result {
            Ok(out) if out.is_empty() => vec!["(no documents)".to_string()],
            Ok(out) => out.iter().map(|d| doc_string_styled(d, Style::Typed)).collect(),
            Err(e) => vec![error_line(&e)],
        }
    });
}

macro_rules! golden_tests {
    ($runner:ident: $($name:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $name() {
                $runner(concat!("src/agg/testdata/", $file));
            }
        )*
    };
}

golden_tests! { run_stage_file:
    stage_match => "stage_match.txt",
    stage_project => "stage_project.txt",
    stage_add_fields => "stage_add_fields.txt",
    stage_group => "stage_group.txt",
    stage_sort_skip_limit => "stage_sort_skip_limit.txt",
    stage_count => "stage_count.txt",
    stage_unwind => "stage_unwind.txt",
    stage_replace_root => "stage_replace_root.txt",
    stage_bucket => "stage_bucket.txt",
    stage_facet => "stage_facet.txt",
    stage_lookup => "stage_lookup.txt",
    stage_graph_lookup => "stage_graph_lookup.txt",
    stage_set_window_fields => "stage_set_window_fields.txt",
    stage_union_with => "stage_union_with.txt",
    stage_misc => "stage_misc.txt",
    stage_out_merge => "stage_out_merge.txt",
    stage_densify => "stage_densify.txt",
    stage_fill => "stage_fill.txt",
}

#[test]
fn sample_returns_a_subset_of_the_requested_size() {
    let docs: Vec<Document> = (0..20).map(|i| bson::doc! {"_id": i}).collect();
    let out = super::run(docs, &[bson::doc! {"$sample": {"size": 5}}]).expect("sample");
    assert_eq!(out.len(), 5);
    let mut ids: Vec<i32> = out.iter().filter_map(|d| d.get_i32("_id").ok()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "sampled documents must be distinct");
}

/// Every blocking stage gives the same result spilled (a 256-byte budget) as in memory, and
/// fails with 292 under the same budget without disk use.
#[test]
fn spilled_blocking_stages_equal_in_memory_ones() {
    let docs: Vec<Document> = (0..300)
        .map(|i| bson::doc! {"_id": i, "k": (i * 7) % 11, "g": i % 3, "s": format!("v{}", (i * 13) % 17)})
        .collect();
    let pipelines: Vec<Vec<Document>> = vec![
        vec![bson::doc! {"$sort": {"k": -1, "s": 1}}],
        vec![
            bson::doc! {"$group": {"_id": {"k": "$k", "g": "$g"}, "n": {"$sum": 1}, "avg": {"$avg": "$_id"},
            "first": {"$first": "$_id"}, "last": {"$last": "$_id"}, "ids": {"$push": "$_id"},
            "set": {"$addToSet": "$s"}, "top": {"$top": {"sortBy": {"s": 1}, "output": "$_id"}},
            "lastN": {"$lastN": {"n": 2, "input": "$_id"}}}},
            bson::doc! {"$sort": {"_id.k": 1, "_id.g": 1}},
        ],
        vec![bson::doc! {"$sortByCount": "$s"}, bson::doc! {"$sort": {"count": -1, "_id": 1}}],
        vec![
            bson::doc! {"$bucket": {"groupBy": "$k", "boundaries": [0, 5, 11], "output": {"ids": {"$push": "$_id"}}}},
        ],
        vec![bson::doc! {"$setWindowFields": {"partitionBy": "$g", "sortBy": {"k": 1},
        "output": {"rank": {"$documentNumber": {}}}}}],
        vec![bson::doc! {"$bucketAuto": {"groupBy": "$s", "buckets": 4,
        "output": {"ids": {"$push": "$_id"}}}}],
        vec![bson::doc! {"$densify": {"field": "k", "partitionByFields": ["g"],
        "range": {"step": 1, "bounds": "full"}}}],
    ];
    for p in pipelines {
        let in_memory = super::run(docs.clone(), &p).expect("in memory");
        let before = super::spill::runs_written();
        let small =
            Context { memory_limit: super::MemoryLimit::new(256, true), ..Context::empty() };
        let spilled = super::run_with(docs.clone(), &p, &small).expect("spilled");
        assert!(super::spill::runs_written() > before, "{p:?} did not spill");
        assert_eq!(spilled, in_memory, "{p:?}");
        let strict =
            Context { memory_limit: super::MemoryLimit::new(256, false), ..Context::empty() };
        let e = super::run_with(docs.clone(), &p, &strict).expect_err("292");
        assert_eq!(e.code, crate::error::Code::QueryExceededMemoryLimitNoDiskUseAllowed, "{p:?}");
    }
}

/// `$group` under a case-insensitive collation forms one group per letter whether it groups in
/// memory or spills, and reports the key found first.
#[test]
fn collated_group_spills_like_it_groups_in_memory() {
    let docs: Vec<Document> = (0..200)
        .map(|i| {
            let letter = ["a", "B", "A", "b", "c"][i % 5];
            bson::doc! {"_id": i as i32, "s": letter}
        })
        .collect();
    let collation = crate::collation::Collation::parse(
        &bson::doc! {"locale": "en", "strength": 2},
        "aggregate",
    )
    .expect("collation")
    .expect("not simple");
    let stages = vec![
        bson::doc! {"$group": {"_id": "$s", "n": {"$sum": 1}}},
        bson::doc! {"$sort": {"_id": 1}},
    ];
    let pipeline = super::Pipeline::parse(&stages, &Document::new())
        .expect("parse")
        .with_collation(Some(&collation))
        .expect("collation");
    let expected = vec![
        bson::doc! {"_id": "a", "n": 80},
        bson::doc! {"_id": "B", "n": 80},
        bson::doc! {"_id": "c", "n": 40},
    ];
    let in_memory = pipeline.execute(docs.clone(), &Context::empty()).expect("in memory");
    assert_eq!(in_memory, expected);
    let before = super::spill::runs_written();
    let small = Context { memory_limit: super::MemoryLimit::new(256, true), ..Context::empty() };
    let spilled = pipeline.execute(docs, &small).expect("spilled");
    assert!(super::spill::runs_written() > before, "did not spill");
    assert_eq!(spilled, expected);
}

/// `$push` and `$addToSet` stop at MongoDB's 100 MiB per group, with its code and messages,
/// whether the group is built in memory or folded from spilled runs.
#[test]
fn push_and_add_to_set_are_bounded_per_group() {
    // 120 documents of 1 MiB: more than 100 MiB in one group.
    let big = "x".repeat(1024 * 1024);
    let docs: Vec<Document> =
        (0..120).map(|i| bson::doc! {"_id": i, "s": format!("{i}{big}")}).collect();
    for (acc, message) in [
        (
            "$push",
            "$push used too much memory and cannot spill to disk. Memory limit: 104857600 bytes",
        ),
        ("$addToSet", "$addToSet used too much memory and cannot spill to disk. Used: "),
    ] {
        let p = vec![bson::doc! {"$group": {"_id": null, "all": {acc: "$s"}}}];
        for ctx in [
            Context::empty(),
            Context { memory_limit: super::MemoryLimit::new(4096, true), ..Context::empty() },
        ] {
            let e = super::run_with(docs.clone(), &p, &ctx).expect_err("past 100 MiB");
            assert_eq!(e.code, crate::error::Code::ExceededMemoryLimit, "{acc}");
            assert!(e.message.starts_with(message), "{acc}: {}", e.message);
        }
    }
    // Under the limit, the spilled fold gives the in-memory result.
    let p = vec![bson::doc! {"$group": {"_id": null, "ids": {"$push": "$_id"}}}];
    let small = Context { memory_limit: super::MemoryLimit::new(4096, true), ..Context::empty() };
    let spilled = super::run_with(docs.clone(), &p, &small).expect("spilled");
    assert_eq!(spilled, super::run(docs, &p).expect("in memory"));
}

/// `$lookup` fails with 4568 past 100 MiB of joined documents, and `$facet` with 4031700 past
/// 100 MiB of output, both before the oversized value is assembled.
#[test]
fn lookup_and_facet_results_are_bounded() {
    let big = "y".repeat(1024 * 1024);
    let foreign: Vec<Document> = (0..110).map(|i| bson::doc! {"_id": i, "s": &big}).collect();
    let e = super::run(foreign.clone(), &[bson::doc! {"$facet": {"a": [{"$match": {}}]}}])
        .expect_err("facet past 100 MiB");
    assert_eq!(e.code_number(), 4031700);
    assert!(e.message.starts_with("document constructed by $facet is "), "{}", e.message);

    struct One(Vec<Document>);
    impl super::Source for One {
        fn collection(&self, _db: &str, _coll: &str) -> crate::error::Result<Vec<Document>> {
            Ok(self.0.clone())
        }
    }
    let source = One(foreign);
    let ctx = Context { source: &source, ..Context::empty() };
    let p = [bson::doc! {"$lookup": {"from": "f", "pipeline": [], "as": "all"}}];
    let e =
        super::run_with(vec![bson::doc! {"_id": 1}], &p, &ctx).expect_err("lookup past 100 MiB");
    assert_eq!(e.code_number(), 4568);
    assert_eq!(
        e.message,
        "Total size of documents in f matching pipeline's $lookup stage exceeds 104857600 bytes"
    );
}

/// Strings built past MongoDB's 64 MB buffer fail with 13548 before they are built.
#[test]
fn strings_are_bounded_by_mongodb_buffer() {
    let doc = bson::doc! {"s": "z".repeat(40 * 1024 * 1024)};
    let e = super::evaluate(&bson::bson!({"$concat": ["$s", "$s"]}), &doc).expect_err("80 MiB");
    assert_eq!(e.code_number(), 13548);
    assert_eq!(e.message, "BufBuilder attempted to grow() to 83886080 bytes, past the 64MB limit.");
    let e = super::evaluate(
        &bson::bson!({"$replaceAll": {"input": "$s", "find": "z", "replacement": "zz"}}),
        &doc,
    )
    .expect_err("80 MiB");
    assert_eq!(e.code_number(), 13548);
}

/// Stages hand their charges on to the pipeline, which releases them when it returns, whether
/// it succeeds or fails: nothing stays charged to the thread afterwards.
#[test]
fn pipelines_release_their_memory_charges() {
    std::thread::spawn(|| {
        let big = "m".repeat(512 * 1024);
        let docs: Vec<Document> =
            (0..40).map(|i| bson::doc! {"_id": i, "g": i % 3, "arr": [1, 2, 3]}).collect();
        let ok = [
            bson::doc! {"$addFields": {"s": {"$concat": [&big, "x"]}}},
            bson::doc! {"$unwind": "$arr"},
            bson::doc! {"$group": {"_id": "$g", "all": {"$push": "$s"}}},
            bson::doc! {"$project": {"n": {"$size": "$all"}, "first": {"$first": "$all"}}},
        ];
        let out = super::run(docs.clone(), &ok).expect("pipeline");
        assert_eq!(out.len(), 3);
        assert_eq!(crate::memory::operation_used(), 0);
        // A failure after stages have built and handed on their output.
        let failing = [
            bson::doc! {"$addFields": {"s": {"$concat": [&big, "x"]}}},
            bson::doc! {"$fill": {"output": {"s": {"value": 1}}}},
            bson::doc! {"$project": {"x": {"$divide": [1, 0]}}},
        ];
        super::run(docs, &failing).expect_err("division by zero");
        assert_eq!(crate::memory::operation_used(), 0);
    })
    .join()
    .expect("thread");
}
