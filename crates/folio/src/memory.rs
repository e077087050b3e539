//! Bounded memory per operation.
//!
//! One request must not be able to take the server down. Folio bounds what a request may build
//! in three ways, with MongoDB's limits and codes where MongoDB has them:
//!
//! * **Per value and per document.** A document handed to a client may not exceed
//!   [`MAX_INTERNAL_DOC_BYTES`] (16 MiB plus MongoDB's 16 KiB of slack: BSONObjectTooLarge,
//!   10334); a string an expression builds may not exceed MongoDB's 64 MiB buffer
//!   ([`MAX_BUFFER_BYTES`], Location13548).
//! * **Per operator and per stage.** `$push` and `$addToSet` keep at most 100 MiB per group
//!   (ExceededMemoryLimit, 146), `$range` may not build more than 100 MiB (146), one `$lookup`
//!   result array at most 100 MiB (Location4568), a `$facet` document at most 100 MiB
//!   (Location4031700), and blocking stages spill or fail past 100 MiB (see `agg::spill`).
//!   Values that other expressions build (`$concatArrays`, `$map`, `$split`, `$reduce`, ...)
//!   are held to [`MAX_EXPRESSION_BYTES`] (146, as MongoDB's newer per-expression tracker
//!   reports it).
//! * **Per operation and per server.** Each operation's large holdings are charged to a
//!   thread-local counter and to one server-wide atomic counter. Past
//!   `internalQueryMaxMemoryUsageBytesPerOperation` the operation fails with ExceededMemoryLimit;
//!   past `internalQueryMaxMemoryUsageBytesAllOperations` (by default half of what the process
//!   may use: the machine's memory, a container's limit or `ulimit -v`, whichever is least)
//!   the operation that asks for more fails, unless it holds less than [`FAIR_SHARE_BYTES`], so
//!   that concurrent heavy requests fail cleanly while small ones keep working.
//!
//! Every limit is checked *while* a value is being built: before the allocation where the size
//! is known in advance (`$range`, `$concat`, `$concatArrays`, `$split`, `$unwind`'s copies;
//! `$range`, `$concat` and `$replaceAll` hold their bytes while they build, so that several built
//! at once count each other: [`hold`]), and
//! as the parts arrive otherwise (`$map`, `$reduce`, group tables, `$lookup` and `$facet`
//! results), never once the whole exists, because a value that is too large has already done
//! its damage by then.
//!
//! **What is charged, and for how long.** Only stages that *create* data beyond their input
//! charge: group tables and accumulators, `$lookup` and `$graphLookup` arrays, `$unwind` copies,
//! documents `$project`/`$replaceRoot` compute and values `$addFields` computes, `$facet`'s
//! copies of its input, window outputs, `$reduce` accumulators (with the copies of them each
//! step reads as `$$value`). They charge a [`Reservation`] while they build and hand it on with
//! their output ([`Reservation::hand_on`]); the pipeline keeps those charges while the output
//! lives on (stages that extend their input add to it; stages that replace it, such as `$group`
//! or a computing `$project`, release what came before) and releases them when it returns.
//! Documents an operation only reads are bounded by the data and not charged.
//!
//! **Cost.** The small operations that make up most traffic must not pay for this. A charge adds
//! to a thread-local counter and reads the shared counter (a relaxed load); the shared counter is
//! written only in steps of [`CHARGE_STEP`]. Expressions only check large values ([`building`]),
//! which costs a comparison for everything smaller than [`LARGE_VALUE_BYTES`].
//!
//! **Sizes are estimates.** Limits that MongoDB defines on BSON sizes ($lookup, $facet, the
//! 16 MiB document, the per-stage budgets) use the BSON size ([`bson_size`], computed without
//! encoding). The operation and server counters, and the per-expression array limit, count
//! Folio's own in-memory footprint ([`heap_size`]): a `Bson` value takes
//! `size_of::<Bson>()` bytes plus what it points to, several times its BSON size for small
//! scalars, and protecting the process means counting what the process holds. Memory an
//! operation only reads (its input documents) is not charged: it is bounded by the data.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bson::{Bson, Document};

use crate::error::{Code, Error, Result};

/// MongoDB's `BSONObjMaxUserSize`: the largest document a client may store (16 MiB).
pub const MAX_USER_DOC_BYTES: usize = 16 * 1024 * 1024;

/// MongoDB's `BSONObjMaxInternalSize`: the largest document the server hands out (16 MiB and
/// 16 KiB of slack for the fields the server adds).
pub const MAX_INTERNAL_DOC_BYTES: usize = MAX_USER_DOC_BYTES + 16 * 1024;

