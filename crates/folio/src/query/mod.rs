//! The query language: filters (parse to a validated AST, then match), projection and sort.
//! Pure functions on documents, no storage.

// Parsers return the crate's `Error`, which is large by design (labels and extra fields travel
// with it); parsing is not a hot path.
#![allow(clippy::result_large_err)]

pub mod expr;
pub mod filter;
pub mod matcher;
pub mod schema;

pub use filter::{ElemMatcher, Filter, Pred};

#[cfg(test)]
mod tests {
    use crate::doc::golden::{self, Input, error_line};

    use super::Filter;

    fn run_filter_file(file: &str) {
        golden::run(file, |inputs: &[Input]| {
            let mut filter = None;
            let mut out = Vec::new();
            for input in inputs {
                match input.name.as_str() {
                    "filter" => match Filter::parse(&input.doc()) {
                        Ok(f) => filter = Some(f),
                        Err(e) => return vec![error_line(&e)],
                    },
                    "doc" => {
                        let f = filter.as_ref().expect("doc before filter");
                        let (m, key) = f.matches_with_key(&input.doc());
                        assert_eq!(m, f.matches(&input.doc()));
                        out.push(match key {
                            Some(k) => format!("{m} (array position {k})"),
                            None => m.to_string(),
                        });
                    }
                    other => panic!("unknown input {other}"),
                }
            }
            out
        });
    }

    #[test]
    fn filter_comparison() {
        run_filter_file("src/query/testdata/filter_comparison.txt");
    }

    #[test]
    fn filter_logical() {
        run_filter_file("src/query/testdata/filter_logical.txt");
    }

    #[test]
    fn filter_element() {
        run_filter_file("src/query/testdata/filter_element.txt");
    }

    #[test]
    fn filter_evaluation() {
        run_filter_file("src/query/testdata/filter_evaluation.txt");
    }

    #[test]
    fn filter_array() {
        run_filter_file("src/query/testdata/filter_array.txt");
    }

    #[test]
    fn filter_schema() {
        run_filter_file("src/query/testdata/filter_schema.txt");
    }
}
