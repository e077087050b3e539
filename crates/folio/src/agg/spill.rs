//! Memory budgets for blocking stages, and spilling to disk past them.
//!
//! A blocking stage (`$sort`, `$group` and the stages built on them: `$sortByCount`,
//! `$bucket`, the sort of `$setWindowFields`) must see all of its input before it can emit
//! anything, so its working set grows with the input. MongoDB caps each such stage at 100 MiB
//! ([`MemoryLimit`]) and, past the cap, either fails with QueryExceededMemoryLimitNoDiskUseAllowed
//! (292) when the command said `allowDiskUse: false`, or spills to temporary files when disk use
//! is allowed (the default since MongoDB 6.0). Folio does the same.
//!
//! **Sorting** ([`Sorter`]) is a classic external merge sort. Documents are buffered until the
//! buffer's estimated size passes the budget; the buffer is then sorted and written as one *run*
//! to an anonymous temporary file (the OS deletes it when it is closed, even after a crash),
//! each document as its BSON bytes. At the end the runs (and the last, in-memory buffer) are
//! merged through a binary heap of their current heads. Runs hold consecutive stretches of the
//! input in order, and ties between heads go to the earlier run, so the result is exactly a
//! stable sort: equal keys keep their input order, the same as the in-memory path. To bound the
//! number of open files, every [`MAX_RUNS`] runs are merged into one before spilling goes on.
//!
//! **Grouping** ([`group`]) first builds the group table in memory, counting the size of its
//! keys and of the values accumulators keep (`$push`, `$addToSet`, `$firstN`, ...). Past the
//! budget it starts over in external mode: every `(key, document)` pair goes through a
//! [`Sorter`] ordered by the key, and the sorted stream is folded one group at a time, so only
//! one group's accumulators are in memory. Because the sort is stable, `$first`/`$last` and
//! the order of `$push` are as in memory. In-memory groups come out in order of first
//! appearance, spilled ones in key order; MongoDB promises no order for `$group`.
//!
//! The budget is an estimate: the BSON size of the documents (see [`approx_doc_size`]) plus a
//! fixed overhead per document, not a measurement of the allocator. Since the pipeline passes
//! whole vectors between stages, spilling bounds the extra memory a blocking stage needs on top
//! of its input, which it consumes as it goes, rather than the whole pipeline's footprint.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

use bson::{Bson, Document};

use super::group::{Acc, AccSpec, fold_doc, group_by_bounded};
use crate::doc::compare::cmp_bson;
use crate::error::{Error, Result};
use crate::expr::Vars;
use crate::{bail, err};

/// MongoDB's per-stage memory limit for blocking stages (100 MiB).
pub const DEFAULT_MEMORY_LIMIT: usize = 100 * 1024 * 1024;

/// How many runs may be open at once before they are merged into one.
pub const MAX_RUNS: usize = 64;

/// The estimated cost of holding one document, besides its BSON size (the `Document` itself,
/// its index entry, the vector slot).
const PER_DOC_OVERHEAD: usize = 64;

/// The memory budget of each blocking stage and whether it may spill past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The budget in bytes (estimated, see [`approx_doc_size`]).
    pub bytes: usize,
    /// Whether a stage past its budget spills to disk (`allowDiskUse`) or fails with 292.
    pub allow_disk_use: bool,
}

impl Default for MemoryLimit {
    /// MongoDB 8.0's defaults: 100 MiB per stage, disk use allowed.
    fn default() -> MemoryLimit {
        MemoryLimit { bytes: DEFAULT_MEMORY_LIMIT, allow_disk_use: true }
    }
}

impl MemoryLimit {
    /// The default budget with the command's `allowDiskUse` (allowed unless it is `false`).
    pub fn from_command(cmd: &Document) -> MemoryLimit {
        let allow_disk_use = !matches!(cmd.get("allowDiskUse"), Some(Bson::Boolean(false)));
        MemoryLimit { allow_disk_use, ..MemoryLimit::default() }
    }

    /// A budget of `bytes`, with or without disk use (tests use a few KB to force spilling).
    pub fn new(bytes: usize, allow_disk_use: bool) -> MemoryLimit {
        MemoryLimit { bytes, allow_disk_use }
    }

    /// The error a stage reports past its budget when it may not spill: `$sort` (and the
    /// sorts inside other stages) speaks of external sorting, the others of their stage name.
    pub fn exceeded(&self, stage: &str) -> Error {
        if stage == "$sort" {
            return err!(
                QueryExceededMemoryLimitNoDiskUseAllowed,
                "Sort exceeded memory limit of {} bytes, but did not opt in to external sorting.",
                self.bytes
            );
        }
        err!(
            QueryExceededMemoryLimitNoDiskUseAllowed,
            "Exceeded memory limit for {stage}, but didn't allow external sort. Pass allowDiskUse:true to opt in."
        )
    }
}

