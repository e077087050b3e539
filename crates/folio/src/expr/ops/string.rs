//! String operators: concatenation, substrings, case, splitting, searching, trimming, regular
//! expressions and replacement.
//!
//! Lengths and positions are in code points for the `CP` operators and in UTF-8 bytes for the
//! `Bytes` ones, as in MongoDB. A result that can grow past MongoDB's 64 MiB string buffer is
//! measured before it is built (`string_limit`).

use std::cell::RefCell;
use std::rc::Rc;

use bson::Bson;

use super::{Args, MANY, NamedOperator, Operator, as_int, b, fixed, get, given, named, null, op};
use crate::doc::compare::Number;
use crate::doc::fmt::value_string;
use crate::error::Result;
use crate::expr::{Value, date, loc, type_name, value_type};
use crate::memory;
use crate::pcre::{Found, MatchLimit, Pcre};

/// The string operators with positional arguments, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$concat", 0, MANY, concat),
    op("$substrCP", 3, 3, substr_cp),
    op("$substr", 3, 3, |v| substr_bytes("$substr", v)),
    op("$substrBytes", 3, 3, |v| substr_bytes("$substrBytes", v)),
    op("$toUpper", 1, 1, |v| {
        let [x] = fixed(v);
        Ok(Some(Bson::String(coerce_string(&x)?.to_uppercase())))
    }),
    op("$toLower", 1, 1, |v| {
        let [x] = fixed(v);
        Ok(Some(Bson::String(coerce_string(&x)?.to_lowercase())))
    }),
    op("$split", 2, 2, |v| {
        let [s, sep] = fixed(v);
        split(&s, &sep)
    }),
    op("$strLenCP", 1, 1, |v| str_len("$strLenCP", 34471, v, |s| s.chars().count())),
    op("$strLenBytes", 1, 1, |v| str_len("$strLenBytes", 34473, v, str::len)),
    op("$strcasecmp", 2, 2, |v| {
        let [x, y] = fixed(v);
        let x = coerce_string(&x)?.to_lowercase();
        let y = coerce_string(&y)?.to_lowercase();
        Ok(Some(Bson::Int32(x.cmp(&y) as i32)))
    }),
    op("$indexOfCP", 2, 4, index_of_cp),
    op("$indexOfBytes", 2, 4, index_of_bytes),
];

/// The string operators with named arguments, with their argument names and the location
/// codes of a malformed argument object.
pub(super) const NAMED: &[NamedOperator] = &[
    named("$trim", &["input"], &["chars"], TRIM_CODES, |a| trim("$trim", a, Side::Both)),
    named("$ltrim", &["input"], &["chars"], TRIM_CODES, |a| trim("$ltrim", a, Side::Start)),
    named("$rtrim", &["input"], &["chars"], TRIM_CODES, |a| trim("$rtrim", a, Side::End)),
    named("$regexMatch", &["input", "regex"], &["options"], REGEX_CODES, |a| {
        regex_op("$regexMatch", a, RegexOutput::Match)
    }),
    named("$regexFind", &["input", "regex"], &["options"], REGEX_CODES, |a| {
        regex_op("$regexFind", a, RegexOutput::First)
    }),
    named("$regexFindAll", &["input", "regex"], &["options"], REGEX_CODES, |a| {
        regex_op("$regexFindAll", a, RegexOutput::All)
    }),
    named("$replaceOne", &["input", "find", "replacement"], &[], REPLACE_CODES, |a| {
        replace("$replaceOne", a, false)
    }),
    named("$replaceAll", &["input", "find", "replacement"], &[], REPLACE_CODES, |a| {
        replace("$replaceAll", a, true)
    }),
];

const TRIM_CODES: [i32; 3] = [50696, 50694, 50695];
const REGEX_CODES: [i32; 3] = [51103, 31024, 31022];
const REPLACE_CODES: [i32; 3] = [51751, 51750, 51749];

fn concat(vals: Vec<Value>) -> Result<Value> {
    let mut parts = Vec::with_capacity(vals.len());
    for v in &vals {
        match string_arg("$concat", 16702, v)? {
            Some(s) => parts.push(s),
            None => return null(),
        }
    }
    // The length is known before anything is copied: check it first.
    let len = parts.iter().map(String::len).sum();
    let _building = string_limit("$concat", len)?;
    let mut out = String::with_capacity(len);
    for p in &parts {
        out.push_str(p);
    }
    Ok(Some(Bson::String(out)))
}

