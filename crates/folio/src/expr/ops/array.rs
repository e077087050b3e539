//! Array and set operators: size, element access, membership, concatenation, slicing,
//! reversal, search, ranges, set algebra, sorting and zipping.
//!
//! Arrays that an operator builds from its inputs (`$concatArrays`, `$range`) are measured
//! against [`crate::memory`]'s limits before they are built, so a result too large for the
//! operation is refused before it exists. Set operators treat arrays as sets under MongoDB's
//! value equality and keep the first occurrence of each value.

use std::borrow::Cow;

use bson::Bson;

use super::{
    Args, Collated, MANY, NamedOperator, Operator, array_arg, as_int, b, fixed, get, is_nullish,
    named, null, op,
};
use crate::collation::{Collation, CollationRef};
use crate::doc::compare::{Number, bson_eq, cmp_bson};
use crate::doc::fmt::value_string;
use crate::doc::sort::SortSpec;
use crate::error::{Code, Error, Result};
use crate::expr::ops::arith::int_result;
use crate::expr::{Value, loc, truthy, type_name, value_type};
use crate::memory;

/// The array and set operators with positional arguments, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$size", 1, 1, |v| {
        let [x] = fixed(v);
        match &x {
            Some(Bson::Array(items)) => Ok(Some(Bson::Int32(items.len() as i32))),
            other => Err(loc(
                17124,
                format!(
                    "The argument to $size must be an array. Type of argument: {}",
                    value_type(other)
                ),
            )),
        }
    }),
    op("$arrayElemAt", 2, 2, |v| {
        let [a, i] = fixed(v);
        array_elem_at(&a, &i)
    }),
    op("$in", 2, 2, |v| {
        let [x, a] = fixed(v);
        match &a {
            Some(Bson::Array(items)) => {
                let present = x.is_some();
                let x = x.unwrap_or(Bson::Null);
                b(present && items.iter().any(|y| bson_eq(&x, y)))
            }
            other => Err(loc(
                40081,
                format!("$in requires an array as a second argument, found: {}", value_type(other)),
            )),
        }
    })
    .collated(Collated::Keys),
    op("$concatArrays", 0, MANY, concat_arrays),
    op("$slice", 2, 3, slice),
    op("$first", 1, 1, |v| first_last("$first", v, <[Bson]>::first)),
    op("$last", 1, 1, |v| first_last("$last", v, <[Bson]>::last)),
    op("$isArray", 1, 1, |v| {
        let [x] = fixed(v);
        b(matches!(x, Some(Bson::Array(_))))
    }),
    op("$reverseArray", 1, 1, |v| {
        let [x] = fixed(v);
        match array_arg(&x, |t| {
            loc(
                34435,
                format!("The argument to $reverseArray must be an array, but was of type: {t}"),
            )
        })? {
            Some(items) => Ok(Some(Bson::Array(items.iter().rev().cloned().collect()))),
            None => null(),
        }
    }),
    op("$indexOfArray", 2, 4, index_of_array).collated(Collated::Keys),
    op("$range", 2, 3, range),
    op("$setUnion", 0, MANY, |v| set_fold("$setUnion", 17043, v, true, None))
        .collated(Collated::Own(|v, c| set_fold("$setUnion", 17043, v, true, Some(c.as_ref())))),
    op("$setIntersection", 0, MANY, |v| set_fold("$setIntersection", 17047, v, false, None))
        .collated(Collated::Own(|v, c| {
            set_fold("$setIntersection", 17047, v, false, Some(c.as_ref()))
        })),
    op("$setDifference", 2, 2, |v| set_difference(v, None))
        .collated(Collated::Own(|v, c| set_difference(v, Some(c.as_ref())))),
    op("$setIsSubset", 2, 2, |v| {
        let [x, y] = fixed(v);
        let a = set_of("$setIsSubset", &x, 17046, None)?.unwrap_or_default();
        let c = set_of("$setIsSubset", &y, 17042, None)?.unwrap_or_default();
        b(a.iter().all(|x| contains(&c, x)))
    })
    .collated(Collated::Keys),
    op("$setEquals", 2, MANY, |v| {
        let mut sets = Vec::with_capacity(v.len());
        for x in &v {
            sets.push(set_of("$setEquals", x, 17044, None)?.unwrap_or_default());
        }
        let Some(first) = sets.first() else { return b(true) };
        b(sets.iter().all(|s| s.len() == first.len() && s.iter().all(|x| contains(first, x))))
    })
    .collated(Collated::Keys),
    op("$anyElementTrue", 1, 1, |v| elements_true("$anyElementTrue", v, true)),
    op("$allElementsTrue", 1, 1, |v| elements_true("$allElementsTrue", v, false)),
];