/// The estimated in-memory size of a document: its BSON size, computed without encoding it.
pub fn approx_doc_size(d: &Document) -> usize {
    5 + d.iter().map(|(k, v)| k.len() + 2 + approx_size(v)).sum::<usize>()
}

/// The estimated size of a value (its BSON size without the element header).
pub fn approx_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => approx_doc_size(d),
        Bson::Array(items) => 5 + items.iter().map(|x| 4 + approx_size(x)).sum::<usize>(),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 5 + s.len(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        Bson::RegularExpression(r) => 2 + r.pattern.len() + r.options.len(),
        Bson::JavaScriptCodeWithScope(c) => 14 + c.code.len() + approx_doc_size(&c.scope),
        Bson::Decimal128(_) => 16,
        Bson::ObjectId(_) => 12,
        Bson::DbPointer(_) => 30,
        Bson::Int32(_) => 4,
        Bson::Boolean(_) => 1,
        Bson::Int64(_) | Bson::Double(_) | Bson::DateTime(_) | Bson::Timestamp(_) => 8,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
    }
}

/// Sorts documents within a stage's budget: in memory when they fit, otherwise through a
/// [`Sorter`] (or error 292 without disk use). Stable, as `sort_by` is.
pub fn sort<F>(
    docs: Vec<Document>,
    cmp: F,
    limit: MemoryLimit,
    stage: &str,
) -> Result<Vec<Document>>
where
    F: Fn(&Document, &Document) -> Ordering,
{
    let mut used = 0usize;
    let fits = docs.iter().all(|d| {
        used = used.saturating_add(approx_doc_size(d) + PER_DOC_OVERHEAD);
        used <= limit.bytes
    });
    if fits {
        let mut docs = docs;
        docs.sort_by(|a, b| cmp(a, b));
        return Ok(docs);
    }
    if !limit.allow_disk_use {
        return Err(limit.exceeded(stage));
    }
    let mut sorter = Sorter::new(cmp, limit, stage);
    for d in docs {
        sorter.push(d)?;
    }
    sorter.finish()?.collect()
}

/// Groups documents within a stage's budget (see the module documentation): `(key, values)`
/// per group, the values in the order of `accs`. Keys are told apart by `identity` of the key
/// (the key itself, or its collation key); a group reports the first key found.
pub fn group<K>(
    docs: Vec<Document>,
    key: K,
    identity: &dyn Fn(&Bson) -> Bson,
    accs: &[AccSpec],
    vars: &Document,
    limit: MemoryLimit,
    stage: &str,
) -> Result<Vec<(Bson, Vec<Bson>)>>
where
    K: Fn(&mut Vars) -> Result<Bson>,
{
    if let Some(groups) = group_by_bounded(&docs, &key, accs, vars, limit.bytes, identity)? {
        return Ok(groups);
    }
    if !limit.allow_disk_use {
        return Err(limit.exceeded(stage));
    }
    // External mode: sort (identity, key, document) triples by identity (stably, so each run
    // starts with the key found first), then fold each run of equal identities.
    let by_key = |a: &Document, b: &Document| {
        cmp_bson(a.get("i").unwrap_or(&Bson::Null), b.get("i").unwrap_or(&Bson::Null))
    };
    let mut sorter = Sorter::new(by_key, limit, stage);
    for d in docs {
        let k = key(&mut Vars::with_let(&d, vars))?;
        sorter.push(bson::doc! {"i": identity(&k), "k": k, "d": d})?;
    }
    // Each run of equal identities is folded as it streams past, so that only one group's
    // accumulators are in memory (never all of a large group's documents).
    let mut out = Vec::new();
    let mut held = crate::memory::Reservation::new("$group");
    // The current run's identity, the key it reports, and its accumulators.
    let mut current: Option<(Bson, Bson, Vec<Acc>)> = None;
    for entry in sorter.finish()? {
        let mut entry = entry?;
        let id = entry.remove("i").unwrap_or(Bson::Null);
        let k = entry.remove("k").unwrap_or(Bson::Null);
        let Some(Bson::Document(d)) = entry.remove("d") else {
            bail!(InternalError, "a spilled group entry lost its document");
        };
        if let Some((c, _, _)) = &current
            && cmp_bson(c, &id) != Ordering::Equal
            && let Some((_, key, state)) = current.take()
        {
            out.push(finish_group(key, state, accs));
        }
        let (_, _, state) =
            current.get_or_insert_with(|| (id, k, accs.iter().map(|a| Acc::new(a.op)).collect()));
        let (_, heap) = fold_doc(state, accs, &d, &mut Vars::with_let(&d, vars))?;
        held.grow(heap)?;
    }
    if let Some((_, key, state)) = current {
        out.push(finish_group(key, state, accs));
    }
    held.hand_on();
    Ok(out)
}