fn substr_bytes(op: &str, vals: Vec<Value>) -> Result<Value> {
    let [s, start, len] = fixed(vals);
    let s = coerce_string(&s)?;
    let start = start.as_ref().and_then(as_int).unwrap_or(0).max(0) as usize;
    let len = len.as_ref().and_then(as_int).unwrap_or(-1);
    let bytes = s.as_bytes();
    let start = start.min(bytes.len());
    let end = if len < 0 { bytes.len() } else { (start + len as usize).min(bytes.len()) };
    match std::str::from_utf8(&bytes[start..end]) {
        Ok(sub) => Ok(Some(Bson::String(sub.to_string()))),
        Err(_) => Err(loc(
            28656,
            format!("{op}:  Invalid range, starting index is a UTF-8 continuation byte."),
        )),
    }
}

fn str_len(op: &str, code: i32, vals: Vec<Value>, len: fn(&str) -> usize) -> Result<Value> {
    let [x] = fixed(vals);
    match &x {
        Some(Bson::String(s)) => Ok(Some(Bson::Int32(len(s) as i32))),
        other => {
            Err(loc(code, format!("{op} requires a string argument, found: {}", value_type(other))))
        }
    }
}

/// The string and token of `$indexOfBytes` and `$indexOfCP`, with MongoDB's checks (a null or
/// missing string gives `None`, the operator's null).
fn search_args(
    op: &str,
    codes: [i32; 2],
    s: Value,
    token: Value,
) -> Result<Option<(String, String)>> {
    let s = match s {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(None),
        Some(Bson::String(s)) => s,
        other => {
            return Err(loc(
                codes[0],
                format!(
                    "{op} requires a string as the first argument, found: {}",
                    value_type(&other)
                ),
            ));
        }
    };
    match token {
        Some(Bson::String(t)) => Ok(Some((s, t))),
        other => Err(loc(
            codes[1],
            format!("{op} requires a string as the second argument, found: {}", value_type(&other)),
        )),
    }
}

/// A starting or ending index of `$indexOfBytes` and `$indexOfCP`: a non-negative number
/// representable as a 32-bit integer (40096, 40097, with MongoDB's messages).
fn search_index(op: &str, what: &str, v: &Value) -> Result<usize> {
    let shown = v.as_ref().map_or("MISSING".to_string(), value_string);
    let n = v.as_ref().and_then(as_int).and_then(|n| i32::try_from(n).ok());
    let Some(n) = n else {
        return Err(loc(
            40096,
            format!(
                "{op}requires an integral {what}, found a value of type: {}, with value: {shown}",
                value_type(v)
            ),
        ));
    };
    usize::try_from(n)
        .map_err(|_| loc(40097, format!("{op} requires a nonnegative {what}, found: {shown}")))
}

/// `$indexOfBytes`: the byte offset of the token's first occurrence that lies wholly within
/// `[start, end)`, or -1.
fn index_of_bytes(vals: Vec<Value>) -> Result<Value> {
    let n = vals.len();
    let [s, token, start, end] = fixed(vals);
    let op = "$indexOfBytes";
    let Some((s, token)) = search_args(op, [40091, 40092], s, token)? else { return null() };
    let start = if n > 2 { search_index(op, "starting index", &start)? } else { 0 };
    let end = if n > 3 { search_index(op, "ending index", &end)?.min(s.len()) } else { s.len() };
    if start > s.len() || end < start {
        return Ok(Some(Bson::Int32(-1)));
    }
    let hay = &s.as_bytes()[..end];
    let found = (start..=hay.len().saturating_sub(token.len()))
        .find(|&i| hay.get(i..i + token.len()) == Some(token.as_bytes()));
    Ok(Some(Bson::Int32(found.map_or(-1, |i| i as i32))))
}

/// `$indexOfCP`: the code-point index of the token's first occurrence starting in
/// `[start, end)` (the token may run past `end`, as in MongoDB), or -1.
fn index_of_cp(vals: Vec<Value>) -> Result<Value> {
    let n = vals.len();
    let [s, token, start, end] = fixed(vals);
    let op = "$indexOfCP";
    let Some((s, token)) = search_args(op, [40093, 40094], s, token)? else { return null() };
    let start = if n > 2 { search_index(op, "starting index", &start)? } else { 0 };
    // The byte offset of every code point, then the string's end.
    let offsets: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let length = offsets.len() - 1;
    let end = if n > 3 { search_index(op, "ending index", &end)?.min(length) } else { length };
    if end < start {
        return Ok(Some(Bson::Int32(-1)));
    }
    if start == 0 && s.is_empty() && token.is_empty() {
        return Ok(Some(Bson::Int32(0)));
    }
    let found = (start..end).find(|&cp| s.as_bytes()[offsets[cp]..].starts_with(token.as_bytes()));
    Ok(Some(Bson::Int32(found.map_or(-1, |i| i as i32))))
}

