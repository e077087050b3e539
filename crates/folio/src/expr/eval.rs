//! Parsing and evaluating an expression tree.
//!
//! An expression is parsed once per stage into an [`Expression`] tree and then evaluated per
//! document. Parsing does everything that does not depend on the data: it resolves operator
//! names to their table entries in [`super::ops`] (unknown ones are InvalidPipelineOperator),
//! checks argument counts (Location16020), checks that every `$$variable` is defined in an
//! enclosing scope (Location17276), and validates the object-shaped arguments of `$cond`,
//! `$let`, `$switch`, `$filter`, `$map`, `$reduce` and the named-argument operators.
//! Evaluation then only meets type errors, which carry MongoDB's codes and messages.
//!
//! Variables live in a small stack ([`Vars`]): `$$ROOT` is the document being processed,
//! `$$CURRENT` is the same document (field paths read it), and `$let`, `$filter`, `$map`,
//! `$reduce` and the stages' `let` options push named values. The stack is searched from the top,
//! so inner bindings shadow outer ones, as in MongoDB.
//!
//! The operators that choose which arguments to evaluate (`$and`, `$or`, `$ifNull`, `$cond`,
//! `$switch`) and the ones that bind variables are implemented here; every other operator is a
//! function in [`super::ops`] called on evaluated arguments. Values that can grow without bound
//! (`$map`'s output, `$reduce`'s accumulator) are checked against [`crate::memory`]'s limits
//! while they are built.

use bson::{Bson, Document};

use super::ops::{self, Collated, NamedOperator, Operator};
use super::{Value, loc, truthy, type_name};
use crate::collation::CollationRef;
use crate::error::{Code, Error, Result};
use crate::memory;

/// The system variables every expression can use.
const SYSTEM_VARS: [&str; 8] =
    ["ROOT", "CURRENT", "REMOVE", "NOW", "CLUSTER_TIME", "DESCEND", "PRUNE", "KEEP"];

