//! The accumulator operators used as expressions: `$sum`, `$avg`, `$min`, `$max`,
//! `$stdDevPop` and `$stdDevSamp` over their arguments, or over the elements of a single array
//! argument. `$group` and the window functions share their arithmetic ([`std_dev`],
//! [`super::average`], [`super::add_numbers`]).

use std::cmp::Ordering;

use bson::Bson;

use super::{Collated, MANY, Operator, add_numbers, average, is_number, op, spread};
use crate::collation::Collation;
use crate::doc::compare::{Number, cmp_bson};

use crate::expr::Value;

/// The accumulator operators, with their arities.
pub(super) const OPS: &[Operator] = &[
    op("$sum", 0, MANY, |v| Ok(Some(sum(&numbers(v))))),
    op("$avg", 0, MANY, |v| {
        let nums = numbers(v);
        if nums.is_empty() {
            return Ok(Some(Bson::Null));
        }
        Ok(Some(average(&sum(&nums), nums.len())))
    }),
    op("$min", 0, MANY, |v| Ok(min_max(v, false, None)))
        .collated(Collated::Own(|v, c| Ok(min_max(v, false, Some(c))))),
    op("$max", 0, MANY, |v| Ok(min_max(v, true, None)))
        .collated(Collated::Own(|v, c| Ok(min_max(v, true, Some(c))))),
    op("$stdDevPop", 0, MANY, |v| Ok(Some(std_dev(&floats(v), false)))),
    op("$stdDevSamp", 0, MANY, |v| Ok(Some(std_dev(&floats(v), true)))),
];

/// The numeric values among the operands.
fn numbers(vals: Vec<Value>) -> Vec<Bson> {
    spread(vals).into_iter().filter(is_number).collect()
}

/// The numeric operands as doubles.
fn floats(vals: Vec<Value>) -> Vec<f64> {
    spread(vals).iter().filter_map(Number::of).map(Number::to_f64).collect()
}

fn sum(nums: &[Bson]) -> Bson {
    nums.iter().fold(Bson::Int32(0), |a, v| add_numbers(&a, v))
}

/// The smallest (or, with `max`, the largest) non-null operand, strings compared under `c`;
/// null when there is none. Of operands that compare equal the first is kept, as in MongoDB.
fn min_max(vals: Vec<Value>, max: bool, c: Option<&Collation>) -> Value {
    let wanted = if max { Ordering::Greater } else { Ordering::Less };
    let mut best: Option<(Option<Bson>, Bson)> = None;
    for v in spread(vals) {
        if matches!(v, Bson::Null | Bson::Undefined) {
            continue;
        }
        // Under a collation, what the value compares as.
        let key = c.map(|c| crate::collation::transform_opt(Some(c), &v).into_owned());
        let better = match &best {
            None => true,
            Some((k, b)) => match (&key, k) {
                (Some(x), Some(y)) => cmp_bson(x, y) == wanted,
                _ => cmp_bson(&v, b) == wanted,
            },
        };
        if better {
            best = Some((key, v));
        }
    }
    Some(best.map_or(Bson::Null, |(_, v)| v))
}

/// The standard deviation of `xs` (null when undefined: no values, or one for a sample).
pub fn std_dev(xs: &[f64], sample: bool) -> Bson {
    let n = xs.len();
    if n == 0 || (sample && n == 1) {
        return Bson::Null;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    let d = if sample { n - 1 } else { n };
    Bson::Double((ss / d as f64).sqrt())
}
