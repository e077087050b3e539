//! Regular expressions in MongoDB's dialect (PCRE), for every pattern a client sends: the query
//! operator `$regex` (and regex values in filters), the aggregation operators `$regexMatch`,
//! `$regexFind` and `$regexFindAll`, and `$jsonSchema`'s `pattern`.
//!
//! # The engine
//!
//! MongoDB compiles patterns with PCRE2, so clients use Perl's syntax, including what
//! finite-automaton engines cannot run: look-ahead and look-behind (`^(?!system\.)`, which
//! drivers send to list collections), back-references (`(\w)\1`), atomic groups and possessive
//! quantifiers. Folio compiles them with `fancy-regex`, which parses that syntax and runs the
//! constructs that need it on a backtracking machine, while every part of a pattern without them
//! is delegated to the `regex` crate's linear-time engines. A pattern without any such construct
//! therefore runs entirely in linear time.
//!
//! # Hostile patterns
//!
//! Backtracking can take exponential time (`^(a|a)*\1$` against a long run of `a`s followed by a
//! `b`). PCRE bounds a match with a match limit, and so does Folio: one match may backtrack at
//! most [`BACKTRACK_LIMIT`] times, then stops with [`MatchLimit`], so a hostile pattern costs a
//! bounded amount of work per value instead of hanging the server. What happens then follows
//! MongoDB: its query matcher reads PCRE's match-limit error as "no match", so `$regex` does not
//! match that value; its aggregation operators fail with error 51156 (see
//! [`MatchLimit::error`]). docs/compatibility.md says how Folio's bound compares to PCRE's.
//!
//! # Dialect differences handled here
//!
//! An escaped ASCII punctuation character is always that literal character in PCRE (`\<` is
//! `<`), while `fancy-regex` reads `\<` and `\>` as word boundaries: such escapes are rewritten
//! as hex escapes, which are literals in every mode (also under `x`, where `#` and spaces would
//! otherwise start comments or be ignored). PCRE's `\Z` matches at the end or before one final
//! newline; `fancy-regex`'s before any number of them: it becomes the look-ahead `(?=\n?\z)`.

use crate::error::{Code, Error};

/// How many times one match may backtrack before it stops with [`MatchLimit`]. One million is
/// `fancy-regex`'s own default: tens of milliseconds of work, far more than a reasonable pattern
/// needs on a document-sized string.
pub const BACKTRACK_LIMIT: usize = 1_000_000;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Pcre {
    re: fancy_regex::Regex,
}

/// A match that stopped at the backtracking bound (or the engine's stack bound) before deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchLimit;

impl MatchLimit {
    /// The error MongoDB's aggregation operators raise for PCRE's match-limit error (51156,
    /// with PCRE2's message for it).
    pub fn error(self, operator: &str) -> Error {
        Error::new(
            Code::from_number(51156),
            format!(
                "Error occurred while executing the regular expression in {operator}. Result \
                 code: match limit exceeded"
            ),
        )
    }
}

/// One match: its text, its start (a byte offset) and its capture groups (`None` for a group
/// that did not take part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The matched text.
    pub text: String,
    /// Byte offset of the match in the input.
    pub start: usize,
    /// The capture groups, in order.
    pub groups: Vec<Option<String>>,
}

impl Pcre {
    /// Compiles `pattern` with MongoDB's option letters `i`, `m`, `s` and `x` (the caller has
    /// checked them; `u` is PCRE's UTF mode, always on here). `Err` is the engine's message,
    /// which callers wrap in the error code of their operator.
    pub fn compile(pattern: &str, options: &str) -> Result<Pcre, String> {
        let mut builder = fancy_regex::RegexBuilder::new(&translate(pattern));
        builder
            .case_insensitive(options.contains('i'))
            .multi_line(options.contains('m'))
            .dot_matches_new_line(options.contains('s'))
            .ignore_whitespace(options.contains('x'))
            .backtrack_limit(BACKTRACK_LIMIT);
        builder.build().map(|re| Pcre { re }).map_err(|e| first_line(&e.to_string()))
    }

    /// Whether the pattern matches somewhere in `s`.
    pub fn is_match(&self, s: &str) -> Result<bool, MatchLimit> {
        self.re.is_match(s).map_err(|_| MatchLimit)
    }

    /// Whether the pattern matches somewhere in `s`, a match stopped at the bound counting as
    /// none (as MongoDB's query matcher counts it).
    pub fn matches(&self, s: &str) -> bool {
        self.is_match(s).unwrap_or(false)
    }

    /// The first match in `s`.
    pub fn find(&self, s: &str) -> Result<Option<Found>, MatchLimit> {
        match self.re.captures(s) {
            Ok(c) => Ok(c.map(|c| found(&c))),
            Err(_) => Err(MatchLimit),
        }
    }

    /// Every non-overlapping match in `s`, in order.
    pub fn find_all(&self, s: &str) -> Result<Vec<Found>, MatchLimit> {
        self.re.captures_iter(s).map(|c| c.map(|c| found(&c)).map_err(|_| MatchLimit)).collect()
    }
}

fn found(c: &fancy_regex::Captures<'_, str>) -> Found {
    let whole = c.get(0);
    Found {
        text: whole.map_or(String::new(), |m| m.as_str().to_string()),
        start: whole.map_or(0, |m| m.start()),
        groups: c.iter().skip(1).map(|g| g.map(|g| g.as_str().to_string())).collect(),
    }
}

/// Rewrites the constructs where PCRE and `fancy-regex` read the same text differently (see
/// the module documentation).
fn translate(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Z') => out.push_str(r"(?=\n?\z)"),
            Some(p) if p.is_ascii_punctuation() || p == ' ' => {
                out.push_str(&format!("\\x{{{:X}}}", p as u32))
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Pcre {
        Pcre::compile(p, "").unwrap()
    }

    #[test]
    fn look_around_and_back_references_work() {
        let not_system = re(r"^(?!system\.)");
        assert!(not_system.matches("users"));
        assert!(!not_system.matches("system.views"));
        assert!(re(r"(?<=\$)\d+").matches("cost $15"));
        assert!(!re(r"(?<=\$)\d+").matches("cost 15"));
        assert!(re(r"^(\w+) \1$").matches("bye bye"));
        assert!(!re(r"^(\w+) \1$").matches("bye now"));
    }

    #[test]
    fn pcre_escapes_keep_their_meaning() {
        assert!(re(r"a\<b").matches("a<b"));
        assert!(re(r"x\Z").matches("x\n"));
        assert!(!re(r"x\Z").matches("x\n\n"));
        assert_eq!(re(r"x\Z").find("x\n").unwrap().unwrap().text, "x");
        assert!(Pcre::compile("a # comment\nb", "x").unwrap().matches("ab"));
        assert!(Pcre::compile("A.b", "is").unwrap().matches("a\nB"));
    }

    #[test]
    fn catastrophic_backtracking_stops_at_the_bound() {
        let hostile = re(r"^(a|a)*\1$");
        let input = format!("{}b", "a".repeat(40));
        let started = std::time::Instant::now();
        assert_eq!(hostile.is_match(&input), Err(MatchLimit));
        assert!(!hostile.matches(&input));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn captures_report_groups_and_offsets() {
        let all = re(r"(\d)(x)?").find_all("a1b2x").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            Found { text: "1".into(), start: 1, groups: vec![Some("1".into()), None] }
        );
        assert_eq!(all[1].groups, vec![Some("2".into()), Some("x".into())]);
        assert!(Pcre::compile("(", "").is_err());
    }
}