/// A parsed aggregation expression.
#[derive(Clone, Debug)]
pub enum Expression {
    /// A constant (also `{$literal: v}`).
    Const(Bson),
    /// `"$a.b"`: a field path in `$$CURRENT`.
    Field(Vec<String>),
    /// `"$$name.a.b"`: a variable, optionally followed by a path.
    Var(String, Vec<String>),
    /// An array literal whose elements are expressions.
    Array(Vec<Expression>),
    /// An object literal whose values are expressions.
    Object(Vec<(String, Expression)>),
    /// An operator with positional arguments: its table entry and its arguments.
    Op(&'static Operator, Vec<Expression>),
    /// An operator with named arguments (`$dateToString`, `$convert`, `$regexMatch`, ...).
    Named(&'static NamedOperator, Vec<(String, Expression)>),
    /// An operator that compares values, under a collation ([`Expression::with_collation`]).
    OpUnder(&'static Operator, Vec<Expression>, CollationRef),
    /// A named operator that compares values (`$sortArray`), under a collation.
    NamedUnder(&'static NamedOperator, Vec<(String, Expression)>, CollationRef),
    /// `$and`: true unless an argument is falsy; stops at the first that is.
    And(Vec<Expression>),
    /// `$or`: false unless an argument is truthy; stops at the first that is.
    Or(Vec<Expression>),
    /// `$ifNull`: the first argument that is neither null nor missing, else the last.
    IfNull(Vec<Expression>),
    /// `$let`: bindings, then the body.
    Let(Vec<(String, Expression)>, Box<Expression>),
    /// `$cond` in either form.
    Cond(Box<Expression>, Box<Expression>, Box<Expression>),
    /// `$switch`: `(case, then)` branches and an optional default.
    Switch(Vec<(Expression, Expression)>, Option<Box<Expression>>),
    /// `$filter`: input, variable name, condition, optional limit.
    Filter(Box<Expression>, String, Box<Expression>, Option<Box<Expression>>),
    /// `$map`: input, variable name, body.
    Map(Box<Expression>, String, Box<Expression>),
    /// `$reduce`: input, initial value, body (`$$value` and `$$this`).
    Reduce(Box<Expression>, Box<Expression>, Box<Expression>),
}

/// Parse-time scope: the variable names defined around an expression.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    names: Vec<String>,
}

impl Scope {
    /// The scope with only the system variables.
    pub fn new() -> Scope {
        Scope { names: SYSTEM_VARS.iter().map(|s| s.to_string()).collect() }
    }

    /// The system variables plus `names` (a stage's or command's `let`).
    pub fn with<'a>(names: impl IntoIterator<Item = &'a str>) -> Scope {
        let mut s = Scope::new();
        s.names.extend(names.into_iter().map(str::to_string));
        s
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    fn push(&self, names: &[&str]) -> Scope {
        let mut s = self.clone();
        s.names.extend(names.iter().map(|n| n.to_string()));
        s
    }
}

/// Evaluation-time variables: the root document and a stack of named values.
#[derive(Clone, Debug)]
pub struct Vars<'a> {
    root: &'a Document,
    stack: Vec<(String, Value)>,
}

impl<'a> Vars<'a> {
    /// Variables for evaluating against `root`.
    pub fn new(root: &'a Document) -> Vars<'a> {
        Vars { root, stack: Vec::new() }
    }

    /// Variables for `root` with user variables (a `let`) bound.
    pub fn with_let(root: &'a Document, user: &Document) -> Vars<'a> {
        let mut v = Vars::new(root);
        for (k, x) in user {
            v.stack.push((k.clone(), Some(x.clone())));
        }
        v
    }

    /// The value bound to `name` by a `let` or an operator (the innermost binding), if any.
    fn bound(&self, name: &str) -> Option<&Value> {
        self.stack.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn get(&self, name: &str) -> Result<Value> {
        if let Some(v) = self.bound(name) {
            return Ok(v.clone());
        }
        match name {
            "ROOT" | "CURRENT" => Ok(Some(Bson::Document(self.root.clone()))),
            "REMOVE" => Ok(None),
            // `$redact`'s outcomes.
            "DESCEND" => Ok(Some(Bson::String("descend".to_string()))),
            "PRUNE" => Ok(Some(Bson::String("prune".to_string()))),
            "KEEP" => Ok(Some(Bson::String("keep".to_string()))),
            "NOW" => Ok(Some(Bson::DateTime(bson::DateTime::now()))),
            "CLUSTER_TIME" => Ok(Some(Bson::Timestamp(bson::Timestamp {
                time: (bson::DateTime::now().timestamp_millis() / 1000) as u32,
                increment: 1,
            }))),
            _ => Err(loc(17276, format!("Use of undefined variable: {name}"))),
        }
    }
}

impl Expression {
    /// Parses an expression with only the system variables in scope.
    pub fn parse(v: &Bson) -> Result<Expression> {
        Self::parse_in(v, &Scope::new())
    }

    /// Parses an expression in a scope of defined variables.
    pub fn parse_in(v: &Bson, scope: &Scope) -> Result<Expression> {
        match v {
            Bson::String(s) if s.starts_with("$$") => parse_var(&s[2..], scope),
            Bson::String(s) if s.starts_with('$') => Ok(Expression::Field(parse_path(&s[1..])?)),
            Bson::Array(items) => Ok(Expression::Array(
                items.iter().map(|x| Self::parse_in(x, scope)).collect::<Result<_>>()?,
            )),
            Bson::Document(d) => parse_doc(d, scope),
            other => Ok(Expression::Const(other.clone())),
        }
    }

    /// Evaluates against a document with no user variables.
    pub fn eval_doc(&self, doc: &Document) -> Result<Value> {
        self.eval(&mut Vars::new(doc))
    }

    /// Evaluates with the given variables.
    pub fn eval(&self, vars: &mut Vars) -> Result<Value> {
        match self {
            Expression::Const(v) => Ok(Some(v.clone())),
            Expression::Field(path) => Ok(field_path(vars.root, path)),
            Expression::Var(name, path) => {
                if path.is_empty() {
                    return vars.get(name);
                }
                // A path into a bound variable reads it in place: only the part named is copied
                // (`$$value.total` must not copy a large accumulator to read one field).
                let inside = |v: &Bson| match v {
                    Bson::Document(d) => field_path(d, path),
                    Bson::Array(_) => value_at(v, path.as_slice()),
                    _ => None,
                };
                match vars.bound(name) {
                    Some(v) => Ok(v.as_ref().and_then(inside)),
                    None => Ok(vars.get(name)?.as_ref().and_then(inside)),
                }
            }
            Expression::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for e in items {
                    // Missing elements of an array literal become null, as in MongoDB.
                    out.push(e.eval(vars)?.unwrap_or(Bson::Null));
                }
                Ok(Some(Bson::Array(out)))
            }
            Expression::Object(fields) => {
                let mut out = Document::new();
                for (k, e) in fields {
                    if let Some(v) = e.eval(vars)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Bson::Document(out)))
            }
            Expression::Op(op, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(vars)?);
                }
                (op.eval)(vals)
            }
            Expression::Named(op, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for (k, e) in args {
                    vals.push((k.as_str(), e.eval(vars)?));
                }
                (op.eval)(&vals)
            }
            Expression::OpUnder(op, args, c) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(vars)?);
                }
                match op.collated {
                    Collated::No => (op.eval)(vals),
                    Collated::Keys => (op.eval)(ops::keyed(vals, c)),
                    Collated::Own(f) => f(vals, c),
                }
            }
            Expression::NamedUnder(op, args, c) => {
                let mut vals = Vec::with_capacity(args.len());
                for (k, e) in args {
                    vals.push((k.as_str(), e.eval(vars)?));
                }
                match op.collated {
                    Some(f) => f(&vals, c),
                    None => (op.eval)(&vals),
                }
            }
            Expression::And(args) => {
                for a in args {
                    if !truthy(&a.eval(vars)?) {
                        return Ok(Some(Bson::Boolean(false)));
                    }
                }
                Ok(Some(Bson::Boolean(true)))
            }
            Expression::Or(args) => {
                for a in args {
                    if truthy(&a.eval(vars)?) {
                        return Ok(Some(Bson::Boolean(true)));
                    }
                }
                Ok(Some(Bson::Boolean(false)))
            }
            Expression::IfNull(args) => {
                let Some((last, init)) = args.split_last() else { return Ok(Some(Bson::Null)) };
                for a in init {
                    match a.eval(vars)? {
                        None | Some(Bson::Null) | Some(Bson::Undefined) => continue,
                        v => return Ok(v),
                    }
                }
                last.eval(vars)
            }
            Expression::Let(bindings, body) => {
                let mut vals = Vec::with_capacity(bindings.len());
                for (k, e) in bindings {
                    vals.push((k.clone(), e.eval(vars)?));
                }
                let depth = vars.stack.len();
                vars.stack.extend(vals);
                let out = body.eval(vars);
                vars.stack.truncate(depth);
                out
            }
            Expression::Cond(c, t, f) => {
                if truthy(&c.eval(vars)?) {
                    t.eval(vars)
                } else {
                    f.eval(vars)
                }
            }
            Expression::Switch(branches, default) => {
                for (case, then) in branches {
                    if truthy(&case.eval(vars)?) {
                        return then.eval(vars);
                    }
                }
                match default {
                    Some(d) => d.eval(vars),
                    None => Err(loc(
                        40066,
                        "$switch could not find a matching branch for an input, and no default was specified.",
                    )),
                }
            }
            Expression::Filter(input, name, cond, limit) => {
                eval_filter(input, name, cond, limit.as_deref(), vars)
            }
            Expression::Map(input, name, body) => {
                let Some(items) = array_input(input.eval(vars)?, |t| {
                    loc(16883, format!("input to $map must be an array not {t}"))
                })?
                else {
                    return Ok(Some(Bson::Null));
                };
                let mut out = Vec::with_capacity(items.len());
                let mut bytes = 0usize;
                for item in items {
                    let v =
                        with_var(vars, name, Some(item), |v| body.eval(v))?.unwrap_or(Bson::Null);
                    // Checked while building: each element may be large.
                    bytes = bytes.saturating_add(memory::heap_size(&v));
                    memory::building("$map", bytes)?;
                    out.push(v);
                }
                Ok(Some(Bson::Array(out)))
            }
            Expression::Reduce(input, initial, body) => {
                let Some(items) = array_input(input.eval(vars)?, |t| {
                    loc(40080, format!("$reduce requires that 'input' be an array, found: {t}"))
                })?
                else {
                    return Ok(Some(Bson::Null));
                };
                let mut acc = initial.eval(vars)?;
                // The accumulator is the one value an expression can feed back into itself
                // (doubling a string or an array each step), so its size is bounded and held
                // against the operation at every step. Each `$$value` the body reads copies it,
                // and those copies live while the step builds the next accumulator: a large
                // accumulator is held once for itself and once for each of them.
                let mut held = memory::Reservation::new("$reduce");
                let mut copies = None;
                for item in items {
                    let depth = vars.stack.len();
                    vars.stack.push(("value".to_string(), acc));
                    vars.stack.push(("this".to_string(), Some(item)));
                    let r = body.eval(vars);
                    vars.stack.truncate(depth);
                    acc = r?;
                    let size = match &acc {
                        Some(Bson::String(s)) => s.len(),
                        Some(v @ (Bson::Array(_) | Bson::Document(_))) => memory::heap_size(v),
                        _ => 0,
                    };
                    memory::building("$reduce", size)?;
                    if size >= memory::LARGE_VALUE_BYTES || held.bytes() > 0 {
                        let copies = *copies.get_or_insert_with(|| body.uses_of("value"));
                        let size = size.saturating_mul(1 + copies);
                        let before = held.bytes();
                        if size > before {
                            held.grow(size - before)?;
                        } else {
                            held.shrink(before - size);
                        }
                    }
                }
                Ok(acc)
            }
        }
    }

    /// The expression with the operators that compare values (`$eq`, `$in`, the set
    /// operators, `$max`, `$sortArray`, ...) comparing strings under `c`, at any depth, as
    /// MongoDB compares them under an operation's collation. The tree is rewritten once, so
    /// an expression without a collation pays nothing.
    pub fn with_collation(self, c: &CollationRef) -> Expression {
        let all = |items: Vec<Expression>| -> Vec<Expression> {
            items.into_iter().map(|e| e.with_collation(c)).collect()
        };
        let named = |items: Vec<(String, Expression)>| -> Vec<(String, Expression)> {
            items.into_iter().map(|(k, e)| (k, e.with_collation(c))).collect()
        };
        let boxed = |e: Box<Expression>| Box::new(e.with_collation(c));
        match self {
            e @ (Expression::Const(_) | Expression::Field(_) | Expression::Var(..)) => e,
            Expression::Array(items) => Expression::Array(all(items)),
            Expression::Object(fields) => Expression::Object(named(fields)),
            Expression::Op(op, args) | Expression::OpUnder(op, args, _) => {
                if matches!(op.collated, Collated::No) {
                    Expression::Op(op, all(args))
                } else {
                    Expression::OpUnder(op, all(args), c.clone())
                }
            }
            Expression::Named(op, args) | Expression::NamedUnder(op, args, _) => {
                if op.collated.is_some() {
                    Expression::NamedUnder(op, named(args), c.clone())
                } else {
                    Expression::Named(op, named(args))
                }
            }
            Expression::And(items) => Expression::And(all(items)),
            Expression::Or(items) => Expression::Or(all(items)),
            Expression::IfNull(items) => Expression::IfNull(all(items)),
            Expression::Let(bindings, body) => Expression::Let(named(bindings), boxed(body)),
            Expression::Cond(a, b, e) => Expression::Cond(boxed(a), boxed(b), boxed(e)),
            Expression::Switch(branches, default) => Expression::Switch(
                branches
                    .into_iter()
                    .map(|(case, then)| (case.with_collation(c), then.with_collation(c)))
                    .collect(),
                default.map(boxed),
            ),
            Expression::Filter(input, name, cond, limit) => {
                Expression::Filter(boxed(input), name, boxed(cond), limit.map(boxed))
            }
            Expression::Map(input, name, body) => Expression::Map(boxed(input), name, boxed(body)),
            Expression::Reduce(input, initial, body) => {
                Expression::Reduce(boxed(input), boxed(initial), boxed(body))
            }
        }
    }

    /// How many times the expression reads the variable `name` whole (without a path), at any
    /// depth and in any branch: each such read copies the value. An inner binding of the same
    /// name is counted too, which can only overestimate.
    pub fn uses_of(&self, name: &str) -> usize {
        let all = |items: &[Expression]| items.iter().map(|e| e.uses_of(name)).sum::<usize>();
        let named = |items: &[(String, Expression)]| {
            items.iter().map(|(_, e)| e.uses_of(name)).sum::<usize>()
        };
        match self {
            Expression::Const(_) | Expression::Field(_) => 0,
            Expression::Var(n, path) => usize::from(n == name && path.is_empty()),
            Expression::Array(items)
            | Expression::Op(_, items)
            | Expression::OpUnder(_, items, _)
            | Expression::And(items)
            | Expression::Or(items)
            | Expression::IfNull(items) => all(items),
            Expression::Object(fields)
            | Expression::Named(_, fields)
            | Expression::NamedUnder(_, fields, _) => named(fields),
            Expression::Let(bindings, body) => named(bindings) + body.uses_of(name),
            Expression::Cond(a, b, c) => a.uses_of(name) + b.uses_of(name) + c.uses_of(name),
            Expression::Switch(branches, default) => {
                branches.iter().map(|(c, t)| c.uses_of(name) + t.uses_of(name)).sum::<usize>()
                    + default.as_ref().map_or(0, |d| d.uses_of(name))
            }
            Expression::Filter(input, _, cond, limit) => {
                input.uses_of(name)
                    + cond.uses_of(name)
                    + limit.as_ref().map_or(0, |l| l.uses_of(name))
            }
            Expression::Map(input, _, body) => input.uses_of(name) + body.uses_of(name),
            Expression::Reduce(input, initial, body) => {
                input.uses_of(name) + initial.uses_of(name) + body.uses_of(name)
            }
        }
    }

    /// Whether the expression is a constant (no paths, no variables).
    pub fn is_const(&self) -> bool {
        matches!(self, Expression::Const(_))
    }
}