/// The array operators with named arguments, with their argument names and the location
/// codes of a malformed argument object.
pub(super) const NAMED: &[NamedOperator] = &[
    named("$sortArray", &["input", "sortBy"], &[], [2942500, 2942501, 2942502], |a| {
        sort_array(a, None)
    })
    .collated(|a, c| sort_array(a, Some(c))),
    named("$zip", &["inputs"], &["useLongestLength", "defaults"], [34460, 34464, 34461], zip),
];

fn concat_arrays(vals: Vec<Value>) -> Result<Value> {
    // Measure the inputs before copying them, so that a result too large for the operation
    // is refused before it exists.
    let (mut len, mut bytes) = (0usize, 0usize);
    for v in &vals {
        match array_arg(v, |t| loc(28664, format!("$concatArrays only supports arrays, not {t}")))?
        {
            Some(items) => {
                len += items.len();
                bytes = bytes.saturating_add(items.iter().map(memory::heap_size).sum());
                memory::building("$concatArrays", bytes)?;
            }
            None => return null(),
        }
    }
    let mut out = Vec::with_capacity(len);
    for v in vals {
        if let Some(Bson::Array(items)) = v {
            out.extend(items);
        }
    }
    Ok(Some(Bson::Array(out)))
}

fn index_of_array(vals: Vec<Value>) -> Result<Value> {
    let [a, x, start, end] = fixed(vals);
    let Some(items) = array_arg(&a, |t| {
        loc(40090, format!("$indexOfArray requires an array as a first argument, found: {t}"))
    })?
    else {
        return null();
    };
    let x = x.unwrap_or(Bson::Null);
    let start = start.as_ref().and_then(as_int).unwrap_or(0).max(0) as usize;
    let end =
        end.as_ref().and_then(as_int).map_or(items.len(), |e| (e.max(0) as usize).min(items.len()));
    let pos = items.get(start..end).and_then(|s| s.iter().position(|y| bson_eq(y, &x)));
    Ok(Some(Bson::Int32(pos.map_or(-1, |p| (p + start) as i32))))
}

fn range(vals: Vec<Value>) -> Result<Value> {
    let has_step = vals.len() > 2;
    let [start, end, step] = fixed(vals);
    let int = |v: Value, what: &str, code: i32| -> Result<i64> {
        match v.as_ref().and_then(as_int) {
            Some(n) => Ok(n),
            None => Err(loc(
                code,
                format!(
                    "$range requires a numeric {what} value, found value of type: {}",
                    value_type(&v)
                ),
            )),
        }
    };
    let start = int(start, "starting", 34443)?;
    let end = int(end, "ending", 34445)?;
    let step = if has_step { int(step, "step", 34447)? } else { 1 };
    if step == 0 {
        return Err(loc(34449, "$range requires a non-zero step value"));
    }
    // MongoDB's estimate: one 16-byte value per element (its `sizeof(Value)`) and the vector,
    // checked against `internalQueryMaxRangeBytes` before building anything.
    let steps = (i128::from(end) - i128::from(start)) / i128::from(step);
    let len = if steps >= 0 { steps + 1 } else { 0 };
    let needed = 24 + len.saturating_mul(16);
    if needed >= memory::MAX_RANGE_BYTES as i128 {
        return Err(Error::new(
            Code::ExceededMemoryLimit,
            format!(
                "$range would use too much memory ({needed} bytes) and cannot spill to disk. Memory limit: {} bytes",
                memory::MAX_RANGE_BYTES
            ),
        ));
    }
    let len = len as usize;
    // Held while the array is built, not only checked: concurrent ranges count each other.
    let _building = memory::hold("$range", len.saturating_mul(memory::heap_size(&Bson::Int32(0))))?;
    let mut out = Vec::with_capacity(len);
    let mut i = start;
    while (step > 0 && i < end) || (step < 0 && i > end) {
        out.push(int_result(i, 0));
        match i.checked_add(step) {
            Some(next) => i = next,
            None => break,
        }
    }
    Ok(Some(Bson::Array(out)))
}