fn trim(op: &str, args: &Args, side: Side) -> Result<Value> {
    let Some(s) = trim_string(op, &get(args, "input"), "input")? else { return null() };
    let chars: Option<Vec<char>> = match given(args, "chars") {
        None => None,
        Some(v) => match trim_string(op, v, "chars")? {
            Some(c) => Some(c.chars().collect()),
            None => return null(),
        },
    };
    let pred = |c: char| match &chars {
        Some(set) => set.contains(&c),
        None => c.is_whitespace() || c == '\0',
    };
    let out = match side {
        Side::Both => s.trim_matches(pred),
        Side::Start => s.trim_start_matches(pred),
        Side::End => s.trim_end_matches(pred),
    };
    Ok(Some(Bson::String(out.to_string())))
}

/// Which ends of the string a trim operator cuts.
#[derive(Clone, Copy)]
enum Side {
    Both,
    Start,
    End,
}

fn replace(op: &'static str, args: &Args, all: bool) -> Result<Value> {
    let mut strs: [String; 3] = Default::default();
    for (slot, k) in strs.iter_mut().zip(["input", "find", "replacement"]) {
        match get(args, k) {
            None | Some(Bson::Null) => return null(),
            Some(Bson::String(s)) => *slot = s,
            Some(other) => {
                return Err(loc(
                    51746,
                    format!(
                        "{op} requires that '{k}' be a string, found: {}",
                        value_string(&other)
                    ),
                ));
            }
        }
    }
    let [input, find, replacement] = strs;
    let out = if !all {
        input.replacen(&find, &replacement, 1)
    } else {
        // Each match may grow the string: know the result's length before building it.
        let _building = if replacement.len() > find.len() && !find.is_empty() {
            let n = input.matches(find.as_str()).count();
            string_limit(op, input.len() + n * (replacement.len() - find.len()))?
        } else {
            None
        };
        input.replace(&find, &replacement)
    };
    Ok(Some(Bson::String(out)))
}

/// What a regular-expression operator returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RegexOutput {
    /// `$regexMatch`: whether it matches.
    Match,
    /// `$regexFind`: the first match.
    First,
    /// `$regexFindAll`: every match.
    All,
}

/// A string argument: `Ok(None)` for null/missing.
fn string_arg(op: &str, code: i32, v: &Value) -> Result<Option<String>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(s)) | Some(Bson::Symbol(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(loc(code, format!("{op} only supports strings, not {}", type_name(other))))
        }
    }
}

/// The string form `$toUpper`/`$toLower`/`$substr` use: numbers and dates convert, null is "".
pub(crate) fn coerce_string(v: &Value) -> Result<String> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(String::new()),
        Some(Bson::String(s)) | Some(Bson::Symbol(s)) => Ok(s.clone()),
        Some(x @ (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_))) => {
            Ok(number_string(x))
        }
        Some(Bson::DateTime(d)) => {
            Ok(date::format_utc(d.timestamp_millis(), "%Y-%m-%dT%H:%M:%S.%LZ"))
        }
        Some(other) => {
            Err(loc(16007, format!("can't convert from BSON type {} to String", type_name(other))))
        }
    }
}

pub(crate) fn number_string(v: &Bson) -> String {
    match v {
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(d) => double_string(*d),
        Bson::Decimal128(d) => d.to_string(),
        other => value_string(other),
    }
}

pub(crate) fn double_string(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() }
    } else if d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

fn substr_cp(vals: Vec<Value>) -> Result<Value> {
    let [s, start, len] = fixed(vals);
    let s = match &s {
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            return Ok(Some(Bson::String(String::new())));
        }
        v => coerce_string(v)?,
    };
    let start = match &start {
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(loc(34455, "$substrCP: starting index must be non-negative")),
            None => {
                return Err(loc(
                    34451,
                    "$substrCP: starting index cannot be represented as a 32-bit integral value",
                ));
            }
        },
        v => {
            return Err(loc(
                34450,
                format!(
                    "$substrCP: starting index must be a numeric type (is BSON type {})",
                    value_type(v)
                ),
            ));
        }
    };
    let len = match &len {
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(loc(34454, "$substrCP: length must be a nonnegative integer.")),
            None => {
                return Err(loc(
                    34453,
                    "$substrCP: length cannot be represented as a 32-bit integral value",
                ));
            }
        },
        v => {
            return Err(loc(
                34452,
                format!(
                    "$substrCP: length must be a numeric type (is BSON type {})",
                    value_type(v)
                ),
            ));
        }
    };
    Ok(Some(Bson::String(s.chars().skip(start).take(len).collect())))
}