/// Runs `f` with `name` bound to `value`.
fn with_var<T>(vars: &mut Vars, name: &str, value: Value, f: impl FnOnce(&mut Vars) -> T) -> T {
    let depth = vars.stack.len();
    vars.stack.push((name.to_string(), value));
    let out = f(vars);
    vars.stack.truncate(depth);
    out
}

/// An array argument: `Ok(None)` for null/missing, an error built by `bad` for other types.
fn array_input(v: Value, bad: impl Fn(&str) -> Error) -> Result<Option<Vec<Bson>>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::Array(items)) => Ok(Some(items)),
        Some(other) => Err(bad(type_name(&other))),
    }
}

fn eval_filter(
    input: &Expression,
    name: &str,
    cond: &Expression,
    limit: Option<&Expression>,
    vars: &mut Vars,
) -> Result<Value> {
    let Some(items) = array_input(input.eval(vars)?, |t| {
        loc(28651, format!("input to $filter must be an array not {t}"))
    })?
    else {
        return Ok(Some(Bson::Null));
    };
    let limit = match limit {
        None => usize::MAX,
        Some(l) => match l.eval(vars)? {
            None | Some(Bson::Null) => usize::MAX,
            Some(v) => match ops::as_int(&v) {
                Some(n) if n > 0 => n as usize,
                _ => {
                    return Err(loc(
                        327391,
                        format!(
                            "$filter: limit must be greater than 0: {}",
                            crate::doc::fmt::value_string(&v)
                        ),
                    ));
                }
            },
        },
    };
    let mut out = Vec::new();
    for item in items {
        if out.len() >= limit {
            break;
        }
        let keep = with_var(vars, name, Some(item.clone()), |v| cond.eval(v))?;
        if truthy(&keep) {
            out.push(item);
        }
    }
    Ok(Some(Bson::Array(out)))
}

