//! Aggregation: the first document holds a pipeline (`{pipeline: [...]}`), the rest are the
//! input documents. Parsing may refuse the pipeline; a parsed pipeline must run to a result or
//! an error without panicking. There is no other collection: `$lookup` and friends fail.

#![no_main]

use bson::{Bson, Document};
use folio::{Pipeline, PipelineContext as Context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut docs = folio_fuzz::documents(data).into_iter();
    let Some(first) = docs.next() else { return };
    let Some(Bson::Array(stages)) = first.get("pipeline") else { return };
    let stages: Vec<Document> = stages.iter().filter_map(|s| s.as_document().cloned()).collect();
    let Ok(pipeline) = Pipeline::parse(&stages, &Document::new()) else { return };
    // `$out`/`$merge` only name a target here; writing is the command layer's.
    if pipeline.sink().is_some() {
        return;
    }
    let _ = pipeline.execute(docs.collect(), &Context::empty());
});