/// `$setUnion` (`union`) or `$setIntersection` of every argument, comparing under `c`.
fn set_fold(
    op: &str,
    code: i32,
    vals: Vec<Value>,
    union: bool,
    c: Option<&Collation>,
) -> Result<Value> {
    let mut acc: Option<Vec<Member>> = None;
    for v in &vals {
        let Some(s) = set_of(op, v, code, c)? else {
            return null();
        };
        acc = Some(match acc {
            None => s,
            Some(mut a) if union => {
                for x in s {
                    if !contains(&a, &x) {
                        a.push(x);
                    }
                }
                a
            }
            Some(a) => a.into_iter().filter(|x| contains(&s, x)).collect(),
        });
    }
    Ok(Some(Bson::Array(acc.unwrap_or_default().into_iter().map(|m| m.value.clone()).collect())))
}

/// `$setDifference`, comparing under `c`.
fn set_difference(vals: Vec<Value>, c: Option<&Collation>) -> Result<Value> {
    let [x, y] = fixed(vals);
    let (Some(a), Some(other)) =
        (set_of("$setDifference", &x, 17048, c)?, set_of("$setDifference", &y, 17049, c)?)
    else {
        return null();
    };
    Ok(Some(Bson::Array(
        a.into_iter().filter(|x| !contains(&other, x)).map(|m| m.value.clone()).collect(),
    )))
}

/// `$anyElementTrue` (`any`) or `$allElementsTrue`.
fn elements_true(op: &str, vals: Vec<Value>, any: bool) -> Result<Value> {
    let [x] = fixed(vals);
    match &x {
        Some(Bson::Array(items)) => {
            let t = |x: &Bson| crate::doc::truthy(x);
            b(if any { items.iter().any(t) } else { items.iter().all(t) })
        }
        other => Err(loc(
            17041,
            format!("{op}'s argument must be an array, but is {}", value_type(other)),
        )),
    }
}

/// `$sortArray`, comparing strings under `c`.
fn sort_array(args: &Args, collation: Option<&CollationRef>) -> Result<Value> {
    let c = collation.map(|c| c.as_ref());
    let input = get(args, "input");
    let Some(items) = array_arg(&input, |t| {
        loc(
            2942504,
            format!("The input argument to $sortArray must be an array, but was of type: {t}"),
        )
    })?
    else {
        return null();
    };
    let mut items = items.clone();
    let cmp = |x: &Bson, y: &Bson| {
        cmp_bson(&crate::collation::transform_opt(c, x), &crate::collation::transform_opt(c, y))
    };
    match get(args, "sortBy") {
        Some(Bson::Document(spec)) => {
            let s = SortSpec::parse(&spec)?.with_collation(collation);
            items.sort_by(|x, y| match (x, y) {
                (Bson::Document(a), Bson::Document(d)) => s.compare(a, d),
                _ => cmp(x, y),
            });
        }
        Some(n) if as_int(&n) == Some(-1) => items.sort_by(|x, y| cmp(y, x)),
        Some(_) => items.sort_by(cmp),
        None => {}
    }
    Ok(Some(Bson::Array(items)))
}