/// MongoDB's `BufferMaxSize`: the largest string an expression may build (64 MiB).
pub const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// MongoDB's `internalQueryMaxPushBytes` and `internalQueryMaxAddToSetBytes` (100 MiB).
pub const MAX_PUSH_BYTES: usize = 100 * 1024 * 1024;

/// MongoDB's `internalQueryMaxRangeBytes` (100 MiB).
pub const MAX_RANGE_BYTES: usize = 100 * 1024 * 1024;

/// MongoDB's `internalLookupStageIntermediateDocumentMaxSizeBytes` (100 MiB).
pub const MAX_LOOKUP_BYTES: usize = 100 * 1024 * 1024;

/// MongoDB's `internalQueryFacetMaxOutputDocSizeBytes` (100 MiB).
pub const MAX_FACET_BYTES: usize = 100 * 1024 * 1024;

/// The most memory one value built by an expression (`$concatArrays`, `$map`, `$split`,
/// `$reduce`'s accumulator, ...) may take in Folio's own in-memory terms (256 MiB, about two
/// million small array elements). Modelled on MongoDB's newer per-expression tracker
/// (`internalQueryMaxSingleExpressionMemoryUsageBytes`), whose error it reports; MongoDB 8.0
/// has no such limit and runs out of memory instead.
pub const MAX_EXPRESSION_BYTES: usize = 256 * 1024 * 1024;

/// Values below this size are never checked against the operation and server counters: the
/// check would cost more than the value.
pub const LARGE_VALUE_BYTES: usize = 1024 * 1024;

/// An operation holding less than this is never failed by the server-wide cap (one document's
/// worth), so that pings and small reads keep working while heavy requests fail.
pub const FAIR_SHARE_BYTES: usize = 16 * 1024 * 1024;

/// Reservations reach the shared counter in steps of this many bytes.
pub const CHARGE_STEP: usize = 256 * 1024;

/// The fallback server-wide cap when the machine's memory is unknown (2 GiB).
const FALLBACK_SERVER_CAP: usize = 2 * 1024 * 1024 * 1024;

/// The server-wide cap (0 until first read, then resolved).
static SERVER_CAP: AtomicUsize = AtomicUsize::new(0);
/// The per-operation limit (0: none of its own, only the server-wide cap).
static OPERATION_LIMIT: AtomicUsize = AtomicUsize::new(0);
/// What all operations together have charged.
static SERVER_USED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// What the operation running on this thread has charged (operations run on one thread).
    static OP_USED: Cell<usize> = const { Cell::new(0) };
    /// The part of `OP_USED` already added to `SERVER_USED`.
    static OP_PUBLISHED: Cell<usize> = const { Cell::new(0) };
    /// Charges finished stages handed on to the pipeline running them ([`carried`]).
    static CARRIED: Cell<usize> = const { Cell::new(0) };
}

/// Sets the per-operation limit (`internalQueryMaxMemoryUsageBytesPerOperation`; 0: none of
/// its own) and the server-wide cap (`internalQueryMaxMemoryUsageBytesAllOperations`; `None`:
/// half of what the process may use, see `memory::server_cap`).
pub fn set_limits(per_operation: usize, server: Option<usize>) {
    OPERATION_LIMIT.store(per_operation, Ordering::Relaxed);
    SERVER_CAP.store(server.unwrap_or_else(default_server_cap), Ordering::Relaxed);
}

/// The per-operation limit (0: none of its own).
pub fn operation_limit() -> usize {
    OPERATION_LIMIT.load(Ordering::Relaxed)
}

/// The server-wide cap: as set, or half of the least of the machine's memory, the cgroup's
/// limit and the address-space limit.
pub fn server_cap() -> usize {
    match SERVER_CAP.load(Ordering::Relaxed) {
        0 => {
            let cap = default_server_cap();
            SERVER_CAP.store(cap, Ordering::Relaxed);
            cap
        }
        n => n,
    }
}

/// What the operation running on this thread holds now.
#[cfg(test)]
pub fn operation_used() -> usize {
    OP_USED.with(Cell::get)
}

/// What all operations hold now, as far as they have told the shared counter.
pub fn server_used() -> usize {
    SERVER_USED.load(Ordering::Relaxed)
}