fn parse_path(path: &str) -> Result<Vec<String>> {
    if path.is_empty() {
        return Err(loc(16872, "'$' by itself is not a valid FieldPath"));
    }
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() {
            return Err(loc(15998, "FieldPath field names may not be empty strings."));
        }
        if part.starts_with('$') {
            return Err(loc(
                16410,
                "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
            ));
        }
        out.push(part.to_string());
    }
    Ok(out)
}

fn parse_var(s: &str, scope: &Scope) -> Result<Expression> {
    let (name, rest) = match s.split_once('.') {
        Some((n, r)) => (n, Some(r)),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(loc(16869, "empty variable name"));
    }
    if !scope.has(name) {
        return Err(loc(17276, format!("Use of undefined variable: {name}")));
    }
    let path = match rest {
        Some(r) => parse_path(r)?,
        None => Vec::new(),
    };
    if name == "CURRENT" {
        return Ok(if path.is_empty() {
            Expression::Var("ROOT".to_string(), path)
        } else {
            Expression::Field(path)
        });
    }
    Ok(Expression::Var(name.to_string(), path))
}

fn parse_doc(d: &Document, scope: &Scope) -> Result<Expression> {
    let Some(first) = d.keys().next() else {
        return Ok(Expression::Object(Vec::new()));
    };
    if !first.starts_with('$') {
        let mut fields = Vec::with_capacity(d.len());
        for (k, v) in d {
            if k.starts_with('$') {
                return Err(loc(
                    16410,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ));
            }
            if k.contains('.') {
                return Err(loc(16412, "FieldPath field names may not contain '.'."));
            }
            fields.push((k.clone(), Expression::parse_in(v, scope)?));
        }
        return Ok(Expression::Object(fields));
    }
    if d.len() != 1 {
        return Err(loc(
            15983,
            format!(
                "an expression specification must contain exactly one field, the name of the expression. Found {} fields in {}",
                d.len(),
                crate::doc::fmt::doc_string(d)
            ),
        ));
    }
    let arg = d.get(first).unwrap_or(&Bson::Null);
    parse_operator(first, arg, scope)
}