fn split(a: &Value, b: &Value) -> Result<Value> {
    let s = match a {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
        Some(Bson::String(s)) => s,
        Some(o) => {
            return Err(loc(
                40085,
                format!(
                    "$split requires an expression that evaluates to a string as a first argument, found: {}",
                    type_name(o)
                ),
            ));
        }
    };
    let sep = match b {
        Some(Bson::String(s)) => s,
        other => {
            return Err(loc(
                40086,
                format!(
                    "$split requires an expression that evaluates to a string as a second argument, found: {}",
                    value_type(other)
                ),
            ));
        }
    };
    if sep.is_empty() {
        return Err(loc(40087, "$split requires a non-empty separator"));
    }
    // A short separator can turn one string into millions of elements, each a whole `Bson`:
    // count them before building the array.
    let parts = s.matches(sep.as_str()).count() + 1;
    memory::building("$split", parts.saturating_mul(memory::heap_size(&Bson::Null)) + s.len())?;
    Ok(Some(Bson::Array(s.split(sep.as_str()).map(|p| Bson::String(p.to_string())).collect())))
}

/// MongoDB builds strings in a buffer of at most 64 MiB; a longer result fails as it does there.
/// The string's bytes are held while it is built ([`memory::hold`]).
pub(crate) fn string_limit(op: &'static str, len: usize) -> Result<Option<memory::Reservation>> {
    if len > memory::MAX_BUFFER_BYTES {
        return Err(loc(
            13548,
            format!("BufBuilder attempted to grow() to {len} bytes, past the 64MB limit."),
        ));
    }
    memory::hold(op, len)
}

fn trim_string(op: &str, v: &Value, what: &str) -> Result<Option<String>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(loc(
            50699,
            format!(
                "{op} requires its {what} to be a string, got {} (of type {}) instead.",
                value_string(other),
                type_name(other)
            ),
        )),
    }
}

fn regex_op(name: &str, args: &Args, output: RegexOutput) -> Result<Value> {
    let input = get(args, "input");
    let (pattern, mut flags) = match get(args, "regex") {
        Some(Bson::String(p)) => (p, String::new()),
        Some(Bson::RegularExpression(r)) => (r.pattern.to_string(), r.options.to_string()),
        None | Some(Bson::Null) => {
            return match output {
                RegexOutput::Match => b(false),
                RegexOutput::All => Ok(Some(Bson::Array(Vec::new()))),
                RegexOutput::First => null(),
            };
        }
        Some(other) => {
            return Err(loc(51105, format!("{name} needs 'regex' to be of type string or regex")))
                .map(|_: ()| Some(other));
        }
    };
    match get(args, "options") {
        Some(Bson::String(o)) if !o.is_empty() && !flags.is_empty() => {
            return Err(loc(
                51107,
                format!(
                    "{name} found regex option(s) specified in both 'regex' and 'option' fields"
                ),
            ));
        }
        Some(Bson::String(o)) => flags.push_str(&o),
        None | Some(Bson::Null) => {}
        Some(_) => return Err(loc(51106, format!("{name} needs 'options' to be of type string"))),
    }
    if let Some(bad) = flags.chars().find(|c| !matches!(c, 'i' | 'm' | 's' | 'x' | 'u')) {
        return Err(loc(51108, format!("{name} invalid flag in regex options: {bad}")));
    }
    let s = match input {
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            return match output {
                RegexOutput::Match => b(false),
                RegexOutput::All => Ok(Some(Bson::Array(Vec::new()))),
                RegexOutput::First => null(),
            };
        }
        Some(Bson::String(s)) => s,
        Some(_) => return Err(loc(51104, format!("{name} needs 'input' to be of type string"))),
    };
    let re = compiled_regex(&pattern, &flags)
        .map_err(|e| loc(51111, format!("Invalid Regex in {name}: {e}")))?;
    // MongoDB reports a match's position in code points, not bytes.
    let found = |m: Found| {
        Bson::Document(bson::doc! {
            "match": m.text,
            "idx": s[..m.start].chars().count() as i32,
            "captures": m.groups.into_iter().map(|g| g.map_or(Bson::Null, Bson::String)).collect::<Vec<_>>(),
        })
    };
    let limit = |e: MatchLimit| e.error(name);
    match output {
        RegexOutput::Match => b(re.is_match(&s).map_err(limit)?),
        RegexOutput::First => Ok(Some(re.find(&s).map_err(limit)?.map_or(Bson::Null, found))),
        RegexOutput::All => {
            Ok(Some(Bson::Array(re.find_all(&s).map_err(limit)?.into_iter().map(found).collect())))
        }
    }
}

/// Compiles a pattern of the regex operators, reusing the last one this thread compiled: the
/// operators are evaluated once per document, almost always with the same constant pattern.
fn compiled_regex(pattern: &str, flags: &str) -> std::result::Result<Rc<Pcre>, String> {
    thread_local! {
        static LAST: RefCell<Option<(String, String, Rc<Pcre>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        if let Some((p, f, re)) = &*last.borrow()
            && p == pattern
            && f == flags
        {
            return Ok(re.clone());
        }
        let re = Rc::new(Pcre::compile(pattern, flags)?);
        *last.borrow_mut() = Some((pattern.to_string(), flags.to_string(), re.clone()));
        Ok(re)
    })
}