/// Half of the memory the process may use: the least of the machine's memory (`MemTotal`), the
/// cgroup's limit (`memory.max`, as in a container) and the address-space limit (`ulimit -v`),
/// read from Linux's text interfaces; 2 GiB where none can be read.
fn default_server_cap() -> usize {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mem_total = read("/proc/meminfo").and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    });
    let cgroup = read("/sys/fs/cgroup/memory.max").and_then(|s| s.trim().parse::<usize>().ok());
    let address_space = read("/proc/self/limits").and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Max address space"))?;
        line["Max address space".len()..].split_whitespace().next()?.parse::<usize>().ok()
    });
    [mem_total, cgroup, address_space]
        .into_iter()
        .flatten()
        .min()
        .map_or(FALLBACK_SERVER_CAP, |bytes| bytes / 2)
}

/// Whether the operation on this thread may hold `extra` more bytes: an error naming `what` if
/// that would pass the per-operation limit, or the server-wide cap while the operation holds
/// at least its fair share.
fn admit(extra: usize, what: &str) -> Result<()> {
    let used = OP_USED.with(Cell::get).saturating_add(extra);
    let unpublished = used.saturating_sub(OP_PUBLISHED.with(Cell::get));
    let total = server_used().saturating_add(unpublished);
    verdict(what, used, operation_limit(), total, server_cap())
}

/// The decision of [`admit`]: an operation that would hold `used` bytes (per-operation `limit`,
/// 0 for none) while all operations would hold `total` bytes (server `cap`).
fn verdict(what: &str, used: usize, limit: usize, total: usize, cap: usize) -> Result<()> {
    if limit > 0 && used > limit {
        return Err(Error::new(
            Code::ExceededMemoryLimit,
            format!(
                "{what} needs too much memory. Needs: {used} bytes. Local memory limit: {limit} \
                 bytes (internalQueryMaxMemoryUsageBytesPerOperation)."
            ),
        ));
    }
    if total > cap && used >= FAIR_SHARE_BYTES {
        return Err(Error::new(
            Code::ExceededMemoryLimit,
            format!(
                "{what} needs too much memory. Needs: {used} bytes. All operations together \
                 would hold {total} bytes, past the server's limit of {cap} bytes \
                 (internalQueryMaxMemoryUsageBytesAllOperations)."
            ),
        ));
    }
    Ok(())
}

/// Brings the shared counter up to date with this thread's charges once they differ by a step.
fn publish(force: bool) {
    let used = OP_USED.with(Cell::get);
    let published = OP_PUBLISHED.with(Cell::get);
    if used > published && (force || used - published >= CHARGE_STEP) {
        SERVER_USED.fetch_add(used - published, Ordering::Relaxed);
        OP_PUBLISHED.with(|p| p.set(used));
    } else if used < published && (force || published - used >= CHARGE_STEP) {
        SERVER_USED.fetch_sub(published - used, Ordering::Relaxed);
        OP_PUBLISHED.with(|p| p.set(used));
    }
}

/// Checks that an expression may build a value of about `bytes` (Folio's in-memory estimate):
/// at most [`MAX_EXPRESSION_BYTES`] for one value, and within what the operation and the
/// server may still hold. Free for values under [`LARGE_VALUE_BYTES`].
pub fn building(what: &str, bytes: usize) -> Result<()> {
    if bytes < LARGE_VALUE_BYTES {
        return Ok(());
    }
    if bytes > MAX_EXPRESSION_BYTES {
        return Err(Error::new(
            Code::ExceededMemoryLimit,
            format!(
                "{what} needs too much memory. Needs: {bytes} bytes. Local memory limit: \
                 {MAX_EXPRESSION_BYTES} bytes."
            ),
        ));
    }
    admit(bytes, what)
}

/// Holds about `bytes` more (Folio's in-memory estimate) for a value whose size is known before
/// it is built, until the returned reservation is dropped, or fails with ExceededMemoryLimit past
/// the operation's limit or the server's cap. Held, not only checked: a builder holds its bytes
/// while it builds, so that builders at work at once count each other (a check alone lets
/// several pass together and then build past the cap). Small values are not charged.
pub fn hold(what: &'static str, bytes: usize) -> Result<Option<Reservation>> {
    if bytes < LARGE_VALUE_BYTES {
        return Ok(None);
    }
    let mut held = Reservation::new(what);
    held.grow(bytes)?;
    Ok(Some(held))
}