fn args_of(arg: &Bson, scope: &Scope) -> Result<Vec<Expression>> {
    match arg {
        Bson::Array(items) => items.iter().map(|x| Expression::parse_in(x, scope)).collect(),
        other => Ok(vec![Expression::parse_in(other, scope)?]),
    }
}

fn parse_operator(name: &str, arg: &Bson, scope: &Scope) -> Result<Expression> {
    match name {
        "$literal" => return Ok(Expression::Const(arg.clone())),
        // The metadata a leading `$text` match or a `$geoNear` stage attached (see
        // `query::text`, `agg::geonear`).
        "$meta" => return Ok(Expression::Field(parse_path(super::meta_field(arg)?)?)),
        "$let" => return parse_let(arg, scope),
        "$cond" => return parse_cond(arg, scope),
        "$switch" => return parse_switch(arg, scope),
        "$filter" => return parse_filter(arg, scope),
        "$map" => return parse_map(arg, scope),
        "$reduce" => return parse_reduce(arg, scope),
        "$rand" => {
            if !matches!(arg, Bson::Document(d) if d.is_empty()) {
                return Err(loc(3040500, "$rand not expecting arguments, but received arguments"));
            }
            if let Some(op) = ops::lookup(name) {
                return Ok(Expression::Op(op, Vec::new()));
            }
        }
        "$and" => return Ok(Expression::And(args_of(arg, scope)?)),
        "$or" => return Ok(Expression::Or(args_of(arg, scope)?)),
        "$ifNull" => {
            let args = args_of(arg, scope)?;
            if args.len() < 2 {
                return Err(loc(
                    1257300,
                    format!("$ifNull needs at least two arguments, had: {}", args.len()),
                ));
            }
            return Ok(Expression::IfNull(args));
        }
        _ => {}
    }
    if let Some(op) = ops::lookup(name) {
        let args = args_of(arg, scope)?;
        if args.len() < op.min || args.len() > op.max {
            return Err(arity_error(op.name, op.min, op.max, args.len()));
        }
        return Ok(Expression::Op(op, args));
    }
    if let Some(op) = ops::lookup_named(name) {
        return parse_named(op, arg, scope);
    }
    if let Some(op) = ops::lookup_date_part(name) {
        return parse_date_part(op, arg, scope);
    }
    if let Some(e) = crate::api_strict::not_in_version_1(name) {
        return Err(e);
    }
    Err(Error::new(Code::InvalidPipelineOperator, format!("Unrecognized expression '{name}'")))
}