/// A folded group's key and output values.
fn finish_group(key: Bson, state: Vec<Acc>, accs: &[AccSpec]) -> (Bson, Vec<Bson>) {
    (key, state.into_iter().zip(accs).map(|(a, s)| a.finish_with(s)).collect())
}

/// One sorted run written to a temporary file.
struct Run {
    file: File,
    count: usize,
}

/// An external merge sort (see the module documentation).
pub struct Sorter<F> {
    cmp: F,
    limit: MemoryLimit,
    stage: String,
    buffer: Vec<Document>,
    used: usize,
    runs: Vec<Run>,
}

impl<F: Fn(&Document, &Document) -> Ordering> Sorter<F> {
    /// A sorter ordering by `cmp` within `limit`; `stage` names it in errors.
    pub fn new(cmp: F, limit: MemoryLimit, stage: &str) -> Sorter<F> {
        Sorter {
            cmp,
            limit,
            stage: stage.to_string(),
            buffer: Vec::new(),
            used: 0,
            runs: Vec::new(),
        }
    }

    /// Adds a document, spilling the buffer when it passes the budget.
    pub fn push(&mut self, d: Document) -> Result<()> {
        self.used = self.used.saturating_add(approx_doc_size(&d) + PER_DOC_OVERHEAD);
        self.buffer.push(d);
        if self.used > self.limit.bytes {
            if !self.limit.allow_disk_use {
                return Err(self.limit.exceeded(&self.stage));
            }
            self.spill()?;
        }
        Ok(())
    }

    /// How many runs have been written to disk so far.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Sorts the buffer and writes it as a run.
    fn spill(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.runs.len() >= MAX_RUNS {
            self.compact()?;
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.sort_by(|a, b| (self.cmp)(a, b));
        let run = write_run(buffer.len(), buffer.into_iter().map(Ok))?;
        self.runs.push(run);
        self.used = 0;
        Ok(())
    }

    /// Merges every run on disk into one.
    fn compact(&mut self) -> Result<()> {
        let runs = std::mem::take(&mut self.runs);
        let count = runs.iter().map(|r| r.count).sum();
        let merged = Merge::new(&self.cmp, runs, Vec::new())?;
        let run = write_run(count, merged)?;
        self.runs.push(run);
        Ok(())
    }

    /// The documents in order: straight from memory when nothing was spilled, otherwise merged
    /// from the runs and the last buffer.
    pub fn finish(mut self) -> Result<Merge<F>> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.sort_by(|a, b| (self.cmp)(a, b));
        Merge::new(self.cmp, self.runs, buffer)
    }
}

