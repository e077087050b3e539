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

/// `$reduce` holds a large accumulator once for itself and once per whole read of `$$value` in
/// its body (each read copies it): the count covers every branch and depth, and reads of a path
/// inside the variable copy only that part, so they do not count.
#[test]
fn whole_reads_of_a_variable_are_counted() {
    let uses = |v: bson::Bson| Expression::parse(&v).expect("parse").uses_of("v");
    let with_v = |e: bson::Bson| bson::bson!({"$let": {"vars": {"v": 1}, "in": e}});
    assert_eq!(uses(with_v(bson::bson!({"$concatArrays": ["$$v", "$$v"]}))), 2);
    assert_eq!(uses(with_v(bson::bson!({"$add": ["$$v.a", "$$v.b"]}))), 0);
    assert_eq!(
        uses(with_v(bson::bson!({"$cond": [true, {"x": "$$v"}, [{"$ifNull": ["$$v", 0]}]]}))),
        2
    );
    assert_eq!(uses(with_v(bson::bson!({"$map": {"input": "$$v", "as": "i", "in": "$$i"}}))), 1);
    assert_eq!(uses(bson::bson!({"$add": ["$a", 1]})), 0);
}