fn arity_error(op: &str, min: usize, max: usize, got: usize) -> Error {
    if min == max {
        return loc(
            16020,
            format!("Expression {op} takes exactly {min} arguments. {got} were passed in."),
        );
    }
    if max == usize::MAX {
        return loc(
            16020,
            format!("Expression {op} takes at least {min} arguments, and {got} were passed in."),
        );
    }
    loc(
        16020,
        format!(
            "Expression {op} takes at least {min} arguments, and at most {max}, but {got} were passed in."
        ),
    )
}

fn parse_named(op: &'static NamedOperator, arg: &Bson, scope: &Scope) -> Result<Expression> {
    let name = op.name;
    let [not_object, unknown, missing] = op.codes;
    let get_field = name == "$getField";
    let spec = match arg {
        // `$getField: {$literal: "$price"}` (an expression rather than named arguments) is
        // shorthand for `{field: ...}`, as `$getField: "name"` is: how a top-level field whose
        // name starts with `$` is read.
        Bson::Document(d) if get_field && d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            return Ok(Expression::Named(
                op,
                vec![
                    ("field".to_string(), Expression::parse_in(arg, scope)?),
                    ("input".to_string(), Expression::Var("ROOT".to_string(), Vec::new())),
                ],
            ));
        }
        Bson::Document(d) => d,
        // `$getField: "name"` is shorthand for `{field: "name"}`.
        Bson::String(_) if get_field => {
            return Ok(Expression::Named(
                op,
                vec![
                    ("field".to_string(), Expression::Const(arg.clone())),
                    ("input".to_string(), Expression::Var("ROOT".to_string(), Vec::new())),
                ],
            ));
        }
        // `$trim`-like and date operators document their errors with the operator name.
        other => {
            return Err(loc(
                not_object,
                format!(
                    "{name} only supports an object as its argument, found: {}",
                    type_name(other)
                ),
            ));
        }
    };
    let mut out = Vec::new();
    for (k, v) in spec {
        if !op.required.contains(&k.as_str()) && !op.optional.contains(&k.as_str()) {
            return Err(loc(unknown, format!("{name} found an unknown argument: {k}")));
        }
        out.push((k.clone(), Expression::parse_in(v, scope)?));
    }
    for r in op.required {
        if !spec.contains_key(*r) {
            if get_field && *r == "field" {
                return Err(loc(missing, "$getField requires 'field' to be specified"));
            }
            return Err(loc(missing, format!("Missing '{r}' parameter to {name}")));
        }
    }
    if get_field && !spec.contains_key("input") {
        out.push(("input".to_string(), Expression::Var("ROOT".to_string(), Vec::new())));
    }
    Ok(Expression::Named(op, out))
}

fn parse_date_part(op: &'static NamedOperator, arg: &Bson, scope: &Scope) -> Result<Expression> {
    let arg = match arg {
        Bson::Array(items) => match items.as_slice() {
            [one] => one,
            _ => return Err(arity_error(op.name, 1, 1, items.len())),
        },
        other => other,
    };
    if let Bson::Document(d) = arg
        && d.contains_key("date")
    {
        let mut out = Vec::new();
        for (k, v) in d {
            match k.as_str() {
                "date" | "timezone" => out.push((k.clone(), Expression::parse_in(v, scope)?)),
                other => {
                    return Err(loc(
                        40535,
                        format!("unrecognized option to {}: \"{other}\"", op.name),
                    ));
                }
            }
        }
        return Ok(Expression::Named(op, out));
    }
    Ok(Expression::Named(op, vec![("date".to_string(), Expression::parse_in(arg, scope)?)]))
}

