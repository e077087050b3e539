//! Whether the running command declared `apiStrict: true` (with `apiVersion: "1"`), for the
//! parts of the query language it changes below the command layer.
//!
//! Under `apiStrict: true` MongoDB's query planner does not see the indexes outside API version
//! 1 (text and sparse ones), and its parsers refuse the operators outside it. Those decisions are
//! made deep inside planning and parsing, which every read and write path reaches (`find`,
//! `aggregate` and its `$lookup`/`$unionWith` reads, `count`, `distinct`, `update`, `delete`,
//! `findAndModify`, views' pipelines), so the flag is kept for the duration of the command in a
//! thread-local, as [`crate::exec::opstats`] keeps the command's counters: Folio runs each
//! command start to finish on one thread. The command layer sets it with [`enter`] once the
//! versioned-API parameters are parsed; everything else only reads it with [`active`].

use std::cell::Cell;

thread_local! {
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous value when the command ends (or unwinds).
pub(crate) struct Scope {
    previous: bool,
}

impl Drop for Scope {
    fn drop(&mut self) {
        STRICT.with(|s| s.set(self.previous));
    }
}

/// Marks the commands run on this thread until the returned scope is dropped as declaring
/// `apiStrict: true` (or not).
#[must_use = "the flag is cleared when the scope is dropped"]
pub(crate) fn enter(strict: bool) -> Scope {
    Scope { previous: STRICT.with(|s| s.replace(strict)) }
}

/// Whether the command running on this thread declared `apiStrict: true`.
pub(crate) fn active() -> bool {
    STRICT.with(Cell::get)
}

/// The expressions MongoDB registers outside API version 1 that Folio does not implement
/// (`$percentile` and `$median` as expressions; as `$group` accumulators they are in version 1).
/// Without `apiStrict` they stay unknown expressions; under it they fail as MongoDB's parser
/// refuses them (see [`not_in_version_1`]). `$function` and `$accumulator` are not listed:
/// MongoDB registers them in version 1.
const OUTSIDE_VERSION_1: &[&str] = &["$percentile", "$median"];

/// Under `apiStrict: true`, the APIStrictError (323) MongoDB answers for an expression outside
/// API version 1 that Folio does not implement, in place of the unknown-expression error.
pub(crate) fn not_in_version_1(name: &str) -> Option<crate::Error> {
    (active() && OUTSIDE_VERSION_1.contains(&name)).then(|| {
        crate::Error::new(
            crate::Code::APIStrictError,
            format!("{name} is not allowed with 'apiStrict: true' in API Version 1"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_lasts_for_its_scope_and_nests() {
        assert!(!active());
        {
            let _outer = enter(true);
            assert!(active());
            {
                let _inner = enter(false);
                assert!(!active());
            }
            assert!(active());
            assert!(not_in_version_1("$median").is_some());
            assert!(not_in_version_1("$add").is_none());
        }
        assert!(!active());
        assert!(not_in_version_1("$median").is_none());
        assert!(not_in_version_1("$function").is_none());
    }
}
