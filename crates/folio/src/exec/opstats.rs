//! What one operation did: keys and documents examined and the plan it ran, for slow-operation
//! log lines, the profiler, `explain`'s `executionStats` and `serverStatus`'s
//! `metrics.queryExecutor`.
//!
//! MongoDB keeps these on the operation's context (`CurOp`). Folio runs each command start to
//! finish on one thread (the connection's task or a blocking-pool thread, never both at once),
//! so the counters live in a thread-local record that [`begin`] clears before a command and
//! [`take`] collects after it. The executor only adds to it: the counting is a few thread-local
//! increments, cheap enough to stay on for every operation, which is what lets a slow-operation
//! line say why an operation was slow without re-running it.
//!
//! A command that runs on another thread than the one that called [`begin`] would see nothing
//! counted; none does today, and a test of each consumer checks that the counts move.

use std::cell::RefCell;

/// The counters of one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Index keys read (`keysExamined`); an `_id` point read counts one.
    pub keys_examined: u64,
    /// Documents read from storage (`docsExamined`).
    pub docs_examined: u64,
    /// MongoDB's one-line plan summary of the first plan run (`COLLSCAN`, `IDHACK`,
    /// `IXSCAN { a: 1 }`), if a plan ran.
    pub plan_summary: Option<String>,
    /// Whether a plan's order was not the requested sort, so results were sorted in memory
    /// (`hasSortStage`).
    pub has_sort_stage: bool,
}

thread_local! {
    static CURRENT: RefCell<OpStats> = RefCell::new(OpStats::default());
}

/// Starts counting a new operation on this thread.
pub fn begin() {
    CURRENT.with(|c| *c.borrow_mut() = OpStats::default());
}

/// The counts since [`begin`], leaving them cleared.
pub fn take() -> OpStats {
    CURRENT.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// The counts since [`begin`], leaving them in place.
pub fn peek() -> OpStats {
    CURRENT.with(|c| c.borrow().clone())
}

pub(crate) fn add_keys(n: u64) {
    CURRENT.with(|c| c.borrow_mut().keys_examined += n);
}

pub(crate) fn add_docs(n: u64) {
    CURRENT.with(|c| c.borrow_mut().docs_examined += n);
}

/// Records the plan an operation ran (the first one wins: a command that plans twice, such as
/// an update that re-reads, reports its first plan, as MongoDB reports its winning plan).
pub(crate) fn set_plan(summary: impl FnOnce() -> String, sorted_in_memory: bool) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if c.plan_summary.is_none() {
            c.plan_summary = Some(summary());
        }
        c.has_sort_stage |= sorted_in_memory;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_until_taken() {
        begin();
        add_keys(2);
        add_docs(3);
        set_plan(|| "COLLSCAN".into(), true);
        set_plan(|| "IDHACK".into(), false);
        let s = take();
        assert_eq!((s.keys_examined, s.docs_examined), (2, 3));
        assert_eq!(s.plan_summary.as_deref(), Some("COLLSCAN"));
        assert!(s.has_sort_stage);
        assert_eq!(take(), OpStats::default());
    }
}