fn parse_let(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let Bson::Document(spec) = arg else {
        return Err(loc(16874, "$let only supports an object as its argument"));
    };
    let mut vars_spec = None;
    let mut body = None;
    for (k, v) in spec {
        match k.as_str() {
            "vars" => vars_spec = Some(v),
            "in" => body = Some(v),
            other => return Err(loc(16875, format!("Unrecognized parameter to $let: {other}"))),
        }
    }
    let Some(vars_spec) = vars_spec else {
        return Err(loc(16876, "Missing 'vars' parameter to $let"));
    };
    let Some(body) = body else {
        return Err(loc(16877, "Missing 'in' parameter to $let"));
    };
    let Bson::Document(vars_doc) = vars_spec else {
        return Err(loc(10065, "invalid parameter: expected an object (vars)"));
    };
    let mut bindings = Vec::new();
    for (name, v) in vars_doc {
        validate_var_name(name)?;
        bindings.push((name.clone(), Expression::parse_in(v, scope)?));
    }
    let names: Vec<&str> = vars_doc.keys().map(String::as_str).collect();
    let inner = scope.push(&names);
    Ok(Expression::Let(bindings, Box::new(Expression::parse_in(body, &inner)?)))
}

/// User variable names start with a lowercase letter or a non-ASCII character and contain only
/// letters, digits and underscores.
pub fn validate_var_name(name: &str) -> Result<()> {
    let Some(first) = name.chars().next() else {
        return Err(loc(16866, "empty variable names are not allowed"));
    };
    if !first.is_ascii_lowercase() && first.is_ascii() {
        return Err(loc(
            16867,
            format!("'{name}' starts with an invalid character for a user variable name"),
        ));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || !c.is_ascii()))
    {
        return Err(loc(
            16868,
            format!("'{name}' contains an invalid character for a variable name: '{c}'"),
        ));
    }
    Ok(())
}

fn parse_cond(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let (c, t, f) = match arg {
        Bson::Document(spec) => {
            let (mut c, mut t, mut f) = (None, None, None);
            for (k, v) in spec {
                match k.as_str() {
                    "if" => c = Some(v),
                    "then" => t = Some(v),
                    "else" => f = Some(v),
                    other => {
                        return Err(loc(
                            17083,
                            format!("Unrecognized parameter to $cond: {other}"),
                        ));
                    }
                }
            }
            let c = c.ok_or_else(|| loc(17080, "Missing 'if' parameter to $cond"))?;
            let t = t.ok_or_else(|| loc(17081, "Missing 'then' parameter to $cond"))?;
            let f = f.ok_or_else(|| loc(17082, "Missing 'else' parameter to $cond"))?;
            (c.clone(), t.clone(), f.clone())
        }
        Bson::Array(items) if items.len() == 3 => {
            (items[0].clone(), items[1].clone(), items[2].clone())
        }
        Bson::Array(items) => return Err(arity_error("$cond", 3, 3, items.len())),
        _ => return Err(arity_error("$cond", 3, 3, 1)),
    };
    Ok(Expression::Cond(
        Box::new(Expression::parse_in(&c, scope)?),
        Box::new(Expression::parse_in(&t, scope)?),
        Box::new(Expression::parse_in(&f, scope)?),
    ))
}

fn parse_switch(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let Bson::Document(spec) = arg else {
        return Err(loc(
            40060,
            format!("$switch requires an object as an argument, found: {}", type_name(arg)),
        ));
    };
    let mut branches = Vec::new();
    let mut default = None;
    for (k, v) in spec {
        match k.as_str() {
            "branches" => {
                let Bson::Array(items) = v else {
                    return Err(loc(
                        40061,
                        format!(
                            "$switch expected an array for 'branches', found: {}",
                            type_name(v)
                        ),
                    ));
                };
                for b in items {
                    branches.push(parse_branch(b, scope)?);
                }
            }
            "default" => default = Some(Box::new(Expression::parse_in(v, scope)?)),
            other => return Err(loc(40067, format!("$switch found an unknown argument: {other}"))),
        }
    }
    if branches.is_empty() {
        return Err(loc(40068, "$switch requires at least one branch."));
    }
    Ok(Expression::Switch(branches, default))
}

fn parse_branch(b: &Bson, scope: &Scope) -> Result<(Expression, Expression)> {
    let Bson::Document(branch) = b else {
        return Err(loc(
            40062,
            format!("$switch expected each branch to be an object, found: {}", type_name(b)),
        ));
    };
    let (mut case, mut then) = (None, None);
    for (k, v) in branch {
        match k.as_str() {
            "case" => case = Some(Expression::parse_in(v, scope)?),
            "then" => then = Some(Expression::parse_in(v, scope)?),
            other => {
                return Err(loc(
                    40063,
                    format!("$switch found an unknown argument to a branch: {other}"),
                ));
            }
        }
    }
    let case =
        case.ok_or_else(|| loc(40064, "$switch requires each branch have a 'case' expression"))?;
    let then =
        then.ok_or_else(|| loc(40065, "$switch requires each branch have a 'then' expression."))?;
    Ok((case, then))
}

