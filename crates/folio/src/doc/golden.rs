//! Data-driven golden tests shared by the query and update tests.
//!
//! A test file is a sequence of blocks separated by blank lines. In a block, `# ...` lines are
//! comments, `name: value` lines are inputs and `> ...` lines are the expected outputs. The test
//! function turns a block's inputs into output lines; the runner compares them with the expected
//! ones and reports every mismatching block at once. With `UPDATE_GOLDENFILES=1` the runner
//! rewrites the file with the produced outputs instead (review the diff by hand).

use std::fmt::Write;
use std::path::PathBuf;

use bson::{Bson, Document};

use crate::error::Error;

/// One input line of a block.
pub struct Input {
    /// The name before the colon.
    pub name: String,
    /// The text after the colon.
    pub value: String,
}

impl Input {
    /// The value parsed as relaxed extended JSON.
    pub fn json(&self) -> Bson {
        parse_json(&self.value)
    }

    /// The value parsed as a document.
    pub fn doc(&self) -> Document {
        match self.json() {
            Bson::Document(d) => d,
            other => panic!("{}: expected a document, got {other:?}", self.name),
        }
    }
}

/// Parses relaxed extended JSON; panics on malformed test input (a broken test file).
pub fn parse_json(s: &str) -> Bson {
    let v: serde_json::Value =
        serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON {s:?}: {e}"));
    Bson::try_from(v).unwrap_or_else(|e| panic!("bad extended JSON {s:?}: {e}"))
}

/// Formats an error as an output line.
pub fn error_line(e: &Error) -> String {
    format!("error {}({}): {}", e.code_name(), e.code_number(), e.message)
}

/// Whether golden files are to be rewritten from the code's output (`UPDATE_GOLDENFILES=1`, the
/// one switch of every golden suite in the workspace) instead of compared with it.
pub fn update_requested() -> bool {
    std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1")
}

/// Runs every block of `testdata/<file>` (relative to the crate root) through `f`.
pub fn run(file: &str, f: impl Fn(&[Input]) -> Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let update = update_requested();
    let mut rewritten = String::new();
    let mut failures = String::new();
    let mut cases = 0;
    for (n, block) in text.split("\n\n").enumerate() {
        let block = block.trim_matches('\n');
        if block.is_empty() {
            continue;
        }
        let mut inputs = Vec::new();
        let mut expected = Vec::new();
        let mut kept = String::new();
        for line in block.lines() {
            if let Some(out) =
                line.strip_prefix("> ").or(line.strip_prefix(">").filter(|s| s.is_empty()))
            {
                expected.push(out.to_string());
                continue;
            }
            kept.push_str(line);
            kept.push('\n');
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{file}: block {n}: bad line {line:?}"));
            inputs.push(Input { name: name.trim().to_string(), value: value.trim().to_string() });
        }
        let got = if inputs.is_empty() { Vec::new() } else { f(&inputs) };
        cases += usize::from(!inputs.is_empty());
        if got != expected {
            let _ = writeln!(
                failures,
                "--- {file} block {n}:\n{kept}expected:\n{}\ngot:\n{}\n",
                expected.join("\n"),
                got.join("\n")
            );
        }
        if !rewritten.is_empty() {
            rewritten.push('\n');
        }
        rewritten.push_str(&kept);
        for line in &got {
            let _ = writeln!(rewritten, "> {line}");
        }
    }
    if update {
        std::fs::write(&path, rewritten).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    assert!(failures.is_empty(), "golden mismatches:\n{failures}");
    assert!(cases > 0, "{file} has no cases");
}