/// Memory a stage holds on behalf of its operation, released when dropped. Charges go to the
/// thread's operation counter and, in steps of [`CHARGE_STEP`], to the server-wide counter.
#[derive(Debug)]
pub struct Reservation {
    what: &'static str,
    bytes: usize,
    /// Reservations live on the operation's thread (the counters are thread-local).
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Reservation {
    /// An empty reservation for `what` (a stage or operator name, used in errors).
    pub fn new(what: &'static str) -> Reservation {
        Reservation { what, bytes: 0, _not_send: std::marker::PhantomData }
    }

    /// Holds `bytes` more, or fails with ExceededMemoryLimit past the operation's limit or the
    /// server's cap (then nothing more is held).
    pub fn grow(&mut self, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        admit(bytes, self.what)?;
        OP_USED.with(|u| u.set(u.get().saturating_add(bytes)));
        self.bytes = self.bytes.saturating_add(bytes);
        publish(false);
        Ok(())
    }

    /// Holds `bytes` fewer (a stage let go of part of its data, e.g. after spilling it).
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        OP_USED.with(|u| u.set(u.get().saturating_sub(bytes)));
        publish(false);
    }

    /// What is held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Ends a stage's reservation without releasing it: the stage's output lives on in the next
    /// stage's input, and the pipeline takes the charge over with [`carried`].
    pub fn hand_on(mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        CARRIED.with(|c| c.set(c.get().saturating_add(bytes)));
    }

    /// Takes over another reservation's bytes (the counters do not change).
    pub fn absorb(&mut self, mut other: Reservation) {
        self.bytes = self.bytes.saturating_add(std::mem::take(&mut other.bytes));
    }
}

/// What the stages run since the last call handed on ([`Reservation::hand_on`]), as a
/// reservation the caller now owns and releases by dropping.
pub fn carried() -> Reservation {
    let mut r = Reservation::new("pipeline");
    r.bytes = CARRIED.with(|c| c.replace(0));
    r
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = self.bytes;
        self.shrink(bytes);
        if OP_USED.with(Cell::get) == 0 {
            // The operation holds nothing any more: settle the shared counter exactly.
            publish(true);
        }
    }
}

/// The in-memory size of one `Bson` slot.
const SLOT: usize = std::mem::size_of::<Bson>();

/// The estimated cost of one document field besides its key and value (the map's hash and
/// index entries).
const FIELD_OVERHEAD: usize = 24;

/// The estimated in-memory footprint of a value: its slot and everything it points to.
pub fn heap_size(v: &Bson) -> usize {
    SLOT + pointed_to(v)
}

/// The estimated in-memory footprint of a document (not counting the slot holding it).
pub fn doc_heap_size(d: &Document) -> usize {
    64 + d.iter().map(|(k, v)| k.len() + FIELD_OVERHEAD + heap_size(v)).sum::<usize>()
}

fn pointed_to(v: &Bson) -> usize {
    match v {
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => s.len(),
        Bson::Array(items) => items.iter().map(heap_size).sum(),
        Bson::Document(d) => doc_heap_size(d),
        Bson::Binary(b) => b.bytes.len(),
        Bson::RegularExpression(r) => r.pattern.len() + r.options.len(),
        Bson::JavaScriptCodeWithScope(c) => c.code.len() + doc_heap_size(&c.scope),
        Bson::DbPointer(_) => 64,
        _ => 0,
    }
}

/// The exact BSON size of a document, computed without encoding it.
pub fn bson_size(d: &Document) -> usize {
    5 + d.iter().map(|(k, v)| 2 + k.len() + value_bson_size(v)).sum::<usize>()
}

/// The BSON size of a value without its element header (type byte and key).
pub fn value_bson_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => bson_size(d),
        Bson::Array(items) => {
            5 + items
                .iter()
                .enumerate()
                .map(|(i, x)| 2 + decimal_digits(i) + value_bson_size(x))
                .sum::<usize>()
        }
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 5 + s.len(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        Bson::RegularExpression(r) => 2 + r.pattern.len() + r.options.len(),
        Bson::JavaScriptCodeWithScope(c) => 4 + 5 + c.code.len() + bson_size(&c.scope),
        Bson::Decimal128(_) => 16,
        Bson::ObjectId(_) => 12,
        Bson::DbPointer(_) => 5 + 12 + 32,
        Bson::Int32(_) => 4,
        Bson::Boolean(_) => 1,
        Bson::Int64(_) | Bson::Double(_) | Bson::DateTime(_) | Bson::Timestamp(_) => 8,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
    }
}

/// How many decimal digits `i` has (an array index as a BSON key).
pub(crate) fn decimal_digits(mut i: usize) -> usize {
    let mut n = 1;
    while i >= 10 {
        i /= 10;
        n += 1;
    }
    n
}

