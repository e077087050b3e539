//! Helpers for data-driven golden tests: test inputs are text files of extended-JSON values
//! checked into `testdata/`, and the expected output sits next to them. Running the tests with
//! `UPDATE_GOLDENFILES=1` rewrites the expected output, to be reviewed by hand.

use std::path::PathBuf;

use bson::Bson;

/// The path of a test data file, relative to the crate's `src` directory.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(rel)
}

/// Reads a test input file.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(testdata(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Parses one extended-JSON value (relaxed or canonical), keeping the field order of the text.
pub fn parse_ext(text: &str) -> Bson {
    let json: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text}: {e}"));
    let typed = Bson::try_from(json).unwrap_or_else(|e| panic!("bad extended JSON {text}: {e}"));
    // `serde_json::Value` sorts object keys; the streaming deserializer keeps the text's order
    // but types plain integers differently, so take the types from one and the order from the
    // other.
    let ordered: Bson =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("bad extended JSON {text}: {e}"));
    reorder(typed, &ordered)
}

fn reorder(typed: Bson, ordered: &Bson) -> Bson {
    match (typed, ordered) {
        (Bson::Document(mut t), Bson::Document(o)) => {
            let mut out = bson::Document::new();
            for (k, ov) in o {
                if let Some(tv) = t.remove(k) {
                    out.insert(k.clone(), reorder(tv, ov));
                }
            }
            out.extend(t);
            Bson::Document(out)
        }
        (Bson::Array(t), Bson::Array(o)) => {
            Bson::Array(t.into_iter().zip(o).map(|(tv, ov)| reorder(tv, ov)).collect())
        }
        (t, _) => t,
    }
}

/// Compares `actual` with the golden file `rel`, or rewrites it under `UPDATE_GOLDENFILES=1`.
pub fn check(rel: &str, actual: &str) {
    let path = testdata(rel);
    if crate::doc::golden::update_requested() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {rel}: {e}"));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                panic!(
                    "{rel}:{}: golden output differs\nexpected: {e}\nactual:   {a}\n(run with UPDATE_GOLDENFILES=1 to regenerate)",
                    i + 1
                );
            }
        }
        panic!(
            "{rel}: golden output differs in length ({} vs {} lines); run with UPDATE_GOLDENFILES=1",
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