/// The `input`/`as`/`cond`-style argument object of `$filter` and `$map`.
fn iteration_spec<'a>(
    op: &str,
    arg: &'a Bson,
    allowed: &[&str],
    codes: (i32, i32),
) -> Result<&'a Document> {
    let Bson::Document(spec) = arg else {
        return Err(loc(codes.0, format!("{op} only supports an object as its argument")));
    };
    for k in spec.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(loc(codes.1, format!("Unrecognized parameter to {op}: {k}")));
        }
    }
    Ok(spec)
}

fn var_name_of(spec: &Document, default: &str) -> Result<String> {
    match spec.get("as") {
        None => Ok(default.to_string()),
        Some(Bson::String(s)) => {
            validate_var_name(s)?;
            Ok(s.clone())
        }
        Some(_) => Err(loc(16866, "empty variable names are not allowed")),
    }
}

fn parse_filter(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let spec = iteration_spec("$filter", arg, &["input", "as", "cond", "limit"], (28646, 28647))?;
    let input =
        spec.get("input").ok_or_else(|| loc(28648, "Missing 'input' parameter to $filter"))?;
    let cond = spec.get("cond").ok_or_else(|| loc(28650, "Missing 'cond' parameter to $filter"))?;
    let name = var_name_of(spec, "this")?;
    let inner = scope.push(&[name.as_str()]);
    let limit = match spec.get("limit") {
        Some(l) => Some(Box::new(Expression::parse_in(l, scope)?)),
        None => None,
    };
    Ok(Expression::Filter(
        Box::new(Expression::parse_in(input, scope)?),
        name,
        Box::new(Expression::parse_in(cond, &inner)?),
        limit,
    ))
}

fn parse_map(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let spec = iteration_spec("$map", arg, &["input", "as", "in"], (16878, 16879))?;
    let input = spec.get("input").ok_or_else(|| loc(16880, "Missing 'input' parameter to $map"))?;
    let body = spec.get("in").ok_or_else(|| loc(16882, "Missing 'in' parameter to $map"))?;
    let name = var_name_of(spec, "this")?;
    let inner = scope.push(&[name.as_str()]);
    Ok(Expression::Map(
        Box::new(Expression::parse_in(input, scope)?),
        name,
        Box::new(Expression::parse_in(body, &inner)?),
    ))
}

fn parse_reduce(arg: &Bson, scope: &Scope) -> Result<Expression> {
    let Bson::Document(spec) = arg else {
        return Err(loc(
            40075,
            format!("$reduce requires an object as an argument, found: {}", type_name(arg)),
        ));
    };
    let (mut input, mut initial, mut body) = (None, None, None);
    for (k, v) in spec {
        match k.as_str() {
            "input" => input = Some(v),
            "initialValue" => initial = Some(v),
            "in" => body = Some(v),
            other => return Err(loc(40076, format!("$reduce found an unknown argument: {other}"))),
        }
    }
    let input = input.ok_or_else(|| loc(40077, "$reduce requires 'input' to be specified"))?;
    let initial =
        initial.ok_or_else(|| loc(40078, "$reduce requires 'initialValue' to be specified"))?;
    let body = body.ok_or_else(|| loc(40079, "$reduce requires 'in' to be specified"))?;
    let inner = scope.push(&["this", "value"]);
    Ok(Expression::Reduce(
        Box::new(Expression::parse_in(input, scope)?),
        Box::new(Expression::parse_in(initial, scope)?),
        Box::new(Expression::parse_in(body, &inner)?),
    ))
}

/// Aggregation field-path semantics: arrays on the way are mapped over (elements where the
/// path is missing are dropped), and numeric components are field names, not indexes.
pub fn field_path<S: AsRef<str>>(doc: &Document, path: &[S]) -> Value {
    let (first, rest) = path.split_first()?;
    value_at(doc.get(first.as_ref())?, rest)
}

fn value_at<S: AsRef<str>>(v: &Bson, rest: &[S]) -> Value {
    let Some((head, tail)) = rest.split_first() else {
        return Some(v.clone());
    };
    match v {
        Bson::Document(d) => value_at(d.get(head.as_ref())?, tail),
        Bson::Array(items) => Some(Bson::Array(
            items
                .iter()
                .filter(|e| matches!(e, Bson::Document(_) | Bson::Array(_)))
                .filter_map(|e| value_at(e, rest))
                .collect(),
        )),
        _ => None,
    }
}