/// BSONObjectTooLarge (10334) for a document of `size` bytes, worded as MongoDB words it.
pub fn too_large(d: &Document, size: usize) -> Error {
    let first = d.iter().next().map_or(String::new(), |(k, v)| {
        let mut s = crate::doc::fmt::value_string(v);
        if s.len() > 100 {
            let mut end = 100;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str("...");
        }
        format!("{k}: {s}")
    });
    Error::new(
        Code::BSONObjectTooLarge,
        format!(
            "BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and \
             {MAX_INTERNAL_DOC_BYTES}(16MB) First element: {first}"
        ),
    )
}

/// Fails with BSONObjectTooLarge if `d` is larger than a document the server may hand out.
pub fn check_document(d: &Document) -> Result<usize> {
    let size = bson_size(d);
    if size > MAX_INTERNAL_DOC_BYTES {
        return Err(too_large(d, size));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use bson::{Bson, doc};

    use super::*;

    #[test]
    fn bson_size_is_exact() {
        let docs = [
            doc! {},
            doc! {"a": 1, "b": "xyz", "c": [1, 2.5, "s", null, {"d": true}]},
            doc! {"arr": (0..123).map(Bson::Int32).collect::<Vec<_>>(), "t": bson::DateTime::now()},
            doc! {"o": bson::oid::ObjectId::new(), "l": 5_i64, "bin": bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] }},
        ];
        for d in docs {
            assert_eq!(bson_size(&d), d.to_vec().expect("encode").len(), "{d}");
        }
    }

    #[test]
    fn reservations_count_per_thread_and_settle_on_drop() {
        std::thread::spawn(|| {
            let before = server_used();
            {
                let mut r = Reservation::new("$test");
                r.grow(3 * CHARGE_STEP).expect("fits");
                assert_eq!(OP_USED.with(Cell::get), 3 * CHARGE_STEP);
                assert!(server_used() >= before + 3 * CHARGE_STEP);
                r.shrink(CHARGE_STEP);
                assert_eq!(r.bytes(), 2 * CHARGE_STEP);
            }
            assert_eq!(OP_USED.with(Cell::get), 0);
        })
        .join()
        .expect("thread");
    }

    /// A large value being built is held, and seen by every other thread, until its builder
    /// lets go; a small one is not charged at all.
    #[test]
    fn a_value_held_while_it_is_built_counts_for_everyone() {
        std::thread::spawn(|| {
            assert!(hold("$test", LARGE_VALUE_BYTES - 1).expect("small").is_none());
            let before = server_used();
            let bytes = 2 * LARGE_VALUE_BYTES;
            let held = hold("$test", bytes).expect("fits").expect("held");
            assert_eq!(held.bytes(), bytes);
            let seen = std::thread::spawn(server_used).join().expect("thread");
            assert!(seen >= before + bytes, "{seen} < {before} + the held bytes");
            drop(held);
            assert_eq!(OP_USED.with(Cell::get), 0);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn operations_fail_past_their_limit_or_past_the_server_cap_beyond_their_fair_share() {
        let mib = 1024 * 1024;
        assert!(verdict("$x", 10 * mib, 0, 10 * mib, 100 * mib).is_ok());
        let e = verdict("$group", 11 * mib, 10 * mib, 11 * mib, 100 * mib).expect_err("per op");
        assert_eq!(e.code, Code::ExceededMemoryLimit);
        assert!(e.message.contains("internalQueryMaxMemoryUsageBytesPerOperation"), "{e}");
        // Past the server's cap, an operation holding its fair share fails; a small one not.
        let e = verdict("$lookup", 20 * mib, 0, 101 * mib, 100 * mib).expect_err("server");
        assert!(e.message.contains("internalQueryMaxMemoryUsageBytesAllOperations"), "{e}");
        assert!(verdict("$lookup", mib, 0, 101 * mib, 100 * mib).is_ok());
    }

    #[test]
    fn large_values_are_bounded_per_expression() {
        assert!(building("$x", 10).is_ok());
        let e = building("$concatArrays", MAX_EXPRESSION_BYTES + 1).expect_err("too large");
        assert_eq!(e.code, Code::ExceededMemoryLimit);
        assert!(e.message.starts_with("$concatArrays needs too much memory."), "{}", e.message);
    }

    #[test]
    fn too_large_documents_are_reported_like_mongodb() {
        let d = doc! {"_id": 1, "s": "x".repeat(MAX_INTERNAL_DOC_BYTES)};
        let e = check_document(&d).expect_err("too large");
        assert_eq!(e.code, Code::BSONObjectTooLarge);
        assert!(e.message.contains("First element: _id: 1"), "{}", e.message);
        assert!(check_document(&doc! {"a": 1}).is_ok());
    }
}