fn zip(args: &Args) -> Result<Value> {
    let Some(Bson::Array(inputs)) = get(args, "inputs") else { return null() };
    let mut arrays = Vec::new();
    for i in &inputs {
        match i {
            Bson::Array(a) => arrays.push(a.clone()),
            Bson::Null => return null(),
            other => {
                return Err(loc(
                    34468,
                    format!("$zip found a non-array expression in input: {}", value_string(other)),
                ));
            }
        }
    }
    let longest = truthy(&get(args, "useLongestLength"));
    let n = if longest {
        arrays.iter().map(Vec::len).max().unwrap_or(0)
    } else {
        arrays.iter().map(Vec::len).min().unwrap_or(0)
    };
    let defaults = match get(args, "defaults") {
        Some(Bson::Array(d)) => d,
        _ => Vec::new(),
    };
    let out = (0..n)
        .map(|i| {
            Bson::Array(
                arrays
                    .iter()
                    .enumerate()
                    .map(|(j, a)| {
                        a.get(i).cloned().or_else(|| defaults.get(j).cloned()).unwrap_or(Bson::Null)
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(Some(Bson::Array(out)))
}

fn array_elem_at(a: &Value, i: &Value) -> Result<Value> {
    let Some(items) = array_arg(a, |t| {
        loc(28689, format!("$arrayElemAt's first argument must be an array, but is {t}"))
    })?
    else {
        return null();
    };
    let idx = match i {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return null(),
        Some(v) if Number::of(v).is_some() => match as_int(v) {
            Some(n) => n,
            None => {
                return Err(loc(
                    28691,
                    format!(
                        "$arrayElemAt's second argument must be representable as a 32-bit integer: {}",
                        value_string(v)
                    ),
                ));
            }
        },
        Some(v) => {
            return Err(loc(
                28690,
                format!(
                    "$arrayElemAt's second argument must be a numeric value, but is {}",
                    type_name(v)
                ),
            ));
        }
    };
    Ok(elem_at(items, idx))
}

fn elem_at(items: &[Bson], idx: i64) -> Value {
    let len = items.len() as i64;
    let i = if idx < 0 { len.saturating_add(idx) } else { idx };
    if i < 0 || i >= len { None } else { Some(items[i as usize].clone()) }
}

fn slice(vals: Vec<Value>) -> Result<Value> {
    if vals.iter().any(is_nullish) {
        return null();
    }
    let with_position = vals.len() == 3;
    let [a, x, y] = fixed(vals);
    let Some(items) = array_arg(&a, |t| {
        loc(28724, format!("First argument to $slice must be an array, but is of type: {t}"))
    })?
    else {
        return null();
    };
    let int_arg = |v: &Value, code: i32, what: &str| -> Result<i64> {
        match v {
            Some(x) if as_int(x).is_some() => Ok(as_int(x).unwrap_or(0)),
            other => Err(loc(
                code,
                format!(
                    "{what} argument to $slice must be numeric, but is of type: {}",
                    value_type(other)
                ),
            )),
        }
    };
    let len = items.len() as i64;
    let (start, n) = if !with_position {
        let n = int_arg(&x, 28725, "Second")?;
        if n >= 0 { (0, n) } else { (len.saturating_add(n).max(0), n.saturating_neg()) }
    } else {
        let p = int_arg(&x, 28725, "Second")?;
        let n = int_arg(&y, 28726, "Third")?;
        if n <= 0 {
            return Err(loc(28729, format!("Third argument to $slice must be positive: {n}")));
        }
        let start = if p < 0 { len.saturating_add(p).max(0) } else { p.min(len) };
        (start, n)
    };
    Ok(Some(Bson::Array(
        items.iter().skip(start as usize).take(n.max(0) as usize).cloned().collect(),
    )))
}

/// `$first` or `$last`: `pick` chooses the element.
fn first_last(op: &str, vals: Vec<Value>, pick: fn(&[Bson]) -> Option<&Bson>) -> Result<Value> {
    let [v] = fixed(vals);
    let Some(items) =
        array_arg(&v, |t| loc(28689, format!("{op}'s argument must be an array, but is {t}")))?
    else {
        return null();
    };
    Ok(pick(items).cloned())
}

/// An element of a set operand: the value, and what it compares as (its collation key under
/// a collation, else the value itself).
struct Member<'a> {
    key: Cow<'a, Bson>,
    value: &'a Bson,
}

/// A set operand's distinct elements in order of first occurrence (`None` for null or
/// missing), equal as `c` compares them.
fn set_of<'a>(
    op: &str,
    v: &'a Value,
    code: i32,
    c: Option<&Collation>,
) -> Result<Option<Vec<Member<'a>>>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::Array(items)) => {
            let mut out: Vec<Member> = Vec::new();
            for x in items {
                let m = Member { key: crate::collation::transform_opt(c, x), value: x };
                if !contains(&out, &m) {
                    out.push(m);
                }
            }
            Ok(Some(out))
        }
        Some(other) => Err(loc(
            code,
            format!(
                "All operands of {op} must be arrays. One argument is of type: {}",
                type_name(other)
            ),
        )),
    }
}

fn contains(set: &[Member], x: &Member) -> bool {
    set.iter().any(|y| bson_eq(&x.key, &y.key))
}
