//! The checked-in list of tests expected to fail, and the comparison of a run against it.
//!
//! One line per test: `area/file.json: test description  # reason naming the issue (#N)`. Lines starting
//! with `#` and blank lines are comments. The reason is separated by the last `  # ` (two spaces), so a
//! description may itself contain `#`.
//!
//! A run is clean when every failing test is listed and every listed test that ran did not pass: a listed
//! test that passes must be removed, so the list only ever shrinks. Skipped tests count as neither.
//! An entry whose reason starts with `flaky:` is a test known to fail only sometimes (the reason says
//! why): it may pass or fail without making the run unclean, and regenerating the list keeps it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The reason written for a new entry until someone states the real one.
pub const PLACEHOLDER_REASON: &str = "not yet triaged (#5)";

const HEADER: &str = "\
# Spec tests expected to fail against Folio, one per line:
#   area/file.json: test description  # reason naming the issue that will fix it, e.g. (#4)
# The conformance run fails when a test outside this list fails and when a listed test passes.
# Regenerate with `scripts/conformance --write-expected-failures` (reasons of entries still failing are kept).
";

/// The parsed list.
#[derive(Debug, Default)]
pub struct ExpectedFailures {
    /// Test key -> reason.
    entries: BTreeMap<String, String>,
}

/// How a run compares with the list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Failing tests that are not listed.
    pub unexpected_failures: Vec<String>,
    /// Listed tests that passed.
    pub unexpected_passes: Vec<String>,
}

impl ExpectedFailures {
    /// Loads the list; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Parses the text of the list.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.rsplit_once("  # ") {
                Some((k, r)) => (k.trim_end().to_string(), r.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Self { entries }
    }

    /// Compares a run's failing and passing tests with the list.
    pub fn compare(&self, failing: &[&str], passing: &[&str]) -> Verdict {
        Verdict {
            unexpected_failures: failing
                .iter()
                .filter(|k| !self.entries.contains_key(**k))
                .map(|k| k.to_string())
                .collect(),
            unexpected_passes: passing
                .iter()
                .filter(|k| self.entries.get(**k).is_some_and(|r| !is_flaky(r)))
                .map(|k| k.to_string())
                .collect(),
        }
    }

    /// The list text for a run: the failing tests, with their existing reasons where they had one. With
    /// `partial` (a filtered run) entries of tests that did not run are kept.
    pub fn render(&self, failing: &[&str], ran: &[&str], partial: bool) -> String {
        let ran: HashSet<&str> = ran.iter().copied().collect();
        let mut keep: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, r) in &self.entries {
            if (partial && !ran.contains(k.as_str())) || is_flaky(r) {
                keep.insert(k, r);
            }
        }
        for k in failing {
            let reason = self.entries.get(*k).map(String::as_str).filter(|r| !r.is_empty());
            keep.insert(k, reason.unwrap_or(PLACEHOLDER_REASON));
        }
        let mut out = HEADER.to_string();
        for (k, r) in keep {
            out.push_str(&format!("{k}  # {r}\n"));
        }
        out
    }

    /// Writes the list for a run (see [`ExpectedFailures::render`]).
    pub fn rewrite(
        &self,
        path: &Path,
        failing: &[&str],
        ran: &[&str],
        partial: bool,
    ) -> Result<(), String> {
        std::fs::write(path, self.render(failing, ran, partial))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Whether an entry's reason marks a test that fails only sometimes.
fn is_flaky(reason: &str) -> bool {
    reason.starts_with("flaky:")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# comment\n\
        crud/a.json: finds # one  # needs sort (#3)\n\
        \n\
        transactions/b.json: commits  # needs txns (#2)\n";

    #[test]
    fn parses_reason_after_the_last_double_space_hash() {
        let l = ExpectedFailures::parse(LIST);
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries["crud/a.json: finds # one"], "needs sort (#3)");
    }

    #[test]
    fn unlisted_failures_and_listed_passes_are_both_unexpected() {
        let l = ExpectedFailures::parse(LIST);
        let v = l.compare(
            &["crud/a.json: finds # one", "crud/c.json: new"],
            &["transactions/b.json: commits"],
        );
        assert_eq!(v.unexpected_failures, vec!["crud/c.json: new".to_string()]);
        assert_eq!(v.unexpected_passes, vec!["transactions/b.json: commits".to_string()]);
        assert_eq!(l.compare(&["crud/a.json: finds # one"], &[]), Verdict::default());
    }

    #[test]
    fn rewriting_keeps_reasons_and_drops_fixed_tests() {
        let l = ExpectedFailures::parse(LIST);
        let all = ["crud/a.json: finds # one", "crud/c.json: new", "transactions/b.json: commits"];
        let text = l.render(&["crud/a.json: finds # one", "crud/c.json: new"], &all, false);
        let again = ExpectedFailures::parse(&text);
        assert_eq!(again.entries.len(), 2);
        assert_eq!(again.entries["crud/a.json: finds # one"], "needs sort (#3)");
        assert_eq!(again.entries["crud/c.json: new"], PLACEHOLDER_REASON);
        // A filtered run keeps the entries of tests it did not run.
        let text = l.render(&[], &["crud/a.json: finds # one"], true);
        assert!(text.contains("transactions/b.json: commits  # needs txns (#2)"));
        assert!(!text.contains("crud/a.json"));
    }

    #[test]
    fn flaky_entries_may_pass_and_are_kept() {
        let l = ExpectedFailures::parse("crud/f.json: sometimes  # flaky: timing (#5)\n");
        assert_eq!(l.compare(&[], &["crud/f.json: sometimes"]), Verdict::default());
        assert_eq!(l.compare(&["crud/f.json: sometimes"], &[]), Verdict::default());
        assert!(l.render(&[], &["crud/f.json: sometimes"], false).contains("flaky: timing (#5)"));
    }
}
