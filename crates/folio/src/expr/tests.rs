//! Golden tests for expressions (`testdata/expr_*.txt`): each block has `doc:` (the `$$ROOT`
//! document), optionally `collation:` (the operation's collation), and `expr:` lines
//! (expressions); the output is one line per expression: its value, `missing`, or the error.

use super::Expression;
use crate::doc::fmt::{Style, value_string_styled};
use crate::doc::golden::{self, Input, error_line};

fn run(file: &str) {
    golden::run(&format!("src/expr/testdata/{file}"), |inputs: &[Input]| {
        let doc = inputs.iter().find(|i| i.name == "doc").map(Input::doc).unwrap_or_default();
        let collation = match inputs.iter().find(|i| i.name == "collation") {
            Some(c) => match crate::collation::Collation::parse(&c.doc(), "aggregate") {
                Ok(c) => c,
                Err(e) => return vec![error_line(&e)],
            },
            None => None,
        };
        let parse = |v: &bson::Bson| {
            Expression::parse(v).map(|e| match &collation {
                Some(c) => e.with_collation(c),
                None => e,
            })
        };
        let mut out = Vec::new();
        for i in inputs.iter().filter(|i| i.name == "expr") {
            let line = match parse(&i.json()).and_then(|e| e.eval_doc(&doc)) {
                Ok(Some(v)) => value_string_styled(&v, Style::Typed),
                Ok(None) => "missing".to_string(),
                Err(e) => error_line(&e),
            };
            out.push(line);
        }
        out
    });
}

#[test]
fn arithmetic() {
    run("expr_arithmetic.txt");
}

#[test]
fn comparison() {
    run("expr_comparison.txt");
}

#[test]
fn boolean() {
    run("expr_boolean.txt");
}

#[test]
fn conditional() {
    run("expr_conditional.txt");
}

#[test]
fn string() {
    run("expr_string.txt");
}

#[test]
fn array() {
    run("expr_array.txt");
}

#[test]
fn object() {
    run("expr_object.txt");
}

#[test]
fn date() {
    run("expr_date.txt");
}

#[test]
fn types() {
    run("expr_type.txt");
}

#[test]
fn variables() {
    run("expr_variables.txt");
}

#[test]
fn collation() {
    run("expr_collation.txt");
}