#[cfg(test)]
thread_local! {
    /// Runs written by this thread, so that tests can tell a spill happened.
    static RUNS_WRITTEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many runs this thread has written (tests only).
#[cfg(test)]
pub(crate) fn runs_written() -> usize {
    RUNS_WRITTEN.with(std::cell::Cell::get)
}

/// Writes `count` documents as one run to a new temporary file.
fn write_run(count: usize, docs: impl Iterator<Item = Result<Document>>) -> Result<Run> {
    #[cfg(test)]
    RUNS_WRITTEN.with(|c| c.set(c.get() + 1));
    let file = tempfile::tempfile().map_err(io_error)?;
    let mut w = BufWriter::new(file);
    for d in docs {
        d?.to_writer(&mut w)
            .map_err(|e| err!(InternalError, "could not write a sorted run: {}", e))?;
    }
    w.flush().map_err(io_error)?;
    let mut file = w.into_inner().map_err(|e| io_error(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    Ok(Run { file, count })
}

fn io_error(e: std::io::Error) -> Error {
    err!(InternalError, "spilling to disk failed: {}", e)
}

/// Where a merge reads one sorted sequence from.
enum Input {
    /// A run on disk and how many documents are left in it.
    Disk(BufReader<File>, usize),
    /// The last, unspilled buffer.
    Memory(std::vec::IntoIter<Document>),
}

impl Input {
    fn next(&mut self) -> Result<Option<Document>> {
        match self {
            Input::Disk(_, 0) => Ok(None),
            Input::Disk(r, left) => {
                *left -= 1;
                Document::from_reader(r)
                    .map(Some)
                    .map_err(|e| err!(InternalError, "could not read a sorted run: {}", e))
            }
            Input::Memory(it) => Ok(it.next()),
        }
    }
}

/// A k-way merge of sorted inputs; an iterator over the merged documents.
pub struct Merge<F> {
    cmp: F,
    inputs: Vec<Input>,
    /// The current head of each input (`None` once it is exhausted).
    heads: Vec<Option<Document>>,
    /// A binary min-heap of input indexes, ordered by their heads, ties by index.
    heap: Vec<usize>,
}

impl<F: Fn(&Document, &Document) -> Ordering> Merge<F> {
    fn new(cmp: F, runs: Vec<Run>, memory: Vec<Document>) -> Result<Merge<F>> {
        let mut inputs: Vec<Input> =
            runs.into_iter().map(|r| Input::Disk(BufReader::new(r.file), r.count)).collect();
        inputs.push(Input::Memory(memory.into_iter()));
        let mut heads = Vec::with_capacity(inputs.len());
        for i in &mut inputs {
            heads.push(i.next()?);
        }
        let mut m = Merge { cmp, inputs, heads, heap: Vec::new() };
        for i in 0..m.heads.len() {
            if m.heads[i].is_some() {
                m.heap.push(i);
                m.sift_up(m.heap.len() - 1);
            }
        }
        Ok(m)
    }

    /// Whether input `a`'s head comes before input `b`'s (earlier inputs win ties, which keeps
    /// the merge stable).
    fn before(&self, a: usize, b: usize) -> bool {
        match (&self.heads[a], &self.heads[b]) {
            (Some(x), Some(y)) => (self.cmp)(x, y).then(a.cmp(&b)) == Ordering::Less,
            (Some(_), None) => true,
            _ => false,
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.before(self.heap[i], self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.heap.len() && self.before(self.heap[l], self.heap[best]) {
                best = l;
            }
            if r < self.heap.len() && self.before(self.heap[r], self.heap[best]) {
                best = r;
            }
            if best == i {
                return;
            }
            self.heap.swap(i, best);
            i = best;
        }
    }

    fn pop(&mut self) -> Result<Option<Document>> {
        let Some(&top) = self.heap.first() else { return Ok(None) };
        let doc = self.heads[top].take();
        self.heads[top] = self.inputs[top].next()?;
        if self.heads[top].is_none() {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        }
        self.sift_down(0);
        Ok(doc)
    }
}

impl<F: Fn(&Document, &Document) -> Ordering> Iterator for Merge<F> {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        self.pop().transpose()
    }
}

#[cfg(test)]
mod tests {
    use bson::{Document, doc};

    use super::{MAX_RUNS, MemoryLimit, Sorter, sort};
    use crate::error::Code;

    fn docs(n: i32) -> Vec<Document> {
        // Keys repeat (k = i * 7 mod 13) so that stability is observable through `i`.
        (0..n).map(|i| doc! {"k": (i * 7) % 13, "i": i, "pad": "x".repeat(40)}).collect()
    }

    fn by_k(a: &Document, b: &Document) -> std::cmp::Ordering {
        a.get_i32("k").unwrap_or(0).cmp(&b.get_i32("k").unwrap_or(0))
    }

    #[test]
    fn spilled_sort_equals_in_memory_stable_sort() {
        let input = docs(500);
        let mut expected = input.clone();
        expected.sort_by(by_k);
        let mut sorter = Sorter::new(by_k, MemoryLimit::new(2048, true), "$sort");
        for d in input.clone() {
            sorter.push(d).expect("push");
        }
        assert!(sorter.runs() > 1, "a 2 KB budget must spill 500 documents");
        let got: Vec<Document> =
            sorter.finish().expect("finish").map(|d| d.expect("read")).collect();
        assert_eq!(got, expected);
        let via_sort = sort(input, by_k, MemoryLimit::new(2048, true), "$sort").expect("sort");
        assert_eq!(via_sort, expected);
    }

    #[test]
    fn many_runs_are_compacted_and_still_merge_correctly() {
        let input = docs(3000);
        let mut expected = input.clone();
        expected.sort_by(by_k);
        // About one document per run: far more runs than may stay open.
        let mut sorter = Sorter::new(by_k, MemoryLimit::new(100, true), "$sort");
        for d in input {
            sorter.push(d).expect("push");
            assert!(sorter.runs() <= MAX_RUNS + 1);
        }
        let got: Vec<Document> =
            sorter.finish().expect("finish").map(|d| d.expect("read")).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn without_disk_use_the_budget_is_an_error() {
        let e = sort(docs(100), by_k, MemoryLimit::new(2048, false), "$sort").expect_err("292");
        assert_eq!(e.code, Code::QueryExceededMemoryLimitNoDiskUseAllowed);
        assert_eq!(
            e.message,
            "Sort exceeded memory limit of 2048 bytes, but did not opt in to external sorting."
        );
        let small = sort(docs(3), by_k, MemoryLimit::new(2048, false), "$sort").expect("fits");
        assert_eq!(small.len(), 3);
    }
}
